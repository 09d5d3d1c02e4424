//! # testkit — what refpoint's tests share
//!
//! What the integration tests of several crates have in common, kept here
//! once instead of in every test file. Nothing in it is used outside
//! tests.
//!
//! ```text
//! pki         a CA, a server certificate for localhost/127.0.0.1 and a
//!             client certificate as PEM files, in the directory layouts
//!             libnbd and qemu read (tls-certificates=DIR, tls-creds-x509)
//! nbd_client  a synchronous NBD client over any Read + Write stream:
//!   Client      raw protocol steps for protocol tests (greeting, options,
//!               requests, simple and structured replies); panics on what
//!               the server must never do
//!   Disk        an export used as a disk (read, write, flush) whose
//!               errors are values, for tests that expect some to fail:
//!               a thin layer over the library client, nbd::client
//! tools       running qemu-img, qemu-io, qemu-nbd, nbdinfo, nbdcopy, curl
//!             (or any program) with a time limit; skipping when absent;
//!             reading a VHDX chain with libvhdi and dissect.hypervisor
//!             (`py/read_vhdx.py`, in the Python of `$REFPOINT_PYTHON`)
//! pattern     deterministic, never-zero byte patterns
//! compare     content equality that names the first differing byte
//! cut         whether checkpoints of several disks are one consistent cut
//! ranges      whether a set of (offset, length) ranges covers a range
//! ```
//!
//! The NBD client encodes options and requests with the `nbd` crate's own
//! encoders (`nbd::option`, `nbd::request`), so what the tests send is
//! what the server's parsers are tested to read back.
//!
//! `nbd_client` and `pki` are the features `nbd` and `pki` (both default):
//! they bring tokio, rustls and rcgen, which the tests of the format and
//! storage crates do without (`default-features = false`).

#![forbid(unsafe_code)]

pub mod compare;
pub mod cut;
#[cfg(feature = "nbd")]
pub mod nbd_client;
pub mod pattern;
#[cfg(feature = "pki")]
pub mod pki;
pub mod ranges;
pub mod tools;

/// A random seed for a randomized test, printed so a failing run can be
/// repeated: `REFPOINT_SEED=N` gives that seed instead.
pub fn seed() -> u64 {
    let seed = std::env::var("REFPOINT_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            use std::hash::{BuildHasher, Hasher};
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_nanos())
                    .unwrap_or(0),
            );
            h.finish()
        });
    eprintln!("seed {seed} (REFPOINT_SEED={seed} repeats this run)");
    seed
}
