//! The crash-simulating backend: an in-memory file system whose
//! [`CrashFs::crash`] models a power cut and whose
//! [`CrashFs::inject_fault`] makes one operation fail while the power stays
//! on (see the crate docs for the model).

use crate::{parent_dir, Fs, OpenMode, Storage, TEAR_SECTOR};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeSet, HashMap};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// Knobs for the simulated medium.
#[derive(Debug, Clone, Copy, Default)]
pub struct CrashOptions {
    /// Writes or extensions that would make a file longer than this fail
    /// with "no space left on device".
    pub capacity: Option<u64>,
    /// Seeds the choices a failed flush makes about which unflushed writes
    /// it loses.
    pub seed: u64,
}

/// An error [`CrashFs::inject_fault`] makes an operation fail with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// ENOSPC: no space left on device.
    NoSpace,
    /// EIO: an I/O error of the medium.
    Io,
}

impl Fault {
    fn error(self, op: &str) -> io::Error {
        match self {
            Fault::NoSpace => io::Error::new(
                io::ErrorKind::StorageFull,
                format!("{op}: no space left on device (injected)"),
            ),
            Fault::Io => io::Error::from_raw_os_error(5),
        }
    }
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
    /// Bumped by every change of data or length (the simulated ctime).
    version: u64,
    flushes: u64,
    writes: u64,
}

/// One simulated file (an inode). Obtain handles through [`CrashFs`].
#[derive(Debug)]
pub struct SimFile {
    state: Mutex<FileState>,
    capacity: Option<u64>,
    ino: u64,
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

/// Applies `op` to `image` as a power cut leaves it: dropped, kept, or
/// (a write crossing a sector boundary) torn at absolute sector boundaries,
/// each piece reaching the medium or not.
fn settle(image: &mut Vec<u8>, op: &Op, rng: &mut impl Rng) {
    match rng.gen_range(0..3) {
        0 => {}
        1 => apply(image, op),
        _ => match op {
            Op::Write { offset, data } => {
                let sector = TEAR_SECTOR as u64;
                let end = offset + data.len() as u64;
                let mut at = *offset;
                while at < end {
                    let next = ((at / sector + 1) * sector).min(end);
                    if rng.gen_bool(0.5) {
                        let from = (at - offset) as usize;
                        let piece = Op::Write {
                            offset: at,
                            data: data[from..from + (next - at) as usize].to_vec(),
                        };
                        apply(image, &piece);
                    }
                    at = next;
                }
            }
            Op::SetLen(_) => apply(image, op),
        },
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

    /// The medium loses or keeps each unflushed operation (a power cut, or
    /// a failed writeback). `keep_view` leaves the process's view alone.
    fn settle_pending(&self, rng: &mut impl Rng, keep_view: bool) {
        let mut st = self.lock();
        let pending = std::mem::take(&mut st.pending);
        let mut image = std::mem::take(&mut st.durable);
        for op in &pending {
            settle(&mut image, op, rng);
        }
        if !keep_view {
            st.current = image.clone();
            if !pending.is_empty() {
                // Whatever reached the medium, the file's times changed.
                st.version += 1;
            }
        }
        st.durable = image;
    }
}

/// A create, rename or remove not yet made durable by a sync of its
/// directory (or directories, for a rename between two).
#[derive(Debug)]
struct DirOp {
    change: DirChange,
    /// Directories still to be synced before the change is durable.
    unsynced: BTreeSet<PathBuf>,
}

#[derive(Debug, Clone)]
enum DirChange {
    Link { path: PathBuf, file: Arc<SimFile> },
    Unlink { path: PathBuf },
    Rename { from: PathBuf, to: PathBuf },
}

impl DirChange {
    fn paths(&self) -> Vec<&Path> {
        match self {
            DirChange::Link { path, .. } | DirChange::Unlink { path } => vec![path],
            DirChange::Rename { from, to } => vec![from, to],
        }
    }

    /// Applies the change to a namespace; a change whose source is gone
    /// (an earlier change it depends on was lost) does nothing.
    fn apply(&self, names: &mut HashMap<PathBuf, Arc<SimFile>>) {
        match self {
            DirChange::Link { path, file } => {
                names.insert(path.clone(), file.clone());
            }
            DirChange::Unlink { path } => {
                names.remove(path);
            }
            DirChange::Rename { from, to } => {
                if let Some(f) = names.remove(from) {
                    names.insert(to.clone(), f);
                }
            }
        }
    }
}

/// The names of the file system: as the process sees them, as they are
/// on the medium, and the changes in between.
#[derive(Default)]
struct Names {
    current: HashMap<PathBuf, Arc<SimFile>>,
    durable: HashMap<PathBuf, Arc<SimFile>>,
    pending: Vec<DirOp>,
}

impl Names {
    fn record(&mut self, change: DirChange) {
        change.apply(&mut self.current);
        let unsynced = change
            .paths()
            .into_iter()
            .map(|p| parent_dir(p).to_path_buf())
            .collect();
        self.pending.push(DirOp { change, unsynced });
    }

    fn sync(&mut self, dir: &Path) {
        for op in &mut self.pending {
            op.unsynced.remove(dir);
        }
        // Changes synced in issue order can move to the medium for good.
        let done = self
            .pending
            .iter()
            .take_while(|o| o.unsynced.is_empty())
            .count();
        for op in self.pending.drain(..done) {
            op.change.apply(&mut self.durable);
        }
    }

    /// The names after a power cut: every synced change survives; each
    /// other pending change survives or not, but per name the survivors are
    /// a prefix of its changes (a file system journals the changes of one
    /// name in order: a rename cannot survive the create of its source it
    /// follows, nor a remove before it). Changes to different names are
    /// kept or lost independently, which is more than ext4 or XFS allow.
    fn crash(&mut self, rng: &mut impl Rng) {
        let mut keep = vec![false; self.pending.len()];
        let mut forced: BTreeSet<PathBuf> = BTreeSet::new();
        for (i, op) in self.pending.iter().enumerate().rev() {
            let paths = op.change.paths();
            let must = op.unsynced.is_empty() || paths.iter().any(|p| forced.contains(*p));
            if must || rng.gen_bool(0.5) {
                keep[i] = true;
                forced.extend(paths.iter().map(|p| p.to_path_buf()));
            }
        }
        for (op, keep) in std::mem::take(&mut self.pending).into_iter().zip(keep) {
            if keep {
                op.change.apply(&mut self.durable);
            }
        }
        self.current = self.durable.clone();
    }

    /// Every file the names refer to, now or on the medium.
    fn all_files(&self) -> Vec<Arc<SimFile>> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::new();
        let pending = self.pending.iter().filter_map(|o| match &o.change {
            DirChange::Link { file, .. } => Some(file),
            _ => None,
        });
        for f in self
            .current
            .values()
            .chain(self.durable.values())
            .chain(pending)
        {
            if seen.insert(f.ino) {
                out.push(f.clone());
            }
        }
        out
    }
}

/// The power switch and the fault plan, shared by the file system and its
/// handles.
#[derive(Default)]
struct Control {
    /// Mutating operations left before the power fails; `None`: no limit.
    budget: Option<u64>,
    /// Mutating operations done so far.
    spent: u64,
    /// Faults planned: (operation number counted from 0 in `spent`, fault).
    faults: Vec<(u64, Fault)>,
    rng: Option<SmallRng>,
}

enum Spend {
    Go,
    Fail(Fault),
}

/// An in-memory file system with power cuts and I/O errors on demand.
#[derive(Clone)]
pub struct CrashFs {
    names: Arc<Mutex<Names>>,
    options: CrashOptions,
    control: Arc<Mutex<Control>>,
    /// Bumped by every crash; handles from an older epoch are dead.
    epoch: Arc<AtomicU64>,
    next_ino: Arc<AtomicU64>,
}

impl Default for CrashFs {
    fn default() -> Self {
        Self::with_options(CrashOptions::default())
    }
}

impl CrashFs {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn with_options(options: CrashOptions) -> Self {
        Self {
            names: Default::default(),
            options,
            control: Arc::new(Mutex::new(Control {
                rng: Some(SmallRng::seed_from_u64(options.seed)),
                ..Default::default()
            })),
            epoch: Default::default(),
            next_ino: Arc::new(AtomicU64::new(1)),
        }
    }

    fn names(&self) -> MutexGuard<'_, Names> {
        self.names.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn control(&self) -> MutexGuard<'_, Control> {
        lock_control(&self.control)
    }

    fn new_file(&self, content: Vec<u8>) -> Arc<SimFile> {
        Arc::new(SimFile {
            state: Mutex::new(FileState {
                durable: content.clone(),
                current: content,
                ..Default::default()
            }),
            capacity: self.options.capacity,
            ino: self.next_ino.fetch_add(1, Ordering::Relaxed),
        })
    }

    /// The simulated file at `path` as the process sees it, for inspection.
    pub fn file(&self, path: &Path) -> Option<Arc<SimFile>> {
        self.names().current.get(path).cloned()
    }

    /// Adds a file with the given durable content and a durable name (e.g.
    /// a fixture).
    pub fn insert(&self, path: &Path, content: Vec<u8>) {
        let f = self.new_file(content);
        let mut n = self.names();
        n.current.insert(path.to_path_buf(), f.clone());
        n.durable.insert(path.to_path_buf(), f);
    }

    /// Simulates a power cut (see the crate docs): pending directory
    /// changes survive or not, each file keeps what was flushed and loses,
    /// keeps or tears each later write, and every handle dies. Also lifts
    /// any operation budget and planned fault: the power is back.
    pub fn crash(&self, rng: &mut impl Rng) {
        self.epoch.fetch_add(1, Ordering::SeqCst);
        let files = {
            let mut n = self.names();
            let files = n.all_files();
            n.crash(rng);
            files
        };
        for f in files {
            f.settle_pending(rng, false);
        }
        let mut c = self.control();
        c.budget = None;
        c.faults.clear();
    }

    /// Lets only `ops` more mutating operations (write, set_len, flush,
    /// create, rename, remove, directory sync) succeed; every later one
    /// fails as if the power had gone, until [`CrashFs::crash`]. This puts
    /// a crash at any point inside an operation such as a flush or a merge.
    pub fn set_power_budget(&self, ops: Option<u64>) {
        self.control().budget = ops;
    }

    /// Whether the operation budget ran out.
    pub fn power_failed(&self) -> bool {
        self.control().budget == Some(0)
    }

    /// Mutating operations done so far (the unit of the power budget and of
    /// [`CrashFs::inject_fault`]).
    pub fn ops_done(&self) -> u64 {
        self.control().spent
    }

    /// Makes the mutating operation `after` operations from now fail with
    /// `fault`, once, without a crash: nothing of it happens (a failed
    /// flush loses the file's unflushed writes on the medium, see the crate
    /// docs). `after == 0` is the next operation.
    pub fn inject_fault(&self, after: u64, fault: Fault) {
        let mut c = self.control();
        let at = c.spent + after;
        c.faults.push((at, fault));
    }

    /// Drops the faults that have not happened yet.
    pub fn clear_faults(&self) {
        self.control().faults.clear();
    }

    /// Whether a planned fault has not happened yet.
    pub fn fault_pending(&self) -> bool {
        !self.control().faults.is_empty()
    }

    fn spend(&self) -> io::Result<Spend> {
        spend(&self.control)
    }

    fn handle(&self, file: Arc<SimFile>, writable: bool) -> Arc<dyn Storage> {
        Arc::new(SimHandle {
            file,
            epoch: self.epoch.load(Ordering::SeqCst),
            fs_epoch: self.epoch.clone(),
            writable,
            control: self.control.clone(),
        })
    }

    /// Runs a directory change: spends an operation, may fail as planned.
    fn dir_op(
        &self,
        what: &str,
        change: impl FnOnce(&mut Names) -> io::Result<()>,
    ) -> io::Result<()> {
        match self.spend()? {
            Spend::Fail(f) => Err(f.error(what)),
            Spend::Go => change(&mut self.names()),
        }
    }
}

fn lock_control(c: &Mutex<Control>) -> MutexGuard<'_, Control> {
    c.lock().unwrap_or_else(|e| e.into_inner())
}

fn spend(control: &Mutex<Control>) -> io::Result<Spend> {
    let mut c = lock_control(control);
    if c.budget == Some(0) {
        return Err(io::Error::other("simulated power cut"));
    }
    if let Some(b) = c.budget.as_mut() {
        *b -= 1;
    }
    let n = c.spent;
    c.spent += 1;
    if let Some(i) = c.faults.iter().position(|&(at, _)| at == n) {
        let (_, f) = c.faults.swap_remove(i);
        return Ok(Spend::Fail(f));
    }
    Ok(Spend::Go)
}

/// A handle to a [`SimFile`], valid until the next crash.
struct SimHandle {
    file: Arc<SimFile>,
    epoch: u64,
    fs_epoch: Arc<AtomicU64>,
    writable: bool,
    control: Arc<Mutex<Control>>,
}

impl SimHandle {
    fn alive(&self) -> io::Result<()> {
        if self.fs_epoch.load(Ordering::SeqCst) != self.epoch {
            return Err(io::Error::other(
                "simulated crash: this handle died with its process",
            ));
        }
        Ok(())
    }

    fn live(&self) -> io::Result<MutexGuard<'_, FileState>> {
        self.alive()?;
        Ok(self.file.lock())
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

    /// Spends one operation; `Err` once the power is out or as planned.
    fn spend(&self, what: &str) -> io::Result<()> {
        self.alive()?;
        match spend(&self.control)? {
            Spend::Go => Ok(()),
            Spend::Fail(f) => Err(f.error(what)),
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
        self.spend("write")?;
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
        st.version += 1;
        Ok(())
    }

    fn flush(&self) -> io::Result<()> {
        self.alive()?;
        match spend(&self.control)? {
            Spend::Go => {}
            Spend::Fail(f) => {
                // The writeback failed: the medium keeps, loses or tears
                // each unflushed write, the process still sees them, and
                // no later flush writes them again.
                let mut c = lock_control(&self.control);
                let rng = c.rng.as_mut().expect("rng");
                self.file.settle_pending(rng, true);
                return Err(f.error("flush"));
            }
        }
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
        self.spend("set_len")?;
        let mut st = self.live()?;
        self.check_capacity(len)?;
        let op = Op::SetLen(len);
        apply(&mut st.current, &op);
        st.pending.push(op);
        st.version += 1;
        Ok(())
    }

    fn change_stamp(&self) -> io::Result<String> {
        let st = self.live()?;
        Ok(format!(
            "sim:{}:{}:{}",
            self.file.ino,
            st.current.len(),
            st.version
        ))
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
        if self.exists(path)? {
            return Err(io::Error::new(io::ErrorKind::AlreadyExists, "file exists"));
        }
        let file = self.new_file(Vec::new());
        self.dir_op("create", |n| {
            n.record(DirChange::Link {
                path: path.to_path_buf(),
                file: file.clone(),
            });
            Ok(())
        })?;
        Ok(self.handle(file, true))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        if self.file(path).is_none() {
            return Err(not_found(path));
        }
        self.dir_op("remove", |n| {
            n.record(DirChange::Unlink {
                path: path.to_path_buf(),
            });
            Ok(())
        })
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        if self.file(from).is_none() {
            return Err(not_found(from));
        }
        self.dir_op("rename", |n| {
            n.record(DirChange::Rename {
                from: from.to_path_buf(),
                to: to.to_path_buf(),
            });
            Ok(())
        })
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let n = self.names();
        Ok(n.current.contains_key(path)
            || n.current.keys().any(|k| k.starts_with(path) && k != path))
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.dir_op("directory sync", |n| {
            n.sync(dir);
            Ok(())
        })
    }

    fn create_dir_all(&self, _: &Path) -> io::Result<()> {
        Ok(())
    }

    fn remove_dir(&self, _: &Path) -> io::Result<()> {
        Ok(())
    }

    fn list_dir(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut out: Vec<PathBuf> = self
            .names()
            .current
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
mod tests;
