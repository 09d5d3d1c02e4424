//! Payload I/O on one VHDX file: mapping virtual ranges to file ranges
//! (`resolve`), and the write, zero and trim paths that allocate blocks and
//! update the BAT and sector bitmaps in memory. Metadata reaches the file
//! only through the log, at the next flush (`commit.rs`).

use crate::bat::*;
use crate::disk::{DiskType, Vhdx};
use crate::error::{Error, Result};
use crate::format::*;
use crate::sector_bitmap;
use std::sync::Arc;

/// Where the bytes of a virtual range come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Stored in this file at this offset.
    File(u64),
    /// Reads as zeros.
    Zero,
    /// Not in this file: read the parent (zeros if there is none).
    Parent,
}

/// A run of a virtual range with one source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub len: u64,
    pub source: Source,
}

/// Bytes of zeros used to write zeroed ranges piecewise.
const ZERO_CHUNK: usize = MIB as usize;

/// Sector bitmaps (1 MB each, §2.4) kept in memory besides those with
/// unflushed changes; a clean one is dropped to make room and read again
/// when needed. Reading a large differencing disk end to end touches every
/// chunk's bitmap, and a damaged BAT can point all of them at the same
/// megabyte of a small file: unbounded, the cache would grow to 16 GB for a
/// 64 TB disk of 512-byte sectors.
const MAX_CACHED_BITMAPS: usize = 64;

impl Vhdx {
    pub(crate) fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        let size = self.virtual_size();
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(Error::OutOfRange {
                file: self.name.clone(),
                offset,
                len,
                size,
            });
        }
        Ok(())
    }

    /// The 1 MB sector bitmap of `chunk` (zeros if not allocated). At most
    /// [`MAX_CACHED_BITMAPS`] are kept besides those with unflushed changes.
    pub(crate) fn sector_bitmap(&self, chunk: u64) -> Result<Arc<Vec<u8>>> {
        let mut cache = self
            .sector_bitmaps
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(b) = cache.get(&chunk) {
            return Ok(b.clone());
        }
        let e = self.bat[self.geometry.sector_bitmap_index(chunk)];
        let mut b = vec![0u8; SECTOR_BITMAP_BLOCK_SIZE as usize];
        if e.state() == SB_BLOCK_PRESENT {
            self.read_meta(e.file_offset(), &mut b)?;
        }
        let b = Arc::new(b);
        if cache.len() >= MAX_CACHED_BITMAPS {
            let dirty = |c: u64| {
                self.dirty_bitmap_pages
                    .range((c, 0)..=(c, u64::MAX))
                    .next()
                    .is_some()
            };
            if let Some(clean) = cache.keys().copied().find(|&c| !dirty(c)) {
                cache.remove(&clean);
            }
        }
        cache.insert(chunk, b.clone());
        Ok(b)
    }

    /// Maps `offset..offset+len` of the virtual disk to extents.
    pub fn resolve(&self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        self.check_range(offset, len)?;
        let g = self.geometry;
        let bs = g.block_size as u64;
        let ss = g.logical_sector_size as u64;
        let mut out: Vec<Extent> = Vec::new();
        let mut push = |offset: u64, len: u64, source: Source| {
            if let Some(last) = out.last_mut() {
                let contiguous = match (last.source, source) {
                    (Source::File(a), Source::File(b)) => a + last.len == b,
                    (a, b) => a == b,
                };
                if contiguous && last.offset + last.len == offset {
                    last.len += len;
                    return;
                }
            }
            out.push(Extent {
                offset,
                len,
                source,
            });
        };
        for Piece {
            block,
            in_block,
            offset: pos,
            len: piece,
        } in g.pieces(offset, len)
        {
            let e = self.bat[g.payload_index(block)];
            match e.state() {
                PAYLOAD_BLOCK_FULLY_PRESENT => {
                    push(pos, piece, Source::File(e.file_offset() + in_block))
                }
                PAYLOAD_BLOCK_PARTIALLY_PRESENT => {
                    let chunk = block / g.chunk_ratio;
                    let bits = self.sector_bitmap(chunk)?;
                    let chunk_first_sector = chunk * SECTORS_PER_BITMAP_BLOCK;
                    let mut p = pos;
                    while p < pos + piece {
                        let sector = p / ss - chunk_first_sector;
                        let sectors_left = (pos + piece).div_ceil(ss) - p / ss;
                        let run = sector_bitmap::run_len(&bits, sector, sectors_left);
                        let run_end = ((p / ss + run) * ss).min(pos + piece);
                        let src = if sector_bitmap::get(&bits, sector) {
                            Source::File(e.file_offset() + p % bs)
                        } else {
                            Source::Parent
                        };
                        push(p, run_end - p, src);
                        p = run_end;
                    }
                }
                PAYLOAD_BLOCK_NOT_PRESENT if g.has_parent => push(pos, piece, Source::Parent),
                _ => push(pos, piece, Source::Zero),
            }
        }
        Ok(out)
    }

    /// Reads stored payload bytes at a file offset given by [`Vhdx::resolve`].
    pub fn read_file_data(&self, file_offset: u64, buf: &mut [u8]) -> Result<()> {
        self.read_meta(file_offset, buf)
    }

    /// Reads virtual bytes of this file alone; ranges that belong to a parent
    /// read as zeros (use [`crate::Chain`] to read through the parents).
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        for x in self.resolve(offset, buf.len() as u64)? {
            let b = &mut buf[(x.offset - offset) as usize..][..x.len as usize];
            match x.source {
                Source::File(f) => self.read_file_data(f, b)?,
                Source::Zero | Source::Parent => b.fill(0),
            }
        }
        Ok(())
    }

    /// Differencing disks track presence per sector, so they take whole
    /// sectors only.
    fn check_alignment(&self, offset: u64, len: u64) -> Result<()> {
        let ss = self.logical_sector_size() as u64;
        if self.geometry.has_parent && (!offset.is_multiple_of(ss) || !len.is_multiple_of(ss)) {
            return Err(Error::InvalidParameter(format!(
                "{}: range at {offset} of {len} bytes is not aligned to the {ss}-byte sector of a differencing disk",
                self.name
            )));
        }
        Ok(())
    }

    /// Takes `len` fresh bytes (1 MB aligned) at the end of the file. New
    /// space always reads as zeros, which new blocks rely on.
    fn allocate(&mut self, len: u64) -> Result<u64> {
        let at = self.eof;
        let end = at + len;
        self.file
            .set_len(end)
            .map_err(self.io_err("extending the file", at))?;
        self.eof = end;
        Ok(at)
    }

    fn set_bat(&mut self, index: usize, entry: BatEntry) {
        self.bat[index] = entry;
        self.dirty_bat_pages
            .insert(index as u64 * 8 / LOG_SECTOR_SIZE as u64);
    }

    /// Marks sectors `first..first+count` (virtual sector numbers) present.
    fn set_present(&mut self, first: u64, count: u64) -> Result<()> {
        let mut s = first;
        let end = first + count;
        while s < end {
            let chunk = s / SECTORS_PER_BITMAP_BLOCK;
            let in_chunk = s % SECTORS_PER_BITMAP_BLOCK;
            let n = (SECTORS_PER_BITMAP_BLOCK - in_chunk).min(end - s);
            // Changed in place in the cache (where `sector_bitmap` leaves
            // it): with a second reference alive, `make_mut` would copy the
            // whole megabyte on every write.
            let bits = self.sector_bitmap(chunk)?;
            let slot = self
                .sector_bitmaps
                .get_mut()
                .unwrap_or_else(|e| e.into_inner())
                .entry(chunk)
                .or_insert(bits);
            let map: &mut Vec<u8> = Arc::make_mut(slot);
            sector_bitmap::set_range(map, in_chunk, n, true);
            let per_page = LOG_SECTOR_SIZE as u64 * 8;
            for page in in_chunk / per_page..=(in_chunk + n - 1) / per_page {
                self.dirty_bitmap_pages.insert((chunk, page));
            }
            s += n;
        }
        Ok(())
    }

    /// Allocates the sector bitmap block of `chunk` if it is not present.
    fn ensure_sector_bitmap(&mut self, chunk: u64) -> Result<()> {
        let i = self.geometry.sector_bitmap_index(chunk);
        if self.bat[i].state() == SB_BLOCK_PRESENT {
            return Ok(());
        }
        self.sector_bitmap(chunk)?; // cache the (all-zero) bitmap first
        let at = self.allocate(SECTOR_BITMAP_BLOCK_SIZE)?;
        self.set_bat(i, BatEntry::new(SB_BLOCK_PRESENT, at));
        Ok(())
    }

    /// Gives every chunk of a differencing file its sector bitmap block, as
    /// [`crate::create_child`] does when it makes one (`create.rs` says why:
    /// §2.5.1.2 lets a chunk go without, libvhdi does not). A file made
    /// without them, by another tool or an older refpoint, gets them before
    /// its first change: zeros (every sector from the parent, which is what
    /// a missing bitmap means for the blocks that are not partially present),
    /// in fresh space taken by one extension of the file, their BAT entries
    /// committed through the log like any other.
    fn complete_sector_bitmaps(&mut self) -> Result<()> {
        if self.sector_bitmaps_complete {
            return Ok(());
        }
        let g = self.geometry;
        let missing: Vec<u64> = (0..g.sector_bitmap_blocks)
            .filter(|&c| {
                g.has_parent && self.bat[g.sector_bitmap_index(c)].state() != SB_BLOCK_PRESENT
            })
            .collect();
        if !missing.is_empty() {
            let at = self.allocate(missing.len() as u64 * SECTOR_BITMAP_BLOCK_SIZE)?;
            for (i, chunk) in missing.into_iter().enumerate() {
                let e = BatEntry::new(SB_BLOCK_PRESENT, at + i as u64 * SECTOR_BITMAP_BLOCK_SIZE);
                self.set_bat(g.sector_bitmap_index(chunk), e);
                self.commit_if_log_is_filling()?;
            }
        }
        self.sector_bitmaps_complete = true;
        Ok(())
    }

    /// Writes `data` at virtual `offset`. On a differencing disk the range
    /// must be sector aligned (a [`crate::Chain`] fills partial sectors from
    /// the parent).
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.check_range(offset, data.len() as u64)?;
        self.before_data_change()?;
        self.check_alignment(offset, data.len() as u64)?;
        self.complete_sector_bitmaps()?;
        for p in self.geometry.pieces(offset, data.len() as u64) {
            let at = (p.offset - offset) as usize;
            self.write_in_block(p.offset, &data[at..at + p.len as usize])?;
            self.commit_if_log_is_filling()?;
        }
        Ok(())
    }

    /// Writes a piece that lies within one block.
    fn write_in_block(&mut self, pos: u64, piece: &[u8]) -> Result<()> {
        let g = self.geometry;
        let bs = g.block_size as u64;
        let (block, in_block) = (pos / bs, pos % bs);
        let index = g.payload_index(block);
        let e = self.bat[index];
        let state = e.state();
        let ss = g.logical_sector_size as u64;
        let target = match state {
            PAYLOAD_BLOCK_FULLY_PRESENT | PAYLOAD_BLOCK_PARTIALLY_PRESENT => e.file_offset(),
            _ => {
                // A new block: the space is fresh, so what is not written reads
                // as zeros; on a differencing disk a block that was
                // NOT_PRESENT must instead show its parent there.
                let whole = in_block == 0 && piece.len() as u64 == g.block_len(block);
                let partial = g.has_parent && state == PAYLOAD_BLOCK_NOT_PRESENT && !whole;
                if partial {
                    self.ensure_sector_bitmap(block / g.chunk_ratio)?;
                }
                let at = self.allocate(bs)?;
                self.stats.blocks_allocated += 1;
                let new_state = if partial {
                    PAYLOAD_BLOCK_PARTIALLY_PRESENT
                } else {
                    PAYLOAD_BLOCK_FULLY_PRESENT
                };
                if let Err(e) = self.file.write_at(at + in_block, piece) {
                    // The block was never recorded: give its space back to
                    // the next allocation instead of leaking it.
                    if self.eof == at + bs {
                        self.eof = at;
                    }
                    return Err(self.io_err("writing payload", at + in_block)(e));
                }
                self.set_bat(index, BatEntry::new(new_state, at));
                if partial {
                    self.set_present(pos / ss, piece.len() as u64 / ss)?;
                }
                return Ok(());
            }
        };
        let at = target + in_block;
        self.file
            .write_at(at, piece)
            .map_err(self.io_err("writing payload", at))?;
        if state == PAYLOAD_BLOCK_PARTIALLY_PRESENT {
            self.set_present(pos / ss, piece.len() as u64 / ss)?;
        }
        Ok(())
    }

    /// Makes `offset..offset+len` read as zeros. Whole blocks become
    /// PAYLOAD_BLOCK_ZERO (fixed disks write zeros instead, differencing
    /// disks take fresh space, see [`Vhdx::trim`]); partial blocks get zeros
    /// written where they are stored or where a parent shows.
    pub fn zero(&mut self, offset: u64, len: u64) -> Result<()> {
        self.discard(offset, len, PAYLOAD_BLOCK_ZERO, true)
    }

    /// Unmaps whole blocks in `offset..offset+len` (PAYLOAD_BLOCK_UNMAPPED,
    /// read as zeros); partial blocks are left as they are.
    ///
    /// On a differencing disk a whole block zeroed or unmapped becomes
    /// PAYLOAD_BLOCK_FULLY_PRESENT on fresh space instead (sparse: the file
    /// grows, nothing is written). §2.5.1.1 defines ZERO and UNMAPPED there
    /// too, but libvhdi consults the sector bitmap of every block of a
    /// differencing file that is not fully present, ZERO and UNMAPPED ones
    /// included, and would show the parent's data (or, for sectors marked
    /// present, whatever lies at the entry's reserved FileOffsetMB); a
    /// fully present block of zeros reads as zeros everywhere. As with
    /// ZERO on a dynamic disk, the block's old space is not reused.
    pub fn trim(&mut self, offset: u64, len: u64) -> Result<()> {
        self.discard(offset, len, PAYLOAD_BLOCK_UNMAPPED, false)
    }

    fn discard(
        &mut self,
        offset: u64,
        len: u64,
        whole_state: u8,
        zero_partial: bool,
    ) -> Result<()> {
        self.check_range(offset, len)?;
        if len == 0 {
            return Ok(());
        }
        if zero_partial {
            self.check_alignment(offset, len)?;
        }
        self.before_data_change()?;
        self.complete_sector_bitmaps()?;
        let g = self.geometry;
        let fixed = self.disk_type() == DiskType::Fixed;
        for Piece {
            block,
            in_block,
            offset: pos,
            len: piece,
        } in g.pieces(offset, len)
        {
            let whole = in_block == 0 && piece == g.block_len(block);
            let state = self.bat[g.payload_index(block)].state();
            if whole && g.has_parent {
                let at = self.allocate(g.block_size as u64)?;
                self.stats.blocks_allocated += 1;
                self.set_bat(
                    g.payload_index(block),
                    BatEntry::new(PAYLOAD_BLOCK_FULLY_PRESENT, at),
                );
            } else if whole && !fixed {
                self.set_bat(g.payload_index(block), BatEntry::new(whole_state, 0));
            } else if zero_partial {
                let needs_zeros = match state {
                    PAYLOAD_BLOCK_FULLY_PRESENT | PAYLOAD_BLOCK_PARTIALLY_PRESENT => true,
                    PAYLOAD_BLOCK_NOT_PRESENT => g.has_parent,
                    _ => false,
                };
                if needs_zeros {
                    let zeros = vec![0u8; ZERO_CHUNK.min(piece as usize)];
                    let mut p = pos;
                    while p < pos + piece {
                        let n = (pos + piece - p).min(zeros.len() as u64) as usize;
                        self.write_in_block(p, &zeros[..n])?;
                        p += n as u64;
                    }
                }
            }
            self.commit_if_log_is_filling()?;
        }
        Ok(())
    }
}
