//! MS-VHDX §2.6.1 Metadata Table: the first 64 KB of the metadata region,
//! listing system and user metadata items. Items we do not know are kept
//! byte for byte; an unknown item marked IsRequired stops the open.

use crate::error::Corruption;
use crate::format::*;
use std::collections::HashSet;
use uuid::Uuid;

/// §2.6.1.2 Metadata Table Entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetadataTableEntry {
    pub item_id: Uuid,
    /// Offset relative to the start of the metadata region.
    pub offset: u32,
    pub length: u32,
    pub is_user: bool,
    pub is_virtual_disk: bool,
    pub is_required: bool,
}

/// §2.6.1 the metadata table.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct MetadataTable {
    pub entries: Vec<MetadataTableEntry>,
}

const HEADER_LEN: usize = 32;
const ENTRY_SIZE: usize = 32;

impl MetadataTable {
    /// Parses the table and checks every item lies inside a metadata region
    /// of `region_length` bytes without overlapping another. A buffer
    /// shorter than the 64 KB table has no valid signature.
    pub fn parse(b: &[u8], region_length: u32) -> Result<Self, Corruption> {
        let Some(b) = b.get(..METADATA_TABLE_SIZE) else {
            return Err(Corruption::BadMetadataSignature);
        };
        if &b[0..8] != METADATA_TABLE_SIGNATURE {
            return Err(Corruption::BadMetadataSignature);
        }
        let count = le16(b, 10);
        if count > METADATA_TABLE_MAX_ENTRIES {
            return Err(Corruption::TooManyMetadataEntries(count));
        }
        let mut seen = HashSet::new();
        let mut entries = Vec::with_capacity(count as usize);
        for i in 0..count as usize {
            let e = &b[HEADER_LEN + i * ENTRY_SIZE..][..ENTRY_SIZE];
            let flags = le32(e, 24);
            let entry = MetadataTableEntry {
                item_id: guid(e, 0),
                offset: le32(e, 16),
                length: le32(e, 20),
                is_user: flags & 1 != 0,
                is_virtual_disk: flags & 2 != 0,
                is_required: flags & 4 != 0,
            };
            if !seen.insert((entry.item_id, entry.is_user)) {
                return Err(Corruption::DuplicateMetadataItem(entry.item_id));
            }
            let end = entry.offset as u64 + entry.length as u64;
            let bad_place = if entry.length == 0 {
                entry.offset != 0
            } else {
                (entry.offset as usize) < METADATA_TABLE_SIZE
                    || end > region_length as u64
                    || entry.length > METADATA_ITEM_MAX_LENGTH
            };
            if bad_place {
                return Err(Corruption::BadMetadataItemLocation {
                    item: entry.item_id,
                    offset: entry.offset,
                    length: entry.length,
                });
            }
            entries.push(entry);
        }
        if entries.iter().filter(|e| e.is_user).count() > METADATA_MAX_USER_ENTRIES {
            return Err(Corruption::TooManyUserMetadataEntries);
        }
        let mut spans: Vec<_> = entries
            .iter()
            .filter(|e| e.length > 0)
            .map(|e| (e.offset, e.offset + e.length, e.item_id))
            .collect();
        spans.sort();
        for w in spans.windows(2) {
            if w[1].0 < w[0].1 {
                return Err(Corruption::Overlap(format!(
                    "metadata items {} and {} overlap",
                    w[0].2, w[1].2
                )));
            }
        }
        Ok(Self { entries })
    }

    /// The 64 KB on-disk form.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; METADATA_TABLE_SIZE];
        b[0..8].copy_from_slice(METADATA_TABLE_SIGNATURE);
        put16(&mut b, 10, self.entries.len() as u16);
        for (i, e) in self.entries.iter().enumerate() {
            let o = HEADER_LEN + i * ENTRY_SIZE;
            put_guid(&mut b, o, e.item_id);
            put32(&mut b, o + 16, e.offset);
            put32(&mut b, o + 20, e.length);
            let flags =
                e.is_user as u32 | (e.is_virtual_disk as u32) << 1 | (e.is_required as u32) << 2;
            put32(&mut b, o + 24, flags);
        }
        b
    }

    /// The system (non-user) item with this id.
    pub fn find(&self, id: Uuid) -> Option<&MetadataTableEntry> {
        self.entries.iter().find(|e| e.item_id == id && !e.is_user)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: Uuid, offset: u32, length: u32) -> MetadataTableEntry {
        MetadataTableEntry {
            item_id: id,
            offset,
            length,
            is_user: false,
            is_virtual_disk: true,
            is_required: true,
        }
    }

    #[test]
    fn round_trip_and_placement_checks() {
        let t = MetadataTable {
            entries: vec![
                entry(FILE_PARAMETERS_GUID, 65536, 8),
                entry(VIRTUAL_DISK_SIZE_GUID, 65544, 8),
            ],
        };
        assert_eq!(MetadataTable::parse(&t.to_bytes(), MIB as u32).unwrap(), t);
        let overlap = MetadataTable {
            entries: vec![
                entry(FILE_PARAMETERS_GUID, 65536, 8),
                entry(VIRTUAL_DISK_SIZE_GUID, 65540, 8),
            ],
        };
        assert!(matches!(
            MetadataTable::parse(&overlap.to_bytes(), MIB as u32),
            Err(Corruption::Overlap(_))
        ));
        let outside = MetadataTable {
            entries: vec![entry(FILE_PARAMETERS_GUID, 100, 8)],
        };
        assert!(matches!(
            MetadataTable::parse(&outside.to_bytes(), MIB as u32),
            Err(Corruption::BadMetadataItemLocation { .. })
        ));
    }
}
