//! `/v1/machines/{machine}/checkpoints…`: create, delete, apply, convert.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointKind {
    /// Taken by a user, to go back to.
    Standard,
    /// Taken for a backup, converted to a reference point afterwards.
    Recovery,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    /// The freeze hook quiesced the applications first.
    Application,
    /// What a power cut would leave.
    Crash,
}

/// A point-in-time state of a machine: each disk got a new differencing
/// child; the parent is frozen and readable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Checkpoint {
    pub id: u64,
    pub kind: CheckpointKind,
    pub consistency: Consistency,
    /// Seconds since the Unix epoch.
    pub created: u64,
    pub disks: Vec<CheckpointDisk>,
    /// Set once a backup of this checkpoint completed.
    pub backup: Option<BackupLink>,
}

/// One disk of a checkpoint: `frozen` holds the point-in-time content
/// (read-only from now on), `child` takes the writes made after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CheckpointDisk {
    pub name: String,
    #[schema(value_type = String)]
    pub frozen: PathBuf,
    #[schema(value_type = String)]
    pub child: PathBuf,
    /// The RCT ID sealed at the checkpoint, if the disk is tracked.
    pub rct_id: Option<String>,
}

/// Where a checkpoint or reference point was backed up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackupLink {
    /// The repository directory.
    #[schema(value_type = String)]
    pub dir: PathBuf,
    pub point: u32,
}

/// Body of `POST /v1/machines/{machine}/checkpoints` (optional as a whole).
/// Absent fields are left out, and the daemon picks: `standard`, and
/// `application` consistency when the machine has a freeze hook, else
/// `crash`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct CheckpointRequest {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<CheckpointKind>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consistency: Option<Consistency>,
}

/// The answer to applying a checkpoint: the machine's disks were reverted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Applied {
    /// The checkpoint applied.
    pub applied: u64,
}
