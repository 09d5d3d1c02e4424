//! Randomized crash-safety tests over the crash-simulating file system
//! (`storage::CrashFs`).
//!
//! The power is cut between operations ([`CrashFs::crash`]) or inside one,
//! with a budget of mutating file operations
//! ([`CrashFs::set_power_budget`]) that runs out in the middle of a write,
//! a flush, a close, a log replay, a create, a repair or a merge. After
//! each cut:
//!
//! * a read-only open succeeds, changes no byte of any file and performs no
//!   mutating operation (the power budget is zero while it runs);
//! * what it reads matches the model (`common::Model`): everything flushed
//!   reads back exactly, later writes read old or new;
//! * `vhdx::check` finds no problem;
//! * a writable open succeeds (even after a second cut during its own log
//!   replay) and reads the same as the read-only open.
//!
//! The tests: `random_crashes_*` (dynamic, fixed and differencing disks,
//! 512- and 4096-byte sectors, and a 64 GiB disk whose flushes span several
//! log entries; also transient I/O errors after which the handle carries
//! on), `dirty_log_*` (a commit cut after its log entry is durable: the
//! read-only open must replay in memory), `merge_*`, `create_*`, `repair_*`
//! and `full_medium_*` (a medium that runs out of space).

mod common;

use common::*;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::time::Instant;
use storage::{CrashFs, CrashOptions, Fs};
use vhdx::{create, create_child, merge_into_parent, Chain, DiskType, Vhdx};

const MIB: u64 = 1 << 20;

/// One kind of disk the random crash test runs on.
struct Config {
    name: &'static str,
    seed: u64,
    sector: u32,
    block: u32,
    /// The modelled (and checked) part of the disk.
    size: u64,
    /// The virtual size; past `size` the test only zeroes and trims huge
    /// ranges, which changes many BAT pages per flush (several log
    /// entries per flush, and the log ring wraps within a session).
    virtual_size: u64,
    disk_type: DiskType,
    /// A differencing child over a dynamic base, driven through a chain.
    differencing: bool,
    /// Fresh file systems (each starts from a new disk).
    runs: usize,
    /// Power cuts per run.
    cycles: usize,
}

#[derive(Debug, Default)]
struct Tally {
    crashes: u64,
    between_ops: u64,
    in_write: u64,
    in_zero: u64,
    in_trim: u64,
    in_flush: u64,
    in_recovery: u64,
    dirty_logs: u64,
    /// Sessions ended by a close that the power cut, or that completed.
    in_close: u64,
    after_close: u64,
    /// Whether the latest read-only open after a crash replayed a log.
    last_replayed: bool,
    /// Operations that failed while the power came back at once.
    transient: u64,
    /// Log entries written, and the most in one session.
    log_entries: u64,
    most_log_entries: u64,
    outcome: Outcome,
}

/// Creates the disk of `cfg` in a fresh file system; returns the path to
/// open, every file path, and the initial virtual content.
fn setup(fs: &CrashFs, cfg: &Config, rng: &mut SmallRng) -> (PathBuf, Vec<PathBuf>, Vec<u8>) {
    let base = PathBuf::from("/vm/base.vhdx");
    let mut v = create(
        fs,
        &base,
        &opts(cfg.virtual_size, cfg.block, cfg.sector, cfg.disk_type),
    )
    .unwrap();
    if !cfg.differencing {
        let content = vec![0u8; cfg.size as usize];
        v.close().unwrap();
        return (base.clone(), vec![base], content);
    }
    // A base with data in about half of its blocks.
    let bs = cfg.block as u64;
    for b in 0..cfg.size / bs {
        if rng.gen_bool(0.5) {
            let len = rng.gen_range(1..=bs / 512) * 512;
            let off = b * bs + rng.gen_range(0..=(bs - len) / 512) * 512;
            v.write(off, &random_bytes(rng, len as usize)).unwrap();
        }
    }
    let content = {
        let mut buf = vec![0u8; cfg.size as usize];
        v.read(0, &mut buf).unwrap();
        buf
    };
    v.close().unwrap();
    let child = PathBuf::from("/vm/child.avhdx");
    create_child(fs, &child, &base, None)
        .unwrap()
        .close()
        .unwrap();
    (child.clone(), vec![base, child], content)
}

/// Opens read-only after a crash and checks everything the module docs
/// promise about it; returns what it read and whether a log was replayed.
/// `compare_bytes` also proves byte for byte that no file changed (the
/// power budget of zero already makes any write or flush fail).
fn read_only_after_crash(
    fs: &CrashFs,
    path: &Path,
    files: &[PathBuf],
    chain: bool,
    compare_bytes: bool,
    len: u64,
) -> (Vec<u8>, bool) {
    let before = if compare_bytes {
        snapshot(fs, files)
    } else {
        Vec::new()
    };
    let counts = op_counts(fs, files);
    fs.set_power_budget(Some(0));
    let ro = Target::open(fs, path, chain, false)
        .unwrap_or_else(|e| panic!("read-only open after a crash failed: {e}"));
    let data = ro.read_prefix(len);
    let replayed = ro.top().log_was_replayed();
    drop(ro);
    fs.set_power_budget(None);
    assert!(
        op_counts(fs, files) == counts,
        "a read-only open wrote or flushed"
    );
    if compare_bytes {
        assert!(
            snapshot(fs, files) == before,
            "a read-only open changed a file"
        );
    }
    for f in files {
        let report = vhdx::check(fs, f).unwrap();
        assert!(
            report.is_valid(),
            "{}: check after a crash: {:?}",
            f.display(),
            report.problems
        );
    }
    (data, replayed)
}

/// Everything after a power cut: read-only open, model check, possibly a
/// second cut during the writable open's recovery, then the writable open.
fn recover(
    fs: &CrashFs,
    cfg: &Config,
    path: &Path,
    files: &[PathBuf],
    model: &mut Model,
    rng: &mut SmallRng,
    tally: &mut Tally,
) -> Target {
    let chain = cfg.differencing;
    let compare_bytes = tally.crashes.is_multiple_of(3);
    let (ro_data, replayed) =
        read_only_after_crash(fs, path, files, chain, compare_bytes, cfg.size);
    tally.last_replayed = replayed;
    tally.dirty_logs += replayed as u64;
    let outcome = model
        .check(&ro_data)
        .unwrap_or_else(|e| panic!("{}: after a crash: {e}", cfg.name));
    tally.outcome.add(outcome);

    if rng.gen_bool(0.25) {
        // The power fails again while the writable open replays the log or
        // rewrites the headers.
        fs.set_power_budget(Some(rng.gen_range(0..6)));
        match Target::open(fs, path, chain, true) {
            Ok(t) => t.abandon(),
            Err(e) => assert!(
                fs.power_failed(),
                "writable open failed without a power cut: {e}"
            ),
        }
        fs.crash(rng);
        tally.crashes += 1;
        tally.in_recovery += 1;
        let (again, _) = read_only_after_crash(fs, path, files, chain, true, cfg.size);
        assert!(
            again == ro_data,
            "{}: a crash during recovery changed the content",
            cfg.name
        );
    }

    let rw = Target::open(fs, path, chain, true)
        .unwrap_or_else(|e| panic!("{}: writable open after a crash failed: {e}", cfg.name));
    let rw_data = rw.read_prefix(cfg.size);
    assert!(
        rw_data == ro_data,
        "{}: read-only and writable opens read differently",
        cfg.name
    );
    model.reset(&rw_data);
    rw
}

/// Zeroes or trims a huge whole-block range past the modelled part.
fn wide_op(rng: &mut SmallRng, cfg: &Config) -> Op {
    let bs = cfg.block as u64;
    let (first, end) = (cfg.size / bs, cfg.virtual_size / bs);
    let a = rng.gen_range(first..(first + end) / 2);
    let b = if rng.gen_bool(0.5) {
        end
    } else {
        rng.gen_range(a + 1..=end)
    };
    if rng.gen_bool(0.5) {
        Op::Zero(a * bs, (b - a) * bs)
    } else {
        Op::Trim(a * bs, (b - a) * bs)
    }
}

fn crash_cycles(cfg: &Config) -> Tally {
    let start = Instant::now();
    let mut rng = SmallRng::seed_from_u64(cfg.seed);
    let mut tally = Tally::default();
    let (bs, ss) = (cfg.block as u64, cfg.sector as u64);
    let trim = cfg.disk_type != DiskType::Fixed;
    for _ in 0..cfg.runs {
        let fs = CrashFs::new();
        let (path, files, initial) = setup(&fs, cfg, &mut rng);
        let mut model = Model::new(initial);
        let mut t = Target::open(&fs, &path, cfg.differencing, true).unwrap();
        for _ in 0..cfg.cycles {
            // 0..=3: cut between operations; 4..=6: after a random number
            // of file operations; 6: the same, but the power comes back
            // at once (a transient I/O error): the handle must carry on and
            // its next flush must make everything durable; 7..=9: inside the
            // first, second or third flush of the session (so the log holds
            // earlier entries).
            let plan = rng.gen_range(0..10);
            let transient = plan == 6;
            if (4..=6).contains(&plan) {
                fs.set_power_budget(Some(rng.gen_range(0..24)));
            }
            let mut ops: Vec<Op> = (0..rng.gen_range(1..=10))
                .map(|_| {
                    if cfg.virtual_size > cfg.size && rng.gen_bool(0.5) {
                        wide_op(&mut rng, cfg)
                    } else {
                        random_op(&mut rng, cfg.size, bs, ss, trim)
                    }
                })
                .collect();
            let cut_at_flush = if plan >= 7 {
                Some(rng.gen_range(0..3))
            } else {
                None
            };
            if let Some(k) = cut_at_flush {
                let flushes = ops.iter().filter(|o| matches!(o, Op::Flush)).count();
                // Each added flush commits a BAT change: a block zeroed
                // whole, or a write (possibly allocating).
                for _ in flushes..=k {
                    if rng.gen_bool(0.5) {
                        let b = rng.gen_range(0..cfg.size / bs);
                        ops.push(Op::Zero(b * bs, bs));
                    } else {
                        let (off, len) = random_range(&mut rng, cfg.size, bs, ss);
                        ops.push(Op::Write(off, random_bytes(&mut rng, len as usize)));
                    }
                    ops.push(Op::Flush);
                }
            }
            let mut failed = None;
            let mut flushes = 0;
            for op in &ops {
                let cut_here = matches!(op, Op::Flush) && cut_at_flush == Some(flushes);
                if cut_here {
                    fs.set_power_budget(Some(rng.gen_range(0..8)));
                }
                let range = op.range(model.len());
                let before = match range {
                    Some((off, len)) if transient => {
                        model.current()[off as usize..(off + len) as usize].to_vec()
                    }
                    _ => Vec::new(),
                };
                let r = op.run(&mut t);
                op.apply(&mut model, bs, r.is_ok());
                if let Err(e) = r {
                    assert!(
                        fs.power_failed(),
                        "{}: {} failed without a power cut: {e}",
                        cfg.name,
                        op.name()
                    );
                    if transient {
                        // The power is back; what the failed operation left
                        // must be, byte by byte, the old or the new value,
                        // and from now on it is what the disk holds.
                        fs.set_power_budget(None);
                        tally.transient += 1;
                        if let Some((off, len)) = range {
                            let mut got = vec![0u8; len as usize];
                            t.read(off, &mut got).unwrap();
                            let new = &model.current()[off as usize..(off + len) as usize];
                            let bad =
                                (0..got.len()).find(|&i| got[i] != before[i] && got[i] != new[i]);
                            assert!(
                                bad.is_none(),
                                "{}: a failed {} left byte {} neither old nor new",
                                cfg.name,
                                op.name(),
                                off + bad.unwrap_or(0) as u64
                            );
                            model.write(off, &got);
                        }
                        continue;
                    }
                    failed = Some(op.name());
                    break;
                }
                if cut_here {
                    break; // the budget outlived the flush: cut right after it
                }
                flushes += matches!(op, Op::Flush) as usize;
            }
            if transient {
                fs.set_power_budget(None);
                t.flush().unwrap_or_else(|e| {
                    panic!("{}: flush after a transient error failed: {e}", cfg.name)
                });
                model.flushed_now();
                assert!(
                    t.read_prefix(cfg.size) == model.current(),
                    "{}: the disk reads wrong after a transient error",
                    cfg.name
                );
            }
            match failed {
                None => {
                    tally.between_ops += 1;
                    if rng.gen_bool(0.1) {
                        assert!(
                            t.read_prefix(cfg.size) == model.current(),
                            "{}: the running disk reads wrong",
                            cfg.name
                        );
                    }
                }
                Some("write") => tally.in_write += 1,
                Some("zero") => tally.in_zero += 1,
                Some("trim") => tally.in_trim += 1,
                Some(_) => tally.in_flush += 1,
            }
            let entries = t.top().stats().log_entries;
            tally.log_entries += entries;
            tally.most_log_entries = tally.most_log_entries.max(entries);
            // Sometimes the session ends with a close, which the budget
            // may cut too; a close that succeeds leaves no log behind.
            let mut clean = false;
            if !transient && failed.is_none() && rng.gen_bool(0.2) {
                if plan <= 3 {
                    fs.set_power_budget(Some(rng.gen_range(0..8)));
                }
                match t.close() {
                    Ok(()) => {
                        model.flushed_now();
                        clean = true;
                        tally.after_close += 1;
                    }
                    Err(e) => {
                        assert!(
                            fs.power_failed(),
                            "{}: close failed without a power cut: {e}",
                            cfg.name
                        );
                        tally.in_close += 1;
                    }
                }
            } else {
                t.abandon();
            }
            fs.crash(&mut rng);
            tally.crashes += 1;
            t = recover(&fs, cfg, &path, &files, &mut model, &mut rng, &mut tally);
            assert!(
                !clean || !tally.last_replayed,
                "{}: a log was replayed after a clean close",
                cfg.name
            );
        }
        // A clean close keeps everything and leaves no log to replay.
        t.close().unwrap();
        let t = Target::open(&fs, &path, cfg.differencing, false).unwrap();
        assert!(
            !t.top().log_was_replayed(),
            "{}: a clean close left a log to replay",
            cfg.name
        );
        assert!(
            t.read_prefix(cfg.size) == model.current(),
            "{}: content differs after a clean close",
            cfg.name
        );
    }
    eprintln!("{}: {tally:?} in {:.1?}", cfg.name, start.elapsed());
    tally
}

fn assert_coverage(t: &Tally) {
    assert!(t.crashes >= 400, "{t:?}");
    assert!(
        t.between_ops > 50 && t.in_flush > 50 && t.in_recovery > 50,
        "{t:?}"
    );
    assert!(
        t.in_write + t.in_zero + t.in_trim >= 15 && t.transient >= 5,
        "{t:?}"
    );
    assert!(
        t.dirty_logs > 50,
        "too few crashes left a log to replay: {t:?}"
    );
    // Unflushed writes must have come back old, new and torn.
    assert!(
        t.outcome.old > 0 && t.outcome.new > 0 && t.outcome.mixed > 0,
        "{t:?}"
    );
}

#[test]
fn random_crashes_dynamic_512() {
    let t = crash_cycles(&Config {
        name: "dynamic/512",
        seed: 1,
        sector: 512,
        block: MIB as u32,
        size: 4 * MIB,
        virtual_size: 4 * MIB,
        disk_type: DiskType::Dynamic,
        differencing: false,
        runs: 45,
        cycles: 10,
    });
    assert_coverage(&t);
}

#[test]
fn random_crashes_dynamic_4096() {
    let t = crash_cycles(&Config {
        name: "dynamic/4096",
        seed: 2,
        sector: 4096,
        block: 2 * MIB as u32,
        size: 6 * MIB,
        virtual_size: 6 * MIB,
        disk_type: DiskType::Dynamic,
        differencing: false,
        runs: 45,
        cycles: 10,
    });
    assert_coverage(&t);
}

#[test]
fn random_crashes_differencing_512() {
    let t = crash_cycles(&Config {
        name: "differencing/512",
        seed: 3,
        sector: 512,
        block: MIB as u32,
        size: 4 * MIB,
        virtual_size: 4 * MIB,
        disk_type: DiskType::Dynamic,
        differencing: true,
        runs: 45,
        cycles: 10,
    });
    assert_coverage(&t);
}

#[test]
fn random_crashes_differencing_4096() {
    let t = crash_cycles(&Config {
        name: "differencing/4096",
        seed: 4,
        sector: 4096,
        block: MIB as u32,
        size: 4 * MIB,
        virtual_size: 4 * MIB,
        disk_type: DiskType::Dynamic,
        differencing: true,
        runs: 45,
        cycles: 10,
    });
    assert_coverage(&t);
}

#[test]
fn random_crashes_fixed_512() {
    let t = crash_cycles(&Config {
        name: "fixed/512",
        seed: 5,
        sector: 512,
        block: MIB as u32,
        size: 4 * MIB,
        virtual_size: 4 * MIB,
        disk_type: DiskType::Fixed,
        differencing: false,
        runs: 22,
        cycles: 10,
    });
    assert!(t.crashes >= 200 && t.outcome.mixed > 0, "{t:?}");
}

/// A 64 GiB disk whose first 4 MiB are modelled; huge zero and trim
/// ranges past them dirty up to 128 BAT pages at once, so flushes (and
/// zeroing itself, when the log would overflow) write several entries of
/// about a third of the 1 MiB log each and the ring wraps within a session.
#[test]
fn random_crashes_dynamic_512_wide() {
    let t = crash_cycles(&Config {
        name: "dynamic/512 64 GiB",
        seed: 6,
        sector: 512,
        block: MIB as u32,
        size: 4 * MIB,
        virtual_size: 64 << 30,
        disk_type: DiskType::Dynamic,
        differencing: false,
        runs: 20,
        cycles: 10,
    });
    assert!(
        t.crashes >= 200 && t.in_flush > 20 && t.outcome.mixed > 0,
        "{t:?}"
    );
    assert!(t.most_log_entries >= 6, "the log never wrapped: {t:?}");
}

fn read_vhdx(v: &Vhdx) -> Vec<u8> {
    let mut buf = vec![0u8; v.virtual_size() as usize];
    v.read(0, &mut buf).unwrap();
    buf
}

/// Writes random data in part of block `b` (sector aligned), in the disk
/// and in the model.
fn write_in_block(v: &mut Vhdx, m: &mut Model, rng: &mut SmallRng, b: u64, bs: u64, ss: u64) {
    let len = rng.gen_range(1..=bs / ss) * ss;
    let off = b * bs + rng.gen_range(0..=(bs - len) / ss) * ss;
    let data = random_bytes(rng, len as usize);
    v.write(off, &data).unwrap();
    m.write(off, &data);
}

/// The newest entry of the log the current header names, read straight
/// from the file bytes (§2.2.2, §2.3.3); `None` if the header names none.
fn active_log_entry(file: &[u8]) -> Option<u64> {
    use vhdx::format::{HEADER_OFFSETS, HEADER_SIZE};
    use vhdx::header::{current_header, Header};
    let parse = |slot: usize| Header::parse(&file[HEADER_OFFSETS[slot] as usize..][..HEADER_SIZE]);
    let (_, h) = current_header([parse(0), parse(1)]).expect("no valid header");
    if h.log_guid.is_nil() {
        return None;
    }
    let log = &file[h.log_offset as usize..][..h.log_length as usize];
    let entries = vhdx::log::find_active_sequence(log, h.log_guid).expect("no valid log sequence");
    Some(entries.last().unwrap().sequence_number)
}

/// A commit is cut at every point: after the log entry is durable but
/// before (or while) its pages are written in place, the file holds a
/// dirty log whose replay is the only way to see the flushed data. A
/// read-only open must replay it in memory without touching the file, a
/// writable open in place; both must read the same.
#[test]
fn dirty_log_replays_in_memory_read_only_and_in_place_writable() {
    let start = Instant::now();
    let mut rng = SmallRng::seed_from_u64(30);
    let path = PathBuf::from("/vm/dirty.vhdx");
    let (size, bs) = (6 * MIB, MIB);
    let (mut dirty, mut stale, mut stale_second, mut iterations) = (0, 0, 0, 0);
    for iter in 0..128u64 {
        iterations += 1;
        let ss = if iter % 2 == 0 { 512 } else { 4096 };
        let fs = CrashFs::new();
        let mut v = create(
            &fs,
            &path,
            &opts(size, bs as u32, ss as u32, DiskType::Dynamic),
        )
        .unwrap();
        let mut model = Model::new(vec![0; size as usize]);
        for b in 0..3 {
            write_in_block(&mut v, &mut model, &mut rng, b, bs, ss);
        }
        // The first commit either in this session (so the header already
        // names the log) or in an earlier, cleanly closed one.
        let same_session = iter % 4 < 2;
        if same_session {
            v.flush().unwrap();
        } else {
            v.close().unwrap();
            v = Vhdx::open(&fs, &path, true).unwrap();
        }
        model.flushed_now();
        // New blocks, an overwrite in place and a whole block zeroed: the
        // next commit changes the BAT.
        for b in 3..6 {
            write_in_block(&mut v, &mut model, &mut rng, b, bs, ss);
        }
        write_in_block(&mut v, &mut model, &mut rng, 0, bs, ss);
        v.zero(bs, bs).unwrap();
        model.zero(bs, bs);
        // Cut the power at every step of the commit in turn.
        fs.set_power_budget(Some(iter / 4 % 8));
        if v.flush().is_ok() {
            model.flushed_now();
        }
        v.abandon();
        fs.crash(&mut rng);

        let before = fs.file(&path).unwrap().contents();
        fs.set_power_budget(Some(0));
        let ro = Vhdx::open(&fs, &path, false).unwrap();
        fs.set_power_budget(None);
        let ro_data = read_vhdx(&ro);
        let ro_replayed = ro.log_was_replayed();
        drop(ro);
        assert!(
            fs.file(&path).unwrap().contents() == before,
            "a read-only open changed the file"
        );
        model
            .check(&ro_data)
            .unwrap_or_else(|e| panic!("iteration {iter}: {e}"));
        if same_session {
            assert!(
                ro_replayed,
                "iteration {iter}: the header named a log, but none was replayed"
            );
        }

        // Which entry the log holds, read straight from the file bytes:
        // the second commit's (sequence 2 after a first commit in the same
        // session, 1 in a new session), the first commit's, or none.
        let active = active_log_entry(&before);
        assert_eq!(ro_replayed, active.is_some(), "iteration {iter}");
        let second = active == Some(if same_session { 2 } else { 1 });
        if second {
            // Its log entry is durable, so its payload was too (flushed
            // first): all of it must be visible.
            assert!(
                ro_data == model.current(),
                "iteration {iter}: a durable commit is not visible"
            );
        }

        let rw = Vhdx::open(&fs, &path, true).unwrap();
        assert_eq!(rw.log_was_replayed(), ro_replayed);
        let after = fs.file(&path).unwrap().contents();
        // Past the header section only a replay writes anything: if it did,
        // the metadata in place was stale and the read-only open saw the
        // commit through its in-memory replay alone.
        if before[MIB as usize..] != after[MIB as usize..] {
            assert!(
                ro_replayed,
                "iteration {iter}: a writable open changed metadata without a log"
            );
            stale += 1;
            stale_second += second as u32;
        }
        dirty += ro_replayed as u32;
        assert!(
            read_vhdx(&rw) == ro_data,
            "iteration {iter}: read-only and writable opens differ"
        );
        rw.close().unwrap();
        let ro = Vhdx::open(&fs, &path, false).unwrap();
        assert!(!ro.log_was_replayed(), "a clean close left a log to replay");
        assert!(read_vhdx(&ro) == ro_data);
    }
    eprintln!(
        "dirty log: {iterations} crashes, {dirty} dirty logs, {stale} with stale metadata in place \
         ({stale_second} of them visible only through the log), {:.1?}",
        start.elapsed()
    );
    assert!(
        dirty >= 70 && stale_second >= 15,
        "dirty {dirty}, stale {stale}, {stale_second}"
    );
}

/// A chain with random data in every layer, as durable file images; the
/// top file is merged into its parent.
struct MergeFixture {
    name: &'static str,
    /// Every file of the chain, base first, with its content.
    files: Vec<(PathBuf, Vec<u8>)>,
    /// What the chain reads before the merge (and the parent's chain after).
    merged: Vec<u8>,
}

impl MergeFixture {
    fn paths(&self) -> Vec<PathBuf> {
        self.files.iter().map(|(p, _)| p.clone()).collect()
    }
    fn child(&self) -> &Path {
        &self.files[self.files.len() - 1].0
    }
    fn parent(&self) -> &Path {
        &self.files[self.files.len() - 2].0
    }
}

/// Random writes, zeroing and a trim on a chain.
fn scribble(c: &mut Chain, rng: &mut SmallRng, bs: u64, ss: u64) {
    let size = c.virtual_size();
    for _ in 0..12 {
        let (off, len) = random_range(rng, size, bs, ss);
        c.write(off, &random_bytes(rng, len as usize)).unwrap();
    }
    let zb = rng.gen_range(0..size / bs);
    c.zero(zb * bs, bs).unwrap();
    let (off, len) = random_range(rng, size, bs, ss);
    c.zero(off, len).unwrap();
    let (off, len) = random_range(rng, size, bs, ss);
    c.trim(off, len).unwrap();
}

/// A base with data in most blocks and `levels` differencing files over
/// it (the first with `child_block` bytes per block), each with random
/// changes.
fn merge_fixture(
    name: &'static str,
    seed: u64,
    sector: u32,
    levels: usize,
    child_block: Option<u32>,
) -> MergeFixture {
    let mut rng = SmallRng::seed_from_u64(seed);
    let fs = CrashFs::new();
    let (size, bs, ss) = (6 * MIB, MIB, sector as u64);
    let mut paths = vec![PathBuf::from("/vm/base.vhdx")];
    let mut v = create(
        &fs,
        &paths[0],
        &opts(size, bs as u32, sector, DiskType::Dynamic),
    )
    .unwrap();
    let mut scratch = Model::new(vec![0; size as usize]);
    for b in 0..size / bs {
        if rng.gen_bool(0.6) {
            write_in_block(&mut v, &mut scratch, &mut rng, b, bs, ss);
        }
    }
    v.close().unwrap();
    for level in 1..=levels {
        let child = PathBuf::from(format!("/vm/child{level}.avhdx"));
        let block = if level == 1 { child_block } else { None };
        create_child(&fs, &child, paths.last().unwrap(), block)
            .unwrap()
            .close()
            .unwrap();
        let mut c = Chain::open(&fs, &child, true).unwrap();
        let block = c.top().block_size() as u64;
        scribble(&mut c, &mut rng, block, ss);
        c.close().unwrap();
        paths.push(child);
    }
    let c = Chain::open(&fs, paths.last().unwrap(), false).unwrap();
    let mut merged = vec![0u8; size as usize];
    c.read(0, &mut merged).unwrap();
    let files = paths
        .into_iter()
        .map(|p| {
            let content = fs.file(&p).unwrap().contents();
            (p, content)
        })
        .collect();
    MergeFixture {
        name,
        files,
        merged,
    }
}

fn load(fx: &MergeFixture) -> CrashFs {
    let fs = CrashFs::new();
    for (p, content) in &fx.files {
        fs.insert(p, content.clone());
    }
    fs
}

/// File operations a complete merge of `fx` performs.
fn merge_ops(fx: &MergeFixture) -> u64 {
    let fs = load(fx);
    merge_into_parent(&fs, fx.child(), true, &mut |_, _| {}).unwrap();
    fs.ops_done()
}

/// Reads the whole chain whose top is `top`, read-only, proving that the
/// open neither writes nor flushes nor changes a byte.
fn read_chain(fs: &CrashFs, top: &Path, files: &[PathBuf], what: &str) -> Vec<u8> {
    let before = snapshot(fs, files);
    fs.set_power_budget(Some(0));
    let chain = Chain::open(fs, top, false)
        .unwrap_or_else(|e| panic!("{what}: {} does not open after a crash: {e}", top.display()));
    let mut buf = vec![0u8; chain.virtual_size() as usize];
    chain.read(0, &mut buf).unwrap();
    drop(chain);
    fs.set_power_budget(None);
    assert!(
        snapshot(fs, files) == before,
        "{what}: a read-only chain open changed a file"
    );
    for f in files.iter().filter(|f| fs.exists(f).unwrap()) {
        let r = vhdx::check(fs, f).unwrap();
        assert!(r.is_valid(), "{what}: {}: {:?}", f.display(), r.problems);
    }
    buf
}

/// Power cuts at every file operation of a merge (and again, at random,
/// during the resumed merge): the child's chain keeps reading the
/// pre-merge content, and running the merge again completes it, after
/// which the parent's chain reads that content (and a kept child still
/// opens on top of it).
#[test]
fn merge_survives_a_crash_at_every_step() {
    let start = Instant::now();
    let mut rng = SmallRng::seed_from_u64(40);
    let (mut crashes, mut resumed, mut double) = (0u64, 0u64, 0u64);
    let fixtures = [
        merge_fixture("base+child/512", 41, 512, 1, None),
        merge_fixture("base+child/4096", 42, 4096, 1, None),
        merge_fixture(
            "base+child with 2 MiB blocks/512",
            43,
            512,
            1,
            Some(2 * MIB as u32),
        ),
        merge_fixture(
            "base+mid+top/4096 (into a differencing parent)",
            44,
            4096,
            2,
            None,
        ),
    ];
    for fx in &fixtures {
        let total = merge_ops(fx);
        let files = fx.paths();
        for n in 0..total + 4 {
            let what = format!("{}: cut after {n} of {total} operations", fx.name);
            // Every fourth run keeps the child after the merge.
            let remove = n % 4 != 0;
            let fs = load(fx);
            fs.set_power_budget(Some(n));
            let r = merge_into_parent(&fs, fx.child(), remove, &mut |_, _| {});
            if let Err(e) = &r {
                assert!(
                    fs.power_failed(),
                    "{what}: merge failed without a power cut: {e}"
                );
            }
            fs.crash(&mut rng);
            crashes += 1;
            // A cut between removing the merged child and syncing its
            // directory may keep the removal: the merge was complete.
            let mut done = r.is_ok() || (remove && !fs.exists(fx.child()).unwrap());
            if !done {
                let got = read_chain(&fs, fx.child(), &files, &what);
                assert!(
                    got == fx.merged,
                    "{what}: the child's chain reads different data"
                );
                if rng.gen_bool(0.3) {
                    // Cut the resumed merge too.
                    fs.set_power_budget(Some(rng.gen_range(0..total)));
                    done = merge_into_parent(&fs, fx.child(), remove, &mut |_, _| {}).is_ok();
                    if !done {
                        fs.crash(&mut rng);
                        crashes += 1;
                        double += 1;
                        let what = format!("{what}, and in the resumed merge");
                        let got = read_chain(&fs, fx.child(), &files, &what);
                        assert!(
                            got == fx.merged,
                            "{what}: the child's chain reads different data"
                        );
                    }
                    fs.set_power_budget(None);
                }
                if !done {
                    let report = merge_into_parent(&fs, fx.child(), remove, &mut |_, _| {})
                        .unwrap_or_else(|e| panic!("{what}: the merge does not resume: {e}"));
                    resumed += report.resumed as u64;
                    assert_eq!(report.child_removed, remove);
                }
            }
            assert_eq!(fs.exists(fx.child()).unwrap(), !remove, "{what}");
            let got = read_chain(&fs, fx.parent(), &files, &what);
            assert!(
                got == fx.merged,
                "{what}: the parent reads wrong after the merge"
            );
            if !remove {
                let got = read_chain(&fs, fx.child(), &files, &what);
                assert!(
                    got == fx.merged,
                    "{what}: the kept child reads wrong after the merge"
                );
            }
        }
    }
    eprintln!(
        "merge: {crashes} crashes ({double} during a resumed merge), {resumed} merges resumed, {:.1?}",
        start.elapsed()
    );
    assert!(
        crashes >= 200 && resumed >= 100,
        "{crashes} crashes, {resumed} resumed"
    );
}

/// A medium that runs out of space: a write that needs a new block fails
/// with a storage-full error and changes nothing, writes into blocks that
/// are already allocated still work, and everything flushed reads back
/// after a clean reopen and after a crash.
#[test]
fn full_medium_fails_writes_cleanly_and_keeps_flushed_data() {
    let mut rng = SmallRng::seed_from_u64(50);
    let (size, bs) = (12 * MIB, MIB);
    let mut full_errors = 0;
    for iter in 0..24u64 {
        let ss = if iter % 2 == 0 { 512 } else { 4096 };
        let differencing = iter % 3 == 2;
        // 4 MB of headers, log, metadata and BAT, then room for a few blocks.
        let capacity = 4 * MIB + rng.gen_range(2..7) * MIB;
        let fs = CrashFs::with_options(CrashOptions {
            capacity: Some(capacity),
            ..Default::default()
        });
        let base = PathBuf::from("/vm/base.vhdx");
        let mut v = create(
            &fs,
            &base,
            &opts(size, bs as u32, ss as u32, DiskType::Dynamic),
        )
        .unwrap();
        let mut model = Model::new(vec![0; size as usize]);
        let mut allocated = Vec::new();
        let path = if differencing {
            write_in_block(&mut v, &mut model, &mut rng, 0, bs, ss);
            v.close().unwrap();
            let child = PathBuf::from("/vm/child.avhdx");
            create_child(&fs, &child, &base, None)
                .unwrap()
                .close()
                .unwrap();
            model.flushed_now();
            child
        } else {
            v.close().unwrap();
            base
        };
        let mut t = Target::open(&fs, &path, differencing, true).unwrap();
        let mut failed_here = 0;
        for _ in 0..40 {
            // One block at a time, so a failing write cannot half happen.
            let b = rng.gen_range(0..size / bs);
            let len = rng.gen_range(1..=bs / ss) * ss;
            let off = b * bs + rng.gen_range(0..=(bs - len) / ss) * ss;
            let data = random_bytes(&mut rng, len as usize);
            match t.write(off, &data) {
                Ok(()) => {
                    model.write(off, &data);
                    allocated.push((off, len));
                }
                Err(e) => {
                    assert!(
                        e.is_storage_full(),
                        "iteration {iter}: expected a storage-full error, got {e}"
                    );
                    failed_here += 1;
                    let mut buf = vec![0u8; len as usize];
                    t.read(off, &mut buf).unwrap();
                    assert!(
                        buf == model.current()[off as usize..(off + len) as usize],
                        "a failed write changed data"
                    );
                }
            }
            if rng.gen_bool(0.2) {
                t.flush().unwrap();
                model.flushed_now();
            }
        }
        assert!(
            failed_here > 0,
            "iteration {iter}: the medium never filled up"
        );
        full_errors += failed_here;
        let file_len = fs.file(&path).unwrap().contents().len() as u64;
        assert!(file_len <= capacity);
        // Rewriting stored ranges needs no space.
        for &(off, len) in allocated.iter().rev().take(5) {
            let data = random_bytes(&mut rng, len as usize);
            t.write(off, &data).unwrap();
            model.write(off, &data);
        }
        assert!(t.read_all() == model.current());
        if iter % 2 == 0 {
            t.close().unwrap();
            for writable in [false, true] {
                let t = Target::open(&fs, &path, differencing, writable).unwrap();
                assert!(
                    t.read_all() == model.current(),
                    "iteration {iter}: data lost on a full medium"
                );
                t.close().unwrap();
            }
        } else {
            t.abandon();
            fs.crash(&mut rng);
            let t = Target::open(&fs, &path, differencing, true).unwrap();
            model
                .check(&t.read_all())
                .unwrap_or_else(|e| panic!("iteration {iter}: {e}"));
            t.close().unwrap();
        }
        let r = vhdx::check(&fs, &path).unwrap();
        assert!(r.is_valid(), "{:?}", r.problems);
    }
    eprintln!("full medium: {full_errors} storage-full errors");
}

/// Power cuts at every file operation of creating a dynamic, a fixed and a
/// differencing disk: afterwards the path holds either nothing (and
/// creating again succeeds) or a complete disk that opens writable and
/// reads as a new disk should.
#[test]
fn create_survives_a_crash_at_every_step() {
    let mut rng = SmallRng::seed_from_u64(60);
    let (base, path) = (Path::new("/vm/base.vhdx"), Path::new("/vm/new.vhdx"));
    let size = 4 * MIB;
    let (mut crashes, mut complete) = (0, 0);
    for kind in [DiskType::Dynamic, DiskType::Fixed, DiskType::Differencing] {
        let child = kind == DiskType::Differencing;
        for n in 0..24 {
            let fs = CrashFs::new();
            let mut expected = vec![0u8; size as usize];
            if child {
                let mut v =
                    create(&fs, base, &opts(size, MIB as u32, 512, DiskType::Dynamic)).unwrap();
                let data = random_bytes(&mut rng, 100_000);
                v.write(12_345, &data).unwrap();
                expected[12_345..112_345].copy_from_slice(&data);
                v.close().unwrap();
            }
            let make = |fs: &CrashFs| {
                if child {
                    create_child(fs, path, base, None)
                } else {
                    create(fs, path, &opts(size, MIB as u32, 512, kind))
                }
            };
            fs.set_power_budget(Some(n));
            match make(&fs) {
                Ok(v) => v.abandon(),
                Err(e) => assert!(
                    fs.power_failed(),
                    "{kind:?}: create failed without a power cut: {e}"
                ),
            }
            fs.crash(&mut rng);
            crashes += 1;
            let t = if fs.exists(path).unwrap() {
                complete += 1;
                let r = vhdx::check(&fs, path).unwrap();
                assert!(r.is_valid(), "{kind:?}, cut after {n}: {:?}", r.problems);
                Target::open(&fs, path, child, true).unwrap_or_else(|e| {
                    panic!("{kind:?}, cut after {n}: the created disk does not open: {e}")
                })
            } else {
                let v = make(&fs)
                    .unwrap_or_else(|e| panic!("{kind:?}, cut after {n}: creating again: {e}"));
                Target::Disk(Box::new(v))
            };
            let t = match t {
                Target::Disk(v) if child => {
                    v.close().unwrap();
                    Target::open(&fs, path, true, true).unwrap()
                }
                t => t,
            };
            assert!(
                t.read_all() == expected,
                "{kind:?}, cut after {n}: a new disk reads wrong"
            );
            assert_eq!(t.top().disk_type(), kind);
            t.close().unwrap();
        }
    }
    eprintln!("create: {crashes} crashes, {complete} left a complete disk");
    assert!(complete > 0 && complete < crashes);
}

/// `repair` cut at every file operation, on a file whose header names a log
/// that holds no valid entry (the log was overwritten), once with both
/// header copies valid and once with the older copy damaged: running
/// `repair` again afterwards must bring the file back with its data.
#[test]
fn repair_survives_a_crash_at_every_step() {
    use vhdx::format::{HEADER_OFFSETS, HEADER_SIZE};
    use vhdx::header::Header;
    let mut rng = SmallRng::seed_from_u64(70);
    let path = Path::new("/vm/broken.vhdx");
    let size = 4 * MIB;
    let mut crashes = 0;
    for damaged_copy in [false, true] {
        let fs = CrashFs::new();
        let mut v = create(&fs, path, &opts(size, MIB as u32, 512, DiskType::Dynamic)).unwrap();
        let mut expected = vec![0u8; size as usize];
        let data = random_bytes(&mut rng, 300_000);
        v.write(77_777, &data).unwrap();
        expected[77_777..377_777].copy_from_slice(&data);
        v.flush().unwrap();
        let mut image = fs.file(path).unwrap().contents();
        v.abandon();
        image[MIB as usize..2 * MIB as usize].fill(0);
        if damaged_copy {
            let seq = |slot: usize| {
                let at = HEADER_OFFSETS[slot] as usize;
                Header::parse(&image[at..at + HEADER_SIZE])
                    .unwrap()
                    .sequence_number
            };
            let older = if seq(0) < seq(1) { 0 } else { 1 };
            image[HEADER_OFFSETS[older] as usize + 100] ^= 0xff;
        }
        for n in 0..12 {
            for _ in 0..5 {
                let what = format!("damaged copy: {damaged_copy}, cut after {n} operations");
                let fs = CrashFs::new();
                fs.insert(path, image.clone());
                let r = vhdx::check(&fs, path).unwrap();
                assert!(
                    r.problems.iter().all(|p| p.repairable) && !r.is_valid(),
                    "{what}: {:?}",
                    r.problems
                );
                fs.set_power_budget(Some(n));
                if let Err(e) = vhdx::repair(&fs, path) {
                    assert!(
                        fs.power_failed(),
                        "{what}: repair failed without a power cut: {e}"
                    );
                }
                fs.crash(&mut rng);
                crashes += 1;
                let r = vhdx::repair(&fs, path)
                    .unwrap_or_else(|e| panic!("{what}: repair after a crash failed: {e}"));
                assert!(
                    r.is_valid(),
                    "{what}: still broken after a repair: {:?}",
                    r.problems
                );
                let v = Vhdx::open(&fs, path, false)
                    .unwrap_or_else(|e| panic!("{what}: does not open after repair: {e}"));
                assert!(read_vhdx(&v) == expected, "{what}: data lost");
            }
        }
    }
    eprintln!("repair: {crashes} crashes");
}

/// A created disk (written under a temporary name and renamed) exists after
/// a power cut that follows the create: the rename was made durable.
#[test]
fn a_created_disk_survives_a_power_cut_right_after() {
    for seed in 0..30 {
        let fs = CrashFs::new();
        let path = Path::new("/vm/new.vhdx");
        let o = vhdx::CreateOptions {
            virtual_size: 8 * MIB,
            disk_type: DiskType::Dynamic,
            block_size: MIB as u32,
            logical_sector_size: 512,
            physical_sector_size: 4096,
        };
        let v = create(&fs, path, &o).unwrap();
        drop(v);
        let child = Path::new("/vm/new.avhdx");
        create_child(&fs, child, path, None)
            .unwrap()
            .close()
            .unwrap();
        fs.crash(&mut SmallRng::seed_from_u64(seed));
        assert!(
            fs.exists(path).unwrap(),
            "seed {seed}: the created disk is gone"
        );
        assert!(
            fs.exists(child).unwrap(),
            "seed {seed}: the created child is gone"
        );
        Chain::open(&fs, child, false).unwrap();
    }
}
