//! Host repositories: backups of several machines taken as one consistent
//! cut, all or nothing (the Hyper-V VSS writer's model).
//!
//! ```text
//! <dir>/host.json                  {"format": "refpoint-host-1"}: this is a host repository
//! <dir>/host-points/0001.json      host point 1: which point of which machine
//! <dir>/host-points/pending.json   the journal of a run in progress (see `journal`)
//! <dir>/machines/vm1/0001/ …       an ordinary repository per machine (see `Repo`)
//! <dir>/machines/vm2/0001/ …
//! ```
//!
//! A host point exists once its record does: the record is written
//! atomically and durably after every machine's point is complete, and it
//! is the commit point of a host backup. A machine point that no record
//! names belongs to a run that did not commit and is removed by the next
//! run. A host point names each machine once, and through it each of the
//! machine's disk files once (a disk file belongs to one machine).
//!
//! A plain repository (points `0001/`, `0002/` at its top) and a host
//! repository never mix: a single-machine backup into a host repository,
//! or a host backup into a plain one, is refused.

pub(crate) mod journal;
mod read;
mod run;

pub use read::list;
pub(crate) use read::{consolidate, verify};
pub use run::{backup, HostOptions, HostProgress, HostSummary};

use crate::error::{BackupError, Result};
use crate::repo::Repo;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use storage::Fs;

/// The `format` of a host repository's marker file.
pub const HOST_FORMAT: &str = "refpoint-host-1";
/// The `format` of a host point record.
pub const HOST_POINT_FORMAT: &str = "refpoint-host-point-1";
/// The marker file that makes a directory a host repository.
pub const MARKER_NAME: &str = "host.json";
const POINTS_DIR: &str = "host-points";
const MACHINES_DIR: &str = "machines";

/// The record of one host point (`host-points/NNNN.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostPoint {
    pub format: String,
    pub host_point: u32,
    /// Seconds since the Unix epoch: when the checkpoints were taken.
    pub created: u64,
    /// One entry per machine, sorted by name.
    pub machines: Vec<HostPointMachine>,
}

/// One machine of a host point.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct HostPointMachine {
    pub machine: String,
    /// The point in the machine's repository (`machines/<machine>/NNNN`).
    pub point: u32,
    /// The recovery checkpoint the point was exported from.
    pub checkpoint: u64,
}

impl HostPoint {
    /// The entry of `machine`, if the host point has it.
    pub fn machine(&self, machine: &str) -> Option<&HostPointMachine> {
        self.machines.iter().find(|m| m.machine == machine)
    }

    /// The names of its machines.
    pub fn machine_names(&self) -> Vec<String> {
        self.machines.iter().map(|m| m.machine.clone()).collect()
    }
}

#[derive(Serialize, Deserialize)]
struct Marker {
    format: String,
}

/// A host repository on a file system.
pub struct HostRepo<'a> {
    pub fs: &'a dyn Fs,
    pub dir: PathBuf,
}

/// Whether `dir` is a host repository (its marker file exists).
pub fn is_host_repo(fs: &dyn Fs, dir: &Path) -> Result<bool> {
    HostRepo::new(fs, dir).exists(&dir.join(MARKER_NAME))
}

impl<'a> HostRepo<'a> {
    pub fn new(fs: &'a dyn Fs, dir: &Path) -> Self {
        let Repo { fs, dir } = Repo::new(fs, dir);
        Self { fs, dir }
    }

    pub(crate) fn io(
        &self,
        path: &Path,
        op: &'static str,
    ) -> impl FnOnce(std::io::Error) -> BackupError {
        crate::repo::io_error(path, op)
    }

    pub(crate) fn exists(&self, path: &Path) -> Result<bool> {
        self.fs.exists(path).map_err(self.io(path, "looking up"))
    }

    /// The entries of directory `d`; none if it does not exist.
    fn entries(&self, d: &Path) -> Result<Vec<PathBuf>> {
        if !self.exists(d)? {
            return Ok(vec![]);
        }
        self.fs.list_dir(d).map_err(self.io(d, "listing"))
    }

    pub(crate) fn points_dir(&self) -> PathBuf {
        self.dir.join(POINTS_DIR)
    }

    fn record_path(&self, host_point: u32) -> PathBuf {
        self.points_dir().join(format!("{host_point:04}.json"))
    }

    /// The directory of `machine`'s repository.
    pub fn machine_dir(&self, machine: &str) -> PathBuf {
        self.dir.join(MACHINES_DIR).join(machine)
    }

    /// `machine`'s repository.
    pub fn machine_repo(&self, machine: &str) -> Repo<'a> {
        Repo::new(self.fs, &self.machine_dir(machine))
    }

    /// The machines that have a repository here, sorted.
    pub fn machines(&self) -> Result<Vec<String>> {
        let mut out: Vec<String> = self
            .entries(&self.dir.join(MACHINES_DIR))?
            .iter()
            .filter_map(|p| Some(p.file_name()?.to_str()?.to_string()))
            .filter(|n| machine::valid_name(n))
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    /// Makes `dir` a host repository (durably), unless it is one already;
    /// refuses a plain repository.
    pub fn create(&self) -> Result<()> {
        let marker = self.dir.join(MARKER_NAME);
        let points = self.points_dir();
        if self.exists(&marker)? {
            return self
                .fs
                .create_dir_all(&points)
                .map_err(self.io(&points, "creating"));
        }
        if Repo::new(self.fs, &self.dir).has_point_dirs()? {
            return Err(BackupError::NotHostRepo {
                dir: self.dir.clone(),
            });
        }
        self.fs
            .create_dir_all(&points)
            .map_err(self.io(&points, "creating"))?;
        let b = serde_json::to_vec_pretty(&Marker {
            format: HOST_FORMAT.into(),
        })
        .expect("marker serializes");
        self.fs
            .write_file_atomic(&marker, &b)
            .map_err(self.io(&marker, "writing"))
    }

    /// The numbers of the host point records, ascending.
    fn record_numbers(&self) -> Result<Vec<u32>> {
        let mut out: Vec<u32> = self
            .entries(&self.points_dir())?
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .filter_map(|p| p.file_stem()?.to_str()?.parse().ok())
            .collect();
        out.sort();
        Ok(out)
    }

    /// Every host point, oldest first.
    pub fn host_points(&self) -> Result<Vec<HostPoint>> {
        self.record_numbers()?
            .into_iter()
            .map(|n| self.host_point(n))
            .collect()
    }

    /// The record of host point `n`.
    pub fn host_point(&self, n: u32) -> Result<HostPoint> {
        let p = self.record_path(n);
        if !self.exists(&p)? {
            return Err(BackupError::NoHostPoint {
                dir: self.dir.clone(),
                host_point: n,
            });
        }
        let hp: HostPoint = self.read_record(&p, HOST_POINT_FORMAT, |hp: &HostPoint| {
            (
                &hp.format,
                hp.machines.iter().map(|m| m.machine.as_str()).collect(),
            )
        })?;
        if hp.host_point != n {
            return Err(BackupError::BadHostPoint {
                path: p,
                reason: format!("it says it is host point {}", hp.host_point),
            });
        }
        Ok(hp)
    }

    /// Reads one of the repository's JSON records: its format (the first of
    /// what `parts` gives) must be `format`, and the machine names (the
    /// rest) plain, for they become directories.
    pub(crate) fn read_record<T: serde::de::DeserializeOwned>(
        &self,
        p: &Path,
        format: &str,
        parts: impl Fn(&T) -> (&str, Vec<&str>),
    ) -> Result<T> {
        let b = self.fs.read_file(p).map_err(self.io(p, "reading"))?;
        let bad = |reason: String| BackupError::BadHostPoint {
            path: p.to_path_buf(),
            reason,
        };
        let v: T = serde_json::from_slice(&b).map_err(|e| bad(e.to_string()))?;
        let (have, names) = parts(&v);
        if have != format {
            return Err(bad(format!("unknown format {have:?}")));
        }
        if let Some(n) = names.iter().find(|n| !machine::valid_name(n)) {
            return Err(bad(format!("{n:?} is not a machine name")));
        }
        Ok(v)
    }

    /// Writes a host point record atomically and durably: the host point
    /// exists once this returns, and stays so after a power cut.
    pub fn write_host_point(&self, hp: &HostPoint) -> Result<()> {
        let p = self.record_path(hp.host_point);
        let b = serde_json::to_vec_pretty(hp).expect("host point serializes");
        self.fs
            .write_file_atomic(&p, &b)
            .map_err(self.io(&p, "writing"))
    }

    /// Host point `n`, or the newest one for `None`.
    pub fn resolve(&self, n: Option<u32>) -> Result<HostPoint> {
        match n {
            Some(n) => self.host_point(n),
            None => match self.record_numbers()?.last() {
                Some(&n) => self.host_point(n),
                None => Err(BackupError::Empty {
                    dir: self.dir.clone(),
                }),
            },
        }
    }
}

/// Where the backup of `machine` at `host_point` (the newest for `None`)
/// is: the machine's repository directory and its point there.
///
/// `dir` may also be a plain repository (of one machine's backups): then
/// `host_point` is a point of it, resolved as [`Repo::resolve_point`] does
/// (`None` is its newest point), and `(dir, point)` is returned as is, the
/// machine not being looked at. So callers take either kind of repository
/// with one call.
/// The per-machine repository and point of a request for machine
/// `machine`'s point (or, unnamed, of a plain repository's point): of a
/// host repository, host point `point`; of a plain one, its point, which
/// must be a backup of `machine` if named.
pub fn machine_point(
    fs: &dyn Fs,
    dir: &Path,
    point: Option<u32>,
    machine: Option<&str>,
) -> Result<(PathBuf, u32)> {
    let Some(want) = machine else {
        refuse_without_machine(fs, dir, point)?;
        let repo = Repo::new(fs, dir);
        let n = repo.resolve_point(point)?;
        return Ok((repo.dir, n));
    };
    let (d, n) = resolve_point(fs, dir, point, want)?;
    let of = Repo::new(fs, &d).point_machine(n)?;
    if of != want {
        return Err(BackupError::OtherMachine {
            dir: d,
            point: n,
            of,
            machine: want.into(),
        });
    }
    Ok((d, n))
}

/// Refuses a host repository where one machine's point is meant but no
/// machine is named, saying which the host point has.
pub fn refuse_without_machine(fs: &dyn Fs, dir: &Path, host_point: Option<u32>) -> Result<()> {
    if !is_host_repo(fs, dir)? {
        return Ok(());
    }
    let h = HostRepo::new(fs, dir);
    let hp = h.resolve(host_point)?;
    Err(BackupError::NeedMachine {
        dir: h.dir,
        host_point: hp.host_point,
        have: hp.machine_names(),
    })
}

pub fn resolve_point(
    fs: &dyn Fs,
    dir: &Path,
    host_point: Option<u32>,
    machine: &str,
) -> Result<(PathBuf, u32)> {
    if !is_host_repo(fs, dir)? {
        let point = Repo::new(fs, dir).resolve_point(host_point)?;
        return Ok((dir.to_path_buf(), point));
    }
    let h = HostRepo::new(fs, dir);
    let hp = h.resolve(host_point)?;
    match hp.machine(machine) {
        Some(m) => Ok((h.machine_dir(machine), m.point)),
        None => Err(BackupError::NoHostMachine {
            dir: h.dir.clone(),
            host_point: hp.host_point,
            machine: machine.into(),
            have: hp.machine_names(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::manifest::{Manifest, MANIFEST_FORMAT};
    use storage::CrashFs;

    fn point(fs: &dyn Fs, dir: &Path, machine: &str, point: u32) {
        Repo::new(fs, dir)
            .write_manifest(&Manifest {
                format: MANIFEST_FORMAT.into(),
                machine: machine.into(),
                point,
                kind: "full".into(),
                created: 1,
                checkpoint: 1,
                disks: vec![],
            })
            .unwrap();
    }

    #[test]
    fn resolve_point_takes_both_kinds_of_repository() {
        let fs = CrashFs::new();
        // A plain repository: its own points, the machine not looked at.
        let plain = Path::new("/plain");
        point(&fs, plain, "vm1", 1);
        point(&fs, plain, "vm1", 2);
        assert_eq!(
            resolve_point(&fs, plain, None, "vm1").unwrap(),
            (plain.to_path_buf(), 2)
        );
        assert_eq!(resolve_point(&fs, plain, Some(1), "x").unwrap().1, 1);
        assert!(matches!(
            resolve_point(&fs, plain, Some(3), "vm1"),
            Err(BackupError::NoPoint { point: 3, .. })
        ));
        // A host repository: host point → the machine's point.
        let dir = Path::new("/host");
        let h = HostRepo::new(&fs, dir);
        h.create().unwrap();
        assert!(is_host_repo(&fs, dir).unwrap());
        assert!(matches!(
            resolve_point(&fs, dir, None, "vm1"),
            Err(BackupError::Empty { .. })
        ));
        for (n, vm1, vm2) in [(1, 1, 1), (2, 2, 1)] {
            point(&fs, &h.machine_dir("vm1"), "vm1", vm1);
            point(&fs, &h.machine_dir("vm2"), "vm2", vm2);
            h.write_host_point(&HostPoint {
                format: HOST_POINT_FORMAT.into(),
                host_point: n,
                created: 5,
                machines: vec![
                    HostPointMachine {
                        machine: "vm1".into(),
                        point: vm1,
                        checkpoint: 3,
                    },
                    HostPointMachine {
                        machine: "vm2".into(),
                        point: vm2,
                        checkpoint: 4,
                    },
                ],
            })
            .unwrap();
        }
        assert_eq!(
            resolve_point(&fs, dir, None, "vm1").unwrap(),
            (PathBuf::from("/host/machines/vm1"), 2)
        );
        assert_eq!(
            resolve_point(&fs, dir, Some(2), "vm2").unwrap(),
            (PathBuf::from("/host/machines/vm2"), 1)
        );
        match resolve_point(&fs, dir, Some(1), "vm3") {
            Err(BackupError::NoHostMachine {
                host_point, have, ..
            }) => {
                assert_eq!((host_point, have), (1, vec!["vm1".into(), "vm2".into()]));
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            resolve_point(&fs, dir, Some(7), "vm1"),
            Err(BackupError::NoHostPoint { host_point: 7, .. })
        ));
        assert_eq!(h.machines().unwrap(), ["vm1", "vm2"]);
        // The two kinds never mix.
        assert!(matches!(
            HostRepo::new(&fs, plain).create(),
            Err(BackupError::NotHostRepo { .. })
        ));
    }

    #[test]
    fn a_record_naming_a_path_is_refused() {
        let fs = CrashFs::new();
        let h = HostRepo::new(&fs, Path::new("/h"));
        h.create().unwrap();
        let bad = br#"{"format":"refpoint-host-point-1","host_point":1,"created":0,
            "machines":[{"machine":"../x","point":1,"checkpoint":1}]}"#;
        fs.write_file_atomic(Path::new("/h/host-points/0001.json"), bad)
            .unwrap();
        assert!(matches!(
            h.host_point(1),
            Err(BackupError::BadHostPoint { .. })
        ));
    }
}
