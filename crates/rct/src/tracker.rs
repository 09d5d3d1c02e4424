//! The tracker of one disk: generations of dirty regions, the write-intent
//! journal, seal/release, and queries.

use crate::error::{RctError, Result};
use crate::id::RctId;
use crate::record::{FileHeader, Record, HEADER_SIZE, RECORD_MAGIC};
use roaring::RoaringBitmap;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use storage::{Fs, OpenMode, Storage};
use uuid::Uuid;

/// Default tracking granularity.
pub const DEFAULT_GRANULARITY: u64 = 64 * 1024;
/// Zeros kept written ahead of the journal's end (see `write_ahead`).
const WRITE_AHEAD: u64 = 1 << 20;
/// The journal is compacted into a fresh file once it grows past this.
const COMPACT_AFTER: u64 = 16 << 20;
static COMPACT_THRESHOLD: AtomicU64 = AtomicU64::new(COMPACT_AFTER);

/// Sets, for the whole process, how long a journal grows before it is
/// compacted (default 16 MiB). Tests set it tiny so that compactions, and
/// crashes and errors inside them, happen often.
pub fn set_compaction_threshold(bytes: u64) {
    COMPACT_THRESHOLD.store(bytes.max(HEADER_SIZE as u64), Ordering::Relaxed);
}

fn compaction_threshold() -> u64 {
    COMPACT_THRESHOLD.load(Ordering::Relaxed)
}

/// How a rewrite of the tracking file failed.
enum RewriteError {
    /// Before the new file was renamed into place: the old file and the
    /// in-memory state are untouched and still agree.
    Intact(RctError),
    /// After the rename, when the directory could not be synced: which
    /// file a power cut leaves is unknown, so the tracker must stop.
    Ambiguous(RctError),
}

impl RewriteError {
    fn into_inner(self) -> RctError {
        match self {
            RewriteError::Intact(e) | RewriteError::Ambiguous(e) => e,
        }
    }
}

/// `GET_VIRTUAL_DISK_INFO_CHANGE_TRACKING_STATE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackingState {
    pub enabled: bool,
    /// The most recently sealed ID, if any.
    pub most_recent_id: Option<RctId>,
    /// Whether anything was written since `most_recent_id` (or since
    /// tracking was enabled, if nothing was sealed yet).
    pub newer_changes: bool,
}

/// One changed range, in virtual-disk bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangedRange {
    pub offset: u64,
    pub length: u64,
}

/// The answer to a query, like `QueryChangesVirtualDisk`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Changes {
    pub ranges: Vec<ChangedRange>,
    /// How much of the queried range was processed; less than asked when
    /// `max_ranges` was reached: continue from `offset + processed_length`.
    pub processed_length: u64,
}

/// Change tracking of one disk, backed by its tracking file.
pub struct Tracker {
    fs: Arc<dyn Fs>,
    path: PathBuf,
    disk: String,
    file: Arc<dyn Storage>,
    header: FileHeader,
    append_at: u64,
    /// How far the file has been written (records, then zeros written
    /// ahead of the appends).
    written_to: u64,
    /// Dirty regions per generation still needed by some retained ID (and
    /// the current generation). Everything here is durable.
    gens: BTreeMap<u64, RoaringBitmap>,
    retained: BTreeSet<u64>,
    /// Identities the disk may carry (the header's plus journaled ones).
    identities: Vec<String>,
    /// Regions of the current generation not yet durable.
    staged: RoaringBitmap,
    staged_identity: Option<String>,
    commits: u64,
    /// Where the journal is next compacted (moved on when a compaction
    /// failed harmlessly, so a full disk is not retried at every commit).
    compact_at: u64,
    /// Set when an error left the file and memory possibly disagreeing;
    /// then every call fails until the tracking is opened again.
    failed: Option<RctError>,
    /// Why no change can be proven any more (see [`Tracker::distrust`]).
    distrusted: Option<String>,
}

/// The tracking file of `disk`: `<disk>.rct`.
pub fn tracking_path(disk: &Path) -> PathBuf {
    let mut s = disk.as_os_str().to_owned();
    s.push(".rct");
    PathBuf::from(s)
}

impl Tracker {
    /// Starts tracking a disk (a new tracking GUID: older IDs are void).
    pub fn create(
        fs: Arc<dyn Fs>,
        disk: &Path,
        virtual_size: u64,
        granularity: u64,
        identity: &str,
    ) -> Result<Self> {
        if !granularity.is_power_of_two() || granularity < 4096 {
            return Err(RctError::InvalidParameter(format!(
                "granularity {granularity} must be a power of two of at least 4096"
            )));
        }
        if virtual_size.div_ceil(granularity) > u32::MAX as u64 {
            return Err(RctError::InvalidParameter(format!(
                "granularity {granularity} is too fine for a {virtual_size}-byte disk (at most 2^32 regions)"
            )));
        }
        let header = FileHeader {
            tracking: Uuid::new_v4(),
            epoch: Uuid::new_v4(),
            granularity,
            virtual_size,
            current_generation: 1,
            identity: identity.to_string(),
            disabled: false,
        };
        let mut t = Tracker {
            fs: fs.clone(),
            path: tracking_path(disk),
            disk: disk.display().to_string(),
            file: Arc::new(NoFile),
            header,
            append_at: HEADER_SIZE as u64,
            written_to: 0,
            gens: BTreeMap::new(),
            retained: BTreeSet::new(),
            identities: vec![identity.to_string()],
            staged: RoaringBitmap::new(),
            staged_identity: None,
            commits: 0,
            compact_at: compaction_threshold(),
            failed: None,
            distrusted: None,
        };
        t.gens.insert(1, RoaringBitmap::new());
        t.rewrite(vec![identity.to_string()])
            .map_err(RewriteError::into_inner)?;
        Ok(t)
    }

    /// Opens the tracking of `disk`, replaying its journal, and checks that
    /// the disk's `identity` is one the tracking knows.
    pub fn open(fs: Arc<dyn Fs>, disk: &Path, virtual_size: u64, identity: &str) -> Result<Self> {
        let path = tracking_path(disk);
        let p = path.display().to_string();
        let io = |op| {
            let p = p.clone();
            move |source| RctError::Io {
                path: p,
                op,
                source: Arc::new(source),
            }
        };
        if !fs.exists(&path).map_err(io("looking up"))? {
            return Err(RctError::FileMissing { path: p });
        }
        // The name may be one whose rename never became durable (a
        // compaction whose directory sync failed before this open): make
        // it durable before appending to the file it names.
        fs.sync_parent(&path)
            .map_err(io("syncing the directory of"))?;
        let file = fs.open(&path, OpenMode::ReadWrite).map_err(io("opening"))?;
        let len = file.len().map_err(io("reading the length"))?;
        let mut bytes = vec![0u8; len as usize];
        file.read_at(0, &mut bytes).map_err(io("reading"))?;
        let corrupt = |offset: u64, what: String| RctError::FileCorrupt {
            path: p.clone(),
            offset,
            what,
        };
        let header = FileHeader::parse(&bytes).map_err(|w| corrupt(0, w))?;
        if header.disabled {
            return Err(RctError::Disabled {
                disk: disk.display().to_string(),
            });
        }
        if header.virtual_size != virtual_size {
            return Err(corrupt(
                0,
                format!(
                    "it tracks a {}-byte disk, the disk has {virtual_size} bytes",
                    header.virtual_size
                ),
            ));
        }
        let mut t = Tracker {
            fs,
            path: path.clone(),
            disk: disk.display().to_string(),
            file,
            identities: vec![header.identity.clone()],
            header,
            append_at: HEADER_SIZE as u64,
            written_to: 0,
            gens: BTreeMap::new(),
            retained: BTreeSet::new(),
            staged: RoaringBitmap::new(),
            staged_identity: None,
            commits: 0,
            compact_at: 0,
            failed: None,
            distrusted: None,
        };
        let mut at = HEADER_SIZE;
        while let Some((rec, n)) = Record::decode(&bytes[at.min(bytes.len())..], t.header.epoch)
            .map_err(|w| corrupt(at as u64, w))?
        {
            t.apply(rec).map_err(|w| corrupt(at as u64, w))?;
            at += n;
        }
        // A torn last append is expected after a crash; a valid record after
        // a bad one is not: the journal was damaged and cannot be trusted.
        let mut probe = at + 8;
        while probe + 16 <= bytes.len() {
            if &bytes[probe..probe + 4] == RECORD_MAGIC
                && Record::decode(&bytes[probe..], t.header.epoch)
                    .ok()
                    .flatten()
                    .is_some()
            {
                return Err(corrupt(
                    at as u64,
                    "a damaged journal record is followed by valid ones".into(),
                ));
            }
            probe += 8;
        }
        t.append_at = at as u64;
        t.written_to = len;
        t.compact_at = t.append_at.max(compaction_threshold());
        t.gens.entry(t.header.current_generation).or_default();
        if !t.identities.iter().any(|i| i == identity) {
            return Err(RctError::ModifiedWhileUntracked {
                disk: t.disk.clone(),
                expected: t.identities.join(" or "),
                found: identity.to_string(),
            });
        }
        Ok(t)
    }

    /// Switches tracking off: the file keeps only a "disabled" header, so
    /// later queries say so instead of "missing".
    pub fn disable(self) -> Result<()> {
        let mut t = self;
        t.gens.clear();
        t.retained.clear();
        t.header.disabled = true;
        let id = t.header.identity.clone();
        t.rewrite(vec![id]).map_err(RewriteError::into_inner)
    }

    /// Writes a "disabled" tracking file for `disk` (tracking off, even if
    /// the old file could not be opened).
    pub fn write_disabled(fs: Arc<dyn Fs>, disk: &Path, virtual_size: u64) -> Result<()> {
        let t = Tracker::create(fs, disk, virtual_size, DEFAULT_GRANULARITY, "")?;
        t.disable()
    }

    fn apply(&mut self, rec: Record) -> Result<(), String> {
        match rec {
            Record::GenSet {
                generation,
                regions,
            } => {
                if generation > self.header.current_generation {
                    return Err(format!(
                        "marks for generation {generation}, beyond the current one"
                    ));
                }
                *self.gens.entry(generation).or_default() |= regions;
            }
            Record::Seal { generation } => {
                if generation != self.header.current_generation {
                    return Err(format!(
                        "seal of generation {generation}, expected {}",
                        self.header.current_generation
                    ));
                }
                self.retained.insert(generation);
                self.header.current_generation = generation.checked_add(1).ok_or_else(|| {
                    format!("seal of generation {generation}, the last there can be")
                })?;
                self.gens.entry(self.header.current_generation).or_default();
            }
            Record::Release { generation } => {
                self.retained.remove(&generation);
                self.collect_garbage();
            }
            Record::Identity { identity } => self.identities.push(identity),
            Record::Retained { generations } => self.retained = generations.into_iter().collect(),
            Record::Distrust { reason } => self.distrusted = Some(reason),
        }
        Ok(())
    }

    /// Drops generations no retained ID needs.
    fn collect_garbage(&mut self) {
        let keep_after = self
            .retained
            .first()
            .copied()
            .unwrap_or(self.header.current_generation - 1);
        self.gens.retain(|&g, _| g > keep_after);
    }

    fn io(&self, op: &'static str) -> impl FnOnce(std::io::Error) -> RctError {
        let path = self.path.display().to_string();
        move |source| RctError::Io {
            path,
            op,
            source: Arc::new(source),
        }
    }

    /// Refuses work once an error left file and memory disagreeing.
    fn healthy(&self) -> Result<()> {
        match &self.failed {
            None => Ok(()),
            Some(cause) => Err(RctError::Failed {
                path: self.path.display().to_string(),
                cause: Box::new(cause.clone()),
            }),
        }
    }

    /// Stops the tracker: file and memory may disagree after `e`.
    fn fail(&mut self, e: RctError) -> RctError {
        self.failed = Some(e);
        self.healthy().unwrap_err()
    }

    /// Writes the whole state, with the identities the disk may carry (the
    /// first goes in the header), to a fresh file under a new epoch and
    /// renames it into place durably. Memory switches to the new file only
    /// then; until then the old file and epoch stay in use.
    fn rewrite(&mut self, identities: Vec<String>) -> Result<(), RewriteError> {
        let mut header = self.header.clone();
        header.epoch = Uuid::new_v4();
        header.identity = identities.first().cloned().unwrap_or_default();
        let mut b = header.to_bytes();
        b.extend(
            Record::Retained {
                generations: self.retained.iter().copied().collect(),
            }
            .encode(header.epoch),
        );
        for (&g, set) in &self.gens {
            b.extend(
                Record::GenSet {
                    generation: g,
                    regions: set.clone(),
                }
                .encode(header.epoch),
            );
        }
        if let Some(reason) = &self.distrusted {
            b.extend(
                Record::Distrust {
                    reason: reason.clone(),
                }
                .encode(header.epoch),
            );
        }
        for i in identities.iter().skip(1) {
            b.extend(
                Record::Identity {
                    identity: i.clone(),
                }
                .encode(header.epoch),
            );
        }
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let ahead = (b.len() as u64 + WRITE_AHEAD).div_ceil(WRITE_AHEAD) * WRITE_AHEAD;
        let written = (|| {
            if self
                .fs
                .exists(&tmp)
                .map_err(self.io("looking up a stale temporary file"))?
            {
                self.fs
                    .remove(&tmp)
                    .map_err(self.io("removing a stale temporary file"))?;
            }
            let f = self.fs.create(&tmp).map_err(self.io("creating"))?;
            let mut all = b.clone();
            all.resize(ahead as usize, 0);
            f.write_at(0, &all).map_err(self.io("writing"))?;
            f.flush().map_err(self.io("flushing"))?;
            self.fs
                .rename(&tmp, &self.path)
                .map_err(self.io("renaming into place"))?;
            Ok(f)
        })();
        let f = match written {
            Ok(f) => f,
            Err(e) => {
                // Best effort: the stale file is removed by the next rewrite.
                let _ = self.fs.remove(&tmp);
                return Err(RewriteError::Intact(e));
            }
        };
        // Appends go to the new file from now on; its name must be durable
        // first, or a power cut brings back the old file without them.
        self.fs
            .sync_parent(&self.path)
            .map_err(self.io("syncing the directory"))
            .map_err(RewriteError::Ambiguous)?;
        self.header = header;
        self.file = f;
        self.append_at = b.len() as u64;
        self.written_to = ahead;
        self.identities = identities;
        self.compact_at = self.append_at + compaction_threshold();
        Ok(())
    }

    /// Keeps at least [`WRITE_AHEAD`] bytes of zeros written past the end
    /// of the journal. Appends then overwrite allocated space, so their
    /// fdatasync changes no file metadata; on ext4 (data=ordered) a
    /// metadata commit would also force out the disk image's own dirty
    /// data, which made every journal commit as slow as a full flush.
    /// Zeros decode as "no record", so replay stops where records end.
    fn write_ahead(&mut self) -> Result<()> {
        if self.written_to >= self.append_at + WRITE_AHEAD / 2 {
            return Ok(());
        }
        let end = (self.append_at + WRITE_AHEAD).div_ceil(WRITE_AHEAD) * WRITE_AHEAD;
        let from = self.written_to.max(self.append_at);
        let zeros = vec![0u8; (end - from) as usize];
        self.file
            .write_at(from, &zeros)
            .map_err(self.io("writing ahead in the journal"))?;
        self.written_to = end;
        Ok(())
    }

    /// Appends a record durably. On failure the end of the journal stays
    /// where it was, so the next append overwrites whatever part of the
    /// record reached the file: a record whose append failed is either
    /// overwritten or (after a crash) the torn end of the journal.
    fn append(&mut self, rec: &Record) -> Result<()> {
        let b = rec.encode(self.header.epoch);
        self.file
            .write_at(self.append_at, &b)
            .map_err(self.io("appending to the journal"))?;
        let end = self.append_at + b.len() as u64;
        let old_end = std::mem::replace(&mut self.append_at, end);
        let synced = self
            .write_ahead()
            .and_then(|()| self.file.flush().map_err(self.io("flushing the journal")));
        if let Err(e) = synced {
            self.append_at = old_end;
            return Err(e);
        }
        self.commits += 1;
        Ok(())
    }

    // ---- the write path ----

    pub fn granularity(&self) -> u64 {
        self.header.granularity
    }
    pub fn virtual_size(&self) -> u64 {
        self.header.virtual_size
    }
    pub fn tracking_guid(&self) -> Uuid {
        self.header.tracking
    }
    /// Journal commits (fsyncs) so far.
    pub fn commits(&self) -> u64 {
        self.commits
    }

    /// Regions touched by a byte range.
    pub fn regions(&self, offset: u64, len: u64) -> Range<u32> {
        let g = self.header.granularity;
        if len == 0 {
            return 0..0;
        }
        (offset / g) as u32..(offset + len).div_ceil(g) as u32
    }

    /// Whether the range is already durably marked in the current generation
    /// (a write there needs no journal commit first).
    pub fn is_marked(&self, offset: u64, len: u64) -> bool {
        if self.failed.is_some() {
            return false; // sends the write to `commit`, which refuses it
        }
        let r = self.regions(offset, len);
        r.is_empty()
            || self
                .gens
                .get(&self.header.current_generation)
                .is_some_and(|s| s.contains_range(r))
    }

    /// Queues marks for a range; they become durable at [`Tracker::commit`].
    pub fn stage(&mut self, offset: u64, len: u64) {
        let r = self.regions(offset, len);
        let cur = &self.gens[&self.header.current_generation];
        if !cur.contains_range(r.clone()) {
            self.staged.insert_range(r);
        }
    }

    /// Queues a new identity the disk is about to take.
    pub fn stage_identity(&mut self, identity: &str) {
        self.staged_identity = Some(identity.to_string());
    }

    pub fn has_staged(&self) -> bool {
        !self.staged.is_empty() || self.staged_identity.is_some()
    }

    /// Makes staged marks durable: one journal append and one fsync,
    /// however many regions it carries (group commit).
    pub fn commit(&mut self) -> Result<()> {
        self.healthy()?;
        if !self.has_staged() {
            return Ok(());
        }
        // One record per append: an unflushed append may tear at any
        // sector boundary, and a torn record followed by an intact one
        // would look like a damaged journal.
        if let Some(i) = self.staged_identity.clone() {
            self.append(&Record::Identity {
                identity: i.clone(),
            })?;
            self.identities.push(i);
            self.staged_identity = None;
        }
        let cur = self.header.current_generation;
        if !self.staged.is_empty() {
            self.append(&Record::GenSet {
                generation: cur,
                regions: self.staged.clone(),
            })?;
            let staged = std::mem::take(&mut self.staged);
            *self.gens.entry(cur).or_default() |= staged;
        }
        if self.append_at > self.compact_at {
            // The marks are durable; a compaction that fails before its
            // rename changes nothing and is tried again later.
            match self.rewrite(self.identities.clone()) {
                Ok(()) => {}
                Err(RewriteError::Intact(_)) => {
                    self.compact_at = self.append_at + compaction_threshold() / 2;
                }
                Err(RewriteError::Ambiguous(e)) => return Err(self.fail(e)),
            }
        }
        Ok(())
    }

    /// After a failed append whose record may yet reach the file (a seal),
    /// brings the file back in line with memory by writing it afresh under
    /// a new epoch, which voids every record of the old one. If that fails
    /// too, the tracker stops.
    fn resync(&mut self, e: RctError) -> RctError {
        match self.rewrite(self.identities.clone()) {
            Ok(()) => e,
            Err(_) => self.fail(e),
        }
    }

    /// Records that a flush of the disk failed. Linux may drop the pages
    /// of a failed writeback: data already counted as written (its regions
    /// marked in a generation that may be sealed next) can revert on the
    /// medium later without any write, which no generation would show.
    /// From now on every query fails with [`RctError::Unproven`] until
    /// tracking is started over (a full backup does that).
    pub fn distrust(&mut self, reason: &str) -> Result<()> {
        self.healthy()?;
        if self.distrusted.is_some() {
            return Ok(());
        }
        let rec = Record::Distrust {
            reason: reason.to_string(),
        };
        let appended = self.append(&rec);
        self.distrusted = Some(reason.to_string());
        if let Err(e) = appended {
            // The record may or may not be in the file: write it afresh.
            return Err(self.resync(e));
        }
        Ok(())
    }

    // ---- reference points ----

    /// Closes the current generation and returns its ID. Staged marks are
    /// committed first, so they belong to the sealed generation.
    pub fn seal(&mut self) -> Result<RctId> {
        self.commit()?;
        let g = self.header.current_generation;
        if let Err(e) = self.append(&Record::Seal { generation: g }) {
            // The seal record may reach the file anyway (a failed flush
            // does not take back the write): later marks of this
            // generation would then replay into the sealed one.
            return Err(self.resync(e));
        }
        self.apply(Record::Seal { generation: g })
            .expect("sealing the current generation");
        Ok(RctId {
            tracking: self.header.tracking,
            generation: g,
        })
    }

    /// Releases a retained ID: changes since it can no longer be asked for.
    pub fn release(&mut self, id: &RctId) -> Result<()> {
        self.healthy()?;
        self.check_id(id)?;
        self.append(&Record::Release {
            generation: id.generation,
        })?;
        self.retained.remove(&id.generation);
        self.collect_garbage();
        Ok(())
    }

    /// Retained IDs, oldest first (none once the tracker has failed).
    pub fn retained_ids(&self) -> Vec<RctId> {
        if self.failed.is_some() {
            return Vec::new();
        }
        self.retained
            .iter()
            .map(|&g| RctId {
                tracking: self.header.tracking,
                generation: g,
            })
            .collect()
    }

    fn check_id(&self, id: &RctId) -> Result<()> {
        if id.tracking != self.header.tracking
            || id.generation == 0
            || id.generation >= self.header.current_generation
        {
            return Err(RctError::UnknownId {
                disk: self.disk.clone(),
                id: id.to_string(),
            });
        }
        if !self.retained.contains(&id.generation) {
            return Err(RctError::ReleasedId {
                disk: self.disk.clone(),
                id: *id,
            });
        }
        Ok(())
    }

    pub fn state(&self) -> TrackingState {
        let cur = self.header.current_generation;
        TrackingState {
            enabled: true,
            most_recent_id: (cur > 1).then(|| RctId {
                tracking: self.header.tracking,
                generation: cur - 1,
            }),
            newer_changes: self.gens.get(&cur).is_some_and(|s| !s.is_empty())
                || !self.staged.is_empty(),
        }
    }

    /// Ranges changed since `since` (up to `until`, if given), within
    /// `offset..offset+length`, at most `max_ranges` of them.
    pub fn query_changes(
        &self,
        since: &RctId,
        until: Option<&RctId>,
        offset: u64,
        length: u64,
        max_ranges: usize,
    ) -> Result<Changes> {
        self.healthy()?;
        if let Some(reason) = &self.distrusted {
            return Err(RctError::Unproven {
                disk: self.disk.clone(),
                reason: reason.clone(),
            });
        }
        self.check_id(since)?;
        let last = match until {
            Some(u) => {
                self.check_id(u)?;
                if u.generation < since.generation {
                    return Err(RctError::InvalidParameter(format!(
                        "{u} is older than {since}"
                    )));
                }
                u.generation
            }
            None => u64::MAX,
        };
        if max_ranges == 0 {
            // A page of no ranges would never advance a paging caller.
            return Err(RctError::InvalidParameter(
                "max_ranges must be at least 1".into(),
            ));
        }
        let size = self.header.virtual_size;
        if offset.checked_add(length).is_none_or(|e| e > size) {
            return Err(RctError::OutOfRange {
                offset,
                len: length,
                size,
            });
        }
        let mut union = RoaringBitmap::new();
        if last > since.generation {
            for (_, set) in self.gens.range(since.generation + 1..=last) {
                union |= set;
            }
        }
        if until.is_none() {
            union |= &self.staged;
        }
        Ok(ranges_of(
            &union,
            self.header.granularity,
            offset,
            length,
            max_ranges,
        ))
    }

    /// Saves the state compactly with the identities the disk may carry
    /// from now on (the first is the disk's own; more are needed while a
    /// checkpoint or merge switches the disk to another file).
    pub fn close(mut self, identities: &[String]) -> Result<()> {
        self.commit()?;
        self.rewrite(identities.to_vec())
            .map_err(RewriteError::into_inner)
    }

    /// Why no change can be proven any more, if [`Tracker::distrust`] was
    /// called (in this session or one before).
    pub fn distrusted(&self) -> Option<&str> {
        self.distrusted.as_deref()
    }

    /// The error that stopped the tracker, if one did.
    pub fn failure(&self) -> Option<&RctError> {
        self.failed.as_ref()
    }
}

/// Converts a region set to merged byte ranges clipped to the window.
fn ranges_of(set: &RoaringBitmap, g: u64, offset: u64, length: u64, max_ranges: usize) -> Changes {
    let end = offset + length;
    let mut ranges: Vec<ChangedRange> = Vec::new();
    if length == 0 {
        return Changes {
            ranges,
            processed_length: 0,
        };
    }
    let first = (offset / g) as u32;
    let last = ((end - 1) / g) as u32;
    let mut it = set.range(first..=last);
    while let Some(r) = it.next_range() {
        let s = (*r.start() as u64 * g).max(offset);
        let e = ((*r.end() as u64 + 1) * g).min(end);
        if ranges.len() == max_ranges {
            return Changes {
                ranges,
                processed_length: s - offset,
            };
        }
        ranges.push(ChangedRange {
            offset: s,
            length: e - s,
        });
    }
    Changes {
        ranges,
        processed_length: length,
    }
}

/// A placeholder before the first file is written.
struct NoFile;

impl Storage for NoFile {
    fn read_at(&self, _: u64, _: &mut [u8]) -> std::io::Result<()> {
        Err(std::io::Error::other("no tracking file yet"))
    }
    fn write_at(&self, _: u64, _: &[u8]) -> std::io::Result<()> {
        Err(std::io::Error::other("no tracking file yet"))
    }
    fn flush(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn len(&self) -> std::io::Result<u64> {
        Ok(0)
    }
    fn set_len(&self, _: u64) -> std::io::Result<()> {
        Ok(())
    }
    fn change_stamp(&self) -> std::io::Result<String> {
        Err(std::io::Error::other("no tracking file yet"))
    }
}
