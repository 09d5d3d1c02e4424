//! The error body every failed request answers with, and the stable error
//! kinds with the HTTP status each maps to.
//!
//! ```text
//! {"error": "not_found", "message": "no machine named \"vm9\""}
//! {"error": "unknown_id", "message": "RCT ID … is unknown to …",
//!  "tracking": {"error": "unknown_id", "message": "RCT ID … is unknown to …",
//!               "full_backup_required": true}}                   (HTTP 409)
//! ```
//!
//! `error` is the kind the daemon always sent; `message` is text for
//! people. A tracking refusal (HTTP 409) also carries `tracking`, the same
//! object `rct status` and `rct changes --json` print; its `error` repeats
//! the tracking kind, as before. (Before `tracking` existed, the changes
//! route sent that object as JSON text in `message`; `message` is now
//! plain text on every route, so read `tracking` instead.)

use super::{TrackingError, TrackingErrorKind};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use utoipa::openapi::schema::Schema;
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

/// The body of every error answer. HTTP 409 (and only 409) is a tracking
/// refusal, and then `tracking` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(from = "WireErrorBody")]
pub struct ErrorBody {
    /// The stable kind: one of the general kinds, or the tracking kind of a
    /// tracking refusal.
    pub error: ErrorKind,
    /// For people; its wording may change.
    pub message: String,
    /// Only on tracking refusals (HTTP 409): why tracking cannot answer.
    /// Fall back to a full backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tracking: Option<TrackingError>,
}

/// The daemon builds bodies with [`ErrorBody::new`] (or [`ErrorBody::from`]
/// a tracking error), which fills `tracking` exactly when `error` is a
/// tracking kind, and sends each with the status [`ErrorBody::status`]
/// gives.
impl ErrorBody {
    pub fn new(error: ErrorKind, message: impl Into<String>) -> Self {
        let message = message.into();
        let tracking = match &error {
            ErrorKind::Tracking(kind) => Some(TrackingError::new(kind.clone(), message.clone())),
            _ => None,
        };
        Self {
            error,
            message,
            tracking,
        }
    }

    /// The HTTP status to send this body with.
    pub fn status(&self) -> u16 {
        self.error.status()
    }
}

impl From<TrackingError> for ErrorBody {
    fn from(t: TrackingError) -> Self {
        Self {
            error: ErrorKind::Tracking(t.error.clone()),
            message: t.message.clone(),
            tracking: Some(t),
        }
    }
}

impl fmt::Display for ErrorBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.message, self.error)
    }
}

/// The body as it travels. `error` alone cannot always tell a tracking kind
/// from a general one (`io` and `out_of_range` are both), so the presence of
/// `tracking` decides.
#[derive(Deserialize)]
struct WireErrorBody {
    error: ErrorKind,
    message: String,
    #[serde(default)]
    tracking: Option<TrackingError>,
}

impl From<WireErrorBody> for ErrorBody {
    fn from(w: WireErrorBody) -> Self {
        let error = match &w.tracking {
            Some(t) => ErrorKind::Tracking(t.error.clone()),
            None => w.error,
        };
        Self {
            error,
            message: w.message,
            tracking: w.tracking,
        }
    }
}

/// The stable kind of an error, shared by the daemon (which picks the HTTP
/// status with [`ErrorKind::status`]) and clients (which branch on it).
///
/// HTTP 409 means a tracking refusal and nothing else, as it always did:
/// clients that predate the typed body treat every 409 as "tracking cannot
/// answer, take a full backup". That is why `frozen` and `busy` are 423.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// `not_found` (404): no such machine, disk, checkpoint or job.
    NotFound,
    /// `invalid` (400): a malformed request or a value out of its domain.
    Invalid,
    /// `out_of_range` (400): a byte range past the end of a disk.
    OutOfRange,
    /// `unauthorized` (401): on TCP, no valid `Authorization: Bearer` token.
    Unauthorized,
    /// `frozen` (423): the file is frozen by a checkpoint and must not be
    /// written; write to the machine disk instead.
    Frozen,
    /// `busy` (423): another operation holds the machine; try again.
    Busy,
    /// `unavailable` (503): the disk is not open in the daemon.
    Unavailable,
    /// `io` (500): an I/O error.
    Io,
    /// `no_space` (507): the medium is full; a write that found no space
    /// stays pending and a later flush retries it once there is.
    NoSpace,
    /// `corrupt` (500): a disk, chain or machine file is corrupt.
    Corrupt,
    /// `error` (500): any other failure.
    Internal,
    /// `panic` (500): the daemon hit a bug; see its log.
    Panic,
    /// `job_failed` (500): a job ended in failure (its `error` says why).
    JobFailed,
    /// A tracking refusal (409), named by its tracking kind.
    Tracking(TrackingErrorKind),
    /// A name this version does not know, kept verbatim (500).
    Unknown(String),
}

impl ErrorKind {
    /// Every general (non-tracking) kind this version knows.
    pub const GENERAL: &'static [ErrorKind] = &[
        Self::NotFound,
        Self::Invalid,
        Self::OutOfRange,
        Self::Unauthorized,
        Self::Frozen,
        Self::Busy,
        Self::Unavailable,
        Self::Io,
        Self::NoSpace,
        Self::Corrupt,
        Self::Internal,
        Self::Panic,
        Self::JobFailed,
    ];

    /// The wire name (a tracking refusal's is its tracking kind).
    pub fn as_str(&self) -> &str {
        match self {
            Self::NotFound => "not_found",
            Self::Invalid => "invalid",
            Self::OutOfRange => "out_of_range",
            Self::Unauthorized => "unauthorized",
            Self::Frozen => "frozen",
            Self::Busy => "busy",
            Self::Unavailable => "unavailable",
            Self::Io => "io",
            Self::NoSpace => "no_space",
            Self::Corrupt => "corrupt",
            Self::Internal => "error",
            Self::Panic => "panic",
            Self::JobFailed => "job_failed",
            Self::Tracking(kind) => kind.as_str(),
            Self::Unknown(name) => name,
        }
    }

    /// The HTTP status the daemon answers with.
    pub fn status(&self) -> u16 {
        match self {
            Self::NotFound => 404,
            Self::Invalid | Self::OutOfRange => 400,
            Self::Unauthorized => 401,
            Self::Frozen | Self::Busy => 423,
            Self::Unavailable => 503,
            Self::NoSpace => 507,
            Self::Tracking(_) => 409,
            Self::Io
            | Self::Corrupt
            | Self::Internal
            | Self::Panic
            | Self::JobFailed
            | Self::Unknown(_) => 500,
        }
    }

    /// The kind a wire name stands for. A general name wins over a tracking
    /// one (`io`, `out_of_range`); a body's `tracking` field settles those
    /// (see [`ErrorBody`]).
    pub fn from_name(name: &str) -> Self {
        if let Some(k) = Self::GENERAL.iter().find(|k| k.as_str() == name) {
            return k.clone();
        }
        match TrackingErrorKind::from_name(name) {
            TrackingErrorKind::Unknown(_) => Self::Unknown(name.to_string()),
            known => Self::Tracking(known),
        }
    }

    /// The kind an answer without a JSON error body most likely means (a
    /// proxy's page, a route an older daemon lacks).
    pub fn for_status(status: u16) -> Self {
        match status {
            400 | 405 | 411 | 413 | 415 | 422 => Self::Invalid,
            401 | 403 => Self::Unauthorized,
            404 => Self::NotFound,
            423 => Self::Busy,
            503 => Self::Unavailable,
            507 => Self::NoSpace,
            _ => Self::Internal,
        }
    }

    pub fn is_tracking(&self) -> bool {
        matches!(self, Self::Tracking(_))
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for ErrorKind {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for ErrorKind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        Ok(Self::from_name(&name))
    }
}

impl PartialSchema for ErrorKind {
    fn schema() -> RefOr<Schema> {
        let general = Self::GENERAL.iter().map(Self::as_str);
        let tracking = TrackingErrorKind::KNOWN
            .iter()
            .map(TrackingErrorKind::as_str)
            .filter(|t| !Self::GENERAL.iter().any(|g| g.as_str() == *t));
        super::string_enum_schema(
            general.chain(tracking),
            "a general kind, or on HTTP 409 the tracking kind (as in `tracking.error`)",
        )
    }
}

impl ToSchema for ErrorKind {}
