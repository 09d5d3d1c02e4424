//! `vhd convert`: any image (raw, VHDX, the newest file of a chain) into a
//! flat VHDX (fixed or dynamic, any block size) or a raw file. Ranges that
//! are holes in the source or read as zeros are not written, so the output
//! stays sparse.

use crate::image::{is_zero, Image};
use anyhow::{bail, Context, Result};
use std::path::Path;
use storage::{Fs, LocalFs, Storage};
use vhdx::{create, CreateOptions, DiskType};

/// The output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Vhdx,
    Raw,
}

impl Format {
    /// From the file name: `.vhdx`/`.avhdx` → VHDX, anything else → raw.
    pub fn from_path(p: &Path) -> Format {
        match p
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
        {
            Some(e) if e == "vhdx" || e == "avhdx" => Format::Vhdx,
            _ => Format::Raw,
        }
    }
}

/// Options of a conversion.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    pub format: Format,
    pub disk_type: DiskType,
    pub block_size: u32,
    /// Logical sector size of a VHDX output; `None` keeps the source's.
    pub logical_sector_size: Option<u32>,
    pub physical_sector_size: u32,
}

/// What a conversion did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ConvertSummary {
    pub virtual_size: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

/// Bytes moved per step: large enough for sequential speed.
const CHUNK: u64 = 8 << 20;

/// Converts `src` to `dst` (which must not exist).
pub fn convert(
    src: &Path,
    dst: &Path,
    opts: &ConvertOptions,
    progress: &dyn Fn(u64, u64),
) -> Result<ConvertSummary> {
    if dst.exists() {
        bail!(
            "{} already exists; remove it or choose another destination",
            dst.display()
        );
    }
    let image =
        Image::open(src).with_context(|| format!("cannot open source {}", src.display()))?;
    let size = image.size();
    let mut sink: Box<dyn Sink> = match opts.format {
        Format::Vhdx => {
            let ss = opts
                .logical_sector_size
                .unwrap_or(image.logical_sector_size());
            if size % ss as u64 != 0 {
                bail!(
                    "{} is {size} bytes, not a multiple of the {ss}-byte sector a VHDX needs",
                    src.display()
                );
            }
            let co = CreateOptions {
                virtual_size: size,
                disk_type: opts.disk_type,
                block_size: opts.block_size,
                logical_sector_size: ss,
                physical_sector_size: opts.physical_sector_size,
            };
            Box::new(create(&LocalFs, dst, &co)?)
        }
        Format::Raw => {
            let f = LocalFs
                .create(dst)
                .with_context(|| format!("cannot create {}", dst.display()))?;
            f.set_len(size)?;
            Box::new(RawSink(f))
        }
    };
    let mut summary = ConvertSummary {
        virtual_size: size,
        ..Default::default()
    };
    let mut buf = vec![0u8; CHUNK as usize];
    let mut pos = 0;
    while pos < size {
        let len = CHUNK.min(size - pos);
        for (off, n, data) in image.extents(pos, len)? {
            if !data {
                continue;
            }
            let b = &mut buf[..n as usize];
            image.read(off, b)?;
            summary.bytes_read += n;
            write_nonzero(&mut *sink, off, b, &mut summary.bytes_written)?;
        }
        pos += len;
        progress(pos, size);
    }
    sink.finish()
        .with_context(|| format!("cannot finish {}", dst.display()))?;
    Ok(summary)
}

/// Writes the parts of `b` that are not all zeros, in 64 KiB granules.
fn write_nonzero(sink: &mut dyn Sink, off: u64, b: &[u8], written: &mut u64) -> Result<()> {
    const GRANULE: usize = 64 << 10;
    let mut i = 0;
    while i < b.len() {
        let start = i;
        while i < b.len() && !is_zero(&b[i..(i + GRANULE).min(b.len())]) {
            i = (i + GRANULE).min(b.len());
        }
        if i > start {
            sink.write(off + start as u64, &b[start..i])?;
            *written += (i - start) as u64;
        }
        while i < b.len() && is_zero(&b[i..(i + GRANULE).min(b.len())]) {
            i = (i + GRANULE).min(b.len());
        }
    }
    Ok(())
}

/// Where converted bytes go.
trait Sink {
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<()>;
    fn finish(self: Box<Self>) -> Result<()>;
}

impl Sink for vhdx::Vhdx {
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        Ok(vhdx::Vhdx::write(self, offset, data)?)
    }
    fn finish(self: Box<Self>) -> Result<()> {
        Ok(self.close()?)
    }
}

struct RawSink(std::sync::Arc<dyn Storage>);

impl Sink for RawSink {
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        Ok(self.0.write_at(offset, data)?)
    }
    fn finish(self: Box<Self>) -> Result<()> {
        Ok(self.0.flush()?)
    }
}
