//! Invariant 2, "no silent wrong answer": every situation in which tracking
//! cannot prove which ranges changed fails a query with its own typed
//! [`RctError`] — and none of them stops the disk from opening, reading or
//! writing. Also the query contract itself: paging with `max_ranges`,
//! queries between two IDs, and the tracking state triple.
//!
//! The "modified while not tracked" tests run the real `qemu-io`. Without it
//! they print why and pass, unless the `CI` environment variable is set, in
//! which case they fail (CI installs QEMU).

use rct::record::{FileHeader, Record, HEADER_SIZE, RECORD_HEADER};
use std::collections::BTreeSet;
use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use storage::{Fs, LocalFs};
use tempfile::TempDir;
use testkit::tools;
use vdisk::{
    ChangedRange, Changes, Disk, RctError, RctId, TrackingState, TrackingStatus, VdiskError,
};
use vhdx::{create, CreateOptions, DiskType, Vhdx};

const MIB: u64 = 1 << 20;
const SIZE: u64 = 64 * MIB;
const G: u64 = rct::DEFAULT_GRANULARITY;

// ---------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------

/// A dynamic VHDX on the real file system, in its own directory.
struct Fixture {
    _dir: TempDir,
    path: PathBuf,
    fs: Arc<dyn Fs>,
}

impl Fixture {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk0.vhdx");
        let o = CreateOptions {
            virtual_size: SIZE,
            disk_type: DiskType::Dynamic,
            block_size: MIB as u32,
            logical_sector_size: 512,
            physical_sector_size: 4096,
        };
        create(&LocalFs, &path, &o).unwrap().close().unwrap();
        Fixture {
            _dir: dir,
            path,
            fs: Arc::new(LocalFs),
        }
    }

    fn open(&self) -> Disk {
        Disk::open(self.fs.clone(), &self.path, true).expect("the disk opens")
    }

    /// A disk with tracking enabled at the default granularity.
    fn tracked(&self) -> Disk {
        let mut d = self.open();
        d.enable_tracking(G).unwrap();
        d
    }

    fn rct(&self) -> PathBuf {
        rct::tracking_path(&self.path)
    }
}

/// The tracking error of a result that must be one.
#[track_caller]
fn tracking_err<T: Debug>(r: vdisk::Result<T>) -> RctError {
    match r {
        Err(VdiskError::Tracking(e)) => e,
        other => panic!("expected a tracking error, got {other:?}"),
    }
}

fn query(d: &mut Disk, since: &RctId) -> vdisk::Result<Changes> {
    d.query_changes(since, None, 0, SIZE, usize::MAX)
}

/// The regions (of `G` bytes) a set of ranges touches.
fn regions(ranges: &[ChangedRange]) -> BTreeSet<u64> {
    ranges
        .iter()
        .flat_map(|r| r.offset / G..(r.offset + r.length).div_ceil(G))
        .collect()
}

/// The regions a list of written `(offset, len)` touches.
fn written_regions(writes: &[(u64, u64)]) -> BTreeSet<u64> {
    writes
        .iter()
        .flat_map(|&(o, l)| o / G..(o + l).div_ceil(G))
        .collect()
}

/// Writes `len` bytes of `fill` at `offset`.
fn put(d: &mut Disk, offset: u64, len: u64, fill: u8) {
    d.write(offset, &vec![fill; len as usize]).unwrap();
}

fn get(d: &mut Disk, offset: u64, len: u64) -> Vec<u8> {
    let mut b = vec![0u8; len as usize];
    d.read(offset, &mut b).unwrap();
    b
}

/// The disk works whatever its tracking says: a write reads back, and
/// survives a flush.
fn assert_disk_works(d: &mut Disk, offset: u64) {
    put(d, offset, 8192, 0xc3);
    d.flush().unwrap();
    assert_eq!(get(d, offset, 8192), vec![0xc3; 8192]);
}

fn broken_kind(d: &Disk) -> &'static str {
    match d.tracking_status() {
        TrackingStatus::Broken { kind, .. } => kind,
        other => panic!("expected broken tracking, got {other:?}"),
    }
}

fn state(d: &Disk) -> TrackingState {
    match d.tracking_status() {
        TrackingStatus::On(s) => s,
        other => panic!("expected tracking on, got {other:?}"),
    }
}

/// `(offset, total length)` of each journal record of a tracking file.
fn records(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = HEADER_SIZE;
    while at + RECORD_HEADER <= bytes.len() && &bytes[at..at + 4] == b"RREC" {
        let len = u32::from_le_bytes(bytes[at + 4..at + 8].try_into().unwrap()) as usize;
        let total = (RECORD_HEADER + len).div_ceil(8) * 8;
        out.push((at, total));
        at += total;
    }
    out
}

// ---------------------------------------------------------------------------
// Disabled
// ---------------------------------------------------------------------------

#[test]
fn disabled_tracking_fails_queries_also_after_reopen() {
    let f = Fixture::new();
    let mut d = f.tracked();
    put(&mut d, 0, 4096, 1);
    let id = d.seal().unwrap();
    put(&mut d, MIB, 4096, 2);
    d.disable_tracking().unwrap();

    let e = tracking_err(query(&mut d, &id));
    assert!(matches!(e, RctError::Disabled { .. }), "{e:?}");
    assert_eq!(e.kind(), "tracking_disabled");
    assert_eq!(broken_kind(&d), "tracking_disabled");
    assert!(matches!(tracking_err(d.seal()), RctError::Disabled { .. }));
    assert!(matches!(
        tracking_err(d.release(&id)),
        RctError::Disabled { .. }
    ));
    assert_disk_works(&mut d, 2 * MIB);
    d.close().unwrap();

    // The file remembers "disabled": not "missing", not "corrupt".
    assert!(f.fs.exists(&f.rct()).unwrap());
    let mut d = f.open();
    assert_eq!(broken_kind(&d), "tracking_disabled");
    let e = tracking_err(query(&mut d, &id));
    assert!(matches!(e, RctError::Disabled { .. }), "{e:?}");
    assert_disk_works(&mut d, 3 * MIB);
    d.close().unwrap();

    // Enabling again starts over: the old ID is unknown, new ones work.
    let mut d = f.tracked();
    let e = tracking_err(query(&mut d, &id));
    assert!(matches!(e, RctError::UnknownId { .. }), "{e:?}");
    let id2 = d.seal().unwrap();
    put(&mut d, 5 * MIB, 4096, 3);
    let c = query(&mut d, &id2).unwrap();
    assert_eq!(regions(&c.ranges), written_regions(&[(5 * MIB, 4096)]));
    d.close().unwrap();
}

#[test]
fn disabling_a_never_tracked_disk_reports_disabled() {
    let f = Fixture::new();
    let mut d = f.open();
    assert_eq!(d.tracking_status(), TrackingStatus::Missing);
    d.disable_tracking().unwrap();
    assert_eq!(broken_kind(&d), "tracking_disabled");
    d.close().unwrap();
    let mut d = f.open();
    assert_eq!(broken_kind(&d), "tracking_disabled");
    assert!(matches!(tracking_err(d.seal()), RctError::Disabled { .. }));
    assert_disk_works(&mut d, 0);
    d.close().unwrap();
}

// ---------------------------------------------------------------------------
// Unknown IDs
// ---------------------------------------------------------------------------

#[test]
fn id_of_another_tracking_is_unknown() {
    let (a, b) = (Fixture::new(), Fixture::new());
    let mut da = a.tracked();
    let mut db = b.tracked();
    let id_a = da.seal().unwrap();
    let id_b = db.seal().unwrap();
    // Same generation number, other tracking GUID.
    assert_eq!(id_a.generation, id_b.generation);
    assert_ne!(id_a.tracking, id_b.tracking);
    let e = tracking_err(query(&mut db, &id_a));
    assert!(matches!(e, RctError::UnknownId { .. }), "{e:?}");
    assert_eq!(e.kind(), "unknown_id");
    // As `until`, too.
    let e = tracking_err(db.query_changes(&id_b, Some(&id_a), 0, SIZE, 10));
    assert!(matches!(e, RctError::UnknownId { .. }), "{e:?}");
    // Releasing it is refused the same way and changes nothing.
    let e = tracking_err(db.release(&id_a));
    assert!(matches!(e, RctError::UnknownId { .. }), "{e:?}");
    query(&mut db, &id_b).unwrap();
    da.close().unwrap();
    db.close().unwrap();
}

#[test]
fn never_issued_generation_is_unknown() {
    let f = Fixture::new();
    let mut d = f.tracked();
    put(&mut d, 0, 4096, 1);
    let id = d.seal().unwrap();
    put(&mut d, MIB, 4096, 1);
    // The current (unsealed) generation, one far ahead, and generation 0.
    for generation in [id.generation + 1, id.generation + 1000, 0, u64::MAX] {
        let never = RctId {
            tracking: id.tracking,
            generation,
        };
        let e = tracking_err(query(&mut d, &never));
        assert!(matches!(e, RctError::UnknownId { .. }), "{never}: {e:?}");
        // Parsed from its string, the answer is the same.
        let parsed: RctId = never.to_string().parse().unwrap();
        let e = tracking_err(query(&mut d, &parsed));
        assert!(matches!(e, RctError::UnknownId { .. }), "{never}: {e:?}");
    }
    query(&mut d, &id).unwrap();
    d.close().unwrap();
}

#[test]
fn id_from_before_re_enabling_is_unknown() {
    let f = Fixture::new();
    let mut d = f.tracked();
    put(&mut d, 0, 4096, 1);
    let old = d.seal().unwrap();
    put(&mut d, MIB, 4096, 2);
    d.close().unwrap();

    let mut d = f.open();
    query(&mut d, &old).unwrap();
    d.enable_tracking(G).unwrap();
    let e = tracking_err(query(&mut d, &old));
    assert!(matches!(e, RctError::UnknownId { .. }), "{e:?}");
    // The new tracking issues the same generation number under a new GUID.
    let new = d.seal().unwrap();
    assert_eq!(new.generation, old.generation);
    assert_ne!(new.tracking, old.tracking);
    d.close().unwrap();
    let mut d = f.open();
    let e = tracking_err(query(&mut d, &old));
    assert!(matches!(e, RctError::UnknownId { .. }), "{e:?}");
    assert!(query(&mut d, &new).unwrap().ranges.is_empty());
    d.close().unwrap();
}

// ---------------------------------------------------------------------------
// Released IDs
// ---------------------------------------------------------------------------

#[test]
fn released_id_fails_and_stays_released_after_reopen() {
    let f = Fixture::new();
    let mut d = f.tracked();
    let id1 = d.seal().unwrap();
    put(&mut d, 0, 4096, 1);
    let id2 = d.seal().unwrap();
    put(&mut d, MIB, 4096, 2);
    d.release(&id1).unwrap();

    let e = tracking_err(query(&mut d, &id1));
    assert!(
        matches!(&e, RctError::ReleasedId { id, .. } if *id == id1),
        "{e:?}"
    );
    assert_eq!(e.kind(), "released_id");
    // As `until`, and released twice.
    let e = tracking_err(d.query_changes(&id2, Some(&id1), 0, SIZE, 10));
    assert!(matches!(e, RctError::ReleasedId { .. }), "{e:?}");
    let e = tracking_err(d.release(&id1));
    assert!(matches!(e, RctError::ReleasedId { .. }), "{e:?}");
    // The other ID is untouched.
    let c = query(&mut d, &id2).unwrap();
    assert_eq!(regions(&c.ranges), written_regions(&[(MIB, 4096)]));
    assert_eq!(d.retained_ids().unwrap(), vec![id2]);

    // Across an unclean stop (the release is in the journal) and a clean one.
    d.flush().unwrap();
    d.abandon();
    let mut d = f.open();
    let e = tracking_err(query(&mut d, &id1));
    assert!(matches!(e, RctError::ReleasedId { .. }), "{e:?}");
    d.close().unwrap();
    let mut d = f.open();
    let e = tracking_err(query(&mut d, &id1));
    assert!(matches!(e, RctError::ReleasedId { .. }), "{e:?}");
    let c = query(&mut d, &id2).unwrap();
    assert_eq!(regions(&c.ranges), written_regions(&[(MIB, 4096)]));
    d.close().unwrap();
}

// ---------------------------------------------------------------------------
// Malformed IDs
// ---------------------------------------------------------------------------

#[test]
fn malformed_id_strings_are_rejected_by_kind() {
    let good = RctId {
        tracking: uuid::Uuid::new_v4(),
        generation: 7,
    }
    .to_string();
    let bad = [
        "garbage".to_string(),
        String::new(),
        "rct:".into(),
        "rct:not-a-guid:00000001".into(),
        good.replace("rct:", "xyz:"),
        good[..good.len() - 1].to_string(), // 7 hex digits
        format!("{good}g"),
        good.replace(":0000", ":-000"),
        good.rsplit_once(':').unwrap().0.to_string(),
    ];
    for s in bad {
        match s.parse::<RctId>() {
            Err(RctError::MalformedId(got)) => assert_eq!(got, s),
            other => panic!("{s:?} must be MalformedId, got {other:?}"),
        }
    }
    let e = "garbage".parse::<RctId>().unwrap_err();
    assert_eq!(e.kind(), "malformed_id");
    assert!(e.to_string().contains("garbage"), "{e}");
    assert_eq!(good.parse::<RctId>().unwrap().to_string(), good);
}

// ---------------------------------------------------------------------------
// Missing tracking file
// ---------------------------------------------------------------------------

#[test]
fn missing_tracking_file_fails_queries_but_not_the_disk() {
    let f = Fixture::new();
    let mut d = f.tracked();
    put(&mut d, 0, 4096, 1);
    let id = d.seal().unwrap();
    put(&mut d, MIB, 4096, 2);
    d.close().unwrap();
    std::fs::remove_file(f.rct()).unwrap();

    let mut d = f.open();
    assert_eq!(d.tracking_status(), TrackingStatus::Missing);
    assert!(!d.is_tracked());
    assert_eq!(get(&mut d, 0, 4096), vec![1; 4096]);
    assert_eq!(get(&mut d, MIB, 4096), vec![2; 4096]);
    assert_disk_works(&mut d, 4 * MIB);
    let e = tracking_err(query(&mut d, &id));
    match &e {
        RctError::FileMissing { path } => assert_eq!(Path::new(path), f.rct()),
        other => panic!("expected FileMissing, got {other:?}"),
    }
    assert_eq!(e.kind(), "tracking_file_missing");
    assert!(matches!(
        tracking_err(d.seal()),
        RctError::FileMissing { .. }
    ));
    // Writing without tracking does not bring a file back.
    d.close().unwrap();
    assert!(!f.fs.exists(&f.rct()).unwrap());
    let mut d = f.open();
    assert!(matches!(
        tracking_err(query(&mut d, &id)),
        RctError::FileMissing { .. }
    ));
    assert_eq!(get(&mut d, 4 * MIB, 8192), vec![0xc3; 8192]);
    d.close().unwrap();
}

// ---------------------------------------------------------------------------
// Corrupt tracking file
// ---------------------------------------------------------------------------

fn flip(path: &Path, offset: usize) {
    let mut b = std::fs::read(path).unwrap();
    b[offset] ^= 0xff;
    std::fs::write(path, b).unwrap();
}

#[test]
fn damaged_header_is_corrupt() {
    // Each damaged header field, the checksum itself, and the magic.
    for at in [0usize, 9, 20, 50, 60, 66, 80, HEADER_SIZE - 1] {
        let f = Fixture::new();
        let mut d = f.tracked();
        put(&mut d, 0, 4096, 1);
        let id = d.seal().unwrap();
        d.close().unwrap();
        flip(&f.rct(), at);

        let mut d = f.open();
        assert_eq!(broken_kind(&d), "tracking_file_corrupt", "byte {at}");
        let e = tracking_err(query(&mut d, &id));
        match &e {
            RctError::FileCorrupt { path, offset, .. } => {
                assert_eq!(Path::new(path), f.rct());
                assert_eq!(*offset, 0, "byte {at}");
            }
            other => panic!("byte {at}: expected FileCorrupt, got {other:?}"),
        }
        assert_eq!(e.kind(), "tracking_file_corrupt");
        assert_eq!(get(&mut d, 0, 4096), vec![1; 4096]);
        assert_disk_works(&mut d, MIB);
        // Re-enabling starts over with a sound file.
        d.enable_tracking(G).unwrap();
        let e = tracking_err(query(&mut d, &id));
        assert!(matches!(e, RctError::UnknownId { .. }), "{e:?}");
        let id2 = d.seal().unwrap();
        d.close().unwrap();
        let mut d = f.open();
        query(&mut d, &id2).unwrap();
        d.close().unwrap();
    }
}

#[test]
fn truncated_header_is_corrupt() {
    let f = Fixture::new();
    let mut d = f.tracked();
    let id = d.seal().unwrap();
    d.close().unwrap();
    let b = std::fs::read(f.rct()).unwrap();
    std::fs::write(f.rct(), &b[..100]).unwrap();
    let mut d = f.open();
    let e = tracking_err(query(&mut d, &id));
    assert!(
        matches!(e, RctError::FileCorrupt { offset: 0, .. }),
        "{e:?}"
    );
    assert_disk_works(&mut d, 0);
    d.close().unwrap();
}

/// A session whose journal holds several appended records after the
/// snapshot, ending without a clean close (which would compact it).
/// Returns the two sealed IDs and the writes after the second.
fn journal_session(f: &Fixture) -> (RctId, RctId, Vec<(u64, u64)>) {
    let d = f.tracked();
    d.close().unwrap();
    let mut d = f.open();
    put(&mut d, 0, 4096, 1); // Identity + GenSet
    let id1 = d.seal().unwrap(); // Seal
    put(&mut d, 3 * MIB, 4096, 2); // GenSet
    let id2 = d.seal().unwrap(); // Seal
    let after = vec![(7 * MIB, 4096), (9 * MIB + 100, 70_000)];
    for &(o, l) in &after {
        put(&mut d, o, l, 3);
        d.flush().unwrap(); // GenSet each
    }
    d.abandon();
    (id1, id2, after)
}

#[test]
fn damaged_middle_journal_record_is_corrupt() {
    // Damage each record but the last one, in its header and its payload.
    let probe = Fixture::new();
    journal_session(&probe);
    let n = records(&std::fs::read(probe.rct()).unwrap()).len();
    assert!(n >= 6, "only {n} records");
    for victim in 0..n - 1 {
        for part in [2usize, RECORD_HEADER + 1] {
            let f = Fixture::new();
            let (id1, _, _) = journal_session(&f);
            let bytes = std::fs::read(f.rct()).unwrap();
            let recs = records(&bytes);
            assert_eq!(recs.len(), n);
            let (at, len) = recs[victim];
            if part >= len {
                continue;
            }
            flip(&f.rct(), at + part);

            let mut d = f.open();
            assert_eq!(
                broken_kind(&d),
                "tracking_file_corrupt",
                "record {victim} byte {part}"
            );
            let e = tracking_err(query(&mut d, &id1));
            match e {
                RctError::FileCorrupt { offset, what, .. } => {
                    assert_eq!(offset, at as u64, "record {victim} byte {part}: {what}");
                }
                other => panic!("record {victim}: expected FileCorrupt, got {other:?}"),
            }
            // The disk is intact and usable.
            assert_eq!(get(&mut d, 0, 4096), vec![1; 4096]);
            assert_eq!(get(&mut d, 3 * MIB, 4096), vec![2; 4096]);
            assert_disk_works(&mut d, 20 * MIB);
            d.close().unwrap();
            // Still corrupt after a clean close: a broken file is not
            // silently replaced.
            let mut d = f.open();
            assert!(matches!(
                tracking_err(query(&mut d, &id1)),
                RctError::FileCorrupt { .. }
            ));
            d.close().unwrap();
        }
    }
}

/// A torn last append — a record whose fsync never returned, so no data
/// write depended on it — is ignored: tracking keeps working and every
/// durable mark is still reported.
#[test]
fn torn_last_record_is_not_an_error() {
    for tear in 0..4 {
        let f = Fixture::new();
        let (id1, id2, after) = journal_session(&f);
        let mut bytes = std::fs::read(f.rct()).unwrap();
        let header = FileHeader::parse(&bytes).unwrap();
        let recs = records(&bytes);
        let (last_at, last_len) = *recs.last().unwrap();
        let current = id2.generation + 1;
        let torn: Vec<u8> = match tear {
            // A seal cut short: its payload never arrived.
            0 => Record::Seal {
                generation: current,
            }
            .encode(header.epoch)[..RECORD_HEADER + 3]
                .to_vec(),
            // A full-length seal whose payload sector is stale.
            1 => {
                let mut r = Record::Seal {
                    generation: current,
                }
                .encode(header.epoch);
                r[RECORD_HEADER..].fill(0x5a);
                r
            }
            // A region record torn in the middle of its bitmap.
            2 => {
                let mut r = bytes[last_at..last_at + last_len].to_vec();
                let half = r.len() / 2;
                r[half..].fill(0x5a);
                r
            }
            // A record header alone.
            _ => bytes[last_at..last_at + RECORD_HEADER].to_vec(),
        };
        bytes.extend_from_slice(&torn);
        // Stale bytes after the tear (zeros could complete a record whose
        // missing bytes happen to be zeros: that record did arrive whole).
        bytes.resize(bytes.len() + 509, 0x5a);
        std::fs::write(f.rct(), &bytes).unwrap();

        let mut d = f.open();
        let s = state(&d);
        assert_eq!(
            s.most_recent_id,
            Some(id2),
            "tear {tear}: the torn seal counts"
        );
        // Every durable mark is reported.
        let c = query(&mut d, &id2).unwrap();
        assert!(
            regions(&c.ranges).is_superset(&written_regions(&after)),
            "tear {tear}: {c:?}"
        );
        let c = query(&mut d, &id1).unwrap();
        assert!(regions(&c.ranges).contains(&(3 * MIB / G)));
        // Tracking goes on: appends overwrite the torn tail.
        put(&mut d, 30 * MIB, 4096, 4);
        let id3 = d.seal().unwrap();
        assert_eq!(id3.generation, current, "tear {tear}");
        put(&mut d, 40 * MIB, 4096, 5);
        d.flush().unwrap();
        d.abandon();
        // The journal written over the torn tail replays cleanly.
        let mut d = f.open();
        assert_eq!(state(&d).most_recent_id, Some(id3), "tear {tear}");
        let c = query(&mut d, &id3).unwrap();
        assert_eq!(
            regions(&c.ranges),
            written_regions(&[(40 * MIB, 4096)]),
            "tear {tear}"
        );
        let c = query(&mut d, &id2).unwrap();
        let mut want = written_regions(&after);
        want.extend(written_regions(&[(30 * MIB, 4096), (40 * MIB, 4096)]));
        assert!(regions(&c.ranges).is_superset(&want), "tear {tear}");
        d.close().unwrap();
    }
}

// ---------------------------------------------------------------------------
// Disk modified while not tracked
// ---------------------------------------------------------------------------

/// Runs qemu-io commands on a VHDX file, which must all succeed (qemu-io
/// reports a failed command in its output and still exits with 0).
fn qemu_io(path: &Path, cmd: &str) {
    let out = tools::run_ok(
        &mut tools::qemu_io(&["-f", "vhdx"], &[cmd], path),
        Duration::from_secs(120),
    );
    let text = tools::text(&out);
    assert!(!text.contains("failed"), "qemu-io {cmd:?}: {text}");
}

/// A tracked disk with one ID, closed cleanly.
fn tracked_and_closed(f: &Fixture) -> RctId {
    let mut d = f.tracked();
    put(&mut d, 0, 4096, 1);
    let id = d.seal().unwrap();
    put(&mut d, MIB, 4096, 2);
    d.close().unwrap();
    id
}

/// After a foreign write: the disk opens and works, the foreign data reads
/// back, queries fail with ModifiedWhileUntracked until tracking is
/// re-enabled.
fn assert_modified_while_untracked(f: &Fixture, id: &RctId, foreign: (u64, &[u8])) {
    let mut d = f.open();
    assert_eq!(broken_kind(&d), "modified_while_untracked");
    let e = tracking_err(query(&mut d, id));
    match &e {
        RctError::ModifiedWhileUntracked {
            expected, found, ..
        } => assert_ne!(expected, found),
        other => panic!("expected ModifiedWhileUntracked, got {other:?}"),
    }
    assert_eq!(e.kind(), "modified_while_untracked");
    assert_eq!(get(&mut d, foreign.0, foreign.1.len() as u64), foreign.1);
    assert_eq!(get(&mut d, MIB, 4096), vec![2; 4096]);
    assert_disk_works(&mut d, 8 * MIB);
    d.close().unwrap();
    // Our own clean close does not launder the foreign write.
    let mut d = f.open();
    assert!(matches!(
        tracking_err(query(&mut d, id)),
        RctError::ModifiedWhileUntracked { .. }
    ));
    d.enable_tracking(G).unwrap();
    let id2 = d.seal().unwrap();
    put(&mut d, 10 * MIB, 4096, 9);
    d.close().unwrap();
    let mut d = f.open();
    let c = query(&mut d, &id2).unwrap();
    assert_eq!(regions(&c.ranges), written_regions(&[(10 * MIB, 4096)]));
    d.close().unwrap();
}

#[test]
fn qemu_io_write_is_modified_while_untracked() {
    if !tools::available(&["qemu-io"]) {
        return;
    }
    let f = Fixture::new();
    let id = tracked_and_closed(&f);
    qemu_io(&f.path, "write -P 0x5a 0 4k");
    assert_modified_while_untracked(&f, &id, (0, &[0x5a; 4096]));
}

#[test]
fn qemu_io_read_keeps_tracking_valid() {
    if !tools::available(&["qemu-io"]) {
        return;
    }
    // QEMU opens the file read-write and rewrites its headers (a new
    // FileWriteGuid) but changes no data: the tracking stays valid.
    let f = Fixture::new();
    let id = tracked_and_closed(&f);
    qemu_io(&f.path, "read -P 0x01 0 4k");
    let mut d = f.open();
    let c = query(&mut d, &id).unwrap();
    assert_eq!(regions(&c.ranges), written_regions(&[(MIB, 4096)]));
    d.close().unwrap();
}

#[test]
fn direct_vhdx_write_is_modified_while_untracked() {
    let f = Fixture::new();
    let id = tracked_and_closed(&f);
    // Our own format crate, bypassing vdisk and so the tracking.
    let mut v = Vhdx::open(&LocalFs, &f.path, true).unwrap();
    v.write(5 * MIB, &[0x77; 512]).unwrap();
    v.close().unwrap();
    assert_modified_while_untracked(&f, &id, (5 * MIB, &[0x77; 512]));
}

#[test]
fn direct_vhdx_open_without_writes_keeps_tracking_valid() {
    let f = Fixture::new();
    let id = tracked_and_closed(&f);
    let v = Vhdx::open(&LocalFs, &f.path, true).unwrap();
    v.close().unwrap();
    let mut d = f.open();
    let c = query(&mut d, &id).unwrap();
    assert_eq!(regions(&c.ranges), written_regions(&[(MIB, 4096)]));
    d.close().unwrap();
}

// ---------------------------------------------------------------------------
// Out of range
// ---------------------------------------------------------------------------

#[test]
fn out_of_range_query_is_rejected() {
    let f = Fixture::new();
    let mut d = f.tracked();
    put(&mut d, SIZE - 4096, 4096, 1);
    let id = d.seal().unwrap();
    put(&mut d, SIZE - 4096, 4096, 2);
    for (offset, length) in [
        (0, SIZE + 1),
        (SIZE, 1),
        (SIZE - 1, 2),
        (SIZE + G, 0),
        (u64::MAX, 1),
        (1, u64::MAX),
    ] {
        let e = tracking_err(d.query_changes(&id, None, offset, length, 10));
        match e {
            RctError::OutOfRange {
                offset: o,
                len,
                size,
            } => {
                assert_eq!((o, len, size), (offset, length, SIZE))
            }
            other => panic!("{offset}+{length}: expected OutOfRange, got {other:?}"),
        }
    }
    // The last byte, and an empty range at the very end, are in range.
    let c = d.query_changes(&id, None, SIZE - 1, 1, 10).unwrap();
    assert_eq!(
        c.ranges,
        vec![ChangedRange {
            offset: SIZE - 1,
            length: 1
        }]
    );
    let c = d.query_changes(&id, None, SIZE, 0, 10).unwrap();
    assert!(c.ranges.is_empty());
    // An out-of-range I/O is the disk's error, not a tracking one.
    assert!(matches!(
        d.write(SIZE - 1, &[0; 2]),
        Err(VdiskError::OutOfRange { .. })
    ));
    d.close().unwrap();
}

// ---------------------------------------------------------------------------
// The query contract
// ---------------------------------------------------------------------------

/// Merges touching ranges.
fn merged(mut ranges: Vec<ChangedRange>) -> Vec<ChangedRange> {
    ranges.sort_by_key(|r| r.offset);
    let mut out: Vec<ChangedRange> = Vec::new();
    for r in ranges {
        match out.last_mut() {
            Some(l) if l.offset + l.length >= r.offset => {
                l.length = l.length.max(r.offset + r.length - l.offset)
            }
            _ => out.push(r),
        }
    }
    out
}

/// Pages through `offset..offset+length` `max` ranges at a time.
fn paged(d: &mut Disk, id: &RctId, offset: u64, length: u64, max: usize) -> Vec<ChangedRange> {
    let (mut at, end) = (offset, offset + length);
    let mut all = Vec::new();
    let mut pages = 0;
    while at < end {
        let c = d.query_changes(id, None, at, end - at, max).unwrap();
        assert!(c.ranges.len() <= max, "page of {} > {max}", c.ranges.len());
        assert!(c.processed_length <= end - at);
        for r in &c.ranges {
            assert!(r.length > 0 && r.offset >= at && r.offset + r.length <= end);
            // Everything reported lies inside what the page processed.
            assert!(
                r.offset + r.length <= at + c.processed_length,
                "{r:?} {c:?}"
            );
        }
        assert!(
            c.processed_length > 0 || !c.ranges.is_empty(),
            "no progress at {at}"
        );
        if c.processed_length == end - at {
            all.extend(c.ranges);
            break;
        }
        assert_eq!(c.ranges.len(), max, "a short page must be the last");
        all.extend(c.ranges);
        at += c.processed_length;
        pages += 1;
        assert!(pages < 100_000, "paging does not terminate");
    }
    all
}

#[test]
fn paging_returns_the_same_union_as_one_query() {
    use rand::{Rng, SeedableRng};
    let f = Fixture::new();
    let mut d = f.tracked();
    let id = d.seal().unwrap();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
    for _ in 0..300 {
        let len = rng.gen_range(1..200_000);
        let off = rng.gen_range(0..SIZE - len);
        d.write(off, &vec![0xee; len as usize]).unwrap();
    }
    // Some of it is still queued: paging sees the same as one query.
    let windows = [
        (0, SIZE),
        (12345, SIZE - 12345 - 999),
        (G / 2, 3 * G),
        (5 * MIB + 17, 20 * MIB),
    ];
    for (offset, length) in windows {
        let one = d
            .query_changes(&id, None, offset, length, usize::MAX)
            .unwrap();
        assert_eq!(one.processed_length, length);
        let one = merged(one.ranges);
        for max in [1, 2, 3, 7, 64] {
            let pages = paged(&mut d, &id, offset, length, max);
            assert_eq!(merged(pages), one, "window {offset}+{length}, max {max}");
        }
    }
    d.close().unwrap();
}

#[test]
fn changes_between_two_ids_cover_exactly_what_was_written_between_them() {
    let f = Fixture::new();
    let mut d = f.tracked();
    // Never sequential, so no look-ahead marks: the answers are exact at
    // the granularity.
    let w1 = [(0, 4096), (10 * MIB + 5, 70_000), (30 * MIB, 1)];
    let w2 = [(20 * MIB, 200_000), (10 * MIB, 4096), (50 * MIB - 3, 6)];
    let w3 = [(40 * MIB, 4096), (0, 1)];
    let id0 = d.seal().unwrap();
    for &(o, l) in &w1 {
        put(&mut d, o, l, 1);
    }
    let id1 = d.seal().unwrap();
    for &(o, l) in &w2 {
        put(&mut d, o, l, 2);
    }
    let id2 = d.seal().unwrap();
    for &(o, l) in &w3 {
        put(&mut d, o, l, 3);
    }
    let r1 = written_regions(&w1);
    let r2 = written_regions(&w2);
    let r3 = written_regions(&w3);
    let union = |sets: &[&BTreeSet<u64>]| -> BTreeSet<u64> {
        sets.iter().flat_map(|s| s.iter().copied()).collect()
    };
    let check = |d: &mut Disk| {
        let q = |d: &mut Disk, a: &RctId, b: Option<&RctId>| {
            regions(&d.query_changes(a, b, 0, SIZE, usize::MAX).unwrap().ranges)
        };
        assert_eq!(q(d, &id0, Some(&id1)), r1);
        assert_eq!(q(d, &id1, Some(&id2)), r2);
        assert_eq!(q(d, &id0, Some(&id2)), union(&[&r1, &r2]));
        assert_eq!(q(d, &id0, None), union(&[&r1, &r2, &r3]));
        assert_eq!(q(d, &id2, None), r3);
        assert!(q(d, &id1, Some(&id1)).is_empty());
        let e = tracking_err(d.query_changes(&id2, Some(&id1), 0, SIZE, 10));
        assert!(matches!(e, RctError::InvalidParameter(_)), "{e:?}");
    };
    check(&mut d);
    d.flush().unwrap();
    d.abandon();
    let mut d = f.open();
    check(&mut d);
    d.close().unwrap();
    let mut d = f.open();
    check(&mut d);
    d.close().unwrap();
}

#[test]
fn tracking_status_transitions() {
    let f = Fixture::new();
    let mut d = f.open();
    assert_eq!(d.tracking_status(), TrackingStatus::Missing);
    let st = |enabled, most_recent_id, newer_changes| {
        TrackingStatus::On(TrackingState {
            enabled,
            most_recent_id,
            newer_changes,
        })
    };

    d.enable_tracking(G).unwrap();
    assert_eq!(d.tracking_status(), st(true, None, false));
    // A read or an empty write changes nothing.
    get(&mut d, 0, 4096);
    d.write(0, &[]).unwrap();
    assert_eq!(d.tracking_status(), st(true, None, false));
    put(&mut d, 0, 4096, 1); // still queued: counts already
    assert_eq!(d.tracking_status(), st(true, None, true));
    d.flush().unwrap();
    assert_eq!(d.tracking_status(), st(true, None, true));

    let id1 = d.seal().unwrap();
    assert_eq!(d.tracking_status(), st(true, Some(id1), false));
    let id2 = d.seal().unwrap();
    assert_eq!(id2.generation, id1.generation + 1);
    assert_eq!(d.tracking_status(), st(true, Some(id2), false));
    d.zero(MIB, 4096).unwrap();
    assert_eq!(d.tracking_status(), st(true, Some(id2), true));
    d.close().unwrap();

    // Durable across a clean close and an unclean stop.
    let mut d = f.open();
    assert_eq!(d.tracking_status(), st(true, Some(id2), true));
    let id3 = d.seal().unwrap();
    assert_eq!(d.tracking_status(), st(true, Some(id3), false));
    d.trim(2 * MIB, MIB).unwrap();
    d.flush().unwrap();
    d.abandon();
    let mut d = f.open();
    assert_eq!(d.tracking_status(), st(true, Some(id3), true));

    // Re-enabling starts over.
    d.enable_tracking(G).unwrap();
    assert_eq!(d.tracking_status(), st(true, None, false));
    let id4 = d.seal().unwrap();
    assert_eq!(d.tracking_status(), st(true, Some(id4), false));
    d.disable_tracking().unwrap();
    assert_eq!(broken_kind(&d), "tracking_disabled");
    d.close().unwrap();
    let d = f.open();
    assert_eq!(broken_kind(&d), "tracking_disabled");
    d.close().unwrap();
}
