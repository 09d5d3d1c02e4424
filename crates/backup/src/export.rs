//! Exporting the content of a disk (a frozen checkpoint chain) as a VHDX:
//! in full, or as a differencing file holding only changed ranges on top of
//! the previous point's file. Both hash the content per [`HASH_BLOCK`].

use crate::error::{BackupError, Result};
use crate::manifest::HASH_BLOCK;
use std::path::Path;
use storage::Fs;
use vhdx::{create, create_child, Chain, CreateOptions, DiskType};

/// Block size of full exports.
pub const FULL_BLOCK_SIZE: u32 = 32 << 20;
/// Block size of differential exports: small, so the file stays
/// proportional to what changed.
pub const DIFF_BLOCK_SIZE: u32 = 2 << 20;

/// What an export did.
#[derive(Debug, Clone, Default)]
pub struct Exported {
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub hashes: Vec<String>,
}

pub fn hash(b: &[u8]) -> String {
    blake3::hash(b).to_hex().to_string()
}

fn is_zero(b: &[u8]) -> bool {
    let (chunks, rest) = b.split_at(b.len() / 16 * 16);
    chunks
        .chunks_exact(16)
        .all(|c| u128::from_ne_bytes(c.try_into().unwrap()) == 0)
        && rest.iter().all(|&x| x == 0)
}

/// Writes the whole content of `src` into a new dynamic VHDX at `dst`.
pub fn export_full(
    fs: &dyn Fs,
    src: &Chain,
    dst: &Path,
    progress: &mut dyn FnMut(u64),
) -> Result<Exported> {
    let size = src.virtual_size();
    let opts = CreateOptions {
        virtual_size: size,
        disk_type: DiskType::Dynamic,
        block_size: FULL_BLOCK_SIZE,
        logical_sector_size: src.logical_sector_size(),
        physical_sector_size: src.top().physical_sector_size(),
    };
    let mut out = create(fs, dst, &opts)?;
    let mut e = Exported::default();
    let zero_hash = hash(&vec![0u8; HASH_BLOCK as usize]);
    let chunk = 8 * HASH_BLOCK;
    let mut buf = vec![0u8; chunk as usize];
    let mut pos = 0;
    while pos < size {
        let len = chunk.min(size - pos);
        let b = &mut buf[..len as usize];
        let data = src.map(pos, len)?.iter().any(|x| x.2.is_some());
        if data {
            src.read(pos, b)?;
            e.bytes_read += len;
        } else {
            b.fill(0);
        }
        for piece in b.chunks(HASH_BLOCK as usize) {
            let off = pos + (piece.as_ptr() as usize - b.as_ptr() as usize) as u64;
            if !data || is_zero(piece) {
                e.hashes.push(if piece.len() as u64 == HASH_BLOCK {
                    zero_hash.clone()
                } else {
                    hash(piece)
                });
            } else {
                e.hashes.push(hash(piece));
                out.write(off, piece)?;
                e.bytes_written += piece.len() as u64;
            }
        }
        pos += len;
        progress(len);
    }
    out.close()?;
    Ok(e)
}

/// Writes the `ranges` of `src` into a new differencing VHDX at `dst` whose
/// parent is `parent` (the previous point's file); `prev_hashes` are the
/// previous point's hashes, updated where ranges changed.
pub fn export_diff(
    fs: &dyn Fs,
    src: &Chain,
    parent: &Path,
    dst: &Path,
    ranges: &[(u64, u64)],
    prev_hashes: &[String],
    progress: &mut dyn FnMut(u64),
) -> Result<Exported> {
    let size = src.virtual_size();
    let blocks = size.div_ceil(HASH_BLOCK) as usize;
    if prev_hashes.len() != blocks {
        return Err(BackupError::Repository(format!(
            "the previous point has {} hashes for a disk of {blocks} blocks",
            prev_hashes.len()
        )));
    }
    let mut out = create_child(fs, dst, parent, Some(DIFF_BLOCK_SIZE))?;
    let mut e = Exported {
        hashes: prev_hashes.to_vec(),
        ..Default::default()
    };
    let mut buf = vec![0u8; HASH_BLOCK as usize];
    copy_ranges(&mut out, src, ranges, &mut e, &mut buf, size, progress)?;
    out.close()?;
    Ok(e)
}

/// Copies `ranges` (sorted) from `src` to `out`, one read per hash block
/// touched, rehashing each such block.
fn copy_ranges(
    out: &mut vhdx::Vhdx,
    src: &Chain,
    ranges: &[(u64, u64)],
    e: &mut Exported,
    buf: &mut [u8],
    size: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    let mut pending: std::collections::VecDeque<(u64, u64)> = ranges.iter().copied().collect();
    while let Some((o, l)) = pending.pop_front() {
        let block = o / HASH_BLOCK;
        let start = block * HASH_BLOCK;
        let len = HASH_BLOCK.min(size - start);
        let b = &mut buf[..len as usize];
        src.read(start, b)?;
        e.bytes_read += len;
        e.hashes[block as usize] = hash(b);
        let mut cur = Some((o, l));
        while let Some((o, l)) = cur {
            let end = (o + l).min(start + len);
            out.write(o, &b[(o - start) as usize..(end - start) as usize])?;
            e.bytes_written += end - o;
            progress(end - o);
            if o + l > end {
                pending.push_front((end, o + l - end));
                cur = None;
            } else {
                cur = match pending.front() {
                    Some(&(no, _)) if no < start + len => pending.pop_front(),
                    _ => None,
                };
            }
        }
    }
    Ok(())
}
