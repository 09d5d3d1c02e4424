//! Errors inside the tracker's own file operations, with and without a
//! power cut after them: an injected ENOSPC or EIO at every operation of a
//! compaction and of a seal. Afterwards the tracker either goes on with
//! file and memory in agreement, or refuses work until reopened; after the
//! reopen every retained ID covers every mark made after its seal.

use rand::rngs::SmallRng;
use rand::SeedableRng;
use rct::{set_compaction_threshold, RctError, RctId, Tracker};
use std::path::Path;
use std::sync::Arc;
use storage::{CrashFs, Fault};

const SIZE: u64 = 64 << 20;
const G: u64 = 64 << 10;
const DISK: &str = "/vm/d.img";

fn fresh() -> (CrashFs, Tracker) {
    let fs = CrashFs::new();
    let t = Tracker::create(Arc::new(fs.clone()), Path::new(DISK), SIZE, G, "id").unwrap();
    (fs, t)
}

fn mark(t: &mut Tracker, region: u64) -> Result<(), RctError> {
    t.stage(region * G, 1);
    t.commit()
}

fn reopen(fs: &CrashFs, crash: Option<u64>) -> Tracker {
    if let Some(seed) = crash {
        fs.crash(&mut SmallRng::seed_from_u64(seed));
    }
    Tracker::open(Arc::new(fs.clone()), Path::new(DISK), SIZE, "id").expect("tracking reopens")
}

fn reported(t: &Tracker, id: &RctId) -> Vec<u64> {
    let c = t.query_changes(id, None, 0, SIZE, usize::MAX).unwrap();
    c.ranges
        .iter()
        .flat_map(|r| r.offset / G..(r.offset + r.length).div_ceil(G))
        .collect()
}

/// The first mark whose commit compacts the journal, and the file
/// operations before and after that commit.
fn first_compaction() -> (u64, u64, u64) {
    let (fs, mut t) = fresh();
    t.seal().unwrap();
    let rct = Path::new("/vm/d.img.rct");
    for region in 0.. {
        let before = fs.ops_done();
        let file = fs.file(rct).unwrap();
        mark(&mut t, region).unwrap();
        if !Arc::ptr_eq(&file, &fs.file(rct).unwrap()) {
            return (region, before, fs.ops_done());
        }
    }
    unreachable!()
}

/// A compaction fails at each of its file operations; marks made after it
/// (once the tracker accepts them) must survive a reopen, clean or after a
/// crash.
#[test]
fn a_failed_compaction_never_hides_later_marks() {
    set_compaction_threshold(1);
    let (compacting, from, to) = first_compaction();
    assert!(
        to - from >= 5,
        "a compaction takes create, write, flush, rename, sync"
    );
    let mut cases = 0;
    for fault in [Fault::NoSpace, Fault::Io] {
        for k in from..to {
            for crash in [None, Some(k)] {
                let (fs, mut t) = fresh();
                let id = t.seal().unwrap();
                for region in 0..compacting {
                    mark(&mut t, region).unwrap();
                }
                fs.inject_fault(k - fs.ops_done(), fault);
                let mut after = Vec::new();
                for region in compacting..compacting + 40 {
                    match mark(&mut t, region) {
                        Ok(()) => after.push(region),
                        Err(RctError::Failed { .. }) => break,
                        Err(_) => {}
                    }
                }
                assert!(!fs.fault_pending(), "fault {k} never happened");
                drop(t);
                let t = reopen(&fs, crash);
                let got = reported(&t, &id);
                for r in &after {
                    assert!(
                        got.contains(r),
                        "fault {fault:?} at op {k}, crash {crash:?}: region {r} marked after the failure is missing"
                    );
                }
                cases += 1;
            }
        }
    }
    assert!(cases >= 20);
}

/// A seal fails at its k-th file operation, then marks follow. After a
/// reopen every retained ID — the failed seal's included, if its record
/// made it — covers the marks made after its seal.
#[test]
fn a_failed_seal_leaves_no_id_that_misses_later_marks() {
    set_compaction_threshold(1);
    for fault in [Fault::NoSpace, Fault::Io] {
        for k in 0..6 {
            for crash in [None, Some(k + 100)] {
                let (fs, mut t) = fresh();
                let first = t.seal().unwrap();
                mark(&mut t, 1).unwrap();
                fs.inject_fault(k, fault);
                let failed_seal = t.seal();
                let mut after = Vec::new();
                for r in 10..20 {
                    match mark(&mut t, r) {
                        Ok(()) => after.push(r),
                        Err(RctError::Failed { .. }) => break,
                        Err(_) => {} // the injected fault, if the seal left it
                    }
                }
                drop(t);
                let t = reopen(&fs, crash);
                let ids = t.retained_ids();
                assert!(ids.contains(&first), "{ids:?}");
                for id in &ids {
                    let got = reported(&t, id);
                    for r in &after {
                        assert!(
                            got.contains(r),
                            "fault {fault:?} at op {k} (seal: {failed_seal:?}), crash {crash:?}: {id} misses region {r}"
                        );
                    }
                }
                if failed_seal.is_ok() {
                    assert_eq!(ids.len(), 2);
                }
            }
        }
    }
}

/// After an error that cannot be undone the tracker refuses every call
/// with a typed error, and opening it again works.
#[test]
fn a_stopped_tracker_refuses_until_reopened() {
    set_compaction_threshold(1);
    let (fs, mut t) = fresh();
    let id = t.seal().unwrap();
    // Fail the seal's flush and every operation of the rewrite after it.
    for k in 0..8 {
        fs.inject_fault(k, Fault::Io);
    }
    assert!(t.seal().is_err());
    assert!(matches!(mark(&mut t, 3), Err(RctError::Failed { .. })));
    assert!(!t.is_marked(0, 1));
    assert!(matches!(
        t.query_changes(&id, None, 0, SIZE, 10),
        Err(RctError::Failed { .. })
    ));
    assert_eq!(t.failure().map(|e| e.kind()), Some("io"));
    drop(t);
    fs.clear_faults();
    let mut t = reopen(&fs, None);
    mark(&mut t, 3).unwrap();
    assert!(reported(&t, &id).contains(&3));
}

/// A stat error on the tracking file is an error, never "missing".
#[test]
fn opening_reports_a_missing_file_as_missing() {
    let fs = CrashFs::new();
    match Tracker::open(Arc::new(fs), Path::new(DISK), SIZE, "id") {
        Err(RctError::FileMissing { .. }) => {}
        other => panic!("{:?}", other.err()),
    }
}

/// Compactions rename a fresh file over the journal; marks appended to it
/// afterwards must survive a power cut right after, which they do only if
/// the rename was made durable (the directory synced) before the append.
#[test]
fn marks_after_a_compaction_survive_a_power_cut() {
    set_compaction_threshold(1);
    for seed in 0..40 {
        let (fs, mut t) = fresh();
        let id = t.seal().unwrap();
        let rct = Path::new("/vm/d.img.rct");
        let mut region = 0;
        let before = fs.file(rct).unwrap();
        while Arc::ptr_eq(&before, &fs.file(rct).unwrap()) {
            mark(&mut t, region).unwrap();
            region += 1;
        }
        // The compaction happened in the last commit; one more mark.
        mark(&mut t, 900).unwrap();
        drop(t);
        let t = reopen(&fs, Some(seed));
        let got = reported(&t, &id);
        for r in (0..region).chain([900]) {
            assert!(
                got.contains(&r),
                "seed {seed}: region {r} lost with the compaction"
            );
        }
    }
}
