//! `check`: structural validation that reports every problem it finds, and
//! the repairs that are safe (nothing that could lose data).

use crate::bat::*;
use crate::disk::{Strictness, Vhdx};
use crate::error::{Corruption, Error, Result};
use crate::file_id::FileTypeIdentifier;
use crate::format::*;
use crate::header::Header;
use crate::log::find_active_sequence;
use crate::region::RegionTable;
use std::path::Path;
use std::sync::Arc;
use storage::{Fs, OpenMode, Storage};

/// One problem found by [`check`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub offset: u64,
    pub what: String,
    /// Whether `--repair` can fix it without losing data.
    pub repairable: bool,
}

/// The result of a check.
#[derive(Debug, Clone, Default)]
pub struct CheckReport {
    pub problems: Vec<Problem>,
    /// Facts worth knowing that are not problems (e.g. a log to replay).
    pub notes: Vec<String>,
    pub repaired: Vec<String>,
    pub allocated_blocks: u64,
    pub leaked_bytes: u64,
}

impl CheckReport {
    pub fn is_valid(&self) -> bool {
        self.problems.is_empty()
    }
    fn problem(&mut self, offset: u64, what: impl Into<String>, repairable: bool) {
        self.problems.push(Problem {
            offset,
            what: what.into(),
            repairable,
        });
    }
}

/// Checks the file at `path` without modifying it.
pub fn check(fs: &dyn Fs, path: &Path) -> Result<CheckReport> {
    let name = path.display().to_string();
    let file = fs
        .open(path, OpenMode::ReadOnly)
        .map_err(|source| Error::Io {
            file: name.clone(),
            op: "opening",
            offset: 0,
            source,
        })?;
    check_storage(file, &name)
}

fn check_storage(file: Arc<dyn Storage>, name: &str) -> Result<CheckReport> {
    let mut r = CheckReport::default();
    let io = |op: &'static str, offset: u64| {
        let name = name.to_string();
        move |source| Error::Io {
            file: name,
            op,
            offset,
            source,
        }
    };
    let mut id = vec![0u8; FileTypeIdentifier::SIZE];
    file.read_at_or_zero(0, &mut id).map_err(io("reading", 0))?;
    if FileTypeIdentifier::parse(&id).is_none() {
        r.problem(0, Corruption::BadFileSignature.to_string(), false);
        return Ok(r);
    }
    let mut headers = Vec::new();
    for off in HEADER_OFFSETS {
        let mut b = vec![0u8; HEADER_SIZE];
        file.read_at_or_zero(off, &mut b)
            .map_err(io("reading a header", off))?;
        match Header::parse(&b) {
            Ok(h) => headers.push(h),
            Err(k) => r.problem(off, format!("header copy: {k}"), true),
        }
    }
    // The log is read only where the header places it validly inside the
    // file (a bad place is reported by the open below), so a damaged
    // LogLength never sizes an allocation.
    let file_len = file.len().map_err(io("reading the length", 0))?;
    if let Some(h) = headers.iter().max_by_key(|h| h.sequence_number) {
        let span = h.log_span().filter(|&(_, end)| end <= file_len);
        if let (false, 0, Some((start, end))) = (h.log_guid.is_nil(), h.log_version, span) {
            let mut log = vec![0u8; (end - start) as usize];
            if file.read_at(start, &mut log).is_ok() {
                match find_active_sequence(&log, h.log_guid) {
                    Some(_) => r.notes.push("the log holds updates to replay (the file was not closed cleanly); a writable open replays them".into()),
                    None => r.problem(h.log_offset, Corruption::NoValidLogSequence.to_string(), true),
                }
            }
        }
    }
    for off in REGION_TABLE_OFFSETS {
        let mut b = vec![0u8; REGION_TABLE_SIZE];
        file.read_at_or_zero(off, &mut b)
            .map_err(io("reading a region table", off))?;
        if let Err(k) = RegionTable::parse(&b) {
            r.problem(off, format!("region table copy: {k}"), true);
        }
    }
    let v = match Vhdx::open_storage(file, name.to_string(), false, Strictness::Lenient) {
        Ok(v) => v,
        Err(Error::Corrupt { offset, kind, .. }) => {
            if !r
                .problems
                .iter()
                .any(|p| p.what.ends_with(&kind.to_string()))
            {
                r.problem(offset, kind.to_string(), false);
            }
            return Ok(r);
        }
        Err(e) => return Err(e),
    };
    // Re-reading the region copies through the replayed log may show that a
    // damaged copy is only damaged on disk; keep the on-disk finding.
    for (off, kind) in v.bat_problems() {
        let repairable = matches!(
            kind,
            Corruption::BatPastEof { .. }
                | Corruption::BatInHeaderSection { .. }
                | Corruption::BatReservedBits { .. }
        );
        r.problem(off, kind.to_string(), repairable);
    }
    check_overlaps(&v, &mut r);
    Ok(r)
}

/// Payload and bitmap blocks must not overlap each other, the regions or
/// the log (§2.1, §2.5.1).
fn check_overlaps(v: &Vhdx, r: &mut CheckReport) {
    let layout = v.layout();
    for (off, kind) in layout.overlaps() {
        r.problem(off, kind.to_string(), false);
    }
    r.allocated_blocks = layout.payload_blocks;
    let structures: u64 = HEADER_SECTION_SIZE
        + v.region_table
            .entries
            .iter()
            .map(|e| e.length as u64)
            .sum::<u64>()
        + v.header.log_length as u64;
    r.leaked_bytes = v.eof.saturating_sub(structures + layout.used);
}

/// Checks, then repairs what can be repaired safely: replays the log,
/// rewrites a damaged header or region table copy from the good one, and
/// turns BAT entries that point outside the file into zero blocks (their
/// data is not in the file). Returns the report after repair.
pub fn repair(fs: &dyn Fs, path: &Path) -> Result<CheckReport> {
    let before = check(fs, path)?;
    if before.problems.iter().any(|p| !p.repairable) {
        return Ok(before);
    }
    let mut repaired = Vec::new();
    let name = path.display().to_string();
    let file = fs
        .open(path, OpenMode::ReadWrite)
        .map_err(|source| Error::Io {
            file: name.clone(),
            op: "opening for repair",
            offset: 0,
            source,
        })?;
    if before
        .problems
        .iter()
        .any(|p| p.what == Corruption::NoValidLogSequence.to_string())
    {
        clear_log_guid(&*file, &name)?;
        repaired.push(
            "cleared the header's LogGuid: the log held no valid entry to replay".to_string(),
        );
    }
    let mut v = Vhdx::open_storage(file, name.clone(), true, Strictness::Lenient)?;
    if v.log_replayed {
        repaired.push("replayed the log".into());
    }
    repaired.push("rewrote both headers".into());
    for copy in v.bad_region_copies.clone() {
        let bytes = v.region_table.to_bytes();
        v.stage_meta_bytes(REGION_TABLE_OFFSETS[copy], &bytes)?;
        repaired.push(format!(
            "rewrote region table copy {} from the good copy",
            copy + 1
        ));
    }
    for (_, kind) in v.bat_problems() {
        match kind {
            Corruption::BatPastEof { index, .. } | Corruption::BatInHeaderSection { index, .. } => {
                v.before_data_change()?;
                let state = if v.geometry.is_sector_bitmap_index(index) {
                    SB_BLOCK_NOT_PRESENT
                } else {
                    PAYLOAD_BLOCK_ZERO
                };
                v.bat[index] = BatEntry::new(state, 0);
                v.dirty_bat_pages
                    .insert(index as u64 * 8 / LOG_SECTOR_SIZE as u64);
                repaired.push(format!(
                    "BAT entry {index} pointed outside the file; the block now reads as zeros"
                ));
            }
            Corruption::BatReservedBits { index } => {
                let e = v.bat[index];
                v.bat[index] = BatEntry::new(e.state(), e.file_offset());
                v.dirty_bat_pages
                    .insert(index as u64 * 8 / LOG_SECTOR_SIZE as u64);
                repaired.push(format!("cleared reserved bits of BAT entry {index}"));
            }
            _ => {}
        }
    }
    v.close()?;
    let mut after = check(fs, path)?;
    after.repaired = repaired;
    Ok(after)
}

fn clear_log_guid(file: &dyn Storage, name: &str) -> Result<()> {
    for off in HEADER_OFFSETS {
        let mut b = vec![0u8; HEADER_SIZE];
        file.read_at_or_zero(off, &mut b)
            .map_err(|source| Error::Io {
                file: name.into(),
                op: "reading a header",
                offset: off,
                source,
            })?;
        if let Ok(mut h) = Header::parse(&b) {
            h.log_guid = uuid::Uuid::nil();
            file.write_at(off, &h.to_bytes())
                .map_err(|source| Error::Io {
                    file: name.into(),
                    op: "writing a header",
                    offset: off,
                    source,
                })?;
        }
    }
    file.flush().map_err(|source| Error::Io {
        file: name.into(),
        op: "flushing",
        offset: 0,
        source,
    })
}
