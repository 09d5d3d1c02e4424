//! `refpoint demo run`: a guided run on local files in the state directory
//! (`./refpoint-data`, or `$REFPOINT_HOME`): the VHDX engine, then the
//! backup workflow (machine, tracked writes, full and incremental backups,
//! restore, verify).

use crate::compare::{compare, Comparison};
use crate::convert::{convert, ConvertOptions, Format};
use crate::units::human;
use anyhow::{ensure, Context, Result};
use std::path::Path;
use storage::LocalFs;
use vhdx::{check, create, create_child, merge_into_parent, Chain, CreateOptions, DiskType};

/// Deterministic, incompressible bytes.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Runs the tour in `<state dir>/demo`, printing each step.
pub fn run(dir: &Path) -> Result<()> {
    let dir = dir.join("demo");
    if dir.exists() {
        std::fs::remove_dir_all(&dir).with_context(|| format!("cannot clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let base = dir.join("disk0.vhdx");
    let snap = dir.join("disk0_snap1.avhdx");
    let flat = dir.join("flat.vhdx");
    let raw = dir.join("disk0.img");

    println!(
        "1. create {} (10 GiB dynamic, 32 MiB blocks)",
        base.display()
    );
    let mut v = create(&LocalFs, &base, &CreateOptions::dynamic(10 << 30))?;
    for i in 0..16u64 {
        v.write(i * (600 << 20), &pattern(i, 4 << 20))?;
    }
    v.close()?;
    println!(
        "   wrote 64 MiB in 16 places; file is {}",
        human(std::fs::metadata(&base)?.len())
    );

    println!(
        "2. create the differencing child {} and write through the chain",
        snap.display()
    );
    create_child(&LocalFs, &snap, &base, None)?.close()?;
    let mut chain = Chain::open(&LocalFs, &snap, true)?;
    for i in 0..8u64 {
        chain.write(i * (1200 << 20) + 777, &pattern(100 + i, 100_000))?;
    }
    chain.close()?;
    let chain = Chain::open(&LocalFs, &snap, false)?;
    println!(
        "   chain: {}",
        chain
            .layers()
            .iter()
            .map(|l| l.name().to_string())
            .collect::<Vec<_>>()
            .join(" → ")
    );
    drop(chain);

    println!("3. flatten the chain into {}", flat.display());
    let opts = ConvertOptions {
        format: Format::Vhdx,
        disk_type: DiskType::Dynamic,
        block_size: 32 << 20,
        logical_sector_size: None,
        physical_sector_size: 4096,
    };
    let s = convert(&snap, &flat, &opts, &|_, _| {})?;
    println!("   {} of data copied", human(s.bytes_written));

    println!("4. merge the child into its parent (crash-safe, resumable)");
    let m = merge_into_parent(&LocalFs, &snap, true, &mut |_, _| {})?;
    println!(
        "   {} merged into {}",
        human(m.bytes_merged),
        m.parent.display()
    );
    let same = compare(&base, &flat, &|_, _| {})?;
    ensure!(
        matches!(same, Comparison::Identical { .. }),
        "merged disk differs from the flattened chain: {same:?}"
    );
    println!("   merged parent is identical to the flattened chain");

    println!("5. check the merged disk");
    let r = check(&LocalFs, &base)?;
    ensure!(r.is_valid(), "check found problems: {:?}", r.problems);
    println!("   no errors, {} blocks allocated", r.allocated_blocks);

    println!("6. convert to a sparse raw image {}", raw.display());
    convert(
        &base,
        &raw,
        &ConvertOptions {
            format: Format::Raw,
            ..opts
        },
        &|_, _| {},
    )?;
    let same = compare(&base, &raw, &|_, _| {})?;
    ensure!(
        matches!(same, Comparison::Identical { .. }),
        "raw image differs: {same:?}"
    );
    println!(
        "   identical; try: qemu-img compare {} {}",
        base.display(),
        raw.display()
    );
    backup_tour(&dir)?;
    println!("done. Files are in {}", dir.display());
    Ok(())
}

/// Steps 7–11: a machine, a full and an incremental backup, restore, verify.
fn backup_tour(dir: &Path) -> Result<()> {
    let store = machine::Store::local(&dir.join("home"));
    let os = dir.join("vm-os.vhdx");
    let data = dir.join("vm-data.vhdx");
    create(&LocalFs, &os, &CreateOptions::dynamic(4 << 30))?.close()?;
    let mut o = CreateOptions::dynamic(1 << 30);
    o.logical_sector_size = 4096;
    create(&LocalFs, &data, &o)?.close()?;
    println!("7. machine vm1 with two disks (one with 4096-byte sectors); change tracking on");
    store.create(
        "vm1",
        &[(None, os), (Some("data".into()), data)],
        None,
        None,
    )?;
    let write = |disk: &str, seed: u64, spots: u64, len: usize| -> Result<()> {
        let m = store.load("vm1")?;
        let mut d = store.open_disk(&m, disk, true)?;
        for i in 0..spots {
            d.write(i * (d.size() / spots), &pattern(seed + i, len))?;
        }
        d.close()?;
        Ok(())
    };
    write("disk0", 200, 32, 2 << 20)?;
    write("data", 300, 8, 1 << 20)?;
    let repo = dir.join("backups");
    let s = backup::backup(&store, "vm1", &repo, &mut |_, _, _| {})?;
    println!(
        "8. backup point {} ({}): {} written",
        s.point,
        s.kind,
        human(s.bytes_written)
    );
    write("disk0", 400, 5, 100_000)?;
    let s = backup::backup(&store, "vm1", &repo, &mut |_, _, _| {})?;
    println!(
        "9. after changing 500 KB: backup point {} ({}): {} changed, {} written",
        s.point,
        s.kind,
        human(s.disks.iter().map(|d| d.changed_bytes).sum()),
        human(s.bytes_written)
    );
    let r = backup::verify(&LocalFs, &repo, None, &mut |_, _| {})?;
    ensure!(r.first_bad.is_none(), "verify failed: {:?}", r.first_bad);
    println!(
        "10. verify: points {:?} match their manifests",
        r.points_checked
    );
    let out = dir.join("restored-disk0.vhdx");
    backup::restore(
        &LocalFs,
        &repo,
        Some(2),
        Some("disk0"),
        &out,
        Format::Vhdx,
        &mut |_, _| {},
    )?;
    let m = store.load("vm1")?;
    let live = &m.disk("disk0").expect("disk0").active;
    let same = compare(live, &out, &|_, _| {})?;
    ensure!(
        matches!(same, Comparison::Identical { .. }),
        "restore differs: {same:?}"
    );
    println!(
        "11. restored point 2 of disk0 to {}: identical to the live disk",
        out.display()
    );
    Ok(())
}
