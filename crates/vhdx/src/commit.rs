//! The metadata commit path (§2.3): dirty BAT, sector bitmap and metadata
//! pages become one log entry per flush.
//!
//! ```text
//! flush ─► fsync payload ─► write log entry ─► fsync ─► (first time: header
//!          LogGuid, fsync) ─► write pages in place ─► fsync
//! ```
//!
//! The payload is made durable before the log entry that makes it visible,
//! so a crash can never expose a block whose data did not reach the disk.

use crate::disk::Vhdx;
use crate::error::Result;
use crate::format::*;
use crate::log::{LogUpdate, LogWriter};

/// Pages a single write or zero of one block can dirty: two BAT pages
/// (payload and sector bitmap entry) and the block's bitmap pages.
fn pages_per_block(block_size: u32, sector: u32) -> usize {
    let sectors = block_size as usize / sector as usize;
    2 + (sectors / 8).div_ceil(LOG_SECTOR_SIZE) + 1
}

impl Vhdx {
    fn dirty_page_count(&self) -> usize {
        self.dirty_bat_pages.len() + self.dirty_bitmap_pages.len() + self.dirty_meta_pages.len()
    }

    fn log_writer(&mut self) -> &mut LogWriter {
        let (off, len) = (self.header.log_offset, self.header.log_length);
        self.log.get_or_insert_with(|| LogWriter::new(off, len))
    }

    /// Commits early when the next block could overflow one log entry, so
    /// every entry is a consistent state on its own.
    pub(crate) fn commit_if_log_is_filling(&mut self) -> Result<()> {
        let max = self.log_writer().max_data_sectors();
        let per_block = pages_per_block(self.block_size(), self.logical_sector_size());
        if self.dirty_page_count() + per_block > max {
            self.flush()?;
        }
        Ok(())
    }

    /// Makes every write so far durable: payload first, then the metadata
    /// through the log.
    pub fn flush(&mut self) -> Result<()> {
        if !self.writable {
            return Ok(());
        }
        self.stats.flushes += 1;
        self.file
            .flush()
            .map_err(self.io_err("flushing payload", 0))?;
        self.durable_len = self
            .file
            .len()
            .map_err(self.io_err("reading the length", 0))?;
        let pages = self.dirty_pages()?;
        if pages.is_empty() {
            return Ok(());
        }
        let max = self.log_writer().max_data_sectors().max(1);
        for chunk in pages.chunks(max) {
            self.commit_entry(chunk)?;
        }
        // Only now are the pages in place. After a failed commit they stay
        // dirty, so the next flush (or close) commits them again; dropping
        // them would let a later successful flush, and a close that clears
        // LogGuid (§2.3.3 then skips the replay), leave the BAT on disk
        // without blocks that were written before the failure.
        self.dirty_bat_pages.clear();
        self.dirty_bitmap_pages.clear();
        self.dirty_meta_pages.clear();
        Ok(())
    }

    /// The dirty pages as (file offset, 4 KB) pairs, sorted; they stay
    /// dirty until committed.
    fn dirty_pages(&self) -> Result<Vec<(u64, Box<[u8]>)>> {
        let mut pages = Vec::with_capacity(self.dirty_page_count());
        for &page in &self.dirty_bat_pages {
            let off = self.bat_offset + page * LOG_SECTOR_SIZE as u64;
            let mut b = vec![0u8; LOG_SECTOR_SIZE].into_boxed_slice();
            self.read_meta(off, &mut b)?;
            let first = page as usize * LOG_SECTOR_SIZE / 8;
            for (i, e) in self
                .bat
                .iter()
                .skip(first)
                .take(LOG_SECTOR_SIZE / 8)
                .enumerate()
            {
                b[i * 8..i * 8 + 8].copy_from_slice(&e.0.to_le_bytes());
            }
            pages.push((off, b));
        }
        for &(chunk, page) in &self.dirty_bitmap_pages {
            let sb = self.bat[self.geometry.sector_bitmap_index(chunk)];
            let bits = self.sector_bitmap(chunk)?;
            let start = page as usize * LOG_SECTOR_SIZE;
            let b = bits[start..start + LOG_SECTOR_SIZE]
                .to_vec()
                .into_boxed_slice();
            pages.push((sb.file_offset() + start as u64, b));
        }
        pages.extend(
            self.dirty_meta_pages
                .iter()
                .map(|(&off, b)| (off, b.clone())),
        );
        pages.sort_by_key(|p| p.0);
        Ok(pages)
    }

    fn commit_entry(&mut self, pages: &[(u64, Box<[u8]>)]) -> Result<()> {
        let updates = pages
            .iter()
            .map(|(off, data)| LogUpdate::Data {
                file_offset: *off,
                data: data.clone(),
            })
            .collect();
        let flushed = self.durable_len / MIB * MIB;
        let last = align_up(self.eof, MIB);
        let (at, bytes) = self.log_writer().next_entry(updates, flushed, last);
        self.file
            .write_at(at, &bytes)
            .map_err(self.io_err("writing the log", at))?;
        self.file
            .flush()
            .map_err(self.io_err("flushing the log", at))?;
        self.stats.log_entries += 1;
        // The header names the log only once a valid entry is durable, so a
        // crash can never leave a header pointing at an empty log.
        let guid = self.log.as_ref().unwrap().log_guid;
        if self.header.log_guid != guid {
            let mut h = self.header.clone();
            h.log_guid = guid;
            self.write_header(h)?;
        }
        for (off, data) in pages {
            self.file
                .write_at(*off, data)
                .map_err(self.io_err("applying the log", *off))?;
        }
        self.file
            .flush()
            .map_err(self.io_err("flushing metadata", 0))?;
        Ok(())
    }

    /// Queues a metadata-region or region-table change (whole 4 KB pages,
    /// current content read first) to be committed through the log.
    pub(crate) fn stage_meta_bytes(&mut self, offset: u64, bytes: &[u8]) -> Result<()> {
        let ps = LOG_SECTOR_SIZE as u64;
        let end = offset + bytes.len() as u64;
        let mut page = offset / ps * ps;
        while page < end {
            let mut b = match self.dirty_meta_pages.remove(&page) {
                Some(b) => b,
                None => {
                    let mut b = vec![0u8; LOG_SECTOR_SIZE].into_boxed_slice();
                    self.read_meta(page, &mut b)?;
                    b
                }
            };
            let s = page.max(offset);
            let e = (page + ps).min(end);
            b[(s - page) as usize..(e - page) as usize]
                .copy_from_slice(&bytes[(s - offset) as usize..(e - offset) as usize]);
            self.dirty_meta_pages.insert(page, b);
            page += ps;
        }
        Ok(())
    }
}
