//! Interoperability with QEMU (DESIGN.md invariant 4): files qemu-img and
//! qemu-io write read identically in ours, and files we write pass
//! `qemu-img check` and `qemu-img compare` against a raw copy of what we
//! wrote.
//!
//! Every test needs `qemu-img` and `qemu-io` on the PATH. Without them a
//! test prints why and passes, unless the `CI` environment variable is set,
//! in which case it fails: CI installs QEMU, so a missing tool there is a
//! broken setup, not a reason to skip.
//!
//! QEMU limitations these tests work around (QEMU 10.0):
//! * QEMU cannot open differencing VHDX files at all (ENOTSUP, "Operation
//!   not supported": block/vhdx.c has no parent support), so chains are
//!   checked by merging or flattening them into a base file QEMU can read;
//!   the tests assert that refusal, and compare the chain in QEMU should it
//!   ever open it.
//! * QEMU opens only 512-byte logical sectors: a file with 4096-byte logical
//!   sectors, valid per MS-VHDX §2.6.2.4 and made by Hyper-V, fails to open
//!   with ENOTSUP ("Operation not supported"). For such files the tests
//!   assert exactly that refusal and check the content through ours alone;
//!   should QEMU learn 4096-byte sectors, the full QEMU checks run instead.
//! * A read-only QEMU open refuses a file whose log needs replaying; only
//!   `qemu-img check -r all` (a writable open) replays it.

use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use storage::{Fs, LocalFs, OpenMode, Storage};
use testkit::tools;
use vhdx::{create, create_child, Chain, CreateOptions, DiskType, Vhdx};

const MIB: u64 = 1 << 20;

// ---------------------------------------------------------------------------
// Running QEMU
// ---------------------------------------------------------------------------

/// Whether qemu-img and qemu-io can be run. Absent tools skip the tests,
/// except under CI, where they fail them (asked once per run).
fn qemu_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| tools::available(&["qemu-img", "qemu-io"]))
}

macro_rules! require_qemu {
    () => {
        if !qemu_available() {
            return;
        }
    };
}

/// A QEMU tool still running after this long fails the test.
const TOOL_LIMIT: Duration = Duration::from_secs(600);

fn run(tool: &str, args: &[&str]) -> Output {
    tools::run(Command::new(tool).args(args), TOOL_LIMIT)
}

fn describe(tool: &str, args: &[&str], out: &Output) -> String {
    tools::describe(&format!("{tool} {}", args.join(" ")), out)
}

/// Runs a tool and fails the test unless it exits with 0.
fn run_ok(tool: &str, args: &[&str]) -> Output {
    tools::run_ok(Command::new(tool).args(args), TOOL_LIMIT)
}

fn s(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

/// `qemu-img create -f vhdx -o <opts> <path> <size>`.
fn qemu_create(path: &Path, opts: &str, size: u64) {
    run_ok(
        "qemu-img",
        &[
            "create",
            "-q",
            "-f",
            "vhdx",
            "-o",
            opts,
            s(path),
            &size.to_string(),
        ],
    );
}

/// Runs qemu-io commands on a VHDX file, opened writable.
fn qemu_io(path: &Path, cmds: &[String]) {
    let mut args = vec!["-f", "vhdx"];
    for c in cmds {
        args.extend(["-c", c.as_str()]);
    }
    args.push(s(path));
    let out = run_ok("qemu-io", &args);
    // qemu-io reports a failed command on stdout and still exits with 0.
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("failed"),
        "{}",
        describe("qemu-io", &args, &out)
    );
}

/// Whether QEMU opens `path`. It may refuse with ENOTSUP only when
/// `unsupported` names one of its known limitations (see the module notes);
/// any other failure fails the test.
fn qemu_opens(path: &Path, unsupported: Option<&str>) -> bool {
    let args = ["info", "-f", "vhdx", s(path)];
    let out = run("qemu-img", &args);
    if out.status.success() {
        return true;
    }
    let enotsup = String::from_utf8_lossy(&out.stderr).contains("Operation not supported");
    let Some(why) = unsupported.filter(|_| enotsup) else {
        panic!("{}", describe("qemu-img", &args, &out));
    };
    eprintln!(
        "qemu-img does not open {} ({why}): QEMU checks skipped",
        path.display()
    );
    false
}

/// The limitation QEMU may cite for a file with this logical sector size.
fn sector_limit(logical_sector_size: u32) -> Option<&'static str> {
    (logical_sector_size == 4096).then_some("4096-byte logical sectors")
}

/// `qemu-img check -f vhdx`: must exit with 0 (no corruption, no leaks).
fn qemu_check(path: &Path) {
    run_ok("qemu-img", &["check", "-f", "vhdx", s(path)]);
}

/// `qemu-img compare` of a VHDX file against a raw file: must report them
/// identical (exit 0; 1 means different, 2 an error).
fn qemu_compare(vhdx: &Path, raw: &Path) {
    run_ok(
        "qemu-img",
        &["compare", "-f", "vhdx", "-F", "raw", s(vhdx), s(raw)],
    );
}

/// The virtual disk as QEMU reads it: `qemu-img convert -O raw`.
fn qemu_read_all(vhdx: &Path) -> Vec<u8> {
    let raw = vhdx.with_extension("qemu.raw");
    run_ok(
        "qemu-img",
        &["convert", "-f", "vhdx", "-O", "raw", s(vhdx), s(&raw)],
    );
    let data = std::fs::read(&raw).unwrap();
    std::fs::remove_file(&raw).unwrap();
    data
}

/// The virtual size QEMU reports (`virtual size: 10 MiB (10485760 bytes)`).
fn qemu_virtual_size(vhdx: &Path) -> u64 {
    let out = run_ok("qemu-img", &["info", "-f", "vhdx", s(vhdx)]);
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with("virtual size:"))
        .expect("a virtual size in qemu-img info");
    let at = line.rfind('(').expect("the size in bytes") + 1;
    line[at..].trim_end_matches(" bytes)").parse().unwrap()
}

// ---------------------------------------------------------------------------
// Our side
// ---------------------------------------------------------------------------

fn read_all(v: &Vhdx) -> Vec<u8> {
    let mut buf = vec![0u8; v.virtual_size() as usize];
    v.read(0, &mut buf).unwrap();
    buf
}

fn chain_read_all(c: &Chain) -> Vec<u8> {
    let mut buf = vec![0u8; c.virtual_size() as usize];
    c.read(0, &mut buf).unwrap();
    buf
}

/// Our `check` must find nothing wrong.
fn assert_our_check_valid(path: &Path) {
    let r = vhdx::check(&LocalFs, path).unwrap();
    assert!(
        r.is_valid(),
        "our check finds problems in {}: {:#?}",
        path.display(),
        r.problems
    );
}

/// Compares two images of a disk and names the first differing byte.
#[track_caller]
fn assert_same(what: &str, got: &[u8], want: &[u8]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    if let Some(i) = got.iter().zip(want).position(|(a, b)| a != b) {
        let end = (i..got.len())
            .find(|&j| got[j] == want[j])
            .unwrap_or(got.len());
        panic!(
            "{what}: first difference at byte {i} ({} into its MiB), {} bytes long: got {:#04x}, want {:#04x}",
            i as u64 % MIB,
            end - i,
            got[i],
            want[i]
        );
    }
}

fn write_raw(path: &Path, data: &[u8]) {
    std::fs::write(path, data).unwrap();
}

/// Applies random writes, zeros and trims to `v` and to `model`, with
/// flushes now and then. Sizes range from a few bytes to more than a block,
/// so whole-block zeros and trims happen for every block size.
fn random_ops(v: &mut Vhdx, model: &mut [u8], seed: u64, n: usize) {
    let mut rng = SmallRng::seed_from_u64(seed);
    let size = model.len() as u64;
    let ss = v.logical_sector_size() as u64;
    let bs = v.block_size() as u64;
    let fixed = v.disk_type() == DiskType::Fixed;
    for _ in 0..n {
        let op = rng.gen_range(0..10);
        let max_len = match (op, rng.gen_range(0..4)) {
            (0 | 1, 0) => bs + bs / 2,
            (_, 0 | 1) => 5000,
            _ => 300_000,
        };
        let mut len = rng.gen_range(1..=max_len).min(size);
        let mut off = rng.gen_range(0..=size - len);
        if rng.gen_bool(0.3) {
            // Whole sectors now and then, the rest byte-granular.
            off = off / ss * ss;
            len = len.div_ceil(ss) * ss;
            len = len.min(size - off);
        }
        match op {
            0 => {
                v.zero(off, len).unwrap();
                model[off as usize..(off + len) as usize].fill(0);
            }
            1 => {
                v.trim(off, len).unwrap();
                // Trim drops whole blocks only (the tail block counts as
                // whole when the range reaches the end of the disk), and
                // nothing at all on a fixed disk.
                if !fixed {
                    let mut b = off.div_ceil(bs);
                    while b * bs < off + len {
                        let end = ((b + 1) * bs).min(size);
                        if end <= off + len {
                            model[(b * bs) as usize..end as usize].fill(0);
                        }
                        b += 1;
                    }
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

/// One `qemu-io write` (a fill pattern, or zeros with `-z`) and its effect
/// on a model of the disk.
#[derive(Clone, Copy)]
struct QemuWrite {
    offset: u64,
    len: u64,
    /// `None` writes zeros (`write -z`).
    pattern: Option<u8>,
}

impl QemuWrite {
    fn command(&self) -> String {
        match self.pattern {
            Some(p) => format!("write -P {p:#04x} {} {}", self.offset, self.len),
            None => format!("write -z {} {}", self.offset, self.len),
        }
    }
    fn apply(&self, model: &mut [u8]) {
        model[self.offset as usize..(self.offset + self.len) as usize]
            .fill(self.pattern.unwrap_or(0));
    }
}

/// What `offset..offset+len` holds after `writes`, on a disk that started
/// as zeros: a model for disks too large to hold in memory.
fn expected(offset: u64, len: u64, writes: &[QemuWrite]) -> Vec<u8> {
    let mut out = vec![0u8; len as usize];
    for w in writes {
        let s = w.offset.max(offset);
        let e = (w.offset + w.len).min(offset + len);
        if s < e {
            out[(s - offset) as usize..(e - offset) as usize].fill(w.pattern.unwrap_or(0));
        }
    }
    out
}

/// qemu-io commands that read each written range, with a margin on both
/// sides, and fail on any byte that differs from `writes`.
fn qemu_verify_commands(size: u64, writes: &[QemuWrite]) -> Vec<String> {
    let mut cmds = Vec::new();
    for w in writes {
        let start = w.offset.saturating_sub(4096);
        let end = (w.offset + w.len + 4096).min(size);
        // Split the window into runs of one expected byte value.
        let want = expected(start, end - start, writes);
        let mut i = 0;
        while i < want.len() {
            let j = (i..want.len())
                .find(|&j| want[j] != want[i])
                .unwrap_or(want.len());
            cmds.push(format!(
                "read -P {:#04x} {} {}",
                want[i],
                start + i as u64,
                j - i
            ));
            i = j;
        }
    }
    cmds
}

/// Writes at aligned, unaligned, sub-sector, block-crossing and end-of-disk
/// offsets, some overlapping earlier ones.
fn qemu_write_set(size: u64, bs: u64) -> Vec<QemuWrite> {
    let w = |offset: u64, len: u64, pattern: Option<u8>| QemuWrite {
        offset,
        len,
        pattern,
    };
    vec![
        w(0, 4096, Some(0x11)),
        w(1000, 3000, Some(0x22)),
        w(bs - 700, 1400, Some(0x33)),
        w(bs + 12_345, 77, Some(0x44)),
        w(bs, bs, None),
        w(bs + 512, 3 * MIB / 2 + 100, Some(0x55)),
        w(bs + MIB / 2, 4096, None),
        w(size - 777, 777, Some(0x66)),
        w(size / 2 + 3, 1, Some(0x77)),
        w(2 * bs, bs.min(size - 2 * bs), Some(0x88)),
        w(2 * bs + 100, 200, None),
    ]
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

// ---------------------------------------------------------------------------
// 1 + 4: QEMU writes, we read (and check)
// ---------------------------------------------------------------------------

/// Images made and filled by QEMU read the same in ours as in
/// `qemu-img convert`, byte for byte, and as the model of what was written;
/// our `check` finds them valid. Then we write to them, and QEMU still finds
/// them valid and reads what we wrote.
#[test]
fn qemu_images_read_identically_in_ours() {
    require_qemu!();
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("dynamic", 1, ""),
        ("dynamic", 8, ""),
        ("dynamic", 32, ""),
        ("fixed", 1, ""),
        ("fixed", 8, ""),
        ("fixed", 32, ""),
        ("dynamic", 1, ",log_size=1M"),
        ("fixed", 8, ",log_size=1M"),
        ("dynamic", 8, ",log_size=4M"),
        ("dynamic", 32, ",block_state_zero=off"),
    ];
    for (i, (subformat, bs_mib, extra)) in cases.into_iter().enumerate() {
        let bs = bs_mib * MIB;
        let what = format!("qemu {subformat} block_size={bs_mib}M{extra}");
        // Not a multiple of the block size nor of 1 MiB: the last block is
        // partial.
        let size = 2 * bs + 3 * MIB + 1536;
        let path = dir.path().join(format!("q{i}.vhdx"));
        qemu_create(
            &path,
            &format!("subformat={subformat},block_size={bs_mib}M{extra}"),
            size,
        );
        assert_eq!(qemu_virtual_size(&path), size, "{what}");
        assert_our_check_valid(&path);

        let mut model = vec![0u8; size as usize];
        let writes = qemu_write_set(size, bs);
        qemu_io(
            &path,
            &writes.iter().map(QemuWrite::command).collect::<Vec<_>>(),
        );
        writes.iter().for_each(|w| w.apply(&mut model));

        assert_our_check_valid(&path);
        let v = Vhdx::open(&LocalFs, &path, false).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(v.virtual_size(), size, "{what}");
        assert_eq!(v.block_size() as u64, bs, "{what}");
        let want_type = if subformat == "fixed" {
            DiskType::Fixed
        } else {
            DiskType::Dynamic
        };
        assert_eq!(v.disk_type(), want_type, "{what}");
        let ours = read_all(&v);
        drop(v);
        let theirs = qemu_read_all(&path);
        assert_same(
            &format!("{what}: qemu-img convert vs the model"),
            &theirs,
            &model,
        );
        assert_same(&format!("{what}: ours vs qemu-img convert"), &ours, &theirs);

        // Now we write to QEMU's file; QEMU must accept and read the result.
        let mut v = Vhdx::open(&LocalFs, &path, true).unwrap();
        random_ops(&mut v, &mut model, 100 + i as u64, 40);
        v.close().unwrap();
        assert_our_check_valid(&path);
        qemu_check(&path);
        let raw = dir.path().join(format!("q{i}.raw"));
        write_raw(&raw, &model);
        qemu_compare(&path, &raw);
        assert_same(
            &format!("{what}: ours after our writes"),
            &read_all(&Vhdx::open(&LocalFs, &path, false).unwrap()),
            &model,
        );
        std::fs::remove_file(&raw).unwrap();
        std::fs::remove_file(&path).unwrap();
    }
}

/// A QEMU image whose log still holds an update: qemu-io writes through
/// blkdebug, which fails the in-place BAT write that follows the log write,
/// so the BAT entry exists only in the log. Ours must replay it (in memory
/// for a read-only open, without touching the file; in place for a writable
/// one) and read what QEMU reads after `qemu-img check -r all`.
#[test]
fn qemu_image_with_a_dirty_log() {
    require_qemu!();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dirty.vhdx");
    let size = 10 * MIB;
    qemu_create(&path, "subformat=dynamic,block_size=1M", size);
    let mut model = vec![0u8; size as usize];
    let before = QemuWrite {
        offset: 3 * MIB + 100,
        len: 5000,
        pattern: Some(0x5a),
    };
    qemu_io(&path, &[before.command()]);
    before.apply(&mut model);

    let bat_offset = {
        let v = Vhdx::open(&LocalFs, &path, false).unwrap();
        let bat = v
            .region_table()
            .find(vhdx::format::BAT_REGION_GUID)
            .expect("a BAT region")
            .file_offset;
        bat
    };
    let torn = QemuWrite {
        offset: 64 * 1024 + 17,
        len: 70_000,
        pattern: Some(0xc3),
    };
    let spec = format!(
        r#"json:{{"driver":"vhdx","file":{{"driver":"blkdebug","inject-error":[{{"event":"pwritev","sector":{},"once":true}}],"image":{{"driver":"file","filename":"{}"}}}}}}"#,
        bat_offset / 512,
        s(&path)
    );
    let out = run("qemu-io", &["-c", &torn.command(), &spec]);
    let text = tools::text(&out);
    if !text.contains("Input/output error") {
        // The injection did not hit the BAT write: the image is clean and
        // this QEMU cannot make a dirty one this way.
        eprintln!("skipping the dirty-log case: blkdebug did not fail the BAT update:\n{text}");
        return;
    }
    torn.apply(&mut model);
    assert_stale_bat_entry(&path, bat_offset, torn.offset / MIB);
    let refused = run("qemu-img", &["info", "-f", "vhdx", s(&path)]);
    assert!(
        !refused.status.success(),
        "qemu opens the image read-only, so its log is not dirty"
    );

    // Read-only: replayed in memory, file untouched.
    let original = std::fs::read(&path).unwrap();
    let notes = vhdx::check(&LocalFs, &path).unwrap();
    assert!(notes.is_valid(), "{:#?}", notes.problems);
    assert!(
        !notes.notes.is_empty(),
        "our check does not mention the log to replay"
    );
    let v = Vhdx::open(&LocalFs, &path, false).unwrap();
    assert!(v.log_was_replayed());
    let ours = read_all(&v);
    drop(v);
    assert!(
        std::fs::read(&path).unwrap() == original,
        "a read-only open modified the file"
    );
    assert_same("ours (read-only replay) vs the model", &ours, &model);

    // QEMU's own replay, on a copy.
    let copy = dir.path().join("dirty-copy.vhdx");
    std::fs::copy(&path, &copy).unwrap();
    run_ok(
        "qemu-img",
        &["check", "-q", "-r", "all", "-f", "vhdx", s(&copy)],
    );
    assert_same(
        "ours (read-only replay) vs qemu after its replay",
        &ours,
        &qemu_read_all(&copy),
    );

    // Writable: replayed in place; QEMU then opens it read-only.
    Vhdx::open(&LocalFs, &path, true).unwrap().close().unwrap();
    qemu_check(&path);
    assert_same(
        "qemu after our replay vs the model",
        &qemu_read_all(&path),
        &model,
    );
    assert_our_check_valid(&path);
}

/// The BAT entry of `block` as the file holds it, without the log: it must
/// not be FULLY_PRESENT yet, so the block's data is reachable only by
/// replaying the log.
fn assert_stale_bat_entry(path: &Path, bat_offset: u64, block: u64) {
    let index = {
        let v = Vhdx::open(&LocalFs, path, false).unwrap();
        assert_eq!(
            v.block_entry(block).0,
            vhdx::PayloadBlockState::FullyPresent,
            "the log does not allocate block {block}"
        );
        v.geometry().payload_index(block) as u64
    };
    let file = std::fs::read(path).unwrap();
    let at = (bat_offset + index * 8) as usize;
    let entry = u64::from_le_bytes(file[at..at + 8].try_into().unwrap());
    assert_ne!(
        entry & 7,
        6,
        "block {block} is already allocated in the BAT on disk: the log is not needed"
    );
}

// ---------------------------------------------------------------------------
// 2: we write, QEMU reads
// ---------------------------------------------------------------------------

/// Images we create and fill pass `qemu-img check` and compare equal to a
/// raw file holding the same content. QEMU then writes to them, and ours
/// reads what it wrote.
#[test]
fn our_images_pass_qemu_check_and_compare() {
    require_qemu!();
    let dir = tempfile::tempdir().unwrap();
    let mut case = 0;
    for disk_type in [DiskType::Dynamic, DiskType::Fixed] {
        for bs in [MIB, 32 * MIB] {
            for ss in [512u32, 4096] {
                case += 1;
                let what = format!(
                    "our {} block_size={}M sector={ss}",
                    disk_type.name(),
                    bs / MIB
                );
                let size = 2 * bs + 3 * MIB + 4096 * 3;
                let path = dir.path().join(format!("o{case}.vhdx"));
                let raw = dir.path().join(format!("o{case}.raw"));
                let mut model = vec![0u8; size as usize];
                let mut v = create(&LocalFs, &path, &opts(size, disk_type, bs, ss)).unwrap();
                random_ops(&mut v, &mut model, case, 60);
                v.close().unwrap();
                write_raw(&raw, &model);

                assert_our_check_valid(&path);
                let v = Vhdx::open(&LocalFs, &path, false).unwrap();
                assert_same(
                    &format!("{what}: ours after reopening"),
                    &read_all(&v),
                    &model,
                );
                drop(v);
                if !qemu_opens(&path, sector_limit(ss)) {
                    continue;
                }
                qemu_check(&path);
                assert_eq!(qemu_virtual_size(&path), size, "{what}");
                qemu_compare(&path, &raw);
                if case == 1 {
                    // The comparison is not vacuous: one changed byte fails it.
                    let mut off_by_one = model.clone();
                    off_by_one[size as usize / 2] ^= 1;
                    write_raw(&raw, &off_by_one);
                    let args = [
                        "compare",
                        "-q",
                        "-f",
                        "vhdx",
                        "-F",
                        "raw",
                        s(&path),
                        s(&raw),
                    ];
                    let out = run("qemu-img", &args);
                    assert_eq!(
                        out.status.code(),
                        Some(1),
                        "{}",
                        describe("qemu-img", &args, &out)
                    );
                    write_raw(&raw, &model);
                }

                // QEMU converts the same content into its own VHDX (zero
                // detection, its own layout); we read that identically.
                let converted = dir.path().join(format!("o{case}-qemu.vhdx"));
                let layout = format!("subformat={},block_size={}M", disk_type.name(), bs / MIB);
                run_ok(
                    "qemu-img",
                    &[
                        "convert",
                        "-f",
                        "raw",
                        "-O",
                        "vhdx",
                        "-o",
                        &layout,
                        s(&raw),
                        s(&converted),
                    ],
                );
                assert_our_check_valid(&converted);
                let v = Vhdx::open(&LocalFs, &converted, false).unwrap();
                assert_same(
                    &format!("{what}: ours reading qemu-img convert output"),
                    &read_all(&v),
                    &model,
                );
                drop(v);
                std::fs::remove_file(&converted).unwrap();

                // QEMU writes into our file; we read it back.
                let writes = qemu_write_set(size, bs);
                qemu_io(
                    &path,
                    &writes.iter().map(QemuWrite::command).collect::<Vec<_>>(),
                );
                writes.iter().for_each(|w| w.apply(&mut model));
                assert_our_check_valid(&path);
                let v = Vhdx::open(&LocalFs, &path, false).unwrap();
                assert_same(
                    &format!("{what}: ours after qemu-io"),
                    &read_all(&v),
                    &model,
                );
                drop(v);
                write_raw(&raw, &model);
                qemu_check(&path);
                qemu_compare(&path, &raw);
                std::fs::remove_file(&raw).unwrap();
                std::fs::remove_file(&path).unwrap();
            }
        }
    }
}

// ---------------------------------------------------------------------------
// 3: chains, merged and flattened
// ---------------------------------------------------------------------------

/// Partial-sector writes and zeros through a chain, checked against the
/// model at every level.
fn chain_ops(chain: &mut Chain, model: &mut [u8], rng: &mut SmallRng, n: usize) {
    let size = model.len() as u64;
    for _ in 0..n {
        let len = if rng.gen_bool(0.2) {
            rng.gen_range(1..600u64)
        } else {
            rng.gen_range(1..200_000u64)
        };
        let off = rng.gen_range(0..=size - len);
        if rng.gen_bool(0.15) {
            chain.zero(off, len).unwrap();
            model[off as usize..(off + len) as usize].fill(0);
        } else {
            let data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            chain.write(off, &data).unwrap();
            model[off as usize..(off + len) as usize].copy_from_slice(&data);
        }
        if rng.gen_bool(0.1) {
            chain.flush().unwrap();
        }
    }
}

/// Copies what a chain stores (not its unallocated zeros) into a new
/// dynamic file made by our `create`.
fn flatten(chain_top: &Path, out: &Path, bs: u64) {
    let chain = Chain::open(&LocalFs, chain_top, false).unwrap();
    let size = chain.virtual_size();
    let ss = chain.logical_sector_size();
    let mut flat = create(&LocalFs, out, &opts(size, DiskType::Dynamic, bs, ss)).unwrap();
    let mut buf = Vec::new();
    for (offset, len, layer) in chain.map(0, size).unwrap() {
        if layer.is_none() {
            continue;
        }
        let mut done = 0;
        while done < len {
            let n = (4 * MIB).min(len - done);
            buf.resize(n as usize, 0);
            chain.read(offset + done, &mut buf).unwrap();
            flat.write(offset + done, &buf).unwrap();
            done += n;
        }
    }
    flat.close().unwrap();
    chain.close().unwrap();
}

/// A base and three differencing levels written with partial sectors; the
/// chain reads as the model. Flattened into a new file, and merged level by
/// level down to the base, the result passes `qemu-img check` and compares
/// equal to the model in QEMU.
#[test]
fn chains_merge_and_flatten_into_files_qemu_accepts() {
    require_qemu!();
    let cases = [
        // (base type, base block size, child block size, sector size)
        (DiskType::Dynamic, MIB, None, 512u32),
        (DiskType::Fixed, 2 * MIB, Some(MIB as u32), 512),
        (DiskType::Dynamic, MIB, Some(2 * MIB as u32), 4096),
    ];
    for (case, (base_type, base_bs, child_bs, ss)) in cases.into_iter().enumerate() {
        let what = format!("chain on a {} base, sector {ss}", base_type.name());
        let dir = tempfile::tempdir().unwrap();
        let size = 7 * MIB + 3 * 4096;
        let base = dir.path().join("base.vhdx");
        let mut model = vec![0u8; size as usize];
        let mut v = create(&LocalFs, &base, &opts(size, base_type, base_bs, ss)).unwrap();
        random_ops(&mut v, &mut model, 1000 + case as u64, 15);
        v.close().unwrap();

        let mut rng = SmallRng::seed_from_u64(case as u64);
        let mut files = vec![base.clone()];
        for level in 1..=3 {
            let child = dir.path().join(format!("level{level}.avhdx"));
            create_child(&LocalFs, &child, files.last().unwrap(), child_bs)
                .unwrap()
                .close()
                .unwrap();
            let mut chain = Chain::open(&LocalFs, &child, true).unwrap();
            assert_eq!(chain.layers().len(), level + 1);
            chain_ops(&mut chain, &mut model, &mut rng, 40);
            assert_same(
                &format!("{what}: level {level}"),
                &chain_read_all(&chain),
                &model,
            );
            chain.close().unwrap();
            assert_our_check_valid(&child);
            // QEMU refuses differencing files today; should it open them,
            // it must read the chain as the model.
            if qemu_opens(&child, Some("a differencing file")) {
                let raw = dir.path().join(format!("level{level}.raw"));
                write_raw(&raw, &model);
                qemu_compare(&child, &raw);
            }
            files.push(child);
        }
        let top = files.last().unwrap().clone();
        let chain = Chain::open(&LocalFs, &top, false).unwrap();
        assert_same(
            &format!("{what}: reopened"),
            &chain_read_all(&chain),
            &model,
        );
        drop(chain);
        let raw = dir.path().join("model.raw");
        write_raw(&raw, &model);

        // Flattened into one dynamic file.
        let flat = dir.path().join("flat.vhdx");
        flatten(&top, &flat, MIB);
        assert_our_check_valid(&flat);
        let v = Vhdx::open(&LocalFs, &flat, false).unwrap();
        assert_same(&format!("{what}: flattened"), &read_all(&v), &model);
        drop(v);
        if qemu_opens(&flat, sector_limit(ss)) {
            qemu_check(&flat);
            qemu_compare(&flat, &raw);
        }

        // Merged level by level; after each merge the chain, now one level
        // shorter, still reads the model.
        while files.len() > 1 {
            let child = files.pop().unwrap();
            let report = vhdx::merge_into_parent(&LocalFs, &child, true, &mut |_, _| {}).unwrap();
            assert!(!child.exists(), "{what}: merged child not removed");
            let parent = files.last().unwrap();
            assert_eq!(absolute(&report.parent), absolute(parent));
            assert_our_check_valid(parent);
            let chain = Chain::open(&LocalFs, parent, false).unwrap();
            assert_same(
                &format!("{what}: after merging {}", child.display()),
                &chain_read_all(&chain),
                &model,
            );
        }
        assert_our_check_valid(&base);
        if qemu_opens(&base, sector_limit(ss)) {
            qemu_check(&base);
            qemu_compare(&base, &raw);
            assert_same(
                &format!("{what}: merged base in qemu"),
                &qemu_read_all(&base),
                &model,
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Large disks: BAT entries of payload blocks interleave with sector bitmap
// entries every 4 GiB (§2.5: the chunk ratio of 512-byte sectors), and the
// two implementations must agree on where each block's entry is.
// ---------------------------------------------------------------------------

/// Writes around the 4 GiB and 8 GiB chunk boundaries and at the end of a
/// 9 GiB disk, made by QEMU and read by us, and the other way round.
#[test]
fn large_disks_agree_on_the_bat_layout() {
    require_qemu!();
    let dir = tempfile::tempdir().unwrap();
    const GIB: u64 = 1 << 30;
    let size = 9 * GIB + 1536;
    let w = |offset: u64, len: u64, pattern: u8| QemuWrite {
        offset,
        len,
        pattern: Some(pattern),
    };
    let writes = [
        w(4 * GIB - 700, 1400, 0x1d),
        w(4 * GIB + 40 * MIB + 3, 5000, 0x2e),
        w(8 * GIB - MIB, 2 * MIB, 0x3f),
        w(size - 777, 777, 0x40),
        w(100, 200, 0x51),
    ];
    for bs_mib in [1u64, 32] {
        let what = format!("9 GiB, block_size={bs_mib}M");
        // QEMU writes, we read.
        let path = dir.path().join(format!("qemu-large-{bs_mib}.vhdx"));
        qemu_create(
            &path,
            &format!("subformat=dynamic,block_size={bs_mib}M"),
            size,
        );
        qemu_io(
            &path,
            &writes.iter().map(QemuWrite::command).collect::<Vec<_>>(),
        );
        assert_our_check_valid(&path);
        let v = Vhdx::open(&LocalFs, &path, false).unwrap();
        for x in &writes {
            let start = x.offset.saturating_sub(8192);
            let end = (x.offset + x.len + 8192).min(size);
            let mut got = vec![0u8; (end - start) as usize];
            v.read(start, &mut got).unwrap();
            assert_same(
                &format!("{what}: ours at {start} (qemu image)"),
                &got,
                &expected(start, end - start, &writes),
            );
        }
        drop(v);
        std::fs::remove_file(&path).unwrap();

        // We write, QEMU reads.
        let path = dir.path().join(format!("ours-large-{bs_mib}.vhdx"));
        let mut v = create(
            &LocalFs,
            &path,
            &opts(size, DiskType::Dynamic, bs_mib * MIB, 512),
        )
        .unwrap();
        for x in &writes {
            v.write(x.offset, &vec![x.pattern.unwrap(); x.len as usize])
                .unwrap();
        }
        v.close().unwrap();
        assert_our_check_valid(&path);
        qemu_check(&path);
        assert_eq!(qemu_virtual_size(&path), size, "{what}");
        qemu_io(&path, &qemu_verify_commands(size, &writes));
        std::fs::remove_file(&path).unwrap();
    }
}

// ---------------------------------------------------------------------------
// Our log, replayed by QEMU
// ---------------------------------------------------------------------------

/// A file whose writes into one range of offsets fail once armed, as a
/// disk that stops accepting writes mid-flush would.
struct FailWritesIn {
    inner: Arc<dyn Storage>,
    range: std::ops::Range<u64>,
    armed: AtomicBool,
}

impl Storage for FailWritesIn {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<()> {
        self.inner.read_at(offset, buf)
    }
    fn write_at(&self, offset: u64, buf: &[u8]) -> std::io::Result<()> {
        let end = offset + buf.len() as u64;
        if self.armed.load(Ordering::SeqCst) && offset < self.range.end && self.range.start < end {
            return Err(std::io::Error::other("injected write failure"));
        }
        self.inner.write_at(offset, buf)
    }
    fn flush(&self) -> std::io::Result<()> {
        self.inner.flush()
    }
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.inner.set_len(len)
    }
    fn change_stamp(&self) -> std::io::Result<String> {
        self.inner.change_stamp()
    }
}

/// Our log entries, as QEMU replays them. Many flushes of metadata-only
/// changes (whole-block zeros and trims) wrap the 1 MB log around; then the
/// in-place BAT update of a final flush fails, so the newest BAT lives only
/// in our log. QEMU refuses the file read-only, replays our log with
/// `qemu-img check -r all`, and must then read what we wrote.
#[test]
fn qemu_replays_our_log() {
    require_qemu!();
    let dir = tempfile::tempdir().unwrap();
    const GIB: u64 = 1 << 30;
    let size = 9 * GIB;
    let path = dir.path().join("ours-dirty.vhdx");
    let w = |offset: u64, len: u64, pattern: u8| QemuWrite {
        offset,
        len,
        pattern: Some(pattern),
    };
    let early = [w(5 * MIB + 12, 3000, 0x61), w(6 * GIB + 999, 70_000, 0x62)];
    let late = [
        w(2 * GIB + 7, 1 << 16, 0x71),
        w(8 * GIB + 4096, 2 * MIB + 5, 0x72),
        w(5 * MIB + 100, 10, 0x73),
    ];
    let mut v = create(&LocalFs, &path, &opts(size, DiskType::Dynamic, MIB, 512)).unwrap();
    for x in &early {
        v.write(x.offset, &vec![x.pattern.unwrap(); x.len as usize])
            .unwrap();
    }
    v.close().unwrap();

    let file = LocalFs.open(&path, OpenMode::ReadWrite).unwrap();
    let (bat_offset, bat_len) = {
        let v = Vhdx::open(&LocalFs, &path, false).unwrap();
        let e = v
            .region_table()
            .find(vhdx::format::BAT_REGION_GUID)
            .unwrap();
        (e.file_offset, e.length as u64)
    };
    let failing = Arc::new(FailWritesIn {
        inner: file,
        range: bat_offset..bat_offset + bat_len,
        armed: AtomicBool::new(false),
    });
    let mut v = Vhdx::open_file(failing.clone(), s(&path), true).unwrap();
    // One whole block per BAT page, untouched by the writes: zero, then
    // trim, then zero again... each flush is one log entry of 19 pages.
    let blocks: Vec<u64> = (0..18).map(|page| page * 512 + 300).collect();
    for round in 0..40 {
        for b in &blocks {
            if round % 2 == 0 {
                v.zero(b * MIB, MIB).unwrap();
            } else {
                v.trim(b * MIB, MIB).unwrap();
            }
        }
        v.flush().unwrap();
    }
    assert!(
        v.stats().log_entries >= 40,
        "the log did not wrap: {:?}",
        v.stats()
    );
    for x in &late {
        v.write(x.offset, &vec![x.pattern.unwrap(); x.len as usize])
            .unwrap();
    }
    failing.armed.store(true, Ordering::SeqCst);
    assert!(
        v.flush().is_err(),
        "the injected BAT write failure did not happen"
    );
    v.abandon();
    drop(failing);

    assert_stale_bat_entry(&path, bat_offset, late[0].offset / MIB);
    let writes: Vec<QemuWrite> = early.iter().chain(&late).copied().collect();
    // Ours, read-only: replays in memory.
    let v = Vhdx::open(&LocalFs, &path, false).unwrap();
    assert!(v.log_was_replayed());
    for x in &writes {
        let mut got = vec![0u8; x.len as usize + 2];
        let start = x.offset - 1;
        v.read(start, &mut got).unwrap();
        assert_same(
            &format!("ours at {start}"),
            &got,
            &expected(start, x.len + 2, &writes),
        );
    }
    drop(v);
    assert_our_check_valid(&path);

    // QEMU sees a log to replay and will not open the file read-only.
    let refused = run("qemu-img", &["info", "-f", "vhdx", s(&path)]);
    assert!(
        !refused.status.success(),
        "qemu does not see our log as needing replay"
    );
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("replay"),
        "{}",
        describe("qemu-img", &["info"], &refused)
    );
    let copy = dir.path().join("ours-dirty-copy.vhdx");
    std::fs::copy(&path, &copy).unwrap();
    run_ok(
        "qemu-img",
        &["check", "-q", "-r", "all", "-f", "vhdx", s(&copy)],
    );
    qemu_check(&copy);
    qemu_io(&copy, &qemu_verify_commands(size, &writes));

    // Ours, writable: replays in place; QEMU reads it without a replay.
    Vhdx::open(&LocalFs, &path, true).unwrap().close().unwrap();
    qemu_check(&path);
    qemu_io(&path, &qemu_verify_commands(size, &writes));
}

/// A flush whose in-place BAT update fails must not lose the update: the
/// next flush commits it again, so after that flush and a clean close
/// (which clears LogGuid, so nothing is replayed) the block written before
/// the failure still reads back, in ours and in QEMU.
#[test]
fn a_failed_flush_is_committed_by_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("retry.vhdx");
    let size = 5 << 30;
    let v = create(&LocalFs, &path, &opts(size, DiskType::Dynamic, MIB, 512)).unwrap();
    let bat = v
        .region_table()
        .find(vhdx::format::BAT_REGION_GUID)
        .unwrap()
        .clone();
    v.close().unwrap();
    let failing = Arc::new(FailWritesIn {
        inner: LocalFs.open(&path, OpenMode::ReadWrite).unwrap(),
        range: bat.file_offset..bat.file_offset + bat.length as u64,
        armed: AtomicBool::new(false),
    });
    let mut v = Vhdx::open_file(failing.clone(), s(&path), true).unwrap();
    let w = |offset: u64, len: u64, pattern: u8| QemuWrite {
        offset,
        len,
        pattern: Some(pattern),
    };
    // Two blocks whose BAT entries lie in different 4 KB pages.
    let writes = [w(1000, 4096, 0x17), w(4 << 30, 4096, 0x29)];
    v.write(writes[0].offset, &[0x17; 4096]).unwrap();
    failing.armed.store(true, Ordering::SeqCst);
    assert!(
        v.flush().is_err(),
        "the injected BAT write failure did not happen"
    );
    failing.armed.store(false, Ordering::SeqCst);
    v.write(writes[1].offset, &[0x29; 4096]).unwrap();
    v.flush().unwrap();
    v.close().unwrap();
    drop(failing);

    let v = Vhdx::open(&LocalFs, &path, false).unwrap();
    assert!(!v.log_was_replayed(), "a clean close left a log to replay");
    for x in &writes {
        let mut got = vec![0u8; x.len as usize + 2000];
        v.read(x.offset - 1000, &mut got).unwrap();
        let want = expected(x.offset - 1000, got.len() as u64, &writes);
        assert_same(&format!("block at {}", x.offset), &got, &want);
    }
    drop(v);
    assert_our_check_valid(&path);
    if qemu_available() {
        qemu_check(&path);
        qemu_io(&path, &qemu_verify_commands(size, &writes));
    }
}

fn absolute(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap()
}
