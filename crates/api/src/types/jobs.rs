//! `/v1/jobs`: long operations (backups, restores, verifications) run as
//! jobs; the API answers at once with the job and clients poll it.

use super::{BackupSummary, FinishSummary, HostBackupSummary, RestoreResult, VerifyReport};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Job {
    pub id: u64,
    pub kind: JobKind,
    /// The machine (backups) or repository (host backups, restores,
    /// verifications).
    pub target: String,
    pub state: JobState,
    /// What is being worked on now: a disk name, `restore` or `verify`;
    /// for a host backup, `host point N` (its parts are the machines).
    pub item: String,
    /// Bytes of `item` done so far, and its total.
    pub done: u64,
    pub total: u64,
    /// The progress of each part of a job that works on several at once
    /// (a host backup: one per machine); left out when there are none.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parts: Vec<JobPart>,
    /// Set when the job succeeded.
    pub result: Option<JobResult>,
    /// Set when the job failed.
    pub error: Option<String>,
    /// Seconds since the Unix epoch.
    pub started: u64,
    pub finished: Option<u64>,
}

/// One part of a job's progress: what it works on (a machine of a host
/// backup: `vm1`, its current disk after a slash: `vm1/disk0`), bytes done
/// of its total.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct JobPart {
    pub item: String,
    pub done: u64,
    pub total: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Backup,
    /// A backup of several machines as one host point.
    HostBackup,
    Restore,
    Verify,
    /// Making an instant machine's disks standalone.
    Finish,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Running,
    Succeeded,
    Failed,
}

/// What a finished job produced: its kind's result, sent bare (the shapes
/// differ, so each decodes as its own). A shape this version does not know
/// decodes as `Other` rather than failing the whole job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum JobResult {
    Backup(BackupSummary),
    HostBackup(HostBackupSummary),
    Restore(RestoreResult),
    Verify(VerifyReport),
    Finish(FinishSummary),
    #[schema(value_type = Object)]
    Other(serde_json::Value),
}

impl Job {
    /// Whether the job still runs.
    pub fn is_running(&self) -> bool {
        self.state == JobState::Running
    }
}
