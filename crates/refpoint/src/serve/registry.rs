//! The disks the daemon holds open: one slot per machine disk, opened on
//! first use. Implements [`DiskGate`] so machine operations (checkpoints,
//! merges, backups) can park a machine's disks while they switch files.

use parking_lot::{Mutex, RwLock};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::thread::ThreadId;
use vdisk::{Disk, DiskGate, Store, VdiskError};

/// One live disk: `None` while it could not be (re)opened. Reads that
/// meet no queued write share it; everything else takes it exclusively.
pub type Slot = Arc<RwLock<Option<Disk>>>;
type SlotGuard = parking_lot::ArcRwLockWriteGuard<parking_lot::RawRwLock, Option<Disk>>;

pub struct Registry {
    /// The store without a gate: the daemon itself works on the files.
    pub store: Store,
    slots: Mutex<BTreeMap<(String, String), Slot>>,
    /// Machines parked, and by which thread (a nested park is a no-op).
    parked: Mutex<HashMap<String, ThreadId>>,
    /// Serializes operations that change a machine's files.
    machine_ops: Mutex<HashMap<String, Arc<Mutex<()>>>>,
}

impl Registry {
    pub fn new(store: Store) -> Arc<Self> {
        Arc::new(Registry {
            store,
            slots: Mutex::new(BTreeMap::new()),
            parked: Mutex::new(HashMap::new()),
            machine_ops: Mutex::new(HashMap::new()),
        })
    }

    /// A store whose operations park this registry's disks.
    pub fn gated_store(self: &Arc<Self>) -> Store {
        let mut s = self.store.clone();
        s.gate = Some(Arc::new(Gate(self.clone())));
        s
    }

    /// A lock that serializes file-changing operations on one machine.
    pub fn machine_lock(&self, machine: &str) -> Arc<Mutex<()>> {
        self.machine_ops
            .lock()
            .entry(machine.to_string())
            .or_default()
            .clone()
    }

    /// The slot of a machine disk, opening the disk on first use.
    pub fn slot(&self, machine: &str, disk: &str) -> Result<Slot, VdiskError> {
        let key = (machine.to_string(), disk.to_string());
        // Held across the open: one process opens a disk file once (the
        // advisory lock would refuse a second writable handle).
        let mut slots = self.slots.lock();
        if let Some(s) = slots.get(&key) {
            return Ok(s.clone());
        }
        let m = self.store.load(machine)?;
        let d = self.store.open_disk(&m, disk, true)?;
        let slot: Slot = Arc::new(RwLock::new(Some(d)));
        slots.insert(key, slot.clone());
        Ok(slot)
    }

    /// Opens every disk of every machine (a disk that fails is reported
    /// and skipped; it is retried on its next use).
    pub fn open_all(&self) -> Vec<String> {
        let mut problems = Vec::new();
        match self.store.list() {
            Ok(ms) => {
                for m in ms {
                    for d in &m.disks {
                        if let Err(e) = self.slot(&m.name, &d.name) {
                            problems.push(format!("{}/{}: {e}", m.name, d.name));
                        }
                    }
                }
            }
            Err(e) => problems.push(e.to_string()),
        }
        problems
    }

    /// Flushes and closes every disk (graceful shutdown).
    pub fn close_all(&self) -> Vec<String> {
        let slots: Vec<_> = std::mem::take(&mut *self.slots.lock())
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

    /// How many disks are open.
    pub fn open_count(&self) -> usize {
        // Never wait on a slot while holding the map: a parked machine's
        // guard takes the map while holding its slots.
        let slots: Vec<Slot> = self.slots.lock().values().cloned().collect();
        slots.iter().filter(|s| s.read().is_some()).count()
    }

    fn machine_slots(&self, machine: &str) -> Vec<(String, Slot)> {
        self.slots
            .lock()
            .iter()
            .filter(|((m, _), _)| m == machine)
            .map(|((_, d), s)| (d.clone(), s.clone()))
            .collect()
    }

    fn parked_here(&self, machine: &str) -> bool {
        self.parked.lock().get(machine) == Some(&std::thread::current().id())
    }
}

struct Gate(Arc<Registry>);

/// Holds a machine's slots empty; reopens the disks when dropped.
struct Parked {
    registry: Arc<Registry>,
    machine: String,
    guards: Vec<(String, SlotGuard)>,
}

impl Drop for Parked {
    fn drop(&mut self) {
        let r = &self.registry;
        match r.store.load(&self.machine) {
            Ok(m) => {
                for (name, g) in &mut self.guards {
                    if m.disk(name).is_none() {
                        continue;
                    }
                    match r.store.open_disk(&m, name, true) {
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
        // Disks the machine no longer has leave the registry.
        let mut slots = r.slots.lock();
        for (name, g) in &self.guards {
            if g.is_none() {
                slots.remove(&(self.machine.clone(), name.clone()));
            }
        }
        drop(slots);
        r.parked.lock().remove(&self.machine);
    }
}

impl DiskGate for Gate {
    fn park(&self, machine: &str) -> vdisk::Result<Box<dyn std::any::Any>> {
        let r = &self.0;
        if r.parked_here(machine) {
            return Ok(Box::new(()));
        }
        let mut guards = Vec::new();
        let mut failure = None;
        for (name, slot) in r.machine_slots(machine) {
            // Waits for the request in flight on this disk; new ones wait.
            let mut g = slot.write_arc();
            if let Some(d) = g.take() {
                if let Err(e) = d.close() {
                    failure.get_or_insert(e);
                }
            }
            guards.push((name, g));
        }
        r.parked
            .lock()
            .insert(machine.to_string(), std::thread::current().id());
        let parked = Parked {
            registry: r.clone(),
            machine: machine.to_string(),
            guards,
        };
        match failure {
            Some(e) => Err(e),
            None => Ok(Box::new(parked)),
        }
    }

    fn with_disk(
        &self,
        machine: &str,
        disk: &str,
        f: &mut dyn FnMut(&mut Disk) -> vdisk::Result<()>,
    ) -> Option<vdisk::Result<()>> {
        let r = &self.0;
        if r.parked_here(machine) {
            return None;
        }
        let slot = r.slot(machine, disk).ok()?;
        let mut g = slot.write();
        g.as_mut().map(f)
    }
}
