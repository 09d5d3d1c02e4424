//! What the crash campaigns share: disks on the simulated file system and
//! the writes a guest issues.

// Each test binary uses its own subset of these helpers.
#![allow(dead_code)]

use rand::rngs::SmallRng;
use rand::Rng;
use std::path::Path;
use storage::CrashFs;
use vhdx::{create, CreateOptions, DiskType};

/// A dynamic VHDX of `size` bytes with 1 MiB blocks at `path`.
pub fn make_disk(fs: &CrashFs, path: &str, size: u64, sector: u32) {
    let o = CreateOptions {
        virtual_size: size,
        disk_type: DiskType::Dynamic,
        block_size: 1 << 20,
        logical_sector_size: sector,
        physical_sector_size: 4096,
    };
    create(fs, Path::new(path), &o).unwrap().close().unwrap();
}

/// `n` random sector-aligned writes of up to `max_sectors` sectors (a fifth
/// of them zeros) through `d`, and into `model`.
pub fn scribble(
    d: &mut vdisk::Disk,
    model: &mut [u8],
    rng: &mut SmallRng,
    n: usize,
    sector: u32,
    max_sectors: u64,
) {
    let size = model.len() as u64;
    let sector = sector as u64;
    for _ in 0..n {
        let len = rng.gen_range(1..=max_sectors) * sector;
        let off = rng.gen_range(0..(size - len) / sector) * sector;
        let data: Vec<u8> = if rng.gen_bool(0.2) {
            vec![0; len as usize]
        } else {
            (0..len).map(|_| rng.gen()).collect()
        };
        d.write(off, &data).unwrap();
        model[off as usize..(off + len) as usize].copy_from_slice(&data);
    }
}
