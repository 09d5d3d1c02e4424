//! An in-memory device and a fixed catalog: for tests, fuzzing and
//! examples. Allocation is tracked per 4 KiB page, so `base:allocation`
//! answers with real holes.

use crate::device::*;
use crate::proto::*;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

const PAGE: u64 = 4096;

/// A sparse in-memory disk. Written pages are "dirty" for the
/// `qemu:dirty-bitmap:mem` context until [`MemDevice::clear_dirty`].
pub struct MemDevice {
    size: u64,
    read_only: bool,
    inner: Mutex<Pages>,
}

#[derive(Default)]
struct Pages {
    data: BTreeMap<u64, Box<[u8]>>,
    dirty: std::collections::BTreeSet<u64>,
    flushes: u64,
}

pub const MEM_DIRTY_CONTEXT: &str = "qemu:dirty-bitmap:mem";

impl MemDevice {
    pub fn new(size: u64, read_only: bool) -> Self {
        MemDevice {
            size,
            read_only,
            inner: Mutex::new(Pages::default()),
        }
    }
    pub fn flushes(&self) -> u64 {
        self.inner.lock().unwrap().flushes
    }
    pub fn clear_dirty(&self) {
        self.inner.lock().unwrap().dirty.clear();
    }
    /// The whole content, for comparisons.
    pub fn contents(&self) -> Vec<u8> {
        let mut v = vec![0u8; self.size as usize];
        self.read(0, &mut v).unwrap();
        v
    }

    fn each_page(offset: u64, len: u64, mut f: impl FnMut(u64, usize, usize, usize)) {
        let mut pos = offset;
        let end = offset + len;
        while pos < end {
            let page = pos / PAGE;
            let in_page = (pos % PAGE) as usize;
            let n = ((PAGE - pos % PAGE).min(end - pos)) as usize;
            f(page, in_page, n, (pos - offset) as usize);
            pos += n as u64;
        }
    }
}

impl BlockDevice for MemDevice {
    fn size(&self) -> u64 {
        self.size
    }
    fn read_only(&self) -> bool {
        self.read_only
    }
    fn multi_conn(&self) -> bool {
        true
    }
    fn read(&self, offset: u64, buf: &mut [u8]) -> DeviceResult<()> {
        let p = self.inner.lock().unwrap();
        Self::each_page(offset, buf.len() as u64, |page, at, n, bpos| {
            let dst = &mut buf[bpos..bpos + n];
            match p.data.get(&page) {
                Some(d) => dst.copy_from_slice(&d[at..at + n]),
                None => dst.fill(0),
            }
        });
        Ok(())
    }
    fn write(&self, offset: u64, data: &[u8], _fua: bool) -> DeviceResult<()> {
        let mut p = self.inner.lock().unwrap();
        Self::each_page(offset, data.len() as u64, |page, at, n, bpos| {
            let d = p
                .data
                .entry(page)
                .or_insert_with(|| vec![0u8; PAGE as usize].into());
            d[at..at + n].copy_from_slice(&data[bpos..bpos + n]);
            p.dirty.insert(page);
        });
        Ok(())
    }
    fn flush(&self) -> DeviceResult<()> {
        self.inner.lock().unwrap().flushes += 1;
        Ok(())
    }
    fn trim(&self, offset: u64, length: u64) -> DeviceResult<()> {
        self.write_zeroes(offset, length, true)
    }
    fn write_zeroes(&self, offset: u64, length: u64, _may_trim: bool) -> DeviceResult<()> {
        let mut p = self.inner.lock().unwrap();
        Self::each_page(offset, length, |page, at, n, _| {
            p.dirty.insert(page);
            if n as u64 == PAGE {
                p.data.remove(&page);
            } else if let Some(d) = p.data.get_mut(&page) {
                d[at..at + n].fill(0);
            }
        });
        Ok(())
    }
    fn allocation(&self, offset: u64, length: u64) -> DeviceResult<Vec<Extent>> {
        let p = self.inner.lock().unwrap();
        let mut out = Vec::new();
        Self::each_page(offset, length, |page, _, n, _| {
            let flags = if p.data.contains_key(&page) {
                0
            } else {
                NBD_STATE_HOLE | NBD_STATE_ZERO
            };
            out.push(Extent {
                length: n as u64,
                flags,
            });
        });
        Ok(out)
    }
    fn list_meta_contexts(&self, query: &str) -> Vec<String> {
        if MEM_DIRTY_CONTEXT.starts_with(query) {
            vec![MEM_DIRTY_CONTEXT.into()]
        } else {
            Vec::new()
        }
    }
    fn has_meta_context(&self, name: &str) -> bool {
        name == MEM_DIRTY_CONTEXT
    }
    fn meta_extents(&self, name: &str, offset: u64, length: u64) -> DeviceResult<Vec<Extent>> {
        if name != MEM_DIRTY_CONTEXT {
            return Err(DeviceError::invalid(format!("unknown context {name}")));
        }
        let p = self.inner.lock().unwrap();
        let mut out = Vec::new();
        Self::each_page(offset, length, |page, _, n, _| {
            let flags = if p.dirty.contains(&page) {
                NBD_STATE_DIRTY
            } else {
                0
            };
            out.push(Extent {
                length: n as u64,
                flags,
            });
        });
        Ok(out)
    }
}

/// A fixed name → device catalog.
#[derive(Default)]
pub struct StaticExports {
    pub exports: BTreeMap<String, Arc<dyn BlockDevice>>,
}

impl StaticExports {
    pub fn with(mut self, name: &str, dev: Arc<dyn BlockDevice>) -> Self {
        self.exports.insert(name.into(), dev);
        self
    }
}

impl Exports for StaticExports {
    fn list(&self) -> Vec<ExportInfo> {
        self.exports
            .iter()
            .map(|(name, d)| ExportInfo {
                name: name.clone(),
                description: d.description().unwrap_or_default(),
            })
            .collect()
    }
    fn open(&self, name: &str) -> Result<Arc<dyn BlockDevice>, String> {
        self.exports
            .get(name)
            .cloned()
            .ok_or_else(|| "no such export".to_string())
    }
}
