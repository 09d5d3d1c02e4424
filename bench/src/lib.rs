//! What the benchmark binaries (`backup`, `nbd`, `capi`) share: running and timing
//! commands ([`runner`]), and setting a run up ([`setup`]): sizes on the
//! command line, the refpoint build, the work directory, the page cache.

pub mod runner;
pub mod setup;
