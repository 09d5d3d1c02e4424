//! Freeze and thaw hooks: shell commands run around an
//! application-consistent checkpoint.

use crate::error::{MachineError, Result};
use std::io::Read;
use std::path::PathBuf;
use std::process::{Command, Stdio};

/// How much of a failed hook's stderr the error keeps (its end).
const STDERR_KEPT: usize = 4096;

/// Runs a hook through `sh -c`. Its stdout goes where ours goes; its
/// stderr is shown too and its end kept for the error if it fails.
pub(crate) fn run(what: &'static str, command: &str) -> Result<()> {
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(command)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| MachineError::Io {
            path: PathBuf::from("sh"),
            op: "starting a hook",
            source,
        })?;
    let mut err = Vec::new();
    if let Some(mut s) = child.stderr.take() {
        let _ = s.read_to_end(&mut err);
    }
    let status = child.wait().map_err(|source| MachineError::Io {
        path: PathBuf::from("sh"),
        op: "waiting for a hook",
        source,
    })?;
    if !err.is_empty() {
        eprint!("{}", String::from_utf8_lossy(&err));
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
}
