//! Tracking answers as the API and `rct --json` give them: the status of
//! a disk's tracking and the changes since an RCT ID. A tracking refusal
//! (the caller must take a full backup) is an [`ApiError`] carrying the
//! [`api::TrackingError`].

use crate::convert::{disk_error, tracking_error, tracking_refusal};
use api::{
    ApiError, ChangedRange, Changes, ChangesQuery, Released, Sealed, TrackingStatus,
    TrackingSwitched,
};
use rct::RctId;
use vdisk::{Disk, TrackingStatus as State};

/// The tracking status of an opened disk, named `disk` in the answer.
pub fn status_of(d: &mut Disk, disk: String) -> Result<TrackingStatus, ApiError> {
    Ok(match d.tracking_status() {
        State::On(s) => TrackingStatus {
            disk,
            enabled: true,
            most_recent_id: s.most_recent_id.map(|i| i.to_string()),
            newer_changes: Some(s.newer_changes),
            retained_ids: d
                .retained_ids()
                .map_err(disk_error)?
                .iter()
                .map(|i| i.to_string())
                .collect(),
            error: None,
        },
        State::Missing => TrackingStatus {
            disk,
            enabled: false,
            most_recent_id: None,
            newer_changes: None,
            retained_ids: vec![],
            error: None,
        },
        State::Broken { kind, message } => TrackingStatus {
            disk,
            enabled: kind != "tracking_disabled",
            most_recent_id: None,
            newer_changes: None,
            retained_ids: vec![],
            error: Some(api::TrackingError::new(
                api::TrackingErrorKind::from_name(kind),
                message,
            )),
        },
    })
}

/// The ranges of an opened disk changed since `q.since`.
pub fn changes_of(d: &mut Disk, q: &ChangesQuery) -> Result<Changes, ApiError> {
    let parse = |s: &str| s.parse::<RctId>().map_err(|e| tracking_refusal(&e));
    let since = parse(&q.since)?;
    let until = q.until.as_deref().map(parse).transpose()?;
    let length = q.length.unwrap_or(d.size().saturating_sub(q.offset));
    let max = q
        .max_ranges
        .map_or(usize::MAX, |m| usize::try_from(m).unwrap_or(usize::MAX));
    let c = d
        .query_changes(&since, until.as_ref(), q.offset, length, max)
        .map_err(disk_error)?;
    Ok(Changes {
        since: q.since.clone(),
        until: q.until.clone(),
        ranges: c
            .ranges
            .iter()
            .map(|r| ChangedRange {
                offset: r.offset,
                length: r.length,
            })
            .collect(),
        processed_length: c.processed_length,
    })
}

/// Starts tracking an opened disk (a new tracking GUID), durably.
pub fn enable(d: &mut Disk, granularity: u64) -> Result<TrackingSwitched, ApiError> {
    d.enable_tracking(granularity).map_err(disk_error)?;
    d.flush().map_err(disk_error)?;
    Ok(TrackingSwitched {
        enabled: true,
        granularity: Some(granularity),
    })
}

/// Stops tracking an opened disk, durably.
pub fn disable(d: &mut Disk) -> Result<TrackingSwitched, ApiError> {
    d.disable_tracking().map_err(disk_error)?;
    d.flush().map_err(disk_error)?;
    Ok(TrackingSwitched {
        enabled: false,
        granularity: None,
    })
}

/// Seals the current generation; its RCT ID names this point.
pub fn seal(d: &mut Disk) -> Result<Sealed, ApiError> {
    let id = d.seal().map_err(disk_error)?;
    Ok(Sealed { id: id.to_string() })
}

/// Releases an RCT ID (a malformed one is a tracking refusal).
pub fn release(d: &mut Disk, id: &str) -> Result<Released, ApiError> {
    let rid: RctId = id.parse().map_err(|e| tracking_refusal(&e))?;
    d.release(&rid).map_err(disk_error)?;
    Ok(Released {
        released: rid.to_string(),
    })
}

/// The tracking error an RCT error is, as `rct --json` prints it.
pub fn error_of(e: &rct::RctError) -> api::TrackingError {
    tracking_error(e)
}
