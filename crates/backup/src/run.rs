//! `refpoint backup MACHINE --to DIR`: the whole flow in one command.
//!
//! ```text
//! 0. clean up: a recovery checkpoint left by an interrupted run is
//!    converted (if its point completed) or merged back; point directories
//!    without a manifest are removed
//! 1. recovery checkpoint (freeze/thaw around it when configured)
//! 2. per disk: changes since the last reference point of this repository?
//!       yes → differential export of the changed ranges
//!       no, or a tracking error → full export (and say why)
//! 3. manifest (the point now exists)
//! 4. convert the checkpoint to a reference point, release the previous one
//! ```

use crate::error::{BackupError, Result};
use crate::export::{export_diff, export_full, Exported};
use crate::manifest::{DiskManifest, Manifest, HASH_BLOCK, MANIFEST_FORMAT};
use crate::repo::{point_dir, Repo};
use serde::Serialize;
use std::path::Path;
use std::time::Instant;
use vdisk::{BackupLink, CheckpointKind, Consistency, Store};

/// What a backup did.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub machine: String,
    pub repository: String,
    pub point: u32,
    pub kind: String,
    pub disks: Vec<DiskSummary>,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub seconds: f64,
    /// What the run had to clean up from an interrupted one.
    pub recovered: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiskSummary {
    pub name: String,
    pub kind: &'static str,
    pub full_reason: Option<String>,
    pub changed_bytes: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

/// Progress: `(bytes done, bytes total)` of the current disk.
pub type Progress<'a> = &'a mut dyn FnMut(&str, u64, u64);

/// Runs a backup of `machine` into repository `dir`.
pub fn backup(store: &Store, machine: &str, dir: &Path, progress: Progress) -> Result<Summary> {
    let start = Instant::now();
    let fs = &*store.fs;
    let repo = Repo::new(fs, dir);
    fs.create_dir_all(&repo.dir)
        .map_err(repo.io(&repo.dir, "creating"))?;
    let mut recovered = recover(store, machine, &repo)?;
    let points = repo.points()?;
    let point = points.last().map(|p| p.point + 1).unwrap_or(1);
    let prev = points.last().cloned();
    let m = store.load(machine)?;
    let reference = m.reference_points.iter().rev().find(|r| {
        r.backup.as_ref().is_some_and(|b| {
            vhdx::paths::absolute(&b.dir) == repo.dir
                && prev.as_ref().is_some_and(|p| p.point == b.point)
        })
    });
    let consistency = if m.freeze.is_some() {
        Consistency::Application
    } else {
        Consistency::Crash
    };
    let cp = store.create_checkpoint(machine, CheckpointKind::Recovery, consistency)?;
    let pdir = point_dir(&repo.dir, point);
    fs.create_dir_all(&pdir)
        .map_err(repo.io(&pdir, "creating"))?;

    let mut disks = Vec::new();
    let mut summaries = Vec::new();
    let m = store.load(machine)?;
    for cd in &cp.disks {
        let src = store.open_checkpoint_disk(&cp, &cd.name)?;
        let size = src.virtual_size();
        // Differential if tracking can prove what changed since the point
        // this repository holds; otherwise full, with the reason.
        let prev_disk = prev
            .as_ref()
            .and_then(|p| p.disks.iter().find(|d| d.name == cd.name));
        let since = reference
            .and_then(|r| r.disks.iter().find(|d| d.name == cd.name))
            .and_then(|d| d.rct_id.clone());
        let plan: std::result::Result<Vec<(u64, u64)>, String> =
            match (prev_disk, &since, &cd.rct_id) {
                (None, _, _) => Err(if prev.is_none() {
                    "no earlier backup in this repository".into()
                } else {
                    "the disk is new since the last backup".into()
                }),
                (Some(_), None, _) => {
                    Err("no reference point for the last backup of this repository".into())
                }
                (Some(_), Some(_), None) => Err("the disk is not tracked".into()),
                (Some(pd), Some(s), Some(u)) if pd.virtual_size == size => {
                    changed_ranges(store, &m, &cd.name, s, u)
                }
                (Some(_), _, _) => Err("the disk's size changed".into()),
            };
        let mut tick = |n: u64| progress(&cd.name, n, size);
        let (kind, file, parent_point, reason, changed, ex): (_, _, _, _, u64, Exported) =
            match plan {
                Ok(ranges) => {
                    let pd = prev_disk.unwrap();
                    let pp = prev.as_ref().unwrap().point;
                    let parent = point_dir(&repo.dir, pp).join(&pd.file);
                    let file = format!("{}.avhdx", cd.name);
                    let changed = ranges.iter().map(|r| r.1).sum();
                    let ex = export_diff(
                        fs,
                        &src,
                        &parent,
                        &pdir.join(&file),
                        &ranges,
                        &pd.hashes,
                        &mut tick,
                    )?;
                    ("incremental", file, Some(pp), None, changed, ex)
                }
                Err(reason) => {
                    let file = format!("{}.vhdx", cd.name);
                    let ex = export_full(fs, &src, &pdir.join(&file), &mut tick)?;
                    ("full", file, None, Some(reason), size, ex)
                }
            };
        summaries.push(DiskSummary {
            name: cd.name.clone(),
            kind,
            full_reason: reason.clone(),
            changed_bytes: changed,
            bytes_read: ex.bytes_read,
            bytes_written: ex.bytes_written,
        });
        disks.push(DiskManifest {
            name: cd.name.clone(),
            file,
            parent_point,
            virtual_size: size,
            logical_sector_size: src.logical_sector_size(),
            rct_id: cd.rct_id.clone(),
            since_rct_id: if kind == "incremental" { since } else { None },
            full_reason: reason,
            bytes_read: ex.bytes_read,
            bytes_written: ex.bytes_written,
            hash_block: HASH_BLOCK,
            hashes: ex.hashes,
        });
    }
    let kind = if summaries.iter().all(|d| d.kind == "full") {
        "full"
    } else if summaries.iter().all(|d| d.kind == "incremental") {
        "incremental"
    } else {
        "mixed"
    };
    repo.write_manifest(&Manifest {
        format: MANIFEST_FORMAT.into(),
        machine: machine.into(),
        point,
        kind: kind.into(),
        created: cp.created,
        checkpoint: cp.id,
        disks,
    })?;
    store.set_checkpoint_backup(
        machine,
        cp.id,
        BackupLink {
            dir: repo.dir.clone(),
            point,
        },
    )?;
    finish(store, machine, cp.id, &mut recovered)?;
    Ok(Summary {
        machine: machine.into(),
        repository: repo.dir.display().to_string(),
        point,
        kind: kind.into(),
        bytes_read: summaries.iter().map(|d| d.bytes_read).sum(),
        bytes_written: summaries.iter().map(|d| d.bytes_written).sum(),
        disks: summaries,
        seconds: start.elapsed().as_secs_f64(),
        recovered,
    })
}

/// The changed ranges of a disk between two RCT IDs, or why there are none
/// to trust.
fn changed_ranges(
    store: &Store,
    m: &vdisk::Machine,
    disk: &str,
    since: &str,
    until: &str,
) -> std::result::Result<Vec<(u64, u64)>, String> {
    let parse = |s: &str| s.parse::<rct::RctId>().map_err(|e| e.to_string());
    let (since, until) = (parse(since)?, parse(until)?);
    let mut d = store.open_disk(m, disk, false).map_err(|e| e.to_string())?;
    let size = d.size();
    let c = d
        .query_changes(&since, Some(&until), 0, size, usize::MAX)
        .map_err(|e| match e.tracking() {
            Some(t) => format!("change tracking cannot be trusted ({}): {t}", t.kind()),
            None => e.to_string(),
        })?;
    Ok(c.ranges.iter().map(|r| (r.offset, r.length)).collect())
}

/// Converts the checkpoint to a reference point and releases older ones.
fn finish(store: &Store, machine: &str, cp: u64, notes: &mut Vec<String>) -> Result<()> {
    let rp = store.convert_checkpoint(machine, cp)?;
    let m = store.load(machine)?;
    for old in m.reference_points.iter().filter(|r| r.id != rp.id) {
        if let Err(e) = store.destroy_reference_point(machine, old.id) {
            notes.push(format!("could not release reference point {}: {e}", old.id));
        }
    }
    Ok(())
}

/// Step 0: leftovers of an interrupted run never block this one.
fn recover(store: &Store, machine: &str, repo: &Repo) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    let m = store.load(machine)?;
    let mut leftovers: Vec<_> = m
        .checkpoints
        .iter()
        .filter(|c| c.kind == CheckpointKind::Recovery)
        .cloned()
        .collect();
    leftovers.sort_by_key(|c| std::cmp::Reverse(c.id));
    for cp in leftovers {
        let done = cp.backup.as_ref().is_some_and(|b| {
            Repo::new(&*store.fs, &b.dir)
                .manifest(b.point)
                .is_ok_and(|mf| mf.checkpoint == cp.id)
        });
        if done {
            finish(store, machine, cp.id, &mut notes)?;
            notes.push(format!(
                "converted recovery checkpoint {} of a completed backup to a reference point",
                cp.id
            ));
        } else {
            store.delete_checkpoint(machine, cp.id)?;
            notes.push(format!(
                "merged back recovery checkpoint {} of an interrupted backup",
                cp.id
            ));
        }
    }
    for n in repo.remove_incomplete()? {
        notes.push(format!("removed incomplete point {n}"));
    }
    Ok(notes)
}

impl From<String> for BackupError {
    fn from(s: String) -> Self {
        BackupError::Repository(s)
    }
}
