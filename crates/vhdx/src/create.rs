//! Creating VHDX files: fixed, dynamic and differencing (§2 layout).
//!
//! ```text
//! 0      1 MB      2 MB        3 MB          3 MB + BAT
//! │header │  log    │ metadata   │   BAT       │ payload / bitmap blocks…
//! section (1 MB)     (1 MB)       (1 MB steps)
//! ```
//!
//! The file is built under a temporary name and renamed into place, so a
//! crash during creation never leaves a half-made file at the target path.
//!
//! A differencing file gets every chunk's sector bitmap block at once,
//! right after the BAT, all zeros (every sector "from the parent"). §2.5.1.2
//! would let a chunk without partially present blocks go without one
//! (SB_BLOCK_NOT_PRESENT), but some readers (libvhdi) consult the bitmap of
//! every block that is not fully present and read a missing one at file
//! offset 0, the file type identifier, so they would take parent sectors
//! for this file's. The blocks are sparse: the file is sized past them and
//! nothing is written but their BAT entries (one megabyte of file per 2^23
//! sectors: 512 MiB for a 2 TiB disk of 512-byte sectors, 64 MiB of
//! 4096-byte ones).

use crate::bat::*;
use crate::disk::{DiskType, Vhdx};
use crate::error::{Error, Result};
use crate::file_id::FileTypeIdentifier;
use crate::format::*;
use crate::header::Header;
use crate::known_meta::FileParameters;
use crate::locator::{to_locator_path, ParentLocator};
use crate::metadata::{MetadataTable, MetadataTableEntry};
use crate::paths::{absolute, relative_to};
use crate::region::{RegionTable, RegionTableEntry};
use std::path::{Path, PathBuf};
use storage::Fs;
use uuid::Uuid;

/// What to create.
#[derive(Debug, Clone)]
pub struct CreateOptions {
    pub virtual_size: u64,
    /// Fixed or dynamic (a differencing disk is made by [`create_child`]).
    pub disk_type: DiskType,
    pub block_size: u32,
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
}

impl CreateOptions {
    /// A dynamic disk with the defaults: 32 MB blocks, 512-byte sectors.
    pub fn dynamic(virtual_size: u64) -> Self {
        Self {
            virtual_size,
            disk_type: DiskType::Dynamic,
            block_size: DEFAULT_BLOCK_SIZE,
            logical_sector_size: 512,
            physical_sector_size: 4096,
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |s: String| Err(Error::InvalidParameter(s));
        if ![512, 4096].contains(&self.logical_sector_size) {
            return bad(format!(
                "logical sector size {} must be 512 or 4096",
                self.logical_sector_size
            ));
        }
        if ![512, 4096].contains(&self.physical_sector_size) {
            return bad(format!(
                "physical sector size {} must be 512 or 4096",
                self.physical_sector_size
            ));
        }
        if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&self.block_size)
            || !self.block_size.is_power_of_two()
        {
            return bad(format!(
                "block size {} must be a power of two from 1 MiB to 256 MiB",
                self.block_size
            ));
        }
        if self.virtual_size == 0
            || self.virtual_size > MAX_VIRTUAL_DISK_SIZE
            || !self
                .virtual_size
                .is_multiple_of(self.logical_sector_size as u64)
        {
            return bad(format!(
                "size {} must be above 0, at most 64 TiB and a multiple of the {}-byte sector",
                self.virtual_size, self.logical_sector_size
            ));
        }
        Ok(())
    }
}

struct Parent {
    data_write_guid: Uuid,
    relative: String,
    absolute: String,
}

/// Creates a fixed or dynamic VHDX and returns it opened writable.
pub fn create(fs: &dyn Fs, path: &Path, opts: &CreateOptions) -> Result<Vhdx> {
    if opts.disk_type == DiskType::Differencing {
        return Err(Error::InvalidParameter(
            "use create_child for a differencing disk".into(),
        ));
    }
    create_inner(fs, path, opts, None)
}

/// Creates a differencing VHDX whose parent is `parent_path`; size and
/// sector sizes come from the parent, the block size too unless given.
pub fn create_child(
    fs: &dyn Fs,
    path: &Path,
    parent_path: &Path,
    block_size: Option<u32>,
) -> Result<Vhdx> {
    let parent = Vhdx::open(fs, parent_path, false)?;
    let opts = CreateOptions {
        virtual_size: parent.virtual_size(),
        disk_type: DiskType::Differencing,
        block_size: block_size.unwrap_or(parent.block_size()),
        logical_sector_size: parent.logical_sector_size(),
        physical_sector_size: parent.physical_sector_size(),
    };
    let child_abs = absolute(path);
    let parent_abs = absolute(parent_path);
    let rel = relative_to(child_abs.parent().unwrap_or(Path::new("/")), &parent_abs);
    let info = Parent {
        data_write_guid: parent.data_write_guid(),
        relative: to_locator_path(&rel.to_string_lossy()),
        absolute: parent_abs.to_string_lossy().into_owned(),
    };
    drop(parent);
    create_inner(fs, path, &opts, Some(info))
}

fn create_inner(
    fs: &dyn Fs,
    path: &Path,
    opts: &CreateOptions,
    parent: Option<Parent>,
) -> Result<Vhdx> {
    opts.validate()?;
    let name = path.display().to_string();
    let lookup = |source| Error::Io {
        file: name.clone(),
        op: "looking up",
        offset: 0,
        source,
    };
    if fs.exists(path).map_err(lookup)? {
        return Err(Error::InvalidParameter(format!(
            "{name} already exists; refusing to overwrite it"
        )));
    }
    let io = |op: &'static str, offset: u64| {
        let name = name.clone();
        move |source| Error::Io {
            file: name,
            op,
            offset,
            source,
        }
    };
    let mut tmp = PathBuf::from(path);
    tmp.set_file_name(format!(
        ".{}.creating",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    if fs
        .exists(&tmp)
        .map_err(io("looking up a temporary file", 0))?
    {
        fs.remove(&tmp)
            .map_err(io("removing a stale temporary file", 0))?;
    }
    let file = fs.create(&tmp).map_err(io("creating", 0))?;

    let has_parent = parent.is_some();
    let fixed = opts.disk_type == DiskType::Fixed;
    let g = BatGeometry::new(
        opts.block_size,
        opts.logical_sector_size,
        opts.virtual_size,
        has_parent,
    );
    let log_offset = MIB;
    let metadata_offset = 2 * MIB;
    let bat_offset = 3 * MIB;
    let bat_length = g.bat_region_length();
    let payload_start = bat_offset + bat_length;

    let w = |off: u64, b: &[u8]| file.write_at(off, b).map_err(io("writing", off));
    let id = FileTypeIdentifier {
        creator: format!("refpoint {}", env!("CARGO_PKG_VERSION")),
    };
    w(0, &id.to_bytes())?;
    let header = Header {
        sequence_number: 0,
        file_write_guid: Uuid::new_v4(),
        data_write_guid: Uuid::new_v4(),
        log_guid: Uuid::nil(),
        log_version: 0,
        version: 1,
        log_length: DEFAULT_LOG_LENGTH,
        log_offset,
    };
    for (slot, off) in HEADER_OFFSETS.iter().enumerate() {
        let h = Header {
            sequence_number: slot as u64,
            ..header.clone()
        };
        w(*off, &h.to_bytes())?;
    }
    let regions = RegionTable {
        entries: vec![
            RegionTableEntry {
                guid: BAT_REGION_GUID,
                file_offset: bat_offset,
                length: bat_length as u32,
                required: true,
            },
            RegionTableEntry {
                guid: METADATA_REGION_GUID,
                file_offset: metadata_offset,
                length: DEFAULT_METADATA_REGION_LENGTH,
                required: true,
            },
        ],
    };
    for off in REGION_TABLE_OFFSETS {
        w(off, &regions.to_bytes())?;
    }

    // §2.6.2 metadata items, packed after the 64 KB table.
    let params = FileParameters {
        block_size: opts.block_size,
        leave_block_allocated: fixed,
        has_parent,
    };
    let mut items: Vec<(Uuid, bool, Vec<u8>)> = vec![
        (FILE_PARAMETERS_GUID, false, params.to_bytes()),
        (
            VIRTUAL_DISK_SIZE_GUID,
            true,
            opts.virtual_size.to_le_bytes().to_vec(),
        ),
        (
            VIRTUAL_DISK_ID_GUID,
            true,
            Uuid::new_v4().to_bytes_le().to_vec(),
        ),
        (
            LOGICAL_SECTOR_SIZE_GUID,
            true,
            opts.logical_sector_size.to_le_bytes().to_vec(),
        ),
        (
            PHYSICAL_SECTOR_SIZE_GUID,
            true,
            opts.physical_sector_size.to_le_bytes().to_vec(),
        ),
    ];
    if let Some(p) = &parent {
        let loc = ParentLocator::new_vhdx(p.data_write_guid, &p.relative, &p.absolute);
        items.push((PARENT_LOCATOR_GUID, false, loc.to_bytes()));
    }
    let mut table = MetadataTable::default();
    let mut item_off = METADATA_TABLE_SIZE as u32;
    for (id, is_virtual_disk, bytes) in &items {
        table.entries.push(MetadataTableEntry {
            item_id: *id,
            offset: item_off,
            length: bytes.len() as u32,
            is_user: false,
            is_virtual_disk: *is_virtual_disk,
            is_required: true,
        });
        w(metadata_offset + item_off as u64, bytes)?;
        item_off += align_up(bytes.len() as u64, 8) as u32;
    }
    w(metadata_offset, &table.to_bytes())?;

    // The BAT: all zeros (NOT_PRESENT) except for a fixed disk.
    let mut end = payload_start;
    if fixed {
        let mut bat = vec![0u8; (g.total_entries() * 8) as usize];
        for block in 0..g.payload_blocks {
            let i = g.payload_index(block);
            let e = BatEntry::new(
                PAYLOAD_BLOCK_FULLY_PRESENT,
                payload_start + block * opts.block_size as u64,
            );
            bat[i * 8..i * 8 + 8].copy_from_slice(&e.0.to_le_bytes());
        }
        w(bat_offset, &bat)?;
        end = payload_start + g.payload_blocks * opts.block_size as u64;
    }
    if has_parent {
        // §2.4, §2.5.1.2: one SB_BLOCK_PRESENT entry per chunk, its block
        // fresh (zero) space; each entry is written alone, so a large BAT
        // costs a few bytes per chunk, not its whole length.
        for chunk in 0..g.sector_bitmap_blocks {
            let e = BatEntry::new(SB_BLOCK_PRESENT, end);
            w(
                bat_offset + g.sector_bitmap_index(chunk) as u64 * 8,
                &e.0.to_le_bytes(),
            )?;
            end += SECTOR_BITMAP_BLOCK_SIZE;
        }
    }
    file.set_len(end).map_err(io("sizing", end))?;
    file.flush().map_err(io("flushing", 0))?;
    drop(file);
    // The name must be durable before the disk is reported created.
    fs.rename_durable(&tmp, path)
        .map_err(io("renaming into place", 0))?;
    Vhdx::open(fs, path, true)
}
