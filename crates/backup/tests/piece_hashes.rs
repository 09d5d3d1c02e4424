//! Incrementals rehash a changed block from the 64 KiB pieces that changed
//! (the previous point's chaining values, `<disk>.cv`), and read the whole
//! block whenever those cannot be trusted: missing, damaged, or of blocks
//! the previous point never rehashed. Every point still verifies and
//! restores bit-exact.

use backup::{backup, restore, verify, Format};
use machine::Store;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use storage::LocalFs;
use vhdx::{create, CreateOptions, DiskType};

const MIB: u64 = 1 << 20;
const PIECE: u64 = 64 << 10;
/// Eight whole hash blocks and a partial one.
const SIZE: u64 = 8 * MIB + 4096;

struct T {
    _tmp: tempfile::TempDir,
    store: Store,
    repo: PathBuf,
    model: Vec<u8>,
    rng: SmallRng,
}

impl T {
    fn new() -> T {
        let tmp = tempfile::tempdir().unwrap();
        let disk = tmp.path().join("d.vhdx");
        let o = CreateOptions {
            virtual_size: SIZE,
            disk_type: DiskType::Dynamic,
            block_size: MIB as u32,
            logical_sector_size: 512,
            physical_sector_size: 4096,
        };
        create(&LocalFs, &disk, &o).unwrap().close().unwrap();
        let store = Store::new(Arc::new(LocalFs), &tmp.path().join("home"));
        store.create("vm", &[(None, disk)], None, None).unwrap();
        T {
            repo: tmp.path().join("repo"),
            _tmp: tmp,
            store,
            model: vec![0; SIZE as usize],
            rng: SmallRng::seed_from_u64(11),
        }
    }

    fn write(&mut self, off: u64, len: u64) {
        let data: Vec<u8> = (0..len).map(|_| self.rng.gen()).collect();
        let m = self.store.load("vm").unwrap();
        let mut d = self.store.open_disk(&m, "disk0", true).unwrap();
        d.write(off, &data).unwrap();
        d.close().unwrap();
        self.model[off as usize..(off + len) as usize].copy_from_slice(&data);
    }

    /// Backs up; returns (point, bytes read).
    fn backup(&self) -> (u32, u64) {
        let s = backup(&self.store, "vm", &self.repo, &mut |_, _, _| {}).unwrap();
        (s.point, s.disks[0].bytes_read)
    }

    fn cv_file(&self, point: u32) -> PathBuf {
        self.repo.join(format!("{point:04}")).join("disk0.cv")
    }

    fn check(&self, point: u32) {
        let r = verify(&LocalFs, &self.repo, Some(point), &mut |_, _| {}).unwrap();
        assert_eq!(r.first_bad, None, "point {point}");
        let out = self._tmp.path().join(format!("r{point}.img"));
        restore(
            &LocalFs,
            &self.repo,
            Some(point),
            None,
            &out,
            Format::Raw,
            &mut |_, _| {},
        )
        .unwrap();
        assert!(std::fs::read(&out).unwrap() == self.model, "point {point}");
        std::fs::remove_file(out).unwrap();
    }
}

fn flip(path: &Path, at: usize) {
    let mut b = std::fs::read(path).unwrap();
    b[at] ^= 0x55;
    std::fs::write(path, b).unwrap();
}

#[test]
fn incrementals_read_only_changed_pieces_when_they_can() {
    let mut t = T::new();
    t.write(0, SIZE);
    let (p, read) = t.backup();
    assert_eq!((p, read), (1, SIZE));
    assert!(t.cv_file(1).exists());
    t.check(1);

    // Aligned pieces, one piece hit by a small unaligned write, the
    // partial last block: only those pieces (the last block whole) are read.
    t.write(3 * MIB + 2 * PIECE, PIECE);
    t.write(3 * MIB + 9 * PIECE, 2 * PIECE);
    t.write(5 * MIB + 1000, 100);
    t.write(8 * MIB, 512);
    let (p, read) = t.backup();
    assert_eq!(read, 4 * PIECE + 4096, "point {p}");
    t.check(p);

    // No chaining values: the touched block is read whole, and the file
    // written for this point knows that block only.
    std::fs::remove_file(t.cv_file(p)).unwrap();
    t.write(6 * MIB, PIECE);
    let (p, read) = t.backup();
    assert_eq!(read, MIB);
    t.check(p);
    t.write(6 * MIB + 4 * PIECE, PIECE);
    t.write(7 * MIB, PIECE);
    let (p, read) = t.backup();
    assert_eq!(read, PIECE + MIB, "block 6 known again, block 7 not");
    t.check(p);

    // A damaged value of block 6 does not hash to its manifest hash: the
    // block is read whole and its hash stays right.
    flip(&t.cv_file(p), 24 + (6 * 16 + 3) * 32 + 5);
    t.write(6 * MIB + 15 * PIECE, PIECE);
    let (p, read) = t.backup();
    assert_eq!(read, MIB);
    t.check(p);
    // A damaged header: the file is ignored.
    flip(&t.cv_file(p), 2);
    t.write(6 * MIB, PIECE);
    let (p, read) = t.backup();
    assert_eq!(read, MIB);
    t.check(p);

    let r = verify(&LocalFs, &t.repo, None, &mut |_, _| {}).unwrap();
    assert_eq!(r.first_bad, None);
}

/// The holes of a sparse file hash as the zeros they read as, without
/// being read.
#[test]
fn sparse_files_hash_like_their_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = backup::Repo::new(&LocalFs, tmp.path());
    let mut rng = SmallRng::seed_from_u64(5);
    for (i, (size, writes)) in [
        (0, vec![]),
        (5 * MIB + 100, vec![(MIB + 7, 3000u64), (5 * MIB, 100)]),
        (4 * MIB, vec![(2 * MIB - 10, 20)]),
        (3 * MIB + 512, vec![]),
        (2 * MIB, vec![(0, 2 * MIB)]),
        (
            3 * MIB,
            vec![
                (5 * PIECE, PIECE),
                (7 * PIECE + 100, 200_000),
                (2 * MIB + 15 * PIECE, PIECE),
            ],
        ),
    ]
    .into_iter()
    .enumerate()
    {
        let p = tmp.path().join(format!("f{i}"));
        let f = std::fs::File::create(&p).unwrap();
        f.set_len(size).unwrap();
        for (o, l) in writes {
            let data: Vec<u8> = (0..l).map(|_| rng.gen()).collect();
            std::os::unix::fs::FileExt::write_all_at(&f, &data, o).unwrap();
        }
        drop(f);
        let bytes = std::fs::read(&p).unwrap();
        let want: Vec<String> = bytes
            .chunks(MIB as usize)
            .map(backup::export::hash)
            .collect();
        assert_eq!(repo.hash_file(&p).unwrap(), (size, want), "file {i}");
    }
}
