//! # refpoint-fuzz — mutation fuzzing of VHDX input, on the stable toolchain
//!
//! No nightly, no cargo-fuzz, no sanitizers: the loop lives in
//! [`harness::fuzz`], which the `fuzz_vhdx_open` binary (see its header for
//! how to run it), `fuzz_nbd` (the server) and `fuzz_nbd_client` (the
//! client and its reply parsers) drive, and the checks of VHDX input in
//! [`run_one`], which tests call directly too. The other parsers have a
//! binary each, on the same loop: `fuzz_rct` (the tracking file and its
//! replay), `fuzz_manifest` (backup manifests and what reads them) and
//! `fuzz_cv` (the chaining-value files and the export that checks them);
//! the last two share a real backup repository ([`repo`]).
//!
//! ```text
//! seeds (vhdx::create + writes, or files) ─► Mutator ─► mutant
//!   mutant ─► run_one: read-only open + read │ check │ Chain::open + read
//!                      writable open + read + close, reopen │ writable chain
//!                      repair, reopen
//!          ─► Finding if anything panics, breaks an oracle, writes through
//!             a read-only handle, grows the file or the heap without bound
//! ```
//!
//! Oracles, beyond "no panic": `check` reporting a valid file implies that
//! it opens; a read-only open (log replayed in memory) reads exactly what a
//! writable open (log replayed in place) reads; a writable open and clean
//! close leave a file that opens again and reads the same; a successful
//! repair leaves a file that opens.

pub mod alloc_track;
pub mod harness;
pub mod memfs;
pub mod mutate;
pub mod repo;
pub mod seeds;

use memfs::MemFs;
use seeds::{install, Seed};
use std::cell::{Cell, RefCell};
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Once};
use vhdx::{Chain, Source, Vhdx};

const MIB: u64 = 1 << 20;
/// Files may not grow past this; a malformed input that makes the library
/// try is a finding.
pub const FILE_LIMIT: u64 = 2048 * MIB;
/// Heap growth during one input beyond this is a finding.
pub const ALLOC_LIMIT: usize = 512 * MIB as usize;
/// Stored bytes read per opened disk (the mapping is always walked whole).
const READ_BUDGET: u64 = 2 * MIB;
/// Virtual bytes mapped per `resolve` call.
const WINDOW: u64 = 1024 * MIB;

/// What kind of misbehaviour an input triggered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FindingKind {
    Panic,
    /// An input still running long after it should have ended.
    Hang,
    Oracle,
    ReadOnlyWrite,
    Growth,
    Alloc,
}

impl FindingKind {
    pub fn name(self) -> &'static str {
        match self {
            FindingKind::Panic => "panic",
            FindingKind::Hang => "hang",
            FindingKind::Oracle => "oracle",
            FindingKind::ReadOnlyWrite => "read-only-write",
            FindingKind::Growth => "growth",
            FindingKind::Alloc => "alloc",
        }
    }
}

/// One misbehaviour, with the step that showed it.
#[derive(Debug, Clone)]
pub struct Finding {
    pub kind: FindingKind,
    pub step: &'static str,
    pub detail: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} during {}: {}",
            self.kind.name(),
            self.step,
            self.detail
        )
    }
}

/// How far inputs got, to see that the mutants reach deep code.
#[derive(Debug, Default, Clone)]
pub struct Coverage {
    pub inputs: u64,
    pub read_only_opened: u64,
    pub writable_opened: u64,
    pub chain_opened: u64,
    pub log_replayed: u64,
    pub check_valid: u64,
    pub check_problems: u64,
    pub repaired_valid: u64,
    /// Errors by kind (the `Corruption` variant, or the `Error` variant).
    pub errors: BTreeMap<String, u64>,
}

impl Coverage {
    fn error(&mut self, e: &vhdx::Error) {
        let name = match e.corruption() {
            Some(k) => format!("{k:?}"),
            None => format!("{e:?}"),
        };
        let name: String = name.chars().take_while(|c| c.is_alphanumeric()).collect();
        *self.errors.entry(name).or_default() += 1;
    }

    /// Adds another run's counts.
    pub fn merge(&mut self, o: &Coverage) {
        self.inputs += o.inputs;
        self.read_only_opened += o.read_only_opened;
        self.writable_opened += o.writable_opened;
        self.chain_opened += o.chain_opened;
        self.log_replayed += o.log_replayed;
        self.check_valid += o.check_valid;
        self.check_problems += o.check_problems;
        self.repaired_valid += o.repaired_valid;
        for (k, v) in &o.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
    }
}

thread_local! {
    static CAPTURING: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<Option<String>> = const { RefCell::new(None) };
}

/// Installs a panic hook that records (instead of printing) panics raised
/// inside [`run_one`]; panics elsewhere print as usual.
pub fn install_panic_capture() {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if CAPTURING.with(Cell::get) {
                LAST_PANIC.with(|l| *l.borrow_mut() = Some(info.to_string()));
            } else {
                previous(info);
            }
        }));
    });
}

/// Runs `f`, turning a panic into a [`Finding`] at `step` (with the
/// panic's message; see [`install_panic_capture`]).
pub fn guarded<T>(step: &'static str, f: impl FnOnce() -> T) -> Result<T, Finding> {
    install_panic_capture();
    CAPTURING.with(|c| c.set(true));
    let r = catch_unwind(AssertUnwindSafe(f));
    CAPTURING.with(|c| c.set(false));
    r.map_err(|_| Finding {
        kind: FindingKind::Panic,
        step,
        detail: LAST_PANIC
            .with(|l| l.borrow_mut().take())
            .unwrap_or_else(|| "panic".into()),
    })
}

fn oracle(step: &'static str, detail: String) -> Finding {
    Finding {
        kind: FindingKind::Oracle,
        step,
        detail,
    }
}

/// Fails if the file system saw a write through a read-only handle or a
/// file grown past [`FILE_LIMIT`].
fn violations(fs: &MemFs, step: &'static str) -> Result<(), Finding> {
    let v = fs.violations();
    if v.read_only_write.load(Ordering::SeqCst) {
        return Err(Finding {
            kind: FindingKind::ReadOnlyWrite,
            step,
            detail: "a write or set_len through a read-only handle".into(),
        });
    }
    if v.growth.load(Ordering::SeqCst) {
        return Err(Finding {
            kind: FindingKind::Growth,
            step,
            detail: format!("the file was to grow past {FILE_LIMIT} bytes"),
        });
    }
    Ok(())
}

/// A digest of what a disk reads: every extent of the mapping and up to
/// [`READ_BUDGET`] stored bytes, plus the first and last sectors.
struct Digest {
    crc: u32,
    budget: u64,
    buf: Vec<u8>,
}

impl Digest {
    fn new() -> Self {
        Self {
            crc: 0,
            budget: READ_BUDGET,
            buf: vec![0; MIB as usize],
        }
    }

    fn add(&mut self, words: &[u64]) {
        for w in words {
            self.crc = crc32c::crc32c_append(self.crc, &w.to_le_bytes());
        }
    }

    /// Reads stored bytes of `offset..offset+len` while the budget lasts.
    fn read(
        &mut self,
        offset: u64,
        len: u64,
        read: &dyn Fn(u64, &mut [u8]) -> vhdx::Result<()>,
    ) -> vhdx::Result<()> {
        let mut pos = offset;
        let end = offset + len.min(self.budget);
        while pos < end {
            let n = (end - pos).min(MIB) as usize;
            read(pos, &mut self.buf[..n])?;
            self.crc = crc32c::crc32c_append(self.crc, &self.buf[..n]);
            self.budget -= n as u64;
            pos += n as u64;
        }
        Ok(())
    }

    fn ends(
        &mut self,
        size: u64,
        sector: u64,
        read: &dyn Fn(u64, &mut [u8]) -> vhdx::Result<()>,
    ) -> vhdx::Result<()> {
        let n = sector.min(size);
        self.budget += 2 * n;
        self.read(0, n, read)?;
        self.read(size - n, n, read)
    }
}

/// Digest of a single file's virtual disk.
fn digest_vhdx(v: &Vhdx) -> Result<u32, String> {
    let mut d = Digest::new();
    let read = |o: u64, b: &mut [u8]| v.read(o, b);
    let size = v.virtual_size();
    let mut off = 0;
    while off < size {
        let len = WINDOW.min(size - off);
        for x in v.resolve(off, len).map_err(|e| e.to_string())? {
            let kind = match x.source {
                Source::File(f) => f,
                Source::Zero => u64::MAX,
                Source::Parent => u64::MAX - 1,
            };
            d.add(&[x.offset, x.len, kind]);
            if let Source::File(_) = x.source {
                d.read(x.offset, x.len, &read).map_err(|e| e.to_string())?;
            }
        }
        off += len;
    }
    d.ends(size, v.logical_sector_size() as u64, &read)
        .map_err(|e| e.to_string())?;
    Ok(d.crc)
}

/// Digest of a chain's virtual disk (reads fall through to the parents).
fn digest_chain(c: &Chain) -> Result<u32, String> {
    let mut d = Digest::new();
    let read = |o: u64, b: &mut [u8]| c.read(o, b);
    let size = c.virtual_size();
    let mut off = 0;
    while off < size {
        let len = WINDOW.min(size - off);
        for (o, l, layer) in c.map(off, len).map_err(|e| e.to_string())? {
            d.add(&[o, l, layer.map_or(u64::MAX, |l| l as u64)]);
            if layer.is_some() {
                d.read(o, l, &read).map_err(|e| e.to_string())?;
            }
        }
        off += len;
    }
    d.ends(size, c.logical_sector_size() as u64, &read)
        .map_err(|e| e.to_string())?;
    Ok(d.crc)
}

/// Runs every check on one mutant of `seed`. `Ok` means nothing misbehaved
/// (errors from the library are fine: they are what malformed input should
/// get). Heap use is judged only when [`alloc_track::TrackingAlloc`] is the
/// global allocator. The mutant is shared with the in-memory files, never
/// copied; it is unchanged afterwards.
pub fn run_one(seed: &Seed, mutant: &Arc<Vec<u8>>, cov: &mut Coverage) -> Result<(), Finding> {
    heap_bounded(ALLOC_LIMIT, mutant.len(), || run_steps(seed, mutant, cov))
}

/// Runs the steps of one input and judges the heap they grew: their own
/// failure first, then an `Alloc` finding when the peak rose by more than
/// `limit` for an `input_len`-byte input.
pub fn heap_bounded<S, E: From<S> + From<Finding>>(
    limit: usize,
    input_len: usize,
    steps: impl FnOnce() -> Result<(), S>,
) -> Result<(), E> {
    let baseline = alloc_track::reset_peak();
    let r = steps();
    let grown = alloc_track::peak().saturating_sub(baseline);
    r?;
    if grown > limit {
        return Err(Finding {
            kind: FindingKind::Alloc,
            step: "the whole input",
            detail: format!(
                "the heap grew by {} MiB for a {input_len}-byte input",
                grown >> 20
            ),
        }
        .into());
    }
    Ok(())
}

fn run_steps(seed: &Seed, mutant: &Arc<Vec<u8>>, cov: &mut Coverage) -> Result<(), Finding> {
    cov.inputs += 1;
    let p = seed.target();
    let fresh = || {
        let fs = MemFs::new(FILE_LIMIT);
        install(&fs, seed, mutant.clone());
        fs
    };

    // Read-only steps share one file system: nothing may change the file.
    let fs = fresh();
    let ro = guarded("read-only open", || match Vhdx::open(&fs, p, false) {
        Ok(v) => {
            cov.read_only_opened += 1;
            cov.log_replayed += v.log_was_replayed() as u64;
            Ok(digest_vhdx(&v))
        }
        Err(e) => {
            cov.error(&e);
            Err(e.to_string())
        }
    })?;
    violations(&fs, "read-only open")?;

    let report = guarded("check", || vhdx::check(&fs, p))?;
    violations(&fs, "check")?;
    if let Ok(r) = &report {
        if r.is_valid() {
            cov.check_valid += 1;
            if let Err(e) = &ro {
                return Err(oracle(
                    "check",
                    format!("check reports a valid file, but it does not open: {e}"),
                ));
            }
        } else {
            cov.check_problems += 1;
        }
    }

    let chain_ro = guarded("read-only chain open", || {
        match Chain::open(&fs, p, false) {
            Ok(c) => {
                cov.chain_opened += 1;
                Some(digest_chain(&c))
            }
            Err(_) => None,
        }
    })?;
    violations(&fs, "read-only chain open")?;

    // Writable open: replays the log in place; must read what the
    // read-only open read, and leave a file that reopens the same.
    let fs = fresh();
    let rw = guarded("writable open", || match Vhdx::open(&fs, p, true) {
        Ok(v) => {
            cov.writable_opened += 1;
            let d = digest_vhdx(&v);
            let closed = v.close();
            Some((d, closed.map_err(|e| e.to_string())))
        }
        Err(_) => None,
    })?;
    violations(&fs, "writable open")?;
    if let Some((d, closed)) = rw {
        if let Ok(Ok(ro_d)) = &ro {
            if d.as_ref() != Ok(ro_d) {
                return Err(oracle(
                    "writable open",
                    format!("reads differ from the read-only open ({d:?} vs {ro_d:#x})"),
                ));
            }
        }
        if closed.is_ok() {
            let again = guarded("reopen after a writable open", || {
                Vhdx::open(&fs, p, false).map(|v| digest_vhdx(&v))
            })?;
            match again {
                Ok(d2) if d2 == d => {}
                Ok(d2) => {
                    return Err(oracle(
                        "reopen after a writable open",
                        format!("reads changed: {d:?} then {d2:?}"),
                    ))
                }
                Err(e) => {
                    return Err(oracle(
                        "reopen after a writable open",
                        format!("no longer opens: {e}"),
                    ))
                }
            }
        }
    }

    let fs = fresh();
    let chain_rw = guarded("writable chain open", || match Chain::open(&fs, p, true) {
        Ok(c) => {
            let d = digest_chain(&c);
            let _ = c.close();
            Some(d)
        }
        Err(_) => None,
    })?;
    violations(&fs, "writable chain open")?;
    if let (Some(a), Some(b)) = (&chain_ro, &chain_rw) {
        if a != b {
            return Err(oracle(
                "writable chain open",
                format!("reads differ from the read-only chain ({b:?} vs {a:?})"),
            ));
        }
    }

    // Repair, then the file must open if repair says it is valid.
    let fs = fresh();
    let repaired = guarded("repair", || vhdx::repair(&fs, p))?;
    violations(&fs, "repair")?;
    if let Ok(r) = repaired {
        if r.is_valid() {
            cov.repaired_valid += 1;
            let reopened = guarded("reopen after repair", || {
                Vhdx::open(&fs, p, false).map(|v| digest_vhdx(&v))
            })?;
            if let Err(e) = reopened {
                return Err(oracle(
                    "reopen after repair",
                    format!("repair reports a valid file, but it does not open: {e}"),
                ));
            }
        }
    }
    Ok(())
}
