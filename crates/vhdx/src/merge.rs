//! Merging a differencing file into its parent, crash-safe and resumable,
//! following the `parent_linkage2` protocol of §2.6.2.6.3 (note 12):
//!
//! ```text
//! 1. child:  parent_linkage2 = G        (through the child's log, flushed)
//! 2. parent: DataWriteGuid   = G        (header update, flushed)
//! 3. copy every sector present in the child into the parent, flush
//! 4. remove the child (or keep it: it still matches the parent through G)
//! ```
//!
//! After a crash at any point the child still opens on top of its parent
//! (its linkage matches the parent's old or new DataWriteGuid) and reads the
//! same data, because everything copied so far is also still in the child.
//! Running the merge again picks up G from the child and redoes step 3.

use crate::chain::open_parent;
use crate::disk::Vhdx;
use crate::error::{Error, Result};
use crate::format::*;
use crate::io::Source;
use crate::locator::{format_linkage, PARENT_LINKAGE2};
use std::path::{Path, PathBuf};
use storage::Fs;
use uuid::Uuid;

/// What a merge did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeReport {
    pub parent: PathBuf,
    /// Bytes copied or zeroed in the parent.
    pub bytes_merged: u64,
    /// Whether an interrupted merge was picked up.
    pub resumed: bool,
    pub child_removed: bool,
}

/// The largest piece copied at once.
const COPY_CHUNK: u64 = 4 * MIB;

/// Merges `child_path` into its parent. `progress(done, total)` is called
/// with virtual bytes processed.
pub fn merge_into_parent(
    fs: &dyn Fs,
    child_path: &Path,
    remove_child: bool,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<MergeReport> {
    merge_into_parent_as(fs, child_path, remove_child, None, progress)
}

/// The DataWriteGuid the parent has or will have once the merge of
/// `child_path` completes: the child's `parent_linkage2` if a merge was
/// started, else `None`.
pub fn pending_merge_linkage(fs: &dyn Fs, child_path: &Path) -> Result<Option<Uuid>> {
    let child = Vhdx::open(fs, child_path, false)?;
    let Some(loc) = child.parent_locator() else {
        return Ok(None);
    };
    let (_, l2) = loc.linkages().map_err(|kind| Error::Corrupt {
        file: child.name().into(),
        offset: 0,
        kind,
    })?;
    Ok(l2)
}

/// Like [`merge_into_parent`], with the parent's new DataWriteGuid chosen by
/// the caller (who may need to know it beforehand, e.g. change tracking).
/// A merge that was already started keeps the GUID it started with.
pub fn merge_into_parent_as(
    fs: &dyn Fs,
    child_path: &Path,
    remove_child: bool,
    new_parent_guid: Option<Uuid>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<MergeReport> {
    let mut child = Vhdx::open(fs, child_path, true)?;
    if child.parent_locator().is_none() {
        return Err(Error::InvalidParameter(format!(
            "{} is not a differencing disk; there is no parent to merge into",
            child_path.display()
        )));
    }
    let (parent_path, mut parent) = open_parent(fs, child_path, &child, true)?;
    let (_, linkage2) =
        child
            .parent_locator()
            .unwrap()
            .linkages()
            .map_err(|kind| Error::Corrupt {
                file: child.name().into(),
                offset: 0,
                kind,
            })?;
    let resumed = linkage2.is_some();
    let g = match linkage2 {
        Some(g) => g,
        None => {
            let g = new_parent_guid.unwrap_or_else(Uuid::new_v4);
            let mut loc = child.parent_locator().unwrap().clone();
            loc.set(PARENT_LINKAGE2, format_linkage(g));
            child.set_parent_locator(loc)?;
            child.flush()?;
            g
        }
    };
    parent.set_data_write_guid(g)?;

    let size = child.virtual_size();
    let bs = child.block_size() as u64;
    let mut merged = 0u64;
    let mut buf = Vec::new();
    let mut pos = 0u64;
    // Zeros, stored (a differencing child keeps zeroed blocks as fully
    // present zeros, see `Vhdx::trim`) or not, are gathered into runs and
    // zeroed in the parent at once, where whole blocks cost a BAT entry
    // instead of a block of written zeros.
    let mut zeros = ZeroRun::default();
    while pos < size {
        let len = bs.min(size - pos);
        for x in child.resolve(pos, len)? {
            match x.source {
                Source::Parent => zeros.flush(&mut parent)?,
                Source::Zero => {
                    zeros.add(&mut parent, x.offset, x.len)?;
                    merged += x.len;
                }
                Source::File(f) => {
                    let mut done = 0;
                    while done < x.len {
                        let n = COPY_CHUNK.min(x.len - done);
                        buf.resize(n as usize, 0);
                        child.read_file_data(f + done, &mut buf)?;
                        if buf.iter().all(|&b| b == 0) {
                            zeros.add(&mut parent, x.offset + done, n)?;
                        } else {
                            zeros.flush(&mut parent)?;
                            parent.write(x.offset + done, &buf)?;
                        }
                        done += n;
                    }
                    merged += x.len;
                }
            }
        }
        pos += len;
        progress(pos, size);
    }
    zeros.flush(&mut parent)?;
    parent.close()?;
    child.close()?;
    if remove_child {
        fs.remove_durable(child_path).map_err(|source| Error::Io {
            file: child_path.display().to_string(),
            op: "removing the merged child",
            offset: 0,
            source,
        })?;
    }
    Ok(MergeReport {
        parent: parent_path,
        bytes_merged: merged,
        resumed,
        child_removed: remove_child,
    })
}

/// A run of virtual bytes to zero in the parent, extended while the next
/// range to zero follows it.
#[derive(Default)]
struct ZeroRun {
    offset: u64,
    len: u64,
}

impl ZeroRun {
    fn add(&mut self, parent: &mut Vhdx, offset: u64, len: u64) -> Result<()> {
        if self.len > 0 && self.offset + self.len != offset {
            self.flush(parent)?;
        }
        if self.len == 0 {
            self.offset = offset;
        }
        self.len += len;
        Ok(())
    }

    fn flush(&mut self, parent: &mut Vhdx) -> Result<()> {
        if self.len > 0 {
            parent.zero(self.offset, self.len)?;
            self.len = 0;
        }
        Ok(())
    }
}

impl Vhdx {
    /// Replaces the parent locator (through the log, at the next flush).
    pub fn set_parent_locator(&mut self, loc: crate::locator::ParentLocator) -> Result<()> {
        if !self.writable {
            return Err(Error::ReadOnly {
                file: self.name.clone(),
            });
        }
        let bytes = loc.to_bytes();
        let mut table = self.metadata_table.clone();
        let idx = table
            .entries
            .iter()
            .position(|e| e.item_id == PARENT_LOCATOR_GUID && !e.is_user)
            .ok_or_else(|| {
                Error::InvalidParameter(format!("{} has no parent locator", self.name))
            })?;
        let fits_in_place = bytes.len() as u32 <= table.entries[idx].length;
        if !fits_in_place {
            let end = table
                .entries
                .iter()
                .map(|e| e.offset + e.length)
                .max()
                .unwrap_or(0);
            let at = align_up(end.max(METADATA_TABLE_SIZE as u32) as u64, 8) as u32;
            if at as u64 + bytes.len() as u64 > self.metadata_length as u64 {
                return Err(Error::Unsupported {
                    file: self.name.clone(),
                    what: "growing the parent locator: the metadata region is full".into(),
                });
            }
            table.entries[idx].offset = at;
        }
        table.entries[idx].length = bytes.len() as u32;
        let item_at = self.metadata_offset + table.entries[idx].offset as u64;
        self.stage_meta_bytes(item_at, &bytes)?;
        let t = table.to_bytes();
        let used = 32 + 32 * table.entries.len();
        self.stage_meta_bytes(self.metadata_offset, &t[..used])?;
        self.metadata_table = table;
        self.locator = Some(loc);
        Ok(())
    }
}
