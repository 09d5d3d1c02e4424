//! Instant restore: a machine that runs on a backup point at once, its
//! disks differencing children of the point's files. The repository is
//! only read; `machine`'s finish later makes the disks standalone.

use crate::error::Result;
use crate::repo::Repo;
use machine::{Instant, InstantDisk, Machine, Store};
use std::path::Path;

/// Creates machine `name` on point `point` (latest if `None`) of
/// repository `dir`; of a host repository, on machine `machine` of host
/// point `point`.
pub fn restore_instant(
    store: &Store,
    dir: &Path,
    point: Option<u32>,
    machine: Option<&str>,
    name: &str,
) -> Result<Machine> {
    let (dir, n) = crate::host::machine_point(&**store.fs(), dir, point, machine)?;
    let repo = Repo::new(&**store.fs(), &dir);
    // A named machine was checked against the point already.
    let source_machine = match machine {
        Some(m) => m.to_string(),
        None => repo.point_machine(n)?,
    };
    let files = repo.point_files(n)?;
    let disks: Vec<InstantDisk> = files
        .into_iter()
        .map(|(name, parent)| InstantDisk { name, parent })
        .collect();
    let origin = Instant {
        repository: repo.dir.clone(),
        point: n,
        source_machine,
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        finishing: false,
        throttle: None,
        sealing: None,
    };
    Ok(store.create_instant(name, &disks, origin)?)
}

/// Refuses when an instant machine of `store` runs on a point of
/// repository `dir` (or of a repository inside it): operations that
/// rewrite or remove a repository's files (consolidation) ask first.
pub fn check_not_in_use(store: &Store, dir: &Path) -> Result<()> {
    let dir = vhdx::paths::absolute(dir);
    for m in store.list_each()?.0 {
        if let Some(i) = m
            .instant
            .as_ref()
            .filter(|i| i.repository.starts_with(&dir))
        {
            return Err(crate::BackupError::InUse {
                dir: i.repository.clone(),
                machine: m.name.clone(),
                point: i.point,
            });
        }
    }
    Ok(())
}
