//! Running the `refpoint` binary from tests.

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
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

/// `refpoint` with its state in `home` (`REFPOINT_HOME`).
pub struct Cli {
    pub home: PathBuf,
}

impl Cli {
    /// `refpoint` with `args`, to run.
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_refpoint"));
        c.args(args).env("REFPOINT_HOME", &self.home);
        c
    }

    /// Runs `refpoint` with `args`.
    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().expect("run refpoint")
    }

    /// Runs `refpoint` with `args`, which must succeed; returns its
    /// standard output.
    pub fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "refpoint {args:?} failed ({}): {}{}",
            o.status,
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// Runs `refpoint` with `args`, which must succeed and print JSON.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }
}
