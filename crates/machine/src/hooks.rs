//! Freeze and thaw hooks: shell commands run around an
//! application-consistent checkpoint.
//!
//! ```text
//! run(hook, timeout)
//!   sh -c COMMAND ─► exit 0: done
//!                 ├► exit ≠ 0: HookFailed (exit code, end of stderr)
//!                 └► still running at the timeout: its process group is
//!                    killed (SIGKILL), HookTimedOut
//! ```
//!
//! A hook run with a timeout gets a process group of its own, so the kill
//! reaches what it started too (`ssh guest fsfreeze …` and its children).
//! Without a timeout it stays in ours and gets a terminal's Ctrl-C as
//! refpoint does.

use crate::error::{MachineError, Result};
use crate::model::Machine;
use std::io::Read;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// How much of a failed hook's stderr the error keeps (its end).
const STDERR_KEPT: usize = 4096;

/// How long to wait, after the hook exited, for the rest of its stderr:
/// a background process it started may hold the pipe open for good.
const STDERR_GRACE: Duration = Duration::from_secs(2);

/// One hook of one machine.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hook<'a> {
    pub machine: &'a str,
    /// `"freeze"` or `"thaw"`.
    pub what: &'static str,
    pub command: &'a str,
}

/// Runs `m`'s freeze hook, if it has one.
pub(crate) fn freeze(m: &Machine, timeout: Option<Duration>) -> Result<()> {
    run_of(m, "freeze", m.freeze.as_deref(), timeout)
}

/// Runs `m`'s thaw hook, if it has one.
pub(crate) fn thaw(m: &Machine, timeout: Option<Duration>) -> Result<()> {
    run_of(m, "thaw", m.thaw.as_deref(), timeout)
}

fn run_of(
    m: &Machine,
    what: &'static str,
    command: Option<&str>,
    timeout: Option<Duration>,
) -> Result<()> {
    let Some(command) = command else {
        return Ok(());
    };
    let hook = Hook {
        machine: &m.name,
        what,
        command,
    };
    run(hook, timeout)
}

/// Runs a hook through `sh -c`, for at most `timeout` if one is given.
/// Its stdin and stdout are ours; its stderr is shown too and its end kept
/// for the error if it fails.
pub(crate) fn run(hook: Hook, timeout: Option<Duration>) -> Result<()> {
    let mut cmd = Command::new("sh");
    cmd.arg("-c").arg(hook.command).stderr(Stdio::piped());
    if timeout.is_some() {
        cmd.process_group(0);
    }
    let mut child = cmd.spawn().map_err(|source| MachineError::Io {
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
    let waited = |source| MachineError::Io {
        path: PathBuf::from("sh"),
        op: "waiting for a hook",
        source,
    };
    let status = match timeout {
        None => child.wait().map_err(waited)?,
        Some(limit) => {
            let deadline = Instant::now() + limit;
            loop {
                if let Some(st) = child.try_wait().map_err(waited)? {
                    break st;
                }
                if Instant::now() >= deadline {
                    // The group is the hook's (process_group(0) above): its
                    // id is the shell's pid, still unreaped here.
                    let group = nix::unistd::Pid::from_raw(child.id() as i32);
                    let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
                    child.wait().map_err(waited)?;
                    return Err(MachineError::HookTimedOut {
                        machine: hook.machine.into(),
                        what: hook.what,
                        command: hook.command.into(),
                        timeout: limit,
                    });
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
    };
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
        machine: hook.machine.into(),
        what: hook.what,
        command: hook.command.into(),
        code: status.code(),
        stderr: String::from_utf8_lossy(tail).into_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hook<'a>(what: &'static str, command: &'a str) -> Hook<'a> {
        Hook {
            machine: "vm1",
            what,
            command,
        }
    }

    #[test]
    fn a_failing_hook_reports_its_exit_code_and_stderr() {
        match run(hook("freeze", "echo cannot freeze >&2; exit 7"), None) {
            Err(MachineError::HookFailed {
                machine,
                what,
                code,
                stderr,
                ..
            }) => {
                assert_eq!((machine.as_str(), what), ("vm1", "freeze"));
                assert_eq!(code, Some(7));
                assert_eq!(stderr.trim(), "cannot freeze");
            }
            other => panic!("expected HookFailed, got {other:?}"),
        }
        run(hook("thaw", "true"), None).unwrap();
        run(hook("thaw", "true"), Some(Duration::from_secs(5))).unwrap();
    }

    #[test]
    fn a_hook_that_leaves_a_child_holding_stderr_does_not_hang() {
        let t = Instant::now();
        run(hook("freeze", "sleep 30 >/dev/null 2>&2 &"), None).unwrap();
        assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
    }

    #[test]
    fn a_hook_past_its_timeout_is_killed_with_what_it_started() {
        let dir = tempfile::tempdir().unwrap();
        let late = dir.path().join("late");
        // A child of the hook that would outlive a kill of the shell alone.
        let cmd = format!("(sleep 2; touch '{}') & sleep 30", late.display());
        let t = Instant::now();
        let e = run(hook("freeze", &cmd), Some(Duration::from_millis(300))).unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
        match &e {
            MachineError::HookTimedOut {
                machine,
                what,
                timeout,
                ..
            } => {
                assert_eq!((machine.as_str(), *what), ("vm1", "freeze"));
                assert_eq!(*timeout, Duration::from_millis(300));
            }
            other => panic!("expected HookTimedOut, got {other:?}"),
        }
        let text = e.to_string();
        assert!(text.contains("vm1") && text.contains("sleep 30"), "{text}");
        std::thread::sleep(Duration::from_secs(3));
        assert!(!late.exists(), "the hook's child was not killed");
    }
}
