//! What the machine file holds (`<home>/machines/<name>.json`): a
//! machine's disks, checkpoints and reference points. The JSON shape is
//! the file format and the `--json` output; change it only compatibly.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// A machine's disk: the file it was created with (which also names its
/// tracking file) and the file currently written (the newest checkpoint
/// child, or the base itself).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MachineDisk {
    pub name: String,
    pub base: PathBuf,
    pub active: PathBuf,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointKind {
    Standard,
    Recovery,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    Application,
    Crash,
}

/// One disk of a checkpoint: `frozen` holds the point-in-time content
/// (read-only from now on), `child` takes the writes made after it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CheckpointDisk {
    pub name: String,
    pub frozen: PathBuf,
    pub child: PathBuf,
    /// The RCT ID sealed at the checkpoint, if the disk is tracked.
    pub rct_id: Option<String>,
}

/// Where a checkpoint or reference point was backed up.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupLink {
    pub dir: PathBuf,
    pub point: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
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

/// What remains of a converted recovery checkpoint: per disk, the RCT ID
/// at the checkpoint, to ask "what changed since".
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReferencePoint {
    pub id: u64,
    pub created: u64,
    pub checkpoint: u64,
    pub disks: Vec<ReferenceDisk>,
    pub backup: Option<BackupLink>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReferenceDisk {
    pub name: String,
    pub rct_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Machine {
    pub name: String,
    pub disks: Vec<MachineDisk>,
    pub freeze: Option<String>,
    pub thaw: Option<String>,
    #[serde(default)]
    pub checkpoints: Vec<Checkpoint>,
    #[serde(default)]
    pub reference_points: Vec<ReferencePoint>,
    /// Next checkpoint / reference point number.
    pub next_id: u64,
    /// Set while the machine runs on a backup point (instant restore):
    /// its disks are differencing children of the point's files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instant: Option<Instant>,
}

/// Where an instantly restored machine's data comes from, and whether
/// its disks are being made standalone.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Instant {
    /// The repository the point is in (a per-machine repository).
    pub repository: PathBuf,
    pub point: u32,
    /// The machine the point is a backup of.
    pub source_machine: String,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// A finish was started and has not completed: it resumes (the
    /// daemon resumes it at start).
    #[serde(default)]
    pub finishing: bool,
    /// The finish's copy rate limit in bytes per second, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<u64>,
    /// The disk the finish seals RCT IDs of now, if any: an interrupted
    /// finish's IDs are released when it resumes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealing: Option<Sealing>,
}

/// Where a finish's own RCT IDs begin: on `disk`, every ID after `after`
/// (the newest one before the finish sealed; `None`: there was none) that
/// no reference point keeps.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Sealing {
    pub disk: String,
    pub after: Option<String>,
}

impl Machine {
    pub fn disk(&self, name: &str) -> Option<&MachineDisk> {
        self.disks.iter().find(|d| d.name == name)
    }
    pub fn checkpoint(&self, id: u64) -> Option<&Checkpoint> {
        self.checkpoints.iter().find(|c| c.id == id)
    }
    pub fn reference_point(&self, id: u64) -> Option<&ReferencePoint> {
        self.reference_points.iter().find(|r| r.id == id)
    }
}

impl Machine {
    /// The machine disk whose frozen content `path` is (its base under a
    /// checkpoint, or a file a checkpoint froze), if it is one.
    pub fn frozen_disk(&self, path: &Path) -> Option<&MachineDisk> {
        self.disks.iter().find(|d| {
            (d.base == path && d.active != path)
                || self.checkpoints.iter().any(|c| {
                    c.disks
                        .iter()
                        .any(|cd| cd.name == d.name && cd.frozen == path)
                })
        })
    }

    /// The machine disk written through `path` now, if any.
    pub fn active_disk(&self, path: &Path) -> Option<&MachineDisk> {
        self.disks.iter().find(|d| d.active == path)
    }
}
