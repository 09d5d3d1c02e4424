//! NBD devices over refpoint disks: a live machine disk (read-write,
//! tracked) and frozen content (a checkpoint or a backup point, read-only).
//! Both offer the changes since each retained RCT ID as meta contexts,
//! `refpoint:changes:<id>` and, for tools that read QEMU's bitmaps,
//! `qemu:dirty-bitmap:<id>` (bit 0 set = changed).

use machine::{MachineError, Slot, Store};
use nbd::proto::{
    NBD_EINVAL, NBD_EIO, NBD_ENOSPC, NBD_EPERM, NBD_STATE_DIRTY, NBD_STATE_HOLE, NBD_STATE_ZERO,
};
use nbd::{BlockDevice, BlockSize, DeviceError, DeviceResult, Extent};
use vdisk::{Changes, Disk, RctId, VdiskError};
use vhdx::Chain;

pub const CHANGES_PREFIX: &str = "refpoint:changes:";
pub const QEMU_BITMAP_PREFIX: &str = "qemu:dirty-bitmap:";
/// Ranges asked of the tracking per block-status request.
const MAX_RANGES: usize = 65536;

pub fn device_error(e: VdiskError) -> DeviceError {
    let errno = match &e {
        VdiskError::OutOfRange { .. } => NBD_EINVAL,
        VdiskError::ReadOnly { .. } => NBD_EPERM,
        // A write that found no space, a flush after it, and a disk stopped
        // by one: ENOSPC tells the client to make room, anything else EIO.
        e if e.is_no_space() => NBD_ENOSPC,
        _ => NBD_EIO,
    };
    DeviceError::new(errno, e.to_string())
}

/// The NBD error of a machine operation.
pub fn machine_error(e: MachineError) -> DeviceError {
    match e {
        MachineError::Disk(d) => device_error(d),
        e @ MachineError::Frozen { .. } => DeviceError::new(NBD_EPERM, e.to_string()),
        e if e.is_no_space() => DeviceError::new(NBD_ENOSPC, e.to_string()),
        e => DeviceError::new(NBD_EIO, e.to_string()),
    }
}

/// The RCT ID a change context names, if it is one.
pub fn context_id(name: &str) -> Option<RctId> {
    name.strip_prefix(CHANGES_PREFIX)
        .or_else(|| name.strip_prefix(QEMU_BITMAP_PREFIX))
        .and_then(|s| s.parse().ok())
}

/// Both context names of every ID, filtered by a LIST query prefix.
fn list_contexts(ids: &[RctId], query: &str) -> Vec<String> {
    let mut out = Vec::new();
    for prefix in [CHANGES_PREFIX, QEMU_BITMAP_PREFIX] {
        for id in ids {
            let name = format!("{prefix}{id}");
            if name.starts_with(query) || (query.starts_with(prefix) && name == query) {
                out.push(name);
            }
        }
    }
    out
}

/// Turns changed ranges into dirty/clean extents over what was processed.
fn change_extents(offset: u64, c: &Changes) -> Vec<Extent> {
    let end = offset + c.processed_length;
    let mut out = Vec::new();
    let mut pos = offset;
    for r in &c.ranges {
        let (s, e) = (r.offset.max(pos), (r.offset + r.length).min(end));
        if s >= e {
            continue;
        }
        if s > pos {
            out.push(Extent {
                length: s - pos,
                flags: 0,
            });
        }
        out.push(Extent {
            length: e - s,
            flags: NBD_STATE_DIRTY,
        });
        pos = e;
    }
    if pos < end {
        out.push(Extent {
            length: end - pos,
            flags: 0,
        });
    }
    out
}

fn allocation_extents(ext: Vec<(u64, u64, bool)>) -> Vec<Extent> {
    ext.into_iter()
        .map(|(_, length, data)| Extent {
            length,
            flags: if data {
                0
            } else {
                NBD_STATE_HOLE | NBD_STATE_ZERO
            },
        })
        .collect()
}

/// A machine disk as the daemon holds it: every write tracked.
pub struct LiveDevice {
    pub export: String,
    pub slot: Slot,
    pub size: u64,
}

impl LiveDevice {
    pub fn new(export: String, slot: Slot) -> Result<Self, String> {
        let size = slot
            .read()
            .as_ref()
            .map(|d| d.size())
            .ok_or("the disk could not be reopened; see the daemon's log")?;
        Ok(LiveDevice { export, slot, size })
    }

    fn with<T>(&self, f: impl FnOnce(&mut Disk) -> vdisk::Result<T>) -> DeviceResult<T> {
        let mut g = self.slot.write();
        let d = g.as_mut().ok_or_else(|| {
            DeviceError::new(
                NBD_EIO,
                format!(
                    "{}: the disk is not open (see the daemon's log)",
                    self.export
                ),
            )
        })?;
        f(d).map_err(device_error)
    }
}

impl BlockDevice for LiveDevice {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_only(&self) -> bool {
        false
    }
    fn multi_conn(&self) -> bool {
        // One handle serves every connection, and a flush makes every
        // completed write durable, whoever sent it.
        true
    }
    fn block_size(&self) -> BlockSize {
        BlockSize::default()
    }
    fn description(&self) -> Option<String> {
        Some(format!("{} (live, tracked)", self.export))
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> DeviceResult<()> {
        // Shared first: reads run in parallel unless a queued write
        // overlaps them.
        if let Some(d) = self.slot.read().as_ref() {
            if let Some(r) = d.read_shared(offset, buf) {
                return r.map_err(device_error);
            }
        }
        self.with(|d| d.read(offset, buf))
    }
    fn write(&self, offset: u64, data: &[u8], fua: bool) -> DeviceResult<()> {
        self.with(|d| {
            d.write(offset, data)?;
            if fua {
                d.flush()?;
            }
            Ok(())
        })
    }
    fn flush(&self) -> DeviceResult<()> {
        self.with(|d| d.flush())
    }
    fn trim(&self, offset: u64, length: u64) -> DeviceResult<()> {
        self.with(|d| d.trim(offset, length))
    }
    fn write_zeroes(&self, offset: u64, length: u64, _may_trim: bool) -> DeviceResult<()> {
        self.with(|d| d.zero(offset, length))
    }
    fn allocation(&self, offset: u64, length: u64) -> DeviceResult<Vec<Extent>> {
        self.with(|d| d.extents(offset, length))
            .map(allocation_extents)
    }
    fn list_meta_contexts(&self, query: &str) -> Vec<String> {
        let ids = self.with(|d| d.retained_ids()).unwrap_or_default();
        list_contexts(&ids, query)
    }
    fn has_meta_context(&self, name: &str) -> bool {
        // Only IDs the tracking still answers for: a client asking for
        // another learns at negotiation that there is no such bitmap.
        context_id(name).is_some_and(|id| {
            self.with(|d| d.retained_ids())
                .is_ok_and(|ids| ids.contains(&id))
        })
    }
    fn meta_extents(&self, name: &str, offset: u64, length: u64) -> DeviceResult<Vec<Extent>> {
        let id = context_id(name)
            .ok_or_else(|| DeviceError::invalid(format!("unknown context {name}")))?;
        let c = self.with(|d| d.query_changes(&id, None, offset, length, MAX_RANGES))?;
        Ok(change_extents(offset, &c))
    }
}

/// Frozen content: a checkpoint's disk (changes up to its RCT ID) or a
/// backup point (no changes contexts).
pub struct FrozenDevice {
    pub export: String,
    pub chain: Chain,
    /// Why it cannot be written (a checkpoint's: the frozen-file rule).
    pub read_only_reason: String,
    /// For a checkpoint: the store, machine, disk and its RCT ID.
    pub tracking: Option<(Store, String, String, RctId)>,
}

impl FrozenDevice {
    fn changes(&self, since: &RctId, offset: u64, length: u64) -> DeviceResult<Changes> {
        let (reg, m, d, until) = self
            .tracking
            .as_ref()
            .ok_or_else(|| DeviceError::invalid("this export has no change tracking"))?;
        reg.with_held(m, d, |disk| {
            Ok(disk.query_changes(since, Some(until), offset, length, MAX_RANGES)?)
        })
        .map_err(machine_error)
    }
    fn retained(&self) -> Vec<RctId> {
        let Some((reg, m, d, until)) = &self.tracking else {
            return Vec::new();
        };
        let ids = reg
            .with_held(m, d, |disk| Ok(disk.retained_ids()?))
            .unwrap_or_default();
        // Only IDs older than the checkpoint describe changes up to it.
        ids.into_iter()
            .filter(|i| i.tracking == until.tracking && i.generation < until.generation)
            .collect()
    }
}

impl BlockDevice for FrozenDevice {
    fn size(&self) -> u64 {
        self.chain.virtual_size()
    }
    fn read_only(&self) -> bool {
        true
    }
    fn multi_conn(&self) -> bool {
        true
    }
    fn description(&self) -> Option<String> {
        Some(format!("{} (read-only)", self.export))
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> DeviceResult<()> {
        self.chain
            .read(offset, buf)
            .map_err(|e| device_error(e.into()))
    }
    fn read_only_reason(&self) -> String {
        self.read_only_reason.clone()
    }
    fn write(&self, _: u64, _: &[u8], _: bool) -> DeviceResult<()> {
        Err(DeviceError::new(NBD_EPERM, self.read_only_reason()))
    }
    fn flush(&self) -> DeviceResult<()> {
        Ok(())
    }
    fn trim(&self, _: u64, _: u64) -> DeviceResult<()> {
        Err(DeviceError::new(NBD_EPERM, self.read_only_reason()))
    }
    fn write_zeroes(&self, _: u64, _: u64, _: bool) -> DeviceResult<()> {
        Err(DeviceError::new(NBD_EPERM, self.read_only_reason()))
    }
    fn allocation(&self, offset: u64, length: u64) -> DeviceResult<Vec<Extent>> {
        let map = self
            .chain
            .map(offset, length)
            .map_err(|e| device_error(e.into()))?;
        Ok(allocation_extents(
            map.into_iter()
                .map(|(o, l, layer)| (o, l, layer.is_some()))
                .collect(),
        ))
    }
    fn list_meta_contexts(&self, query: &str) -> Vec<String> {
        list_contexts(&self.retained(), query)
    }
    fn has_meta_context(&self, name: &str) -> bool {
        context_id(name).is_some_and(|id| self.retained().contains(&id))
    }
    fn meta_extents(&self, name: &str, offset: u64, length: u64) -> DeviceResult<Vec<Extent>> {
        let id = context_id(name)
            .ok_or_else(|| DeviceError::invalid(format!("unknown context {name}")))?;
        let c = self.changes(&id, offset, length)?;
        Ok(change_extents(offset, &c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vdisk::ChangedRange;

    #[test]
    fn change_extents_cover_what_was_processed() {
        let c = Changes {
            ranges: vec![
                ChangedRange {
                    offset: 0,
                    length: 100,
                },
                ChangedRange {
                    offset: 300,
                    length: 1000,
                },
            ],
            processed_length: 1000,
        };
        let e = change_extents(50, &c);
        let v: Vec<_> = e.iter().map(|e| (e.length, e.flags)).collect();
        assert_eq!(v, vec![(50, 1), (200, 0), (750, 1)]);
        assert_eq!(e.iter().map(|e| e.length).sum::<u64>(), 1000);
    }
}
