//! Tracking never changes what the disk holds: the same random sequence of
//! writes, zeroes, trims, reads and flushes on a tracked and an untracked
//! disk reads back identically at every step — whichever ops were queued
//! behind a journal commit and whichever overtook the queue.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::sync::Arc;
use storage::{CrashFs, Fs};
use vdisk::Disk;
use vhdx::{create, CreateOptions, DiskType};

const SIZE: u64 = 8 << 20;

fn disk(fs: &CrashFs, path: &Path, grain: Option<u64>) -> Disk {
    let o = CreateOptions {
        virtual_size: SIZE,
        disk_type: DiskType::Dynamic,
        block_size: 1 << 20,
        logical_sector_size: 512,
        physical_sector_size: 4096,
    };
    create(fs, path, &o).unwrap().close().unwrap();
    let mut d = Disk::open(Arc::new(fs.clone()) as Arc<dyn Fs>, path, true).unwrap();
    if let Some(g) = grain {
        d.enable_tracking(g).unwrap();
    }
    d
}

fn run(seed: u64, grain: u64) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let fs = CrashFs::new();
    let (pt, pu) = (Path::new("/t.vhdx"), Path::new("/u.vhdx"));
    let mut t = disk(&fs, pt, Some(grain));
    let mut u = disk(&fs, pu, None);
    let mut model = vec![0u8; SIZE as usize];
    for step in 0..600 {
        // Mostly small ops clustered in a few MiB, so they often land next
        // to or on top of queued ones.
        let len = match rng.gen_range(0..4) {
            0 => rng.gen_range(1..600),
            1 => rng.gen_range(1..9000),
            2 => 4096,
            _ => rng.gen_range(1..300_000),
        };
        let hot = rng.gen_bool(0.7);
        let off = if hot {
            rng.gen_range(0..(2 << 20) - len)
        } else {
            rng.gen_range(0..SIZE - len)
        };
        let off = if rng.gen_bool(0.5) { off & !511 } else { off };
        match rng.gen_range(0..20) {
            0..=10 => {
                let data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
                t.write(off, &data).unwrap();
                u.write(off, &data).unwrap();
                model[off as usize..(off + len) as usize].copy_from_slice(&data);
            }
            11 => {
                t.zero(off, len).unwrap();
                u.zero(off, len).unwrap();
                model[off as usize..(off + len) as usize].fill(0);
            }
            12 => {
                t.trim(off, len).unwrap();
                u.trim(off, len).unwrap();
                // What a trim leaves is the format's business: both agree.
                let mut b = vec![0u8; len as usize];
                u.read(off, &mut b).unwrap();
                model[off as usize..(off + len) as usize].copy_from_slice(&b);
            }
            13..=17 => {
                let (mut a, mut b) = (vec![0u8; len as usize], vec![0u8; len as usize]);
                t.read(off, &mut a).unwrap();
                u.read(off, &mut b).unwrap();
                assert!(
                    a == model[off as usize..(off + len) as usize],
                    "seed {seed} step {step}: tracked read {off}+{len} differs"
                );
                assert!(b == a, "seed {seed} step {step}: untracked read differs");
            }
            18 => {
                t.flush().unwrap();
                u.flush().unwrap();
            }
            _ => {
                t.seal().unwrap();
            }
        }
    }
    let mut all = vec![0u8; SIZE as usize];
    t.read(0, &mut all).unwrap();
    assert!(all == model, "seed {seed}: final content differs");
    t.close().unwrap();
    u.close().unwrap();
    let mut t = Disk::open(Arc::new(fs.clone()) as Arc<dyn Fs>, pt, false).unwrap();
    t.read(0, &mut all).unwrap();
    assert!(all == model, "seed {seed}: content after reopen differs");
}

#[test]
fn tracked_and_untracked_disks_hold_the_same_data() {
    for seed in 0..40 {
        for grain in [4096, 65536, 1 << 20] {
            run(seed, grain);
        }
    }
}
