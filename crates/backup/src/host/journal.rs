//! The journal of a host backup in progress (`host-points/pending.json`):
//! what the next run needs to undo or finish it after a kill or a power
//! cut.
//!
//! ```text
//! written (durably)              says
//! ─────────────────────────────  ─────────────────────────────────────────
//! before the first freeze        the host point's number; per machine: the
//!                                id its checkpoint will get, whether its
//!                                freeze is started, the point it will get
//! after the checkpoints and      every machine thawed; each checkpoint's id
//!   every thaw
//! removed                        after the host point's record is written
//!                                and every checkpoint is converted
//! ```
//!
//! The next run reads it first. Without the host point's record, the run
//! did not commit: each machine whose freeze started and was not recorded
//! as thawed is thawed, each recovery checkpoint of the run is merged
//! back, and the machine points of the run are removed (no record names
//! them). With the record, the run did commit: each checkpoint it names
//! that is still there is converted to a reference point.

use super::HostRepo;
use crate::error::Result;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

pub(crate) const PENDING_FORMAT: &str = "refpoint-host-pending-1";
const PENDING_NAME: &str = "pending.json";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Pending {
    pub format: String,
    pub host_point: u32,
    pub machines: Vec<PendingMachine>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct PendingMachine {
    pub machine: String,
    /// The id the machine's checkpoint gets (its `next_id` at the start).
    pub next_id: u64,
    /// Its freeze hook is started (it has one).
    pub frozen: bool,
    /// Its thaw hook has run (or it has none).
    pub thawed: bool,
    /// Its checkpoint, once taken.
    pub checkpoint: Option<u64>,
    /// The point its backup gets in its repository.
    pub point: u32,
}

impl PendingMachine {
    /// The id of the run's checkpoint of this machine, taken or not.
    pub fn checkpoint_id(&self) -> u64 {
        self.checkpoint.unwrap_or(self.next_id)
    }
}

impl HostRepo<'_> {
    fn pending_path(&self) -> PathBuf {
        self.points_dir().join(PENDING_NAME)
    }

    /// The journal of an interrupted run, if there is one.
    pub(crate) fn read_pending(&self) -> Result<Option<Pending>> {
        let p = self.pending_path();
        if !self.exists(&p)? {
            return Ok(None);
        }
        let j = self.read_record(&p, PENDING_FORMAT, |j: &Pending| {
            (
                &j.format,
                j.machines.iter().map(|m| m.machine.as_str()).collect(),
            )
        })?;
        Ok(Some(j))
    }

    /// Writes the journal atomically and durably.
    pub(crate) fn write_pending(&self, j: &Pending) -> Result<()> {
        let p = self.pending_path();
        let b = serde_json::to_vec_pretty(j).expect("journal serializes");
        self.fs
            .write_file_atomic(&p, &b)
            .map_err(self.io(&p, "writing"))
    }

    /// Removes the journal durably: the run is over.
    pub(crate) fn remove_pending(&self) -> Result<()> {
        let p = self.pending_path();
        if self.exists(&p)? {
            self.fs
                .remove_durable(&p)
                .map_err(self.io(&p, "removing"))?;
        }
        Ok(())
    }
}
