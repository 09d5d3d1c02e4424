//! # rct — resilient change tracking
//!
//! Which ranges of a virtual disk changed since a reference point, in a way
//! that survives crashes: **no change is ever missed**. The crate knows
//! nothing about VHDX; it tracks regions (default 64 KiB) of a virtual disk
//! of a given size, in a tracking file next to the disk (`<disk>.rct`).
//!
//! ## Generations and IDs
//!
//! ```text
//!  gen 1        gen 2        gen 3 (current)
//! ├──────────┤├───────────┤├──────────────
//!            ▲            ▲
//!   seal → rct:<guid>:00000001   rct:<guid>:00000002
//! changes since ID k = ∪ dirty regions of generations > k
//! ```
//!
//! `seal()` closes the current generation and returns its ID. IDs stay
//! queryable until released; a generation's regions are dropped once no
//! retained ID needs them.
//!
//! ## Why it is resilient: the write-intent journal
//!
//! ```text
//! caller: before a write to bytes B
//!   is_marked(B)?  yes → write (no cost)
//!                  no  → stage(B) … commit(): append GenSet record, fsync
//!                                   → now write B
//! ```
//!
//! A region's mark is durable before any data write that dirties it is
//! issued, so after a crash at any point every written byte is covered.
//! Only the first write to a region in a generation pays, and `commit`
//! carries every staged region in one append and one fsync (group commit;
//! `vdisk` queues writes to batch them). A crash can leave marks whose
//! writes never happened — over-reporting, which is allowed — never the
//! reverse. A torn last record is ignored (its fsync never returned, so no
//! write depended on it); a damaged record followed by valid ones makes the
//! file corrupt.
//!
//! ## Proving the disk was not changed behind our back
//!
//! The tracking file stores the disk's identity (for VHDX: its
//! DataWriteGuid). Before the disk takes a new identity, the new one is
//! journaled. Opening with an identity the file does not know fails with
//! [`RctError::ModifiedWhileUntracked`]. A raw file has no identity of its
//! own; its caller passes the file's change stamp (inode, length, times)
//! as it was after refpoint's last clean close, so any later write, by
//! another tool or by a refpoint process that died before closing, is
//! detected. Every other doubt — missing or
//! corrupt file, unknown or released ID — is its own [`RctError`]; callers
//! fall back to a full backup. None of them prevents using the disk.
//!
//! ## Errors while running
//!
//! The file and the tracker's memory agree after every call, also a failed
//! one:
//!
//! * a failed append leaves the journal's end where it was (the next
//!   append overwrites the remains); marks and identities stay staged and
//!   are appended again;
//! * a compaction (the state rewritten into `<disk>.rct.tmp`, flushed,
//!   renamed over the file, the directory synced) switches memory to the
//!   new file and epoch only once it is durably in place; one that fails
//!   before the rename changes nothing;
//! * a seal whose append failed may still reach the file, so the file is
//!   rewritten from memory under a new epoch, which voids it;
//! * when that is impossible (or a rename cannot be made durable), the
//!   tracker stops: every call fails with [`RctError::Failed`] until the
//!   tracking is opened again, and opening settles what the file says.

#![forbid(unsafe_code)]

pub mod error;
pub mod id;
pub mod record;
mod tracker;

pub use error::{RctError, Result};
pub use id::RctId;
pub use tracker::{
    set_compaction_threshold, tracking_path, ChangedRange, Changes, Tracker, TrackingState,
    DEFAULT_GRANULARITY,
};
