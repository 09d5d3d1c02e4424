//! Invariants 1 and 3 — no missed change, acknowledged means durable —
//! under power cuts and I/O errors: random sequences of writes, zeroes,
//! trims, flushes, seals, releases, clean restarts, power cuts (inside any
//! operation, directory changes included) and injected ENOSPC/EIO without a
//! crash, on a tracked disk of four VHDX blocks (or a raw file), with the
//! tracking journal compacted every few commits.
//!
//! The model is built from the operations issued, never from reading the
//! disk: per byte, the value of the last op that succeeded, the values a
//! failed op may have left, and the ops issued since the last successful
//! flush. After a crash every byte must read as one of the values the model
//! allows (acknowledged data survives); the disk's content then tells which
//! allowed outcome happened. Every ID in `retained_ids()` — also one whose
//! seal call failed after its record reached the file — must report every
//! unit whose content differs from the content at its seal.
//!
//! Seeds are random per run and printed; `REFPOINT_CRASH_SEED=N` replays a
//! campaign, `REFPOINT_CRASH_RUN=S` the one run that failed with seed S,
//! `REFPOINT_CRASH_TRACE=1` prints every step, and `REFPOINT_CRASH_RUNS=N`
//! sets the runs per campaign (a longer one: `REFPOINT_CRASH_RUNS=5000`).

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;
use storage::{CrashFs, CrashOptions, Fault, Fs};
use vdisk::{Disk, RctError, RctId, TrackingStatus, VdiskError};
use vhdx::{create, CreateOptions, DiskType};

const SIZE: u64 = 4 << 20;
const BLOCK: u64 = 1 << 20;
const GRAIN: u64 = 4096;
const UNIT: usize = 512;
const STEPS: usize = 150;
/// Runs per campaign test: eight of them give about 10^5 crash points.
const RUNS: u64 = 250;

/// The content at a seal, and the units whose content was not certain then.
struct Snapshot {
    content: Vec<u8>,
    unsure: Vec<bool>,
    /// Units any op issued since touched: only those can differ (any other
    /// difference is a lost or corrupted byte, which `settle` reports).
    touched: Vec<bool>,
}

/// What the disk may hold.
struct Model {
    /// The value of the last successful op per byte.
    cur: Vec<u8>,
    /// Other values a byte may hold after failed ops (old and new).
    alt: HashMap<usize, Vec<u8>>,
    /// What the medium held at the last successful flush.
    durable: Vec<u8>,
    /// Ops issued since then: (offset, bytes it wrote).
    pending: Vec<(usize, Vec<u8>)>,
    /// Values bytes may revert to on the medium after a failed flush (the
    /// kernel may drop such data without a new write), until they are
    /// written and flushed again.
    doubt: HashMap<usize, Vec<u8>>,
    /// Snapshots by generation: of successful seals and of attempts.
    seals: BTreeMap<u64, Snapshot>,
    /// IDs whose release succeeded.
    released: Vec<RctId>,
    raw: bool,
}

impl Model {
    fn new(raw: bool) -> Self {
        Model {
            cur: vec![0; SIZE as usize],
            alt: HashMap::new(),
            durable: vec![0; SIZE as usize],
            pending: Vec::new(),
            doubt: HashMap::new(),
            seals: BTreeMap::new(),
            released: Vec::new(),
            raw,
        }
    }

    /// What an op leaves, by the format's rules: a trim unmaps the whole
    /// VHDX blocks it covers (zeros) and leaves the rest; raw files ignore it.
    fn effect(&self, kind: u8, off: usize, data: &[u8]) -> Vec<(usize, Vec<u8>)> {
        match kind {
            b't' if self.raw => vec![],
            b't' => {
                let (s, e) = (off as u64, (off + data.len()) as u64);
                let first = s.div_ceil(BLOCK) * BLOCK;
                let last = e / BLOCK * BLOCK;
                if first < last {
                    vec![(first as usize, vec![0; (last - first) as usize])]
                } else {
                    vec![]
                }
            }
            _ => vec![(off, data.to_vec())],
        }
    }

    fn issued(&mut self, effect: Vec<(usize, Vec<u8>)>, ok: bool) {
        for (off, data) in effect {
            if ok {
                let end = off + data.len();
                self.alt.retain(|&at, _| at < off || at >= end);
                self.cur[off..end].copy_from_slice(&data);
            }
            for (i, &b) in data.iter().enumerate().filter(|_| !ok) {
                let at = off + i;
                {
                    let a = self.alt.entry(at).or_default();
                    a.push(self.cur[at]);
                    a.push(b);
                }
            }
            for s in self.seals.values_mut() {
                for u in off / UNIT..(off + data.len()).div_ceil(UNIT) {
                    s.touched[u] = true;
                }
            }
            self.pending.push((off, data));
        }
    }

    fn flushed(&mut self) {
        // Only what the pending ops touched can differ from the medium.
        for (off, data) in std::mem::take(&mut self.pending) {
            let end = off + data.len();
            if !self.doubt.is_empty() {
                self.doubt.retain(|&at, _| at < off || at >= end);
            }
            self.durable[off..end].copy_from_slice(&self.cur[off..end]);
        }
    }

    /// The disk was dropped after a failed flush: what was issued since the
    /// last good flush may never reach the medium.
    fn dropped(&mut self) {
        for (off, data) in std::mem::take(&mut self.pending) {
            for (i, &b) in data.iter().enumerate() {
                let at = off + i;
                let old = self.durable[at];
                let d = self.doubt.entry(at).or_insert_with(|| vec![old]);
                d.push(b);
            }
        }
        self.durable = self.cur.clone();
    }

    /// Units whose content is not certain: after a failed op, or data a
    /// failed flush may have lost (which can revert later, unseen).
    fn unsure_units(&self) -> Vec<bool> {
        let mut u = vec![false; SIZE as usize / UNIT];
        for &at in self.alt.keys().chain(self.doubt.keys()) {
            u[at / UNIT] = true;
        }
        u
    }

    /// Checks that every byte of `actual` is an outcome the model allows
    /// (after a crash `crashed`: also the durable value and any pending
    /// op's), then takes it as the truth.
    fn settle(&mut self, actual: Vec<u8>, crashed: bool, power_cut: bool, what: &str) {
        for u in 0..SIZE as usize / UNIT {
            let r = u * UNIT..(u + 1) * UNIT;
            if actual[r.clone()] == self.cur[r.clone()] {
                continue;
            }
            for at in r {
                let v = actual[at];
                let ok = v == self.cur[at]
                    || self.alt.get(&at).is_some_and(|a| a.contains(&v))
                    || (crashed
                        && (v == self.durable[at]
                            || self.doubt.get(&at).is_some_and(|d| d.contains(&v))
                            || self
                                .pending
                                .iter()
                                .any(|(o, d)| at >= *o && at < o + d.len() && d[at - o] == v)));
                assert!(
                    ok,
                    "{what}: LOST WRITE: byte {at} reads {v:#04x}, expected {:#04x}{}",
                    self.cur[at],
                    if crashed {
                        " (or an unflushed value)"
                    } else {
                        ""
                    }
                );
            }
        }
        self.cur = actual;
        self.alt.clear();
        if power_cut {
            // The medium is what was read: nothing is pending any more.
            self.pending.clear();
            self.doubt.clear();
            self.durable = self.cur.clone();
        } else if crashed {
            self.dropped();
        } else if self.pending.is_empty() {
            self.durable.copy_from_slice(&self.cur);
        }
    }
}

fn read_all(d: &mut Disk) -> Vec<u8> {
    let mut b = vec![0u8; SIZE as usize];
    d.read(0, &mut b).expect("a reopened disk reads");
    b
}

fn setup(fs: &CrashFs, path: &Path, raw: bool) {
    if raw {
        let f = fs.create(path).unwrap();
        f.set_len(SIZE).unwrap();
        f.flush().unwrap();
        fs.sync_parent(path).unwrap();
    } else {
        let o = CreateOptions {
            virtual_size: SIZE,
            disk_type: DiskType::Dynamic,
            block_size: BLOCK as u32,
            logical_sector_size: 512,
            physical_sector_size: 4096,
        };
        create(fs, path, &o).unwrap().close().unwrap();
    }
    let mut d = Disk::open(Arc::new(fs.clone()), path, true).unwrap();
    d.enable_tracking(GRAIN).unwrap();
    d.close().unwrap();
}

/// Figures of a campaign.
#[derive(Default, Debug)]
struct Stats {
    crashes: u64,
    faults: u64,
    failed_disks: u64,
    refusals: BTreeMap<&'static str, u64>,
    written: u64,
    reported: u64,
    checked_ids: u64,
}

/// Every retained ID reports every unit that differs from its seal.
fn verify(d: &mut Disk, m: &Model, stats: &mut Stats, what: &str, after_restart: bool) {
    if let TrackingStatus::Broken { kind, .. } = d.tracking_status() {
        // After a failed flush no ID may answer: each must be refused.
        assert_eq!(kind, "unproven_after_io_error", "{what}");
        for id in d.retained_ids().unwrap_or_default() {
            match d.query_changes(&id, None, 0, SIZE, 10) {
                Err(VdiskError::Tracking(RctError::Unproven { .. })) => {}
                other => panic!("{what}: {id} must be refused as unproven: {other:?}"),
            }
        }
        return;
    }
    let ids = match d.retained_ids() {
        Ok(ids) => ids,
        Err(e) if d.has_failed() => {
            // A stopped disk may refuse its tracking too; reopened next.
            let _ = e;
            return;
        }
        Err(e) => panic!("{what}: retained IDs: {e}"),
    };
    if after_restart {
        for id in &m.released {
            match d.query_changes(id, None, 0, SIZE, 10) {
                Err(VdiskError::Tracking(RctError::ReleasedId { .. })) => {}
                other => panic!("{what}: released {id} must fail with ReleasedId: {other:?}"),
            }
        }
    }
    for id in &ids {
        let snap = m.seals.get(&id.generation).unwrap_or_else(|| {
            panic!("{what}: {id} is retained but no seal of it was ever attempted")
        });
        let c = match d.query_changes(id, None, 0, SIZE, usize::MAX) {
            Ok(c) => c,
            Err(e) => panic!("{what}: query {id}: {e}"),
        };
        // Data a failed flush may have lost can revert on the medium later
        // without a write; no tracking can see that (see the closing
        // paragraph of the crate docs of `vdisk`), so those units are not
        // judged.
        let mut doubtful = vec![false; SIZE as usize / UNIT];
        for &at in m.doubt.keys() {
            doubtful[at / UNIT] = true;
        }
        let mut covered = vec![false; SIZE as usize / UNIT];
        for r in &c.ranges {
            let units =
                r.offset as usize / UNIT..(r.offset + r.length).div_ceil(UNIT as u64) as usize;
            covered[units].fill(true);
        }
        for (u, cov) in covered.iter().enumerate() {
            if !snap.touched[u] {
                continue;
            }
            let r = u * UNIT..(u + 1) * UNIT;
            let changed = m.cur[r.clone()] != snap.content[r];
            if changed && !snap.unsure[u] && !doubtful[u] && !m.alt.contains_key(&(u * UNIT)) {
                assert!(
                    *cov,
                    "{what}: MISSED CHANGE: unit at byte {} changed since {id} and is not reported",
                    u * UNIT
                );
                stats.written += UNIT as u64;
            }
        }
        stats.reported += c.ranges.iter().map(|r| r.length).sum::<u64>();
        stats.checked_ids += 1;
    }
}

fn open(afs: &Arc<dyn Fs>, path: &Path) -> Disk {
    Disk::open(afs.clone(), path, true).expect("the disk opens")
}

/// After a reopen: tracking must work (a raw disk written before a crash
/// is refused, typed, and tracking is started over).
fn tracking_after_reopen(d: &mut Disk, m: &mut Model, stats: &mut Stats, what: &str) {
    match d.tracking_status() {
        TrackingStatus::On(_) => {}
        TrackingStatus::Broken { kind, message } => {
            // Typed refusals: a raw disk written before a crash, or any
            // disk whose flush failed earlier.
            assert!(
                (m.raw && kind == "modified_while_untracked") || kind == "unproven_after_io_error",
                "{what}: tracking unusable after a restart: {kind}: {message}"
            );
            *stats.refusals.entry(kind).or_default() += 1;
            d.enable_tracking(GRAIN).unwrap();
            m.seals.clear();
            m.released.clear();
        }
        other => panic!("{what}: {other:?}"),
    }
}

fn run(seed: u64, raw: bool, stats: &mut Stats) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let fs = CrashFs::with_options(CrashOptions {
        seed,
        ..Default::default()
    });
    let path = Path::new("/vm/disk0.vhdx");
    setup(&fs, path, raw);
    let afs: Arc<dyn Fs> = Arc::new(fs.clone());
    let mut d = open(&afs, path);
    let mut m = Model::new(raw);
    for step in 0..STEPS {
        let what = format!("seed {seed} step {step}");
        // Sometimes the power fails a few operations into the step; or,
        // with the power on, one of them fails with ENOSPC or EIO.
        let cut = rng.gen_bool(0.35);
        let fault = !cut && rng.gen_bool(0.12);
        if cut {
            fs.set_power_budget(Some(rng.gen_range(0..16)));
        } else if fault {
            let f = if rng.gen_bool(0.5) {
                Fault::NoSpace
            } else {
                Fault::Io
            };
            fs.inject_fault(rng.gen_range(0..10), f);
        }
        let len = match rng.gen_range(0..20) {
            0..=9 => rng.gen_range(1..9000),
            10..=16 => rng.gen_range(1..120_000),
            _ => rng.gen_range(BLOCK / 2..BLOCK * 3 / 2),
        } as usize;
        let off = rng.gen_range(0..SIZE as usize - len);
        let mut restarted = false;
        // Whether a restart dropped the disk without a clean close, which
        // may lose what was not flushed, as a crash does.
        let mut dropped = false;
        let kind = rng.gen_range(0..22);
        let result: Result<(), VdiskError> = match kind {
            0..=9 => {
                let data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
                let r = d.write(off as u64, &data);
                m.issued(m.effect(b'w', off, &data), r.is_ok());
                r
            }
            10 => {
                let r = d.zero(off as u64, len as u64);
                m.issued(m.effect(b'z', off, &vec![0; len]), r.is_ok());
                r
            }
            11 => {
                let r = d.trim(off as u64, len as u64);
                m.issued(m.effect(b't', off, &vec![0; len]), r.is_ok());
                r
            }
            12..=14 => d.flush().map(|()| {
                m.flushed();
            }),
            15..=17 => {
                let generation = match d.tracking_status() {
                    TrackingStatus::On(s) => s.most_recent_id.map_or(1, |i| i.generation + 1),
                    _ => 0,
                };
                let snap = Snapshot {
                    content: m.cur.clone(),
                    unsure: m.unsure_units(),
                    touched: vec![false; SIZE as usize / UNIT],
                };
                let r = d.seal();
                if r.is_ok() || generation > 0 {
                    m.seals.insert(generation, snap);
                }
                r.map(|id| {
                    assert_eq!(id.generation, generation, "{what}");
                    m.flushed();
                })
            }
            18 if !m.seals.is_empty() => {
                let g = *m.seals.keys().nth(rng.gen_range(0..m.seals.len())).unwrap();
                let id = match d.retained_ids() {
                    Ok(ids) => ids.into_iter().find(|i| i.generation == g),
                    Err(_) => None,
                };
                match id {
                    Some(id) => d.release(&id).map(|()| {
                        m.seals.remove(&g);
                        m.released.push(id);
                    }),
                    None => Ok(()),
                }
            }
            _ => {
                // A clean restart.
                fs.set_power_budget(None);
                fs.clear_faults();
                let old = std::mem::replace(&mut d, Disk::open(afs.clone(), path, false).unwrap());
                let closed = old.close();
                d = open(&afs, path);
                restarted = true;
                match closed {
                    Ok(()) => m.flushed(),
                    Err(_) => dropped = true,
                }
                closed
            }
        };
        if std::env::var_os("REFPOINT_CRASH_TRACE").is_some() {
            eprintln!(
                "{what}: op {kind} cut {cut} fault {fault} off {off} len {len}: {result:?} (ops {}) {:?}",
                fs.ops_done(),
                d.tracking_status()
            );
        }
        if result.is_err() && !cut {
            assert!(
                fault && !fs.fault_pending(),
                "{what}: an operation failed with neither a power cut nor a fault: {:?}",
                result.err()
            );
        }
        if fault && result.is_err() {
            stats.faults += 1;
        }
        if result.is_ok() && matches!(kind, 12..=17) && !m.alt.is_empty() {
            // A successful flush applied every queued op, also those whose
            // first try failed: which outcome each uncertain byte took is
            // final now (and durable), so the disk tells it.
            let actual = read_all(&mut d);
            m.settle(actual, false, false, &format!("{what} (after a flush)"));
        }
        fs.clear_faults();
        if cut {
            // Power cut: the process dies, unflushed writes and unsynced
            // directory changes fall as they may.
            fs.crash(&mut rng);
            stats.crashes += 1;
            let old = std::mem::replace(&mut d, open(&afs, path));
            old.abandon();
            m.settle(
                read_all(&mut d),
                true,
                true,
                &format!("{what} (after a power cut)"),
            );
            tracking_after_reopen(&mut d, &mut m, stats, &what);
            verify(&mut d, &m, stats, &what, true);
            continue;
        }
        if d.has_failed() {
            // A stopped disk refuses writes and flushes until reopened.
            assert!(
                matches!(d.flush(), Err(VdiskError::Failed { .. })),
                "{what}: a failed disk must refuse flushes"
            );
            stats.failed_disks += 1;
            let old = std::mem::replace(&mut d, open(&afs, path));
            old.abandon();
            restarted = true;
            dropped = true;
        }
        if restarted || (result.is_ok() && matches!(step % 7, 0)) {
            if restarted {
                m.settle(
                    read_all(&mut d),
                    dropped,
                    false,
                    &format!("{what} (after a restart)"),
                );
                tracking_after_reopen(&mut d, &mut m, stats, &what);
            } else if d.flush().is_ok() {
                m.flushed();
                let actual = read_all(&mut d);
                m.settle(actual, false, false, &what);
            }
        }
        verify(&mut d, &m, stats, &what, restarted);
    }
    d.close().ok();
}

fn base_seed() -> u64 {
    match std::env::var("REFPOINT_CRASH_SEED") {
        Ok(s) => s.parse().expect("REFPOINT_CRASH_SEED is a number"),
        Err(_) => rand::random::<u32>() as u64,
    }
}

/// Runs `runs` seeds from a random (printed) base and checks that enough
/// crash points and faults were exercised.
fn campaign(runs: u64, raw: bool, name: &str) {
    rct::set_compaction_threshold(4096);
    let base = base_seed();
    println!("{name}: base seed {base} (replay with REFPOINT_CRASH_SEED={base})");
    let runs = std::env::var("REFPOINT_CRASH_RUNS")
        .map(|r| r.parse().expect("REFPOINT_CRASH_RUNS is a number"))
        .unwrap_or(runs);
    let mut stats = Stats::default();
    if let Ok(one) = std::env::var("REFPOINT_CRASH_RUN") {
        run(one.parse().expect("a seed"), raw, &mut stats);
        return;
    }
    for i in 0..runs {
        run(base.wrapping_add(i * 7919), raw, &mut stats);
    }
    println!(
        "{name}: {runs} runs, {} crash points, {} injected faults, {} disks stopped and reopened, {} ID checks, refusals {:?}, reported/changed bytes {:.2}×",
        stats.crashes,
        stats.faults,
        stats.failed_disks,
        stats.checked_ids,
        stats.refusals,
        stats.reported as f64 / stats.written.max(1) as f64
    );
    assert!(
        stats.crashes > runs * 35,
        "only {} crash points in {runs} runs",
        stats.crashes
    );
    assert!(stats.faults > runs / 2, "only {} faults", stats.faults);
}

#[test]
fn no_change_is_missed_across_crashes_and_errors_vhdx_1() {
    campaign(RUNS, false, "vhdx 1");
}

#[test]
fn no_change_is_missed_across_crashes_and_errors_vhdx_2() {
    campaign(RUNS, false, "vhdx 2");
}

#[test]
fn no_change_is_missed_across_crashes_and_errors_vhdx_3() {
    campaign(RUNS, false, "vhdx 3");
}

#[test]
fn no_change_is_missed_across_crashes_and_errors_vhdx_4() {
    campaign(RUNS, false, "vhdx 4");
}

#[test]
fn no_change_is_missed_across_crashes_and_errors_vhdx_5() {
    campaign(RUNS, false, "vhdx 5");
}

#[test]
fn no_change_is_missed_across_crashes_and_errors_vhdx_6() {
    campaign(RUNS, false, "vhdx 6");
}

#[test]
fn no_change_is_missed_across_crashes_and_errors_raw_1() {
    campaign(RUNS, true, "raw 1");
}

#[test]
fn no_change_is_missed_across_crashes_and_errors_raw_2() {
    campaign(RUNS, true, "raw 2");
}
