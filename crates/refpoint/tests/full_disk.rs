//! A machine disk on a file system that runs full, served by `refpoint
//! serve`: writes through NBD (our own client and qemu-io) until ENOSPC,
//! flushes that must then fail, space freed, a new client, a restart, and
//! what must hold afterwards (DESIGN.md invariants 1, 3, 4, 5 and 6):
//! every write acknowledged by a successful flush reads back, every byte
//! that changed is in the changes since the sealed RCT ID, and the image
//! passes our check and `qemu-img check`.
//!
//! The state directory and the disk live on a small tmpfs mounted by the
//! test (so it needs root; without root, or if the mount fails, the test
//! says why and passes). The daemon's log stays outside the tmpfs.

mod common;

use common::{s, Env};
use nbd::proto::{NBD_EIO, NBD_ENOSPC};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};
use testkit::nbd_client::Disk;
use testkit::pattern;
use testkit::ranges::covered;
use testkit::tools;

const MIB: u64 = 1 << 20;
/// The virtual disk: 256 MiB of 1 MiB blocks, far more than the tmpfs
/// holds.
const DISK_SIZE: u64 = 256 * MIB;
const TMPFS_SIZE: &str = "64M";
/// A file taking room on the tmpfs, removed to free space.
const FILLER_MIB: u64 = 16;
/// Our client flushes after every this many writes.
const FLUSH_EVERY: u64 = 3;
/// Where qemu-io writes its six blocks (beyond anything our client
/// reaches before the tmpfs is full).
const QEMU_IO_FIRST_MIB: u64 = 200;
/// And our client its six.
const OURS_BURST_FIRST_MIB: u64 = 220;
/// Writes in the reported shape (no flush between them).
const BURST: u64 = 6;
/// Any client or tool must answer within this.
const TOOL_LIMIT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------
// The tmpfs
// ---------------------------------------------------------------------------

/// A tmpfs mounted on a directory; unmounted when dropped (also when the
/// test fails).
struct Tmpfs {
    dir: PathBuf,
}

impl Tmpfs {
    /// Mounts it, or says why it could not.
    fn mount(dir: &Path, size: &str) -> Result<Tmpfs, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let o = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "tmpfs",
                s(dir),
            ])
            .output()
            .map_err(|e| format!("running mount: {e}"))?;
        if !o.status.success() {
            return Err(format!(
                "mount -t tmpfs failed ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ));
        }
        Ok(Tmpfs {
            dir: dir.to_path_buf(),
        })
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        for _ in 0..50 {
            let ok = Command::new("umount")
                .arg(&self.dir)
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|st| st.success());
            if ok {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        // Still busy (something we started is still exiting): detach it
        // so nothing stays mounted.
        let st = Command::new("umount").arg("-l").arg(&self.dir).status();
        eprintln!("umount {} was busy; umount -l: {st:?}", self.dir.display());
    }
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

// ---------------------------------------------------------------------------
// NBD error values
// ---------------------------------------------------------------------------

/// The name of an NBD error value, for messages.
fn errno_name(e: u32) -> &'static str {
    match e {
        1 => "EPERM",
        5 => "EIO",
        12 => "ENOMEM",
        22 => "EINVAL",
        28 => "ENOSPC",
        75 => "EOVERFLOW",
        95 => "ENOTSUP",
        108 => "ESHUTDOWN",
        _ => "unknown",
    }
}

// ---------------------------------------------------------------------------
// What was written, and what must read back
// ---------------------------------------------------------------------------

/// What became of one 1 MiB write (each to a block of its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    /// Acknowledged, and a later flush succeeded.
    Durable,
    /// Acknowledged, no successful flush after it (yet).
    Acked,
    /// The write itself failed.
    Failed,
}

struct Written {
    who: &'static str,
    content: Vec<u8>,
    fate: Fate,
}

/// Our client's content for its `i`-th write: distinct for every write.
fn pattern(i: u64) -> Vec<u8> {
    let mut buf = pattern::bytes(MIB as usize, 0xf011_d15c ^ i);
    // The first bytes name the write.
    buf[..8].copy_from_slice(&(i + 1).to_be_bytes());
    buf
}

/// What one block read back as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Zeros,
    Written,
    Other,
}

fn seen(got: &[u8], want: Option<&[u8]>) -> Seen {
    if want.is_some_and(|w| w == got) {
        Seen::Written
    } else if got.iter().all(|&b| b == 0) {
        Seen::Zeros
    } else {
        Seen::Other
    }
}

/// Checks every block of `content` (a read of the whole disk) against the
/// writes: durable ones (and acknowledged ones too when `acked_durable`)
/// exactly, the other writes either not there at all or exactly there,
/// never written blocks as zeros. Returns the blocks holding data.
fn check_content(
    what: &str,
    content: &[u8],
    writes: &BTreeMap<u64, Written>,
    acked_durable: bool,
) -> Vec<u64> {
    let mut data = Vec::new();
    let mut surprises = Vec::new();
    for block in 0..DISK_SIZE / MIB {
        let got = &content[(block * MIB) as usize..((block + 1) * MIB) as usize];
        let w = writes.get(&block);
        let s = seen(got, w.map(|w| &w.content[..]));
        if s != Seen::Zeros {
            data.push(block);
        }
        let fine = match (w.map(|w| w.fate), s) {
            (_, Seen::Other) => false,
            (None, Seen::Zeros) => true,
            (None, Seen::Written) => unreachable!(),
            (Some(_), Seen::Written) => true,
            (Some(Fate::Durable), Seen::Zeros) => false,
            (Some(Fate::Acked), Seen::Zeros) => !acked_durable,
            (Some(Fate::Failed), Seen::Zeros) => true,
        };
        if !fine {
            let first_bytes = &got[..16.min(got.len())];
            surprises.push(format!(
                "block {block} (offset {:#x}): {:?} write by {}, read back {s:?} (first bytes {first_bytes:02x?})",
                block * MIB,
                w.map(|w| w.fate),
                w.map_or("nobody", |w| w.who)
            ));
        }
    }
    assert!(
        surprises.is_empty(),
        "{what}: {} blocks read back wrong:\n{}",
        surprises.len(),
        surprises.join("\n")
    );
    data
}

// ---------------------------------------------------------------------------
// The CLI and the daemon on the tmpfs
// ---------------------------------------------------------------------------

impl Env {
    fn nbd(&self) -> Disk {
        Disk::connect(&self.nbd_socket(), "vm1/disk0", TOOL_LIMIT)
            .unwrap_or_else(|e| panic!("NBD connection to vm1/disk0: {e:?}"))
    }

    /// `rct changes vm1/disk0 --since ID --json`: the ranges (exit 0), or
    /// `None` for the one refusal allowed here — exit 3 because a flush of
    /// the disk failed earlier, so no change can be proven (the next backup
    /// goes full).
    fn changes_ok(&self, since: &str) -> Option<Vec<(u64, u64)>> {
        let o = tools::run(
            &mut self.cmd(&["rct", "changes", "vm1/disk0", "--since", since, "--json"]),
            TOOL_LIMIT,
        );
        if o.status.code() == Some(3) && tools::text(&o).contains("unproven_after_io_error") {
            println!(
                "rct changes --since {since}: refused, typed: {}",
                tools::text(&o).trim()
            );
            return None;
        }
        assert!(
            o.status.success(),
            "rct changes --since {since} exited with {}: {}",
            o.status,
            tools::text(&o)
        );
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["processed_length"], DISK_SIZE, "{v}");
        Some(
            v["ranges"]
                .as_array()
                .unwrap()
                .iter()
                .map(|r| (r["offset"].as_u64().unwrap(), r["length"].as_u64().unwrap()))
                .collect(),
        )
    }

    /// `refpoint serve --stop`, then the daemon's exit status and log; a
    /// daemon that could not flush a disk may exit with an error.
    fn stop_any(&self, mut d: common::Daemon) -> (ExitStatus, String) {
        let o = tools::run(&mut self.cmd(&["serve", "--stop"]), TOOL_LIMIT);
        assert!(o.status.success(), "serve --stop: {}", tools::text(&o));
        let st = d.wait(TOOL_LIMIT);
        (st, d.log_text())
    }
}

/// Reads the whole disk through NBD, 1 MiB at a time.
fn read_disk(c: &mut Disk) -> Vec<u8> {
    assert_eq!(c.size, DISK_SIZE);
    let mut out = Vec::with_capacity(DISK_SIZE as usize);
    for block in 0..DISK_SIZE / MIB {
        let b = c
            .read(block * MIB, MIB)
            .unwrap_or_else(|e| panic!("NBD read of block {block}: {e:?}"));
        out.extend(b);
    }
    out
}

/// qemu's NBD requests and whether each failed, from its `nbd_*` trace
/// (qemu-io waits for each reply, so a reply belongs to the request sent
/// before it): (command type, failed, the reply's trace line).
fn qemu_requests(trace: &str) -> Vec<(String, bool, String)> {
    let mut out = Vec::new();
    let mut pending: Option<String> = None;
    for l in trace.lines() {
        if l.contains("nbd_send_request") {
            // "… .type = 3 (flush) }"
            pending = l
                .split(".type = ")
                .nth(1)
                .and_then(|r| r.split('(').nth(1))
                .and_then(|r| r.split(')').next())
                .map(str::to_string);
        } else if l.contains("nbd_receive_simple_reply")
            || l.contains("nbd_receive_reply_chunk_header")
        {
            let Some(ty) = pending.take() else { continue };
            let failed = if l.contains("nbd_receive_simple_reply") {
                // "Got simple reply: { .error = 28 (…), cookie = 1 }"
                !l.contains(".error = 0 ")
            } else {
                // Error chunks have type 32768 + n.
                l.split("type = ")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                    .and_then(|r| r.parse::<u32>().ok())
                    .is_some_and(|n| n & 0x8000 != 0)
            };
            out.push((ty, failed, l.to_string()));
        }
    }
    out
}

// ---------------------------------------------------------------------------
// The test
// ---------------------------------------------------------------------------

#[test]
fn a_full_disk_fails_flushes_and_keeps_what_was_acknowledged() {
    let started = Instant::now();
    if !is_root() {
        eprintln!("SKIPPED: mounting a tmpfs needs root");
        return;
    }
    let env = Env::new();
    // Declared after `env` (which removes the directory) and before the
    // daemons (which must be gone before the unmount).
    let tmpfs = match Tmpfs::mount(&env.home, TMPFS_SIZE) {
        Ok(t) => t,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    let mut errnos: Vec<String> = Vec::new();
    // Broken promises found on the way; the test goes on to check the
    // rest and fails at the end.
    let mut violations: Vec<String> = Vec::new();

    // --- 1. The disk, the machine, an RCT ID, the daemon -----------------
    let filler = tmpfs.dir.join("filler");
    tools::run(
        Command::new("dd")
            .arg("if=/dev/zero")
            .arg(format!("of={}", s(&filler)))
            .args(["bs=1M", &format!("count={FILLER_MIB}"), "conv=fsync"]),
        TOOL_LIMIT,
    );
    assert_eq!(std::fs::metadata(&filler).unwrap().len(), FILLER_MIB * MIB);
    let disks = tmpfs.dir.join("disks");
    std::fs::create_dir_all(&disks).unwrap();
    let disk = disks.join("d0.vhdx");
    env.ok(&[
        "vhd",
        "create",
        s(&disk),
        "--size",
        "256M",
        "--block-size",
        "1M",
    ]);
    env.ok(&["machine", "create", "vm1", "--disk", s(&disk)]);
    let id = env
        .ok(&["rct", "seal", "vm1/disk0"])
        .lines()
        .last()
        .unwrap()
        .trim()
        .to_string();
    assert!(id.starts_with("rct:"), "{id}");
    let d = env.serve(&[]);

    // --- 2. Our client writes new blocks until the tmpfs is full ---------
    let mut writes: BTreeMap<u64, Written> = BTreeMap::new();
    let mut c1 = env.nbd();
    assert_eq!(c1.size, DISK_SIZE);
    let mut i = 0u64;
    // What failed first: ("write"|"flush", write index, errno).
    let first_failure: (&str, u64, u32) = loop {
        assert!(
            i < DISK_SIZE / MIB,
            "wrote the whole {DISK_SIZE}-byte disk onto a {TMPFS_SIZE} tmpfs without an error"
        );
        let data = pattern(i);
        match c1.write(i * MIB, &data) {
            Ok(()) => {
                writes.insert(
                    i,
                    Written {
                        who: "our client",
                        content: data,
                        fate: Fate::Acked,
                    },
                );
            }
            Err(e) => {
                let errno = e.errno(&format!("write {i}"));
                writes.insert(
                    i,
                    Written {
                        who: "our client",
                        content: data,
                        fate: Fate::Failed,
                    },
                );
                break ("write", i, errno);
            }
        }
        if i % FLUSH_EVERY == FLUSH_EVERY - 1 {
            match c1.flush() {
                Ok(()) => {
                    for w in writes.values_mut() {
                        if w.fate == Fate::Acked {
                            w.fate = Fate::Durable;
                        }
                    }
                }
                Err(e) => break ("flush", i, e.errno(&format!("flush after write {i}"))),
            }
        }
        i += 1;
    };
    let (op, at, errno) = first_failure;
    errnos.push(format!(
        "first failure: {op} (write {at}): {}",
        errno_name(errno)
    ));
    let failed_op = if op == "write" {
        format!("write {at} (offset {:#x})", at * MIB)
    } else {
        format!("the flush after write {at} (offset {:#x})", at * MIB)
    };
    eprintln!(
        "step 2: {failed_op} failed with {errno} ({})",
        errno_name(errno)
    );
    assert!(
        errno == NBD_ENOSPC || errno == NBD_EIO,
        "the first failure on a full disk: {op} failed with NBD error {errno} ({}), want ENOSPC (or EIO)",
        errno_name(errno)
    );
    // The flush after the failure must fail too (after a failed flush,
    // the next one as well): what the failed write or flush lost may not
    // be reported durable.
    let flushes_after = if op == "flush" { 2 } else { 1 };
    for n in 0..flushes_after {
        match c1.flush() {
            Ok(()) => {
                let v = format!(
                    "step 2: the flush #{} after a failed {op} (write {at}, offset {:#x}, {}) \
                     succeeded: a write that failed was reported durable",
                    n + 1,
                    at * MIB,
                    errno_name(errno)
                );
                eprintln!("VIOLATION {v}");
                violations.push(v);
                errnos.push("flush after it: succeeded".into());
                // It did succeed: what was acknowledged before it is
                // durable now.
                for w in writes.values_mut() {
                    if w.fate == Fate::Acked {
                        w.fate = Fate::Durable;
                    }
                }
            }
            Err(e) => {
                let e = e.errno("flush after the failure");
                eprintln!(
                    "step 2: flush #{} after the failed {op} failed with {e} ({})",
                    n + 1,
                    errno_name(e)
                );
                errnos.push(format!("flush after it: {}", errno_name(e)));
                assert!(
                    e == NBD_ENOSPC || e == NBD_EIO,
                    "flush after a failed {op}: NBD error {e} ({})",
                    errno_name(e)
                );
            }
        }
    }
    let durable_before_full = writes.values().filter(|w| w.fate == Fate::Durable).count();

    // --- 3. The reported shape: six writes to new blocks, no flush, then
    // a flush, which must fail. First by qemu-io (writeback cache) ...
    let mut cmds: Vec<String> = (0..BURST)
        .map(|k| {
            let p = 0xa1 + k as u8;
            format!("write -P {p:#x} {} 1M", (QEMU_IO_FIRST_MIB + k) * MIB)
        })
        .collect();
    cmds.push("flush".into());
    let opts = ["-f", "raw", "-t", "writeback", "-T", "nbd_*"];
    let o = tools::run(
        &mut tools::qemu_io(&opts, &cmds, env.uri("vm1/disk0")),
        TOOL_LIMIT,
    );
    let out = String::from_utf8_lossy(&o.stdout).to_string();
    let trace = String::from_utf8_lossy(&o.stderr).to_string();
    // qemu-io prints one line per write: "wrote …" or "write failed: …".
    let results: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("wrote ") || l.starts_with("write failed"))
        .collect();
    assert_eq!(
        results.len() as u64,
        BURST,
        "qemu-io: one result per write expected: {out}{trace}"
    );
    for (k, line) in results.iter().enumerate() {
        let k = k as u64;
        let fate = if line.starts_with("wrote ") {
            Fate::Acked
        } else {
            Fate::Failed
        };
        writes.insert(
            QEMU_IO_FIRST_MIB + k,
            Written {
                who: "qemu-io",
                content: vec![0xa1 + k as u8; MIB as usize],
                fate,
            },
        );
    }
    let qemu_write_failures = results
        .iter()
        .filter(|l| l.starts_with("write failed"))
        .count();
    // qemu-io prints nothing for a flush: its NBD client's trace tells.
    // The first flush is the command, a second one qemu's at close.
    let requests = qemu_requests(&trace);
    let flushes: Vec<_> = requests.iter().filter(|r| r.0 == "flush").collect();
    eprintln!(
        "step 3: qemu-io (exit {}): {qemu_write_failures} of {BURST} writes failed; \
         NBD requests (type, failed): {:?}",
        o.status,
        requests.iter().map(|r| (&r.0[..], r.1)).collect::<Vec<_>>()
    );
    for l in out.lines() {
        eprintln!("  qemu-io: {l}");
    }
    assert!(
        !flushes.is_empty(),
        "qemu-io sent no NBD flush (trace):\n{out}{trace}"
    );
    if flushes[0].1 {
        errnos.push("qemu-io's flush: failed (an NBD error chunk)".into());
        // The flush is its last command.
        assert!(!o.status.success(), "qemu-io exited 0 after a failed flush");
    } else {
        let v = format!(
            "step 3: qemu-io's flush after {BURST} writes to new blocks of a full disk \
             ({qemu_write_failures} of them failed) succeeded: {}",
            flushes[0].2
        );
        eprintln!("VIOLATION {v}");
        violations.push(v);
        errnos.push("qemu-io's flush: succeeded".into());
        for w in writes.values_mut() {
            if w.fate == Fate::Acked {
                w.fate = Fate::Durable;
            }
        }
    }
    // ... then by our client, which sees the error numbers.
    let mut cb = env.nbd();
    let mut burst_errnos = Vec::new();
    for k in 0..BURST {
        let block = OURS_BURST_FIRST_MIB + k;
        let data = pattern(block);
        let r = cb.write(block * MIB, &data);
        let fate = match r {
            Ok(()) => Fate::Acked,
            Err(e) => {
                burst_errnos.push(errno_name(e.errno(&format!("burst write {k}"))));
                Fate::Failed
            }
        };
        writes.insert(
            block,
            Written {
                who: "our client (burst)",
                content: data,
                fate,
            },
        );
    }
    match cb.flush() {
        Ok(()) => {
            let v = format!(
                "step 3: our client's flush after {BURST} writes to new blocks of a full disk \
                 (write errors {burst_errnos:?}) succeeded"
            );
            eprintln!("VIOLATION {v}");
            violations.push(v);
            errnos.push("burst flush: succeeded".into());
            for w in writes.values_mut() {
                if w.fate == Fate::Acked {
                    w.fate = Fate::Durable;
                }
            }
        }
        Err(e) => {
            let e = e.errno("burst flush");
            eprintln!(
                "step 3: our client: write errors {burst_errnos:?}, then the flush failed with \
                 {e} ({})",
                errno_name(e)
            );
            errnos.push(format!("burst flush: {}", errno_name(e)));
            assert!(
                e == NBD_ENOSPC || e == NBD_EIO,
                "burst flush: NBD error {e} ({})",
                errno_name(e)
            );
        }
    }
    cb.disconnect();

    // --- 4. Space is freed; a new client flushes -------------------------
    std::fs::remove_file(&filler).unwrap();
    c1.disconnect();
    let mut c2 = env.nbd();
    let after_free = c2.flush();
    let recovered = match after_free {
        Ok(()) => {
            eprintln!("step 4: with space freed, a new client's flush succeeded");
            // Then everything acknowledged is durable now, and reads back.
            for w in writes.values_mut() {
                if w.fate == Fate::Acked {
                    w.fate = Fate::Durable;
                }
            }
            let content = read_disk(&mut c2);
            check_content("after the flush that succeeded", &content, &writes, true);
            true
        }
        Err(e) => {
            let e = e.errno("flush by a new client after freeing space");
            eprintln!(
                "step 4: with space freed, a new client's flush failed with {e} ({}): the disk \
                 refuses until reopened",
                errno_name(e)
            );
            errnos.push(format!(
                "new client's flush after freeing space: {}",
                errno_name(e)
            ));
            assert!(
                e == NBD_ENOSPC || e == NBD_EIO,
                "flush after freeing space: NBD error {e} ({})",
                errno_name(e)
            );
            false
        }
    };
    c2.disconnect();

    // --- The restart -----------------------------------------------------
    let (st, log) = env.stop_any(d);
    let stopped_cleanly = st.success() && log.contains("every disk flushed and closed");
    eprintln!(
        "restart: the first daemon exited with {st}{}",
        if stopped_cleanly {
            ", every disk flushed and closed".to_string()
        } else {
            format!(
                ": {}",
                log.lines()
                    .rfind(|l| l.contains("closing disks failed") || l.contains("rror"))
                    .unwrap_or("")
            )
        }
    );
    if recovered {
        assert!(
            stopped_cleanly,
            "the disk flushed fine after space was freed, yet the daemon did not close it cleanly ({st}): {log}"
        );
    }
    let d = env.serve(&[]);
    let mut c3 = env.nbd();
    let content = read_disk(&mut c3);
    c3.disconnect();
    let data_blocks = check_content("after the restart", &content, &writes, recovered);
    // The tracking: every durable write, and every block holding data.
    let refused = env.changes_ok(&id).is_none();
    println!(
        "changes after the restart: {}",
        if refused {
            "refused as unproven"
        } else {
            "answered"
        }
    );
    let changes = env.changes_ok(&id).unwrap_or_else(|| vec![(0, DISK_SIZE)]);
    let mut missed = Vec::new();
    for (&block, w) in &writes {
        if w.fate == Fate::Durable && !covered(&changes, block * MIB, MIB) {
            missed.push(format!("durable write by {} at {:#x}", w.who, block * MIB));
        }
    }
    for &block in &data_blocks {
        if !covered(&changes, block * MIB, MIB) {
            missed.push(format!("block {block} ({:#x}) holds data", block * MIB));
        }
    }
    assert!(
        missed.is_empty(),
        "rct changes --since {id} misses changes: {missed:?}; ranges {changes:x?}"
    );
    // The disk takes writes again after the reopen.
    let mut c4 = env.nbd();
    let last = DISK_SIZE - MIB;
    c4.write(last, &[0x5a; 4096])
        .expect("write after the reopen");
    c4.flush().expect("flush after the reopen");
    assert_eq!(c4.read(last, 4096).unwrap(), vec![0x5a; 4096]);
    c4.disconnect();
    let mut content = content;
    content[last as usize..last as usize + 4096].fill(0x5a);
    env.stop(d, TOOL_LIMIT);

    // --- The files, without the daemon ------------------------------------
    let o = tools::run(
        &mut env.cmd(&["vhd", "check", s(&disk), "--json"]),
        TOOL_LIMIT,
    );
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("vhd check --json: not JSON ({e}): {}", tools::text(&o)));
    assert!(
        o.status.success() && v["valid"] == true,
        "vhd check ({}): {v}",
        o.status
    );
    let o = tools::run(
        Command::new("qemu-img").args(["check", "-f", "vhdx", s(&disk)]),
        TOOL_LIMIT,
    );
    assert!(
        o.status.success(),
        "qemu-img check ({}): {}",
        o.status,
        tools::text(&o)
    );
    // Converted to raw (outside the tmpfs) by refpoint and by qemu-img:
    // what the daemon served.
    let raw = env.dir.join("converted.raw");
    env.ok(&["vhd", "convert", s(&disk), s(&raw), "--format", "raw"]);
    let got = std::fs::read(&raw).unwrap();
    assert!(
        got == content,
        "refpoint vhd convert differs from what NBD read"
    );
    std::fs::remove_file(&raw).unwrap();
    let qraw = env.dir.join("qemu-converted.raw");
    let o = tools::run(
        Command::new("qemu-img").args(["convert", "-f", "vhdx", "-O", "raw", s(&disk), s(&qraw)]),
        TOOL_LIMIT,
    );
    assert!(o.status.success(), "qemu-img convert: {}", tools::text(&o));
    let got = std::fs::read(&qraw).unwrap();
    assert!(
        got == content,
        "qemu-img convert differs from what NBD read"
    );
    std::fs::remove_file(&qraw).unwrap();
    // The tracking file, read by the CLI itself.
    let offline = env.changes_ok(&id).unwrap_or_else(|| vec![(0, DISK_SIZE)]);
    for (&block, w) in &writes {
        if w.fate == Fate::Durable {
            assert!(
                covered(&offline, block * MIB, MIB),
                "offline rct changes miss the durable write at {:#x}: {offline:x?}",
                block * MIB
            );
        }
    }
    assert!(covered(&offline, last, 4096), "{offline:x?}");

    // --- 5. Summary -------------------------------------------------------
    let count = |f: Fate| writes.values().filter(|w| w.fate == f).count();
    let written_bytes: u64 =
        writes.values().filter(|w| w.fate != Fate::Failed).count() as u64 * MIB;
    let reported: u64 = changes.iter().map(|r| r.1).sum();
    let failed_present = writes
        .iter()
        .filter(|(b, w)| w.fate == Fate::Failed && data_blocks.contains(b))
        .count();
    eprintln!(
        "summary: {} writes of 1 MiB sent ({} by our client, {BURST} by qemu-io); \
         {durable_before_full} acknowledged by a successful flush before the disk was full, \
         {} durable in the end, {} acknowledged but not durable, {} failed ({failed_present} of them \
         there after all); the first failure: {failed_op} ({}); errnos: {errnos:?}; \
         after freeing space the flush {}; the first daemon {}; \
         changes since {id}: {reported} bytes in {} ranges for {written_bytes} bytes acknowledged \
         ({} blocks hold data); {} violations; runtime {:.1} s",
        writes.len(),
        writes.len() as u64 - BURST,
        count(Fate::Durable),
        count(Fate::Acked),
        count(Fate::Failed),
        errno_name(errno),
        if recovered { "succeeded" } else { "failed" },
        if stopped_cleanly {
            "closed its disk cleanly"
        } else {
            "could not close its disk"
        },
        changes.len(),
        data_blocks.len(),
        violations.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        violations.is_empty(),
        "{} broken promises:\n{}",
        violations.len(),
        violations.join("\n")
    );
}
