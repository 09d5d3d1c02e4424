//! When a disk's change tracking cannot prove what changed (its tracking
//! file deleted or corrupt, the disk written by another tool, tracking
//! restarted), the next backup exports that disk in full and says why,
//! naming the error kind; the other disk stays incremental. Broken tracking
//! is restarted by that backup, so the one after is incremental again;
//! tracking disabled on purpose stays off. Every point restores bit-exact.

use backup::{backup, restore, verify, Format, Summary};
use machine::Store;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use storage::LocalFs;
use testkit::tools;
use vhdx::{create, CreateOptions, DiskType};

const SIZE: u64 = 8 << 20;
const DISKS: [&str; 2] = ["disk0", "data"];

struct Setup {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    store: Store,
    repo: PathBuf,
    files: Vec<PathBuf>,
    models: Vec<Vec<u8>>,
    rng: SmallRng,
    restored: u32,
}

impl Setup {
    fn new(seed: u64) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        let files: Vec<PathBuf> = (0..2).map(|i| dir.join(format!("d{i}.vhdx"))).collect();
        for f in &files {
            let o = CreateOptions {
                virtual_size: SIZE,
                disk_type: DiskType::Dynamic,
                block_size: 1 << 20,
                logical_sector_size: 512,
                physical_sector_size: 4096,
            };
            create(&LocalFs, f, &o).unwrap().close().unwrap();
        }
        let store = Store::new(Arc::new(LocalFs), &dir.join("home"));
        store
            .create(
                "vm1",
                &[
                    (None, files[0].clone()),
                    (Some("data".into()), files[1].clone()),
                ],
                None,
                None,
            )
            .unwrap();
        Setup {
            repo: dir.join("repo"),
            dir,
            _tmp: tmp,
            store,
            files,
            models: vec![vec![0; SIZE as usize]; 2],
            rng: SmallRng::seed_from_u64(seed),
            restored: 0,
        }
    }

    fn scribble(&mut self, n: usize) {
        let m = self.store.load("vm1").unwrap();
        for (i, name) in DISKS.iter().enumerate() {
            let mut d = self.store.open_disk(&m, name, true).unwrap();
            for _ in 0..n {
                let len = self.rng.gen_range(1..128u64) * 512;
                let off = self.rng.gen_range(0..(SIZE - len) / 512) * 512;
                let data: Vec<u8> = (0..len).map(|_| self.rng.gen()).collect();
                d.write(off, &data).unwrap();
                self.models[i][off as usize..(off + len) as usize].copy_from_slice(&data);
            }
            d.close().unwrap();
        }
    }

    /// A backup after some writes; checks that it restores bit-exact.
    fn backup(&mut self) -> Summary {
        self.scribble(6);
        let s = backup(&self.store, "vm1", &self.repo, &mut |_, _, _| {}).unwrap();
        for (i, name) in DISKS.iter().enumerate() {
            self.restored += 1;
            let out = self.dir.join(format!("r{}.img", self.restored));
            restore(
                &LocalFs,
                &self.repo,
                Some(s.point),
                Some(name),
                &out,
                Format::Raw,
                &mut |_, _| {},
            )
            .unwrap();
            assert!(
                std::fs::read(&out).unwrap() == self.models[i],
                "point {} disk {name} restores wrong",
                s.point
            );
            std::fs::remove_file(&out).unwrap();
        }
        let r = verify(&LocalFs, &self.repo, None, &mut |_, _| {}).unwrap();
        assert_eq!(r.first_bad, None);
        s
    }

    fn rct(&self, disk: usize) -> PathBuf {
        rct::tracking_path(&self.files[disk])
    }
}

/// Backs up once (full), twice (incremental), breaks the tracking of
/// disk0, then expects a full of disk0 naming `kind`, and after that
/// incrementals again (or, with `stays_off`, fulls).
fn falls_back(kind: &str, stays_off: bool, break_it: impl FnOnce(&mut Setup)) {
    let mut s = Setup::new(kind.len() as u64);
    assert_eq!(s.backup().kind, "full");
    assert_eq!(s.backup().kind, "incremental");
    break_it(&mut s);
    let b = s.backup();
    assert_eq!(b.kind, "mixed", "{b:?}");
    let d0 = &b.disks[0];
    assert_eq!((d0.name.as_str(), d0.kind.as_str()), ("disk0", "full"));
    let why = d0.full_reason.as_deref().unwrap();
    assert!(why.contains(kind), "reason {why:?} does not name {kind}");
    assert_eq!(b.disks[1].kind, "incremental", "the other disk is fine");
    for _ in 0..2 {
        let b = s.backup();
        if stays_off {
            assert_eq!(b.disks[0].kind, "full");
            let why = b.disks[0].full_reason.as_deref().unwrap();
            assert!(why.contains(kind), "{why}");
        } else {
            assert_eq!(b.kind, "incremental", "tracking is back: {b:?}");
        }
    }
}

#[test]
fn deleted_tracking_file() {
    falls_back("tracking_file_missing", false, |s| {
        std::fs::remove_file(s.rct(0)).unwrap();
    });
}

#[test]
fn corrupt_tracking_file() {
    falls_back("tracking_file_corrupt", false, |s| {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(s.rct(0))
            .unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, 40).unwrap();
        f.write_all_at(&[b[0] ^ 0x10], 40).unwrap();
    });
}

#[test]
fn disk_written_by_another_tool() {
    falls_back("modified_while_untracked", false, |s| {
        // qemu-io changes the DataWriteGuid on its first write, as the
        // VHDX specification asks; the write itself is not tracked.
        let (off, len) = (3 << 20, 256 << 10);
        let cmd = format!("write -P 0xa5 {off} {len}");
        tools::run_ok(
            &mut tools::qemu_io(&["-f", "vhdx"], &[cmd], &s.files[0]),
            Duration::from_secs(120),
        );
        s.models[0][off..off + len].fill(0xa5);
    });
}

#[test]
fn tracking_restarted_by_hand() {
    // A new tracking GUID: the reference point's RCT ID is unknown to it.
    // Tracking is on and trusted, so nothing needs restarting.
    falls_back("unknown_id", false, |s| {
        let mut d = vdisk::Disk::open(Arc::new(LocalFs), &s.files[0], true).unwrap();
        d.enable_tracking(64 << 10).unwrap();
        d.close().unwrap();
    });
}

#[test]
fn tracking_disabled_on_purpose_stays_off() {
    falls_back("tracking_disabled", true, |s| {
        let mut d = vdisk::Disk::open(Arc::new(LocalFs), &s.files[0], true).unwrap();
        d.disable_tracking().unwrap();
        d.close().unwrap();
    });
}

#[test]
fn tracking_restarts_on_the_base_file_during_a_checkpoint() {
    // A standard checkpoint is open (the machine writes to its child) when
    // the tracking file goes missing: the restarted tracking must be the
    // base file's, the one every later open of the disk uses.
    let mut s = Setup::new(9);
    s.backup();
    s.store
        .create_checkpoint(
            "vm1",
            machine::CheckpointKind::Standard,
            machine::Consistency::Crash,
        )
        .unwrap();
    std::fs::remove_file(s.rct(0)).unwrap();
    let b = s.backup();
    assert_eq!(b.disks[0].kind, "full");
    let b = s.backup();
    assert_eq!(b.kind, "incremental", "{b:?}");
    assert!(s.rct(0).exists());
    let m = s.store.load("vm1").unwrap();
    let child = &m.disks[0].active;
    assert_ne!(child, &s.files[0]);
    assert!(
        !rct::tracking_path(child).exists(),
        "tracking written next to the child"
    );
}
