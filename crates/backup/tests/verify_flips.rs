//! `verify` finds a single flipped byte anywhere in the files of a point's
//! chain — in the data, but also in headers, the log, the metadata, the
//! BAT and unused space, which reading the content alone does not notice —
//! and names the file. A repository without flips verifies clean, and so
//! does one whose manifests predate file hashes.

use backup::{backup, verify, Manifest, Repo};
use machine::Store;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use storage::LocalFs;
use vhdx::{create, CreateOptions, DiskType};

fn make_disk(p: &Path, size: u64, sector: u32) {
    let o = CreateOptions {
        virtual_size: size,
        disk_type: DiskType::Dynamic,
        block_size: 2 << 20,
        logical_sector_size: sector,
        physical_sector_size: 4096,
    };
    create(&LocalFs, p, &o).unwrap().close().unwrap();
}

fn scribble(store: &Store, disk: &str, size: u64, rng: &mut SmallRng, n: usize) {
    let m = store.load("vm1").unwrap();
    let mut d = store.open_disk(&m, disk, true).unwrap();
    for _ in 0..n {
        let len = rng.gen_range(1..64u64) * 4096;
        let off = rng.gen_range(0..(size - len) / 4096) * 4096;
        let data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        d.write(off, &data).unwrap();
    }
    d.close().unwrap();
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let t = to.join(e.file_name());
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &t);
        } else {
            std::fs::copy(e.path(), &t).unwrap();
        }
    }
}

fn flip(path: &Path, offset: u64, mask: u8) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let mut b = [0u8; 1];
    f.read_exact_at(&mut b, offset).unwrap();
    b[0] ^= mask;
    f.write_all_at(&b, offset).unwrap();
}

/// A machine with two disks, backed up in full and four times
/// incrementally; returns the repository.
fn repository(tmp: &Path) -> PathBuf {
    let home = tmp.join("home");
    let repo = tmp.join("repo");
    let (d0, d1) = (tmp.join("d0.vhdx"), tmp.join("d1.vhdx"));
    make_disk(&d0, 12 << 20, 512);
    make_disk(&d1, 5 << 20, 4096);
    let store = Store::new(Arc::new(LocalFs), &home);
    store
        .create("vm1", &[(None, d0), (Some("data".into()), d1)], None, None)
        .unwrap();
    let mut rng = SmallRng::seed_from_u64(3);
    for round in 0..5 {
        let n = if round == 0 { 40 } else { 5 };
        scribble(&store, "disk0", 12 << 20, &mut rng, n);
        scribble(&store, "data", 5 << 20, &mut rng, n);
        let s = backup(&store, "vm1", &repo, &mut |_, _, _| {}).unwrap();
        assert_eq!(s.kind, if round == 0 { "full" } else { "incremental" });
    }
    repo
}

/// Every disk file of the repository: (point, path, length).
fn files(repo: &Path) -> Vec<(u32, PathBuf, u64)> {
    let r = Repo::new(&LocalFs, repo);
    let mut out = Vec::new();
    for m in r.points().unwrap() {
        for d in &m.disks {
            let p = r.disk_file(m.point, &d.name).unwrap();
            assert_eq!(d.file_size, std::fs::metadata(&p).unwrap().len());
            assert_eq!(d.file_hashes.len() as u64, d.file_size.div_ceil(1 << 20));
            out.push((m.point, p.clone(), d.file_size));
        }
    }
    out
}

#[test]
fn a_flipped_byte_anywhere_in_a_chain_file_is_found_and_named() {
    let tmp = tempfile::tempdir().unwrap();
    let original = repository(tmp.path());
    // Work on a copy; each flip is undone after its check.
    let repo = tmp.path().join("copy");
    copy_dir(&original, &repo);
    let clean = verify(&LocalFs, &repo, None, &mut |_, _| {}).unwrap();
    assert_eq!(clean.first_bad, None);
    assert_eq!(clean.points_checked, vec![1, 2, 3, 4, 5]);
    let files = files(&repo);
    assert_eq!(files.len(), 10);
    assert_eq!(
        clean.file_bytes_checked,
        files.iter().map(|f| f.2).sum::<u64>(),
        "each file is re-hashed once, though it is in several chains"
    );
    let mut rng = SmallRng::seed_from_u64(11);
    let mut picks: Vec<(usize, u64)> = Vec::new();
    for (i, (_, _, len)) in files.iter().enumerate() {
        // The headers, region tables, log, metadata and BAT of every file,
        // its first and last byte...
        for off in [
            0,
            4096,
            65536,
            196608,
            1 << 20,
            (2 << 20) + 17,
            3 << 20,
            len - 1,
        ] {
            if off < *len {
                picks.push((i, off));
            }
        }
        // ...and anywhere at all.
        for _ in 0..12 {
            picks.push((i, rng.gen_range(0..*len)));
        }
    }
    for (n, (i, off)) in picks.iter().enumerate() {
        let (point, path, _) = &files[*i];
        let mask = 1u8 << rng.gen_range(0..8);
        flip(path, *off, mask);
        let r = verify(&LocalFs, &repo, None, &mut |_, _| {}).unwrap();
        let b = r
            .first_bad
            .unwrap_or_else(|| panic!("flip at {off} in {} not found", path.display()));
        assert_eq!(b.file, path.display().to_string(), "flip at {off}: {b:?}");
        assert_eq!(b.scope, "file", "{b:?}");
        assert_eq!(b.point, *point, "the first point whose chain holds it");
        assert_eq!(b.offset, off / (1 << 20) * (1 << 20), "{b:?}");
        // Verifying only the newest point checks the whole chain under it.
        if n % 4 == 0 {
            let r = verify(&LocalFs, &repo, Some(5), &mut |_, _| {}).unwrap();
            assert_eq!(r.first_bad.unwrap().file, path.display().to_string());
        }
        flip(path, *off, mask);
    }
    // Undone flips leave a clean repository, identical to the original:
    // verify never writes.
    assert_eq!(
        verify(&LocalFs, &repo, None, &mut |_, _| {})
            .unwrap()
            .first_bad,
        None
    );
    for (_, path, _) in &files {
        let rel = path.strip_prefix(&repo).unwrap();
        assert!(std::fs::read(path).unwrap() == std::fs::read(original.join(rel)).unwrap());
    }
    eprintln!("{} flips found and named", picks.len());
}

#[test]
fn truncated_and_missing_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repository(tmp.path());
    let files = files(&repo);
    let (point, path, len) = files.iter().find(|f| f.0 == 3).unwrap().clone();
    let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len - 4096).unwrap();
    let b = verify(&LocalFs, &repo, None, &mut |_, _| {})
        .unwrap()
        .first_bad
        .unwrap();
    assert_eq!((b.point, b.file.as_str()), (point, path.to_str().unwrap()));
    assert!(b.problem.contains("truncated"), "{}", b.problem);
    std::fs::remove_file(&path).unwrap();
    let b = verify(&LocalFs, &repo, Some(4), &mut |_, _| {})
        .unwrap()
        .first_bad
        .unwrap();
    assert_eq!(b.file, path.to_str().unwrap(), "{b:?}");
}

#[test]
fn manifests_without_file_hashes_are_verified_by_content() {
    let tmp = tempfile::tempdir().unwrap();
    let repo = repository(tmp.path());
    // Manifests as written before file hashes existed.
    for p in 1..=5 {
        let path = repo.join(format!("{p:04}/manifest.json"));
        let mut v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        for d in v["disks"].as_array_mut().unwrap() {
            let d = d.as_object_mut().unwrap();
            d.remove("file_size").unwrap();
            d.remove("file_hashes").unwrap();
        }
        std::fs::write(&path, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
        let m: Manifest = serde_json::from_value(v).unwrap();
        assert!(m.disks.iter().all(|d| d.file_hashes.is_empty()));
    }
    let r = verify(&LocalFs, &repo, None, &mut |_, _| {}).unwrap();
    assert_eq!(r.first_bad, None);
    assert_eq!(r.file_bytes_checked, 0);
    assert!(r.bytes_checked > 0);
}
