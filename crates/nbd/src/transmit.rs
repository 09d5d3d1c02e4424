//! The transmission phase. One task per connection reads requests into a
//! buffer and parses as many as arrived; small plain writes (no FUA) run inline
//! (they only reach the page cache), everything else goes to the
//! connection's I/O threads, so reads, flushes and block-status queries
//! run in parallel (up to [`MAX_IN_FLIGHT`]). The same task writes every
//! reply, whole, and flushes the socket once per batch.
//!
//! ```text
//! socket ─► buffer ─► parse ─┬─ WRITE (no FUA), refusals: run inline ─┐
//!                            └─ other requests ─► I/O threads ────────┤ reply
//!                                                   (WORKERS)          ▼
//! socket ◄──────────────── one buffered write + flush per batch ◄─────┘
//! ```
//!
//! A random 4 KiB writer costs no thread hand-off at all; a hand-off costs
//! more than the write itself.

use crate::device::{DeviceError, DeviceResult, Extent};
use crate::negotiate::Session;
use crate::proto::*;
use crate::reply;
use crate::request::Request;
use crate::server::Stream;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter, WriteHalf};
use tokio::sync::{mpsc, watch};

/// Requests one connection may have on its I/O threads; more wait to be read.
pub const MAX_IN_FLIGHT: u32 = 32;
/// I/O threads per connection: reads proceed while another request waits
/// on the device.
const WORKERS: usize = 2;
/// Holes shorter than this are sent as data (a chunk header costs more).
const MIN_HOLE: u64 = 4096;
/// Write payloads from this size on are read into their own buffer.
const DIRECT_PAYLOAD: usize = 64 << 10;
/// How much the input buffer asks the socket for at a time.
const READ_CHUNK: usize = 256 << 10;

/// A request for the I/O threads: validated (or refused with an error).
struct Work {
    req: Request,
    verdict: Result<(), u32>,
    payload: Vec<u8>,
}

type Reply = Vec<Vec<u8>>;

/// Writes up to this size run inline; larger ones gain more from
/// overlapping with the next requests than a hand-off costs.
const INLINE_WRITE: u32 = 256 << 10;

/// Whether a request runs on the reading task: cheap and never waiting on
/// the disk (a refusal, or a small write that only reaches the page cache).
fn inline(w: &Work) -> bool {
    w.verdict.is_err()
        || (w.req.kind == NBD_CMD_WRITE
            && w.req.flags & NBD_CMD_FLAG_FUA == 0
            && w.req.length <= INLINE_WRITE)
}

/// What the parser found in the input buffer.
enum Parsed {
    Request(Work),
    /// Not a whole request yet.
    NeedMore,
    /// A large write whose payload is only partly here: the first `have`
    /// bytes are in `payload`, the rest is read straight into it.
    Partial(Work, usize),
    /// Disconnect (NBD_CMD_DISC or a broken framing).
    Close,
}

/// The connection's input: bytes read, the parse position, and how much
/// of a refused write's payload is still to be skipped.
struct Input {
    buf: Vec<u8>,
    pos: usize,
    skip: u64,
}

impl Input {
    fn parse(&mut self, s: &Session) -> Parsed {
        if self.skip > 0 {
            let n = (self.skip as usize).min(self.buf.len() - self.pos);
            self.pos += n;
            self.skip -= n as u64;
            if self.skip > 0 {
                return Parsed::NeedMore;
            }
        }
        let avail = &self.buf[self.pos..];
        if avail.len() < REQUEST_LEN {
            return Parsed::NeedMore;
        }
        let req = match Request::parse(avail[..REQUEST_LEN].try_into().unwrap()) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(export = %s.export, "closing connection: {e}");
                return Parsed::Close;
            }
        };
        let dev = &s.device;
        let verdict = req.validate(dev.size(), dev.read_only(), s.structured);
        let plen = req.payload_len() as usize;
        if verdict.is_err() && plen > 0 {
            // A refused write's payload is skipped, not buffered (it may
            // claim 4 GiB), so the stream stays in sync.
            self.pos += REQUEST_LEN;
            self.skip = plen as u64;
            return Parsed::Request(Work {
                req,
                verdict,
                payload: Vec::new(),
            });
        }
        if avail.len() < REQUEST_LEN + plen {
            if plen < DIRECT_PAYLOAD {
                self.buf.reserve(REQUEST_LEN + plen - avail.len());
                return Parsed::NeedMore;
            }
            // Large: read the rest straight into the payload instead of
            // growing and copying the input buffer.
            let have = avail.len() - REQUEST_LEN;
            let mut payload = vec![0u8; plen];
            payload[..have].copy_from_slice(&avail[REQUEST_LEN..]);
            self.pos = self.buf.len();
            return Parsed::Partial(
                Work {
                    req,
                    verdict,
                    payload,
                },
                have,
            );
        }
        let payload = avail[REQUEST_LEN..REQUEST_LEN + plen].to_vec();
        self.pos += REQUEST_LEN + plen;
        if req.kind == NBD_CMD_DISC {
            return Parsed::Close;
        }
        Parsed::Request(Work {
            req,
            verdict,
            payload,
        })
    }

    /// Drops parsed bytes once they are the bigger part of the buffer.
    fn compact(&mut self) {
        if self.pos > 0 && self.pos * 2 >= self.buf.len() {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
    }
}

/// Serves requests until the client disconnects, sends NBD_CMD_DISC, breaks
/// the protocol, or the server shuts down; in-flight requests finish first.
pub(crate) async fn transmit(
    stream: Box<dyn Stream>,
    session: Session,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let (mut r, w) = tokio::io::split(stream);
    let mut w = BufWriter::with_capacity(256 << 10, w);
    let session = Arc::new(session);
    let (work_tx, work_rx) = crossbeam_channel::unbounded::<Work>();
    let (reply_tx, mut reply_rx) = mpsc::unbounded_channel::<Reply>();
    let mut workers = Vec::with_capacity(WORKERS);
    for _ in 0..WORKERS {
        let (rx, tx, s) = (work_rx.clone(), reply_tx.clone(), session.clone());
        workers.push(
            std::thread::Builder::new()
                .name("nbd-io".into())
                .spawn(move || {
                    for w in rx {
                        // A reply that cannot be sent (the connection is
                        // gone) still had to be executed: writes stand.
                        let _ = tx.send(run(&s, w));
                    }
                })?,
        );
    }
    drop((work_rx, reply_tx));

    let mut input = Input {
        buf: Vec::with_capacity(READ_CHUNK),
        pos: 0,
        skip: 0,
    };
    let mut in_flight = 0u32;
    let mut unflushed = false;
    // `Some` once the connection is to end: how it ended.
    let mut end: Option<std::io::Result<()>> = None;
    let mut writable = true;
    while end.is_none() {
        // Everything already received: run or dispatch.
        while in_flight < MAX_IN_FLIGHT {
            let work = match input.parse(&session) {
                Parsed::NeedMore => break,
                Parsed::Close => {
                    end = Some(Ok(()));
                    break;
                }
                Parsed::Request(work) => work,
                Parsed::Partial(mut work, have) => {
                    let read = tokio::select! {
                        r = r.read_exact(&mut work.payload[have..]) => r,
                        _ = async { drop(shutdown.wait_for(|s| *s).await) } => {
                            end = Some(Ok(()));
                            break;
                        }
                    };
                    if let Err(e) = read {
                        end = Some(if e.kind() == std::io::ErrorKind::UnexpectedEof {
                            Ok(())
                        } else {
                            Err(e)
                        });
                        break;
                    }
                    work
                }
            };
            if inline(&work) {
                let reply = run(&session, work);
                writable = writable && write_reply(&mut w, &reply).await;
                unflushed = true;
            } else {
                in_flight += 1;
                let _ = work_tx.send(work);
            }
        }
        input.compact();
        if end.is_some() {
            break;
        }
        if unflushed && reply_rx.is_empty() {
            writable = writable && w.flush().await.is_ok();
            unflushed = false;
        }
        if !writable {
            // The client stopped reading: nothing more it sends is useful.
            end = Some(Ok(()));
            break;
        }
        input.buf.reserve(READ_CHUNK);
        tokio::select! {
            biased;
            _ = async { drop(shutdown.wait_for(|s| *s).await) } => end = Some(Ok(())),
            Some(reply) = reply_rx.recv(), if in_flight > 0 => {
                in_flight -= 1;
                writable = write_reply(&mut w, &reply).await;
                unflushed = true;
            }
            n = r.read_buf(&mut input.buf), if in_flight < MAX_IN_FLIGHT => match n {
                Ok(0) => end = Some(Ok(())),
                Ok(_) => {}
                Err(e) => end = Some(Err(e)),
            },
        }
    }
    // In-flight requests finish; their replies still go out if they can.
    drop(work_tx);
    while in_flight > 0 {
        let Some(reply) = reply_rx.recv().await else {
            break;
        };
        in_flight -= 1;
        writable = writable && write_reply(&mut w, &reply).await;
    }
    if writable {
        let _ = w.flush().await;
    }
    let _ = w.shutdown().await;
    let _ =
        tokio::task::spawn_blocking(move || workers.into_iter().for_each(|t| drop(t.join()))).await;
    end.unwrap_or(Ok(()))
}

/// Writes one reply whole (into the buffer); false once the socket failed.
async fn write_reply(w: &mut BufWriter<WriteHalf<Box<dyn Stream>>>, parts: &Reply) -> bool {
    for p in parts {
        if w.write_all(p).await.is_err() {
            return false;
        }
    }
    true
}

/// Executes one request; a panicking device answers EIO.
fn run(s: &Session, w: Work) -> Reply {
    let cookie = w.req.cookie;
    match w.verdict {
        Err(NBD_EPERM) if s.device.read_only() => {
            error_reply(s, cookie, NBD_EPERM, &s.device.read_only_reason())
        }
        Err(errno) => error_reply(s, cookie, errno, "request refused"),
        Ok(()) => std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            execute(s, w.req, w.payload)
        }))
        .unwrap_or_else(|_| error_reply(s, cookie, NBD_EIO, "request failed")),
    }
}

/// Runs one validated request; returns the reply's parts, in order.
fn execute(s: &Session, req: Request, payload: Vec<u8>) -> Vec<Vec<u8>> {
    let dev = &*s.device;
    let fua = req.flags & NBD_CMD_FLAG_FUA != 0;
    let len = req.length as u64;
    let done = |r: DeviceResult<()>| match r {
        Ok(()) => vec![ok_reply(s, req.cookie)],
        Err(e) => error_reply(s, req.cookie, e.errno, &e.message),
    };
    let then_flush = |r: DeviceResult<()>| r.and_then(|()| if fua { dev.flush() } else { Ok(()) });
    match req.kind {
        NBD_CMD_READ => read(s, req),
        NBD_CMD_WRITE => done(dev.write(req.offset, &payload, fua)),
        NBD_CMD_FLUSH => done(dev.flush()),
        NBD_CMD_TRIM => done(then_flush(dev.trim(req.offset, len))),
        NBD_CMD_WRITE_ZEROES => {
            let may_trim = req.flags & NBD_CMD_FLAG_NO_HOLE == 0;
            done(then_flush(dev.write_zeroes(req.offset, len, may_trim)))
        }
        NBD_CMD_CACHE => done(dev.cache(req.offset, len)),
        NBD_CMD_BLOCK_STATUS => block_status(s, req),
        _ => error_reply(s, req.cookie, NBD_EINVAL, "unknown command"),
    }
}

fn ok_reply(s: &Session, cookie: u64) -> Vec<u8> {
    if s.structured {
        reply::chunk_done(cookie).to_vec()
    } else {
        reply::simple(cookie, 0).to_vec()
    }
}

fn error_reply(s: &Session, cookie: u64, errno: u32, message: &str) -> Vec<Vec<u8>> {
    if s.structured {
        vec![reply::chunk_error(cookie, errno, message)]
    } else {
        vec![reply::simple(cookie, errno).to_vec()]
    }
}

fn read(s: &Session, req: Request) -> Vec<Vec<u8>> {
    let dev = &*s.device;
    let (offset, len) = (req.offset, req.length as u64);
    if !s.structured {
        let mut buf = vec![0u8; len as usize];
        return match dev.read(offset, &mut buf) {
            Ok(()) => vec![reply::simple(req.cookie, 0).to_vec(), buf],
            Err(e) => error_reply(s, req.cookie, e.errno, &e.message),
        };
    }
    // Structured: holes as OFFSET_HOLE chunks unless the client asked
    // for one chunk (DF).
    let runs = if req.flags & NBD_CMD_FLAG_DF != 0 {
        vec![(offset, len, false)]
    } else {
        match gather(offset, len, false, |o, l| dev.allocation(o, l)) {
            Ok(ext) => data_and_holes(offset, &ext),
            Err(e) => return error_reply(s, req.cookie, e.errno, &e.message),
        }
    };
    let mut parts = Vec::new();
    let last = runs.len() - 1;
    for (i, (o, l, hole)) in runs.into_iter().enumerate() {
        if hole {
            parts.push(reply::chunk_hole(req.cookie, i == last, o, l as u32));
            continue;
        }
        let mut buf = vec![0u8; l as usize];
        if let Err(e) = dev.read(o, &mut buf) {
            parts.push(reply::chunk_error(req.cookie, e.errno, &e.message));
            return parts;
        }
        parts.push(reply::chunk_data_header(req.cookie, i == last, o, l as u32));
        parts.push(buf);
    }
    parts
}

/// Turns allocation extents into `(offset, length, is_hole)` runs, merging
/// short holes into the data around them.
fn data_and_holes(offset: u64, extents: &[Extent]) -> Vec<(u64, u64, bool)> {
    let mut runs: Vec<(u64, u64, bool)> = Vec::new();
    let mut pos = offset;
    for e in extents {
        let hole = e.flags & NBD_STATE_ZERO != 0 && e.length >= MIN_HOLE;
        match runs.last_mut() {
            Some(last) if last.2 == hole => last.1 += e.length,
            _ => runs.push((pos, e.length, hole)),
        }
        pos += e.length;
    }
    runs
}

/// Asks `f` for extents until `offset..offset+len` is covered (or one
/// extent, with `one`), clips to the range and merges equal neighbours.
pub(crate) fn gather(
    offset: u64,
    len: u64,
    one: bool,
    mut f: impl FnMut(u64, u64) -> DeviceResult<Vec<Extent>>,
) -> DeviceResult<Vec<Extent>> {
    let end = offset + len;
    let mut out: Vec<Extent> = Vec::new();
    let mut pos = offset;
    while pos < end {
        let got = f(pos, end - pos)?;
        let before = pos;
        for e in got {
            if pos >= end {
                break;
            }
            let length = e.length.min(end - pos);
            if length == 0 {
                continue;
            }
            match out.last_mut() {
                Some(last) if last.flags == e.flags => last.length += length,
                _ => out.push(Extent {
                    length,
                    flags: e.flags,
                }),
            }
            pos += length;
        }
        if pos == before {
            return Err(DeviceError::io(format!(
                "the device reported no extent at offset {pos}"
            )));
        }
        if one {
            break;
        }
    }
    if one {
        out.truncate(1);
    }
    Ok(out)
}

fn block_status(s: &Session, req: Request) -> Vec<Vec<u8>> {
    if !s.structured || s.contexts.is_empty() {
        return error_reply(s, req.cookie, NBD_EINVAL, "no meta context was negotiated");
    }
    let dev = &*s.device;
    let one = req.flags & NBD_CMD_FLAG_REQ_ONE != 0;
    let mut parts = Vec::new();
    let last = s.contexts.len() - 1;
    for (i, name) in s.contexts.iter().enumerate() {
        let r = if name == BASE_ALLOCATION {
            gather(req.offset, req.length as u64, one, |o, l| {
                dev.allocation(o, l)
            })
        } else {
            gather(req.offset, req.length as u64, one, |o, l| {
                dev.meta_extents(name, o, l)
            })
        };
        match r {
            Ok(ext) => parts.push(reply::chunk_block_status(
                req.cookie,
                i == last,
                i as u32 + 1,
                &ext,
            )),
            Err(e) => {
                parts.push(reply::chunk_error(req.cookie, e.errno, &e.message));
                return parts;
            }
        }
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gather_clips_merges_and_detects_stalls() {
        let ext = |v: &[(u64, u32)]| {
            v.iter()
                .map(|&(length, flags)| Extent { length, flags })
                .collect::<Vec<_>>()
        };
        // Device answers in pieces of at most 100 bytes, alternating flags.
        let r = gather(0, 250, false, |o, l| {
            Ok(ext(&[(l.min(100), (o / 200) as u32)]))
        })
        .unwrap();
        assert_eq!(r, ext(&[(200, 0), (50, 1)]));
        let r = gather(0, 250, true, |_, _| Ok(ext(&[(100, 0), (100, 1)]))).unwrap();
        assert_eq!(r, ext(&[(100, 0)]));
        assert!(gather(0, 10, false, |_, _| Ok(vec![])).is_err());
    }

    #[test]
    fn short_holes_are_data() {
        let e = |length, flags| Extent { length, flags };
        let runs = data_and_holes(0, &[e(512, 0), e(512, 3), e(8192, 3), e(100, 0)]);
        assert_eq!(
            runs,
            vec![(0, 1024, false), (1024, 8192, true), (9216, 100, false)]
        );
    }
}
