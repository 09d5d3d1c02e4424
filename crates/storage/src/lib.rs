//! # storage — the I/O seam of refpoint
//!
//! Every byte refpoint reads or writes goes through this crate. Nothing above
//! it opens a file itself, which is what lets the whole stack run over the
//! crash-simulating backend in tests.
//!
//! ```text
//!            vhdx / rct / vdisk ...
//!                    │  Fs::open / Fs::create          (paths → handles)
//!                    ▼
//!        Arc<dyn Storage>: read_at · write_at · flush · len · set_len
//!             │                                 │
//!        LocalFs / LocalFile               CrashFs / SimFile
//!        (pread/pwrite/fdatasync)          (in memory; remembers which writes
//!                                           were flushed; crash() drops, keeps
//!                                           or tears each unflushed write)
//! ```
//!
//! ## The crash model
//!
//! [`CrashFs::crash`] models a power cut. For each file, everything up to the
//! last successful [`Storage::flush`] survives. Each operation issued after it
//! is independently *dropped*, *kept*, or — for writes longer than one sector
//! — *torn*: a random subset of its 512-byte sectors reaches the medium.
//! Surviving operations are applied in issue order. Handles opened before the
//! crash stop working (every call fails), as if the process had died, so a
//! `Drop` implementation cannot sneak extra writes in after the power cut.
//!
//! Creating, removing and renaming a file change its directory, and a
//! directory change is durable only once that directory is synced
//! ([`Fs::sync_dir`]): ext4 and XFS commit directory changes
//! asynchronously, so an `fdatasync` of a renamed file does not make the
//! rename durable. `CrashFs` keeps every create, rename and remove pending
//! until its directory is synced, and a crash reverts each pending one
//! (whole, never half). Code that needs a name to survive uses
//! [`Fs::rename_durable`], [`Fs::remove_durable`] or [`Fs::sync_parent`]
//! before it reports the operation done.
//!
//! ## Errors without a crash
//!
//! [`CrashFs::inject_fault`] makes a chosen mutating operation fail with
//! ENOSPC or EIO while the power stays on: the program goes on and must
//! keep its files and its memory in agreement. A failed flush loses the
//! unflushed writes of that file from the medium (each is dropped, kept or
//! torn, as in a crash) while the process still sees them, as Linux does
//! after a writeback error; a later successful flush does not bring them
//! back.
//!
//! ## What this crate does not do
//!
//! It knows nothing about VHDX, tracking or networks; it never caches.

#![forbid(unsafe_code)]

mod crash;
mod local;

pub use crash::{CrashFs, CrashOptions, Fault, SimFile};
pub use local::{LocalFile, LocalFs};

use std::io;
use std::path::Path;
use std::sync::Arc;

/// The sector size at which the crash-simulating backend tears writes
/// (at absolute file offsets that are multiples of it).
pub const TEAR_SECTOR: usize = 512;

/// Positional access to one file. All methods take `&self`, so one handle can
/// be shared between threads.
#[allow(clippy::len_without_is_empty)] // a file length, not a collection
pub trait Storage: Send + Sync {
    /// Reads exactly `buf.len()` bytes at `offset`; fails with
    /// [`io::ErrorKind::UnexpectedEof`] if the file is shorter.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()>;
    /// Writes all of `buf` at `offset`, extending the file if needed.
    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()>;
    /// Makes every earlier write and length change durable.
    fn flush(&self) -> io::Result<()>;
    /// The current length of the file in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Truncates or extends (with zeros) the file.
    fn set_len(&self, len: u64) -> io::Result<()>;

    /// The parts of `offset..offset+len` that may hold data; the rest is
    /// known to read as zeros (holes of a sparse file). The default knows
    /// no holes.
    fn data_ranges(&self, offset: u64, len: u64) -> io::Result<Vec<(u64, u64)>> {
        Ok(vec![(offset, len)])
    }

    /// Takes an exclusive advisory lock for as long as this handle lives,
    /// so two writers never open one disk; fails with
    /// [`io::ErrorKind::WouldBlock`] if another handle holds it. Backends
    /// without other processes (in-memory ones) have nothing to lock.
    fn try_lock_exclusive(&self) -> io::Result<()> {
        Ok(())
    }

    /// An opaque stamp that changes whenever the file's data or length is
    /// changed, by this process or any other: device, inode, length,
    /// modification and change times. Tracking uses it as the identity of
    /// a file that has none of its own (a raw disk).
    fn change_stamp(&self) -> io::Result<String>;

    /// Like [`Storage::read_at`], but the part of `buf` past the end of the
    /// file is filled with zeros instead of failing.
    fn read_at_or_zero(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let len = self.len()?;
        let avail = len.saturating_sub(offset).min(buf.len() as u64) as usize;
        if avail > 0 {
            self.read_at(offset, &mut buf[..avail])?;
        }
        buf[avail..].fill(0);
        Ok(())
    }
}

/// How [`Fs::open`] opens a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    ReadOnly,
    ReadWrite,
}

/// A file system: turns paths into [`Storage`] handles.
pub trait Fs: Send + Sync {
    /// Opens an existing file.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn Storage>>;
    /// Creates a new, empty file; fails if it already exists.
    fn create(&self, path: &Path) -> io::Result<Arc<dyn Storage>>;
    /// Removes a file.
    fn remove(&self, path: &Path) -> io::Result<()>;
    /// Renames a file, replacing `to` if it exists.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Whether a file exists at `path`. Fails when that cannot be told (a
    /// permission or I/O error): "missing" is an answer, not a guess.
    fn exists(&self, path: &Path) -> io::Result<bool>;
    /// Makes the directory's entries durable (creates, renames and removes
    /// in it so far): `fsync` of the directory.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Creates a directory and its parents (a no-op where directories are
    /// implicit).
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Removes an empty directory (a no-op where directories are implicit).
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    /// The files directly inside `dir`, sorted.
    fn list_dir(&self, dir: &Path) -> io::Result<Vec<std::path::PathBuf>>;

    /// Reads a whole (small) file.
    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        let f = self.open(path, OpenMode::ReadOnly)?;
        let mut b = vec![0u8; f.len()? as usize];
        f.read_at(0, &mut b)?;
        Ok(b)
    }

    /// Syncs the directory that holds `path`.
    fn sync_parent(&self, path: &Path) -> io::Result<()> {
        self.sync_dir(parent_dir(path))
    }

    /// Renames and syncs the directories involved, so the new name
    /// survives a power cut once this returns.
    fn rename_durable(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.rename(from, to)?;
        self.sync_parent(to)?;
        if parent_dir(from) != parent_dir(to) {
            self.sync_parent(from)?;
        }
        Ok(())
    }

    /// Removes a file and syncs its directory.
    fn remove_durable(&self, path: &Path) -> io::Result<()> {
        self.remove(path)?;
        self.sync_parent(path)
    }

    /// Replaces a (small) file atomically and durably: a temporary file is
    /// written and flushed, renamed over `path`, and the directory synced.
    fn write_file_atomic(&self, path: &Path, data: &[u8]) -> io::Result<()> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = std::path::PathBuf::from(tmp);
        if self.exists(&tmp)? {
            self.remove(&tmp)?;
        }
        let f = self.create(&tmp)?;
        f.write_at(0, data)?;
        f.flush()?;
        drop(f);
        self.rename_durable(&tmp, path)
    }
}

/// The directory that holds `path` (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}
