//! The stable error codes of the C API, the failure every call reports,
//! and the thread-local message `refpoint_last_error` returns.
//!
//! Codes never change meaning and are never reused; new ones are added at
//! the end of their group. Tracking codes (-20 and below) all mean the
//! same thing to a backup application: the tracking cannot prove which
//! ranges changed, so take a full backup.

use api::{ApiError, ErrorKind, TrackingErrorKind};
use std::cell::RefCell;
use std::ffi::{c_char, c_int, CStr, CString};

/// Success.
pub const REFPOINT_OK: c_int = 0;
/// An argument is invalid: a null pointer, a bad flag, a malformed name.
pub const REFPOINT_E_INVALID: c_int = -1;
/// No such file, machine, disk, checkpoint or reference point.
pub const REFPOINT_E_NOT_FOUND: c_int = -2;
/// An I/O error (the message names the file and operation).
pub const REFPOINT_E_IO: c_int = -3;
/// The medium is full (ENOSPC); the write stays pending and a later flush
/// retries it once space is freed.
pub const REFPOINT_E_NO_SPACE: c_int = -4;
/// A write or tracking change on a disk opened read-only.
pub const REFPOINT_E_READ_ONLY: c_int = -5;
/// The range lies past the end of the disk.
pub const REFPOINT_E_OUT_OF_RANGE: c_int = -6;
/// The disk is in use (another writer holds it) or its machine is busy.
pub const REFPOINT_E_BUSY: c_int = -7;
/// The file is frozen by a checkpoint: write to the machine disk instead.
pub const REFPOINT_E_FROZEN: c_int = -8;
/// The disk file is corrupt or not a disk refpoint can read.
pub const REFPOINT_E_CORRUPT: c_int = -9;
/// An output buffer is too small (a required length is reported where the
/// function has an out-parameter for it).
pub const REFPOINT_E_BUFFER_TOO_SMALL: c_int = -10;
/// The operation does not apply to this handle (e.g. checkpoints of a disk
/// that belongs to no machine, tracking of a checkpoint's frozen view).
pub const REFPOINT_E_UNSUPPORTED: c_int = -11;
/// The daemon or remote host could not be reached, or broke the protocol.
pub const REFPOINT_E_CONNECTION: c_int = -12;
/// The remote daemon refused the credentials (token, certificates).
pub const REFPOINT_E_AUTH: c_int = -13;
/// A bug in refpoint (a panic caught at the boundary); see the message.
pub const REFPOINT_E_INTERNAL: c_int = -14;

/// Tracking is not enabled on the disk.
pub const REFPOINT_E_TRACKING_DISABLED: c_int = -20;
/// The RCT ID was never issued by this disk's tracking, or tracking was
/// reset since.
pub const REFPOINT_E_UNKNOWN_ID: c_int = -21;
/// The RCT ID was released.
pub const REFPOINT_E_RELEASED_ID: c_int = -22;
/// The text is no RCT ID (`rct:<tracking-guid>:<8 hex digits>`).
pub const REFPOINT_E_MALFORMED_ID: c_int = -23;
/// The tracking file is missing.
pub const REFPOINT_E_TRACKING_FILE_MISSING: c_int = -24;
/// The tracking file is corrupt.
pub const REFPOINT_E_TRACKING_FILE_CORRUPT: c_int = -25;
/// The disk was written while nothing tracked it (another tool, or a
/// process that died before closing a raw file).
pub const REFPOINT_E_MODIFIED_WHILE_UNTRACKED: c_int = -26;
/// Tracking stopped after an I/O error it could not undo, or cannot prove
/// its answer after one; reopen the disk and take a full backup.
pub const REFPOINT_E_TRACKING_FAILED: c_int = -27;

/// Every code with its stable name, for `refpoint_error_name`.
pub const CODES: &[(c_int, &CStr)] = &[
    (REFPOINT_OK, c"ok"),
    (REFPOINT_E_INVALID, c"invalid"),
    (REFPOINT_E_NOT_FOUND, c"not_found"),
    (REFPOINT_E_IO, c"io"),
    (REFPOINT_E_NO_SPACE, c"no_space"),
    (REFPOINT_E_READ_ONLY, c"read_only"),
    (REFPOINT_E_OUT_OF_RANGE, c"out_of_range"),
    (REFPOINT_E_BUSY, c"busy"),
    (REFPOINT_E_FROZEN, c"frozen"),
    (REFPOINT_E_CORRUPT, c"corrupt"),
    (REFPOINT_E_BUFFER_TOO_SMALL, c"buffer_too_small"),
    (REFPOINT_E_UNSUPPORTED, c"unsupported"),
    (REFPOINT_E_CONNECTION, c"connection"),
    (REFPOINT_E_AUTH, c"auth"),
    (REFPOINT_E_INTERNAL, c"internal"),
    (REFPOINT_E_TRACKING_DISABLED, c"tracking_disabled"),
    (REFPOINT_E_UNKNOWN_ID, c"unknown_id"),
    (REFPOINT_E_RELEASED_ID, c"released_id"),
    (REFPOINT_E_MALFORMED_ID, c"malformed_id"),
    (REFPOINT_E_TRACKING_FILE_MISSING, c"tracking_file_missing"),
    (REFPOINT_E_TRACKING_FILE_CORRUPT, c"tracking_file_corrupt"),
    (
        REFPOINT_E_MODIFIED_WHILE_UNTRACKED,
        c"modified_while_untracked",
    ),
    (REFPOINT_E_TRACKING_FAILED, c"tracking_failed"),
];

/// Why a call failed: a stable code and a message for people.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Failure {
    pub code: c_int,
    pub message: String,
}

pub type Result<T, E = Failure> = std::result::Result<T, E>;

impl Failure {
    pub fn new(code: c_int, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(REFPOINT_E_INVALID, message)
    }

    pub fn unsupported(message: impl Into<String>) -> Self {
        Self::new(REFPOINT_E_UNSUPPORTED, message)
    }
}

/// The code of a tracking refusal, by its stable kind name.
pub fn tracking_code(kind: &TrackingErrorKind) -> c_int {
    match kind {
        TrackingErrorKind::Disabled => REFPOINT_E_TRACKING_DISABLED,
        TrackingErrorKind::UnknownId => REFPOINT_E_UNKNOWN_ID,
        TrackingErrorKind::ReleasedId => REFPOINT_E_RELEASED_ID,
        TrackingErrorKind::MalformedId => REFPOINT_E_MALFORMED_ID,
        TrackingErrorKind::FileMissing => REFPOINT_E_TRACKING_FILE_MISSING,
        TrackingErrorKind::FileCorrupt => REFPOINT_E_TRACKING_FILE_CORRUPT,
        TrackingErrorKind::ModifiedWhileUntracked => REFPOINT_E_MODIFIED_WHILE_UNTRACKED,
        TrackingErrorKind::OutOfRange => REFPOINT_E_OUT_OF_RANGE,
        TrackingErrorKind::InvalidParameter => REFPOINT_E_INVALID,
        // io, tracking_failed, unproven_after_io_error and names a newer
        // daemon may send: the tracking cannot vouch for its answer.
        _ => REFPOINT_E_TRACKING_FAILED,
    }
}

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        let code = match &e {
            ApiError::Api { kind, .. } => match kind {
                ErrorKind::NotFound => REFPOINT_E_NOT_FOUND,
                ErrorKind::Invalid => REFPOINT_E_INVALID,
                ErrorKind::OutOfRange => REFPOINT_E_OUT_OF_RANGE,
                ErrorKind::Unauthorized => REFPOINT_E_AUTH,
                ErrorKind::Frozen => REFPOINT_E_FROZEN,
                ErrorKind::Busy | ErrorKind::Unavailable => REFPOINT_E_BUSY,
                ErrorKind::Io => REFPOINT_E_IO,
                ErrorKind::NoSpace => REFPOINT_E_NO_SPACE,
                ErrorKind::Corrupt => REFPOINT_E_CORRUPT,
                ErrorKind::Tracking(t) => tracking_code(t),
                _ => REFPOINT_E_INTERNAL,
            },
            // A request or a client set-up (a CA file without certificates)
            // the caller got wrong.
            ApiError::InvalidRequest(_) | ApiError::Setup(_) => REFPOINT_E_INVALID,
            _ => REFPOINT_E_CONNECTION,
        };
        Failure::new(code, e.to_string())
    }
}

/// Errors of disks opened in this process: the API's mapping, with what
/// it folds away kept apart (a full medium, a read-only handle, a file in
/// use, a corrupt file).
impl From<vdisk::VdiskError> for Failure {
    fn from(e: vdisk::VdiskError) -> Self {
        use vdisk::VdiskError as V;
        let code = match &e {
            e if e.is_no_space() => REFPOINT_E_NO_SPACE,
            V::ReadOnly { .. } => REFPOINT_E_READ_ONLY,
            V::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                REFPOINT_E_NOT_FOUND
            }
            V::Vhdx(v) => match vhdx_code(v) {
                Some(c) => c,
                None => return daemon::convert::disk_error(e).into(),
            },
            _ => return daemon::convert::disk_error(e).into(),
        };
        Failure::new(code, e.to_string())
    }
}

fn vhdx_code(e: &vhdx::Error) -> Option<c_int> {
    match e {
        vhdx::Error::Locked { .. } => Some(REFPOINT_E_BUSY),
        vhdx::Error::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
            Some(REFPOINT_E_NOT_FOUND)
        }
        vhdx::Error::Io { .. } => None,
        vhdx::Error::InvalidParameter(_) => Some(REFPOINT_E_INVALID),
        vhdx::Error::OutOfRange { .. } => Some(REFPOINT_E_OUT_OF_RANGE),
        vhdx::Error::ReadOnly { .. } => Some(REFPOINT_E_READ_ONLY),
        vhdx::Error::Unsupported { .. } => Some(REFPOINT_E_UNSUPPORTED),
        vhdx::Error::Corrupt { .. }
        | vhdx::Error::ParentMismatch { .. }
        | vhdx::Error::BadChain { .. } => Some(REFPOINT_E_CORRUPT),
        vhdx::Error::ParentNotFound { .. } => Some(REFPOINT_E_NOT_FOUND),
        _ => None,
    }
}

impl From<machine::MachineError> for Failure {
    fn from(e: machine::MachineError) -> Self {
        use machine::MachineError as M;
        match e {
            M::Disk(d) => d.into(),
            M::DiskInUse { .. } => Failure::new(REFPOINT_E_BUSY, e.to_string()),
            M::Io { ref source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                Failure::new(REFPOINT_E_NOT_FOUND, e.to_string())
            }
            e => daemon::convert::machine_error(e).into(),
        }
    }
}

thread_local! {
    static LAST: RefCell<CString> = RefCell::new(CString::default());
}

/// Records `f` as this thread's last failure and returns its code. On a
/// thread whose storage is being torn down (a C destructor calling in
/// late) the message is dropped rather than the process aborted.
pub fn record(f: &Failure) -> c_int {
    let text = CString::new(f.message.replace('\0', " ")).unwrap_or_default();
    let _ = LAST.try_with(|l| {
        if let Ok(mut l) = l.try_borrow_mut() {
            *l = text;
        }
    });
    f.code
}

/// This thread's last failure message; valid until its next failing call
/// ("" when there is none, or the thread is ending).
pub fn last() -> *const c_char {
    LAST.try_with(|l| l.try_borrow().map(|s| s.as_ptr()).ok())
        .ok()
        .flatten()
        .unwrap_or(c"".as_ptr())
}
