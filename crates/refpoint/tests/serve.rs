//! `refpoint serve` as its users see it: real NBD clients (qemu-img,
//! qemu-io, nbdinfo, nbdcopy) and a small NBD client of our own on
//! `nbd.sock`, the management API on `api.sock`, backups of a disk that is
//! being written, `kill -9` of the daemon, and graceful stop and restart.
//!
//! Every test runs its own daemon in its own state directory; the
//! [`common::Daemon`] guard kills it if the test ends early.

mod common;

use common::{s, Env};
use nbd::proto::{NBD_EPERM, NBD_FLAG_READ_ONLY};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::compare::{assert_same, first_difference};
use testkit::nbd_client::{Disk, NbdError};
use testkit::ranges::covered;
use testkit::tools;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
/// The tracking's default granularity.
const GRANULARITY: u64 = 64 * KIB;
/// How long one peer tool may run.
const TOOL_LIMIT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------
// The CLI (the daemon is common::Env::serve)
// ---------------------------------------------------------------------------

impl Env {
    fn nbd(&self, export: &str) -> Disk {
        Disk::connect(&self.nbd_socket(), export, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("NBD connection to {export}: {e:?}"))
    }

    /// `rct seal vm1/disk0`: the new RCT ID.
    fn seal(&self) -> String {
        let out = self.ok(&["rct", "seal", "vm1/disk0"]);
        out.lines().last().unwrap().trim().to_string()
    }

    /// `rct changes vm1/disk0 --since ID --json`: the ranges.
    fn changes(&self, since: &str) -> Vec<(u64, u64)> {
        let v = self.json(&["rct", "changes", "vm1/disk0", "--since", since, "--json"]);
        v["ranges"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| (r["offset"].as_u64().unwrap(), r["length"].as_u64().unwrap()))
            .collect()
    }
}

// ---------------------------------------------------------------------------
// Ranges, extents and content
// ---------------------------------------------------------------------------

/// The `unit`-sized chunks a set of ranges touches.
fn chunks(ranges: &[(u64, u64)], unit: u64) -> std::collections::BTreeSet<u64> {
    ranges
        .iter()
        .filter(|r| r.1 > 0)
        .flat_map(|&(o, l)| o / unit..(o + l).div_ceil(unit))
        .collect()
}

/// Changed ranges cover every written byte, and only the granules the
/// writes touched.
fn assert_changes_match(what: &str, changed: &[(u64, u64)], written: &[(u64, u64)]) {
    for &(o, l) in written {
        assert!(
            covered(changed, o, l),
            "{what}: write {o:#x}+{l:#x} not covered by {changed:x?}"
        );
    }
    let extra: Vec<_> = chunks(changed, GRANULARITY)
        .difference(&chunks(written, GRANULARITY))
        .map(|c| c * GRANULARITY)
        .collect();
    assert!(
        extra.is_empty(),
        "{what}: changes in granules nothing was written to: {extra:x?} (changes {changed:x?})"
    );
}

/// `nbdinfo --map[=CONTEXT]`: (offset, length, flags) per line.
fn nbdinfo_map(uri: &str, context: Option<&str>) -> Vec<(u64, u64, u32)> {
    let map = match context {
        Some(c) => format!("--map={c}"),
        None => "--map".to_string(),
    };
    let out = tools::ok(Command::new("nbdinfo").arg(&map).arg(uri), TOOL_LIMIT);
    tools::parse_nbdinfo_map(&out)
        .into_iter()
        .map(|(o, l, f, _)| (o, l, f))
        .collect()
}

/// The ranges of a map whose flags have `bit` set (or clear).
fn with_flag(map: &[(u64, u64, u32)], bit: u32, set: bool) -> Vec<(u64, u64)> {
    map.iter()
        .filter(|e| (e.2 & bit != 0) == set)
        .map(|e| (e.0, e.1))
        .collect()
}

/// The ranges where two contents differ.
fn differences(a: &[u8], b: &[u8]) -> Vec<(u64, u64)> {
    assert_eq!(a.len(), b.len());
    let mut out = Vec::new();
    let mut i = 0;
    while let Some(d) = first_difference(&a[i..], &b[i..]) {
        let start = i + d;
        let len = a[start..]
            .iter()
            .zip(&b[start..])
            .position(|(x, y)| x == y)
            .unwrap_or(a.len() - start);
        out.push((start as u64, len as u64));
        i = start + len;
    }
    out
}

// ---------------------------------------------------------------------------
// 1. Real NBD clients
// ---------------------------------------------------------------------------

#[test]
fn real_nbd_clients_read_write_and_see_changes() {
    let env = Env::new();
    let size = 64 * MIB;
    env.machine(size, "1M", None);
    let _d = env.serve(&[]);
    let id = env.seal();
    let live = env.uri("vm1/disk0");

    // Pattern writes with qemu-io, one of them unaligned to the granularity.
    let writes: [(u64, u64, u8); 4] = [
        (10 * MIB, MIB, 0x5a),
        (40 * MIB + 96 * KIB + 512, 100 * KIB, 0xa5),
        (63 * MIB + 4 * KIB, 8 * KIB, 0x3c),
        (20 * MIB - 512, 1024, 0x11),
    ];
    let mut model = vec![0u8; size as usize];
    for &(o, l, p) in &writes {
        model[o as usize..(o + l) as usize].fill(p);
    }
    let cmds: Vec<String> = writes
        .iter()
        .map(|&(o, l, p)| format!("write -P {p:#x} {o} {l}"))
        .collect();
    let out = tools::run_ok(
        &mut tools::qemu_io(&["-f", "raw"], &cmds, &live),
        TOOL_LIMIT,
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout)
            .matches("wrote")
            .count(),
        writes.len(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    let written: Vec<(u64, u64)> = writes.iter().map(|w| (w.0, w.1)).collect();
    // qemu-io reads the patterns back (and zeros next to them).
    let mut cmds: Vec<String> = writes
        .iter()
        .map(|&(o, l, p)| format!("read -P {p:#x} {o} {l}"))
        .collect();
    cmds.push(format!("read -P 0 {} 512", 10 * MIB - 512));
    let out = tools::run_ok(
        &mut tools::qemu_io(&["-f", "raw", "-r"], &cmds, &live),
        TOOL_LIMIT,
    );
    let text = tools::text(&out);
    assert_eq!(text.matches("read ").count(), writes.len() + 1, "{text}");
    assert!(!text.contains("failed"), "{text}");

    // qemu-img convert of the live export is what was written.
    let conv = env.dir.join("convert.raw");
    tools::run_ok(
        Command::new("qemu-img").args(["convert", "-f", "raw", "-O", "raw", &live, s(&conv)]),
        TOOL_LIMIT,
    );
    assert_same("qemu-img convert", &std::fs::read(&conv).unwrap(), &model);

    // qemu-img compare against a local file: equal, then one byte off.
    let local = env.dir.join("model.raw");
    std::fs::write(&local, &model).unwrap();
    tools::run_ok(
        Command::new("qemu-img").args(["compare", "-f", "raw", "-F", "raw", s(&local), &live]),
        TOOL_LIMIT,
    );
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&local)
            .unwrap();
        f.write_all_at(&[0x5b], 10 * MIB + 777).unwrap();
    }
    let o = tools::run(
        Command::new("qemu-img").args(["compare", "-f", "raw", "-F", "raw", s(&local), &live]),
        TOOL_LIMIT,
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "compare should see the difference"
    );
    // qemu-img names the first differing sector.
    let text = String::from_utf8_lossy(&o.stdout);
    let at: u64 = text
        .trim()
        .strip_prefix("Content mismatch at offset ")
        .and_then(|t| t.trim_end_matches('!').parse().ok())
        .unwrap_or_else(|| panic!("{text}"));
    assert_eq!(at, (10 * MIB + 777) / 512 * 512, "{text}");

    // The tracking: exactly the granules written.
    assert_changes_match("rct changes", &env.changes(&id), &written);

    // base:allocation: data where written (1 MiB blocks), holes elsewhere.
    let alloc = nbdinfo_map(&live, None);
    assert_eq!(alloc.iter().map(|e| e.1).sum::<u64>(), size);
    let data = with_flag(&alloc, 1, false);
    for &(o, l) in &written {
        assert!(covered(&data, o, l), "{o:#x}+{l:#x} not data in {alloc:?}");
    }
    assert_eq!(
        chunks(&data, MIB),
        chunks(&written, MIB),
        "allocated blocks: {alloc:?}"
    );
    let holes = with_flag(&alloc, 1, true);
    assert!(covered(&holes, 0, 10 * MIB), "{alloc:?}");
    assert!(covered(&holes, 21 * MIB, 19 * MIB), "{alloc:?}");

    // The change contexts mark the written ranges dirty, nothing else.
    for ctx in ["qemu:dirty-bitmap:", "refpoint:changes:"] {
        let map = nbdinfo_map(&live, Some(&format!("{ctx}{id}")));
        assert_eq!(map.iter().map(|e| e.1).sum::<u64>(), size, "{ctx}");
        assert_changes_match(ctx, &with_flag(&map, 1, true), &written);
    }

    // nbdcopy to a file.
    let copy = env.dir.join("nbdcopy.raw");
    tools::run_ok(Command::new("nbdcopy").arg(&live).arg(&copy), TOOL_LIMIT);
    assert_same("nbdcopy", &std::fs::read(&copy).unwrap(), &model);

    // A checkpoint: its export is read-only and keeps the content frozen
    // while the live export changes. Writes acknowledged before it (here
    // not flushed, on a connection that stays open across it) are in it.
    let mut lc = env.nbd("vm1/disk0");
    assert!(lc.flags & NBD_FLAG_READ_ONLY == 0);
    assert_eq!(lc.size, size);
    let mut written = written;
    for (o, p) in [(30 * MIB + 12345, 0x61u8), (50 * MIB, 0x62)] {
        lc.write(o, &[p; 5000]).unwrap();
        model[o as usize..o as usize + 5000].fill(p);
        written.push((o, 5000));
    }
    let cp = env.ok(&["checkpoint", "create", "vm1"]);
    assert!(cp.contains("checkpoint 1 of vm1 created"), "{cp}");
    let frozen = env.uri("vm1/disk0@checkpoint-1");
    let mut fc = env.nbd("vm1/disk0@checkpoint-1");
    assert_eq!(fc.size, size);
    assert!(fc.flags & NBD_FLAG_READ_ONLY != 0, "flags {:#x}", fc.flags);
    let mut after = model.clone();
    let mut rng = SmallRng::seed_from_u64(1);
    let mut later = Vec::new();
    for _ in 0..8 {
        let len = rng.gen_range(1..64 * KIB);
        let off = rng.gen_range(0..size - len);
        let mut buf = vec![0u8; len as usize];
        rng.fill(&mut buf[..]);
        lc.write(off, &buf).unwrap();
        after[off as usize..(off + len) as usize].copy_from_slice(&buf);
        later.push((off, len));
    }
    lc.flush().unwrap();
    // A write to the checkpoint fails (our client and qemu-io) and
    // changes nothing.
    match fc.write(10 * MIB, &[0xff; 4096]) {
        Err(NbdError::Errno(NBD_EPERM)) => {}
        r => panic!("write to a checkpoint export: {r:?}"),
    }
    let o = tools::run(
        &mut tools::qemu_io(&["-f", "raw"], &["write -P 0xff 0 64k"], &frozen),
        TOOL_LIMIT,
    );
    assert!(
        !o.status.success()
            || String::from_utf8_lossy(&o.stdout).contains("failed")
            || String::from_utf8_lossy(&o.stderr).contains("failed"),
        "qemu-io wrote to a read-only export: {}",
        String::from_utf8_lossy(&o.stdout)
    );
    assert_same("checkpoint export (NBD)", &fc.read_all(), &model);
    assert_same("live export (NBD)", &lc.read_all(), &after);
    let conv = env.dir.join("frozen.raw");
    tools::run_ok(
        Command::new("qemu-img").args(["convert", "-f", "raw", "-O", "raw", &frozen, s(&conv)]),
        TOOL_LIMIT,
    );
    assert_same(
        "checkpoint export (qemu-img)",
        &std::fs::read(&conv).unwrap(),
        &model,
    );
    // Its changes context ends at the checkpoint: the later writes are
    // not in it, but they are in the live one.
    let map = nbdinfo_map(&frozen, Some(&format!("qemu:dirty-bitmap:{id}")));
    assert_changes_match("checkpoint context", &with_flag(&map, 1, true), &written);
    let all: Vec<_> = written.iter().chain(&later).copied().collect();
    assert_changes_match("live after the checkpoint", &env.changes(&id), &all);
    fc.disconnect();
    lc.disconnect();
}

// ---------------------------------------------------------------------------
// 2. Live backups with freeze/thaw
// ---------------------------------------------------------------------------

/// What the writer hands back: the content at each freeze, the final
/// content, and the writes done after each freeze.
struct WriterResult {
    frozen: Vec<Vec<u8>>,
    content: Vec<u8>,
    writes_after: Vec<usize>,
    writes: usize,
}

/// Writes random pieces through `c` until `stop`; at each freeze request
/// (the file `req`), finishes, flushes, records its model and acknowledges
/// (`ack`), then waits for the thaw (`thawed`).
fn writer(
    mut c: Disk,
    hooks: PathBuf,
    stop: Arc<AtomicBool>,
    seed: u64,
) -> Result<WriterResult, String> {
    let size = c.size;
    let mut model = vec![0u8; size as usize];
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut r = WriterResult {
        frozen: Vec::new(),
        content: Vec::new(),
        writes_after: Vec::new(),
        writes: 0,
    };
    let (req, ack, thawed) = (hooks.join("req"), hooks.join("ack"), hooks.join("thawed"));
    while !stop.load(Ordering::Relaxed) {
        if req.exists() {
            // Synchronous requests: nothing is in flight here.
            c.flush().map_err(|e| format!("flush at freeze: {e:?}"))?;
            r.frozen.push(model.clone());
            r.writes_after.push(0);
            std::fs::write(&ack, b"").unwrap();
            let t = Instant::now();
            while !thawed.exists() {
                if t.elapsed() > Duration::from_secs(60) {
                    return Err("no thaw within 60 s".into());
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            std::fs::remove_file(&thawed).unwrap();
            continue;
        }
        let len = rng.gen_range(1..=64u64) * 2 * KIB - rng.gen_range(0..2) * 512;
        let off = rng.gen_range(0..(size - len) / 512) * 512;
        let mut buf = vec![0u8; len as usize];
        rng.fill(&mut buf[..]);
        c.write(off, &buf)
            .map_err(|e| format!("write {off:#x}+{len:#x}: {e:?}"))?;
        model[off as usize..(off + len) as usize].copy_from_slice(&buf);
        r.writes += 1;
        if let Some(n) = r.writes_after.last_mut() {
            *n += 1;
        }
        if rng.gen_ratio(1, 20) {
            c.flush().map_err(|e| format!("flush: {e:?}"))?;
        }
    }
    c.flush().map_err(|e| format!("final flush: {e:?}"))?;
    let got = c.read_all();
    if got != model {
        return Err(format!(
            "the live export differs from the writes at {:?}",
            first_difference(&got, &model)
        ));
    }
    c.disconnect();
    r.content = model;
    Ok(r)
}

#[test]
fn backups_of_a_disk_being_written_restore_the_frozen_content() {
    let env = Env::new();
    let hooks = env.dir.join("hooks");
    std::fs::create_dir_all(&hooks).unwrap();
    let h = s(&hooks);
    // The freeze command waits (at most 30 s) for the writer's
    // acknowledgement; the thaw command lets it go on.
    let freeze = format!(
        "rm -f '{h}/ack' && touch '{h}/req' && i=0 && while [ ! -e '{h}/ack' ]; do i=$((i+1)); [ $i -gt 3000 ] && exit 1; sleep 0.01; done"
    );
    let thaw = format!("rm -f '{h}/req' && touch '{h}/thawed'");
    let size = 96 * MIB;
    env.machine(size, "2M", Some((&freeze, &thaw)));
    let _d = env.serve(&[]);
    let repo = env.dir.join("repo");

    let stop = Arc::new(AtomicBool::new(false));
    let w = {
        let c = env.nbd("vm1/disk0");
        let (hooks, stop) = (hooks.clone(), stop.clone());
        std::thread::spawn(move || writer(c, hooks, stop, 7))
    };
    let mut summaries = Vec::new();
    for _ in 0..2 {
        // Let the writer get going before each backup.
        std::thread::sleep(Duration::from_millis(300));
        summaries.push(env.json(&["backup", "vm1", "--to", s(&repo), "--json"]));
    }
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    let r = w.join().unwrap().unwrap_or_else(|e| panic!("writer: {e}"));

    eprintln!(
        "{} writes; after each freeze: {:?}",
        r.writes, r.writes_after
    );
    assert_eq!(summaries[0]["kind"], "full", "{}", summaries[0]);
    assert_eq!(summaries[1]["kind"], "incremental", "{}", summaries[1]);
    assert_eq!(summaries[0]["point"], 1);
    assert_eq!(summaries[1]["point"], 2);
    assert_eq!(r.frozen.len(), 2, "one freeze per backup");
    // The writer wrote before, between and after the backups.
    assert!(
        r.writes_after.iter().all(|&n| n > 0),
        "{:?}",
        r.writes_after
    );
    assert!(r.writes > r.writes_after.iter().sum::<usize>());
    assert_ne!(r.frozen[0], r.frozen[1]);
    assert_ne!(r.frozen[1], r.content);

    for (i, want) in r.frozen.iter().enumerate() {
        let point = i + 1;
        let out = env.dir.join(format!("restored-{point}.raw"));
        env.ok(&[
            "restore",
            s(&repo),
            "--point",
            &point.to_string(),
            "--to",
            s(&out),
            "--format",
            "raw",
        ]);
        assert_same(
            &format!("point {point}"),
            &std::fs::read(&out).unwrap(),
            want,
        );
        std::fs::remove_file(&out).unwrap();
    }
    let v = env.json(&["verify", s(&repo), "--json"]);
    assert!(v["first_bad"].is_null(), "{v}");
    assert_eq!(v["points_checked"], serde_json::json!([1, 2]), "{v}");
    let o = env.run(&["verify", s(&repo)]);
    assert!(o.status.success());
    // The points are also served, read-only.
    let mut b = env.nbd("vm1/disk0@backup-2");
    assert!(b.flags & NBD_FLAG_READ_ONLY != 0);
    assert_same("@backup-2", &b.read_all(), &r.frozen[1]);
    b.disconnect();
}

// ---------------------------------------------------------------------------
// 3. kill -9
// ---------------------------------------------------------------------------

#[test]
fn kill_9_keeps_flushed_writes_and_tracks_every_change() {
    let env = Env::new();
    let size = 64 * MIB;
    env.machine(size, "1M", None);
    let mut d = env.serve(&[]);
    let mut rng = SmallRng::seed_from_u64(99);
    // Most of the second half is allocated (written and flushed), so the
    // unflushed writes there overwrite data in place; its last 8 MiB are
    // not, so writes there allocate blocks.
    {
        let mut c = env.nbd("vm1/disk0");
        let mut buf = vec![0u8; MIB as usize];
        for i in 0..24 {
            rng.fill(&mut buf[..]);
            c.write(size / 2 + i * MIB, &buf).unwrap();
        }
        c.flush().unwrap();
        c.disconnect();
    }
    let mut kills_mid_write = 0;
    let mut unflushed_seen = 0;
    for round in 0..5u64 {
        let id = env.seal();
        let mut c = env.nbd("vm1/disk0");
        let before = c.read_all();
        // Flushed: random pieces in this round's 6 MiB of the first half.
        let mut flushed = before.clone();
        let mut flushed_ranges = Vec::new();
        let base = round * 6 * MIB;
        for _ in 0..20 {
            let len = rng.gen_range(1..200 * KIB);
            let off = base + rng.gen_range(0..6 * MIB - len);
            let mut buf = vec![0u8; len as usize];
            rng.fill(&mut buf[..]);
            c.write(off, &buf).unwrap();
            flushed[off as usize..(off + len) as usize].copy_from_slice(&buf);
            flushed_ranges.push((off, len));
        }
        c.flush().unwrap();
        // Not flushed: random pieces in the second half until the kill.
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicUsize::new(0));
        let seed = rng.gen();
        let w = {
            let (stop, count) = (stop.clone(), count.clone());
            std::thread::spawn(move || {
                let mut rng = SmallRng::seed_from_u64(seed);
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let len = rng.gen_range(1..300 * KIB);
                    let off = size / 2 + rng.gen_range(0..size / 2 - len);
                    let mut buf = vec![0u8; len as usize];
                    rng.fill(&mut buf[..]);
                    if c.write(off, &buf).is_err() {
                        return (n, true);
                    }
                    n += 1;
                    count.store(n, Ordering::Relaxed);
                }
                (n, false)
            })
        };
        // The kill comes after a random number of writes (in odd rounds
        // enough for the daemon to have committed some of them: it queues
        // up to 64 MiB of unflushed writes) and a random delay.
        let writes = if round % 2 == 1 {
            rng.gen_range(500..1200)
        } else {
            rng.gen_range(0..400)
        };
        let t = Instant::now();
        while count.load(Ordering::Relaxed) < writes && t.elapsed() < Duration::from_secs(20) {
            std::thread::sleep(Duration::from_millis(1));
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..30)));
        d.kill9();
        stop.store(true, Ordering::Relaxed);
        let (n, cut) = w.join().unwrap();
        if cut {
            kills_mid_write += 1;
        }

        d = env.serve(&[]);
        let mut c = env.nbd("vm1/disk0");
        let after = c.read_all();
        c.disconnect();
        let half = (size / 2) as usize;
        assert_same(
            &format!("round {round}: flushed data"),
            &after[..half],
            &flushed[..half],
        );
        let diff = differences(&before, &after);
        let changed = env.changes(&id);
        for &(o, l) in &diff {
            assert!(
                covered(&changed, o, l),
                "round {round} ({n} unflushed writes): {o:#x}+{l:#x} changed but not in {changed:x?}"
            );
        }
        // In the first half, only what this round wrote there.
        let first_half: Vec<_> = changed
            .iter()
            .filter(|r| r.0 < size / 2)
            .map(|&(o, l)| (o, l.min(size / 2 - o)))
            .collect();
        assert_changes_match(
            &format!("round {round}: first half"),
            &first_half,
            &flushed_ranges,
        );
        let second_half: u64 = diff.iter().filter(|r| r.0 >= size / 2).map(|r| r.1).sum();
        if second_half > 0 {
            unflushed_seen += 1;
        }
        eprintln!(
            "round {round}: {n} unflushed writes, {} differing ranges ({second_half} bytes of unflushed writes survived), {} changed ranges",
            diff.len(),
            changed.len()
        );
    }
    assert!(kills_mid_write > 0, "no kill hit a writing client");
    assert!(unflushed_seen > 0, "no unflushed write reached the disk");
    env.stop(d, Duration::from_secs(30));
}

// ---------------------------------------------------------------------------
// 4. The management API
// ---------------------------------------------------------------------------

/// One HTTP/1.1 request on a unix socket: status and JSON body.
fn http(socket: &Path, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    let mut st = UnixStream::connect(socket).unwrap();
    st.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    write!(
        st,
        "{method} {path} HTTP/1.1\r\nHost: refpoint\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = Vec::new();
    st.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let mut payload = raw[split + 4..].to_vec();
    let status: u16 = head.split(' ').nth(1).unwrap().parse().unwrap();
    if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        let mut out = Vec::new();
        let mut rest = &payload[..];
        loop {
            let eol = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let n = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap().trim(), 16)
                .unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + n]);
            rest = &rest[eol + 2 + n + 2..];
        }
        payload = out;
    }
    let v = serde_json::from_slice(&payload).unwrap_or_else(|e| {
        panic!(
            "{method} {path}: not JSON ({e}): {head}\n{}",
            String::from_utf8_lossy(&payload)
        )
    });
    (status, v)
}

#[test]
fn management_api_answers_over_http() {
    let env = Env::new();
    env.machine(64 * MIB, "1M", None);
    let d = env.serve(&[]);
    let api = env.api_socket();

    let (st, doc) = http(&api, "GET", "/v1/openapi.json", None);
    assert_eq!(st, 200);
    assert!(doc["openapi"].is_string(), "{doc}");
    for r in api::routes::ROUTES {
        let (method, path) = (r.method.as_str().to_ascii_lowercase(), r.path);
        assert!(
            doc["paths"][path][&method].is_object(),
            "the OpenAPI document lacks {method} {path}"
        );
    }
    let (st, status) = http(&api, "GET", "/v1/status", None);
    assert_eq!(st, 200);
    assert_eq!(status["pid"], d.pid(), "{status}");

    let (st, ms) = http(&api, "GET", "/v1/machines", None);
    assert_eq!(st, 200);
    let names: Vec<_> = ms.as_array().unwrap().iter().map(|m| &m["name"]).collect();
    assert_eq!(names, ["vm1"], "{ms}");
    let (st, m) = http(&api, "GET", "/v1/machines/vm1", None);
    assert_eq!((st, &m["name"]), (200, &Value::from("vm1")));

    for path in [
        "/v1/machines/nope",
        "/v1/machines/nope/disks/disk0/tracking",
    ] {
        let (st, e) = http(&api, "GET", path, None);
        assert_eq!(st, 404, "{path}: {e}");
        assert_eq!(e["error"], "not_found", "{e}");
        assert!(e["message"].as_str().unwrap().contains("nope"), "{e}");
    }
    let (st, e) = http(&api, "GET", "/v1/machines/vm1/disks/disk9/tracking", None);
    assert_eq!(st, 404, "{e}");
    let (st, e) = http(&api, "GET", "/v1/jobs/999", None);
    assert_eq!(st, 404, "{e}");

    // Bad RCT IDs: 409 from the API, exit code 3 from the CLI.
    let id = env.seal();
    let unknown = "rct:00000000-0000-4000-8000-000000000000:00000001";
    for bad in ["nonsense", unknown] {
        let (st, e) = http(
            &api,
            "GET",
            &format!("/v1/machines/vm1/disks/disk0/changes?since={bad}"),
            None,
        );
        assert_eq!(st, 409, "{bad}: {e}");
        assert!(e["error"].is_string() && e["message"].is_string(), "{e}");
        let o = env.run(&["rct", "changes", "vm1/disk0", "--since", bad]);
        assert_eq!(
            o.status.code(),
            Some(3),
            "{bad}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
    }
    let (st, c) = http(
        &api,
        "GET",
        &format!("/v1/machines/vm1/disks/disk0/changes?since={id}"),
        None,
    );
    assert_eq!(st, 200, "{c}");
    assert_eq!(c["ranges"], serde_json::json!([]), "{c}");
    assert_eq!(c["processed_length"], 64 * MIB);

    // A backup job.
    let mut n = env.nbd("vm1/disk0");
    n.write(5 * MIB, &[0x42; 3000]).unwrap();
    n.flush().unwrap();
    n.disconnect();
    let repo = env.dir.join("repo");
    let (st, job) = http(
        &api,
        "POST",
        "/v1/machines/vm1/backups",
        Some(&serde_json::json!({"to": repo})),
    );
    assert_eq!(st, 200, "{job}");
    let jid = job["id"].as_u64().expect("a job id");
    let t = Instant::now();
    let j = loop {
        let (st, j) = http(&api, "GET", &format!("/v1/jobs/{jid}"), None);
        assert_eq!(st, 200, "{j}");
        match j["state"].as_str().unwrap() {
            "running" => {}
            "succeeded" => break j,
            other => panic!("job {other}: {j}"),
        }
        assert!(t.elapsed() < Duration::from_secs(30), "{j}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(j["result"]["point"], 1, "{j}");
    assert_eq!(j["result"]["kind"], "full", "{j}");
    let (_, jobs) = http(&api, "GET", "/v1/jobs", None);
    assert!(
        jobs.as_array().unwrap().iter().any(|x| x["id"] == jid),
        "{jobs}"
    );
    let list = env.json(&["backup", "list", s(&repo), "--json"]);
    assert_eq!(list[0]["point"], 1, "{list}");
    let (_, exports) = http(&api, "GET", "/v1/exports", None);
    let names: Vec<_> = exports
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap().to_string())
        .collect();
    assert!(names.contains(&"vm1/disk0".to_string()), "{names:?}");
    assert!(
        names.contains(&"vm1/disk0@backup-1".to_string()),
        "{names:?}"
    );
    let mut b = env.nbd("vm1/disk0@backup-1");
    assert_eq!(b.read(5 * MIB - 1, 3002).unwrap(), {
        let mut v = vec![0x42; 3002];
        v[0] = 0;
        v[3001] = 0;
        v
    });
    b.disconnect();
    env.stop(d, Duration::from_secs(30));
}

// ---------------------------------------------------------------------------
// 5. and 6. Graceful stop and restart
// ---------------------------------------------------------------------------

/// Random pieces written through `c` (not flushed) into `[lo, hi)` of the
/// disk and of `model`.
fn scribble(
    c: &mut Disk,
    model: &mut [u8],
    rng: &mut SmallRng,
    n: usize,
    (lo, hi): (u64, u64),
) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for _ in 0..n {
        let len = rng.gen_range(1..256 * KIB);
        let off = rng.gen_range(lo..hi - len);
        let mut buf = vec![0u8; len as usize];
        rng.fill(&mut buf[..]);
        c.write(off, &buf).unwrap();
        model[off as usize..(off + len) as usize].copy_from_slice(&buf);
        out.push((off, len));
    }
    out
}

#[test]
fn serve_stop_with_a_client_connected_closes_the_disk_cleanly() {
    let env = Env::new();
    let size = 64 * MIB;
    let half = size / 2;
    let disk = env.machine(size, "1M", None);
    let d = env.serve(&[]);
    let mut rng = SmallRng::seed_from_u64(3);
    let mut model = vec![0u8; size as usize];
    // One client writes (no flush) to the first half and stays connected,
    // idle; it reads its unflushed writes back.
    let mut c = env.nbd("vm1/disk0");
    scribble(&mut c, &mut model, &mut rng, 30, (0, half));
    assert_same("before stop", &c.read_all(), &model);
    // Another keeps writing to the second half until the daemon goes away;
    // every acknowledged write must survive, the one in flight may.
    let mut streamer = env.nbd("vm1/disk0");
    let started = Arc::new(AtomicUsize::new(0));
    let w = {
        let started = started.clone();
        std::thread::spawn(move || {
            let mut rng = SmallRng::seed_from_u64(30);
            let mut acked = vec![0u8; half as usize];
            let mut n = 0;
            loop {
                let len = rng.gen_range(1..128 * KIB);
                let off = rng.gen_range(0..half - len);
                let mut buf = vec![0u8; len as usize];
                rng.fill(&mut buf[..]);
                if streamer.write(half + off, &buf).is_err() {
                    let mut in_flight = acked.clone();
                    in_flight[off as usize..(off + len) as usize].copy_from_slice(&buf);
                    return (n, acked, in_flight);
                }
                acked[off as usize..(off + len) as usize].copy_from_slice(&buf);
                n += 1;
                started.store(n, Ordering::Relaxed);
            }
        })
    };
    while started.load(Ordering::Relaxed) < 50 {
        std::thread::sleep(Duration::from_millis(1));
    }
    env.stop(d, Duration::from_secs(30));
    let (n, acked, in_flight) = w.join().unwrap();
    assert!(
        c.read(0, 512).is_err(),
        "the connection outlived the daemon"
    );
    assert!(!env.api_socket().exists() && !env.nbd_socket().exists());

    let check = env.run(&["vhd", "check", s(&disk), "--json"]);
    let v: Value = serde_json::from_slice(&check.stdout).unwrap();
    assert!(check.status.success() && v["valid"] == true, "{v}");
    assert!(v["problems"].as_array().unwrap().is_empty(), "{v}");
    let raw = env.dir.join("after-stop.raw");
    env.ok(&["vhd", "convert", s(&disk), s(&raw), "--format", "raw"]);
    let got = std::fs::read(&raw).unwrap();
    assert_same(
        "first half after stop",
        &got[..half as usize],
        &model[..half as usize],
    );
    let second = &got[half as usize..];
    if second != &in_flight[..] {
        assert_same(
            &format!("second half after stop ({n} acknowledged writes)"),
            second,
            &acked,
        );
    }
}

#[test]
fn restart_serves_the_same_content_and_tracking() {
    let env = Env::new();
    let size = 64 * MIB;
    env.machine(size, "1M", None);
    let d = env.serve(&[]);
    let id = env.seal();
    let mut rng = SmallRng::seed_from_u64(4);
    let mut model = vec![0u8; size as usize];
    let mut c = env.nbd("vm1/disk0");
    let mut written = scribble(&mut c, &mut model, &mut rng, 12, (0, size));
    c.disconnect();
    assert_changes_match("first run", &env.changes(&id), &written);
    env.stop(d, Duration::from_secs(30));

    let d = env.serve(&[]);
    let mut c = env.nbd("vm1/disk0");
    assert_same("after restart", &c.read_all(), &model);
    assert_changes_match("after restart", &env.changes(&id), &written);
    let status = env.json(&["rct", "status", "vm1/disk0", "--json"]);
    assert!(
        status["retained_ids"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x == id.as_str()),
        "{status}"
    );
    // Writes after the restart add to the same changes.
    written.extend(scribble(&mut c, &mut model, &mut rng, 5, (0, size)));
    c.flush().unwrap();
    c.disconnect();
    assert_changes_match("second run", &env.changes(&id), &written);
    env.stop(d, Duration::from_secs(30));

    // And once more, without the daemon: the CLI reads the files itself.
    assert_changes_match("no daemon", &env.changes(&id), &written);
    let d = env.serve(&[]);
    let mut c = env.nbd("vm1/disk0");
    assert_same("second restart", &c.read_all(), &model);
    c.disconnect();
    env.stop(d, Duration::from_secs(30));
}
