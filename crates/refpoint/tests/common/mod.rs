//! Running the `refpoint` binary from tests, and `refpoint serve` as a
//! daemon.

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

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

    /// Starts `refpoint` with `args` (its output discarded) and kills it
    /// with SIGKILL after `delay`: whether it died of that, rather than
    /// finishing first (which it must do successfully).
    pub fn killed_after(&self, args: &[&str], delay: Duration) -> bool {
        use std::os::unix::process::ExitStatusExt;
        let mut child = self
            .cmd(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(delay);
        let _ = child.kill();
        let st = child.wait().unwrap();
        if st.signal() == Some(9) {
            return true;
        }
        assert!(st.success(), "refpoint {args:?} failed on its own: {st}");
        false
    }

    /// Runs `refpoint` with `args`, which must succeed and print JSON.
    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }
}

/// A state directory (`REFPOINT_HOME`) inside a temporary directory, and
/// the CLI on it.
pub struct Env {
    _tmp: tempfile::TempDir,
    /// The temporary directory (disks, daemon logs, files of the test).
    pub dir: PathBuf,
    pub cli: Cli,
}

impl std::ops::Deref for Env {
    type Target = Cli;

    fn deref(&self) -> &Cli {
        &self.cli
    }
}

impl Env {
    pub fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        Env {
            cli: Cli {
                home: dir.join("home"),
            },
            dir,
            _tmp: tmp,
        }
    }

    pub fn nbd_socket(&self) -> PathBuf {
        self.home.join("nbd.sock")
    }

    pub fn api_socket(&self) -> PathBuf {
        self.home.join("api.sock")
    }

    /// The NBD URI of an export on the unix socket (`@` spelled `%40`).
    pub fn uri(&self, export: &str) -> String {
        format!(
            "nbd+unix:///{}?socket={}",
            export.replace('@', "%40"),
            s(&self.nbd_socket())
        )
    }

    /// A dynamic disk of `size` bytes with `block` blocks, as machine `vm1`
    /// (with optional freeze/thaw commands); returns the disk file.
    pub fn machine(&self, size: u64, block: &str, hooks: Option<(&str, &str)>) -> PathBuf {
        let disk = self.dir.join("d0.vhdx");
        self.ok(&[
            "vhd",
            "create",
            s(&disk),
            "--size",
            &size.to_string(),
            "--block-size",
            block,
        ]);
        let mut args = vec!["machine", "create", "vm1", "--disk", s(&disk)];
        if let Some((f, t)) = hooks {
            args.extend(["--freeze", f, "--thaw", t]);
        }
        self.ok(&args);
        disk
    }

    /// Starts `refpoint serve` with `args`, its error output in a log in
    /// [`Env::dir`], waiting until it reports its listeners bound and its
    /// disks open.
    pub fn serve(&self, args: &[String]) -> Daemon {
        std::fs::create_dir_all(&self.home).unwrap();
        let n = std::fs::read_dir(&self.dir).unwrap().count();
        let log = self.dir.join(format!("serve-{n}.log"));
        let child = self
            .cmd(&["serve"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start refpoint serve");
        let mut d = Daemon {
            child,
            log,
            done: false,
        };
        let t = Instant::now();
        loop {
            if let Some(st) = d.child.try_wait().unwrap() {
                d.done = true;
                panic!("refpoint serve exited with {st}: {}", d.log_text());
            }
            // Printed once every listener is bound.
            if d.log_text().contains("refpoint daemon: NBD on") {
                return d;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "refpoint serve did not start: {}",
                d.log_text()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `refpoint serve --stop`, which must return within `limit`; the
    /// daemon must then exit cleanly within `limit`.
    pub fn stop(&self, mut d: Daemon, limit: Duration) {
        // (If it does not return, the daemon's log is shown as `d` drops.)
        let o = testkit::tools::run(&mut self.cmd(&["serve", "--stop"]), limit);
        assert!(
            o.status.success(),
            "serve --stop: {}",
            testkit::tools::text(&o)
        );
        let st = d.wait(limit);
        assert!(
            st.success(),
            "the daemon exited with {st}: {}",
            d.log_text()
        );
        let log = d.log_text();
        assert!(log.contains("every disk flushed and closed"), "{log}");
    }
}

/// A running `refpoint serve`; killed (SIGKILL) when dropped unless it
/// already ended, its log shown if the test is failing.
pub struct Daemon {
    child: Child,
    log: PathBuf,
    done: bool,
}

impl Daemon {
    /// What it has written to its error output so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the daemon to exit on its own.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                self.done = true;
                return st;
            }
            assert!(
                t.elapsed() < limit,
                "the daemon did not exit within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `kill -9`.
    pub fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
        self.done = true;
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- daemon log ---\n{}", self.log_text());
        }
    }
}
