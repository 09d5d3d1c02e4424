//! # vdisk — the VirtDisk API
//!
//! A [`Disk`] is what everything above the format layers uses: a VHDX chain
//! or a raw file, opened read-only or writable, with change tracking wired
//! into every write path.
//!
//! ```text
//! write / zero / trim ──► tracking on?
//!        │ no                      │ yes
//!        ▼                         ▼
//!   image (VHDX chain / raw)   regions already durably marked and no
//!                              queued op in them? ── yes ──► image
//!                                     └─ no ───► stage marks, queue the op
//!                                                 (copy of the data)
//! commit (queue full, flush, seal, overlapping read, close):
//!   tracker.commit()  (one journal append + fsync for the whole batch)
//!   ─► first time in a session: the VHDX takes the DataWriteGuid that was
//!      just journaled
//!   ─► replay the queued ops on the image, in order
//! ```
//!
//! So no data write can reach the disk file before the mark that covers it
//! is durable, and the tracking never loses a change (see `rct`). An op may
//! overtake queued ones only in regions none of them touch: ops on the same
//! bytes keep their order, ops on different bytes commute until a flush
//! orders everything (a random writer whose regions are mostly marked
//! writes straight through instead of copying into the queue). Sequential
//! streams mark a growing window ahead of themselves so they rarely wait;
//! the window is at most the stream's length so far (so a stream reports at
//! most about twice what it wrote) and starts over at every seal.
//! A tracking error found at open never stops the disk from working: it is
//! kept and returned by every tracking query until tracking is re-enabled.
//! The one exception is a tracking file that could not be *read* (an I/O
//! error, also one looking it up): it may read fine at the next open, whose
//! IDs would then miss what was written meanwhile, so writes are refused.
//!
//! ## Errors on the write path
//!
//! * An op leaves the queue only once applied. An op that found no space
//!   (ENOSPC on a payload write, nothing of it recorded) stays queued, also
//!   one that ran directly: every later flush retries it and fails until it
//!   is applied, so a flush never acknowledges a write that is not there.
//! * Any other error (EIO, a failed flush — Linux may drop the pages of a
//!   failed writeback, so no later flush can vouch for them) stops the disk:
//!   writes and flushes fail with [`VdiskError::Failed`] until it is opened
//!   again, and the tracking is told ([`rct::Tracker::distrust`]): every ID
//!   is then refused as unproven, which sends the next backup to a full
//!   copy that starts tracking over.
//! * Limit, noted for what it is: data a failed flush lost may still read
//!   back from the page cache after the reopen and revert on the medium
//!   only at a later power cut, with no write in between; tracking started
//!   after that reopen cannot see it.
//!
//! ## Identity
//!
//! A VHDX carries its DataWriteGuid; a raw file's identity is its change
//! stamp (inode, length, times) as it was after refpoint's last clean
//! close, so a write by another tool — or by a refpoint process that died
//! before closing — makes tracking refuse with
//! [`RctError::ModifiedWhileUntracked`] instead of answering without it.
//!
//! ## Copying images ([`copy`])
//!
//! The one engine every image copy goes through (`vhd convert`, restore,
//! export, consolidation): a [`copy::Source`] (an [`Image`] or a chain)
//! into a [`copy::Sink`] (a new VHDX, differencing child or raw file, an
//! [`copy::Output`] that gets its name only once complete), with a reader
//! and a writer thread, zero-skipping, write-behind flushes, optional
//! ranges and an observer that sees every piece as it passes.

#![forbid(unsafe_code)]

pub mod copy;
mod disk;
mod error;
mod image;

pub use disk::{Disk, TrackingStatus};
pub use error::{Result, VdiskError};
pub use image::{is_zero, Image};
pub use rct::{ChangedRange, Changes, RctError, RctId, TrackingState};
