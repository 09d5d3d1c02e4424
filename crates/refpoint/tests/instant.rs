//! Instant restore with the real binary and daemon: a machine runs on a
//! backup point at once, served over NBD; writes land in its own files
//! (the repository stays byte-identical); `restore --finish` makes its
//! disks standalone while a writer writes, and resumes after `kill -9` of
//! the daemon; `restore --discard` drops it. Peers: `qemu-img compare`
//! and `qemu-img info` read what refpoint serves and writes.

mod common;

use common::{s, Env};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use testkit::nbd_client::Disk;

const MIB: u64 = 1 << 20;
const SIZE: u64 = 64 * MIB;
const T: Duration = Duration::from_secs(30);

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn connect(env: &Env, export: &str) -> Disk {
    Disk::connect(&env.nbd_socket(), export, T).unwrap()
}

/// Random writes to an export, flushed, each also applied to `model`.
fn scribble(d: &mut Disk, model: &Mutex<Vec<u8>>, rng: &mut SmallRng, n: usize) {
    for _ in 0..n {
        let len = rng.gen_range(1..=64u64) * 4096;
        let off = rng.gen_range(0..(SIZE - len) / 4096) * 4096;
        let data: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
        d.write(off, &data).unwrap();
        d.flush().unwrap();
        model.lock().unwrap()[off as usize..(off + len) as usize].copy_from_slice(&data);
    }
}

/// A writer thread that writes to `export` until stopped.
struct Writer {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<usize>,
}

impl Writer {
    fn start(env: &Env, export: &str, model: Arc<Mutex<Vec<u8>>>, seed: u64) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let mut d = connect(env, export);
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut rng = SmallRng::seed_from_u64(seed);
            let mut n = 0;
            while !s.load(Ordering::SeqCst) {
                scribble(&mut d, &model, &mut rng, 1);
                n += 1;
                std::thread::sleep(Duration::from_millis(5));
            }
            d.disconnect();
            n
        });
        Writer { stop, thread }
    }

    /// Stops it; returns how many writes it made.
    fn stop(self) -> usize {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap()
    }
}

/// Machine vm1 with data, backed up twice through the daemon (point 2 is
/// a differential on point 1); returns point 2's content, restored flat.
fn backed_up(env: &Env, rng: &mut SmallRng) -> (PathBuf, Vec<u8>) {
    let model = Mutex::new(vec![0u8; SIZE as usize]);
    let mut d = connect(env, "vm1/disk0");
    scribble(&mut d, &model, rng, 60);
    let repo = env.dir.join("repo");
    env.ok(&["backup", "vm1", "--to", s(&repo)]);
    scribble(&mut d, &model, rng, 20);
    d.disconnect();
    env.ok(&["backup", "vm1", "--to", s(&repo)]);
    let flat = env.dir.join("p2.raw");
    env.ok(&[
        "restore",
        s(&repo),
        "--point",
        "2",
        "--to",
        s(&flat),
        "--format",
        "raw",
    ]);
    let want = std::fs::read(&flat).unwrap();
    assert_eq!(want, *model.lock().unwrap(), "the restored point");
    (repo, want)
}

/// What both tests with the daemon start from.
struct Setup {
    rng: SmallRng,
    env: Env,
    daemon: common::Daemon,
    repo: PathBuf,
    /// Point 2's content.
    point: Vec<u8>,
    /// The repository's files.
    before: BTreeMap<PathBuf, Vec<u8>>,
}

/// Machine vm1 backed up twice through a running daemon; `None` (the test
/// skips) without qemu-img.
fn setup() -> Option<Setup> {
    if !testkit::tools::available(&["qemu-img"]) {
        return None;
    }
    let mut rng = SmallRng::seed_from_u64(testkit::seed());
    let env = Env::new();
    env.machine(SIZE, "1M", None);
    let daemon = env.serve(&[]);
    let (repo, point) = backed_up(&env, &mut rng);
    let before = snapshot(&repo);
    Some(Setup {
        rng,
        env,
        daemon,
        repo,
        point,
        before,
    })
}

fn machine_json(env: &Env, name: &str) -> serde_json::Value {
    env.json(&["machine", "show", name, "--json"])
}

fn assert_standalone(env: &Env, name: &str, want: &[u8]) {
    let m = machine_json(env, name);
    assert!(m.get("instant").is_none(), "still instant: {m}");
    let file = PathBuf::from(m["disks"][0]["base"].as_str().unwrap());
    // qemu-img reads it alone: no parent.
    let o = testkit::tools::run(
        std::process::Command::new("qemu-img").args(["info", "--output=json", s(&file)]),
        T,
    );
    let info: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(info.get("backing-filename").is_none(), "{info}");
    let raw = env.dir.join(format!("{name}-final.raw"));
    let o = testkit::tools::run(
        std::process::Command::new("qemu-img").args([
            "convert",
            "-f",
            "vhdx",
            "-O",
            "raw",
            s(&file),
            s(&raw),
        ]),
        T,
    );
    assert!(o.status.success(), "{}", testkit::tools::text(&o));
    testkit::compare::assert_same(
        "the standalone disk (read by qemu-img)",
        &std::fs::read(&raw).unwrap(),
        want,
    );
}

#[test]
fn instant_machine_serves_the_point_at_once_and_finishes_while_written() {
    let Some(Setup {
        mut rng,
        env,
        daemon,
        repo,
        point,
        before,
    }) = setup()
    else {
        return;
    };

    // Command to first byte over NBD.
    let t = Instant::now();
    let out = env.ok(&[
        "restore",
        s(&repo),
        "--point",
        "2",
        "--instant",
        "--as",
        "vm1r",
    ]);
    let mut d = connect(&env, "vm1r/disk0");
    d.read(0, 512).unwrap();
    eprintln!(
        "instant restore: first byte readable over NBD {:.3}s after the command",
        t.elapsed().as_secs_f64()
    );
    assert!(out.contains("export vm1r/disk0"), "{out}");
    let m = machine_json(&env, "vm1r");
    assert_eq!(m["instant"]["point"], 2, "{m}");
    assert_eq!(m["instant"]["source_machine"], "vm1", "{m}");

    // Before any write: the export is the point, to qemu-img too.
    let flat = env.dir.join("p2.raw");
    let o = testkit::tools::run(
        std::process::Command::new("qemu-img").args([
            "compare",
            "-f",
            "raw",
            "-F",
            "raw",
            &env.uri("vm1r/disk0"),
            s(&flat),
        ]),
        T,
    );
    assert!(o.status.success(), "{}", testkit::tools::text(&o));

    // Writes land in the machine's own file: the source machine and the
    // repository do not change.
    let vm1_before = connect(&env, "vm1/disk0").read_all();
    let model = Arc::new(Mutex::new(point.clone()));
    scribble(&mut d, &model, &mut rng, 30);
    assert_eq!(d.read_all(), *model.lock().unwrap());
    d.disconnect();
    assert_eq!(connect(&env, "vm1/disk0").read_all(), vm1_before);
    assert!(snapshot(&repo) == before, "the repository changed");
    let tracked = env.json(&["rct", "status", "vm1r/disk0", "--json"]);
    assert_eq!(tracked["enabled"], true, "{tracked}");

    // Finish while a writer writes.
    let w = Writer::start(&env, "vm1r/disk0", model.clone(), rng.gen());
    std::thread::sleep(Duration::from_millis(200));
    let s_ = env.json(&["restore", "--finish", "vm1r", "--json"]);
    std::thread::sleep(Duration::from_millis(200));
    let writes = w.stop();
    eprintln!("finish: {s_}\n{writes} writes while finishing");
    assert!(writes > 0);
    assert!(s_["bytes_copied"].as_u64().unwrap() > 0, "{s_}");
    let want = model.lock().unwrap().clone();
    assert_eq!(
        connect(&env, "vm1r/disk0").read_all(),
        want,
        "the served disk"
    );
    let st = env.json(&["rct", "status", "vm1r/disk0", "--json"]);
    assert_eq!(st["enabled"], true, "tracking after the finish: {st}");
    assert!(snapshot(&repo) == before, "the repository changed");
    env.stop(daemon, T);
    assert_standalone(&env, "vm1r", &want);
    // It is an ordinary machine now: backed up like any other.
    let b = env.json(&[
        "backup",
        "vm1r",
        "--to",
        s(&env.dir.join("repo-r")),
        "--json",
    ]);
    assert_eq!(b["point"], 1, "{b}");
}

#[test]
fn a_finish_cut_by_kill_9_resumes_when_the_daemon_starts() {
    let Some(Setup {
        mut rng,
        env,
        daemon,
        repo,
        point,
        before,
    }) = setup()
    else {
        return;
    };
    env.ok(&["restore", s(&repo), "--instant", "--as", "vm1r"]);
    let model = Arc::new(Mutex::new(point));
    let mut d = connect(&env, "vm1r/disk0");
    scribble(&mut d, &model, &mut rng, 10);
    d.disconnect();
    // Slow, so the kill lands inside the copy.
    let job = env.json(&[
        "restore",
        "--finish",
        "vm1r",
        "--throttle",
        "4M",
        "--no-wait",
        "--json",
    ]);
    assert_eq!(job["kind"], "finish", "{job}");
    let tmp = env.home.join("instant/vm1r/.disk0.vhdx.standalone");
    let t = Instant::now();
    while !tmp.exists() {
        assert!(t.elapsed() < T, "the finish did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(rng.gen_range(100..1500)));
    daemon.kill9();
    let m = machine_json(&env, "vm1r");
    assert_eq!(m["instant"]["finishing"], true, "{m}");

    let daemon = env.serve(&[]);
    let w = Writer::start(&env, "vm1r/disk0", model.clone(), rng.gen());
    let t = Instant::now();
    while machine_json(&env, "vm1r").get("instant").is_some() {
        assert!(
            t.elapsed() < Duration::from_secs(120),
            "the resumed finish did not end: {}",
            daemon.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    w.stop();
    assert!(daemon
        .log_text()
        .contains("resuming the finish of instant machine vm1r"));
    let want = model.lock().unwrap().clone();
    assert_eq!(connect(&env, "vm1r/disk0").read_all(), want);
    assert!(snapshot(&repo) == before, "the repository changed");
    env.stop(daemon, T);
    assert_standalone(&env, "vm1r", &want);
    assert!(!tmp.exists());
}

#[test]
fn without_a_daemon_and_on_bad_requests() {
    let env = Env::new();
    let disk = env.machine(8 * MIB, "1M", None);
    env.ok(&[
        "disk",
        "write",
        s(&disk),
        "--offset",
        "1M",
        "--pattern",
        "0x5a",
        "--length",
        "2M",
    ]);
    let repo = env.dir.join("repo");
    env.ok(&["backup", "vm1", "--to", s(&repo)]);
    let before = snapshot(&repo);
    let out = env.ok(&["restore", s(&repo), "--instant", "--as", "r1"]);
    assert!(out.contains("refpoint serve"), "{out}");
    let file = env.home.join("instant/r1/disk0.vhdx");
    env.ok(&[
        "disk",
        "write",
        s(&file),
        "--offset",
        "0",
        "--pattern",
        "0x11",
        "--length",
        "4096",
    ]);
    let s_ = env.json(&["restore", "--finish", "r1", "--json"]);
    assert_eq!(s_["resumed"], false, "{s_}");
    let mut want = vec![0u8; 8 * MIB as usize];
    want[..4096].fill(0x11);
    want[MIB as usize..3 * MIB as usize].fill(0x5a);
    if testkit::tools::available(&["qemu-img"]) {
        assert_standalone(&env, "r1", &want);
    }
    assert!(snapshot(&repo) == before, "the repository changed");

    // --instant and --finish at once; then discard.
    env.ok(&["restore", s(&repo), "--instant", "--as", "r2", "--finish"]);
    assert!(machine_json(&env, "r2").get("instant").is_none());
    env.ok(&["restore", s(&repo), "--instant", "--as", "r3"]);
    let o = env.run(&["backup", "consolidate", s(&repo), "--keep", "1"]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("machine r3 runs on point 1"),
        "{e}"
    );
    let out = env.ok(&["restore", "--discard", "r3"]);
    assert!(out.contains("discarded"), "{out}");
    assert!(!env.home.join("instant/r3").exists());
    assert!(snapshot(&repo) == before, "the repository changed");

    // One machine of a host point.
    let host = env.dir.join("host");
    env.ok(&["backup", "--all", "--to", s(&host)]);
    let host_before = snapshot(&host);
    env.ok(&[
        "restore",
        s(&host),
        "--point",
        "1",
        "--machine",
        "vm1",
        "--instant",
        "--as",
        "h1",
    ]);
    let m = machine_json(&env, "h1");
    assert_eq!(m["instant"]["source_machine"], "vm1", "{m}");
    assert!(m["instant"]["repository"]
        .as_str()
        .unwrap()
        .ends_with("host/machines/vm1"));
    env.ok(&["restore", "--finish", "h1"]);
    if testkit::tools::available(&["qemu-img"]) {
        let mut point = vec![0u8; 8 * MIB as usize];
        point[MIB as usize..3 * MIB as usize].fill(0x5a);
        assert_standalone(&env, "h1", &point);
    }
    assert!(
        snapshot(&host) == host_before,
        "the host repository changed"
    );

    let err = |args: &[&str]| {
        let o = env.run(args);
        assert!(!o.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&o.stderr).into_owned()
    };
    let e = err(&["restore", "--finish", "vm1"]);
    assert!(e.contains("not an instantly restored machine"), "{e}");
    let e = err(&["restore", s(&repo), "--instant", "--as", "r1"]);
    assert!(e.contains("already exists"), "{e}");
    let e = err(&["restore", s(&repo), "--instant"]);
    assert!(e.contains("--as"), "{e}");
    let e = err(&[
        "restore",
        s(&repo),
        "--point",
        "9",
        "--instant",
        "--as",
        "r9",
    ]);
    assert!(e.contains("no point 9"), "{e}");
    assert!(!env.home.join("instant/r9").exists());
    let e = err(&["restore", s(&host), "--instant", "--as", "h2"]);
    assert!(e.contains("is a host repository: name the machine"), "{e}");
    let e = err(&[
        "restore",
        s(&host),
        "--machine",
        "vm9",
        "--instant",
        "--as",
        "h2",
    ]);
    assert!(e.contains("has no machine \"vm9\""), "{e}");
    let e = err(&[
        "restore",
        s(&repo),
        "--machine",
        "vm9",
        "--instant",
        "--as",
        "h2",
    ]);
    assert!(e.contains("is a backup of machine vm1, not vm9"), "{e}");
    let e = err(&["restore", "--discard", "nope"]);
    assert!(e.contains("no machine named"), "{e}");
    let e = err(&["restore", s(&repo)]);
    assert!(e.contains("--to"), "{e}");
}
