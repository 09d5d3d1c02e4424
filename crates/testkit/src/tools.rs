//! Running the peer tools the interoperability tests use (qemu-img,
//! qemu-io, qemu-nbd, nbdinfo, nbdcopy, curl, and the Python VHDX readers
//! libvhdi and dissect.hypervisor) and any other program.
//!
//! Every run has a time limit: a client that hangs on a server bug fails
//! the test (with what it printed so far) instead of hanging it. Output
//! goes to anonymous temporary files rather than pipes, so a program that
//! leaves a child holding its output open cannot block the test either.
//! A program that cannot be started fails the test naming the package
//! that provides it; [`available`] is for tests that skip without it.
//! Servers (qemu-nbd) run in the [`Background`] until the test drops them.

use std::ffi::OsStr;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// The Debian/Ubuntu package of a peer tool, for the message when it is
/// missing.
fn package(program: &OsStr) -> Option<&'static str> {
    let name = std::path::Path::new(program).file_name()?.to_str()?;
    Some(match name {
        "qemu-img" | "qemu-io" | "qemu-nbd" => "qemu-utils",
        "nbdinfo" | "nbdcopy" => "libnbd-bin",
        "curl" => "curl",
        _ => return None,
    })
}

/// Whether every one of `programs` runs (`PROGRAM --version`). A missing
/// one skips the test (the caller returns), except when the `CI`
/// environment variable is set: CI installs the tools, so a missing one
/// there is a broken setup and fails the test.
pub fn available(programs: &[&str]) -> bool {
    let missing: Vec<&str> = programs
        .iter()
        .copied()
        .filter(|p| {
            !Command::new(p)
                .arg("--version")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success())
        })
        .collect();
    if missing.is_empty() {
        return true;
    }
    skip_unless_ci(&missing.join(" and "))
}

/// A test's tool `what` is missing: false (the test skips), or under CI a
/// failure.
fn skip_unless_ci(what: &str) -> bool {
    assert!(
        std::env::var_os("CI").is_none(),
        "{what} not found, and CI is set"
    );
    eprintln!("skipped: {what} not found");
    false
}

/// Where `.ci/run` makes the virtual environment with the Python readers.
const CI_VENV_PYTHON: &str = "/var/cache/refpoint-venv/bin/python";

/// The Python interpreter that has the VHDX readers: `$REFPOINT_PYTHON`,
/// else the virtual environment `.ci/run` makes, if it is there, else
/// `python3` from the PATH.
pub fn python() -> PathBuf {
    if let Some(p) = std::env::var_os("REFPOINT_PYTHON") {
        return p.into();
    }
    if Path::new(CI_VENV_PYTHON).exists() {
        return CI_VENV_PYTHON.into();
    }
    "python3".into()
}

/// Another implementation of MS-VHDX that tests read our files with,
/// through `py/read_vhdx.py` (both from PyPI: `libvhdi-python`, Python
/// bindings of the C library libvhdi, and `dissect.hypervisor`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VhdxReader {
    Libvhdi,
    Dissect,
}

impl VhdxReader {
    pub const ALL: [VhdxReader; 2] = [VhdxReader::Libvhdi, VhdxReader::Dissect];

    /// The name `read_vhdx.py` takes.
    pub fn name(self) -> &'static str {
        match self {
            VhdxReader::Libvhdi => "libvhdi",
            VhdxReader::Dissect => "dissect",
        }
    }
}

/// Whether [`python`] imports both readers; like [`available`], a missing
/// one skips the test, or fails it under CI (asked once per process).
pub fn vhdx_readers_available() -> bool {
    static FOUND: OnceLock<bool> = OnceLock::new();
    let found = *FOUND.get_or_init(|| {
        Command::new(python())
            .args(["-c", "import pyvhdi, dissect.hypervisor.disk.vhdx"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    });
    found
        || skip_unless_ci(&format!(
            "{} with pyvhdi and dissect.hypervisor (pip install libvhdi-python \
             dissect.hypervisor, or set REFPOINT_PYTHON; .ci/run makes a venv)",
            python().display()
        ))
}

/// The whole virtual content of the VHDX file `top` as `reader` reads it;
/// a differencing file through `parents` (its parent first, the base
/// last). Fails the test if the reader fails or runs for 10 minutes.
pub fn read_vhdx_with(reader: VhdxReader, top: &Path, parents: &[&Path]) -> ReadBack {
    try_read_vhdx_with(reader, top, parents).unwrap_or_else(|e| panic!("{e}"))
}

/// Like [`read_vhdx_with`], but a reader that fails is an error (what it
/// printed), for the readers' known limitations; one that runs for 10
/// minutes still fails the test.
pub fn try_read_vhdx_with(
    reader: VhdxReader,
    top: &Path,
    parents: &[&Path],
) -> Result<ReadBack, String> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("py/read_vhdx.py");
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut cmd = Command::new(python());
    cmd.arg(&script)
        .arg(reader.name())
        .arg(out.path())
        .arg(top)
        .args(parents);
    let o = run(&mut cmd, Duration::from_secs(600));
    if !o.status.success() {
        return Err(describe(&format!("{cmd:?}"), &o));
    }
    Ok(ReadBack {
        reader,
        top: top.to_path_buf(),
        file: out,
    })
}

/// What a [`VhdxReader`] read: a raw (sparse) temporary file, compared
/// piece by piece so a large disk is never held in memory whole.
pub struct ReadBack {
    reader: VhdxReader,
    top: PathBuf,
    file: tempfile::NamedTempFile,
}

impl ReadBack {
    /// The raw content as a file.
    pub fn path(&self) -> &Path {
        self.file.path()
    }

    /// Asserts that the content is `want`, naming the first differing byte.
    #[track_caller]
    pub fn assert_is(&self, want: &[u8]) {
        self.assert_matches(want.len() as u64, |off, buf| {
            buf.copy_from_slice(&want[off as usize..off as usize + buf.len()])
        });
    }

    /// Asserts that the content is `size` bytes that `expected(offset,
    /// buf)` fills in, piece by piece, naming the first differing byte.
    #[track_caller]
    pub fn assert_matches(&self, size: u64, mut expected: impl FnMut(u64, &mut [u8])) {
        use std::os::unix::fs::FileExt;
        let what = format!("{} reading {}", self.reader.name(), self.top.display());
        let f = self.file.as_file();
        let len = f.metadata().unwrap().len();
        assert_eq!(len, size, "{what}: virtual size");
        const PIECE: u64 = 4 << 20;
        let (mut got, mut want) = (vec![0u8; PIECE as usize], vec![0u8; PIECE as usize]);
        let mut pos = 0;
        while pos < size {
            let n = PIECE.min(size - pos) as usize;
            f.read_exact_at(&mut got[..n], pos).unwrap();
            expected(pos, &mut want[..n]);
            if let Some(i) = crate::compare::first_difference(&got[..n], &want[..n]) {
                let at = pos + i as u64;
                panic!(
                    "{what}: first difference at byte {at} ({at:#x}): {:#04x}, expected {:#04x}",
                    got[i], want[i]
                );
            }
            pos += n as u64;
        }
    }
}

/// Runs `cmd` to completion (stdin empty) and returns its status and
/// output; kills it and fails the test after `limit`.
pub fn run(cmd: &mut Command, limit: Duration) -> Output {
    let (mut out, mut err) = (tempfile::tempfile().unwrap(), tempfile::tempfile().unwrap());
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(err.try_clone().unwrap())
        .spawn()
        .unwrap_or_else(|e| {
            let hint = package(cmd.get_program())
                .map(|p| format!(" (package {p})"))
                .unwrap_or_default();
            panic!("cannot run {cmd:?}: {e}{hint}")
        });
    let t = Instant::now();
    let mut timed_out = false;
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t.elapsed() > limit {
            let _ = child.kill();
            timed_out = true;
            break child.wait().unwrap();
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let read = |f: &mut std::fs::File| {
        let mut v = Vec::new();
        f.rewind().unwrap();
        f.read_to_end(&mut v).unwrap();
        v
    };
    let o = Output {
        status,
        stdout: read(&mut out),
        stderr: read(&mut err),
    };
    if timed_out {
        panic!(
            "{}",
            describe(&format!("{cmd:?} still running after {limit:?}"), &o)
        );
    }
    o
}

/// A program started with [`spawn`] (a server such as qemu-nbd): killed
/// when dropped, so a failing test leaves nothing running.
pub struct Background {
    child: std::process::Child,
    what: String,
    out: std::fs::File,
    err: std::fs::File,
}

/// Starts `cmd` in the background (stdin empty, output kept for failure
/// messages); fails the test, naming the package, if it cannot start.
pub fn spawn(cmd: &mut Command) -> Background {
    let (out, err) = (tempfile::tempfile().unwrap(), tempfile::tempfile().unwrap());
    let child = cmd
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(err.try_clone().unwrap())
        .spawn()
        .unwrap_or_else(|e| {
            let hint = package(cmd.get_program())
                .map(|p| format!(" (package {p})"))
                .unwrap_or_default();
            panic!("cannot run {cmd:?}: {e}{hint}")
        });
    Background {
        child,
        what: format!("{cmd:?}"),
        out,
        err,
    }
}

impl Background {
    /// Waits until `path` exists (the socket a server creates once it
    /// listens); fails the test with the program's output if it exits
    /// first or `limit` passes.
    pub fn wait_for_path(&mut self, path: &std::path::Path, limit: Duration) {
        let t = Instant::now();
        while !path.exists() {
            if let Some(st) = self.child.try_wait().unwrap() {
                let out = self.output();
                panic!(
                    "{} exited ({st}) before creating {}:\n{out}",
                    self.what,
                    path.display(),
                );
            }
            if t.elapsed() > limit {
                let out = self.output();
                panic!(
                    "{} did not create {} within {limit:?}:\n{out}",
                    self.what,
                    path.display(),
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// What the program printed so far (output, then error output).
    pub fn output(&mut self) -> String {
        let read = |f: &mut std::fs::File| {
            let mut v = Vec::new();
            f.rewind().unwrap();
            f.read_to_end(&mut v).unwrap();
            String::from_utf8_lossy(&v).into_owned()
        };
        let (o, e) = (read(&mut self.out), read(&mut self.err));
        format!("stdout:\n{o}\nstderr:\n{e}")
    }

    /// Kills the program and waits for it (so the files it held are free).
    pub fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Runs `cmd`, which must succeed; returns its output.
pub fn run_ok(cmd: &mut Command, limit: Duration) -> Output {
    let o = run(cmd, limit);
    assert!(o.status.success(), "{}", describe(&format!("{cmd:?}"), &o));
    o
}

/// Runs `cmd`, which must succeed; returns its standard output.
pub fn ok(cmd: &mut Command, limit: Duration) -> String {
    String::from_utf8_lossy(&run_ok(cmd, limit).stdout).into_owned()
}

/// Runs `cmd`, which must fail; returns its output and error output.
pub fn fails(cmd: &mut Command, limit: Duration) -> String {
    let o = run(cmd, limit);
    assert!(
        !o.status.success(),
        "{}",
        describe(&format!("{cmd:?} (should have failed)"), &o)
    );
    text(&o)
}

/// Standard output followed by error output.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `what`, the exit status and both outputs, for a failure message.
pub fn describe(what: &str, o: &Output) -> String {
    format!(
        "{what}: {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `qemu-io OPTS -c CMD… TARGET`: `cmds` run in order on `target` (a file
/// or an NBD URI); `opts` such as `-f raw`, `-r` (read-only).
pub fn qemu_io(opts: &[&str], cmds: &[impl AsRef<str>], target: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new("qemu-io");
    c.args(opts);
    for cmd in cmds {
        c.arg("-c").arg(cmd.as_ref());
    }
    c.arg(target);
    c
}

/// Parses `nbdinfo --map` output: one `(offset, length, flags,
/// description)` per line, the flags those of the context
/// (`base:allocation`: 1 hole, 2 zero) and the description nbdinfo's words
/// for them ("data", "hole,zero", "dirty"; empty for flags of a context it
/// does not know).
pub fn parse_nbdinfo_map(out: &str) -> Vec<(u64, u64, u32, String)> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert!(f.len() >= 3, "unexpected nbdinfo --map line {l:?}");
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
                f[3..].join(" "),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_with_output_and_status() {
        let out = ok(
            Command::new("sh").args(["-c", "echo out; echo err >&2"]),
            Duration::from_secs(30),
        );
        assert_eq!(out, "out\n");
        let t = fails(
            Command::new("sh").args(["-c", "echo no >&2; exit 3"]),
            Duration::from_secs(30),
        );
        assert_eq!(t, "no\n");
    }

    #[test]
    fn a_hanging_program_is_killed_at_the_limit() {
        let t = Instant::now();
        let r = std::panic::catch_unwind(|| {
            run(
                Command::new("sh").args(["-c", "echo started; sleep 30"]),
                Duration::from_millis(200),
            )
        });
        let msg = *r.unwrap_err().downcast::<String>().unwrap();
        assert!(
            msg.contains("still running") && msg.contains("started"),
            "{msg}"
        );
        assert!(t.elapsed() < Duration::from_secs(20));
    }

    #[test]
    fn background_programs_are_waited_for_and_killed() {
        let dir = tempfile::tempdir().unwrap();
        let flag = dir.path().join("ready");
        let mut b = spawn(
            Command::new("sh")
                .arg("-c")
                .arg(format!("echo up; touch {}; sleep 30", flag.display())),
        );
        b.wait_for_path(&flag, Duration::from_secs(20));
        let t = Instant::now();
        b.stop();
        assert!(t.elapsed() < Duration::from_secs(20));
        let mut early = spawn(Command::new("sh").args(["-c", "echo gone >&2"]));
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            early.wait_for_path(&dir.path().join("never"), Duration::from_secs(20))
        }));
        let msg = *r.unwrap_err().downcast::<String>().unwrap();
        assert!(msg.contains("exited") && msg.contains("gone"), "{msg}");
    }

    #[test]
    fn nbdinfo_map_lines() {
        let m = parse_nbdinfo_map(
            "         0    65536    0  data\n     65536  1048576    3  hole,zero\n   1114112  4096  1\n",
        );
        assert_eq!(m.len(), 3);
        assert_eq!(m[1], (65536, 1 << 20, 3, "hole,zero".into()));
        assert_eq!(m[2], (1114112, 4096, 1, String::new()));
    }
}
