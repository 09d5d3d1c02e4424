//! `refpoint rct ...` and `refpoint disk write`: change tracking on disk
//! files through the `vdisk` API.

use anyhow::{Context, Result};
use rct::RctId;
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::Arc;
use storage::LocalFs;
use vdisk::{Disk, TrackingStatus, VdiskError};

/// Opens a disk named by a path or by `MACHINE/DISK`. A machine disk is
/// opened where it is written now (its newest checkpoint child) with its
/// tracking; a file a checkpoint froze is refused for writing.
pub fn open(path: &Path, writable: bool) -> Result<Disk> {
    let store = crate::machines::store();
    if let Some((m, d)) = machine_disk(path) {
        return Ok(store.open_disk(&store.load(&m)?, &d, writable)?);
    }
    if writable {
        let abs = vhdx::paths::absolute(path);
        for m in store.list().unwrap_or_default() {
            for d in &m.disks {
                let frozen = d.base == abs
                    || m.checkpoints
                        .iter()
                        .any(|c| c.disks.iter().any(|cd| cd.frozen == abs));
                if frozen {
                    anyhow::bail!(
                        "{} is frozen by a checkpoint of machine {}; write to {}/{} (now {}) instead",
                        path.display(),
                        m.name,
                        m.name,
                        d.name,
                        d.active.display()
                    );
                }
            }
        }
    }
    Disk::open(Arc::new(LocalFs), path, writable)
        .with_context(|| format!("cannot open {}", path.display()))
}

/// The machine disk a `rct`/`disk` argument names (`MACHINE/DISK`, or
/// the file a machine disk is written to now), if it names one.
pub fn machine_disk(path: &Path) -> Option<(String, String)> {
    let store = crate::machines::store();
    let arg = path.to_string_lossy();
    if !path.exists() {
        if let Some((m, d)) = arg.split_once('/') {
            if store.exists(m).unwrap_or(false) {
                return Some((m.to_string(), d.to_string()));
            }
        }
    }
    let abs = vhdx::paths::absolute(path);
    for m in store.list().unwrap_or_default() {
        for d in &m.disks {
            if d.active == abs {
                return Some((m.name.clone(), d.name.clone()));
            }
        }
    }
    None
}

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

pub fn status(path: &Path) -> Result<Status> {
    let mut d = open(path, false)?;
    status_of(&mut d, path.display().to_string())
}

/// The tracking status of an opened disk.
pub fn status_of(d: &mut Disk, disk: String) -> Result<Status> {
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

pub fn changes(
    path: &Path,
    since: &str,
    until: Option<&str>,
    offset: u64,
    length: Option<u64>,
    max_ranges: usize,
) -> Result<ChangesResult> {
    let mut d = open(path, false)?;
    changes_of(&mut d, since, until, offset, length, max_ranges)
}

/// Changes of an opened disk (see [`changes`]).
pub fn changes_of(
    d: &mut Disk,
    since: &str,
    until: Option<&str>,
    offset: u64,
    length: Option<u64>,
    max_ranges: usize,
) -> Result<ChangesResult> {
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
        Err(e) => Err(e.into()),
    }
}

/// `disk write`: writes bytes through the tracked write path.
pub fn write(path: &Path, offset: u64, data: &[u8]) -> Result<()> {
    let mut d = open(path, true)?;
    d.write(offset, data)?;
    d.close()?;
    Ok(())
}
