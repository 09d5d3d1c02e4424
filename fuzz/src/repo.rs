//! A real backup repository, the seed of `fuzz_manifest` and `fuzz_cv`:
//! a machine with two tracked disks on `storage::CrashFs`, backed up by
//! `backup::backup` in full and then twice incrementally, with writes in
//! between. The repository's files are then shared into a [`MemFs`] of
//! their own (which knows their holes, as a sparse file system would, so
//! re-hashing a file costs what it holds), which the fuzzers change one
//! file at a time and put back.

use crate::memfs::MemFs;
use backup::cv;
use backup::repo::point_dir;
use backup::{Manifest, Repo};
use machine::Store;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use storage::{CrashFs, Fs};
use vhdx::{create, CreateOptions, DiskType};

const MIB: u64 = 1 << 20;
pub const REPO: &str = "/repo";
/// The machine's disks: name, virtual size (each ends in a partial hash
/// block), logical sector size.
pub const DISKS: [(&str, u64, u32); 2] = [
    ("disk0", 3 * MIB + 512, 512),
    ("data", 2 * MIB + 4096, 4096),
];
/// Backups made (point 1 is full, the others incremental).
pub const POINTS: u32 = 3;

/// The repository, and what the backups wrote.
pub struct Repository {
    /// Holds only the repository's files, under [`REPO`].
    pub fs: MemFs,
    /// The manifests, by point (index 0 is point 1), with their bytes.
    pub manifests: Vec<(Manifest, Vec<u8>)>,
}

impl Repository {
    pub fn dir(&self) -> &Path {
        Path::new(REPO)
    }

    pub fn repo(&self) -> Repo<'_> {
        Repo::new(&self.fs, self.dir())
    }

    pub fn manifest_path(point: u32) -> PathBuf {
        point_dir(Path::new(REPO), point).join(backup::manifest::MANIFEST_NAME)
    }

    pub fn cv_path(point: u32, disk: &str) -> PathBuf {
        point_dir(Path::new(REPO), point).join(cv::file_name(disk))
    }

    /// The bytes of a file of the repository.
    pub fn bytes(&self, path: &Path) -> Vec<u8> {
        self.fs
            .contents(path)
            .unwrap_or_else(|| panic!("{} is in the repository", path.display()))
    }
}

/// Every file under `dir`.
fn files(fs: &CrashFs, dir: &Path, out: &mut Vec<PathBuf>) {
    for p in fs.list_dir(dir).expect("listing") {
        if fs.file(&p).is_some() {
            out.push(p);
        } else {
            files(fs, &p, out);
        }
    }
}

/// Makes the repository (a second or so).
pub fn repository() -> Repository {
    let fs = CrashFs::new();
    let mut paths = Vec::new();
    for (name, size, sector) in DISKS {
        let p = PathBuf::from(format!("/vm/{name}.vhdx"));
        let o = CreateOptions {
            virtual_size: size,
            disk_type: DiskType::Dynamic,
            block_size: MIB as u32,
            logical_sector_size: sector,
            physical_sector_size: 4096,
        };
        create(&fs, &p, &o).expect("disk").close().expect("disk");
        paths.push((Some(name.to_string()), p));
    }
    let store = Store::new(Arc::new(fs.clone()), Path::new("/home"));
    store.create("vm1", &paths, None, None).expect("machine");
    for round in 0..POINTS {
        let m = store.load("vm1").expect("machine");
        for (i, (name, size, sector)) in DISKS.iter().enumerate() {
            let mut d = store.open_disk(&m, name, true).expect("disk");
            // A few writes per round into pieces of the first hash block
            // (the other whole blocks stay unstored, so verifying reads
            // little), and one into the last sector (a partial block).
            let s = *sector as u64;
            for k in 0..3u64 {
                let off = ((round as u64 * 7 + k * 13 + i as u64) * 40_000) % (MIB - 8 * s) / s * s;
                let data: Vec<u8> = (0..4 * s)
                    .map(|j| (j as u8) ^ (round as u8 + k as u8 * 3 + 1))
                    .collect();
                d.write(off, &data).expect("write");
            }
            d.write(size - s, &vec![round as u8 + 0x40; s as usize])
                .expect("write");
            d.close().expect("close");
        }
        backup::backup(&store, "vm1", Path::new(REPO), &mut |_, _, _| {}).expect("backup");
    }

    // The repository alone.
    let only = MemFs::new(u64::MAX);
    let mut all = Vec::new();
    files(&fs, Path::new(REPO), &mut all);
    for p in &all {
        only.insert(p, Arc::new(fs.file(p).expect("listed").contents()));
    }
    let repo = Repo::new(&only, Path::new(REPO));
    let manifests = (1..=POINTS)
        .map(|n| {
            let m = repo.manifest(n).expect("manifest");
            let b = only
                .contents(&Repository::manifest_path(n))
                .expect("manifest");
            (m, b)
        })
        .collect();
    Repository {
        fs: only,
        manifests,
    }
}
