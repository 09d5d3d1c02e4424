//! The manifest of one backup point (`<repo>/<NNNN>/manifest.json`): what
//! was backed up, from which RCT IDs, and a BLAKE3 hash per block of each
//! disk's content at that point and of the file that holds it. A point
//! exists once its manifest does.

use serde::{Deserialize, Serialize};

pub const MANIFEST_FORMAT: &str = "refpoint-backup-1";
pub const MANIFEST_NAME: &str = "manifest.json";
/// Bytes hashed per manifest hash.
pub const HASH_BLOCK: u64 = 1 << 20;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub format: String,
    pub machine: String,
    pub point: u32,
    /// "full", "incremental", or "mixed" (some disks full).
    pub kind: String,
    pub created: u64,
    pub checkpoint: u64,
    pub disks: Vec<DiskManifest>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct DiskManifest {
    pub name: String,
    /// File name inside the point's directory.
    pub file: String,
    /// The point whose file is this file's parent (differential exports).
    pub parent_point: Option<u32>,
    pub virtual_size: u64,
    pub logical_sector_size: u32,
    /// The RCT ID of the disk at this point.
    pub rct_id: Option<String>,
    /// The RCT ID the differential is based on.
    pub since_rct_id: Option<String>,
    /// Why this disk was exported in full.
    pub full_reason: Option<String>,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub hash_block: u64,
    /// BLAKE3 (hex) of each `hash_block` bytes of the disk's content.
    pub hashes: Vec<String>,
    /// Length of `file` as written. With `file_hashes`, lets `verify` find
    /// damage anywhere in the file (headers, log, metadata, unused space),
    /// not only in the content the hashes above cover: such damage may not
    /// change what a reader sees today, yet it is a failing medium, and the
    /// next log replay or block allocation could make it matter.
    #[serde(default)]
    pub file_size: u64,
    /// BLAKE3 (hex) of each `hash_block` bytes of `file`, read back after
    /// it was closed. Empty in manifests written before it existed, which
    /// are then checked by content only.
    #[serde(default)]
    pub file_hashes: Vec<String>,
}

/// What a manifest says about a point without its hashes (which, at one
/// per MiB, make a large disk's manifest tens of MiB): enough to open the
/// point's files.
#[derive(Debug, Clone, Deserialize)]
pub struct ManifestHead {
    pub machine: String,
    pub point: u32,
    pub disks: Vec<DiskHead>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DiskHead {
    pub name: String,
    pub file: String,
}
