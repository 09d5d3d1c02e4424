//! Freeze and thaw hooks: shell commands run around an
//! application-consistent checkpoint.

use crate::error::{MachineError, Result};
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How much of a failed hook's stderr the error keeps (its end).
const STDERR_KEPT: usize = 4096;

/// How long to wait, after the hook exited, for the rest of its stderr:
/// a background process it started may hold the pipe open for good.
const STDERR_GRACE: Duration = Duration::from_secs(2);

/// Runs a hook through `sh -c`. Its stdin and stdout are ours; its stderr
/// is shown too and its end kept for the error if it fails.
pub(crate) fn run(what: &'static str, command: &str) -> Result<()> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| MachineError::Io {
            path: PathBuf::from("sh"),
            op: "starting a hook",
            source,
        })?;
    // Read on a thread, so a hook that leaves a child holding stderr
    // (`ssh -f`, `cmd &`) cannot hang the checkpoint.
    let (tx, rx) = mpsc::channel();
    if let Some(mut pipe) = child.stderr.take() {
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = pipe.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
    }
    let status = child.wait().map_err(|source| MachineError::Io {
        path: PathBuf::from("sh"),
        op: "waiting for a hook",
        source,
    })?;
    let mut err = Vec::new();
    let deadline = Instant::now() + STDERR_GRACE;
    while let Ok(chunk) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
        eprint!("{}", String::from_utf8_lossy(&chunk));
        err.extend(chunk);
        if err.len() > 4 * STDERR_KEPT {
            err.drain(..err.len() - STDERR_KEPT);
        }
    }
    if status.success() {
        return Ok(());
    }
    let tail = &err[err.len().saturating_sub(STDERR_KEPT)..];
    Err(MachineError::HookFailed {
        what,
        command: command.into(),
        code: status.code(),
        stderr: String::from_utf8_lossy(tail).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failing_hook_reports_its_exit_code_and_stderr() {
        match run("freeze", "echo cannot freeze >&2; exit 7") {
            Err(MachineError::HookFailed {
                what, code, stderr, ..
            }) => {
                assert_eq!(what, "freeze");
                assert_eq!(code, Some(7));
                assert_eq!(stderr.trim(), "cannot freeze");
            }
            other => panic!("expected HookFailed, got {other:?}"),
        }
        run("thaw", "true").unwrap();
    }

    #[test]
    fn a_hook_that_leaves_a_child_holding_stderr_does_not_hang() {
        let t = Instant::now();
        run("freeze", "sleep 30 >/dev/null 2>&2 &").unwrap();
        assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    }
}
