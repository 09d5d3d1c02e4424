//! `refpoint rct ...` and `refpoint disk write` on local files: disks
//! named by a path or `MACHINE/DISK`, resolved by the machine store.

use anyhow::{Context, Result};
use std::path::Path;
use vdisk::Disk;

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

/// `disk write`: writes bytes through the tracked write path.
pub fn write(path: &Path, offset: u64, data: &[u8]) -> Result<()> {
    let mut d = open(path, true)?;
    d.write(offset, data)?;
    d.close()?;
    Ok(())
}
