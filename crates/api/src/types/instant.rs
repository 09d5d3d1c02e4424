//! `/v1/instant-restores` and a machine's `finish` and `instant`: machines
//! that run on a backup point at once, made standalone in the background.

use super::Machine;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use utoipa::ToSchema;

/// Body of `POST /v1/instant-restores`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InstantRequest {
    /// The repository (a per-machine one, or a host repository with
    /// `machine`).
    #[schema(value_type = String)]
    pub repository: PathBuf,
    /// The point (of a host repository: the host point); the newest if
    /// left out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point: Option<u32>,
    /// In a host repository: which machine of the host point.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    /// The new machine's name.
    pub name: String,
}

/// The answer of an instant restore: the machine, ready to serve.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct InstantRestored {
    pub machine: Machine,
    /// Its NBD exports (`<name>/<disk>`, read-write, tracked).
    pub exports: Vec<String>,
    pub seconds: f64,
}

/// Where an instantly restored machine runs from (part of a [`Machine`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct InstantOrigin {
    #[schema(value_type = String)]
    pub repository: PathBuf,
    pub point: u32,
    pub source_machine: String,
    /// Seconds since the Unix epoch.
    pub created: u64,
    /// A finish is under way (or was interrupted and resumes).
    pub finishing: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<u64>,
}

/// Body of `POST /v1/machines/{machine}/finish`; may be left out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FinishRequest {
    /// Copy at most this many bytes per second.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<u64>,
}

/// The result of a finished finish job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FinishSummary {
    pub machine: String,
    pub disks: Vec<FinishedDisk>,
    pub bytes_copied: u64,
    pub seconds: f64,
    /// An interrupted finish was resumed.
    pub resumed: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FinishedDisk {
    pub name: String,
    /// The standalone file, under the name the disk always had.
    #[schema(value_type = String)]
    pub file: PathBuf,
    pub bytes_copied: u64,
    /// Catch-up rounds of changes made while copying.
    pub rounds: usize,
    /// How long writes waited at the switch, in seconds.
    pub paused_seconds: f64,
    /// The disk had been switched by an interrupted finish.
    pub already_standalone: bool,
}

/// The answer of `DELETE /v1/machines/{machine}/instant`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Discarded {
    pub discarded: String,
}
