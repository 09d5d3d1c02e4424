//! The tracking file `<disk>.rct`: a checksummed header, then checksummed
//! records appended one commit at a time.
//!
//! ```text
//! 0      4 KiB
//! │header│ Retained │ GenSet g │ GenSet g' │ … │ Mark │ Identity │ Seal │ Mark │ …
//!         └──── snapshot written at compaction ────┘└──── journal appended ─────┘
//! header: magic "RPRCTv01", crc32c, tracking GUID, epoch GUID, granularity,
//!         virtual size, current generation, identity of the disk
//! record: "RREC", payload length, crc32c(epoch ‖ kind ‖ payload), kind, payload
//! ```
//!
//! The epoch GUID changes every time the file is rewritten, so a record can
//! only validate inside the file incarnation that wrote it.

use crc32c::{crc32c, crc32c_append};
use roaring::RoaringBitmap;
use uuid::Uuid;

pub const MAGIC: &[u8; 8] = b"RPRCTv01";
pub const HEADER_SIZE: usize = 4096;
pub const RECORD_MAGIC: &[u8; 4] = b"RREC";
pub const RECORD_HEADER: usize = 16;
const MAX_IDENTITY: usize = 1024;

/// The file header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileHeader {
    pub tracking: Uuid,
    pub epoch: Uuid,
    pub granularity: u64,
    pub virtual_size: u64,
    pub current_generation: u64,
    /// Identity of the disk when the file was written (e.g. the VHDX
    /// DataWriteGuid at close).
    pub identity: String,
    /// Tracking was switched off: no generations, every query fails.
    pub disabled: bool,
}

impl FileHeader {
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_SIZE];
        b[0..8].copy_from_slice(MAGIC);
        b[16..32].copy_from_slice(self.tracking.as_bytes());
        b[32..48].copy_from_slice(self.epoch.as_bytes());
        b[48..56].copy_from_slice(&self.granularity.to_le_bytes());
        b[56..64].copy_from_slice(&self.virtual_size.to_le_bytes());
        b[64..72].copy_from_slice(&self.current_generation.to_le_bytes());
        let id = self.identity.as_bytes();
        let n = id.len().min(MAX_IDENTITY);
        b[72..74].copy_from_slice(&(n as u16).to_le_bytes());
        b[76] = self.disabled as u8;
        b[80..80 + n].copy_from_slice(&id[..n]);
        let crc = crc_skip(&b, 8);
        b[8..12].copy_from_slice(&crc.to_le_bytes());
        b
    }

    pub fn parse(b: &[u8]) -> Result<Self, String> {
        if b.len() < HEADER_SIZE || &b[0..8] != MAGIC {
            return Err("not a refpoint tracking file (bad magic)".into());
        }
        if u32::from_le_bytes(b[8..12].try_into().unwrap()) != crc_skip(&b[..HEADER_SIZE], 8) {
            return Err("header checksum mismatch".into());
        }
        let u64at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().unwrap());
        let n = u16::from_le_bytes([b[72], b[73]]) as usize;
        if n > MAX_IDENTITY {
            return Err("identity too long".into());
        }
        let h = FileHeader {
            tracking: Uuid::from_bytes(b[16..32].try_into().unwrap()),
            epoch: Uuid::from_bytes(b[32..48].try_into().unwrap()),
            granularity: u64at(48),
            virtual_size: u64at(56),
            current_generation: u64at(64),
            identity: String::from_utf8(b[80..80 + n].to_vec())
                .map_err(|_| "identity is not UTF-8")?,
            disabled: b[76] & 1 == 1,
        };
        if !h.granularity.is_power_of_two() || h.granularity < 4096 || h.current_generation == 0 {
            return Err("header fields out of range".into());
        }
        if h.virtual_size.div_ceil(h.granularity) > u32::MAX as u64 {
            return Err("too many regions".into());
        }
        Ok(h)
    }
}

fn crc_skip(b: &[u8], at: usize) -> u32 {
    let c = crc32c(&b[..at]);
    let c = crc32c_append(c, &[0; 4]);
    crc32c_append(c, &b[at + 4..])
}

/// One journal record.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// Regions dirtied in a generation (a commit, or a snapshot at compaction).
    GenSet {
        generation: u64,
        regions: RoaringBitmap,
    },
    /// Generation `generation` was sealed; its ID is retained.
    Seal { generation: u64 },
    /// The ID of generation `generation` was released.
    Release { generation: u64 },
    /// The disk may carry this identity from now on (written before the
    /// disk's own identity changes).
    Identity { identity: String },
    /// The retained generations (snapshot).
    Retained { generations: Vec<u64> },
    /// A flush of the disk failed: data the tracking counted as written
    /// may be lost on the medium without a new write, so no change since
    /// any ID can be proven any more (until tracking is started over).
    Distrust { reason: String },
}

impl Record {
    fn kind(&self) -> u8 {
        match self {
            Record::GenSet { .. } => 1,
            Record::Seal { .. } => 2,
            Record::Release { .. } => 3,
            Record::Identity { .. } => 4,
            Record::Retained { .. } => 5,
            Record::Distrust { .. } => 6,
        }
    }

    fn payload(&self) -> Vec<u8> {
        match self {
            Record::GenSet {
                generation,
                regions,
            } => {
                let mut p = generation.to_le_bytes().to_vec();
                regions
                    .serialize_into(&mut p)
                    .expect("writing to a Vec cannot fail");
                p
            }
            Record::Seal { generation } | Record::Release { generation } => {
                generation.to_le_bytes().to_vec()
            }
            Record::Identity { identity } => identity.as_bytes().to_vec(),
            Record::Distrust { reason } => reason.as_bytes().to_vec(),
            Record::Retained { generations } => {
                generations.iter().flat_map(|g| g.to_le_bytes()).collect()
            }
        }
    }

    /// The record's bytes, padded to 8, checksummed with the file's epoch.
    pub fn encode(&self, epoch: Uuid) -> Vec<u8> {
        let payload = self.payload();
        let mut b = Vec::with_capacity(RECORD_HEADER + payload.len() + 8);
        b.extend_from_slice(RECORD_MAGIC);
        b.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        let crc = record_crc(epoch, self.kind(), &payload);
        b.extend_from_slice(&crc.to_le_bytes());
        b.extend_from_slice(&[self.kind(), 0, 0, 0]);
        b.extend_from_slice(&payload);
        b.resize(b.len().div_ceil(8) * 8, 0);
        b
    }

    /// Decodes the record at the start of `b`: `Ok(Some((record, length)))`,
    /// `Ok(None)` if there is no valid record there, `Err` if a record
    /// validates but its payload makes no sense.
    pub fn decode(b: &[u8], epoch: Uuid) -> Result<Option<(Record, usize)>, String> {
        if b.len() < RECORD_HEADER || &b[0..4] != RECORD_MAGIC {
            return Ok(None);
        }
        let len = u32::from_le_bytes(b[4..8].try_into().unwrap()) as usize;
        let total = (RECORD_HEADER + len).div_ceil(8) * 8;
        if RECORD_HEADER + len > b.len() {
            return Ok(None);
        }
        let kind = b[12];
        let payload = &b[RECORD_HEADER..RECORD_HEADER + len];
        if u32::from_le_bytes(b[8..12].try_into().unwrap()) != record_crc(epoch, kind, payload) {
            return Ok(None);
        }
        let u64_of = |p: &[u8]| -> Result<u64, String> {
            p.get(..8)
                .map(|s| u64::from_le_bytes(s.try_into().unwrap()))
                .ok_or_else(|| "short record".to_string())
        };
        let rec = match kind {
            1 => Record::GenSet {
                generation: u64_of(payload)?,
                regions: RoaringBitmap::deserialize_from(&payload[8..])
                    .map_err(|e| format!("bad region set: {e}"))?,
            },
            2 => Record::Seal {
                generation: u64_of(payload)?,
            },
            3 => Record::Release {
                generation: u64_of(payload)?,
            },
            4 => Record::Identity {
                identity: String::from_utf8(payload.to_vec())
                    .map_err(|_| "identity is not UTF-8".to_string())?,
            },
            5 => {
                if !payload.len().is_multiple_of(8) {
                    return Err("retained list has a partial entry".into());
                }
                Record::Retained {
                    generations: payload
                        .chunks_exact(8)
                        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
                        .collect(),
                }
            }
            6 => Record::Distrust {
                reason: String::from_utf8(payload.to_vec())
                    .map_err(|_| "distrust reason is not UTF-8".to_string())?,
            },
            k => return Err(format!("unknown record kind {k}")),
        };
        Ok(Some((rec, total.min(b.len()))))
    }
}

fn record_crc(epoch: Uuid, kind: u8, payload: &[u8]) -> u32 {
    let c = crc32c(epoch.as_bytes());
    let c = crc32c_append(c, &[kind]);
    crc32c_append(c, payload)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_and_records_round_trip() {
        let h = FileHeader {
            tracking: Uuid::new_v4(),
            epoch: Uuid::new_v4(),
            granularity: 65536,
            virtual_size: 1 << 40,
            current_generation: 7,
            identity: "vhdx:1234".into(),
            disabled: false,
        };
        assert_eq!(FileHeader::parse(&h.to_bytes()).unwrap(), h);
        let mut bad = h.to_bytes();
        bad[60] ^= 1;
        assert!(FileHeader::parse(&bad).is_err());
        let recs = vec![
            Record::GenSet {
                generation: 3,
                regions: (0..1000).step_by(7).collect(),
            },
            Record::Seal { generation: 3 },
            Record::Release { generation: 2 },
            Record::Identity {
                identity: "x".into(),
            },
            Record::Retained {
                generations: vec![1, 5, 9],
            },
        ];
        let mut buf = Vec::new();
        for r in &recs {
            buf.extend(r.encode(h.epoch));
        }
        let mut at = 0;
        for r in &recs {
            let (d, n) = Record::decode(&buf[at..], h.epoch).unwrap().unwrap();
            assert_eq!(&d, r);
            at += n;
        }
        assert_eq!(at, buf.len());
        assert!(
            Record::decode(&buf, Uuid::new_v4()).unwrap().is_none(),
            "other epoch accepted"
        );
        let mut torn = buf.clone();
        torn[20] ^= 0xff;
        assert!(Record::decode(&torn, h.epoch).unwrap().is_none());
    }
}
