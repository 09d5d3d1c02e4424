//! One method per route, named as its operation id.

use super::Client;
use crate::routes;
use crate::types::*;
use crate::ApiError;

impl Client {
    // --- the daemon ------------------------------------------------------

    /// The OpenAPI document the daemon serves.
    pub fn openapi(&self) -> Result<serde_json::Value, ApiError> {
        self.call(&routes::OPENAPI, &[], None, None::<&()>)
    }

    pub fn status(&self) -> Result<DaemonStatus, ApiError> {
        self.call(&routes::STATUS, &[], None, None::<&()>)
    }

    /// Asks the daemon to stop (it flushes and closes every disk first).
    pub fn shutdown(&self) -> Result<ShuttingDown, ApiError> {
        self.call(&routes::SHUTDOWN, &[], None, None::<&()>)
    }

    pub fn exports(&self) -> Result<Vec<Export>, ApiError> {
        self.call(&routes::EXPORTS, &[], None, None::<&()>)
    }

    // --- machines, checkpoints, reference points -------------------------

    pub fn machines(&self) -> Result<Vec<Machine>, ApiError> {
        self.call(&routes::MACHINES, &[], None, None::<&()>)
    }

    pub fn machine(&self, name: &str) -> Result<Machine, ApiError> {
        self.call(&routes::MACHINE, &[&name], None, None::<&()>)
    }

    pub fn create_checkpoint(
        &self,
        machine: &str,
        request: &CheckpointRequest,
    ) -> Result<Checkpoint, ApiError> {
        self.call(&routes::CREATE_CHECKPOINT, &[&machine], None, Some(request))
    }

    /// Merges the newest checkpoint back; returns it.
    pub fn delete_checkpoint(&self, machine: &str, id: u64) -> Result<Checkpoint, ApiError> {
        self.call(
            &routes::DELETE_CHECKPOINT,
            &[&machine, &id],
            None,
            None::<&()>,
        )
    }

    pub fn apply_checkpoint(&self, machine: &str, id: u64) -> Result<Applied, ApiError> {
        self.call(
            &routes::APPLY_CHECKPOINT,
            &[&machine, &id],
            None,
            None::<&()>,
        )
    }

    pub fn convert_checkpoint(&self, machine: &str, id: u64) -> Result<ReferencePoint, ApiError> {
        self.call(
            &routes::CONVERT_CHECKPOINT,
            &[&machine, &id],
            None,
            None::<&()>,
        )
    }

    pub fn destroy_reference_point(&self, machine: &str, id: u64) -> Result<Destroyed, ApiError> {
        let route = &routes::DESTROY_REFERENCE_POINT;
        self.call(route, &[&machine, &id], None, None::<&()>)
    }

    // --- a live disk ------------------------------------------------------

    pub fn disk_info(&self, machine: &str, disk: &str) -> Result<DiskInfo, ApiError> {
        self.call(&routes::DISK_INFO, &[&machine, &disk], None, None::<&()>)
    }

    // --- change tracking of a live disk ----------------------------------

    pub fn tracking_status(&self, machine: &str, disk: &str) -> Result<TrackingStatus, ApiError> {
        self.call(
            &routes::TRACKING_STATUS,
            &[&machine, &disk],
            None,
            None::<&()>,
        )
    }

    pub fn enable_tracking(
        &self,
        machine: &str,
        disk: &str,
        request: &EnableTrackingRequest,
    ) -> Result<TrackingSwitched, ApiError> {
        let route = &routes::ENABLE_TRACKING;
        self.call(route, &[&machine, &disk], None, Some(request))
    }

    pub fn disable_tracking(
        &self,
        machine: &str,
        disk: &str,
    ) -> Result<TrackingSwitched, ApiError> {
        let route = &routes::DISABLE_TRACKING;
        self.call(route, &[&machine, &disk], None, None::<&()>)
    }

    /// Seals the current generation; its RCT ID names this point.
    pub fn seal(&self, machine: &str, disk: &str) -> Result<Sealed, ApiError> {
        self.call(&routes::SEAL, &[&machine, &disk], None, None::<&()>)
    }

    pub fn release(&self, machine: &str, disk: &str, id: &str) -> Result<Released, ApiError> {
        let body = ReleaseRequest { id: id.to_string() };
        self.call(&routes::RELEASE, &[&machine, &disk], None, Some(&body))
    }

    /// Ranges changed since `query.since`. A tracking refusal is an
    /// [`ApiError`] whose [`ApiError::tracking`] says why.
    pub fn changes(
        &self,
        machine: &str,
        disk: &str,
        query: &ChangesQuery,
    ) -> Result<Changes, ApiError> {
        let q = crate::encode::query(query).map_err(ApiError::InvalidRequest)?;
        self.call(&routes::CHANGES, &[&machine, &disk], Some(q), None::<&()>)
    }

    // --- jobs: backups, restores, verifications --------------------------

    pub fn start_backup(&self, machine: &str, request: &BackupRequest) -> Result<Job, ApiError> {
        self.call(&routes::START_BACKUP, &[&machine], None, Some(request))
    }

    pub fn instant_restore(&self, request: &InstantRequest) -> Result<InstantRestored, ApiError> {
        self.call(&routes::INSTANT_RESTORE, &[], None, Some(request))
    }

    pub fn start_finish(&self, machine: &str, request: &FinishRequest) -> Result<Job, ApiError> {
        self.call(&routes::START_FINISH, &[&machine], None, Some(request))
    }

    pub fn discard_instant(&self, machine: &str) -> Result<Discarded, ApiError> {
        self.call(&routes::DISCARD_INSTANT, &[&machine], None, None::<&()>)
    }

    pub fn start_host_backup(&self, request: &HostBackupRequest) -> Result<Job, ApiError> {
        self.call(&routes::START_HOST_BACKUP, &[], None, Some(request))
    }

    pub fn start_restore(&self, request: &RestoreRequest) -> Result<Job, ApiError> {
        self.call(&routes::START_RESTORE, &[], None, Some(request))
    }

    pub fn start_verify(&self, request: &VerifyRequest) -> Result<Job, ApiError> {
        self.call(&routes::START_VERIFY, &[], None, Some(request))
    }

    pub fn jobs(&self) -> Result<Vec<Job>, ApiError> {
        self.call(&routes::JOBS, &[], None, None::<&()>)
    }

    pub fn job(&self, id: u64) -> Result<Job, ApiError> {
        self.call(&routes::JOB, &[&id], None, None::<&()>)
    }
}
