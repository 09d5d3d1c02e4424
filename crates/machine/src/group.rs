//! Checkpoints of several machines as one consistent cut (the VSS
//! writer's model of a host backup):
//!
//! ```text
//! create_checkpoints([vm1, vm2, vm3])
//!   freeze_all   every freeze hook at once (threads), each for at most the
//!                timeout; one fails → thaw all, no checkpoint
//!   park         vm1, vm2, vm3 in name order: in-flight I/O of every disk
//!                drains, new I/O waits — from here on nothing is written
//!   checkpoint   each machine's disks switch to new children (its file saved)
//!   unpark       every disk reopens on its child; writes go on
//!   thaw_all     every thaw hook at once, the failed freeze's machine too
//! ```
//!
//! Because no disk of any of the machines takes a write between the first
//! checkpoint and the last, the checkpoints are one cut: a write
//! acknowledged before another write was issued (in any machine) is in the
//! checkpoints whenever the later one is. Taking the checkpoints one
//! machine after another would not give that.
//!
//! Machines are parked in name order, and an operation on one machine
//! parks only that machine, so two operations never wait for each other's
//! disks in a cycle.

use crate::error::{MachineError, Result};
use crate::hooks;
use crate::model::{Checkpoint, CheckpointKind, Consistency, Machine};
use crate::store::Store;
use std::time::Duration;

/// How [`Store::create_checkpoints`] takes its checkpoints.
#[derive(Debug, Clone, Copy, Default)]
pub struct GroupOptions {
    /// `None`: each machine's default (application-consistent when it has
    /// freeze/thaw hooks, see [`Store::default_consistency`]).
    pub consistency: Option<Consistency>,
    /// How long each freeze and thaw hook may run before its process group
    /// is killed (`None`: no limit).
    pub hook_timeout: Option<Duration>,
}

impl Store {
    /// Takes a checkpoint of every machine in `names` as one consistent
    /// cut (see the module doc); returns them in the order of `names`.
    ///
    /// All or nothing: if a freeze fails or times out, every machine is
    /// thawed and nothing else happens; if machine k's checkpoint fails,
    /// the checkpoints already taken are merged back (after the disks are
    /// unparked) and every machine is thawed; if a thaw fails, every
    /// checkpoint is merged back. The first error is returned.
    pub fn create_checkpoints(
        &self,
        names: &[&str],
        kind: CheckpointKind,
        options: &GroupOptions,
    ) -> Result<Vec<Checkpoint>> {
        let mut machines = Vec::new();
        for (i, n) in names.iter().enumerate() {
            if names[..i].contains(n) {
                return Err(MachineError::DuplicateMachine {
                    name: n.to_string(),
                });
            }
            let m = self.load(n)?;
            let c = options
                .consistency
                .unwrap_or_else(|| Store::default_consistency(&m));
            machines.push((m, c));
        }
        // Hooks run for the application-consistent ones only.
        let hooked: Vec<&Machine> = machines
            .iter()
            .filter(|(_, c)| *c == Consistency::Application)
            .map(|(m, _)| m)
            .collect();
        self.freeze_all(&hooked, options.hook_timeout)?;
        let taken = self.checkpoint_all(&machines, kind);
        let thawed = self.thaw_all(&hooked, options.hook_timeout);
        let cps = taken?;
        if let Err(e) = thawed {
            self.merge_back_all(machines.iter().map(|(m, _)| m).zip(&cps));
            return Err(e);
        }
        Ok(cps)
    }

    /// Runs the freeze hooks of `machines` at once, each for at most
    /// `timeout`, and waits for all. If one fails, every machine's thaw
    /// runs (whose freeze started: all of them, the failed one included)
    /// and the first failure in `machines`' order is returned.
    pub fn freeze_all(&self, machines: &[&Machine], timeout: Option<Duration>) -> Result<()> {
        let results = each_at_once(machines, |m| hooks::freeze(m, timeout));
        let Some(first) = results.into_iter().find_map(Result::err) else {
            return Ok(());
        };
        if let Err(e) = self.thaw_all(machines, timeout) {
            tracing::error!("thawing after a failed freeze: {e}");
        }
        Err(first)
    }

    /// Runs the thaw hooks of `machines` at once, each for at most
    /// `timeout`; every one runs, and the first failure in `machines`'
    /// order is returned.
    pub fn thaw_all(&self, machines: &[&Machine], timeout: Option<Duration>) -> Result<()> {
        each_at_once(machines, |m| hooks::thaw(m, timeout))
            .into_iter()
            .collect()
    }

    /// Runs machine `name`'s thaw hook, if it has one, for at most
    /// `timeout` (after an interrupted run that may have left it frozen).
    pub fn thaw(&self, name: &str, timeout: Option<Duration>) -> Result<()> {
        hooks::thaw(&self.load(name)?, timeout)
    }

    /// Parks every machine (in name order), takes each one's checkpoint,
    /// unparks; on a failure merges back what was taken.
    fn checkpoint_all(
        &self,
        machines: &[(Machine, Consistency)],
        kind: CheckpointKind,
    ) -> Result<Vec<Checkpoint>> {
        let mut order: Vec<usize> = (0..machines.len()).collect();
        order.sort_by(|&a, &b| machines[a].0.name.cmp(&machines[b].0.name));
        let mut parked = Vec::with_capacity(order.len());
        let mut taken = Vec::with_capacity(machines.len());
        let mut failure = None;
        for &i in &order {
            match self.park(&machines[i].0.name) {
                Ok(p) => parked.push(p),
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if failure.is_none() {
            for (m, c) in machines {
                match self.checkpoint_parked(m, kind, *c) {
                    Ok(cp) => taken.push(cp),
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
        }
        // Every disk reopens on the file its machine now names.
        drop(parked);
        match failure {
            None => Ok(taken),
            Some(e) => {
                self.merge_back_all(machines.iter().map(|(m, _)| m).zip(&taken));
                Err(e)
            }
        }
    }

    /// Merges back checkpoints just taken, after a failure: what cannot
    /// be merged is logged and left for the caller's clean-up to find (a
    /// recovery checkpoint without a backup).
    fn merge_back_all<'m>(&self, taken: impl IntoIterator<Item = (&'m Machine, &'m Checkpoint)>) {
        for (m, cp) in taken {
            if let Err(e) = self.delete_checkpoint(&m.name, cp.id) {
                tracing::error!("{}: merging back checkpoint {}: {e}", m.name, cp.id);
            }
        }
    }
}

/// Runs `f` on every machine at once, one thread each; the results in the
/// machines' order.
fn each_at_once<T: Send>(
    machines: &[&Machine],
    f: impl Fn(&Machine) -> Result<T> + Sync,
) -> Vec<Result<T>> {
    match machines {
        [] => vec![],
        [m] => vec![f(m)],
        _ => std::thread::scope(|s| {
            let f = &f;
            let handles: Vec<_> = machines.iter().map(|m| s.spawn(move || f(m))).collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
                .collect()
        }),
    }
}
