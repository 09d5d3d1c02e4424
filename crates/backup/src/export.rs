//! Exporting the content of a disk (a frozen checkpoint chain) as a VHDX:
//! in full, or as a differencing file holding only changed ranges on top of
//! the previous point's file. Both copy through `vdisk`'s copy engine
//! ([`vdisk::copy`]), whose observer hashes the content per [`HASH_BLOCK`]
//! as it passes, keeping the chaining values of its 64 KiB pieces (see
//! [`crate::cv`]) so a differential reads only the pieces that changed.

use crate::cv::{self, block_hash, Cv, PIECE, PIECES};
use crate::error::{BackupError, Result};
use crate::manifest::HASH_BLOCK;
use std::path::Path;
use storage::Fs;
use vdisk::copy::{copy_into, CopyOptions, Output, Piece};
use vdisk::is_zero;
use vhdx::{Chain, CreateOptions, DiskType};

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
    let out = Output::vhdx(fs, dst, &opts)?;
    let blocks = size.div_ceil(HASH_BLOCK) as usize;
    let hasher = BlockHasher::new(
        size,
        vec![String::new(); blocks],
        vec![[0; 32]; cv::count(size)],
    );
    export(src, out, None, vec![], hasher, progress)
}

/// Writes the `ranges` of `src` into a new differencing VHDX at `dst` whose
/// parent is `parent` (the previous point's file); `prev_hashes` are the
/// previous point's hashes, updated where ranges changed, and `prev_cvs`
/// its pieces' chaining values if it kept them.
///
/// Each hash block the ranges touch is rehashed: from the pieces they
/// touch, read alone, when the block's chaining values hash to its
/// previous hash; else from the whole block.
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
        return Err(BackupError::HashCount {
            have: prev_hashes.len(),
            blocks,
        });
    }
    let n = cv::count(size);
    // Unknown chaining values are zeros, which no block hashes to.
    let cvs = prev_cvs
        .filter(|c| c.len() == n)
        .unwrap_or_else(|| vec![[0; 32]; n]);
    let hasher = BlockHasher::new(size, prev_hashes.to_vec(), cvs);
    let context = hasher.context(ranges);
    let out = Output::vhdx_child(fs, dst, parent, Some(DIFF_BLOCK_SIZE))?;
    export(src, out, Some(ranges.to_vec()), context, hasher, progress)
}

/// Copies `ranges` (everything if `None`) and `context` of `src` into
/// `out` through the copy engine, `hasher` watching.
fn export(
    src: &Chain,
    out: Output<'_>,
    ranges: Option<Vec<(u64, u64)>>,
    context: Vec<(u64, u64)>,
    mut hasher: BlockHasher,
    progress: &mut dyn FnMut(u64),
) -> Result<Exported> {
    let mut last = 0;
    let mut observer = |p: Piece<'_>| hasher.see(p);
    let opts = CopyOptions {
        ranges,
        context,
        observer: Some(&mut observer),
    };
    let s = copy_into(src, out, opts, &mut |done, _| {
        progress(done - last);
        last = done;
    })?;
    let (hashes, cvs) = hasher.finish();
    Ok(Exported {
        bytes_read: s.bytes_read,
        bytes_written: s.bytes_written,
        hashes,
        cvs,
    })
}

/// Rehashes the hash blocks a copy shows it (see [`vdisk::copy::Piece`]):
/// a whole block from the chaining values of its 64 KiB pieces (those not
/// shown keep their values), the partial last block from its bytes, which
/// it is shown whole. Pieces arrive in order, each whole piece
/// contiguously; known zeros are not hashed (their values are known).
struct BlockHasher {
    size: u64,
    hashes: Vec<String>,
    cvs: Vec<Cv>,
    zero_cvs: Vec<Cv>,
    /// The block being shown, whose hash is due once the pieces move on.
    block: Option<u64>,
    /// Bytes of a piece shown in parts (or of the partial last block).
    part: Vec<u8>,
}

impl BlockHasher {
    fn new(size: u64, hashes: Vec<String>, cvs: Vec<Cv>) -> Self {
        Self {
            size,
            hashes,
            cvs,
            zero_cvs: cv::zero_block(),
            block: None,
            part: Vec::new(),
        }
    }

    /// What must be read besides `ranges` to rehash the blocks they touch:
    /// the touched pieces of a block whose chaining values are known (they
    /// hash to its previous hash), else the whole block.
    fn context(&self, ranges: &[(u64, u64)]) -> Vec<(u64, u64)> {
        let mut touched: Vec<(u64, u64)> = Vec::new();
        for &(o, l) in ranges.iter().filter(|r| r.1 > 0) {
            let (first, last) = (o / PIECE, (o + l - 1) / PIECE);
            touched.push((first * PIECE, (last - first + 1) * PIECE));
        }
        touched.sort_unstable();
        let mut out = Vec::new();
        for (o, l) in touched {
            let mut p = o;
            while p < o + l {
                let block = p / HASH_BLOCK;
                let start = block * HASH_BLOCK;
                let len = HASH_BLOCK.min(self.size - start);
                let end = (o + l).min(start + HASH_BLOCK);
                if self.known(block) {
                    out.push((p, end - p));
                } else {
                    out.push((start, len));
                }
                p = end;
            }
        }
        out
    }

    /// Whether `block` is whole and its chaining values hash to its hash.
    fn known(&self, block: u64) -> bool {
        let c = block as usize * PIECES;
        let start = block * HASH_BLOCK;
        HASH_BLOCK.min(self.size - start) == HASH_BLOCK
            && c + PIECES <= self.cvs.len()
            && block_hash(&self.cvs[c..c + PIECES]).to_hex().as_str() == self.hashes[block as usize]
    }

    fn see(&mut self, p: Piece<'_>) {
        let (mut off, end) = (p.offset(), p.offset() + p.len());
        while off < end {
            let block = off / HASH_BLOCK;
            if self.block != Some(block) {
                self.finish_block();
                self.block = Some(block);
            }
            let start = block * HASH_BLOCK;
            let whole = HASH_BLOCK.min(self.size - start) == HASH_BLOCK;
            let (lo, hi) = if whole {
                let piece = start + (off - start) / PIECE * PIECE;
                (piece, piece + PIECE)
            } else {
                (start, self.size)
            };
            let n = end.min(hi) - off;
            let bytes = match p {
                Piece::Data { offset, data } => {
                    Some(&data[(off - offset) as usize..(off - offset + n) as usize])
                }
                Piece::Zeros { .. } => None,
            };
            let index = ((lo - start) / PIECE) as usize;
            if whole && off == lo && n == PIECE {
                // A whole piece at once: no copy.
                let cv = match bytes {
                    Some(b) if !is_zero(b) => cv::piece(b, index),
                    _ => self.zero_cvs[index],
                };
                self.cvs[block as usize * PIECES + index] = cv;
            } else {
                // Assembled; the piece (or last block) is shown in order.
                debug_assert_eq!(self.part.len() as u64, off - lo);
                match bytes {
                    Some(b) => self.part.extend_from_slice(b),
                    None => self.part.resize(self.part.len() + n as usize, 0),
                }
                if whole && self.part.len() as u64 == PIECE {
                    self.cvs[block as usize * PIECES + index] = cv::piece(&self.part, index);
                    self.part.clear();
                }
            }
            off += n;
        }
    }

    /// Hashes the block being shown.
    fn finish_block(&mut self) {
        let Some(block) = self.block.take() else {
            return;
        };
        let start = block * HASH_BLOCK;
        self.hashes[block as usize] = if HASH_BLOCK.min(self.size - start) == HASH_BLOCK {
            let c = block as usize * PIECES;
            block_hash(&self.cvs[c..c + PIECES]).to_hex().to_string()
        } else {
            hash(&self.part)
        };
        self.part.clear();
    }

    fn finish(mut self) -> (Vec<String>, Vec<Cv>) {
        self.finish_block();
        (self.hashes, self.cvs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Shows `content[o..o+l]` for each `(o, l)`, cut at `cuts` (offsets)
    /// and with the all-zero cuts shown as known zeros.
    fn show(h: &mut BlockHasher, content: &[u8], ranges: &[(u64, u64)], cuts: &[u64]) {
        for &(o, l) in ranges {
            let mut at = o;
            for &c in cuts
                .iter()
                .filter(|&&c| c > o && c < o + l)
                .chain([&(o + l)])
            {
                let data = &content[at as usize..c as usize];
                if is_zero(data) {
                    h.see(Piece::Zeros {
                        offset: at,
                        len: c - at,
                    });
                } else {
                    h.see(Piece::Data { offset: at, data });
                }
                at = c;
            }
        }
    }

    fn hashes_of(content: &[u8]) -> Vec<String> {
        content.chunks(HASH_BLOCK as usize).map(hash).collect()
    }

    #[test]
    fn the_hasher_hashes_what_it_is_shown_however_it_is_cut() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(3);
        let size = 3 * HASH_BLOCK + 5000;
        let mut content: Vec<u8> = (0..size).map(|_| rng.gen()).collect();
        content[HASH_BLOCK as usize..2 * HASH_BLOCK as usize].fill(0);
        content[5 * PIECE as usize..6 * PIECE as usize].fill(0);
        let blocks = size.div_ceil(HASH_BLOCK) as usize;
        let cuts: Vec<u64> = (0..40).map(|_| rng.gen_range(0..size)).collect();
        let mut cuts = cuts;
        cuts.sort_unstable();
        let mut h = BlockHasher::new(
            size,
            vec![String::new(); blocks],
            vec![[0; 32]; cv::count(size)],
        );
        show(&mut h, &content, &[(0, size)], &cuts);
        let (hashes, cvs) = h.finish();
        assert_eq!(hashes, hashes_of(&content));

        // An incremental over these: known values, so only the touched
        // pieces are shown; an unknown block (its values zeroed) whole;
        // the partial last block whole.
        let mut cvs = cvs;
        let c = 2 * PIECES;
        cvs[c..c + PIECES].fill([0; 32]);
        let mut h = BlockHasher::new(size, hashes, cvs);
        let changes = [
            (PIECE + 10, 100),
            (2 * HASH_BLOCK + 3 * PIECE, PIECE),
            (size - 10, 4),
        ];
        let ctx = h.context(&changes);
        assert_eq!(
            ctx,
            vec![
                (PIECE, PIECE),
                (2 * HASH_BLOCK, HASH_BLOCK),
                (3 * HASH_BLOCK, 5000)
            ]
        );
        for &(o, l) in &changes {
            rng.fill(&mut content[o as usize..(o + l) as usize]);
        }
        show(&mut h, &content, &ctx, &cuts);
        let (hashes, _) = h.finish();
        assert_eq!(hashes, hashes_of(&content));
    }
}
