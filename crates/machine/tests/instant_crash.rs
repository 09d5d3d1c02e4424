//! Power cuts at random points inside the finish of an instant machine,
//! on the crash-simulating file system, while a writer keeps writing
//! between the finish's steps. After each cut and restart:
//!
//! * the machine file loads and its disk reads back every flushed write
//!   (a write cut short reads old or new per sector, never anything else);
//! * finishing again completes: the disk is one standalone file with that
//!   content, its tracking is on and reports every range written since an
//!   RCT ID sealed before the finish began (no missed change across the
//!   switch);
//! * the point's file it ran on is byte-identical to before.
//!
//! The seed is random and printed; `REFPOINT_SEED=N` repeats a run.

use machine::{FinishOptions, Instant, InstantDisk, Store};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use storage::{CrashFs, Fs};
use vdisk::{RctId, TrackingStatus};
use vhdx::{create, Chain, CreateOptions, DiskType, Vhdx};

const HOME: &str = "/home";
const PARENT: &str = "/repo/0001/disk0.vhdx";
const SIZE: u64 = 6 << 20;
const SECTOR: u64 = 512;
const NAME: &str = "vm1r";

/// A write cut short: the range and its content before and as written.
struct Uncertain {
    offset: u64,
    old: Vec<u8>,
    new: Vec<u8>,
}

struct World {
    fs: CrashFs,
    /// What the disk holds: the point's content and every flushed write.
    model: Vec<u8>,
    uncertain: Vec<Uncertain>,
    /// Ranges written since `since` (that reached the disk).
    written: Vec<(u64, u64)>,
    since: RctId,
    parent_bytes: Vec<u8>,
}

fn store(fs: &CrashFs) -> Store {
    Store::new(Arc::new(fs.clone()), Path::new(HOME))
}

/// Machine NAME on the point's file.
fn create_on_point(st: &Store) {
    let origin = Instant {
        repository: "/repo".into(),
        point: 1,
        source_machine: "vm1".into(),
        created: 0,
        finishing: false,
        throttle: None,
        sealing: None,
    };
    let disk = InstantDisk {
        name: "disk0".into(),
        parent: PARENT.into(),
    };
    st.create_instant(NAME, &[disk], origin).unwrap();
}

fn random_write(rng: &mut SmallRng) -> (u64, Vec<u8>) {
    let len = rng.gen_range(1..=128u64) * SECTOR;
    let off = rng.gen_range(0..(SIZE - len) / SECTOR) * SECTOR;
    let data = if rng.gen_bool(0.2) {
        vec![0; len as usize]
    } else {
        (0..len).map(|_| rng.gen()).collect()
    };
    (off, data)
}

impl World {
    /// A point's file with data, a machine running on it, written to, an
    /// RCT ID sealed (a backup's), and written to again.
    fn new(rng: &mut SmallRng) -> World {
        let fs = CrashFs::new();
        let o = CreateOptions {
            virtual_size: SIZE,
            disk_type: DiskType::Dynamic,
            block_size: 1 << 20,
            logical_sector_size: SECTOR as u32,
            physical_sector_size: 4096,
        };
        let mut v = create(&fs, Path::new(PARENT), &o).unwrap();
        for _ in 0..20 {
            let (off, data) = random_write(rng);
            v.write(off, &data).unwrap();
        }
        v.close().unwrap();
        let chain = Chain::open(&fs, Path::new(PARENT), false).unwrap();
        let mut model = vec![0u8; SIZE as usize];
        chain.read(0, &mut model).unwrap();
        drop(chain);
        let parent_bytes = fs.file(Path::new(PARENT)).unwrap().contents();
        let st = store(&fs);
        create_on_point(&st);
        let slot = st.hold(NAME, "disk0").unwrap();
        let mut g = slot.write();
        let d = g.as_mut().unwrap();
        for _ in 0..10 {
            let (off, data) = random_write(rng);
            d.write(off, &data).unwrap();
            model[off as usize..off as usize + data.len()].copy_from_slice(&data);
        }
        let since = d.seal().unwrap();
        let mut written = Vec::new();
        for _ in 0..10 {
            let (off, data) = random_write(rng);
            d.write(off, &data).unwrap();
            model[off as usize..off as usize + data.len()].copy_from_slice(&data);
            written.push((off, data.len() as u64));
        }
        d.flush().unwrap();
        drop(g);
        assert!(st.release_all().is_empty());
        World {
            fs,
            model,
            uncertain: Vec::new(),
            written,
            since,
            parent_bytes,
        }
    }

    /// Finishes with the power cut after `budget` operations (never, if
    /// `None`); the writer writes between the finish's steps. Returns the
    /// operations the finish took and whether it succeeded.
    fn finish(&mut self, budget: Option<u64>, rng: &mut SmallRng) -> (u64, bool) {
        let st = store(&self.fs);
        let slot = st.hold(NAME, "disk0").unwrap();
        let start = self.fs.ops_done();
        self.fs.set_power_budget(budget);
        let mut writes = Vec::new();
        let r = st.finish_instant(NAME, &FinishOptions::default(), &mut |_, _, _| {
            if !rng.gen_bool(0.3) {
                return;
            }
            // Parked (the switch) means the writer waits; it skips instead.
            let Some(mut g) = slot.try_write() else {
                return;
            };
            let Some(d) = g.as_mut() else { return };
            let (off, data) = random_write(rng);
            let ok = d.write(off, &data).is_ok() && d.flush().is_ok();
            writes.push((off, data, ok));
        });
        let ops = self.fs.ops_done() - start;
        for (off, data, ok) in writes {
            let range = off as usize..off as usize + data.len();
            if ok {
                self.model[range].copy_from_slice(&data);
                self.written.push((off, data.len() as u64));
            } else {
                self.uncertain.push(Uncertain {
                    offset: off,
                    old: self.model[range].to_vec(),
                    new: data,
                });
            }
        }
        if let Err(e) = &r {
            assert!(
                self.fs.power_failed(),
                "the finish failed without a power cut: {e}"
            );
        }
        // Nothing more reaches the files: what is there is what a cut
        // right now leaves.
        self.fs.set_power_budget(Some(0));
        drop(slot);
        drop(st);
        (ops, r.is_ok())
    }

    /// The disk's content after a restart, checked against the model;
    /// writes cut short are resolved sector by sector to what they left.
    fn check_content(&mut self, ctx: &str) {
        let st = store(&self.fs);
        let m = st
            .load(NAME)
            .unwrap_or_else(|e| panic!("{ctx}: the machine file: {e}"));
        let mut d = st.open_disk(&m, "disk0", false).unwrap();
        let mut got = vec![0u8; SIZE as usize];
        d.read(0, &mut got).unwrap();
        for u in self.uncertain.drain(..) {
            let at = u.offset as usize;
            for (i, s) in (0..u.new.len()).step_by(SECTOR as usize).enumerate() {
                let sector = &got[at + s..at + s + SECTOR as usize];
                let (old, new) = (
                    &u.old[s..s + SECTOR as usize],
                    &u.new[s..s + SECTOR as usize],
                );
                assert!(
                    sector == old || sector == new,
                    "{ctx}: sector {i} of a write cut short at {at} is neither old nor new"
                );
            }
            if got[at..at + u.new.len()] != u.old[..] {
                self.written.push((u.offset, u.new.len() as u64));
            }
            self.model[at..at + u.new.len()].copy_from_slice(&got[at..at + u.new.len()]);
        }
        if let Some(at) = got.iter().zip(&self.model).position(|(a, b)| a != b) {
            panic!("{ctx}: the disk differs from what was written at byte {at}");
        }
    }

    /// After the finish completed: one standalone file, tracked, no change
    /// missed, the point's file untouched.
    fn check_finished(&self, ctx: &str) {
        let st = store(&self.fs);
        let m = st.load(NAME).unwrap();
        assert!(m.instant.is_none(), "{ctx}: still an instant machine");
        let base = PathBuf::from(&m.disks[0].base);
        let v = Vhdx::open(&self.fs, &base, false).unwrap();
        assert!(v.parent_locator().is_none(), "{ctx}: still a child");
        drop(v);
        let mut d = st.open_disk(&m, "disk0", false).unwrap();
        match d.tracking_status() {
            TrackingStatus::On(_) => {}
            other => panic!("{ctx}: tracking after the switch: {other:?}"),
        }
        // The finish's own IDs are all released, interrupted ones too.
        let retained = d.retained_ids().unwrap();
        assert!(retained == [self.since], "{ctx}: retained {retained:?}");
        let c = d
            .query_changes(&self.since, None, 0, SIZE, usize::MAX)
            .unwrap_or_else(|e| panic!("{ctx}: changes since the sealed ID: {e}"));
        for &(off, len) in &self.written {
            let covered = |p: u64| {
                c.ranges
                    .iter()
                    .any(|r| r.offset <= p && p < r.offset + r.length)
            };
            for p in (off..off + len).step_by(SECTOR as usize) {
                assert!(
                    covered(p),
                    "{ctx}: the write at {off}+{len} is not reported changed"
                );
            }
        }
        assert!(
            self.fs.file(Path::new(PARENT)).unwrap().contents() == self.parent_bytes,
            "{ctx}: the point's file changed"
        );
        let left: Vec<_> = self
            .fs
            .list_dir(&st.instant_dir(NAME))
            .unwrap()
            .into_iter()
            .filter(|p| p.to_string_lossy().ends_with(".standalone"))
            .collect();
        assert!(left.is_empty(), "{ctx}: left behind {left:?}");
    }
}

#[test]
fn power_cuts_inside_finish_lose_no_write_and_no_change() {
    let seed = testkit::seed();
    let mut rng = SmallRng::seed_from_u64(seed);
    // Uncut: how many operations a finish takes.
    let mut w = World::new(&mut rng);
    let (needed, ok) = w.finish(None, &mut rng);
    assert!(ok);
    w.fs.crash(&mut rng);
    w.check_content("uncut");
    w.check_finished("uncut");
    let mut cuts = 0;
    for case in 0..40 {
        let ctx = format!("seed {seed} case {case}");
        let mut w = World::new(&mut rng);
        let budget = rng.gen_range(0..needed + needed / 4);
        let (_, ok) = w.finish(Some(budget), &mut rng);
        cuts += !ok as u32;
        w.fs.crash(&mut rng);
        w.check_content(&format!("{ctx}, after the cut at {budget}"));
        // Resumed, perhaps cut again first.
        // (A cut inside the last step may have finished it.)
        let instant = store(&w.fs).load(NAME).unwrap().instant.is_some();
        if instant && rng.gen_bool(0.3) {
            let b = rng.gen_range(0..needed);
            w.finish(Some(b), &mut rng);
            w.fs.crash(&mut rng);
            w.check_content(&format!("{ctx}, after a second cut at {b}"));
        }
        // A cut after the last step leaves nothing to resume.
        if store(&w.fs).load(NAME).unwrap().instant.is_some() {
            let (_, ok) = w.finish(None, &mut rng);
            assert!(ok, "{ctx}: the resumed finish failed");
            w.fs.crash(&mut rng);
            w.check_content(&format!("{ctx}, resumed"));
        }
        w.check_finished(&format!("{ctx}, resumed"));
    }
    assert!(cuts >= 20, "only {cuts} of 40 cases cut the power");
}

#[test]
fn discard_removes_the_machine_and_its_files_and_not_the_point() {
    let mut rng = SmallRng::seed_from_u64(testkit::seed());
    let w = World::new(&mut rng);
    let st = store(&w.fs);
    st.hold(NAME, "disk0").unwrap();
    st.discard_instant(NAME).unwrap();
    assert!(!st.exists(NAME).unwrap());
    assert!(!w.fs.exists(&st.instant_dir(NAME)).unwrap());
    assert!(w.fs.file(Path::new(PARENT)).unwrap().contents() == w.parent_bytes);
    // The name is free again, on the same point.
    create_on_point(&st);
    let e = st.discard_instant("nope").unwrap_err();
    assert_eq!(e.kind(), "not_found");
}
