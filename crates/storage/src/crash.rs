//! The crash-simulating backend: an in-memory file system whose
//! [`CrashFs::crash`] models a power cut (see the crate docs for the model).

use crate::{Fs, OpenMode, Storage, TEAR_SECTOR};
use rand::Rng;
use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Knobs for the simulated medium.
#[derive(Debug, Clone, Copy, Default)]
pub struct CrashOptions {
    /// Writes or extensions that would make a file longer than this fail
    /// with "no space left on device".
    pub capacity: Option<u64>,
}

#[derive(Debug, Clone)]
enum Op {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug, Default)]
struct FileState {
    /// Content as of the last flush: what survives any crash.
    durable: Vec<u8>,
    /// Content as the running process sees it.
    current: Vec<u8>,
    /// Operations issued since the last flush, in order.
    pending: Vec<Op>,
    /// Bumped by every crash; handles from an older epoch are dead.
    epoch: u64,
    flushes: u64,
    writes: u64,
}

/// One simulated file. Obtain handles through [`CrashFs`].
#[derive(Debug, Default)]
pub struct SimFile {
    state: Mutex<FileState>,
    capacity: Option<u64>,
}

fn apply(buf: &mut Vec<u8>, op: &Op) {
    match op {
        Op::Write { offset, data } => {
            let end = *offset as usize + data.len();
            if buf.len() < end {
                buf.resize(end, 0);
            }
            buf[*offset as usize..end].copy_from_slice(data);
        }
        Op::SetLen(len) => buf.resize(*len as usize, 0),
    }
}

impl SimFile {
    fn lock(&self) -> MutexGuard<'_, FileState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The bytes the running process sees.
    pub fn contents(&self) -> Vec<u8> {
        self.lock().current.clone()
    }

    /// Number of successful flushes so far.
    pub fn flush_count(&self) -> u64 {
        self.lock().flushes
    }

    /// Number of writes issued so far.
    pub fn write_count(&self) -> u64 {
        self.lock().writes
    }

    /// Number of operations not yet made durable by a flush.
    pub fn pending_ops(&self) -> usize {
        self.lock().pending.len()
    }

    fn crash(&self, rng: &mut impl Rng) {
        let mut st = self.lock();
        let mut image = st.durable.clone();
        for op in std::mem::take(&mut st.pending) {
            match rng.gen_range(0..3) {
                0 => {}
                1 => apply(&mut image, &op),
                _ => match &op {
                    Op::Write { offset, data } if data.len() > TEAR_SECTOR => {
                        for (i, chunk) in data.chunks(TEAR_SECTOR).enumerate() {
                            if rng.gen_bool(0.5) {
                                let piece = Op::Write {
                                    offset: offset + (i * TEAR_SECTOR) as u64,
                                    data: chunk.to_vec(),
                                };
                                apply(&mut image, &piece);
                            }
                        }
                    }
                    _ => apply(&mut image, &op),
                },
            }
        }
        st.durable = image.clone();
        st.current = image;
        st.epoch += 1;
    }
}

/// A handle to a [`SimFile`], valid until the next crash.
struct SimHandle {
    file: Arc<SimFile>,
    epoch: u64,
    writable: bool,
    budget: Arc<Mutex<Option<u64>>>,
}

impl SimHandle {
    fn live(&self) -> io::Result<MutexGuard<'_, FileState>> {
        let st = self.file.lock();
        if st.epoch != self.epoch {
            return Err(io::Error::other(
                "simulated crash: this handle died with its process",
            ));
        }
        Ok(st)
    }

    /// Spends one operation of the budget; fails once the power is out.
    fn spend(&self) -> io::Result<()> {
        let mut b = self.budget.lock().unwrap_or_else(|e| e.into_inner());
        match b.as_mut() {
            Some(0) => Err(io::Error::other("simulated power cut")),
            Some(n) => {
                *n -= 1;
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn writable(&self) -> io::Result<()> {
        if self.writable {
            Ok(())
        } else {
            Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "file opened read-only",
            ))
        }
    }

    fn check_capacity(&self, end: u64) -> io::Result<()> {
        match self.file.capacity {
            Some(cap) if end > cap => Err(io::Error::new(
                io::ErrorKind::StorageFull,
                "no space left on device (simulated)",
            )),
            _ => Ok(()),
        }
    }
}

impl Storage for SimHandle {
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> io::Result<()> {
        let st = self.live()?;
        let end = offset
            .checked_add(buf.len() as u64)
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        if end > st.current.len() as u64 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "read past end of file",
            ));
        }
        buf.copy_from_slice(&st.current[offset as usize..end as usize]);
        Ok(())
    }

    fn write_at(&self, offset: u64, buf: &[u8]) -> io::Result<()> {
        self.writable()?;
        self.spend()?;
        let mut st = self.live()?;
        let end = offset + buf.len() as u64;
        if end > st.current.len() as u64 {
            self.check_capacity(end)?;
        }
        let op = Op::Write {
            offset,
            data: buf.to_vec(),
        };
        apply(&mut st.current, &op);
        st.pending.push(op);
        st.writes += 1;
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        self.spend()?;
        let mut st = self.live()?;
        // Replay the pending ops onto the durable image instead of copying
        // the whole file: flushes are frequent, files are not small.
        let FileState {
            durable, pending, ..
        } = &mut *st;
        for op in pending.drain(..) {
            apply(durable, &op);
        }
        st.flushes += 1;
        Ok(())
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.live()?.current.len() as u64)
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.writable()?;
        self.spend()?;
        let mut st = self.live()?;
        self.check_capacity(len)?;
        let op = Op::SetLen(len);
        apply(&mut st.current, &op);
        st.pending.push(op);
        Ok(())
    }
}

/// An in-memory file system with power cuts on demand.
#[derive(Default, Clone)]
pub struct CrashFs {
    files: Arc<Mutex<HashMap<PathBuf, Arc<SimFile>>>>,
    options: CrashOptions,
    /// Mutating operations (write, set_len, flush) left before the power
    /// fails; `None` means no limit.
    budget: Arc<Mutex<Option<u64>>>,
}

impl CrashFs {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_options(options: CrashOptions) -> Self {
        Self {
            files: Default::default(),
            options,
            budget: Default::default(),
        }
    }

    fn files(&self) -> MutexGuard<'_, HashMap<PathBuf, Arc<SimFile>>> {
        self.files.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The simulated file at `path`, for inspection.
    pub fn file(&self, path: &Path) -> Option<Arc<SimFile>> {
        self.files().get(path).cloned()
    }

    /// Adds a file with the given durable content (e.g. a fixture).
    pub fn insert(&self, path: &Path, content: Vec<u8>) {
        let file = SimFile {
            state: Mutex::new(FileState {
                durable: content.clone(),
                current: content,
                ..Default::default()
            }),
            capacity: self.options.capacity,
        };
        self.files().insert(path.to_path_buf(), Arc::new(file));
    }

    /// Simulates a power cut on every file (see the crate docs). Also
    /// lifts any operation budget: the power is back.
    pub fn crash(&self, rng: &mut impl Rng) {
        let files: Vec<_> = self.files().values().cloned().collect();
        for f in files {
            f.crash(rng);
        }
        self.set_power_budget(None);
    }

    /// Lets only `ops` more mutating operations (write, set_len, flush)
    /// succeed; every later one fails as if the power had gone, until
    /// [`CrashFs::crash`]. This puts a crash at any point inside an
    /// operation such as a flush or a merge.
    pub fn set_power_budget(&self, ops: Option<u64>) {
        *self.budget.lock().unwrap_or_else(|e| e.into_inner()) = ops;
    }

    /// Whether the operation budget ran out.
    pub fn power_failed(&self) -> bool {
        *self.budget.lock().unwrap_or_else(|e| e.into_inner()) == Some(0)
    }

    fn handle(&self, file: Arc<SimFile>, writable: bool) -> Arc<dyn Storage> {
        let epoch = file.lock().epoch;
        Arc::new(SimHandle {
            file,
            epoch,
            writable,
            budget: self.budget.clone(),
        })
    }
}

fn not_found(path: &Path) -> io::Error {
    io::Error::new(
        io::ErrorKind::NotFound,
        format!("{}: no such file", path.display()),
    )
}

impl Fs for CrashFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn Storage>> {
        let file = self.file(path).ok_or_else(|| not_found(path))?;
        Ok(self.handle(file, mode == OpenMode::ReadWrite))
    }

    fn create(&self, path: &Path) -> io::Result<Arc<dyn Storage>> {
        if self.exists(path) {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "file exists"));
        }
        self.insert(path, Vec::new());
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

    fn exists(&self, path: &Path) -> bool {
        self.files().contains_key(path)
            || self
                .files()
                .keys()
                .any(|k| k.starts_with(path) && k != path)
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
            .filter_map(|k| {
                let rest = k.strip_prefix(dir).ok()?;
                let first = rest.components().next()?;
                Some(dir.join(first))
            })
            .collect();
        out.sort();
        out.dedup();
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    #[test]
    fn flushed_writes_always_survive_a_crash() {
        let fs = CrashFs::new();
        let p = Path::new("/d");
        for seed in 0..200 {
            let mut rng = SmallRng::seed_from_u64(seed);
            let f = fs
                .create(p)
                .unwrap_or_else(|_| fs.open(p, OpenMode::ReadWrite).unwrap());
            f.set_len(0).unwrap();
            f.write_at(0, &[1u8; 2048]).unwrap();
            f.flush().unwrap();
            f.write_at(0, &[2u8; 2048]).unwrap();
            fs.crash(&mut rng);
            assert!(f.len().is_err(), "a handle must die with the crash");
            let g = fs.open(p, OpenMode::ReadWrite).unwrap();
            let mut buf = vec![0u8; 2048];
            g.read_at(0, &mut buf).unwrap();
            // Each 512-byte sector is either all old or all new.
            for s in buf.chunks(TEAR_SECTOR) {
                assert!(s.iter().all(|&b| b == s[0]) && (s[0] == 1 || s[0] == 2));
            }
        }
    }

    #[test]
    fn unflushed_writes_are_dropped_kept_and_torn() {
        let (mut dropped, mut kept, mut torn) = (0, 0, 0);
        for seed in 0..300 {
            let fs = CrashFs::new();
            let p = Path::new("/d");
            let f = fs.create(p).unwrap();
            f.write_at(0, &[0u8; 4096]).unwrap();
            f.flush().unwrap();
            f.write_at(0, &[9u8; 4096]).unwrap();
            fs.crash(&mut SmallRng::seed_from_u64(seed));
            let data = fs.file(p).unwrap().contents();
            match data.iter().filter(|&&b| b == 9).count() {
                0 => dropped += 1,
                4096 => kept += 1,
                _ => torn += 1,
            }
        }
        assert!(
            dropped > 20 && kept > 20 && torn > 20,
            "{dropped} {kept} {torn}"
        );
    }

    #[test]
    fn capacity_gives_storage_full() {
        let fs = CrashFs::with_options(CrashOptions {
            capacity: Some(8192),
        });
        let f = fs.create(Path::new("/d")).unwrap();
        f.write_at(0, &[1; 8192]).unwrap();
        assert_eq!(
            f.write_at(8000, &[1; 500]).unwrap_err().kind(),
            io::ErrorKind::StorageFull
        );
        assert_eq!(
            f.set_len(1 << 20).unwrap_err().kind(),
            io::ErrorKind::StorageFull
        );
        assert_eq!(f.len().unwrap(), 8192);
    }

    #[test]
    fn power_budget_cuts_at_the_given_operation() {
        let fs = CrashFs::new();
        let f = fs.create(Path::new("/d")).unwrap();
        fs.set_power_budget(Some(2));
        f.write_at(0, b"a").unwrap();
        f.flush().unwrap();
        assert!(f.write_at(1, b"b").is_err());
        assert!(fs.power_failed());
        fs.crash(&mut SmallRng::seed_from_u64(1));
        assert_eq!(fs.file(Path::new("/d")).unwrap().contents(), b"a");
        let g = fs.open(Path::new("/d"), OpenMode::ReadWrite).unwrap();
        g.write_at(1, b"b").unwrap();
    }

    #[test]
    fn read_only_handles_refuse_writes() {
        let fs = CrashFs::new();
        fs.insert(Path::new("/d"), vec![7; 10]);
        let f = fs.open(Path::new("/d"), OpenMode::ReadOnly).unwrap();
        assert!(f.write_at(0, b"x").is_err());
        assert!(f.set_len(0).is_err());
    }
}
