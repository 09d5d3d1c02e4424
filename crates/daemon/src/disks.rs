//! What a disk is, as the API gives it ([`api::DiskInfo`]).

use crate::convert::disk_error;
use crate::tracking::status_of;
use api::{ApiError, DiskInfo, TrackingStatus};
use vdisk::{Disk, Image};

/// A raw file has no sector sizes of its own: it is read as 512-byte
/// sectors on a 4 KiB-page medium.
const RAW_LOGICAL_SECTOR: u32 = 512;
const RAW_PHYSICAL_SECTOR: u32 = 4096;

/// The format, geometry, chain and tracking of an opened disk, named
/// `disk` in the answer.
pub fn info_of(d: &mut Disk, disk: String) -> Result<DiskInfo, ApiError> {
    let tracking = status_of(d, disk.clone())?;
    image_info(d.image(), disk, tracking)
}

/// The format, geometry and chain of an image, with the tracking status
/// the caller found for it (a checkpoint's frozen view has none).
pub fn image_info(
    image: &Image,
    disk: String,
    tracking: TrackingStatus,
) -> Result<DiskInfo, ApiError> {
    let identity = image.identity().map_err(disk_error)?;
    let (logical_sector_size, physical_sector_size, block_size, chain_depth) = match image {
        Image::Vhdx(c) => (
            c.logical_sector_size(),
            c.top().physical_sector_size(),
            c.top().block_size(),
            u32::try_from(c.layers().len()).unwrap_or(u32::MAX),
        ),
        Image::Raw { .. } => (RAW_LOGICAL_SECTOR, RAW_PHYSICAL_SECTOR, 0, 1),
    };
    Ok(DiskInfo {
        disk,
        format: image.format().into(),
        virtual_size: image.size(),
        logical_sector_size,
        physical_sector_size,
        block_size,
        chain_depth,
        identity,
        tracking,
    })
}
