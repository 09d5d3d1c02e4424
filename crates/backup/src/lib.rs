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
//! A host backup ([`host::backup`], `refpoint backup --all`) takes one
//! host point of several machines, all or nothing:
//!
//! ```text
//! host::backup(machines, dir)
//!   journal ─► freeze all ─► park all, one checkpoint each ─► thaw all
//!     ─► per machine, in parallel: the export and manifest above
//!     ─► host point record (the commit) ─► convert each checkpoint
//! ```
//!
//! ## Map
//!
//! * [`run`] — one machine's backup: clean-up, plan, export, manifest,
//!   convert; the plan and export steps serve the host backup too.
//! * [`host`] — host repositories: `machines/<machine>/` (a repository
//!   each) and `host-points/` (the records, the journal of a run);
//!   [`host::backup`], [`host::list`], and [`host::resolve_point`], which
//!   turns "host point N, machine M" into a machine repository and point
//!   (and takes plain repositories too).
//! * [`repo`] / [`manifest`] — a repository's points and their manifests.
//! * [`export`] / [`cv`] — full and differential exports with their
//!   hashes; the chaining values kept next to each export.
//! * [`instant`] — instant restore: a machine on a point at once, its
//!   disks differencing children of the point's files (`machine`'s
//!   instant module makes them standalone).
//! * [`mod@restore`] — restore, verify, consolidate (of host repositories
//!   too).
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
pub mod instant;
pub mod manifest;
pub mod repo;
pub mod restore;
pub mod run;

pub use error::{BackupError, Result};
pub use instant::restore_instant;
pub use manifest::{DiskManifest, Manifest};
pub use repo::Repo;
pub use restore::{consolidate, flatten, restore, verify, BadBlock, MachineVerified, VerifyReport};
pub use run::{backup, Summary};
/// The output format of a restore: `vdisk`'s copy engine's.
pub use vdisk::copy::Format;
