//! MS-VHDX §2.2.2 Headers: two 4 KB copies at 64 KB and 128 KB; the valid
//! one with the higher SequenceNumber is current (§2.2.2.1 for updates).

use crate::error::Corruption;
use crate::format::*;
use uuid::Uuid;

/// One VHDX header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub sequence_number: u64,
    pub file_write_guid: Uuid,
    pub data_write_guid: Uuid,
    pub log_guid: Uuid,
    pub log_version: u16,
    pub version: u16,
    pub log_length: u32,
    pub log_offset: u64,
}

impl Header {
    /// Parses and validates signature and checksum (a buffer shorter than
    /// 4 KB has no valid signature).
    pub fn parse(b: &[u8]) -> Result<Self, Corruption> {
        let Some(b) = b.get(..HEADER_SIZE) else {
            return Err(Corruption::BadHeaderSignature);
        };
        if &b[0..4] != HEADER_SIGNATURE {
            return Err(Corruption::BadHeaderSignature);
        }
        if le32(b, 4) != crc_with_zeroed_field(b, 4) {
            return Err(Corruption::BadHeaderChecksum);
        }
        Ok(Self {
            sequence_number: le64(b, 8),
            file_write_guid: guid(b, 16),
            data_write_guid: guid(b, 32),
            log_guid: guid(b, 48),
            log_version: le16(b, 64),
            version: le16(b, 66),
            log_length: le32(b, 68),
            log_offset: le64(b, 72),
        })
    }

    /// Where the log is, as `(offset, end)`, if the header places it the way
    /// §2.2.2 requires: 1 MB aligned, after the header section, a nonzero
    /// multiple of 1 MB long, ending inside the 64-bit file offset range.
    pub fn log_span(&self) -> Option<(u64, u64)> {
        let len = self.log_length as u64;
        let end = self.log_offset.checked_add(len)?;
        let ok = self.log_offset.is_multiple_of(MIB)
            && self.log_offset >= HEADER_SECTION_SIZE
            && len.is_multiple_of(MIB)
            && len > 0;
        ok.then_some((self.log_offset, end))
    }

    /// The 4 KB on-disk form, checksum included.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; HEADER_SIZE];
        b[0..4].copy_from_slice(HEADER_SIGNATURE);
        put64(&mut b, 8, self.sequence_number);
        put_guid(&mut b, 16, self.file_write_guid);
        put_guid(&mut b, 32, self.data_write_guid);
        put_guid(&mut b, 48, self.log_guid);
        put16(&mut b, 64, self.log_version);
        put16(&mut b, 66, self.version);
        put32(&mut b, 68, self.log_length);
        put64(&mut b, 72, self.log_offset);
        let crc = crc_with_zeroed_field(&b, 4);
        put32(&mut b, 4, crc);
        b
    }
}

/// Picks the current header from the two copies (§2.2.2): the only valid
/// one, or the valid one with the greater SequenceNumber. Returns its slot.
pub fn current_header(h: [Result<Header, Corruption>; 2]) -> Result<(usize, Header), Corruption> {
    match h {
        [Ok(a), Ok(b)] => Ok(if b.sequence_number > a.sequence_number {
            (1, b)
        } else {
            (0, a)
        }),
        [Ok(a), Err(_)] => Ok((0, a)),
        [Err(_), Ok(b)] => Ok((1, b)),
        [Err(_), Err(_)] => Err(Corruption::NoValidHeader),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(seq: u64) -> Header {
        Header {
            sequence_number: seq,
            file_write_guid: Uuid::new_v4(),
            data_write_guid: Uuid::new_v4(),
            log_guid: Uuid::nil(),
            log_version: 0,
            version: 1,
            log_length: MIB as u32,
            log_offset: MIB,
        }
    }

    #[test]
    fn round_trip_and_checksum() {
        let h = sample(7);
        let mut b = h.to_bytes();
        assert_eq!(Header::parse(&b).unwrap(), h);
        b[100] ^= 1;
        assert_eq!(Header::parse(&b), Err(Corruption::BadHeaderChecksum));
        b[0] = b'x';
        assert_eq!(Header::parse(&b), Err(Corruption::BadHeaderSignature));
    }

    #[test]
    fn current_is_the_valid_one_with_higher_sequence() {
        let (a, b) = (sample(1), sample(2));
        assert_eq!(current_header([Ok(a.clone()), Ok(b.clone())]).unwrap().0, 1);
        assert_eq!(
            current_header([Ok(a), Err(Corruption::BadHeaderChecksum)])
                .unwrap()
                .0,
            0
        );
        assert_eq!(
            current_header([
                Err(Corruption::BadHeaderChecksum),
                Err(Corruption::BadHeaderSignature)
            ]),
            Err(Corruption::NoValidHeader)
        );
    }
}
