//! # vhdx — the MS-VHDX virtual disk format
//!
//! A complete, crash-safe implementation of MS-VHDX (the open
//! specification; sections are cited throughout): fixed, dynamic and
//! differencing files, 512- and 4096-byte sectors, the log, chains, merge
//! and check. It knows the format and nothing else: no change tracking, no
//! machines, no network. All I/O goes through the `storage` crate.
//!
//! ## Lifecycle
//!
//! ```text
//! create / create_child ──┐
//!                         ▼
//! Vhdx::open(fs, path, writable)            Chain::open(fs, path, writable)
//!   1. file type identifier                   top Vhdx ─► open_parent ─► … base
//!   2. current header (§2.2.2)                (linkage checked against the
//!   3. log replay (§2.3.3): writable → in     parent's DataWriteGuid)
//!      place; read-only → in memory only
//!   4. region table (copy 2 if copy 1 is bad)
//!   5. metadata table + known items
//!   6. BAT (whole table kept in memory)
//!   7. writable: both headers rewritten (new FileWriteGuid)
//!                         │
//!        read / write / zero / trim  (io.rs)
//!                         │  BAT and sector bitmap changes stay in memory
//!                         ▼
//!        flush (commit.rs): fsync payload ─► one log entry ─► fsync ─►
//!                           apply in place ─► fsync
//!                         ▼
//!        close: flush, LogGuid cleared in both headers
//! ```
//!
//! ## Write pipeline
//!
//! A write to an unallocated block takes fresh space at the end of the file
//! (which reads as zeros), writes the payload there and changes the BAT
//! entry in memory only. Nothing else touches the disk until `flush`, which
//! turns every dirty metadata page into a single log entry. So allocating
//! blocks costs no synchronous I/O at all, and a flush costs three fsyncs
//! whatever it carries. A crash before the flush loses those unflushed
//! writes and nothing else; a crash during it is repaired by log replay.
//!
//! ## Differencing files for every reader
//!
//! Beyond what MS-VHDX requires, a differencing file keeps every chunk's
//! sector bitmap block allocated from its creation on (`create.rs`; files
//! made without them get them before their first change), and stores whole
//! blocks zeroed or trimmed as fully present zeros rather than ZERO or
//! UNMAPPED (`io.rs`): libvhdi reads the bitmap of every block that is not
//! fully present, a missing one at file offset 0. Both cost file length
//! only (sparse space), no writes.
//!
//! ## I/O model
//!
//! Synchronous, positional, through `Arc<dyn storage::Storage>`. Mapping
//! (`Vhdx::resolve`: virtual range → file ranges / zeros / parent) is
//! separate from moving bytes, so callers (chains, conversion, NBD) can move
//! the bytes as they like.

#![forbid(unsafe_code)]

pub mod bat;
mod chain;
mod check;
mod commit;
mod create;
mod disk;
pub mod error;
pub mod file_id;
pub mod format;
pub mod header;
mod io;
pub mod known_meta;
pub mod locator;
pub mod log;
mod merge;
pub mod metadata;
pub mod paths;
pub mod region;
pub mod sector_bitmap;

pub use bat::PayloadBlockState;
pub use chain::{open_parent, parent_candidates, Chain, MAX_CHAIN_DEPTH};
pub use check::{check, repair, CheckReport, Problem};
pub use create::{create, create_child, CreateOptions};
pub use disk::{DiskType, Stats, Vhdx};
pub use error::{Corruption, Error, Result};
pub use io::{Extent, Source};
pub use merge::{merge_into_parent, merge_into_parent_as, pending_merge_linkage, MergeReport};
