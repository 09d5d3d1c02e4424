//! `instant`: time from the restore command to the first byte readable
//! over NBD, refpoint's instant restore against the qemu way of running
//! on a backup image at once (a qcow2 overlay on it, served by qemu-nbd),
//! on the same backup point, for disks of several sizes.
//!
//! ```text
//! cargo run --release -p refpoint-bench --bin instant \
//!     [-- --sizes 1G,64G,1T --data 256M --runs 5 --dir /var/tmp --keep]
//! ```
//!
//! Per size, once: a dynamic VHDX (32 MiB blocks) with `--data` bytes of
//! random data spread over it, made machine `vm1`'s disk and backed up in
//! full (`refpoint backup`), so the point is `repo/0001/disk0.vhdx`. Then,
//! per run (the order of the sides alternating):
//!
//! * refpoint: the daemon runs (`refpoint serve`, started before the
//!   clock); timed: `refpoint restore repo --point 1 --instant --as rN`,
//!   then `qemu-io` reads 4 KiB of data through `rN/disk0`. Untimed after:
//!   the read bytes are compared with the point, and `--discard rN`.
//! * qemu: timed: `qemu-img create -f qcow2 -b point -F vhdx overlay`,
//!   `qemu-nbd -f qcow2 --socket S overlay` until the socket accepts, the
//!   same `qemu-io` read. qemu-nbd runs with its defaults (cache
//!   writeback, aio threads); no daemon runs before the clock, as the qemu
//!   way has none.
//!
//! Medians of the runs; ratio = qemu time / refpoint time (above 1.0×
//! refpoint is faster).

use anyhow::{ensure, Context, Result};
use clap::Parser;
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use refpoint_bench::runner::{loadavg, median, run};
use refpoint_bench::setup::{parse_size, Binaries, WorkDir};
use refpoint_cli::units::human;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;
/// Where the read happens: the first data extent.
const READ: u64 = 4096;

#[derive(Parser)]
#[command(
    name = "instant",
    about = "Instant restore: command to first byte over NBD, refpoint against a qcow2 overlay on qemu-nbd",
    after_help = "Run from the workspace: cargo run --release -p refpoint-bench --bin instant\n\
Needs qemu-img, qemu-nbd and qemu-io (qemu-utils)."
)]
struct Opts {
    /// Virtual disk sizes, comma-separated (K/M/G/T).
    #[arg(long, default_value = "1G,64G,1T", value_delimiter = ',', value_parser = parse_size)]
    sizes: Vec<u64>,
    /// Random data written into each disk, spread over it.
    #[arg(long, default_value = "256M", value_parser = parse_size)]
    data: u64,
    /// Runs per size and side; the median is reported.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Where the work files go [default: a fresh directory in /var/tmp].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Keep the work files.
    #[arg(long)]
    keep: bool,
    #[arg(long, default_value = "/usr/bin/qemu-nbd")]
    qemu_nbd: PathBuf,
    #[arg(long, default_value = "/usr/bin/qemu-io")]
    qemu_io: PathBuf,
    #[command(flatten)]
    bin: Binaries,
}

/// One size's backup point, and where its data starts.
struct Point {
    size: u64,
    home: PathBuf,
    repo: PathBuf,
    file: PathBuf,
    first: Vec<u8>,
}

fn main() -> Result<()> {
    let o = Opts::parse();
    let refpoint = o.bin.refpoint()?;
    let work = WorkDir::new(o.dir.as_deref(), "refpoint-bench-instant-")?;
    let mut rows = Vec::new();
    for &size in &o.sizes {
        let p = prepare(&o, &refpoint, work.path(), size)?;
        let daemon = Daemon::start(&refpoint, &p.home)?;
        let (mut ours, mut qemu) = (Vec::new(), Vec::new());
        for r in 0..o.runs {
            let mut sides = [true, false];
            if r % 2 == 1 {
                sides.reverse();
            }
            for refpoint_side in sides {
                if refpoint_side {
                    ours.push(run_ours(&o, &refpoint, &p, r)?);
                } else {
                    qemu.push(run_qemu(&o, &p, work.path(), r)?);
                }
            }
        }
        daemon.stop()?;
        let (q, m) = (median(&qemu), median(&ours));
        eprintln!("{}: qemu {q:.3}s, refpoint {m:.3}s", human(size));
        rows.push((size, q, m));
    }
    println!(
        "\ninstant restore, command to first byte over NBD ({} of data per disk, {} run(s), medians; load {})\n",
        human(o.data),
        o.runs,
        loadavg()
    );
    println!(
        "{:>10}  {:>22}  {:>22}  {:>7}",
        "disk", "qcow2 overlay+qemu-nbd", "refpoint --instant", "ratio"
    );
    for (size, q, m) in rows {
        println!(
            "{:>10}  {:>21.3}s  {:>21.3}s  {:>6.2}×",
            human(size),
            q,
            m,
            q / m
        );
    }
    println!(
        "\nqemu: qemu-img create -f qcow2 -b POINT -F vhdx, then qemu-nbd -f qcow2 (cache writeback, aio threads: its defaults), until its socket accepts\n\
refpoint: refpoint restore REPO --point 1 --instant --as NAME with the daemon running (the machine is created, its disk a tracked differencing VHDX on the point, exported read-write)\n\
both: then qemu-io -f raw -r reads 4 KiB of data over NBD; ratio = qemu time / refpoint time (above 1.0× refpoint is faster)"
    );
    if o.keep {
        work.keep();
    }
    Ok(())
}

/// The disk with data, its machine and its full backup.
fn prepare(o: &Opts, refpoint: &Path, dir: &Path, size: u64) -> Result<Point> {
    let d = dir.join(format!("size-{size}"));
    std::fs::create_dir_all(&d)?;
    let disk = d.join("disk.vhdx");
    let home = d.join("home");
    let repo = d.join("repo");
    run(Command::new(refpoint).args(["vhd", "create", s(&disk), "--size", &size.to_string()]))?;
    // The data in 4 MiB pieces, spread evenly over the disk.
    let pieces = (o.data / (4 * MIB)).max(1);
    let step = (size / pieces) / MIB * MIB;
    let mut rng = SmallRng::seed_from_u64(size);
    let mut buf = vec![0u8; (4 * MIB).min(size) as usize];
    let chunk = d.join("chunk");
    let mut first = Vec::new();
    for i in 0..pieces {
        rng.fill_bytes(&mut buf);
        if i == 0 {
            first = buf[..READ as usize].to_vec();
        }
        std::fs::write(&chunk, &buf)?;
        run(Command::new(refpoint)
            .env("REFPOINT_HOME", &home)
            .args(["disk", "write", s(&disk), "--offset"])
            .arg((i * step).to_string())
            .args(["--from", s(&chunk)]))?;
    }
    std::fs::remove_file(&chunk)?;
    run(Command::new(refpoint).env("REFPOINT_HOME", &home).args([
        "machine",
        "create",
        "vm1",
        "--disk",
        s(&disk),
    ]))?;
    run(Command::new(refpoint).env("REFPOINT_HOME", &home).args([
        "backup",
        "vm1",
        "--to",
        s(&repo),
    ]))?;
    Ok(Point {
        size,
        file: repo.join("0001/disk0.vhdx"),
        home,
        repo,
        first,
    })
}

fn run_ours(o: &Opts, refpoint: &Path, p: &Point, r: usize) -> Result<f64> {
    let name = format!("r{r}");
    let socket = p.home.join("nbd.sock");
    let t = Instant::now();
    run(Command::new(refpoint).env("REFPOINT_HOME", &p.home).args([
        "restore",
        s(&p.repo),
        "--point",
        "1",
        "--instant",
        "--as",
        &name,
    ]))?;
    let got = read_first(
        o,
        &format!("nbd+unix:///{name}/disk0?socket={}", s(&socket)),
    )?;
    let secs = t.elapsed().as_secs_f64();
    ensure!(
        got == p.first,
        "refpoint served other bytes than the point holds"
    );
    run(Command::new(refpoint).env("REFPOINT_HOME", &p.home).args([
        "restore",
        "--discard",
        &name,
    ]))?;
    Ok(secs)
}

fn run_qemu(o: &Opts, p: &Point, dir: &Path, r: usize) -> Result<f64> {
    let overlay = dir.join(format!("overlay-{}-{r}.qcow2", p.size));
    let socket = dir.join(format!("qemu-nbd-{r}.sock"));
    let t = Instant::now();
    run(Command::new("qemu-img").args([
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        s(&p.file),
        "-F",
        "vhdx",
        s(&overlay),
    ]))?;
    let mut nbd = Command::new(&o.qemu_nbd)
        .args(["-f", "qcow2", "--socket", s(&socket), s(&overlay)])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting qemu-nbd")?;
    let wait = wait_for_socket(&socket, &mut nbd);
    let got = wait.and_then(|_| read_first(o, &format!("nbd+unix:///?socket={}", s(&socket))));
    let secs = t.elapsed().as_secs_f64();
    let _ = nbd.kill();
    let _ = nbd.wait();
    let got = got?;
    ensure!(
        got == p.first,
        "qemu-nbd served other bytes than the point holds"
    );
    std::fs::remove_file(&overlay)?;
    let _ = std::fs::remove_file(&socket);
    Ok(secs)
}

/// The first 4 KiB of data, read by qemu-io over NBD (dumped as hex).
fn read_first(o: &Opts, uri: &str) -> Result<Vec<u8>> {
    let out = run(Command::new(&o.qemu_io).args([
        "-f",
        "raw",
        "-r",
        "-c",
        &format!("read -v 0 {READ}"),
        uri,
    ]))?;
    // Lines: "00000000:  ab cd ...  ascii"
    let mut bytes = Vec::new();
    for line in out.lines() {
        let Some((_, rest)) = line.split_once(":  ") else {
            continue;
        };
        for h in rest.split_whitespace().take(16) {
            match u8::from_str_radix(h, 16) {
                Ok(b) if h.len() == 2 => bytes.push(b),
                _ => break,
            }
        }
    }
    ensure!(
        bytes.len() == READ as usize,
        "qemu-io printed {} bytes: {out}",
        bytes.len()
    );
    Ok(bytes)
}

fn wait_for_socket(p: &Path, child: &mut Child) -> Result<()> {
    let t = Instant::now();
    loop {
        if UnixStream::connect(p).is_ok() {
            return Ok(());
        }
        if let Some(st) = child.try_wait()? {
            anyhow::bail!("qemu-nbd exited with {st}");
        }
        ensure!(
            t.elapsed() < Duration::from_secs(30),
            "qemu-nbd did not listen"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// `refpoint serve` on a state directory: the process, the binary, the
/// state directory.
struct Daemon(Child, PathBuf, PathBuf);

impl Daemon {
    fn start(refpoint: &Path, home: &Path) -> Result<Daemon> {
        let child = Command::new(refpoint)
            .env("REFPOINT_HOME", home)
            .arg("serve")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting refpoint serve")?;
        let mut d = Daemon(child, refpoint.to_path_buf(), home.to_path_buf());
        wait_for_socket(&home.join("api.sock"), &mut d.0)?;
        Ok(d)
    }

    fn stop(mut self) -> Result<()> {
        if run(Command::new(&self.1)
            .env("REFPOINT_HOME", &self.2)
            .args(["serve", "--stop"]))
        .is_err()
        {
            self.0.kill()?;
        }
        self.0.wait()?;
        Ok(())
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("work paths are UTF-8")
}
