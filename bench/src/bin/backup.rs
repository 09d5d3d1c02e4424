//! `backup`: a full backup, then incremental ones of scattered changes,
//! side by side with `qemu-img convert` (the naive full copy) and with the
//! floor (reading and writing just the changed bytes), in one run on the
//! same data.
//!
//! ```text
//! cargo run --release -p refpoint-bench --bin backup \
//!     [-- --size 16G --data 8G --change 1 --rounds 5 --dir /var/tmp --quick --warm --keep]
//! ```
//!
//! 1. A dynamic VHDX of `--size` (16 GiB) gets `--data` (half the disk,
//!    8 GiB) of deterministic, incompressible data: 64 MiB of data then
//!    64 MiB never written, over the whole disk (a half-used disk, in less
//!    time than filling all of it). `refpoint machine create` tracks it.
//! 2. Full backup: `refpoint backup vm1 --to REPO --json`.
//! 3. Each round: `--change` percent of the disk (1 %) is rewritten as
//!    scattered 64 KiB regions at random aligned offsets, in-process
//!    through the tracked write path (`machine::Store::open_disk`); then
//!    - the incremental backup, the same command as the full one;
//!    - in the first round, `qemu-img convert -O vhdx` of the whole disk;
//!    - the floor: the changed ranges read with plain reads from the disk
//!      file (offsets from its BAT) and written packed to a fresh file,
//!      fsync'd once (the backup makes its output durable too).
//!
//! Every timed step starts cold for the files it reads: each file of the
//! work directory is synced and dropped from the page cache
//! (`posix_fadvise(DONTNEED)`) first, unless `--warm`. qemu-img does not
//! flush its output, so its time includes an fdatasync of it. The content
//! of every incremental point is checked against the disk (untimed).

use anyhow::{ensure, Context, Result};
use clap::Parser;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use refpoint_cli::units::human;
use std::fs::File;
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;
use storage::LocalFs;
use vhdx::{Chain, Source, Vhdx};

use refpoint_bench::runner::{median, run};
use refpoint_bench::setup::{drop_cached, parse_size, Binaries, WorkDir};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// The data layout repeats every this many bytes: data first, then never
/// written.
const PERIOD: u64 = 128 * MIB;
/// Size of one changed region (the tracking granularity).
const REGION: u64 = 64 << 10;

#[derive(Parser)]
#[command(
    name = "backup",
    about = "Full and incremental backup against qemu-img convert and the copy floor",
    after_help = "Run from the workspace: cargo run --release -p refpoint-bench --bin backup\n\
The refpoint binary is built first (cargo build --release -p refpoint) unless --refpoint is given."
)]
struct Opts {
    /// Virtual size of the disk (K/M/G suffixes) [default: 16G].
    #[arg(long, value_parser = parse_size)]
    size: Option<u64>,
    /// Bytes of data written before the full backup [default: half of --size].
    #[arg(long, value_parser = parse_size)]
    data: Option<u64>,
    /// Percent of the disk changed per round, in scattered 64 KiB regions.
    #[arg(long, default_value_t = 1.0)]
    change: f64,
    /// Rounds of change + incremental backup + floor; medians are reported [default: 5].
    #[arg(long)]
    rounds: Option<usize>,
    /// Directory for the work files [default: a fresh directory under /var/tmp, removed afterwards].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Small smoke run: 1 GiB disk, 512 MiB of data, two rounds.
    #[arg(long)]
    quick: bool,
    /// Leave the page cache alone between steps (default: every timed step starts cold).
    #[arg(long)]
    warm: bool,
    /// Keep the work directory.
    #[arg(long)]
    keep: bool,
    #[command(flatten)]
    bin: Binaries,
}

struct Bench {
    refpoint: PathBuf,
    qemu_img: PathBuf,
    dir: PathBuf,
    home: PathBuf,
    disk: PathBuf,
    repo: PathBuf,
    cold: bool,
}

/// What `refpoint backup --json` says, and what we measured around it.
struct BackupRun {
    wall: f64,
    inner: f64,
    point: u32,
    kind: String,
    bytes_read: u64,
    bytes_written: u64,
    changed: u64,
    file: PathBuf,
}

struct Round {
    changed: u64,
    regions: usize,
    write_secs: f64,
    incr: BackupRun,
    floor: f64,
    alloc: u64,
    apparent: u64,
}

fn main() -> Result<()> {
    let o = Opts::parse();
    let size = o.size.unwrap_or(if o.quick { GIB } else { 16 * GIB });
    let data = o.data.unwrap_or(size / 2);
    let rounds = o.rounds.unwrap_or(if o.quick { 2 } else { 5 });
    ensure!(
        size >= PERIOD && size.is_multiple_of(PERIOD),
        "--size must be a multiple of 128M"
    );
    ensure!(data <= size, "--data must not exceed --size");
    ensure!(
        o.change > 0.0 && o.change <= 50.0,
        "--change must be a percentage in (0, 50]"
    );
    ensure!(rounds >= 1, "--rounds must be at least 1");

    let refpoint = o.bin.refpoint()?;
    let qv = run(Command::new(&o.bin.qemu_img).arg("--version"))?;
    let work = WorkDir::new(o.dir.as_deref(), "refpoint-backup-bench.")?;
    let dir = work.path().to_path_buf();
    let b = Bench {
        refpoint,
        qemu_img: o.bin.qemu_img.clone(),
        home: dir.join("home"),
        disk: dir.join("disk.vhdx"),
        repo: dir.join("repo"),
        dir: dir.clone(),
        cold: !o.warm,
    };
    ensure!(
        !b.disk.exists(),
        "{} already exists; give an empty --dir",
        b.disk.display()
    );

    // 1. The disk, its data, the machine.
    eprintln!(
        "creating a {} dynamic VHDX with {} of data in {}…",
        human(size),
        human(data),
        dir.display()
    );
    b.refpoint(
        &["vhd", "create"],
        &[&b.disk],
        &["--size", &size.to_string()],
    )?;
    let per_period = (PERIOD * data / size) / MIB * MIB;
    let t = Instant::now();
    let written = fill(&b.disk, size, per_period)?;
    let fill_secs = t.elapsed().as_secs_f64();
    b.refpoint(&["machine", "create", "vm1", "--disk"], &[&b.disk], &[])?;

    // 2. Full backup.
    eprintln!("full backup…");
    let full = b.backup()?;
    ensure!(full.kind == "full", "the first backup was {}", full.kind);

    // An incremental with nothing changed: what every backup costs besides
    // moving data (checkpoint, merge, manifest, process).
    eprintln!("incremental backup of no changes…");
    let empty = b.backup()?;
    ensure!(
        empty.kind == "incremental" && empty.changed == 0,
        "the backup of no changes was {} of {} bytes",
        empty.kind,
        empty.changed
    );

    let mut rng = SmallRng::seed_from_u64(0x5eed_0001);
    let slots = size / REGION;
    let n = ((size as f64 * o.change / 100.0 / REGION as f64).round() as u64).max(1);
    let mut out = Vec::new();
    let mut qemu = None;
    for r in 0..rounds {
        // 3. Scattered changes through the tracked path.
        eprintln!("round {}: changing {} regions of 64 KiB…", r + 1, n);
        let mut picked: Vec<u64> = rand::seq::index::sample(&mut rng, slots as usize, n as usize)
            .into_iter()
            .map(|i| i as u64 * REGION)
            .collect();
        picked.sort_unstable();
        let seed = 0xc4a9_0000 + r as u64;
        let t = Instant::now();
        change(&b.home, &picked, seed)?;
        let write_secs = t.elapsed().as_secs_f64();
        let ranges = coalesce(&picked);
        let changed = n * REGION;

        // 4. Incremental backup.
        eprintln!("round {}: incremental backup…", r + 1);
        let incr = b.backup()?;
        ensure!(
            incr.kind == "incremental",
            "backup {} was {}, not incremental",
            incr.point,
            incr.kind
        );
        // The tracking may over-report (a write right after another is
        // taken for a stream and marks a little ahead), never under-report.
        ensure!(
            incr.changed >= changed,
            "the tracking reported {} changed, {} were written",
            incr.changed,
            changed
        );
        check_point(&b.disk, &incr.file, &picked, seed, &mut rng)?;
        let meta = std::fs::metadata(&incr.file)?;

        // 5. The peer, once: qemu-img convert of the whole disk.
        if qemu.is_none() {
            eprintln!("qemu-img convert -O vhdx of the whole disk…");
            qemu = Some(b.qemu_convert()?);
        }

        // 6. The floor.
        eprintln!("round {}: floor…", r + 1);
        let floor = b.floor(&ranges)?;
        out.push(Round {
            changed,
            regions: picked.len(),
            write_secs,
            incr,
            floor,
            alloc: meta.blocks() * 512,
            apparent: meta.len(),
        });
    }
    let (qemu_secs, qemu_alloc) = qemu.expect("one round ran");

    report(&Report {
        qemu_version: qv.lines().next().unwrap_or("").to_string(),
        size,
        data: written,
        fill_secs,
        cold: b.cold,
        full: &full,
        full_alloc: std::fs::metadata(&full.file)?.blocks() * 512,
        empty: &empty,
        qemu_secs,
        qemu_alloc,
        rounds: &out,
    });

    if o.keep {
        work.keep();
    }
    Ok(())
}

/// Deterministic, incompressible content: one SplitMix64 value per 8
/// bytes, a function of `seed` and the virtual offset only.
fn pattern(buf: &mut [u8], seed: u64, offset: u64) {
    for (i, w) in buf.chunks_exact_mut(8).enumerate() {
        let mut z = (seed ^ (offset / 8 + i as u64)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        w.copy_from_slice(&z.to_le_bytes());
    }
}

const FILL_SEED: u64 = 0xf111_0000;

/// Writes `per_period` bytes of data at the start of every 128 MiB of the
/// disk (untracked: before the machine exists). Returns the bytes written.
fn fill(disk: &Path, size: u64, per_period: u64) -> Result<u64> {
    let mut v = Vhdx::open(&LocalFs, disk, true)?;
    let chunk = 8 * MIB;
    let mut buf = vec![0u8; chunk as usize];
    let mut written = 0;
    for p in (0..size).step_by(PERIOD as usize) {
        let mut o = 0;
        while o < per_period {
            let len = chunk.min(per_period - o);
            let b = &mut buf[..len as usize];
            pattern(b, FILL_SEED, p + o);
            v.write(p + o, b)?;
            o += len;
            written += len;
        }
    }
    v.close()?;
    Ok(written)
}

/// Rewrites each 64 KiB region at `offsets` through the machine's tracked
/// disk.
fn change(home: &Path, offsets: &[u64], seed: u64) -> Result<()> {
    let store = machine::Store::new(Arc::new(LocalFs), home);
    let m = store.load("vm1")?;
    let mut d = store.open_disk(&m, "disk0", true)?;
    let mut buf = vec![0u8; REGION as usize];
    for &o in offsets {
        pattern(&mut buf, seed, o);
        d.write(o, &buf)?;
    }
    d.close()?;
    Ok(())
}

/// Sorted aligned offsets → `(offset, len)` runs.
fn coalesce(offsets: &[u64]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &o in offsets {
        match out.last_mut() {
            Some((s, l)) if *s + *l == o => *l += REGION,
            _ => out.push((o, REGION)),
        }
    }
    out
}

/// Checks a point (untimed): every changed region holds what was written,
/// and as many random other regions match the disk.
fn check_point(
    disk: &Path,
    point: &Path,
    offsets: &[u64],
    seed: u64,
    rng: &mut SmallRng,
) -> Result<()> {
    let p = Chain::open(&LocalFs, point, false)?;
    let d = Chain::open(&LocalFs, disk, false)?;
    let mut want = vec![0u8; REGION as usize];
    let mut got = vec![0u8; REGION as usize];
    for &o in offsets {
        pattern(&mut want, seed, o);
        p.read(o, &mut got)?;
        ensure!(
            want == got,
            "{} differs from what was written at {o}",
            point.display()
        );
    }
    let slots = p.virtual_size() / REGION;
    for _ in 0..offsets.len() {
        let o = rng.gen_range(0..slots) * REGION;
        p.read(o, &mut got)?;
        d.read(o, &mut want)?;
        ensure!(
            want == got,
            "{} differs from the disk at {o}",
            point.display()
        );
    }
    Ok(())
}

impl Bench {
    fn refpoint(&self, pre: &[&str], paths: &[&Path], post: &[&str]) -> Result<String> {
        run(Command::new(&self.refpoint)
            .env("REFPOINT_HOME", &self.home)
            .args(pre)
            .args(paths)
            .args(post))
    }

    /// Syncs every file of the work directory and drops it from the page
    /// cache, so the next step reads from the disk.
    fn cool(&self) -> Result<()> {
        if !self.cold {
            return Ok(());
        }
        fn walk(p: &Path) -> Result<()> {
            for e in std::fs::read_dir(p)? {
                let e = e?;
                let t = e.file_type()?;
                if t.is_dir() {
                    walk(&e.path())?;
                } else if t.is_file() {
                    let f = File::open(e.path())?;
                    f.sync_data()?;
                    drop_cached(&f)
                        .with_context(|| format!("posix_fadvise {}", e.path().display()))?;
                }
            }
            Ok(())
        }
        walk(&self.dir)
    }

    fn backup(&self) -> Result<BackupRun> {
        self.cool()?;
        let t = Instant::now();
        let out = self.refpoint(&["backup", "vm1", "--to"], &[&self.repo], &["--json"])?;
        let wall = t.elapsed().as_secs_f64();
        let v: serde_json::Value =
            serde_json::from_str(&out).context("refpoint backup --json printed no JSON")?;
        let u = |k: &str| v[k].as_u64().with_context(|| format!("no {k} in {out}"));
        let point = u("point")? as u32;
        let disk = &v["disks"][0];
        let ext = if v["kind"] == "full" { "vhdx" } else { "avhdx" };
        Ok(BackupRun {
            wall,
            inner: v["seconds"].as_f64().context("no seconds")?,
            point,
            kind: v["kind"].as_str().unwrap_or("").to_string(),
            bytes_read: u("bytes_read")?,
            bytes_written: u("bytes_written")?,
            changed: disk["changed_bytes"].as_u64().unwrap_or(0),
            file: self
                .repo
                .join(format!("{point:04}"))
                .join(format!("disk0.{ext}")),
        })
    }

    /// `qemu-img convert -O vhdx` of the whole disk, made durable: seconds
    /// and bytes allocated by the output.
    fn qemu_convert(&self) -> Result<(f64, u64)> {
        let dst = self.dir.join("qemu.vhdx");
        self.cool()?;
        let t = Instant::now();
        run(Command::new(&self.qemu_img)
            .args(["convert", "-f", "vhdx", "-O", "vhdx", "-o"])
            .arg("subformat=dynamic,block_size=32M")
            .arg(&self.disk)
            .arg(&dst))?;
        File::open(&dst)?.sync_data()?;
        let secs = t.elapsed().as_secs_f64();
        let alloc = std::fs::metadata(&dst)?.blocks() * 512;
        std::fs::remove_file(&dst)?;
        Ok((secs, alloc))
    }

    /// Reads `ranges` from the disk file with plain reads (file offsets from
    /// its BAT) and writes them packed to a fresh file, fsync'd once.
    fn floor(&self, ranges: &[(u64, u64)]) -> Result<f64> {
        let dst = self.dir.join("floor.bin");
        self.cool()?;
        let t = Instant::now();
        let v = Vhdx::open(&LocalFs, &self.disk, false)?;
        let src = File::open(&self.disk)?;
        let mut out = File::create(&dst)?;
        let mut buf = vec![0u8; 4 * MIB as usize];
        for &(o, l) in ranges {
            let mut done = 0;
            while done < l {
                let n = (l - done).min(buf.len() as u64);
                let b = &mut buf[..n as usize];
                for x in v.resolve(o + done, n)? {
                    let piece = &mut b[(x.offset - o - done) as usize..][..x.len as usize];
                    match x.source {
                        Source::File(f) => src.read_exact_at(piece, f)?,
                        Source::Zero | Source::Parent => piece.fill(0),
                    }
                }
                out.write_all(b)?;
                done += n;
            }
        }
        out.sync_all()?;
        let secs = t.elapsed().as_secs_f64();
        drop(out);
        std::fs::remove_file(&dst)?;
        Ok(secs)
    }
}

struct Report<'a> {
    qemu_version: String,
    size: u64,
    data: u64,
    fill_secs: f64,
    cold: bool,
    full: &'a BackupRun,
    full_alloc: u64,
    empty: &'a BackupRun,
    qemu_secs: f64,
    qemu_alloc: u64,
    rounds: &'a [Round],
}

fn rate(bytes: u64, secs: f64) -> String {
    format!("{:.0} MiB/s", bytes as f64 / MIB as f64 / secs)
}

fn report(r: &Report) {
    let rounds = r.rounds;
    let changed = rounds[0].changed;
    println!("refpoint backup benchmark");
    println!(
        "  disk: {} dynamic VHDX (32 MiB blocks), {} of data ({} per 128 MiB), written in {:.1}s",
        human(r.size),
        human(r.data),
        human(r.data * PERIOD / r.size),
        r.fill_secs
    );
    println!(
        "  change per round: {} regions of 64 KiB = {} ({:.2} % of the disk), scattered",
        rounds[0].regions,
        human(changed),
        changed as f64 * 100.0 / r.size as f64
    );
    println!(
        "  page cache: {}",
        if r.cold {
            "every timed step starts cold (work files synced and dropped from the cache)"
        } else {
            "left warm (--warm)"
        }
    );
    println!("  peer: {}", r.qemu_version);
    println!();
    println!(
        "  full backup        {:>8.2} s  ({:.2} s in-process)  read {}, wrote {}, file {} allocated, {}",
        r.full.wall,
        r.full.inner,
        human(r.full.bytes_read),
        human(r.full.bytes_written),
        human(r.full_alloc),
        rate(r.full.bytes_read, r.full.wall)
    );
    println!(
        "  qemu-img convert   {:>8.2} s  (+ fdatasync)  output {} allocated, {}",
        r.qemu_secs,
        human(r.qemu_alloc),
        rate(r.data, r.qemu_secs)
    );
    println!(
        "  empty incremental  {:>8.3} s  ({:.3} s in-process)  nothing changed: checkpoint, merge, manifest, process",
        r.empty.wall, r.empty.inner
    );
    for (i, x) in rounds.iter().enumerate() {
        println!(
            "  round {}: tracked writes {:.2} s ({}) | incremental {:.3} s ({:.3} s in-process) of {} reported changed, read {} wrote {}, file {} allocated / {} apparent | floor {:.3} s | ratio {:.2}×",
            i + 1,
            x.write_secs,
            rate(x.changed, x.write_secs),
            x.incr.wall,
            x.incr.inner,
            human(x.incr.changed),
            human(x.incr.bytes_read),
            human(x.incr.bytes_written),
            human(x.alloc),
            human(x.apparent),
            x.floor,
            x.incr.wall / x.floor,
        );
    }
    let over_rounds = |f: fn(&Round) -> f64| median(&rounds.iter().map(f).collect::<Vec<_>>());
    let incr = over_rounds(|x| x.incr.wall);
    let inner = over_rounds(|x| x.incr.inner);
    let floor = over_rounds(|x| x.floor);
    let alloc = over_rounds(|x| x.alloc as f64);
    let read = over_rounds(|x| x.incr.bytes_read as f64);
    println!();
    println!(
        "  medians over {} round(s): incremental {:.3} s, floor {:.3} s",
        rounds.len(),
        incr,
        floor
    );
    let verdict = if incr / floor <= 1.5 {
        "within"
    } else {
        "OVER"
    };
    println!(
        "  incremental / floor            {:>7.2}×   (target ≤ 1.5×: {verdict})",
        incr / floor
    );
    println!(
        "  incremental / full backup      {:>7.3}×   (full is {:.1}× the incremental)",
        incr / r.full.wall,
        r.full.wall / incr
    );
    println!(
        "  incremental / qemu-img convert {:>7.3}×   (qemu-img is {:.1}× the incremental)",
        incr / r.qemu_secs,
        r.qemu_secs / incr
    );
    println!(
        "  full backup / qemu-img convert {:>7.2}×",
        r.full.wall / r.qemu_secs
    );
    let ratios = over_rounds(|x| x.incr.wall / x.floor);
    println!(
        "  per-round ratio, median        {:>7.2}×   (each incremental over the floor of its round)",
        ratios
    );
    println!(
        "  (incremental − empty) / floor  {:>7.2}×   (the data path alone)",
        (incr - r.empty.wall) / floor
    );
    println!(
        "  incremental in-process / floor {:>7.2}×   (process start, argument parsing and exit excluded)",
        inner / floor
    );
    println!(
        "  incremental read / changed     {:>7.2}×   ({} read for {} changed)",
        read / changed as f64,
        human(read as u64),
        human(changed)
    );
    println!(
        "  incremental on disk / changed  {:>7.2}×   ({} allocated, st_blocks × 512)",
        alloc / changed as f64,
        human(alloc as u64)
    );
}
