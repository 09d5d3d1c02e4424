//! The repository side of a host repository: list, verify, consolidate.
//! `restore` needs no code of its own: [`super::resolve_point`] turns a
//! host point and a machine into a machine repository's point.

use super::{HostPoint, HostRepo};
use crate::error::{BackupError, Result};
use crate::manifest::Manifest;
use crate::restore::{BadBlock, MachineVerified, VerifyReport};
use std::path::Path;
use storage::Fs;

/// Every host point, oldest first, with the manifest of each of its
/// machines' points (in the record's order).
pub fn list(fs: &dyn Fs, dir: &Path) -> Result<Vec<(HostPoint, Vec<Manifest>)>> {
    let h = HostRepo::new(fs, dir);
    h.host_points()?
        .into_iter()
        .map(|hp| {
            let ms = hp
                .machines
                .iter()
                .map(|e| h.machine_repo(&e.machine).manifest(e.point))
                .collect::<Result<Vec<_>>>()?;
            Ok((hp, ms))
        })
        .collect()
}

/// Verifies host point `host_point` (every host point if `None`): each
/// record names complete machine points taken from the recorded
/// checkpoints, and those points (every point of every machine for
/// `None`) re-hash against their manifests. Stops at the first bad block.
/// [`crate::verify`] calls it for a host repository.
pub(crate) fn verify(
    fs: &dyn Fs,
    dir: &Path,
    host_point: Option<u32>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<VerifyReport> {
    let h = HostRepo::new(fs, dir);
    let records = match host_point {
        Some(n) => vec![h.host_point(n)?],
        None => h.host_points()?,
    };
    if records.is_empty() {
        return Err(BackupError::Empty { dir: h.dir.clone() });
    }
    let mut r = VerifyReport {
        points_checked: records.iter().map(|hp| hp.host_point).collect(),
        ..Default::default()
    };
    for hp in &records {
        for e in &hp.machines {
            let problem = match h.machine_repo(&e.machine).manifest(e.point) {
                Ok(m) if m.checkpoint == e.checkpoint => continue,
                Ok(m) => format!(
                    "host point {} says checkpoint {}, the point's manifest {}",
                    hp.host_point, e.checkpoint, m.checkpoint
                ),
                Err(err) => format!("host point {} names it: {err}", hp.host_point),
            };
            r.first_bad = Some(BadBlock {
                machine: Some(e.machine.clone()),
                point: e.point,
                disk: String::new(),
                scope: "manifest",
                offset: 0,
                file: h.record_path(hp.host_point).display().to_string(),
                problem,
            });
            return Ok(r);
        }
    }
    // Which points of which machine: those the records name, or all.
    let mut machines: Vec<(String, Option<Vec<u32>>)> = match host_point {
        Some(_) => records[0]
            .machines
            .iter()
            .map(|e| (e.machine.clone(), Some(vec![e.point])))
            .collect(),
        None => h.machines()?.into_iter().map(|m| (m, None)).collect(),
    };
    machines.sort();
    for (m, points) in machines {
        let dir = h.machine_dir(&m);
        let one = match points.as_deref() {
            Some([p]) => Some(*p),
            _ => None,
        };
        let mr = crate::restore::verify(fs, &dir, one, progress)?;
        r.bytes_checked += mr.bytes_checked;
        r.file_bytes_checked += mr.file_bytes_checked;
        r.machines.push(MachineVerified {
            machine: m.clone(),
            points_checked: mr.points_checked,
        });
        if let Some(mut b) = mr.first_bad {
            b.machine = Some(m);
            r.first_bad = Some(b);
            return Ok(r);
        }
    }
    Ok(r)
}

/// Keeps the newest `keep` (at least 1) host points: the older records
/// go, then each machine's repository is consolidated so that its oldest
/// point is the oldest a kept host point names (a machine no kept host
/// point names loses its points). Returns the host points removed.
/// [`crate::consolidate`] calls it for a host repository.
///
/// Cut short, it leaves fewer records with every point they name intact;
/// the next consolidation (or the clean-up of the next host backup, for a
/// machine no record names any more) finishes it.
pub(crate) fn consolidate(
    fs: &dyn Fs,
    dir: &Path,
    keep: usize,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Vec<u32>> {
    let h = HostRepo::new(fs, dir);
    let records = h.host_points()?;
    let cut = records.len().saturating_sub(keep);
    let (old, kept) = records.split_at(cut);
    let mut removed = Vec::new();
    for hp in old {
        let p = h.record_path(hp.host_point);
        fs.remove_durable(&p).map_err(h.io(&p, "removing"))?;
        removed.push(hp.host_point);
    }
    for m in h.machines()? {
        let repo = h.machine_repo(&m);
        let oldest = kept
            .iter()
            .filter_map(|hp| hp.machine(&m).map(|e| e.point))
            .min();
        match oldest {
            Some(k) => {
                let n = repo.points()?.iter().filter(|p| p.point >= k).count();
                crate::restore::consolidate(fs, &repo.dir, n.max(1), progress)?;
            }
            None => {
                repo.remove_points_after(0)?;
            }
        }
    }
    Ok(removed)
}
