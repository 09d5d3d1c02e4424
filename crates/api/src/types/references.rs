//! Reference points: what a converted recovery checkpoint leaves.

use super::BackupLink;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Per disk, the RCT ID at the checkpoint, to ask "what changed since".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReferencePoint {
    pub id: u64,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// The checkpoint it was converted from.
    pub checkpoint: u64,
    pub disks: Vec<ReferenceDisk>,
    pub backup: Option<BackupLink>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReferenceDisk {
    pub name: String,
    /// `None` when the disk was not tracked at the checkpoint.
    pub rct_id: Option<String>,
}

/// The answer to destroying a reference point (its RCT IDs are released).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Destroyed {
    /// The reference point destroyed.
    pub destroyed: u64,
}
