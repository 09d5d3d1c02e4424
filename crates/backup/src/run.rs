//! `refpoint backup MACHINE --to DIR`: the whole flow in one command.
//!
//! ```text
//! 0. clean up: a recovery checkpoint left by an interrupted run is
//!    converted (if its point completed) or merged back; point directories
//!    without a manifest are removed; an interrupted consolidation is
//!    finished
//! 1. tracking that cannot be trusted is restarted (that disk goes full);
//!    recovery checkpoint (freeze/thaw around it when configured)
//! 2. per disk: changes since the last reference point of this repository?
//!       yes → differential export of the changed ranges
//!       no, or a tracking error → full export (and say why)
//! 3. manifest (the point now exists)
//! 4. convert the checkpoint to a reference point, release the previous one
//! ```

use crate::cv;
use crate::error::{BackupError, Result};
use crate::export::{export_diff, export_full, Exported};
use crate::manifest::{DiskManifest, Manifest, HASH_BLOCK, MANIFEST_FORMAT};
use crate::repo::{point_dir, Repo};
use machine::{BackupLink, Checkpoint, CheckpointKind, ReferencePoint, Store};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::Path;
use std::time::Instant;
use vdisk::TrackingStatus;

/// What a backup did.
#[derive(Debug, Clone, Serialize, Deserialize)]
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

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DiskSummary {
    pub name: String,
    pub kind: String,
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
    let fs = &**store.fs();
    if crate::host::is_host_repo(fs, dir)? {
        return Err(BackupError::IsHostRepo {
            dir: vhdx::paths::absolute(dir),
            machine: machine.into(),
        });
    }
    let repo = Repo::new(fs, dir);
    fs.create_dir_all(&repo.dir)
        .map_err(repo.io(&repo.dir, "creating"))?;
    let mut recovered = recover(store, machine, &repo)?;
    let plan = plan(store, machine, &repo)?;
    let consistency = Store::default_consistency(&store.load(machine)?);
    let cp = store.create_checkpoint(machine, CheckpointKind::Recovery, consistency)?;
    let exported = export_point(store, &repo, &plan, &cp, progress)?;
    link(store, machine, &repo, cp.id, plan.point)?;
    finish(store, machine, cp.id, &mut recovered)?;
    Ok(exported.summary(&repo, start, recovered))
}

/// What the next point of a machine in a repository builds on, decided
/// before its checkpoint is taken.
pub(crate) struct Plan {
    pub machine: String,
    /// The number the point gets.
    pub point: u32,
    /// The repository's last point, the parent of differentials.
    prev: Option<Manifest>,
    /// The machine's reference point of that last point, if it has one.
    reference: Option<ReferencePoint>,
    /// The disks whose tracking was restarted, and why.
    untrusted: HashMap<String, String>,
}

/// Step 1 up to the checkpoint: the point's number, what it is based on,
/// and tracking that cannot be trusted restarted.
pub(crate) fn plan(store: &Store, machine: &str, repo: &Repo) -> Result<Plan> {
    let points = repo.points()?;
    let point = points.last().map(|p| p.point + 1).unwrap_or(1);
    let prev = points.last().cloned();
    let m = store.load(machine)?;
    let reference = m
        .reference_points
        .iter()
        .rev()
        .find(|r| {
            r.backup.as_ref().is_some_and(|b| {
                vhdx::paths::absolute(&b.dir) == repo.dir
                    && prev.as_ref().is_some_and(|p| p.point == b.point)
            })
        })
        .cloned();
    let untrusted = restart_untrusted_tracking(store, &m)?;
    Ok(Plan {
        machine: machine.into(),
        point,
        prev,
        reference,
        untrusted,
    })
}

/// A point written: its manifest and what each disk's export did.
pub(crate) struct Written {
    pub manifest: Manifest,
    pub disks: Vec<DiskSummary>,
}

impl Written {
    pub(crate) fn summary(self, repo: &Repo, start: Instant, recovered: Vec<String>) -> Summary {
        let m = self.manifest;
        Summary {
            machine: m.machine,
            repository: repo.dir.display().to_string(),
            point: m.point,
            kind: m.kind,
            bytes_read: self.disks.iter().map(|d| d.bytes_read).sum(),
            bytes_written: self.disks.iter().map(|d| d.bytes_written).sum(),
            disks: self.disks,
            seconds: start.elapsed().as_secs_f64(),
            recovered,
        }
    }
}

/// Steps 2 and 3: exports every disk of checkpoint `cp` as point
/// `plan.point` of `repo` (differential where tracking proves what
/// changed, else full) and writes its manifest: the point exists once this
/// returns.
pub(crate) fn export_point(
    store: &Store,
    repo: &Repo,
    plan: &Plan,
    cp: &Checkpoint,
    progress: Progress,
) -> Result<Written> {
    let fs = repo.fs;
    let (machine, point, prev) = (&plan.machine, plan.point, &plan.prev);
    let pdir = point_dir(&repo.dir, point);
    fs.create_dir_all(&pdir)
        .map_err(repo.io(&pdir, "creating"))?;

    let mut disks = Vec::new();
    let mut summaries = Vec::new();
    let m = store.load(machine)?;
    for cd in &cp.disks {
        let src = store.open_checkpoint_disk(cp, &cd.name)?;
        let size = src.virtual_size();
        // Differential if tracking can prove what changed since the point
        // this repository holds; otherwise full, with the reason.
        let prev_disk = prev
            .as_ref()
            .and_then(|p| p.disks.iter().find(|d| d.name == cd.name));
        let since = plan
            .reference
            .as_ref()
            .and_then(|r| r.disks.iter().find(|d| d.name == cd.name))
            .and_then(|d| d.rct_id.clone());
        let ranges_or_why: std::result::Result<Vec<(u64, u64)>, String> =
            match (prev_disk, &since, &cd.rct_id) {
                (Some(_), _, _) if plan.untrusted.contains_key(&cd.name) => {
                    Err(plan.untrusted[&cd.name].clone())
                }
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
            match ranges_or_why {
                Ok(ranges) => {
                    let pd = prev_disk.unwrap();
                    let pp = prev.as_ref().unwrap().point;
                    let parent = point_dir(&repo.dir, pp).join(&pd.file);
                    let file = format!("{}.avhdx", cd.name);
                    let changed = ranges.iter().map(|r| r.1).sum();
                    // The previous point's chaining values, if it kept them
                    // (export_diff checks each block's against its hash).
                    let prev_cvs = fs
                        .read_file(&point_dir(&repo.dir, pp).join(cv::file_name(&cd.name)))
                        .ok()
                        .and_then(|b| cv::decode(&b, size));
                    let ex = export_diff(
                        fs,
                        &src,
                        &parent,
                        &pdir.join(&file),
                        &ranges,
                        &pd.hashes,
                        prev_cvs,
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
        // The bytes of the file as written, so `verify` notices damage
        // anywhere in it.
        let (file_size, file_hashes) = repo.hash_file(&pdir.join(&file))?;
        let cv_file = pdir.join(cv::file_name(&cd.name));
        fs.write_file_atomic(&cv_file, &cv::encode(size, &ex.cvs))
            .map_err(repo.io(&cv_file, "writing"))?;
        summaries.push(DiskSummary {
            name: cd.name.clone(),
            kind: kind.to_string(),
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
            file_size,
            file_hashes,
        });
    }
    let kind = if summaries.iter().all(|d| d.kind == "full") {
        "full"
    } else if summaries.iter().all(|d| d.kind == "incremental") {
        "incremental"
    } else {
        "mixed"
    };
    let manifest = Manifest {
        format: MANIFEST_FORMAT.into(),
        machine: machine.clone(),
        point,
        kind: kind.into(),
        created: cp.created,
        checkpoint: cp.id,
        disks,
    };
    repo.write_manifest(&manifest)?;
    Ok(Written {
        manifest,
        disks: summaries,
    })
}

/// Records in the machine file that checkpoint `cp` is backed up as
/// `point` of `repo` (the reference point it becomes keeps the link).
pub(crate) fn link(store: &Store, machine: &str, repo: &Repo, cp: u64, point: u32) -> Result<()> {
    let link = BackupLink {
        dir: repo.dir.clone(),
        point,
    };
    Ok(store.set_checkpoint_backup(machine, cp, link)?)
}
/// The changed ranges of a disk between two RCT IDs, or why there are none
/// to trust.
fn changed_ranges(
    store: &Store,
    m: &machine::Machine,
    disk: &str,
    since: &str,
    until: &str,
) -> std::result::Result<Vec<(u64, u64)>, String> {
    let parse = |s: &str| s.parse::<rct::RctId>().map_err(|e| e.to_string());
    let (since, until) = (parse(since)?, parse(until)?);
    let c = store
        .with_disk(m, disk, |d| {
            let size = d.size();
            Ok(d.query_changes(&since, Some(&until), 0, size, usize::MAX)?)
        })
        .map_err(|e| match e.tracking() {
            Some(t) => format!("change tracking cannot be trusted ({}): {t}", t.kind()),
            None => e.to_string(),
        })?;
    Ok(c.ranges.iter().map(|r| (r.offset, r.length)).collect())
}

/// Step 1, for each disk whose tracking cannot be trusted (its file
/// missing or corrupt, the disk written while not tracked): why, for the
/// disk's `full_reason`. Tracking disabled on purpose is left alone (the
/// disk goes full as "not tracked", with the reason).
///
/// Such tracking would make every later backup of the disk full, so it is
/// restarted here (a new tracking GUID), before the checkpoint. That is
/// safe: the checkpoint's RCT ID then belongs to the new tracking, which
/// sees every write after it; this backup finds no way from the last
/// reference point to that ID and exports the disk in full, capturing
/// everything up to the checkpoint. So the next backup can again be
/// incremental, and if this one is cut short, the next finds the old ID
/// unknown to the new tracking and goes full as well.
fn restart_untrusted_tracking(
    store: &Store,
    m: &machine::Machine,
) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    for d in &m.disks {
        // Read-only first (a writable open changes the file, §2.2.2.1),
        // or the handle the daemon holds.
        let why = match store.with_disk(m, &d.name, |disk| Ok(disk.tracking_status()))? {
            TrackingStatus::On(_) => continue,
            TrackingStatus::Broken { kind, message } if kind == "tracking_disabled" => {
                out.insert(
                    d.name.clone(),
                    format!("change tracking is off ({kind}): {message}"),
                );
                continue;
            }
            TrackingStatus::Broken { kind, message } => {
                format!("change tracking cannot be trusted ({kind}): {message}")
            }
            TrackingStatus::Missing => {
                let e = rct::RctError::FileMissing {
                    path: rct::tracking_path(&d.base).display().to_string(),
                };
                format!("change tracking cannot be trusted ({}): {e}", e.kind())
            }
        };
        let _parked = store.park(&m.name)?;
        let mut disk = store.open_disk(m, &d.name, true)?;
        disk.enable_tracking(rct::DEFAULT_GRANULARITY)?;
        disk.close()?;
        out.insert(
            d.name.clone(),
            format!(
                "{why}; tracking was restarted at this backup, so the next one can be incremental"
            ),
        );
    }
    Ok(out)
}

/// Converts the checkpoint to a reference point and releases older ones.
pub(crate) fn finish(store: &Store, machine: &str, cp: u64, notes: &mut Vec<String>) -> Result<()> {
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
pub(crate) fn recover(store: &Store, machine: &str, repo: &Repo) -> Result<Vec<String>> {
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
        let mut done = cp.backup.as_ref().is_some_and(|b| {
            Repo::new(&**store.fs(), &b.dir)
                .manifest(b.point)
                .is_ok_and(|mf| mf.checkpoint == cp.id)
        });
        // The manifest is what makes a point exist; the link in the machine
        // file comes after it, so a cut between the two leaves a complete
        // point of this repository whose checkpoint has no link yet.
        if !done && cp.backup.is_none() {
            let point = repo
                .points()?
                .into_iter()
                .find(|p| p.machine == machine && p.checkpoint == cp.id && p.created == cp.created);
            if let Some(p) = point {
                let link = BackupLink {
                    dir: repo.dir.clone(),
                    point: p.point,
                };
                store.set_checkpoint_backup(machine, cp.id, link)?;
                done = true;
            }
        }
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
    // The next point's file may already be re-pointed at the new full, so
    // its bytes no longer match its manifest until this is finished.
    notes.extend(crate::restore::finish_interrupted_consolidation(
        &**store.fs(),
        &repo.dir,
        &mut |_, _| {},
    )?);
    Ok(notes)
}
