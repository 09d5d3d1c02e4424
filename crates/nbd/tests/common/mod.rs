//! What the test files share: a server under test on its own runtime,
//! and raw protocol clients ([`testkit::nbd_client::Client`]) or plain
//! streams connected to it.

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use nbd::mem::StaticExports;
use nbd::Server;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use testkit::nbd_client::Client;
use tokio::net::{TcpListener, UnixListener};
use tokio_rustls::rustls::ServerConfig;

/// How long a read from the server may take before the test fails.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// The server under test

/// A server on a multi-threaded tokio runtime of its own, listening on a
/// unix socket in a temporary directory and on TCP 127.0.0.1:<any port>;
/// shut down when dropped.
pub struct TestServer {
    pub dir: tempfile::TempDir,
    pub sock: PathBuf,
    pub port: u16,
    pub server: Server,
    rt: Option<tokio::runtime::Runtime>,
}

impl TestServer {
    /// Serves `exports`; the TCP listener requires TLS when `tls` is given
    /// (the unix socket never does).
    pub fn start(exports: StaticExports, tls: Option<Arc<ServerConfig>>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let tls_required = tls.is_some();
        let server = Server::new(Arc::new(exports), tls);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let sock = dir.path().join("nbd.sock");
        let (unix, tcp) = rt.block_on(async {
            (
                UnixListener::bind(&sock).unwrap(),
                TcpListener::bind("127.0.0.1:0").await.unwrap(),
            )
        });
        let port = tcp.local_addr().unwrap().port();
        let s = server.clone();
        rt.spawn(async move { s.serve_unix(unix).await.unwrap() });
        let s = server.clone();
        rt.spawn(async move { s.serve_tcp(tcp, tls_required).await.unwrap() });
        TestServer {
            dir,
            sock,
            port,
            server,
            rt: Some(rt),
        }
    }

    pub fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().unwrap()
    }

    /// A raw client connected to the unix socket (greeting not yet read).
    pub fn connect(&self) -> Client {
        Client::unix(&self.sock, IO_TIMEOUT).unwrap()
    }

    /// A raw client connected over TCP (greeting not yet read).
    pub fn connect_tcp(&self) -> Client {
        Client::tcp(("127.0.0.1", self.port), IO_TIMEOUT).unwrap()
    }

    /// A raw client whose connection the server runs with `serve_stream`,
    /// so the test can see the connection end: wait for it with
    /// [`Self::ended`].
    pub fn pair(&self, tls_required: bool) -> (Client, tokio::task::JoinHandle<()>) {
        let (a, task) = self.pair_stream(tls_required);
        (Client::new(a), task)
    }

    /// The client's end of a socket pair whose other end the server runs
    /// with `serve_stream` (reads limited to [`IO_TIMEOUT`]), and the
    /// server's task, for [`Self::ended`].
    pub fn pair_stream(&self, tls_required: bool) -> (UnixStream, tokio::task::JoinHandle<()>) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        b.set_nonblocking(true).unwrap();
        let server = self.server.clone();
        let task = self.rt().spawn(async move {
            let b = tokio::net::UnixStream::from_std(b).unwrap();
            server.serve_stream(Box::new(b), tls_required).await
        });
        (a, task)
    }

    /// Asserts the server's side of a [`Self::pair`] connection has ended.
    pub fn ended(&self, task: tokio::task::JoinHandle<()>, what: &str) {
        let r = self
            .rt()
            .block_on(async { tokio::time::timeout(IO_TIMEOUT, task).await });
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{what}: the connection task failed: {e}"),
            Err(_) => panic!("{what}: the server still holds the connection"),
        }
    }

    /// Asserts the server closed a [`Self::pair`] connection: the client
    /// reads nothing more, and the server's side has ended.
    pub fn closed(&self, mut c: Client, task: tokio::task::JoinHandle<()>, what: &str) {
        c.assert_closed(what);
        self.ended(task, what);
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.server.shutdown();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}
