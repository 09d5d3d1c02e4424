//! A small synchronous NBD client for tests, over any `Read + Write`
//! stream (a unix socket, TCP, one end of a socket pair).
//!
//! ```text
//! Client::unix / tcp / new
//!   handshake ─ greeting (NBDMAGIC IHAVEOPT, fixed newstyle + no zeroes)
//!             └ client flags
//!   option / reply ─ any option, raw: OptReply { option, kind, data }
//!   structured_reply · go (SET_META_CONTEXT, GO) · start (all of it)
//!   cmd / send_request + structured ─ any request; Reply { cookie,
//!             error, data (holes as zeros), status (block status) }
//!   read · write · disconnect (DISC, then the server must close)
//!
//! Disk::connect ─ nbd::client::Client (the library client) on a unix
//!             socket; read / write / flush return the data or NbdError
//!             (I/O, option refused, errno)
//! ```
//!
//! The raw client is written for the `nbd` crate's server (which `refpoint
//! serve` runs too): it asserts what that server always does (its
//! greeting, replies in order when requests are sent one at a time,
//! chunks that tile a read), so a test fails where the server breaks the
//! protocol. Options and requests are encoded by the `nbd` crate itself.

use nbd::option::{encode_option, InfoRequest, MetaRequest};
use nbd::proto::*;
use nbd::request::Request;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// A stream to the server.
pub trait Io: Read + Write + Send {}
impl<T: Read + Write + Send> Io for T {}

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
    /// The message of a structured error chunk.
    pub message: String,
    /// Read data, holes filled in with zeros.
    pub data: Vec<u8>,
    /// Block status: (context id, [(length, flags)]).
    pub status: Vec<(u32, Vec<(u32, u32)>)>,
}

/// Why a [`Disk`] operation failed.
#[derive(Debug)]
pub enum NbdError {
    /// The connection broke (or timed out).
    Io(io::Error),
    /// The server refused the option (reply type, message).
    Refused(u32, String),
    /// A request failed with this NBD error value.
    Errno(u32),
}

impl From<io::Error> for NbdError {
    fn from(e: io::Error) -> Self {
        NbdError::Io(e)
    }
}

impl std::fmt::Display for NbdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NbdError::Io(e) => write!(f, "I/O error: {e}"),
            NbdError::Refused(kind, msg) => write!(f, "option refused ({kind:#x}): {msg}"),
            NbdError::Errno(e) => write!(f, "NBD error {e}"),
        }
    }
}

impl std::error::Error for NbdError {}

impl NbdError {
    /// The NBD error value; anything else (a broken connection, a
    /// refusal) fails the test.
    #[track_caller]
    pub fn errno(self, what: &str) -> u32 {
        match self {
            NbdError::Errno(e) => e,
            other => panic!("{what}: not an NBD error reply: {other:?}"),
        }
    }
}

/// The payload of NBD_OPT_INFO / NBD_OPT_GO: `name` and the information
/// requests `infos`.
pub fn info_payload(name: &str, infos: &[u16]) -> Vec<u8> {
    InfoRequest {
        name: name.into(),
        requests: infos.to_vec(),
    }
    .encode()
}

/// The payload of NBD_OPT_LIST/SET_META_CONTEXT: `name` and `queries`.
pub fn meta_payload(name: &str, queries: &[&str]) -> Vec<u8> {
    MetaRequest {
        export: name.into(),
        queries: queries.iter().map(|q| q.to_string()).collect(),
    }
    .encode()
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes(b[..2].try_into().unwrap())
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap())
}

fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().unwrap())
}

/// A raw protocol client. The panicking methods are for tests of the
/// protocol itself; [`Disk`] is built on the fallible ones.
pub struct Client {
    s: Box<dyn Io>,
    structured: bool,
    cookie: u64,
}

impl Client {
    /// A client on `s` (greeting not yet read).
    pub fn new(s: impl Io + 'static) -> Self {
        Client {
            s: Box::new(s),
            structured: false,
            cookie: 0,
        }
    }

    /// Connects to a unix socket; reads and writes taking longer than
    /// `timeout` fail (so a server that stops answering fails the test
    /// instead of hanging it).
    pub fn unix(path: &Path, timeout: Duration) -> io::Result<Self> {
        let s = UnixStream::connect(path)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        Ok(Client::new(s))
    }

    /// Connects over TCP, with the same timeouts as [`Self::unix`].
    pub fn tcp(addr: impl ToSocketAddrs, timeout: Duration) -> io::Result<Self> {
        let s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(timeout))?;
        s.set_write_timeout(Some(timeout))?;
        Ok(Client::new(s))
    }

    pub fn send(&mut self, b: &[u8]) {
        self.s
            .write_all(b)
            .unwrap_or_else(|e| panic!("sending {} bytes to the server: {e}", b.len()));
    }

    pub fn recv(&mut self, n: usize) -> Vec<u8> {
        self.try_recv(n)
            .unwrap_or_else(|e| panic!("reading {n} bytes from the server: {e}"))
    }

    fn try_recv(&mut self, n: usize) -> io::Result<Vec<u8>> {
        let mut b = vec![0u8; n];
        self.s.read_exact(&mut b)?;
        Ok(b)
    }

    /// Reads the server's greeting: NBDMAGIC, IHAVEOPT, handshake flags.
    pub fn greeting(&mut self) {
        self.try_greeting()
            .unwrap_or_else(|e| panic!("reading the greeting: {e}"))
    }

    fn try_greeting(&mut self) -> io::Result<()> {
        let g = self.try_recv(18)?;
        assert_eq!(be64(&g), NBDMAGIC, "greeting");
        assert_eq!(be64(&g[8..]), IHAVEOPT, "greeting");
        assert_eq!(
            be16(&g[16..]),
            NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES,
            "handshake flags"
        );
        Ok(())
    }

    /// Sends the client flags: fixed newstyle, no zeroes.
    pub fn client_flags(&mut self) {
        self.send(&(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES).to_be_bytes());
    }

    /// Reads the greeting and sends the client flags: the client is then
    /// in option negotiation.
    pub fn handshake(&mut self) {
        self.greeting();
        self.client_flags();
    }

    /// Reads one option reply.
    pub fn reply(&mut self) -> OptReply {
        self.try_reply()
            .unwrap_or_else(|e| panic!("reading an option reply: {e}"))
    }

    fn try_reply(&mut self) -> io::Result<OptReply> {
        let h = self.try_recv(20)?;
        assert_eq!(be64(&h), REPLY_MAGIC, "option reply magic");
        Ok(OptReply {
            option: be32(&h[8..]),
            kind: be32(&h[12..]),
            data: self.try_recv(be32(&h[16..]) as usize)?,
        })
    }

    /// Sends an option and returns the first reply.
    pub fn option(&mut self, opt: u32, data: &[u8]) -> OptReply {
        self.send(&encode_option(opt, data));
        self.reply()
    }

    pub fn structured_reply(&mut self) {
        let r = self.option(NBD_OPT_STRUCTURED_REPLY, &[]);
        assert_eq!((r.option, r.kind), (NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK));
    }

    /// Selects `contexts` (if any) and sends NBD_OPT_GO asking for the
    /// block size; returns the size and transmission flags, whose DF flag
    /// must say whether replies are `structured` (negotiated before).
    pub fn go(&mut self, export: &str, structured: bool, contexts: &[&str]) -> (u64, u16) {
        self.structured = structured;
        if !contexts.is_empty() {
            let mut r = self.option(NBD_OPT_SET_META_CONTEXT, &meta_payload(export, contexts));
            let mut ids = 0;
            while r.kind == NBD_REP_META_CONTEXT {
                ids += 1;
                assert_eq!(be32(&r.data), ids, "context ids count from 1");
                r = self.reply();
            }
            assert_eq!(r.kind, NBD_REP_ACK);
            assert_eq!(ids as usize, contexts.len());
        }
        let info = self
            .try_go(export, &[NBD_INFO_BLOCK_SIZE])
            .unwrap_or_else(|e| panic!("NBD_OPT_GO({export}): {e:?}"));
        assert_eq!(info.1 & NBD_FLAG_SEND_DF != 0, structured);
        info
    }

    /// NBD_OPT_GO with the information requests `infos`: the export's size
    /// and transmission flags, or the server's refusal.
    fn try_go(&mut self, export: &str, infos: &[u16]) -> Result<(u64, u16), NbdError> {
        self.s
            .write_all(&encode_option(NBD_OPT_GO, &info_payload(export, infos)))?;
        let mut export_info = None;
        loop {
            let r = self.try_reply()?;
            assert_eq!(r.option, NBD_OPT_GO);
            match r.kind {
                NBD_REP_ACK => break,
                NBD_REP_INFO => {
                    if be16(&r.data) == NBD_INFO_EXPORT {
                        export_info = Some((be64(&r.data[2..]), be16(&r.data[10..])));
                    }
                }
                k if k & (1 << 31) != 0 => {
                    let msg = String::from_utf8_lossy(&r.data).into_owned();
                    return Err(NbdError::Refused(k, msg));
                }
                k => panic!("NBD_OPT_GO({export}): reply {k:#x}: {:?}", r.data),
            }
        }
        Ok(export_info.expect("NBD_INFO_EXPORT before NBD_REP_ACK"))
    }

    /// Greeting, flags, structured replies if asked, contexts, GO.
    pub fn start(&mut self, export: &str, structured: bool, contexts: &[&str]) -> (u64, u16) {
        self.handshake();
        if structured {
            self.structured_reply();
        }
        self.go(export, structured, contexts)
    }

    /// Sends one request (and its payload) without reading a reply.
    pub fn send_request(
        &mut self,
        flags: u16,
        kind: u16,
        cookie: u64,
        offset: u64,
        len: u32,
        data: &[u8],
    ) {
        self.try_send_request(flags, kind, cookie, offset, len, data)
            .unwrap_or_else(|e| panic!("sending a request: {e}"))
    }

    fn try_send_request(
        &mut self,
        flags: u16,
        kind: u16,
        cookie: u64,
        offset: u64,
        length: u32,
        data: &[u8],
    ) -> io::Result<()> {
        let mut b = Request {
            flags,
            kind,
            cookie,
            offset,
            length,
        }
        .encode()
        .to_vec();
        b.extend(data);
        self.s.write_all(&b)
    }

    /// Sends one request and reads its reply.
    pub fn cmd(&mut self, flags: u16, kind: u16, offset: u64, len: u32, data: &[u8]) -> Reply {
        self.try_cmd(flags, kind, offset, len, data)
            .unwrap_or_else(|e| panic!("request {kind} at {offset:#x}+{len:#x}: {e}"))
    }

    fn try_cmd(
        &mut self,
        flags: u16,
        kind: u16,
        offset: u64,
        len: u32,
        data: &[u8],
    ) -> io::Result<Reply> {
        self.cookie += 1;
        let cookie = self.cookie;
        self.try_send_request(flags, kind, cookie, offset, len, data)?;
        let r = if self.structured {
            self.try_structured()?
        } else {
            // A simple reply carries data only for a successful read.
            let h = self.try_recv(16)?;
            assert_eq!(be32(&h), NBD_SIMPLE_REPLY_MAGIC, "simple reply magic");
            let error = be32(&h[4..]);
            let data = if kind == NBD_CMD_READ && error == 0 {
                self.try_recv(len as usize)?
            } else {
                Vec::new()
            };
            Reply {
                cookie: be64(&h[8..]),
                error,
                message: String::new(),
                data,
                status: Vec::new(),
            }
        };
        assert_eq!(r.cookie, cookie, "replies come in order here");
        Ok(r)
    }

    /// Reads the chunks of one structured reply, up to the one marked done.
    pub fn structured(&mut self) -> Reply {
        self.try_structured()
            .unwrap_or_else(|e| panic!("reading a structured reply: {e}"))
    }

    fn try_structured(&mut self) -> io::Result<Reply> {
        let mut r = Reply::default();
        let mut pieces: Vec<(u64, Vec<u8>)> = Vec::new();
        loop {
            let h = self.try_recv(20)?;
            assert_eq!(be32(&h), NBD_STRUCTURED_REPLY_MAGIC, "chunk magic");
            let flags = be16(&h[4..]);
            let kind = be16(&h[6..]);
            r.cookie = be64(&h[8..]);
            let body = self.try_recv(be32(&h[16..]) as usize)?;
            match kind {
                NBD_REPLY_TYPE_NONE => assert!(body.is_empty()),
                NBD_REPLY_TYPE_OFFSET_DATA => pieces.push((be64(&body), body[8..].to_vec())),
                NBD_REPLY_TYPE_OFFSET_HOLE => {
                    pieces.push((be64(&body), vec![0; be32(&body[8..]) as usize]))
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
                    let n = be16(&body[4..]) as usize;
                    assert_eq!(body.len(), 6 + n, "error message length");
                    assert_ne!(r.error, 0);
                    r.message = String::from_utf8_lossy(&body[6..]).into_owned();
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
        Ok(r)
    }

    pub fn read(&mut self, offset: u64, len: u32) -> Reply {
        self.cmd(0, NBD_CMD_READ, offset, len, &[])
    }

    pub fn write(&mut self, offset: u64, data: &[u8]) -> Reply {
        self.cmd(0, NBD_CMD_WRITE, offset, data.len() as u32, data)
    }

    /// NBD_CMD_DISC, after which the server must close the connection.
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

/// An export used as a disk, through the `nbd` crate's library client
/// ([`nbd::client::Client`]): for tests whose requests may fail (a full
/// disk, a read-only export, a daemon that is stopped or killed), so each
/// returns its error instead of panicking.
pub struct Disk {
    c: nbd::client::Client,
    /// The export's size and transmission flags.
    pub size: u64,
    pub flags: u16,
}

impl From<nbd::client::Error> for NbdError {
    fn from(e: nbd::client::Error) -> Self {
        use nbd::client::Error as E;
        match e {
            E::Request { errno, .. } => NbdError::Errno(errno),
            E::Refused { reply, message, .. } => NbdError::Refused(reply, message),
            // The library's message says where; the kind stays.
            E::Io { ref source, .. } | E::Tls { ref source, .. } => {
                NbdError::Io(io::Error::new(source.kind(), e.to_string()))
            }
            e => NbdError::Io(io::Error::other(e.to_string())),
        }
    }
}

impl Disk {
    /// Connects to the unix socket `socket` (reads and writes limited to
    /// `timeout`) and opens `export` (structured replies, NBD_OPT_GO).
    pub fn connect(socket: &Path, export: &str, timeout: Duration) -> Result<Disk, NbdError> {
        let options = nbd::client::Options::new(export).timeout(timeout);
        let c = nbd::client::Client::connect_unix(socket, &options)?;
        Ok(Disk {
            size: c.size(),
            flags: c.flags().0,
            c,
        })
    }

    /// The library client underneath, for what `Disk` does not wrap
    /// (FUA, trim, write zeroes, block status).
    pub fn client(&mut self) -> &mut nbd::client::Client {
        &mut self.c
    }

    pub fn read(&mut self, offset: u64, len: u64) -> Result<Vec<u8>, NbdError> {
        let len = usize::try_from(len).expect("a read that fits in memory");
        let mut b = vec![0u8; len];
        self.c.read(offset, &mut b)?;
        Ok(b)
    }

    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), NbdError> {
        Ok(self.c.write(offset, data)?)
    }

    pub fn flush(&mut self) -> Result<(), NbdError> {
        Ok(self.c.flush()?)
    }

    /// The whole export, read in pieces of 4 MiB.
    pub fn read_all(&mut self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size as usize);
        let mut pos = 0;
        while pos < self.size {
            let n = (4 << 20).min(self.size - pos);
            out.extend(
                self.read(pos, n)
                    .unwrap_or_else(|e| panic!("NBD read at {pos:#x}+{n:#x}: {e:?}")),
            );
            pos += n;
        }
        out
    }

    /// NBD_CMD_DISC; errors are ignored (the server may be gone).
    pub fn disconnect(self) {
        let _ = self.c.disconnect();
    }
}
