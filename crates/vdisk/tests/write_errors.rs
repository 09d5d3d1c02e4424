//! Errors on the write path without a crash: an accepted write is never
//! forgotten, a flush never reports durable what was not written, and a
//! raw disk written by another tool is detected.

use std::path::Path;
use std::sync::Arc;
use storage::{CrashFs, Fault, Fs, OpenMode};
use vdisk::{Disk, RctError, TrackingStatus, VdiskError};
use vhdx::{create, CreateOptions, DiskType};

const SIZE: u64 = 8 << 20;
const BLOCK: u64 = 1 << 20;

fn tracked_vhdx(fs: &CrashFs, path: &Path) {
    let o = CreateOptions {
        virtual_size: SIZE,
        disk_type: DiskType::Dynamic,
        block_size: BLOCK as u32,
        logical_sector_size: 512,
        physical_sector_size: 4096,
    };
    create(fs, path, &o).unwrap().close().unwrap();
    let mut d = Disk::open(Arc::new(fs.clone()), path, true).unwrap();
    d.enable_tracking(64 << 10).unwrap();
    d.close().unwrap();
}

/// The data of write `i`.
fn pattern(i: u64) -> Vec<u8> {
    testkit::pattern::bytes(100_000, i)
}

/// Three queued writes to new blocks; the k-th file operation of the flush
/// that applies them fails. Whatever k, a flush that succeeds afterwards
/// means all three read back, and one that cannot means the disk refuses
/// every flush until it is reopened.
#[test]
fn a_failed_write_in_the_queue_is_never_forgotten() {
    let (mut retried, mut stopped) = (0, 0);
    for fault in [Fault::NoSpace, Fault::Io] {
        for k in 0..24 {
            let fs = CrashFs::new();
            let path = Path::new("/vm/d.vhdx");
            tracked_vhdx(&fs, path);
            let mut d = Disk::open(Arc::new(fs.clone()), path, true).unwrap();
            let at = |i: u64| i * 2 * BLOCK + 4096;
            for i in 0..3 {
                d.write(at(i), &pattern(i)).unwrap();
            }
            fs.inject_fault(k, fault);
            let first = d.flush();
            fs.clear_faults();
            if first.is_ok() {
                continue; // the fault hit nothing the flush needed
            }
            match d.flush() {
                Ok(()) => {
                    retried += 1;
                    for i in 0..3 {
                        let mut b = vec![0u8; 100_000];
                        d.read(at(i), &mut b).unwrap();
                        assert!(
                            b == pattern(i),
                            "{fault:?} at op {k}: write {i} was acknowledged by a later flush but reads wrong"
                        );
                    }
                    d.close().unwrap();
                }
                Err(VdiskError::Failed { no_space, .. }) => {
                    stopped += 1;
                    assert_eq!(no_space, fault == Fault::NoSpace, "{fault:?} at op {k}");
                    assert!(matches!(d.write(0, b"x"), Err(VdiskError::Failed { .. })));
                    assert!(matches!(d.flush(), Err(VdiskError::Failed { .. })));
                    assert!(d.close().is_err());
                    let mut d = Disk::open(Arc::new(fs.clone()), path, true).unwrap();
                    d.write(0, b"after the reopen").unwrap();
                    d.flush().unwrap();
                }
                Err(e) => panic!("{fault:?} at op {k}: the retry failed with {e}"),
            }
        }
    }
    println!("{retried} flushes retried the queue, {stopped} disks stopped");
    assert!(retried > 0 && stopped > 0, "{retried} {stopped}");
}

/// A direct write (its regions already marked) that finds no space joins
/// the queue: the next flush fails until it can be applied.
#[test]
fn a_direct_write_that_found_no_space_fails_the_next_flush() {
    let fs = CrashFs::new();
    let path = Path::new("/vm/d.vhdx");
    tracked_vhdx(&fs, path);
    let mut d = Disk::open(Arc::new(fs.clone()), path, true).unwrap();
    // Mark the region and allocate nothing yet: a write then a trim.
    d.write(3 * BLOCK, &[1u8; 512]).unwrap();
    d.flush().unwrap();
    // Into a new block of the same tracking region set: marked, direct.
    let data = pattern(7);
    d.mark_changed(5 * BLOCK, BLOCK).unwrap();
    fs.inject_fault(0, Fault::NoSpace);
    let e = d.write(5 * BLOCK, &data);
    assert!(e.as_ref().is_err_and(|e| e.is_no_space()), "{e:?}");
    fs.inject_fault(0, Fault::NoSpace);
    assert!(d.flush().is_err(), "a flush after a failed write must fail");
    d.flush().unwrap();
    let mut b = vec![0u8; data.len()];
    d.read(5 * BLOCK, &mut b).unwrap();
    assert!(b == data, "the write is applied once there is space");
}

/// A raw disk has no identity field; its change stamp after refpoint's
/// last clean close stands in, so another tool's write is detected.
#[test]
fn a_raw_disk_written_by_another_tool_is_detected() {
    let fs = CrashFs::new();
    let path = Path::new("/vm/d.img");
    let f = fs.create(path).unwrap();
    f.set_len(SIZE).unwrap();
    f.flush().unwrap();
    drop(f);
    let afs: Arc<dyn Fs> = Arc::new(fs.clone());
    let mut d = Disk::open(afs.clone(), path, true).unwrap();
    d.enable_tracking(64 << 10).unwrap();
    d.write(0, b"ours").unwrap();
    let id = d.seal().unwrap();
    d.close().unwrap();
    // A clean reopen trusts it.
    let d = Disk::open(afs.clone(), path, true).unwrap();
    assert!(matches!(d.tracking_status(), TrackingStatus::On(_)));
    d.close().unwrap();
    // Another writer.
    let other = fs.open(path, OpenMode::ReadWrite).unwrap();
    other.write_at(1 << 20, b"theirs").unwrap();
    other.flush().unwrap();
    let mut d = Disk::open(afs, path, false).unwrap();
    match d.query_changes(&id, None, 0, SIZE, 100) {
        Err(VdiskError::Tracking(RctError::ModifiedWhileUntracked { .. })) => {}
        other => panic!("a foreign write must be detected, got {other:?}"),
    }
}
