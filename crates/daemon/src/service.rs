//! The machines as the API offers them, over a machine store: the one
//! implementation of [`api::Machines`] besides the client. The daemon's
//! HTTP handlers call it with disks held in the store's pool; the command
//! line calls it directly, with no daemon running, and then each call
//! opens the disk it needs and closes it again. Either way the same code
//! runs, so a command behaves the same with or without the daemon.

use crate::convert::{self, machine_error};
use crate::tracking::{self, changes_of, status_of};
use api::*;
use machine::Store;
use std::collections::BTreeMap;
use vdisk::Disk;

#[derive(Clone)]
pub struct Service {
    store: Store,
    /// Keep disks open in the pool between calls (the daemon).
    hold: bool,
}

impl Service {
    /// For a process that holds the machines' disks (the daemon).
    pub fn holding(store: Store) -> Self {
        Self { store, hold: true }
    }

    /// For a one-off command: disks are opened per call.
    pub fn local(store: Store) -> Self {
        Self { store, hold: false }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    fn load(&self, name: &str) -> Result<machine::Machine, ApiError> {
        self.store.load(name).map_err(machine_error)
    }

    /// Runs `f` on a machine disk: the held one, or one opened for the
    /// call (writable when `f` changes it) and closed after.
    fn on_disk<T>(
        &self,
        machine: &str,
        disk: &str,
        writable: bool,
        f: impl FnOnce(&mut Disk, String) -> Result<T, ApiError>,
    ) -> Result<T, ApiError> {
        let m = self.load(machine)?;
        let name = format!("{machine}/{disk}");
        if m.disk(disk).is_none() {
            return Err(machine_error(machine::MachineError::NoDisk {
                machine: machine.into(),
                disk: disk.into(),
            }));
        }
        if self.hold {
            return self
                .store
                .with_held(machine, disk, |d| Ok(f(d, name)))
                .map_err(machine_error)?;
        }
        let mut d = self
            .store
            .open_disk(&m, disk, writable)
            .map_err(machine_error)?;
        let r = f(&mut d, name);
        let closed = d.close().map_err(convert::disk_error);
        let v = r?;
        closed?;
        Ok(v)
    }

    /// Restores a backup point (a repository operation, not a machine's).
    pub fn restore(
        &self,
        r: &RestoreRequest,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<RestoreResult, ApiError> {
        let format = match r.format.unwrap_or(RestoreFormat::Vhdx) {
            RestoreFormat::Vhdx => vdisk::copy::Format::Vhdx,
            RestoreFormat::Raw => vdisk::copy::Format::Raw,
        };
        let fs = &**self.store.fs();
        // One machine of a host point: its repository and point.
        let (repository, point) = match &r.machine {
            Some(m) => backup::host::resolve_point(fs, &r.repository, r.point, m)
                .map(|(dir, p)| (dir, Some(p)))
                .map_err(convert::backup_error)?,
            None => (r.repository.clone(), r.point),
        };
        let files = backup::restore(
            fs,
            &repository,
            point,
            r.disk.as_deref(),
            &r.to,
            format,
            progress,
        )
        .map_err(convert::backup_error)?;
        Ok(RestoreResult { files })
    }

    /// Re-hashes a repository's points against their manifests.
    pub fn verify(
        &self,
        r: &VerifyRequest,
        progress: &mut dyn FnMut(u64, u64),
    ) -> Result<VerifyReport, ApiError> {
        let report = backup::verify(&**self.store.fs(), &r.repository, r.point, progress)
            .map_err(convert::backup_error)?;
        Ok(convert::verify_report(report))
    }
}

impl Machines for Service {
    fn machines(&self) -> Result<Vec<Machine>, ApiError> {
        let ms = self.store.list().map_err(machine_error)?;
        Ok(ms.into_iter().map(convert::machine).collect())
    }

    fn machine(&self, name: &str) -> Result<Machine, ApiError> {
        self.load(name).map(convert::machine)
    }

    fn create_checkpoint(
        &self,
        machine: &str,
        r: &CheckpointRequest,
    ) -> Result<Checkpoint, ApiError> {
        let _lock = self.store.lock_machine(machine);
        let m = self.load(machine)?;
        let kind = convert::checkpoint_kind_in(r.kind.unwrap_or(CheckpointKind::Standard));
        let consistency = r
            .consistency
            .map(convert::consistency_in)
            .unwrap_or_else(|| Store::default_consistency(&m));
        let cp = self
            .store
            .create_checkpoint(machine, kind, consistency)
            .map_err(machine_error)?;
        Ok(convert::checkpoint(cp))
    }

    fn delete_checkpoint(&self, machine: &str, id: u64) -> Result<Checkpoint, ApiError> {
        let _lock = self.store.lock_machine(machine);
        let cp = self
            .store
            .delete_checkpoint(machine, id)
            .map_err(machine_error)?;
        Ok(convert::checkpoint(cp))
    }

    fn apply_checkpoint(&self, machine: &str, id: u64) -> Result<Applied, ApiError> {
        let _lock = self.store.lock_machine(machine);
        self.store
            .apply_checkpoint(machine, id)
            .map_err(machine_error)?;
        Ok(Applied { applied: id })
    }

    fn convert_checkpoint(&self, machine: &str, id: u64) -> Result<ReferencePoint, ApiError> {
        let _lock = self.store.lock_machine(machine);
        let rp = self
            .store
            .convert_checkpoint(machine, id)
            .map_err(machine_error)?;
        Ok(convert::reference_point(rp))
    }

    fn destroy_reference_point(&self, machine: &str, id: u64) -> Result<Destroyed, ApiError> {
        let _lock = self.store.lock_machine(machine);
        self.store
            .destroy_reference_point(machine, id)
            .map_err(machine_error)?;
        Ok(Destroyed { destroyed: id })
    }

    fn disk_info(&self, machine: &str, disk: &str) -> Result<DiskInfo, ApiError> {
        self.on_disk(machine, disk, false, crate::disks::info_of)
    }

    fn tracking_status(&self, machine: &str, disk: &str) -> Result<TrackingStatus, ApiError> {
        self.on_disk(machine, disk, false, status_of)
    }

    fn enable_tracking(
        &self,
        machine: &str,
        disk: &str,
        r: &EnableTrackingRequest,
    ) -> Result<TrackingSwitched, ApiError> {
        let g = r.granularity.unwrap_or(rct::DEFAULT_GRANULARITY);
        self.on_disk(machine, disk, true, |d, _| tracking::enable(d, g))
    }

    fn disable_tracking(&self, machine: &str, disk: &str) -> Result<TrackingSwitched, ApiError> {
        self.on_disk(machine, disk, true, |d, _| tracking::disable(d))
    }

    fn seal(&self, machine: &str, disk: &str) -> Result<Sealed, ApiError> {
        self.on_disk(machine, disk, true, |d, _| tracking::seal(d))
    }

    fn release(&self, machine: &str, disk: &str, id: &str) -> Result<Released, ApiError> {
        self.on_disk(machine, disk, true, |d, _| tracking::release(d, id))
    }

    fn changes(&self, machine: &str, disk: &str, q: &ChangesQuery) -> Result<Changes, ApiError> {
        self.on_disk(machine, disk, false, |d, _| changes_of(d, q))
    }

    fn backup(
        &self,
        machine: &str,
        r: &BackupRequest,
        progress: Progress<'_>,
    ) -> Result<BackupSummary, ApiError> {
        let _lock = self.store.lock_machine(machine);
        self.load(machine)?;
        let to = vhdx::paths::absolute(&r.to);
        // The backup reports increments per disk; progress is totals.
        let (mut disk, mut done) = (String::new(), 0u64);
        let mut tick = |d: &str, n: u64, total: u64| {
            if d != disk {
                disk = d.to_string();
                done = 0;
            }
            done += n;
            progress(d, done, total);
        };
        let s =
            backup::backup(&self.store, machine, &to, &mut tick).map_err(convert::backup_error)?;
        Ok(convert::backup_summary(s))
    }

    fn instant_restore(&self, r: &InstantRequest) -> Result<InstantRestored, ApiError> {
        let start = std::time::Instant::now();
        let _lock = self.store.lock_machine(&r.name);
        let repo = vhdx::paths::absolute(&r.repository);
        let m = backup::restore_instant(&self.store, &repo, r.point, r.machine.as_deref(), &r.name)
            .map_err(convert::backup_error)?;
        if self.hold {
            // Opened now, so the first read of an export waits for nothing.
            for d in &m.disks {
                self.store.hold(&m.name, &d.name).map_err(machine_error)?;
            }
        }
        Ok(InstantRestored {
            exports: m
                .disks
                .iter()
                .map(|d| format!("{}/{}", m.name, d.name))
                .collect(),
            machine: convert::machine(m),
            seconds: start.elapsed().as_secs_f64(),
        })
    }

    fn finish_instant(
        &self,
        machine: &str,
        r: &FinishRequest,
        progress: Progress<'_>,
    ) -> Result<FinishSummary, ApiError> {
        let _lock = self.store.lock_machine(machine);
        let opts = machine::FinishOptions {
            throttle: r.throttle,
        };
        let s = self
            .store
            .finish_instant(machine, &opts, progress)
            .map_err(machine_error)?;
        Ok(convert::finish_summary(s))
    }

    fn discard_instant(&self, machine: &str) -> Result<Discarded, ApiError> {
        let _lock = self.store.lock_machine(machine);
        self.store.discard_instant(machine).map_err(machine_error)?;
        Ok(Discarded {
            discarded: machine.into(),
        })
    }

    fn host_backup(
        &self,
        r: &HostBackupRequest,
        progress: HostProgress<'_>,
    ) -> Result<HostBackupSummary, ApiError> {
        let mut names: Vec<&str> = r.machines.iter().map(String::as_str).collect();
        names.sort();
        names.dedup();
        // Every operation on these machines waits for the whole run; the
        // locks are taken in name order, as every run of several does.
        let _locks: Vec<machine::MachineLock> =
            names.iter().map(|n| self.store.lock_machine(n)).collect();
        for n in &names {
            self.load(n)?;
        }
        let to = vhdx::paths::absolute(&r.to);
        let options = backup::host::HostOptions {
            freeze_timeout: match r.freeze_timeout_seconds {
                Some(0) => None,
                Some(s) => Some(std::time::Duration::from_secs(s)),
                None => backup::host::HostOptions::default().freeze_timeout,
            },
            workers: None,
        };
        let tally = Tally::default();
        let tick = |m: &str, d: &str, n: u64, total: u64| tally.tick(m, d, n, total, progress);
        let s = backup::host::backup(&self.store, &names, &to, &options, &tick)
            .map_err(convert::backup_error)?;
        Ok(convert::host_summary(s))
    }
}

/// A host backup's progress as the API reports it: the export threads
/// report bytes per disk; the whole and each machine are sums.
#[derive(Default)]
struct Tally {
    /// (machine, disk) → (done, total).
    disks: parking_lot::Mutex<BTreeMap<(String, String), (u64, u64)>>,
}

impl Tally {
    fn tick(&self, machine: &str, disk: &str, n: u64, total: u64, progress: HostProgress<'_>) {
        let mut disks = self.disks.lock();
        let e = disks
            .entry((machine.to_string(), disk.to_string()))
            .or_default();
        e.1 = total;
        e.0 = (e.0 + n).min(total);
        let mut parts: Vec<JobPart> = Vec::new();
        for ((m, d), &(done, total)) in disks.iter() {
            if parts
                .last()
                .is_none_or(|p| p.item.split('/').next() != Some(m))
            {
                parts.push(JobPart {
                    item: m.clone(),
                    done: 0,
                    total: 0,
                });
            }
            let p = parts.last_mut().expect("just pushed");
            p.done += done;
            p.total += total;
            // The disk being copied, while one is.
            if done > 0 && done < total {
                p.item = format!("{m}/{d}");
            }
        }
        let whole = JobPart {
            item: "host backup".into(),
            done: parts.iter().map(|p| p.done).sum(),
            total: parts.iter().map(|p| p.total).sum(),
        };
        progress(&whole, &parts);
    }
}
