//! What the test files share: a server under test on its own runtime,
//! and a raw protocol client (handshake: fixed newstyle, structured
//! replies, meta contexts, NBD_OPT_GO; requests; simple or structured
//! replies).

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use nbd::mem::StaticExports;
use nbd::proto::*;
use nbd::request::Request;
use nbd::Server;
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
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
        let s = UnixStream::connect(&self.sock).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        Client::new(Box::new(s))
    }

    /// A raw client connected over TCP (greeting not yet read).
    pub fn connect_tcp(&self) -> Client {
        let s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        Client::new(Box::new(s))
    }

    /// A raw client whose connection the server runs with `serve_stream`,
    /// so the test can see the connection end: wait for it with
    /// [`Self::ended`].
    pub fn pair(&self, tls_required: bool) -> (Client, tokio::task::JoinHandle<()>) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        b.set_nonblocking(true).unwrap();
        let server = self.server.clone();
        let task = self.rt().spawn(async move {
            let b = tokio::net::UnixStream::from_std(b).unwrap();
            server.serve_stream(Box::new(b), tls_required).await
        });
        (Client::new(Box::new(a)), task)
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

// ---------------------------------------------------------------------------
// A raw protocol client

pub trait Io: Read + Write + Send {}
impl<T: Read + Write + Send> Io for T {}

pub struct Client {
    s: Box<dyn Io>,
    structured: bool,
    cookie: u64,
}

/// An option reply.
#[derive(Debug)]
pub struct OptReply {
    pub option: u32,
    pub kind: u32,
    pub data: Vec<u8>,
}

/// A transmission reply, simple or structured (all chunks gathered).
#[derive(Debug, Default)]
pub struct Reply {
    pub cookie: u64,
    pub error: u32,
    /// Read data, holes filled in with zeros.
    pub data: Vec<u8>,
    /// Block status: (context id, [(length, flags)]).
    pub status: Vec<(u32, Vec<(u32, u32)>)>,
}

pub fn option_bytes(opt: u32, data: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(IHAVEOPT.to_be_bytes());
    b.extend(opt.to_be_bytes());
    b.extend((data.len() as u32).to_be_bytes());
    b.extend(data);
    b
}

pub fn go_payload(name: &str, infos: &[u16]) -> Vec<u8> {
    let mut d = Vec::new();
    d.extend((name.len() as u32).to_be_bytes());
    d.extend(name.as_bytes());
    d.extend((infos.len() as u16).to_be_bytes());
    for i in infos {
        d.extend(i.to_be_bytes());
    }
    d
}

pub fn meta_payload(name: &str, queries: &[&str]) -> Vec<u8> {
    let mut d = Vec::new();
    d.extend((name.len() as u32).to_be_bytes());
    d.extend(name.as_bytes());
    d.extend((queries.len() as u32).to_be_bytes());
    for q in queries {
        d.extend((q.len() as u32).to_be_bytes());
        d.extend(q.as_bytes());
    }
    d
}

pub fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap())
}

impl Client {
    pub fn new(s: Box<dyn Io>) -> Self {
        Client {
            s,
            structured: false,
            cookie: 0,
        }
    }

    pub fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
    }

    pub fn recv(&mut self, n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n];
        self.s
            .read_exact(&mut b)
            .unwrap_or_else(|e| panic!("reading {n} bytes from the server: {e}"));
        b
    }

    /// Reads the server's greeting: NBDMAGIC, IHAVEOPT, handshake flags.
    pub fn greeting(&mut self) {
        let g = self.recv(18);
        assert_eq!(u64::from_be_bytes(g[..8].try_into().unwrap()), NBDMAGIC);
        assert_eq!(u64::from_be_bytes(g[8..16].try_into().unwrap()), IHAVEOPT);
        let flags = u16::from_be_bytes(g[16..18].try_into().unwrap());
        assert_eq!(flags, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    }

    pub fn client_flags(&mut self) {
        self.send(&(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES).to_be_bytes());
    }

    /// Reads the greeting and sends the client flags: the client is then
    /// in option negotiation.
    pub fn handshake(&mut self) {
        self.greeting();
        self.client_flags();
    }

    pub fn reply(&mut self) -> OptReply {
        let h = self.recv(20);
        assert_eq!(u64::from_be_bytes(h[..8].try_into().unwrap()), REPLY_MAGIC);
        let len = be32(&h[16..]) as usize;
        OptReply {
            option: be32(&h[8..]),
            kind: be32(&h[12..]),
            data: self.recv(len),
        }
    }

    /// Sends an option and returns the first reply.
    pub fn option(&mut self, opt: u32, data: &[u8]) -> OptReply {
        self.send(&option_bytes(opt, data));
        self.reply()
    }

    pub fn structured_reply(&mut self) {
        let r = self.option(NBD_OPT_STRUCTURED_REPLY, &[]);
        assert_eq!((r.option, r.kind), (NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK));
    }

    /// Selects `contexts` (if any) and sends NBD_OPT_GO; returns the size
    /// and transmission flags.
    pub fn go(&mut self, export: &str, structured: bool, contexts: &[&str]) -> (u64, u16) {
        self.structured = structured;
        if !contexts.is_empty() {
            let r = self.option(NBD_OPT_SET_META_CONTEXT, &meta_payload(export, contexts));
            let mut r = r;
            let mut ids = 0;
            while r.kind == NBD_REP_META_CONTEXT {
                ids += 1;
                assert_eq!(be32(&r.data), ids, "context ids count from 1");
                r = self.reply();
            }
            assert_eq!(r.kind, NBD_REP_ACK);
            assert_eq!(ids as usize, contexts.len());
        }
        self.send(&option_bytes(
            NBD_OPT_GO,
            &go_payload(export, &[NBD_INFO_BLOCK_SIZE]),
        ));
        let mut export_info = None;
        loop {
            let r = self.reply();
            assert_eq!(r.option, NBD_OPT_GO);
            match r.kind {
                NBD_REP_ACK => break,
                NBD_REP_INFO => {
                    let kind = u16::from_be_bytes(r.data[..2].try_into().unwrap());
                    if kind == NBD_INFO_EXPORT {
                        let size = u64::from_be_bytes(r.data[2..10].try_into().unwrap());
                        let flags = u16::from_be_bytes(r.data[10..12].try_into().unwrap());
                        export_info = Some((size, flags));
                    }
                }
                k => panic!("NBD_OPT_GO({export}): reply {k:#x}: {:?}", r.data),
            }
        }
        let info = export_info.expect("NBD_INFO_EXPORT is always sent");
        assert_eq!(info.1 & NBD_FLAG_SEND_DF != 0, structured);
        info
    }

    /// Greeting, flags, structured replies if asked, contexts, GO.
    pub fn start(&mut self, export: &str, structured: bool, contexts: &[&str]) -> (u64, u16) {
        self.handshake();
        if structured {
            self.structured_reply();
        }
        self.go(export, structured, contexts)
    }

    pub fn send_request(
        &mut self,
        flags: u16,
        kind: u16,
        cookie: u64,
        offset: u64,
        len: u32,
        data: &[u8],
    ) {
        let mut b = Request {
            flags,
            kind,
            cookie,
            offset,
            length: len,
        }
        .encode()
        .to_vec();
        b.extend(data);
        self.send(&b);
    }

    /// Sends one request and reads its reply.
    pub fn cmd(&mut self, flags: u16, kind: u16, offset: u64, len: u32, data: &[u8]) -> Reply {
        self.cookie += 1;
        let cookie = self.cookie;
        self.send_request(flags, kind, cookie, offset, len, data);
        let r = if self.structured {
            self.structured()
        } else {
            // A simple reply carries data only for a successful read.
            let h = self.recv(16);
            assert_eq!(be32(&h), NBD_SIMPLE_REPLY_MAGIC);
            let error = be32(&h[4..]);
            let data = if kind == NBD_CMD_READ && error == 0 {
                self.recv(len as usize)
            } else {
                Vec::new()
            };
            Reply {
                cookie: u64::from_be_bytes(h[8..16].try_into().unwrap()),
                error,
                data,
                status: Vec::new(),
            }
        };
        assert_eq!(r.cookie, cookie, "replies come in order here");
        r
    }

    /// Reads the chunks of one structured reply, up to the one marked done.
    pub fn structured(&mut self) -> Reply {
        let mut r = Reply::default();
        let mut pieces: Vec<(u64, Vec<u8>)> = Vec::new();
        loop {
            let h = self.recv(20);
            assert_eq!(be32(&h), NBD_STRUCTURED_REPLY_MAGIC);
            let flags = u16::from_be_bytes(h[4..6].try_into().unwrap());
            let kind = u16::from_be_bytes(h[6..8].try_into().unwrap());
            r.cookie = u64::from_be_bytes(h[8..16].try_into().unwrap());
            let body = self.recv(be32(&h[16..]) as usize);
            match kind {
                NBD_REPLY_TYPE_NONE => assert!(body.is_empty()),
                NBD_REPLY_TYPE_OFFSET_DATA => {
                    let off = u64::from_be_bytes(body[..8].try_into().unwrap());
                    pieces.push((off, body[8..].to_vec()));
                }
                NBD_REPLY_TYPE_OFFSET_HOLE => {
                    let off = u64::from_be_bytes(body[..8].try_into().unwrap());
                    pieces.push((off, vec![0; be32(&body[8..]) as usize]));
                }
                NBD_REPLY_TYPE_BLOCK_STATUS => {
                    let ext = body[4..]
                        .chunks(8)
                        .map(|e| (be32(e), be32(&e[4..])))
                        .collect();
                    r.status.push((be32(&body), ext));
                }
                NBD_REPLY_TYPE_ERROR => {
                    r.error = be32(&body);
                    let n = u16::from_be_bytes(body[4..6].try_into().unwrap()) as usize;
                    assert_eq!(body.len(), 6 + n, "error message length");
                    assert_ne!(r.error, 0);
                }
                k => panic!("unexpected chunk type {k}"),
            }
            if flags & NBD_REPLY_FLAG_DONE != 0 {
                break;
            }
        }
        // Chunks cover the read exactly once, in any order.
        pieces.sort_by_key(|p| p.0);
        for (i, (off, d)) in pieces.iter().enumerate() {
            if let Some((next, _)) = pieces.get(i + 1) {
                assert_eq!(off + d.len() as u64, *next, "chunks tile the range");
            }
            r.data.extend(d);
        }
        r
    }

    pub fn read(&mut self, offset: u64, len: u32) -> Reply {
        self.cmd(0, NBD_CMD_READ, offset, len, &[])
    }

    pub fn write(&mut self, offset: u64, data: &[u8]) -> Reply {
        self.cmd(0, NBD_CMD_WRITE, offset, data.len() as u32, data)
    }

    pub fn disconnect(mut self) {
        self.send_request(0, NBD_CMD_DISC, 0, 0, 0, &[]);
        self.assert_closed("after NBD_CMD_DISC");
    }

    /// Asserts the server closes the connection (reading nothing more).
    pub fn assert_closed(&mut self, what: &str) {
        let mut b = [0u8; 4096];
        loop {
            match self.s.read(&mut b) {
                Ok(0) => return,
                Ok(n) => panic!(
                    "{what}: the server sent {n} more bytes: {:?}",
                    &b[..n.min(64)]
                ),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => panic!("{what}: the connection is still open ({e})"),
            }
        }
    }
}
