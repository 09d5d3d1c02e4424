//! Interoperability with the other VHDX readers (DESIGN.md invariant 5):
//! every kind of file we write — dynamic, fixed, 4096-byte sectors,
//! differencing children fresh, written and merged, chains — reads back in
//! libvhdi and in dissect.hypervisor (through `testkit`'s
//! `py/read_vhdx.py`) exactly as the model of what the test wrote, and so
//! does it in ours. QEMU, the peer of `interop.rs`, cannot open
//! differencing files at all; these two can.
//!
//! Without the Python readers a test prints why and passes, except under
//! `CI`, where it fails (see `testkit::tools::vhdx_readers_available`).
//!
//! What the readers need beyond MS-VHDX, and which these tests hold us to:
//! libvhdi consults the sector bitmap of every block of a differencing file
//! that is not fully present, so every chunk has its sector bitmap block
//! (a missing one it reads at file offset 0, the file type identifier) and
//! whole blocks zeroed or trimmed there are stored as fully present zeros,
//! not as ZERO or UNMAPPED blocks it would read from the parent.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use storage::LocalFs;
use testkit::pattern;
use testkit::tools::{self, VhdxReader};
use vhdx::bat::{BatEntry, SB_BLOCK_PRESENT};
use vhdx::{
    create, create_child, merge_into_parent, Chain, CreateOptions, DiskType, PayloadBlockState,
    Vhdx,
};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;

macro_rules! require_readers {
    () => {
        if !tools::vhdx_readers_available() {
            return;
        }
    };
}

fn opts(size: u64, disk_type: DiskType, bs: u64, ss: u32) -> CreateOptions {
    CreateOptions {
        virtual_size: size,
        disk_type,
        block_size: bs as u32,
        logical_sector_size: ss,
        physical_sector_size: 4096,
    }
}

/// `top` (a chain: its parent first in `parents`) reads as `model` in ours,
/// libvhdi and dissect.
fn assert_all_read(top: &Path, parents: &[&Path], model: &[u8]) {
    let chain = Chain::open(&LocalFs, top, false).unwrap();
    assert_eq!(chain.layers().len(), parents.len() + 1, "{}", top.display());
    let mut ours = vec![0u8; chain.virtual_size() as usize];
    chain.read(0, &mut ours).unwrap();
    drop(chain);
    testkit::compare::assert_same(&format!("ours reading {}", top.display()), &ours, model);
    for r in VhdxReader::ALL {
        tools::read_vhdx_with(r, top, parents).assert_is(model);
    }
}

/// Random writes (byte-granular and whole-sector), zeros and trims through
/// `chain` and into `model`, with flushes now and then. Lengths reach past
/// a block, so whole blocks are zeroed and trimmed too. With `align` above
/// 1, offsets and lengths are multiples of it instead (up to the end of
/// the disk).
fn random_ops(chain: &mut Chain, model: &mut [u8], rng: &mut SmallRng, n: usize, align: u64) {
    let size = model.len() as u64;
    let bs = chain.top().block_size() as u64;
    let ss = (chain.logical_sector_size() as u64).max(align);
    let fixed = chain.top().disk_type() == DiskType::Fixed;
    for _ in 0..n {
        let op = rng.gen_range(0..10);
        let mut len = match rng.gen_range(0..4) {
            0 => rng.gen_range(1..=2 * bs),
            1 => rng.gen_range(1..600),
            _ => rng.gen_range(1..200_000),
        }
        .min(size);
        let mut off = rng.gen_range(0..=size - len);
        if op == 1 || align > 1 || rng.gen_bool(0.3) {
            off = off / ss * ss;
            len = len.div_ceil(ss) * ss;
            len = len.min(size - off);
        }
        match op {
            0 => {
                chain.zero(off, len).unwrap();
                model[off as usize..(off + len) as usize].fill(0);
            }
            1 => {
                chain.trim(off, len).unwrap();
                // Whole blocks read as zeros (the tail block is whole when
                // the range reaches the end); a fixed disk keeps its data.
                let mut b = off.div_ceil(bs);
                while !fixed && b * bs < off + len {
                    let end = ((b + 1) * bs).min(size);
                    if end <= off + len {
                        model[(b * bs) as usize..end as usize].fill(0);
                    }
                    b += 1;
                }
            }
            _ => {
                let data = pattern::bytes(len as usize, rng.gen());
                chain.write(off, &data).unwrap();
                model[off as usize..(off + len) as usize].copy_from_slice(&data);
            }
        }
        if rng.gen_bool(0.1) {
            chain.flush().unwrap();
        }
    }
}

/// A new base file of `opts`, written whole, then `n` random operations.
fn base(path: &Path, opts: &CreateOptions, seed: u64, n: usize) -> Vec<u8> {
    create(&LocalFs, path, opts).unwrap().close().unwrap();
    let mut chain = Chain::open(&LocalFs, path, true).unwrap();
    // Data everywhere first, so that where a child reads its parent by
    // mistake it reads something other than zeros.
    let mut model = pattern::bytes(opts.virtual_size as usize, seed);
    chain.write(0, &model).unwrap();
    random_ops(
        &mut chain,
        &mut model,
        &mut SmallRng::seed_from_u64(seed),
        n,
        1,
    );
    chain.close().unwrap();
    model
}

/// Dynamic and fixed files, 512- and 4096-byte sectors, sizes that end
/// inside a block, after random writes, zeros and trims.
#[test]
fn dynamic_and_fixed_files() {
    require_readers!();
    let cases = [
        (DiskType::Dynamic, MIB, 512u32, 37 * MIB + 3 * 512),
        (DiskType::Dynamic, 2 * MIB, 4096, 21 * MIB + 4096),
        (DiskType::Fixed, MIB, 512, 12 * MIB + 512),
        (DiskType::Fixed, 4 * MIB, 4096, 10 * MIB),
    ];
    for (i, (t, bs, ss, size)) in cases.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("disk.vhdx");
        let model = base(&p, &opts(size, t, bs, ss), i as u64, 60);
        assert_all_read(&p, &[], &model);
    }
}

/// A child just made reads as its parent: no sector of it is taken for
/// this file's (libvhdi read 81 sectors of the first 140 KiB as zeros when
/// chunks had no sector bitmap block).
#[test]
fn fresh_children_read_as_their_parent() {
    require_readers!();
    // (sector size, parent block size, child block size)
    let cases = [
        (512u32, MIB, None),
        (512, 2 * MIB, Some(MIB as u32)),
        (4096, MIB, Some(8 * MIB as u32)),
        (4096, 32 * MIB, None),
    ];
    for (i, (ss, bs, child_bs)) in cases.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let (p, c) = (dir.path().join("base.vhdx"), dir.path().join("child.avhdx"));
        let size = 40 * MIB + 2 * 4096;
        let mut model = pattern::bytes(size as usize, 77 + i as u64);
        create(&LocalFs, &p, &opts(size, DiskType::Dynamic, bs, ss))
            .unwrap()
            .close()
            .unwrap();
        let mut v = Vhdx::open(&LocalFs, &p, true).unwrap();
        v.write(0, &model).unwrap();
        // A zeroed and a trimmed block in the parent show through too (the
        // second one is the last, short, block when blocks are 32 MiB).
        let last = (2 * bs).min(size);
        v.zero(0, bs).unwrap();
        v.trim(bs, last - bs).unwrap();
        v.close().unwrap();
        model[..bs as usize].fill(0);
        model[bs as usize..last as usize].fill(0);
        create_child(&LocalFs, &c, &p, child_bs)
            .unwrap()
            .close()
            .unwrap();
        assert_all_read(&c, &[&p], &model);
    }
}

/// Children and grandchildren written with partial sectors, partial and
/// whole blocks, zeros and trims, read through the chain; then merged, top
/// into its differencing parent and that into the base.
#[test]
fn written_chains_and_their_merges() {
    require_readers!();
    // (base type, sector size, base block size, child block size); a
    // child's blocks are never larger than its parent's here: see
    // `dissect_known_misreads`.
    let cases = [
        (DiskType::Dynamic, 512u32, MIB, None),
        (DiskType::Fixed, 512, 2 * MIB, Some(MIB as u32)),
        (DiskType::Dynamic, 4096, 4 * MIB, Some(2 * MIB as u32)),
    ];
    for (i, (t, ss, bs, child_bs)) in cases.into_iter().enumerate() {
        let dir = tempfile::tempdir().unwrap();
        let size = 9 * MIB + 3 * 4096;
        let b = dir.path().join("base.vhdx");
        let mut model = base(&b, &opts(size, t, bs, ss), 100 + i as u64, 20);
        let mut rng = SmallRng::seed_from_u64(i as u64);
        let mut files = vec![b];
        for level in 1..=2 {
            let child = dir.path().join(format!("level{level}.avhdx"));
            create_child(&LocalFs, &child, files.last().unwrap(), child_bs)
                .unwrap()
                .close()
                .unwrap();
            let mut chain = Chain::open(&LocalFs, &child, true).unwrap();
            // The second child's runs start on whole bytes of its parent's
            // sector bitmap: see `dissect_known_misreads`.
            let align = if level == 2 { 8 * ss as u64 } else { 1 };
            random_ops(&mut chain, &mut model, &mut rng, 40, align);
            chain.close().unwrap();
            files.push(child);
            let parents: Vec<&Path> = files.iter().rev().skip(1).map(PathBuf::as_path).collect();
            assert_all_read(files.last().unwrap(), &parents, &model);
        }
        while files.len() > 1 {
            let child = files.pop().unwrap();
            merge_into_parent(&LocalFs, &child, true, &mut |_, _| {}).unwrap();
            let parents: Vec<&Path> = files.iter().rev().skip(1).map(PathBuf::as_path).collect();
            assert_all_read(files.last().unwrap(), &parents, &model);
        }
    }
}

/// The content of a disk of `size` bytes after `writes`, in order, over
/// zeros, for a piece at `offset`.
fn fill_from(writes: &[(u64, Vec<u8>)], offset: u64, buf: &mut [u8]) {
    buf.fill(0);
    let end = offset + buf.len() as u64;
    for (w, data) in writes {
        let (s, e) = ((*w).max(offset), (w + data.len() as u64).min(end));
        if s < e {
            buf[(s - offset) as usize..(e - offset) as usize]
                .copy_from_slice(&data[(s - w) as usize..(e - w) as usize]);
        }
    }
}

/// A child of more than one chunk (4 GiB of 512-byte sectors each): the
/// second chunk's sector bitmap block is found and read, around the
/// boundary and at the end of the disk.
#[test]
fn children_of_several_chunks() {
    require_readers!();
    let dir = tempfile::tempdir().unwrap();
    let size = 4 * GIB + 64 * MIB;
    let (p, c) = (dir.path().join("base.vhdx"), dir.path().join("child.avhdx"));
    let w = |off: u64, len: u64, seed: u64| (off, pattern::bytes(len as usize, seed));
    let parent_writes = [
        w(0, 3 * MIB, 1),
        w(4 * GIB - 2 * MIB, 5 * MIB, 2),
        w(size - 7 * MIB, 7 * MIB, 3),
    ];
    let child_writes = [
        w(512, 4096 + 512, 4),
        w(4 * GIB - 1024, 3072, 5),
        w(4 * GIB + MIB + 512, 64 * 1024, 6),
        w(4 * GIB + 32 * MIB, 32 * MIB, 7),
        w(size - 512, 512, 8),
    ];
    let mut v = create(&LocalFs, &p, &opts(size, DiskType::Dynamic, 32 * MIB, 512)).unwrap();
    for (off, data) in &parent_writes {
        v.write(*off, data).unwrap();
    }
    v.close().unwrap();
    let mut v = create_child(&LocalFs, &c, &p, None).unwrap();
    for (off, data) in &child_writes {
        v.write(*off, data).unwrap();
    }
    v.close().unwrap();
    let all: Vec<(u64, Vec<u8>)> = parent_writes.into_iter().chain(child_writes).collect();
    let chain = Chain::open(&LocalFs, &c, false).unwrap();
    let mut ours = vec![0u8; 4 * MIB as usize];
    let mut want = ours.clone();
    for off in (0..size).step_by(4 * MIB as usize) {
        chain.read(off, &mut ours).unwrap();
        fill_from(&all, off, &mut want);
        testkit::compare::assert_same(&format!("ours at {off}"), &ours, &want);
    }
    drop(chain);
    for r in VhdxReader::ALL {
        tools::read_vhdx_with(r, &c, &[&p])
            .assert_matches(size, |off, buf| fill_from(&all, off, buf));
    }
}

/// The state of every sector bitmap entry of the differencing file `path`.
fn sector_bitmap_states(path: &Path) -> (Vec<(u64, u8)>, u64) {
    use std::os::unix::fs::FileExt;
    let v = Vhdx::open(&LocalFs, path, false).unwrap();
    let g = *v.geometry();
    let bat = v
        .region_table()
        .find(vhdx::format::BAT_REGION_GUID)
        .unwrap()
        .file_offset;
    drop(v);
    let f = std::fs::File::open(path).unwrap();
    let states = (0..g.sector_bitmap_blocks)
        .map(|chunk| {
            let at = bat + g.sector_bitmap_index(chunk) as u64 * 8;
            let mut b = [0u8; 8];
            f.read_exact_at(&mut b, at).unwrap();
            (at, BatEntry(u64::from_le_bytes(b)).state())
        })
        .collect();
    (states, g.sector_bitmap_blocks)
}

/// A differencing file made without sector bitmap blocks (by another tool,
/// or by refpoint before it made them) gets them before its first change,
/// and then reads right in the other readers too.
#[test]
fn children_without_sector_bitmaps_gain_them_when_written() {
    use std::os::unix::fs::FileExt;
    require_readers!();
    let dir = tempfile::tempdir().unwrap();
    let size = 64 * MIB;
    let (p, c) = (dir.path().join("base.vhdx"), dir.path().join("child.avhdx"));
    let mut v = create(&LocalFs, &p, &opts(size, DiskType::Dynamic, 32 * MIB, 512)).unwrap();
    v.write(0, &pattern::bytes(8 * MIB as usize, 1)).unwrap();
    v.close().unwrap();
    create_child(&LocalFs, &c, &p, None)
        .unwrap()
        .close()
        .unwrap();
    let (states, chunks) = sector_bitmap_states(&c);
    assert_eq!(chunks, 1);
    assert!(
        states.iter().all(|&(_, s)| s == SB_BLOCK_PRESENT),
        "{states:?}"
    );
    // Undo them, as the file would have been made without (the blocks
    // stay behind as unused space).
    let f = std::fs::OpenOptions::new().write(true).open(&c).unwrap();
    for (at, _) in &states {
        f.write_all_at(&0u64.to_le_bytes(), *at).unwrap();
    }
    drop(f);
    assert!(sector_bitmap_states(&c).0.iter().all(|&(_, s)| s == 0));
    let mut v = Vhdx::open(&LocalFs, &c, true).unwrap();
    let data = pattern::bytes(4096, 2);
    v.write(40 * MIB + 512, &data).unwrap();
    v.close().unwrap();
    assert!(sector_bitmap_states(&c)
        .0
        .iter()
        .all(|&(_, s)| s == SB_BLOCK_PRESENT));
    let mut all = vec![(0, pattern::bytes(8 * MIB as usize, 1))];
    all.push((40 * MIB + 512, data));
    for r in VhdxReader::ALL {
        tools::read_vhdx_with(r, &c, &[&p])
            .assert_matches(size, |off, buf| fill_from(&all, off, buf));
    }
}

/// Two chains dissect.hypervisor 3.21 misreads, both valid (libvhdi and
/// ours read them right); should dissect read one right, so much the
/// better, else it must fail as known:
///
/// * a sector bitmap read that starts inside a byte returns too few
///   sectors (`_iter_partial_runs` keeps the starting bit for every later
///   byte): in a chain of three files, where a run of the top file ends
///   inside a byte of the middle file's bitmap; the read comes back short.
/// * a read that starts inside a payload block takes `min(count, sectors
///   per block)` sectors from it (`VHDX.read_sectors`), past its end: where
///   a child's block is larger than its parent's and a run from the parent
///   crosses one of the parent's blocks, the sectors after the boundary
///   come from whatever follows that block in the parent file.
#[test]
fn dissect_known_misreads() {
    require_readers!();
    let dir = tempfile::tempdir().unwrap();
    let size = 4 * MIB;
    let b = dir.path().join("base.vhdx");
    let (c1, c2) = (dir.path().join("c1.avhdx"), dir.path().join("c2.avhdx"));
    let model = pattern::bytes(size as usize, 9);
    // The base's blocks lie in the file in the order 1, 0, 2, 3.
    let mut v = create(&LocalFs, &b, &opts(size, DiskType::Dynamic, MIB, 512)).unwrap();
    for block in [1usize, 0, 2, 3] {
        let r = block << 20..(block + 1) << 20;
        v.write(r.start as u64, &model[r]).unwrap();
    }
    v.close().unwrap();
    let check = |top: &Path, parents: &[&Path], model: &[u8], dissect_fails: &dyn Fn(&str)| {
        let chain = Chain::open(&LocalFs, top, false).unwrap();
        let mut ours = vec![0u8; size as usize];
        chain.read(0, &mut ours).unwrap();
        testkit::compare::assert_same("ours", &ours, model);
        tools::read_vhdx_with(VhdxReader::Libvhdi, top, parents).assert_is(model);
        match tools::try_read_vhdx_with(VhdxReader::Dissect, top, parents) {
            Ok(r) => {
                let got = std::fs::read(r.path()).unwrap();
                if let Some(i) = testkit::compare::first_difference(&got, model) {
                    let e = format!("first difference at byte {i}");
                    eprintln!("{}: dissect misread it as known: {e}", top.display());
                    return dissect_fails(&e);
                }
            }
            Err(e) => {
                eprintln!("{}: dissect misread it as known: {e}", top.display());
                return dissect_fails(&e);
            }
        }
        eprintln!("{}: dissect read it right", top.display());
    };

    // Short: the middle file holds sectors 3..5, the top file sectors
    // 0..3, so the top's run from its parent starts at sector 3.
    let mut m = model.clone();
    for (child, parent, sectors, seed) in [(&c1, &b, 3..5u64, 10), (&c2, &c1, 0..3, 11)] {
        let mut v = create_child(&LocalFs, child, parent, None).unwrap();
        let data = pattern::bytes(((sectors.end - sectors.start) * 512) as usize, seed);
        v.write(sectors.start * 512, &data).unwrap();
        v.close().unwrap();
        m[(sectors.start * 512) as usize..(sectors.end * 512) as usize].copy_from_slice(&data);
    }
    check(&c2, &[&c1, &b], &m, &|e| {
        assert!(e.contains("short read at 0"), "{e}")
    });

    // Past the block: a child of 2 MiB blocks over the base's 1 MiB ones
    // holds sector 0; its run from the base, sectors 1.., crosses the
    // base's block 0 at 1 MiB, where dissect goes on into block 2.
    let c3 = dir.path().join("c3.avhdx");
    let mut v = create_child(&LocalFs, &c3, &b, Some(2 * MIB as u32)).unwrap();
    let data = pattern::bytes(512, 12);
    v.write(0, &data).unwrap();
    v.close().unwrap();
    let mut m = model.clone();
    m[..512].copy_from_slice(&data);
    check(&c3, &[&b], &m, &|e| {
        assert_eq!(e, format!("first difference at byte {MIB}"))
    });
}

/// Whole blocks of a child zeroed or trimmed read as zeros, whatever they
/// were before (not present, partially or fully present) and whatever the
/// parent holds there.
#[test]
fn zeroed_and_trimmed_blocks_of_children_read_as_zeros() {
    require_readers!();
    for ss in [512u32, 4096] {
        let dir = tempfile::tempdir().unwrap();
        let size = 12 * MIB;
        let (p, c) = (dir.path().join("base.vhdx"), dir.path().join("child.avhdx"));
        let mut model = pattern::bytes(size as usize, 20);
        let mut v = create(&LocalFs, &p, &opts(size, DiskType::Dynamic, MIB, ss)).unwrap();
        v.write(0, &model).unwrap();
        v.close().unwrap();
        let mut v = create_child(&LocalFs, &c, &p, None).unwrap();
        let ss = ss as u64;
        // Blocks 4 and 5 partially present, 6 and 7 fully, before.
        for b in [4, 5] {
            v.write(b * MIB + ss, &pattern::bytes(ss as usize, b))
                .unwrap();
        }
        for b in [6, 7] {
            v.write(b * MIB, &pattern::bytes(MIB as usize, b)).unwrap();
        }
        v.flush().unwrap();
        for (b, trim) in [
            (1, false),
            (2, true),
            (4, false),
            (5, true),
            (6, false),
            (7, true),
        ] {
            if trim {
                v.trim(b * MIB, MIB).unwrap();
            } else {
                v.zero(b * MIB, MIB).unwrap();
            }
        }
        // The last two blocks at once, and a partial block (a sector of
        // block 9) zeroed where the parent shows.
        v.zero(10 * MIB, 2 * MIB).unwrap();
        v.zero(9 * MIB + ss, ss).unwrap();
        v.close().unwrap();
        for b in [1, 2, 4, 5, 6, 7, 10, 11] {
            model[(b * MIB) as usize..((b + 1) * MIB) as usize].fill(0);
        }
        model[(9 * MIB + ss) as usize..(9 * MIB + 2 * ss) as usize].fill(0);
        assert_all_read(&c, &[&p], &model);
        // Merged, the zeroed blocks become ZERO blocks of the (dynamic)
        // parent, not blocks of written zeros.
        merge_into_parent(&LocalFs, &c, true, &mut |_, _| {}).unwrap();
        let v = Vhdx::open(&LocalFs, &p, false).unwrap();
        for b in [1, 2, 4, 5, 6, 7, 10, 11] {
            assert_eq!(v.block_entry(b).0, PayloadBlockState::Zero, "block {b}");
        }
        drop(v);
        assert_all_read(&p, &[], &model);
    }
}
