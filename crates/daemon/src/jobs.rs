//! Long operations (backups, restores, verifications) run as jobs: the
//! API answers at once with a job id; clients poll its progress.

use api::{ApiError, Job, JobKind, JobPart, JobResult, JobState};
use parking_lot::Mutex;
use std::collections::BTreeMap;
use std::sync::Arc;

#[derive(Default)]
pub struct Jobs {
    jobs: Mutex<BTreeMap<u64, Job>>,
}

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// What a running job reports its progress through; usable from several
/// threads at once.
pub struct Reporter {
    jobs: Arc<Jobs>,
    id: u64,
}

impl Reporter {
    /// The job works on `item`: `done` bytes of `total`.
    pub fn set(&self, item: &str, done: u64, total: u64) {
        self.update(|j| {
            if j.item != item {
                j.item = item.to_string();
            }
            j.done = done;
            j.total = total;
        });
    }

    /// The progress of each part of the job (see [`Job::parts`]).
    pub fn set_parts(&self, parts: &[JobPart]) {
        self.update(|j| j.parts = parts.to_vec());
    }

    fn update(&self, f: impl FnOnce(&mut Job)) {
        if let Some(j) = self.jobs.jobs.lock().get_mut(&self.id) {
            f(j);
        }
    }
}

impl Jobs {
    /// Starts `work` on a blocking thread; it reports progress through the
    /// callback and returns the job's result.
    pub fn start(
        self: &Arc<Self>,
        kind: JobKind,
        target: &str,
        work: impl FnOnce(&mut dyn FnMut(&str, u64, u64)) -> Result<JobResult, ApiError>
            + Send
            + 'static,
    ) -> Job {
        self.start_reporting(kind, target, move |r| {
            work(&mut |item, done, total| r.set(item, done, total))
        })
    }

    /// Starts `work` on a blocking thread; it reports progress through the
    /// [`Reporter`] (from any thread) and returns the job's result.
    pub fn start_reporting(
        self: &Arc<Self>,
        kind: JobKind,
        target: &str,
        work: impl FnOnce(&Reporter) -> Result<JobResult, ApiError> + Send + 'static,
    ) -> Job {
        let mut jobs = self.jobs.lock();
        let id = jobs.keys().next_back().map(|k| k + 1).unwrap_or(1);
        let job = Job {
            id,
            kind,
            target: target.into(),
            state: JobState::Running,
            item: String::new(),
            done: 0,
            total: 0,
            parts: Vec::new(),
            result: None,
            error: None,
            started: now(),
            finished: None,
        };
        jobs.insert(id, job.clone());
        drop(jobs);
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let reporter = Reporter {
                jobs: me.clone(),
                id,
            };
            let r = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| work(&reporter)))
            {
                Ok(r) => r.map_err(|e| e.to_string()),
                Err(_) => Err("the job panicked; see the daemon's log".to_string()),
            };
            let mut jobs = me.jobs.lock();
            let j = jobs
                .get_mut(&id)
                .expect("jobs are never removed while running");
            j.finished = Some(now());
            match r {
                Ok(v) => {
                    j.state = JobState::Succeeded;
                    j.result = Some(v);
                }
                Err(e) => {
                    j.state = JobState::Failed;
                    j.error = Some(e);
                }
            }
        });
        job
    }

    pub fn get(&self, id: u64) -> Option<Job> {
        self.jobs.lock().get(&id).cloned()
    }

    pub fn list(&self) -> Vec<Job> {
        self.jobs.lock().values().cloned().collect()
    }

    pub fn running(&self) -> usize {
        self.jobs
            .lock()
            .values()
            .filter(|j| j.state == JobState::Running)
            .count()
    }
}
