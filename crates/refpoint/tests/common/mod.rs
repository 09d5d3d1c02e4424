//! Running the `refpoint` binary from tests.

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output};

/// Runs `refpoint` with `args`.
pub fn refpoint(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_refpoint"))
        .args(args)
        .output()
        .expect("run refpoint")
}

/// Runs `refpoint`, which must succeed; returns its standard output.
pub fn ok(args: &[&str]) -> String {
    let o = refpoint(args);
    assert!(
        o.status.success(),
        "refpoint {args:?} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

/// A path as a command-line argument.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}
