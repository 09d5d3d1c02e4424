//! [`Disk`]: an image plus its change tracking, with the write queue that
//! keeps every data write behind a durable mark.

use crate::error::{Result, VdiskError};
use crate::image::Image;
use rct::{tracking_path, Changes, RctError, RctId, Tracker, TrackingState};
use roaring::RoaringBitmap;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use storage::Fs;
use uuid::Uuid;

/// Ops waiting for their marks to become durable.
enum Op {
    Write(Vec<u8>),
    Zero(u64),
    Trim(u64),
}

impl Op {
    fn len(&self) -> u64 {
        match self {
            Op::Write(d) => d.len() as u64,
            Op::Zero(n) | Op::Trim(n) => *n,
        }
    }
}

/// What the tracking of a disk is doing.
enum Tracking {
    /// No tracking file.
    Missing,
    On(Box<Tracker>),
    /// The tracking file exists but could not be used; queries return this.
    Broken(RctError),
}

/// The tracking situation, for status displays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrackingStatus {
    Missing,
    On(TrackingState),
    Broken { kind: &'static str, message: String },
}

/// Queue limits: one journal fsync is shared by this many queued bytes/ops.
const QUEUE_MAX_BYTES: u64 = 64 << 20;
const QUEUE_MAX_OPS: usize = 16384;
/// Sequential streams mark up to this far ahead of themselves. The window
/// doubles each time a stream reaches its end, so it never exceeds the
/// stream's length so far: a stream reports at most about twice what it
/// wrote. It starts over at every seal.
const MAX_WINDOW: u64 = 1 << 30;

/// An opened disk with tracked writes.
pub struct Disk {
    fs: Arc<dyn Fs>,
    path: PathBuf,
    /// The disk whose tracking file (`<owner>.rct`) this disk uses: itself,
    /// or for a machine disk with checkpoints, its original base file.
    owner: PathBuf,
    name: String,
    image: Image,
    writable: bool,
    tracking: Tracking,
    /// Ops accepted but not yet applied to the image, in order. An op
    /// leaves the queue only once applied: after a failure the rest stay
    /// queued and every later flush fails until they are applied.
    queue: VecDeque<(u64, Op)>,
    queued_bytes: u64,
    /// Tracking regions the queued ops touch. An op touching none of them
    /// overlaps no queued op, so it may overtake the queue (writes to
    /// different bytes commute until a flush orders them).
    queued_regions: RoaringBitmap,
    /// The DataWriteGuid journaled for this session, to be applied to the
    /// VHDX at the next commit.
    pending_identity: Option<Uuid>,
    identity_done: bool,
    /// Identities adopted for files this disk is switching to; kept across
    /// the clean close.
    adopted: Vec<String>,
    /// Where the last write ended, and the current look-ahead window.
    seq_end: u64,
    window: u64,
    /// Set by an error after which the disk cannot vouch for what it
    /// acknowledged (see [`VdiskError::Failed`]).
    failed: Option<(String, bool)>,
}

impl Disk {
    /// Opens a disk. Tracking problems never fail the open: they are kept
    /// and reported by tracking queries.
    pub fn open(fs: Arc<dyn Fs>, path: &Path, writable: bool) -> Result<Self> {
        Self::open_tracked_as(fs, path, path, writable)
    }

    /// Opens `path` (e.g. the newest file of a chain) with the tracking of
    /// `owner` (the disk's original file, where `<owner>.rct` lives).
    pub fn open_tracked_as(
        fs: Arc<dyn Fs>,
        path: &Path,
        owner: &Path,
        writable: bool,
    ) -> Result<Self> {
        let image = Image::open(&*fs, path, writable)?;
        let rct = tracking_path(owner);
        let tracking = match fs.exists(&rct) {
            Ok(true) => {
                match image
                    .identity()
                    .and_then(|id| Ok(Tracker::open(fs.clone(), owner, image.size(), &id)?))
                {
                    Ok(t) => Tracking::On(Box::new(t)),
                    Err(VdiskError::Tracking(e)) => Tracking::Broken(e),
                    Err(e) => return Err(e),
                }
            }
            Ok(false) => Tracking::Missing,
            // Not knowing whether the disk is tracked must not make its
            // writes untracked: queries say why, writes are refused.
            Err(source) => Tracking::Broken(RctError::Io {
                path: rct.display().to_string(),
                op: "looking up",
                source: Arc::new(source),
            }),
        };
        // A raw file has no identity to change; a VHDX changes it on its
        // first write of a session, which must be journaled first.
        let identity_done = matches!(image, Image::Raw { .. });
        Ok(Disk {
            fs,
            path: path.to_path_buf(),
            owner: owner.to_path_buf(),
            name: path.display().to_string(),
            image,
            writable,
            tracking,
            queue: VecDeque::new(),
            queued_bytes: 0,
            queued_regions: RoaringBitmap::new(),
            pending_identity: None,
            identity_done,
            adopted: Vec::new(),
            seq_end: u64::MAX,
            window: 0,
            failed: None,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn size(&self) -> u64 {
        self.image.size()
    }
    pub fn image(&self) -> &Image {
        &self.image
    }
    pub fn is_tracked(&self) -> bool {
        matches!(self.tracking, Tracking::On(_))
    }

    /// Fails once an earlier error stopped the disk.
    fn healthy(&self) -> Result<()> {
        match &self.failed {
            None => Ok(()),
            Some((cause, no_space)) => Err(VdiskError::Failed {
                path: self.name.clone(),
                cause: cause.clone(),
                no_space: *no_space,
            }),
        }
    }

    /// Whether an earlier error stopped the disk (it must be reopened).
    pub fn has_failed(&self) -> bool {
        self.failed.is_some()
    }

    /// Handles an error of the write path: one that left nothing half done
    /// is returned as it is (the op stays queued and is issued again);
    /// any other stops the disk.
    fn after_error(&mut self, e: VdiskError) -> VdiskError {
        if !e.is_retryable() && self.failed.is_none() {
            self.stop(&e);
        }
        e
    }

    /// Stops the disk after `e`. Unless the tracking itself failed, it is
    /// told that data counted as written may be lost on the medium (a
    /// failed flush, also one inside a VHDX write), so it proves no change
    /// any more; if even that cannot be journaled, the tracking stops too.
    fn stop(&mut self, e: &VdiskError) {
        self.failed = Some((e.to_string(), e.is_no_space()));
        if let (Tracking::On(t), false) = (&mut self.tracking, matches!(e, VdiskError::Tracking(_)))
        {
            let _ = t.distrust(&format!("an I/O error on {}: {e}", self.name));
        }
    }

    fn check(&self, offset: u64, len: u64, write: bool) -> Result<()> {
        if write && !self.writable {
            return Err(VdiskError::ReadOnly {
                path: self.name.clone(),
            });
        }
        if write {
            self.healthy()?;
        }
        let size = self.size();
        if offset.checked_add(len).is_none_or(|e| e > size) {
            return Err(VdiskError::OutOfRange {
                path: self.name.clone(),
                offset,
                len,
                size,
            });
        }
        Ok(())
    }

    // ---- I/O ----

    /// Reads without exclusive access, so readers can run in parallel;
    /// `None` when queued writes overlap the range (then use
    /// [`Disk::read`], which commits them first).
    pub fn read_shared(&self, offset: u64, buf: &mut [u8]) -> Option<Result<()>> {
        if let Err(e) = self.check(offset, buf.len() as u64, false) {
            return Some(Err(e));
        }
        if self.queue_overlaps(offset, buf.len() as u64) {
            return None;
        }
        Some(self.image.read(&self.name, offset, buf))
    }

    pub fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        if let Some(r) = self.read_shared(offset, buf) {
            return r;
        }
        self.commit()?;
        self.image.read(&self.name, offset, buf)
    }

    /// Ranges of `offset..offset+len` that may hold data (`true`) or read
    /// as zeros (`false`), queued writes included.
    pub fn extents(&mut self, offset: u64, len: u64) -> Result<Vec<(u64, u64, bool)>> {
        self.check(offset, len, false)?;
        if self.queue_overlaps(offset, len) {
            self.commit()?;
        }
        self.image.extents(offset, len)
    }

    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.check(offset, data.len() as u64, true)?;
        self.submit(
            offset,
            data.len() as u64,
            || Op::Write(data.to_vec()),
            |img, name| img.write(name, offset, data),
        )
    }

    pub fn zero(&mut self, offset: u64, len: u64) -> Result<()> {
        self.check(offset, len, true)?;
        self.submit(
            offset,
            len,
            || Op::Zero(len),
            |img, name| img.zero(name, offset, len),
        )
    }

    pub fn trim(&mut self, offset: u64, len: u64) -> Result<()> {
        self.check(offset, len, true)?;
        self.submit(
            offset,
            len,
            || Op::Trim(len),
            |img, _| img.trim(offset, len),
        )
    }

    /// Runs an op directly when its marks are durable, else queues it.
    fn submit(
        &mut self,
        offset: u64,
        len: u64,
        queued: impl FnOnce() -> Op,
        direct: impl FnOnce(&mut Image, &str) -> Result<()>,
    ) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let size = self.size();
        // A full queue is drained first; if that fails the op is refused
        // (not queued), so a failing disk cannot grow its queue forever.
        if self.queued_bytes >= QUEUE_MAX_BYTES || self.queue.len() >= QUEUE_MAX_OPS {
            self.commit()?;
        }
        let Tracking::On(t) = &mut self.tracking else {
            if let Tracking::Broken(e) = &self.tracking {
                // A tracking file that could not be read (or looked up)
                // may read fine at the next open, whose old IDs would then
                // miss this write: refuse it. The other broken states
                // (disabled, corrupt, another writer's identity) last, so
                // no old ID can answer again and writes go through.
                if matches!(e, RctError::Io { .. } | RctError::Failed { .. }) {
                    return Err(e.clone().into());
                }
            }
            // Without tracking, only an op that found no space is ever
            // queued; it goes first, so no later write is overtaken by it.
            if !self.queue.is_empty() {
                self.commit()?;
            }
            let r = direct(&mut self.image, &self.name);
            return self.after_direct(r, offset, len, None, queued);
        };
        let sequential = offset == self.seq_end;
        self.seq_end = offset + len;
        let regions = t.regions(offset, len);
        if self.identity_done
            && t.is_marked(offset, len)
            && (self.queue.is_empty()
                || self.queued_regions.range_cardinality(regions.clone()) == 0)
        {
            let r = direct(&mut self.image, &self.name);
            return self.after_direct(r, offset, len, Some(regions), queued);
        }
        if !self.identity_done && self.pending_identity.is_none() {
            if let Image::Vhdx(_) = self.image {
                let g = Uuid::new_v4();
                t.stage_identity(&format!("vhdx:{g}"));
                self.pending_identity = Some(g);
            }
        }
        t.stage(offset, len);
        // A sequential stream marks a window ahead, doubling as it goes, so
        // it soon writes straight through.
        self.window = if sequential {
            (self.window * 2).clamp(len, MAX_WINDOW)
        } else {
            0
        };
        if self.window > 0 {
            let ahead = (offset + len).min(size);
            let w = self.window.min(size - ahead);
            t.stage(ahead, w);
        }
        self.queued_bytes += len;
        self.queue.push_back((offset, queued()));
        self.queued_regions.insert_range(regions);
        let sequential_window = self.window > 0;
        if sequential_window
            || self.queued_bytes >= QUEUE_MAX_BYTES
            || self.queue.len() >= QUEUE_MAX_OPS
        {
            // On failure the op stays queued: the error tells the writer
            // now, and every flush fails until the queue is applied.
            self.commit()?;
        }
        Ok(())
    }

    /// An op that ran directly and found no space joins the queue, so it is
    /// issued again at the next commit and every flush fails until it is
    /// applied; other errors stop the disk.
    fn after_direct(
        &mut self,
        r: Result<()>,
        offset: u64,
        len: u64,
        regions: Option<std::ops::Range<u32>>,
        queued: impl FnOnce() -> Op,
    ) -> Result<()> {
        let Err(e) = r else { return Ok(()) };
        if e.is_retryable() {
            self.queue.push_back((offset, queued()));
            self.queued_bytes += len;
            if let Some(regions) = regions {
                self.queued_regions.insert_range(regions);
            }
        }
        Err(self.after_error(e))
    }

    /// Whether a range may overlap a queued op.
    fn queue_overlaps(&self, offset: u64, len: u64) -> bool {
        if self.queue.is_empty() {
            return false;
        }
        match &self.tracking {
            Tracking::On(t) => {
                self.queued_regions
                    .range_cardinality(t.regions(offset, len))
                    > 0
            }
            _ => true,
        }
    }

    /// Makes staged marks durable, then applies the queued ops in order.
    /// An op leaves the queue only once applied, so after a failure the
    /// rest wait for the next commit: nothing accepted is ever forgotten.
    fn commit(&mut self) -> Result<()> {
        self.healthy()?;
        if let Tracking::On(t) = &mut self.tracking {
            if let Err(e) = t.commit() {
                return Err(self.after_error(e.into()));
            }
        }
        // The VHDX takes its new DataWriteGuid only now that the tracking
        // knows it, and before any queued data reaches the file.
        if let Some(g) = self.pending_identity {
            if let Image::Vhdx(c) = &mut self.image {
                if let Err(e) = c.top_mut().set_data_write_guid(g) {
                    return Err(self.after_error(e.into()));
                }
            }
            self.pending_identity = None;
            self.identity_done = true;
        }
        while let Some((offset, op)) = self.queue.front() {
            let (offset, len) = (*offset, op.len());
            let r = match op {
                Op::Write(d) => self.image.write(&self.name, offset, d),
                Op::Zero(n) => self.image.zero(&self.name, offset, *n),
                Op::Trim(n) => self.image.trim(offset, *n),
            };
            if let Err(e) = r {
                return Err(self.after_error(e));
            }
            self.queue.pop_front();
            self.queued_bytes -= len;
        }
        self.queued_regions.clear();
        Ok(())
    }

    /// Makes every write so far durable (marks first, then data). A flush
    /// that fails may have lost earlier writes on the medium (Linux drops
    /// them from the page cache), so it stops the disk: no later flush may
    /// report them durable.
    pub fn flush(&mut self) -> Result<()> {
        self.commit()?;
        if self.writable {
            if let Err(e) = self.image.flush(&self.name) {
                self.stop(&e);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Flushes and closes cleanly, saving the tracking compactly. A disk
    /// that cannot be flushed is dropped like a killed process's (nothing
    /// more is written; the next open replays the logs).
    pub fn close(mut self) -> Result<()> {
        if let Err(e) = self.flush() {
            self.abandon();
            return Err(e);
        }
        let identity_after = self.image.identity()?;
        let tracking = std::mem::replace(&mut self.tracking, Tracking::Missing);
        if let Image::Vhdx(c) = self.image {
            c.close()?;
        }
        if let Tracking::On(t) = tracking {
            if self.writable {
                let mut ids = vec![identity_after];
                ids.extend(self.adopted);
                t.close(&ids)?;
            }
        }
        Ok(())
    }

    // ---- change tracking ----

    fn tracker(&mut self) -> Result<&mut Tracker> {
        match &mut self.tracking {
            Tracking::On(t) => Ok(t),
            Tracking::Missing => Err(RctError::FileMissing {
                path: tracking_path(&self.owner).display().to_string(),
            }
            .into()),
            Tracking::Broken(e) => Err(e.clone().into()),
        }
    }

    /// Starts tracking (or starts over, with a new tracking GUID: every
    /// earlier RCT ID becomes unknown).
    pub fn enable_tracking(&mut self, granularity: u64) -> Result<()> {
        if !self.writable {
            return Err(VdiskError::ReadOnly {
                path: self.name.clone(),
            });
        }
        self.commit()?;
        // The tracking file belongs to the owner (the disk's original file),
        // also while a checkpoint child is the file being written.
        let t = Tracker::create(
            self.fs.clone(),
            &self.owner,
            self.size(),
            granularity,
            &self.image.identity()?,
        )?;
        self.tracking = Tracking::On(Box::new(t));
        self.identity_done = matches!(self.image, Image::Raw { .. });
        self.window = 0;
        Ok(())
    }

    /// Stops tracking; later queries fail with "tracking disabled".
    pub fn disable_tracking(&mut self) -> Result<()> {
        self.commit()?;
        match std::mem::replace(&mut self.tracking, Tracking::Missing) {
            Tracking::On(t) => t.disable()?,
            _ => Tracker::write_disabled(self.fs.clone(), &self.owner, self.size())?,
        }
        self.tracking = Tracking::Broken(RctError::Disabled {
            disk: self.name.clone(),
        });
        Ok(())
    }

    pub fn tracking_status(&self) -> TrackingStatus {
        match &self.tracking {
            Tracking::Missing => TrackingStatus::Missing,
            // Writes are still tracked, but no ID can be answered: a
            // backup goes full and starts tracking over.
            Tracking::On(t) if t.distrusted().is_some() => {
                let e = RctError::Unproven {
                    disk: self.name.clone(),
                    reason: t.distrusted().unwrap_or_default().to_string(),
                };
                TrackingStatus::Broken {
                    kind: e.kind(),
                    message: e.to_string(),
                }
            }
            Tracking::On(t) => TrackingStatus::On(t.state()),
            Tracking::Broken(e) => TrackingStatus::Broken {
                kind: e.kind(),
                message: e.to_string(),
            },
        }
    }

    /// Flushes, then closes the current generation and returns its RCT ID,
    /// which so names a durable state of the disk.
    pub fn seal(&mut self) -> Result<RctId> {
        self.flush()?;
        let id = self.tracker()?.seal()?;
        // The new generation starts with no look-ahead: a stream running
        // across the seal doubles its window again from one write, instead
        // of marking twice its whole earlier length in the new generation.
        self.window = 0;
        Ok(id)
    }

    pub fn release(&mut self, id: &RctId) -> Result<()> {
        Ok(self.tracker()?.release(id)?)
    }

    pub fn retained_ids(&mut self) -> Result<Vec<RctId>> {
        Ok(self.tracker()?.retained_ids())
    }

    /// Ranges changed since `since` (until `until`), like
    /// `QueryChangesVirtualDisk`.
    pub fn query_changes(
        &mut self,
        since: &RctId,
        until: Option<&RctId>,
        offset: u64,
        length: u64,
        max_ranges: usize,
    ) -> Result<Changes> {
        Ok(self
            .tracker()?
            .query_changes(since, until, offset, length, max_ranges)?)
    }

    /// Journals an identity the disk is about to take (e.g. the
    /// DataWriteGuid of a new checkpoint child, or of a merged parent), so
    /// the tracking keeps trusting the disk afterwards.
    pub fn expect_identity(&mut self, identity: &str) -> Result<()> {
        self.commit()?;
        if let Tracking::On(t) = &mut self.tracking {
            t.stage_identity(identity);
            t.commit()?;
        }
        Ok(())
    }

    /// Journals `identity` (see [`Disk::expect_identity`]) and keeps it
    /// trusted after this handle closes: the tracking follows the disk to
    /// the file that carries it (a checkpoint's child, a merged parent).
    pub fn adopt_identity(&mut self, identity: &str) -> Result<()> {
        self.expect_identity(identity)?;
        self.adopted.push(identity.to_string());
        Ok(())
    }

    /// Marks a range changed without writing it (content that changes by
    /// other means, such as reverting to a checkpoint).
    pub fn mark_changed(&mut self, offset: u64, len: u64) -> Result<()> {
        self.check(offset, len, false)?;
        self.commit()?;
        if let Tracking::On(t) = &mut self.tracking {
            t.stage(offset, len);
            t.commit()?;
        }
        Ok(())
    }

    /// Journal commits so far (for measurements).
    pub fn tracking_commits(&self) -> u64 {
        match &self.tracking {
            Tracking::On(t) => t.commits(),
            _ => 0,
        }
    }

    /// Drops the disk without flushing or closing (a killed process).
    pub fn abandon(self) {
        let Disk {
            image, tracking, ..
        } = self;
        if let Image::Vhdx(c) = image {
            for l in c.into_layers() {
                l.abandon();
            }
        }
        drop(tracking);
    }
}
