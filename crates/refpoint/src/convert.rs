//! `vhd convert`: any image (raw, VHDX, the newest file of a chain) into a
//! flat VHDX (fixed or dynamic, any block size) or a raw file, through
//! `vdisk`'s copy engine ([`vdisk::copy`]): ranges that are holes in the
//! source or read as zeros are not written, so the output stays sparse,
//! and a failed conversion leaves no output behind.

use crate::image;
use anyhow::{bail, Result};
use std::path::Path;
use storage::LocalFs;
use vdisk::copy::{copy_into, CopyOptions, Output};
pub use vdisk::copy::{CopySummary as ConvertSummary, Format};
use vhdx::{CreateOptions, DiskType};

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

/// Converts `src` to `dst` (which must not exist).
pub fn convert(
    src: &Path,
    dst: &Path,
    opts: &ConvertOptions,
    progress: &dyn Fn(u64, u64),
) -> Result<ConvertSummary> {
    let image = image::open(src)?;
    let size = image.size();
    let ss = opts
        .logical_sector_size
        .unwrap_or(image.logical_sector_size());
    if opts.format == Format::Vhdx && size % ss as u64 != 0 {
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
    let out = Output::create(&LocalFs, dst, opts.format, &co)?;
    Ok(copy_into(
        &image,
        out,
        CopyOptions::default(),
        &mut |done, total| progress(done, total),
    )?)
}
