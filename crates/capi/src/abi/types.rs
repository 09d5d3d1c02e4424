//! The structures the header declares.

use super::args::put_text;
use crate::error::{tracking_code, Result};
use api::DiskInfo;
use std::ffi::c_char;

/// Room for an RCT ID (`rct:<tracking-guid>:<8 hex digits>`) with its NUL.
pub const REFPOINT_ID_MAX: usize = 64;
/// Room for a disk identity (`vhdx:<DataWriteGuid>`, `raw:<change stamp>`).
pub const REFPOINT_IDENTITY_MAX: usize = 128;

/// A VHDX file (a chain when `chain_depth` > 1).
pub const REFPOINT_FORMAT_VHDX: u32 = 1;
/// A raw image file.
pub const REFPOINT_FORMAT_RAW: u32 = 2;

/// A byte range at virtual-disk offsets.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct refpoint_range {
    pub offset: u64,
    pub length: u64,
}

/// What `refpoint_get_info` reports (`GetVirtualDiskInformation`).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct refpoint_info {
    /// The size the guest sees, in bytes.
    pub virtual_size: u64,
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
    /// The VHDX payload block size (0 for a raw file).
    pub block_size: u32,
    /// Files in the chain: 1 for a base disk.
    pub chain_depth: u32,
    /// `REFPOINT_FORMAT_VHDX` or `REFPOINT_FORMAT_RAW`.
    pub format: u32,
    /// 1 when change tracking is on.
    pub tracking_enabled: i32,
    /// Whether anything was written since `most_recent_id`: 1, 0, or -1
    /// when unknown (no ID yet, or tracking cannot answer).
    pub newer_changes: i32,
    /// 0, or the `REFPOINT_E_*` tracking code saying why tracking cannot
    /// answer (the next backup must be full).
    pub tracking_error: i32,
    /// What tracking checks the disk by (NUL-terminated).
    pub identity: [c_char; REFPOINT_IDENTITY_MAX],
    /// The newest sealed RCT ID, or "" (NUL-terminated).
    pub most_recent_id: [c_char; REFPOINT_ID_MAX],
}

fn put_c(s: &str, out: &mut [c_char], what: &str) -> Result<()> {
    let mut buf = vec![0u8; out.len()];
    put_text(s, &mut buf, what)?;
    for (o, b) in out.iter_mut().zip(buf) {
        *o = b as c_char;
    }
    Ok(())
}

pub fn make_info(i: &DiskInfo) -> Result<refpoint_info> {
    let t = &i.tracking;
    let tracking_error = t.error.as_ref().map_or(0, |e| tracking_code(&e.error));
    let mut info = refpoint_info {
        virtual_size: i.virtual_size,
        logical_sector_size: i.logical_sector_size,
        physical_sector_size: i.physical_sector_size,
        block_size: i.block_size,
        chain_depth: i.chain_depth,
        format: if i.format == "raw" {
            REFPOINT_FORMAT_RAW
        } else {
            REFPOINT_FORMAT_VHDX
        },
        tracking_enabled: i32::from(t.enabled),
        newer_changes: t.newer_changes.map_or(-1, i32::from),
        tracking_error,
        identity: [0; REFPOINT_IDENTITY_MAX],
        most_recent_id: [0; REFPOINT_ID_MAX],
    };
    put_c(&i.identity, &mut info.identity, "the identity")?;
    put_c(
        t.most_recent_id.as_deref().unwrap_or(""),
        &mut info.most_recent_id,
        "the most recent ID",
    )?;
    Ok(info)
}
