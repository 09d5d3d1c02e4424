//! `GET /v1/machines/{machine}/disks/{disk}/changes`: ranges changed since
//! an RCT ID, like `QueryChangesVirtualDisk`.

use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

/// The query string of a changes request. Offsets and lengths are
/// virtual-disk bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ChangesQuery {
    /// The RCT ID to report changes since.
    pub since: String,
    /// An RCT ID to report changes until (default: now).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<String>,
    /// Where to start, in bytes (default 0).
    #[serde(default)]
    pub offset: u64,
    /// How many bytes to look at (default: to the end of the disk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    /// Stop after this many ranges; continue at `offset + processed_length`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ranges: Option<u64>,
}

impl ChangesQuery {
    /// Everything changed since `since`.
    pub fn since(since: impl Into<String>) -> Self {
        Self {
            since: since.into(),
            until: None,
            offset: 0,
            length: None,
            max_ranges: None,
        }
    }
}

/// The changed ranges (`refpoint rct changes --json` prints the same).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Changes {
    pub since: String,
    pub until: Option<String>,
    pub ranges: Vec<ChangedRange>,
    /// Bytes looked at from `offset`: less than asked when `max_ranges`
    /// cut the answer short.
    pub processed_length: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ChangedRange {
    pub offset: u64,
    pub length: u64,
}
