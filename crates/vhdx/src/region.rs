//! MS-VHDX §2.2.3 Region Table: two 64 KB copies at 192 KB and 256 KB
//! listing the BAT, the metadata region and any future regions.

use crate::error::Corruption;
use crate::format::*;
use std::collections::HashSet;
use uuid::Uuid;

/// §2.2.3.2 Region Table Entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionTableEntry {
    pub guid: Uuid,
    pub file_offset: u64,
    pub length: u32,
    pub required: bool,
}

/// §2.2.3 a whole region table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegionTable {
    pub entries: Vec<RegionTableEntry>,
}

const ENTRY_SIZE: usize = 32;
const HEADER_LEN: usize = 16;

impl RegionTable {
    /// Parses and validates one 64 KB copy (a shorter buffer has no valid
    /// signature).
    pub fn parse(b: &[u8]) -> Result<Self, Corruption> {
        let Some(b) = b.get(..REGION_TABLE_SIZE) else {
            return Err(Corruption::BadRegionTableSignature);
        };
        if &b[0..4] != REGION_TABLE_SIGNATURE {
            return Err(Corruption::BadRegionTableSignature);
        }
        if le32(b, 4) != crc_with_zeroed_field(b, 4) {
            return Err(Corruption::BadRegionTableChecksum);
        }
        let count = le32(b, 8);
        if count > REGION_TABLE_MAX_ENTRIES {
            return Err(Corruption::TooManyRegions(count));
        }
        let mut seen = HashSet::new();
        let mut entries = Vec::with_capacity(count as usize);
        for i in 0..count as usize {
            let e = &b[HEADER_LEN + i * ENTRY_SIZE..][..ENTRY_SIZE];
            let entry = RegionTableEntry {
                guid: guid(e, 0),
                file_offset: le64(e, 16),
                length: le32(e, 24),
                required: le32(e, 28) & 1 == 1,
            };
            if !seen.insert(entry.guid) {
                return Err(Corruption::DuplicateRegion(entry.guid));
            }
            if !entry.file_offset.is_multiple_of(OBJECT_ALIGNMENT)
                || entry.file_offset < HEADER_SECTION_SIZE
                || !(entry.length as u64).is_multiple_of(OBJECT_ALIGNMENT)
                || entry.length == 0
                || entry.file_offset.checked_add(entry.length as u64).is_none()
            {
                return Err(Corruption::BadRegionLocation {
                    guid: entry.guid,
                    offset: entry.file_offset,
                    length: entry.length,
                });
            }
            entries.push(entry);
        }
        Ok(Self { entries })
    }

    /// The 64 KB on-disk form, checksum included.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; REGION_TABLE_SIZE];
        b[0..4].copy_from_slice(REGION_TABLE_SIGNATURE);
        put32(&mut b, 8, self.entries.len() as u32);
        for (i, e) in self.entries.iter().enumerate() {
            let o = HEADER_LEN + i * ENTRY_SIZE;
            put_guid(&mut b, o, e.guid);
            put64(&mut b, o + 16, e.file_offset);
            put32(&mut b, o + 24, e.length);
            put32(&mut b, o + 28, e.required as u32);
        }
        let crc = crc_with_zeroed_field(&b, 4);
        put32(&mut b, 4, crc);
        b
    }

    /// The entry for a region, if present.
    pub fn find(&self, guid: Uuid) -> Option<&RegionTableEntry> {
        self.entries.iter().find(|e| e.guid == guid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_validation() {
        let t = RegionTable {
            entries: vec![
                RegionTableEntry {
                    guid: BAT_REGION_GUID,
                    file_offset: 3 * MIB,
                    length: MIB as u32,
                    required: true,
                },
                RegionTableEntry {
                    guid: METADATA_REGION_GUID,
                    file_offset: 2 * MIB,
                    length: MIB as u32,
                    required: true,
                },
            ],
        };
        let b = t.to_bytes();
        assert_eq!(RegionTable::parse(&b).unwrap(), t);
        let mut bad = b.clone();
        bad[40] ^= 0x80;
        assert_eq!(
            RegionTable::parse(&bad),
            Err(Corruption::BadRegionTableChecksum)
        );
        let mut unaligned = t.clone();
        unaligned.entries[0].file_offset += 4096;
        assert!(matches!(
            RegionTable::parse(&unaligned.to_bytes()),
            Err(Corruption::BadRegionLocation { .. })
        ));
        let mut dup = t.clone();
        dup.entries[1].guid = BAT_REGION_GUID;
        assert_eq!(
            RegionTable::parse(&dup.to_bytes()),
            Err(Corruption::DuplicateRegion(BAT_REGION_GUID))
        );
    }
}
