//! MS-VHDX §2.5 BAT: one 64-bit entry per payload block, with a sector
//! bitmap entry after every `chunk_ratio` payload entries (§2.4, §2.5).

use crate::format::*;

/// §2.5.1.1 Payload BAT Entry States.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PayloadBlockState {
    NotPresent = 0,
    Undefined = 1,
    Zero = 2,
    Unmapped = 3,
    FullyPresent = 6,
    PartiallyPresent = 7,
}

pub const PAYLOAD_BLOCK_NOT_PRESENT: u8 = 0;
pub const PAYLOAD_BLOCK_UNDEFINED: u8 = 1;
pub const PAYLOAD_BLOCK_ZERO: u8 = 2;
pub const PAYLOAD_BLOCK_UNMAPPED: u8 = 3;
pub const PAYLOAD_BLOCK_FULLY_PRESENT: u8 = 6;
pub const PAYLOAD_BLOCK_PARTIALLY_PRESENT: u8 = 7;
/// §2.5.1.2 Sector Bitmap BAT Entry States.
pub const SB_BLOCK_NOT_PRESENT: u8 = 0;
pub const SB_BLOCK_PRESENT: u8 = 6;

impl PayloadBlockState {
    pub fn from_bits(v: u8) -> Option<Self> {
        Some(match v {
            PAYLOAD_BLOCK_NOT_PRESENT => Self::NotPresent,
            PAYLOAD_BLOCK_UNDEFINED => Self::Undefined,
            PAYLOAD_BLOCK_ZERO => Self::Zero,
            PAYLOAD_BLOCK_UNMAPPED => Self::Unmapped,
            PAYLOAD_BLOCK_FULLY_PRESENT => Self::FullyPresent,
            PAYLOAD_BLOCK_PARTIALLY_PRESENT => Self::PartiallyPresent,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::NotPresent => "not_present",
            Self::Undefined => "undefined",
            Self::Zero => "zero",
            Self::Unmapped => "unmapped",
            Self::FullyPresent => "fully_present",
            Self::PartiallyPresent => "partially_present",
        }
    }
}

/// §2.5.1 BAT Entry: State (bits 0–2), Reserved (3–19), FileOffsetMB (20–63).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BatEntry(pub u64);

impl BatEntry {
    pub fn new(state: u8, file_offset: u64) -> Self {
        debug_assert_eq!(file_offset % MIB, 0);
        Self((file_offset / MIB) << 20 | state as u64)
    }
    pub fn state(self) -> u8 {
        (self.0 & 7) as u8
    }
    pub fn reserved(self) -> u64 {
        (self.0 >> 3) & 0x1_ffff
    }
    pub fn file_offset_mb(self) -> u64 {
        self.0 >> 20
    }
    /// FileOffsetMB in bytes.
    pub fn file_offset(self) -> u64 {
        self.file_offset_mb() * MIB
    }
}

/// Part of a virtual range that lies within one payload block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub block: u64,
    /// Offset of the piece within its block.
    pub in_block: u64,
    /// Virtual offset of the piece.
    pub offset: u64,
    pub len: u64,
}

/// The shape of a BAT, derived from the file parameters (§2.4, §2.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatGeometry {
    pub block_size: u32,
    pub logical_sector_size: u32,
    pub virtual_disk_size: u64,
    pub has_parent: bool,
    /// Payload blocks per sector bitmap block: 2^23 × LogicalSectorSize / BlockSize.
    pub chunk_ratio: u64,
    pub payload_blocks: u64,
    pub sector_bitmap_blocks: u64,
}

impl BatGeometry {
    pub fn new(
        block_size: u32,
        logical_sector_size: u32,
        virtual_disk_size: u64,
        has_parent: bool,
    ) -> Self {
        let chunk_ratio = SECTORS_PER_BITMAP_BLOCK * logical_sector_size as u64 / block_size as u64;
        let payload_blocks = virtual_disk_size.div_ceil(block_size as u64);
        Self {
            block_size,
            logical_sector_size,
            virtual_disk_size,
            has_parent,
            chunk_ratio,
            payload_blocks,
            sector_bitmap_blocks: payload_blocks.div_ceil(chunk_ratio),
        }
    }

    /// Total BAT entries (§2.5): for fixed and dynamic disks the last entry
    /// is the last payload block; for differencing disks it is the last
    /// sector bitmap block.
    pub fn total_entries(&self) -> u64 {
        if self.has_parent {
            self.sector_bitmap_blocks * (self.chunk_ratio + 1)
        } else {
            self.payload_blocks + (self.payload_blocks - 1) / self.chunk_ratio
        }
    }

    /// The BAT region length: the entries rounded up to 1 MB.
    pub fn bat_region_length(&self) -> u64 {
        align_up(self.total_entries() * 8, MIB)
    }

    /// BAT index of payload block `block`.
    pub fn payload_index(&self, block: u64) -> usize {
        (block + block / self.chunk_ratio) as usize
    }

    /// BAT index of the sector bitmap block for chunk `chunk`.
    pub fn sector_bitmap_index(&self, chunk: u64) -> usize {
        (chunk * (self.chunk_ratio + 1) + self.chunk_ratio) as usize
    }

    /// Whether BAT index `i` is a sector bitmap entry.
    pub fn is_sector_bitmap_index(&self, i: usize) -> bool {
        (i as u64 + 1).is_multiple_of(self.chunk_ratio + 1)
    }

    /// The payload block number of a payload BAT index.
    pub fn block_of_index(&self, i: usize) -> u64 {
        let i = i as u64;
        i - i / (self.chunk_ratio + 1)
    }

    /// Sectors per payload block.
    pub fn sectors_per_block(&self) -> u64 {
        self.block_size as u64 / self.logical_sector_size as u64
    }

    /// Splits a virtual range at block boundaries: each piece lies in one
    /// payload block.
    pub fn pieces(&self, offset: u64, len: u64) -> impl Iterator<Item = Piece> {
        let bs = self.block_size as u64;
        let end = offset + len;
        let mut pos = offset;
        std::iter::from_fn(move || {
            if pos >= end {
                return None;
            }
            let in_block = pos % bs;
            let p = Piece {
                block: pos / bs,
                in_block,
                offset: pos,
                len: (bs - in_block).min(end - pos),
            };
            pos += p.len;
            Some(p)
        })
    }

    /// The virtual bytes of block `block` (the last one may be short).
    pub fn block_len(&self, block: u64) -> u64 {
        let start = block * self.block_size as u64;
        (self.virtual_disk_size - start).min(self.block_size as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_bits() {
        let e = BatEntry::new(PAYLOAD_BLOCK_FULLY_PRESENT, 5 * MIB);
        assert_eq!((e.state(), e.file_offset(), e.reserved()), (6, 5 * MIB, 0));
        assert_eq!(BatEntry(1 << 3).reserved(), 1);
    }

    #[test]
    fn interleaving_matches_spec_formulas() {
        // 512-byte sectors, 32 MB blocks: chunk ratio 128.
        let g = BatGeometry::new(32 << 20, 512, 10 * GIB, false);
        assert_eq!(g.chunk_ratio, 128);
        assert_eq!(g.payload_blocks, 320);
        assert_eq!(g.total_entries(), 320 + 319 / 128);
        assert_eq!(g.payload_index(128), 129);
        assert_eq!(g.sector_bitmap_index(0), 128);
        assert!(g.is_sector_bitmap_index(128) && !g.is_sector_bitmap_index(129));
        assert_eq!(g.block_of_index(129), 128);
        let d = BatGeometry::new(32 << 20, 512, 10 * GIB, true);
        assert_eq!(d.sector_bitmap_blocks, 3);
        assert_eq!(d.total_entries(), 3 * 129);
        // 4 KB sectors, 1 MB blocks: chunk ratio 32768.
        assert_eq!(
            BatGeometry::new(1 << 20, 4096, GIB, false).chunk_ratio,
            32768
        );
        for i in 0..2000usize {
            let g = BatGeometry::new(1 << 20, 512, 4 * GIB, true);
            if !g.is_sector_bitmap_index(i) {
                assert_eq!(g.payload_index(g.block_of_index(i)), i);
            }
        }
    }
}
