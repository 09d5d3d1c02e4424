//! The [`Vhdx`] handle: one opened VHDX file (open, header updates, close).
//! Payload I/O lives in `io.rs`, the metadata commit path in `commit.rs`.

use crate::bat::*;
use crate::error::{Corruption, Error, Result};
use crate::file_id::FileTypeIdentifier;
use crate::format::*;
use crate::header::{current_header, Header};
use crate::known_meta::*;
use crate::locator::ParentLocator;
use crate::log::{find_active_sequence, LogUpdate, LogWriter};
use crate::metadata::MetadataTable;
use crate::region::RegionTable;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use storage::{Fs, OpenMode, Storage};
use uuid::Uuid;

/// Kind of virtual disk, as seen from its file parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DiskType {
    Fixed,
    Dynamic,
    Differencing,
}

impl DiskType {
    pub fn name(self) -> &'static str {
        match self {
            DiskType::Fixed => "fixed",
            DiskType::Dynamic => "dynamic",
            DiskType::Differencing => "differencing",
        }
    }
}

/// One opened VHDX file.
pub struct Vhdx {
    pub(crate) file: Arc<dyn Storage>,
    pub(crate) name: String,
    pub(crate) path: Option<PathBuf>,
    pub(crate) writable: bool,
    pub(crate) header: Header,
    pub(crate) header_slot: usize,
    pub(crate) region_table: RegionTable,
    /// Which region table copies were found damaged at open.
    pub(crate) bad_region_copies: Vec<usize>,
    pub(crate) metadata_offset: u64,
    pub(crate) metadata_length: u32,
    pub(crate) metadata_table: MetadataTable,
    pub(crate) params: FileParameters,
    pub(crate) geometry: BatGeometry,
    pub(crate) disk_id: Uuid,
    pub(crate) physical_sector_size: u32,
    pub(crate) locator: Option<ParentLocator>,
    pub(crate) bat_offset: u64,
    pub(crate) bat_length: u64,
    pub(crate) bat: Vec<BatEntry>,
    pub(crate) dirty_bat_pages: BTreeSet<u64>,
    pub(crate) sector_bitmaps: Mutex<HashMap<u64, Arc<Vec<u8>>>>,
    pub(crate) dirty_bitmap_pages: BTreeSet<(u64, u64)>,
    pub(crate) dirty_meta_pages: BTreeMap<u64, Box<[u8]>>,
    /// Pages replayed from the log in memory by a read-only open.
    pub(crate) overlay: BTreeMap<u64, Box<[u8]>>,
    /// Whether the log had to be replayed at open.
    pub(crate) log_replayed: bool,
    pub(crate) eof: u64,
    pub(crate) durable_len: u64,
    pub(crate) log: Option<LogWriter>,
    pub(crate) data_write_guid_changed: bool,
    /// Whether every chunk of a differencing file is known to have its
    /// sector bitmap block (always true of other files); checked before the
    /// first change (`io.rs`).
    pub(crate) sector_bitmaps_complete: bool,
    pub(crate) closed: bool,
    pub(crate) stats: Stats,
}

/// Counters of what a handle did, for tests and benchmarks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub log_entries: u64,
    pub blocks_allocated: u64,
    pub flushes: u64,
}

/// How strictly [`Vhdx::open`] judges the BAT.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Strictness {
    /// Fail on the first bad BAT entry.
    Strict,
    /// Accept bad entries so `check` can list every one.
    Lenient,
}

impl Vhdx {
    /// Opens the VHDX file at `path`. A writable open replays a dirty log in
    /// place; a read-only open replays it in memory and never writes.
    pub fn open(fs: &dyn Fs, path: &Path, writable: bool) -> Result<Self> {
        let name = path.display().to_string();
        let mode = if writable {
            OpenMode::ReadWrite
        } else {
            OpenMode::ReadOnly
        };
        let file = fs.open(path, mode).map_err(|source| Error::Io {
            file: name.clone(),
            op: "opening",
            offset: 0,
            source,
        })?;
        if writable {
            lock(&*file, &name)?;
        }
        let mut v = Self::open_storage(file, name, writable, Strictness::Strict)?;
        v.path = Some(path.to_path_buf());
        Ok(v)
    }

    /// Opens a VHDX over an already opened storage handle.
    pub fn open_file(file: Arc<dyn Storage>, name: &str, writable: bool) -> Result<Self> {
        Self::open_storage(file, name.to_string(), writable, Strictness::Strict)
    }

    pub(crate) fn open_storage(
        file: Arc<dyn Storage>,
        name: String,
        writable: bool,
        strictness: Strictness,
    ) -> Result<Self> {
        let io = |op: &'static str, offset: u64| {
            let name = name.clone();
            move |source| Error::Io {
                file: name,
                op,
                offset,
                source,
            }
        };
        let corrupt = |offset: u64, kind: Corruption| Error::Corrupt {
            file: name.clone(),
            offset,
            kind,
        };
        let file_len = file.len().map_err(io("reading the length", 0))?;

        let mut id = vec![0u8; FileTypeIdentifier::SIZE];
        file.read_at_or_zero(0, &mut id)
            .map_err(io("reading the file type identifier", 0))?;
        if FileTypeIdentifier::parse(&id).is_none() {
            return Err(corrupt(0, Corruption::BadFileSignature));
        }

        let read_header = |slot: usize| -> Result<std::result::Result<Header, Corruption>> {
            let mut b = vec![0u8; HEADER_SIZE];
            file.read_at_or_zero(HEADER_OFFSETS[slot], &mut b)
                .map_err(io("reading a header", HEADER_OFFSETS[slot]))?;
            Ok(Header::parse(&b))
        };
        let (header_slot, header) = current_header([read_header(0)?, read_header(1)?])
            .map_err(|k| corrupt(HEADER_OFFSETS[0], k))?;
        let hdr_off = HEADER_OFFSETS[header_slot];
        if header.version != 1 {
            return Err(corrupt(
                hdr_off,
                Corruption::UnsupportedVersion(header.version),
            ));
        }
        if !header.log_guid.is_nil() && header.log_version != 0 {
            return Err(corrupt(
                hdr_off,
                Corruption::UnsupportedLogVersion(header.log_version),
            ));
        }
        let log_ok = header.log_span().is_some_and(|(_, end)| end <= file_len);
        if !log_ok && (writable || !header.log_guid.is_nil()) {
            return Err(corrupt(
                hdr_off,
                Corruption::BadLogLocation {
                    offset: header.log_offset,
                    length: header.log_length,
                },
            ));
        }

        // §2.3.3 replay the log before reading anything else.
        let mut overlay = BTreeMap::new();
        let mut log_replayed = false;
        let mut effective_len = file_len;
        if !header.log_guid.is_nil() {
            let mut log = vec![0u8; header.log_length as usize];
            file.read_at(header.log_offset, &mut log)
                .map_err(io("reading the log", header.log_offset))?;
            let entries = find_active_sequence(&log, header.log_guid)
                .ok_or_else(|| corrupt(header.log_offset, Corruption::NoValidLogSequence))?;
            let head = entries.last().unwrap();
            if file_len < head.flushed_file_offset {
                return Err(corrupt(
                    header.log_offset,
                    Corruption::Truncated {
                        file_len,
                        flushed: head.flushed_file_offset,
                    },
                ));
            }
            // Judge the whole sequence before replaying any of it: how far
            // it says the file reaches (the entry's own field first), where
            // it writes, how much it zeroes, how far it grows the file.
            let grows = |needed: u64| {
                (needed.saturating_sub(file_len) > MAX_LOG_GROWTH).then(|| {
                    corrupt(
                        header.log_offset,
                        Corruption::LogGrowsFile { file_len, needed },
                    )
                })
            };
            if let Some(e) = grows(head.last_file_offset) {
                return Err(e);
            }
            let mut needed = head.last_file_offset;
            let mut zeroed = 0u64;
            for u in entries.iter().flat_map(|e| e.updates.iter()) {
                if let LogUpdate::Zero { length, .. } = u {
                    zeroed = zeroed.saturating_add(*length);
                    if zeroed > MAX_REPLAY_ZERO {
                        return Err(Error::Unsupported {
                            file: name.clone(),
                            what: format!("log zero descriptors covering {zeroed} bytes"),
                        });
                    }
                }
                if u.file_offset() < REGION_TABLE_OFFSETS[0] {
                    return Err(corrupt(
                        header.log_offset,
                        Corruption::LogWriteInHeaderSection {
                            offset: u.file_offset(),
                        },
                    ));
                }
                needed = needed.max(u.file_offset().saturating_add(update_len(u)));
            }
            if let Some(e) = grows(needed) {
                return Err(e);
            }
            for u in entries.iter().flat_map(|e| e.updates.iter()) {
                for (off, page) in pages_of(u) {
                    if writable {
                        file.write_at(off, &page)
                            .map_err(io("replaying the log", off))?;
                    } else {
                        overlay.insert(off, page);
                    }
                }
            }
            effective_len = effective_len.max(needed);
            if writable {
                if file_len < effective_len {
                    file.set_len(effective_len)
                        .map_err(io("extending after log replay", effective_len))?;
                }
                file.flush().map_err(io("flushing the log replay", 0))?;
            }
            log_replayed = true;
        }

        let mut v = Vhdx {
            file,
            name,
            path: None,
            writable,
            header,
            header_slot,
            region_table: RegionTable::default(),
            bad_region_copies: vec![],
            metadata_offset: 0,
            metadata_length: 0,
            metadata_table: MetadataTable::default(),
            params: FileParameters {
                block_size: MIB as u32,
                leave_block_allocated: false,
                has_parent: false,
            },
            geometry: BatGeometry::new(MIB as u32, 512, MIB, false),
            disk_id: Uuid::nil(),
            physical_sector_size: 512,
            locator: None,
            bat_offset: 0,
            bat_length: 0,
            bat: vec![],
            dirty_bat_pages: BTreeSet::new(),
            sector_bitmaps: Mutex::new(HashMap::new()),
            dirty_bitmap_pages: BTreeSet::new(),
            dirty_meta_pages: BTreeMap::new(),
            overlay,
            log_replayed,
            eof: align_up(effective_len.max(HEADER_SECTION_SIZE), MIB),
            durable_len: effective_len,
            log: None,
            data_write_guid_changed: false,
            sector_bitmaps_complete: false,
            closed: false,
            stats: Stats::default(),
        };
        v.load_regions()?;
        v.load_metadata()?;
        v.load_bat(strictness)?;
        if writable {
            v.open_for_write()?;
        }
        Ok(v)
    }

    fn corrupt(&self, offset: u64, kind: Corruption) -> Error {
        Error::Corrupt {
            file: self.name.clone(),
            offset,
            kind,
        }
    }

    pub(crate) fn io_err(
        &self,
        op: &'static str,
        offset: u64,
    ) -> impl FnOnce(std::io::Error) -> Error {
        let file = self.name.clone();
        move |source| Error::Io {
            file,
            op,
            offset,
            source,
        }
    }

    /// Reads file bytes as the replayed log defines them: zeros past the end
    /// of the file, and pages replayed in memory laid over the file's own.
    pub(crate) fn read_meta(&self, offset: u64, buf: &mut [u8]) -> Result<()> {
        // Reads past the end are rare (a crash lost an extension); try the
        // plain read first so the common case costs one system call.
        match self.file.read_at(offset, buf) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => self
                .file
                .read_at_or_zero(offset, buf)
                .map_err(self.io_err("reading", offset))?,
            Err(e) => return Err(self.io_err("reading", offset)(e)),
        }
        if self.overlay.is_empty() {
            return Ok(());
        }
        let end = offset.saturating_add(buf.len() as u64);
        let first = offset.saturating_sub(LOG_SECTOR_SIZE as u64 - 1);
        for (&po, page) in self.overlay.range(first..end) {
            let s = po.max(offset);
            let e = (po + page.len() as u64).min(end);
            if s < e {
                buf[(s - offset) as usize..(e - offset) as usize]
                    .copy_from_slice(&page[(s - po) as usize..(e - po) as usize]);
            }
        }
        Ok(())
    }

    fn load_regions(&mut self) -> Result<()> {
        let mut tables = Vec::new();
        for (i, &off) in REGION_TABLE_OFFSETS.iter().enumerate() {
            let mut b = vec![0u8; REGION_TABLE_SIZE];
            self.read_meta(off, &mut b)?;
            match RegionTable::parse(&b) {
                Ok(t) => tables.push(t),
                Err(k) => {
                    self.bad_region_copies.push(i);
                    if i == 1 && tables.is_empty() {
                        let _ = k;
                        return Err(
                            self.corrupt(REGION_TABLE_OFFSETS[0], Corruption::NoValidRegionTable)
                        );
                    }
                }
            }
        }
        let table = tables.swap_remove(0);
        for e in &table.entries {
            if e.required && e.guid != BAT_REGION_GUID && e.guid != METADATA_REGION_GUID {
                return Err(self.corrupt(
                    REGION_TABLE_OFFSETS[0],
                    Corruption::UnknownRequiredRegion(e.guid),
                ));
            }
        }
        let bat = table.find(BAT_REGION_GUID).cloned();
        let meta = table.find(METADATA_REGION_GUID).cloned();
        let (Some(bat), Some(meta)) = (bat, meta) else {
            let missing = if table.find(BAT_REGION_GUID).is_none() {
                BAT_REGION_GUID
            } else {
                METADATA_REGION_GUID
            };
            return Err(self.corrupt(REGION_TABLE_OFFSETS[0], Corruption::MissingRegion(missing)));
        };
        // Regions must not overlap each other or the log (if the header
        // places one; a read-only open tolerates a bad place for an empty log).
        let mut spans: Vec<(u64, u64, String)> = table
            .entries
            .iter()
            .map(|e| {
                (
                    e.file_offset,
                    e.file_offset + e.length as u64,
                    format!("region {}", e.guid),
                )
            })
            .collect();
        if let Some((start, end)) = self.header.log_span() {
            spans.push((start, end, "the log".into()));
        }
        spans.sort();
        for w in spans.windows(2) {
            if w[1].0 < w[0].1 {
                return Err(self.corrupt(
                    w[1].0,
                    Corruption::Overlap(format!("{} and {}", w[0].2, w[1].2)),
                ));
            }
        }
        // §2.2.3: the BAT and metadata regions are part of the file. One that
        // reaches past the end (after log replay) means the file was cut
        // short: its missing part would read as zeros, and reading it would
        // take memory sized by a damaged length field instead of the file.
        for r in [&bat, &meta] {
            if r.file_offset + r.length as u64 > self.durable_len {
                return Err(self.corrupt(
                    r.file_offset,
                    Corruption::RegionPastEof {
                        guid: r.guid,
                        offset: r.file_offset,
                        length: r.length,
                        file_len: self.durable_len,
                    },
                ));
            }
        }
        self.bat_offset = bat.file_offset;
        self.bat_length = bat.length as u64;
        self.metadata_offset = meta.file_offset;
        self.metadata_length = meta.length;
        self.region_table = table;
        Ok(())
    }

    fn load_metadata(&mut self) -> Result<()> {
        let mo = self.metadata_offset;
        let mut t = vec![0u8; METADATA_TABLE_SIZE];
        self.read_meta(mo, &mut t)?;
        let table =
            MetadataTable::parse(&t, self.metadata_length).map_err(|k| self.corrupt(mo, k))?;
        let known = [
            FILE_PARAMETERS_GUID,
            VIRTUAL_DISK_SIZE_GUID,
            VIRTUAL_DISK_ID_GUID,
            LOGICAL_SECTOR_SIZE_GUID,
            PHYSICAL_SECTOR_SIZE_GUID,
            PARENT_LOCATOR_GUID,
        ];
        for e in &table.entries {
            if e.is_required && (e.is_user || !known.contains(&e.item_id)) {
                return Err(self.corrupt(mo, Corruption::UnknownRequiredMetadata(e.item_id)));
            }
        }
        let item = |id: Uuid, what: &'static str| -> Result<(u64, Vec<u8>)> {
            let e = table
                .find(id)
                .ok_or_else(|| self.corrupt(mo, Corruption::MissingMetadata(what)))?;
            let mut b = vec![0u8; e.length as usize];
            self.read_meta(mo + e.offset as u64, &mut b)?;
            Ok((mo + e.offset as u64, b))
        };
        let (off, b) = item(FILE_PARAMETERS_GUID, "File Parameters")?;
        let params = FileParameters::parse(&b).map_err(|k| self.corrupt(off, k))?;
        let (off, b) = item(LOGICAL_SECTOR_SIZE_GUID, "Logical Sector Size")?;
        let logical =
            parse_sector_size(&b, "Logical Sector Size").map_err(|k| self.corrupt(off, k))?;
        let (off, b) = item(PHYSICAL_SECTOR_SIZE_GUID, "Physical Sector Size")?;
        let physical =
            parse_sector_size(&b, "Physical Sector Size").map_err(|k| self.corrupt(off, k))?;
        let (off, b) = item(VIRTUAL_DISK_SIZE_GUID, "Virtual Disk Size")?;
        let size = parse_virtual_disk_size(&b, logical).map_err(|k| self.corrupt(off, k))?;
        let (off, b) = item(VIRTUAL_DISK_ID_GUID, "Virtual Disk ID")?;
        let disk_id = parse_virtual_disk_id(&b).map_err(|k| self.corrupt(off, k))?;
        let mut locator = None;
        if params.has_parent {
            let (off, b) = item(PARENT_LOCATOR_GUID, "Parent Locator")?;
            let loc = ParentLocator::parse(&b).map_err(|k| self.corrupt(off, k))?;
            if loc.locator_type != VHDX_PARENT_LOCATOR_TYPE {
                return Err(Error::Unsupported {
                    file: self.name.clone(),
                    what: format!("parent locator type {}", loc.locator_type),
                });
            }
            loc.linkages().map_err(|k| self.corrupt(off, k))?;
            locator = Some(loc);
        }
        self.locator = locator;
        self.disk_id = disk_id;
        self.params = params;
        self.physical_sector_size = physical;
        self.geometry = BatGeometry::new(params.block_size, logical, size, params.has_parent);
        self.metadata_table = table;
        Ok(())
    }

    fn load_bat(&mut self, strictness: Strictness) -> Result<()> {
        let need = self.geometry.total_entries() * 8;
        if self.bat_length < need {
            return Err(self.corrupt(
                self.bat_offset,
                Corruption::BatTooSmall {
                    have: self.bat_length,
                    need,
                },
            ));
        }
        let mut raw = vec![0u8; need as usize];
        self.read_meta(self.bat_offset, &mut raw)?;
        self.bat = raw
            .chunks_exact(8)
            .map(|c| BatEntry(u64::from_le_bytes(c.try_into().unwrap())))
            .collect();
        if strictness == Strictness::Strict {
            // A writable open of a file whose blocks overlap its metadata
            // would overwrite one with the other: refuse it (`check` lists all).
            let first = self
                .bat_problems()
                .into_iter()
                .next()
                .or_else(|| self.layout().overlaps().into_iter().next());
            if let Some((off, kind)) = first {
                return Err(self.corrupt(off, kind));
            }
        }
        Ok(())
    }

    /// Every BAT entry that breaks §2.5, with the file offset of the entry.
    pub(crate) fn bat_problems(&self) -> Vec<(u64, Corruption)> {
        let mut out = Vec::new();
        let g = &self.geometry;
        let disk_type = self.disk_type().name();
        let file_len = self.eof;
        for (i, e) in self.bat.iter().enumerate() {
            let at = self.bat_offset + i as u64 * 8;
            let sb = g.is_sector_bitmap_index(i);
            let state = e.state();
            let valid = if sb {
                state == SB_BLOCK_NOT_PRESENT || (state == SB_BLOCK_PRESENT && g.has_parent)
            } else {
                match PayloadBlockState::from_bits(state) {
                    Some(PayloadBlockState::PartiallyPresent) => g.has_parent,
                    Some(_) => true,
                    None => false,
                }
            };
            if !valid {
                out.push((
                    at,
                    Corruption::BadBatState {
                        index: i,
                        state,
                        disk_type,
                    },
                ));
                continue;
            }
            if e.reserved() != 0 {
                out.push((at, Corruption::BatReservedBits { index: i }));
            }
            let allocated = if sb {
                state == SB_BLOCK_PRESENT
            } else {
                state == PAYLOAD_BLOCK_FULLY_PRESENT || state == PAYLOAD_BLOCK_PARTIALLY_PRESENT
            };
            if !allocated {
                continue;
            }
            let len = if sb {
                SECTOR_BITMAP_BLOCK_SIZE
            } else {
                g.block_size as u64
            };
            if e.file_offset() < HEADER_SECTION_SIZE {
                out.push((
                    at,
                    Corruption::BatInHeaderSection {
                        index: i,
                        offset: e.file_offset(),
                    },
                ));
            } else if e
                .file_offset()
                .checked_add(len)
                .is_none_or(|end| end > file_len)
            {
                out.push((
                    at,
                    Corruption::BatPastEof {
                        index: i,
                        offset: e.file_offset(),
                        file_len,
                    },
                ));
            }
            if !sb && state == PAYLOAD_BLOCK_PARTIALLY_PRESENT {
                let block = g.block_of_index(i);
                let chunk = block / g.chunk_ratio;
                if self.bat[g.sector_bitmap_index(chunk)].state() != SB_BLOCK_PRESENT {
                    out.push((at, Corruption::PartialWithoutBitmap { block }));
                }
            }
        }
        out
    }

    /// Where every structure lies in the file (§2.1: objects must not
    /// overlap): regions, the log, and allocated payload and bitmap blocks.
    pub(crate) fn layout(&self) -> Layout {
        let g = self.geometry;
        let mut spans: Vec<(u64, u64, Object)> = self
            .region_table
            .entries
            .iter()
            .map(|e| {
                (
                    e.file_offset,
                    e.file_offset.saturating_add(e.length as u64),
                    Object::Region(e.guid),
                )
            })
            .collect();
        if let Some((start, end)) = self.header.log_span() {
            spans.push((start, end, Object::Log));
        }
        let (mut used, mut payload_blocks) = (0u64, 0u64);
        for (i, e) in self.bat.iter().enumerate() {
            let sb = g.is_sector_bitmap_index(i);
            let allocated = if sb {
                e.state() == SB_BLOCK_PRESENT
            } else {
                matches!(
                    e.state(),
                    PAYLOAD_BLOCK_FULLY_PRESENT | PAYLOAD_BLOCK_PARTIALLY_PRESENT
                )
            };
            // Entries inside the header section are reported by `bat_problems`.
            if !allocated || e.file_offset() < HEADER_SECTION_SIZE {
                continue;
            }
            let len = if sb {
                SECTOR_BITMAP_BLOCK_SIZE
            } else {
                g.block_size as u64
            };
            used += len;
            let what = if sb {
                Object::SectorBitmap(i as u64 / (g.chunk_ratio + 1))
            } else {
                payload_blocks += 1;
                Object::Payload(g.block_of_index(i))
            };
            spans.push((e.file_offset(), e.file_offset().saturating_add(len), what));
        }
        spans.sort_unstable_by_key(|s| (s.0, s.1));
        Layout {
            spans,
            used,
            payload_blocks,
        }
    }

    /// §2.2.2.1: a writable open updates both headers (new FileWriteGuid,
    /// empty log) before anything else is modified.
    fn open_for_write(&mut self) -> Result<()> {
        let mut h = self.header.clone();
        h.file_write_guid = Uuid::new_v4();
        h.log_guid = Uuid::nil();
        self.write_header(h.clone())?;
        self.write_header(h)?;
        self.durable_len = self
            .file
            .len()
            .map_err(self.io_err("reading the length", 0))?;
        Ok(())
    }

    /// Writes `h` (with the next SequenceNumber) over the non-current
    /// header and flushes; it becomes current.
    ///
    /// A SequenceNumber at its maximum cannot be followed (the new header
    /// would not be current), so such a file cannot be updated.
    pub(crate) fn write_header(&mut self, mut h: Header) -> Result<()> {
        h.sequence_number =
            self.header
                .sequence_number
                .checked_add(1)
                .ok_or_else(|| Error::Unsupported {
                    file: self.name.clone(),
                    what: "updating a header whose SequenceNumber is at its maximum".into(),
                })?;
        let slot = 1 - self.header_slot;
        let off = HEADER_OFFSETS[slot];
        self.file
            .write_at(off, &h.to_bytes())
            .map_err(self.io_err("writing a header", off))?;
        self.file
            .flush()
            .map_err(self.io_err("flushing a header", off))?;
        self.header = h;
        self.header_slot = slot;
        Ok(())
    }

    /// §2.2.2: change DataWriteGuid before the first user-visible change.
    pub(crate) fn before_data_change(&mut self) -> Result<()> {
        if !self.writable {
            return Err(Error::ReadOnly {
                file: self.name.clone(),
            });
        }
        if !self.data_write_guid_changed {
            self.set_data_write_guid(Uuid::new_v4())?;
        }
        Ok(())
    }

    /// Sets DataWriteGuid to `g` now (used by merge, §2.6.2.6.3 note 12);
    /// later writes in this session keep it.
    pub fn set_data_write_guid(&mut self, g: Uuid) -> Result<()> {
        if !self.writable {
            return Err(Error::ReadOnly {
                file: self.name.clone(),
            });
        }
        let mut h = self.header.clone();
        h.data_write_guid = g;
        self.write_header(h)?;
        self.data_write_guid_changed = true;
        Ok(())
    }

    /// Flushes everything and marks the log empty, as a clean close does.
    pub fn close(mut self) -> Result<()> {
        self.close_inner()
    }

    fn close_inner(&mut self) -> Result<()> {
        if self.closed || !self.writable {
            self.closed = true;
            return Ok(());
        }
        self.flush()?;
        if !self.header.log_guid.is_nil() {
            let mut h = self.header.clone();
            h.log_guid = Uuid::nil();
            self.write_header(h.clone())?;
            self.write_header(h)?;
        }
        self.closed = true;
        Ok(())
    }

    /// Drops the handle without flushing or closing, as if the process had
    /// been killed. Whatever was not flushed is left to chance.
    pub fn abandon(mut self) {
        self.closed = true;
    }

    // ---- accessors ----

    pub fn name(&self) -> &str {
        &self.name
    }
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
    pub fn is_writable(&self) -> bool {
        self.writable
    }
    pub fn virtual_size(&self) -> u64 {
        self.geometry.virtual_disk_size
    }
    pub fn block_size(&self) -> u32 {
        self.params.block_size
    }
    pub fn logical_sector_size(&self) -> u32 {
        self.geometry.logical_sector_size
    }
    pub fn physical_sector_size(&self) -> u32 {
        self.physical_sector_size
    }
    pub fn disk_id(&self) -> Uuid {
        self.disk_id
    }
    pub fn header(&self) -> &Header {
        &self.header
    }
    pub fn data_write_guid(&self) -> Uuid {
        self.header.data_write_guid
    }
    pub fn parent_locator(&self) -> Option<&ParentLocator> {
        self.locator.as_ref()
    }
    pub fn geometry(&self) -> &BatGeometry {
        &self.geometry
    }
    pub fn metadata_table(&self) -> &MetadataTable {
        &self.metadata_table
    }
    pub fn region_table(&self) -> &RegionTable {
        &self.region_table
    }
    pub fn log_was_replayed(&self) -> bool {
        self.log_replayed
    }
    pub fn stats(&self) -> Stats {
        self.stats
    }
    pub fn disk_type(&self) -> DiskType {
        if self.params.has_parent {
            DiskType::Differencing
        } else if self.params.leave_block_allocated {
            DiskType::Fixed
        } else {
            DiskType::Dynamic
        }
    }
    /// The state and file offset of payload block `block`.
    pub fn block_entry(&self, block: u64) -> (PayloadBlockState, u64) {
        let e = self.bat[self.geometry.payload_index(block)];
        (
            PayloadBlockState::from_bits(e.state()).unwrap_or(PayloadBlockState::Undefined),
            e.file_offset(),
        )
    }
    /// Bytes of the file, as the handle sees it.
    pub fn file_size(&self) -> u64 {
        self.file.len().unwrap_or(self.eof)
    }
}

/// One object of the file, for overlap reports.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Object {
    Region(Uuid),
    Log,
    Payload(u64),
    SectorBitmap(u64),
}

impl std::fmt::Display for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Object::Region(g) => write!(f, "region {g}"),
            Object::Log => write!(f, "the log"),
            Object::Payload(b) => write!(f, "payload block {b}"),
            Object::SectorBitmap(c) => write!(f, "sector bitmap block {c}"),
        }
    }
}

/// The file's objects sorted by offset.
pub(crate) struct Layout {
    pub spans: Vec<(u64, u64, Object)>,
    /// Bytes used by allocated blocks.
    pub used: u64,
    pub payload_blocks: u64,
}

impl Layout {
    /// Every pair of objects sharing file space.
    pub fn overlaps(&self) -> Vec<(u64, Corruption)> {
        let mut out = Vec::new();
        let mut reach: Option<(u64, Object)> = None;
        for &(start, end, what) in &self.spans {
            if let Some((r_end, r_what)) = reach {
                if start < r_end {
                    out.push((
                        start,
                        Corruption::Overlap(format!("{r_what} and {what} use the same file space")),
                    ));
                }
            }
            if reach.is_none_or(|(r_end, _)| end > r_end) {
                reach = Some((end, what));
            }
        }
        out
    }
}

impl Drop for Vhdx {
    fn drop(&mut self) {
        let _ = self.close_inner();
    }
}

/// The most bytes the zero descriptors (§2.3.1.2) of one replayed sequence
/// may cover together; metadata updates are never larger, and this bounds
/// the memory a read-only replay needs (it keeps the zeroed pages).
const MAX_REPLAY_ZERO: u64 = 64 * MIB;

/// The most a log replay may grow the file. §2.3.1.1: FlushedFileOffset is
/// the file's size when the entry was written (the file is at least that
/// long, or the open fails as truncated) and LastFileOffset the size all
/// allocated structures fit into, so a replay grows the file only by what
/// the writer allocated after its last flush of the file size (less than
/// 1 MB for refpoint, which makes the size durable before writing the log).
/// A log asking for more is corrupt; taken at its word, a damaged 64-bit
/// offset would grow the file to exabytes.
pub(crate) const MAX_LOG_GROWTH: u64 = GIB;

fn update_len(u: &LogUpdate) -> u64 {
    match u {
        LogUpdate::Data { data, .. } => data.len() as u64,
        LogUpdate::Zero { length, .. } => *length,
    }
}

/// The 4 KB pages an update writes.
fn pages_of(u: &LogUpdate) -> Vec<(u64, Box<[u8]>)> {
    match u {
        LogUpdate::Data { file_offset, data } => vec![(*file_offset, data.clone())],
        LogUpdate::Zero {
            file_offset,
            length,
        } => (0..length / LOG_SECTOR_SIZE as u64)
            .map(|i| {
                (
                    file_offset + i * LOG_SECTOR_SIZE as u64,
                    vec![0u8; LOG_SECTOR_SIZE].into_boxed_slice(),
                )
            })
            .collect(),
    }
}

/// Takes the writer's advisory lock on a file opened for writing.
pub(crate) fn lock(file: &dyn Storage, name: &str) -> Result<()> {
    file.try_lock_exclusive().map_err(|source| {
        if source.kind() == std::io::ErrorKind::WouldBlock {
            Error::Locked {
                file: name.to_string(),
            }
        } else {
            Error::Io {
                file: name.to_string(),
                op: "locking",
                offset: 0,
                source,
            }
        }
    })
}
