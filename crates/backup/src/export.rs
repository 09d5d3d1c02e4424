//! Exporting the content of a disk (a frozen checkpoint chain) as a VHDX:
//! in full, or as a differencing file holding only changed ranges on top of
//! the previous point's file. Both hash the content per [`HASH_BLOCK`], and
//! keep the chaining values of its 64 KiB pieces (see [`crate::cv`]) so a
//! differential reads only the pieces that changed.

use crate::cv::{self, block_hash, Cv, PIECE, PIECES};
use crate::error::{BackupError, Result};
use crate::manifest::HASH_BLOCK;
use std::path::Path;
use storage::Fs;
use vdisk::is_zero;
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
    /// Chaining values of the pieces of every whole hash block.
    pub cvs: Vec<Cv>,
}

pub fn hash(b: &[u8]) -> String {
    blake3::hash(b).to_hex().to_string()
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
    let mut e = Exported {
        cvs: vec![[0; 32]; cv::count(size)],
        ..Default::default()
    };
    let zero_hash = hash(&vec![0u8; HASH_BLOCK as usize]);
    let zero_cvs = cv::zero_block();
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
            let whole = piece.len() as u64 == HASH_BLOCK;
            let c = (off / HASH_BLOCK) as usize * PIECES;
            if !data || is_zero(piece) {
                if whole {
                    e.hashes.push(zero_hash.clone());
                    e.cvs[c..c + PIECES].copy_from_slice(&zero_cvs);
                } else {
                    e.hashes.push(hash(piece));
                }
            } else {
                if whole {
                    let cvs = &mut e.cvs[c..c + PIECES];
                    cv::pieces(piece, cvs);
                    e.hashes.push(block_hash(cvs).to_hex().to_string());
                } else {
                    e.hashes.push(hash(piece));
                }
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
/// previous point's hashes, updated where ranges changed, and `prev_cvs`
/// its pieces' chaining values if it kept them.
#[allow(clippy::too_many_arguments)]
pub fn export_diff(
    fs: &dyn Fs,
    src: &Chain,
    parent: &Path,
    dst: &Path,
    ranges: &[(u64, u64)],
    prev_hashes: &[String],
    prev_cvs: Option<Vec<Cv>>,
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
    let n = cv::count(size);
    let mut e = Exported {
        hashes: prev_hashes.to_vec(),
        // Unknown chaining values are zeros, which no block hashes to.
        cvs: prev_cvs
            .filter(|c| c.len() == n)
            .unwrap_or_else(|| vec![[0; 32]; n]),
        ..Default::default()
    };
    let mut buf = vec![0u8; HASH_BLOCK as usize];
    copy_ranges(&mut out, src, ranges, &mut e, &mut buf, size, progress)?;
    out.close()?;
    Ok(e)
}

/// Copies `ranges` (sorted) from `src` to `out` and rehashes each hash
/// block they touch: from the pieces they touch, read alone, when the
/// block's chaining values hash to its previous hash; else read whole.
fn copy_ranges(
    out: &mut vhdx::Vhdx,
    src: &Chain,
    ranges: &[(u64, u64)],
    e: &mut Exported,
    buf: &mut [u8],
    size: u64,
    progress: &mut dyn FnMut(u64),
) -> Result<()> {
    // The ranges cut at block boundaries, so each part lies in one block.
    let mut parts = Vec::with_capacity(ranges.len());
    for &(mut o, l) in ranges {
        let end = o + l;
        while o < end {
            let n = (end - o).min(HASH_BLOCK - o % HASH_BLOCK);
            parts.push((o, n));
            o += n;
        }
    }
    let mut rest = &parts[..];
    while let Some(&(first, _)) = rest.first() {
        let block = first / HASH_BLOCK;
        let n = rest
            .iter()
            .take_while(|p| p.0 / HASH_BLOCK == block)
            .count();
        let (group, tail) = rest.split_at(n);
        rest = tail;
        let start = block * HASH_BLOCK;
        let len = HASH_BLOCK.min(size - start);
        let b = &mut buf[..len as usize];
        let c = block as usize * PIECES;
        let bi = block as usize;
        let known = len == HASH_BLOCK
            && c + PIECES <= e.cvs.len()
            && block_hash(&e.cvs[c..c + PIECES]).to_hex().as_str() == e.hashes[bi];
        if known {
            let mut touched = [false; PIECES];
            for &(o, l) in group {
                let (a, z) = ((o - start) / PIECE, (o + l - 1 - start) / PIECE);
                touched[a as usize..=z as usize].fill(true);
            }
            let mut p = 0;
            while p < PIECES {
                if !touched[p] {
                    p += 1;
                    continue;
                }
                let q = p + touched[p..].iter().take_while(|&&t| t).count();
                let (a, z) = (p * PIECE as usize, q * PIECE as usize);
                src.read(start + a as u64, &mut b[a..z])?;
                e.bytes_read += (z - a) as u64;
                for (i, d) in (p..q).zip(b[a..z].chunks(PIECE as usize)) {
                    e.cvs[c + i] = cv::piece(d, i);
                }
                p = q;
            }
            e.hashes[bi] = block_hash(&e.cvs[c..c + PIECES]).to_hex().to_string();
        } else {
            src.read(start, b)?;
            e.bytes_read += len;
            e.hashes[bi] = if len == HASH_BLOCK {
                let cvs = &mut e.cvs[c..c + PIECES];
                cv::pieces(b, cvs);
                block_hash(cvs).to_hex().to_string()
            } else {
                hash(b)
            };
        }
        for &(o, l) in group {
            out.write(o, &b[(o - start) as usize..(o + l - start) as usize])?;
            e.bytes_written += l;
            progress(l);
        }
    }
    Ok(())
}
