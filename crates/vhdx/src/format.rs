//! Constants of the MS-VHDX format, named as in the specification.

use uuid::Uuid;

pub const KIB: u64 = 1024;
pub const MIB: u64 = 1024 * KIB;
pub const GIB: u64 = 1024 * MIB;
pub const TIB: u64 = 1024 * GIB;

/// §2.1: every object in the file is aligned to 1 MB.
pub const OBJECT_ALIGNMENT: u64 = MIB;
/// §2.2: the header section is the first megabyte of the file.
pub const HEADER_SECTION_SIZE: u64 = MIB;

/// §2.2.1 File Type Identifier at offset 0.
pub const FILE_TYPE_IDENTIFIER_OFFSET: u64 = 0;
pub const FILE_TYPE_IDENTIFIER_SIGNATURE: &[u8; 8] = b"vhdxfile";
/// §2.2.2 the two headers, 4 KB each, at 64 KB and 128 KB.
pub const HEADER_OFFSETS: [u64; 2] = [64 * KIB, 128 * KIB];
pub const HEADER_SIZE: usize = 4096;
pub const HEADER_SIGNATURE: &[u8; 4] = b"head";
/// §2.2.3 the two region tables, 64 KB each, at 192 KB and 256 KB.
pub const REGION_TABLE_OFFSETS: [u64; 2] = [192 * KIB, 256 * KIB];
pub const REGION_TABLE_SIZE: usize = 64 * 1024;
pub const REGION_TABLE_SIGNATURE: &[u8; 4] = b"regi";
pub const REGION_TABLE_MAX_ENTRIES: u32 = 2047;

/// §2.2.3.2 known regions.
pub const BAT_REGION_GUID: Uuid = Uuid::from_u128(0x2DC27766_F623_4200_9D64_115E9BFD4A08);
pub const METADATA_REGION_GUID: Uuid = Uuid::from_u128(0x8B7CA206_4790_4B9A_B8FE_575F050F886E);

/// §2.3.1 log entries are made of 4 KB sectors.
pub const LOG_SECTOR_SIZE: usize = 4096;
pub const LOG_ENTRY_SIGNATURE: &[u8; 4] = b"loge";
pub const ZERO_DESCRIPTOR_SIGNATURE: &[u8; 4] = b"zero";
pub const DATA_DESCRIPTOR_SIGNATURE: &[u8; 4] = b"desc";
pub const DATA_SECTOR_SIGNATURE: &[u8; 4] = b"data";
pub const LOG_ENTRY_HEADER_SIZE: usize = 64;
pub const LOG_DESCRIPTOR_SIZE: usize = 32;
/// The log size refpoint creates (the size Hyper-V uses).
pub const DEFAULT_LOG_LENGTH: u32 = MIB as u32;

/// §2.6.1 the metadata table is the first 64 KB of the metadata region.
pub const METADATA_TABLE_SIZE: usize = 64 * 1024;
pub const METADATA_TABLE_SIGNATURE: &[u8; 8] = b"metadata";
pub const METADATA_TABLE_MAX_ENTRIES: u16 = 2047;
pub const METADATA_MAX_USER_ENTRIES: usize = 1024;
pub const METADATA_ITEM_MAX_LENGTH: u32 = MIB as u32;
/// The metadata region size refpoint creates.
pub const DEFAULT_METADATA_REGION_LENGTH: u32 = MIB as u32;

/// §2.6.2 known metadata items.
pub const FILE_PARAMETERS_GUID: Uuid = Uuid::from_u128(0xCAA16737_FA36_4D43_B3B6_33F0AA44E76B);
pub const VIRTUAL_DISK_SIZE_GUID: Uuid = Uuid::from_u128(0x2FA54224_CD1B_4876_B211_5DBED83BF4B8);
pub const VIRTUAL_DISK_ID_GUID: Uuid = Uuid::from_u128(0xBECA12AB_B2E6_4523_93EF_C309E000C746);
pub const LOGICAL_SECTOR_SIZE_GUID: Uuid = Uuid::from_u128(0x8141BF1D_A96F_4709_BA47_F233A8FAAB5F);
pub const PHYSICAL_SECTOR_SIZE_GUID: Uuid = Uuid::from_u128(0xCDA348C7_445D_4471_9CC9_E9885251C556);
pub const PARENT_LOCATOR_GUID: Uuid = Uuid::from_u128(0xA8D35F2D_B30B_454D_ABF7_D3D84834AB0C);
/// §2.6.2.6.3 the VHDX parent locator type.
pub const VHDX_PARENT_LOCATOR_TYPE: Uuid = Uuid::from_u128(0xB04AEFB7_D19E_4A81_B789_25B8E9445913);

/// §2.6.2.1 block size bounds.
pub const MIN_BLOCK_SIZE: u32 = MIB as u32;
pub const MAX_BLOCK_SIZE: u32 = 256 * MIB as u32;
pub const DEFAULT_BLOCK_SIZE: u32 = 32 * MIB as u32;
/// §2.6.2.2 the largest virtual disk.
pub const MAX_VIRTUAL_DISK_SIZE: u64 = 64 * TIB;

/// §2.4 a sector bitmap block is 1 MB and describes 2^23 sectors.
pub const SECTOR_BITMAP_BLOCK_SIZE: u64 = MIB;
pub const SECTORS_PER_BITMAP_BLOCK: u64 = 1 << 23;

/// Reads a little-endian `u16` at `off`.
pub(crate) fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
}
/// Reads a little-endian `u32` at `off`.
pub(crate) fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}
/// Reads a little-endian `u64` at `off`.
pub(crate) fn le64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}
/// Reads a GUID stored in its binary (mixed-endian, Windows) form.
pub(crate) fn guid(b: &[u8], off: usize) -> Uuid {
    Uuid::from_bytes_le(b[off..off + 16].try_into().unwrap())
}
pub(crate) fn put16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn put32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn put64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}
pub(crate) fn put_guid(b: &mut [u8], off: usize, v: Uuid) {
    b[off..off + 16].copy_from_slice(&v.to_bytes_le());
}

/// CRC-32C of `buf` with the 4-byte checksum field at `checksum_at` taken
/// as zero, as every checksummed VHDX structure defines it.
pub(crate) fn crc_with_zeroed_field(buf: &[u8], checksum_at: usize) -> u32 {
    let crc = crc32c::crc32c(&buf[..checksum_at]);
    let crc = crc32c::crc32c_append(crc, &[0; 4]);
    crc32c::crc32c_append(crc, &buf[checksum_at + 4..])
}

pub(crate) fn align_up(v: u64, a: u64) -> u64 {
    v.div_ceil(a) * a
}
