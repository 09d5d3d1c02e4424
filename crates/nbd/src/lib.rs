//! # nbd — an NBD server over any block device
//!
//! Implements the server side of the NBD protocol (`doc/proto.md` of
//! NetworkBlockDevice/nbd) for [`BlockDevice`]s found by name in an
//! [`Exports`] catalog. It knows nothing about disk formats.
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
//! Bad input never takes the server down: a malformed option gets the
//! protocol's error reply, a bad request its error value; a connection
//! that breaks the framing (bad magic, truncated payload) is closed, and
//! other connections go on. Shutdown stops reading new requests and lets
//! the ones in flight finish.

#![forbid(unsafe_code)]

mod device;
pub mod mem;
mod negotiate;
pub mod option;
pub mod proto;
mod reply;
pub mod request;
mod server;
pub mod tls;
mod transmit;

pub use device::{BlockDevice, BlockSize, DeviceError, DeviceResult, ExportInfo, Exports, Extent};
pub use server::{Server, Stream};
pub use transmit::MAX_IN_FLIGHT;
