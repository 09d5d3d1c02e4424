//! # refpoint — the command-line front end
//!
//! A thin binary over the library crates: `main.rs` parses arguments and
//! hands off to the modules here, which hold the logic the commands share.
//!
//! ```text
//! refpoint vhd create|info|check|map|convert|compare|merge
//! refpoint rct enable|disable|status|seal|release|changes · disk write
//!        │
//!        ├─ image.rs    one readable disk: raw file or VHDX chain
//!        ├─ convert.rs  image → VHDX (fixed/dynamic) or raw, by vdisk::copy
//!        ├─ compare.rs  first differing byte of two images
//!        ├─ report.rs   info / map / check as text or JSON
//!        ├─ tracking.rs change tracking through `vdisk`
//!        └─ units.rs    sizes with K/M/G/T suffixes
//! ```

pub mod compare;
pub mod convert;
pub mod demo;
pub mod image;
pub mod machines;
pub mod progress;
pub mod report;
pub mod serve;
pub mod tracking;
pub mod units;
