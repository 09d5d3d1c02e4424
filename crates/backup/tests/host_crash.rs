//! Power cuts at random points inside host backups of three machines (one
//! with two disks), on the crash-simulating file system. After each cut
//! (unflushed writes dropped, kept or torn; unsynced directory changes
//! reverted), before anything runs again:
//!
//! * a reference point that was not there before is a checkpoint a host
//!   point record names: no reference point moves unless its host point
//!   is recorded;
//! * every machine point a record names exists, from the recorded
//!   checkpoint;
//! * every recorded host point restores exactly (one the cut run recorded:
//!   the content at its start);
//!
//! then the next host backup (itself cut sometimes) cleans up, is a normal
//! incremental where a host point existed, leaves only recorded points and
//! restores exactly; the repository verifies.
//!
//! Seeds are random per run and printed; `REFPOINT_CRASH_SEED=N` replays.

mod common;

use backup::host::{self, HostOptions, HostRepo};
use backup::{restore, verify, Format};
use machine::Store;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use storage::{CrashFs, Fs};

/// (machine, disk, file, virtual size, logical sector size).
const DISKS: [(&str, &str, &str, u64, u32); 4] = [
    ("vm1", "disk0", "/vm/a.vhdx", 3 << 20, 512),
    ("vm2", "disk0", "/vm/b0.vhdx", 2 << 20, 512),
    ("vm2", "data", "/vm/b1.vhdx", 3 << 20, 4096),
    ("vm3", "disk0", "/vm/c.vhdx", 2 << 20, 512),
];
const MACHINES: [&str; 3] = ["vm1", "vm2", "vm3"];
const HOME: &str = "/home";
const REPO: &str = "/repo";

struct World {
    fs: CrashFs,
    models: Vec<Vec<u8>>,
    /// The content of every recorded host point.
    saved: BTreeMap<u32, Vec<Vec<u8>>>,
}

impl World {
    fn new() -> World {
        let fs = CrashFs::new();
        for (_, _, path, size, sector) in DISKS {
            common::make_disk(&fs, path, size, sector);
        }
        let w = World {
            fs,
            models: DISKS.iter().map(|d| vec![0u8; d.3 as usize]).collect(),
            saved: BTreeMap::new(),
        };
        for m in MACHINES {
            let disks: Vec<_> = DISKS
                .iter()
                .filter(|d| d.0 == m)
                .map(|d| (Some(d.1.to_string()), PathBuf::from(d.2)))
                .collect();
            w.store().create(m, &disks, None, None).unwrap();
        }
        w
    }

    /// A fresh store, as a restarted process opens it.
    fn store(&self) -> Store {
        Store::new(Arc::new(self.fs.clone()), Path::new(HOME))
    }

    /// Random sector-aligned writes through the machines' tracked disks.
    fn scribble(&mut self, rng: &mut SmallRng, n: usize) {
        let store = self.store();
        for (i, (m, name, _, _, sector)) in DISKS.iter().enumerate() {
            let mach = store.load(m).unwrap();
            let mut d = store.open_disk(&mach, name, true).unwrap();
            common::scribble(&mut d, &mut self.models[i], rng, n, *sector, 32);
            d.close().unwrap();
        }
    }

    fn host(&self) -> HostRepo<'_> {
        HostRepo::new(&self.fs, Path::new(REPO))
    }

    fn records(&self) -> Vec<host::HostPoint> {
        if !host::is_host_repo(&self.fs, Path::new(REPO)).unwrap() {
            return vec![];
        }
        self.host().host_points().unwrap()
    }

    /// Each machine's reference point ids.
    fn references(&self) -> Vec<Vec<u64>> {
        let store = self.store();
        MACHINES
            .iter()
            .map(|m| {
                store
                    .load(m)
                    .unwrap()
                    .reference_points
                    .iter()
                    .map(|r| r.id)
                    .collect()
            })
            .collect()
    }

    /// Restores every disk of host point `hp` and compares with `want`.
    fn check_restore(&self, hp: u32, want: &[Vec<u8>], ctx: &str) {
        for (i, (m, d, ..)) in DISKS.iter().enumerate() {
            let (dir, point) = host::resolve_point(&self.fs, Path::new(REPO), Some(hp), m)
                .unwrap_or_else(|e| panic!("{ctx}: host point {hp} {m}: {e}"));
            let out = PathBuf::from(format!("/restore/{hp}-{m}-{d}.img"));
            restore(
                &self.fs,
                &dir,
                Some(point),
                Some(d),
                &out,
                Format::Raw,
                &mut |_, _| {},
            )
            .unwrap_or_else(|e| panic!("{ctx}: restoring host point {hp} {m}/{d}: {e}"));
            let got = self.fs.file(&out).unwrap().contents();
            self.fs.remove_durable(&out).unwrap();
            if got != want[i] {
                let at = got.iter().zip(&want[i]).position(|(a, b)| a != b);
                panic!("{ctx}: host point {hp} {m}/{d} restores wrong, first difference at {at:?}");
            }
        }
    }

    /// The checks after a cut (see the module doc); `refs_before` are the
    /// reference points before the cut run.
    fn check_after_cut(&mut self, refs_before: &[Vec<u64>], ctx: &str) {
        let records = self.records();
        let named: Vec<(&str, u64)> = records
            .iter()
            .flat_map(|r| {
                r.machines
                    .iter()
                    .map(|e| (e.machine.as_str(), e.checkpoint))
            })
            .collect();
        for ((m, now), was) in MACHINES.iter().zip(self.references()).zip(refs_before) {
            for r in now.iter().filter(|r| !was.contains(r)) {
                assert!(
                    named.contains(&(m, *r)),
                    "{ctx}: {m} has reference point {r}, which no host point names"
                );
            }
        }
        for r in &records {
            for e in &r.machines {
                let mf = self
                    .host()
                    .machine_repo(&e.machine)
                    .manifest(e.point)
                    .unwrap_or_else(|err| {
                        panic!(
                            "{ctx}: host point {} names {} point {}: {err}",
                            r.host_point, e.machine, e.point
                        )
                    });
                assert_eq!(mf.checkpoint, e.checkpoint, "{ctx}");
            }
            match self.saved.get(&r.host_point) {
                Some(want) => self.check_restore(r.host_point, want, ctx),
                None => {
                    assert!(
                        self.saved.keys().all(|&h| h < r.host_point),
                        "{ctx}: new host point {} is not the newest",
                        r.host_point
                    );
                    self.check_restore(r.host_point, &self.models, ctx);
                    self.saved.insert(r.host_point, self.models.clone());
                }
            }
        }
        assert_eq!(
            records.iter().map(|r| r.host_point).collect::<Vec<_>>(),
            self.saved.keys().copied().collect::<Vec<_>>(),
            "{ctx}: a recorded host point vanished"
        );
    }

    /// A host backup that must succeed; returns its summary.
    fn host_backup_ok(&mut self, ctx: &str) -> host::HostSummary {
        let existed = !self.records().is_empty();
        let s = host::backup(
            &self.store(),
            &MACHINES,
            Path::new(REPO),
            &options(),
            &|_, _, _, _| {},
        )
        .unwrap_or_else(|e| panic!("{ctx}: host backup: {e}"));
        if existed {
            for m in &s.machines {
                for d in &m.disks {
                    assert_eq!(
                        d.kind, "incremental",
                        "{ctx}: {}/{} fell back to full: {:?} (recovered {:?})",
                        m.machine, d.name, d.full_reason, s.recovered
                    );
                }
            }
        }
        let store = self.store();
        for m in MACHINES {
            let mach = store.load(m).unwrap();
            assert!(
                mach.checkpoints.is_empty(),
                "{ctx}: {m} has checkpoints left"
            );
            assert_eq!(mach.reference_points.len(), 1, "{ctx}: {m}");
            assert!(mach.disks.iter().all(|d| d.active == d.base), "{ctx}: {m}");
        }
        self.saved.insert(s.host_point, self.models.clone());
        s
    }

    /// Only the points recorded host points name are left.
    fn check_only_recorded_points(&self, ctx: &str) {
        let records = self.records();
        for m in MACHINES {
            let have: Vec<u32> = self
                .host()
                .machine_repo(m)
                .points()
                .unwrap()
                .iter()
                .map(|p| p.point)
                .collect();
            let mut want: Vec<u32> = records
                .iter()
                .filter_map(|r| r.machine(m).map(|e| e.point))
                .collect();
            want.sort();
            assert_eq!(have, want, "{ctx}: points of {m}");
            let dirs = self.fs.list_dir(&self.host().machine_dir(m)).unwrap().len();
            assert_eq!(dirs, want.len(), "{ctx}: point directories of {m}");
        }
        assert!(
            !self
                .fs
                .exists(Path::new("/repo/host-points/pending.json"))
                .unwrap(),
            "{ctx}: the journal is left"
        );
    }
}

/// One export thread: the operations happen in the same order for a seed.
fn options() -> HostOptions {
    HostOptions {
        freeze_timeout: None,
        workers: Some(1),
    }
}

/// Runs a host backup with the power failing after `budget` mutating
/// operations; returns whether it failed and the operations done.
fn cut_run(w: &World, budget: u64) -> (bool, u64) {
    let store = w.store();
    let start = w.fs.ops_done();
    w.fs.set_power_budget(Some(budget));
    let _ = host::backup(
        &store,
        &MACHINES,
        Path::new(REPO),
        &options(),
        &|_, _, _, _| {},
    );
    let out = (w.fs.power_failed(), w.fs.ops_done() - start);
    w.fs.set_power_budget(None);
    out
}

fn base_seed() -> u64 {
    match std::env::var("REFPOINT_CRASH_SEED") {
        Ok(s) => s.parse().expect("REFPOINT_CRASH_SEED is a number"),
        Err(_) => rand::random::<u32>() as u64,
    }
}

/// Runs `cases` cut host backups. `history`: that many host points are
/// taken first and the cases follow each other on one world; `None`: each
/// case cuts the first host backup of a new world.
fn campaign(name: &str, cases: u64, history: Option<usize>) {
    let seed = base_seed();
    println!("{name}: seed {seed} (replay with REFPOINT_CRASH_SEED={seed})");
    let start = Instant::now();
    let mut rng = SmallRng::seed_from_u64(seed);
    let fresh = |rng: &mut SmallRng| {
        let mut w = World::new();
        w.scribble(rng, 20);
        w
    };
    let mut w = fresh(&mut rng);
    for i in 0..history.unwrap_or(0) {
        w.scribble(&mut rng, 4);
        w.host_backup_ok(&format!("history {i}"));
    }
    // An uncut run (of a world of its own for first backups) tells how
    // many operations a host backup takes.
    let mut needed = match history {
        Some(_) => {
            w.scribble(&mut rng, 3);
            let refs = w.references();
            let n = cut_run(&w, u64::MAX).1;
            w.check_after_cut(&refs, "uncut");
            n
        }
        None => cut_run(&fresh(&mut rng), u64::MAX).1,
    };
    let mut cuts = 0;
    for n in 0..cases {
        let ctx = format!("{name} case {n} (seed {seed})");
        if history.is_none() {
            w = fresh(&mut rng);
        }
        let writes = rng.gen_range(0..4);
        w.scribble(&mut rng, writes);
        let refs = w.references();
        let budget = rng.gen_range(0..needed + needed / 8 + 1);
        let (failed, used) = cut_run(&w, budget);
        if failed {
            cuts += 1;
        } else {
            needed = needed.max(used);
        }
        w.fs.crash(&mut rng);
        let ctx = format!("{ctx}, cut after {budget} operations");
        w.check_after_cut(&refs, &ctx);
        // The recovering run is sometimes cut too.
        if rng.gen_bool(0.3) {
            let refs = w.references();
            let b = rng.gen_range(0..needed / 2 + 1);
            if cut_run(&w, b).0 {
                cuts += 1;
            }
            w.fs.crash(&mut rng);
            let ctx = format!("{ctx}, then cut after {b}");
            w.check_after_cut(&refs, &ctx);
        }
        let ctx = format!("{ctx}: recovering host backup");
        let s = w.host_backup_ok(&ctx);
        w.check_restore(s.host_point, &w.models, &ctx);
        w.check_only_recorded_points(&ctx);
        let r = verify(&w.fs, Path::new(REPO), None, &mut |_, _| {})
            .unwrap_or_else(|e| panic!("{ctx}: verify: {e}"));
        assert_eq!(r.first_bad, None, "{ctx}: verify");
        // Keep the repository small: every file is copied at every crash.
        if w.saved.len() > 3 {
            let removed = backup::consolidate(&w.fs, Path::new(REPO), 2, &mut |_, _| {}).unwrap();
            for hp in removed {
                w.saved.remove(&hp);
            }
        }
    }
    eprintln!(
        "{name}: {cases} cases, {cuts} power cuts ({needed} operations uncut) in {:.1}s",
        start.elapsed().as_secs_f64()
    );
    assert!(cuts as u64 >= cases / 2, "too few cases cut the power");
}

#[test]
fn power_cuts_inside_the_first_host_backup() {
    campaign("first", 30, None);
}

#[test]
fn power_cuts_inside_host_backups_with_history() {
    campaign("history", 40, Some(2));
}
