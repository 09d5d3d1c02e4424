//! `refpoint rct ...` and `refpoint disk write` on local files: disks
//! named by a path or `MACHINE/DISK`, resolved by the machine store.

use anyhow::{Context, Result};
use machine::Target;
use std::path::Path;
use vdisk::Disk;

pub use daemon::tracking::{changes_of, status_of, ChangesOut, ChangesResult, ErrorOut, Status};

/// Opens a disk named by a path or by `MACHINE/DISK`. A machine disk is
/// opened where it is written now (its newest checkpoint child) with its
/// tracking; a file a checkpoint froze is refused for writing.
pub fn open(path: &Path, writable: bool) -> Result<Disk> {
    let store = crate::machines::store();
    let t = store.resolve(path)?;
    store
        .open_target(&t, writable)
        .with_context(|| format!("cannot open {}", path.display()))
}

/// The machine disk a `rct`/`disk` argument names (`MACHINE/DISK`, or
/// the file a machine disk is written to now), if it names one.
pub fn machine_disk(path: &Path) -> Result<Option<(String, String)>> {
    Ok(match crate::machines::store().resolve(path)? {
        Target::Machine { machine, disk } => Some((machine, disk)),
        Target::File(_) => None,
    })
}

pub fn status(path: &Path) -> Result<Status> {
    let mut d = open(path, false)?;
    Ok(status_of(&mut d, path.display().to_string())?)
}

pub fn changes(
    path: &Path,
    since: &str,
    until: Option<&str>,
    offset: u64,
    length: Option<u64>,
    max_ranges: usize,
) -> Result<ChangesResult> {
    let mut d = open(path, false)?;
    Ok(changes_of(
        &mut d, since, until, offset, length, max_ranges,
    )?)
}

/// `disk write`: writes bytes through the tracked write path.
pub fn write(path: &Path, offset: u64, data: &[u8]) -> Result<()> {
    let mut d = open(path, true)?;
    d.write(offset, data)?;
    d.close()?;
    Ok(())
}
