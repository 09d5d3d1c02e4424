//! The transmission phase: requests are read in order and handed to the
//! connection's I/O threads (up to [`MAX_IN_FLIGHT`] in flight); replies
//! go back to one writer task that writes them whole, as they complete,
//! batching whatever is ready into one socket write.
//!
//! ```text
//! reader task ──(request, payload)──► I/O threads (WORKERS) ──reply──► writer task
//!   parse, validate,                   device call                       buffered,
//!   read payload                       (blocking)                        one flush per batch
//! ```
//!
//! Two hand-offs per request and no task or thread spawned per request:
//! the cost per 4 KiB request stays a few microseconds.

use crate::device::{DeviceError, DeviceResult, Extent};
use crate::negotiate::Session;
use crate::proto::*;
use crate::reply;
use crate::request::Request;
use crate::server::Stream;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufReader, BufWriter, WriteHalf};
use tokio::sync::{mpsc, watch, Semaphore};

/// Requests one connection may have in flight; more wait to be read.
pub const MAX_IN_FLIGHT: u32 = 32;
/// I/O threads per connection: two let a read proceed while another
/// request waits on the device.
const WORKERS: usize = 2;
/// Holes shorter than this are sent as data (a chunk header costs more).
const MIN_HOLE: u64 = 4096;

/// A request for the I/O threads: validated (or refused with an error).
struct Work {
    req: Request,
    verdict: Result<(), u32>,
    payload: Vec<u8>,
}

type Reply = Vec<Vec<u8>>;

/// Serves requests until the client disconnects, sends NBD_CMD_DISC, breaks
/// the protocol, or the server shuts down; in-flight requests finish first.
pub(crate) async fn transmit(
    stream: Box<dyn Stream>,
    session: Session,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let (r, w) = tokio::io::split(stream);
    let mut r = BufReader::with_capacity(256 << 10, r);
    let session = Arc::new(session);
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT as usize));
    let (work_tx, work_rx) = crossbeam_channel::unbounded::<Work>();
    let (reply_tx, reply_rx) = mpsc::unbounded_channel::<Reply>();
    let mut workers = Vec::with_capacity(WORKERS);
    for _ in 0..WORKERS {
        let (rx, tx, s) = (work_rx.clone(), reply_tx.clone(), session.clone());
        workers.push(
            std::thread::Builder::new()
                .name("nbd-io".into())
                .spawn(move || {
                    for w in rx {
                        // A reply that cannot be sent (the writer gave up)
                        // still had to be executed: writes are not undone.
                        let _ = tx.send(run(&s, w));
                    }
                })?,
        );
    }
    drop(work_rx);
    drop(reply_tx);
    let writer = tokio::spawn(write_replies(w, reply_rx, slots.clone()));

    let mut hdr = [0u8; REQUEST_LEN];
    let result = loop {
        let read = tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => break Ok(()),
            r = r.read_exact(&mut hdr) => r,
        };
        if let Err(e) = read {
            break if e.kind() == std::io::ErrorKind::UnexpectedEof {
                Ok(())
            } else {
                Err(e)
            };
        }
        let req = match Request::parse(&hdr) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(export = %session.export, "closing connection: {e}");
                break Ok(());
            }
        };
        let device = &session.device;
        let verdict = req.validate(device.size(), device.read_only(), session.structured);
        let payload_len = req.payload_len();
        let payload = if payload_len > 0 && verdict.is_ok() {
            let mut p = vec![0u8; payload_len as usize];
            if let Err(e) = r.read_exact(&mut p).await {
                break Err(e);
            }
            p
        } else {
            // A refused write's payload is skipped so the stream stays in sync.
            if payload_len > 0 {
                let n = tokio::io::copy(
                    &mut (&mut r).take(payload_len as u64),
                    &mut tokio::io::sink(),
                )
                .await?;
                if n != payload_len as u64 {
                    break Ok(());
                }
            }
            Vec::new()
        };
        if req.kind == NBD_CMD_DISC {
            break Ok(());
        }
        slots
            .acquire()
            .await
            .expect("semaphore is never closed")
            .forget();
        if work_tx
            .send(Work {
                req,
                verdict,
                payload,
            })
            .is_err()
        {
            break Ok(());
        }
    };
    // In-flight requests finish (their replies may still reach the client),
    // then the threads and the writer end.
    drop(work_tx);
    let _ = slots.acquire_many(MAX_IN_FLIGHT).await;
    let _ =
        tokio::task::spawn_blocking(move || workers.into_iter().for_each(|w| drop(w.join()))).await;
    let _ = writer.await;
    result
}

/// Writes replies as they come, several per flush when several are ready;
/// returns each reply's in-flight slot once written (or dropped, when the
/// client is gone).
async fn write_replies(
    w: WriteHalf<Box<dyn Stream>>,
    mut rx: mpsc::UnboundedReceiver<Reply>,
    slots: Arc<Semaphore>,
) {
    let mut w = BufWriter::with_capacity(256 << 10, w);
    let mut ok = true;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        for parts in &batch {
            for p in parts {
                if ok && w.write_all(p).await.is_err() {
                    ok = false;
                }
            }
        }
        if ok && w.flush().await.is_err() {
            ok = false;
        }
        slots.add_permits(batch.len());
    }
    let _ = w.shutdown().await;
}

/// Executes one request on an I/O thread; a panicking device answers EIO.
fn run(s: &Session, w: Work) -> Reply {
    let cookie = w.req.cookie;
    match w.verdict {
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
