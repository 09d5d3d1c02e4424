//! Malformed and hostile clients, speaking raw bytes: the server answers
//! with the protocol's errors where the protocol has one, closes only the
//! connection that broke the framing, and keeps serving everyone else.
//!
//! The server's setup lives in `common`, the raw client in `testkit`.
//! After every abuse a well-behaved client ([`Fixture::healthy`]) must
//! still write and read back through the same server.

mod common;

use common::TestServer;
use nbd::mem::{MemDevice, StaticExports};
use nbd::option::encode_option;
use nbd::proto::*;
use nbd::request::Request;
use nbd::{BlockDevice, MAX_IN_FLIGHT};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use testkit::nbd_client::{info_payload, meta_payload, Client, OptReply, Reply};
use testkit::pattern;

const MIB: u64 = 1 << 20;
const SIZE: u64 = 16 * MIB;
const RO_SIZE: u64 = MIB;

// ---------------------------------------------------------------------------
// The server under test

struct Fixture {
    srv: TestServer,
    disk: Arc<MemDevice>,
    ro: Arc<MemDevice>,
}

impl Fixture {
    /// Exports `disk` (16 MiB) and `ro` (1 MiB of 0x3c, read-only) on a
    /// unix socket and on TCP, without TLS.
    fn new() -> Self {
        let disk = Arc::new(MemDevice::new(SIZE, false));
        let ro = Arc::new(MemDevice::new(RO_SIZE, true));
        ro.write(0, &vec![0x3c; RO_SIZE as usize], false).unwrap();
        let exports = StaticExports::default()
            .with("disk", disk.clone())
            .with("ro", ro.clone());
        Fixture {
            srv: TestServer::start(exports, None),
            disk,
            ro,
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
            self.srv.connect_tcp()
        } else {
            self.srv.connect()
        };
        let contexts: &[&str] = if structured { &[BASE_ALLOCATION] } else { &[] };
        let (size, _) = c.start("disk", structured, contexts);
        assert_eq!(size, SIZE);
        let offset = 8 * MIB + (round % 64) * 4096;
        let data = pattern::bytes(4096, round);
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
        let (mut c, task) = f.srv.pair(false);
        c.greeting();
        c.send(garbage);
        f.srv.closed(c, task, "garbage client flags");
        f.healthy();
    }
}

#[test]
fn unknown_client_flags_close_the_connection() {
    let f = Fixture::new();
    for flags in [1 << 2, NBD_FLAG_C_FIXED_NEWSTYLE | 1 << 31] {
        let (mut c, task) = f.srv.pair(false);
        c.greeting();
        c.send(&flags.to_be_bytes());
        f.srv.closed(c, task, "unknown client flags");
    }
    f.healthy();
}

#[test]
fn truncated_handshakes_end_the_connection() {
    let f = Fixture::new();
    let mut go = Vec::new();
    go.extend(encode_option(NBD_OPT_GO, &info_payload("disk", &[])));
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
        let (mut c, task) = f.srv.pair(false);
        c.greeting();
        c.send(&bytes);
        drop(c);
        f.srv.ended(task, what);
    }
    // The same over the listening socket, and the server goes on.
    let mut c = f.srv.connect();
    c.greeting();
    c.send(&flags[..3]);
    drop(c);
    f.healthy();
}

#[test]
fn bad_option_magic_closes_the_connection() {
    let f = Fixture::new();
    let (mut c, task) = f.srv.pair(false);
    c.handshake();
    let mut opt = encode_option(NBD_OPT_LIST, &[]);
    opt[7] ^= 1;
    c.send(&opt);
    f.srv.closed(c, task, "bad option magic");
    f.healthy();
}

#[test]
fn unknown_options_are_unsupported_and_the_session_goes_on() {
    let f = Fixture::new();
    let mut c = f.srv.connect();
    c.handshake();
    for (opt, data) in [(4u32, &b""[..]), (99, b"hello"), (u32::MAX, &[0; 300])] {
        let r = refused(&mut c, opt, data, NBD_REP_ERR_UNSUP, "unknown option");
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
    let mut c = f.srv.connect();
    c.handshake();
    let good = info_payload("disk", &[NBD_INFO_BLOCK_SIZE]);
    let mut bad_utf8 = info_payload("disk", &[]);
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
            refused(&mut c, opt, payload, NBD_REP_ERR_INVALID, what);
        }
    }
    // Options that take no data.
    for opt in [NBD_OPT_LIST, NBD_OPT_STRUCTURED_REPLY, NBD_OPT_STARTTLS] {
        refused(&mut c, opt, b"x", NBD_REP_ERR_INVALID, "data for no data");
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
            refused(&mut c, opt, &payload, NBD_REP_ERR_INVALID, "meta context");
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
    let mut c = f.srv.connect();
    c.handshake();
    c.structured_reply();
    for opt in [NBD_OPT_INFO, NBD_OPT_GO] {
        refused(
            &mut c,
            opt,
            &info_payload("nope", &[]),
            NBD_REP_ERR_UNKNOWN,
            "unknown export",
        );
    }
    for opt in [NBD_OPT_LIST_META_CONTEXT, NBD_OPT_SET_META_CONTEXT] {
        let meta = meta_payload("nope", &[BASE_ALLOCATION]);
        refused(&mut c, opt, &meta, NBD_REP_ERR_UNKNOWN, "unknown export");
    }
    // NBD_OPT_INFO on a real export answers and stays in negotiation.
    let r = c.option(NBD_OPT_INFO, &info_payload("ro", &[NBD_INFO_NAME]));
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
    let (mut c, task) = f.srv.pair(false);
    c.handshake();
    c.send(&encode_option(NBD_OPT_EXPORT_NAME, b"nope"));
    f.srv.closed(c, task, "EXPORT_NAME of an unknown export");
    f.healthy();
}

#[test]
fn oversized_options_are_too_big_and_the_stream_stays_in_sync() {
    let f = Fixture::new();
    let mut c = f.srv.connect();
    c.handshake();
    // Payloads that look like options themselves: a server that lost
    // track would answer them.
    let fake = encode_option(NBD_OPT_LIST, &[]).repeat(4000);
    for (opt, len) in [
        (NBD_OPT_GO, MAX_OPTION_LEN as usize + 1),
        (99, 1 << 20),
        (NBD_OPT_SET_META_CONTEXT, 70_000),
    ] {
        let payload: Vec<u8> = fake.iter().copied().cycle().take(len).collect();
        refused(&mut c, opt, &payload, NBD_REP_ERR_TOO_BIG, "oversized");
    }
    // The largest accepted size is fine (and malformed, here).
    let r = c.option(NBD_OPT_GO, &vec![0; MAX_OPTION_LEN as usize]);
    assert_eq!(r.kind, NBD_REP_ERR_INVALID);
    c.go("disk", false, &[]);
    check(c.write(4096, &[1; 4096]), 0);
    c.disconnect();

    // An export name too long to hold closes the connection.
    let (mut c, task) = f.srv.pair(false);
    c.handshake();
    let mut opt = encode_option(NBD_OPT_EXPORT_NAME, &[]);
    opt[12..16].copy_from_slice(&(MAX_OPTION_LEN + 1).to_be_bytes());
    c.send(&opt);
    f.srv.closed(c, task, "oversized EXPORT_NAME");
    f.healthy();
}

#[test]
fn meta_contexts_need_structured_replies() {
    let f = Fixture::new();
    let mut c = f.srv.connect();
    c.handshake();
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
    let (mut c, task) = f.srv.pair(true);
    c.handshake();
    for (opt, data) in [
        (NBD_OPT_LIST, vec![]),
        (NBD_OPT_GO, info_payload("disk", &[])),
        (NBD_OPT_INFO, info_payload("disk", &[])),
        (NBD_OPT_STRUCTURED_REPLY, vec![]),
        (99, vec![]),
    ] {
        refused(&mut c, opt, &data, NBD_REP_ERR_TLS_REQD, "before TLS");
    }
    // This server has no certificate: STARTTLS is refused by policy.
    let r = c.option(NBD_OPT_STARTTLS, &[]);
    assert_eq!(r.kind, NBD_REP_ERR_POLICY);
    c.send(&encode_option(NBD_OPT_EXPORT_NAME, b"disk"));
    f.srv.closed(c, task, "EXPORT_NAME before TLS");

    // NBD_OPT_ABORT is always allowed.
    let (mut c, task) = f.srv.pair(true);
    c.handshake();
    let r = c.option(NBD_OPT_ABORT, &[]);
    assert_eq!(r.kind, NBD_REP_ACK);
    f.srv.closed(c, task, "ABORT");
    assert_eq!(nonzero(&f.disk), 0);
}

#[test]
fn starttls_without_a_certificate_is_refused_but_the_session_goes_on() {
    let f = Fixture::new();
    let mut c = f.srv.connect();
    c.handshake();
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
        let mut c = f.srv.connect();
        c.start("disk", structured, &[]);
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
    let mut c = f.srv.connect();
    c.handshake();
    c.go("disk", false, &[]);
    let len = MAX_PAYLOAD + 4096;
    let r = c.cmd(0, NBD_CMD_WRITE, 0, len, &fake_requests(len as usize));
    assert_eq!(r.error, NBD_EOVERFLOW);
    assert_eq!(nonzero(&f.disk), 0);
    check(c.write(0, &[1; 512]), 0);
    assert_eq!(c.read(0, 512).data, vec![1; 512]);
    c.disconnect();
}

#[test]
fn writes_to_a_read_only_export_are_eperm() {
    let f = Fixture::new();
    for structured in [true, false] {
        let mut c = f.srv.connect();
        let (size, flags) = c.start("ro", structured, &[]);
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
    let mut other = f.srv.connect();
    other.start("disk", true, &[BASE_ALLOCATION]);
    check(other.write(0, &[3; 4096]), 0);

    let (mut c, task) = f.srv.pair(false);
    c.start("disk", true, &[]);
    let mut h = header(NBD_CMD_READ, 1, 0, 512);
    h[0] ^= 0x80;
    c.send(&h);
    f.srv.closed(c, task, "bad request magic");

    // The other connection, open all along, is unaffected.
    let r = other.read(0, 4096);
    assert_eq!((r.error, r.data), (0, vec![3; 4096]));
    other.disconnect();
    f.healthy();
}

#[test]
fn clients_that_vanish_mid_request_end_their_connection() {
    let f = Fixture::new();
    let write = |len: u32| header(NBD_CMD_WRITE, 9, 0, len);
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
        let (mut c, task) = f.srv.pair(false);
        c.start("disk", true, &[]);
        c.send(&bytes);
        drop(c);
        f.srv.ended(task, what);
        assert_eq!(nonzero(&f.disk), 0, "{what}: nothing was written");
    }
    // Gone with requests in flight and replies unread.
    let (mut c, task) = f.srv.pair(false);
    c.start("disk", false, &[]);
    for i in 0..200u64 {
        c.send(&header(NBD_CMD_READ, i, 0, 1 << 20));
    }
    drop(c);
    f.srv.ended(task, "a client gone with replies unread");
    f.healthy();
}

#[test]
fn pipelined_requests_all_get_their_reply() {
    let f = Fixture::new();
    let mut c = f.srv.connect();
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
// Helpers

/// `len` bytes of well-formed read requests: a payload a server that lost
/// its place in the stream would answer.
fn fake_requests(len: usize) -> Vec<u8> {
    let h = header(NBD_CMD_READ, 0xbad, 0, 512);
    h.iter().copied().cycle().take(len).collect()
}

/// The header of a request without flags.
fn header(kind: u16, cookie: u64, offset: u64, length: u32) -> [u8; REQUEST_LEN] {
    Request {
        flags: 0,
        kind,
        cookie,
        offset,
        length,
    }
    .encode()
}

/// Bytes of `dev` that are not zero.
fn nonzero(dev: &MemDevice) -> usize {
    dev.contents().iter().filter(|&&b| b != 0).count()
}

/// Sends option `opt` with `data`; asserts the reply is the error `error`
/// for that option, and returns it.
fn refused(c: &mut Client, opt: u32, data: &[u8], error: u32, what: &str) -> OptReply {
    let r = c.option(opt, data);
    assert_eq!((r.option, r.kind), (opt, error), "{what}");
    r
}

/// Asserts a reply's error value (0: success).
fn check(r: Reply, error: u32) {
    assert_eq!(r.error, error, "{r:?}");
    if error != 0 {
        assert!(r.data.is_empty(), "a failed request carries no data");
    }
}
