//! A minimal in-memory file system for fuzzing. Unlike `storage::CrashFs`
//! it keeps no durable copy (a flush costs nothing) and shares the bytes it
//! is given (copy on write, per 4 KiB page), and it watches for two
//! kinds of misbehaviour that an error return would hide:
//!
//! * a write or length change through a handle opened read-only (a
//!   read-only open must never modify the file);
//! * a file grown past a limit (malformed input must not make the library
//!   allocate file space without bound).
//!
//! Both fail the operation, as a real file system would, and are recorded
//! so the harness can report them.
//!
//! Like a sparse file on a real file system, a file reports its zero pages
//! as holes (`Storage::data_ranges`) until it is first written, so readers
//! that skip holes (backup's file hashing) cost what a file holds.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};
use storage::{Fs, OpenMode, Storage};

/// Misbehaviour observed by a [`MemFs`].
#[derive(Debug, Default)]
pub struct Violations {
    pub read_only_write: AtomicBool,
    pub growth: AtomicBool,
}

const PAGE: u64 = 4096;

/// A file: shared, never modified base bytes plus the 4 KiB pages written
/// since, so installing a file and opening it read-only copies nothing.
#[derive(Debug, Default)]
struct FileState {
    base: Arc<Vec<u8>>,
    /// Bytes of `base` still visible (a truncation hides the rest for good).
    base_valid: u64,
    /// Whole pages, as current content.
    pages: BTreeMap<u64, Box<[u8]>>,
    len: u64,
}

impl FileState {
    fn new(base: Arc<Vec<u8>>) -> Self {
        let len = base.len() as u64;
        Self {
            base,
            base_valid: len,
            pages: BTreeMap::new(),
            len,
        }
    }

    /// Copies file bytes at `offset` (within `len`) into `buf`.
    fn read(&self, offset: u64, buf: &mut [u8]) {
        let end = offset + buf.len() as u64;
        let from_base = self.base_valid.clamp(offset, end);
        let n = (from_base - offset) as usize;
        if n > 0 {
            buf[..n].copy_from_slice(&self.base[offset as usize..from_base as usize]);
        }
        buf[n..].fill(0);
        for (&pi, page) in self.pages.range(offset / PAGE..end.div_ceil(PAGE)) {
            let ps = pi * PAGE;
            let (s, e) = (ps.max(offset), (ps + PAGE).min(end));
            buf[(s - offset) as usize..(e - offset) as usize]
                .copy_from_slice(&page[(s - ps) as usize..(e - ps) as usize]);
        }
    }

    fn write(&mut self, offset: u64, buf: &[u8]) {
        let end = offset + buf.len() as u64;
        for pi in offset / PAGE..end.div_ceil(PAGE) {
            let ps = pi * PAGE;
            if !self.pages.contains_key(&pi) {
                let mut page = vec![0u8; PAGE as usize].into_boxed_slice();
                self.read(ps, &mut page);
                self.pages.insert(pi, page);
            }
            let page = self.pages.get_mut(&pi).expect("page just made");
            let (s, e) = (ps.max(offset), (ps + PAGE).min(end));
            page[(s - ps) as usize..(e - ps) as usize]
                .copy_from_slice(&buf[(s - offset) as usize..(e - offset) as usize]);
        }
        self.len = self.len.max(end);
    }

    fn set_len(&mut self, len: u64) {
        if len < self.len {
            self.base_valid = self.base_valid.min(len);
            self.pages.split_off(&len.div_ceil(PAGE));
            if let Some(page) = self.pages.get_mut(&(len / PAGE)) {
                page[(len % PAGE) as usize..].fill(0);
            }
        }
        self.len = len;
    }
}

#[derive(Debug, Default)]
struct MemFile {
    state: RwLock<FileState>,
    /// The runs of `base`'s pages that are not all zeros, once asked for.
    data: OnceLock<Vec<(u64, u64)>>,
}

/// The runs of pages of `b` holding a byte other than zero.
fn data_runs(b: &[u8]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (i, page) in b.chunks(PAGE as usize).enumerate() {
        if page.iter().all(|&x| x == 0) {
            continue;
        }
        let (o, l) = (i as u64 * PAGE, page.len() as u64);
        match out.last_mut() {
            Some(r) if r.0 + r.1 == o => r.1 += l,
            _ => out.push((o, l)),
        }
    }
    out
}

struct Handle {
    file: Arc<MemFile>,
    writable: bool,
    limit: u64,
    violations: Arc<Violations>,
}

impl Handle {
    fn state(&self) -> std::sync::RwLockReadGuard<'_, FileState> {
        self.file.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn state_mut(&self) -> std::sync::RwLockWriteGuard<'_, FileState> {
        self.file.state.write().unwrap_or_else(|e| e.into_inner())
    }

    fn may_write(&self, end: Option<u64>) -> io::Result<u64> {
        if !self.writable {
            self.violations
                .read_only_write
                .store(true, Ordering::SeqCst);
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "file opened read-only",
            ));
        }
        match end {
            Some(end) if end <= self.limit => Ok(end),
            _ => {
                self.violations.growth.store(true, Ordering::SeqCst);
                Err(io::Error::new(
                    io::ErrorKind::StorageFull,
                    "file would grow past the fuzzing limit",
                ))
            }
        }
    }
}

impl Storage for Handle {
    fn change_stamp(&self) -> io::Result<String> {
        Ok(format!(
            "mem:{:p}:{}",
            Arc::as_ptr(&self.file),
            self.state().len
        ))
    }

    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let st = self.state();
        let end = offset
            .checked_add(buf.len() as u64)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        if end > st.len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past end of file",
            ));
        }
        st.read(offset, buf);
        Ok(())
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.may_write(offset.checked_add(buf.len() as u64))?;
        self.state_mut().write(offset, buf);
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.state().len)
    }

    fn data_ranges(&self, offset: u64, len: u64) -> io::Result<Vec<(u64, u64)>> {
        let st = self.state();
        if !st.pages.is_empty() || st.len != st.base.len() as u64 {
            return Ok(vec![(offset, len)]);
        }
        let end = offset.saturating_add(len);
        let runs = self.file.data.get_or_init(|| data_runs(&st.base));
        Ok(runs
            .iter()
            .filter_map(|&(o, l)| {
                let (s, e) = (o.max(offset), (o + l).min(end));
                (s < e).then_some((s, e - s))
            })
            .collect())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        let len = self.may_write(Some(len))?;
        self.state_mut().set_len(len);
        Ok(())
    }
}

/// An in-memory file system; see the module documentation.
pub struct MemFs {
    files: Mutex<HashMap<PathBuf, Arc<MemFile>>>,
    limit: u64,
    violations: Arc<Violations>,
}

impl MemFs {
    /// A file system whose files may not grow past `limit` bytes.
    pub fn new(limit: u64) -> Self {
        Self {
            files: Mutex::default(),
            limit,
            violations: Arc::default(),
        }
    }

    fn files(&self) -> MutexGuard<'_, HashMap<PathBuf, Arc<MemFile>>> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Installs (or replaces) a file; `content` is shared, not copied.
    pub fn insert(&self, path: &Path, content: Arc<Vec<u8>>) {
        let file = MemFile {
            state: RwLock::new(FileState::new(content)),
            data: OnceLock::new(),
        };
        self.files().insert(path.to_path_buf(), Arc::new(file));
    }

    /// The current content of a file.
    pub fn contents(&self, path: &Path) -> Option<Vec<u8>> {
        let f = self.files().get(path).cloned()?;
        let st = f.state.read().unwrap_or_else(|e| e.into_inner());
        let mut b = vec![0u8; st.len as usize];
        st.read(0, &mut b);
        Some(b)
    }

    /// What went wrong so far.
    pub fn violations(&self) -> &Violations {
        &self.violations
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

impl Fs for MemFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn Storage>> {
        let file = self
            .files()
            .get(path)
            .cloned()
            .ok_or_else(|| not_found(path))?;
        Ok(Arc::new(Handle {
            file,
            writable: mode == OpenMode::ReadWrite,
            limit: self.limit,
            violations: self.violations.clone(),
        }))
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn Storage>> {
        if self.exists(path)? {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "file exists"));
        }
        self.insert(path, Arc::default());
        self.open(path, OpenMode::ReadWrite)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        self.files()
            .remove(path)
            .map(|_| ())
            .ok_or_else(|| not_found(path))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut files = self.files();
        let f = files.remove(from).ok_or_else(|| not_found(from))?;
        files.insert(to.to_path_buf(), f);
        Ok(())
    }

    /// A file, or a directory: a prefix of some file's path.
    fn exists(&self, path: &Path) -> io::Result<bool> {
        let files = self.files();
        Ok(files.contains_key(path) || files.keys().any(|k| k.starts_with(path)))
    }

    /// Nothing is lost here: there are no power cuts while fuzzing.
    fn sync_dir(&self, _: &Path) -> io::Result<()> {
        Ok(())
    }

    fn create_dir_all(&self, _: &Path) -> io::Result<()> {
        Ok(())
    }

    fn remove_dir(&self, _: &Path) -> io::Result<()> {
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut out: Vec<PathBuf> = self
            .files()
            .keys()
            .filter_map(|k| Some(dir.join(k.strip_prefix(dir).ok()?.components().next()?)))
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }
}
