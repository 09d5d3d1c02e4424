//! `refpoint backup --all --to DIR`: one host point, all or nothing.
//!
//! ```text
//! 0. clean up: the journal of an interrupted run is finished (its host
//!    point recorded) or undone (thaw, merge back, remove its points);
//!    machine points no record names are removed; each machine repository
//!    is cleaned up as a single backup's is
//! 1. per machine: the point's number and what it builds on; tracking that
//!    cannot be trusted restarted
//! 2. journal ─► every freeze at once ─► park all ─► a recovery checkpoint
//!    per machine ─► unpark ─► every thaw ─► journal (checkpoint ids)
//! 3. per machine, in parallel: export and manifest (as a single backup)
//! 4. the host point's record: the host point exists (the commit point)
//! 5. per machine: convert the checkpoint to a reference point; remove the
//!    journal
//! ```
//!
//! A failure before step 4 undoes the run in the process (the code that
//! undoes an interrupted run); a kill or a power cut leaves it to the next
//! run. Either way no machine's reference point changes and the next run
//! is a normal incremental.
//!
//! Each disk file is captured once per host point: a disk file belongs to
//! one machine (a machine cannot be created on another's file) and each
//! machine is backed up once, which step 1 checks again. Shared disks,
//! attached to several machines, would be captured once per host point
//! under their own name rather than once per machine.

use super::journal::{Pending, PendingMachine, PENDING_FORMAT};
use super::{HostPoint, HostPointMachine, HostRepo, HOST_POINT_FORMAT};
use crate::error::{BackupError, Result};
use crate::repo::Repo;
use crate::run::{self, Plan, Summary, Written};
use machine::{Checkpoint, CheckpointKind, GroupOptions, Store};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How a host backup runs.
#[derive(Debug, Clone, Copy)]
pub struct HostOptions {
    /// How long each freeze (and thaw) hook may run before its process
    /// group is killed and the host backup fails.
    pub freeze_timeout: Option<Duration>,
    /// How many machines are exported at once (`None`: as many as there
    /// are CPUs).
    pub workers: Option<usize>,
}

impl Default for HostOptions {
    fn default() -> Self {
        HostOptions {
            freeze_timeout: Some(Duration::from_secs(60)),
            workers: None,
        }
    }
}

/// Progress of a host backup, called from the export threads:
/// `(machine, disk, bytes just done, the disk's size)`. Right after the
/// checkpoints it is called once per disk with 0 bytes done, so the whole
/// is known before the first byte is copied.
pub type HostProgress<'a> = &'a (dyn Fn(&str, &str, u64, u64) + Sync);

/// What a host backup did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostSummary {
    pub host_point: u32,
    pub repository: String,
    /// Each machine's backup, sorted by name.
    pub machines: Vec<Summary>,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub seconds: f64,
    /// What the run had to clean up from an interrupted one.
    pub recovered: Vec<String>,
}

/// Backs `machines` up into host repository `dir` as one host point.
pub fn backup(
    store: &Store,
    machines: &[&str],
    dir: &Path,
    options: &HostOptions,
    progress: HostProgress,
) -> Result<HostSummary> {
    let start = Instant::now();
    let fs = &**store.fs();
    let mut names = machines.to_vec();
    names.sort();
    names.dedup();
    if names.is_empty() {
        return Err(BackupError::NoMachines);
    }
    check_disks_once(store, &names)?;
    let h = HostRepo::new(fs, dir);
    h.create()?;
    let mut recovered = recover(store, &h, options)?;
    for n in &names {
        let repo = h.machine_repo(n);
        fs.create_dir_all(&repo.dir)
            .map_err(repo.io(&repo.dir, "creating"))?;
        recovered.extend(run::recover(store, n, &repo)?);
    }
    let host_point = h.host_points()?.last().map_or(1, |p| p.host_point + 1);
    let mut plans = Vec::new();
    for n in &names {
        plans.push(run::plan(store, n, &h.machine_repo(n))?);
    }
    let mut journal = Pending {
        format: PENDING_FORMAT.into(),
        host_point,
        machines: Vec::new(),
    };
    for (n, p) in names.iter().zip(&plans) {
        let m = store.load(n)?;
        let frozen = Store::default_consistency(&m) == machine::Consistency::Application;
        journal.machines.push(PendingMachine {
            machine: n.to_string(),
            next_id: m.next_id,
            frozen,
            thawed: !frozen,
            checkpoint: None,
            point: p.point,
        });
    }
    h.write_pending(&journal)?;
    let group = GroupOptions {
        consistency: None,
        hook_timeout: options.freeze_timeout,
    };
    let cps = store.create_checkpoints(&names, CheckpointKind::Recovery, &group);
    // Whatever happened, every thaw has run.
    for (i, j) in journal.machines.iter_mut().enumerate() {
        j.thawed = true;
        j.checkpoint = cps.as_ref().ok().map(|c| c[i].id);
    }
    h.write_pending(&journal)?;
    let cps = match cps {
        Ok(c) => c,
        Err(e) => return Err(undo(store, &h, options, e.into())),
    };
    let written = match export_all(store, &h, &plans, &cps, options, progress) {
        Ok(w) => w,
        Err(e) => return Err(undo(store, &h, options, e)),
    };
    let record = HostPoint {
        format: HOST_POINT_FORMAT.into(),
        host_point,
        created: cps.iter().map(|c| c.created).min().unwrap_or(0),
        machines: names
            .iter()
            .zip(&plans)
            .zip(&cps)
            .map(|((n, p), c)| HostPointMachine {
                machine: n.to_string(),
                point: p.point,
                checkpoint: c.id,
            })
            .collect(),
    };
    h.write_host_point(&record)?;
    for e in &record.machines {
        finish(store, &h, e, &mut recovered)?;
    }
    h.remove_pending()?;
    let summaries: Vec<Summary> = written
        .into_iter()
        .zip(&names)
        .map(|(w, n)| w.summary(&h.machine_repo(n), start, vec![]))
        .collect();
    Ok(HostSummary {
        host_point,
        repository: h.dir.display().to_string(),
        bytes_read: summaries.iter().map(|s| s.bytes_read).sum(),
        bytes_written: summaries.iter().map(|s| s.bytes_written).sum(),
        machines: summaries,
        seconds: start.elapsed().as_secs_f64(),
        recovered,
    })
}

/// Refuses a disk file that two of the machines name: each disk file is
/// captured once per host point.
fn check_disks_once(store: &Store, names: &[&str]) -> Result<()> {
    let mut owner: HashMap<PathBuf, String> = HashMap::new();
    for n in names {
        for d in store.load(n)?.disks {
            if let Some(first) = owner.insert(d.base.clone(), n.to_string()) {
                return Err(BackupError::SharedDisk {
                    path: d.base,
                    first,
                    second: n.to_string(),
                });
            }
        }
    }
    Ok(())
}

/// Step 3: every machine's point, at most `options.workers` machines at
/// once (their disks are different files); stops taking new machines
/// after a failure. The results in the order of `plans`.
fn export_all(
    store: &Store,
    h: &HostRepo,
    plans: &[Plan],
    cps: &[Checkpoint],
    options: &HostOptions,
    progress: HostProgress,
) -> Result<Vec<Written>> {
    for (p, cp) in plans.iter().zip(cps) {
        for cd in &cp.disks {
            let size = store.open_checkpoint_disk(cp, &cd.name)?.virtual_size();
            progress(&p.machine, &cd.name, 0, size);
        }
    }
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let workers = options.workers.unwrap_or(cpus).clamp(1, plans.len());
    let next = AtomicUsize::new(0);
    let failed = AtomicBool::new(false);
    let results: Vec<Mutex<Option<Result<Written>>>> =
        plans.iter().map(|_| Mutex::new(None)).collect();
    let work = || loop {
        let i = next.fetch_add(1, Ordering::SeqCst);
        if i >= plans.len() || failed.load(Ordering::SeqCst) {
            break;
        }
        let p = &plans[i];
        let repo = h.machine_repo(&p.machine);
        let mut tick = |disk: &str, n: u64, total: u64| progress(&p.machine, disk, n, total);
        let r = run::export_point(store, &repo, p, &cps[i], &mut tick);
        if r.is_err() {
            failed.store(true, Ordering::SeqCst);
        }
        *results[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
    };
    std::thread::scope(|s| {
        for _ in 1..workers {
            s.spawn(work);
        }
        work();
    });
    let mut out = Vec::new();
    for r in results {
        match r.into_inner().unwrap_or_else(|e| e.into_inner()) {
            Some(Ok(w)) => out.push(w),
            Some(Err(e)) => return Err(e),
            // Not started after another machine's failure.
            None => {}
        }
    }
    Ok(out)
}

/// Undoes the run in progress after `e` (what an interrupted run's next
/// run would do); returns `e`.
fn undo(store: &Store, h: &HostRepo, options: &HostOptions, e: BackupError) -> BackupError {
    match recover(store, h, options) {
        Ok(notes) => {
            for n in notes {
                tracing::info!("after the failed host backup: {n}");
            }
        }
        Err(ue) => tracing::error!("undoing the failed host backup: {ue}; the next run retries"),
    }
    e
}

/// Step 5 for one machine: its checkpoint, if still there, linked to its
/// point and converted to a reference point (older ones released).
fn finish(
    store: &Store,
    h: &HostRepo,
    e: &HostPointMachine,
    notes: &mut Vec<String>,
) -> Result<()> {
    let m = match store.load(&e.machine) {
        Ok(m) => m,
        Err(err) if err.is_not_found() => {
            notes.push(format!(
                "machine {} of the host point is gone: {err}",
                e.machine
            ));
            return Ok(());
        }
        Err(err) => return Err(err.into()),
    };
    let Some(cp) = m.checkpoint(e.checkpoint) else {
        return Ok(());
    };
    if cp.backup.is_none() {
        run::link(
            store,
            &e.machine,
            &h.machine_repo(&e.machine),
            cp.id,
            e.point,
        )?;
    }
    run::finish(store, &e.machine, cp.id, notes)
}

/// The machine, or `None` if it was removed since.
fn load_if_there(store: &Store, name: &str) -> Result<Option<machine::Machine>> {
    match store.load(name) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Step 0: the journal of an interrupted run (finished or undone), then
/// the machine points no host point names.
fn recover(store: &Store, h: &HostRepo, options: &HostOptions) -> Result<Vec<String>> {
    let mut notes = Vec::new();
    let records = h.host_points()?;
    if let Some(j) = h.read_pending()? {
        match records.iter().find(|r| r.host_point == j.host_point) {
            Some(rec) => {
                for e in &rec.machines {
                    finish(store, h, e, &mut notes)?;
                }
                notes.push(format!(
                    "finished host point {} of an interrupted run (its checkpoints converted to reference points)",
                    j.host_point
                ));
            }
            None => undo_journal(store, &j, options, &mut notes)?,
        }
        h.remove_pending()?;
    }
    for m in h.machines()? {
        remove_unrecorded(&h.machine_repo(&m), &m, &records, &mut notes)?;
    }
    Ok(notes)
}

/// Undoes the run of journal `j`, which did not commit: thaw, merge back.
fn undo_journal(
    store: &Store,
    j: &Pending,
    options: &HostOptions,
    notes: &mut Vec<String>,
) -> Result<()> {
    for pm in j.machines.iter().filter(|pm| pm.frozen && !pm.thawed) {
        match store.thaw(&pm.machine, options.freeze_timeout) {
            Ok(()) => notes.push(format!(
                "thawed {} after an interrupted host backup",
                pm.machine
            )),
            Err(e) => notes.push(format!(
                "thawing {} after an interrupted host backup failed: {e}",
                pm.machine
            )),
        }
    }
    for pm in &j.machines {
        let Some(m) = load_if_there(store, &pm.machine)? else {
            continue;
        };
        let id = pm.checkpoint_id();
        let ours = m
            .checkpoint(id)
            .is_some_and(|c| c.kind == CheckpointKind::Recovery);
        if ours {
            store.delete_checkpoint(&pm.machine, id)?;
            notes.push(format!(
                "merged back recovery checkpoint {id} of {} (host point {} was not recorded)",
                pm.machine, j.host_point
            ));
        }
    }
    notes.push(format!(
        "rolled back host point {} of an interrupted run",
        j.host_point
    ));
    Ok(())
}

/// Removes `machine`'s points newer than every point a host point names
/// (those of runs that did not commit), newest first.
fn remove_unrecorded(
    repo: &Repo,
    machine: &str,
    records: &[HostPoint],
    notes: &mut Vec<String>,
) -> Result<()> {
    let named: Vec<u32> = records
        .iter()
        .filter_map(|r| r.machine(machine).map(|e| e.point))
        .collect();
    let newest = named.iter().copied().max().unwrap_or(0);
    for n in repo.remove_points_after(newest)? {
        notes.push(format!(
            "removed point {n} of {machine}: no host point names it"
        ));
    }
    Ok(())
}
