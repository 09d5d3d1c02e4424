//! A synchronous NBD client: one export of a server, used as a disk.
//!
//! ```text
//! Client::connect(stream) / connect_unix(path) / connect_tcp(addr), Options:
//!   handshake                                              (handshake.rs)
//!     greeting ─► [STARTTLS ─► TLS (rustls, the caller's ClientConfig)]
//!     ─► STRUCTURED_REPLY (simple replies if refused)
//!     ─► SET_META_CONTEXT base:allocation (optional)
//!     ─► GO + NBD_INFO_BLOCK_SIZE  ─► ExportInfo (size, flags, block sizes)
//!   transmission, one request at a time                    (transmit.rs)
//!     read · write · write_fua · flush · trim · write_zeroes ·
//!     block_status ─► split at the maximum request, replies checked
//!     (cookies, chunk ranges, coverage), holes filled with zeros
//!   disconnect (NBD_CMD_DISC; also on drop)
//! errors: Error — Io, Tls, Protocol, Refused, Request (errno), …   (error.rs)
//! ```
//!
//! The client checks what it can before sending (ranges against the
//! export's size, the server's minimum block size, features the
//! transmission flags do not offer) and what the server sends back
//! (every reply parsed by [`crate::reply`], never trusted for lengths it
//! cannot bound). Writes to a read-only export go to the server, so its
//! EPERM arrives with its message (which says why).
//!
//! Not done: several requests in flight (the calls are synchronous),
//! meta contexts other than `base:allocation`, NBD_CMD_CACHE, extended
//! headers.

mod error;
mod handshake;
mod transmit;
mod wire;

pub use error::{Error, Result, Step, Violation};

use crate::device::BlockSize;
use crate::proto::*;
use rustls::pki_types::ServerName;
use rustls::ClientConfig;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use wire::Wire;

/// TLS for a connection: the caller's configuration (which CAs to trust,
/// an optional client certificate) and the name the server's certificate
/// must carry.
#[derive(Debug, Clone)]
pub struct Tls {
    pub config: Arc<ClientConfig>,
    pub server_name: ServerName<'static>,
}

/// How to connect: which export, whether over TLS, what to negotiate.
#[derive(Debug, Clone)]
pub struct Options {
    export: String,
    tls: Option<Tls>,
    structured_replies: bool,
    base_allocation: bool,
    timeout: Option<Duration>,
}

impl Options {
    /// Export `export`, without TLS, asking for structured replies and
    /// `base:allocation`, without a timeout.
    pub fn new(export: impl Into<String>) -> Options {
        Options {
            export: export.into(),
            tls: None,
            structured_replies: true,
            base_allocation: true,
            timeout: None,
        }
    }

    /// Upgrades the connection with NBD_OPT_STARTTLS before any other
    /// option; a server that refuses fails the connection.
    pub fn tls(mut self, config: Arc<ClientConfig>, server_name: ServerName<'static>) -> Options {
        self.tls = Some(Tls {
            config,
            server_name,
        });
        self
    }

    /// Whether to ask for structured replies (holes in reads, error
    /// messages, block status). On by default.
    pub fn structured_replies(mut self, on: bool) -> Options {
        self.structured_replies = on;
        self
    }

    /// Whether to select the `base:allocation` meta context (for
    /// [`Client::block_status`]). On by default.
    pub fn base_allocation(mut self, on: bool) -> Options {
        self.base_allocation = on;
        self
    }

    /// A limit on every read and write of the socket, for
    /// [`Client::connect_unix`] and [`Client::connect_tcp`] (and on
    /// connecting over TCP); a server that stops answering then fails the
    /// call instead of blocking it forever.
    pub fn timeout(mut self, limit: Duration) -> Options {
        self.timeout = Some(limit);
        self
    }

    pub fn export(&self) -> &str {
        &self.export
    }
}

/// The transmission flags of an export (§ "Transmission flags").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransmissionFlags(pub u16);

impl TransmissionFlags {
    fn has(self, flag: u16) -> bool {
        self.0 & flag != 0
    }
    pub fn read_only(self) -> bool {
        self.has(NBD_FLAG_READ_ONLY)
    }
    pub fn can_flush(self) -> bool {
        self.has(NBD_FLAG_SEND_FLUSH)
    }
    pub fn can_fua(self) -> bool {
        self.has(NBD_FLAG_SEND_FUA)
    }
    pub fn rotational(self) -> bool {
        self.has(NBD_FLAG_ROTATIONAL)
    }
    pub fn can_trim(self) -> bool {
        self.has(NBD_FLAG_SEND_TRIM)
    }
    pub fn can_write_zeroes(self) -> bool {
        self.has(NBD_FLAG_SEND_WRITE_ZEROES)
    }
    pub fn can_df(self) -> bool {
        self.has(NBD_FLAG_SEND_DF)
    }
    /// Several connections see each other's writes once flushed.
    pub fn can_multi_conn(self) -> bool {
        self.has(NBD_FLAG_CAN_MULTI_CONN)
    }
    pub fn can_cache(self) -> bool {
        self.has(NBD_FLAG_SEND_CACHE)
    }
    pub fn can_fast_zero(self) -> bool {
        self.has(NBD_FLAG_SEND_FAST_ZERO)
    }
}

/// What the server said about the export when the handshake ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportInfo {
    /// The name the client asked for.
    pub name: String,
    pub size: u64,
    pub flags: TransmissionFlags,
    /// The server's constraints; the defaults (1 / 4096 / 32 MiB) if it
    /// sent none.
    pub block_size: BlockSize,
    pub description: Option<String>,
}

/// One run of `base:allocation` block status: `length` bytes from
/// `offset` with the same state. A `hole` is not allocated; `zero` bytes
/// read as zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AllocationExtent {
    pub offset: u64,
    pub length: u64,
    pub hole: bool,
    pub zero: bool,
}

/// A connection to one export, in the transmission phase.
///
/// Calls are synchronous; ranges are in bytes of the export and may be
/// of any size (the client splits them). After an error that leaves the
/// stream out of step (I/O, TLS, a protocol violation) every call fails
/// with [`Error::Closed`]; a request the server failed
/// ([`Error::Request`]) does not end the connection.
pub struct Client {
    wire: Wire,
    info: ExportInfo,
    structured: bool,
    /// The context id of `base:allocation`, when selected.
    allocation: Option<u32>,
    tls: bool,
    cookie: u64,
    /// The largest read or write sent in one request.
    max_request: u32,
    /// Why the connection ended, once it did.
    closed: Option<String>,
}

impl Client {
    /// Runs the handshake over `stream` (a socket, one end of a socket
    /// pair, anything that reads and writes in order).
    pub fn connect<S: Read + Write + Send + 'static>(
        stream: S,
        options: &Options,
    ) -> Result<Client> {
        let n = handshake::negotiate(Box::new(stream), options)?;
        let b = n.info.block_size;
        // The largest piece: at most the server's maximum and 32 MiB, a
        // multiple of its minimum (a power of two of at most 64 KiB).
        let max_request = b.maximum.min(MAX_PAYLOAD) / b.minimum * b.minimum;
        Ok(Client {
            wire: n.wire,
            info: n.info,
            structured: n.structured,
            allocation: n.allocation,
            tls: n.tls,
            cookie: 0,
            max_request,
            closed: None,
        })
    }

    /// Connects to a server's unix socket (the daemon's `nbd.sock`).
    pub fn connect_unix(path: impl AsRef<Path>, options: &Options) -> Result<Client> {
        let path = path.as_ref();
        let failed = |e| Error::io(&options.export, Step::Connect, e);
        let s = UnixStream::connect(path).map_err(|e| {
            failed(std::io::Error::new(
                e.kind(),
                format!("{}: {e}", path.display()),
            ))
        })?;
        s.set_read_timeout(options.timeout).map_err(failed)?;
        s.set_write_timeout(options.timeout).map_err(failed)?;
        Client::connect(s, options)
    }

    /// Connects over TCP (the first address that answers), without
    /// Nagle's delay.
    pub fn connect_tcp(addr: impl ToSocketAddrs, options: &Options) -> Result<Client> {
        let failed = |e| Error::io(&options.export, Step::Connect, e);
        let mut last = None;
        let mut stream = None;
        for a in addr.to_socket_addrs().map_err(failed)? {
            let s = match options.timeout {
                Some(t) => TcpStream::connect_timeout(&a, t),
                None => TcpStream::connect(a),
            };
            match s {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = Some(std::io::Error::new(e.kind(), format!("{a}: {e}"))),
            }
        }
        let s = stream.ok_or_else(|| {
            failed(last.unwrap_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "no address to connect to")
            }))
        })?;
        s.set_nodelay(true).map_err(failed)?;
        s.set_read_timeout(options.timeout).map_err(failed)?;
        s.set_write_timeout(options.timeout).map_err(failed)?;
        Client::connect(s, options)
    }

    /// The export as the server described it.
    pub fn info(&self) -> &ExportInfo {
        &self.info
    }

    pub fn size(&self) -> u64 {
        self.info.size
    }

    pub fn flags(&self) -> TransmissionFlags {
        self.info.flags
    }

    pub fn block_size(&self) -> BlockSize {
        self.info.block_size
    }

    /// Whether the server agreed to structured replies.
    pub fn structured_replies(&self) -> bool {
        self.structured
    }

    /// Whether [`Self::block_status`] can be used.
    pub fn has_base_allocation(&self) -> bool {
        self.allocation.is_some()
    }

    /// Whether the connection runs over TLS.
    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The largest read or write sent as one request.
    pub fn max_request(&self) -> u32 {
        self.max_request
    }

    /// Fills `buf` from `offset` (holes read as zeros).
    pub fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.do_read(offset, buf)
    }

    /// Writes `data` at `offset`; durable after a [`Self::flush`].
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.do_write(offset, data, false)
    }

    /// Writes `data` at `offset`, durable when this returns (FUA).
    pub fn write_fua(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.do_write(offset, data, true)
    }

    /// Makes every write the server acknowledged durable.
    pub fn flush(&mut self) -> Result<()> {
        self.do_flush()
    }

    /// Tells the server `length` bytes at `offset` are no longer needed
    /// (their content is undefined afterwards).
    pub fn trim(&mut self, offset: u64, length: u64) -> Result<()> {
        self.do_zero(NBD_CMD_TRIM, 0, offset, length)
    }

    /// Makes `length` bytes at `offset` read as zeros; `may_trim` lets the
    /// server deallocate them (else NBD_CMD_FLAG_NO_HOLE).
    pub fn write_zeroes(&mut self, offset: u64, length: u64, may_trim: bool) -> Result<()> {
        let flags = if may_trim { 0 } else { NBD_CMD_FLAG_NO_HOLE };
        self.do_zero(NBD_CMD_WRITE_ZEROES, flags, offset, length)
    }

    /// The allocation of `length` bytes at `offset` (`base:allocation`):
    /// extents that cover exactly that range, in order, neighbours with
    /// the same state merged. Where an answer stops inside a minimum
    /// block, the rest of that block is reported as data (not a hole, not
    /// zero), and the next request starts at the block's end.
    pub fn block_status(&mut self, offset: u64, length: u64) -> Result<Vec<AllocationExtent>> {
        self.do_block_status(offset, length)
    }

    /// Ends the session cleanly (NBD_CMD_DISC, then TLS close_notify).
    pub fn disconnect(mut self) -> Result<()> {
        self.do_disconnect()
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = self.do_disconnect();
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("info", &self.info)
            .field("structured", &self.structured)
            .field("allocation", &self.allocation)
            .field("tls", &self.tls)
            .field("closed", &self.closed)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client moves to another thread (behind a C handle, say); errors
    /// go anywhere an error can.
    #[test]
    fn clients_are_send_and_errors_send_and_sync() {
        fn send<T: Send>() {}
        fn send_sync<T: Send + Sync + 'static>() {}
        send::<Client>();
        send_sync::<Error>();
        send_sync::<Options>();
    }

    #[test]
    fn flags_read_the_spec_bits() {
        let f = TransmissionFlags(NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY | NBD_FLAG_SEND_FLUSH);
        assert!(f.read_only() && f.can_flush());
        assert!(!f.can_fua() && !f.can_trim() && !f.can_write_zeroes() && !f.can_multi_conn());
    }
}
