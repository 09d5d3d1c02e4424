//! Encoders for option replies (§ "Option reply types") and transmission
//! replies (§ "Simple reply message", "Structured reply chunk message").

use crate::device::Extent;
use crate::proto::*;

/// An option reply: magic, option, reply type, length, data.
pub fn option_reply(option: u32, reply: u32, data: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(20 + data.len());
    b.extend(REPLY_MAGIC.to_be_bytes());
    b.extend(option.to_be_bytes());
    b.extend(reply.to_be_bytes());
    b.extend((data.len() as u32).to_be_bytes());
    b.extend(data);
    b
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

/// A simple reply header (the data of a successful READ follows it).
pub fn simple(cookie: u64, error: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0..4].copy_from_slice(&NBD_SIMPLE_REPLY_MAGIC.to_be_bytes());
    b[4..8].copy_from_slice(&error.to_be_bytes());
    b[8..16].copy_from_slice(&cookie.to_be_bytes());
    b
}

/// A structured reply chunk header for `len` bytes of payload.
pub fn chunk_header(cookie: u64, flags: u16, kind: u16, len: u32) -> [u8; 20] {
    let mut b = [0u8; 20];
    b[0..4].copy_from_slice(&NBD_STRUCTURED_REPLY_MAGIC.to_be_bytes());
    b[4..6].copy_from_slice(&flags.to_be_bytes());
    b[6..8].copy_from_slice(&kind.to_be_bytes());
    b[8..16].copy_from_slice(&cookie.to_be_bytes());
    b[16..20].copy_from_slice(&len.to_be_bytes());
    b
}

/// NBD_REPLY_TYPE_ERROR, always the final chunk.
pub fn chunk_error(cookie: u64, error: u32, message: &str) -> Vec<u8> {
    // Messages are capped: a client has no use for more.
    let msg = &message.as_bytes()[..message.len().min(1024)];
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
