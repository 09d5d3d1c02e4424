//! Backups, restores and verifications: the bodies that start them as jobs
//! and the results a finished job carries.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use utoipa::ToSchema;

/// Body of `POST /v1/machines/{machine}/backups`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackupRequest {
    /// The repository directory (made absolute by the daemon).
    #[schema(value_type = String)]
    pub to: PathBuf,
}

/// Body of `POST /v1/backups`: one host point of several machines, a
/// consistent cut taken all or nothing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct HostBackupRequest {
    /// The host repository directory (made absolute by the daemon).
    #[schema(value_type = String)]
    pub to: PathBuf,
    /// The machines to back up together (at least one).
    pub machines: Vec<String>,
    /// How long each freeze (and thaw) command may run, in seconds, before
    /// it is killed and the host backup fails (default 60; 0: no limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub freeze_timeout_seconds: Option<u64>,
}

/// What a host backup did (the result of a finished host backup job;
/// `refpoint backup --all --json` prints the same).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HostBackupSummary {
    pub host_point: u32,
    pub repository: String,
    /// Each machine's backup (its point in `machines/<machine>`), by name.
    pub machines: Vec<BackupSummary>,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub seconds: f64,
    /// What the run had to clean up from an interrupted one.
    pub recovered: Vec<String>,
}

/// Full, or only the blocks changed since the repository's last point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BackupKind {
    Full,
    Incremental,
    /// Of a whole point: some disks full, some incremental (never a disk's).
    Mixed,
}

impl BackupKind {
    /// The wire name: `full`, `incremental` or `mixed`.
    pub fn as_str(self) -> &'static str {
        match self {
            BackupKind::Full => "full",
            BackupKind::Incremental => "incremental",
            BackupKind::Mixed => "mixed",
        }
    }
}

impl std::fmt::Display for BackupKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a backup did (the result of a finished backup job; `refpoint
/// backup --json` prints the same).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct BackupSummary {
    pub machine: String,
    pub repository: String,
    pub point: u32,
    pub kind: BackupKind,
    pub disks: Vec<DiskBackupSummary>,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub seconds: f64,
    /// What the run had to clean up from an interrupted one.
    pub recovered: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DiskBackupSummary {
    pub name: String,
    /// `full` or `incremental`.
    pub kind: BackupKind,
    /// Why this disk was exported in full.
    pub full_reason: Option<String>,
    pub changed_bytes: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RestoreFormat {
    Vhdx,
    Raw,
}

/// Body of `POST /v1/restores`. Absent options are left out: the newest
/// point, every disk, `vhdx`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RestoreRequest {
    #[schema(value_type = String)]
    pub repository: PathBuf,
    /// A point, or in a host repository a host point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point: Option<u32>,
    /// In a host repository: the machine of the host point to restore.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    /// Restore only this disk.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk: Option<String>,
    /// The file (one disk) or directory to restore to.
    #[schema(value_type = String)]
    pub to: PathBuf,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<RestoreFormat>,
}

/// The result of a finished restore job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct RestoreResult {
    /// The files written.
    #[schema(value_type = Vec<String>)]
    pub files: Vec<PathBuf>,
}

/// Body of `POST /v1/verifications`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VerifyRequest {
    #[schema(value_type = String)]
    pub repository: PathBuf,
    /// Verify only this point, or host point (default: all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point: Option<u32>,
}

/// The result of a finished verification job (`refpoint verify --json`
/// prints the same).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VerifyReport {
    /// The points checked; in a host repository, the host points.
    pub points_checked: Vec<u32>,
    /// Virtual-disk bytes re-hashed against the content hashes.
    pub bytes_checked: u64,
    /// File bytes re-hashed against the file hashes.
    pub file_bytes_checked: u64,
    /// `None` when everything matched.
    pub first_bad: Option<BadBlock>,
    /// In a host repository: the points checked of each machine.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub machines: Vec<MachineVerified>,
}

/// The points of one machine a verification of a host repository checked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct MachineVerified {
    pub machine: String,
    pub points_checked: Vec<u32>,
}

/// The first block of a point that does not match its manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BadBlock {
    /// In a host repository: the machine whose point it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    pub point: u32,
    pub disk: String,
    pub scope: BadBlockScope,
    /// A byte offset in `file` or on the virtual disk, as `scope` says.
    pub offset: u64,
    /// The file that holds the bad data.
    pub file: String,
    pub problem: String,
}

/// What a bad block's `offset` counts in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BadBlockScope {
    /// A byte offset in the file: its bytes differ from what was written.
    File,
    /// A virtual-disk offset: the content differs from what was backed up.
    Content,
}
