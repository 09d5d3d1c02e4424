//! The backup workflow end to end on real files: a machine with two disks
//! (one with 4096-byte sectors), a full backup, five rounds of writes and
//! incremental backups; every point restores bit-exact.

use backup::{backup, restore, verify, Format, Repo};
use machine::Store;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use storage::LocalFs;
use testkit::tools;
use vhdx::{create, CreateOptions, DiskType};

const SIZE: u64 = 64 << 20;

fn make_disk(p: &Path, sector: u32) {
    let o = CreateOptions {
        virtual_size: SIZE,
        disk_type: DiskType::Dynamic,
        block_size: 4 << 20,
        logical_sector_size: sector,
        physical_sector_size: 4096,
    };
    create(&LocalFs, p, &o).unwrap().close().unwrap();
}

/// Random writes through the machine's tracked disk; returns bytes written.
fn scribble(
    store: &Store,
    machine: &str,
    disk: &str,
    model: &mut [u8],
    rng: &mut SmallRng,
    n: usize,
) -> u64 {
    let m = store.load(machine).unwrap();
    let mut d = store.open_disk(&m, disk, true).unwrap();
    let mut total = 0;
    for _ in 0..n {
        let len = rng.gen_range(1..200_000u64);
        let off = rng.gen_range(0..SIZE - len);
        let data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        d.write(off, &data).unwrap();
        model[off as usize..(off + len) as usize].copy_from_slice(&data);
        total += len;
    }
    d.close().unwrap();
    total
}

#[test]
fn full_then_five_incrementals_restore_bit_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    let repo = tmp.path().join("repo");
    let (d0, d1) = (tmp.path().join("d0.vhdx"), tmp.path().join("d1.vhdx"));
    make_disk(&d0, 512);
    make_disk(&d1, 4096);
    let store = Store::new(Arc::new(LocalFs), &home);
    store
        .create(
            "vm1",
            &[(None, d0.clone()), (Some("data".into()), d1.clone())],
            None,
            None,
        )
        .unwrap();
    let mut rng = SmallRng::seed_from_u64(7);
    let mut models = [vec![0u8; SIZE as usize], vec![0u8; SIZE as usize]];
    let mut saved = Vec::new();
    for round in 0..6 {
        let w0 = scribble(
            &store,
            "vm1",
            "disk0",
            &mut models[0],
            &mut rng,
            if round == 0 { 60 } else { 8 },
        );
        let w1 = scribble(
            &store,
            "vm1",
            "data",
            &mut models[1],
            &mut rng,
            if round == 0 { 60 } else { 8 },
        );
        let s = backup(&store, "vm1", &repo, &mut |_, _, _| {}).unwrap();
        assert_eq!(s.point, round + 1);
        if round == 0 {
            assert_eq!(s.kind, "full");
            assert!(s.disks.iter().all(|d| d.full_reason.is_some()));
        } else {
            assert_eq!(s.kind, "incremental", "{s:?}");
            // Proportional to what changed: at most the written bytes rounded
            // up to the 64 KiB tracking regions, far below the disk size.
            let written = w0 + w1;
            assert!(
                s.bytes_written <= written + 16 * 2 * (64 << 10) + (2 << 20),
                "wrote {} for {written} changed",
                s.bytes_written
            );
            assert!(s.bytes_written < SIZE / 2);
        }
        saved.push(models.clone());
    }
    // The machine is back to one file per disk with one reference point.
    let m = store.load("vm1").unwrap();
    assert!(m.checkpoints.is_empty());
    assert_eq!(m.reference_points.len(), 1);
    assert_eq!(m.disks[0].active, m.disks[0].base);
    // Every point restores bit-exact.
    for (i, models) in saved.iter().enumerate() {
        let point = i as u32 + 1;
        for (di, name) in ["disk0", "data"].iter().enumerate() {
            let out = tmp.path().join(format!("r{point}-{name}.img"));
            restore(
                &LocalFs,
                &repo,
                Some(point),
                Some(name),
                &out,
                Format::Raw,
                &mut |_, _| {},
            )
            .unwrap();
            assert!(
                std::fs::read(&out).unwrap() == models[di],
                "point {point} disk {name} differs"
            );
        }
    }
    let r = verify(&LocalFs, &repo, None, &mut |_, _| {}).unwrap();
    assert_eq!(r.first_bad, None);
    assert_eq!(r.points_checked, (1..=6).collect::<Vec<_>>());
    // qemu-img accepts the full export of the 512-byte disk.
    let full = Repo::new(&LocalFs, &repo).disk_file(1, "disk0").unwrap();
    let raw1 = tmp.path().join("r1-disk0.img");
    tools::run_ok(
        std::process::Command::new("qemu-img")
            .args(["compare", "-f", "vhdx", "-F", "raw"])
            .arg(&full)
            .arg(&raw1),
        Duration::from_secs(120),
    );
}
