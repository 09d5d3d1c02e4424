//! Long operations (backups, restores, verifications) run as jobs: the
//! API answers at once with a job id; clients poll its progress.

use api::{ApiError, Job, JobKind, JobResult, JobState};
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
            result: None,
            error: None,
            started: now(),
            finished: None,
        };
        jobs.insert(id, job.clone());
        drop(jobs);
        let me = self.clone();
        tokio::task::spawn_blocking(move || {
            let mut progress = |item: &str, done: u64, total: u64| {
                if let Some(j) = me.jobs.lock().get_mut(&id) {
                    if j.item != item {
                        j.item = item.to_string();
                    }
                    j.done = done;
                    j.total = total;
                }
            };
            let r = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                work(&mut progress)
            })) {
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
