//! The client's error: what the daemon refused, or why it could not be
//! asked or understood.

use crate::types::{ErrorBody, ErrorKind, TrackingError, TrackingErrorKind};

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ApiError {
    /// The daemon answered with an error body.
    #[error("{message}")]
    Api {
        /// The HTTP status.
        status: u16,
        kind: ErrorKind,
        message: String,
        /// Set on tracking refusals: why tracking cannot answer.
        tracking: Option<TrackingError>,
    },
    /// The daemon could not be reached, or the connection broke.
    #[error("talking to the refpoint daemon on {endpoint}: {message}")]
    Transport { endpoint: String, message: String },
    /// The daemon answered, but not with the JSON the route promises.
    #[error("the refpoint daemon on {endpoint} answered {method} {path} with HTTP {status} and a body that is not {expected}: {message}")]
    Decode {
        endpoint: String,
        method: &'static str,
        path: String,
        status: u16,
        /// The type the body should have been.
        expected: String,
        message: String,
    },
    /// The request could not be encoded (a path that is not UTF-8).
    #[error("cannot send this request: {0}")]
    InvalidRequest(String),
    /// The client was set up wrong (a CA file without certificates, a bad
    /// server name, a token that cannot be sent in a header).
    #[error("cannot set up the API client: {0}")]
    Setup(String),
}

impl ApiError {
    /// Whether this is a tracking refusal: the caller must fall back to a
    /// full backup (the CLI exits with its tracking exit code).
    pub fn is_tracking(&self) -> bool {
        matches!(self, ApiError::Api { kind, .. } if kind.is_tracking())
    }

    /// The HTTP status, when the daemon answered with an error.
    pub fn status(&self) -> Option<u16> {
        match self {
            ApiError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The error's kind, when the daemon answered with an error.
    pub fn kind(&self) -> Option<&ErrorKind> {
        match self {
            ApiError::Api { kind, .. } => Some(kind),
            _ => None,
        }
    }

    /// Why tracking cannot answer, on a tracking refusal.
    pub fn tracking(&self) -> Option<&TrackingError> {
        match self {
            ApiError::Api { tracking, .. } => tracking.as_ref(),
            _ => None,
        }
    }

    /// The error an answer with HTTP status `status` and error body `body`
    /// stands for. A 409 without `tracking` comes from a daemon that
    /// predates the field: its `error` names the tracking kind all the same.
    pub fn from_answer(status: u16, body: ErrorBody) -> ApiError {
        let ErrorBody {
            error,
            message,
            tracking,
        } = body;
        let tracking = match tracking {
            None if status == 409 => Some(TrackingError::new(
                TrackingErrorKind::from_name(error.as_str()),
                message.clone(),
            )),
            t => t,
        };
        let kind = match &tracking {
            Some(t) => ErrorKind::Tracking(t.error.clone()),
            None => error,
        };
        ApiError::Api {
            status,
            kind,
            message,
            tracking,
        }
    }
}
