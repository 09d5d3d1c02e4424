//! Listening, accepting and shutting down.

use crate::device::Exports;
use crate::negotiate::{negotiate, HandshakeEnd};
use crate::transmit::transmit;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

/// A byte stream a connection runs over (unix, TCP, TLS, in-memory).
pub trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// How long shutdown waits for connections to finish their requests.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// A client that has not finished the handshake after this long is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) struct Shared {
    pub exports: Arc<dyn Exports>,
    pub tls: Option<TlsAcceptor>,
}

/// An NBD server over an export catalog. Cheap to share; every listener
/// and connection stops at [`shutdown`](Server::shutdown) after finishing
/// the requests in flight.
#[derive(Clone)]
pub struct Server {
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
}

impl Server {
    pub fn new(
        exports: Arc<dyn Exports>,
        tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>,
    ) -> Self {
        Server {
            shared: Arc::new(Shared {
                exports,
                tls: tls.map(TlsAcceptor::from),
            }),
            shutdown: watch::channel(false).0,
        }
    }

    /// Stops accepting; connections end after their in-flight requests.
    pub fn shutdown(&self) {
        self.shutdown.send_replace(true);
    }

    /// Serves a unix socket (no TLS needed: the socket's permissions guard
    /// it) until shutdown; returns when every connection has ended.
    pub async fn serve_unix(&self, listener: UnixListener) -> std::io::Result<()> {
        self.accept_loop(false, || async {
            let (s, _) = listener.accept().await?;
            Ok(Box::new(s) as Box<dyn Stream>)
        })
        .await;
        Ok(())
    }

    /// Serves TCP until shutdown. With `tls_required`, clients must
    /// upgrade with NBD_OPT_STARTTLS before anything else.
    pub async fn serve_tcp(
        &self,
        listener: TcpListener,
        tls_required: bool,
    ) -> std::io::Result<()> {
        if tls_required && self.shared.tls.is_none() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "TLS is required on this listener but no certificate was configured",
            ));
        }
        self.accept_loop(tls_required, || async {
            let (s, peer) = listener.accept().await?;
            let _ = s.set_nodelay(true);
            tracing::debug!("connection from {peer}");
            Ok(Box::new(s) as Box<dyn Stream>)
        })
        .await;
        Ok(())
    }

    /// Accepts connections until shutdown, then waits for them to end.
    async fn accept_loop<F, Fut>(&self, tls_required: bool, accept: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = std::io::Result<Box<dyn Stream>>>,
    {
        let mut conns = JoinSet::new();
        let mut stop = self.shutdown.subscribe();
        loop {
            tokio::select! {
                _ = async { drop(stop.wait_for(|s| *s).await) } => break,
                r = accept() => match r {
                    Ok(s) => { conns.spawn(self.clone().connection(s, tls_required)); }
                    Err(e) => {
                        // E.g. out of file descriptors: back off instead of spinning.
                        tracing::warn!("accepting a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
        // Connections finish their in-flight requests; one whose client
        // stopped reading replies is cut off after a grace period.
        let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
            while conns.join_next().await.is_some() {}
        });
        if drained.await.is_err() {
            tracing::warn!(
                "{} connections did not finish in time; closing them",
                conns.len()
            );
            conns.shutdown().await;
        }
    }

    /// Serves one already-connected stream (tests, fuzzing, inetd-style use).
    pub async fn serve_stream(&self, stream: Box<dyn Stream>, tls_required: bool) {
        self.clone().connection(stream, tls_required).await
    }

    async fn connection(self, stream: Box<dyn Stream>, tls_required: bool) {
        let hs = tokio::time::timeout(
            HANDSHAKE_TIMEOUT,
            negotiate(stream, &self.shared, tls_required),
        )
        .await;
        let (stream, session) = match hs {
            Ok(Ok(x)) => x,
            Ok(Err(HandshakeEnd::Aborted)) => return,
            Ok(Err(e)) => {
                tracing::info!("handshake ended: {e}");
                return;
            }
            Err(_) => {
                tracing::info!("handshake timed out");
                return;
            }
        };
        let export = session.export.clone();
        tracing::debug!(%export, "transmission");
        if let Err(e) = transmit(stream, session, self.shutdown.subscribe()).await {
            tracing::info!(%export, "connection ended: {e}");
        }
    }
}
