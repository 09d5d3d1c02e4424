//! Shared pieces of the crash tests: a model of what a virtual disk may
//! contain after a power cut, a uniform handle over a single file and a
//! differencing chain, and random operations.
//!
//! ## The model
//!
//! The content as of the last successful flush is exact: every byte not
//! written since must read back unchanged after a crash. A byte written
//! since may read as its flushed value or as any value written to it since
//! (unflushed writes are dropped, kept or torn by the crash). The medium
//! tears at [`UNIT`] bytes, so a unit written by exactly one operation that
//! started on a unit boundary and covered all of it must come back whole:
//! all old or all new.

use rand::rngs::SmallRng;
use rand::{Rng, RngCore};
use std::path::{Path, PathBuf};
use storage::CrashFs;
use vhdx::{Chain, CreateOptions, DiskType, Vhdx};

/// Granularity at which the simulated medium tears writes.
pub const UNIT: usize = storage::TEAR_SECTOR;

pub fn opts(size: u64, block_size: u32, sector: u32, disk_type: DiskType) -> CreateOptions {
    CreateOptions {
        virtual_size: size,
        disk_type,
        block_size,
        logical_sector_size: sector,
        physical_sector_size: 4096,
    }
}

pub fn random_bytes(rng: &mut SmallRng, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

/// How units came back after a crash, summed over checks.
#[derive(Debug, Default, Clone, Copy)]
pub struct Outcome {
    /// Units not written since the last flush (must be exact).
    pub untouched: u64,
    /// Written units that came back with their flushed content.
    pub old: u64,
    /// Written units that came back with their newest content.
    pub new: u64,
    /// Written units that came back as a mix of versions.
    pub mixed: u64,
}

impl Outcome {
    pub fn add(&mut self, o: Outcome) {
        self.untouched += o.untouched;
        self.old += o.old;
        self.new += o.new;
        self.mixed += o.mixed;
    }
}

/// What the virtual disk may hold after a crash.
pub struct Model {
    flushed: Vec<u8>,
    current: Vec<u8>,
    /// Per unit: its content after each operation that touched it since
    /// the last flush.
    versions: Vec<Vec<Box<[u8]>>>,
    /// Per unit: its only version comes from one unit-aligned operation
    /// that covered all of it.
    whole: Vec<bool>,
    touched: Vec<usize>,
}

impl Model {
    pub fn new(content: Vec<u8>) -> Self {
        let units = content.len().div_ceil(UNIT);
        Self {
            flushed: content.clone(),
            current: content,
            versions: vec![Vec::new(); units],
            whole: vec![false; units],
            touched: Vec::new(),
        }
    }

    pub fn len(&self) -> u64 {
        self.current.len() as u64
    }

    /// The content the running process sees.
    pub fn current(&self) -> &[u8] {
        &self.current
    }

    fn record(&mut self, off: u64, len: u64) {
        if len == 0 {
            return;
        }
        let (off, len) = (off as usize, len as usize);
        for u in off / UNIT..=(off + len - 1) / UNIT {
            let s = u * UNIT;
            let e = (s + UNIT).min(self.current.len());
            let covered = off <= s && off + len >= e;
            if self.versions[u].is_empty() {
                self.touched.push(u);
                self.whole[u] = covered && off % UNIT == 0;
            } else {
                self.whole[u] = false;
            }
            self.versions[u].push(self.current[s..e].into());
        }
    }

    pub fn write(&mut self, off: u64, data: &[u8]) {
        self.current[off as usize..off as usize + data.len()].copy_from_slice(data);
        self.record(off, data.len() as u64);
    }

    pub fn zero(&mut self, off: u64, len: u64) {
        self.current[off as usize..(off + len) as usize].fill(0);
        self.record(off, len);
    }

    /// Trim: whole blocks in the range read as zeros, the rest is unchanged.
    pub fn trim(&mut self, off: u64, len: u64, block_size: u64) {
        let first = off.div_ceil(block_size);
        let last = (off + len) / block_size;
        for b in first..last {
            let s = b * block_size;
            let e = ((b + 1) * block_size).min(self.len());
            self.zero(s, e - s);
        }
    }

    /// A flush succeeded: everything so far is durable.
    pub fn flushed_now(&mut self) {
        for u in std::mem::take(&mut self.touched) {
            let s = u * UNIT;
            let e = (s + UNIT).min(self.current.len());
            self.flushed[s..e].copy_from_slice(&self.current[s..e]);
            self.versions[u].clear();
            self.whole[u] = false;
        }
    }

    /// After recovery the disk holds `content`, and all of it is durable.
    pub fn reset(&mut self, content: &[u8]) {
        self.flushed_now();
        self.current.copy_from_slice(content);
        self.flushed.copy_from_slice(content);
    }

    /// Checks what a disk reads after a crash against the model.
    pub fn check(&self, got: &[u8]) -> Result<Outcome, String> {
        assert_eq!(got.len(), self.current.len());
        let mut o = Outcome::default();
        for (u, versions) in self.versions.iter().enumerate() {
            let s = u * UNIT;
            let e = (s + UNIT).min(got.len());
            let (g, old) = (&got[s..e], &self.flushed[s..e]);
            if versions.is_empty() {
                if g != old {
                    let i = s + g.iter().zip(old).position(|(a, b)| a != b).unwrap();
                    return Err(format!(
                        "byte {i} was not written since the last flush but reads {:#04x} instead of {:#04x}",
                        got[i], self.flushed[i]
                    ));
                }
                o.untouched += 1;
                continue;
            }
            if g == old {
                o.old += 1;
                continue;
            }
            if g == &*versions[versions.len() - 1] {
                o.new += 1;
                continue;
            }
            if self.whole[u] {
                return Err(format!(
                    "unit at {s} was written whole by one aligned operation but came back torn"
                ));
            }
            for (i, &b) in g.iter().enumerate() {
                if b != old[i] && !versions.iter().any(|v| v[i] == b) {
                    return Err(format!(
                        "byte {} reads {b:#04x}: neither its flushed value {:#04x} nor any value written since",
                        s + i,
                        old[i]
                    ));
                }
            }
            o.mixed += 1;
        }
        Ok(o)
    }
}

/// One opened disk: a single file, or a differencing chain read through
/// its parents.
pub enum Target {
    Disk(Box<Vhdx>),
    Chain(Chain),
}

impl Target {
    pub fn open(fs: &CrashFs, path: &Path, chain: bool, writable: bool) -> vhdx::Result<Self> {
        Ok(if chain {
            Target::Chain(Chain::open(fs, path, writable)?)
        } else {
            Target::Disk(Box::new(Vhdx::open(fs, path, writable)?))
        })
    }

    pub fn top(&self) -> &Vhdx {
        match self {
            Target::Disk(v) => v,
            Target::Chain(c) => c.top(),
        }
    }

    pub fn write(&mut self, off: u64, data: &[u8]) -> vhdx::Result<()> {
        match self {
            Target::Disk(v) => v.write(off, data),
            Target::Chain(c) => c.write(off, data),
        }
    }

    pub fn zero(&mut self, off: u64, len: u64) -> vhdx::Result<()> {
        match self {
            Target::Disk(v) => v.zero(off, len),
            Target::Chain(c) => c.zero(off, len),
        }
    }

    pub fn trim(&mut self, off: u64, len: u64) -> vhdx::Result<()> {
        match self {
            Target::Disk(v) => v.trim(off, len),
            Target::Chain(c) => c.trim(off, len),
        }
    }

    pub fn flush(&mut self) -> vhdx::Result<()> {
        match self {
            Target::Disk(v) => v.flush(),
            Target::Chain(c) => c.flush(),
        }
    }

    pub fn read(&self, off: u64, buf: &mut [u8]) -> vhdx::Result<()> {
        match self {
            Target::Disk(v) => v.read(off, buf),
            Target::Chain(c) => c.read(off, buf),
        }
    }

    pub fn read_all(&self) -> Vec<u8> {
        self.read_prefix(self.top().virtual_size())
    }

    /// The first `len` bytes of the virtual disk.
    pub fn read_prefix(&self, len: u64) -> Vec<u8> {
        let mut buf = vec![0u8; len as usize];
        self.read(0, &mut buf)
            .unwrap_or_else(|e| panic!("reading the disk: {e}"));
        buf
    }

    /// Drops every handle without flushing or closing (the process died).
    pub fn abandon(self) {
        match self {
            Target::Disk(v) => (*v).abandon(),
            Target::Chain(c) => c.into_layers().into_iter().for_each(Vhdx::abandon),
        }
    }

    pub fn close(self) -> vhdx::Result<()> {
        match self {
            Target::Disk(v) => (*v).close(),
            Target::Chain(c) => c.close(),
        }
    }
}

/// A random operation on the virtual disk.
#[derive(Debug)]
pub enum Op {
    Write(u64, Vec<u8>),
    Zero(u64, u64),
    Trim(u64, u64),
    Flush,
}

impl Op {
    pub fn name(&self) -> &'static str {
        match self {
            Op::Write(..) => "write",
            Op::Zero(..) => "zero",
            Op::Trim(..) => "trim",
            Op::Flush => "flush",
        }
    }

    /// Runs the operation on `t`.
    pub fn run(&self, t: &mut Target) -> vhdx::Result<()> {
        match self {
            Op::Write(off, data) => t.write(*off, data),
            Op::Zero(off, len) => t.zero(*off, *len),
            Op::Trim(off, len) => t.trim(*off, *len),
            Op::Flush => t.flush(),
        }
    }

    /// The part of a disk of `len` bytes the operation may change.
    pub fn range(&self, len: u64) -> Option<(u64, u64)> {
        match self {
            Op::Write(off, data) => Some((*off, data.len() as u64)),
            Op::Zero(off, n) | Op::Trim(off, n) if *off < len => Some((*off, *n)),
            _ => None,
        }
    }

    /// Applies the operation to the model; `ok` says whether it succeeded
    /// (a failed write or zero may still have reached the medium in part).
    pub fn apply(&self, m: &mut Model, block_size: u64, ok: bool) {
        match self {
            // Ranges past the modelled part of the disk change nothing in it.
            Op::Zero(off, _) | Op::Trim(off, _) if *off >= m.len() => {}
            Op::Write(off, data) => m.write(*off, data),
            Op::Zero(off, len) => m.zero(*off, *len),
            Op::Trim(off, len) => m.trim(*off, *len, block_size),
            Op::Flush if ok => m.flushed_now(),
            Op::Flush => {}
        }
    }
}

/// A random range in a disk of `size` bytes: byte-, unit-, sector- or
/// block-aligned, from a few bytes to one and a half blocks long.
pub fn random_range(rng: &mut SmallRng, size: u64, block: u64, sector: u64) -> (u64, u64) {
    let align = match rng.gen_range(0..8) {
        0..=2 => 1,
        3 | 4 => UNIT as u64,
        5 | 6 => sector,
        _ => block,
    };
    let max = match rng.gen_range(0..4) {
        0 => 2048,
        1 => 32 * 1024,
        2 => 300 * 1024,
        _ => block + block / 2,
    }
    .min(size);
    let len = (rng.gen_range(1..=max).div_ceil(align) * align).min(size / align * align);
    let off = rng.gen_range(0..=size - len) / align * align;
    (off, len)
}

/// A random operation: mostly writes, some zeroing, trims and flushes.
pub fn random_op(rng: &mut SmallRng, size: u64, block: u64, sector: u64, trim: bool) -> Op {
    match rng.gen_range(0..20) {
        0..=10 => {
            let (off, len) = random_range(rng, size, block, sector);
            Op::Write(off, random_bytes(rng, len as usize))
        }
        11..=13 => {
            let (off, len) = random_range(rng, size, block, sector);
            Op::Zero(off, len)
        }
        14 | 15 if trim => {
            let (off, len) = random_range(rng, size, block, sector);
            Op::Trim(off, len)
        }
        _ => Op::Flush,
    }
}

/// The durable bytes of each file, to prove a read-only open wrote nothing.
pub fn snapshot(fs: &CrashFs, paths: &[PathBuf]) -> Vec<Option<Vec<u8>>> {
    paths
        .iter()
        .map(|p| fs.file(p).map(|f| f.contents()))
        .collect()
}

/// Writes, flushes and pending operations of each file: unchanged if
/// nothing was written or flushed.
pub fn op_counts(fs: &CrashFs, paths: &[PathBuf]) -> Vec<Option<(u64, u64, usize)>> {
    paths
        .iter()
        .map(|p| {
            fs.file(p)
                .map(|f| (f.write_count(), f.flush_count(), f.pending_ops()))
        })
        .collect()
}
