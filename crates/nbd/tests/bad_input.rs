//! Malformed and hostile clients, speaking raw bytes: the server answers
//! with the protocol's errors where the protocol has one, closes only the
//! connection that broke the framing, and keeps serving everyone else.
//!
//! A small client lives at the bottom of this file: handshake (fixed
//! newstyle, structured replies, meta contexts, NBD_OPT_GO), requests, and
//! simple or structured replies. After every abuse a well-behaved client
//! ([`Fixture::healthy`]) must still write and read back through the same
//! server.

use nbd::mem::{MemDevice, StaticExports};
use nbd::proto::*;
use nbd::request::Request;
use nbd::{BlockDevice, Server, MAX_IN_FLIGHT};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const MIB: u64 = 1 << 20;
const SIZE: u64 = 16 * MIB;
const RO_SIZE: u64 = MIB;
/// How long a read from the server may take before the test fails.
const IO_TIMEOUT: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------
// The server under test

struct Fixture {
    _dir: tempfile::TempDir,
    sock: PathBuf,
    port: u16,
    disk: Arc<MemDevice>,
    ro: Arc<MemDevice>,
    server: Server,
    rt: Option<tokio::runtime::Runtime>,
}

impl Fixture {
    /// Exports `disk` (16 MiB) and `ro` (1 MiB of 0x3c, read-only) on a
    /// unix socket and on TCP, without TLS.
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let disk = Arc::new(MemDevice::new(SIZE, false));
        let ro = Arc::new(MemDevice::new(RO_SIZE, true));
        ro.write(0, &vec![0x3c; RO_SIZE as usize], false).unwrap();
        let exports = StaticExports::default()
            .with("disk", disk.clone())
            .with("ro", ro.clone());
        let server = Server::new(Arc::new(exports), None);
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let sock = dir.path().join("nbd.sock");
        let (unix, tcp) = rt.block_on(async {
            (
                tokio::net::UnixListener::bind(&sock).unwrap(),
                tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
            )
        });
        let port = tcp.local_addr().unwrap().port();
        let s = server.clone();
        rt.spawn(async move { s.serve_unix(unix).await.unwrap() });
        let s = server.clone();
        rt.spawn(async move { s.serve_tcp(tcp, false).await.unwrap() });
        Fixture {
            _dir: dir,
            sock,
            port,
            disk,
            ro,
            server,
            rt: Some(rt),
        }
    }

    fn rt(&self) -> &tokio::runtime::Runtime {
        self.rt.as_ref().unwrap()
    }

    /// A client connected to the unix socket (greeting not yet read).
    fn connect(&self) -> Client {
        let s = UnixStream::connect(&self.sock).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        Client::new(Box::new(s))
    }

    fn connect_tcp(&self) -> Client {
        let s = std::net::TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        Client::new(Box::new(s))
    }

    /// A client whose connection the server runs with `serve_stream`, so
    /// the test can see the connection end: wait for it with [`Self::ended`].
    fn pair(&self, tls_required: bool) -> (Client, tokio::task::JoinHandle<()>) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        b.set_nonblocking(true).unwrap();
        let server = self.server.clone();
        let task = self.rt().spawn(async move {
            let b = tokio::net::UnixStream::from_std(b).unwrap();
            server.serve_stream(Box::new(b), tls_required).await
        });
        (Client::new(Box::new(a)), task)
    }

    /// Asserts the server's side of a [`Self::pair`] connection has ended.
    fn ended(&self, task: tokio::task::JoinHandle<()>, what: &str) {
        let r = self
            .rt()
            .block_on(async { tokio::time::timeout(IO_TIMEOUT, task).await });
        match r {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{what}: the connection task failed: {e}"),
            Err(_) => panic!("{what}: the server still holds the connection"),
        }
    }

    /// A well-behaved client still gets served: it writes a fresh pattern
    /// (over the unix socket or TCP, structured replies or not), reads it
    /// back, and sees it on the device and in block status.
    fn healthy(&self) {
        static ROUND: AtomicU64 = AtomicU64::new(0);
        let round = ROUND.fetch_add(1, Ordering::Relaxed);
        let structured = round.is_multiple_of(2);
        let mut c = if round.is_multiple_of(3) {
            self.connect_tcp()
        } else {
            self.connect()
        };
        let contexts: &[&str] = if structured { &[BASE_ALLOCATION] } else { &[] };
        let (size, _) = c.start("disk", structured, contexts);
        assert_eq!(size, SIZE);
        let offset = 8 * MIB + (round % 64) * 4096;
        let data = pattern(4096, round as u8);
        check(c.write(offset, &data), 0);
        let r = c.read(offset, 4096);
        assert_eq!(r.error, 0);
        assert_eq!(r.data, data, "read back what was written");
        let mut on_disk = vec![0u8; 4096];
        self.disk.read(offset, &mut on_disk).unwrap();
        assert_eq!(on_disk, data, "the device holds what was written");
        if structured {
            let r = c.cmd(0, NBD_CMD_BLOCK_STATUS, offset, 4096, &[]);
            assert_eq!(r.error, 0);
            assert_eq!(r.status, vec![(1, vec![(4096, 0)])]);
        }
        c.disconnect();
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        self.server.shutdown();
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(5));
        }
    }
}

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(29).wrapping_add(salt) | 0x80)
        .collect()
}

// ---------------------------------------------------------------------------
// Handshake phase

#[test]
fn garbage_instead_of_client_flags_closes_the_connection() {
    let f = Fixture::new();
    for garbage in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0xff; 4][..],
        &[0x00, 0x00, 0x00, 0x80][..],
    ] {
        let (mut c, task) = f.pair(false);
        c.greeting();
        c.send(garbage);
        c.assert_closed("garbage client flags");
        f.ended(task, "garbage client flags");
        f.healthy();
    }
}

#[test]
fn unknown_client_flags_close_the_connection() {
    let f = Fixture::new();
    for flags in [1 << 2, NBD_FLAG_C_FIXED_NEWSTYLE | 1 << 31] {
        let (mut c, task) = f.pair(false);
        c.greeting();
        c.send(&flags.to_be_bytes());
        c.assert_closed("unknown client flags");
        f.ended(task, "unknown client flags");
    }
    f.healthy();
}

#[test]
fn truncated_handshakes_end_the_connection() {
    let f = Fixture::new();
    let mut go = Vec::new();
    go.extend(option_bytes(NBD_OPT_GO, &go_payload("disk", &[])));
    let flags = (NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES).to_be_bytes();
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("nothing", vec![]),
        ("half the client flags", flags[..2].to_vec()),
        ("client flags only", flags.to_vec()),
        ("half an option header", [&flags[..], &go[..7]].concat()),
        ("option header only", [&flags[..], &go[..16]].concat()),
        ("half an option payload", [&flags[..], &go[..20]].concat()),
    ];
    for (what, bytes) in cases {
        let (mut c, task) = f.pair(false);
        c.greeting();
        c.send(&bytes);
        drop(c);
        f.ended(task, what);
    }
    // The same over the listening socket, and the server goes on.
    let mut c = f.connect();
    c.greeting();
    c.send(&flags[..3]);
    drop(c);
    f.healthy();
}

#[test]
fn bad_option_magic_closes_the_connection() {
    let f = Fixture::new();
    let (mut c, task) = f.pair(false);
    c.greeting();
    c.client_flags();
    let mut opt = option_bytes(NBD_OPT_LIST, &[]);
    opt[7] ^= 1;
    c.send(&opt);
    c.assert_closed("bad option magic");
    f.ended(task, "bad option magic");
    f.healthy();
}

#[test]
fn unknown_options_are_unsupported_and_the_session_goes_on() {
    let f = Fixture::new();
    let mut c = f.connect();
    c.greeting();
    c.client_flags();
    for (opt, data) in [(4u32, &b""[..]), (99, b"hello"), (u32::MAX, &[0; 300])] {
        let r = c.option(opt, data);
        assert_eq!((r.option, r.kind), (opt, NBD_REP_ERR_UNSUP));
        assert!(!r.data.is_empty(), "an error reply explains itself");
    }
    c.structured_reply();
    c.go("disk", true, &[BASE_ALLOCATION]);
    check(c.write(0, &[7; 512]), 0);
    assert_eq!(c.read(0, 512).data, vec![7; 512]);
    c.disconnect();
    f.healthy();
}

#[test]
fn malformed_option_payloads_are_invalid() {
    let f = Fixture::new();
    let mut c = f.connect();
    c.greeting();
    c.client_flags();
    let good = go_payload("disk", &[NBD_INFO_BLOCK_SIZE]);
    let mut bad_utf8 = go_payload("disk", &[]);
    bad_utf8[4] = 0xff;
    let mut too_long = Vec::new();
    too_long.extend(5000u32.to_be_bytes());
    too_long.extend(vec![b'a'; 5000]);
    too_long.extend(0u16.to_be_bytes());
    let malformed: Vec<(&str, Vec<u8>)> = vec![
        ("empty", vec![]),
        ("name longer than the payload", {
            let mut p = good.clone();
            p[3] = 200;
            p
        }),
        ("more info requests than sent", {
            let mut p = good.clone();
            p[9] = 3;
            p
        }),
        ("trailing bytes", [&good[..], &[0]].concat()),
        ("truncated", good[..good.len() - 1].to_vec()),
        ("name not UTF-8", bad_utf8),
        ("name over 4096 bytes", too_long),
    ];
    for (what, payload) in &malformed {
        for opt in [NBD_OPT_INFO, NBD_OPT_GO] {
            let r = c.option(opt, payload);
            assert_eq!((r.option, r.kind), (opt, NBD_REP_ERR_INVALID), "{what}");
        }
    }
    // Options that take no data.
    for opt in [NBD_OPT_LIST, NBD_OPT_STRUCTURED_REPLY, NBD_OPT_STARTTLS] {
        let r = c.option(opt, b"x");
        assert_eq!((r.option, r.kind), (opt, NBD_REP_ERR_INVALID));
    }
    // Meta context payloads.
    c.structured_reply();
    for payload in [
        vec![],
        meta_payload("disk", &["base:allocation"])[..12].to_vec(),
        {
            let mut p = meta_payload("disk", &[]);
            p[11] = 0xff; // a query count no payload holds
            p
        },
    ] {
        for opt in [NBD_OPT_LIST_META_CONTEXT, NBD_OPT_SET_META_CONTEXT] {
            let r = c.option(opt, &payload);
            assert_eq!((r.option, r.kind), (opt, NBD_REP_ERR_INVALID));
        }
    }
    // Still in sync: a good GO enters transmission.
    let (size, flags) = c.go("disk", true, &[BASE_ALLOCATION]);
    assert_eq!(size, SIZE);
    assert_eq!(flags & NBD_FLAG_READ_ONLY, 0);
    assert_eq!(c.read(0, 4096).error, 0);
    c.disconnect();
    f.healthy();
}

#[test]
fn unknown_exports_are_refused() {
    let f = Fixture::new();
    let mut c = f.connect();
    c.greeting();
    c.client_flags();
    c.structured_reply();
    for opt in [NBD_OPT_INFO, NBD_OPT_GO] {
        let r = c.option(opt, &go_payload("nope", &[]));
        assert_eq!((r.option, r.kind), (opt, NBD_REP_ERR_UNKNOWN));
    }
    for opt in [NBD_OPT_LIST_META_CONTEXT, NBD_OPT_SET_META_CONTEXT] {
        let r = c.option(opt, &meta_payload("nope", &[BASE_ALLOCATION]));
        assert_eq!((r.option, r.kind), (opt, NBD_REP_ERR_UNKNOWN));
    }
    // NBD_OPT_INFO on a real export answers and stays in negotiation.
    let r = c.option(NBD_OPT_INFO, &go_payload("ro", &[NBD_INFO_NAME]));
    assert_eq!(r.kind, NBD_REP_INFO);
    assert_eq!(
        u64::from_be_bytes(r.data[2..10].try_into().unwrap()),
        RO_SIZE
    );
    let flags = u16::from_be_bytes(r.data[10..12].try_into().unwrap());
    assert_ne!(flags & NBD_FLAG_READ_ONLY, 0);
    let mut names = Vec::new();
    loop {
        let r = c.reply();
        if r.kind == NBD_REP_ACK {
            break;
        }
        assert_eq!(r.kind, NBD_REP_INFO);
        if u16::from_be_bytes(r.data[..2].try_into().unwrap()) == NBD_INFO_NAME {
            names.push(String::from_utf8(r.data[2..].to_vec()).unwrap());
        }
    }
    assert_eq!(names, ["ro"]);
    c.go("disk", true, &[]);
    c.disconnect();

    // NBD_OPT_EXPORT_NAME has no error reply: the server closes.
    let (mut c, task) = f.pair(false);
    c.greeting();
    c.client_flags();
    c.send(&option_bytes(NBD_OPT_EXPORT_NAME, b"nope"));
    c.assert_closed("EXPORT_NAME of an unknown export");
    f.ended(task, "EXPORT_NAME of an unknown export");
    f.healthy();
}

#[test]
fn oversized_options_are_too_big_and_the_stream_stays_in_sync() {
    let f = Fixture::new();
    let mut c = f.connect();
    c.greeting();
    c.client_flags();
    // Payloads that look like options themselves: a server that lost
    // track would answer them.
    let fake = option_bytes(NBD_OPT_LIST, &[]).repeat(4000);
    for (opt, len) in [
        (NBD_OPT_GO, MAX_OPTION_LEN as usize + 1),
        (99, 1 << 20),
        (NBD_OPT_SET_META_CONTEXT, 70_000),
    ] {
        let payload: Vec<u8> = fake.iter().copied().cycle().take(len).collect();
        let r = c.option(opt, &payload);
        assert_eq!((r.option, r.kind), (opt, NBD_REP_ERR_TOO_BIG));
    }
    // The largest accepted size is fine (and malformed, here).
    let r = c.option(NBD_OPT_GO, &vec![0; MAX_OPTION_LEN as usize]);
    assert_eq!(r.kind, NBD_REP_ERR_INVALID);
    c.go("disk", false, &[]);
    check(c.write(4096, &[1; 4096]), 0);
    c.disconnect();

    // An export name too long to hold closes the connection.
    let (mut c, task) = f.pair(false);
    c.greeting();
    c.client_flags();
    let mut opt = option_bytes(NBD_OPT_EXPORT_NAME, &[]);
    opt[12..16].copy_from_slice(&(MAX_OPTION_LEN + 1).to_be_bytes());
    c.send(&opt);
    c.assert_closed("oversized EXPORT_NAME");
    f.ended(task, "oversized EXPORT_NAME");
    f.healthy();
}

#[test]
fn meta_contexts_need_structured_replies() {
    let f = Fixture::new();
    let mut c = f.connect();
    c.greeting();
    c.client_flags();
    let set = meta_payload("disk", &[BASE_ALLOCATION]);
    let r = c.option(NBD_OPT_SET_META_CONTEXT, &set);
    assert_eq!(r.kind, NBD_REP_ERR_INVALID);
    c.structured_reply();
    let r = c.option(NBD_OPT_SET_META_CONTEXT, &set);
    assert_eq!(r.kind, NBD_REP_META_CONTEXT);
    assert_eq!(&r.data[4..], BASE_ALLOCATION.as_bytes());
    assert_eq!(c.reply().kind, NBD_REP_ACK);
    // Unknown contexts are left out, not errors.
    let r = c.option(
        NBD_OPT_SET_META_CONTEXT,
        &meta_payload("disk", &["qemu:dirty-bitmap:nope", "x:y"]),
    );
    assert_eq!(r.kind, NBD_REP_ACK);
    c.go("disk", true, &[]);
    // That last, empty selection is the one in force.
    let r = c.cmd(0, NBD_CMD_BLOCK_STATUS, 0, 4096, &[]);
    assert_eq!(r.error, NBD_EINVAL);
    c.disconnect();
    f.healthy();
}

#[test]
fn tls_required_without_tls_refuses_everything() {
    let f = Fixture::new();
    let (mut c, task) = f.pair(true);
    c.greeting();
    c.client_flags();
    for (opt, data) in [
        (NBD_OPT_LIST, vec![]),
        (NBD_OPT_GO, go_payload("disk", &[])),
        (NBD_OPT_INFO, go_payload("disk", &[])),
        (NBD_OPT_STRUCTURED_REPLY, vec![]),
        (99, vec![]),
    ] {
        let r = c.option(opt, &data);
        assert_eq!((r.option, r.kind), (opt, NBD_REP_ERR_TLS_REQD));
    }
    // This server has no certificate: STARTTLS is refused by policy.
    let r = c.option(NBD_OPT_STARTTLS, &[]);
    assert_eq!(r.kind, NBD_REP_ERR_POLICY);
    c.send(&option_bytes(NBD_OPT_EXPORT_NAME, b"disk"));
    c.assert_closed("EXPORT_NAME before TLS");
    f.ended(task, "EXPORT_NAME before TLS");

    // NBD_OPT_ABORT is always allowed.
    let (mut c, task) = f.pair(true);
    c.greeting();
    c.client_flags();
    let r = c.option(NBD_OPT_ABORT, &[]);
    assert_eq!(r.kind, NBD_REP_ACK);
    c.assert_closed("ABORT");
    f.ended(task, "ABORT");
    assert_eq!(f.disk.contents().iter().filter(|&&b| b != 0).count(), 0);
}

#[test]
fn starttls_without_a_certificate_is_refused_but_the_session_goes_on() {
    let f = Fixture::new();
    let mut c = f.connect();
    c.greeting();
    c.client_flags();
    let r = c.option(NBD_OPT_STARTTLS, &[]);
    assert_eq!(r.kind, NBD_REP_ERR_POLICY);
    c.structured_reply();
    c.go("disk", true, &[BASE_ALLOCATION]);
    assert_eq!(c.read(0, 512).error, 0);
    c.disconnect();
}

// ---------------------------------------------------------------------------
// Transmission phase

#[test]
fn bad_requests_get_errors_and_the_connection_goes_on() {
    let f = Fixture::new();
    for structured in [true, false] {
        let mut c = f.connect();
        c.greeting();
        c.client_flags();
        if structured {
            c.structured_reply();
        }
        c.go("disk", structured, &[]);
        check(c.write(0, &[0x5a; 4096]), 0);

        // Out of range: reads and trims EINVAL, writes ENOSPC (with their
        // payload consumed: it holds what looks like requests).
        check(c.read(SIZE - 10, 20), NBD_EINVAL);
        check(c.read(u64::MAX - 1, 2), NBD_EINVAL);
        check(c.cmd(0, NBD_CMD_CACHE, SIZE, 1, &[]), NBD_EINVAL);
        check(c.cmd(0, NBD_CMD_TRIM, SIZE - 1, 2, &[]), NBD_EINVAL);
        let fake = fake_requests(4096);
        check(c.cmd(0, NBD_CMD_WRITE, SIZE - 100, 4096, &fake), NBD_ENOSPC);
        check(c.cmd(0, NBD_CMD_WRITE, u64::MAX, 4096, &fake), NBD_ENOSPC);
        check(c.cmd(0, NBD_CMD_WRITE_ZEROES, SIZE, 4096, &[]), NBD_ENOSPC);
        // Larger than the maximum payload.
        check(c.read(0, MAX_PAYLOAD + 1), NBD_EOVERFLOW);
        // Unknown commands and flags.
        check(c.cmd(0, 42, 0, 512, &[]), NBD_EINVAL);
        check(c.cmd(0, u16::MAX, 0, 512, &[]), NBD_EINVAL);
        check(c.cmd(1 << 9, NBD_CMD_READ, 0, 512, &[]), NBD_EINVAL);
        check(
            c.cmd(NBD_CMD_FLAG_NO_HOLE, NBD_CMD_READ, 0, 512, &[]),
            NBD_EINVAL,
        );
        check(
            c.cmd(NBD_CMD_FLAG_REQ_ONE, NBD_CMD_WRITE, 0, 512, &[9; 512]),
            NBD_EINVAL,
        );
        // Zero lengths.
        check(c.read(0, 0), NBD_EINVAL);
        check(c.cmd(0, NBD_CMD_TRIM, 0, 0, &[]), NBD_EINVAL);
        // Block status without a negotiated context (and, without
        // structured replies, without any way to answer it).
        check(c.cmd(0, NBD_CMD_BLOCK_STATUS, 0, 4096, &[]), NBD_EINVAL);
        // DF only exists with structured replies.
        let df = c.cmd(NBD_CMD_FLAG_DF, NBD_CMD_READ, 0, 512, &[]);
        if structured {
            assert_eq!(df.error, 0);
            assert_eq!(df.data, vec![0x5a; 512]);
        } else {
            assert_eq!(df.error, NBD_EINVAL);
        }
        // FUA is accepted on every command.
        let r = c.cmd(NBD_CMD_FLAG_FUA, NBD_CMD_READ, 0, 512, &[]);
        assert_eq!((r.error, r.data), (0, vec![0x5a; 512]));
        check(c.cmd(NBD_CMD_FLAG_FUA, NBD_CMD_FLUSH, 0, 0, &[]), 0);

        // None of that changed the disk, and the connection still works.
        let r = c.read(0, 8192);
        assert_eq!(r.error, 0);
        assert_eq!(&r.data[..4096], &[0x5a; 4096][..]);
        assert_eq!(&r.data[4096..], &[0; 4096][..]);
        let mut tail = vec![0u8; 4096];
        f.disk.read(SIZE - 4096, &mut tail).unwrap();
        assert_eq!(tail, vec![0; 4096]);
        c.disconnect();
    }
    f.healthy();
}

#[test]
fn oversized_writes_are_refused_with_their_payload_skipped() {
    let f = Fixture::new();
    let mut c = f.connect();
    c.greeting();
    c.client_flags();
    c.go("disk", false, &[]);
    let len = MAX_PAYLOAD + 4096;
    let r = c.cmd(0, NBD_CMD_WRITE, 0, len, &fake_requests(len as usize));
    assert_eq!(r.error, NBD_EOVERFLOW);
    assert_eq!(f.disk.contents().iter().filter(|&&b| b != 0).count(), 0);
    check(c.write(0, &[1; 512]), 0);
    assert_eq!(c.read(0, 512).data, vec![1; 512]);
    c.disconnect();
}

#[test]
fn writes_to_a_read_only_export_are_eperm() {
    let f = Fixture::new();
    for structured in [true, false] {
        let mut c = f.connect();
        c.greeting();
        c.client_flags();
        if structured {
            c.structured_reply();
        }
        let (size, flags) = c.go("ro", structured, &[]);
        assert_eq!(size, RO_SIZE);
        assert_ne!(flags & NBD_FLAG_READ_ONLY, 0);
        assert_eq!(flags & (NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES), 0);
        check(
            c.cmd(0, NBD_CMD_WRITE, 0, 4096, &fake_requests(4096)),
            NBD_EPERM,
        );
        check(
            c.cmd(NBD_CMD_FLAG_FUA, NBD_CMD_WRITE, 0, 512, &[0; 512]),
            NBD_EPERM,
        );
        check(c.cmd(0, NBD_CMD_WRITE_ZEROES, 0, 4096, &[]), NBD_EPERM);
        check(c.cmd(0, NBD_CMD_TRIM, 0, 4096, &[]), NBD_EPERM);
        check(c.cmd(0, NBD_CMD_FLUSH, 0, 0, &[]), 0);
        let r = c.read(0, 4096);
        assert_eq!((r.error, r.data), (0, vec![0x3c; 4096]));
        c.disconnect();
    }
    assert_eq!(f.ro.contents(), vec![0x3c; RO_SIZE as usize]);
    f.healthy();
}

#[test]
fn a_bad_request_magic_closes_only_that_connection() {
    let f = Fixture::new();
    let mut other = f.connect();
    other.start("disk", true, &[BASE_ALLOCATION]);
    check(other.write(0, &[3; 4096]), 0);

    let (mut c, task) = f.pair(false);
    c.start("disk", true, &[]);
    let mut h = Request {
        flags: 0,
        kind: NBD_CMD_READ,
        cookie: 1,
        offset: 0,
        length: 512,
    }
    .encode();
    h[0] ^= 0x80;
    c.send(&h);
    c.assert_closed("bad request magic");
    f.ended(task, "bad request magic");

    // The other connection, open all along, is unaffected.
    let r = other.read(0, 4096);
    assert_eq!((r.error, r.data), (0, vec![3; 4096]));
    other.disconnect();
    f.healthy();
}

#[test]
fn clients_that_vanish_mid_request_end_their_connection() {
    let f = Fixture::new();
    let write = |len: u32| {
        Request {
            flags: 0,
            kind: NBD_CMD_WRITE,
            cookie: 9,
            offset: 0,
            length: len,
        }
        .encode()
    };
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("half a request header", write(4096)[..10].to_vec()),
        ("header of a write, no payload", write(4096).to_vec()),
        (
            "a write cut mid-payload",
            [&write(65536)[..], &[0xee; 1000]].concat(),
        ),
        (
            "a refused write cut mid-payload",
            [&write(MAX_PAYLOAD + 1)[..], &[0xee; 1000]].concat(),
        ),
    ];
    for (what, bytes) in cases {
        let (mut c, task) = f.pair(false);
        c.start("disk", true, &[]);
        c.send(&bytes);
        drop(c);
        f.ended(task, what);
        assert_eq!(
            f.disk.contents().iter().filter(|&&b| b != 0).count(),
            0,
            "{what}: nothing was written"
        );
    }
    // Gone with requests in flight and replies unread.
    let (mut c, task) = f.pair(false);
    c.start("disk", false, &[]);
    for i in 0..200u64 {
        c.send(
            &Request {
                flags: 0,
                kind: NBD_CMD_READ,
                cookie: i,
                offset: 0,
                length: 1 << 20,
            }
            .encode(),
        );
    }
    drop(c);
    f.ended(task, "a client gone with replies unread");
    f.healthy();
}

#[test]
fn pipelined_requests_all_get_their_reply() {
    let f = Fixture::new();
    let mut c = f.connect();
    c.start("disk", true, &[BASE_ALLOCATION]);
    // More requests than may be in flight, sent before reading any reply.
    let n = 3 * MAX_IN_FLIGHT as u64;
    for i in 0..n {
        let data = vec![i as u8 + 1; 4096];
        c.send_request(0, NBD_CMD_WRITE, 1000 + i, i * 8192, 4096, &data);
    }
    for i in 0..n {
        c.send_request(0, NBD_CMD_READ, 2000 + i, i * 8192, 8192, &[]);
    }
    let mut seen = std::collections::BTreeMap::new();
    for _ in 0..2 * n {
        let r = c.structured();
        assert_eq!(r.error, 0, "cookie {}", r.cookie);
        assert!(seen.insert(r.cookie, r).is_none(), "one reply per cookie");
    }
    for i in 0..n {
        assert!(seen.contains_key(&(1000 + i)));
        let r = &seen[&(2000 + i)];
        // Reads were sent after the writes, but run concurrently with
        // them: what a read sees of its page is all or nothing.
        let first = &r.data[..4096];
        assert!(
            first == vec![i as u8 + 1; 4096] || first == vec![0; 4096],
            "read {i} saw a torn write"
        );
        assert_eq!(&r.data[4096..], &[0; 4096][..]);
    }
    for i in 0..n {
        let r = c.read(i * 8192, 4096);
        assert_eq!(r.data, vec![i as u8 + 1; 4096]);
    }
    c.disconnect();
    f.healthy();
}

// ---------------------------------------------------------------------------
// A raw protocol client

trait Io: Read + Write + Send {}
impl<T: Read + Write + Send> Io for T {}

struct Client {
    s: Box<dyn Io>,
    structured: bool,
    cookie: u64,
}

/// An option reply.
#[derive(Debug)]
struct OptReply {
    option: u32,
    kind: u32,
    data: Vec<u8>,
}

/// A transmission reply, simple or structured (all chunks gathered).
#[derive(Debug, Default)]
struct Reply {
    cookie: u64,
    error: u32,
    /// Read data, holes filled in with zeros.
    data: Vec<u8>,
    /// Block status: (context id, [(length, flags)]).
    status: Vec<(u32, Vec<(u32, u32)>)>,
}

fn option_bytes(opt: u32, data: &[u8]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend(IHAVEOPT.to_be_bytes());
    b.extend(opt.to_be_bytes());
    b.extend((data.len() as u32).to_be_bytes());
    b.extend(data);
    b
}

fn go_payload(name: &str, infos: &[u16]) -> Vec<u8> {
    let mut d = Vec::new();
    d.extend((name.len() as u32).to_be_bytes());
    d.extend(name.as_bytes());
    d.extend((infos.len() as u16).to_be_bytes());
    for i in infos {
        d.extend(i.to_be_bytes());
    }
    d
}

fn meta_payload(name: &str, queries: &[&str]) -> Vec<u8> {
    let mut d = Vec::new();
    d.extend((name.len() as u32).to_be_bytes());
    d.extend(name.as_bytes());
    d.extend((queries.len() as u32).to_be_bytes());
    for q in queries {
        d.extend((q.len() as u32).to_be_bytes());
        d.extend(q.as_bytes());
    }
    d
}

/// `len` bytes of well-formed read requests: a payload a server that lost
/// its place in the stream would answer.
fn fake_requests(len: usize) -> Vec<u8> {
    let r = Request {
        flags: 0,
        kind: NBD_CMD_READ,
        cookie: 0xbad,
        offset: 0,
        length: 512,
    };
    r.encode().iter().copied().cycle().take(len).collect()
}

/// Asserts a reply's error value (0: success).
fn check(r: Reply, error: u32) {
    assert_eq!(r.error, error, "{r:?}");
    if error != 0 {
        assert!(r.data.is_empty(), "a failed request carries no data");
    }
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap())
}

impl Client {
    fn new(s: Box<dyn Io>) -> Self {
        Client {
            s,
            structured: false,
            cookie: 0,
        }
    }

    fn send(&mut self, b: &[u8]) {
        self.s.write_all(b).unwrap();
    }

    fn recv(&mut self, n: usize) -> Vec<u8> {
        let mut b = vec![0u8; n];
        self.s
            .read_exact(&mut b)
            .unwrap_or_else(|e| panic!("reading {n} bytes from the server: {e}"));
        b
    }

    /// Reads the server's greeting: NBDMAGIC, IHAVEOPT, handshake flags.
    fn greeting(&mut self) {
        let g = self.recv(18);
        assert_eq!(u64::from_be_bytes(g[..8].try_into().unwrap()), NBDMAGIC);
        assert_eq!(u64::from_be_bytes(g[8..16].try_into().unwrap()), IHAVEOPT);
        let flags = u16::from_be_bytes(g[16..18].try_into().unwrap());
        assert_eq!(flags, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    }

    fn client_flags(&mut self) {
        self.send(&(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES).to_be_bytes());
    }

    fn reply(&mut self) -> OptReply {
        let h = self.recv(20);
        assert_eq!(u64::from_be_bytes(h[..8].try_into().unwrap()), REPLY_MAGIC);
        let len = be32(&h[16..]) as usize;
        OptReply {
            option: be32(&h[8..]),
            kind: be32(&h[12..]),
            data: self.recv(len),
        }
    }

    /// Sends an option and returns the first reply.
    fn option(&mut self, opt: u32, data: &[u8]) -> OptReply {
        self.send(&option_bytes(opt, data));
        self.reply()
    }

    fn structured_reply(&mut self) {
        let r = self.option(NBD_OPT_STRUCTURED_REPLY, &[]);
        assert_eq!((r.option, r.kind), (NBD_OPT_STRUCTURED_REPLY, NBD_REP_ACK));
    }

    /// Selects `contexts` (if any) and sends NBD_OPT_GO; returns the size
    /// and transmission flags.
    fn go(&mut self, export: &str, structured: bool, contexts: &[&str]) -> (u64, u16) {
        self.structured = structured;
        if !contexts.is_empty() {
            let r = self.option(NBD_OPT_SET_META_CONTEXT, &meta_payload(export, contexts));
            let mut r = r;
            let mut ids = 0;
            while r.kind == NBD_REP_META_CONTEXT {
                ids += 1;
                assert_eq!(be32(&r.data), ids, "context ids count from 1");
                r = self.reply();
            }
            assert_eq!(r.kind, NBD_REP_ACK);
            assert_eq!(ids as usize, contexts.len());
        }
        self.send(&option_bytes(
            NBD_OPT_GO,
            &go_payload(export, &[NBD_INFO_BLOCK_SIZE]),
        ));
        let mut export_info = None;
        loop {
            let r = self.reply();
            assert_eq!(r.option, NBD_OPT_GO);
            match r.kind {
                NBD_REP_ACK => break,
                NBD_REP_INFO => {
                    let kind = u16::from_be_bytes(r.data[..2].try_into().unwrap());
                    if kind == NBD_INFO_EXPORT {
                        let size = u64::from_be_bytes(r.data[2..10].try_into().unwrap());
                        let flags = u16::from_be_bytes(r.data[10..12].try_into().unwrap());
                        export_info = Some((size, flags));
                    }
                }
                k => panic!("NBD_OPT_GO({export}): reply {k:#x}: {:?}", r.data),
            }
        }
        let info = export_info.expect("NBD_INFO_EXPORT is always sent");
        assert_eq!(info.1 & NBD_FLAG_SEND_DF != 0, structured);
        info
    }

    /// Greeting, flags, structured replies if asked, contexts, GO.
    fn start(&mut self, export: &str, structured: bool, contexts: &[&str]) -> (u64, u16) {
        self.greeting();
        self.client_flags();
        if structured {
            self.structured_reply();
        }
        self.go(export, structured, contexts)
    }

    fn send_request(
        &mut self,
        flags: u16,
        kind: u16,
        cookie: u64,
        offset: u64,
        len: u32,
        data: &[u8],
    ) {
        let mut b = Request {
            flags,
            kind,
            cookie,
            offset,
            length: len,
        }
        .encode()
        .to_vec();
        b.extend(data);
        self.send(&b);
    }

    /// Sends one request and reads its reply.
    fn cmd(&mut self, flags: u16, kind: u16, offset: u64, len: u32, data: &[u8]) -> Reply {
        self.cookie += 1;
        let cookie = self.cookie;
        self.send_request(flags, kind, cookie, offset, len, data);
        let r = if self.structured {
            self.structured()
        } else {
            // A simple reply carries data only for a successful read.
            let h = self.recv(16);
            assert_eq!(be32(&h), NBD_SIMPLE_REPLY_MAGIC);
            let error = be32(&h[4..]);
            let data = if kind == NBD_CMD_READ && error == 0 {
                self.recv(len as usize)
            } else {
                Vec::new()
            };
            Reply {
                cookie: u64::from_be_bytes(h[8..16].try_into().unwrap()),
                error,
                data,
                status: Vec::new(),
            }
        };
        assert_eq!(r.cookie, cookie, "replies come in order here");
        r
    }

    /// Reads the chunks of one structured reply, up to the one marked done.
    fn structured(&mut self) -> Reply {
        let mut r = Reply::default();
        let mut pieces: Vec<(u64, Vec<u8>)> = Vec::new();
        loop {
            let h = self.recv(20);
            assert_eq!(be32(&h), NBD_STRUCTURED_REPLY_MAGIC);
            let flags = u16::from_be_bytes(h[4..6].try_into().unwrap());
            let kind = u16::from_be_bytes(h[6..8].try_into().unwrap());
            r.cookie = u64::from_be_bytes(h[8..16].try_into().unwrap());
            let body = self.recv(be32(&h[16..]) as usize);
            match kind {
                NBD_REPLY_TYPE_NONE => assert!(body.is_empty()),
                NBD_REPLY_TYPE_OFFSET_DATA => {
                    let off = u64::from_be_bytes(body[..8].try_into().unwrap());
                    pieces.push((off, body[8..].to_vec()));
                }
                NBD_REPLY_TYPE_OFFSET_HOLE => {
                    let off = u64::from_be_bytes(body[..8].try_into().unwrap());
                    pieces.push((off, vec![0; be32(&body[8..]) as usize]));
                }
                NBD_REPLY_TYPE_BLOCK_STATUS => {
                    let ext = body[4..]
                        .chunks(8)
                        .map(|e| (be32(e), be32(&e[4..])))
                        .collect();
                    r.status.push((be32(&body), ext));
                }
                NBD_REPLY_TYPE_ERROR => {
                    r.error = be32(&body);
                    let n = u16::from_be_bytes(body[4..6].try_into().unwrap()) as usize;
                    assert_eq!(body.len(), 6 + n, "error message length");
                    assert_ne!(r.error, 0);
                }
                k => panic!("unexpected chunk type {k}"),
            }
            if flags & NBD_REPLY_FLAG_DONE != 0 {
                break;
            }
        }
        // Chunks cover the read exactly once, in any order.
        pieces.sort_by_key(|p| p.0);
        for (i, (off, d)) in pieces.iter().enumerate() {
            if let Some((next, _)) = pieces.get(i + 1) {
                assert_eq!(off + d.len() as u64, *next, "chunks tile the range");
            }
            r.data.extend(d);
        }
        r
    }

    fn read(&mut self, offset: u64, len: u32) -> Reply {
        self.cmd(0, NBD_CMD_READ, offset, len, &[])
    }

    fn write(&mut self, offset: u64, data: &[u8]) -> Reply {
        self.cmd(0, NBD_CMD_WRITE, offset, data.len() as u32, data)
    }

    fn disconnect(mut self) {
        self.send_request(0, NBD_CMD_DISC, 0, 0, 0, &[]);
        self.assert_closed("after NBD_CMD_DISC");
    }

    /// Asserts the server closes the connection (reading nothing more).
    fn assert_closed(&mut self, what: &str) {
        let mut b = [0u8; 4096];
        loop {
            match self.s.read(&mut b) {
                Ok(0) => return,
                Ok(n) => panic!(
                    "{what}: the server sent {n} more bytes: {:?}",
                    &b[..n.min(64)]
                ),
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => panic!("{what}: the connection is still open ({e})"),
            }
        }
    }
}
