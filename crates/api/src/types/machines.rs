//! `GET /v1/machines` and `GET /v1/machines/{machine}`.

use super::{Checkpoint, ReferencePoint};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use utoipa::ToSchema;

/// A machine: a named set of disks with optional freeze/thaw hooks, and
/// its checkpoints and reference points, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Machine {
    pub name: String,
    pub disks: Vec<MachineDisk>,
    /// Command run before a checkpoint to quiesce applications.
    pub freeze: Option<String>,
    /// Command run after a checkpoint (also after a failed one).
    pub thaw: Option<String>,
    #[serde(default)]
    pub checkpoints: Vec<Checkpoint>,
    #[serde(default)]
    pub reference_points: Vec<ReferencePoint>,
    /// Number the next checkpoint or reference point gets.
    pub next_id: u64,
    /// Set while the machine runs on a backup point (instant restore).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instant: Option<super::InstantOrigin>,
}

/// A machine's disk: the file it was created with (which also names its
/// tracking file) and the file written now (the newest checkpoint child,
/// or the base itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MachineDisk {
    /// `disk0`, `disk1`, …
    pub name: String,
    #[schema(value_type = String)]
    pub base: PathBuf,
    #[schema(value_type = String)]
    pub active: PathBuf,
}

impl Machine {
    /// The disk named `name`.
    pub fn disk(&self, name: &str) -> Option<&MachineDisk> {
        self.disks.iter().find(|d| d.name == name)
    }
}
