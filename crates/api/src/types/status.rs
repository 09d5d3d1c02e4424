//! `GET /v1/status` and `POST /v1/shutdown`.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use utoipa::ToSchema;

/// What the daemon is: its version, process and state directory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct DaemonStatus {
    /// The daemon's package version.
    pub version: String,
    pub pid: u32,
    /// The state directory (`$REFPOINT_HOME`).
    #[schema(value_type = String)]
    pub home: PathBuf,
    /// Jobs (backups, restores, verifications) still running.
    pub jobs_running: u64,
    /// The port of NBD over TCP (TLS required), on the host the API was
    /// reached at; `null` when the daemon serves NBD on its socket only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbd_port: Option<u16>,
}

/// The answer to a shutdown request; the daemon stops after sending it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ShuttingDown {
    /// Always `true`.
    pub shutting_down: bool,
}
