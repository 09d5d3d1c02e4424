//! Waiting for jobs: backups, restores and verifications answer at once
//! with a job, which the client polls until it ends.

use super::{short_json, Client};
use crate::routes;
use crate::types::*;
use crate::ApiError;

impl Client {
    /// Polls job `id` until it ends, showing each state it sees to
    /// `progress` (the last one too); returns the succeeded job. A failed
    /// job is an [`ApiError`] of kind [`ErrorKind::JobFailed`] carrying the
    /// job's error.
    pub fn wait_job(&self, id: u64, progress: &mut dyn FnMut(&Job)) -> Result<Job, ApiError> {
        loop {
            let job = self.job(id)?;
            progress(&job);
            match job.state {
                JobState::Running => std::thread::sleep(self.poll_interval),
                JobState::Succeeded => return Ok(job),
                JobState::Failed => {
                    return Err(ApiError::Api {
                        status: ErrorKind::JobFailed.status(),
                        kind: ErrorKind::JobFailed,
                        message: job.error.unwrap_or_else(|| format!("job {id} failed")),
                        tracking: None,
                    })
                }
            }
        }
    }

    /// Backs `machine` up and waits for the job: its summary.
    pub fn run_backup(
        &self,
        machine: &str,
        request: &BackupRequest,
        progress: &mut dyn FnMut(&Job),
    ) -> Result<BackupSummary, ApiError> {
        let job = self.start_backup(machine, request)?;
        match self.wait_job(job.id, progress)?.result {
            Some(JobResult::Backup(s)) => Ok(s),
            other => Err(self.unexpected_result(job.id, "BackupSummary", other)),
        }
    }

    /// Finishes an instant machine and waits for the job.
    pub fn run_finish(
        &self,
        machine: &str,
        request: &FinishRequest,
        progress: &mut dyn FnMut(&Job),
    ) -> Result<FinishSummary, ApiError> {
        let job = self.start_finish(machine, request)?;
        match self.wait_job(job.id, progress)?.result {
            Some(JobResult::Finish(s)) => Ok(s),
            other => Err(self.unexpected_result(job.id, "FinishSummary", other)),
        }
    }

    /// Backs several machines up as one host point and waits for the job:
    /// its summary.
    pub fn run_host_backup(
        &self,
        request: &HostBackupRequest,
        progress: &mut dyn FnMut(&Job),
    ) -> Result<HostBackupSummary, ApiError> {
        let job = self.start_host_backup(request)?;
        match self.wait_job(job.id, progress)?.result {
            Some(JobResult::HostBackup(s)) => Ok(s),
            other => Err(self.unexpected_result(job.id, "HostBackupSummary", other)),
        }
    }

    /// Restores and waits for the job: the files written.
    pub fn run_restore(
        &self,
        request: &RestoreRequest,
        progress: &mut dyn FnMut(&Job),
    ) -> Result<RestoreResult, ApiError> {
        let job = self.start_restore(request)?;
        match self.wait_job(job.id, progress)?.result {
            Some(JobResult::Restore(r)) => Ok(r),
            other => Err(self.unexpected_result(job.id, "RestoreResult", other)),
        }
    }

    /// Verifies and waits for the job: its report.
    pub fn run_verify(
        &self,
        request: &VerifyRequest,
        progress: &mut dyn FnMut(&Job),
    ) -> Result<VerifyReport, ApiError> {
        let job = self.start_verify(request)?;
        match self.wait_job(job.id, progress)?.result {
            Some(JobResult::Verify(r)) => Ok(r),
            other => Err(self.unexpected_result(job.id, "VerifyReport", other)),
        }
    }

    fn unexpected_result(&self, id: u64, expected: &str, got: Option<JobResult>) -> ApiError {
        ApiError::Decode {
            endpoint: self.endpoint(),
            method: routes::JOB.method.as_str(),
            path: routes::JOB.path_with(&[&id]),
            status: 200,
            expected: format!("a job result holding a {expected}"),
            message: match got {
                None => "the finished job has no result".into(),
                Some(r) => format!("its result is {}", short_json(&r)),
            },
        }
    }
}
