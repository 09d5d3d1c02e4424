//! Process-wide state: one machine store per state directory (so every
//! handle of a machine shares one pool, and a checkpoint parks them all),
//! and how many handles hold each machine disk (the last to close it
//! flushes and closes the disk).

#![forbid(unsafe_code)]

use crate::error::Result;
use machine::Store;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, OnceLock};
use vdisk::Disk;

type Key = (PathBuf, String, String);

#[derive(Default)]
struct Registry {
    stores: HashMap<PathBuf, Store>,
    holds: HashMap<Key, usize>,
    /// Open frozen views: (place, machine, checkpoint) → handles.
    views: HashMap<(String, String, u64), usize>,
}

fn registry() -> MutexGuard<'static, Registry> {
    static R: OnceLock<Mutex<Registry>> = OnceLock::new();
    // A panic while the map was locked leaves it consistent (every update
    // is one insert or remove), so a poisoned lock is taken as it is.
    R.get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

/// The store of state directory `home`, shared by the whole process.
pub fn store(home: &Path) -> Store {
    registry()
        .stores
        .entry(home.to_path_buf())
        .or_insert_with(|| Store::local(home))
        .clone()
}

/// A machine disk held open in this process's pool for one handle.
pub struct Hold {
    store: Store,
    machine: String,
    disk: String,
}

impl Hold {
    /// Opens the disk into the pool (once per process) and counts the
    /// handle.
    pub fn new(store: &Store, machine: &str, disk: &str) -> Result<Hold> {
        let key = (store.home().to_path_buf(), machine.into(), disk.into());
        let mut r = registry();
        store.hold(machine, disk)?;
        *r.holds.entry(key).or_default() += 1;
        Ok(Hold {
            store: store.clone(),
            machine: machine.into(),
            disk: disk.into(),
        })
    }

    pub fn with<T>(&self, f: impl FnOnce(&mut Disk) -> vdisk::Result<T>) -> Result<T> {
        Ok(self
            .store
            .with_held(&self.machine, &self.disk, |d| Ok(f(d)?))?)
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        let key = (
            self.store.home().to_path_buf(),
            self.machine.clone(),
            self.disk.clone(),
        );
        let last = {
            let mut r = registry();
            match r.holds.get_mut(&key) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                Some(_) => {
                    r.holds.remove(&key);
                    true
                }
                None => false,
            }
        };
        // Outside the registry's lock: closing waits for a checkpoint
        // operation on the disk, which must not stall every other open.
        // A handle opened meanwhile reopens the disk at its first use.
        if last {
            if let Err(e) = self.store.release(&self.machine, &self.disk) {
                tracing::error!("{}/{}: closing the disk: {e}", self.machine, self.disk);
            }
        }
    }
}

/// A checkpoint's frozen view, counted while a handle reads it.
pub struct View {
    key: (String, String, u64),
}

impl View {
    pub fn open(place: &str, machine: &str, checkpoint: u64) -> View {
        let key = (place.to_string(), machine.to_string(), checkpoint);
        *registry().views.entry(key.clone()).or_default() += 1;
        View { key }
    }
}

impl Drop for View {
    fn drop(&mut self) {
        let mut r = registry();
        if let Some(n) = r.views.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                r.views.remove(&self.key);
            }
        }
    }
}

/// How many handles of this process read that checkpoint's frozen view.
pub fn views_open(place: &str, machine: &str, checkpoint: u64) -> usize {
    registry()
        .views
        .get(&(place.to_string(), machine.to_string(), checkpoint))
        .copied()
        .unwrap_or(0)
}
