//! Change-tracking benchmarks.
//!
//! 1. **Write overhead**: the same writes through `vdisk` to a real-file
//!    dynamic VHDX, with tracking off and on, alternating, side by side.
//!    Timed from the first write to the end of the final flush (so the
//!    journal commits, the queued writes and the data's own fsyncs are all
//!    in). Workloads: random 4 KiB writes and sequential 1 MiB writes.
//! 2. **Query**: `query_changes` over a 1 TiB virtual disk with 1 % of it
//!    changed in scattered 64 KiB regions (the tracker alone, no disk).

use anyhow::{ensure, Context, Result};
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use refpoint_cli::units::human;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use storage::{Fs, LocalFs};
use vdisk::Disk;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

/// What to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// Work directory (a fresh one under it is used and removed).
    pub dir: PathBuf,
    /// Virtual size of the disk of the write benchmark.
    pub disk_size: u64,
    /// Bytes written per run of the write benchmark.
    pub total: u64,
    /// Runs of each side (off, on); the median is reported.
    pub runs: usize,
    /// Runs of the query; the median is reported.
    pub query_runs: usize,
    /// Virtual size and changed fraction of the query benchmark.
    pub query_size: u64,
    pub query_changed_percent: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            dir: PathBuf::from("/var/tmp"),
            disk_size: 4 * GIB,
            total: GIB,
            runs: 3,
            query_runs: 7,
            query_size: 1 << 40,
            query_changed_percent: 1.0,
        }
    }
}

/// One write workload: `(offset, length)` of each write, in order.
struct Workload {
    name: &'static str,
    writes: Vec<(u64, u64)>,
}

fn workloads(o: &Options) -> Vec<Workload> {
    let mut rng = SmallRng::seed_from_u64(42);
    let n4k = o.total / (4 * KIB);
    let slots = o.disk_size / (4 * KIB);
    vec![
        Workload {
            name: "random 4 KiB writes",
            writes: (0..n4k)
                .map(|_| (rng.gen_range(0..slots) * 4 * KIB, 4 * KIB))
                .collect(),
        },
        Workload {
            name: "sequential 1 MiB writes",
            writes: (0..o.total / MIB).map(|i| (i * MIB, MIB)).collect(),
        },
    ]
}

/// One timed run.
#[derive(Debug, Clone, Copy)]
struct Run {
    /// Writes issued, then the final flush.
    writes: Duration,
    flush: Duration,
    /// CPU time of both.
    cpu: Duration,
    /// Journal commits (fsyncs of the tracking file).
    commits: u64,
    /// Writes that took at least [`STALL`], and their time.
    stalls: u64,
    stalled: Duration,
}

/// A write taking this long waited for something (a journal commit, the
/// kernel's writeback) rather than just copying into the page cache.
const STALL: Duration = Duration::from_millis(1);

impl Run {
    fn total(&self) -> Duration {
        self.writes + self.flush
    }
}

/// CPU time this thread has run so far (Linux schedstat; 0 elsewhere).
/// Less disturbed by other load on the machine than wall time.
fn cpu_time() -> Duration {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

fn run_writes(dir: &Path, o: &Options, w: &Workload, tracked: bool) -> Result<Run> {
    let path = dir.join(if tracked {
        "tracked.vhdx"
    } else {
        "plain.vhdx"
    });
    let fs: Arc<dyn Fs> = Arc::new(LocalFs);
    let co = vhdx::CreateOptions {
        virtual_size: o.disk_size,
        disk_type: vhdx::DiskType::Dynamic,
        block_size: 32 * MIB as u32,
        logical_sector_size: 512,
        physical_sector_size: 4096,
    };
    vhdx::create(&*fs, &path, &co)?.close()?;
    let mut d = Disk::open(fs.clone(), &path, true)?;
    if tracked {
        d.enable_tracking(rct::DEFAULT_GRANULARITY)?;
    }
    let mut data = vec![0u8; 2 * MIB as usize];
    SmallRng::seed_from_u64(7).fill_bytes(&mut data);
    // Every earlier run ended with a flush and removed its files, so no
    // dirty pages of ours are left to disturb this one.
    let c0 = cpu_time();
    let t0 = Instant::now();
    let (mut stalls, mut stalled) = (0u64, Duration::ZERO);
    for (i, &(off, len)) in w.writes.iter().enumerate() {
        // Vary the content a little so no write repeats the previous one.
        let start = (i * 4096) % MIB as usize;
        let s0 = Instant::now();
        d.write(off, &data[start..start + len as usize])?;
        let took = s0.elapsed();
        if took >= STALL {
            stalls += 1;
            stalled += took;
        }
    }
    let t1 = Instant::now();
    d.flush()?;
    let t2 = Instant::now();
    let cpu = cpu_time() - c0;
    let commits = d.tracking_commits();
    d.close()?;
    std::fs::remove_file(&path)?;
    let rct = rct::tracking_path(&path);
    if rct.exists() {
        std::fs::remove_file(rct)?;
    }
    Ok(Run {
        writes: t1 - t0,
        flush: t2 - t1,
        cpu,
        commits,
        stalls,
        stalled,
    })
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// Result of the write benchmark for one workload.
#[derive(Debug, Clone)]
pub struct OverheadResult {
    pub workload: &'static str,
    pub bytes: u64,
    pub writes: usize,
    pub off_ms: f64,
    pub on_ms: f64,
    pub off_flush_ms: f64,
    pub on_flush_ms: f64,
    pub off_cpu_ms: f64,
    pub on_cpu_ms: f64,
    pub commits: u64,
    pub overhead_percent: f64,
    pub all_off_ms: Vec<f64>,
    pub all_on_ms: Vec<f64>,
}

/// Tracking off vs on, alternating runs, medians.
pub fn write_overhead(o: &Options, dir: &Path) -> Result<Vec<OverheadResult>> {
    let mut out = Vec::new();
    for w in workloads(o) {
        let (mut off, mut on) = (Vec::new(), Vec::new());
        // An untimed first run: the first one in a process is always slower
        // (page cache, allocator and file system warm-up).
        run_writes(dir, o, &w, true).with_context(|| format!("{} (warm-up)", w.name))?;
        for r in 0..o.runs {
            // Alternate which side goes first.
            for tracked in if r % 2 == 0 {
                [false, true]
            } else {
                [true, false]
            } {
                let run = run_writes(dir, o, &w, tracked)
                    .with_context(|| format!("{} (tracking {tracked})", w.name))?;
                eprintln!(
                    "  {:<24} tracking {:<3} run {}: writes {:7.1} ms + flush {:7.1} ms = {:7.1} ms (CPU {:7.1} ms), {} journal commits, {} writes ≥ 1 ms taking {:.1} ms",
                    w.name,
                    if tracked { "on" } else { "off" },
                    r + 1,
                    ms(run.writes),
                    ms(run.flush),
                    ms(run.total()),
                    ms(run.cpu),
                    run.commits,
                    run.stalls,
                    ms(run.stalled)
                );
                if tracked { &mut on } else { &mut off }.push(run);
            }
        }
        let t_off = median(off.iter().map(Run::total).collect());
        let t_on = median(on.iter().map(Run::total).collect());
        out.push(OverheadResult {
            workload: w.name,
            bytes: w.writes.iter().map(|&(_, l)| l).sum(),
            writes: w.writes.len(),
            off_ms: ms(t_off),
            on_ms: ms(t_on),
            off_flush_ms: ms(median(off.iter().map(|r| r.flush).collect())),
            on_flush_ms: ms(median(on.iter().map(|r| r.flush).collect())),
            off_cpu_ms: ms(median(off.iter().map(|r| r.cpu).collect())),
            on_cpu_ms: ms(median(on.iter().map(|r| r.cpu).collect())),
            commits: {
                let mut c: Vec<u64> = on.iter().map(|r| r.commits).collect();
                c.sort();
                c[c.len() / 2]
            },
            overhead_percent: (ms(t_on) / ms(t_off) - 1.0) * 100.0,
            all_off_ms: off.iter().map(|r| ms(r.total())).collect(),
            all_on_ms: on.iter().map(|r| ms(r.total())).collect(),
        });
    }
    Ok(out)
}

/// Result of the query benchmark.
#[derive(Debug, Clone)]
pub struct QueryResult {
    pub changed_regions: u64,
    pub generations: usize,
    pub ranges: usize,
    pub median_ms: f64,
    pub all_ms: Vec<f64>,
    pub reopen_ms: f64,
}

/// `query_changes` since an ID over the whole disk, with the changed
/// regions spread over `generations` sealed generations.
pub fn query(o: &Options, dir: &Path, generations: usize) -> Result<QueryResult> {
    let g = rct::DEFAULT_GRANULARITY;
    let disk = dir.join(format!("query-{generations}.vhdx"));
    let fs: Arc<dyn Fs> = Arc::new(LocalFs);
    let mut t = rct::Tracker::create(fs.clone(), &disk, o.query_size, g, "x")?;
    let since = t.seal()?;
    let regions = o.query_size / g;
    let changed = (regions as f64 * o.query_changed_percent / 100.0) as u64;
    let mut rng = SmallRng::seed_from_u64(1);
    let per_gen = changed.div_ceil(generations as u64);
    let mut staged = 0u64;
    let mut marked = vec![false; regions as usize];
    for _ in 0..generations {
        let mut n = 0;
        while n < per_gen && staged < changed {
            let r = rng.gen_range(0..regions);
            if !std::mem::replace(&mut marked[r as usize], true) {
                t.stage(r * g, g);
                n += 1;
                staged += 1;
                // Commit in batches the size of vdisk's write queue.
                if staged.is_multiple_of(16384) {
                    t.commit()?;
                }
            }
        }
        t.seal()?;
    }
    let mut times = Vec::new();
    let mut ranges = 0;
    for _ in 0..o.query_runs {
        let t0 = Instant::now();
        let c = t.query_changes(&since, None, 0, o.query_size, usize::MAX)?;
        times.push(t0.elapsed());
        ranges = c.ranges.len();
        let reported: u64 = c.ranges.iter().map(|r| r.length).sum();
        ensure!(
            reported == changed * g,
            "query reported {reported} bytes, {} were changed",
            changed * g
        );
    }
    drop(t);
    let t0 = Instant::now();
    let t = rct::Tracker::open(fs, &disk, o.query_size, "x")?;
    let reopen = t0.elapsed();
    drop(t);
    std::fs::remove_file(rct::tracking_path(&disk))?;
    Ok(QueryResult {
        changed_regions: changed,
        generations,
        ranges,
        median_ms: ms(median(times.clone())),
        all_ms: times.into_iter().map(ms).collect(),
        reopen_ms: ms(reopen),
    })
}

/// Runs everything and prints the results.
pub fn run(o: &Options) -> Result<()> {
    std::fs::create_dir_all(&o.dir)?;
    let work = tempfile::Builder::new()
        .prefix("refpoint-bench-tracking-")
        .tempdir_in(&o.dir)
        .with_context(|| format!("creating a work directory in {}", o.dir.display()))?;
    let dir = work.path();
    eprintln!(
        "work directory {} ({} virtual disk, {} written per run, {} runs per side)",
        dir.display(),
        human(o.disk_size),
        human(o.total),
        o.runs
    );

    let results = write_overhead(o, dir)?;
    println!();
    println!(
        "Tracking write overhead (dynamic VHDX, {} virtual, {} written, medians of {} runs, final flush included)",
        human(o.disk_size),
        human(o.total),
        o.runs
    );
    println!(
        "| {:<24} | {:>9} | {:>9} | {:>12} | {:>11} | {:>10} | {:>9} | {:>7} | {:>8} | {:>12} |",
        "workload",
        "off MiB/s",
        "on MiB/s",
        "off flush ms",
        "on flush ms",
        "off CPU ms",
        "on CPU ms",
        "commits",
        "overhead",
        "CPU overhead"
    );
    for r in &results {
        let mibs = |t: f64| r.bytes as f64 / MIB as f64 / (t / 1e3);
        println!(
            "| {:<24} | {:>9.1} | {:>9.1} | {:>12.1} | {:>11.1} | {:>10.1} | {:>9.1} | {:>7} | {:>7.1}% | {:>11.1}% |",
            r.workload,
            mibs(r.off_ms),
            mibs(r.on_ms),
            r.off_flush_ms,
            r.on_flush_ms,
            r.off_cpu_ms,
            r.on_cpu_ms,
            r.commits,
            r.overhead_percent,
            (r.on_cpu_ms / r.off_cpu_ms - 1.0) * 100.0
        );
    }
    for r in &results {
        println!(
            "  {}: {} writes, {:.0} vs {:.0} writes/s; all runs off {:?} ms, on {:?} ms",
            r.workload,
            r.writes,
            r.writes as f64 / (r.off_ms / 1e3),
            r.writes as f64 / (r.on_ms / 1e3),
            r.all_off_ms.iter().map(|t| t.round()).collect::<Vec<_>>(),
            r.all_on_ms.iter().map(|t| t.round()).collect::<Vec<_>>()
        );
    }

    println!();
    println!(
        "query_changes over a {} virtual disk, {} % changed in scattered 64 KiB regions (median of {})",
        human(o.query_size),
        o.query_changed_percent,
        o.query_runs
    );
    println!(
        "| {:>11} | {:>15} | {:>9} | {:>10} | {:>22} | {:>16} |",
        "generations",
        "changed regions",
        "ranges",
        "median ms",
        "all runs ms",
        "reopen (replay) ms"
    );
    for generations in [1, 10] {
        let q = query(o, dir, generations)?;
        println!(
            "| {:>11} | {:>15} | {:>9} | {:>10.2} | {:>22} | {:>16.1} |",
            q.generations,
            q.changed_regions,
            q.ranges,
            q.median_ms,
            q.all_ms
                .iter()
                .map(|t| format!("{t:.1}"))
                .collect::<Vec<_>>()
                .join(" "),
            q.reopen_ms
        );
    }
    Ok(())
}
