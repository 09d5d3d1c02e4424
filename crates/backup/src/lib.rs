//! # backup — full and incremental backups of machines
//!
//! The Hyper-V backup workflow on disk files: recovery checkpoint → export
//! (full, or differential since the last reference point) → reference
//! point; and the repository side: list, restore, verify, consolidate.
//!
//! ```text
//! backup(machine, repo)                         restore(repo, point) ─► flat image
//!   checkpoint ─► vdisk query_changes ─► export  verify(repo)  ─► first bad block + file
//!        │                                │      consolidate(repo, keep) ─► synthetic full
//!        └──── convert to reference point ◄─ manifest (BLAKE3 per MiB)
//! ```
//!
//! A host repository ([`host`]) holds one such repository per machine
//! and the host points that tie their points into one consistent cut of
//! several machines; [`host::resolve_point`] turns "host point N, machine
//! M" into the machine repository and point (and takes plain repositories
//! too).
//!
//! The repository is itself a VHDX chain per disk (each differential's
//! parent locator points at the previous point's file), so any VHDX reader
//! that understands differencing files can open a point directly.
//!
//! Every image this crate writes — a full or differential export, a
//! restore's flat image, a consolidation's synthetic full — is copied by
//! `vdisk`'s one engine ([`vdisk::copy`]): pipelined, zero-skipping, and
//! under its final name only once complete. Exports hash the blocks as
//! they pass (its observer); a differential copies only the changed ranges
//! (its ranges), reading the rest of each hash block it needs (its
//! context).

#![forbid(unsafe_code)]

pub mod cv;
pub mod error;
pub mod export;
pub mod host;
pub mod manifest;
pub mod repo;
pub mod restore;
pub mod run;

pub use error::{BackupError, Result};
pub use manifest::{DiskManifest, Manifest};
pub use repo::Repo;
pub use restore::{consolidate, flatten, restore, verify, BadBlock, MachineVerified, VerifyReport};
pub use run::{backup, Summary};
/// The output format of a restore: `vdisk`'s copy engine's.
pub use vdisk::copy::Format;
