//! `nbd::client` against servers: this crate's own (in-memory devices, on
//! a unix socket, a socket pair and TCP with TLS) and qemu-nbd serving raw
//! and qcow2 files, a peer nobody here wrote.
//!
//! What the client wrote is checked on the devices (or files) themselves,
//! what it read against the bytes they hold, and its block status against
//! the devices' own allocation.

mod common;

use common::{TestServer, IO_TIMEOUT};
use nbd::client::{AllocationExtent, Client, Error, Options};
use nbd::mem::{MemDevice, StaticExports};
use nbd::proto::*;
use nbd::{BlockDevice, BlockSize, DeviceResult, Extent};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use testkit::compare::assert_same;
use testkit::pattern;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const SIZE: u64 = 16 * MIB;
const RO_SIZE: u64 = MIB;
const BIG_SIZE: u64 = 80 * MIB;

/// A device with block size constraints of its own (minimum 512,
/// maximum 64 KiB) that records the longest read or write it was asked.
struct Constrained {
    inner: MemDevice,
    longest: AtomicU64,
    calls: AtomicU64,
}

const CONSTRAINED: BlockSize = BlockSize {
    minimum: 512,
    preferred: 4096,
    maximum: 64 << 10,
};

impl Constrained {
    fn saw(&self, len: usize) {
        self.longest.fetch_max(len as u64, Ordering::Relaxed);
        self.calls.fetch_add(1, Ordering::Relaxed);
    }
}

impl BlockDevice for Constrained {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    fn read_only(&self) -> bool {
        false
    }
    fn block_size(&self) -> BlockSize {
        CONSTRAINED
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> DeviceResult<()> {
        self.saw(buf.len());
        self.inner.read(offset, buf)
    }
    fn write(&self, offset: u64, data: &[u8], fua: bool) -> DeviceResult<()> {
        self.saw(data.len());
        self.inner.write(offset, data, fua)
    }
    fn flush(&self) -> DeviceResult<()> {
        self.inner.flush()
    }
    fn trim(&self, offset: u64, length: u64) -> DeviceResult<()> {
        self.inner.trim(offset, length)
    }
    fn write_zeroes(&self, offset: u64, length: u64, may_trim: bool) -> DeviceResult<()> {
        self.inner.write_zeroes(offset, length, may_trim)
    }
    fn allocation(&self, offset: u64, length: u64) -> DeviceResult<Vec<Extent>> {
        self.inner.allocation(offset, length)
    }
}

struct Fixture {
    srv: TestServer,
    disk: Arc<MemDevice>,
    ro: Arc<MemDevice>,
    big: Arc<MemDevice>,
    constrained: Arc<Constrained>,
}

impl Fixture {
    fn new() -> Self {
        Self::start(None)
    }

    /// Exports `disk` (16 MiB), `ro` (1 MiB of 0x3c, read-only), `big`
    /// (80 MiB) and `constrained` (1 MiB, [`CONSTRAINED`]); the TCP
    /// listener requires TLS when `tls` is given.
    fn start(tls: Option<Arc<nbd::rustls::ServerConfig>>) -> Self {
        let disk = Arc::new(MemDevice::new(SIZE, false));
        let ro = Arc::new(MemDevice::new(RO_SIZE, true));
        ro.write(0, &vec![0x3c; RO_SIZE as usize], false).unwrap();
        let big = Arc::new(MemDevice::new(BIG_SIZE, false));
        let constrained = Arc::new(Constrained {
            inner: MemDevice::new(MIB, false),
            longest: AtomicU64::new(0),
            calls: AtomicU64::new(0),
        });
        let exports = StaticExports::default()
            .with("disk", disk.clone())
            .with("ro", ro.clone())
            .with("big", big.clone())
            .with("constrained", constrained.clone());
        Fixture {
            srv: TestServer::start(exports, tls),
            disk,
            ro,
            big,
            constrained,
        }
    }

    fn connect(&self, export: &str) -> Client {
        self.connect_with(Options::new(export))
    }

    fn connect_with(&self, o: Options) -> Client {
        Client::connect_unix(&self.srv.sock, &o.timeout(IO_TIMEOUT))
            .unwrap_or_else(|e| panic!("connecting: {e}"))
    }

    fn refused(&self, o: Options) -> Error {
        Client::connect_unix(&self.srv.sock, &o.timeout(IO_TIMEOUT))
            .expect_err("the connection should fail")
    }
}

fn read(c: &mut Client, offset: u64, len: u64) -> Vec<u8> {
    let mut b = vec![0xee; len as usize];
    c.read(offset, &mut b)
        .unwrap_or_else(|e| panic!("read at {offset}+{len}: {e}"));
    b
}

/// A device's `base:allocation` over a range, as the client reports it
/// (neighbours with the same state merged).
fn allocation(dev: &dyn BlockDevice, offset: u64, len: u64) -> Vec<AllocationExtent> {
    let mut out: Vec<AllocationExtent> = Vec::new();
    let mut pos = offset;
    for e in dev.allocation(offset, len).unwrap() {
        let (hole, zero) = (e.flags & NBD_STATE_HOLE != 0, e.flags & NBD_STATE_ZERO != 0);
        match out.last_mut() {
            Some(l) if (l.hole, l.zero) == (hole, zero) => l.length += e.length,
            _ => out.push(AllocationExtent {
                offset: pos,
                length: e.length,
                hole,
                zero,
            }),
        }
        pos += e.length;
    }
    out
}

fn extent(offset: u64, length: u64, hole: bool) -> AllocationExtent {
    AllocationExtent {
        offset,
        length,
        hole,
        zero: hole,
    }
}

// ---------------------------------------------------------------------------
// Against this crate's server

#[test]
fn the_handshake_reports_the_export() {
    let f = Fixture::new();
    let c = f.connect("disk");
    let i = c.info();
    assert_eq!((i.name.as_str(), i.size), ("disk", SIZE));
    let fl = i.flags;
    assert!(!fl.read_only());
    assert!(fl.can_flush() && fl.can_fua() && fl.can_trim() && fl.can_write_zeroes());
    assert!(fl.can_multi_conn() && fl.can_df() && fl.can_cache());
    assert_eq!(i.block_size, BlockSize::default());
    assert!(c.structured_replies() && c.has_base_allocation() && !c.is_tls());
    assert_eq!(c.max_request(), MAX_PAYLOAD);
    let ro = f.connect("ro");
    assert!(ro.flags().read_only());
    assert!(!ro.flags().can_trim() && !ro.flags().can_fua());
}

#[test]
fn writes_read_back_and_reach_the_device() {
    let f = Fixture::new();
    let mut c = f.connect("disk");
    let writes: [(u64, usize, u64); 4] = [
        (0, 4096, 1),
        (MIB + 1000, 3000, 2), // unaligned: the minimum block size is 1
        (5 * MIB, 300 << 10, 3),
        (SIZE - 512, 512, 4),
    ];
    for &(off, len, salt) in &writes {
        c.write(off, &pattern::bytes(len, salt)).unwrap();
    }
    c.write_fua(8 * MIB, &pattern::bytes(8192, 5)).unwrap();
    for &(off, len, salt) in &writes {
        assert_same(
            "read back",
            &read(&mut c, off, len as u64),
            &pattern::bytes(len, salt),
        );
    }
    let flushes = f.disk.flushes();
    c.flush().unwrap();
    assert!(f.disk.flushes() > flushes, "the flush reached the device");
    assert_same("the whole disk", &read(&mut c, 0, SIZE), &f.disk.contents());
    // A zero-length call sends nothing and succeeds, even at the end.
    c.read(SIZE, &mut []).unwrap();
    c.write(SIZE, &[]).unwrap();
    c.disconnect().unwrap();
}

#[test]
fn reads_assemble_data_and_holes() {
    let f = Fixture::new();
    // Data pages between holes of every size from one page up.
    let mut pos = 0;
    for (i, hole) in [0u64, 1, 2, 5, 1, 16, 3].iter().enumerate() {
        pos += hole * 4096;
        f.disk
            .write(pos, &pattern::bytes(4096 * (i + 1), i as u64), false)
            .unwrap();
        pos += 4096 * (i as u64 + 1);
    }
    let mut c = f.connect("disk");
    assert_same(
        "the first 2 MiB",
        &read(&mut c, 0, 2 * MIB),
        &f.disk.contents()[..2 * MIB as usize],
    );
    // Unaligned reads that start and end inside holes and data.
    for (off, len) in [(100, 5000), (4096 + 17, 3 * 4096), (30 * 4096 - 1, 9000)] {
        let want = &f.disk.contents()[off as usize..(off + len) as usize];
        assert_same("unaligned read", &read(&mut c, off, len), want);
    }
}

#[test]
fn trim_and_write_zeroes_read_back_as_zeros_and_show_in_block_status() {
    let f = Fixture::new();
    let mut c = f.connect("disk");
    assert_eq!(
        c.block_status(0, SIZE).unwrap(),
        vec![extent(0, SIZE, true)]
    );
    c.write(MIB, &pattern::bytes(MIB as usize, 1)).unwrap();
    assert_eq!(
        c.block_status(0, 4 * MIB).unwrap(),
        vec![
            extent(0, MIB, true),
            extent(MIB, MIB, false),
            extent(2 * MIB, 2 * MIB, true)
        ]
    );
    c.trim(MIB, 256 * KIB).unwrap();
    c.write_zeroes(MIB + 512 * KIB, 64 * KIB, false).unwrap();
    c.write_zeroes(MIB + 700 * KIB, 100, true).unwrap();
    let mut want = vec![0u8; MIB as usize];
    want.copy_from_slice(&pattern::bytes(MIB as usize, 1));
    want[..256 * KIB as usize].fill(0);
    want[512 * KIB as usize..576 * KIB as usize].fill(0);
    want[700 * KIB as usize..700 * KIB as usize + 100].fill(0);
    assert_same("after trim and zeroes", &read(&mut c, MIB, MIB), &want);
    assert_same(
        "on the device",
        &f.disk.contents()[MIB as usize..2 * MIB as usize],
        &want,
    );
    // Block status is the device's allocation, over any range.
    for (off, len) in [(0, SIZE), (MIB + 100, 300 * KIB), (MIB + 260 * KIB, 1)] {
        assert_eq!(
            c.block_status(off, len).unwrap(),
            allocation(&*f.disk, off, len),
            "block status at {off}+{len}"
        );
    }
}

#[test]
fn calls_larger_than_the_maximum_request_are_split() {
    let f = Fixture::new();
    let mut c = f.connect("big");
    // 40 MiB in one call: more than the server's 32 MiB maximum.
    let data = pattern::bytes(40 * MIB as usize, 7);
    c.write(8 * MIB + 512, &data).unwrap();
    assert_same(
        "40 MiB read back",
        &read(&mut c, 8 * MIB + 512, 40 * MIB),
        &data,
    );
    c.write_zeroes(0, BIG_SIZE, true).unwrap();
    assert!(f.big.contents().iter().all(|&b| b == 0));
    assert_eq!(
        c.block_status(0, BIG_SIZE).unwrap(),
        vec![extent(0, BIG_SIZE, true)]
    );
}

#[test]
fn the_servers_block_size_constraints_are_kept() {
    let f = Fixture::new();
    let mut c = f.connect("constrained");
    assert_eq!(c.block_size(), CONSTRAINED);
    assert_eq!(c.max_request(), 64 << 10);
    let data = pattern::bytes(MIB as usize - 4096, 3);
    c.write(4096, &data).unwrap();
    assert_same("read back", &read(&mut c, 4096, MIB - 4096), &data);
    assert_eq!(f.constrained.longest.load(Ordering::Relaxed), 64 << 10);
    // Misaligned calls are refused before anything is sent.
    let calls = f.constrained.calls.load(Ordering::Relaxed);
    let e = c.read(100, &mut [0; 512]).unwrap_err();
    assert_eq!(e.kind(), "misaligned", "{e}");
    assert!(e.to_string().contains("minimum block size of 512"), "{e}");
    let e = c.write(0, &[0; 100]).unwrap_err();
    assert_eq!(e.kind(), "misaligned", "{e}");
    assert_eq!(f.constrained.calls.load(Ordering::Relaxed), calls);
    assert_eq!(read(&mut c, 0, 512), vec![0; 512]);
}

#[test]
fn simple_replies_when_structured_replies_are_not_asked_for() {
    let f = Fixture::new();
    let mut c = f.connect_with(Options::new("disk").structured_replies(false));
    assert!(!c.structured_replies() && !c.has_base_allocation());
    assert!(!c.flags().can_df());
    let data = pattern::bytes(100 * KIB as usize, 9);
    c.write(3 * MIB, &data).unwrap();
    assert_same("read back", &read(&mut c, 3 * MIB, 100 * KIB), &data);
    let e = c.block_status(0, MIB).unwrap_err();
    assert_eq!(e.kind(), "unsupported", "{e}");
    // A simple reply carries the error value, no message.
    let mut ro = f.connect_with(Options::new("ro").structured_replies(false));
    let e = ro.write(0, &[1; 512]).unwrap_err();
    assert_eq!((e.errno(), e.server_message()), (Some(NBD_EPERM), Some("")));
    assert_eq!(read(&mut ro, 0, 512), vec![0x3c; 512]);
}

#[test]
fn block_status_needs_base_allocation() {
    let f = Fixture::new();
    let mut c = f.connect_with(Options::new("disk").base_allocation(false));
    assert!(c.structured_replies() && !c.has_base_allocation());
    let e = c.block_status(0, MIB).unwrap_err();
    assert!(
        e.to_string().contains("block status for base:allocation"),
        "{e}"
    );
    read(&mut c, 0, 4096);
}

#[test]
fn writes_to_a_read_only_export_fail_with_eperm_and_the_reason() {
    let f = Fixture::new();
    let mut c = f.connect("ro");
    let e = c.write(4096, &[1; 4096]).unwrap_err();
    assert_eq!(e.errno(), Some(NBD_EPERM), "{e}");
    assert_eq!(e.server_message(), Some("the export is read-only"));
    assert_eq!(
        e.to_string(),
        "NBD export \"ro\": NBD_CMD_WRITE of 4096 bytes at offset 4096 failed with EPERM \
         (operation not permitted): the export is read-only"
    );
    // What the flags do not offer is refused without asking.
    for e in [
        c.write_fua(0, &[1; 512]).unwrap_err(),
        c.trim(0, 4096).unwrap_err(),
        c.write_zeroes(0, 4096, true).unwrap_err(),
    ] {
        assert_eq!(e.kind(), "unsupported", "{e}");
    }
    // The connection goes on; nothing was written.
    assert_eq!(read(&mut c, 0, RO_SIZE), vec![0x3c; RO_SIZE as usize]);
    assert_eq!(f.ro.contents(), vec![0x3c; RO_SIZE as usize]);
    c.flush().unwrap();
}

#[test]
fn an_unknown_export_is_refused_with_the_servers_message() {
    let f = Fixture::new();
    for o in [
        Options::new("nope"),
        Options::new("nope").structured_replies(false),
    ] {
        let e = f.refused(o);
        assert_eq!(e.kind(), "refused", "{e}");
        assert_eq!(e.refusal(), Some(NBD_REP_ERR_UNKNOWN), "{e}");
        let msg = e.to_string();
        assert!(
            msg.starts_with(
                "NBD export \"nope\": the server refused NBD_OPT_GO with NBD_REP_ERR_UNKNOWN: "
            ) && msg.contains("no such export"),
            "{msg}"
        );
    }
}

#[test]
fn calls_past_the_end_fail_before_anything_is_sent() {
    let f = Fixture::new();
    let mut c = f.connect("disk");
    let mut buf = vec![0; 1024];
    let errors = [
        c.read(SIZE - 512, &mut buf).unwrap_err(),
        c.write(SIZE, &[1]).unwrap_err(),
        c.trim(u64::MAX, 2).unwrap_err(),
        c.write_zeroes(SIZE - 1, 2, true).unwrap_err(),
        c.block_status(SIZE, 1).unwrap_err(),
    ];
    for e in &errors {
        assert_eq!(e.kind(), "out_of_range", "{e}");
        assert_eq!(e.errno(), None);
    }
    assert_eq!(
        errors[0].to_string(),
        format!(
            "NBD export \"disk\": NBD_CMD_READ of 1024 bytes at offset {} ends past the export's {SIZE} bytes",
            SIZE - 512
        )
    );
    assert!(f.disk.contents().iter().all(|&b| b == 0));
    c.write(SIZE - 1, &[9]).unwrap();
    assert_eq!(read(&mut c, SIZE - 1, 1), vec![9]);
}

#[test]
fn disconnecting_ends_the_servers_side_of_the_connection() {
    let f = Fixture::new();
    let (s, task) = f.srv.pair_stream(false);
    let mut c = Client::connect(s, &Options::new("disk")).unwrap();
    c.write(0, &[5; 512]).unwrap();
    c.disconnect().unwrap();
    f.srv.ended(task, "after disconnect");
    // Dropping a client disconnects it too.
    let (s, task) = f.srv.pair_stream(false);
    let c = Client::connect(s, &Options::new("disk")).unwrap();
    drop(c);
    f.srv.ended(task, "after drop");
    assert_eq!(f.disk.contents()[..512], [5; 512]);
}

#[test]
fn a_server_that_goes_away_closes_the_client() {
    let f = Fixture::new();
    let mut c = f.connect("disk");
    read(&mut c, 0, 4096);
    f.srv.server.shutdown();
    let t = std::time::Instant::now();
    let e = loop {
        match c.read(0, &mut [0; 4096]) {
            Err(e) => break e,
            Ok(()) if t.elapsed() < IO_TIMEOUT => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Ok(()) => panic!("the server still answers after shutdown"),
        }
    };
    assert!(matches!(e.kind(), "io" | "protocol"), "{e}");
    let again = c.read(0, &mut [0; 4096]).unwrap_err();
    assert_eq!(again.kind(), "closed", "{again}");
    assert!(again.to_string().contains(&e.to_string()), "{again}");
}

// ---------------------------------------------------------------------------
// TLS (this crate's server, TCP listener requiring NBD_OPT_STARTTLS)

mod tls {
    use super::*;
    use nbd::rustls::pki_types::ServerName;
    use testkit::pki::Pki;

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

    fn tcp(f: &Fixture, o: Options) -> Result<Client, Error> {
        Client::connect_tcp(("127.0.0.1", f.srv.port), &o.timeout(IO_TIMEOUT))
    }

    fn with_tls(export: &str, ca_dir: &std::path::Path, cert: Option<&Pki>, name: &str) -> Options {
        let config = nbd::tls::client_config(
            &ca_dir.join("ca-cert.pem"),
            cert.map(|p| (p.client_cert.as_path(), p.client_key.as_path())),
        )
        .unwrap();
        Options::new(export).tls(config, ServerName::try_from(name.to_string()).unwrap())
    }

    #[test]
    fn reads_writes_and_block_status_over_tls() {
        let (f, pki) = server(false);
        let mut c = tcp(&f, with_tls("disk", &pki.ca_only, None, "localhost")).unwrap();
        assert!(c.is_tls() && c.structured_replies() && c.has_base_allocation());
        let data = pattern::bytes(3 * MIB as usize, 11);
        c.write(2 * MIB, &data).unwrap();
        c.flush().unwrap();
        assert_same("over TLS", &read(&mut c, 2 * MIB, 3 * MIB), &data);
        assert_same(
            "on the device",
            &f.disk.contents()[2 * MIB as usize..5 * MIB as usize],
            &data,
        );
        assert_eq!(
            c.block_status(0, SIZE).unwrap(),
            allocation(&*f.disk, 0, SIZE)
        );
        c.disconnect().unwrap();
        // The IP address is in the certificate too.
        tcp(&f, with_tls("disk", &pki.ca_only, None, "127.0.0.1")).unwrap();
    }

    #[test]
    fn a_plain_client_is_told_tls_is_required() {
        let (f, _pki) = server(false);
        let e = tcp(&f, Options::new("disk")).unwrap_err();
        assert_eq!(e.refusal(), Some(NBD_REP_ERR_TLS_REQD), "{e}");
        assert!(e.to_string().contains("TLS is required"), "{e}");
    }

    #[test]
    fn an_untrusted_certificate_or_name_fails_the_tls_handshake() {
        let (f, pki) = server(false);
        for (dir, name) in [(&pki.other_ca, "localhost"), (&pki.ca_only, "elsewhere")] {
            let e = tcp(&f, with_tls("disk", dir, None, name)).unwrap_err();
            assert_eq!(e.kind(), "tls", "{e}");
            assert!(e.to_string().contains("in the TLS handshake"), "{e}");
            assert!(e.to_string().contains("certificate"), "{e}");
        }
    }

    #[test]
    fn client_certificates_when_the_server_asks_for_them() {
        let (f, pki) = server(true);
        let mut c = tcp(
            &f,
            with_tls("disk", &pki.with_client, Some(&pki), "localhost"),
        )
        .unwrap();
        c.write(0, &[7; 4096]).unwrap();
        assert_eq!(read(&mut c, 0, 4096), vec![7; 4096]);
        // Without one, the server ends TLS (in TLS 1.3, after the
        // client's side of the handshake is done).
        let e = tcp(&f, with_tls("disk", &pki.ca_only, None, "localhost")).unwrap_err();
        assert_eq!(e.kind(), "tls", "{e}");
    }
}

// ---------------------------------------------------------------------------
// Against qemu-nbd

mod qemu {
    use super::*;
    use std::path::{Path, PathBuf};
    use std::process::Command;
    use std::time::{Duration, Instant};
    use testkit::tools::{self, Background};

    const LIMIT: Duration = Duration::from_secs(60);
    const FILE_SIZE: u64 = 8 * MIB;

    /// qemu-nbd serving `file` as export `disk` on a unix socket in `dir`.
    fn serve(dir: &Path, format: &str, file: &Path, extra: &[&str]) -> (Background, PathBuf) {
        let sock = dir.join("qemu-nbd.sock");
        let mut b = tools::spawn(
            Command::new("qemu-nbd")
                .args(["-f", format, "-x", "disk", "--persistent", "--shared=4"])
                .arg("-k")
                .arg(&sock)
                .args(extra)
                .arg(file),
        );
        b.wait_for_path(&sock, LIMIT);
        (b, sock)
    }

    /// Connects, retrying while the socket exists but is not listening yet.
    fn connect(sock: &Path, o: Options) -> Result<Client, Error> {
        let o = o.timeout(LIMIT);
        let t = Instant::now();
        loop {
            match Client::connect_unix(sock, &o) {
                Err(Error::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::ConnectionRefused
                        && t.elapsed() < LIMIT =>
                {
                    std::thread::sleep(Duration::from_millis(20))
                }
                r => return r,
            }
        }
    }

    fn sparse_raw(path: &Path) -> Vec<u8> {
        let f = std::fs::File::create(path).unwrap();
        f.set_len(FILE_SIZE).unwrap();
        let mut content = vec![0u8; FILE_SIZE as usize];
        let data = pattern::bytes(MIB as usize, 21);
        content[MIB as usize..2 * MIB as usize].copy_from_slice(&data);
        use std::os::unix::fs::FileExt;
        f.write_all_at(&data, MIB).unwrap();
        f.sync_all().unwrap();
        content
    }

    #[test]
    fn raw_file_read_write_and_block_status() {
        if !tools::available(&["qemu-nbd"]) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("disk.raw");
        let mut content = sparse_raw(&file);
        let (server, sock) = serve(dir.path(), "raw", &file, &[]);
        let mut c = connect(&sock, Options::new("disk")).unwrap();
        assert_eq!(c.size(), FILE_SIZE);
        assert!(c.structured_replies() && c.has_base_allocation(), "{c:?}");
        let bs = c.block_size();
        assert!(bs.minimum <= 512 && bs.maximum >= MIB as u32, "{bs:?}");
        assert_same("qemu-nbd's raw file", &read(&mut c, 0, FILE_SIZE), &content);

        // The data in the middle, holes around it (the file is sparse).
        let map = c.block_status(0, FILE_SIZE).unwrap();
        assert_eq!(
            map.first().map(|e| (e.offset, e.hole)),
            Some((0, true)),
            "{map:?}"
        );
        let data: Vec<_> = map.iter().filter(|e| !e.hole).collect();
        assert!(
            data.iter()
                .all(|e| e.offset >= MIB && e.offset + e.length <= 2 * MIB)
                && data.iter().map(|e| e.length).sum::<u64>() == MIB,
            "{map:?}"
        );
        assert_eq!(map.iter().map(|e| e.length).sum::<u64>(), FILE_SIZE);

        let new = pattern::bytes(3 * MIB as usize, 22);
        c.write(4 * MIB, &new).unwrap();
        c.write_fua(100, &[0xab; 900]).unwrap();
        c.write_zeroes(MIB + 4096, 8192, false).unwrap();
        c.flush().unwrap();
        content[4 * MIB as usize..7 * MIB as usize].copy_from_slice(&new);
        content[100..1000].fill(0xab);
        content[(MIB + 4096) as usize..(MIB + 12288) as usize].fill(0);
        assert_same(
            "read back from qemu-nbd",
            &read(&mut c, 0, FILE_SIZE),
            &content,
        );
        c.disconnect().unwrap();
        server.stop();
        assert_same(
            "the file qemu-nbd wrote",
            &std::fs::read(&file).unwrap(),
            &content,
        );
    }

    #[test]
    fn qcow2_file_read_write_and_block_status() {
        if !tools::available(&["qemu-nbd", "qemu-img", "qemu-io"]) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("disk.qcow2");
        let file_s = file.to_str().unwrap();
        tools::ok(
            Command::new("qemu-img").args(["create", "-f", "qcow2", file_s, "16M"]),
            LIMIT,
        );
        tools::ok(
            &mut tools::qemu_io(&["-f", "qcow2"], &["write -P 0x5a 2M 128k"], file_s),
            LIMIT,
        );
        let (server, sock) = serve(dir.path(), "qcow2", &file, &[]);
        let mut c = connect(&sock, Options::new("disk")).unwrap();
        assert_eq!(c.size(), 16 * MIB);
        let map = c.block_status(0, 16 * MIB).unwrap();
        assert_eq!(
            map,
            vec![
                extent(0, 2 * MIB, true),
                extent(2 * MIB, 128 * KIB, false),
                extent(2 * MIB + 128 * KIB, 14 * MIB - 128 * KIB, true)
            ]
        );
        let mut want = vec![0u8; 4 * MIB as usize];
        want[2 * MIB as usize..(2 * MIB + 128 * KIB) as usize].fill(0x5a);
        assert_same("qcow2 read", &read(&mut c, 0, 4 * MIB), &want);

        c.write(8 * MIB, &vec![0x77; 192 * KIB as usize]).unwrap();
        c.trim(2 * MIB, 64 * KIB).unwrap();
        c.flush().unwrap();
        let map = c.block_status(8 * MIB - 64 * KIB, 320 * KIB).unwrap();
        assert_eq!(
            map,
            vec![
                extent(8 * MIB - 64 * KIB, 64 * KIB, true),
                extent(8 * MIB, 192 * KIB, false),
                extent(8 * MIB + 192 * KIB, 64 * KIB, true)
            ]
        );
        c.disconnect().unwrap();
        server.stop();
        // qemu reads what our client wrote into the qcow2.
        tools::ok(
            &mut tools::qemu_io(
                &["-f", "qcow2", "-r"],
                &["read -P 0x77 8M 192k", "read -P 0x5a 2112k 64k"],
                file_s,
            ),
            LIMIT,
        );
        let out = tools::ok(
            Command::new("qemu-img").args(["check", "-f", "qcow2", file_s]),
            LIMIT,
        );
        assert!(out.contains("No errors"), "{out}");
    }

    #[test]
    fn read_only_and_unknown_exports() {
        if !tools::available(&["qemu-nbd"]) {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("disk.raw");
        let content = sparse_raw(&file);
        let (_server, sock) = serve(dir.path(), "raw", &file, &["-r"]);
        let e = connect(&sock, Options::new("other")).unwrap_err();
        assert_eq!(e.refusal(), Some(NBD_REP_ERR_UNKNOWN), "{e}");
        assert!(!e.server_message().unwrap().is_empty(), "{e}");
        let mut c = connect(&sock, Options::new("disk")).unwrap();
        assert!(c.flags().read_only());
        // qemu 10 refuses with EINVAL (older versions: EPERM), and says why.
        let e = c.write(MIB, &[1; 4096]).unwrap_err();
        assert!(matches!(e.errno(), Some(NBD_EPERM | NBD_EINVAL)), "{e}");
        assert!(e.server_message().unwrap().contains("read-only"), "{e}");
        assert_same("unchanged", &read(&mut c, 0, FILE_SIZE), &content);
    }

    #[test]
    fn tls_with_qemu_nbd() {
        if !tools::available(&["qemu-nbd"]) {
            return;
        }
        let pki = testkit::pki::Pki::new();
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("disk.raw");
        let content = sparse_raw(&file);
        let object = format!(
            "tls-creds-x509,id=tls0,dir={},endpoint=server",
            pki.server_cert.parent().unwrap().display()
        );
        let (_server, sock) = serve(
            dir.path(),
            "raw",
            &file,
            &["--object", &object, "--tls-creds", "tls0"],
        );
        // qemu-nbd with TLS refuses plain clients.
        let e = connect(&sock, Options::new("disk")).unwrap_err();
        assert_eq!(e.refusal(), Some(NBD_REP_ERR_TLS_REQD), "{e}");
        let name = nbd::rustls::pki_types::ServerName::try_from("localhost").unwrap();
        // qemu's x509 credentials verify the peer: a client certificate is
        // required.
        let config = nbd::tls::client_config(&pki.ca, None).unwrap();
        let e = connect(&sock, Options::new("disk").tls(config, name.clone())).unwrap_err();
        assert!(matches!(e.kind(), "tls" | "io"), "{e}");
        let config =
            nbd::tls::client_config(&pki.ca, Some((&pki.client_cert, &pki.client_key))).unwrap();
        let mut c = connect(&sock, Options::new("disk").tls(config, name)).unwrap();
        assert!(c.is_tls());
        assert_same(
            "over TLS from qemu-nbd",
            &read(&mut c, 0, FILE_SIZE),
            &content,
        );
        c.write(0, &[3; 4096]).unwrap();
        assert_eq!(read(&mut c, 0, 4096), vec![3; 4096]);
    }
}

// ---------------------------------------------------------------------------
// testkit's Disk, the library client as the daemon's tests use it

#[test]
fn testkits_disk_keeps_its_error_values() {
    use testkit::nbd_client::{Disk, NbdError};
    let f = Fixture::new();
    let mut d = Disk::connect(&f.srv.sock, "disk", IO_TIMEOUT).unwrap();
    assert_eq!((d.size, d.flags & NBD_FLAG_READ_ONLY), (SIZE, 0));
    d.write(MIB + 3, &[8; 5000]).unwrap();
    d.flush().unwrap();
    assert_eq!(d.read(MIB + 3, 5000).unwrap(), vec![8; 5000]);
    assert_same("read_all", &d.read_all(), &f.disk.contents());
    assert!(matches!(d.read(SIZE, 1), Err(NbdError::Io(_))));
    d.client().write_zeroes(MIB, 4096, true).unwrap();
    d.disconnect();
    let mut ro = Disk::connect(&f.srv.sock, "ro", IO_TIMEOUT).unwrap();
    assert!(ro.flags & NBD_FLAG_READ_ONLY != 0);
    match ro.write(0, &[1; 512]) {
        Err(e) => assert_eq!(e.errno("write to ro"), NBD_EPERM),
        Ok(()) => panic!("a write to a read-only export succeeded"),
    }
    match Disk::connect(&f.srv.sock, "nope", IO_TIMEOUT) {
        Err(NbdError::Refused(NBD_REP_ERR_UNKNOWN, msg)) => {
            assert!(msg.contains("no such export"), "{msg}")
        }
        r => panic!("unknown export: {:?}", r.map(|d| d.size)),
    }
}
