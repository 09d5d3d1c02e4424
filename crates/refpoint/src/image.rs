//! Opening any image the commands read (raw file, VHDX, or the newest file
//! of a chain): `vdisk`'s [`Image`], on the local file system.

use anyhow::{Context, Result};
use std::path::Path;
use storage::LocalFs;
pub use vdisk::is_zero;
pub use vdisk::Image;

/// Opens `path` read-only, detecting the format from its content.
pub fn open(path: &Path) -> Result<Image> {
    Image::open(&LocalFs, path, false).with_context(|| format!("cannot open {}", path.display()))
}
