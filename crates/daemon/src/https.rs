//! The management API over TLS on TCP (`--api-listen`).

use hyper_util::rt::{TokioExecutor, TokioIo};
use std::sync::Arc;
use tokio::sync::Notify;

/// Serves the API router over TLS on TCP until `stop` is notified.
pub async fn serve_api_tls(
    l: tokio::net::TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    router: axum::Router,
    stop: Arc<Notify>,
) -> std::io::Result<()> {
    let stopped = stop.notified();
    tokio::pin!(stopped);
    loop {
        let (s, _) = tokio::select! {
            r = l.accept() => r?,
            _ = &mut stopped => return Ok(()),
        };
        let acceptor = acceptor.clone();
        let router = router.clone();
        tokio::spawn(async move {
            let Ok(tls) =
                tokio::time::timeout(std::time::Duration::from_secs(30), acceptor.accept(s))
                    .await
                    .map_err(|_| ())
                    .and_then(|r| r.map_err(|_| ()))
            else {
                return;
            };
            let svc = hyper_util::service::TowerToHyperService::new(router);
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(tls), svc)
                .await;
        });
    }
}
