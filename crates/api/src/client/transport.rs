//! One HTTP/1.1 exchange with the daemon, on a fresh connection: over its
//! unix socket, or over TLS on TCP with the bearer token. A connection per
//! request keeps the client stateless; the daemon is local or near, and the
//! requests that take long (backups…) are jobs the client only polls.

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
use hyper_util::rt::TokioIo;
use std::path::PathBuf;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::rustls::pki_types::ServerName;
use tokio_rustls::TlsConnector;

/// Answers larger than this are refused rather than buffered.
const MAX_ANSWER: usize = 64 << 20;

/// How long connecting (and the TLS handshake) may take on TCP.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) enum Endpoint {
    Unix(PathBuf),
    Https {
        /// `host:port`, also sent as `Host`.
        addr: String,
        server_name: ServerName<'static>,
        connector: TlsConnector,
        /// `Bearer <token>`, marked sensitive.
        authorization: HeaderValue,
    },
}

/// A request ready to go.
pub(crate) struct Outgoing {
    pub method: &'static str,
    /// Path and query.
    pub target: String,
    pub json: Option<Vec<u8>>,
}

/// The status and body of an answer.
pub(crate) struct Answer {
    pub status: u16,
    pub body: Bytes,
}

impl Endpoint {
    /// Where the daemon is, for error messages.
    pub fn describe(&self) -> String {
        match self {
            Endpoint::Unix(p) => p.display().to_string(),
            Endpoint::Https { addr, .. } => format!("https://{addr}"),
        }
    }

    pub async fn exchange(&self, out: Outgoing) -> Result<Answer, String> {
        match self {
            Endpoint::Unix(path) => {
                let s = tokio::net::UnixStream::connect(path)
                    .await
                    .map_err(|e| e.to_string())?;
                let req = request(out, HeaderValue::from_static("refpoint"), None)?;
                exchange_on(s, req).await
            }
            Endpoint::Https {
                addr,
                server_name,
                connector,
                authorization,
            } => {
                let connect = async {
                    let tcp = tokio::net::TcpStream::connect(addr.as_str())
                        .await
                        .map_err(|e| format!("connecting: {e}"))?;
                    connector
                        .connect(server_name.clone(), tcp)
                        .await
                        .map_err(|e| format!("TLS: {e}"))
                };
                let tls = tokio::time::timeout(CONNECT_TIMEOUT, connect)
                    .await
                    .map_err(|_| format!("no connection within {CONNECT_TIMEOUT:?}"))??;
                let host = HeaderValue::from_str(addr).map_err(|e| e.to_string())?;
                let req = request(out, host, Some(authorization.clone()))?;
                exchange_on(tls, req).await
            }
        }
    }
}

fn request(
    out: Outgoing,
    host: HeaderValue,
    authorization: Option<HeaderValue>,
) -> Result<hyper::Request<Full<Bytes>>, String> {
    let mut b = hyper::Request::builder()
        .method(out.method)
        .uri(out.target.as_str())
        .header(HOST, host);
    if let Some(a) = authorization {
        b = b.header(AUTHORIZATION, a);
    }
    let body = match out.json {
        Some(json) => {
            b = b.header(CONTENT_TYPE, "application/json");
            Bytes::from(json)
        }
        None => Bytes::new(),
    };
    b.body(Full::new(body)).map_err(|e| e.to_string())
}

async fn exchange_on<S>(stream: S, req: hyper::Request<Full<Bytes>>) -> Result<Answer, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    // The connection is driven beside the request; it ends when the
    // sender is dropped after the answer.
    tokio::spawn(conn);
    let resp = sender.send_request(req).await.map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), MAX_ANSWER)
        .collect()
        .await
        .map_err(|e| format!("reading the answer: {e}"))?
        .to_bytes();
    Ok(Answer { status, body })
}
