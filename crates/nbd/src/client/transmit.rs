//! The client's side of transmission (§ "Transmission", "Request types"):
//! one request on the wire at a time, its reply read whole before the
//! call returns.
//!
//! ```text
//! call ─► checks (range, alignment, flags) ─► pieces of ≤ max request
//!   piece ─► request header [+ write payload] ─► reply:
//!     simple      magic, error, cookie [+ read data]
//!     structured  chunks until NBD_REPLY_FLAG_DONE:
//!                   OFFSET_DATA  straight into the caller's buffer
//!                   OFFSET_HOLE  zeros there
//!                   BLOCK_STATUS base:allocation descriptors
//!                   ERROR*       the first one is the request's error
//!                 then: a read is covered exactly once, block status
//!                 came for base:allocation
//! ```
//!
//! An I/O error or a protocol violation leaves the stream out of step:
//! the client is closed from then on ([`Error::Closed`]). A request
//! error (an `NBD_E*` value) leaves it in step, except NBD_ESHUTDOWN,
//! after which the protocol asks for a disconnect.

use super::error::{Error, Result, Step, Violation};
use super::{AllocationExtent, Client};
use crate::proto::*;
use crate::reply::{BlockDescriptor, Chunk, ChunkHeader, ReplyError, SimpleReply};
use crate::request::Request;
use std::collections::BTreeMap;

/// Largest non-data chunk accepted: block status may carry up to a
/// maximum payload's worth of descriptors (§ "Structured reply types").
const MAX_CHUNK: u32 = MAX_PAYLOAD + 64;

/// Where a reply's content goes.
enum Sink<'a> {
    None,
    /// A read's bytes: the request's whole range.
    Data(&'a mut [u8]),
    /// Block status descriptors of base:allocation.
    Status(&'a mut Vec<BlockDescriptor>),
}

/// A request's error value and the server's message.
type Failed = (u32, String);

/// The ranges of a read that the reply's chunks covered so far.
struct Coverage {
    start: u64,
    end: u64,
    /// start → end of each chunk, never overlapping.
    got: BTreeMap<u64, u64>,
}

impl Coverage {
    fn new(start: u64, length: u64) -> Coverage {
        Coverage {
            start,
            end: start + length,
            got: BTreeMap::new(),
        }
    }

    /// Takes `offset..offset+length`; where it lies in the request.
    fn take(&mut self, offset: u64, length: u64) -> Result<std::ops::Range<usize>, Violation> {
        let end = offset.checked_add(length);
        if offset < self.start || end.is_none_or(|e| e > self.end) {
            return Err(Violation::OutsideRequest { offset, length });
        }
        let end = offset + length;
        let before = self.got.range(..end).next_back();
        if before.is_some_and(|(_, &e)| e > offset) {
            return Err(Violation::Overlap { offset, length });
        }
        self.got.insert(offset, end);
        let at = (offset - self.start) as usize;
        Ok(at..at + length as usize)
    }

    /// The first range no chunk covered.
    fn gap(&self) -> Option<(u64, u64)> {
        let mut pos = self.start;
        for (&s, &e) in &self.got {
            if s > pos {
                return Some((pos, s - pos));
            }
            pos = e;
        }
        (pos < self.end).then(|| (pos, self.end - pos))
    }
}

impl Client {
    /// Fails if an earlier error ended the connection.
    fn usable(&self) -> Result<()> {
        match &self.closed {
            None => Ok(()),
            Some(reason) => Err(Error::Closed {
                export: self.info.name.clone(),
                reason: reason.clone(),
            }),
        }
    }

    fn unsupported(&self, what: &'static str) -> Error {
        Error::Unsupported {
            export: self.info.name.clone(),
            what,
        }
    }

    /// Checks a call's range against the export's size and minimum block
    /// size (the client MUST respect both; § "Size constraints").
    fn check_range(&self, command: u16, offset: u64, length: u64) -> Result<()> {
        let size = self.info.size;
        if offset.checked_add(length).is_none_or(|end| end > size) {
            return Err(Error::OutOfRange {
                export: self.info.name.clone(),
                command,
                offset,
                length,
                size,
            });
        }
        let minimum = self.info.block_size.minimum;
        let m = minimum as u64;
        if !offset.is_multiple_of(m) || !length.is_multiple_of(m) {
            return Err(Error::Misaligned {
                export: self.info.name.clone(),
                command,
                offset,
                length,
                minimum,
            });
        }
        Ok(())
    }

    /// The pieces `offset..offset+length` is sent in: at most `max` bytes.
    fn pieces(offset: u64, length: u64, max: u32) -> impl Iterator<Item = (u64, u32)> {
        let end = offset + length;
        let mut pos = offset;
        std::iter::from_fn(move || {
            if pos >= end {
                return None;
            }
            let n = (end - pos).min(max as u64) as u32;
            let piece = (pos, n);
            pos += n as u64;
            Some(piece)
        })
    }

    pub(super) fn do_read(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.usable()?;
        let length = buf.len() as u64;
        self.check_range(NBD_CMD_READ, offset, length)?;
        for (pos, n) in Self::pieces(offset, length, self.max_request) {
            let at = (pos - offset) as usize;
            let piece = &mut buf[at..at + n as usize];
            self.request(NBD_CMD_READ, 0, pos, n, &[], Sink::Data(piece))?;
        }
        Ok(())
    }

    pub(super) fn do_write(&mut self, offset: u64, data: &[u8], fua: bool) -> Result<()> {
        self.usable()?;
        let length = data.len() as u64;
        self.check_range(NBD_CMD_WRITE, offset, length)?;
        let flags = if fua {
            if !self.info.flags.can_fua() {
                return Err(self.unsupported("FUA writes (NBD_FLAG_SEND_FUA)"));
            }
            NBD_CMD_FLAG_FUA
        } else {
            0
        };
        for (pos, n) in Self::pieces(offset, length, self.max_request) {
            let at = (pos - offset) as usize;
            let piece = &data[at..at + n as usize];
            self.request(NBD_CMD_WRITE, flags, pos, n, piece, Sink::None)?;
        }
        Ok(())
    }

    pub(super) fn do_flush(&mut self) -> Result<()> {
        self.usable()?;
        if !self.info.flags.can_flush() {
            return Err(self.unsupported("flushes (NBD_FLAG_SEND_FLUSH)"));
        }
        self.request(NBD_CMD_FLUSH, 0, 0, 0, &[], Sink::None)
    }

    /// NBD_CMD_TRIM or NBD_CMD_WRITE_ZEROES over a range, in pieces.
    pub(super) fn do_zero(
        &mut self,
        command: u16,
        flags: u16,
        offset: u64,
        length: u64,
    ) -> Result<()> {
        self.usable()?;
        let offered = match command {
            NBD_CMD_TRIM => self.info.flags.can_trim(),
            _ => self.info.flags.can_write_zeroes(),
        };
        if !offered {
            return Err(self.unsupported(match command {
                NBD_CMD_TRIM => "trim (NBD_FLAG_SEND_TRIM)",
                _ => "write zeroes (NBD_FLAG_SEND_WRITE_ZEROES)",
            }));
        }
        self.check_range(command, offset, length)?;
        for (pos, n) in Self::pieces(offset, length, self.max_request) {
            self.request(command, flags, pos, n, &[], Sink::None)?;
        }
        Ok(())
    }

    pub(super) fn do_block_status(
        &mut self,
        offset: u64,
        length: u64,
    ) -> Result<Vec<AllocationExtent>> {
        self.usable()?;
        if self.allocation.is_none() {
            return Err(self.unsupported("block status for base:allocation"));
        }
        self.check_range(NBD_CMD_BLOCK_STATUS, offset, length)?;
        // The length is a hint the server may answer short of (or past):
        // ask for as much as the 32-bit field can say, keep asking from
        // where the answer stopped.
        let minimum = self.info.block_size.minimum as u64;
        let window = (1u64 << 32) - minimum;
        let end = offset + length;
        let mut out: Vec<AllocationExtent> = Vec::new();
        let push =
            |out: &mut Vec<AllocationExtent>, offset, length, hole, zero| match out.last_mut() {
                Some(l) if l.hole == hole && l.zero == zero => l.length += length,
                _ => out.push(AllocationExtent {
                    offset,
                    length,
                    hole,
                    zero,
                }),
            };
        let mut pos = offset;
        while pos < end {
            let n = (end - pos).min(window) as u32;
            let mut descriptors = Vec::new();
            self.request(
                NBD_CMD_BLOCK_STATUS,
                0,
                pos,
                n,
                &[],
                Sink::Status(&mut descriptors),
            )?;
            for d in descriptors {
                if pos >= end {
                    break;
                }
                let length = (d.length as u64).min(end - pos);
                let hole = d.flags & NBD_STATE_HOLE != 0;
                let zero = d.flags & NBD_STATE_ZERO != 0;
                push(&mut out, pos, length, hole, zero);
                pos += length;
            }
            // Descriptors SHOULD be multiples of the minimum block size; an
            // answer that stops inside a block would make the next request
            // unaligned, which the client MUST NOT send. The rest of that
            // block is reported as status 0 (data), which is always true.
            let aligned = pos.next_multiple_of(minimum).min(end);
            if aligned > pos {
                push(&mut out, pos, aligned - pos, false, false);
                pos = aligned;
            }
        }
        Ok(out)
    }

    pub(super) fn do_disconnect(&mut self) -> Result<()> {
        if self.closed.is_some() {
            return Ok(());
        }
        self.closed = Some("the client disconnected".into());
        let disc = Request {
            flags: 0,
            kind: NBD_CMD_DISC,
            cookie: self.next_cookie(),
            offset: 0,
            length: 0,
        }
        .encode();
        let io = |e| Error::io(&self.info.name, Step::Disconnect, e);
        self.wire.send(&[&disc]).map_err(io)?;
        self.wire.close_tls().map_err(io)
    }

    fn next_cookie(&mut self) -> u64 {
        self.cookie = self.cookie.wrapping_add(1);
        self.cookie
    }

    /// Sends one request and reads its reply; a request error is
    /// [`Error::Request`], anything that breaks the stream closes the client.
    fn request(
        &mut self,
        command: u16,
        flags: u16,
        offset: u64,
        length: u32,
        payload: &[u8],
        sink: Sink<'_>,
    ) -> Result<()> {
        let step = Step::Request {
            command,
            offset,
            length: length.into(),
        };
        let cookie = self.next_cookie();
        let header = Request {
            flags,
            kind: command,
            cookie,
            offset,
            length,
        }
        .encode();
        let result = self
            .wire
            .send(&[&header, payload])
            .map_err(|e| Error::io(&self.info.name, step, e))
            .and_then(|()| self.reply(step, cookie, sink));
        match result {
            Ok(None) => Ok(()),
            Ok(Some((errno, message))) => {
                if errno == NBD_ESHUTDOWN {
                    // The protocol asks for a soft disconnect.
                    let _ = self.do_disconnect();
                    self.closed = Some("the server is shutting down (NBD_ESHUTDOWN)".into());
                }
                Err(Error::Request {
                    export: self.info.name.clone(),
                    command,
                    offset,
                    length: length.into(),
                    errno,
                    message,
                })
            }
            Err(e) => {
                if e.ends_connection() {
                    self.closed = Some(e.to_string());
                }
                Err(e)
            }
        }
    }

    /// Reads the reply to the request `step` sent with `cookie`.
    fn reply(&mut self, step: Step, cookie: u64, sink: Sink<'_>) -> Result<Option<Failed>> {
        let export = self.info.name.as_str();
        let io = |e| Error::io(export, step, e);
        let violation = |v: Violation| Error::protocol(export, step, v);
        let head: [u8; SimpleReply::LEN] = self.wire.array().map_err(io)?;
        match u32::from_be_bytes(head[..4].try_into().unwrap()) {
            NBD_SIMPLE_REPLY_MAGIC => {}
            NBD_STRUCTURED_REPLY_MAGIC => {
                if !self.structured {
                    return Err(violation(Violation::StructuredNotNegotiated));
                }
                let mut b = [0u8; ChunkHeader::LEN];
                b[..head.len()].copy_from_slice(&head);
                self.wire.read_exact(&mut b[head.len()..]).map_err(io)?;
                let h = ChunkHeader::parse(&b).map_err(|e| violation(e.into()))?;
                return self.chunks(step, cookie, h, sink);
            }
            found => {
                let expected = if self.structured {
                    NBD_STRUCTURED_REPLY_MAGIC
                } else {
                    NBD_SIMPLE_REPLY_MAGIC
                };
                return Err(violation(
                    ReplyError::BadMagic {
                        what: "reply",
                        found: found.into(),
                        expected: expected.into(),
                    }
                    .into(),
                ));
            }
        }
        let r = SimpleReply::parse(&head).map_err(|e| violation(e.into()))?;
        if r.cookie != cookie {
            return Err(violation(Violation::WrongCookie {
                expected: cookie,
                found: r.cookie,
            }));
        }
        if r.error != 0 {
            return Ok(Some((r.error, String::new())));
        }
        if let Sink::Data(buf) = sink {
            // With structured replies, a read's data cannot come in a
            // simple reply (§ "Simple reply message").
            if self.structured {
                return Err(violation(Violation::SimpleReplyToRead));
            }
            self.wire.read_exact(buf).map_err(io)?;
        }
        Ok(None)
    }

    /// The chunks of a structured reply, `h` the first one's header.
    fn chunks(
        &mut self,
        step: Step,
        cookie: u64,
        mut h: ChunkHeader,
        mut sink: Sink<'_>,
    ) -> Result<Option<Failed>> {
        let export = self.info.name.as_str();
        let io = |e| Error::io(export, step, e);
        let violation = |v: Violation| Error::protocol(export, step, v);
        let Step::Request { offset, length, .. } = step else {
            unreachable!("replies answer requests")
        };
        let mut coverage = Coverage::new(offset, length);
        let mut failed: Option<Failed> = None;
        let mut status = false;
        loop {
            if h.cookie != cookie {
                return Err(violation(Violation::WrongCookie {
                    expected: cookie,
                    found: h.cookie,
                }));
            }
            if h.kind == NBD_REPLY_TYPE_OFFSET_DATA {
                // Data goes straight where it belongs.
                let Sink::Data(buf) = &mut sink else {
                    return Err(violation(Violation::UnexpectedChunk { kind: h.kind }));
                };
                let n = h.data_length().map_err(|e| violation(e.into()))?;
                let at = self.wire.u64().map_err(io)?;
                let range = coverage.take(at, n.into()).map_err(violation)?;
                self.wire.read_exact(&mut buf[range]).map_err(io)?;
            } else {
                if h.length > MAX_CHUNK {
                    return Err(violation(Violation::ChunkTooLong {
                        length: h.length,
                        limit: MAX_CHUNK,
                    }));
                }
                let payload = self.wire.bytes(h.length).map_err(io)?;
                let chunk = Chunk::parse(h.kind, &payload).map_err(|e| violation(e.into()))?;
                match (chunk, &mut sink) {
                    (Chunk::None, _) => {
                        if !h.done() {
                            return Err(violation(Violation::NoneNotLast));
                        }
                    }
                    (Chunk::OffsetHole { offset, length }, Sink::Data(buf)) => {
                        let range = coverage.take(offset, length.into()).map_err(violation)?;
                        buf[range].fill(0);
                    }
                    (
                        Chunk::BlockStatus {
                            context,
                            descriptors,
                        },
                        Sink::Status(out),
                    ) => {
                        if Some(context) != self.allocation {
                            return Err(violation(Violation::UnknownContext { id: context }));
                        }
                        if status {
                            return Err(violation(Violation::DuplicateStatus));
                        }
                        status = true;
                        out.extend(descriptors);
                    }
                    (Chunk::Error { error, message }, _)
                    | (Chunk::OtherError { error, message, .. }, _) => {
                        failed.get_or_insert((error, message));
                    }
                    (
                        Chunk::ErrorOffset {
                            error,
                            message,
                            offset,
                        },
                        _,
                    ) => {
                        failed.get_or_insert((error, format!("{message} (at offset {offset})")));
                    }
                    (c, _) => return Err(violation(Violation::UnexpectedChunk { kind: c.kind() })),
                }
            }
            if h.done() {
                break;
            }
            let b = self.wire.array().map_err(io)?;
            h = ChunkHeader::parse(&b).map_err(|e| violation(e.into()))?;
        }
        if failed.is_some() {
            return Ok(failed);
        }
        match sink {
            Sink::Data(_) => {
                if let Some((offset, length)) = coverage.gap() {
                    return Err(violation(Violation::Incomplete { offset, length }));
                }
            }
            Sink::Status(_) if !status => return Err(violation(Violation::MissingStatus)),
            _ => {}
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage_refuses_overlaps_and_strays_and_finds_gaps() {
        let mut c = Coverage::new(100, 50);
        assert_eq!(c.take(120, 10), Ok(20..30));
        assert_eq!(c.take(100, 10), Ok(0..10));
        assert_eq!(c.gap(), Some((110, 10)));
        assert_eq!(
            c.take(125, 10),
            Err(Violation::Overlap {
                offset: 125,
                length: 10
            })
        );
        assert_eq!(
            c.take(105, 10),
            Err(Violation::Overlap {
                offset: 105,
                length: 10
            })
        );
        assert!(matches!(
            c.take(99, 1),
            Err(Violation::OutsideRequest { .. })
        ));
        assert!(matches!(
            c.take(145, 6),
            Err(Violation::OutsideRequest { .. })
        ));
        assert!(matches!(
            c.take(u64::MAX, 2),
            Err(Violation::OutsideRequest { .. })
        ));
        c.take(110, 10).unwrap();
        assert_eq!(c.gap(), Some((130, 20)));
        c.take(130, 20).unwrap();
        assert_eq!(c.gap(), None);
    }

    #[test]
    fn pieces_split_at_the_maximum() {
        let p: Vec<_> = Client::pieces(10, 25, 10).collect();
        assert_eq!(p, vec![(10, 10), (20, 10), (30, 5)]);
        assert_eq!(Client::pieces(0, 0, 10).count(), 0);
    }
}
