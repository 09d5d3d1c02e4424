//! The machines as every front end sees them: one trait, implemented by
//! [`Client`] (through a running daemon) and by the daemon's service over
//! a local store, so a command is written once and behaves the same with
//! or without a daemon.

use crate::types::*;
use crate::{ApiError, Client};

/// Progress of a long operation: what is being worked on, bytes done of
/// the bytes it will take.
pub type Progress<'a> = &'a mut dyn FnMut(&str, u64, u64);

/// Progress of a host backup: the whole (`item` `host point N`) and one
/// part per machine (`item` the machine, or `machine/disk` while a disk is
/// copied). Called from several threads at once.
pub type HostProgress<'a> = &'a (dyn Fn(&JobPart, &[JobPart]) + Sync);

pub trait Machines {
    fn machines(&self) -> Result<Vec<Machine>, ApiError>;
    fn machine(&self, name: &str) -> Result<Machine, ApiError>;

    /// `request.consistency` unset: application-consistent when the machine
    /// has freeze/thaw hooks, else crash-consistent.
    fn create_checkpoint(
        &self,
        machine: &str,
        request: &CheckpointRequest,
    ) -> Result<Checkpoint, ApiError>;
    /// Merges the newest checkpoint back; returns it.
    fn delete_checkpoint(&self, machine: &str, id: u64) -> Result<Checkpoint, ApiError>;
    fn apply_checkpoint(&self, machine: &str, id: u64) -> Result<Applied, ApiError>;
    fn convert_checkpoint(&self, machine: &str, id: u64) -> Result<ReferencePoint, ApiError>;
    fn destroy_reference_point(&self, machine: &str, id: u64) -> Result<Destroyed, ApiError>;

    fn disk_info(&self, machine: &str, disk: &str) -> Result<DiskInfo, ApiError>;
    fn tracking_status(&self, machine: &str, disk: &str) -> Result<TrackingStatus, ApiError>;
    fn enable_tracking(
        &self,
        machine: &str,
        disk: &str,
        request: &EnableTrackingRequest,
    ) -> Result<TrackingSwitched, ApiError>;
    fn disable_tracking(&self, machine: &str, disk: &str) -> Result<TrackingSwitched, ApiError>;
    fn seal(&self, machine: &str, disk: &str) -> Result<Sealed, ApiError>;
    fn release(&self, machine: &str, disk: &str, id: &str) -> Result<Released, ApiError>;
    /// A tracking refusal is an [`ApiError`] whose [`ApiError::tracking`]
    /// says why.
    fn changes(&self, machine: &str, disk: &str, query: &ChangesQuery)
        -> Result<Changes, ApiError>;

    /// Backs `machine` up into `request.to`; `progress` sees each disk's
    /// bytes done of its total.
    fn backup(
        &self,
        machine: &str,
        request: &BackupRequest,
        progress: Progress<'_>,
    ) -> Result<BackupSummary, ApiError>;

    /// Creates a machine on a backup point at once (instant restore).
    fn instant_restore(&self, request: &InstantRequest) -> Result<InstantRestored, ApiError>;
    /// Makes an instant machine's disks standalone while it runs; resumes
    /// an interrupted finish.
    fn finish_instant(
        &self,
        machine: &str,
        request: &FinishRequest,
        progress: Progress<'_>,
    ) -> Result<FinishSummary, ApiError>;
    /// Drops an instant machine and its files.
    fn discard_instant(&self, machine: &str) -> Result<Discarded, ApiError>;
    /// Backs `request.machines` up into host repository `request.to` as one
    /// host point: a consistent cut of all of them, all or nothing.
    fn host_backup(
        &self,
        request: &HostBackupRequest,
        progress: HostProgress<'_>,
    ) -> Result<HostBackupSummary, ApiError>;
}

impl Machines for Client {
    fn machines(&self) -> Result<Vec<Machine>, ApiError> {
        Client::machines(self)
    }
    fn machine(&self, name: &str) -> Result<Machine, ApiError> {
        Client::machine(self, name)
    }
    fn create_checkpoint(
        &self,
        machine: &str,
        request: &CheckpointRequest,
    ) -> Result<Checkpoint, ApiError> {
        Client::create_checkpoint(self, machine, request)
    }
    fn delete_checkpoint(&self, machine: &str, id: u64) -> Result<Checkpoint, ApiError> {
        Client::delete_checkpoint(self, machine, id)
    }
    fn apply_checkpoint(&self, machine: &str, id: u64) -> Result<Applied, ApiError> {
        Client::apply_checkpoint(self, machine, id)
    }
    fn convert_checkpoint(&self, machine: &str, id: u64) -> Result<ReferencePoint, ApiError> {
        Client::convert_checkpoint(self, machine, id)
    }
    fn destroy_reference_point(&self, machine: &str, id: u64) -> Result<Destroyed, ApiError> {
        Client::destroy_reference_point(self, machine, id)
    }
    fn disk_info(&self, machine: &str, disk: &str) -> Result<DiskInfo, ApiError> {
        Client::disk_info(self, machine, disk)
    }
    fn tracking_status(&self, machine: &str, disk: &str) -> Result<TrackingStatus, ApiError> {
        Client::tracking_status(self, machine, disk)
    }
    fn enable_tracking(
        &self,
        machine: &str,
        disk: &str,
        request: &EnableTrackingRequest,
    ) -> Result<TrackingSwitched, ApiError> {
        Client::enable_tracking(self, machine, disk, request)
    }
    fn disable_tracking(&self, machine: &str, disk: &str) -> Result<TrackingSwitched, ApiError> {
        Client::disable_tracking(self, machine, disk)
    }
    fn seal(&self, machine: &str, disk: &str) -> Result<Sealed, ApiError> {
        Client::seal(self, machine, disk)
    }
    fn release(&self, machine: &str, disk: &str, id: &str) -> Result<Released, ApiError> {
        Client::release(self, machine, disk, id)
    }
    fn changes(
        &self,
        machine: &str,
        disk: &str,
        query: &ChangesQuery,
    ) -> Result<Changes, ApiError> {
        Client::changes(self, machine, disk, query)
    }
    fn backup(
        &self,
        machine: &str,
        request: &BackupRequest,
        progress: Progress<'_>,
    ) -> Result<BackupSummary, ApiError> {
        self.run_backup(machine, request, &mut |job: &Job| {
            progress(&job.item, job.done, job.total)
        })
    }
    fn instant_restore(&self, request: &InstantRequest) -> Result<InstantRestored, ApiError> {
        Client::instant_restore(self, request)
    }
    fn finish_instant(
        &self,
        machine: &str,
        request: &FinishRequest,
        progress: Progress<'_>,
    ) -> Result<FinishSummary, ApiError> {
        self.run_finish(machine, request, &mut |job: &Job| {
            progress(&job.item, job.done, job.total)
        })
    }
    fn discard_instant(&self, machine: &str) -> Result<Discarded, ApiError> {
        Client::discard_instant(self, machine)
    }
    fn host_backup(
        &self,
        request: &HostBackupRequest,
        progress: HostProgress<'_>,
    ) -> Result<HostBackupSummary, ApiError> {
        self.run_host_backup(request, &mut |job: &Job| {
            let whole = JobPart {
                item: job.item.clone(),
                done: job.done,
                total: job.total,
            };
            progress(&whole, &job.parts)
        })
    }
}
