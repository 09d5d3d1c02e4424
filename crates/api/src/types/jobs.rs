//! `/v1/jobs`: long operations (backups, restores, verifications) run as
//! jobs; the API answers at once with the job and clients poll it.

use super::{BackupSummary, FinishSummary, RestoreResult, VerifyReport};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Job {
    pub id: u64,
    pub kind: JobKind,
    /// The machine (backups) or repository (restores, verifications).
    pub target: String,
    pub state: JobState,
    /// What is being worked on now: a disk name, `restore` or `verify`.
    pub item: String,
    /// Bytes of `item` done so far, and its total.
    pub done: u64,
    pub total: u64,
    /// Set when the job succeeded.
    pub result: Option<JobResult>,
    /// Set when the job failed.
    pub error: Option<String>,
    /// Seconds since the Unix epoch.
    pub started: u64,
    pub finished: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobKind {
    Backup,
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
