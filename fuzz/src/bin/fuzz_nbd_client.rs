//! fuzz_nbd_client — mutation fuzzing of the NBD client (`nbd::client`)
//! and of the reply parsers it reads servers with (`nbd::reply`), on the
//! stable toolchain.
//!
//! ```sh
//! cargo run --release -p refpoint-fuzz --bin fuzz_nbd_client -- --seconds 60   # or --iterations N (default 100000)
//! cargo run --release -p refpoint-fuzz --bin fuzz_nbd_client -- --seed 7 my.stream
//! cargo run --release -p refpoint-fuzz --bin fuzz_nbd_client -- --reproduce target/fuzz-crashes/panic-scattered-1a2b3c4d.nbdc
//! ```
//!
//! An input is what a server sends: its greeting, option replies and
//! transmission replies, one byte stream. The seeds are recorded, not
//! written by hand: a small fake server (`Responder`, every message
//! built by the `nbd::reply` encoders) answers a real `Client` running
//! the session's calls, and what it sent, message by message, is the seed.
//! Its answers differ by seed: structured replies in one chunk, or
//! scattered over data and hole chunks in reverse order with block status
//! answered short; simple replies (the server refuses structured replies,
//! or the client does not ask); NBD_OPT_EXPORT_NAME after NBD_OPT_GO is
//! unknown; errors of every chunk type on a read-only export;
//! NBD_ESHUTDOWN in the middle; a refused NBD_OPT_GO, a structured-reply
//! refusal that requires TLS, and NBD_OPT_STARTTLS accepted with TLS
//! wanted. A seed's session must read back what its server holds, so the
//! recording checks the client too. Files given on the command line are
//! seeds too (with the default options).
//!
//! A mutant drops, repeats, swaps or splices whole messages, flips bits,
//! sets bytes and writes boundary values (magics, reply and chunk types,
//! the 64 KiB / 32 MiB limits, 2^32) into headers and length fields, sets
//! a header's length to its payload's give or take a few, moves a cookie
//! by one, and may cut the stream anywhere. Each mutant is
//!
//! 1. the server end of an in-memory stream for `Client::connect` (with
//!    the seed's options), then the session's calls: reads (split at the
//!    maximum request, past the end), writes with and without FUA, flush,
//!    trim, write zeroes, block status, disconnect. Findings: a panic, an
//!    input still running after `--timeout` seconds, heap growth past
//!    64 MiB; and broken promises of the client: block sizes that break
//!    the handshake's rules, a request that breaks the protocol on the
//!    wire (bad options or requests, out of range, not aligned to the
//!    minimum block size, longer than the maximum, a command the export
//!    does not offer, cookies out of order), block status extents that do
//!    not tile the range asked, a call refused before sending that sent
//!    bytes, a call that does not fail as closed after an error that
//!    ended the connection, or bytes sent after it;
//! 2. message by message, the input of every parser of `nbd::reply`
//!    (option reply headers, infos, meta contexts, export listings,
//!    simple replies, chunk headers, chunks of every type; the first
//!    1 KiB of a long message, except for the parser of its own type):
//!    what parses must encode back to the same bytes, which parse the
//!    same (when text was not UTF-8, to bytes that parse), and keep the
//!    protocol's rules (no empty hole, no zero error, no empty block
//!    status descriptor).
//!
//! Findings are saved to `--crashes DIR` (default `target/fuzz-crashes`)
//! as `<kind>-<seed>-<crc>.nbdc` with a `.txt`; the exit status is then 1.

use clap::Parser;
use nbd::client::{AllocationExtent, Client, Error, Options, Violation};
use nbd::option::{InfoRequest, MetaRequest};
use nbd::proto::*;
use nbd::reply::{
    self, BlockDescriptor, Chunk, ChunkHeader, ExportListing, Info, MetaContextReply,
    OptionReplyHeader, SimpleReply,
};
use nbd::request::Request;
use nbd::rustls;
use nbd::BlockSize;
use rand::rngs::SmallRng;
use rand::Rng;
use refpoint_fuzz::alloc_track::TrackingAlloc;
use refpoint_fuzz::harness::{self, Failure, LoopArgs, Target};
use refpoint_fuzz::{guarded, heap_bounded, Finding, FindingKind};
use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[global_allocator]
static ALLOC: TrackingAlloc = TrackingAlloc;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
/// Heap growth during one input beyond this is a finding.
const ALLOC_LIMIT: usize = 64 << 20;
/// The export every session asks for.
const EXPORT: &str = "disk";

#[derive(Parser)]
#[command(about = "Mutation fuzzing of the NBD client and reply parsers (stable toolchain)")]
struct Args {
    #[command(flatten)]
    run: LoopArgs,
    /// An input running longer than this many seconds is a hang.
    #[arg(long, default_value_t = 10)]
    timeout: u64,
    /// Run one saved input instead of fuzzing.
    #[arg(long)]
    reproduce: Option<PathBuf>,
    /// More seeds: files holding a server byte stream each.
    files: Vec<PathBuf>,
}

// ---------------------------------------------------------------------------
// The session

/// How the client connects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Structured replies and base:allocation asked.
    Default,
    /// Structured replies not asked.
    Simple,
    /// base:allocation not asked.
    NoContext,
    /// NBD_OPT_STARTTLS first (no certificate can be trusted).
    Tls,
}

fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: std::sync::OnceLock<Arc<rustls::ClientConfig>> = std::sync::OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .expect("ring offers the default protocol versions")
                .with_root_certificates(rustls::RootCertStore::empty())
                .with_no_client_auth();
            Arc::new(config)
        })
        .clone()
}

fn options(mode: Mode) -> Options {
    let o = Options::new(EXPORT);
    match mode {
        Mode::Default => o,
        Mode::Simple => o.structured_replies(false),
        Mode::NoContext => o.base_allocation(false),
        Mode::Tls => o.tls(
            tls_config(),
            rustls::pki_types::ServerName::try_from("disk.test").expect("a DNS name"),
        ),
    }
}

/// One call of the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Call {
    Read {
        offset: u64,
        length: u64,
    },
    Write {
        offset: u64,
        length: u64,
        fua: bool,
    },
    Flush,
    Trim {
        offset: u64,
        length: u64,
    },
    WriteZeroes {
        offset: u64,
        length: u64,
        may_trim: bool,
    },
    BlockStatus {
        offset: u64,
        length: u64,
    },
    Disconnect,
}

/// The calls after the handshake, for an export of `size` bytes.
fn script(size: u64) -> Vec<Call> {
    let end = |n: u64| size.saturating_sub(n);
    vec![
        Call::Read {
            offset: 0,
            length: 4096,
        },
        // Split in pieces when the maximum request is small.
        Call::Read {
            offset: 8192,
            length: 12288,
        },
        Call::Write {
            offset: 4096,
            length: 4096,
            fua: false,
        },
        Call::Write {
            offset: end(4096),
            length: 4096,
            fua: true,
        },
        Call::Flush,
        Call::Trim {
            offset: 0,
            length: 8192,
        },
        Call::WriteZeroes {
            offset: 16384,
            length: 4096,
            may_trim: false,
        },
        Call::WriteZeroes {
            offset: 20480,
            length: 8192,
            may_trim: true,
        },
        Call::BlockStatus {
            offset: 0,
            length: size.min(MIB),
        },
        Call::Read {
            offset: 0,
            length: 64 * KIB,
        },
        Call::BlockStatus {
            offset: end(4096),
            length: 4096,
        },
        // The last sector; then past the end (refused before sending).
        Call::Read {
            offset: end(512),
            length: 512,
        },
        Call::Read {
            offset: size,
            length: 512,
        },
        Call::Disconnect,
    ]
}

/// The bytes a session writes at `offset`.
fn pattern(offset: u64, length: u64) -> Vec<u8> {
    (offset..offset + length)
        .map(|i| (i as u8).wrapping_mul(29).wrapping_add((i >> 12) as u8) | 1)
        .collect()
}

/// What a call gave.
#[derive(Debug)]
enum Outcome {
    Done,
    Data(Vec<u8>),
    Extents(Vec<AllocationExtent>),
}

fn run_call(c: &mut Client, call: Call) -> Result<Outcome, Error> {
    match call {
        Call::Read { offset, length } => {
            let mut b = vec![0u8; length as usize];
            c.read(offset, &mut b).map(|()| Outcome::Data(b))
        }
        Call::Write {
            offset,
            length,
            fua,
        } => {
            let data = pattern(offset, length);
            if fua {
                c.write_fua(offset, &data)
            } else {
                c.write(offset, &data)
            }
            .map(|()| Outcome::Done)
        }
        Call::Flush => c.flush().map(|()| Outcome::Done),
        Call::Trim { offset, length } => c.trim(offset, length).map(|()| Outcome::Done),
        Call::WriteZeroes {
            offset,
            length,
            may_trim,
        } => c
            .write_zeroes(offset, length, may_trim)
            .map(|()| Outcome::Done),
        Call::BlockStatus { offset, length } => {
            c.block_status(offset, length).map(Outcome::Extents)
        }
        Call::Disconnect => unreachable!("disconnect consumes the client"),
    }
}

/// What the client said about the export after the handshake.
#[derive(Debug, Clone, Copy)]
struct Connected {
    size: u64,
    flags: u16,
    block_size: BlockSize,
    max_request: u32,
    structured: bool,
    allocation: bool,
}

/// A whole session: the handshake, then each call with the length of the
/// client's output after it.
struct Session {
    connected: Result<Connected, Error>,
    /// The length of the client's output when the handshake ended.
    handshake_end: usize,
    calls: Vec<(Call, Result<Outcome, Error>, usize)>,
}

/// Runs the handshake and the session's calls over `stream`, whose
/// output goes to `out`; `observe` sees each call as it returns.
fn session<S: Read + Write + Send + 'static>(
    stream: S,
    out: &Mutex<Vec<u8>>,
    mode: Mode,
    mut observe: impl FnMut(Call, &Result<Outcome, Error>),
) -> Session {
    let len = || out.lock().unwrap_or_else(|e| e.into_inner()).len();
    let c = Client::connect(stream, &options(mode));
    let handshake_end = len();
    let c = match c {
        Ok(c) => c,
        Err(e) => {
            return Session {
                connected: Err(e),
                handshake_end,
                calls: Vec::new(),
            }
        }
    };
    let connected = Connected {
        size: c.size(),
        flags: c.flags().0,
        block_size: c.block_size(),
        max_request: c.max_request(),
        structured: c.structured_replies(),
        allocation: c.has_base_allocation(),
    };
    let mut calls = Vec::new();
    let mut client = Some(c);
    for call in script(connected.size) {
        let r = if call == Call::Disconnect {
            let c = client.take().expect("one disconnect, the last call");
            c.disconnect().map(|()| Outcome::Done)
        } else {
            run_call(
                client.as_mut().expect("the disconnect is the last call"),
                call,
            )
        };
        observe(call, &r);
        calls.push((call, r, len()));
    }
    Session {
        connected: Ok(connected),
        handshake_end,
        calls,
    }
}

/// The server end of an in-memory stream: reads give the input, then
/// end of file; writes are kept.
struct Peer {
    input: Arc<Vec<u8>>,
    at: usize,
    out: Arc<Mutex<Vec<u8>>>,
}

impl Read for Peer {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        let rest = &self.input[self.at..];
        let n = rest.len().min(b.len());
        b[..n].copy_from_slice(&rest[..n]);
        self.at += n;
        Ok(n)
    }
}

impl Write for Peer {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.out
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// The client's promises

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap())
}
fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().unwrap())
}

/// Block size constraints the handshake may end with (§ "Size
/// constraints", as the client relaxes them), and the maximum request the
/// client derived from them.
fn check_block_size(c: &Connected) -> Result<(), String> {
    let b = c.block_size;
    let m = c.max_request;
    let ok = b.minimum.is_power_of_two()
        && b.minimum <= 64 << 10
        && b.preferred.is_power_of_two()
        && b.preferred >= b.minimum
        && b.maximum >= b.minimum;
    if !ok {
        return Err(format!("the handshake accepted block sizes {b:?}"));
    }
    if m < b.minimum || !m.is_multiple_of(b.minimum) || m > MAX_PAYLOAD || m > b.maximum {
        return Err(format!(
            "a maximum request of {m} bytes for block sizes {b:?}"
        ));
    }
    if c.allocation && !c.structured {
        return Err("base:allocation without structured replies".into());
    }
    Ok(())
}

/// What the client sent before transmission: its flags, then the options
/// the handshake has, each once, well-formed, as `mode` asks.
fn check_handshake(b: &[u8], mode: Mode) -> Result<(), String> {
    if b.is_empty() {
        return Ok(());
    }
    let Some(flags) = b.first_chunk::<4>().map(|f| u32::from_be_bytes(*f)) else {
        return Err(format!("client flags cut short: {b:02x?}"));
    };
    if flags & NBD_FLAG_C_FIXED_NEWSTYLE == 0
        || flags & !(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES) != 0
    {
        return Err(format!("client flags {flags:#x}"));
    }
    let mut seen = Vec::new();
    let mut p = 4;
    while p < b.len() {
        let Some(h) = b.get(p..p + 16) else {
            return Err(format!("an option header cut short at {p}"));
        };
        let (option, len) = (be32(&h[8..]), be32(&h[12..]) as usize);
        let Some(data) = b.get(p + 16..p + 16 + len) else {
            return Err(format!(
                "option {option} claims {len} bytes past the output"
            ));
        };
        if be64(h) != IHAVEOPT {
            return Err(format!("option magic {:#x}", be64(h)));
        }
        if seen.contains(&option) {
            return Err(format!("option {option} sent twice"));
        }
        if seen.contains(&NBD_OPT_EXPORT_NAME) {
            return Err("an option after NBD_OPT_EXPORT_NAME".into());
        }
        seen.push(option);
        let well_formed = match option {
            NBD_OPT_STARTTLS => {
                // The rest is TLS records.
                return if mode == Mode::Tls && seen.len() == 1 && data.is_empty() {
                    Ok(())
                } else {
                    Err(format!("NBD_OPT_STARTTLS in mode {mode:?}, after {seen:?}"))
                };
            }
            NBD_OPT_STRUCTURED_REPLY => mode != Mode::Simple && data.is_empty(),
            NBD_OPT_SET_META_CONTEXT => {
                mode != Mode::NoContext
                    && mode != Mode::Simple
                    && MetaRequest::parse(data).is_ok_and(|m| {
                        m.export == EXPORT && m.queries == [BASE_ALLOCATION.to_string()]
                    })
            }
            NBD_OPT_GO => InfoRequest::parse(data).is_ok_and(|r| r.name == EXPORT),
            NBD_OPT_EXPORT_NAME => data == EXPORT.as_bytes() && seen.contains(&NBD_OPT_GO),
            _ => false,
        };
        if !well_formed || (mode == Mode::Tls && seen[0] != NBD_OPT_STARTTLS) {
            return Err(format!(
                "option {option} with {} (mode {mode:?}, after {seen:?})",
                short(&data)
            ));
        }
        p += 16 + len;
    }
    Ok(())
}

/// What the client sent in transmission: requests the export allows, in
/// range, aligned to the minimum block size, at most the maximum request
/// long, cookies counting up from 1, NBD_CMD_DISC last.
fn check_requests(b: &[u8], c: &Connected) -> Result<(), String> {
    let has = |flag: u16| c.flags & flag != 0;
    let m = c.block_size.minimum as u64;
    let mut p = 0;
    let mut cookie = 0u64;
    let mut disc = false;
    while p < b.len() {
        if disc {
            return Err(format!("{} bytes after NBD_CMD_DISC", b.len() - p));
        }
        let Some(h) = b.get(p..p + REQUEST_LEN) else {
            return Err(format!("a request header cut short at {p}"));
        };
        let r = Request::parse(h.try_into().unwrap()).map_err(|e| e.to_string())?;
        let bad = |why: &str| Err(format!("request {r:?} ({why}) for the export {c:?}"));
        cookie += 1;
        if r.cookie != cookie {
            return bad("its cookie is not the one after the last");
        }
        if r.validate(c.size, false, c.structured).is_err() {
            return bad("the server would refuse it");
        }
        let allowed = match r.kind {
            NBD_CMD_READ => true,
            NBD_CMD_WRITE => r.flags & NBD_CMD_FLAG_FUA == 0 || has(NBD_FLAG_SEND_FUA),
            NBD_CMD_FLUSH => has(NBD_FLAG_SEND_FLUSH),
            NBD_CMD_TRIM => has(NBD_FLAG_SEND_TRIM),
            NBD_CMD_WRITE_ZEROES => has(NBD_FLAG_SEND_WRITE_ZEROES),
            NBD_CMD_BLOCK_STATUS => c.allocation,
            NBD_CMD_DISC => {
                disc = true;
                true
            }
            _ => false,
        };
        if !allowed {
            return bad("the export does not offer it");
        }
        let ranged = !matches!(r.kind, NBD_CMD_FLUSH | NBD_CMD_DISC);
        if ranged && !(r.offset.is_multiple_of(m) && (r.length as u64).is_multiple_of(m)) {
            return bad("not aligned to the minimum block size");
        }
        let sized = matches!(
            r.kind,
            NBD_CMD_READ | NBD_CMD_WRITE | NBD_CMD_TRIM | NBD_CMD_WRITE_ZEROES
        );
        if sized && r.length > c.max_request {
            return bad("longer than the maximum request");
        }
        p += REQUEST_LEN + r.payload_len() as usize;
        if p > b.len() {
            return bad("its payload is cut short");
        }
    }
    Ok(())
}

/// Block status extents: in order, each non-empty and unlike the one
/// before, covering `offset..offset+length` exactly.
fn check_extents(offset: u64, length: u64, x: &[AllocationExtent]) -> Result<(), String> {
    let mut pos = offset;
    for (i, e) in x.iter().enumerate() {
        let merged = i > 0 && (x[i - 1].hole, x[i - 1].zero) == (e.hole, e.zero);
        if e.offset != pos || e.length == 0 || merged {
            return Err(format!(
                "block status of {length} bytes at {offset}: extent {i} is {e:?} (expected at {pos}, non-empty, unlike the one before)"
            ));
        }
        pos += e.length;
    }
    if pos != offset + length {
        return Err(format!(
            "block status of {length} bytes at {offset}: the extents end at {pos}"
        ));
    }
    Ok(())
}

fn ends_connection(r: &Result<Outcome, Error>) -> bool {
    match r {
        Err(Error::Request { errno, .. }) => *errno == NBD_ESHUTDOWN,
        Err(e) => matches!(e.kind(), "io" | "tls" | "protocol" | "closed"),
        Ok(_) => false,
    }
}

/// Checks everything the client promises about one session, whose
/// output was `out`.
fn check(s: &Session, out: &[u8], mode: Mode) -> Result<(), String> {
    check_handshake(&out[..s.handshake_end], mode)?;
    let Ok(c) = &s.connected else {
        return Ok(());
    };
    check_block_size(c)?;
    if mode != Mode::Tls {
        check_requests(&out[s.handshake_end..], c)?;
    }
    let mut before = s.handshake_end;
    let mut ended = false;
    for (call, r, after) in &s.calls {
        let sent = *after != before;
        let closed = matches!(r, Err(Error::Closed { .. }));
        if ended && (sent || (*call != Call::Disconnect && !closed)) {
            return Err(format!(
                "{call:?} after the connection ended: {} ({} bytes sent)",
                short(r),
                after - before
            ));
        }
        if let Err(e) = r {
            if matches!(e.kind(), "out_of_range" | "misaligned" | "unsupported") && sent {
                return Err(format!(
                    "{call:?} failed with {e} but sent {} bytes",
                    after - before
                ));
            }
        }
        if let (Call::BlockStatus { offset, length }, Ok(Outcome::Extents(x))) = (call, r) {
            check_extents(*offset, *length, x)?;
        }
        ended |= ends_connection(r);
        before = *after;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Seeds: sessions recorded from a fake server

/// How the fake server answers NBD_OPT_GO.
#[derive(Debug, Clone, Copy)]
enum Go {
    Ack,
    /// NBD_REP_ERR_UNSUP: the client falls back to NBD_OPT_EXPORT_NAME.
    Unknown,
    Refuse(u32),
}

/// How the fake server answers requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Style {
    /// A read in one data chunk, block status in one chunk.
    Whole,
    /// Reads in data and hole chunks in reverse order, then NONE; block
    /// status answered short (the client asks again); other replies simple.
    Scattered,
    /// Simple replies only.
    Simple,
    /// Errors of every kind: a read half answered, then ERROR_OFFSET;
    /// ERROR, unknown error types, simple errors.
    Failing,
    /// Like `Whole`, but the request with this number gets NBD_ESHUTDOWN.
    Shutdown(u32),
}

/// What the fake server offers and answers.
#[derive(Debug, Clone)]
struct Plan {
    handshake_flags: u16,
    /// The replies to NBD_OPT_STARTTLS and NBD_OPT_STRUCTURED_REPLY.
    starttls: u32,
    structured: u32,
    /// The id of base:allocation (`None`: not offered), and the reply
    /// ending NBD_OPT_SET_META_CONTEXT.
    context: Option<u32>,
    meta_end: u32,
    go: Go,
    size: u64,
    flags: u16,
    block_size: Option<(u32, u32, u32)>,
    /// NBD_INFO_NAME, NBD_INFO_DESCRIPTION, an unknown information type
    /// and another meta context, besides.
    extras: bool,
    style: Style,
}

const FLAGS: u16 = NBD_FLAG_HAS_FLAGS
    | NBD_FLAG_SEND_FLUSH
    | NBD_FLAG_SEND_FUA
    | NBD_FLAG_SEND_TRIM
    | NBD_FLAG_SEND_WRITE_ZEROES
    | NBD_FLAG_SEND_DF
    | NBD_FLAG_CAN_MULTI_CONN;

impl Plan {
    fn new(style: Style) -> Plan {
        Plan {
            handshake_flags: NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES,
            starttls: NBD_REP_ACK,
            structured: NBD_REP_ACK,
            context: Some(1),
            meta_end: NBD_REP_ACK,
            go: Go::Ack,
            size: MIB,
            flags: FLAGS,
            block_size: Some((1, 4096, MAX_PAYLOAD)),
            extras: false,
            style,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Flags,
    Options,
    Transmission,
    Tls,
}

/// The runs of `disk[offset..offset + length]` that are all zeros or not,
/// split at 4 KiB boundaries: `(offset, length, zero)`.
fn runs(disk: &[u8], offset: u64, length: u64) -> Vec<(u64, u64, bool)> {
    let mut out: Vec<(u64, u64, bool)> = Vec::new();
    let end = offset + length;
    let mut pos = offset;
    while pos < end {
        let next = ((pos / 4096 + 1) * 4096).min(end);
        let zero = disk[pos as usize..next as usize].iter().all(|&b| b == 0);
        match out.last_mut() {
            Some(l) if l.2 == zero => l.1 += next - pos,
            _ => out.push((pos, next - pos, zero)),
        }
        pos = next;
    }
    out
}

/// A fake server that answers as its [`Plan`] says, keeping every message
/// it sends, and an export in memory.
struct Responder {
    plan: Plan,
    phase: Phase,
    no_zeroes: bool,
    structured: bool,
    context: Option<u32>,
    /// Client bytes not answered yet.
    input: Vec<u8>,
    pending: Vec<u8>,
    at: usize,
    messages: Vec<Vec<u8>>,
    disk: Vec<u8>,
    requests: u32,
}

impl Responder {
    fn new(plan: Plan) -> Responder {
        let mut disk = vec![0u8; plan.size as usize];
        for (o, n) in [(8192, 8192), (60 * KIB, 4096)] {
            disk[o as usize..(o + n) as usize].copy_from_slice(&pattern(o + 7, n));
        }
        let mut r = Responder {
            plan,
            phase: Phase::Flags,
            no_zeroes: false,
            structured: false,
            context: None,
            input: Vec::new(),
            pending: Vec::new(),
            at: 0,
            messages: Vec::new(),
            disk,
            requests: 0,
        };
        let mut g = NBDMAGIC.to_be_bytes().to_vec();
        g.extend(IHAVEOPT.to_be_bytes());
        g.extend(r.plan.handshake_flags.to_be_bytes());
        r.send(g);
        r
    }

    fn send(&mut self, m: Vec<u8>) {
        self.pending.extend(&m);
        self.messages.push(m);
    }

    fn reply(&mut self, option: u32, kind: u32, data: &[u8]) {
        self.send(reply::option_reply(option, kind, data));
    }

    /// Answers every whole message the client sent.
    fn process(&mut self) {
        loop {
            let have = self.input.len();
            let need = match self.phase {
                Phase::Flags => 4,
                Phase::Options if have >= 16 => 16 + be32(&self.input[12..]) as usize,
                Phase::Options => 16,
                Phase::Transmission if have >= REQUEST_LEN => {
                    let h = self.input[..REQUEST_LEN].try_into().unwrap();
                    let r = Request::parse(h).expect("the client sends request magic");
                    REQUEST_LEN + r.payload_len() as usize
                }
                Phase::Transmission => REQUEST_LEN,
                Phase::Tls => {
                    self.input.clear();
                    return;
                }
            };
            if have < need {
                return;
            }
            let m: Vec<u8> = self.input.drain(..need).collect();
            match self.phase {
                Phase::Flags => {
                    self.no_zeroes = be32(&m) & NBD_FLAG_C_NO_ZEROES != 0;
                    self.phase = Phase::Options;
                }
                Phase::Options => self.option(be32(&m[8..]), &m[16..]),
                _ => {
                    let r = Request::parse(m[..REQUEST_LEN].try_into().unwrap()).unwrap();
                    self.request(r, &m[REQUEST_LEN..]);
                }
            }
        }
    }

    fn option(&mut self, option: u32, data: &[u8]) {
        let p = self.plan.clone();
        match option {
            NBD_OPT_STARTTLS => {
                self.reply(option, p.starttls, &[]);
                if p.starttls == NBD_REP_ACK {
                    self.phase = Phase::Tls;
                }
            }
            NBD_OPT_STRUCTURED_REPLY => {
                let message: &[u8] = if p.structured == NBD_REP_ACK {
                    b""
                } else {
                    b"not here"
                };
                self.reply(option, p.structured, message);
                self.structured = p.structured == NBD_REP_ACK;
            }
            NBD_OPT_SET_META_CONTEXT => {
                MetaRequest::parse(data).expect("the client's meta context request parses");
                if p.meta_end == NBD_REP_ACK {
                    if p.extras {
                        self.reply(
                            option,
                            NBD_REP_META_CONTEXT,
                            &reply::meta_context(99, "x:y"),
                        );
                    }
                    if let Some(id) = p.context {
                        let m = MetaContextReply {
                            id,
                            name: BASE_ALLOCATION.into(),
                        };
                        self.reply(option, NBD_REP_META_CONTEXT, &m.encode());
                    }
                    self.context = p.context;
                }
                self.reply(option, p.meta_end, &[]);
            }
            NBD_OPT_GO => {
                InfoRequest::parse(data).expect("the client's NBD_OPT_GO parses");
                match p.go {
                    Go::Ack => {
                        let info = Info::Export {
                            size: p.size,
                            flags: p.flags,
                        };
                        self.reply(option, NBD_REP_INFO, &info.encode());
                        if p.extras {
                            for i in [
                                Info::Name(EXPORT.into()),
                                Info::Description("a disk in memory".into()),
                                Info::Other {
                                    kind: 77,
                                    data: vec![1, 2, 3],
                                },
                            ] {
                                self.reply(option, NBD_REP_INFO, &i.encode());
                            }
                        }
                        if let Some((min, preferred, max)) = p.block_size {
                            self.reply(
                                option,
                                NBD_REP_INFO,
                                &reply::info_block_size(min, preferred, max),
                            );
                        }
                        self.reply(option, NBD_REP_ACK, &[]);
                        self.phase = Phase::Transmission;
                    }
                    Go::Unknown => self.reply(option, NBD_REP_ERR_UNSUP, b"use EXPORT_NAME"),
                    Go::Refuse(r) => self.reply(option, r, b"no such export"),
                }
            }
            NBD_OPT_EXPORT_NAME => {
                let mut m = p.size.to_be_bytes().to_vec();
                m.extend(p.flags.to_be_bytes());
                if !self.no_zeroes {
                    m.extend([0; 124]);
                }
                self.send(m);
                self.phase = Phase::Transmission;
            }
            _ => self.reply(option, NBD_REP_ERR_UNSUP, b""),
        }
    }

    /// Success without data.
    fn ok(&mut self, cookie: u64) {
        if self.structured && matches!(self.plan.style, Style::Whole | Style::Shutdown(_)) {
            self.send(reply::chunk_done(cookie).to_vec());
        } else {
            self.send(reply::simple(cookie, 0).to_vec());
        }
    }

    fn fail(&mut self, cookie: u64, errno: u32, message: &str) {
        if self.structured {
            self.send(reply::chunk_error(cookie, errno, message));
        } else {
            self.send(reply::simple(cookie, errno).to_vec());
        }
    }

    fn request(&mut self, r: Request, payload: &[u8]) {
        self.requests += 1;
        let cookie = r.cookie;
        let (start, end) = (r.offset as usize, r.offset as usize + r.length as usize);
        let ranged = !matches!(r.kind, NBD_CMD_FLUSH | NBD_CMD_DISC);
        if r.kind == NBD_CMD_DISC {
            return;
        }
        if ranged && end > self.disk.len() {
            return self.fail(cookie, NBD_EINVAL, "out of range");
        }
        if self.plan.style == Style::Shutdown(self.requests) {
            return self.fail(cookie, NBD_ESHUTDOWN, "shutting down");
        }
        if self.plan.style == Style::Failing {
            return self.failing(r);
        }
        match r.kind {
            NBD_CMD_READ => self.read(cookie, r.offset, r.length),
            NBD_CMD_WRITE => {
                self.disk[start..end].copy_from_slice(payload);
                self.ok(cookie);
            }
            NBD_CMD_TRIM | NBD_CMD_WRITE_ZEROES => {
                self.disk[start..end].fill(0);
                self.ok(cookie);
            }
            NBD_CMD_BLOCK_STATUS => self.block_status(cookie, r.offset, r.length),
            _ => self.ok(cookie),
        }
    }

    fn read(&mut self, cookie: u64, offset: u64, length: u32) {
        let data = self.disk[offset as usize..][..length as usize].to_vec();
        match self.plan.style {
            Style::Scattered => {
                for (o, n, zero) in runs(&self.disk, offset, length.into()).into_iter().rev() {
                    if zero {
                        self.send(reply::chunk_hole(cookie, false, o, n as u32));
                    } else {
                        let mut m = reply::chunk_data_header(cookie, false, o, n as u32);
                        m.extend(&self.disk[o as usize..(o + n) as usize]);
                        self.send(m);
                    }
                }
                self.send(reply::chunk_done(cookie).to_vec());
            }
            _ if self.structured => {
                let c = Chunk::OffsetData { offset, data };
                self.send(c.encode(cookie, NBD_REPLY_FLAG_DONE));
            }
            _ => {
                let mut m = reply::simple(cookie, 0).to_vec();
                m.extend(data);
                self.send(m);
            }
        }
    }

    fn block_status(&mut self, cookie: u64, offset: u64, length: u32) {
        let context = self.context.expect("block status only with a context");
        let mut descriptors: Vec<BlockDescriptor> = runs(&self.disk, offset, length.into())
            .into_iter()
            .map(|(_, n, zero)| BlockDescriptor {
                length: n as u32,
                flags: if zero {
                    NBD_STATE_HOLE | NBD_STATE_ZERO
                } else {
                    0
                },
            })
            .collect();
        if self.plan.style == Style::Scattered {
            // Short of the length asked: the client asks for the rest.
            descriptors.truncate(descriptors.len().div_ceil(2));
            let extents: Vec<nbd::Extent> = descriptors
                .iter()
                .map(|d| nbd::Extent {
                    length: d.length.into(),
                    flags: d.flags,
                })
                .collect();
            self.send(reply::chunk_block_status(cookie, false, context, &extents));
            self.send(reply::chunk_done(cookie).to_vec());
        } else {
            let c = Chunk::BlockStatus {
                context,
                descriptors,
            };
            self.send(c.encode(cookie, NBD_REPLY_FLAG_DONE));
        }
    }

    /// Every request fails, each with another kind of error reply.
    fn failing(&mut self, r: Request) {
        let cookie = r.cookie;
        let done = NBD_REPLY_FLAG_DONE;
        match r.kind {
            NBD_CMD_READ => {
                let half = r.length / 2;
                if half > 0 {
                    let c = Chunk::OffsetData {
                        offset: r.offset,
                        data: self.disk[r.offset as usize..][..half as usize].to_vec(),
                    };
                    self.send(c.encode(cookie, 0));
                }
                let e = Chunk::ErrorOffset {
                    error: NBD_EIO,
                    message: "a bad sector".into(),
                    offset: r.offset + half as u64,
                };
                self.send(e.encode(cookie, done));
            }
            NBD_CMD_WRITE => self.fail(cookie, NBD_EPERM, "the export is read-only"),
            NBD_CMD_FLUSH => self.send(reply::simple(cookie, NBD_EIO).to_vec()),
            NBD_CMD_TRIM => {
                let e = Chunk::OtherError {
                    kind: NBD_REPLY_TYPE_FLAG_ERROR | 9,
                    error: NBD_EPERM,
                    message: "read-only".into(),
                    rest: vec![0, 1, 2, 3],
                };
                self.send(e.encode(cookie, done));
            }
            NBD_CMD_WRITE_ZEROES => {
                let e = Chunk::Error {
                    error: NBD_ENOSPC,
                    message: String::new(),
                };
                self.send(e.encode(cookie, done));
            }
            _ => self.fail(cookie, NBD_ENOTSUP, "no block status here"),
        }
    }
}

/// The client's end of a [`Responder`].
struct Fake(Arc<Mutex<Responder>>, Arc<Mutex<Vec<u8>>>);

impl Read for Fake {
    fn read(&mut self, b: &mut [u8]) -> io::Result<usize> {
        let mut r = self.0.lock().unwrap();
        let n = (r.pending.len() - r.at).min(b.len());
        b[..n].copy_from_slice(&r.pending[r.at..r.at + n]);
        r.at += n;
        Ok(n)
    }
}

impl Write for Fake {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.1.lock().unwrap().extend_from_slice(b);
        let mut r = self.0.lock().unwrap();
        r.input.extend_from_slice(b);
        r.process();
        Ok(b.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// How a seed's session must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    /// Every call succeeds or is refused before sending.
    Clean,
    /// Some requests fail with the server's error.
    Failures,
    /// The server shuts down in the middle.
    Shutdown,
    /// The handshake ends with an error of this kind.
    Connect(&'static str),
}

/// A server byte stream, kept as its messages so mutations can work on
/// whole messages, and the options the client connects with.
#[derive(Clone)]
struct Seed {
    name: String,
    mode: Mode,
    messages: Vec<Vec<u8>>,
}

/// Runs the session against a [`Responder`] following `plan`; what it
/// sent is the seed. The client must read back what the fake export
/// holds, and the session end as `expect` says.
fn record(name: &str, mode: Mode, plan: Plan, expect: Expect) -> Seed {
    let responder = Arc::new(Mutex::new(Responder::new(plan)));
    let out = Arc::new(Mutex::new(Vec::new()));
    let fake = Fake(responder.clone(), out.clone());
    let disk = responder.clone();
    let s = session(fake, &out, mode, |call, r| {
        let responder = disk.lock().unwrap();
        let d = &responder.disk;
        match (call, r) {
            (Call::Read { offset, length }, Ok(Outcome::Data(b))) => assert!(
                b[..] == d[offset as usize..(offset + length) as usize],
                "seed {name}: the read of {length} bytes at {offset} differs from the export"
            ),
            (Call::BlockStatus { offset, length }, Ok(Outcome::Extents(x))) => {
                let want: Vec<AllocationExtent> = runs(d, offset, length)
                    .into_iter()
                    .map(|(offset, length, zero)| AllocationExtent {
                        offset,
                        length,
                        hole: zero,
                        zero,
                    })
                    .collect();
                assert_eq!(x, &want, "seed {name}: block status at {offset}+{length}");
            }
            _ => {}
        }
    });
    let kinds: Vec<&str> = s
        .calls
        .iter()
        .filter_map(|(_, r, _)| r.as_ref().err().map(Error::kind))
        .collect();
    let ok = match (&s.connected, expect) {
        (Err(e), Expect::Connect(kind)) => e.kind() == kind,
        (Ok(_), Expect::Clean) => kinds
            .iter()
            .all(|k| matches!(*k, "out_of_range" | "misaligned" | "unsupported")),
        (Ok(_), Expect::Failures) => {
            kinds.contains(&"request") && !kinds.iter().any(|k| matches!(*k, "io" | "protocol"))
        }
        (Ok(_), Expect::Shutdown) => kinds.contains(&"closed") && !kinds.contains(&"protocol"),
        _ => false,
    };
    let errors: Vec<String> = s
        .calls
        .iter()
        .filter_map(|(c, r, _)| r.as_ref().err().map(|e| format!("{c:?}: {e}")))
        .collect();
    assert!(
        ok,
        "seed {name}: expected {expect:?}, the handshake gave {:?}, the calls {errors:#?}",
        s.connected.as_ref().map(|_| ())
    );
    check(&s, &out.lock().unwrap(), mode)
        .unwrap_or_else(|e| panic!("seed {name}: the client breaks a promise: {e}"));
    let messages = std::mem::take(&mut responder.lock().unwrap().messages);
    Seed {
        name: name.into(),
        mode,
        messages,
    }
}

fn seeds() -> Vec<Seed> {
    use Style::*;
    let p = Plan::new;
    vec![
        record(
            "structured",
            Mode::Default,
            Plan {
                extras: true,
                ..p(Whole)
            },
            Expect::Clean,
        ),
        record(
            "scattered",
            Mode::Default,
            Plan {
                extras: true,
                context: Some(7),
                size: MIB + 512,
                block_size: Some((512, 4096, 8192)),
                ..p(Scattered)
            },
            Expect::Clean,
        ),
        record(
            "simple",
            Mode::Default,
            Plan {
                structured: NBD_REP_ERR_UNSUP,
                size: 256 * KIB,
                flags: FLAGS & !NBD_FLAG_SEND_FUA & !NBD_FLAG_SEND_DF,
                block_size: None,
                ..p(Simple)
            },
            Expect::Clean,
        ),
        record(
            "structured-off",
            Mode::Simple,
            Plan {
                block_size: Some((4096, 4096, 16384)),
                ..p(Simple)
            },
            Expect::Clean,
        ),
        record(
            "export-name",
            Mode::Default,
            Plan {
                handshake_flags: NBD_FLAG_FIXED_NEWSTYLE,
                context: None,
                meta_end: NBD_REP_ERR_UNSUP,
                go: Go::Unknown,
                ..p(Whole)
            },
            Expect::Clean,
        ),
        record(
            "no-context",
            Mode::NoContext,
            Plan {
                context: None,
                ..p(Whole)
            },
            Expect::Clean,
        ),
        record(
            "failing",
            Mode::Default,
            Plan {
                flags: FLAGS | NBD_FLAG_READ_ONLY,
                block_size: Some((4096, 4096, 65536)),
                ..p(Failing)
            },
            Expect::Failures,
        ),
        record("shutdown", Mode::Default, p(Shutdown(4)), Expect::Shutdown),
        record(
            "refused",
            Mode::Default,
            Plan {
                go: Go::Refuse(NBD_REP_ERR_UNKNOWN),
                ..p(Whole)
            },
            Expect::Connect("refused"),
        ),
        record(
            "tls-required",
            Mode::Default,
            Plan {
                structured: NBD_REP_ERR_TLS_REQD,
                ..p(Whole)
            },
            Expect::Connect("refused"),
        ),
        record("starttls", Mode::Tls, p(Whole), Expect::Connect("tls")),
    ]
}

// ---------------------------------------------------------------------------
// Mutation

/// Values that sit on a boundary of some check of the client.
const INTERESTING: &[u64] = &[
    0,
    1,
    2,
    3,
    4,
    5,
    7,
    8,
    9,
    11,
    12,
    13,
    14,
    16,
    20,
    77,
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
    0x8001,
    0x8002,
    0xffff,
    0x1_0000,
    0x1_0001,
    0x10_0000,
    MIB + 512,
    MAX_PAYLOAD as u64,
    MAX_PAYLOAD as u64 + 1,
    MAX_PAYLOAD as u64 + 64,
    MAX_PAYLOAD as u64 + 65,
    0x7fff_ffff,
    0x8000_0000,
    0x8000_0001,
    0x8000_0006,
    0xffff_ffff,
    1 << 32,
    NBD_SIMPLE_REPLY_MAGIC as u64,
    NBD_STRUCTURED_REPLY_MAGIC as u64,
    REPLY_MAGIC,
    NBD_OLDSTYLE_MAGIC,
    IHAVEOPT,
    i64::MAX as u64,
    u64::MAX,
];

struct StreamMutator {
    rng: SmallRng,
}

impl StreamMutator {
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

    /// An offset in `m`: mostly in the header and the first fields of
    /// the payload (the first 32 bytes).
    fn offset(&mut self, len: usize) -> usize {
        if self.rng.gen_bool(0.7) {
            self.rng.gen_range(0..len.min(32))
        } else {
            self.rng.gen_range(0..len)
        }
    }

    fn bytes(&mut self, m: &mut [u8]) {
        if m.is_empty() {
            return;
        }
        let len = m.len();
        // Option replies and chunks: magic, …, length at 16..20, payload.
        let framed = len >= 20
            && (m[..8] == REPLY_MAGIC.to_be_bytes()
                || m[..4] == NBD_STRUCTURED_REPLY_MAGIC.to_be_bytes());
        let cookie = len >= 16
            && (m[..4] == NBD_STRUCTURED_REPLY_MAGIC.to_be_bytes()
                || m[..4] == NBD_SIMPLE_REPLY_MAGIC.to_be_bytes());
        match self.rng.gen_range(0..11) {
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
            8 if framed => {
                // The length off by a little from the payload's.
                let delta = self.rng.gen_range(-9i64..=9);
                let l = ((len - 20) as i64 + delta).max(0) as u32;
                m[16..20].copy_from_slice(&l.to_be_bytes());
            }
            9 if cookie => {
                let c = be64(&m[8..]);
                let c = if self.rng.gen_bool(0.5) {
                    c.wrapping_add(1)
                } else {
                    c.wrapping_sub(1)
                };
                m[8..16].copy_from_slice(&c.to_be_bytes());
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

/// How far inputs got.
#[derive(Debug, Default)]
struct Coverage {
    inputs: u64,
    connected: u64,
    structured: u64,
    allocation: u64,
    refused: u64,
    /// Calls that succeeded after sending a request.
    calls_ok: u64,
    reads_ok: u64,
    block_status_ok: u64,
    request_errors: u64,
    /// Errors by kind, protocol violations by variant.
    errors: BTreeMap<String, u64>,
    option_headers: u64,
    infos: u64,
    meta_contexts: u64,
    listings: u64,
    simple_replies: u64,
    chunk_headers: u64,
    chunks: u64,
}

fn variant(d: &impl std::fmt::Debug) -> String {
    format!("{d:?}")
        .chars()
        .take_while(|c| c.is_alphanumeric())
        .collect()
}

impl Coverage {
    fn error(&mut self, e: &Error) {
        let name = match e {
            Error::Protocol {
                violation: Violation::Malformed(m),
                ..
            } => format!("protocol:{}", variant(m)),
            Error::Protocol { violation, .. } => format!("protocol:{}", variant(violation)),
            e => e.kind().to_string(),
        };
        *self.errors.entry(name).or_default() += 1;
    }

    fn session(&mut self, s: &Session) {
        match &s.connected {
            Ok(c) => {
                self.connected += 1;
                self.structured += c.structured as u64;
                self.allocation += c.allocation as u64;
            }
            Err(e) => {
                self.refused += (e.kind() == "refused") as u64;
                self.error(e);
            }
        }
        for (call, r, _) in &s.calls {
            match r {
                Ok(o) => {
                    self.calls_ok += 1;
                    self.reads_ok += matches!(o, Outcome::Data(d) if !d.is_empty()) as u64;
                    self.block_status_ok += matches!(call, Call::BlockStatus { .. }) as u64;
                }
                Err(e) => {
                    self.request_errors += (e.kind() == "request") as u64;
                    self.error(e);
                }
            }
        }
    }
}

fn oracle(step: &'static str, detail: String) -> Finding {
    Finding {
        kind: FindingKind::Oracle,
        step,
        detail,
    }
}

/// A connection to a server that sends `input`, and the session's calls.
fn run_session(input: &Arc<Vec<u8>>, mode: Mode, cov: &mut Coverage) -> Result<(), Finding> {
    let out = Arc::new(Mutex::new(Vec::new()));
    let peer = Peer {
        input: input.clone(),
        at: 0,
        out: out.clone(),
    };
    let s = guarded("client session", || session(peer, &out, mode, |_, _| {}))?;
    cov.session(&s);
    let out = out.lock().unwrap_or_else(|e| e.into_inner());
    check(&s, &out, mode).map_err(|e| oracle("client session", e))
}

/// Whether a parsed text field had bytes that were not UTF-8 (so the
/// value encodes to other bytes).
fn lossy(s: &str) -> bool {
    s.contains(char::REPLACEMENT_CHARACTER)
}

/// At most 200 characters of `x`'s debug form (findings name values that
/// may hold megabytes).
fn short(x: &impl std::fmt::Debug) -> String {
    let s = format!("{x:?}");
    match s.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s,
    }
}

/// `parse(b) = Ok(x)`: `x` encodes to `b` and to bytes that parse back to
/// `x`; when its text was not UTF-8 (replaced, so longer and maybe cut
/// when encoded), to bytes that parse.
fn round_trip<T: std::fmt::Debug + PartialEq>(
    what: &str,
    b: &[u8],
    x: &T,
    encoded: &[u8],
    text_lossy: bool,
    again: Result<T, reply::ReplyError>,
) -> Result<(), String> {
    let same = if text_lossy {
        again.is_ok()
    } else {
        encoded == b && again.as_ref() == Ok(x)
    };
    if !same {
        return Err(format!(
            "{what}: {} parses to {}, which encodes to {} ({} bytes), which parse to {}",
            short(&b),
            short(x),
            short(&encoded),
            encoded.len(),
            short(&again)
        ));
    }
    Ok(())
}

/// Bytes of a message given to every parser (its own sees it whole).
const PARSE_LIMIT: usize = 1024;

const CHUNK_KINDS: &[u16] = &[
    NBD_REPLY_TYPE_NONE,
    NBD_REPLY_TYPE_OFFSET_DATA,
    NBD_REPLY_TYPE_OFFSET_HOLE,
    NBD_REPLY_TYPE_BLOCK_STATUS,
    NBD_REPLY_TYPE_ERROR,
    NBD_REPLY_TYPE_ERROR_OFFSET,
    NBD_REPLY_TYPE_FLAG_ERROR | 9,
    3,
];

fn check_chunk(kind: u16, p: &[u8], cov: &mut Coverage) -> Result<(), String> {
    let Ok(c) = Chunk::parse(kind, p) else {
        return Ok(());
    };
    cov.chunks += 1;
    let rules = c.kind() == kind
        && match &c {
            Chunk::None => p.is_empty(),
            Chunk::OffsetData { data, .. } => !data.is_empty(),
            Chunk::OffsetHole { length, .. } => *length != 0,
            Chunk::BlockStatus { descriptors, .. } => {
                !descriptors.is_empty() && descriptors.iter().all(|d| d.length != 0)
            }
            Chunk::Error { error, .. } | Chunk::ErrorOffset { error, .. } => *error != 0,
            Chunk::OtherError { kind: k, error, .. } => {
                *error != 0
                    && k & NBD_REPLY_TYPE_FLAG_ERROR != 0
                    && !matches!(*k, NBD_REPLY_TYPE_ERROR | NBD_REPLY_TYPE_ERROR_OFFSET)
            }
        };
    if !rules {
        return Err(format!(
            "Chunk::parse({kind:#06x}, {}) accepted {}",
            short(&p),
            short(&c)
        ));
    }
    let text_lossy = match &c {
        Chunk::Error { message, .. }
        | Chunk::ErrorOffset { message, .. }
        | Chunk::OtherError { message, .. } => lossy(message),
        _ => false,
    };
    let e = c.encode_payload();
    round_trip("Chunk", p, &c, &e, text_lossy, Chunk::parse(kind, &e))
}

/// Runs every parser of `nbd::reply` on `m`, whole and after a 20-byte
/// header; an `Err` names the broken oracle.
fn parse_checks(m: &[u8], cov: &mut Coverage) -> Result<(), String> {
    if let Some(h) = m.first_chunk::<{ OptionReplyHeader::LEN }>() {
        if let Ok(x) = OptionReplyHeader::parse(h) {
            cov.option_headers += 1;
            round_trip(
                "OptionReplyHeader",
                h,
                &x,
                &x.encode(),
                false,
                OptionReplyHeader::parse(&x.encode()),
            )?;
        }
        if let Ok(x) = ChunkHeader::parse(h) {
            cov.chunk_headers += 1;
            round_trip(
                "ChunkHeader",
                h,
                &x,
                &x.encode(),
                false,
                ChunkHeader::parse(&x.encode()),
            )?;
            if let Ok(n) = x.data_length() {
                if x.length < 9 || n != x.length - 8 {
                    return Err(format!("{x:?} has {n} data bytes"));
                }
            }
            if let Some(p) = m.get(ChunkHeader::LEN..) {
                check_chunk(x.kind, p, cov)?;
            }
        }
    }
    if let Some(h) = m.first_chunk::<{ SimpleReply::LEN }>() {
        if let Ok(x) = SimpleReply::parse(h) {
            cov.simple_replies += 1;
            round_trip(
                "SimpleReply",
                h,
                &x,
                &x.encode(),
                false,
                SimpleReply::parse(&x.encode()),
            )?;
        }
    }
    // Every parser sees the start of a long message (a read's data
    // chunk, say): the rest is bytes to all of them.
    let m = &m[..m.len().min(PARSE_LIMIT)];
    for data in [m, m.get(OptionReplyHeader::LEN..).unwrap_or(&[])] {
        if let Ok(i) = Info::parse(data) {
            cov.infos += 1;
            let sized = match &i {
                Info::Export { .. } => data.len() == 12,
                Info::BlockSize(_) => data.len() == 14,
                _ => true,
            };
            if !sized {
                return Err(format!("Info::parse({}) accepted {i:?}", short(&data)));
            }
            let text_lossy = match &i {
                Info::Name(s) | Info::Description(s) => lossy(s),
                _ => false,
            };
            round_trip(
                "Info",
                data,
                &i,
                &i.encode(),
                text_lossy,
                Info::parse(&i.encode()),
            )?;
        }
        if let Ok(x) = MetaContextReply::parse(data) {
            cov.meta_contexts += 1;
            let e = x.encode();
            round_trip(
                "MetaContextReply",
                data,
                &x,
                &e,
                lossy(&x.name),
                MetaContextReply::parse(&e),
            )?;
        }
        if let Ok(x) = ExportListing::parse(data) {
            cov.listings += 1;
            let e = x.encode();
            let text_lossy = lossy(&x.name) || lossy(&x.description);
            round_trip(
                "ExportListing",
                data,
                &x,
                &e,
                text_lossy,
                ExportListing::parse(&e),
            )?;
        }
        for &kind in CHUNK_KINDS {
            check_chunk(kind, data, cov)?;
        }
    }
    Ok(())
}

/// Runs the parsers on each message of a mutant.
fn run_parsers(msgs: &[Vec<u8>], cov: &mut Coverage) -> Result<(), Failure> {
    for m in msgs {
        let failure = |finding| Failure {
            finding,
            bytes: Some(m.clone()),
        };
        guarded("parsers", || parse_checks(m, cov))
            .map_err(failure)?
            .map_err(|e| failure(oracle("parsers", e)))?;
    }
    Ok(())
}

fn run_one(
    input: &Arc<Vec<u8>>,
    msgs: &[Vec<u8>],
    mode: Mode,
    cov: &mut Coverage,
) -> Result<(), Failure> {
    cov.inputs += 1;
    heap_bounded(ALLOC_LIMIT, input.len(), || {
        run_session(input, mode, cov)?;
        run_parsers(msgs, cov)
    })
}

// ---------------------------------------------------------------------------
// The loop

/// Server streams through the client, and each of their messages through
/// the parsers.
struct NbdClient {
    all: Vec<Seed>,
    m: StreamMutator,
    cov: Coverage,
    /// The messages of the last mutant.
    msgs: Vec<Vec<u8>>,
}

impl Target for NbdClient {
    const WHAT: &'static str = "the NBD client with ";
    const EXT: &'static str = "nbdc";

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
        run_one(input, &self.msgs, self.all[seed].mode, &mut self.cov)
    }

    fn print_reached(&self) {
        let c = &self.cov;
        println!(
            "reached: inputs {}, connected {}, structured {}, base allocation {}, refused {}, calls ok {}, reads ok {}, block status ok {}, request errors {}, option headers {}, infos {}, meta contexts {}, listings {}, simple replies {}, chunk headers {}, chunks {}",
            c.inputs,
            c.connected,
            c.structured,
            c.allocation,
            c.refused,
            c.calls_ok,
            c.reads_ok,
            c.block_status_ok,
            c.request_errors,
            c.option_headers,
            c.infos,
            c.meta_contexts,
            c.listings,
            c.simple_replies,
            c.chunk_headers,
            c.chunks
        );
        let mut errs: Vec<_> = c.errors.iter().collect();
        errs.sort_by_key(|(_, n)| std::cmp::Reverse(**n));
        let errs: Vec<String> = errs.iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!("errors: {}", errs.join(", "));
    }
}

fn main() {
    let args = Args::parse();
    refpoint_fuzz::install_panic_capture();
    let mut all = seeds();
    if let Some(p) = &args.reproduce {
        let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let mode = harness::seed_of(p, &all, |s| &s.name).map_or(Mode::Default, |s| s.mode);
        let mut cov = Coverage::default();
        let input = Arc::new(bytes);
        let r = run_one(&input, std::slice::from_ref(&input), mode, &mut cov);
        harness::print_reproduced(r, || format!("(mode {mode:?}); {cov:?}"));
        return;
    }
    for f in &args.files {
        match std::fs::read(f) {
            Ok(b) => all.push(Seed {
                name: f.display().to_string(),
                mode: Mode::Default,
                messages: vec![b],
            }),
            Err(e) => eprintln!("skipping {}: {e}", f.display()),
        }
    }
    harness::fuzz(
        &args.run,
        Duration::from_secs(args.timeout),
        |rng: SmallRng| NbdClient {
            all,
            m: StreamMutator { rng },
            cov: Coverage::default(),
            msgs: Vec::new(),
        },
    );
}
