//! Differencing chains (§2.6.2.6): a child and its ancestors, found through
//! the parent locator and verified by `parent_linkage`. Reads fall through
//! from child to parent wherever the child has no data.
//!
//! ```text
//!   top (writable or not) ──parent_linkage══DataWriteGuid──► parent ──► … ──► base
//!   read: resolve in top → File | Zero | Parent ──► resolve in parent …
//! ```

use crate::disk::Vhdx;
use crate::error::{Error, Result};
use crate::io::Source;
use crate::locator::{from_locator_path, ABSOLUTE_WIN32_PATH, RELATIVE_PATH};
use crate::paths::{absolute, normalize};
use std::path::{Path, PathBuf};
use storage::Fs;

/// Chains deeper than this are refused (a locator loop, most likely).
pub const MAX_CHAIN_DEPTH: usize = 256;

/// An opened chain: `layers[0]` is the newest file, the last is the base.
pub struct Chain {
    layers: Vec<Vhdx>,
}

/// Where a differencing file's parent should be: each locator path in the
/// order §2.6.2.6.3 gives (relative first, then absolute).
pub fn parent_candidates(child_path: &Path, child: &Vhdx) -> Vec<PathBuf> {
    let Some(loc) = child.parent_locator() else {
        return vec![];
    };
    let dir = absolute(child_path)
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("/"));
    let mut out = Vec::new();
    if let Some(rel) = loc.get(RELATIVE_PATH) {
        out.push(normalize(&dir.join(from_locator_path(rel))));
    }
    if let Some(abs) = loc.get(ABSOLUTE_WIN32_PATH) {
        let p = PathBuf::from(from_locator_path(abs));
        if p.is_absolute() {
            out.push(normalize(&p));
        }
    }
    out
}

/// Finds and opens the parent of `child` (read-only unless `writable`),
/// checking its DataWriteGuid against the child's linkage.
pub fn open_parent(
    fs: &dyn Fs,
    child_path: &Path,
    child: &Vhdx,
    writable: bool,
) -> Result<(PathBuf, Vhdx)> {
    let tried = parent_candidates(child_path, child);
    let mut found = None;
    for p in &tried {
        let here = fs.exists(p).map_err(|source| Error::Io {
            file: p.display().to_string(),
            op: "looking up the parent",
            offset: 0,
            source,
        })?;
        if here {
            found = Some(p.clone());
            break;
        }
    }
    let Some(path) = found else {
        return Err(Error::ParentNotFound {
            file: child.name().to_string(),
            tried: tried.iter().map(|p| p.display().to_string()).collect(),
        });
    };
    let parent = Vhdx::open(fs, &path, writable)?;
    let (l1, l2) = child
        .parent_locator()
        .expect("differencing disk has a locator")
        .linkages()
        .map_err(|kind| Error::Corrupt {
            file: child.name().to_string(),
            offset: 0,
            kind,
        })?;
    let found = parent.data_write_guid();
    if found != l1 && Some(found) != l2 {
        return Err(Error::ParentMismatch {
            file: child.name().to_string(),
            parent: path.display().to_string(),
            expected: l1,
            found,
        });
    }
    if parent.logical_sector_size() != child.logical_sector_size()
        || parent.virtual_size() != child.virtual_size()
    {
        return Err(Error::BadChain {
            file: child.name().to_string(),
            why: format!(
                "parent {} has {} bytes in {}-byte sectors, the child {} in {}-byte sectors",
                path.display(),
                parent.virtual_size(),
                parent.logical_sector_size(),
                child.virtual_size(),
                child.logical_sector_size()
            ),
        });
    }
    Ok((path, parent))
}

impl Chain {
    /// Opens `path` and all its ancestors. Only the top file is writable.
    pub fn open(fs: &dyn Fs, path: &Path, writable: bool) -> Result<Self> {
        let top = Vhdx::open(fs, path, writable)?;
        let mut layers = vec![top];
        let mut current = path.to_path_buf();
        while layers.last().unwrap().parent_locator().is_some() {
            if layers.len() >= MAX_CHAIN_DEPTH {
                return Err(Error::BadChain {
                    file: path.display().to_string(),
                    why: format!(
                        "chain is deeper than {MAX_CHAIN_DEPTH} files (a parent locator loop?)"
                    ),
                });
            }
            let (ppath, parent) = open_parent(fs, &current, layers.last().unwrap(), false)?;
            current = ppath;
            layers.push(parent);
        }
        Ok(Self { layers })
    }

    /// A chain of one already opened file plus nothing (a base disk).
    pub fn from_layers(layers: Vec<Vhdx>) -> Self {
        assert!(!layers.is_empty());
        Self { layers }
    }

    pub fn top(&self) -> &Vhdx {
        &self.layers[0]
    }
    pub fn top_mut(&mut self) -> &mut Vhdx {
        &mut self.layers[0]
    }
    pub fn layers(&self) -> &[Vhdx] {
        &self.layers
    }
    pub fn into_layers(self) -> Vec<Vhdx> {
        self.layers
    }
    pub fn virtual_size(&self) -> u64 {
        self.top().virtual_size()
    }
    pub fn logical_sector_size(&self) -> u32 {
        self.top().logical_sector_size()
    }

    /// Reads virtual bytes through the chain.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.read_layer(0, offset, buf)
    }

    fn read_layer(&self, layer: usize, offset: u64, buf: &mut [u8]) -> Result<()> {
        let v = &self.layers[layer];
        for x in v.resolve(offset, buf.len() as u64)? {
            let b = &mut buf[(x.offset - offset) as usize..][..x.len as usize];
            match x.source {
                Source::File(f) => v.read_file_data(f, b)?,
                Source::Zero => b.fill(0),
                Source::Parent if layer + 1 < self.layers.len() => {
                    self.read_layer(layer + 1, x.offset, b)?
                }
                Source::Parent => b.fill(0),
            }
        }
        Ok(())
    }

    /// Where each part of a range comes from, resolved down the chain:
    /// `(offset, len, Some(layer))` for stored data, `None` for zeros.
    pub fn map(&self, offset: u64, len: u64) -> Result<Vec<(u64, u64, Option<usize>)>> {
        let mut out = Vec::new();
        self.map_layer(0, offset, len, &mut out)?;
        Ok(out)
    }

    fn map_layer(
        &self,
        layer: usize,
        offset: u64,
        len: u64,
        out: &mut Vec<(u64, u64, Option<usize>)>,
    ) -> Result<()> {
        for x in self.layers[layer].resolve(offset, len)? {
            match x.source {
                Source::File(_) => push_run(out, x.offset, x.len, Some(layer)),
                Source::Zero => push_run(out, x.offset, x.len, None),
                Source::Parent if layer + 1 < self.layers.len() => {
                    self.map_layer(layer + 1, x.offset, x.len, out)?
                }
                Source::Parent => push_run(out, x.offset, x.len, None),
            }
        }
        Ok(())
    }

    /// The aligned span around `offset..offset+len` and whether the top
    /// needs partial sectors filled (differencing disks only).
    fn unaligned(&self, offset: u64, len: u64) -> bool {
        let ss = self.logical_sector_size() as u64;
        self.top().parent_locator().is_some()
            && (!offset.is_multiple_of(ss) || !len.is_multiple_of(ss))
    }

    /// Writes to the top file; partial sectors of a differencing top are
    /// completed with what the chain holds there.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        let len = data.len() as u64;
        if !self.unaligned(offset, len) {
            return self.top_mut().write(offset, data);
        }
        self.top().check_range(offset, len)?;
        let ss = self.logical_sector_size() as u64;
        let start = offset / ss * ss;
        let end = (offset + len).div_ceil(ss) * ss;
        // Head sector, aligned middle, tail sector.
        let head_end = (start + ss).min(end);
        let mut head = vec![0u8; (head_end - start) as usize];
        self.read(start, &mut head)?;
        let n = ((head_end - offset).min(len)) as usize;
        head[(offset - start) as usize..][..n].copy_from_slice(&data[..n]);
        self.top_mut().write(start, &head)?;
        if head_end == end {
            return Ok(());
        }
        let tail_start = end - ss;
        let mid = &data[n..(tail_start - offset) as usize];
        if !mid.is_empty() {
            self.top_mut().write(head_end, mid)?;
        }
        let mut tail = vec![0u8; ss as usize];
        self.read(tail_start, &mut tail)?;
        let rest = &data[(tail_start - offset) as usize..];
        tail[..rest.len()].copy_from_slice(rest);
        self.top_mut().write(tail_start, &tail)
    }

    /// Makes a range read as zeros.
    pub fn zero(&mut self, offset: u64, len: u64) -> Result<()> {
        if !self.unaligned(offset, len) {
            return self.top_mut().zero(offset, len);
        }
        self.top().check_range(offset, len)?;
        let ss = self.logical_sector_size() as u64;
        let first_full = offset.div_ceil(ss) * ss;
        let last_full = (offset + len) / ss * ss;
        if first_full >= last_full {
            return self.write(offset, &vec![0u8; len as usize]);
        }
        if first_full > offset {
            self.write(offset, &vec![0u8; (first_full - offset) as usize])?;
        }
        self.top_mut().zero(first_full, last_full - first_full)?;
        if offset + len > last_full {
            self.write(last_full, &vec![0u8; (offset + len - last_full) as usize])?;
        }
        Ok(())
    }

    /// Unmaps whole blocks of the top file.
    pub fn trim(&mut self, offset: u64, len: u64) -> Result<()> {
        self.top_mut().trim(offset, len)
    }

    pub fn flush(&mut self) -> Result<()> {
        self.top_mut().flush()
    }

    /// Closes every file cleanly.
    pub fn close(self) -> Result<()> {
        for l in self.layers {
            l.close()?;
        }
        Ok(())
    }
}

fn push_run(out: &mut Vec<(u64, u64, Option<usize>)>, offset: u64, len: u64, layer: Option<usize>) {
    if let Some(last) = out.last_mut() {
        if last.2 == layer && last.0 + last.1 == offset {
            last.1 += len;
            return;
        }
    }
    out.push((offset, len, layer));
}
