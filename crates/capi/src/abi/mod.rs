//! The C functions. Each checks its arguments in [`args`] and runs under
//! [`args::call`]; the work is done by the safe modules of the crate.

pub mod args;
pub mod disk;
pub mod machine;
pub mod misc;
pub mod tracking;
pub mod types;
