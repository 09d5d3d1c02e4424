//! Real NBD clients against the server running in this process: qemu-img,
//! qemu-io and qemu-nbd (qemu-utils), nbdinfo and nbdcopy (libnbd-bin).
//!
//! Every test starts its own server on a multi-threaded tokio runtime that
//! serves three in-memory exports on a unix socket in a temporary directory
//! and on TCP 127.0.0.1:<any port>: `disk` and `disk2` (16 MiB, writable)
//! and `ro` (4 MiB, read-only). The clients run as child processes; what
//! they wrote is checked on the devices themselves, what they read against
//! the bytes the devices hold. The TLS tests make a CA, server and client
//! certificates ([`testkit::pki`]) and run the TCP listener with TLS
//! required.

mod common;

use common::TestServer;
use nbd::mem::{MemDevice, StaticExports};
use nbd::proto::{NBD_STATE_HOLE, NBD_STATE_ZERO};
use nbd::{BlockDevice, Extent};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;
use testkit::compare::assert_same;
use testkit::pattern;
use testkit::tools::{self, parse_nbdinfo_map};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const DISK_SIZE: u64 = 16 * MIB;
const RO_SIZE: u64 = 4 * MIB;
const PAGE: u64 = 4096;
/// A client still running after this long is killed and the test fails.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------
// The server under test

struct Fixture {
    srv: TestServer,
    disk: Arc<MemDevice>,
    disk2: Arc<MemDevice>,
    ro: Arc<MemDevice>,
}

impl Fixture {
    /// A server without TLS.
    fn new() -> Self {
        Self::start(None)
    }

    /// A server whose TCP listener requires TLS when `tls` is given (the
    /// unix socket never does).
    fn start(tls: Option<Arc<tokio_rustls::rustls::ServerConfig>>) -> Self {
        let disk = Arc::new(MemDevice::new(DISK_SIZE, false));
        let disk2 = Arc::new(MemDevice::new(DISK_SIZE, false));
        let ro = Arc::new(MemDevice::new(RO_SIZE, true));
        // The read-only export's content: 0x3c in the first MiB, a pattern
        // in the third, holes elsewhere.
        ro.write(0, &vec![0x3c; MIB as usize], false).unwrap();
        ro.write(2 * MIB, &pattern::bytes(MIB as usize, 9), false)
            .unwrap();
        let exports = StaticExports::default()
            .with("disk", disk.clone())
            .with("disk2", disk2.clone())
            .with("ro", ro.clone());
        Fixture {
            srv: TestServer::start(exports, tls),
            disk,
            disk2,
            ro,
        }
    }

    fn unix(&self, export: &str) -> String {
        format!("nbd+unix:///{export}?socket={}", self.srv.sock.display())
    }

    fn tcp(&self, export: &str) -> String {
        format!("nbd://127.0.0.1:{}/{export}", self.srv.port)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.srv.dir.path().join(name)
    }
}

// ---------------------------------------------------------------------------
// Running clients

/// `prog args…`, to run as a client.
fn client(prog: &str, args: &[&str]) -> Command {
    let mut c = Command::new(prog);
    c.args(args);
    c
}

/// Runs a client to completion (killing it after [`CLIENT_TIMEOUT`]).
fn run(prog: &str, args: &[&str]) -> Output {
    tools::run(&mut client(prog, args), CLIENT_TIMEOUT)
}

/// Runs a client that must succeed; returns its standard output.
fn ok(prog: &str, args: &[&str]) -> String {
    tools::ok(&mut client(prog, args), CLIENT_TIMEOUT)
}

/// Runs a client that must fail; returns its output and error output.
fn fails(prog: &str, args: &[&str]) -> String {
    tools::fails(&mut client(prog, args), CLIENT_TIMEOUT)
}

/// The arguments of `qemu-io -f raw [-r] -c CMD… URI`: `cmds` run in
/// order on `uri`, opened read-only if `read_only`.
fn qemu_io<'a>(read_only: bool, cmds: &[&'a str], uri: &'a str) -> Vec<&'a str> {
    let mut args = vec!["-f", "raw"];
    if read_only {
        args.push("-r");
    }
    for c in cmds {
        args.extend(["-c", *c]);
    }
    args.push(uri);
    args
}

// ---------------------------------------------------------------------------
// Data

/// A 16 MiB raw image: data at the start, in the middle (unaligned), at
/// the end; zeros elsewhere.
fn source_image(salt: u64) -> Vec<u8> {
    let mut v = vec![0u8; DISK_SIZE as usize];
    pattern::fill(&mut v[..MIB as usize], salt);
    let mid = (5 * MIB + 1000) as usize;
    pattern::fill(&mut v[mid..mid + 70_000], salt ^ 0x55);
    let end = v.len() - 512;
    pattern::fill(&mut v[end..], salt ^ 0xaa);
    v
}

/// Runs of pages as `(offset, length, allocated)`, from the device's own
/// `base:allocation` answer.
fn allocation(dev: &MemDevice) -> Vec<(u64, u64, bool)> {
    let mut runs: Vec<(u64, u64, bool)> = Vec::new();
    let mut pos = 0;
    for Extent { length, flags } in dev.allocation(0, dev.size()).unwrap() {
        let data = flags & NBD_STATE_HOLE == 0;
        match runs.last_mut() {
            Some(r) if r.2 == data => r.1 += length,
            _ => runs.push((pos, length, data)),
        }
        pos += length;
    }
    runs
}

/// The runs of 4 KiB pages of `image` that hold a nonzero byte, in the
/// form of [`allocation`].
fn data_pages(image: &[u8]) -> Vec<(u64, u64, bool)> {
    let mut runs: Vec<(u64, u64, bool)> = Vec::new();
    for (i, page) in image.chunks(PAGE as usize).enumerate() {
        let data = page.iter().any(|&b| b != 0);
        match runs.last_mut() {
            Some(r) if r.2 == data => r.1 += page.len() as u64,
            _ => runs.push((i as u64 * PAGE, page.len() as u64, data)),
        }
    }
    runs
}

// ---------------------------------------------------------------------------
// qemu-img

fn qemu_img_round_trip(f: &Fixture, uri: &str) {
    let src = source_image(1);
    let src_path = f.path("src.raw");
    std::fs::write(&src_path, &src).unwrap();
    let src_s = src_path.to_str().unwrap();
    // Junk where the image has zeros: convert must overwrite it.
    f.disk.write(9 * MIB, &[0xee; 8192], false).unwrap();

    ok(
        "qemu-img",
        &["convert", "-n", "-f", "raw", "-O", "raw", src_s, uri],
    );
    assert_same("export after qemu-img convert", &f.disk.contents(), &src);
    let out = ok(
        "qemu-img",
        &["compare", "-f", "raw", "-F", "raw", src_s, uri],
    );
    assert!(out.contains("Images are identical"), "{out}");

    // A change on the device is seen by the next compare, at its offset.
    let at = 5 * MIB + 4321;
    f.disk.write(at, &[!src[at as usize]], false).unwrap();
    let o = run(
        "qemu-img",
        &["compare", "-f", "raw", "-F", "raw", src_s, uri],
    );
    assert_eq!(
        o.status.code(),
        Some(1),
        "{}",
        tools::describe("compare", &o)
    );
    // (qemu-img names the 512-byte sector.)
    let msg = String::from_utf8_lossy(&o.stdout);
    assert!(
        msg.contains(&format!("Content mismatch at offset {}!", at / 512 * 512)),
        "{msg}"
    );

    // And back to a file: exactly what the device holds.
    let out_path = f.path("out.raw");
    ok(
        "qemu-img",
        &[
            "convert",
            "-f",
            "raw",
            "-O",
            "raw",
            uri,
            out_path.to_str().unwrap(),
        ],
    );
    assert_same(
        "qemu-img convert from the export",
        &std::fs::read(&out_path).unwrap(),
        &f.disk.contents(),
    );
    let info = ok("qemu-img", &["info", "-f", "raw", uri]);
    assert!(info.contains(&format!("({DISK_SIZE} bytes)")), "{info}");
}

#[test]
fn qemu_img_convert_and_compare_over_unix_socket() {
    let f = Fixture::new();
    qemu_img_round_trip(&f, &f.unix("disk"));
}

#[test]
fn qemu_img_convert_and_compare_over_tcp() {
    let f = Fixture::new();
    qemu_img_round_trip(&f, &f.tcp("disk"));
}

// ---------------------------------------------------------------------------
// qemu-io

#[test]
fn qemu_io_writes_patterns_that_read_back() {
    let f = Fixture::new();
    let uri = f.unix("disk");
    let end = DISK_SIZE - 4 * KIB;
    let writes = format!("write -P 0x11 {end} 4k");
    ok(
        "qemu-io",
        &qemu_io(
            false,
            &[
                "write -P 0xa5 0 64k",
                "write -P 0x5a 3146240 1536", // 3 MiB + 512, unaligned
                "write -P 0x77 8M 1M",
                &writes,
            ],
            &uri,
        ),
    );
    // On the device, byte for byte.
    let mut want = vec![0u8; DISK_SIZE as usize];
    want[..65536].fill(0xa5);
    want[3146240..3146240 + 1536].fill(0x5a);
    want[8 << 20..9 << 20].fill(0x77);
    want[end as usize..].fill(0x11);
    assert_same("export after qemu-io writes", &f.disk.contents(), &want);

    // Read back over a new connection, through TCP this time.
    let reads = format!("read -P 0x11 {end} 4k");
    let out = ok(
        "qemu-io",
        &qemu_io(
            true,
            &[
                "read -P 0xa5 0 64k",
                "read -P 0x5a 3146240 1536",
                "read -P 0 3145728 512",
                "read -P 0x77 8M 1M",
                "read -P 0 9M 1M",
                &reads,
            ],
            &f.tcp("disk"),
        ),
    );
    assert!(!out.contains("Pattern verification failed"), "{out}");
    assert_eq!(out.matches("read ").count(), 6, "{out}");

    // A wrong pattern is caught: the reads above are real checks.
    let out = fails("qemu-io", &qemu_io(true, &["read -P 0xa6 0 64k"], &uri));
    assert!(out.contains("Pattern verification failed"), "{out}");
}

#[test]
fn qemu_io_write_zeroes_and_discard() {
    let f = Fixture::new();
    let uri = f.unix("disk");
    ok(
        "qemu-io",
        &qemu_io(
            false,
            &[
                "write -P 0x77 0 1M",
                "write -z 64k 64k",
                "write -z -u 256k 128k",
                "discard 512k 64k",
                "write -z 700000 3000", // inside a page: zeroed, stays allocated
            ],
            &uri,
        ),
    );
    let mut want = vec![0u8; DISK_SIZE as usize];
    want[..MIB as usize].fill(0x77);
    for (o, l) in [
        (64 * KIB, 64 * KIB),
        (256 * KIB, 128 * KIB),
        (512 * KIB, 64 * KIB),
        (700_000, 3000),
    ] {
        want[o as usize..(o + l) as usize].fill(0);
    }
    assert_same(
        "export after write -z and discard",
        &f.disk.contents(),
        &want,
    );
    // Whole zeroed pages were deallocated; the partly zeroed one was not.
    assert_eq!(
        allocation(&f.disk),
        vec![
            (0, 64 * KIB, true),
            (64 * KIB, 64 * KIB, false),
            (128 * KIB, 128 * KIB, true),
            (256 * KIB, 128 * KIB, false),
            (384 * KIB, 128 * KIB, true),
            (512 * KIB, 64 * KIB, false),
            (576 * KIB, 448 * KIB, true),
            (MIB, DISK_SIZE - MIB, false),
        ]
    );
    let out = ok(
        "qemu-io",
        &qemu_io(
            true,
            &[
                "read -P 0 64k 64k",
                "read -P 0x77 128k 128k",
                "read -P 0 256k 128k",
                "read -P 0 512k 64k",
                "read -P 0 700000 3000",
                "read -P 0x77 703000 1000",
            ],
            &uri,
        ),
    );
    assert!(!out.contains("Pattern verification failed"), "{out}");
}

#[test]
fn read_only_export_refuses_writes() {
    let f = Fixture::new();
    let before = f.ro.contents();
    for uri in [f.unix("ro"), f.tcp("ro")] {
        let out = fails("qemu-io", &qemu_io(false, &["write -P 0xee 0 4k"], &uri));
        assert!(
            out.to_lowercase().contains("read-only")
                || out.contains("Operation not permitted")
                || out.contains("Permission denied"),
            "{out}"
        );
        // Forcing the write through a read-only open does not work either.
        let out = run("qemu-io", &qemu_io(true, &["write -P 0xee 0 4k"], &uri));
        let text = tools::text(&out);
        assert!(!text.contains("wrote "), "{text}");
        // libnbd refuses too.
        let src = f.path("four-k.raw");
        std::fs::write(&src, [0xee; 4096]).unwrap();
        fails("nbdcopy", &[src.to_str().unwrap(), &uri]);
    }
    assert_same("read-only export", &f.ro.contents(), &before);
    // Reads work and see the content.
    let out = ok(
        "qemu-io",
        &qemu_io(
            true,
            &["read -P 0x3c 0 1M", "read -P 0 1M 1M"],
            &f.unix("ro"),
        ),
    );
    assert!(!out.contains("Pattern verification failed"), "{out}");
    let info = ok("nbdinfo", &[&f.unix("ro")]);
    assert!(info.contains("is_read_only: true"), "{info}");
}

// ---------------------------------------------------------------------------
// nbdinfo

#[test]
fn nbdinfo_map_shows_holes_and_data() {
    let f = Fixture::new();
    // Written through the device: pages 0-15, part of page 2 of the
    // second MiB, and the last byte.
    f.disk.write(0, &[1; 65536], false).unwrap();
    f.disk.write(MIB + 2 * PAGE + 100, &[2; 10], false).unwrap();
    f.disk.write(DISK_SIZE - 1, &[3], false).unwrap();
    let want = vec![
        (0, 64 * KIB, 0, "data".to_string()),
        (
            64 * KIB,
            MIB + 2 * PAGE - 64 * KIB,
            3,
            "hole,zero".to_string(),
        ),
        (MIB + 2 * PAGE, PAGE, 0, "data".to_string()),
        (
            MIB + 3 * PAGE,
            DISK_SIZE - PAGE - (MIB + 3 * PAGE),
            3,
            "hole,zero".to_string(),
        ),
        (DISK_SIZE - PAGE, PAGE, 0, "data".to_string()),
    ];
    for uri in [f.unix("disk"), f.tcp("disk")] {
        assert_eq!(
            parse_nbdinfo_map(&ok("nbdinfo", &["--map", &uri])),
            want,
            "{uri}"
        );
    }
    // Then a qemu-io write fills one of the holes.
    ok(
        "qemu-io",
        &qemu_io(false, &["write -P 9 8M 8k"], &f.unix("disk")),
    );
    let map = parse_nbdinfo_map(&ok("nbdinfo", &["--map", &f.unix("disk")]));
    assert!(
        map.contains(&(8 * MIB, 8 * KIB, 0, "data".into())),
        "{map:?}"
    );
    // The read-only export: data in the first and third MiB.
    let map = parse_nbdinfo_map(&ok("nbdinfo", &["--map", &f.unix("ro")]));
    let kinds: Vec<(u64, u64, u32)> = map.iter().map(|m| (m.0, m.1, m.2)).collect();
    let z = NBD_STATE_HOLE | NBD_STATE_ZERO;
    assert_eq!(
        kinds,
        vec![
            (0, MIB, 0),
            (MIB, MIB, z),
            (2 * MIB, MIB, 0),
            (3 * MIB, MIB, z)
        ]
    );
}

/// 8 KiB of data at the start of `disk`, written through the device, then
/// a cleared dirty bitmap, then `writes` by qemu-io over the unix socket:
/// the bitmap marks only what qemu-io wrote.
fn write_after_clearing_dirty(f: &Fixture, writes: &[&str]) {
    f.disk.write(0, &[1; 8192], false).unwrap();
    f.disk.clear_dirty();
    ok("qemu-io", &qemu_io(false, writes, &f.unix("disk")));
}

#[test]
fn nbdinfo_map_of_the_dirty_bitmap() {
    let f = Fixture::new();
    write_after_clearing_dirty(
        &f,
        &[
            "write -P 1 1M 4k",
            "write -P 2 3145828 10", // 3 MiB + 100: one page dirty
            "write -z 8M 8k",
        ],
    );
    let map = parse_nbdinfo_map(&ok(
        "nbdinfo",
        &["--map=qemu:dirty-bitmap:mem", &f.unix("disk")],
    ));
    let dirty: Vec<(u64, u64)> = map
        .iter()
        .filter(|m| m.2 & 1 == 1)
        .map(|m| (m.0, m.1))
        .collect();
    assert_eq!(
        dirty,
        vec![(MIB, PAGE), (3 * MIB, PAGE), (8 * MIB, 8 * KIB)],
        "{map:?}"
    );
    // The map covers the disk and the rest is clean.
    assert_eq!(map.iter().map(|m| m.1).sum::<u64>(), DISK_SIZE);
    assert!(
        map.iter().all(|m| (m.2 == 1) == (m.3 == "dirty")),
        "{map:?}"
    );
    // The data written before the bitmap was cleared is still data.
    let base = parse_nbdinfo_map(&ok("nbdinfo", &["--map", &f.unix("disk")]));
    assert_eq!(base[0], (0, 8192, 0, "data".into()));
}

/// `qemu-img map --output=json` as `(start, length, data)`.
fn parse_qemu_map(out: &str) -> Vec<(u64, u64, bool)> {
    let field = |l: &str, name: &str| -> String {
        let at = l
            .find(&format!("\"{name}\": "))
            .unwrap_or_else(|| panic!("no {name} in {l:?}"));
        l[at + name.len() + 4..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric())
            .collect()
    };
    out.lines()
        .filter(|l| l.contains("\"start\""))
        .map(|l| {
            (
                field(l, "start").parse().unwrap(),
                field(l, "length").parse().unwrap(),
                field(l, "data") == "true",
            )
        })
        .collect()
}

#[test]
fn qemu_img_map_reads_allocation_and_the_dirty_bitmap() {
    let f = Fixture::new();
    write_after_clearing_dirty(&f, &["write -P 1 1M 4k", "write -P 2 3M 100"]);
    let map = parse_qemu_map(&ok(
        "qemu-img",
        &["map", "--output=json", "-f", "raw", &f.unix("disk")],
    ));
    assert_eq!(
        map,
        vec![
            (0, 8192, true),
            (8192, MIB - 8192, false),
            (MIB, PAGE, true),
            (MIB + PAGE, 2 * MIB - PAGE, false),
            (3 * MIB, PAGE, true),
            (3 * MIB + PAGE, DISK_SIZE - 3 * MIB - PAGE, false),
        ]
    );
    // qemu's way of reading a dirty bitmap over NBD: the context stands in
    // for base:allocation, dirty areas showing as "not data".
    let opts = format!(
        "driver=nbd,server.type=unix,server.path={},export=disk,\
         x-dirty-bitmap=qemu:dirty-bitmap:mem",
        f.srv.sock.display()
    );
    let map = parse_qemu_map(&ok(
        "qemu-img",
        &["map", "--output=json", "--image-opts", &opts],
    ));
    let dirty: Vec<(u64, u64)> = map.iter().filter(|m| !m.2).map(|m| (m.0, m.1)).collect();
    assert_eq!(dirty, vec![(MIB, PAGE), (3 * MIB, PAGE)], "{map:?}");
}

#[test]
fn nbdinfo_and_qemu_nbd_list_the_exports() {
    let f = Fixture::new();
    let out = ok(
        "nbdinfo",
        &[
            "--list",
            &format!("nbd+unix:///?socket={}", f.srv.sock.display()),
        ],
    );
    let mut seen = Vec::new();
    for block in out.split("export=\"").skip(1) {
        let name = block.split('"').next().unwrap().to_string();
        let (size, ro) = match name.as_str() {
            "disk" | "disk2" => (DISK_SIZE, false),
            "ro" => (RO_SIZE, true),
            other => panic!("unexpected export {other:?} in\n{out}"),
        };
        assert!(
            block.contains(&format!("export-size: {size} ")),
            "{name}: {block}"
        );
        assert!(
            block.contains(&format!("is_read_only: {ro}")),
            "{name}: {block}"
        );
        assert!(block.contains("base:allocation"), "{name}: {block}");
        assert!(block.contains("qemu:dirty-bitmap:mem"), "{name}: {block}");
        seen.push(name);
    }
    assert_eq!(seen, ["disk", "disk2", "ro"], "{out}");

    let out = ok("qemu-nbd", &["--list", "-k", f.srv.sock.to_str().unwrap()]);
    assert!(out.contains("exports available: 3"), "{out}");
    for (name, size) in [("disk", DISK_SIZE), ("disk2", DISK_SIZE), ("ro", RO_SIZE)] {
        let at = out
            .find(&format!("export: '{name}'"))
            .unwrap_or_else(|| panic!("{name} not listed:\n{out}"));
        assert!(
            out[at..].contains(&format!("size:  {size}\n")),
            "{name}: {out}"
        );
    }
}

// ---------------------------------------------------------------------------
// nbdcopy

#[test]
fn nbdcopy_both_directions() {
    let f = Fixture::new();
    let src = source_image(3);
    let src_path = f.path("src.raw");
    std::fs::write(&src_path, &src).unwrap();
    f.disk.write(12 * MIB, &[0xee; 65536], false).unwrap();

    // File → export (over TCP).
    ok("nbdcopy", &[src_path.to_str().unwrap(), &f.tcp("disk")]);
    assert_same("export after nbdcopy", &f.disk.contents(), &src);

    // Export → export: the zeros of the source leave holes.
    f.disk2.write(10 * MIB, &[0xdd; 65536], false).unwrap();
    ok("nbdcopy", &[&f.unix("disk"), &f.unix("disk2")]);
    assert_same("disk2 after nbdcopy", &f.disk2.contents(), &src);
    // nbdcopy sends runs of zeros as zero requests: the device keeps
    // exactly the pages that hold data.
    assert_eq!(allocation(&f.disk), data_pages(&src));
    assert_eq!(allocation(&f.disk2), data_pages(&src));

    // Export → file (over the unix socket).
    f.disk
        .write(4 * MIB, b"changed on the device", false)
        .unwrap();
    let out = f.path("out.raw");
    ok("nbdcopy", &[&f.unix("disk"), out.to_str().unwrap()]);
    assert_same(
        "file after nbdcopy",
        &std::fs::read(&out).unwrap(),
        &f.disk.contents(),
    );
    assert_eq!(
        &std::fs::read(&out).unwrap()[4 << 20..][..21],
        b"changed on the device"
    );
}

// ---------------------------------------------------------------------------
// TLS

mod tls {
    use super::*;
    use testkit::pki::Pki;

    fn nbds(f: &Fixture, export: &str, dir: &Path) -> String {
        format!(
            "nbds://127.0.0.1:{}/{export}?tls-certificates={}",
            f.srv.port,
            dir.display()
        )
    }

    /// A TLS-only server, and its PKI.
    fn server(client_auth: bool) -> (Fixture, Pki) {
        let pki = Pki::new();
        let config = nbd::tls::server_config(
            &pki.server_cert,
            &pki.server_key,
            client_auth.then_some(pki.ca.as_path()),
        )
        .unwrap();
        (Fixture::start(Some(config)), pki)
    }

    #[test]
    fn libnbd_clients_over_tls() {
        let (f, pki) = server(false);
        f.disk.write(MIB, &pattern::bytes(65536, 4), false).unwrap();
        let uri = nbds(&f, "disk", &pki.ca_only);
        let out = ok("nbdinfo", &[&uri]);
        assert!(out.contains("with TLS"), "{out}");
        assert!(out.contains(&format!("export-size: {DISK_SIZE} ")), "{out}");

        // Data both ways over TLS.
        let out_path = f.path("tls-out.raw");
        ok("nbdcopy", &[&uri, out_path.to_str().unwrap()]);
        assert_same(
            "nbdcopy over TLS",
            &std::fs::read(&out_path).unwrap(),
            &f.disk.contents(),
        );
        let src = source_image(7);
        let src_path = f.path("tls-src.raw");
        std::fs::write(&src_path, &src).unwrap();
        ok(
            "nbdcopy",
            &[src_path.to_str().unwrap(), &nbds(&f, "disk2", &pki.ca_only)],
        );
        assert_same("export written over TLS", &f.disk2.contents(), &src);
        let map = parse_nbdinfo_map(&ok("nbdinfo", &["--map", &uri]));
        assert_eq!(map[1], (MIB, 64 * KIB, 0, "data".into()), "{map:?}");
        // With a client certificate on offer (the server does not ask).
        ok("nbdinfo", &[&nbds(&f, "disk", &pki.with_client)]);
    }

    #[test]
    fn plain_clients_are_refused_on_a_tls_listener() {
        let (f, pki) = server(false);
        let out = fails("nbdinfo", &[&f.tcp("disk")]);
        assert!(out.contains("TLS"), "{out}");
        // (libnbd reports the refused NBD_OPT_LIST without naming TLS.)
        let out = fails("nbdinfo", &["--list", &f.tcp("")]);
        assert!(!out.contains("export="), "{out}");
        let out = fails("qemu-io", &qemu_io(true, &["read 0 4k"], &f.tcp("disk")));
        assert!(out.contains("TLS"), "{out}");
        // A server certificate from another CA is not trusted.
        fails("nbdinfo", &[&nbds(&f, "disk", &pki.other_ca)]);
        // The unix socket of the same server does not require TLS.
        ok("nbdinfo", &[&f.unix("disk")]);
    }

    #[test]
    fn client_certificates_when_the_server_asks_for_them() {
        let (f, pki) = server(true);
        f.disk.write(0, &[0x42; 4096], false).unwrap();
        let out = ok("nbdinfo", &[&nbds(&f, "disk", &pki.with_client)]);
        assert!(out.contains("with TLS"), "{out}");
        fails("nbdinfo", &[&nbds(&f, "disk", &pki.ca_only)]);
    }

    #[test]
    fn qemu_over_tls() {
        let (f, pki) = server(false);
        let object = format!(
            "tls-creds-x509,id=tls0,dir={},endpoint=client",
            pki.with_client.display()
        );
        let opts = |export: &str| {
            format!(
                "driver=nbd,server.type=inet,server.host=127.0.0.1,server.port={},export={export},tls-creds=tls0",
                f.srv.port
            )
        };
        let out = ok(
            "qemu-io",
            &[
                "--object",
                &object,
                "--image-opts",
                &opts("disk"),
                "-c",
                "write -P 0x6b 1M 64k",
                "-c",
                "read -P 0x6b 1M 64k",
            ],
        );
        assert!(!out.contains("Pattern verification failed"), "{out}");
        let mut want = vec![0u8; DISK_SIZE as usize];
        want[MIB as usize..(MIB + 64 * KIB) as usize].fill(0x6b);
        assert_same(
            "export written by qemu-io over TLS",
            &f.disk.contents(),
            &want,
        );

        let out_path = f.path("qemu-tls.raw");
        ok(
            "qemu-img",
            &[
                "convert",
                "--object",
                &object,
                "--image-opts",
                &opts("ro"),
                "-O",
                "raw",
                out_path.to_str().unwrap(),
            ],
        );
        assert_same(
            "qemu-img convert over TLS",
            &std::fs::read(&out_path).unwrap(),
            &f.ro.contents(),
        );
    }
}
