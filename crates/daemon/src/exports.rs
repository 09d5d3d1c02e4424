//! The export catalog: `<machine>/<disk>` (live, read-write, tracked),
//! `<machine>/<disk>@checkpoint-<id>` (a checkpoint's frozen content) and
//! `<machine>/<disk>@backup-<point>` (a point of a repository the machine
//! was backed up to), both read-only.

use crate::device::{FrozenDevice, LiveDevice};
use machine::{Machine, Store};
use nbd::{BlockDevice, ExportInfo, Exports};
use std::path::PathBuf;
use std::sync::Arc;
use vhdx::Chain;

pub struct DaemonExports {
    pub store: Store,
}

/// What an export name refers to.
#[derive(Debug, PartialEq, Eq)]
pub enum ExportName {
    Live {
        machine: String,
        disk: String,
    },
    Checkpoint {
        machine: String,
        disk: String,
        id: u64,
    },
    Backup {
        machine: String,
        disk: String,
        point: u32,
    },
}

impl ExportName {
    pub fn parse(name: &str) -> Option<ExportName> {
        let (path, at) = match name.split_once('@') {
            Some((p, a)) => (p, Some(a)),
            None => (name, None),
        };
        let (machine, disk) = path.split_once('/')?;
        if machine.is_empty() || disk.is_empty() || disk.contains('/') {
            return None;
        }
        let (machine, disk) = (machine.to_string(), disk.to_string());
        Some(match at {
            None => ExportName::Live { machine, disk },
            Some(a) => {
                if let Some(n) = a.strip_prefix("checkpoint-") {
                    ExportName::Checkpoint {
                        machine,
                        disk,
                        id: n.parse().ok()?,
                    }
                } else if let Some(n) = a.strip_prefix("backup-") {
                    ExportName::Backup {
                        machine,
                        disk,
                        point: n.parse().ok()?,
                    }
                } else {
                    return None;
                }
            }
        })
    }
}

/// Repositories a machine was backed up to, newest link first.
fn backup_dirs(m: &Machine) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    let links = m
        .checkpoints
        .iter()
        .rev()
        .filter_map(|c| c.backup.as_ref())
        .chain(
            m.reference_points
                .iter()
                .rev()
                .filter_map(|r| r.backup.as_ref()),
        );
    for l in links {
        if !dirs.contains(&l.dir) {
            dirs.push(l.dir.clone());
        }
    }
    dirs
}

impl DaemonExports {
    fn machine(&self, name: &str) -> Result<Machine, String> {
        self.store.load(name).map_err(|e| e.to_string())
    }

    fn backup_file(&self, m: &Machine, disk: &str, point: u32) -> Result<PathBuf, String> {
        let fs = &**self.store.fs();
        for dir in backup_dirs(m) {
            if let Ok(f) = backup::repo::Repo::new(fs, &dir).disk_file(point, disk) {
                return Ok(f);
            }
        }
        Err(format!(
            "no repository of machine {} has point {point} with disk {disk}",
            m.name
        ))
    }
}

impl Exports for DaemonExports {
    fn list(&self) -> Vec<ExportInfo> {
        let mut out = Vec::new();
        let fs = &**self.store.fs();
        for m in self.store.list().unwrap_or_default() {
            for d in &m.disks {
                out.push(ExportInfo {
                    name: format!("{}/{}", m.name, d.name),
                    description: "live disk (read-write, tracked)".into(),
                });
                for c in &m.checkpoints {
                    out.push(ExportInfo {
                        name: format!("{}/{}@checkpoint-{}", m.name, d.name, c.id),
                        description: format!("{:?} checkpoint {} (read-only)", c.kind, c.id)
                            .to_lowercase(),
                    });
                }
            }
            let mut seen = std::collections::BTreeSet::new();
            for dir in backup_dirs(&m) {
                let repo = backup::repo::Repo::new(fs, &dir);
                for p in repo.points().unwrap_or_default() {
                    for d in &p.disks {
                        if seen.insert((p.point, d.name.clone())) {
                            out.push(ExportInfo {
                                name: format!("{}/{}@backup-{}", m.name, d.name, p.point),
                                description: format!(
                                    "backup point {} in {} (read-only)",
                                    p.point,
                                    dir.display()
                                ),
                            });
                        }
                    }
                }
            }
        }
        out
    }

    fn open(&self, name: &str) -> Result<Arc<dyn BlockDevice>, String> {
        let parsed = ExportName::parse(name)
            .ok_or("export names are <machine>/<disk>, <machine>/<disk>@checkpoint-<id> or <machine>/<disk>@backup-<point>")?;
        let fs = &**self.store.fs();
        match parsed {
            ExportName::Live { machine, disk } => {
                let slot = self
                    .store
                    .hold(&machine, &disk)
                    .map_err(|e| e.to_string())?;
                Ok(Arc::new(LiveDevice::new(name.to_string(), slot)?))
            }
            ExportName::Checkpoint { machine, disk, id } => {
                let m = self.machine(&machine)?;
                let cp = m
                    .checkpoint(id)
                    .ok_or_else(|| format!("machine {machine} has no checkpoint {id}"))?;
                let cd = cp
                    .disks
                    .iter()
                    .find(|d| d.name == disk)
                    .ok_or_else(|| format!("checkpoint {id} has no disk {disk}"))?;
                let chain = Chain::open(fs, &cd.frozen, false).map_err(|e| e.to_string())?;
                let tracking = cd
                    .rct_id
                    .as_ref()
                    .and_then(|s| s.parse().ok())
                    .map(|until| (self.store.clone(), machine.clone(), disk.clone(), until));
                let live = m.disk(&disk).map(|d| d.active.clone());
                let read_only_reason = machine::MachineError::Frozen {
                    path: cd.frozen.clone(),
                    machine: machine.clone(),
                    disk: disk.clone(),
                    active: live.unwrap_or_default(),
                }
                .to_string();
                Ok(Arc::new(FrozenDevice {
                    export: name.to_string(),
                    chain,
                    read_only_reason,
                    tracking,
                }))
            }
            ExportName::Backup {
                machine,
                disk,
                point,
            } => {
                let m = self.machine(&machine)?;
                let file = self.backup_file(&m, &disk, point)?;
                let chain = Chain::open(fs, &file, false).map_err(|e| e.to_string())?;
                Ok(Arc::new(FrozenDevice {
                    export: name.to_string(),
                    chain,
                    read_only_reason: format!(
                        "{name} is a backup point, read-only; restore it to write to it"
                    ),
                    tracking: None,
                }))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(
            ExportName::parse("vm1/disk0"),
            Some(ExportName::Live {
                machine: "vm1".into(),
                disk: "disk0".into()
            })
        );
        assert_eq!(
            ExportName::parse("vm1/disk0@checkpoint-3"),
            Some(ExportName::Checkpoint {
                machine: "vm1".into(),
                disk: "disk0".into(),
                id: 3
            })
        );
        assert_eq!(
            ExportName::parse("vm1/d@backup-12"),
            Some(ExportName::Backup {
                machine: "vm1".into(),
                disk: "d".into(),
                point: 12
            })
        );
        for bad in [
            "vm1",
            "/d",
            "vm1/",
            "a/b/c",
            "a/b@x",
            "a/b@checkpoint-x",
            "",
        ] {
            assert_eq!(ExportName::parse(bad), None, "{bad}");
        }
    }
}
