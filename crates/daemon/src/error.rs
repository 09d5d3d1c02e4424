//! Errors of starting and stopping the daemon.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// Another daemon answers on the socket.
    #[error("a refpoint daemon already listens on {}", path.display())]
    AlreadyRunning { path: PathBuf },
    #[error("listening on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// TCP listeners without a certificate and key.
    #[error("listening on TCP needs TLS (a certificate and a key)")]
    TlsRequired,
    #[error("a TLS certificate and key go together")]
    TlsIncomplete,
    #[error(transparent)]
    Tls(#[from] nbd::tls::TlsError),
    #[error("the token in {} is shorter than 16 characters", path.display())]
    ShortToken { path: PathBuf },
    #[error("{}: I/O error while {op}: {source}", path.display())]
    Io {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("starting the daemon's runtime: {0}")]
    Runtime(#[source] std::io::Error),
    /// Disks that could not be flushed and closed at shutdown.
    #[error("closing disks failed: {}", problems.join("; "))]
    Close { problems: Vec<String> },
}

pub type Result<T, E = DaemonError> = std::result::Result<T, E>;

pub(crate) fn io(
    path: &std::path::Path,
    op: &'static str,
) -> impl FnOnce(std::io::Error) -> DaemonError {
    let path = path.to_path_buf();
    move |source| DaemonError::Io { path, op, source }
}
