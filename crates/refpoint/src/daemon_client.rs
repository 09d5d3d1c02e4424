//! The CLI's side of the management API: when a daemon answers on
//! `api.sock`, commands that touch the disks it holds go through it.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::path::{Path, PathBuf};

/// An error the daemon answered with.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// `kind` is the API's error kind (a tracking error kind for 409).
    #[error("{message}")]
    Api {
        status: u16,
        kind: String,
        message: String,
    },
    #[error("talking to the refpoint daemon on {socket}: {message}")]
    Transport { socket: String, message: String },
}

impl DaemonError {
    /// A tracking error (the CLI exits with its tracking exit code).
    pub fn is_tracking(&self) -> bool {
        matches!(self, DaemonError::Api { status: 409, .. })
    }
}

/// A running daemon, reached through its unix socket.
pub struct Daemon {
    socket: PathBuf,
    rt: tokio::runtime::Runtime,
}

impl Daemon {
    /// The daemon of state directory `home`, if one answers.
    pub fn find(home: &Path) -> Option<Daemon> {
        let socket = api_socket(home);
        std::os::unix::net::UnixStream::connect(&socket).ok()?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()?;
        Some(Daemon { socket, rt })
    }

    pub fn get(&self, path: &str) -> Result<Value, DaemonError> {
        self.call("GET", path, None)
    }
    pub fn post(&self, path: &str, body: Value) -> Result<Value, DaemonError> {
        self.call("POST", path, Some(body))
    }
    pub fn delete(&self, path: &str) -> Result<Value, DaemonError> {
        self.call("DELETE", path, None)
    }

    pub fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, DaemonError> {
        let transport = |e: &dyn std::fmt::Display| DaemonError::Transport {
            socket: self.socket.display().to_string(),
            message: e.to_string(),
        };
        self.rt.block_on(async {
            let stream = tokio::net::UnixStream::connect(&self.socket)
                .await
                .map_err(|e| transport(&e))?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| transport(&e))?;
            tokio::spawn(conn);
            let body = body.map(|b| b.to_string()).unwrap_or_default();
            let req = hyper::Request::builder()
                .method(method)
                .uri(path)
                .header("host", "refpoint")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .map_err(|e| transport(&e))?;
            let resp = sender.send_request(req).await.map_err(|e| transport(&e))?;
            let status = resp.status();
            let bytes = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| transport(&e))?
                .to_bytes();
            let v: Value = serde_json::from_slice(&bytes).map_err(|e| transport(&e))?;
            if status.is_success() {
                Ok(v)
            } else {
                Err(DaemonError::Api {
                    status: status.as_u16(),
                    kind: v["error"].as_str().unwrap_or("error").to_string(),
                    message: v["message"].as_str().unwrap_or("").to_string(),
                })
            }
        })
    }

    /// Polls a job until it ends, reporting progress; returns its result.
    pub fn wait_job(
        &self,
        job: &Value,
        progress: &mut dyn FnMut(&str, u64, u64),
    ) -> Result<Value, DaemonError> {
        let id = job["id"].as_u64().unwrap_or(0);
        loop {
            let j = self.get(&format!("/v1/jobs/{id}"))?;
            match j["state"].as_str() {
                Some("running") => {
                    progress(
                        j["item"].as_str().unwrap_or(""),
                        j["done"].as_u64().unwrap_or(0),
                        j["total"].as_u64().unwrap_or(0),
                    );
                    std::thread::sleep(std::time::Duration::from_millis(200));
                }
                Some("succeeded") => return Ok(j["result"].clone()),
                _ => {
                    return Err(DaemonError::Api {
                        status: 500,
                        kind: "job_failed".into(),
                        message: j["error"].as_str().unwrap_or("the job failed").to_string(),
                    })
                }
            }
        }
    }
}

/// Where the daemon of state directory `home` answers the API.
fn api_socket(home: &Path) -> PathBuf {
    home.join("api.sock")
}
