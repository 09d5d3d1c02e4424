//! Over-reporting, measured: how many bytes `query_changes` reports per byte
//! actually written, for typical write patterns, at the default 64 KiB
//! granularity and at 4 KiB, after clean runs and after power cuts.
//!
//! Invariant 1 allows over-reporting and forbids under-reporting, so every
//! run checks byte by byte (512-byte units) that each changed unit is
//! covered, and that the ratio stays under a bound derived below. Run with
//! `cargo nextest run -p vdisk --test over_reporting --no-capture` to see
//! the table.
//!
//! ## Where over-reporting comes from, and the bounds
//!
//! 1. **Granularity.** A region is reported whole if any byte of it was
//!    written. Every write here is 4 KiB-aligned and a multiple of 4 KiB, so
//!    each reported region holds at least 4 KiB actually written: the ratio
//!    is at most `granularity / 4 KiB` (16 at 64 KiB, 1 at 4 KiB), and it is
//!    exactly the *footprint* (written ranges rounded out to regions) when
//!    nothing else adds marks.
//! 2. **Look-ahead.** A sequential stream marks a window ahead of itself,
//!    doubling it each time the stream reaches its end, so that the stream
//!    soon writes without waiting for a journal commit. The window is at
//!    most the length of the stream so far, so a stream reports at most
//!    twice what it wrote (plus one write and the rounding of 1.), however
//!    it ends. The window starts over at every seal: a stream running
//!    across a seal pays the doubling again rather than dumping a window as
//!    long as the whole earlier stream into the new generation.
//! 3. **Crashes.** A mark is durable before its write is issued, and a
//!    crash can then lose the write: that region is reported though nothing
//!    changed. Marks only ever come from issued writes, so measured against
//!    the bytes *issued* the bounds above still hold; measured against the
//!    bytes that *survived* the crash the ratio is larger by however much
//!    unflushed data the crash dropped (printed, not bounded).

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::sync::Arc;
use storage::{CrashFs, Fs};
use vdisk::Disk;
use vhdx::{create, CreateOptions, DiskType};

const KIB: u64 = 1024;
const MIB: u64 = 1 << 20;
/// A disk of a few hundred MiB, so the look-ahead can run into its end.
const SIZE: u64 = 256 * MIB;
const UNIT: u64 = 512;
/// A guest flushes every this many writes.
const FLUSH_EVERY: usize = 32;
const SEEDS: u64 = 4;

/// A write: offset and length.
type Step = (u64, u64);

/// A workload: steps run before the measured ID is sealed, then the
/// measured steps (a crash run cuts the power in the middle of those).
struct Workload {
    name: &'static str,
    before: Vec<Step>,
    measured: Vec<Step>,
    /// The largest ratio allowed against the bytes issued, per granularity.
    bound: fn(u64) -> f64,
}

fn sequential(from: u64, len: u64, size: u64) -> Vec<Step> {
    (0..len / size).map(|i| (from + i * size, size)).collect()
}

/// Granularity only (1. above).
fn grain_bound(g: u64) -> f64 {
    (g / (4 * KIB)) as f64
}

/// Look-ahead on top of exact 1 MiB-aligned writes (2. above): twice the
/// stream, plus the write that starts each window.
fn stream_bound(_: u64) -> f64 {
    2.1
}

fn workloads(seed: u64) -> Vec<Workload> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let random_4k = (0..2048)
        .map(|_| (rng.gen_range(0..SIZE / (4 * KIB)) * 4 * KIB, 4 * KIB))
        .collect();
    let mixed = (0..1000)
        .map(|_| {
            // 4 KiB to 1 MiB, log-uniform, 4 KiB-aligned.
            let len = (4 * KIB) << rng.gen_range(0..=8);
            let len = (len + rng.gen_range(0..len) / (4 * KIB) * 4 * KIB).min(MIB);
            (rng.gen_range(0..(SIZE - len) / (4 * KIB)) * 4 * KIB, len)
        })
        .collect();
    vec![
        Workload {
            name: "sequential 1 MiB, 64 MiB stream",
            before: vec![],
            measured: sequential(16 * MIB, 64 * MIB, MIB),
            bound: stream_bound,
        },
        Workload {
            // Stops just after the window doubled: the worst case of 2.
            name: "sequential 1 MiB, 38 MiB stream",
            before: vec![],
            measured: sequential(16 * MIB, 38 * MIB, MIB),
            bound: stream_bound,
        },
        Workload {
            // A long stream, a backup (seal), then the stream goes on a little.
            name: "sequential 1 MiB, 8 MiB after a seal mid-stream",
            before: sequential(0, 120 * MIB, MIB),
            measured: sequential(120 * MIB, 8 * MIB, MIB),
            bound: stream_bound,
        },
        Workload {
            name: "sequential 4 KiB (log append), 8 MiB",
            before: vec![],
            measured: sequential(100 * MIB, 8 * MIB, 4 * KIB),
            // At 64 KiB the first write's region is rounded: 1. and 2.
            bound: |g| if g > 4 * KIB { 2.2 } else { 2.1 },
        },
        Workload {
            name: "random 4 KiB, 2048 writes",
            before: vec![],
            measured: random_4k,
            bound: grain_bound,
        },
        Workload {
            name: "random mixed 4 KiB..1 MiB, 1000 writes",
            before: vec![],
            measured: mixed,
            bound: grain_bound,
        },
    ]
}

/// One 512-byte unit per bool.
fn units() -> Vec<bool> {
    vec![false; (SIZE / UNIT) as usize]
}

fn mark(set: &mut [bool], offset: u64, len: u64) {
    for u in offset / UNIT..(offset + len).div_ceil(UNIT) {
        set[u as usize] = true;
    }
}

fn count(set: &[bool]) -> u64 {
    set.iter().filter(|&&b| b).count() as u64 * UNIT
}

#[derive(Default, Clone, Copy)]
struct Measure {
    /// Distinct bytes written by the measured writes that were issued.
    issued: u64,
    /// Those rounded out to the granularity.
    footprint: u64,
    /// Distinct bytes that differ from the content at the seal afterwards.
    changed: u64,
    reported: u64,
    commits: u64,
}

impl std::ops::AddAssign for Measure {
    fn add_assign(&mut self, o: Self) {
        self.issued += o.issued;
        self.footprint += o.footprint;
        self.changed += o.changed;
        self.reported += o.reported;
        self.commits += o.commits;
    }
}

fn open(fs: &CrashFs, path: &Path) -> Disk {
    Disk::open(Arc::new(fs.clone()) as Arc<dyn Fs>, path, true).unwrap()
}

fn read_all(d: &mut Disk) -> Vec<u8> {
    let mut b = vec![0u8; SIZE as usize];
    d.read(0, &mut b).unwrap();
    b
}

/// Runs a workload; with `crash`, the power fails in the middle of the
/// measured steps and the measure is taken after reopening.
fn run(w: &Workload, grain: u64, crash: Option<u64>) -> Measure {
    let fs = CrashFs::new();
    let path = Path::new("/vm/disk0.vhdx");
    let o = CreateOptions {
        virtual_size: SIZE,
        disk_type: DiskType::Dynamic,
        block_size: 32 * MIB as u32,
        logical_sector_size: 512,
        physical_sector_size: 4096,
    };
    create(&fs, path, &o).unwrap().close().unwrap();
    let mut d = open(&fs, path);
    d.enable_tracking(grain).unwrap();
    // Earlier content in 0x01..=0x7f, measured writes in 0x80..=0xff, so
    // every measured byte that reaches the disk changes it.
    let mut n = 0u64;
    let mut data = |len: u64, high: bool| {
        n += 1;
        let b = (n % 127) as u8 + if high { 0x80 } else { 1 };
        vec![b; len as usize]
    };
    for &(o, l) in &w.before {
        d.write(o, &data(l, false)).unwrap();
    }
    let id0 = d.seal().unwrap();
    let snapshot = read_all(&mut d);
    let commits0 = d.tracking_commits();
    let mut rng = SmallRng::seed_from_u64(crash.unwrap_or(0));
    let cut_at = w.measured.len() / 2;
    let mut issued = units();
    for (i, &(o, l)) in w.measured.iter().enumerate() {
        if crash.is_some() && i == cut_at {
            fs.set_power_budget(Some(rng.gen_range(0..40)));
        }
        mark(&mut issued, o, l);
        let r = d.write(o, &data(l, true)).and_then(|_| {
            if (i + 1) % FLUSH_EVERY == 0 {
                d.flush()
            } else {
                Ok(())
            }
        });
        if r.is_err() {
            assert!(fs.power_failed(), "failed without a power cut: {r:?}");
            break;
        }
    }
    let commits = d.tracking_commits() - commits0;
    if crash.is_some() {
        fs.crash(&mut rng);
        d.abandon();
        d = open(&fs, path);
    } else {
        d.flush().unwrap();
    }
    let after = read_all(&mut d);
    let mut changed = units();
    for (u, flag) in changed.iter_mut().enumerate() {
        let r = u * UNIT as usize..(u + 1) * UNIT as usize;
        *flag = after[r.clone()] != snapshot[r];
    }
    let c = d.query_changes(&id0, None, 0, SIZE, usize::MAX).unwrap();
    let mut covered = units();
    for r in &c.ranges {
        mark(&mut covered, r.offset, r.length);
    }
    for (u, (&ch, &cov)) in changed.iter().zip(&covered).enumerate() {
        assert!(
            !ch || cov,
            "{}: MISSED CHANGE at byte {} (granularity {grain})",
            w.name,
            u as u64 * UNIT
        );
    }
    let per_region = (grain / UNIT) as usize;
    let footprint = issued
        .chunks(per_region)
        .filter(|c| c.iter().any(|&b| b))
        .count() as u64
        * grain;
    let m = Measure {
        issued: count(&issued),
        footprint,
        changed: count(&changed),
        reported: c.ranges.iter().map(|r| r.length).sum(),
        commits,
    };
    d.close().unwrap();
    m
}

fn ratio(a: u64, b: u64) -> f64 {
    a as f64 / b.max(1) as f64
}

/// Measures a workload at both granularities, clean and with crashes,
/// prints a table row each, and checks the bounds.
fn measure(index: usize) {
    let name = workloads(0)[index].name;
    println!(
        "| {:<48} | grain  | run   | issued MiB | changed MiB | reported MiB | reported/issued | worst run | reported/footprint | commits |",
        "workload (crash rows: sum of runs)"
    );
    for grain in [64 * KIB, 4 * KIB] {
        for crash in [false, true] {
            let mut total = Measure::default();
            let mut worst: f64 = 0.0;
            let seeds = if crash { SEEDS } else { 1 };
            for seed in 0..seeds {
                let w = &workloads(seed)[index];
                let m = run(w, grain, crash.then_some(seed + 1));
                let r = ratio(m.reported, m.issued);
                let bound = (w.bound)(grain);
                assert!(
                    m.reported >= m.changed,
                    "{name}: reported {} < changed {}",
                    m.reported,
                    m.changed
                );
                if !crash {
                    assert_eq!(m.changed, m.issued, "{name}: a clean run loses no write");
                    assert!(r >= 1.0, "{name}: under-reporting ({r})");
                }
                assert!(
                    r <= bound,
                    "{name} at {} KiB{}: {r:.2}× reported per byte issued, bound {bound}",
                    grain / KIB,
                    if crash { " after a crash" } else { "" }
                );
                if r > worst {
                    worst = r;
                }
                total += m;
            }
            println!(
                "| {name:<48} | {:>2} KiB | {:<5} | {:>10.1} | {:>11.1} | {:>12.1} | {:>14.2}× | {:>8.2}× | {:>17.2}× | {:>7} |",
                grain / KIB,
                if crash { "crash" } else { "clean" },
                total.issued as f64 / MIB as f64,
                total.changed as f64 / MIB as f64,
                total.reported as f64 / MIB as f64,
                ratio(total.reported, total.issued),
                worst,
                ratio(total.reported, total.footprint),
                total.commits,
            );
            if crash {
                println!(
                    "|   … after the crash, per byte that survived: {:.2}×",
                    ratio(total.reported, total.changed)
                );
            }
        }
    }
}

#[test]
fn sequential_1m_stream() {
    measure(0);
}

#[test]
fn sequential_1m_stream_stopping_after_a_doubling() {
    measure(1);
}

#[test]
fn sequential_1m_stream_across_a_seal() {
    measure(2);
}

#[test]
fn sequential_4k_log_append() {
    measure(3);
}

#[test]
fn random_4k() {
    measure(4);
}

#[test]
fn random_mixed_sizes() {
    measure(5);
}
