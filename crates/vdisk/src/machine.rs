//! Machines: named sets of disks with optional freeze/thaw commands, and
//! their checkpoints and reference points, stored as JSON under the state
//! directory (`<home>/machines/<name>.json`, replaced atomically).

use crate::error::{Result, VdiskError};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use storage::Fs;

/// A machine's disk: the file it was created with (which also names its
/// tracking file) and the file currently written (the newest checkpoint
/// child, or the base itself).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct MachineDisk {
    pub name: String,
    pub base: PathBuf,
    pub active: PathBuf,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum CheckpointKind {
    Standard,
    Recovery,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Consistency {
    Application,
    Crash,
}

/// One disk of a checkpoint: `frozen` holds the point-in-time content
/// (read-only from now on), `child` takes the writes made after it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct CheckpointDisk {
    pub name: String,
    pub frozen: PathBuf,
    pub child: PathBuf,
    /// The RCT ID sealed at the checkpoint, if the disk is tracked.
    pub rct_id: Option<String>,
}

/// Where a checkpoint or reference point was backed up.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BackupLink {
    pub dir: PathBuf,
    pub point: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Checkpoint {
    pub id: u64,
    pub kind: CheckpointKind,
    pub consistency: Consistency,
    /// Seconds since the Unix epoch.
    pub created: u64,
    pub disks: Vec<CheckpointDisk>,
    /// Set once a backup of this checkpoint completed.
    pub backup: Option<BackupLink>,
}

/// What remains of a converted recovery checkpoint: per disk, the RCT ID
/// at the checkpoint, to ask "what changed since".
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReferencePoint {
    pub id: u64,
    pub created: u64,
    pub checkpoint: u64,
    pub disks: Vec<ReferenceDisk>,
    pub backup: Option<BackupLink>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ReferenceDisk {
    pub name: String,
    pub rct_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Machine {
    pub name: String,
    pub disks: Vec<MachineDisk>,
    pub freeze: Option<String>,
    pub thaw: Option<String>,
    #[serde(default)]
    pub checkpoints: Vec<Checkpoint>,
    #[serde(default)]
    pub reference_points: Vec<ReferencePoint>,
    /// Next checkpoint / reference point number.
    pub next_id: u64,
}

impl Machine {
    pub fn disk(&self, name: &str) -> Option<&MachineDisk> {
        self.disks.iter().find(|d| d.name == name)
    }
    pub fn checkpoint(&self, id: u64) -> Option<&Checkpoint> {
        self.checkpoints.iter().find(|c| c.id == id)
    }
    pub fn reference_point(&self, id: u64) -> Option<&ReferencePoint> {
        self.reference_points.iter().find(|r| r.id == id)
    }
}

/// The machine store of a state directory.
#[derive(Clone)]
pub struct Store {
    pub fs: Arc<dyn Fs>,
    pub home: PathBuf,
    /// Who else holds the machines' disks open (the daemon), asked to let
    /// go of them while an operation changes their files.
    pub gate: Option<Arc<dyn DiskGate>>,
}

/// Something that holds machine disks open for writing (the daemon
/// serving them). Operations that switch or merge a machine's files park
/// its disks first: in-flight I/O drains, the disks flush and close, new
/// I/O waits; dropping the returned guard reopens them as the machine
/// file then says.
pub trait DiskGate: Send + Sync {
    fn park(&self, machine: &str) -> Result<Box<dyn std::any::Any>>;
    /// Runs `f` on the machine's disk if the gate holds it open (`None`
    /// if it does not): a second handle must not open a held disk.
    fn with_disk(
        &self,
        machine: &str,
        disk: &str,
        f: &mut dyn FnMut(&mut crate::Disk) -> Result<()>,
    ) -> Option<Result<()>>;
}

pub(crate) fn invalid(why: String) -> VdiskError {
    VdiskError::Vhdx(vhdx::Error::InvalidParameter(why))
}

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Store {
    pub fn new(fs: Arc<dyn Fs>, home: &Path) -> Self {
        Self {
            fs,
            home: home.to_path_buf(),
            gate: None,
        }
    }

    /// Runs `f` on a machine disk: the handle the gate holds, or one
    /// opened (read-only) for the call.
    pub fn with_disk<T>(
        &self,
        m: &Machine,
        disk: &str,
        f: impl FnOnce(&mut crate::Disk) -> Result<T>,
    ) -> Result<T> {
        let mut f = Some(f);
        let mut out = None;
        if let Some(g) = &self.gate {
            let held = g.with_disk(&m.name, disk, &mut |d| {
                out = Some(f.take().expect("called once")(d)?);
                Ok(())
            });
            if let Some(r) = held {
                r?;
                return Ok(out.expect("set on success"));
            }
        }
        let mut d = self.open_disk(m, disk, false)?;
        f.take().expect("not called yet")(&mut d)
    }

    /// Parks the machine's disks held by the gate (if any) until the
    /// returned guard drops.
    pub fn park(&self, machine: &str) -> Result<Option<Box<dyn std::any::Any>>> {
        self.gate.as_ref().map(|g| g.park(machine)).transpose()
    }

    fn machines_dir(&self) -> PathBuf {
        self.home.join("machines")
    }

    fn machine_path(&self, name: &str) -> PathBuf {
        self.machines_dir().join(format!("{name}.json"))
    }

    fn io(&self, path: &Path, op: &'static str) -> impl FnOnce(std::io::Error) -> VdiskError {
        let path = path.display().to_string();
        move |source| VdiskError::Io { path, op, source }
    }

    /// Whether a file exists (an error when that cannot be told).
    pub(crate) fn exists_file(&self, p: &Path) -> Result<bool> {
        self.fs.exists(p).map_err(self.io(p, "looking up"))
    }

    /// Whether a machine file exists (an error when that cannot be told).
    pub fn exists(&self, name: &str) -> Result<bool> {
        let p = self.machine_path(name);
        self.fs.exists(&p).map_err(self.io(&p, "looking up"))
    }

    pub fn load(&self, name: &str) -> Result<Machine> {
        let p = self.machine_path(name);
        if !self.exists(name)? {
            return Err(invalid(format!(
                "no machine named {name:?} (see `refpoint machine list`)"
            )));
        }
        let b = self.fs.read_file(&p).map_err(self.io(&p, "reading"))?;
        serde_json::from_slice(&b)
            .map_err(|e| invalid(format!("{}: not a valid machine file: {e}", p.display())))
    }

    /// Saves atomically and durably (temporary file, flush, rename,
    /// directory sync).
    pub fn save(&self, m: &Machine) -> Result<()> {
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
        let dir = self.machines_dir();
        if !self.fs.exists(&dir).map_err(self.io(&dir, "looking up"))? {
            return Ok(vec![]);
        }
        let mut out = Vec::new();
        for p in self.fs.list_dir(&dir).map_err(self.io(&dir, "listing"))? {
            if p.extension().is_some_and(|e| e == "json") {
                if let Some(stem) = p.file_stem() {
                    out.push(self.load(&stem.to_string_lossy())?);
                }
            }
        }
        Ok(out)
    }

    pub fn remove(&self, name: &str) -> Result<()> {
        let m = self.load(name)?;
        if !m.checkpoints.is_empty() {
            return Err(invalid(format!(
                "machine {name} still has checkpoints; delete them first so every disk is one file again"
            )));
        }
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
        let valid = |s: &str| {
            !s.is_empty()
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
                && !s.starts_with('.')
        };
        if !valid(name) {
            return Err(invalid(format!(
                "machine name {name:?} may use letters, digits, '-', '_' and '.'"
            )));
        }
        if self.exists(name)? {
            return Err(invalid(format!("machine {name} already exists")));
        }
        if disks.is_empty() {
            return Err(invalid("a machine needs at least one --disk".into()));
        }
        let mut out = Vec::new();
        for (i, (n, p)) in disks.iter().enumerate() {
            let n = n.clone().unwrap_or_else(|| format!("disk{i}"));
            if !valid(&n) || out.iter().any(|d: &MachineDisk| d.name == n) {
                return Err(invalid(format!("disk name {n:?} is invalid or used twice")));
            }
            let p = vhdx::paths::absolute(p);
            if !self.fs.exists(&p).map_err(self.io(&p, "looking up"))? {
                return Err(invalid(format!("disk {} does not exist", p.display())));
            }
            out.push(MachineDisk {
                name: n,
                base: p.clone(),
                active: p,
            });
        }
        for d in &out {
            let mut disk = crate::Disk::open(self.fs.clone(), &d.base, true)?;
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
        };
        self.save(&m)?;
        Ok(m)
    }
}
