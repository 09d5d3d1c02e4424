//! The pool of open disks: the disks a long-running user of a [`Store`]
//! (the daemon) holds open for writing, one [`Slot`] per machine disk.
//!
//! ```text
//! hold(m, d)  ─► slot (opened once; a second writable handle would be
//!                refused by the file's advisory lock anyway)
//! park(m)     ─► take every slot of m exclusively (in-flight I/O drains),
//!                flush and close the disks; new I/O waits on the slots
//!   … the operation switches or merges m's files …
//! drop Parked ─► reopen each disk on the file the machine now names;
//!                disks the machine no longer has leave the pool
//! ```
//!
//! Operations of one machine are serialized by its [`MachineLock`]; a park
//! is never nested (operations park once, at their top), so no re-entry
//! bookkeeping is needed. A store that holds nothing (the command line)
//! parks nothing and opens a handle per call.

use crate::error::{MachineError, Result};
use crate::model::Machine;
use crate::store::Store;
use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use vdisk::Disk;

/// One held disk: `None` while it could not be (re)opened. Reads that
/// meet no queued write share it; everything else takes it exclusively.
pub type Slot = Arc<RwLock<Option<Disk>>>;
type SlotGuard = parking_lot::ArcRwLockWriteGuard<parking_lot::RawRwLock, Option<Disk>>;

/// Serializes the operations that change one machine's files.
pub type MachineLock = parking_lot::ArcMutexGuard<parking_lot::RawMutex, ()>;

#[derive(Default)]
pub(crate) struct Pool {
    slots: Mutex<BTreeMap<(String, String), Slot>>,
    locks: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl Pool {
    fn machine_slots(&self, machine: &str) -> Vec<(String, Slot)> {
        self.slots
            .lock()
            .iter()
            .filter(|((m, _), _)| m == machine)
            .map(|((_, d), s)| (d.clone(), s.clone()))
            .collect()
    }

    fn held(&self, machine: &str, disk: &str) -> Option<Slot> {
        self.slots
            .lock()
            .get(&(machine.to_string(), disk.to_string()))
            .cloned()
    }

    /// Drops a removed machine's slots (closing their disks).
    pub(crate) fn forget(&self, machine: &str) {
        let gone: Vec<Slot> = {
            let mut slots = self.slots.lock();
            let keys: Vec<_> = slots
                .keys()
                .filter(|(m, _)| m == machine)
                .cloned()
                .collect();
            keys.iter().filter_map(|k| slots.remove(k)).collect()
        };
        for s in gone {
            if let Some(d) = s.write().take() {
                if let Err(e) = d.close() {
                    tracing::error!("{machine}: closing a disk of a removed machine: {e}");
                }
            }
        }
    }
}

/// A machine's disks held closed; reopened when this drops.
pub struct Parked {
    store: Store,
    machine: String,
    guards: Vec<(String, SlotGuard)>,
}

impl Drop for Parked {
    fn drop(&mut self) {
        let st = &self.store;
        match st.load(&self.machine) {
            Ok(m) => {
                for (name, g) in &mut self.guards {
                    if m.disk(name).is_none() {
                        continue;
                    }
                    match st.open_disk(&m, name, true) {
                        Ok(d) => **g = Some(d),
                        Err(e) => tracing::error!(
                            "{}/{name}: reopening after a checkpoint operation failed: {e}",
                            self.machine
                        ),
                    }
                }
            }
            Err(e) => tracing::error!("{}: reloading the machine failed: {e}", self.machine),
        }
        let mut slots = st.pool().slots.lock();
        for (name, g) in &self.guards {
            if g.is_none() {
                slots.remove(&(self.machine.clone(), name.clone()));
            }
        }
    }
}

impl Store {
    /// Holds a machine disk open for writing in the pool (opened on first
    /// use) and returns its slot.
    pub fn hold(&self, machine: &str, disk: &str) -> Result<Slot> {
        let key = (machine.to_string(), disk.to_string());
        // Held across the open: one process opens a disk file once.
        let mut slots = self.pool().slots.lock();
        if let Some(s) = slots.get(&key) {
            return Ok(s.clone());
        }
        let m = self.load(machine)?;
        let d = self.open_disk(&m, disk, true)?;
        let slot: Slot = Arc::new(RwLock::new(Some(d)));
        slots.insert(key, slot.clone());
        Ok(slot)
    }

    /// Holds every disk of every machine; returns what failed (a disk that
    /// fails is retried at its next use).
    pub fn hold_all(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match self.list() {
            Ok(ms) => {
                for m in ms {
                    for d in &m.disks {
                        if let Err(e) = self.hold(&m.name, &d.name) {
                            problems.push(format!("{}/{}: {e}", m.name, d.name));
                        }
                    }
                }
            }
            Err(e) => problems.push(e.to_string()),
        }
        problems
    }

    /// Stops holding one disk: flushes and closes it (nothing if not held).
    /// Waits for the request in flight on it.
    pub fn release(&self, machine: &str, disk: &str) -> Result<()> {
        let slot = self
            .pool()
            .slots
            .lock()
            .remove(&(machine.to_string(), disk.to_string()));
        match slot.and_then(|s| s.write().take()) {
            Some(d) => Ok(d.close()?),
            None => Ok(()),
        }
    }

    /// Flushes and closes every held disk; returns what failed.
    pub fn release_all(&self) -> Vec<String> {
        let slots: Vec<_> = std::mem::take(&mut *self.pool().slots.lock())
            .into_iter()
            .collect();
        let mut problems = Vec::new();
        for ((m, d), slot) in slots {
            if let Some(disk) = slot.write().take() {
                if let Err(e) = disk.close() {
                    problems.push(format!("{m}/{d}: {e}"));
                }
            }
        }
        problems
    }

    /// How many held disks are open.
    pub fn held_count(&self) -> usize {
        // Never wait on a slot while holding the map: a parked machine's
        // guard takes the map while holding its slots.
        let slots: Vec<Slot> = self.pool().slots.lock().values().cloned().collect();
        slots.iter().filter(|s| s.read().is_some()).count()
    }

    /// Takes the lock that serializes operations changing `machine`'s
    /// files, among all users of this store.
    pub fn lock_machine(&self, machine: &str) -> MachineLock {
        let m = self
            .pool()
            .locks
            .lock()
            .entry(machine.to_string())
            .or_default()
            .clone();
        m.lock_arc()
    }

    /// Parks the machine's held disks until the guard drops (see the
    /// module doc). Nothing held: nothing to park.
    pub fn park(&self, machine: &str) -> Result<Parked> {
        let mut guards = Vec::new();
        let mut failure = None;
        for (name, slot) in self.pool().machine_slots(machine) {
            // Waits for the request in flight on this disk; new ones wait.
            let mut g = slot.write_arc();
            if let Some(d) = g.take() {
                if let Err(e) = d.close() {
                    failure.get_or_insert(e);
                }
            }
            guards.push((name, g));
        }
        let parked = Parked {
            store: self.clone(),
            machine: machine.to_string(),
            guards,
        };
        match failure {
            Some(e) => Err(e.into()),
            None => Ok(parked),
        }
    }

    /// Runs `f` on a machine disk: the handle the pool holds, or one opened
    /// read-only for the call. Not while the machine is parked by the
    /// caller (its slots are taken).
    pub fn with_disk<T>(
        &self,
        m: &Machine,
        disk: &str,
        f: impl FnOnce(&mut Disk) -> Result<T>,
    ) -> Result<T> {
        if m.disk(disk).is_none() {
            return Err(MachineError::NoDisk {
                machine: m.name.clone(),
                disk: disk.into(),
            });
        }
        if let Some(slot) = self.pool().held(&m.name, disk) {
            let mut g = slot.write();
            if let Some(d) = g.as_mut() {
                return f(d);
            }
        }
        let mut d = self.open_disk(m, disk, false)?;
        f(&mut d)
    }

    /// Runs `f` on a disk the pool holds (opening it into the pool first);
    /// [`MachineError::NotOpen`] if it could not be reopened.
    pub fn with_held<T>(
        &self,
        machine: &str,
        disk: &str,
        f: impl FnOnce(&mut Disk) -> Result<T>,
    ) -> Result<T> {
        let slot = self.hold(machine, disk)?;
        let mut g = slot.write();
        match g.as_mut() {
            Some(d) => f(d),
            None => Err(MachineError::NotOpen {
                machine: machine.into(),
                disk: disk.into(),
            }),
        }
    }
}
