//! Tracking answers as the API and `rct --json` give them: the status of
//! a disk's tracking, the changes since an RCT ID, and the tracking error
//! that sends a backup to a full copy.

use rct::RctId;
use serde::{Deserialize, Serialize};
use vdisk::{Disk, TrackingStatus, VdiskError};

/// `rct status` output.
#[derive(Debug, Serialize, Deserialize)]
pub struct Status {
    pub disk: String,
    pub enabled: bool,
    pub most_recent_id: Option<String>,
    pub newer_changes: Option<bool>,
    pub retained_ids: Vec<String>,
    /// Why tracking cannot be used, if it cannot.
    pub error: Option<ErrorOut>,
}

/// A tracking error as scripts see it.
#[derive(Debug, Serialize, Deserialize)]
pub struct ErrorOut {
    pub error: String,
    pub message: String,
    pub full_backup_required: bool,
}

impl ErrorOut {
    pub fn new(e: &rct::RctError) -> Self {
        Self {
            error: e.kind().to_string(),
            message: e.to_string(),
            full_backup_required: true,
        }
    }
}

/// The tracking status of an opened disk.
pub fn status_of(d: &mut Disk, disk: String) -> vdisk::Result<Status> {
    Ok(match d.tracking_status() {
        TrackingStatus::On(s) => Status {
            disk,
            enabled: true,
            most_recent_id: s.most_recent_id.map(|i| i.to_string()),
            newer_changes: Some(s.newer_changes),
            retained_ids: d.retained_ids()?.iter().map(|i| i.to_string()).collect(),
            error: None,
        },
        TrackingStatus::Missing => Status {
            disk,
            enabled: false,
            most_recent_id: None,
            newer_changes: None,
            retained_ids: vec![],
            error: None,
        },
        TrackingStatus::Broken { kind, message } => Status {
            disk,
            enabled: kind != "tracking_disabled",
            most_recent_id: None,
            newer_changes: None,
            retained_ids: vec![],
            error: Some(ErrorOut {
                error: kind.to_string(),
                message,
                full_backup_required: true,
            }),
        },
    })
}

/// `rct changes --json` output.
#[derive(Debug, Serialize, Deserialize)]
pub struct ChangesOut {
    pub since: String,
    pub until: Option<String>,
    pub ranges: Vec<RangeOut>,
    pub processed_length: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RangeOut {
    pub offset: u64,
    pub length: u64,
}

/// Either the changes or the tracking error that forces a full backup.
pub enum ChangesResult {
    Changes(ChangesOut),
    TrackingError(rct::RctError),
}

/// Changes of an opened disk (see [`changes`]).
pub fn changes_of(
    d: &mut Disk,
    since: &str,
    until: Option<&str>,
    offset: u64,
    length: Option<u64>,
    max_ranges: usize,
) -> vdisk::Result<ChangesResult> {
    let parse = |s: &str| s.parse::<RctId>();
    let since_id = match parse(since) {
        Ok(i) => i,
        Err(e) => return Ok(ChangesResult::TrackingError(e)),
    };
    let until_id = match until.map(parse).transpose() {
        Ok(u) => u,
        Err(e) => return Ok(ChangesResult::TrackingError(e)),
    };
    let length = length.unwrap_or(d.size().saturating_sub(offset));
    match d.query_changes(&since_id, until_id.as_ref(), offset, length, max_ranges) {
        Ok(c) => Ok(ChangesResult::Changes(ChangesOut {
            since: since.to_string(),
            until: until.map(String::from),
            ranges: c
                .ranges
                .iter()
                .map(|r| RangeOut {
                    offset: r.offset,
                    length: r.length,
                })
                .collect(),
            processed_length: c.processed_length,
        })),
        Err(VdiskError::Tracking(e)) => Ok(ChangesResult::TrackingError(e)),
        Err(e) => Err(e),
    }
}
