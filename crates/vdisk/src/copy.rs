//! Copying a disk's content into another image: the one engine behind
//! `vhd convert`, restores, full and differential exports and
//! consolidation.
//!
//! ```text
//!  reader thread                 writer (the caller's thread)     observer thread
//!  src.extents ─► read data ───► sink.write(runs) ──────────────► observer(piece)
//!  zero scan per 64 KiB          progress(done, total)             (only if given)
//!        ▲                             │ every 128 MiB written           │
//!        │                             ▼                                 │
//!        │                       flusher thread: flush a second          │
//!        │                       handle on the file (write-behind)       │
//!        └──────────────── free buffers (3, 8 MiB each) ◄────────────────┘
//! ```
//!
//! * **What is copied**: the whole disk, or [`CopyOptions::ranges`].
//!   [`CopyOptions::context`] adds ranges that are read and shown to the
//!   observer but not written (the rest of a hash block around a change).
//! * **Zeros**: ranges the source knows to be zeros (unallocated blocks,
//!   holes) are not read, and 64 KiB granules that read as zeros are not
//!   written, so outputs stay sparse, when the sink's unwritten bytes read
//!   as zeros ([`Sink::unwritten_reads_zero`]). A differencing child reads
//!   its parent there, so it gets every byte of the ranges, zeros too.
//! * **Order**: the sink gets its writes, and the observer its pieces, in
//!   the order of their offsets.
//! * **A new file** ([`Output`], filled by [`copy_into`]) is written under a
//!   temporary name next to its destination and renamed into place, with a
//!   directory sync, only once complete: a failure or a power cut never
//!   leaves a half-written file under the destination's name, and a failed
//!   copy removes what it wrote (durably).
//!
//! What this module does not do: it never overwrites an existing file, and
//! it knows nothing of backups or manifests (an observer hashes for them).

use crate::error::VdiskError;
use crate::image::{is_zero, Image};
use std::io;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Arc;
use storage::{Fs, OpenMode, Storage};
use vhdx::{create, create_child, Chain, CreateOptions, DiskType, Vhdx};

/// An output's format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Vhdx,
    Raw,
}

impl Format {
    /// From the file name: `.vhdx`/`.avhdx` → VHDX, anything else → raw.
    pub fn from_path(p: &Path) -> Format {
        match p
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
        {
            Some(e) if e == "vhdx" || e == "avhdx" => Format::Vhdx,
            _ => Format::Raw,
        }
    }

    /// The extension a file of this format gets when the name is chosen
    /// for it: `vhdx` or `img`.
    pub fn extension(self) -> &'static str {
        match self {
            Format::Vhdx => "vhdx",
            Format::Raw => "img",
        }
    }
}

/// Errors of a copy: each names the file, and where it applies the
/// offset, that failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CopyError {
    #[error("{file} already exists; remove it or choose another destination")]
    Exists { file: String },
    #[error("range offset {offset} length {len} lies past the end of the {size}-byte source")]
    OutOfRange { offset: u64, len: u64, size: u64 },
    #[error("reading the source at virtual offset {offset}: {source}")]
    Read {
        offset: u64,
        #[source]
        source: VdiskError,
    },
    /// A write into the output failed; `file` is the file being written.
    #[error("writing virtual offset {offset}: {source}")]
    Write {
        file: String,
        offset: u64,
        #[source]
        source: VdiskError,
    },
    /// Creating, flushing, closing, renaming or removing the output.
    #[error(transparent)]
    Output(#[from] VdiskError),
}

impl From<vhdx::Error> for CopyError {
    fn from(e: vhdx::Error) -> Self {
        CopyError::Output(e.into())
    }
}

impl CopyError {
    /// Whether the medium ran out of space (ENOSPC).
    pub fn is_no_space(&self) -> bool {
        match self {
            CopyError::Read { source, .. }
            | CopyError::Write { source, .. }
            | CopyError::Output(source) => source.is_no_space(),
            _ => false,
        }
    }
}

pub type Result<T, E = CopyError> = std::result::Result<T, E>;

/// What a copy reads: a disk's virtual content.
pub trait Source: Sync {
    /// The virtual size in bytes.
    fn size(&self) -> u64;
    /// Ranges of `offset..offset+len`, in order, that may hold data
    /// (`true`) or are known to read as zeros (`false`).
    fn extents(&self, offset: u64, len: u64) -> crate::Result<Vec<(u64, u64, bool)>>;
    /// Reads virtual bytes.
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> crate::Result<()>;
}

impl Source for Image {
    fn size(&self) -> u64 {
        Image::size(self)
    }
    fn extents(&self, offset: u64, len: u64) -> crate::Result<Vec<(u64, u64, bool)>> {
        Image::extents(self, offset, len)
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> crate::Result<()> {
        Image::read_at(self, offset, buf)
    }
}

impl Source for Chain {
    fn size(&self) -> u64 {
        self.virtual_size()
    }
    fn extents(&self, offset: u64, len: u64) -> crate::Result<Vec<(u64, u64, bool)>> {
        Ok(self
            .map(offset, len)?
            .into_iter()
            .map(|(o, l, layer)| (o, l, layer.is_some()))
            .collect())
    }
    fn read_at(&self, offset: u64, buf: &mut [u8]) -> crate::Result<()> {
        Ok(self.read(offset, buf)?)
    }
}

/// Where copied bytes go.
pub trait Sink {
    /// Writes `data` at virtual offset `offset`.
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<()>;
    /// Whether bytes never written read as zeros (a new fixed, dynamic or
    /// raw image), so zeros need not be written. `false` for a
    /// differencing child, whose unwritten bytes come from its parent.
    fn unwritten_reads_zero(&self) -> bool {
        true
    }
    /// A second handle on the file being written, flushed from another
    /// thread as the copy goes on (write-behind); `None`: no such flushes.
    fn writeback(&self) -> Option<Writeback> {
        None
    }
}

/// A second handle on the file a sink writes, for write-behind flushes.
#[derive(Clone)]
pub struct Writeback {
    pub file: Arc<dyn Storage>,
    /// The file's name, for errors.
    pub name: String,
}

impl Sink for Vhdx {
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        Vhdx::write(self, offset, data).map_err(|e| CopyError::Write {
            file: self.name().to_string(),
            offset,
            source: e.into(),
        })
    }
    fn unwritten_reads_zero(&self) -> bool {
        self.disk_type() != DiskType::Differencing
    }
}

/// A piece of the source as it passes, shown to the observer.
#[derive(Debug, Clone, Copy)]
pub enum Piece<'a> {
    /// Bytes read at `offset` (they may be zeros).
    Data { offset: u64, data: &'a [u8] },
    /// `len` bytes at `offset` that the source knows to read as zeros,
    /// so they were not read.
    Zeros { offset: u64, len: u64 },
}

impl Piece<'_> {
    pub fn offset(&self) -> u64 {
        match self {
            Piece::Data { offset, .. } | Piece::Zeros { offset, .. } => *offset,
        }
    }
    pub fn len(&self) -> u64 {
        match self {
            Piece::Data { data, .. } => data.len() as u64,
            Piece::Zeros { len, .. } => *len,
        }
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Sees every piece the copy reads, after it was written: contiguous
/// within each range read, in order of offset, on a thread of its own (so
/// hashing overlaps reading and writing).
pub type Observer<'a> = &'a mut (dyn FnMut(Piece<'_>) + Send);

/// What to copy.
#[derive(Default)]
pub struct CopyOptions<'a> {
    /// The ranges `(offset, length)` to copy, in any order (overlaps are
    /// merged); `None` copies the whole disk.
    pub ranges: Option<Vec<(u64, u64)>>,
    /// More ranges to read and show the observer, without writing them.
    pub context: Vec<(u64, u64)>,
    pub observer: Option<Observer<'a>>,
}

/// What a copy did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct CopySummary {
    pub virtual_size: u64,
    /// Bytes read from the source (ranges known to be zeros are not read).
    pub bytes_read: u64,
    /// Bytes written into the sink.
    pub bytes_written: u64,
}

/// Bytes moved per step: large enough for sequential speed.
const CHUNK: u64 = 8 << 20;

/// Buffers in flight between the reader and the writer: one being read,
/// one being written, and one queued so neither waits on the other (one
/// more with an observer, which holds one while it looks at it).
const BUFFERS: usize = 3;

/// Zero detection granule: ranges of zeros this long are not written.
const GRANULE: usize = 64 << 10;

/// Bytes of the zeros buffer for sinks that must be given zeros.
const ZEROS: usize = 1 << 20;

/// Progress between two write-behind flushes: enough data for the disk to
/// stream, little enough that the final flush finds little left to do.
const WRITEBACK_STEP: u64 = 128 << 20;

/// Copies `src` into `sink` as `opts` says; `progress(done, total)` counts
/// the bytes of the ranges read (the whole disk, or the ranges and their
/// context) and runs on the caller's thread. The sink is not finished
/// (closed, flushed): that is its owner's business (see [`copy_into`]).
///
/// Reading (with the zero scan) runs on its own thread and writing on this
/// one, so the copy out of the source's page cache overlaps the copy into
/// the destination's: each costs about as much as the other, and doing them
/// one after the other left half of the machine idle. The sink's
/// [`Sink::writeback`] handle is flushed from a third thread every
/// 128 MiB written: the disk then writes while the copy goes on,
/// instead of all at once in the final flush.
pub fn copy(
    src: &dyn Source,
    sink: &mut dyn Sink,
    opts: CopyOptions<'_>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<CopySummary> {
    let size = src.size();
    let writes = match &opts.ranges {
        None => vec![(0, size)],
        Some(r) => normalize(r, size)?,
    };
    let mut reads = writes.clone();
    reads.extend(normalize(&opts.context, size)?);
    let reads = normalize(&reads, size)?;
    let total = reads.iter().map(|r| r.1).sum();
    let plan = Plan {
        reads,
        writes,
        skip_zeros: sink.unwritten_reads_zero(),
        observed: opts.observer.is_some(),
    };
    let writeback = sink.writeback();
    let buffers = BUFFERS + plan.observed as usize;
    std::thread::scope(|s| {
        let (full_tx, full_rx) = mpsc::sync_channel::<Result<Msg>>(buffers);
        let (free_tx, free_rx) = mpsc::channel::<Vec<u8>>();
        for _ in 0..buffers {
            free_tx
                .send(vec![0u8; CHUNK as usize])
                .expect("the receiver is alive");
        }
        let plan = &plan;
        let reader = s.spawn(move || read_pieces(src, plan, &full_tx, &free_rx));
        let (seen_tx, observer) = match opts.observer {
            Some(f) => {
                let (tx, rx) = mpsc::channel::<Chunk>();
                let free = free_tx.clone();
                (Some(tx), Some(s.spawn(move || observe(f, rx, free))))
            }
            None => (None, None),
        };
        let (tick_tx, tick_rx) = mpsc::channel::<()>();
        let flusher = writeback.map(|w| s.spawn(move || write_behind(&w, &tick_rx)));
        let mut next_tick = WRITEBACK_STEP;
        let written = write_pieces(
            sink,
            full_rx,
            free_tx,
            seen_tx,
            &mut |done| progress(done, total),
            &mut |written| {
                if written >= next_tick {
                    let _ = tick_tx.send(());
                    next_tick = written + WRITEBACK_STEP;
                }
            },
        );
        drop(tick_tx);
        let read = reader.join().expect("the reader thread does not panic");
        if let Some(o) = observer {
            o.join().expect("the observer does not panic");
        }
        let flushed = flusher.map(|f| f.join().expect("the flusher thread does not panic"));
        let written = written?;
        if let Some(r) = flushed {
            r?;
        }
        Ok(CopySummary {
            virtual_size: size,
            bytes_read: read,
            bytes_written: written,
        })
    })
}

/// Sorted, merged, non-empty ranges inside `0..size`.
fn normalize(ranges: &[(u64, u64)], size: u64) -> Result<Vec<(u64, u64)>> {
    let mut r: Vec<(u64, u64)> = Vec::with_capacity(ranges.len());
    for &(offset, len) in ranges {
        if offset.checked_add(len).is_none_or(|end| end > size) {
            return Err(CopyError::OutOfRange { offset, len, size });
        }
        if len > 0 {
            r.push((offset, len));
        }
    }
    r.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::with_capacity(r.len());
    for (o, l) in r {
        match out.last_mut() {
            Some(last) if last.0 + last.1 >= o => last.1 = last.1.max(o + l - last.0),
            _ => out.push((o, l)),
        }
    }
    Ok(out)
}

/// What the reader reads and which parts of it the writer writes.
struct Plan {
    /// Sorted, merged: the ranges and their context.
    reads: Vec<(u64, u64)>,
    /// Sorted, merged: the ranges to write.
    writes: Vec<(u64, u64)>,
    skip_zeros: bool,
    observed: bool,
}

impl Plan {
    /// The parts of `offset..offset+len` to write, relative to `offset`.
    fn writes_in(&self, offset: u64, len: u64) -> Vec<(usize, usize)> {
        let end = offset + len;
        let first = self.writes.partition_point(|&(o, l)| o + l <= offset);
        self.writes[first..]
            .iter()
            .take_while(|&&(o, _)| o < end)
            .map(|&(o, l)| {
                let (a, z) = (o.max(offset), (o + l).min(end));
                ((a - offset) as usize, (z - offset) as usize)
            })
            .collect()
    }
}

/// A piece of the source on its way: `buf` holds its bytes (`None`: known
/// zeros, not read); `runs` are the ranges of it (start, end) to write at
/// `offset + start`.
struct Chunk {
    offset: u64,
    len: u64,
    buf: Option<Vec<u8>>,
    runs: Vec<(usize, usize)>,
}

enum Msg {
    Data(Chunk),
    /// This many bytes of the ranges to read have been sent.
    Done(u64),
}

/// The reader's side of [`copy`]: sends the ranges to read piece by
/// piece, each piece with data in a buffer taken from `free`. Stops at the
/// first error (sent on) or when the writer has gone. Returns the bytes
/// read.
fn read_pieces(
    src: &dyn Source,
    plan: &Plan,
    full: &SyncSender<Result<Msg>>,
    free: &Receiver<Vec<u8>>,
) -> u64 {
    let mut read = 0;
    let mut done = 0;
    for &(start, len) in &plan.reads {
        let mut pos = start;
        while pos < start + len {
            let n = CHUNK.min(start + len - pos);
            let extents = match src.extents(pos, n) {
                Ok(x) => x,
                Err(source) => {
                    let _ = full.send(Err(CopyError::Read {
                        offset: pos,
                        source,
                    }));
                    return read;
                }
            };
            for (offset, l, data) in extents {
                let writes = plan.writes_in(offset, l);
                let chunk = if data {
                    let Ok(mut buf) = free.recv() else {
                        return read;
                    };
                    buf.resize(l as usize, 0);
                    if let Err(source) = src.read_at(offset, &mut buf) {
                        let _ = full.send(Err(CopyError::Read { offset, source }));
                        return read;
                    }
                    read += l;
                    let runs = if plan.skip_zeros {
                        writes
                            .iter()
                            .flat_map(|&(a, z)| {
                                nonzero_runs(&buf[a..z], offset + a as u64)
                                    .into_iter()
                                    .map(move |(s, e)| (a + s, a + e))
                            })
                            .collect()
                    } else {
                        writes
                    };
                    Chunk {
                        offset,
                        len: l,
                        buf: Some(buf),
                        runs,
                    }
                } else {
                    let runs = if plan.skip_zeros { vec![] } else { writes };
                    if runs.is_empty() && !plan.observed {
                        continue;
                    }
                    Chunk {
                        offset,
                        len: l,
                        buf: None,
                        runs,
                    }
                };
                if full.send(Ok(Msg::Data(chunk))).is_err() {
                    return read;
                }
            }
            pos += n;
            done += n;
            if full.send(Ok(Msg::Done(done))).is_err() {
                return read;
            }
        }
    }
    read
}

/// The writer's side of [`copy`]: writes each piece, then hands it to the
/// observer or its buffer back. Returns the bytes written. Dropping
/// `full`, `free` and `seen` on return is what stops the reader early
/// after an error.
fn write_pieces(
    sink: &mut dyn Sink,
    full: Receiver<Result<Msg>>,
    free: Sender<Vec<u8>>,
    seen: Option<Sender<Chunk>>,
    progress: &mut dyn FnMut(u64),
    wrote: &mut dyn FnMut(u64),
) -> Result<u64> {
    let mut written = 0;
    let mut zeros = Vec::new();
    for msg in full {
        match msg? {
            Msg::Data(c) => {
                for &(start, end) in &c.runs {
                    let at = c.offset + start as u64;
                    match &c.buf {
                        Some(b) => sink.write(at, &b[start..end])?,
                        None => {
                            // Known zeros the sink must hold (a child
                            // would read its parent there).
                            if zeros.is_empty() {
                                zeros = vec![0u8; ZEROS];
                            }
                            let mut p = start;
                            while p < end {
                                let n = zeros.len().min(end - p);
                                sink.write(c.offset + p as u64, &zeros[..n])?;
                                p += n;
                            }
                        }
                    }
                    written += (end - start) as u64;
                }
                if !c.runs.is_empty() {
                    wrote(written);
                }
                // Without an observer (or once it has died: the copy then
                // ends and its panic is passed on) the buffer goes back.
                let back = match &seen {
                    Some(tx) => tx.send(c).err().map(|e| e.0),
                    None => Some(c),
                };
                if let Some(b) = back.and_then(|c| c.buf) {
                    let _ = free.send(b);
                }
            }
            Msg::Done(done) => progress(done),
        }
    }
    Ok(written)
}

/// The observer's thread: shows each piece, then gives its buffer back.
fn observe(f: Observer<'_>, seen: Receiver<Chunk>, free: Sender<Vec<u8>>) {
    for c in seen {
        match c.buf {
            Some(b) => {
                f(Piece::Data {
                    offset: c.offset,
                    data: &b,
                });
                let _ = free.send(b);
            }
            None => f(Piece::Zeros {
                offset: c.offset,
                len: c.len,
            }),
        }
    }
}

/// Flushes the file once per tick (ticks that queue up while a flush runs
/// count as one) until the ticks stop.
fn write_behind(w: &Writeback, ticks: &Receiver<()>) -> Result<()> {
    while ticks.recv().is_ok() {
        while ticks.try_recv().is_ok() {}
        w.file.flush().map_err(|source| VdiskError::Io {
            path: w.name.clone(),
            op: "flushing (write-behind)",
            source,
        })?;
    }
    Ok(())
}

/// The ranges of `b` that are not all zeros, in [`GRANULE`] steps of the
/// virtual disk (`b` being the bytes at `offset`).
fn nonzero_runs(b: &[u8], offset: u64) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    let mut start = 0;
    while start < b.len() {
        let phase = ((offset + start as u64) % GRANULE as u64) as usize;
        let end = (start + GRANULE - phase).min(b.len());
        if !is_zero(&b[start..end]) {
            match runs.last_mut() {
                Some(last) if last.1 == start => last.1 = end,
                _ => runs.push((start, end)),
            }
        }
        start = end;
    }
    runs
}

/// A new image being written: a VHDX (fixed, dynamic, or a differencing
/// child) or a raw file, under a temporary name (`.<name>.copying`, next
/// to the destination) until [`Output::finish`] renames it into place.
///
/// Dropped unfinished (an error on the way), it removes its file.
pub struct Output<'a> {
    fs: &'a dyn Fs,
    path: PathBuf,
    tmp: PathBuf,
    file: Option<OutFile>,
    writeback: Option<Arc<dyn Storage>>,
}

enum OutFile {
    Vhdx(Box<Vhdx>),
    Raw(Arc<dyn Storage>),
}

impl<'a> Output<'a> {
    /// A new fixed or dynamic VHDX at `path`.
    pub fn vhdx(fs: &'a dyn Fs, path: &Path, opts: &CreateOptions) -> Result<Self> {
        let tmp = Self::prepare(fs, path)?;
        let v = create(fs, &tmp, opts).inspect_err(|_| remove_failed(fs, &tmp))?;
        Ok(Self::new(fs, path, tmp, OutFile::Vhdx(Box::new(v))))
    }

    /// A new differencing VHDX at `path` whose parent is `parent` (its
    /// size and sectors, and its block size unless given).
    pub fn vhdx_child(
        fs: &'a dyn Fs,
        path: &Path,
        parent: &Path,
        block_size: Option<u32>,
    ) -> Result<Self> {
        let tmp = Self::prepare(fs, path)?;
        // In the same directory, so the parent's relative path holds for
        // the final name too.
        let v =
            create_child(fs, &tmp, parent, block_size).inspect_err(|_| remove_failed(fs, &tmp))?;
        Ok(Self::new(fs, path, tmp, OutFile::Vhdx(Box::new(v))))
    }

    /// A new raw file of `size` bytes at `path` (sparse: what is not
    /// written reads as zeros).
    pub fn raw(fs: &'a dyn Fs, path: &Path, size: u64) -> Result<Self> {
        let tmp = Self::prepare(fs, path)?;
        let f = fs.create(&tmp).map_err(io_err(&tmp, "creating"))?;
        // Made first, so a failure from here on removes the file.
        let out = Self::new(fs, path, tmp.clone(), OutFile::Raw(f.clone()));
        f.set_len(size).map_err(io_err(&tmp, "sizing"))?;
        Ok(out)
    }

    /// A new image of `format` at `path`: a VHDX as `opts` says, or a raw
    /// file of `opts.virtual_size` bytes.
    pub fn create(
        fs: &'a dyn Fs,
        path: &Path,
        format: Format,
        opts: &CreateOptions,
    ) -> Result<Self> {
        match format {
            Format::Vhdx => Self::vhdx(fs, path, opts),
            Format::Raw => Self::raw(fs, path, opts.virtual_size),
        }
    }

    /// Refuses an existing destination and clears a stale temporary file
    /// (of a copy cut short); returns the temporary name.
    fn prepare(fs: &dyn Fs, path: &Path) -> Result<PathBuf> {
        let exists = |p: &Path| fs.exists(p).map_err(io_err(p, "looking up"));
        if exists(path)? {
            return Err(CopyError::Exists {
                file: path.display().to_string(),
            });
        }
        let mut tmp = path.to_path_buf();
        tmp.set_file_name(format!(
            ".{}.copying",
            path.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        ));
        if exists(&tmp)? {
            fs.remove(&tmp)
                .map_err(io_err(&tmp, "removing a stale temporary file"))?;
        }
        Ok(tmp)
    }

    fn new(fs: &'a dyn Fs, path: &Path, tmp: PathBuf, file: OutFile) -> Self {
        // Without this handle the copy is only slower, so failing to open
        // it is no error.
        let writeback = fs.open(&tmp, OpenMode::ReadOnly).ok();
        Self {
            fs,
            path: path.to_path_buf(),
            tmp,
            file: Some(file),
            writeback,
        }
    }

    /// The destination.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Makes the image durable and gives it its name: flushed (a VHDX
    /// closed), renamed into place, the directory synced. On failure the
    /// file is removed.
    pub fn finish(mut self) -> Result<()> {
        let file = self.file.take().expect("an output is finished once");
        self.writeback = None;
        let r = (|| -> Result<()> {
            match file {
                OutFile::Vhdx(v) => v.close()?,
                OutFile::Raw(f) => f.flush().map_err(io_err(&self.tmp, "flushing"))?,
            }
            self.fs
                .rename_durable(&self.tmp, &self.path)
                .map_err(io_err(&self.path, "renaming into place"))?;
            Ok(())
        })();
        if r.is_err() {
            // The rename may have happened, but its directory is not
            // synced: the file goes under either name.
            self.remove_files();
        }
        r
    }

    /// Gives up: removes the file, durably.
    pub fn discard(mut self) -> Result<()> {
        self.discard_inner()
    }

    fn discard_inner(&mut self) -> Result<()> {
        self.writeback = None;
        match self.file.take() {
            Some(OutFile::Vhdx(v)) => v.abandon(),
            Some(OutFile::Raw(f)) => drop(f),
            None => return Ok(()),
        }
        self.fs
            .remove_durable(&self.tmp)
            .map_err(io_err(&self.tmp, "removing"))?;
        Ok(())
    }

    fn remove_files(&self) {
        remove_failed(self.fs, &self.tmp);
        remove_failed(self.fs, &self.path);
    }
}

impl Drop for Output<'_> {
    fn drop(&mut self) {
        let _ = self.discard_inner();
    }
}

impl Sink for Output<'_> {
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        match self.file.as_mut().expect("not finished") {
            OutFile::Vhdx(v) => Sink::write(&mut **v, offset, data),
            OutFile::Raw(f) => f.write_at(offset, data).map_err(|source| CopyError::Write {
                file: self.tmp.display().to_string(),
                offset,
                source: io_err(&self.tmp, "writing")(source),
            }),
        }
    }
    fn unwritten_reads_zero(&self) -> bool {
        match self.file.as_ref().expect("not finished") {
            OutFile::Vhdx(v) => Sink::unwritten_reads_zero(&**v),
            OutFile::Raw(_) => true,
        }
    }
    fn writeback(&self) -> Option<Writeback> {
        self.writeback.clone().map(|file| Writeback {
            file,
            name: self.tmp.display().to_string(),
        })
    }
}

/// Removes `path`, durably, if it is there: best effort, after a failure
/// (a create whose rename into place failed at the directory sync, say),
/// whose error is the one to report.
fn remove_failed(fs: &dyn Fs, path: &Path) {
    if fs.exists(path).unwrap_or(true) {
        let _ = fs.remove_durable(path);
    }
}

/// Maps an I/O error on `path` while `op` to a [`VdiskError`].
fn io_err(path: &Path, op: &'static str) -> impl FnOnce(io::Error) -> VdiskError {
    let path = path.display().to_string();
    move |source| VdiskError::Io { path, op, source }
}

/// Copies `src` into the new image `out` and finishes it
/// ([`Output::finish`]); if anything fails, the image is removed
/// (durably) and the first error returned.
pub fn copy_into(
    src: &dyn Source,
    mut out: Output<'_>,
    opts: CopyOptions<'_>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<CopySummary> {
    match copy(src, &mut out, opts, progress) {
        Ok(s) => {
            out.finish()?;
            Ok(s)
        }
        Err(e) => {
            let _ = out.discard();
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use storage::{CrashFs, Fault, LocalFs};

    /// Records what it is given; fails at the write numbered `fail_at`.
    struct Recorder {
        writes: Vec<(u64, Vec<u8>)>,
        fail_at: Option<usize>,
        zeros_read_as_zero: bool,
        writeback: Option<Arc<dyn Storage>>,
    }

    impl Recorder {
        fn new() -> Self {
            Recorder {
                writes: vec![],
                fail_at: None,
                zeros_read_as_zero: true,
                writeback: None,
            }
        }

        /// The recorded writes laid over `base`; checks that they came in
        /// order.
        fn apply(&self, base: &[u8]) -> Vec<u8> {
            let mut out = base.to_vec();
            let mut last = 0;
            for (off, b) in &self.writes {
                assert!(*off >= last, "writes arrive in order");
                out[*off as usize..*off as usize + b.len()].copy_from_slice(b);
                last = off + b.len() as u64;
            }
            out
        }

        fn bytes(&self) -> u64 {
            self.writes.iter().map(|w| w.1.len() as u64).sum()
        }
    }

    impl Sink for Recorder {
        fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
            if Some(self.writes.len()) == self.fail_at {
                return Err(CopyError::Write {
                    file: "recorder".into(),
                    offset,
                    source: VdiskError::Io {
                        path: "recorder".into(),
                        op: "writing",
                        source: io::Error::new(io::ErrorKind::StorageFull, "the sink is full"),
                    },
                });
            }
            self.writes.push((offset, data.to_vec()));
            Ok(())
        }
        fn unwritten_reads_zero(&self) -> bool {
            self.zeros_read_as_zero
        }
        fn writeback(&self) -> Option<Writeback> {
            self.writeback.clone().map(|file| Writeback {
                file,
                name: "recorder".into(),
            })
        }
    }

    /// Several chunks of data with a zero granule in the second.
    fn pattern() -> Vec<u8> {
        let size = 3 * CHUNK as usize + 5 * GRANULE;
        let mut data: Vec<u8> = (0..size).map(|i| (i % 251) as u8 | 1).collect();
        let hole = CHUNK as usize + 2 * GRANULE;
        data[hole..hole + GRANULE].fill(0);
        data
    }

    /// A raw image of [`pattern`] on the local file system.
    fn raw_image(dir: &Path) -> (Image, Vec<u8>) {
        let data = pattern();
        let path = dir.join("src.img");
        std::fs::write(&path, &data).unwrap();
        let file = LocalFs.open(&path, OpenMode::ReadOnly).unwrap();
        let size = data.len() as u64;
        (Image::Raw { file, size }, data)
    }

    const MIB: u64 = 1 << 20;

    /// A dynamic VHDX on `fs` with 1 MiB blocks: every other block
    /// written (the rest unallocated), one written block all zeros.
    fn sparse_vhdx(fs: &dyn Fs, path: &Path) -> Vec<u8> {
        let size = 8 * MIB;
        let mut v = create(fs, path, &vhdx_opts(size)).unwrap();
        let mut model = vec![0u8; size as usize];
        for b in (0..8).step_by(2) {
            let at = (b * MIB) as usize;
            if b != 4 {
                for (i, x) in model[at..at + MIB as usize].iter_mut().enumerate() {
                    *x = (i % 253) as u8 | 1;
                }
            }
            v.write(at as u64, &model[at..at + MIB as usize]).unwrap();
        }
        v.close().unwrap();
        model
    }

    fn vhdx_opts(size: u64) -> CreateOptions {
        CreateOptions {
            virtual_size: size,
            disk_type: DiskType::Dynamic,
            block_size: MIB as u32,
            logical_sector_size: 512,
            physical_sector_size: 4096,
        }
    }

    fn read_all(src: &dyn Source) -> Vec<u8> {
        let mut b = vec![0u8; src.size() as usize];
        src.read_at(0, &mut b).unwrap();
        b
    }

    #[test]
    fn nonzero_runs_merge_data_and_skip_zero_granules() {
        let mut b = vec![1u8; 4 * GRANULE + 10];
        b[GRANULE..2 * GRANULE].fill(0);
        b[4 * GRANULE..].fill(0);
        assert_eq!(
            nonzero_runs(&b, 0),
            vec![(0, GRANULE), (2 * GRANULE, 4 * GRANULE)]
        );
        assert!(nonzero_runs(&[0u8; 100], 0).is_empty());
        // Granules are cut at multiples of their size on the disk.
        let g = GRANULE as u64;
        assert_eq!(
            nonzero_runs(&b[100..], g + 100),
            vec![(0, GRANULE - 100), (2 * GRANULE - 100, 4 * GRANULE - 100)]
        );
        let mut c = vec![0u8; 2 * GRANULE];
        c[GRANULE + 5] = 1;
        assert_eq!(
            nonzero_runs(&c[10..], 10),
            vec![(GRANULE - 10, 2 * GRANULE - 10)]
        );
    }

    #[test]
    fn copy_writes_every_nonzero_byte_in_order() {
        let d = tempfile::tempdir().unwrap();
        let (image, data) = raw_image(d.path());
        // The source stands in for the destination of the write-behind
        // flushes, which only need some file to flush.
        let Image::Raw { file, .. } = &image else {
            unreachable!()
        };
        let mut sink = Recorder {
            writeback: Some(file.clone()),
            ..Recorder::new()
        };
        let mut seen = vec![];
        let s = copy(
            &image,
            &mut sink,
            CopyOptions::default(),
            &mut |done, total| seen.push((done, total)),
        )
        .unwrap();
        assert_eq!(s.bytes_read, data.len() as u64);
        assert_eq!(s.bytes_written, (data.len() - GRANULE) as u64);
        assert_eq!(sink.bytes(), s.bytes_written);
        assert_eq!(sink.apply(&vec![0; data.len()]), data);
        let n = data.len() as u64;
        assert_eq!(seen.last(), Some(&(n, n)));
    }

    #[test]
    fn a_failing_sink_stops_the_copy() {
        let d = tempfile::tempdir().unwrap();
        let (image, _) = raw_image(d.path());
        let mut sink = Recorder {
            fail_at: Some(1),
            ..Recorder::new()
        };
        let e = copy(&image, &mut sink, CopyOptions::default(), &mut |_, _| {}).unwrap_err();
        assert!(e.to_string().contains("the sink is full"), "{e}");
        assert!(e.is_no_space());
        assert_eq!(sink.writes.len(), 1);
    }

    #[test]
    fn ranges_copy_only_those_bytes_merged_and_in_order() {
        let d = tempfile::tempdir().unwrap();
        let (image, data) = raw_image(d.path());
        let g = GRANULE as u64;
        // Out of order and overlapping; one crosses a chunk boundary, one
        // covers the zero granule, one is empty.
        let ranges = vec![
            (CHUNK + 2 * g - 100, g + 200),
            (5000, 10),
            (3 * CHUNK - 7, 20),
            (5003, 100),
            (17, 0),
        ];
        let mut sink = Recorder::new();
        let mut last = (0, 0);
        let opts = CopyOptions {
            ranges: Some(ranges),
            ..Default::default()
        };
        let s = copy(&image, &mut sink, opts, &mut |d, t| last = (d, t)).unwrap();
        let mut want = vec![0u8; data.len()];
        for (o, l) in [
            (5000, 103),
            (CHUNK + 2 * g - 100, 100),
            (CHUNK + 3 * g, 100),
        ] {
            let r = o as usize..(o + l) as usize;
            want[r.clone()].copy_from_slice(&data[r]);
        }
        let r = (3 * CHUNK - 7) as usize..(3 * CHUNK + 13) as usize;
        want[r.clone()].copy_from_slice(&data[r]);
        assert_eq!(sink.apply(&vec![0; data.len()]), want);
        // The zero granule in the middle of a range is skipped.
        assert_eq!(s.bytes_written, 103 + 200 + 20);
        assert_eq!(s.bytes_read, 103 + g + 200 + 20);
        assert_eq!(last, (s.bytes_read, s.bytes_read));

        let past = CopyOptions {
            ranges: Some(vec![(data.len() as u64 - 10, 11)]),
            ..Default::default()
        };
        let e = copy(&image, &mut Recorder::new(), past, &mut |_, _| {}).unwrap_err();
        assert!(matches!(e, CopyError::OutOfRange { len: 11, .. }), "{e}");
    }

    #[test]
    fn a_sink_that_reads_its_parent_gets_the_zeros_too() {
        let fs = CrashFs::new();
        let model = sparse_vhdx(&fs, Path::new("/src.vhdx"));
        let src = Chain::open(&fs, Path::new("/src.vhdx"), false).unwrap();
        let mut sink = Recorder {
            zeros_read_as_zero: false,
            ..Recorder::new()
        };
        // Blocks 0-1 (data, then unallocated), block 4 (written zeros).
        let ranges = vec![(MIB - 10, MIB + 20), (4 * MIB + 512, 4096)];
        let opts = CopyOptions {
            ranges: Some(ranges.clone()),
            ..Default::default()
        };
        let s = copy(&src, &mut sink, opts, &mut |_, _| {}).unwrap();
        assert_eq!(s.bytes_written, MIB + 20 + 4096);
        // Only the allocated blocks are read.
        assert_eq!(s.bytes_read, 10 + 10 + 4096);
        let junk = vec![0xeeu8; model.len()];
        let mut want = junk.clone();
        for (o, l) in ranges {
            let r = o as usize..(o + l) as usize;
            want[r.clone()].copy_from_slice(&model[r]);
        }
        assert_eq!(sink.apply(&junk), want);
    }

    #[test]
    fn the_observer_sees_ranges_and_context_in_order_and_context_is_not_written() {
        let fs = CrashFs::new();
        let model = sparse_vhdx(&fs, Path::new("/src.vhdx"));
        let src = Chain::open(&fs, Path::new("/src.vhdx"), false).unwrap();
        let seen = Mutex::new(Vec::<(u64, Option<Vec<u8>>, u64)>::new());
        let mut observer = |p: Piece<'_>| {
            let d = match p {
                Piece::Data { data, .. } => Some(data.to_vec()),
                Piece::Zeros { .. } => None,
            };
            seen.lock().unwrap().push((p.offset(), d, p.len()));
        };
        let mut sink = Recorder::new();
        let opts = CopyOptions {
            ranges: Some(vec![(2 * MIB + 100, 50)]),
            // The range's block and the next (unallocated) one, and a
            // piece of the last block.
            context: vec![(2 * MIB, 2 * MIB), (7 * MIB, 4096)],
            observer: Some(&mut observer),
        };
        let s = copy(&src, &mut sink, opts, &mut |_, _| {}).unwrap();
        assert_eq!(
            sink.writes,
            vec![(
                2 * MIB + 100,
                model[(2 * MIB + 100) as usize..][..50].to_vec()
            )]
        );
        assert_eq!(s.bytes_written, 50);
        assert_eq!(s.bytes_read, MIB);
        let seen = seen.into_inner().unwrap();
        let mut pos = 2 * MIB;
        let mut covered = 0;
        for (off, data, len) in &seen {
            if *off != pos {
                assert_eq!((pos, *off), (4 * MIB, 7 * MIB), "contiguous per range");
            }
            let want = &model[*off as usize..(*off + len) as usize];
            match data {
                Some(d) => assert_eq!(d.as_slice(), want),
                None => assert!(is_zero(want)),
            }
            pos = off + len;
            covered += len;
        }
        assert_eq!((pos, covered), (7 * MIB + 4096, 2 * MIB + 4096));
        assert!(seen.iter().any(|s| s.1.is_none()), "the unallocated block");
    }

    /// Fills `/out` from the sparse VHDX through [`copy_into`], as
    /// `format` (or a child of `/parent.vhdx` over the given ranges).
    fn fill(
        fs: &CrashFs,
        format: Option<Format>,
        ranges: Option<Vec<(u64, u64)>>,
    ) -> Result<CopySummary> {
        let src = Chain::open(fs, Path::new("/src.vhdx"), false).map_err(VdiskError::from)?;
        let out = match format {
            Some(f) => Output::create(fs, Path::new("/out"), f, &vhdx_opts(src.virtual_size()))?,
            None => Output::vhdx_child(fs, Path::new("/out"), Path::new("/parent.vhdx"), None)?,
        };
        let opts = CopyOptions {
            ranges,
            ..Default::default()
        };
        copy_into(&src, out, opts, &mut |_, _| {})
    }

    /// What `/out` reads as, if it exists.
    fn out_content(fs: &CrashFs) -> Option<Vec<u8>> {
        if !fs.exists(Path::new("/out")).unwrap() {
            return None;
        }
        Some(read_all(
            &Image::open(fs, Path::new("/out"), false).unwrap(),
        ))
    }

    #[test]
    fn a_failed_copy_leaves_no_file_and_a_finished_one_is_durable() {
        for format in [Some(Format::Raw), Some(Format::Vhdx), None] {
            let base = CrashFs::new();
            let model = sparse_vhdx(&base, Path::new("/src.vhdx"));
            let parent = vec![0x5au8; model.len()];
            let mut p = create(
                &base,
                Path::new("/parent.vhdx"),
                &vhdx_opts(model.len() as u64),
            )
            .unwrap();
            p.write(0, &parent).unwrap();
            p.close().unwrap();
            // The child gets blocks 1 to 4: its parent's data elsewhere.
            let ranges = format.is_none().then(|| vec![(MIB, 4 * MIB)]);
            let mut want = if format.is_none() {
                parent.clone()
            } else {
                model.clone()
            };
            if format.is_none() {
                want[MIB as usize..5 * MIB as usize]
                    .copy_from_slice(&model[MIB as usize..5 * MIB as usize]);
            }
            let mut failures = 0;
            for k in 0.. {
                let fs = base.clone();
                fs.inject_fault(k, Fault::NoSpace);
                let r = fill(&fs, format, ranges.clone());
                let hit = !fs.fault_pending();
                fs.clear_faults();
                let mut rng = <rand::rngs::SmallRng as rand::SeedableRng>::seed_from_u64(k);
                let left = |fs: &CrashFs| {
                    ["/out", "/.out.copying"]
                        .into_iter()
                        .filter(|p| fs.exists(Path::new(p)).unwrap())
                        .collect::<Vec<_>>()
                };
                match r {
                    Err(e) => {
                        assert!(hit, "{format:?} fault {k}: {e}");
                        failures += 1;
                        assert_eq!(left(&fs), [""; 0], "{format:?} fault {k}: {e}");
                        fs.crash(&mut rng);
                        assert_eq!(left(&fs), [""; 0], "{format:?} fault {k} ({e}), crash");
                    }
                    Ok(_) => {
                        assert_eq!(out_content(&fs).as_ref(), Some(&want), "{format:?}");
                        fs.crash(&mut rng);
                        let after = out_content(&fs);
                        assert_eq!(after.as_ref(), Some(&want), "{format:?} fault {k}, crash");
                        fs.remove_durable(Path::new("/out")).unwrap();
                        if !hit {
                            // The fault lay past the copy's last operation.
                            break;
                        }
                    }
                }
            }
            assert!(failures > 5, "{format:?}: {failures}");
        }
    }

    #[test]
    fn a_power_cut_leaves_the_whole_output_or_none() {
        for format in [Format::Raw, Format::Vhdx] {
            let mut finished = false;
            for budget in 0..1000 {
                let fs = CrashFs::new();
                let model = sparse_vhdx(&fs, Path::new("/src.vhdx"));
                fs.set_power_budget(Some(budget));
                let r = fill(&fs, Some(format), None);
                let cut = fs.power_failed();
                let mut rng = <rand::rngs::SmallRng as rand::SeedableRng>::seed_from_u64(budget);
                fs.crash(&mut rng);
                match out_content(&fs) {
                    Some(c) => assert!(c == model, "{format:?} budget {budget}: a partial output"),
                    None => assert!(
                        r.is_err(),
                        "{format:?} budget {budget}: reported done, gone"
                    ),
                }
                if !cut {
                    assert!(r.is_ok());
                    finished = true;
                    break;
                }
            }
            assert!(finished, "{format:?}: the copy needs more operations");
        }
    }

    #[test]
    fn an_existing_destination_is_refused_and_kept() {
        let fs = CrashFs::new();
        fs.insert(Path::new("/out"), b"mine".to_vec());
        for format in [Format::Raw, Format::Vhdx] {
            let e = Output::create(&fs, Path::new("/out"), format, &vhdx_opts(MIB))
                .err()
                .unwrap();
            assert!(matches!(e, CopyError::Exists { .. }), "{e}");
            assert!(e.to_string().contains("already exists"));
        }
        assert_eq!(fs.read_file(Path::new("/out")).unwrap(), b"mine");
    }

    #[test]
    fn a_stale_temporary_file_is_replaced() {
        let fs = CrashFs::new();
        let model = sparse_vhdx(&fs, Path::new("/src.vhdx"));
        fs.insert(Path::new("/.out.copying"), vec![9; 100]);
        fill(&fs, Some(Format::Raw), None).unwrap();
        assert_eq!(out_content(&fs), Some(model));
        assert!(!fs.exists(Path::new("/.out.copying")).unwrap());
    }

    #[test]
    fn format_from_path_and_extension() {
        assert_eq!(Format::from_path(Path::new("a/b.VHDX")), Format::Vhdx);
        assert_eq!(Format::from_path(Path::new("b.avhdx")), Format::Vhdx);
        assert_eq!(Format::from_path(Path::new("b.img")), Format::Raw);
        assert_eq!(Format::from_path(Path::new("b")), Format::Raw);
        assert_eq!(Format::Vhdx.extension(), "vhdx");
        assert_eq!(Format::Raw.extension(), "img");
    }
}
