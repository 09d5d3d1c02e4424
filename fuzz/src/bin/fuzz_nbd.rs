//! fuzz_nbd — mutation fuzzing of the NBD server (`nbd` crate): handshake,
//! option parsing and transmission, on the stable toolchain.
//!
//! ```sh
//! cargo run --release -p refpoint-fuzz --bin fuzz_nbd -- --seconds 60   # or --iterations N (default 100000)
//! cargo run --release -p refpoint-fuzz --bin fuzz_nbd -- --seed 7 my.stream
//! cargo run --release -p refpoint-fuzz --bin fuzz_nbd -- --reproduce target/fuzz-crashes/hang-structured-1a2b3c4d.nbd
//! ```
//!
//! Seeds are client byte streams, written message by message: client
//! flags, options (STRUCTURED_REPLY, LIST, INFO, LIST/SET_META_CONTEXT,
//! STARTTLS on a server without a certificate, GO, EXPORT_NAME, ABORT,
//! unknown and oversized ones) and requests (reads with and without DF,
//! writes with and without FUA, block status for `base:allocation` and
//! `qemu:dirty-bitmap:mem`, write zeroes, trim, cache, flush, out of range,
//! unknown commands, DISC); one seed is served with TLS required. A mutant
//! drops, repeats, swaps or splices whole messages, flips bits, sets bytes
//! and writes boundary values (protocol numbers, the export size, the
//! 4 KiB / 64 KiB / 32 MiB limits) into headers and length fields, and may
//! cut the stream anywhere; files given on the command line are seeds too.
//!
//! Each mutant goes to `Server::serve_stream` over a `tokio::io::duplex`,
//! with an in-memory export (`disk`, 1 MiB + 1536 bytes, writable, with the
//! dirty bitmap context; `ro`, 64 KiB, read-only); the server's output is
//! read and discarded. Findings: a panic anywhere in the server (tasks
//! included), a connection still open `--timeout` seconds after its input
//! ended, output that does not start with the greeting, or heap growth past
//! 256 MiB. Every message of a mutant also goes through the pure parsers
//! (`InfoRequest::parse`, `MetaRequest::parse`, `export_name`,
//! `Request::parse` + `validate`), whose results must encode back to the
//! bytes parsed and respect the export's bounds. Findings are saved to
//! `--crashes DIR` (default `target/fuzz-crashes`) as
//! `<kind>-<seed>-<crc>.nbd` with a `.txt`; the exit status is then 1.

use clap::Parser;
use nbd::mem::{MemDevice, StaticExports, MEM_DIRTY_CONTEXT};
use nbd::option::{encode_option as opt, export_name, InfoRequest, MetaRequest};
use nbd::proto::*;
use nbd::request::Request;
use nbd::Server;
use rand::rngs::SmallRng;
use rand::Rng;
use refpoint_fuzz::alloc_track::{self, TrackingAlloc};
use refpoint_fuzz::harness::{self, Failure, LoopArgs, Target};
use refpoint_fuzz::{Finding, FindingKind};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[global_allocator]
static ALLOC: TrackingAlloc = TrackingAlloc;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
/// Not a multiple of the device's 4 KiB pages, on purpose.
const DISK_SIZE: u64 = MIB + 1536;
const RO_SIZE: u64 = 64 * KIB;
/// Heap growth during one input beyond this is a finding.
const ALLOC_LIMIT: usize = 256 << 20;
/// Server output kept for the coverage scan (the rest is counted only).
const SCAN_LIMIT: usize = 1 << 20;
/// Capacity of the in-memory pipe in each direction.
const PIPE: usize = 64 << 10;

#[derive(Parser)]
#[command(about = "Mutation fuzzing of the NBD server (stable toolchain)")]
struct Args {
    #[command(flatten)]
    run: LoopArgs,
    /// A connection still open this many seconds after its input ended is
    /// a hang.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    /// Run one saved input instead of fuzzing.
    #[arg(long)]
    reproduce: Option<PathBuf>,
    /// More seeds: files holding a client byte stream each.
    files: Vec<PathBuf>,
}

// ---------------------------------------------------------------------------
// Coverage and panics

/// How far inputs got, from the server's output and the parsers.
#[derive(Debug, Default)]
struct Coverage {
    inputs: u64,
    option_replies: u64,
    option_errors: u64,
    /// Sessions whose output holds transmission replies.
    transmission: u64,
    replies: u64,
    reply_errors: u64,
    /// The server closed before reading all of the input.
    closed_early: u64,
    info_parsed: u64,
    meta_parsed: u64,
    requests_valid: u64,
}

// Panics are recorded from any thread (the server's tasks run on the
// runtime's and the blocking pool's threads), and printed only when asked.
static PANICS: Mutex<Vec<String>> = Mutex::new(Vec::new());
static PRINT_PANICS: AtomicBool = AtomicBool::new(false);

fn install_panic_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        PANICS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(info.to_string());
        if PRINT_PANICS.load(Ordering::Relaxed) {
            previous(info);
        }
    }));
}

fn take_panics() -> Vec<String> {
    std::mem::take(&mut *PANICS.lock().unwrap_or_else(|e| e.into_inner()))
}

// ---------------------------------------------------------------------------
// Seeds

/// A client byte stream, kept as its messages so mutations can work on
/// whole messages.
#[derive(Clone)]
struct Seed {
    name: String,
    tls_required: bool,
    messages: Vec<Vec<u8>>,
}

fn flags(f: u32) -> Vec<u8> {
    f.to_be_bytes().to_vec()
}

fn info_payload(name: &str, infos: &[u16]) -> Vec<u8> {
    InfoRequest {
        name: name.into(),
        requests: infos.to_vec(),
    }
    .encode()
}

fn meta_payload(name: &str, queries: &[&str]) -> Vec<u8> {
    MetaRequest {
        export: name.into(),
        queries: queries.iter().map(|q| q.to_string()).collect(),
    }
    .encode()
}

fn req(flags: u16, kind: u16, offset: u64, length: u32) -> Vec<u8> {
    let cookie = (kind as u64) << 32 | offset;
    let mut b = Request {
        flags,
        kind,
        cookie,
        offset,
        length,
    }
    .encode()
    .to_vec();
    if kind == NBD_CMD_WRITE {
        b.extend((0..length).map(|i| (i as u8).wrapping_mul(7) | 1));
    }
    b
}

const C_FLAGS: u32 = NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES;

fn seeds() -> Vec<Seed> {
    let all_infos = [
        NBD_INFO_EXPORT,
        NBD_INFO_NAME,
        NBD_INFO_DESCRIPTION,
        NBD_INFO_BLOCK_SIZE,
    ];
    let end = DISK_SIZE - 1536;
    let structured = vec![
        flags(C_FLAGS),
        opt(NBD_OPT_STRUCTURED_REPLY, &[]),
        opt(NBD_OPT_LIST_META_CONTEXT, &meta_payload("disk", &[])),
        opt(
            NBD_OPT_SET_META_CONTEXT,
            &meta_payload("disk", &[BASE_ALLOCATION, MEM_DIRTY_CONTEXT]),
        ),
        opt(NBD_OPT_GO, &info_payload("disk", &all_infos)),
        req(0, NBD_CMD_WRITE, 0, 4096),
        req(NBD_CMD_FLAG_FUA, NBD_CMD_WRITE, 8192 + 100, 512),
        req(0, NBD_CMD_READ, 0, 16384),
        req(NBD_CMD_FLAG_DF, NBD_CMD_READ, 4000, 8192),
        req(0, NBD_CMD_BLOCK_STATUS, 0, 65536),
        req(NBD_CMD_FLAG_REQ_ONE, NBD_CMD_BLOCK_STATUS, 4096, 8192),
        req(0, NBD_CMD_WRITE_ZEROES, 4096, 4096),
        req(NBD_CMD_FLAG_NO_HOLE, NBD_CMD_WRITE_ZEROES, 100, 50),
        req(NBD_CMD_FLAG_FUA, NBD_CMD_TRIM, 0, 8192),
        req(0, NBD_CMD_CACHE, 0, 4096),
        req(0, NBD_CMD_FLUSH, 0, 0),
        req(0, NBD_CMD_WRITE, end, 1536),
        req(0, NBD_CMD_READ, end - 100, 1636),
        req(0, NBD_CMD_BLOCK_STATUS, end - 4096, 5632),
        req(0, NBD_CMD_DISC, 0, 0),
    ];
    let plain = [
        ("structured", structured.clone()),
        (
            "simple",
            vec![
                flags(NBD_FLAG_C_FIXED_NEWSTYLE),
                opt(NBD_OPT_LIST, &[]),
                opt(NBD_OPT_INFO, &info_payload("disk", &[NBD_INFO_BLOCK_SIZE])),
                opt(NBD_OPT_INFO, &info_payload("ro", &[])),
                opt(NBD_OPT_GO, &info_payload("disk", &[])),
                req(0, NBD_CMD_WRITE, 4096, 1024),
                req(0, NBD_CMD_READ, 0, 8192),
                req(0, NBD_CMD_WRITE_ZEROES, 0, 2048),
                req(0, NBD_CMD_TRIM, 8192, 4096),
                req(0, NBD_CMD_BLOCK_STATUS, 0, 4096),
                req(0, NBD_CMD_FLUSH, 0, 0),
                req(0, NBD_CMD_DISC, 0, 0),
            ],
        ),
        (
            "export-name",
            vec![
                flags(C_FLAGS),
                opt(NBD_OPT_STRUCTURED_REPLY, &[]),
                opt(
                    NBD_OPT_SET_META_CONTEXT,
                    &meta_payload("disk", &[BASE_ALLOCATION]),
                ),
                opt(NBD_OPT_EXPORT_NAME, b"disk"),
                req(0, NBD_CMD_WRITE, 65536, 8192),
                req(0, NBD_CMD_BLOCK_STATUS, 0, 131072),
                req(0, NBD_CMD_READ, 60000, 20000),
                req(0, NBD_CMD_DISC, 0, 0),
            ],
        ),
        (
            "export-name-read-only",
            vec![
                flags(NBD_FLAG_C_FIXED_NEWSTYLE),
                opt(NBD_OPT_EXPORT_NAME, b"ro"),
                req(0, NBD_CMD_READ, 0, 4096),
                req(0, NBD_CMD_WRITE, 0, 512),
                req(0, NBD_CMD_TRIM, 0, 4096),
                req(0, NBD_CMD_FLUSH, 0, 0),
            ],
        ),
        (
            "starttls",
            vec![
                flags(C_FLAGS),
                opt(NBD_OPT_STARTTLS, &[]),
                opt(NBD_OPT_STRUCTURED_REPLY, &[]),
                opt(NBD_OPT_GO, &info_payload("disk", &[])),
                req(0, NBD_CMD_READ, 0, 4096),
            ],
        ),
        (
            "abort",
            vec![
                flags(C_FLAGS),
                opt(NBD_OPT_LIST, &[]),
                opt(NBD_OPT_ABORT, &[]),
                opt(NBD_OPT_GO, &info_payload("disk", &[])),
            ],
        ),
        (
            "errors",
            vec![
                flags(C_FLAGS),
                opt(42, b"unknown"),
                opt(NBD_OPT_GO, &info_payload("nope", &[])),
                opt(
                    NBD_OPT_SET_META_CONTEXT,
                    &meta_payload("disk", &[BASE_ALLOCATION]),
                ),
                opt(NBD_OPT_INFO, &[0, 0, 0, 9, b'x']),
                opt(99, &vec![0x55; MAX_OPTION_LEN as usize + 1]),
                opt(NBD_OPT_STRUCTURED_REPLY, &[]),
                opt(NBD_OPT_GO, &info_payload("disk", &[NBD_INFO_BLOCK_SIZE])),
                req(0, NBD_CMD_READ, DISK_SIZE - 10, 20),
                req(0, NBD_CMD_WRITE, DISK_SIZE - 100, 512),
                req(0, NBD_CMD_READ, 0, MAX_PAYLOAD + 1),
                req(0, 42, 0, 512),
                req(1 << 9, NBD_CMD_READ, 0, 512),
                req(0, NBD_CMD_BLOCK_STATUS, 0, 4096),
                req(0, NBD_CMD_READ, 0, 0),
                req(0, NBD_CMD_READ, 0, 512),
            ],
        ),
    ];
    plain
        .into_iter()
        .map(|(name, messages)| (name, false, messages))
        .chain([("tls-required", true, structured)])
        .map(|(name, tls_required, messages)| Seed {
            name: name.into(),
            tls_required,
            messages,
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Mutation

/// Values that sit on a boundary of some check of the server.
const INTERESTING: &[u64] = &[
    0,
    1,
    2,
    3,
    5,
    7,
    8,
    9,
    10,
    0x7f,
    0x80,
    0xff,
    0x100,
    511,
    512,
    4095,
    4096,
    4097,
    0x7fff,
    0x8000,
    0xffff,
    MAX_OPTION_LEN as u64,
    MAX_OPTION_LEN as u64 + 1,
    MAX_STRING as u64,
    MAX_STRING as u64 + 1,
    RO_SIZE,
    DISK_SIZE - 1,
    DISK_SIZE,
    DISK_SIZE + 1,
    MAX_PAYLOAD as u64,
    MAX_PAYLOAD as u64 + 1,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    NBD_REQUEST_MAGIC as u64,
    IHAVEOPT,
    i64::MAX as u64,
    u64::MAX,
];

struct Mutator {
    rng: SmallRng,
}

impl Mutator {
    /// A mutant of `seed` as messages; `donors` provide messages to splice.
    fn mutate(&mut self, seed: &Seed, donors: &[Seed]) -> Vec<Vec<u8>> {
        let mut msgs = seed.messages.clone();
        let n = 1 + (self.rng.gen::<f64>().powi(3) * 8.0) as usize;
        for _ in 0..n {
            if msgs.is_empty() {
                msgs.push(vec![0; 4]);
            }
            let i = self.rng.gen_range(0..msgs.len());
            match self.rng.gen_range(0..100) {
                0..=54 => self.bytes(&mut msgs[i]),
                55..=63 => {
                    msgs.remove(i);
                }
                64..=71 => {
                    let m = msgs[i].clone();
                    msgs.insert(i, m);
                }
                72..=80 => {
                    let d = &donors[self.rng.gen_range(0..donors.len())].messages;
                    let m = d[self.rng.gen_range(0..d.len())].clone();
                    msgs.insert(self.rng.gen_range(0..=msgs.len()), m);
                }
                81..=86 => {
                    let j = self.rng.gen_range(0..msgs.len());
                    msgs.swap(i, j);
                }
                87..=91 => msgs.truncate(self.rng.gen_range(1..=msgs.len())),
                _ => {
                    let m = &mut msgs[i];
                    if self.rng.gen_bool(0.5) {
                        m.truncate(self.rng.gen_range(0..=m.len()));
                    } else {
                        let extra = self.rng.gen_range(1..=64);
                        let fill: u8 = self.rng.gen();
                        m.extend(vec![fill; extra]);
                    }
                }
            }
        }
        msgs
    }

    /// An offset in `m`: mostly in the header (the first 28 bytes).
    fn offset(&mut self, len: usize) -> usize {
        if self.rng.gen_bool(0.7) {
            self.rng.gen_range(0..len.min(28))
        } else {
            self.rng.gen_range(0..len)
        }
    }

    fn bytes(&mut self, m: &mut [u8]) {
        if m.is_empty() {
            return;
        }
        let len = m.len();
        match self.rng.gen_range(0..10) {
            0..=2 => {
                let o = self.offset(len);
                m[o] ^= 1 << self.rng.gen_range(0..8);
            }
            3 => {
                let o = self.offset(len);
                m[o] = self.rng.gen();
            }
            4..=7 => {
                let v = INTERESTING[self.rng.gen_range(0..INTERESTING.len())];
                let width = [1, 2, 4, 8][self.rng.gen_range(0..4)];
                let o = self.offset(len) / width * width;
                let bytes = v.to_be_bytes();
                let end = (o + width).min(len);
                m[o..end].copy_from_slice(&bytes[8 - width..][..end - o]);
            }
            8 if len >= 16 && m[..8] == IHAVEOPT.to_be_bytes() => {
                // An option's length off by a little from its payload's.
                let delta = self.rng.gen_range(-4i64..=4);
                let l = ((len - 16) as i64 + delta).max(0) as u32;
                m[12..16].copy_from_slice(&l.to_be_bytes());
            }
            _ => {
                let n = self.rng.gen_range(1..=len.min(32));
                let from = self.rng.gen_range(0..=len - n);
                let to = self.rng.gen_range(0..=len - n);
                m.copy_within(from..from + n, to);
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Running one input

fn exports() -> Arc<StaticExports> {
    Arc::new(
        StaticExports::default()
            .with("disk", Arc::new(MemDevice::new(DISK_SIZE, false)))
            .with("ro", Arc::new(MemDevice::new(RO_SIZE, true))),
    )
}

/// What the client side saw of one session.
struct Session {
    /// The server read the whole input.
    delivered: bool,
    /// The first [`SCAN_LIMIT`] bytes of output.
    output: Vec<u8>,
}

async fn session(input: Arc<Vec<u8>>, tls_required: bool) -> Session {
    let server = Server::new(exports(), None);
    let (client, server_end) = tokio::io::duplex(PIPE);
    let conn = tokio::spawn(async move {
        server
            .serve_stream(Box::new(server_end), tls_required)
            .await
    });
    let (mut rd, mut wr) = tokio::io::split(client);
    let send = async move {
        let ok = wr.write_all(&input).await.is_ok();
        let _ = wr.shutdown().await;
        ok
    };
    let receive = async move {
        let mut output = Vec::new();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let keep = n.min(SCAN_LIMIT.saturating_sub(output.len()));
                    output.extend_from_slice(&buf[..keep]);
                }
            }
        }
        output
    };
    let (delivered, output) = tokio::join!(send, receive);
    // The output ended: the server dropped the connection; its task must
    // end too (a panic in it was recorded by the hook).
    let _ = conn.await;
    Session { delivered, output }
}

/// Runs one client stream through the server.
fn run_session(
    rt: &tokio::runtime::Runtime,
    input: &Arc<Vec<u8>>,
    tls_required: bool,
    timeout: Duration,
    cov: &mut Coverage,
) -> Result<(), Failure> {
    let finding = |kind, step, detail: String| Failure::from(Finding { kind, step, detail });
    let baseline = alloc_track::reset_peak();
    take_panics();
    let r = catch_unwind(AssertUnwindSafe(|| {
        rt.block_on(async {
            tokio::time::timeout(timeout, session(input.clone(), tls_required)).await
        })
    }));
    let grown = alloc_track::peak().saturating_sub(baseline);
    let panics = take_panics();
    if let Some(p) = panics.first() {
        return Err(finding(FindingKind::Panic, "serve_stream", p.clone()));
    }
    let s = match r {
        Err(_) => {
            return Err(finding(
                FindingKind::Panic,
                "serve_stream",
                "panic in the client".into(),
            ))
        }
        Ok(Err(_)) => {
            return Err(finding(
                FindingKind::Hang,
                "serve_stream",
                format!("the connection was still open {timeout:?} after the input ended"),
            ))
        }
        Ok(Ok(s)) => s,
    };
    if grown > ALLOC_LIMIT {
        return Err(finding(
            FindingKind::Alloc,
            "serve_stream",
            format!(
                "the heap grew by {} MiB for a {}-byte input",
                grown >> 20,
                input.len()
            ),
        ));
    }
    if s.output.len() < 18
        || s.output[..8] != NBDMAGIC.to_be_bytes()
        || s.output[8..16] != IHAVEOPT.to_be_bytes()
    {
        return Err(finding(
            FindingKind::Oracle,
            "greeting",
            format!(
                "output does not start with the greeting: {:02x?}",
                &s.output[..s.output.len().min(18)]
            ),
        ));
    }
    cov.closed_early += !s.delivered as u64;
    scan(&s.output[18..], cov);
    Ok(())
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap())
}

/// Counts option replies, then transmission replies (approximately: the
/// data after a simple read reply is skipped by searching the next magic).
fn scan(out: &[u8], cov: &mut Coverage) {
    let mut p = 0;
    while out.len() >= p + 20 && out[p..p + 8] == REPLY_MAGIC.to_be_bytes() {
        cov.option_replies += 1;
        cov.option_errors += (be32(&out[p + 12..]) >> 31) as u64;
        p += 20 + be32(&out[p + 16..]) as usize;
    }
    let magic = |b: &[u8]| {
        b.len() >= 4 && matches!(be32(b), NBD_SIMPLE_REPLY_MAGIC | NBD_STRUCTURED_REPLY_MAGIC)
    };
    let next = |from: usize| (from..out.len()).find(|&i| magic(&out[i..]));
    let mut at = next(p);
    if at.is_some() {
        cov.transmission += 1;
    }
    while let Some(i) = at {
        cov.replies += 1;
        if be32(&out[i..]) == NBD_STRUCTURED_REPLY_MAGIC {
            if out.len() < i + 20 {
                break;
            }
            let kind = u16::from_be_bytes([out[i + 6], out[i + 7]]);
            cov.reply_errors += (kind >> 15) as u64;
            let end = i + 20 + be32(&out[i + 16..]) as usize;
            at = if end < out.len() && magic(&out[end..]) {
                Some(end)
            } else {
                next(i + 1)
            };
        } else {
            if out.len() < i + 16 {
                break;
            }
            cov.reply_errors += (be32(&out[i + 4..]) != 0) as u64;
            at = next(i + 16);
        }
    }
}

// ---------------------------------------------------------------------------
// The parsers

/// Runs every parser on `data`; an `Err` names the broken oracle.
fn parse_checks(data: &[u8], cov: &mut Coverage) -> Result<(), String> {
    if let Ok(r) = InfoRequest::parse(data) {
        cov.info_parsed += 1;
        if r.encode() != data {
            return Err(format!(
                "InfoRequest::parse({data:02x?}) = {r:?} encodes differently"
            ));
        }
    }
    if let Ok(r) = MetaRequest::parse(data) {
        cov.meta_parsed += 1;
        if r.encode() != data {
            return Err(format!(
                "MetaRequest::parse({data:02x?}) = {r:?} encodes differently"
            ));
        }
        if r.queries
            .iter()
            .chain([&r.export])
            .any(|s| s.len() > MAX_STRING as usize)
        {
            return Err(format!(
                "MetaRequest::parse accepted a string over {MAX_STRING} bytes"
            ));
        }
    }
    if let Ok(name) = export_name(data) {
        if name.as_bytes() != data {
            return Err(format!("export_name({data:02x?}) = {name:?}"));
        }
    }
    if let Some(h) = data.first_chunk::<REQUEST_LEN>() {
        if let Ok(r) = Request::parse(h) {
            if r.encode() != *h {
                return Err(format!(
                    "Request::parse({h:02x?}) = {r:?} encodes differently"
                ));
            }
            for (size, read_only, structured) in [
                (DISK_SIZE, false, true),
                (DISK_SIZE, true, false),
                (u64::MAX, false, true),
            ] {
                if r.validate(size, read_only, structured).is_ok() {
                    cov.requests_valid += 1;
                    check_valid(&r, size, read_only, structured)?;
                }
            }
        }
    }
    Ok(())
}

/// What a request that passed `validate` must satisfy.
fn check_valid(r: &Request, size: u64, read_only: bool, structured: bool) -> Result<(), String> {
    let bad = |why: &str| {
        Err(format!("validate accepted {r:?} (size {size}, read-only {read_only}, structured {structured}): {why}"))
    };
    let ranged = !matches!(r.kind, NBD_CMD_FLUSH | NBD_CMD_DISC);
    let writes = matches!(r.kind, NBD_CMD_WRITE | NBD_CMD_WRITE_ZEROES | NBD_CMD_TRIM);
    if r.kind > NBD_CMD_BLOCK_STATUS {
        return bad("unknown command");
    }
    if writes && read_only {
        return bad("a write on a read-only export");
    }
    if ranged
        && (r.length == 0
            || r.offset
                .checked_add(r.length as u64)
                .is_none_or(|e| e > size))
    {
        return bad("out of range");
    }
    if matches!(r.kind, NBD_CMD_READ | NBD_CMD_WRITE) && r.length > MAX_PAYLOAD {
        return bad("longer than the maximum payload");
    }
    if r.flags & NBD_CMD_FLAG_DF != 0 && !structured {
        return bad("DF without structured replies");
    }
    let known = NBD_CMD_FLAG_FUA
        | NBD_CMD_FLAG_NO_HOLE
        | NBD_CMD_FLAG_DF
        | NBD_CMD_FLAG_REQ_ONE
        | NBD_CMD_FLAG_FAST_ZERO;
    if r.flags & !known != 0 {
        return bad("unknown flags");
    }
    Ok(())
}

/// Runs the parsers on each message of a mutant, whole and as an option
/// payload (after the 16-byte option header).
fn run_parsers(msgs: &[Vec<u8>], cov: &mut Coverage) -> Result<(), Failure> {
    for m in msgs {
        for data in [&m[..], m.get(16..).unwrap_or(&[])] {
            take_panics();
            let r = catch_unwind(AssertUnwindSafe(|| parse_checks(data, cov)));
            let finding = |kind, detail| Failure {
                finding: Finding {
                    kind,
                    step: "parsers",
                    detail,
                },
                bytes: Some(data.to_vec()),
            };
            match r {
                Err(_) => {
                    let p = take_panics().pop().unwrap_or_else(|| "panic".into());
                    return Err(finding(FindingKind::Panic, p));
                }
                Ok(Err(e)) => return Err(finding(FindingKind::Oracle, e)),
                Ok(Ok(())) => {}
            }
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// The loop

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// Client streams through the server, and each of their messages through
/// the parsers.
struct NbdServer {
    all: Vec<Seed>,
    m: Mutator,
    rt: tokio::runtime::Runtime,
    timeout: Duration,
    cov: Coverage,
    /// The messages of the last mutant.
    msgs: Vec<Vec<u8>>,
}

impl Target for NbdServer {
    const WHAT: &'static str = "the NBD server with ";
    const EXT: &'static str = "nbd";

    fn names(&self) -> Vec<String> {
        self.all.iter().map(|s| s.name.clone()).collect()
    }

    fn rng(&mut self) -> &mut SmallRng {
        &mut self.m.rng
    }

    fn mutate(&mut self, seed: usize, buf: &mut Vec<u8>) {
        self.msgs = self.m.mutate(&self.all[seed], &self.all);
        *buf = self.msgs.concat();
        if self.m.rng.gen_bool(0.1) {
            buf.truncate(self.m.rng.gen_range(0..=buf.len()));
        }
    }

    fn run(&mut self, seed: usize, input: &Arc<Vec<u8>>) -> Result<(), Failure> {
        let cov = &mut self.cov;
        cov.inputs += 1;
        let tls_required = self.all[seed].tls_required;
        run_session(&self.rt, input, tls_required, self.timeout, cov)
            .and_then(|()| run_parsers(&self.msgs, cov))
    }

    /// An input that blocks a thread for good (the per-input timeout only
    /// covers waiting, not a spinning task).
    fn hang(seed: &str, limit: Duration) -> Finding {
        Finding {
            kind: FindingKind::Hang,
            step: "serve_stream",
            detail: format!("input from seed {seed} blocked the runtime for {limit:?}"),
        }
    }

    fn print_reached(&self) {
        let cov = &self.cov;
        println!(
            "reached: inputs {}, option replies {}, option errors {}, transmission {}, replies {}, reply errors {}, closed early {}, info parsed {}, meta parsed {}, requests valid {}",
            cov.inputs,
            cov.option_replies,
            cov.option_errors,
            cov.transmission,
            cov.replies,
            cov.reply_errors,
            cov.closed_early,
            cov.info_parsed,
            cov.meta_parsed,
            cov.requests_valid
        );
    }
}

fn reproduce(path: &Path, all: &[Seed], timeout: Duration) {
    PRINT_PANICS.store(true, Ordering::Relaxed);
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let tls_required = harness::seed_of(path, all, |s| &s.name).is_some_and(|s| s.tls_required);
    let mut cov = Coverage::default();
    let input = Arc::new(bytes);
    let r = run_session(&runtime(), &input, tls_required, timeout, &mut cov)
        .and_then(|()| run_parsers(std::slice::from_ref(&input), &mut cov));
    harness::print_reproduced(r, || format!("(TLS required: {tls_required}); {cov:?}"));
}

fn main() {
    let args = Args::parse();
    install_panic_hook();
    let timeout = Duration::from_secs(args.timeout);
    let mut all = seeds();
    if let Some(p) = &args.reproduce {
        reproduce(p, &all, timeout);
        return;
    }
    for f in &args.files {
        match std::fs::read(f) {
            Ok(b) => all.push(Seed {
                name: f.display().to_string(),
                tls_required: false,
                messages: vec![b],
            }),
            Err(e) => eprintln!("skipping {}: {e}", f.display()),
        }
    }
    harness::fuzz(&args.run, timeout + Duration::from_secs(10), |rng| {
        NbdServer {
            all,
            m: Mutator { rng },
            rt: runtime(),
            timeout,
            cov: Coverage::default(),
            msgs: Vec::new(),
        }
    });
}
