//! The storage behind a disk: a VHDX chain or a raw file.

use crate::error::{Result, VdiskError};
use std::path::Path;
use std::sync::Arc;
use storage::{Fs, OpenMode, Storage};
use vhdx::format::FILE_TYPE_IDENTIFIER_SIGNATURE;
use vhdx::Chain;

/// A disk image.
pub enum Image {
    Vhdx(Chain),
    Raw { file: Arc<dyn Storage>, size: u64 },
}

impl Image {
    /// Opens `path`, detecting VHDX by its signature; anything else is raw.
    pub fn open(fs: &dyn Fs, path: &Path, writable: bool) -> Result<Self> {
        let io = |op| {
            let p = path.display().to_string();
            move |source| VdiskError::Io {
                path: p,
                op,
                source,
            }
        };
        let probe = fs.open(path, OpenMode::ReadOnly).map_err(io("opening"))?;
        let mut sig = [0u8; 8];
        probe.read_at_or_zero(0, &mut sig).map_err(io("reading"))?;
        drop(probe);
        if &sig == FILE_TYPE_IDENTIFIER_SIGNATURE {
            return Ok(Image::Vhdx(Chain::open(fs, path, writable)?));
        }
        let mode = if writable {
            OpenMode::ReadWrite
        } else {
            OpenMode::ReadOnly
        };
        let file = fs.open(path, mode).map_err(io("opening"))?;
        if writable {
            file.try_lock_exclusive().map_err(|e| {
                if e.kind() == std::io::ErrorKind::WouldBlock {
                    VdiskError::Vhdx(vhdx::Error::Locked {
                        file: path.display().to_string(),
                    })
                } else {
                    io("locking")(e)
                }
            })?;
        }
        let size = file.len().map_err(io("reading the size"))?;
        Ok(Image::Raw { file, size })
    }

    pub fn size(&self) -> u64 {
        match self {
            Image::Vhdx(c) => c.virtual_size(),
            Image::Raw { size, .. } => *size,
        }
    }

    /// The identity tracking checks: the VHDX DataWriteGuid, which every
    /// writer changes; a raw file has no such field, so its change stamp
    /// (inode, length, modification and change times) stands in: tracking
    /// records it after refpoint's last clean close, and any later write by
    /// anyone changes it.
    pub fn identity(&self) -> Result<String> {
        match self {
            Image::Vhdx(c) => Ok(format!("vhdx:{}", c.top().data_write_guid())),
            Image::Raw { file, .. } => {
                let stamp = file.change_stamp().map_err(|source| VdiskError::Io {
                    path: String::new(),
                    op: "reading the file's change stamp",
                    source,
                })?;
                Ok(format!("raw:{stamp}"))
            }
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

    /// Ranges of `offset..offset+len` that may hold data (`true`) or are
    /// known to read as zeros (`false`: unallocated blocks, file holes).
    pub fn extents(&self, offset: u64, len: u64) -> Result<Vec<(u64, u64, bool)>> {
        match self {
            Image::Vhdx(c) => Ok(c
                .map(offset, len)?
                .into_iter()
                .map(|(o, l, layer)| (o, l, layer.is_some()))
                .collect()),
            Image::Raw { file, .. } => {
                let ranges = file
                    .data_ranges(offset, len)
                    .map_err(|source| VdiskError::Io {
                        path: String::new(),
                        op: "mapping holes",
                        source,
                    })?;
                let mut out = Vec::new();
                let mut pos = offset;
                for (o, l) in ranges {
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
        }
    }

    /// Reads virtual bytes (zeros past the end of a raw file).
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.read("", offset, buf)
    }

    pub(crate) fn read(&self, name: &str, offset: u64, buf: &mut [u8]) -> Result<()> {
        match self {
            Image::Vhdx(c) => Ok(c.read(offset, buf)?),
            Image::Raw { file, .. } => {
                file.read_at_or_zero(offset, buf)
                    .map_err(|source| VdiskError::Io {
                        path: name.into(),
                        op: "reading",
                        source,
                    })
            }
        }
    }

    pub(crate) fn write(&mut self, name: &str, offset: u64, data: &[u8]) -> Result<()> {
        match self {
            Image::Vhdx(c) => Ok(c.write(offset, data)?),
            Image::Raw { file, .. } => {
                file.write_at(offset, data)
                    .map_err(|source| VdiskError::Io {
                        path: name.into(),
                        op: "writing",
                        source,
                    })
            }
        }
    }

    pub(crate) fn zero(&mut self, name: &str, offset: u64, len: u64) -> Result<()> {
        match self {
            Image::Vhdx(c) => Ok(c.zero(offset, len)?),
            Image::Raw { .. } => {
                let zeros = vec![0u8; (len as usize).min(1 << 20)];
                let mut done = 0;
                while done < len {
                    let n = (len - done).min(zeros.len() as u64) as usize;
                    self.write(name, offset + done, &zeros[..n])?;
                    done += n as u64;
                }
                Ok(())
            }
        }
    }

    pub(crate) fn trim(&mut self, offset: u64, len: u64) -> Result<()> {
        match self {
            Image::Vhdx(c) => Ok(c.trim(offset, len)?),
            Image::Raw { .. } => Ok(()),
        }
    }

    pub(crate) fn flush(&mut self, name: &str) -> Result<()> {
        match self {
            Image::Vhdx(c) => Ok(c.flush()?),
            Image::Raw { file, .. } => file.flush().map_err(|source| VdiskError::Io {
                path: name.into(),
                op: "flushing",
                source,
            }),
        }
    }
}

/// Whether `b` is all zeros (compared 16 bytes at a time).
pub fn is_zero(b: &[u8]) -> bool {
    let (chunks, rest) = b.split_at(b.len() / 16 * 16);
    chunks
        .chunks_exact(16)
        .all(|c| u128::from_ne_bytes(c.try_into().unwrap()) == 0)
        && rest.iter().all(|&x| x == 0)
}
