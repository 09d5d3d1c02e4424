//! librefpoint from C: the test compiles the programs in `tests/c/` with
//! `cc` against the library the build just made (shared, and once static),
//! runs a backup vendor's whole flow with them (without a daemon, through
//! the local daemon, and through a remote daemon over HTTPS and NBD/TLS)
//! while qemu-io writes to the disk over NBD, and provokes every error
//! code; then again under AddressSanitizer and UBSan.
//!
//! What the flow must produce is checked against a model this test keeps
//! of every byte it wrote, not against anything refpoint says.

use api::Machines;
use std::collections::BTreeSet;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;
use storage::LocalFs;
use testkit::tools;

mod common;
use common::Installed;
use vhdx::{create, CreateOptions};

const MIB: u64 = 1 << 20;
const SIZE: u64 = 64 * MIB;
use common::LIMIT;
const TOKEN: &str = "capi-test-token-0123456789abcdef0123456789";

fn vhdx(path: &Path, size: u64) {
    let mut o = CreateOptions::dynamic(size);
    o.block_size = MIB as u32;
    create(&LocalFs, path, &o).unwrap().close().unwrap();
}

/// The bytes the test wrote, everywhere, by its own account.
struct Model {
    bytes: Vec<u8>,
}

impl Model {
    fn put(&mut self, offset: u64, data: &[u8]) {
        let o = offset as usize;
        self.bytes[o..o + data.len()].copy_from_slice(data);
    }

    fn put_fill(&mut self, offset: u64, len: u64, byte: u8) {
        self.put(offset, &vec![byte; len as usize]);
    }

    /// `vendor_flow`'s write to the live disk while it reads a checkpoint's
    /// view: after the checkpoint, so the backup of that point must not
    /// hold it, and the next one must.
    fn poked(&mut self) {
        self.put_fill(5 * MIB, 64 * 1024, 0xee);
    }

    fn assert_equals(&self, file: &Path, what: &str) {
        let got = std::fs::read(file).unwrap();
        assert_eq!(got.len(), self.bytes.len(), "{what}: size");
        if let Some(i) = (0..got.len()).find(|&i| got[i] != self.bytes[i]) {
            panic!(
                "{what}: byte {i} is {:#x}, the model says {:#x}",
                got[i], self.bytes[i]
            );
        }
    }
}

/// `key=value` lines of a program's output.
fn field(out: &str, key: &str) -> u64 {
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in:\n{out}"))
        .parse()
        .unwrap()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A daemon on `home`, with the API and NBD on TCP (TLS, token).
struct Daemon {
    thread: Option<std::thread::JoinHandle<daemon::Result<()>>>,
    home: PathBuf,
    api_port: u16,
}

impl Daemon {
    fn start(home: &Path, pki: &testkit::pki::Pki) -> Daemon {
        let token_file = home.join("token");
        std::fs::write(&token_file, TOKEN).unwrap();
        let api_port = free_port();
        let o = daemon::ServeOptions {
            home: home.into(),
            nbd_socket: daemon::nbd_socket(home),
            api_socket: daemon::api_socket(home),
            listen: Some(format!("127.0.0.1:{}", free_port()).parse().unwrap()),
            api_listen: Some(format!("127.0.0.1:{api_port}").parse().unwrap()),
            tls_cert: Some(pki.server_cert.clone()),
            tls_key: Some(pki.server_key.clone()),
            tls_client_ca: None,
            token_file: Some(token_file),
        };
        let thread = std::thread::spawn(move || daemon::run(o));
        for _ in 0..200 {
            if thread.is_finished() {
                let r = thread.join().expect("the daemon thread");
                panic!("the daemon stopped at once: {r:?}");
            }
            if api::Client::find(home).is_some_and(|c| c.status().is_ok()) {
                return Daemon {
                    thread: Some(thread),
                    home: home.into(),
                    api_port,
                };
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("the daemon did not start");
    }

    fn url(&self, disk: &str) -> String {
        format!("refpoint+https://127.0.0.1:{}/{disk}", self.api_port)
    }

    fn nbd_uri(&self, export: &str) -> String {
        format!(
            "nbd+unix:///{export}?socket={}",
            daemon::nbd_socket(&self.home).display()
        )
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(c) = api::Client::find(&self.home) {
            let _ = c.shutdown();
        }
        if let Some(t) = self.thread.take() {
            let r = t.join().expect("the daemon thread");
            if !std::thread::panicking() {
                r.expect("the daemon ran");
            }
        }
    }
}

/// Scattered writes through the daemon's NBD socket by qemu-io, a client
/// nobody here wrote; the model follows.
fn write_with_qemu_io(d: &Daemon, export: &str, model: &mut Model, seed: u64) {
    let mut cmds = Vec::new();
    let mut x = seed;
    for i in 0..24u64 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let len = 512 * (1 + (x >> 33) % 128);
        let offset = ((x >> 7) % (SIZE - len)) / 512 * 512;
        let byte = (seed as u8).wrapping_mul(31).wrapping_add(i as u8) | 1;
        cmds.push(format!("write -P {byte} {offset} {len}"));
        model.put_fill(offset, len, byte);
    }
    cmds.push("flush".into());
    tools::run_ok(
        &mut tools::qemu_io(&["-f", "raw"], &cmds, d.nbd_uri(export)),
        LIMIT,
    );
}

/// Files for the error program: see `tests/c/error_codes.c`.
fn fixtures(dir: &Path) {
    std::fs::create_dir_all(dir.join("a-directory")).unwrap();
    let raw = |name: &str| {
        let p = dir.join(name);
        std::fs::File::create(&p).unwrap().set_len(MIB).unwrap();
        p
    };
    raw("plain.raw");
    let tracked = |name: &str| {
        let p = raw(name);
        let mut d = vdisk::Disk::open(Arc::new(LocalFs), &p, true).unwrap();
        d.enable_tracking(rct::DEFAULT_GRANULARITY).unwrap();
        d.write(0, &[7; 4096]).unwrap();
        d.close().unwrap();
        p
    };
    tracked("tracked.raw");
    let p = tracked("disabled.raw");
    let mut d = vdisk::Disk::open(Arc::new(LocalFs), &p, true).unwrap();
    d.disable_tracking().unwrap();
    d.close().unwrap();
    let p = tracked("missing-rct.raw");
    std::fs::remove_file(rct::tracking_path(&p)).unwrap();
    let p = tracked("corrupt-rct.raw");
    std::fs::write(rct::tracking_path(&p), vec![0xa5; 8192]).unwrap();
    let p = tracked("modified.raw");
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&p, vec![1; MIB as usize]).unwrap();

    tracked("lifecycle.raw");
    let v = dir.join("lifecycle.vhdx");
    vhdx(&v, 4 * MIB);
    let mut d = vdisk::Disk::open(Arc::new(LocalFs), &v, true).unwrap();
    d.enable_tracking(rct::DEFAULT_GRANULARITY).unwrap();
    d.close().unwrap();

    let mut corrupt = b"vhdxfile".to_vec();
    corrupt.resize(2 * MIB as usize, 0x33);
    std::fs::write(dir.join("corrupt.vhdx"), corrupt).unwrap();
}

/// A 2 MiB tmpfs under `dir/full` with a 64 MiB sparse raw disk on it, as
/// root; `None` otherwise (the no-space code then goes unprovoked).
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path) -> Option<Tmpfs> {
        let at = dir.join("full");
        std::fs::create_dir_all(&at).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=2m", "refpoint-capi-full"])
            .arg(&at)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            eprintln!("not root: the full-medium code is not provoked");
            return None;
        }
        std::fs::File::create(at.join("disk.raw"))
            .unwrap()
            .set_len(SIZE)
            .unwrap();
        Some(Tmpfs(at))
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn run(program: &Path, args: &[&str], envs: &[(&str, &str)]) -> String {
    let mut c = Command::new(program);
    c.args(args)
        .env_remove("REFPOINT_TOKEN")
        .env_remove("REFPOINT_CA")
        .env_remove("LD_LIBRARY_PATH");
    for (k, v) in envs {
        c.env(k, v);
    }
    tools::ok(&mut c, LIMIT)
}

#[test]
fn a_vendor_runs_the_whole_backup_flow_from_c() {
    if !tools::available(&["cc", "make", "pkg-config", "qemu-io"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let home = dir.path().join("home");
    let bin = dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let lib = Installed::new(&dir.path().join("prefix"));
    let asan = ["-fsanitize=address,undefined"];
    let flow = lib.program("vendor_flow", &bin, &[]);
    let flow_asan = lib.program("vendor_flow", &bin, &asan);
    let errors = lib.program("error_codes", &bin, &[]);
    let errors_asan = lib.program("error_codes", &bin, &asan);
    let lifecycle = lib.program("lifecycle", &bin, &asan);

    // vm1: a 64 MiB disk with data in a few places, tracked.
    let disk0 = dir.path().join("vm1-disk0.vhdx");
    vhdx(&disk0, SIZE);
    let mut model = Model {
        bytes: vec![0; SIZE as usize],
    };
    {
        let mut d = vdisk::Disk::open(Arc::new(LocalFs), &disk0, true).unwrap();
        for (offset, len, seed) in [
            (0, MIB, 1),
            (10 * MIB, 2 * MIB, 2),
            (40 * MIB + 123, 5000, 3),
        ] {
            let data = testkit::pattern::bytes(len as usize, seed);
            d.write(offset, &data).unwrap();
            model.put(offset, &data);
        }
        d.close().unwrap();
    }
    let store = machine::Store::local(&home);
    store
        .create("vm1", &[(None, disk0.clone())], None, None)
        .unwrap();
    daemon::Service::local(store.clone())
        .enable_tracking("vm1", "disk0", &Default::default())
        .unwrap();
    // vm2 for the threads, vm3 with a standard checkpoint (a frozen file).
    for vm in ["vm2", "vm3"] {
        let p = dir.path().join(format!("{vm}.vhdx"));
        vhdx(&p, 16 * MIB);
        store.create(vm, &[(None, p)], None, None).unwrap();
    }
    // vm3 untracked: its checkpoint holds no RCT ID.
    daemon::Service::local(store.clone())
        .disable_tracking("vm3", "disk0")
        .unwrap();
    let cp = store
        .create_checkpoint(
            "vm3",
            machine::CheckpointKind::Standard,
            machine::Consistency::Crash,
        )
        .unwrap();
    let frozen = cp.disks[0].frozen.clone();

    let home_s = home.to_str().unwrap();
    let out = dir.path().join("backup.raw");
    let out_s = out.to_str().unwrap();

    // 1. The full backup with no daemon: the disk is held in-process.
    let o = run(&flow, &["full", home_s, "vm1/disk0", out_s], &[]);
    model.assert_equals(&out, "the full backup (no daemon)");
    model.poked();
    assert!(
        field(&o, "pages") >= 2,
        "the allocation map was paged:\n{o}"
    );
    assert!(
        field(&o, "bytes") < SIZE / 2,
        "holes were skipped, not read:\n{o}"
    );

    // 2. With a daemon: qemu-io writes over NBD, the C program backs up
    //    the changes through the daemon's sockets.
    let pki = testkit::pki::Pki::new();
    let d = Daemon::start(&home, &pki);
    write_with_qemu_io(&d, "vm1/disk0", &mut model, 11);
    let o = run(&flow, &["incr", home_s, "vm1/disk0", out_s], &[]);
    model.assert_equals(&out, "the first incremental (local daemon)");
    model.poked();
    assert!(
        field(&o, "pages") > 5,
        "one range per page, many pages:\n{o}"
    );
    assert!(
        field(&o, "bytes") <= 24 * 2 * (64 * 1024 + 64 * 1024),
        "only changed regions were read:\n{o}"
    );

    // 3. The same from "another host": HTTPS with a token, NBD over TLS.
    write_with_qemu_io(&d, "vm1/disk0", &mut model, 12);
    let ca = pki.ca.to_str().unwrap();
    let url = d.url("vm1/disk0");
    let o = run(
        &flow,
        &["incr", home_s, &url, out_s],
        &[("REFPOINT_TOKEN", TOKEN), ("REFPOINT_CA", ca)],
    );
    model.assert_equals(&out, "the second incremental (remote daemon)");
    model.poked();
    assert!(field(&o, "pages") > 5, "{o}");

    // 4. Several threads on one handle and on their own, under ASan too.
    for program in [&flow, &flow_asan] {
        let o = run(program, &["threads", home_s, "vm2/disk0"], &[]);
        assert_eq!(field(&o, "failed"), 0, "{o}");
    }
    let mut vm2 = testkit::nbd_client::Disk::connect(
        &daemon::nbd_socket(&home),
        "vm2/disk0",
        Duration::from_secs(30),
    )
    .unwrap();
    for t in 0..4u64 {
        for round in [6u64, 7] {
            let at = (t * 2 + round % 2) * MIB;
            let want = b'A' + (t * 8 + round) as u8;
            let got = vm2.read(at, MIB).unwrap();
            assert!(
                got.iter().all(|&b| b == want),
                "vm2 at {at}: the last write of thread {t}"
            );
        }
    }
    drop(vm2);

    // 5. Every error code a caller can meet, with and without sanitizers.
    let fx = dir.path().join("fixtures");
    fixtures(&fx);
    let _tmpfs = Tmpfs::mount(&fx);
    let fx_s = fx.to_str().unwrap();
    let frozen_s = frozen.to_str().unwrap();
    let files: Vec<String> = ["lifecycle.raw", "lifecycle.vhdx"]
        .iter()
        .map(|f| fx.join(f).display().to_string())
        .collect();
    let mut args = vec![home_s];
    args.extend(files.iter().map(String::as_str));
    let o = run(&lifecycle, &args, &[]);
    assert!(o.contains("files=2\nfailures=0"), "{o}");

    let mut provoked = BTreeSet::new();
    for program in [&errors, &errors_asan] {
        let o = run(
            program,
            &[home_s, fx_s, frozen_s, &url],
            &[("REFPOINT_CA", ca)],
        );
        assert!(o.contains("failures=0"), "{o}");
        provoked.extend(
            o.lines()
                .filter_map(|l| l.strip_prefix("provoked "))
                .map(String::from),
        );
    }
    // Not provokable without a fault in the machine or a bug: a panic
    // caught at the boundary, and tracking stopped by an I/O error.
    let mut expected: BTreeSet<String> = refpoint_codes()
        .into_iter()
        .filter(|n| !["ok", "internal", "tracking_failed"].contains(&n.as_str()))
        .collect();
    if _tmpfs.is_none() {
        expected.remove("no_space");
    }
    assert_eq!(
        provoked, expected,
        "codes provoked by tests/c/error_codes.c"
    );

    // 6. After the daemon stops, the threads again, held in-process.
    drop(d);
    let o = run(&flow, &["threads", home_s, "vm2/disk0"], &[]);
    assert_eq!(field(&o, "failed"), 0, "{o}");
    let t = store.resolve(Path::new("vm2/disk0")).unwrap();
    let mut vm2 = store.open_target(&t, false).unwrap();
    for t in 0..4u64 {
        for round in [6u64, 7] {
            let at = (t * 2 + round % 2) * MIB;
            let mut got = vec![0; MIB as usize];
            vm2.read(at, &mut got).unwrap();
            let want = b'A' + (t * 8 + round) as u8;
            assert!(got.iter().all(|&b| b == want), "vm2 at {at}, in-process");
        }
    }
}

/// The code names the header defines, read from the header itself.
fn refpoint_codes() -> Vec<String> {
    let header = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/refpoint.h");
    let h = std::fs::read_to_string(header).unwrap();
    let mut names: Vec<String> = h
        .lines()
        .filter_map(|l| l.strip_prefix("#define REFPOINT_E_"))
        .filter_map(|l| l.split_whitespace().next())
        .map(|n| n.to_ascii_lowercase())
        .collect();
    names.push("ok".into());
    names
}

#[test]
fn the_static_library_links_and_answers() {
    if !tools::available(&["cc", "make", "pkg-config"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lib = Installed::new(&dir.path().join("prefix"));
    let src = dir.path().join("tiny.c");
    std::fs::write(
        &src,
        r#"#include "refpoint.h"
#include <stdio.h>
#include <string.h>
int main(void) {
    refpoint_disk *d = NULL;
    int rc = refpoint_open("/nonexistent/disk.vhdx", NULL, 0, &d);
    printf("%s %s %s\n", refpoint_version(), refpoint_error_name(rc), refpoint_last_error());
    return rc == REFPOINT_E_NOT_FOUND && d == NULL && strstr(refpoint_last_error(), "disk.vhdx") ? 0 : 1;
}
"#,
    )
    .unwrap();
    let out = dir.path().join("tiny");
    lib.compile(&src, &out, &[], true);
    let o = tools::ok(Command::new(&out).env("REFPOINT_HOME", dir.path()), LIMIT);
    assert!(o.starts_with("1.0.0 not_found "), "{o}");
    // Static: no librefpoint.so needed at run time.
    let deps = tools::ok(Command::new("ldd").arg(&out), LIMIT);
    assert!(!deps.contains("librefpoint"), "{deps}");
}
