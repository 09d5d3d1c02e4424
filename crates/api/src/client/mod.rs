//! The typed blocking client: one method per route of [`crate::routes`],
//! named as the route's operation id. It owns a current-thread tokio
//! runtime, so callers need none.
//!
//! ```text
//! Client::unix(<home>/api.sock)          Client::https(addr, name, ca, token)
//!            └──────────────┬───────────────────────┘
//!   client.create_checkpoint("vm1", &req)
//!     → routes::CREATE_CHECKPOINT.path_with(["vm1"])  (percent-encoded)
//!     → POST, JSON body → 2xx: decode the route's response type
//!                       → else: ErrorBody → ApiError::Api { kind, tracking… }
//! ```

mod jobs;
mod operations;
mod tls;
mod transport;

use crate::routes::Route;
use crate::types::*;
use crate::ApiError;
use hyper::header::HeaderValue;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::fmt::{self, Display};
use std::path::{Path, PathBuf};
use std::time::Duration;
use transport::{Answer, Endpoint, Outgoing};

/// The API socket's name in a state directory.
pub const SOCKET_NAME: &str = "api.sock";

/// How often [`Client::wait_job`] asks, unless told otherwise.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_millis(200);

/// A refpoint daemon's management API.
pub struct Client {
    endpoint: Endpoint,
    rt: tokio::runtime::Runtime,
    poll_interval: Duration,
}

impl fmt::Debug for Client {
    // Never the token.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("endpoint", &self.endpoint.describe())
            .finish_non_exhaustive()
    }
}

impl Client {
    fn new(endpoint: Endpoint) -> Result<Client, ApiError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| ApiError::Setup(format!("starting the client's runtime: {e}")))?;
        Ok(Client {
            endpoint,
            rt,
            poll_interval: DEFAULT_POLL_INTERVAL,
        })
    }

    /// The daemon listening on the unix socket `socket` (no token: the
    /// socket's permissions guard it). Nothing is connected yet.
    pub fn unix(socket: impl Into<PathBuf>) -> Result<Client, ApiError> {
        Client::new(Endpoint::Unix(socket.into()))
    }

    /// The daemon of state directory `home`, if one answers on its socket.
    pub fn find(home: &Path) -> Option<Client> {
        let socket = home.join(SOCKET_NAME);
        std::os::unix::net::UnixStream::connect(&socket).ok()?;
        Client::unix(socket).ok()
    }

    /// The daemon's API on TCP (`--api-listen`): TLS, trusting only the
    /// certificates in `ca_pem`, with `server_name` checked against the
    /// daemon's certificate, and the daemon's token.
    pub fn https(
        addr: &str,
        server_name: &str,
        ca_pem: &[u8],
        token: &str,
    ) -> Result<Client, ApiError> {
        Client::https_with(addr, server_name, ca_pem, token, None)
    }

    /// As [`Client::https`], presenting a client certificate (for a daemon
    /// started with `--tls-client-ca`).
    pub fn https_with_client_cert(
        addr: &str,
        server_name: &str,
        ca_pem: &[u8],
        token: &str,
        cert_pem: &[u8],
        key_pem: &[u8],
    ) -> Result<Client, ApiError> {
        let id = tls::Identity { cert_pem, key_pem };
        Client::https_with(addr, server_name, ca_pem, token, Some(id))
    }

    fn https_with(
        addr: &str,
        server_name: &str,
        ca_pem: &[u8],
        token: &str,
        identity: Option<tls::Identity<'_>>,
    ) -> Result<Client, ApiError> {
        let mut authorization = HeaderValue::from_str(&format!("Bearer {token}"))
            .map_err(|_| ApiError::Setup("the token holds bytes a header cannot".into()))?;
        authorization.set_sensitive(true);
        HeaderValue::from_str(addr)
            .map_err(|_| ApiError::Setup(format!("{addr:?} is not a host:port")))?;
        Client::new(Endpoint::Https {
            addr: addr.to_string(),
            server_name: tls::server_name(server_name)?,
            connector: tls::connector(ca_pem, identity)?,
            authorization,
        })
    }

    /// How often [`Client::wait_job`] polls.
    pub fn with_poll_interval(mut self, every: Duration) -> Client {
        self.poll_interval = every;
        self
    }

    /// Where the daemon is: its socket, or `https://addr`.
    pub fn endpoint(&self) -> String {
        self.endpoint.describe()
    }

    // --- one request ------------------------------------------------------

    /// Sends `route` with its path filled from `segments`, the query string
    /// `query` and the JSON body `body`; decodes the route's response type.
    fn call<Resp, Req>(
        &self,
        route: &'static Route,
        segments: &[&dyn Display],
        query: Option<String>,
        body: Option<&Req>,
    ) -> Result<Resp, ApiError>
    where
        Resp: DeserializeOwned + 'static,
        Req: Serialize + 'static,
    {
        // The route table says which types travel; the methods above must
        // agree with it (checked whenever the tests run them).
        debug_assert!(
            route.response.is::<Resp>(),
            "{}: decoded as another type than the route table's",
            route.operation_id
        );
        debug_assert!(
            body.is_none() || route.body.payload().is_some_and(|p| p.is::<Req>()),
            "{}: sends another body than the route table's",
            route.operation_id
        );
        let path = route.path_with(segments);
        let target = match &query {
            Some(q) if !q.is_empty() => format!("{path}?{q}"),
            _ => path.clone(),
        };
        let json = body
            .map(serde_json::to_vec)
            .transpose()
            .map_err(|e| ApiError::InvalidRequest(e.to_string()))?;
        let out = Outgoing {
            method: route.method.as_str(),
            target,
            json,
        };
        let answer = self
            .rt
            .block_on(self.endpoint.exchange(out))
            .map_err(|message| ApiError::Transport {
                endpoint: self.endpoint(),
                message,
            })?;
        self.decode(route, path, answer)
    }

    fn decode<Resp: DeserializeOwned>(
        &self,
        route: &Route,
        path: String,
        answer: Answer,
    ) -> Result<Resp, ApiError> {
        let Answer { status, body } = answer;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&body).map_err(|e| ApiError::Decode {
                endpoint: self.endpoint(),
                method: route.method.as_str(),
                path,
                status,
                expected: format!("{:?}", route.response),
                message: e.to_string(),
            });
        }
        Err(match serde_json::from_slice::<ErrorBody>(&body) {
            Ok(b) => ApiError::from_answer(status, b),
            // Not the daemon's error body (a proxy, a route an older
            // daemon lacks): the status says what it can.
            Err(_) => ApiError::Api {
                status,
                kind: ErrorKind::for_status(status),
                message: format!(
                    "HTTP {status} from {} {path}: {}",
                    route.method,
                    short_text(&body)
                ),
                tracking: None,
            },
        })
    }
}

/// At most a few hundred characters of a body, for a message.
fn short_text(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return "no body".into();
    }
    match text.char_indices().nth(300) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text.to_string(),
    }
}

fn short_json(v: &impl Serialize) -> String {
    short_text(&serde_json::to_vec(v).unwrap_or_default())
}
