//! Option replies (§ "Option reply types") and transmission replies
//! (§ "Simple reply message", "Structured reply chunk message",
//! "Structured reply types"): what the server sends, encoded by the free
//! functions below (the server's side) and parsed back by the typed
//! messages (the client's side), so that `parse(encode(x)) == x`.
//!
//! ```text
//! option reply     OptionReplyHeader (20 bytes) + data:
//!                    NBD_REP_INFO          Info
//!                    NBD_REP_META_CONTEXT  MetaContextReply
//!                    NBD_REP_SERVER        ExportListing
//!                    NBD_REP_ERR_*         a message for humans
//! simple reply     SimpleReply (16 bytes) [+ read data]
//! structured chunk ChunkHeader (20 bytes) + payload: Chunk
//! ```
//!
//! Parsers take untrusted bytes and never panic; a message the protocol
//! does not allow is a [`ReplyError`] naming what is wrong with it.

use crate::device::{BlockSize, Extent};
use crate::proto::*;

/// What is wrong with a reply the peer sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReplyError {
    #[error("bad {what} magic {found:#x} (expected {expected:#x})")]
    BadMagic {
        what: &'static str,
        found: u64,
        expected: u64,
    },
    #[error("{what} is {length} bytes long, which its type does not allow ({expected})")]
    BadLength {
        what: &'static str,
        length: usize,
        expected: &'static str,
    },
    #[error("{what} claims {claimed} bytes, but only {room} follow")]
    Overrun {
        what: &'static str,
        claimed: usize,
        room: usize,
    },
    #[error("{0} is zero, which the protocol forbids")]
    Zero(&'static str),
    #[error("unknown structured reply type {0:#06x} (not an error type)")]
    UnknownChunkType(u16),
}

fn be16(b: &[u8]) -> u16 {
    u16::from_be_bytes([b[0], b[1]])
}
fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes(b[..4].try_into().unwrap())
}
fn be64(b: &[u8]) -> u64 {
    u64::from_be_bytes(b[..8].try_into().unwrap())
}
/// Text for humans (messages, names): invalid UTF-8 is shown, not refused.
fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

// ---------------------------------------------------------------------------
// Option replies

/// The fixed part of an option reply (§ "Fixed newstyle negotiation"):
/// magic, the option answered, the reply type, the data's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OptionReplyHeader {
    pub option: u32,
    pub reply: u32,
    pub length: u32,
}

impl OptionReplyHeader {
    pub const LEN: usize = 20;

    pub fn parse(b: &[u8; Self::LEN]) -> Result<Self, ReplyError> {
        let magic = be64(b);
        if magic != REPLY_MAGIC {
            return Err(ReplyError::BadMagic {
                what: "option reply",
                found: magic,
                expected: REPLY_MAGIC,
            });
        }
        Ok(OptionReplyHeader {
            option: be32(&b[8..]),
            reply: be32(&b[12..]),
            length: be32(&b[16..]),
        })
    }

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0..8].copy_from_slice(&REPLY_MAGIC.to_be_bytes());
        b[8..12].copy_from_slice(&self.option.to_be_bytes());
        b[12..16].copy_from_slice(&self.reply.to_be_bytes());
        b[16..20].copy_from_slice(&self.length.to_be_bytes());
        b
    }

    /// Whether the reply type is an error (`NBD_REP_ERR_*`).
    pub fn is_error(&self) -> bool {
        self.reply & NBD_REP_FLAG_ERROR != 0
    }
}

/// An option reply: magic, option, reply type, length, data.
pub fn option_reply(option: u32, reply: u32, data: &[u8]) -> Vec<u8> {
    let length = u32::try_from(data.len()).expect("option reply data is under 4 GiB");
    let mut b = Vec::with_capacity(OptionReplyHeader::LEN + data.len());
    b.extend(
        OptionReplyHeader {
            option,
            reply,
            length,
        }
        .encode(),
    );
    b.extend(data);
    b
}

/// The data of an NBD_REP_INFO reply (§ "NBD_REP_INFO").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Info {
    /// NBD_INFO_EXPORT: the export's size and transmission flags.
    Export { size: u64, flags: u16 },
    /// NBD_INFO_NAME: the server's canonical name of the export.
    Name(String),
    /// NBD_INFO_DESCRIPTION.
    Description(String),
    /// NBD_INFO_BLOCK_SIZE: minimum, preferred and maximum payload sizes.
    BlockSize(BlockSize),
    /// An information type this crate does not know (a client ignores it).
    Other { kind: u16, data: Vec<u8> },
}

impl Info {
    pub fn parse(data: &[u8]) -> Result<Info, ReplyError> {
        if data.len() < 2 {
            return Err(ReplyError::BadLength {
                what: "NBD_REP_INFO",
                length: data.len(),
                expected: "at least 2",
            });
        }
        let kind = be16(data);
        let exact = |what, n: usize, expected| {
            if data.len() == n {
                Ok(())
            } else {
                Err(ReplyError::BadLength {
                    what,
                    length: data.len(),
                    expected,
                })
            }
        };
        Ok(match kind {
            NBD_INFO_EXPORT => {
                exact("NBD_INFO_EXPORT", 12, "exactly 12")?;
                Info::Export {
                    size: be64(&data[2..]),
                    flags: be16(&data[10..]),
                }
            }
            NBD_INFO_BLOCK_SIZE => {
                exact("NBD_INFO_BLOCK_SIZE", 14, "exactly 14")?;
                Info::BlockSize(BlockSize {
                    minimum: be32(&data[2..]),
                    preferred: be32(&data[6..]),
                    maximum: be32(&data[10..]),
                })
            }
            NBD_INFO_NAME => Info::Name(text(&data[2..])),
            NBD_INFO_DESCRIPTION => Info::Description(text(&data[2..])),
            kind => Info::Other {
                kind,
                data: data[2..].to_vec(),
            },
        })
    }

    /// The data [`Self::parse`] reads.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Info::Export { size, flags } => info_export(*size, *flags),
            Info::Name(s) => info_string(NBD_INFO_NAME, s),
            Info::Description(s) => info_string(NBD_INFO_DESCRIPTION, s),
            Info::BlockSize(b) => info_block_size(b.minimum, b.preferred, b.maximum),
            Info::Other { kind, data } => {
                let mut d = kind.to_be_bytes().to_vec();
                d.extend(data);
                d
            }
        }
    }
}

/// The data of an NBD_REP_META_CONTEXT reply: a context's id and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaContextReply {
    pub id: u32,
    pub name: String,
}

impl MetaContextReply {
    pub fn parse(data: &[u8]) -> Result<Self, ReplyError> {
        if data.len() < 4 {
            return Err(ReplyError::BadLength {
                what: "NBD_REP_META_CONTEXT",
                length: data.len(),
                expected: "at least 4",
            });
        }
        Ok(MetaContextReply {
            id: be32(data),
            name: text(&data[4..]),
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        meta_context(self.id, &self.name)
    }
}

/// The data of an NBD_REP_SERVER reply (one export of NBD_OPT_LIST).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportListing {
    pub name: String,
    pub description: String,
}

impl ExportListing {
    pub fn parse(data: &[u8]) -> Result<Self, ReplyError> {
        if data.len() < 4 {
            return Err(ReplyError::BadLength {
                what: "NBD_REP_SERVER",
                length: data.len(),
                expected: "at least 4",
            });
        }
        let n = be32(data) as usize;
        let rest = &data[4..];
        if n > rest.len() {
            return Err(ReplyError::Overrun {
                what: "NBD_REP_SERVER's name length",
                claimed: n,
                room: rest.len(),
            });
        }
        Ok(ExportListing {
            name: text(&rest[..n]),
            description: text(&rest[n..]),
        })
    }

    pub fn encode(&self) -> Vec<u8> {
        rep_server(&self.name, &self.description)
    }
}

/// NBD_REP_SERVER data: the name's length, the name, then the description.
pub fn rep_server(name: &str, description: &str) -> Vec<u8> {
    let mut d = Vec::new();
    d.extend((name.len() as u32).to_be_bytes());
    d.extend(name.as_bytes());
    d.extend(description.as_bytes());
    d
}

/// NBD_REP_INFO data for NBD_INFO_EXPORT.
pub fn info_export(size: u64, flags: u16) -> Vec<u8> {
    let mut d = Vec::new();
    d.extend(NBD_INFO_EXPORT.to_be_bytes());
    d.extend(size.to_be_bytes());
    d.extend(flags.to_be_bytes());
    d
}

/// NBD_REP_INFO data for NBD_INFO_NAME or NBD_INFO_DESCRIPTION.
pub fn info_string(kind: u16, s: &str) -> Vec<u8> {
    let mut d = Vec::new();
    d.extend(kind.to_be_bytes());
    d.extend(s.as_bytes());
    d
}

pub fn info_block_size(min: u32, preferred: u32, max: u32) -> Vec<u8> {
    let mut d = Vec::new();
    d.extend(NBD_INFO_BLOCK_SIZE.to_be_bytes());
    d.extend(min.to_be_bytes());
    d.extend(preferred.to_be_bytes());
    d.extend(max.to_be_bytes());
    d
}

/// NBD_REP_META_CONTEXT data.
pub fn meta_context(id: u32, name: &str) -> Vec<u8> {
    let mut d = Vec::new();
    d.extend(id.to_be_bytes());
    d.extend(name.as_bytes());
    d
}

// ---------------------------------------------------------------------------
// Transmission replies

/// A simple reply (§ "Simple reply message"); the data of a successful
/// READ follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SimpleReply {
    pub error: u32,
    pub cookie: u64,
}

impl SimpleReply {
    pub const LEN: usize = 16;

    pub fn parse(b: &[u8; Self::LEN]) -> Result<Self, ReplyError> {
        let magic = be32(b);
        if magic != NBD_SIMPLE_REPLY_MAGIC {
            return Err(ReplyError::BadMagic {
                what: "simple reply",
                found: magic.into(),
                expected: NBD_SIMPLE_REPLY_MAGIC.into(),
            });
        }
        Ok(SimpleReply {
            error: be32(&b[4..]),
            cookie: be64(&b[8..]),
        })
    }

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0..4].copy_from_slice(&NBD_SIMPLE_REPLY_MAGIC.to_be_bytes());
        b[4..8].copy_from_slice(&self.error.to_be_bytes());
        b[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        b
    }
}

/// A simple reply header (the data of a successful READ follows it).
pub fn simple(cookie: u64, error: u32) -> [u8; 16] {
    SimpleReply { error, cookie }.encode()
}

/// The header of a structured reply chunk (§ "Structured reply chunk
/// message"); `length` bytes of payload follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkHeader {
    pub flags: u16,
    pub kind: u16,
    pub cookie: u64,
    pub length: u32,
}

impl ChunkHeader {
    pub const LEN: usize = 20;

    pub fn parse(b: &[u8; Self::LEN]) -> Result<Self, ReplyError> {
        let magic = be32(b);
        if magic != NBD_STRUCTURED_REPLY_MAGIC {
            return Err(ReplyError::BadMagic {
                what: "structured reply chunk",
                found: magic.into(),
                expected: NBD_STRUCTURED_REPLY_MAGIC.into(),
            });
        }
        Ok(ChunkHeader {
            flags: be16(&b[4..]),
            kind: be16(&b[6..]),
            cookie: be64(&b[8..]),
            length: be32(&b[16..]),
        })
    }

    pub fn encode(&self) -> [u8; Self::LEN] {
        let mut b = [0u8; Self::LEN];
        b[0..4].copy_from_slice(&NBD_STRUCTURED_REPLY_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&self.flags.to_be_bytes());
        b[6..8].copy_from_slice(&self.kind.to_be_bytes());
        b[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        b[16..20].copy_from_slice(&self.length.to_be_bytes());
        b
    }

    /// Whether this is the reply's last chunk (`NBD_REPLY_FLAG_DONE`).
    pub fn done(&self) -> bool {
        self.flags & NBD_REPLY_FLAG_DONE != 0
    }

    /// For an NBD_REPLY_TYPE_OFFSET_DATA chunk, the number of data bytes
    /// after the 8-byte offset (a reader may move them straight where
    /// they belong instead of through [`Chunk::parse`]).
    pub fn data_length(&self) -> Result<u32, ReplyError> {
        if self.length < 9 {
            return Err(ReplyError::BadLength {
                what: "NBD_REPLY_TYPE_OFFSET_DATA",
                length: self.length as usize,
                expected: "at least 9",
            });
        }
        Ok(self.length - 8)
    }
}

/// A structured reply chunk header for `len` bytes of payload.
pub fn chunk_header(cookie: u64, flags: u16, kind: u16, len: u32) -> [u8; 20] {
    ChunkHeader {
        flags,
        kind,
        cookie,
        length: len,
    }
    .encode()
}

/// One descriptor of an NBD_REPLY_TYPE_BLOCK_STATUS chunk: `length` bytes
/// (never zero) with the context's status `flags`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockDescriptor {
    pub length: u32,
    pub flags: u32,
}

/// The payload of a structured reply chunk (§ "Structured reply types").
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chunk {
    /// NBD_REPLY_TYPE_NONE: no payload.
    None,
    /// NBD_REPLY_TYPE_OFFSET_DATA: bytes of the export from `offset` on.
    OffsetData { offset: u64, data: Vec<u8> },
    /// NBD_REPLY_TYPE_OFFSET_HOLE: `length` bytes from `offset` read as zeros.
    OffsetHole { offset: u64, length: u32 },
    /// NBD_REPLY_TYPE_BLOCK_STATUS: consecutive descriptors of one context.
    BlockStatus {
        context: u32,
        descriptors: Vec<BlockDescriptor>,
    },
    /// NBD_REPLY_TYPE_ERROR.
    Error { error: u32, message: String },
    /// NBD_REPLY_TYPE_ERROR_OFFSET: an error at `offset`.
    ErrorOffset {
        error: u32,
        message: String,
        offset: u64,
    },
    /// An error type this crate does not know (bit 15 set): its common
    /// fields, and the bytes after them.
    OtherError {
        kind: u16,
        error: u32,
        message: String,
        rest: Vec<u8>,
    },
}

/// The fields every error chunk starts with: error, message length,
/// message; and what follows them.
fn error_fields<'a>(
    what: &'static str,
    p: &'a [u8],
) -> Result<(u32, String, &'a [u8]), ReplyError> {
    if p.len() < 6 {
        return Err(ReplyError::BadLength {
            what,
            length: p.len(),
            expected: "at least 6",
        });
    }
    let error = be32(p);
    if error == 0 {
        return Err(ReplyError::Zero("the error value of an error chunk"));
    }
    let n = be16(&p[4..]) as usize;
    let rest = &p[6..];
    if n > rest.len() {
        return Err(ReplyError::Overrun {
            what: "an error chunk's message length",
            claimed: n,
            room: rest.len(),
        });
    }
    Ok((error, text(&rest[..n]), &rest[n..]))
}

fn put_error(b: &mut Vec<u8>, error: u32, message: &str) {
    let msg = capped(message, u16::MAX as usize);
    b.extend(error.to_be_bytes());
    b.extend((msg.len() as u16).to_be_bytes());
    b.extend(msg.as_bytes());
}

/// The longest prefix of `s` of at most `max` bytes that ends on a
/// character boundary.
fn capped(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Chunk {
    /// Parses the payload of a chunk of type `kind`.
    pub fn parse(kind: u16, p: &[u8]) -> Result<Chunk, ReplyError> {
        let bad = |what, expected| ReplyError::BadLength {
            what,
            length: p.len(),
            expected,
        };
        Ok(match kind {
            NBD_REPLY_TYPE_NONE => {
                if !p.is_empty() {
                    return Err(bad("NBD_REPLY_TYPE_NONE", "exactly 0"));
                }
                Chunk::None
            }
            NBD_REPLY_TYPE_OFFSET_DATA => {
                if p.len() < 9 {
                    return Err(bad("NBD_REPLY_TYPE_OFFSET_DATA", "at least 9"));
                }
                Chunk::OffsetData {
                    offset: be64(p),
                    data: p[8..].to_vec(),
                }
            }
            NBD_REPLY_TYPE_OFFSET_HOLE => {
                if p.len() != 12 {
                    return Err(bad("NBD_REPLY_TYPE_OFFSET_HOLE", "exactly 12"));
                }
                let length = be32(&p[8..]);
                if length == 0 {
                    return Err(ReplyError::Zero("the size of a hole"));
                }
                Chunk::OffsetHole {
                    offset: be64(p),
                    length,
                }
            }
            NBD_REPLY_TYPE_BLOCK_STATUS => {
                if p.len() < 12 || !(p.len() - 4).is_multiple_of(8) {
                    return Err(bad(
                        "NBD_REPLY_TYPE_BLOCK_STATUS",
                        "4 + a positive multiple of 8",
                    ));
                }
                let descriptors = p[4..]
                    .chunks_exact(8)
                    .map(|d| BlockDescriptor {
                        length: be32(d),
                        flags: be32(&d[4..]),
                    })
                    .collect::<Vec<_>>();
                if descriptors.iter().any(|d| d.length == 0) {
                    return Err(ReplyError::Zero("the length of a block status descriptor"));
                }
                Chunk::BlockStatus {
                    context: be32(p),
                    descriptors,
                }
            }
            NBD_REPLY_TYPE_ERROR => {
                let (error, message, rest) = error_fields("NBD_REPLY_TYPE_ERROR", p)?;
                if !rest.is_empty() {
                    return Err(ReplyError::BadLength {
                        what: "NBD_REPLY_TYPE_ERROR",
                        length: p.len(),
                        expected: "6 + its message length",
                    });
                }
                Chunk::Error { error, message }
            }
            NBD_REPLY_TYPE_ERROR_OFFSET => {
                let (error, message, rest) = error_fields("NBD_REPLY_TYPE_ERROR_OFFSET", p)?;
                if rest.len() != 8 {
                    return Err(ReplyError::BadLength {
                        what: "NBD_REPLY_TYPE_ERROR_OFFSET",
                        length: p.len(),
                        expected: "14 + its message length",
                    });
                }
                Chunk::ErrorOffset {
                    error,
                    message,
                    offset: be64(rest),
                }
            }
            kind if kind & NBD_REPLY_TYPE_FLAG_ERROR != 0 => {
                let (error, message, rest) = error_fields("an error chunk", p)?;
                Chunk::OtherError {
                    kind,
                    error,
                    message,
                    rest: rest.to_vec(),
                }
            }
            kind => return Err(ReplyError::UnknownChunkType(kind)),
        })
    }

    /// The chunk's type (`NBD_REPLY_TYPE_*`).
    pub fn kind(&self) -> u16 {
        match self {
            Chunk::None => NBD_REPLY_TYPE_NONE,
            Chunk::OffsetData { .. } => NBD_REPLY_TYPE_OFFSET_DATA,
            Chunk::OffsetHole { .. } => NBD_REPLY_TYPE_OFFSET_HOLE,
            Chunk::BlockStatus { .. } => NBD_REPLY_TYPE_BLOCK_STATUS,
            Chunk::Error { .. } => NBD_REPLY_TYPE_ERROR,
            Chunk::ErrorOffset { .. } => NBD_REPLY_TYPE_ERROR_OFFSET,
            Chunk::OtherError { kind, .. } => *kind,
        }
    }

    /// The payload [`Self::parse`] reads. Messages longer than 65535
    /// bytes are cut (the 16-bit length cannot say more).
    pub fn encode_payload(&self) -> Vec<u8> {
        let mut b = Vec::new();
        match self {
            Chunk::None => {}
            Chunk::OffsetData { offset, data } => {
                b.extend(offset.to_be_bytes());
                b.extend(data);
            }
            Chunk::OffsetHole { offset, length } => {
                b.extend(offset.to_be_bytes());
                b.extend(length.to_be_bytes());
            }
            Chunk::BlockStatus {
                context,
                descriptors,
            } => {
                b.extend(context.to_be_bytes());
                for d in descriptors {
                    b.extend(d.length.to_be_bytes());
                    b.extend(d.flags.to_be_bytes());
                }
            }
            Chunk::Error { error, message } => put_error(&mut b, *error, message),
            Chunk::ErrorOffset {
                error,
                message,
                offset,
            } => {
                put_error(&mut b, *error, message);
                b.extend(offset.to_be_bytes());
            }
            Chunk::OtherError {
                error,
                message,
                rest,
                ..
            } => {
                put_error(&mut b, *error, message);
                b.extend(rest);
            }
        }
        b
    }

    /// The whole chunk: header (with `cookie` and `flags`) and payload.
    pub fn encode(&self, cookie: u64, flags: u16) -> Vec<u8> {
        let payload = self.encode_payload();
        let length = u32::try_from(payload.len()).expect("a chunk payload is under 4 GiB");
        let mut b = chunk_header(cookie, flags, self.kind(), length).to_vec();
        b.extend(payload);
        b
    }
}

/// NBD_REPLY_TYPE_ERROR, always the final chunk.
pub fn chunk_error(cookie: u64, error: u32, message: &str) -> Vec<u8> {
    // Messages are capped: a client has no use for more.
    let msg = capped(message, 1024).as_bytes();
    let mut b = chunk_header(
        cookie,
        NBD_REPLY_FLAG_DONE,
        NBD_REPLY_TYPE_ERROR,
        6 + msg.len() as u32,
    )
    .to_vec();
    b.extend(error.to_be_bytes());
    b.extend((msg.len() as u16).to_be_bytes());
    b.extend(msg);
    b
}

/// NBD_REPLY_TYPE_OFFSET_HOLE.
pub fn chunk_hole(cookie: u64, done: bool, offset: u64, len: u32) -> Vec<u8> {
    let flags = if done { NBD_REPLY_FLAG_DONE } else { 0 };
    let mut b = chunk_header(cookie, flags, NBD_REPLY_TYPE_OFFSET_HOLE, 12).to_vec();
    b.extend(offset.to_be_bytes());
    b.extend(len.to_be_bytes());
    b
}

/// The header (and offset) of an NBD_REPLY_TYPE_OFFSET_DATA chunk whose
/// `len` data bytes follow.
pub fn chunk_data_header(cookie: u64, done: bool, offset: u64, len: u32) -> Vec<u8> {
    let flags = if done { NBD_REPLY_FLAG_DONE } else { 0 };
    let mut b = chunk_header(cookie, flags, NBD_REPLY_TYPE_OFFSET_DATA, 8 + len).to_vec();
    b.extend(offset.to_be_bytes());
    b
}

/// NBD_REPLY_TYPE_BLOCK_STATUS for one context.
pub fn chunk_block_status(cookie: u64, done: bool, context: u32, extents: &[Extent]) -> Vec<u8> {
    let flags = if done { NBD_REPLY_FLAG_DONE } else { 0 };
    let len = 4 + 8 * extents.len() as u32;
    let mut b = chunk_header(cookie, flags, NBD_REPLY_TYPE_BLOCK_STATUS, len).to_vec();
    b.extend(context.to_be_bytes());
    for e in extents {
        b.extend((e.length as u32).to_be_bytes());
        b.extend(e.flags.to_be_bytes());
    }
    b
}

/// NBD_REPLY_TYPE_NONE with the done flag: success without data.
pub fn chunk_done(cookie: u64) -> [u8; 20] {
    chunk_header(cookie, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn info() -> impl Strategy<Value = Info> {
        prop_oneof![
            (any::<u64>(), any::<u16>()).prop_map(|(size, flags)| Info::Export { size, flags }),
            ".{0,40}".prop_map(Info::Name),
            ".{0,40}".prop_map(Info::Description),
            (any::<u32>(), any::<u32>(), any::<u32>()).prop_map(|(minimum, preferred, maximum)| {
                Info::BlockSize(BlockSize {
                    minimum,
                    preferred,
                    maximum,
                })
            }),
            (4u16.., proptest::collection::vec(any::<u8>(), 0..32))
                .prop_map(|(kind, data)| Info::Other { kind, data }),
        ]
    }

    fn error_value() -> impl Strategy<Value = u32> {
        1u32..
    }

    fn chunk() -> impl Strategy<Value = Chunk> {
        prop_oneof![
            Just(Chunk::None),
            (any::<u64>(), proptest::collection::vec(any::<u8>(), 1..64))
                .prop_map(|(offset, data)| Chunk::OffsetData { offset, data }),
            (any::<u64>(), 1u32..)
                .prop_map(|(offset, length)| Chunk::OffsetHole { offset, length }),
            (
                any::<u32>(),
                proptest::collection::vec((1u32.., any::<u32>()), 1..16)
            )
                .prop_map(|(context, d)| Chunk::BlockStatus {
                    context,
                    descriptors: d
                        .into_iter()
                        .map(|(length, flags)| BlockDescriptor { length, flags })
                        .collect(),
                }),
            (error_value(), ".{0,40}").prop_map(|(error, message)| Chunk::Error { error, message }),
            (error_value(), ".{0,40}", any::<u64>()).prop_map(|(error, message, offset)| {
                Chunk::ErrorOffset {
                    error,
                    message,
                    offset,
                }
            }),
            (
                (NBD_REPLY_TYPE_FLAG_ERROR | 3)..=u16::MAX,
                error_value(),
                ".{0,40}",
                proptest::collection::vec(any::<u8>(), 0..16)
            )
                .prop_map(|(kind, error, message, rest)| Chunk::OtherError {
                    kind,
                    error,
                    message,
                    rest,
                }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn option_reply_headers_parse_what_they_encode(
            option in any::<u32>(), reply in any::<u32>(), length in any::<u32>(),
        ) {
            let h = OptionReplyHeader { option, reply, length };
            prop_assert_eq!(OptionReplyHeader::parse(&h.encode()), Ok(h));
        }

        #[test]
        fn infos_parse_what_they_encode(i in info()) {
            prop_assert_eq!(Info::parse(&i.encode()), Ok(i));
        }

        #[test]
        fn meta_contexts_and_listings_parse_what_they_encode(
            id in any::<u32>(), name in ".{0,40}", description in ".{0,40}",
        ) {
            let m = MetaContextReply { id, name: name.clone() };
            prop_assert_eq!(MetaContextReply::parse(&m.encode()), Ok(m));
            let l = ExportListing { name, description };
            prop_assert_eq!(ExportListing::parse(&l.encode()), Ok(l));
        }

        #[test]
        fn reply_headers_parse_what_they_encode(
            flags in any::<u16>(), kind in any::<u16>(), cookie in any::<u64>(),
            length in any::<u32>(), error in any::<u32>(),
        ) {
            let s = SimpleReply { error, cookie };
            prop_assert_eq!(SimpleReply::parse(&s.encode()), Ok(s));
            let h = ChunkHeader { flags, kind, cookie, length };
            prop_assert_eq!(ChunkHeader::parse(&h.encode()), Ok(h));
        }

        #[test]
        fn chunks_parse_what_they_encode(c in chunk(), cookie in any::<u64>(), flags in any::<u16>()) {
            let b = c.encode(cookie, flags);
            let h = ChunkHeader::parse(b[..ChunkHeader::LEN].try_into().unwrap()).unwrap();
            prop_assert_eq!(h, ChunkHeader { flags, kind: c.kind(), cookie, length: (b.len() - 20) as u32 });
            prop_assert_eq!(Chunk::parse(h.kind, &b[ChunkHeader::LEN..]), Ok(c));
        }

        /// Any bytes at all: parsers answer, never panic.
        #[test]
        fn parsers_take_any_bytes(kind in any::<u16>(), b in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Chunk::parse(kind, &b);
            let _ = Info::parse(&b);
            let _ = MetaContextReply::parse(&b);
            let _ = ExportListing::parse(&b);
        }
    }

    /// What the server's encoders send is what the typed parsers read.
    #[test]
    fn the_servers_encoders_parse_back() {
        let header = |b: &[u8]| ChunkHeader::parse(b[..20].try_into().unwrap()).unwrap();
        let b = chunk_error(7, NBD_EPERM, "read-only");
        let h = header(&b);
        assert_eq!((h.cookie, h.done()), (7, true));
        assert_eq!(
            Chunk::parse(h.kind, &b[20..]),
            Ok(Chunk::Error {
                error: NBD_EPERM,
                message: "read-only".into()
            })
        );
        let b = chunk_hole(8, false, 4096, 512);
        let h = header(&b);
        assert!(!h.done());
        assert_eq!(
            Chunk::parse(h.kind, &b[20..]),
            Ok(Chunk::OffsetHole {
                offset: 4096,
                length: 512
            })
        );
        let mut b = chunk_data_header(9, true, 512, 3);
        let h = header(&b);
        assert_eq!(h.data_length(), Ok(3));
        b.extend([1, 2, 3]);
        assert_eq!(
            Chunk::parse(h.kind, &b[20..]),
            Ok(Chunk::OffsetData {
                offset: 512,
                data: vec![1, 2, 3]
            })
        );
        let ext = [
            Extent {
                length: 4096,
                flags: 3,
            },
            Extent {
                length: 512,
                flags: 0,
            },
        ];
        let b = chunk_block_status(10, true, 1, &ext);
        assert_eq!(
            Chunk::parse(header(&b).kind, &b[20..]),
            Ok(Chunk::BlockStatus {
                context: 1,
                descriptors: vec![
                    BlockDescriptor {
                        length: 4096,
                        flags: 3
                    },
                    BlockDescriptor {
                        length: 512,
                        flags: 0
                    }
                ]
            })
        );
        let b = chunk_done(11);
        assert_eq!(Chunk::parse(header(&b).kind, &b[20..]), Ok(Chunk::None));
        let b = option_reply(NBD_OPT_GO, NBD_REP_INFO, &info_block_size(1, 4096, 1 << 25));
        let h = OptionReplyHeader::parse(b[..20].try_into().unwrap()).unwrap();
        assert_eq!(
            (h.option, h.reply, h.length as usize),
            (NBD_OPT_GO, NBD_REP_INFO, b.len() - 20)
        );
        assert_eq!(
            Info::parse(&b[20..]),
            Ok(Info::BlockSize(BlockSize {
                minimum: 1,
                preferred: 4096,
                maximum: 1 << 25
            }))
        );
    }

    #[test]
    fn malformed_chunks_say_what_is_wrong() {
        assert_eq!(
            Chunk::parse(NBD_REPLY_TYPE_OFFSET_HOLE, &[0; 12]),
            Err(ReplyError::Zero("the size of a hole"))
        );
        assert!(matches!(
            Chunk::parse(NBD_REPLY_TYPE_BLOCK_STATUS, &[0; 8]),
            Err(ReplyError::BadLength { .. })
        ));
        // The message claims more bytes than the chunk has.
        let mut p = NBD_EIO.to_be_bytes().to_vec();
        p.extend(10u16.to_be_bytes());
        p.extend(b"abc");
        assert!(matches!(
            Chunk::parse(NBD_REPLY_TYPE_ERROR, &p),
            Err(ReplyError::Overrun {
                claimed: 10,
                room: 3,
                ..
            })
        ));
        assert_eq!(Chunk::parse(7, &[]), Err(ReplyError::UnknownChunkType(7)));
        assert!(matches!(
            ExportListing::parse(&[0, 0, 1, 0, b'a']),
            Err(ReplyError::Overrun { .. })
        ));
        // Messages are cut on a character boundary.
        let msg = "é".repeat(600);
        let b = chunk_error(1, NBD_EIO, &msg);
        let Ok(Chunk::Error { message, .. }) = Chunk::parse(NBD_REPLY_TYPE_ERROR, &b[20..]) else {
            panic!("not an error chunk")
        };
        assert_eq!(message, "é".repeat(512));
    }
}
