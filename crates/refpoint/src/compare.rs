//! `vhd compare`: where two images (raw or VHDX chains) first differ.

use crate::image;
use anyhow::Result;
use std::path::Path;

/// The outcome of a comparison.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Comparison {
    Identical {
        size: u64,
    },
    /// First differing byte, virtual offset.
    Differ {
        offset: u64,
    },
    /// Sizes differ; the common part is identical and the longer one holds
    /// non-zero data at `offset`.
    SizeMismatch {
        size_a: u64,
        size_b: u64,
        offset: Option<u64>,
    },
}

const CHUNK: u64 = 4 << 20;

/// Compares two images byte by byte (holes on both sides are skipped).
pub fn compare(a: &Path, b: &Path, progress: &dyn Fn(u64, u64)) -> Result<Comparison> {
    let (ia, ib) = (image::open(a)?, image::open(b)?);
    let common = ia.size().min(ib.size());
    let (mut ba, mut bb) = (vec![0u8; CHUNK as usize], vec![0u8; CHUNK as usize]);
    let mut pos = 0;
    while pos < common {
        let len = CHUNK.min(common - pos);
        let both_zero = ia.extents(pos, len)?.iter().all(|e| !e.2)
            && ib.extents(pos, len)?.iter().all(|e| !e.2);
        if !both_zero {
            ia.read_at(pos, &mut ba[..len as usize])?;
            ib.read_at(pos, &mut bb[..len as usize])?;
            if let Some(i) = ba[..len as usize]
                .iter()
                .zip(&bb[..len as usize])
                .position(|(x, y)| x != y)
            {
                return Ok(Comparison::Differ {
                    offset: pos + i as u64,
                });
            }
        }
        pos += len;
        progress(pos, common);
    }
    if ia.size() == ib.size() {
        return Ok(Comparison::Identical { size: common });
    }
    let longer = if ia.size() > ib.size() { &ia } else { &ib };
    let mut offset = None;
    let mut pos = common;
    while pos < longer.size() && offset.is_none() {
        let len = CHUNK.min(longer.size() - pos);
        longer.read_at(pos, &mut ba[..len as usize])?;
        offset = ba[..len as usize]
            .iter()
            .position(|&x| x != 0)
            .map(|i| pos + i as u64);
        pos += len;
    }
    Ok(Comparison::SizeMismatch {
        size_a: ia.size(),
        size_b: ib.size(),
        offset,
    })
}
