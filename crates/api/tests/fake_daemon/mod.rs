//! An HTTP/1.1 server on a unix socket in a temporary directory that
//! answers from a script and records what it received.

use api::Client;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// What the server received.
#[derive(Debug, Clone, PartialEq)]
pub struct Seen {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub content_type: Option<String>,
    pub body: String,
}

#[derive(Default)]
struct Script {
    /// Answers to give, in order: status and body.
    answers: VecDeque<(u16, String)>,
    seen: Vec<Seen>,
}

/// An HTTP/1.1 server on `<dir>/api.sock` that answers from a script.
pub struct FakeDaemon {
    dir: tempfile::TempDir,
    script: Arc<Mutex<Script>>,
}

impl FakeDaemon {
    pub fn start() -> FakeDaemon {
        let dir = tempfile::tempdir().unwrap();
        let listener = std::os::unix::net::UnixListener::bind(dir.path().join("api.sock")).unwrap();
        listener.set_nonblocking(true).unwrap();
        let script = Arc::new(Mutex::new(Script::default()));
        let s = script.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::UnixListener::from_std(listener).unwrap();
                loop {
                    let (stream, _) = listener.accept().await.unwrap();
                    let s = s.clone();
                    let svc = service_fn(move |req| answer(s.clone(), req));
                    tokio::spawn(
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc),
                    );
                }
            });
        });
        FakeDaemon { dir, script }
    }

    pub fn home(&self) -> &Path {
        self.dir.path()
    }

    pub fn socket(&self) -> PathBuf {
        self.dir.path().join("api.sock")
    }

    pub fn client(&self) -> Client {
        Client::unix(self.socket())
            .unwrap()
            .with_poll_interval(std::time::Duration::from_millis(1))
    }

    pub fn will_answer(&self, status: u16, body: &str) {
        self.script
            .lock()
            .unwrap()
            .answers
            .push_back((status, body.to_string()));
    }

    pub fn seen(&self) -> Vec<Seen> {
        std::mem::take(&mut self.script.lock().unwrap().seen)
    }
}

async fn answer(
    script: Arc<Mutex<Script>>,
    req: hyper::Request<hyper::body::Incoming>,
) -> Result<hyper::Response<Full<Bytes>>, hyper::Error> {
    let method = req.method().to_string();
    let target = req.uri().to_string();
    let content_type = req
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string());
    let body = req.into_body().collect().await?.to_bytes();
    let mut s = script.lock().unwrap();
    s.seen.push(Seen {
        method,
        target,
        content_type,
        body: String::from_utf8(body.to_vec()).unwrap(),
    });
    let (status, body) = s.answers.pop_front().unwrap_or((
        500,
        r#"{"error":"error","message":"no answer scripted"}"#.into(),
    ));
    Ok(hyper::Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap())
}
