//! The real backend: positional I/O on files of the local file system.

use crate::{Fs, OpenMode, Storage};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

/// A file on the local file system.
#[derive(Debug)]
pub struct LocalFile {
    file: File,
}

impl LocalFile {
    pub fn new(file: File) -> Self {
        Self { file }
    }

    /// The underlying file, e.g. to take an advisory lock on it.
    pub fn file(&self) -> &File {
        &self.file
    }
}

impl Storage for LocalFile {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }

    fn flush(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }

    fn change_stamp(&self) -> io::Result<String> {
        use std::os::unix::fs::MetadataExt;
        let m = self.file.metadata()?;
        Ok(format!(
            "{:x}:{:x}:{}:{}.{:09}:{}.{:09}",
            m.dev(),
            m.ino(),
            m.len(),
            m.mtime(),
            m.mtime_nsec(),
            m.ctime(),
            m.ctime_nsec()
        ))
    }

    /// `flock(LOCK_EX | LOCK_NB)`: held until the file is closed.
    fn try_lock_exclusive(&self) -> io::Result<()> {
        self.file.try_lock().map_err(|e| match e {
            std::fs::TryLockError::WouldBlock => io::Error::new(
                io::ErrorKind::WouldBlock,
                "the file is locked by another writer",
            ),
            std::fs::TryLockError::Error(e) => e,
        })
    }

    /// Asks the file system for data and holes (`SEEK_DATA`/`SEEK_HOLE`);
    /// file systems without support report the whole range as data.
    fn data_ranges(&self, offset: u64, len: u64) -> io::Result<Vec<(u64, u64)>> {
        use nix::unistd::{lseek, Whence};
        use std::os::fd::AsRawFd;
        let end = offset + len;
        let mut out = Vec::new();
        let mut pos = offset;
        while pos < end {
            let data = match lseek(self.file.as_raw_fd(), pos as i64, Whence::SeekData) {
                Ok(d) => d as u64,
                Err(nix::errno::Errno::ENXIO) => break, // only a hole remains
                Err(_) => return Ok(vec![(offset, len)]),
            };
            if data >= end {
                break;
            }
            let hole = match lseek(self.file.as_raw_fd(), data as i64, Whence::SeekHole) {
                Ok(h) => (h as u64).min(end),
                Err(_) => end,
            };
            out.push((data, hole - data));
            pos = hole;
        }
        Ok(out)
    }
}

/// The local file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct LocalFs;

impl Fs for LocalFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn Storage>> {
        let file = OpenOptions::new()
            .read(true)
            .write(mode == OpenMode::ReadWrite)
            .open(path)?;
        Ok(Arc::new(LocalFile::new(file)))
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn Storage>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(path)?;
        Ok(Arc::new(LocalFile::new(file)))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        match std::fs::symlink_metadata(path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    /// Creates the missing directories and syncs the parent of each, so
    /// their names are durable before files in them are relied upon.
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut missing = Vec::new();
        let mut p = path;
        while !self.exists(p)? {
            missing.push(p);
            match p.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => p = parent,
                _ => break,
            }
        }
        std::fs::create_dir_all(path)?;
        for dir in missing.iter().rev() {
            self.sync_parent(dir)?;
        }
        Ok(())
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_dir(path)
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<std::path::PathBuf>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir)? {
            out.push(e?.path());
        }
        out.sort();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positional_io_round_trips_and_zero_fills_past_eof() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = LocalFs.create(&path).unwrap();
        f.write_at(4096, b"hello").unwrap();
        assert_eq!(f.len().unwrap(), 4101);
        let mut buf = [0u8; 5];
        f.read_at(4096, &mut buf).unwrap();
        assert_eq!(&buf, b"hello");
        let mut tail = [0xffu8; 8];
        f.read_at_or_zero(4099, &mut tail).unwrap();
        assert_eq!(&tail, b"lo\0\0\0\0\0\0");
        assert_eq!(
            f.read_at(4099, &mut tail).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
        assert!(LocalFs.create(&path).is_err(), "create must not clobber");
        let ranges = f.data_ranges(0, 4101).unwrap();
        assert!(
            ranges.iter().any(|&(o, l)| o <= 4096 && o + l >= 4101),
            "{ranges:?}"
        );
        let ro = LocalFs.open(&path, OpenMode::ReadOnly).unwrap();
        assert!(ro.write_at(0, b"x").is_err());
    }

    #[test]
    fn exists_tells_missing_from_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        assert!(!LocalFs.exists(&path).unwrap());
        LocalFs.write_file_atomic(&path, b"x").unwrap();
        assert!(LocalFs.exists(&path).unwrap());
        // A path through a regular file cannot be looked up: ENOTDIR is an
        // error, not "missing".
        assert!(LocalFs.exists(&path.join("g")).is_err());
        LocalFs.sync_dir(dir.path()).unwrap();
    }

    #[test]
    fn change_stamp_follows_writes_by_anyone() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let f = LocalFs.create(&path).unwrap();
        f.write_at(0, b"abc").unwrap();
        let before = f.change_stamp().unwrap();
        assert_eq!(before, f.change_stamp().unwrap());
        std::thread::sleep(std::time::Duration::from_millis(20));
        let other = LocalFs.open(&path, OpenMode::ReadWrite).unwrap();
        other.write_at(1, b"z").unwrap();
        assert_ne!(before, f.change_stamp().unwrap());
    }
}
