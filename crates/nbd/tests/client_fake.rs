//! `nbd::client` against fake servers that speak raw bytes over a socket
//! pair: old servers (no structured replies, no NBD_OPT_GO, oldstyle),
//! unusual but valid ones (chunks in any order, short block status), and
//! lying ones (wrong cookies, chunks outside the request, bad magic,
//! oversized lengths, bytes slipped in before TLS). Then thousands of
//! mutants of a valid session: every one must end in an error or a
//! result, never a panic or a hang.

use nbd::client::{Client, Error, Options, Violation};
use nbd::option::{InfoRequest, MetaRequest};
use nbd::proto::*;
use nbd::reply::{self, BlockDescriptor, Chunk, ReplyError};
use nbd::request::Request;
use nbd::Extent;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::io::{Read, Write};
use std::net::Shutdown;
use std::os::unix::net::UnixStream;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

const TIMEOUT: Duration = Duration::from_secs(10);
const SIZE: u64 = 1 << 20;
/// What the fake exports offer: everything but read-only.
const FLAGS: u16 = NBD_FLAG_HAS_FLAGS
    | NBD_FLAG_SEND_FLUSH
    | NBD_FLAG_SEND_FUA
    | NBD_FLAG_SEND_TRIM
    | NBD_FLAG_SEND_WRITE_ZEROES;

// ---------------------------------------------------------------------------
// The fake server

/// The server's end of the socket pair. Its writes ignore errors (the
/// client may have gone already); its reads give `None` once the client
/// has.
struct Peer {
    s: UnixStream,
}

/// How [`Peer::handshake`] answers.
#[derive(Clone, Copy)]
struct Hs {
    handshake_flags: u16,
    structured: bool,
    /// The id given to base:allocation, if offered.
    context: Option<u32>,
    block_size: Option<(u32, u32, u32)>,
    size: u64,
    flags: u16,
}

impl Default for Hs {
    fn default() -> Self {
        Hs {
            handshake_flags: NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES,
            structured: true,
            context: Some(1),
            block_size: None,
            size: SIZE,
            flags: FLAGS,
        }
    }
}

impl Peer {
    fn send(&mut self, b: &[u8]) {
        let _ = self.s.write_all(b);
    }

    fn recv(&mut self, n: usize) -> Option<Vec<u8>> {
        let mut b = vec![0; n];
        self.s.read_exact(&mut b).ok()?;
        Some(b)
    }

    fn greeting(&mut self, flags: u16) -> Option<u32> {
        let mut g = NBDMAGIC.to_be_bytes().to_vec();
        g.extend(IHAVEOPT.to_be_bytes());
        g.extend(flags.to_be_bytes());
        self.send(&g);
        let f = self.recv(4)?;
        Some(u32::from_be_bytes(f.try_into().unwrap()))
    }

    /// The next option the client sends: its type and data.
    fn option(&mut self) -> Option<(u32, Vec<u8>)> {
        let h = self.recv(16)?;
        assert_eq!(&h[..8], IHAVEOPT.to_be_bytes(), "option magic");
        let opt = u32::from_be_bytes(h[8..12].try_into().unwrap());
        let len = u32::from_be_bytes(h[12..16].try_into().unwrap());
        Some((opt, self.recv(len as usize)?))
    }

    fn reply(&mut self, opt: u32, kind: u32, data: &[u8]) {
        self.send(&reply::option_reply(opt, kind, data));
    }

    /// Greeting, then options answered as `hs` says until NBD_OPT_GO
    /// succeeds; returns the options seen, in order.
    fn handshake(&mut self, hs: Hs) -> Vec<u32> {
        self.greeting(hs.handshake_flags).expect("client flags");
        let mut seen = Vec::new();
        loop {
            let (opt, data) = self.option().expect("an option");
            seen.push(opt);
            match opt {
                NBD_OPT_STRUCTURED_REPLY if hs.structured => self.reply(opt, NBD_REP_ACK, &[]),
                NBD_OPT_SET_META_CONTEXT => {
                    let m = MetaRequest::parse(&data).unwrap();
                    assert_eq!(m.queries, vec![BASE_ALLOCATION.to_string()]);
                    if let Some(id) = hs.context {
                        self.reply(
                            opt,
                            NBD_REP_META_CONTEXT,
                            &reply::meta_context(id, BASE_ALLOCATION),
                        );
                    }
                    self.reply(opt, NBD_REP_ACK, &[]);
                }
                NBD_OPT_GO => {
                    let r = InfoRequest::parse(&data).unwrap();
                    assert!(r.requests.contains(&NBD_INFO_BLOCK_SIZE));
                    self.reply(opt, NBD_REP_INFO, &reply::info_export(hs.size, hs.flags));
                    if let Some((a, b, c)) = hs.block_size {
                        self.reply(opt, NBD_REP_INFO, &reply::info_block_size(a, b, c));
                    }
                    self.reply(opt, NBD_REP_ACK, &[]);
                    return seen;
                }
                _ => self.reply(opt, NBD_REP_ERR_UNSUP, b"no"),
            }
        }
    }

    /// The next request and its payload.
    fn request(&mut self) -> Option<(Request, Vec<u8>)> {
        let h = self.recv(REQUEST_LEN)?;
        let r = Request::parse(&h.try_into().unwrap()).expect("request magic");
        let payload = self.recv(r.payload_len() as usize)?;
        Some((r, payload))
    }

    fn chunk(&mut self, cookie: u64, done: bool, c: Chunk) {
        let flags = if done { NBD_REPLY_FLAG_DONE } else { 0 };
        self.send(&c.encode(cookie, flags));
    }

    /// Reads until the client closes (so the client never writes into a
    /// closed socket).
    fn drain(&mut self) {
        let mut b = [0u8; 4096];
        while matches!(self.s.read(&mut b), Ok(n) if n > 0) {}
    }
}

/// A fake server running `script` on its end of a socket pair; the
/// client's end has read and write timeouts.
fn fake(script: impl FnOnce(&mut Peer) + Send + 'static) -> (UnixStream, JoinHandle<()>) {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_read_timeout(Some(TIMEOUT)).unwrap();
    a.set_write_timeout(Some(TIMEOUT)).unwrap();
    b.set_read_timeout(Some(TIMEOUT)).unwrap();
    let t = std::thread::spawn(move || {
        let mut p = Peer { s: b };
        script(&mut p);
        p.drain();
    });
    (a, t)
}

fn connect(s: UnixStream) -> Result<Client, Error> {
    Client::connect(s, &Options::new("disk"))
}

/// The violation in a protocol error (anything else fails the test).
#[track_caller]
fn violation(e: Error) -> Violation {
    match e {
        Error::Protocol { violation, .. } => violation,
        e => panic!("not a protocol error: {e}"),
    }
}

/// A client connected to a fake that answers one read of 4096 bytes at
/// offset 4096 with `answer(peer, cookie)`; the read's result.
fn read_answered(answer: impl FnOnce(&mut Peer, u64) + Send + 'static) -> Result<Vec<u8>, Error> {
    let (s, t) = fake(move |p| {
        p.handshake(Hs::default());
        let (r, _) = p.request().unwrap();
        assert_eq!((r.kind, r.offset, r.length), (NBD_CMD_READ, 4096, 4096));
        answer(p, r.cookie);
    });
    let mut c = connect(s).unwrap();
    let mut b = vec![0xee; 4096];
    let r = c.read(4096, &mut b).map(|()| b);
    if let Err(e) = &r {
        if e.kind() == "protocol" {
            // After a violation nothing more is sent.
            let again = c.read(4096, &mut [0; 4096]).unwrap_err();
            assert_eq!(again.kind(), "closed", "{again}");
        }
    }
    drop(c);
    t.join().unwrap();
    r
}

fn data(offset: u64, data: Vec<u8>) -> Chunk {
    Chunk::OffsetData { offset, data }
}

fn hole(offset: u64, length: u32) -> Chunk {
    Chunk::OffsetHole { offset, length }
}

// ---------------------------------------------------------------------------
// Valid but unusual servers

#[test]
fn chunks_in_any_order_make_up_a_read() {
    let got = read_answered(|p, c| {
        p.chunk(c, false, hole(4096 + 3072, 1024));
        p.chunk(c, false, data(4096 + 1024, vec![2; 2048]));
        p.chunk(c, false, data(4096, vec![1; 1024]));
        p.chunk(c, true, Chunk::None);
    })
    .unwrap();
    let mut want = vec![1; 1024];
    want.extend([2; 2048]);
    want.extend([0; 1024]);
    assert_eq!(got, want);
    // The last content chunk may carry the done flag itself.
    let got = read_answered(|p, c| {
        p.chunk(c, false, data(4096, vec![5; 4000]));
        p.chunk(c, true, hole(8096, 96));
    })
    .unwrap();
    assert_eq!(&got[..4000], &[5; 4000][..]);
    assert_eq!(&got[4000..], &[0; 96][..]);
}

#[test]
fn structured_replies_refused_fall_back_to_simple_replies() {
    let (s, t) = fake(|p| {
        let seen = p.handshake(Hs {
            structured: false,
            ..Hs::default()
        });
        // No meta context without structured replies.
        assert_eq!(seen, vec![NBD_OPT_STRUCTURED_REPLY, NBD_OPT_GO]);
        let (r, _) = p.request().unwrap();
        p.send(&reply::simple(r.cookie, 0));
        p.send(&[9; 512]);
    });
    let mut c = connect(s).unwrap();
    assert!(!c.structured_replies() && !c.has_base_allocation());
    let mut b = [0; 512];
    c.read(0, &mut b).unwrap();
    assert_eq!(b, [9; 512]);
    drop(c);
    t.join().unwrap();
}

#[test]
fn servers_without_go_get_export_name() {
    for no_zeroes in [false, true] {
        let (s, t) = fake(move |p| {
            let hflags = NBD_FLAG_FIXED_NEWSTYLE | if no_zeroes { NBD_FLAG_NO_ZEROES } else { 0 };
            let cflags = p.greeting(hflags).unwrap();
            let want = NBD_FLAG_C_FIXED_NEWSTYLE | if no_zeroes { NBD_FLAG_C_NO_ZEROES } else { 0 };
            assert_eq!(cflags, want, "client flags answer the server's");
            loop {
                let (opt, data) = p.option().unwrap();
                if opt == NBD_OPT_EXPORT_NAME {
                    assert_eq!(data, b"disk");
                    break;
                }
                p.reply(opt, NBD_REP_ERR_UNSUP, &[]);
            }
            let mut b = 12345u64.to_be_bytes().to_vec();
            b.extend((NBD_FLAG_HAS_FLAGS | NBD_FLAG_READ_ONLY).to_be_bytes());
            if !no_zeroes {
                b.extend([0; 124]);
            }
            p.send(&b);
            let (r, _) = p.request().unwrap();
            assert_eq!(r.kind, NBD_CMD_READ);
            p.send(&reply::simple(r.cookie, 0));
            p.send(&[4; 10]);
        });
        let mut c = connect(s).unwrap();
        assert_eq!((c.size(), c.flags().read_only()), (12345, true));
        let mut b = [0; 10];
        c.read(12335, &mut b).unwrap();
        assert_eq!(b, [4; 10]);
        drop(c);
        t.join().unwrap();
    }
}

#[test]
fn a_servers_small_maximum_splits_every_call() {
    let (s, t) = fake(|p| {
        p.handshake(Hs {
            block_size: Some((512, 4096, 4096)),
            ..Hs::default()
        });
        for i in 0..16u64 {
            let (r, payload) = p.request().unwrap();
            assert_eq!(
                (r.kind, r.offset, r.length),
                (NBD_CMD_WRITE, 65536 + i * 4096, 4096)
            );
            assert_eq!(payload, vec![i as u8; 4096]);
            p.chunk(r.cookie, true, Chunk::None);
        }
        for i in 0..4u64 {
            let (r, _) = p.request().unwrap();
            assert_eq!((r.kind, r.offset, r.length), (NBD_CMD_TRIM, i * 4096, 4096));
            p.send(&reply::simple(r.cookie, 0));
        }
    });
    let mut c = connect(s).unwrap();
    assert_eq!(c.max_request(), 4096);
    let data: Vec<u8> = (0..16).flat_map(|i| vec![i as u8; 4096]).collect();
    c.write(65536, &data).unwrap();
    c.trim(0, 16384).unwrap();
    drop(c);
    t.join().unwrap();
}

#[test]
fn block_status_answers_short_and_long_are_followed_and_clipped() {
    let (s, t) = fake(|p| {
        p.handshake(Hs {
            context: Some(7),
            ..Hs::default()
        });
        let d = |length, flags| BlockDescriptor { length, flags };
        let (r, _) = p.request().unwrap();
        assert_eq!(
            (r.kind, r.offset, r.length),
            (NBD_CMD_BLOCK_STATUS, 0, 65536)
        );
        // Only the first 16 KiB: the client asks again for the rest.
        p.chunk(
            r.cookie,
            true,
            Chunk::BlockStatus {
                context: 7,
                descriptors: vec![d(8192, 0), d(8192, 3)],
            },
        );
        let (r, _) = p.request().unwrap();
        assert_eq!((r.offset, r.length), (16384, 65536 - 16384));
        // More than asked: clipped. Same state as before: merged.
        p.chunk(
            r.cookie,
            false,
            Chunk::BlockStatus {
                context: 7,
                descriptors: vec![d(4096, 3), d(1 << 20, 1)],
            },
        );
        p.chunk(r.cookie, true, Chunk::None);
    });
    let mut c = connect(s).unwrap();
    let ext: Vec<_> = c
        .block_status(0, 65536)
        .unwrap()
        .into_iter()
        .map(|e| (e.offset, e.length, e.hole, e.zero))
        .collect();
    assert_eq!(
        ext,
        vec![
            (0, 8192, false, false),
            (8192, 12288, true, true),
            (20480, 45056, true, false)
        ]
    );
    drop(c);
    t.join().unwrap();
}

/// Descriptors SHOULD be multiples of the minimum block size; when an
/// answer stops inside a block anyway, the client's next request still
/// starts on a block boundary (found by fuzzing: it asked from where the
/// answer stopped, unaligned).
#[test]
fn block_status_answers_that_stop_inside_a_block_are_followed_aligned() {
    let (s, t) = fake(|p| {
        p.handshake(Hs {
            block_size: Some((4096, 4096, 1 << 20)),
            ..Hs::default()
        });
        let d = |length, flags| BlockDescriptor { length, flags };
        let (r, _) = p.request().unwrap();
        assert_eq!((r.offset, r.length), (0, 16384));
        p.chunk(
            r.cookie,
            true,
            Chunk::BlockStatus {
                context: 1,
                descriptors: vec![d(4096, 0), d(512, 3)],
            },
        );
        let (r, _) = p.request().unwrap();
        assert_eq!(
            (r.offset, r.length),
            (8192, 8192),
            "the next request is aligned"
        );
        p.chunk(
            r.cookie,
            true,
            Chunk::BlockStatus {
                context: 1,
                descriptors: vec![d(8192, 3)],
            },
        );
    });
    let mut c = connect(s).unwrap();
    let ext: Vec<_> = c
        .block_status(0, 16384)
        .unwrap()
        .into_iter()
        .map(|e| (e.offset, e.length, e.hole, e.zero))
        .collect();
    // The rest of the block the answer stopped in: status 0 (data).
    assert_eq!(
        ext,
        vec![
            (0, 4096, false, false),
            (4096, 512, true, true),
            (4608, 3584, false, false),
            (8192, 8192, true, true)
        ]
    );
    drop(c);
    t.join().unwrap();
}

// ---------------------------------------------------------------------------
// Request errors: the connection goes on (except NBD_ESHUTDOWN)

#[test]
fn error_chunks_fail_the_request_with_the_message_and_the_session_goes_on() {
    let (s, t) = fake(|p| {
        p.handshake(Hs::default());
        let answers = [
            Chunk::Error {
                error: NBD_EIO,
                message: "disk on fire".into(),
            },
            Chunk::ErrorOffset {
                error: NBD_ENOSPC,
                message: "full".into(),
                offset: 8192,
            },
            Chunk::OtherError {
                kind: NBD_REPLY_TYPE_FLAG_ERROR | 9,
                error: 99,
                message: "new kind".into(),
                rest: vec![1, 2, 3],
            },
        ];
        for a in answers {
            let (r, _) = p.request().unwrap();
            // Data before the error is read, and does not make it succeed.
            if r.kind == NBD_CMD_READ {
                p.chunk(r.cookie, false, data(r.offset, vec![1; r.length as usize]));
            }
            p.chunk(r.cookie, true, a);
        }
        let (r, _) = p.request().unwrap();
        p.send(&reply::simple(r.cookie, 0));
    });
    let mut c = connect(s).unwrap();
    let e = c.read(0, &mut [0; 512]).unwrap_err();
    assert_eq!(
        (e.errno(), e.server_message()),
        (Some(NBD_EIO), Some("disk on fire"))
    );
    let e = c.write(4096, &[0; 8192]).unwrap_err();
    assert_eq!(e.errno(), Some(NBD_ENOSPC));
    assert_eq!(e.server_message(), Some("full (at offset 8192)"));
    let e = c.trim(0, 4096).unwrap_err();
    assert_eq!(
        (e.errno(), e.server_message()),
        (Some(99), Some("new kind"))
    );
    assert!(e.to_string().contains("error value 99"), "{e}");
    c.flush().unwrap();
    drop(c);
    t.join().unwrap();
}

#[test]
fn eshutdown_makes_the_client_disconnect() {
    let (s, t) = fake(|p| {
        p.handshake(Hs::default());
        let (r, _) = p.request().unwrap();
        p.send(&reply::simple(r.cookie, NBD_ESHUTDOWN));
        let (r, _) = p.request().expect("a disconnect");
        assert_eq!(r.kind, NBD_CMD_DISC);
    });
    let mut c = connect(s).unwrap();
    let e = c.flush().unwrap_err();
    assert_eq!(e.errno(), Some(NBD_ESHUTDOWN));
    let e = c.flush().unwrap_err();
    assert_eq!(e.kind(), "closed");
    assert!(e.to_string().contains("shutting down"), "{e}");
    drop(c);
    t.join().unwrap();
}

// ---------------------------------------------------------------------------
// Lying servers: protocol violations close the client

#[test]
fn chunks_outside_the_request_overlapping_or_missing_are_violations() {
    let v = |r: Result<Vec<u8>, Error>| violation(r.unwrap_err());
    assert_eq!(
        v(read_answered(|p, c| p.chunk(
            c,
            true,
            data(0, vec![1; 4096])
        ))),
        Violation::OutsideRequest {
            offset: 0,
            length: 4096
        }
    );
    assert_eq!(
        v(read_answered(|p, c| p.chunk(c, true, hole(8000, 200)))),
        Violation::OutsideRequest {
            offset: 8000,
            length: 200
        }
    );
    assert_eq!(
        v(read_answered(|p, c| {
            p.chunk(c, false, data(4096, vec![1; 2048]));
            p.chunk(c, true, hole(5000, 100));
        })),
        Violation::Overlap {
            offset: 5000,
            length: 100
        }
    );
    assert_eq!(
        v(read_answered(|p, c| {
            p.chunk(c, false, data(4096, vec![1; 1024]));
            p.chunk(c, true, Chunk::None);
        })),
        Violation::Incomplete {
            offset: 5120,
            length: 3072
        }
    );
    assert_eq!(
        v(read_answered(|p, c| p.chunk(c, false, Chunk::None))),
        Violation::NoneNotLast
    );
    assert_eq!(
        v(read_answered(|p, c| {
            p.chunk(
                c,
                true,
                Chunk::BlockStatus {
                    context: 1,
                    descriptors: vec![BlockDescriptor {
                        length: 1,
                        flags: 0,
                    }],
                },
            )
        })),
        Violation::UnexpectedChunk {
            kind: NBD_REPLY_TYPE_BLOCK_STATUS
        }
    );
    assert_eq!(
        v(read_answered(
            |p, c| p.send(&reply::chunk_header(c, 1, 7, 0))
        )),
        Violation::Malformed(ReplyError::UnknownChunkType(7))
    );
    assert_eq!(
        v(read_answered(
            |p, c| p.send(&reply::chunk_hole(c, true, 4096, 0))
        )),
        Violation::Malformed(ReplyError::Zero("the size of a hole"))
    );
    assert_eq!(
        v(read_answered(|p, c| {
            p.send(&reply::simple(c, 0));
            p.send(&[0; 4096]);
        })),
        Violation::SimpleReplyToRead
    );
}

#[test]
fn wrong_cookies_and_bad_magic_are_violations() {
    let e = read_answered(|p, c| p.chunk(c + 1, true, data(4096, vec![0; 4096]))).unwrap_err();
    assert_eq!(
        e.to_string(),
        "NBD export \"disk\": the server broke the protocol in NBD_CMD_READ of 4096 bytes at \
         offset 4096: the reply's cookie is 0x2, the request's 0x1"
    );
    let e = read_answered(|p, c| {
        let mut b = reply::chunk_data_header(c, true, 4096, 4096);
        b[0] ^= 0x40;
        p.send(&b);
    })
    .unwrap_err();
    assert!(matches!(
        violation(e),
        Violation::Malformed(ReplyError::BadMagic { what: "reply", .. })
    ));
    // A later chunk's magic counts too.
    let e = read_answered(|p, c| {
        p.chunk(c, false, data(4096, vec![0; 4096]));
        p.send(&[0xff; 20]);
    })
    .unwrap_err();
    assert!(matches!(
        violation(e),
        Violation::Malformed(ReplyError::BadMagic { .. })
    ));
}

#[test]
fn oversized_lengths_are_refused_unread() {
    let t = Instant::now();
    // A data chunk claiming 4 GiB: outside the request, nothing read.
    let e = read_answered(|p, c| {
        let mut b = reply::chunk_header(c, 1, NBD_REPLY_TYPE_OFFSET_DATA, u32::MAX).to_vec();
        b.extend(4096u64.to_be_bytes());
        p.send(&b);
    })
    .unwrap_err();
    assert!(matches!(violation(e), Violation::OutsideRequest { .. }));
    // An error chunk claiming 4 GiB.
    let e =
        read_answered(|p, c| p.send(&reply::chunk_header(c, 1, NBD_REPLY_TYPE_ERROR, u32::MAX)))
            .unwrap_err();
    assert!(matches!(violation(e), Violation::ChunkTooLong { .. }));
    assert!(t.elapsed() < TIMEOUT);
    // A chunk whose length is a lie, then the server closes: an I/O error.
    let e = read_answered(|p, c| {
        p.send(&reply::chunk_header(c, 1, NBD_REPLY_TYPE_ERROR, 1000));
        p.send(&[0, 0, 0, 5]);
        let _ = p.s.shutdown(Shutdown::Write);
    })
    .unwrap_err();
    assert_eq!(e.kind(), "io", "{e}");
}

#[test]
fn a_block_status_for_another_context_is_a_violation() {
    for (context, answer) in [(9, true), (1, false)] {
        let (s, t) = fake(move |p| {
            p.handshake(Hs::default());
            let (r, _) = p.request().unwrap();
            if answer {
                p.chunk(
                    r.cookie,
                    true,
                    Chunk::BlockStatus {
                        context,
                        descriptors: vec![BlockDescriptor {
                            length: 4096,
                            flags: 0,
                        }],
                    },
                );
            } else {
                p.chunk(r.cookie, true, Chunk::None);
            }
        });
        let mut c = connect(s).unwrap();
        let want = if answer {
            Violation::UnknownContext { id: 9 }
        } else {
            Violation::MissingStatus
        };
        assert_eq!(violation(c.block_status(0, 4096).unwrap_err()), want);
        drop(c);
        t.join().unwrap();
    }
}

#[test]
fn handshakes_the_client_cannot_follow() {
    let run = |script: fn(&mut Peer)| connect(fake(script).0).unwrap_err();
    // Oldstyle and plain newstyle servers.
    let e = run(|p| {
        let mut g = NBDMAGIC.to_be_bytes().to_vec();
        g.extend(NBD_OLDSTYLE_MAGIC.to_be_bytes());
        g.extend([0; 10]);
        p.send(&g);
    });
    assert_eq!(e.kind(), "unsupported", "{e}");
    let e = run(|p| {
        let _ = p.greeting(0);
    });
    assert!(e.to_string().contains("fixed newstyle"), "{e}");
    // Not an NBD server at all.
    let e = run(|p| p.send(b"SSH-2.0-OpenSSH_9.2p1 Debian\r\n"));
    assert!(matches!(
        violation(e),
        Violation::Malformed(ReplyError::BadMagic {
            what: "greeting",
            ..
        })
    ));
    // A reply to another option.
    let e = run(|p| {
        p.greeting(NBD_FLAG_FIXED_NEWSTYLE).unwrap();
        p.option().unwrap();
        p.reply(NBD_OPT_LIST, NBD_REP_ACK, &[]);
    });
    assert_eq!(
        violation(e),
        Violation::WrongOption {
            sent: NBD_OPT_STRUCTURED_REPLY,
            answered: NBD_OPT_LIST
        }
    );
    // Block sizes no client can follow; GO without the export's size.
    let e = run(|p| {
        p.handshake(Hs {
            block_size: Some((3, 4096, 1 << 20)),
            ..Hs::default()
        });
    });
    assert!(matches!(violation(e), Violation::BadBlockSize(_)));
    let e = run(|p| {
        p.greeting(NBD_FLAG_FIXED_NEWSTYLE).unwrap();
        loop {
            let (opt, _) = p.option().unwrap();
            p.reply(opt, NBD_REP_ACK, &[]);
            if opt == NBD_OPT_GO {
                break;
            }
        }
    });
    assert_eq!(violation(e), Violation::NoExportInfo);
    // Refusals carry the server's words.
    let e = run(|p| {
        p.greeting(NBD_FLAG_FIXED_NEWSTYLE).unwrap();
        loop {
            let (opt, _) = p.option().unwrap();
            if opt == NBD_OPT_GO {
                p.reply(opt, NBD_REP_ERR_POLICY, b"not you");
                break;
            }
            p.reply(opt, NBD_REP_ERR_UNSUP, &[]);
        }
    });
    assert_eq!(
        e.to_string(),
        "NBD export \"disk\": the server refused NBD_OPT_GO with NBD_REP_ERR_POLICY: not you"
    );
    // A structured chunk although structured replies were refused.
    let (s, t) = fake(|p| {
        p.handshake(Hs {
            structured: false,
            ..Hs::default()
        });
        let (r, _) = p.request().unwrap();
        p.send(&reply::chunk_done(r.cookie));
    });
    let mut c = connect(s).unwrap();
    assert_eq!(
        violation(c.flush().unwrap_err()),
        Violation::StructuredNotNegotiated
    );
    drop(c);
    t.join().unwrap();
}

#[test]
fn bytes_slipped_in_before_tls_are_refused() {
    let pki = testkit::pki::Pki::new();
    let config = nbd::tls::client_config(&pki.ca, None).unwrap();
    let name = nbd::rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let (s, t) = fake(|p| {
        p.greeting(NBD_FLAG_FIXED_NEWSTYLE).unwrap();
        let (opt, _) = p.option().unwrap();
        assert_eq!(opt, NBD_OPT_STARTTLS, "STARTTLS comes first");
        // The ACK and a forged reply in one write: they arrive together.
        let mut b = reply::option_reply(opt, NBD_REP_ACK, &[]);
        b.extend(reply::option_reply(
            NBD_OPT_STRUCTURED_REPLY,
            NBD_REP_ACK,
            &[],
        ));
        p.send(&b);
    });
    let e =
        Client::connect(s, &Options::new("disk").tls(config.clone(), name.clone())).unwrap_err();
    assert_eq!(violation(e), Violation::DataBeforeTls);
    t.join().unwrap();
    // A server that refuses STARTTLS: no silent fall back to clear text.
    let (s, t) = fake(|p| {
        p.greeting(NBD_FLAG_FIXED_NEWSTYLE).unwrap();
        let (opt, _) = p.option().unwrap();
        p.reply(opt, NBD_REP_ERR_POLICY, b"no certificate here");
    });
    let e = Client::connect(s, &Options::new("disk").tls(config, name)).unwrap_err();
    assert_eq!(e.refusal(), Some(NBD_REP_ERR_POLICY), "{e}");
    t.join().unwrap();
}

// ---------------------------------------------------------------------------
// Mutants of a valid session

/// A whole valid session, as the server sends it, for the calls of
/// [`calls`]; and where its transmission part starts.
fn transcript() -> (Vec<u8>, usize) {
    let mut b = NBDMAGIC.to_be_bytes().to_vec();
    b.extend(IHAVEOPT.to_be_bytes());
    b.extend((NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES).to_be_bytes());
    b.extend(reply::option_reply(
        NBD_OPT_STRUCTURED_REPLY,
        NBD_REP_ACK,
        &[],
    ));
    let meta = NBD_OPT_SET_META_CONTEXT;
    b.extend(reply::option_reply(
        meta,
        NBD_REP_META_CONTEXT,
        &reply::meta_context(1, BASE_ALLOCATION),
    ));
    b.extend(reply::option_reply(meta, NBD_REP_ACK, &[]));
    b.extend(reply::option_reply(
        NBD_OPT_GO,
        NBD_REP_INFO,
        &reply::info_export(SIZE, FLAGS),
    ));
    b.extend(reply::option_reply(
        NBD_OPT_GO,
        NBD_REP_INFO,
        &reply::info_block_size(1, 4096, 1 << 25),
    ));
    b.extend(reply::option_reply(
        NBD_OPT_GO,
        NBD_REP_INFO,
        &reply::info_string(NBD_INFO_DESCRIPTION, "fake"),
    ));
    b.extend(reply::option_reply(NBD_OPT_GO, NBD_REP_ACK, &[]));
    let transmission = b.len();
    // 1: read(0, 8192): data then a hole.
    b.extend(reply::chunk_data_header(1, false, 0, 4096));
    b.extend([0x11; 4096]);
    b.extend(reply::chunk_hole(1, true, 4096, 4096));
    // 2: write: done.
    b.extend(reply::chunk_done(2));
    // 3: block status.
    let ext = [
        Extent {
            length: 4096,
            flags: 0,
        },
        Extent {
            length: 61440,
            flags: 3,
        },
    ];
    b.extend(reply::chunk_block_status(3, true, 1, &ext));
    // 4: read(0, 4096): an error.
    b.extend(reply::chunk_error(4, NBD_EIO, "boom"));
    // 5: flush: a simple reply.
    b.extend(reply::simple(5, 0));
    (b, transmission)
}

/// How far one session got.
#[derive(Default, Debug)]
struct Reached {
    connected: bool,
    calls_ok: usize,
    request_errors: usize,
}

/// Connects over `s` and makes the calls the transcript answers; every
/// outcome is a value.
fn calls(s: UnixStream) -> Reached {
    let mut r = Reached::default();
    let Ok(mut c) = connect(s) else { return r };
    r.connected = true;
    let results = [
        c.read(0, &mut [0; 8192]),
        c.write(4096, &[1; 512]),
        c.block_status(0, 65536).map(drop),
        c.read(0, &mut [0; 4096]),
        c.flush(),
    ];
    for x in results {
        match x {
            Ok(()) => r.calls_ok += 1,
            Err(e) if e.kind() == "request" => r.request_errors += 1,
            Err(e) => drop(e.to_string()),
        }
    }
    r
}

/// Serves `bytes` whatever the client sends, then closes the sending side.
fn serve_bytes(bytes: Vec<u8>) -> (UnixStream, JoinHandle<()>) {
    fake(move |p| {
        p.send(&bytes);
        let _ = p.s.shutdown(Shutdown::Write);
    })
}

fn mutate(rng: &mut SmallRng, seed: &[u8], from: usize, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(seed);
    for _ in 0..rng.gen_range(1..4) {
        if out.is_empty() {
            break;
        }
        // Half the time in the transmission replies.
        let lo = if rng.gen_bool(0.5) {
            from.min(out.len() - 1)
        } else {
            0
        };
        let at = rng.gen_range(lo..out.len());
        match rng.gen_range(0..7) {
            0 => out[at] ^= 1 << rng.gen_range(0..8),
            1 => out[at] = [0, 0xff, 0x7f, 0x80, rng.gen()][rng.gen_range(0..5)],
            2 if at + 4 <= out.len() => {
                let v: u32 = [
                    0,
                    1,
                    8,
                    4095,
                    4096,
                    1 << 25,
                    0x7fff_ffff,
                    0x8000_0000,
                    u32::MAX,
                ][rng.gen_range(0..9)];
                out[at..at + 4].copy_from_slice(&v.to_be_bytes());
            }
            3 => out.truncate(at),
            4 => {
                let n = rng.gen_range(1..64).min(out.len() - at);
                let piece = out[at..at + n].to_vec();
                let to = rng.gen_range(0..=out.len());
                out.splice(to..to, piece);
            }
            5 => {
                let n = rng.gen_range(1..64).min(out.len() - at);
                out.drain(at..at + n);
            }
            _ => {
                let n = rng.gen_range(1..32);
                let junk: Vec<u8> = (0..n).map(|_| rng.gen()).collect();
                out.splice(at..at, junk);
            }
        }
    }
}

#[test]
fn garbage_replies_are_errors_never_panics_or_hangs() {
    let (seed, from) = transcript();
    // The unmutated session works: the mutants start from a valid one.
    let (s, t) = serve_bytes(seed.clone());
    let r = calls(s);
    t.join().unwrap();
    assert!(
        r.connected && r.calls_ok == 4 && r.request_errors == 1,
        "{r:?}"
    );

    let mut rng = SmallRng::seed_from_u64(1);
    let mut input = Vec::new();
    let mut total = Reached::default();
    let mut connected = 0;
    let started = Instant::now();
    for i in 0..3000 {
        if i % 10 == 0 {
            // Plain garbage, sometimes after a valid handshake.
            let keep = if rng.gen_bool(0.5) { from } else { 0 };
            input.clear();
            input.extend_from_slice(&seed[..keep]);
            input.extend((0..rng.gen_range(0..300)).map(|_| rng.gen::<u8>()));
        } else {
            mutate(&mut rng, &seed, from, &mut input);
        }
        let (s, t) = serve_bytes(input.clone());
        let t0 = Instant::now();
        let r = std::panic::catch_unwind(|| calls(s));
        let took = t0.elapsed();
        t.join().unwrap();
        let r = r.unwrap_or_else(|_| panic!("input {i} made the client panic: {:02x?}", input));
        assert!(
            took < TIMEOUT / 2,
            "input {i} took {took:?}: {:02x?}",
            input
        );
        connected += r.connected as usize;
        total.calls_ok += r.calls_ok;
        total.request_errors += r.request_errors;
    }
    // The mutants got deep: many connected, calls succeeded and failed.
    assert!(connected > 500, "connected {connected}, {total:?}");
    assert!(
        total.calls_ok > 1000 && total.request_errors > 100,
        "{total:?}"
    );
    eprintln!(
        "3000 inputs in {:?}: connected {connected}, {total:?}",
        started.elapsed()
    );
}
