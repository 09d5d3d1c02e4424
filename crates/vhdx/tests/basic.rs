//! Basic round trips on real files: create, write, reopen, read.

use rand::{Rng, SeedableRng};
use std::path::Path;
use storage::LocalFs;
use vhdx::{create, create_child, Chain, CreateOptions, DiskType, Vhdx};

fn opts(size: u64, bs: u32, ss: u32, t: DiskType) -> CreateOptions {
    CreateOptions {
        virtual_size: size,
        disk_type: t,
        block_size: bs,
        logical_sector_size: ss,
        physical_sector_size: 4096,
    }
}

fn random_ops(v: &mut Vhdx, model: &mut [u8], seed: u64, n: usize) {
    let mut rng = rand::rngs::SmallRng::seed_from_u64(seed);
    let size = model.len() as u64;
    for _ in 0..n {
        let len = rng.gen_range(1..300_000u64).min(size);
        let off = rng.gen_range(0..=size - len);
        match rng.gen_range(0..10) {
            0 => {
                v.zero(off, len).unwrap();
                model[off as usize..(off + len) as usize].fill(0);
            }
            1 => {
                v.trim(off, len).unwrap();
                // Trim only drops whole blocks; mirror that.
                let bs = v.block_size() as u64;
                let first = off.div_ceil(bs);
                let last = (off + len) / bs;
                for b in first..last {
                    model[(b * bs) as usize..((b + 1) * bs).min(size) as usize].fill(0);
                }
                if (off + len) == size && last * bs < size && off <= last * bs {
                    model[(last * bs) as usize..].fill(0);
                }
            }
            _ => {
                let data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
                v.write(off, &data).unwrap();
                model[off as usize..(off + len) as usize].copy_from_slice(&data);
            }
        }
        if rng.gen_bool(0.1) {
            v.flush().unwrap();
        }
    }
}

fn read_all(v: &Vhdx) -> Vec<u8> {
    let mut buf = vec![0u8; v.virtual_size() as usize];
    v.read(0, &mut buf).unwrap();
    buf
}

#[test]
fn dynamic_and_fixed_round_trip_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    for (i, (bs, ss, t)) in [
        (1 << 20, 512, DiskType::Dynamic),
        (2 << 20, 4096, DiskType::Dynamic),
        (1 << 20, 512, DiskType::Fixed),
    ]
    .into_iter()
    .enumerate()
    {
        let p = dir.path().join(format!("d{i}.vhdx"));
        let size = 9 * (1 << 20) + 4096;
        let mut v = create(&LocalFs, &p, &opts(size, bs, ss, t)).unwrap();
        let mut model = vec![0u8; size as usize];
        random_ops(&mut v, &mut model, i as u64, 60);
        assert!(read_all(&v) == model);
        v.close().unwrap();
        let v = Vhdx::open(&LocalFs, &p, false).unwrap();
        assert_eq!(v.disk_type(), t);
        assert!(read_all(&v) == model, "content differs after reopen");
    }
}

#[test]
fn three_level_chain_with_partial_sectors() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("base.vhdx");
    let size = 6 << 20;
    let mut model = vec![0u8; size as usize];
    let mut v = create(
        &LocalFs,
        &base,
        &opts(size, 1 << 20, 512, DiskType::Dynamic),
    )
    .unwrap();
    random_ops(&mut v, &mut model, 7, 20);
    v.close().unwrap();
    let mut prev = base.clone();
    let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
    for level in 1..=3 {
        let child = dir.path().join(format!("c{level}.avhdx"));
        create_child(&LocalFs, &child, &prev, None)
            .unwrap()
            .close()
            .unwrap();
        let mut chain = Chain::open(&LocalFs, &child, true).unwrap();
        assert_eq!(chain.layers().len(), level + 1);
        for _ in 0..40 {
            let len = rng.gen_range(1..20_000u64);
            let off = rng.gen_range(0..size - len);
            let data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            chain.write(off, &data).unwrap();
            model[off as usize..(off + len) as usize].copy_from_slice(&data);
        }
        let zoff = rng.gen_range(0..size - 5000);
        chain.zero(zoff, 4321).unwrap();
        model[zoff as usize..zoff as usize + 4321].fill(0);
        let mut buf = vec![0u8; size as usize];
        chain.read(0, &mut buf).unwrap();
        assert!(buf == model, "level {level} differs");
        chain.close().unwrap();
        let chain = Chain::open(&LocalFs, &child, false).unwrap();
        chain.read(0, &mut buf).unwrap();
        assert!(buf == model, "level {level} differs after reopen");
        prev = child;
    }
    let _ = Path::new("");
}

#[test]
fn a_second_writer_is_refused_by_the_advisory_lock() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("d.vhdx");
    create(
        &LocalFs,
        &p,
        &opts(8 << 20, 1 << 20, 512, DiskType::Dynamic),
    )
    .unwrap()
    .close()
    .unwrap();
    let w = Vhdx::open(&LocalFs, &p, true).unwrap();
    let e = Vhdx::open(&LocalFs, &p, true)
        .err()
        .expect("second writer refused");
    assert!(matches!(e, vhdx::Error::Locked { .. }), "{e}");
    assert!(e.to_string().contains("open for writing elsewhere"), "{e}");
    // Readers are not refused, and the lock goes with the writer.
    Vhdx::open(&LocalFs, &p, false).unwrap();
    w.close().unwrap();
    Vhdx::open(&LocalFs, &p, true).unwrap().close().unwrap();
}
