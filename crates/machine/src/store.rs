//! The machine store of a state directory: machine files under
//! `<home>/machines/<name>.json`, each replaced atomically and durably.

use crate::error::{MachineError, Result};
use crate::model::{Machine, MachineDisk};
use crate::pool::Pool;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use storage::{Fs, LocalFs};
use vdisk::Disk;

/// The machines of one state directory and the disks held open for them.
/// Clones share the pool: a disk held by one clone is the disk every
/// clone's operations park and use.
#[derive(Clone)]
pub struct Store {
    fs: Arc<dyn Fs>,
    home: PathBuf,
    pool: Arc<Pool>,
}

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Machine and disk names: letters, digits, '-', '_' and '.', not first.
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        && !s.starts_with('.')
}

impl Store {
    pub fn new(fs: Arc<dyn Fs>, home: &Path) -> Self {
        Self {
            fs,
            home: home.to_path_buf(),
            pool: Arc::new(Pool::default()),
        }
    }

    /// The store of a state directory on the local file system.
    pub fn local(home: &Path) -> Self {
        Self::new(Arc::new(LocalFs), home)
    }

    pub fn fs(&self) -> &Arc<dyn Fs> {
        &self.fs
    }

    /// The state directory.
    pub fn home(&self) -> &Path {
        &self.home
    }

    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    fn machines_dir(&self) -> PathBuf {
        self.home.join("machines")
    }

    fn machine_path(&self, name: &str) -> PathBuf {
        self.machines_dir().join(format!("{name}.json"))
    }

    pub(crate) fn io(
        &self,
        path: &Path,
        op: &'static str,
    ) -> impl FnOnce(std::io::Error) -> MachineError {
        let path = path.to_path_buf();
        move |source| MachineError::Io { path, op, source }
    }

    /// Whether a file exists (an error when that cannot be told).
    pub(crate) fn exists_file(&self, p: &Path) -> Result<bool> {
        self.fs.exists(p).map_err(self.io(p, "looking up"))
    }

    /// Whether a machine file exists (an error when that cannot be told).
    pub fn exists(&self, name: &str) -> Result<bool> {
        if !valid_name(name) {
            return Ok(false);
        }
        self.exists_file(&self.machine_path(name))
    }

    pub fn load(&self, name: &str) -> Result<Machine> {
        if !self.exists(name)? {
            return Err(MachineError::NoMachine { name: name.into() });
        }
        let p = self.machine_path(name);
        let b = self.fs.read_file(&p).map_err(self.io(&p, "reading"))?;
        serde_json::from_slice(&b).map_err(|e| MachineError::Corrupt {
            path: p,
            reason: e.to_string(),
        })
    }

    /// Saves atomically and durably (temporary file, flush, rename,
    /// directory sync).
    pub(crate) fn save(&self, m: &Machine) -> Result<()> {
        let dir = self.machines_dir();
        self.fs
            .create_dir_all(&dir)
            .map_err(self.io(&dir, "creating"))?;
        let p = self.machine_path(&m.name);
        let b = serde_json::to_vec_pretty(m).expect("machine serializes");
        self.fs
            .write_file_atomic(&p, &b)
            .map_err(self.io(&p, "writing"))
    }

    pub fn list(&self) -> Result<Vec<Machine>> {
        let (ms, mut bad) = self.list_each()?;
        match bad.is_empty() {
            true => Ok(ms),
            false => Err(bad.remove(0)),
        }
    }

    /// Every machine that loads, and the errors of those that do not.
    /// Files whose names are no machine name (`vm1 copy.json`) are not
    /// machines and are left alone.
    pub fn list_each(&self) -> Result<(Vec<Machine>, Vec<MachineError>)> {
        let dir = self.machines_dir();
        if !self.exists_file(&dir)? {
            return Ok((vec![], vec![]));
        }
        let (mut out, mut bad) = (Vec::new(), Vec::new());
        for p in self.fs.list_dir(&dir).map_err(self.io(&dir, "listing"))? {
            if p.extension().is_some_and(|e| e == "json") {
                if let Some(stem) = p.file_stem().map(|s| s.to_string_lossy()) {
                    if valid_name(&stem) {
                        match self.load(&stem) {
                            Ok(m) => out.push(m),
                            Err(e) => bad.push(e),
                        }
                    }
                }
            }
        }
        Ok((out, bad))
    }

    /// Refuses a bad or taken name for a new machine, or one without disks.
    pub(crate) fn check_new(&self, name: &str, disks: usize) -> Result<()> {
        if !valid_name(name) {
            return Err(MachineError::BadName {
                what: "machine",
                name: name.into(),
            });
        }
        if self.exists(name)? {
            return Err(MachineError::Exists { name: name.into() });
        }
        if disks == 0 {
            return Err(MachineError::NoDisks);
        }
        Ok(())
    }

    /// Forgets a machine; its disk files stay. Refused while it has
    /// checkpoints (each disk must be one file again).
    pub fn remove(&self, name: &str) -> Result<()> {
        let m = self.load(name)?;
        if !m.checkpoints.is_empty() {
            return Err(MachineError::HasCheckpoints { name: name.into() });
        }
        self.pool.forget(name);
        let p = self.machine_path(name);
        self.fs.remove_durable(&p).map_err(self.io(&p, "removing"))
    }

    /// Creates a machine and enables change tracking on its disks. Disks
    /// are `(name, path)`; unnamed ones become `disk0`, `disk1`, ...
    pub fn create(
        &self,
        name: &str,
        disks: &[(Option<String>, PathBuf)],
        freeze: Option<String>,
        thaw: Option<String>,
    ) -> Result<Machine> {
        self.check_new(name, disks.len())?;
        let mut out = Vec::new();
        for (i, (n, p)) in disks.iter().enumerate() {
            let n = n.clone().unwrap_or_else(|| format!("disk{i}"));
            if !valid_name(&n) {
                return Err(MachineError::BadName {
                    what: "disk",
                    name: n,
                });
            }
            if out.iter().any(|d: &MachineDisk| d.name == n) {
                return Err(MachineError::DuplicateDisk { name: n });
            }
            let p = vhdx::paths::absolute(p);
            if !self.exists_file(&p)? {
                return Err(MachineError::DiskFileMissing { path: p });
            }
            // Tracking would be enabled on it, which writes the file.
            self.check_not_frozen(&p)?;
            if let Some(other) = self
                .list()?
                .into_iter()
                .find(|m| m.active_disk(&p).is_some())
            {
                return Err(MachineError::DiskInUse {
                    path: p,
                    machine: other.name,
                });
            }
            out.push(MachineDisk {
                name: n,
                base: p.clone(),
                active: p,
            });
        }
        for d in &out {
            let mut disk = Disk::open(self.fs.clone(), &d.base, true)?;
            disk.enable_tracking(rct::DEFAULT_GRANULARITY)?;
            disk.close()?;
        }
        let m = Machine {
            name: name.into(),
            disks: out,
            freeze,
            thaw,
            checkpoints: vec![],
            reference_points: vec![],
            next_id: 1,
            instant: None,
        };
        self.save(&m)?;
        Ok(m)
    }
}
