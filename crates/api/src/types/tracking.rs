//! `/v1/machines/{machine}/disks/{disk}/tracking…`: resilient change
//! tracking of a live disk, and the tracking errors that force a full
//! backup.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

/// The tracking status of a disk (`refpoint rct status --json` prints the
/// same).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TrackingStatus {
    /// `<machine>/<disk>` (or the file, for a disk outside the daemon).
    pub disk: String,
    pub enabled: bool,
    /// The newest sealed RCT ID.
    pub most_recent_id: Option<String>,
    /// Whether anything was written since `most_recent_id`.
    pub newer_changes: Option<bool>,
    /// The RCT IDs changes can be asked since, oldest first.
    pub retained_ids: Vec<String>,
    /// Why tracking cannot be used, if it cannot.
    pub error: Option<TrackingError>,
}

/// A tracking error as scripts see it: tracking cannot prove which ranges
/// changed, so the caller must fall back to a full backup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TrackingError {
    pub error: TrackingErrorKind,
    pub message: String,
    /// Always `true`: every tracking error means "take a full backup".
    pub full_backup_required: bool,
}

impl TrackingError {
    pub fn new(error: TrackingErrorKind, message: impl Into<String>) -> Self {
        Self {
            error,
            message: message.into(),
            full_backup_required: true,
        }
    }
}

impl fmt::Display for TrackingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.error)
    }
}

/// The stable names of tracking errors (`rct::RctError::kind`). A name this
/// version does not know stays readable as [`TrackingErrorKind::Unknown`],
/// so a newer daemon's answer still decodes.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TrackingErrorKind {
    /// `tracking_disabled`
    Disabled,
    /// `unknown_id`: never issued, or tracking was reset since.
    UnknownId,
    /// `released_id`
    ReleasedId,
    /// `malformed_id`: not `rct:<tracking-guid>:<8 hex digits>`.
    MalformedId,
    /// `tracking_file_missing`
    FileMissing,
    /// `tracking_file_corrupt`
    FileCorrupt,
    /// `modified_while_untracked`: another tool wrote the disk.
    ModifiedWhileUntracked,
    /// `out_of_range`: the range lies past the end of the disk.
    OutOfRange,
    /// `invalid_parameter`
    InvalidParameter,
    /// `io`: an I/O error on the tracking file.
    Io,
    /// `tracking_failed`: stopped after an error it could not undo.
    Failed,
    /// `unproven_after_io_error`: a failed flush may have lost data.
    UnprovenAfterIoError,
    /// A name this version does not know, kept verbatim.
    Unknown(String),
}

impl TrackingErrorKind {
    /// Every kind this version knows.
    pub const KNOWN: &'static [TrackingErrorKind] = &[
        Self::Disabled,
        Self::UnknownId,
        Self::ReleasedId,
        Self::MalformedId,
        Self::FileMissing,
        Self::FileCorrupt,
        Self::ModifiedWhileUntracked,
        Self::OutOfRange,
        Self::InvalidParameter,
        Self::Io,
        Self::Failed,
        Self::UnprovenAfterIoError,
    ];

    /// The wire name.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Disabled => "tracking_disabled",
            Self::UnknownId => "unknown_id",
            Self::ReleasedId => "released_id",
            Self::MalformedId => "malformed_id",
            Self::FileMissing => "tracking_file_missing",
            Self::FileCorrupt => "tracking_file_corrupt",
            Self::ModifiedWhileUntracked => "modified_while_untracked",
            Self::OutOfRange => "out_of_range",
            Self::InvalidParameter => "invalid_parameter",
            Self::Io => "io",
            Self::Failed => "tracking_failed",
            Self::UnprovenAfterIoError => "unproven_after_io_error",
            Self::Unknown(name) => name,
        }
    }

    /// The kind a wire name stands for; never fails (see [`Self::Unknown`]).
    pub fn from_name(name: &str) -> Self {
        Self::KNOWN
            .iter()
            .find(|k| k.as_str() == name)
            .cloned()
            .unwrap_or_else(|| Self::Unknown(name.to_string()))
    }
}

impl fmt::Display for TrackingErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for TrackingErrorKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for TrackingErrorKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Ok(Self::from_name(&name))
    }
}

impl PartialSchema for TrackingErrorKind {
    fn schema() -> RefOr<Schema> {
        super::string_enum_schema(
            Self::KNOWN.iter().map(Self::as_str),
            "why tracking cannot prove which ranges changed",
        )
    }
}

impl ToSchema for TrackingErrorKind {}

/// Body of `POST …/tracking/enable` (optional as a whole).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EnableTrackingRequest {
    /// Bytes per tracked region; the daemon's default is 65536.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granularity: Option<u64>,
}

/// The answer to enabling or disabling tracking: `{"enabled": true,
/// "granularity": N}` or `{"enabled": false}` (no granularity).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct TrackingSwitched {
    pub enabled: bool,
    /// Bytes per tracked region; only when tracking was enabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub granularity: Option<u64>,
}

/// The answer to sealing: the RCT ID that now names the sealed generation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Sealed {
    pub id: String,
}

/// Body of `POST …/tracking/release`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ReleaseRequest {
    /// The RCT ID to release: changes since it can no longer be asked for.
    pub id: String,
}

/// The answer to a release.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Released {
    /// The RCT ID released.
    pub released: String,
}
