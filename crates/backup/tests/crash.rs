//! Power cuts at random points inside a backup, a checkpoint delete, a
//! checkpoint convert and a consolidation, on the crash-simulating file
//! system. After each cut (unflushed writes dropped, kept or torn):
//!
//! * every point whose manifest exists restores bit-exact (the points that
//!   completed before the cut against the content saved then, a point the
//!   interrupted backup completed against the content at its start);
//! * the next backup succeeds, cleaning up what the cut left, is incremental
//!   (tracking survived) and restores bit-exact; the whole repository
//!   verifies;
//! * the incremental after it is correct too.
//!
//! Sometimes the recovering backup is itself cut first.

mod common;

use backup::{backup, consolidate, restore, verify, Format, Repo};
use machine::{CheckpointKind, Consistency, Store};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;
use storage::{CrashFs, Fs};

/// The machine's disks: name, file, virtual size, logical sector size.
const DISKS: [(&str, &str, u64, u32); 2] = [
    ("disk0", "/vm/d0.vhdx", 4 << 20, 512),
    ("data", "/vm/d1.vhdx", 3 << 20, 4096),
];
const HOME: &str = "/home";
const REPO: &str = "/repo";
const VM: &str = "vm1";

/// One simulated host: its file system, the disks' content as written,
/// and the content of every complete point.
struct World {
    /// The crash-simulating file system; its power budget counts every
    /// mutating operation, directory changes and syncs included.
    fs: CrashFs,
    /// `fs.ops_done()` when the power budget was last set.
    armed_at: std::cell::Cell<u64>,
    models: Vec<Vec<u8>>,
    saved: BTreeMap<u32, Vec<Vec<u8>>>,
}

impl World {
    fn new() -> Self {
        let fs = CrashFs::new();
        for (_, path, size, sector) in DISKS {
            common::make_disk(&fs, path, size, sector);
        }
        let w = World {
            fs,
            armed_at: Default::default(),
            models: DISKS.iter().map(|d| vec![0u8; d.2 as usize]).collect(),
            saved: BTreeMap::new(),
        };
        let disks: Vec<_> = DISKS
            .iter()
            .map(|d| (Some(d.0.to_string()), PathBuf::from(d.1)))
            .collect();
        w.store().create(VM, &disks, None, None).unwrap();
        w
    }

    fn pfs(&self) -> CrashFs {
        self.fs.clone()
    }

    /// The power cut: the process dies, unflushed writes are dropped, kept
    /// or torn.
    fn crash(&self, rng: &mut SmallRng) {
        self.fs.crash(rng);
    }

    /// A fresh store, as a restarted process opens it.
    fn store(&self) -> Store {
        Store::new(Arc::new(self.pfs()), Path::new(HOME))
    }

    /// A few random writes (sector-aligned, as a guest issues them) through
    /// the machine's tracked disks, closed cleanly.
    fn scribble(&mut self, rng: &mut SmallRng, n: usize) {
        let store = self.store();
        let m = store.load(VM).unwrap();
        for (i, (name, _, _, sector)) in DISKS.iter().enumerate() {
            let mut d = store.open_disk(&m, name, true).unwrap();
            common::scribble(&mut d, &mut self.models[i], rng, n, *sector, 64);
            d.close().unwrap();
        }
    }

    fn points(&self) -> Vec<u32> {
        Repo::new(&self.pfs(), Path::new(REPO))
            .points()
            .unwrap()
            .iter()
            .map(|m| m.point)
            .collect()
    }

    /// Restores every disk of `point` and compares with `want`.
    fn check_restore(&self, point: u32, want: &[Vec<u8>], ctx: &str) {
        let fs = self.pfs();
        for (i, (name, ..)) in DISKS.iter().enumerate() {
            let out = PathBuf::from(format!("/restore/{point}-{name}.img"));
            restore(
                &fs,
                Path::new(REPO),
                Some(point),
                Some(name),
                &out,
                Format::Raw,
                &mut |_, _| {},
            )
            .unwrap_or_else(|e| panic!("{ctx}: restoring point {point} disk {name}: {e}"));
            let got = self.fs.file(&out).unwrap().contents();
            fs.remove_durable(&out).unwrap();
            if got != want[i] {
                let at = got.iter().zip(&want[i]).position(|(a, b)| a != b);
                panic!(
                    "{ctx}: point {point} disk {name} restores wrong, first difference at {at:?}"
                );
            }
        }
    }

    /// Every point's manifest hashes (which `verify` checks the chains
    /// against) are those of the content saved for it: with a clean
    /// `verify`, every point restores bit-exact, at a fraction of the cost.
    fn check_manifests(&self, ctx: &str) {
        let repo = Repo::new(&self.fs, Path::new(REPO));
        for (p, want) in &self.saved {
            let m = repo.manifest(*p).unwrap();
            for (i, (name, ..)) in DISKS.iter().enumerate() {
                let d = m.disks.iter().find(|d| d.name == *name).unwrap();
                let hashes: Vec<String> =
                    want[i].chunks(1 << 20).map(backup::export::hash).collect();
                assert!(d.hashes == hashes, "{ctx}: point {p} disk {name}: manifest hashes differ from the content backed up");
            }
        }
    }

    fn check_verify(&self, ctx: &str) {
        let r = verify(&self.pfs(), Path::new(REPO), None, &mut |_, _| {})
            .unwrap_or_else(|e| panic!("{ctx}: verify: {e}"));
        assert_eq!(r.first_bad, None, "{ctx}: verify");
    }

    /// A complete, uninterrupted backup; returns its point.
    fn backup_ok(&mut self, want_incremental: bool, ctx: &str) -> u32 {
        let store = self.store();
        let s = backup(&store, VM, Path::new(REPO), &mut |_, _, _| {})
            .unwrap_or_else(|e| panic!("{ctx}: backup: {e}"));
        if want_incremental {
            for d in &s.disks {
                assert_eq!(
                    d.kind, "incremental",
                    "{ctx}: {} fell back to full: {:?} (recovered {:?})",
                    d.name, d.full_reason, s.recovered
                );
            }
        }
        let m = store.load(VM).unwrap();
        assert!(m.checkpoints.is_empty(), "{ctx}: checkpoints left");
        for d in &m.disks {
            assert_eq!(d.active, d.base, "{ctx}: {} not merged back", d.name);
        }
        self.saved.insert(s.point, self.models.clone());
        s.point
    }

    /// After a power cut: each point with a manifest is either one saved
    /// before (same content), or one the interrupted backup completed (the
    /// content at its start); points gone are only those a consolidation
    /// removed (`consolidating`: one was cut short and may be finished),
    /// older than a point it made a full.
    fn check_points_after_cut(&mut self, consolidating: bool, op: Op, ctx: &str) {
        let now = self.forget_removed(consolidating, ctx);
        for p in now {
            match self.saved.get(&p) {
                Some(want) => self.check_restore(p, want, ctx),
                None => {
                    assert_eq!(op, Op::Backup, "{ctx}: point {p} appeared");
                    assert!(
                        self.saved.keys().all(|&q| q < p),
                        "{ctx}: new point {p} is not the newest"
                    );
                    self.check_restore(p, &self.models, ctx);
                    self.saved.insert(p, self.models.clone());
                }
            }
        }
    }

    /// Forgets the saved points a consolidation removed; returns the
    /// points there are.
    fn forget_removed(&mut self, consolidating: bool, ctx: &str) -> Vec<u32> {
        let now = self.points();
        let gone: Vec<u32> = self
            .saved
            .keys()
            .copied()
            .filter(|p| !now.contains(p))
            .collect();
        if !gone.is_empty() {
            assert!(consolidating, "{ctx}: points {gone:?} vanished");
            let repo = Repo::new(&self.fs, Path::new(REPO));
            let full = now
                .iter()
                .copied()
                .filter(|&p| {
                    let m = repo.manifest(p).unwrap();
                    m.disks.iter().all(|d| d.parent_point.is_none())
                })
                .max()
                .unwrap_or(0);
            assert!(
                gone.iter().all(|&g| g < full),
                "{ctx}: consolidation removed {gone:?}, kept {now:?}"
            );
            for g in gone {
                self.saved.remove(&g);
            }
        }
        now
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Backup,
    DeleteCheckpoint,
    ConvertCheckpoint,
    Consolidate,
}

/// Runs `op` on `w` with the power failing after `budget` mutating
/// operations (never if `None`); returns whether the power failed and the
/// operations done.
fn run_op(w: &mut World, op: Op, budget: Option<u64>, rng: &mut SmallRng) -> (bool, u64) {
    let store = w.store();
    let repo = Path::new(REPO);
    let arm = |w: &World| {
        w.armed_at.set(w.fs.ops_done());
        w.fs.set_power_budget(budget);
    };
    match op {
        Op::Backup => {
            arm(w);
            let r = backup(&store, VM, repo, &mut |_, _, _| {});
            if let (Ok(s), false) = (r, w.fs.power_failed()) {
                w.saved.insert(s.point, w.models.clone());
            }
        }
        Op::DeleteCheckpoint | Op::ConvertCheckpoint => {
            // A recovery checkpoint with writes after it (they go to its
            // children); merging back keeps them.
            let cp = store
                .create_checkpoint(VM, CheckpointKind::Recovery, Consistency::Crash)
                .unwrap();
            w.scribble(rng, 3);
            arm(w);
            if op == Op::DeleteCheckpoint {
                let _ = store.delete_checkpoint(VM, cp.id);
            } else {
                let _ = store.convert_checkpoint(VM, cp.id);
            }
        }
        Op::Consolidate => {
            let n = w.points().len();
            let keep = rng.gen_range(1..n.max(2));
            arm(w);
            if let Ok(removed) = consolidate(&w.pfs(), repo, keep, &mut |_, _| {}) {
                if !w.fs.power_failed() {
                    for r in removed {
                        w.saved.remove(&r);
                    }
                }
            }
        }
    }
    let out = (w.fs.power_failed(), w.fs.ops_done() - w.armed_at.get());
    w.fs.set_power_budget(None);
    out
}

/// One case: writes, `op` cut after a random number of operations (up to a
/// little more than `needed`), a crash, then the checks of the module docs.
/// Returns the power cuts made.
fn case(w: &mut World, op: Op, needed: &mut u64, rng: &mut SmallRng, n: u64) -> u32 {
    let ctx = format!("{op:?} case {n}");
    let had_points = !w.saved.is_empty();
    let writes = rng.gen_range(0..6);
    w.scribble(rng, writes);
    let budget = rng.gen_range(0..*needed + *needed / 8 + 1);
    let mut cuts = 0;
    let (failed, used) = run_op(w, op, Some(budget), rng);
    if failed {
        cuts += 1;
    } else {
        *needed = (*needed).max(used);
    }
    w.crash(rng);
    let ctx = format!("{ctx} cut after {budget} operations");
    let consolidating = op == Op::Consolidate;
    w.check_points_after_cut(consolidating, op, &ctx);
    // What comes next (the recovering backup, or a consolidation run again)
    // is sometimes cut too.
    if rng.gen_bool(if consolidating { 0.5 } else { 0.25 }) {
        let (again, b) = if consolidating && rng.gen_bool(0.5) {
            (Op::Consolidate, rng.gen_range(0..*needed + 1))
        } else {
            (Op::Backup, rng.gen_range(0..200))
        };
        if run_op(w, again, Some(b), rng).0 {
            cuts += 1;
        }
        w.crash(rng);
        let ctx = format!("{ctx}, then {again:?} cut after {b}");
        w.check_points_after_cut(consolidating, again, &ctx);
    }
    let had_points = had_points || !w.saved.is_empty();
    let ctx = format!("{ctx}: recovering backup");
    let p = w.backup_ok(had_points, &ctx);
    w.forget_removed(consolidating, &ctx);
    w.check_restore(p, &w.models, &ctx);
    w.scribble(rng, 3);
    let ctx = format!("{ctx}, next backup");
    let p = w.backup_ok(true, &ctx);
    w.check_restore(p, &w.models, &ctx);
    w.check_verify(&ctx);
    w.check_manifests(&ctx);
    // Keep the repository small: every file is copied at every crash.
    if w.saved.len() > 4 {
        let removed = consolidate(&w.pfs(), Path::new(REPO), 2, &mut |_, _| {}).unwrap();
        for r in removed {
            w.saved.remove(&r);
        }
    }
    cuts
}

/// Runs `cases` cases of `op` on one machine, one after the other, starting
/// with `points` backups done.
fn campaign(op: Op, cases: u64, points: usize, seed: u64) {
    let start = Instant::now();
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut w = World::new();
    for i in 0..points {
        w.scribble(&mut rng, if i == 0 { 40 } else { 6 });
        w.backup_ok(i > 0, "building the history");
    }
    // The first run is not cut: it tells how many operations it takes.
    let mut needed = run_op(&mut w, op, None, &mut rng).1;
    if op == Op::Consolidate {
        let now = w.points();
        w.saved.retain(|p, _| now.contains(p));
    }
    let mut cuts = 0;
    for n in 0..cases {
        cuts += case(&mut w, op, &mut needed, &mut rng, n);
    }
    eprintln!(
        "{op:?}: {cases} cases, {cuts} power cuts ({needed} operations uncut) in {:.1}s",
        start.elapsed().as_secs_f64()
    );
    assert!(cuts as u64 >= cases / 2, "too few cases cut the power");
}

#[test]
fn power_cuts_inside_backup_from_the_first() {
    campaign(Op::Backup, 50, 0, 1);
}

#[test]
fn power_cuts_inside_backup_with_history() {
    campaign(Op::Backup, 50, 3, 5);
}

#[test]
fn power_cuts_inside_checkpoint_delete() {
    campaign(Op::DeleteCheckpoint, 50, 1, 2);
}

#[test]
fn power_cuts_inside_checkpoint_convert() {
    campaign(Op::ConvertCheckpoint, 50, 1, 3);
}

#[test]
fn power_cuts_inside_consolidate() {
    campaign(Op::Consolidate, 70, 4, 4);
}
