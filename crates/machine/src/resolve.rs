//! What a disk argument names, and the rule that keeps checkpoints
//! frozen: a file a checkpoint froze is never opened for writing, by the
//! command line, the daemon or anything else built on the store.

use crate::error::{MachineError, Result};
use crate::store::Store;
use std::path::{Path, PathBuf};
use vdisk::Disk;

/// A disk as a user names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `MACHINE/DISK`, or the file a machine disk is written to now.
    Machine { machine: String, disk: String },
    /// Any other disk file.
    File(PathBuf),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Machine { machine, disk } => write!(f, "{machine}/{disk}"),
            Target::File(p) => write!(f, "{}", p.display()),
        }
    }
}

impl Store {
    /// Resolves a disk argument: `MACHINE/DISK` when no such file exists
    /// and the machine does, the machine disk whose current file `arg` is,
    /// else the file itself.
    pub fn resolve(&self, arg: &Path) -> Result<Target> {
        let text = arg.to_string_lossy();
        // A path that cannot be looked up (`vm1` a file, so `vm1/disk0`
        // is ENOTDIR) is no file: it may still name a machine disk.
        if !self.fs().exists(arg).unwrap_or(false) {
            if let Some((m, d)) = text.split_once('/') {
                if self.exists(m)? {
                    return Ok(Target::Machine {
                        machine: m.into(),
                        disk: d.into(),
                    });
                }
            }
        }
        let abs = vhdx::paths::absolute(arg);
        // Routing only: a machine file that does not load is reported and
        // skipped (writes still check every machine, failing closed).
        let (ms, bad) = self.list_each()?;
        for e in bad {
            tracing::warn!("skipping a machine: {e}");
        }
        for m in ms {
            if let Some(d) = m.active_disk(&abs) {
                return Ok(Target::Machine {
                    machine: m.name.clone(),
                    disk: d.name.clone(),
                });
            }
        }
        Ok(Target::File(arg.to_path_buf()))
    }

    /// Refuses a file that a checkpoint of any machine froze.
    pub fn check_not_frozen(&self, path: &Path) -> Result<()> {
        let abs = vhdx::paths::absolute(path);
        for m in self.list()? {
            if let Some(d) = m.frozen_disk(&abs) {
                return Err(MachineError::Frozen {
                    path: path.to_path_buf(),
                    machine: m.name.clone(),
                    disk: d.name.clone(),
                    active: d.active.clone(),
                });
            }
        }
        Ok(())
    }

    /// Opens a resolved disk: a machine disk where it is written now, with
    /// its tracking; a file as it is, refused for writing if frozen.
    pub fn open_target(&self, t: &Target, writable: bool) -> Result<Disk> {
        match t {
            Target::Machine { machine, disk } => {
                self.open_disk(&self.load(machine)?, disk, writable)
            }
            Target::File(p) => {
                if writable {
                    self.check_not_frozen(p)?;
                }
                Ok(Disk::open(self.fs().clone(), p, writable)?)
            }
        }
    }
}
