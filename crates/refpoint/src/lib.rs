//! # refpoint — the command-line front end
//!
//! The binary (`main.rs`) parses `refpoint <noun> <verb>` and hands each
//! noun to its module under `cli/`; the modules here are what those
//! commands share. Business rules live in the library crates (`machine`,
//! `backup`, `vdisk`, `vhdx`); this crate prints, asks and adds the hints.
//!
//! ```text
//! main.rs ─► cli/vhd.rs  cli/rct.rs  cli/disk.rs  cli/machine.rs  cli/checkpoint.rs
//!            cli/reference.rs  cli/backup.rs (backup, restore, verify)  cli/serve.rs
//!        │
//!        ├─ image.rs          one readable disk: raw file or VHDX chain
//!        ├─ convert.rs        image → VHDX (fixed/dynamic) or raw, by vdisk::copy
//!        ├─ compare.rs        first differing byte of two images
//!        ├─ report.rs         info / map / check as text or JSON
//!        ├─ tracking.rs       rct / disk write on local files and machine disks
//!        ├─ machines.rs       the state directory's store, and its daemon if one runs
//!        ├─ demo.rs           `refpoint demo run`
//!        ├─ progress.rs       progress bars (hidden off a terminal and with --json),
//!        │                    one for the whole and one per machine of a host backup
//!        └─ units.rs          sizes with K/M/G/T suffixes, and back
//! ```
//!
//! `refpoint serve` runs the `daemon` crate.

pub mod compare;
pub mod convert;
pub mod demo;
pub mod image;
pub mod machines;
pub mod progress;
pub mod report;
pub mod tracking;
pub mod units;
