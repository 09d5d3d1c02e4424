//! `GET /v1/machines/{machine}/disks/{disk}`: what a live disk is.

use super::TrackingStatus;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A live disk's geometry, chain and tracking, as `GetVirtualDiskInformation`
/// gives it. Offsets everywhere in the API are virtual-disk offsets.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DiskInfo {
    /// `<machine>/<disk>` (or the file, for a disk outside the daemon).
    pub disk: String,
    /// `vhdx` or `raw`.
    pub format: String,
    /// The size the guest sees, in bytes.
    pub virtual_size: u64,
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
    /// The VHDX payload block size (0 for a raw file).
    pub block_size: u32,
    /// Files in the chain: 1 for a base disk, more for differencing children.
    pub chain_depth: u32,
    /// What tracking checks the disk by: `vhdx:<DataWriteGuid>` or
    /// `raw:<change stamp>`.
    pub identity: String,
    pub tracking: TrackingStatus,
}
