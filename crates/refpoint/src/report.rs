//! What `vhd info`, `vhd map` and `vhd check` print, as serializable
//! structures (for `--json`) with a text rendering.

use crate::units::human;
use anyhow::Result;
use serde::Serialize;
use std::fmt::Write;
use std::path::Path;
use storage::LocalFs;
use vhdx::{Chain, PayloadBlockState, Vhdx};

/// `vhd info` output.
#[derive(Debug, Serialize)]
pub struct Info {
    pub path: String,
    pub format: &'static str,
    pub disk_type: &'static str,
    pub virtual_size: u64,
    pub file_size: u64,
    pub block_size: u32,
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
    pub virtual_disk_id: String,
    pub data_write_guid: String,
    pub file_write_guid: String,
    /// "clean", or "dirty" when the log had to be replayed (in memory).
    pub log: &'static str,
    pub blocks_total: u64,
    pub blocks_allocated: u64,
    pub blocks_zero: u64,
    pub blocks_partially_present: u64,
    pub user_metadata_items: usize,
    pub parent: Option<ParentInfo>,
    /// Files of the chain, newest first (the file itself first).
    pub chain: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct ParentInfo {
    pub parent_linkage: String,
    pub parent_linkage2: Option<String>,
    pub relative_path: Option<String>,
    pub absolute_path: Option<String>,
    /// Where the parent was found, if it was.
    pub resolved: Option<String>,
    pub error: Option<String>,
}

/// Gathers `vhd info` for one file (its chain resolved if possible).
pub fn info(path: &Path) -> Result<Info> {
    let v = Vhdx::open(&LocalFs, path, false)?;
    let g = *v.geometry();
    let (mut allocated, mut zero, mut partial) = (0, 0, 0);
    for b in 0..g.payload_blocks {
        match v.block_entry(b).0 {
            PayloadBlockState::FullyPresent => allocated += 1,
            PayloadBlockState::PartiallyPresent => {
                allocated += 1;
                partial += 1
            }
            PayloadBlockState::Zero | PayloadBlockState::Unmapped => zero += 1,
            _ => {}
        }
    }
    let mut chain = vec![path.display().to_string()];
    let parent = v.parent_locator().map(|loc| {
        let (l1, l2) = loc
            .linkages()
            .map(|(a, b)| (a.to_string(), b.map(|b| b.to_string())))
            .unwrap_or_default();
        let (resolved, error) = match Chain::open(&LocalFs, path, false) {
            Ok(c) => {
                chain = c.layers().iter().map(|l| l.name().to_string()).collect();
                (c.layers().get(1).map(|l| l.name().to_string()), None)
            }
            Err(e) => (None, Some(e.to_string())),
        };
        ParentInfo {
            parent_linkage: l1,
            parent_linkage2: l2,
            relative_path: loc.get(vhdx::locator::RELATIVE_PATH).map(String::from),
            absolute_path: loc
                .get(vhdx::locator::ABSOLUTE_WIN32_PATH)
                .map(String::from),
            resolved,
            error,
        }
    });
    Ok(Info {
        path: path.display().to_string(),
        format: "vhdx",
        disk_type: v.disk_type().name(),
        virtual_size: v.virtual_size(),
        file_size: v.file_size(),
        block_size: v.block_size(),
        logical_sector_size: v.logical_sector_size(),
        physical_sector_size: v.physical_sector_size(),
        virtual_disk_id: v.disk_id().to_string(),
        data_write_guid: v.data_write_guid().to_string(),
        file_write_guid: v.header().file_write_guid.to_string(),
        log: if v.log_was_replayed() {
            "dirty"
        } else {
            "clean"
        },
        blocks_total: g.payload_blocks,
        blocks_allocated: allocated,
        blocks_zero: zero,
        blocks_partially_present: partial,
        user_metadata_items: v
            .metadata_table()
            .entries
            .iter()
            .filter(|e| e.is_user)
            .count(),
        parent,
        chain,
    })
}

impl Info {
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "image:                {}", self.path);
        let _ = writeln!(s, "format:               vhdx ({})", self.disk_type);
        let _ = writeln!(
            s,
            "virtual size:         {} ({} bytes)",
            human(self.virtual_size),
            self.virtual_size
        );
        let _ = writeln!(s, "file size:            {}", human(self.file_size));
        let _ = writeln!(s, "block size:           {}", human(self.block_size as u64));
        let _ = writeln!(
            s,
            "sector size:          {} logical, {} physical",
            self.logical_sector_size, self.physical_sector_size
        );
        let _ = writeln!(
            s,
            "blocks:               {} of {} allocated ({} partially present), {} zero",
            self.blocks_allocated,
            self.blocks_total,
            self.blocks_partially_present,
            self.blocks_zero
        );
        let _ = writeln!(s, "virtual disk id:      {}", self.virtual_disk_id);
        let _ = writeln!(s, "data write guid:      {}", self.data_write_guid);
        let _ = writeln!(s, "log:                  {}", self.log);
        if self.user_metadata_items > 0 {
            let _ = writeln!(s, "user metadata items:  {}", self.user_metadata_items);
        }
        if let Some(p) = &self.parent {
            let _ = writeln!(s, "parent linkage:       {}", p.parent_linkage);
            if let Some(l2) = &p.parent_linkage2 {
                let _ = writeln!(
                    s,
                    "parent linkage 2:     {l2} (a merge into the parent was started)"
                );
            }
            match (&p.resolved, &p.error) {
                (Some(r), _) => {
                    let _ = writeln!(s, "parent:               {r}");
                }
                (_, Some(e)) => {
                    let _ = writeln!(s, "parent:               NOT USABLE: {e}");
                }
                _ => {}
            }
            let _ = writeln!(s, "chain ({} files):", self.chain.len());
            for c in &self.chain {
                let _ = writeln!(s, "  {c}");
            }
        }
        s
    }
}

/// One run of `vhd map`.
#[derive(Debug, Serialize)]
pub struct MapEntry {
    pub offset: u64,
    pub length: u64,
    /// Whether the range holds data (false: reads as zeros).
    pub data: bool,
    /// The chain file holding the data.
    pub file: Option<String>,
}

/// Maps the whole virtual disk of `path` through its chain.
pub fn map(path: &Path) -> Result<Vec<MapEntry>> {
    let chain = Chain::open(&LocalFs, path, false)?;
    let names: Vec<String> = chain
        .layers()
        .iter()
        .map(|l| l.name().to_string())
        .collect();
    Ok(chain
        .map(0, chain.virtual_size())?
        .into_iter()
        .map(|(offset, length, layer)| MapEntry {
            offset,
            length,
            data: layer.is_some(),
            file: layer.map(|l| names[l].clone()),
        })
        .collect())
}

/// `vhd check` output.
#[derive(Debug, Serialize)]
pub struct CheckOutput {
    pub path: String,
    pub valid: bool,
    pub problems: Vec<ProblemOut>,
    pub notes: Vec<String>,
    pub repaired: Vec<String>,
    pub allocated_blocks: u64,
    pub leaked_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct ProblemOut {
    pub offset: u64,
    pub problem: String,
    pub repairable: bool,
}

impl CheckOutput {
    pub fn new(path: &Path, r: vhdx::CheckReport) -> Self {
        Self {
            path: path.display().to_string(),
            valid: r.is_valid(),
            problems: r
                .problems
                .into_iter()
                .map(|p| ProblemOut {
                    offset: p.offset,
                    problem: p.what,
                    repairable: p.repairable,
                })
                .collect(),
            notes: r.notes,
            repaired: r.repaired,
            allocated_blocks: r.allocated_blocks,
            leaked_bytes: r.leaked_bytes,
        }
    }

    pub fn to_text(&self) -> String {
        let mut s = String::new();
        for r in &self.repaired {
            let _ = writeln!(s, "repaired: {r}");
        }
        for p in &self.problems {
            let fix = if p.repairable {
                " (repairable with --repair)"
            } else {
                ""
            };
            let _ = writeln!(s, "ERROR at offset {:#x}: {}{fix}", p.offset, p.problem);
        }
        for n in &self.notes {
            let _ = writeln!(s, "note: {n}");
        }
        if self.valid {
            let _ = writeln!(
                s,
                "No errors were found on the image. {} blocks allocated.",
                self.allocated_blocks
            );
        } else {
            let _ = writeln!(
                s,
                "{} error(s) found in {}.",
                self.problems.len(),
                self.path
            );
        }
        if self.leaked_bytes > 0 {
            let _ = writeln!(s, "{} of file space is not used by any structure (freed blocks or gaps; `vhd convert` compacts).", human(self.leaked_bytes));
        }
        s
    }
}
