//! `nbd`: the refpoint daemon (`refpoint serve`) against `qemu-nbd`, both
//! serving the same dynamic VHDX over a unix socket, driven by the same
//! NBD clients, in one run.
//!
//! ```text
//! cargo run --release -p refpoint-bench --bin nbd \
//!     [-- --size 2G --runs 3 --count 50000 --depth 32 --dir /var/tmp --quick --keep]
//! ```
//!
//! One empty dynamic VHDX is made once (`qemu-img create -f vhdx -o
//! subformat=dynamic,block_size=32M`); every session of either server
//! starts from its own fresh copy of it. Per run, for each server (the
//! order alternating between runs):
//!
//! 1. Session "seq": `qemu-img convert -n` of a random-data raw file into
//!    the export (sequential write into the fresh disk, ending with a
//!    flush); then sequential reads of the whole export by `qemu-img
//!    convert` (into qemu's `null-co` driver) and `nbdcopy … null:`, warm
//!    (the image in the page cache) and cold (page cache dropped); and
//!    scattered 4 KiB reads by `qemu-img bench`.
//! 2. Session "nbdcopy": `nbdcopy --flush` of the raw file into a fresh
//!    disk.
//! 3. Session "random": scattered 4 KiB writes by `qemu-img bench -w` into
//!    a fresh disk (first touch: they allocate its blocks), then the same
//!    writes again (overwrite).
//!
//! Every figure is the wall time of the client process (connect, I/O, the
//! final flush, disconnect), median of the runs. In the first run the
//! written content is checked with `qemu-img compare` and every image with
//! `qemu-img check` after its server stopped.

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use refpoint_cli::units::human;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use refpoint_bench::runner::{self, loadavg, median};
use refpoint_bench::setup::{self, drop_cached, parse_size, Binaries, WorkDir};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// Size of one random request.
const IO: u64 = 4096;
/// The byte `qemu-img bench` writes (not zero, so no side can take the
/// writes for zeros).
const PATTERN: u8 = 0xab;
/// qemu-img bench refuses steps of 2 GiB and more.
const MAX_STEP: u64 = (1 << 31) - 1;

#[derive(Parser)]
#[command(
    name = "nbd",
    about = "The refpoint NBD daemon against qemu-nbd on the same VHDX",
    after_help = "Run from the workspace: cargo run --release -p refpoint-bench --bin nbd\n\
The refpoint binary is built first (cargo build --release -p refpoint) unless --refpoint is given.\n\
Needs qemu-img, qemu-nbd and nbdcopy (libnbd-bin)."
)]
struct Opts {
    /// Virtual size of the disk, and size of the random raw file written into it (K/M/G) [default: 2G].
    #[arg(long, value_parser = parse_size)]
    size: Option<u64>,
    /// Runs of every test on each side; the median is reported [default: 3].
    #[arg(long)]
    runs: Option<usize>,
    /// Requests per random 4 KiB pass [default: 50000].
    #[arg(long)]
    count: Option<u64>,
    /// Requests in flight for the random passes (qemu-img bench -d).
    #[arg(long, default_value_t = 32)]
    depth: u32,
    /// VHDX block size (1M to 256M).
    #[arg(long, value_parser = parse_size, default_value = "32M")]
    block_size: u64,
    /// Skip the cold (page cache dropped) sequential reads.
    #[arg(long)]
    no_cold: bool,
    /// Directory for the work files, on a real disk [default: a fresh directory under /var/tmp, removed afterwards].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Directory for the random raw source [default: /dev/shm if it has room, else the work directory].
    #[arg(long)]
    src_dir: Option<PathBuf>,
    /// Small smoke run: 256 MiB disk, 5000 random requests, one run.
    #[arg(long)]
    quick: bool,
    /// Keep the work directory (the images of the last sessions, the server logs).
    #[arg(long)]
    keep: bool,
    #[command(flatten)]
    bin: Binaries,
    #[arg(long, default_value = "/usr/bin/qemu-nbd")]
    qemu_nbd: PathBuf,
    #[arg(long, default_value = "/usr/bin/nbdcopy")]
    nbdcopy: PathBuf,
    /// qemu-nbd's --cache (its default is writeback: the page cache, flushes honoured).
    #[arg(long, default_value = "writeback")]
    qemu_cache: String,
    /// qemu-nbd's --aio (its default is threads).
    #[arg(long, default_value = "threads")]
    qemu_aio: String,
    /// Seed of the random raw file.
    #[arg(long, default_value = "20240601")]
    seed: u64,
}

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Side {
    Qemu,
    Ours,
}

impl Side {
    fn name(self) -> &'static str {
        match self {
            Side::Qemu => "qemu-nbd",
            Side::Ours => "refpoint",
        }
    }
}

/// The tests, in the order they are printed.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Test {
    SeqWriteConvert,
    SeqWriteNbdcopy,
    SeqReadConvertWarm,
    SeqReadNbdcopyWarm,
    SeqReadConvertCold,
    SeqReadNbdcopyCold,
    RandRead,
    RandWriteFirst,
    RandWriteOver,
}

impl Test {
    fn label(self) -> &'static str {
        match self {
            Test::SeqWriteConvert => "seq write, qemu-img convert (fresh disk)",
            Test::SeqWriteNbdcopy => "seq write, nbdcopy --flush (fresh disk)",
            Test::SeqReadConvertWarm => "seq read, qemu-img convert, warm",
            Test::SeqReadNbdcopyWarm => "seq read, nbdcopy → null:, warm",
            Test::SeqReadConvertCold => "seq read, qemu-img convert, cold",
            Test::SeqReadNbdcopyCold => "seq read, nbdcopy → null:, cold",
            Test::RandRead => "4 KiB random read, warm",
            Test::RandWriteFirst => "4 KiB random write, first touch (allocating)",
            Test::RandWriteOver => "4 KiB random write, overwrite",
        }
    }
    fn random(self) -> bool {
        matches!(
            self,
            Test::RandRead | Test::RandWriteFirst | Test::RandWriteOver
        )
    }
    /// The ratio (ours over qemu-nbd, faster is higher) the issue asks for.
    fn target(self) -> f64 {
        match self {
            Test::RandWriteFirst | Test::RandWriteOver => 1.5,
            _ => 1.0,
        }
    }
}

/// One timed client run.
#[derive(Clone, Copy)]
struct Sample {
    /// Wall time of the client process.
    secs: f64,
    /// `qemu-img bench`'s own "Run completed in" (no connect, no final flush).
    inner: Option<f64>,
    /// CPU seconds the server process used meanwhile.
    server_cpu: f64,
}

struct Bench {
    o: Opts,
    size: u64,
    count: u64,
    runs: usize,
    step: u64,
    dir: PathBuf,
    refpoint: PathBuf,
    template: PathBuf,
    src: PathBuf,
    /// How the page cache is emptied for cold reads.
    drop: DropMethod,
    clk_tck: f64,
    samples: BTreeMap<(Test, Side), Vec<Sample>>,
    checks: Vec<String>,
    session_no: usize,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum DropMethod {
    /// `echo 1 > /proc/sys/vm/drop_caches` (root).
    DropCaches,
    /// `posix_fadvise(DONTNEED)` of the served image only.
    Fadvise,
}

/// Set by SIGINT/SIGTERM: the run stops at the next step and the guards
/// below stop the servers and remove the files (the servers, in the
/// terminal's process group, get a Ctrl-C too).
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: nix::libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn catch_signals() -> Result<()> {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let act = SigAction::new(
        SigHandler::Handler(on_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { sigaction(sig, &act) }?;
    }
    Ok(())
}

fn check_interrupted() -> Result<()> {
    ensure!(!INTERRUPTED.load(Ordering::SeqCst), "interrupted");
    Ok(())
}

const SRC_PREFIX: &str = "refpoint-nbd-bench-";

/// A running server process; stopped (SIGTERM, then SIGKILL) when
/// dropped, whatever happened in between.
struct Server {
    side: Side,
    child: Option<Child>,
    pid: i32,
    uri: String,
    socket: PathBuf,
    image: PathBuf,
    log: PathBuf,
}

impl Server {
    fn cpu_secs(&self, clk_tck: f64) -> f64 {
        let Ok(s) = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)) else {
            return f64::NAN;
        };
        // Fields after the command name (which may hold spaces): state is
        // field 3, utime 14, stime 15.
        let Some(rest) = s.rfind(')').map(|i| &s[i + 2..]) else {
            return f64::NAN;
        };
        let f: Vec<&str> = rest.split_whitespace().collect();
        let ticks = |i: usize| f.get(i - 3).and_then(|x| x.parse::<f64>().ok());
        match (ticks(14), ticks(15)) {
            (Some(u), Some(s)) => (u + s) / clk_tck,
            _ => f64::NAN,
        }
    }

    /// Waits until the socket accepts connections.
    fn wait_ready(&mut self) -> Result<()> {
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.as_mut().expect("running").try_wait()? {
                bail!(
                    "{} exited ({st}) before serving; its log {}:\n{}",
                    self.side.name(),
                    self.log.display(),
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if UnixStream::connect(&self.socket).is_ok() {
                return Ok(());
            }
            if t.elapsed() > Duration::from_secs(30) {
                bail!(
                    "{} does not listen on {} after 30 s",
                    self.side.name(),
                    self.socket.display()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Graceful stop: SIGTERM (both flush and close the image on it), then
    /// wait. Fails if the server does not exit cleanly.
    fn stop(mut self) -> Result<()> {
        let st = terminate(&mut self.child, Duration::from_secs(120))?;
        match st {
            Some(st) if st.success() => Ok(()),
            // qemu-nbd exits on SIGTERM with the signal's status after
            // closing the image.
            Some(st) if self.side == Side::Qemu && st.code().is_none() => Ok(()),
            Some(st) => bail!(
                "{} exited with {st}; log {}:\n{}",
                self.side.name(),
                self.log.display(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            ),
            None => bail!("{} had to be killed", self.side.name()),
        }
    }
}

/// Sends SIGTERM and waits up to `grace`, then SIGKILL. `None` if it had
/// to be killed.
fn terminate(
    child: &mut Option<Child>,
    grace: Duration,
) -> Result<Option<std::process::ExitStatus>> {
    let Some(mut c) = child.take() else {
        return Ok(None);
    };
    if let Some(st) = c.try_wait()? {
        return Ok(Some(st));
    }
    let pid = nix::unistd::Pid::from_raw(c.id() as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    let t = Instant::now();
    while t.elapsed() < grace {
        if let Some(st) = c.try_wait()? {
            return Ok(Some(st));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = c.kill();
    let _ = c.wait();
    Ok(None)
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.is_some() {
            let _ = terminate(&mut self.child, Duration::from_secs(30));
        }
    }
}

fn main() -> Result<()> {
    let o = Opts::parse();
    catch_signals()?;
    if cfg!(debug_assertions) {
        eprintln!("warning: the benchmark is built without --release (it only drives the tools; the servers are release builds)");
    }
    let size = o.size.unwrap_or(if o.quick { 256 * MIB } else { 2 * GIB });
    let runs = o.runs.unwrap_or(if o.quick { 1 } else { 3 });
    let count = o.count.unwrap_or(if o.quick { 5000 } else { 50000 });
    ensure!(
        size >= 64 * MIB && size.is_multiple_of(MIB),
        "--size must be a multiple of 1M, at least 64M"
    );
    ensure!(runs >= 1, "--runs must be at least 1");
    ensure!(
        o.block_size.is_power_of_two() && (MIB..=256 * MIB).contains(&o.block_size),
        "--block-size must be a power of two from 1M to 256M"
    );
    ensure!(o.depth >= 1, "--depth must be at least 1");
    for (tool, p) in [
        ("qemu-img", &o.bin.qemu_img),
        ("qemu-nbd", &o.qemu_nbd),
        ("nbdcopy", &o.nbdcopy),
    ] {
        ensure!(p.exists(), "{tool} not found at {}", p.display());
    }
    let pages = size / IO;
    ensure!(
        count >= 1 && count < pages,
        "--count must be between 1 and {} (the 4 KiB pages of the disk)",
        pages - 1
    );
    let step = scatter_step(pages);

    let built = o.bin.refpoint()?;
    let work = WorkDir::new(o.dir.as_deref(), "refpoint-nbd-bench.")?;
    let dir = work.path().to_path_buf();
    if setup::fs_type(&dir)? == "tmpfs" {
        eprintln!(
            "warning: {} is on a tmpfs: the flushes cost nothing there; give --dir on a disk",
            dir.display()
        );
    }
    // Run a copy, so a rebuild of the target directory during the run
    // cannot swap the binary.
    let refpoint = dir.join("refpoint");
    std::fs::copy(&built, &refpoint)
        .with_context(|| format!("cannot copy {} to {}", built.display(), refpoint.display()))?;

    let src_guard = setup::random_source(o.src_dir.as_deref(), &dir, SRC_PREFIX, size);
    let src = src_guard.0.clone();
    eprintln!(
        "generating {} of random data in {}…",
        human(size),
        src.display()
    );
    write_random(&src, size, o.seed)?;

    let template = dir.join("template.vhdx");
    run(Command::new(&o.bin.qemu_img)
        .args(["create", "-q", "-f", "vhdx", "-o"])
        .arg(format!(
            "subformat=dynamic,block_size={}M",
            o.block_size / MIB
        ))
        .arg(&template)
        .arg(size.to_string()))?;

    let drop = if std::fs::write("/proc/sys/vm/drop_caches", "1").is_ok() {
        DropMethod::DropCaches
    } else {
        DropMethod::Fadvise
    };
    let clk_tck = run(Command::new("getconf").arg("CLK_TCK"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0);

    let mut b = Bench {
        size,
        count,
        runs,
        step,
        dir: dir.clone(),
        refpoint,
        template,
        src,
        drop,
        clk_tck,
        samples: BTreeMap::new(),
        checks: Vec::new(),
        session_no: 0,
        o,
    };
    let qv = run(Command::new(&b.o.bin.qemu_img).arg("--version"))?;
    let nv = run(Command::new(&b.o.nbdcopy).arg("--version"))?;
    eprintln!(
        "work dir {} ({}); refpoint {}; {}",
        dir.display(),
        setup::fs_type(&dir)?,
        built.display(),
        qv.lines().next().unwrap_or("")
    );
    let load_before = loadavg();
    let t = Instant::now();
    for r in 0..b.runs {
        for (k, session) in [Session::Seq, Session::Nbdcopy, Session::Random]
            .into_iter()
            .enumerate()
        {
            let order = if (r + k) % 2 == 0 {
                [Side::Ours, Side::Qemu]
            } else {
                [Side::Qemu, Side::Ours]
            };
            for side in order {
                eprintln!(
                    "run {}/{}: {} session on {}…",
                    r + 1,
                    b.runs,
                    session.name(),
                    side.name()
                );
                b.session(session, side, r == 0)?;
            }
        }
    }
    let elapsed = t.elapsed().as_secs_f64();
    let load = format!("{load_before} at the start, {} at the end", loadavg());
    print!(
        "{}",
        b.report(
            qv.lines().next().unwrap_or(""),
            nv.lines().next().unwrap_or(""),
            &built,
            &load,
            elapsed
        )
    );

    if b.o.keep {
        work.keep();
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Session {
    Seq,
    Nbdcopy,
    Random,
}

impl Session {
    fn name(self) -> &'static str {
        match self {
            Session::Seq => "sequential (qemu-img convert write, reads)",
            Session::Nbdcopy => "nbdcopy write",
            Session::Random => "random write",
        }
    }
    fn short(self) -> &'static str {
        match self {
            Session::Seq => "sequential",
            Session::Nbdcopy => "nbdcopy",
            Session::Random => "random write",
        }
    }
}

impl Bench {
    /// Starts `side`'s server on a fresh copy of the template.
    fn start(&mut self, side: Side) -> Result<Server> {
        self.session_no += 1;
        let sdir = self
            .dir
            .join(format!("s{:02}-{}", self.session_no, side.name()));
        std::fs::create_dir_all(&sdir)?;
        let image = sdir.join("disk.vhdx");
        std::fs::copy(&self.template, &image)?;
        let log = sdir.join("server.log");
        let logf = File::create(&log)?;
        let (mut cmd, socket, uri) = match side {
            Side::Ours => {
                let home = sdir.join("home");
                run(Command::new(&self.refpoint)
                    .env("REFPOINT_HOME", &home)
                    .args(["machine", "create", "vm1", "--disk"])
                    .arg(&image))?;
                let socket = home.join("nbd.sock");
                let mut c = Command::new(&self.refpoint);
                c.env("REFPOINT_HOME", &home).arg("serve");
                let uri = format!("nbd+unix:///vm1/disk0?socket={}", socket.display());
                (c, socket, uri)
            }
            Side::Qemu => {
                let socket = sdir.join("qemu-nbd.sock");
                let mut c = Command::new(&self.o.qemu_nbd);
                c.args(["-f", "vhdx", "--export-name=disk", "--persistent"])
                    .arg(format!("--socket={}", socket.display()))
                    // Allow several connections: nbdcopy opens several
                    // when the server offers multi-conn, as ours does.
                    .arg("--shared=8")
                    .arg(format!("--cache={}", self.o.qemu_cache))
                    .arg(format!("--aio={}", self.o.qemu_aio))
                    .arg(&image);
                let uri = format!("nbd+unix:///disk?socket={}", socket.display());
                (c, socket, uri)
            }
        };
        let child = cmd
            .stdin(Stdio::null())
            .stdout(logf.try_clone()?)
            .stderr(logf)
            .spawn()
            .with_context(|| format!("cannot start {cmd:?}"))?;
        let mut s = Server {
            side,
            pid: child.id() as i32,
            child: Some(child),
            uri,
            socket,
            image,
            log,
        };
        s.wait_ready()?;
        Ok(s)
    }

    /// Stops the server, checks its image (first run) and removes it.
    fn finish(&mut self, s: Server, session: Session, check: bool) -> Result<()> {
        let (side, image) = (s.side, s.image.clone());
        s.stop()?;
        if check {
            let out = Command::new(&self.o.bin.qemu_img)
                .args(["check", "-q", "-f", "vhdx"])
                .arg(&image)
                .output()?;
            self.checks.push(format!(
                "qemu-img check of {}'s image after the {} session: {}",
                side.name(),
                session.short(),
                outcome(&out, "clean")
            ));
        }
        if !self.o.keep {
            std::fs::remove_file(&image)?;
        }
        settle()
    }

    fn session(&mut self, session: Session, side: Side, first: bool) -> Result<()> {
        let s = self.start(side)?;
        let r = match session {
            Session::Seq => self.seq_session(&s, first),
            Session::Nbdcopy => self.nbdcopy_session(&s, first),
            Session::Random => self.random_session(&s),
        };
        match r {
            Ok(()) => self.finish(s, session, first),
            // The guard stops the server.
            Err(e) => Err(e),
        }
    }

    fn seq_session(&mut self, s: &Server, first: bool) -> Result<()> {
        // Sequential write of the random file into the fresh disk. -t
        // writeback: the flush at the end reaches the server.
        let mut c = Command::new(&self.o.bin.qemu_img);
        c.args(["convert", "-n", "-f", "raw", "-O", "raw", "-t", "writeback"])
            .arg(&self.src)
            .arg(&s.uri);
        self.time(Test::SeqWriteConvert, s, &mut c, false)?;
        if first {
            self.compare(s, "qemu-img convert")?;
        }
        for cold in [false, true] {
            if cold && self.o.no_cold {
                continue;
            }
            let mut c = Command::new(&self.o.bin.qemu_img);
            c.args(["convert", "-n", "-f", "raw"])
                .arg(&s.uri)
                .arg("--target-image-opts")
                .arg(format!("driver=null-co,size={}", self.size));
            let t = if cold {
                Test::SeqReadConvertCold
            } else {
                Test::SeqReadConvertWarm
            };
            self.time(t, s, &mut c, cold)?;
            let mut c = Command::new(&self.o.nbdcopy);
            c.arg(&s.uri).arg("null:");
            let t = if cold {
                Test::SeqReadNbdcopyCold
            } else {
                Test::SeqReadNbdcopyWarm
            };
            self.time(t, s, &mut c, cold)?;
            if !cold {
                // Scattered reads over the written disk, in the page cache.
                let mut c = self.qemu_bench(s, false);
                self.time(Test::RandRead, s, &mut c, false)?;
            }
        }
        Ok(())
    }

    fn nbdcopy_session(&mut self, s: &Server, first: bool) -> Result<()> {
        let mut c = Command::new(&self.o.nbdcopy);
        c.arg("--flush").arg(&self.src).arg(&s.uri);
        self.time(Test::SeqWriteNbdcopy, s, &mut c, false)?;
        if first {
            self.compare(s, "nbdcopy")?;
        }
        Ok(())
    }

    fn random_session(&mut self, s: &Server) -> Result<()> {
        let mut c = self.qemu_bench(s, true);
        self.time(Test::RandWriteFirst, s, &mut c, false)?;
        let mut c = self.qemu_bench(s, true);
        self.time(Test::RandWriteOver, s, &mut c, false)
    }

    fn qemu_bench(&self, s: &Server, write: bool) -> Command {
        let mut c = Command::new(&self.o.bin.qemu_img);
        c.args(["bench", "-f", "raw", "-t", "writeback"]);
        if write {
            c.arg("-w").arg(format!("--pattern={PATTERN}"));
        }
        c.arg("-c")
            .arg(self.count.to_string())
            .arg("-d")
            .arg(self.o.depth.to_string())
            .arg("-s")
            .arg(IO.to_string())
            .arg("-S")
            .arg(self.step.to_string())
            .arg(&s.uri);
        c
    }

    /// Untimed: the export holds the source, byte for byte.
    fn compare(&mut self, s: &Server, writer: &str) -> Result<()> {
        let out = Command::new(&self.o.bin.qemu_img)
            .args(["compare", "-q", "-f", "raw", "-F", "raw"])
            .arg(&self.src)
            .arg(&s.uri)
            .output()?;
        check_interrupted()?;
        self.checks.push(format!(
            "qemu-img compare of the source with {}'s export after {writer} wrote it: {}",
            s.side.name(),
            outcome(&out, "identical")
        ));
        ensure!(
            out.status.success(),
            "{}'s export does not hold what was written",
            s.side.name()
        );
        Ok(())
    }

    /// Settles the file system (and empties the page cache if `cold`),
    /// then times `cmd`.
    fn time(&mut self, test: Test, s: &Server, cmd: &mut Command, cold: bool) -> Result<()> {
        check_interrupted()?;
        settle()?;
        if cold {
            match self.drop {
                DropMethod::DropCaches => std::fs::write("/proc/sys/vm/drop_caches", "1")
                    .context("writing /proc/sys/vm/drop_caches")?,
                DropMethod::Fadvise => drop_cached(&File::open(&s.image)?)?,
            }
        }
        let cpu0 = s.cpu_secs(self.clk_tck);
        let t = Instant::now();
        let out = run(cmd);
        check_interrupted()?;
        let out = out?;
        let secs = t.elapsed().as_secs_f64();
        let server_cpu = s.cpu_secs(self.clk_tck) - cpu0;
        let inner = out
            .lines()
            .find_map(|l| l.strip_prefix("Run completed in "))
            .and_then(|l| l.trim_end_matches(" seconds.").parse().ok());
        if test.random() {
            ensure!(inner.is_some(), "qemu-img bench printed no time: {out}");
        }
        self.samples
            .entry((test, s.side))
            .or_default()
            .push(Sample {
                secs,
                inner,
                server_cpu,
            });
        Ok(())
    }

    fn report(&self, qv: &str, nv: &str, built: &Path, load: &str, elapsed: f64) -> String {
        let mut s = String::new();
        s += &format!(
            "\nrefpoint serve vs qemu-nbd: {} disk, {} run(s) per test and side, medians\n\n",
            human(self.size),
            self.runs
        );
        let rows: Vec<(Test, Row)> = self
            .samples
            .keys()
            .map(|(t, _)| *t)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .filter_map(|t| {
                let q = self.samples.get(&(t, Side::Qemu))?;
                let o = self.samples.get(&(t, Side::Ours))?;
                Some((t, Row::new(t, self, q, o)))
            })
            .collect();
        // Column widths: the widest cell, at least `min`.
        let width = |cell: fn(&(Test, Row)) -> usize, min: usize| {
            rows.iter().map(cell).max().unwrap_or(min).max(min)
        };
        let w = width(|(t, _)| t.label().chars().count(), 10);
        let qw = width(|(_, r)| r.qemu_cell.chars().count(), 8);
        let ow = width(|(_, r)| r.ours_cell.chars().count(), 8);
        s += &format!(
            "{:<w$}  {:>qw$}  {:>ow$}  {:>6}  target\n",
            "test", "qemu-nbd", "refpoint", "ratio"
        );
        for (t, r) in &rows {
            let verdict = if r.ratio >= t.target() {
                "met"
            } else {
                "MISSED"
            };
            s += &format!(
                "{:<w$}  {:>qw$}  {:>ow$}  {:>5.2}×  ≥{}×: {verdict}\n",
                t.label(),
                r.qemu_cell,
                r.ours_cell,
                r.ratio,
                t.target()
            );
        }
        s += "\nruns (wall seconds of the client; server CPU seconds, median; for qemu-img bench also its own time without connect and final flush):\n";
        for (t, r) in &rows {
            s += &format!("  {}\n{}{}", t.label(), r.qemu_detail, r.ours_detail);
        }
        s += "\nchecks (first run):\n";
        for c in &self.checks {
            s += &format!("  - {c}\n");
        }
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let notes = [
            format!("peers: {qv}; {nv}; refpoint {}", built.display()),
            format!(
                "image: one empty dynamic VHDX ({} virtual, {} MiB blocks) made by qemu-img create; every session gets a fresh copy",
                human(self.size),
                self.o.block_size / MIB
            ),
            format!(
                "qemu-nbd -f vhdx --cache={} --aio={} --shared=8 --persistent (writeback and threads are its defaults: host page cache, flushes honoured; --shared=8 lets it offer multi-conn, as refpoint does, so nbdcopy opens several connections to both)",
                self.o.qemu_cache, self.o.qemu_aio
            ),
            "refpoint serve: the VHDX as machine vm1's disk0, every write tracked (RCT journal); qemu-nbd tracks nothing".into(),
            format!(
                "source: {} of random data in {}{}",
                human(self.size),
                self.src.parent().unwrap_or(Path::new("")).display(),
                if self.src.starts_with("/dev/shm") {
                    " (a tmpfs: dropping the page cache leaves it in memory, so the writes measure the write path)"
                } else {
                    ""
                }
            ),
            "writes: qemu-img convert -n -t writeback and nbdcopy --flush both end with NBD_CMD_FLUSH, inside the timed span".into(),
            format!(
                "reads: qemu-img convert into qemu's null-co driver and nbdcopy into null:; warm = the image in the page cache after being written, cold = {} right before",
                match self.drop {
                    DropMethod::DropCaches => "sync; echo 1 > /proc/sys/vm/drop_caches",
                    DropMethod::Fadvise => "sync and posix_fadvise(DONTNEED) of the image (no permission for drop_caches)",
                }
            ),
            format!(
                "random: qemu-img bench -s 4096 -d {} -c {}, offsets i·S mod size with S = {} ({} × 4 KiB, ≈0.618 of the disk, coprime to its page count): {} distinct 4 KiB-aligned offsets, consecutive ones far apart (qemu-img bench has no random order); writes --pattern=0x{PATTERN:02x}",
                self.o.depth, self.count, self.step, self.step / IO, self.count
            ),
            "random writes: first touch on a fresh disk (allocates every block the offsets fall in and fills holes of the image file), then the same offsets again (overwrite); both end with qemu-img bench's flush at close; rate = requests / wall time".into(),
            "random read: the same offsets over the disk written by qemu-img convert, in the page cache".into(),
            "before every timed step: sync; the sides alternate first between runs and sessions".into(),
            format!("machine: {cpus} CPUs; load average {load}; the whole run took {elapsed:.0} s"),
            "ratio = refpoint rate / qemu-nbd rate = qemu-nbd time / refpoint time (above 1.0× refpoint is faster); targets: at least qemu-nbd's throughput, ≥1.5× its random write rate".into(),
        ];
        s += "\nnotes:\n";
        for n in notes {
            s += &format!("  - {n}\n");
        }
        s
    }
}

struct Row {
    ratio: f64,
    qemu_cell: String,
    ours_cell: String,
    qemu_detail: String,
    ours_detail: String,
}

impl Row {
    fn new(t: Test, b: &Bench, q: &[Sample], o: &[Sample]) -> Row {
        let mq = median(&q.iter().map(|x| x.secs).collect::<Vec<_>>());
        let mo = median(&o.iter().map(|x| x.secs).collect::<Vec<_>>());
        let cell = |secs: f64| {
            if t.random() {
                format!("{:.0} IOPS", b.count as f64 / secs)
            } else {
                format!("{:.0} MiB/s", b.size as f64 / MIB as f64 / secs)
            }
        };
        let detail = |side: Side, v: &[Sample]| {
            let runs: Vec<String> = v.iter().map(|x| format!("{:.3}", x.secs)).collect();
            let cpu = median(&v.iter().map(|x| x.server_cpu).collect::<Vec<_>>());
            let inner: Vec<f64> = v.iter().filter_map(|x| x.inner).collect();
            let inner = if inner.is_empty() {
                String::new()
            } else {
                let m = median(&inner);
                format!("; bench's own {:.3} s ({:.0} IOPS)", m, b.count as f64 / m)
            };
            format!(
                "    {:<9} [{} s]; server CPU {:.2} s{inner}\n",
                side.name(),
                runs.join(", "),
                cpu
            )
        };
        Row {
            ratio: mq / mo,
            qemu_cell: cell(mq),
            ours_cell: cell(mo),
            qemu_detail: detail(Side::Qemu, q),
            ours_detail: detail(Side::Ours, o),
        }
    }
}

/// The step of the random passes: `k` pages with `k` ≈ 0.618 × `pages`,
/// coprime to `pages` and `pages - 1` (qemu-img bench wraps offsets modulo
/// the image size, or the size less one request in newer versions), so
/// the first `pages - 1` offsets are all different.
fn scatter_step(pages: u64) -> u64 {
    fn gcd(a: u64, b: u64) -> u64 {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    let mut k = ((pages as f64 * 0.618_033_988_7) as u64).min(MAX_STEP / IO) | 1;
    while k > 1 && (gcd(k, pages) != 1 || gcd(k, pages - 1) != 1) {
        k -= 2;
    }
    k * IO
}

fn write_random(path: &Path, size: u64, seed: u64) -> Result<()> {
    let f = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut w = BufWriter::with_capacity(8 << 20, f);
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut buf = vec![0u8; MIB as usize];
    for _ in 0..size / MIB {
        check_interrupted()?;
        rng.fill_bytes(&mut buf);
        w.write_all(&buf)?;
    }
    w.into_inner()?.sync_all()?;
    Ok(())
}

/// [`runner::run`], but an interruption while `cmd` ran is the error,
/// whatever `cmd` made of the signal.
fn run(cmd: &mut Command) -> Result<String> {
    let out = runner::run(cmd);
    check_interrupted()?;
    out
}

/// `sync(1)`: writes back everything dirty, outside the timed spans.
fn settle() -> Result<()> {
    run(&mut Command::new("sync"))?;
    Ok(())
}

/// What a check printed says: `ok` if it succeeded, else its status and
/// output.
fn outcome(out: &Output, ok: &str) -> String {
    if out.status.success() {
        ok.to_string()
    } else {
        format!(
            "FAILED ({}) {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scatter_step_visits_distinct_pages() {
        for pages in [16384u64, 65536, 524288] {
            let step = scatter_step(pages) / IO;
            assert!(step * IO <= MAX_STEP);
            for modulus in [pages, pages - 1] {
                let mut seen = std::collections::HashSet::new();
                let mut o = 0;
                for _ in 0..modulus {
                    assert!(seen.insert(o), "pages {pages} modulus {modulus}");
                    o = (o + step) % modulus;
                }
            }
        }
    }
}
