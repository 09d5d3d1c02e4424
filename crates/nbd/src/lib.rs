//! # nbd — an NBD server over any block device, and a client
//!
//! Implements the server side of the NBD protocol (`doc/proto.md` of
//! NetworkBlockDevice/nbd) for [`BlockDevice`]s found by name in an
//! [`Exports`] catalog, and a synchronous client ([`client::Client`]) for
//! one export of any server. It knows nothing about disk formats.
//!
//! ```text
//! accept (unix socket | TCP) ─► negotiate                 (negotiate.rs)
//!   greeting: NBDMAGIC IHAVEOPT, fixed newstyle + no zeroes
//!   options:  STARTTLS (rustls) · LIST · INFO · STRUCTURED_REPLY ·
//!             LIST/SET_META_CONTEXT · ABORT · GO / EXPORT_NAME ──┐
//!                                                                 ▼
//! transmit                                                  (transmit.rs)
//!   read requests ─► validate ─► small writes: inline    ─► replies
//!   (buffered,       (range, flags,  others: I/O threads      (written whole,
//!    in order)        read-only)     (≤ 32 in flight)          one flush per batch)
//!   READ: structured chunks, holes as OFFSET_HOLE · WRITE(+FUA) · FLUSH ·
//!   TRIM · WRITE_ZEROES · CACHE · BLOCK_STATUS (base:allocation and the
//!   device's own contexts) · DISC
//! ```
//!
//! The wire formats live one module per kind of message, each with its
//! encoder and parser (round-trip tested): `proto` (constants, names),
//! `option` (option payloads), `request` (request headers), `reply`
//! (option replies, simple replies, structured chunks). The server
//! parses requests and encodes replies; the client the other way round.
//!
//! ```text
//! client                                                  (client/)
//!   Client::connect / connect_unix / connect_tcp + Options
//!   handshake  greeting · STARTTLS (rustls, sync) · STRUCTURED_REPLY ·
//!              SET_META_CONTEXT base:allocation · GO + block sizes
//!   transmit   read · write(+FUA) · flush · trim · write_zeroes ·
//!              block_status · disconnect; split at the max request
//!   error      Error: Io · Tls · Protocol(Violation) · Refused · Request(errno) · …
//! tls          PEM → rustls ServerConfig / ClientConfig
//! mem          an in-memory device and a fixed catalog (tests, examples)
//! ```
//!
//! Bad input never takes the server down: a malformed option gets the
//! protocol's error reply, a bad request its error value; a connection
//! that breaks the framing (bad magic, truncated payload) is closed, and
//! other connections go on. Shutdown stops reading new requests and lets
//! the ones in flight finish.

#![forbid(unsafe_code)]

pub mod client;
mod device;
pub mod mem;
mod negotiate;
pub mod option;
pub mod proto;
pub mod reply;
pub mod request;
mod server;
pub mod tls;
mod transmit;

pub use device::{BlockDevice, BlockSize, DeviceError, DeviceResult, ExportInfo, Exports, Extent};
/// The rustls the client's [`client::Options::tls`] and [`tls`] take.
pub use rustls;
pub use server::{Server, Stream};
pub use transmit::MAX_IN_FLIGHT;
