//! `refpoint serve`: flags for the daemon library, and `--stop`.

use super::*;

#[derive(Args)]
pub(crate) struct ServeArgs {
    /// NBD unix socket [default: <state dir>/nbd.sock].
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Management API unix socket [default: <state dir>/api.sock].
    #[arg(long)]
    api_socket: Option<PathBuf>,
    /// Also serve NBD on TCP (e.g. 0.0.0.0:10809); clients must use TLS.
    #[arg(long, value_name = "ADDR:PORT", requires_all = ["tls_cert", "tls_key"])]
    listen: Option<std::net::SocketAddr>,
    /// Also serve the API on TCP over TLS; requests need the token
    /// (`Authorization: Bearer ...`, see --token-file).
    #[arg(long, value_name = "ADDR:PORT", requires_all = ["tls_cert", "tls_key"])]
    api_listen: Option<std::net::SocketAddr>,
    /// TLS certificate chain (PEM) for TCP listeners.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Require NBD/API clients on TCP to present a certificate signed by this CA (PEM).
    #[arg(long)]
    tls_client_ca: Option<PathBuf>,
    /// API token file [default: <state dir>/api.token, created if missing].
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Ask the running daemon to shut down gracefully, and wait for it.
    #[arg(long)]
    stop: bool,
}

pub(crate) fn run(a: ServeArgs) -> Result<ExitCode> {
    let home = ::machine::home::state_dir();
    let api_socket = a.api_socket.unwrap_or_else(|| daemon::api_socket(&home));
    if a.stop {
        let Some(d) = refpoint_cli::machines::daemon() else {
            anyhow::bail!("no refpoint daemon answers on {}", api_socket.display());
        };
        d.shutdown()?;
        while api_socket.exists() {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        println!("the refpoint daemon stopped");
        return Ok(ExitCode::SUCCESS);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("REFPOINT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    daemon::run(daemon::ServeOptions {
        nbd_socket: a.socket.unwrap_or_else(|| daemon::nbd_socket(&home)),
        api_socket,
        home,
        listen: a.listen,
        api_listen: a.api_listen,
        tls_cert: a.tls_cert,
        tls_key: a.tls_key,
        tls_client_ca: a.tls_client_ca,
        token_file: a.token_file,
    })?;
    Ok(ExitCode::SUCCESS)
}
