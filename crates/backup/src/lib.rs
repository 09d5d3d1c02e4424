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
//! The repository is itself a VHDX chain per disk (each differential's
//! parent locator points at the previous point's file), so any VHDX reader
//! that understands differencing files can open a point directly.

#![forbid(unsafe_code)]

pub mod cv;
pub mod error;
pub mod export;
pub mod manifest;
pub mod repo;
pub mod restore;
pub mod run;

pub use error::{BackupError, Result};
pub use manifest::{DiskManifest, Manifest};
pub use repo::Repo;
pub use restore::{consolidate, flatten, restore, verify, BadBlock, RestoreFormat, VerifyReport};
pub use run::{backup, Summary};
