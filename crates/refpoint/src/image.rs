//! One readable disk image, whatever its format: a raw file or a VHDX
//! (with its differencing chain).

use anyhow::{Context, Result};
use std::path::Path;
use std::sync::Arc;
use storage::{Fs, LocalFs, OpenMode, Storage};
use vhdx::format::FILE_TYPE_IDENTIFIER_SIGNATURE;
use vhdx::Chain;

/// A disk to read from.
pub enum Image {
    Raw { file: Arc<dyn Storage>, size: u64 },
    Vhdx(Chain),
}

/// Whether the file at `path` starts with the VHDX signature.
pub fn is_vhdx(path: &Path) -> Result<bool> {
    let f = LocalFs
        .open(path, OpenMode::ReadOnly)
        .with_context(|| format!("cannot open {}", path.display()))?;
    let mut sig = [0u8; 8];
    f.read_at_or_zero(0, &mut sig)
        .with_context(|| format!("cannot read {}", path.display()))?;
    Ok(&sig == FILE_TYPE_IDENTIFIER_SIGNATURE)
}

impl Image {
    /// Opens `path` read-only, detecting the format from its content.
    pub fn open(path: &Path) -> Result<Self> {
        if is_vhdx(path)? {
            Ok(Image::Vhdx(Chain::open(&LocalFs, path, false)?))
        } else {
            let file = LocalFs.open(path, OpenMode::ReadOnly)?;
            let size = file.len()?;
            Ok(Image::Raw { file, size })
        }
    }

    pub fn size(&self) -> u64 {
        match self {
            Image::Raw { size, .. } => *size,
            Image::Vhdx(c) => c.virtual_size(),
        }
    }

    pub fn format(&self) -> &'static str {
        match self {
            Image::Raw { .. } => "raw",
            Image::Vhdx(_) => "vhdx",
        }
    }

    /// Logical sector size (512 for raw files).
    pub fn logical_sector_size(&self) -> u32 {
        match self {
            Image::Raw { .. } => 512,
            Image::Vhdx(c) => c.logical_sector_size(),
        }
    }

    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        match self {
            Image::Raw { file, .. } => file.read_at_or_zero(offset, buf)?,
            Image::Vhdx(c) => c.read(offset, buf)?,
        }
        Ok(())
    }

    /// Ranges of `offset..offset+len` that may hold data (`true`) or are
    /// known to read as zeros (`false`).
    pub fn extents(&self, offset: u64, len: u64) -> Result<Vec<(u64, u64, bool)>> {
        match self {
            Image::Raw { file, .. } => {
                let mut out = Vec::new();
                let mut pos = offset;
                for (o, l) in file.data_ranges(offset, len)? {
                    if o > pos {
                        out.push((pos, o - pos, false));
                    }
                    out.push((o, l, true));
                    pos = o + l;
                }
                if pos < offset + len {
                    out.push((pos, offset + len - pos, false));
                }
                Ok(out)
            }
            Image::Vhdx(c) => Ok(c
                .map(offset, len)?
                .into_iter()
                .map(|(o, l, layer)| (o, l, layer.is_some()))
                .collect()),
        }
    }
}

/// Whether `b` is all zeros.
pub fn is_zero(b: &[u8]) -> bool {
    let (chunks, rest) = b.split_at(b.len() / 16 * 16);
    chunks
        .chunks_exact(16)
        .all(|c| u128::from_ne_bytes(c.try_into().unwrap()) == 0)
        && rest.iter().all(|&x| x == 0)
}
