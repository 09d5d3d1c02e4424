//! MS-VHDX §2.3 Log: a ring of entries, each a set of 4 KB metadata sector
//! updates. Entries are encoded and decoded here (§2.3.1), the active
//! sequence is found as §2.3.3 describes, and [`LogWriter`] places new
//! entries in the ring.
//!
//! refpoint writes every entry with `Tail` pointing at itself and applies it
//! (and flushes) before writing the next one, so the active sequence is
//! always one entry, and replaying it twice is harmless.

use crate::format::*;
use uuid::Uuid;

/// One update carried by a log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogUpdate {
    /// §2.3.1.3/§2.3.1.4: write this 4 KB sector at `file_offset`.
    Data { file_offset: u64, data: Box<[u8]> },
    /// §2.3.1.2: write `length` zero bytes at `file_offset`.
    Zero { file_offset: u64, length: u64 },
}

impl LogUpdate {
    pub fn file_offset(&self) -> u64 {
        match self {
            LogUpdate::Data { file_offset, .. } | LogUpdate::Zero { file_offset, .. } => {
                *file_offset
            }
        }
    }
}

/// §2.3.1 a decoded log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub sequence_number: u64,
    pub tail: u32,
    pub log_guid: Uuid,
    pub flushed_file_offset: u64,
    pub last_file_offset: u64,
    pub updates: Vec<LogUpdate>,
}

/// Descriptors that fit in the first descriptor sector (after the header).
const FIRST_SECTOR_DESCRIPTORS: usize =
    (LOG_SECTOR_SIZE - LOG_ENTRY_HEADER_SIZE) / LOG_DESCRIPTOR_SIZE;
/// Descriptors that fit in each following descriptor sector.
const MORE_SECTOR_DESCRIPTORS: usize = LOG_SECTOR_SIZE / LOG_DESCRIPTOR_SIZE;

fn descriptor_sectors(n: usize) -> usize {
    if n <= FIRST_SECTOR_DESCRIPTORS {
        1
    } else {
        1 + (n - FIRST_SECTOR_DESCRIPTORS).div_ceil(MORE_SECTOR_DESCRIPTORS)
    }
}

/// Byte position of descriptor `i` within the entry.
fn descriptor_pos(i: usize) -> usize {
    if i < FIRST_SECTOR_DESCRIPTORS {
        LOG_ENTRY_HEADER_SIZE + i * LOG_DESCRIPTOR_SIZE
    } else {
        let j = i - FIRST_SECTOR_DESCRIPTORS;
        LOG_SECTOR_SIZE * (1 + j / MORE_SECTOR_DESCRIPTORS)
            + (j % MORE_SECTOR_DESCRIPTORS) * LOG_DESCRIPTOR_SIZE
    }
}

impl LogEntry {
    /// EntryLength of the encoded entry.
    pub fn encoded_len(&self) -> usize {
        let data = self
            .updates
            .iter()
            .filter(|u| matches!(u, LogUpdate::Data { .. }))
            .count();
        (descriptor_sectors(self.updates.len()) + data) * LOG_SECTOR_SIZE
    }

    /// Bytes an entry of `data_sectors` data updates takes.
    pub fn len_for(data_sectors: usize) -> usize {
        (descriptor_sectors(data_sectors) + data_sectors) * LOG_SECTOR_SIZE
    }

    /// The entry's on-disk bytes (§2.3.1), checksum included.
    pub fn encode(&self) -> Vec<u8> {
        let len = self.encoded_len();
        let mut b = vec![0u8; len];
        b[0..4].copy_from_slice(LOG_ENTRY_SIGNATURE);
        put32(&mut b, 8, len as u32);
        put32(&mut b, 12, self.tail);
        put64(&mut b, 16, self.sequence_number);
        put32(&mut b, 24, self.updates.len() as u32);
        put_guid(&mut b, 32, self.log_guid);
        put64(&mut b, 48, self.flushed_file_offset);
        put64(&mut b, 56, self.last_file_offset);
        let mut data_pos = descriptor_sectors(self.updates.len()) * LOG_SECTOR_SIZE;
        for (i, u) in self.updates.iter().enumerate() {
            let d = descriptor_pos(i);
            match u {
                LogUpdate::Zero {
                    file_offset,
                    length,
                } => {
                    b[d..d + 4].copy_from_slice(ZERO_DESCRIPTOR_SIGNATURE);
                    put64(&mut b, d + 8, *length);
                    put64(&mut b, d + 16, *file_offset);
                }
                LogUpdate::Data { file_offset, data } => {
                    assert_eq!(data.len(), LOG_SECTOR_SIZE);
                    b[d..d + 4].copy_from_slice(DATA_DESCRIPTOR_SIGNATURE);
                    b[d + 4..d + 8].copy_from_slice(&data[4092..4096]);
                    b[d + 8..d + 16].copy_from_slice(&data[0..8]);
                    put64(&mut b, d + 16, *file_offset);
                    let s = &mut b[data_pos..data_pos + LOG_SECTOR_SIZE];
                    s[0..4].copy_from_slice(DATA_SECTOR_SIGNATURE);
                    put32(s, 4, (self.sequence_number >> 32) as u32);
                    s[8..4092].copy_from_slice(&data[8..4092]);
                    put32(s, 4092, self.sequence_number as u32);
                    data_pos += LOG_SECTOR_SIZE;
                }
            }
            put64(&mut b, d + 24, self.sequence_number);
        }
        let crc = crc_with_zeroed_field(&b, 4);
        put32(&mut b, 4, crc);
        b
    }

    /// Decodes and fully validates the entry at `offset` of the log ring
    /// `log` (wrapping at its end). `None` if anything does not check out.
    ///
    /// The structure is checked first, straight from the ring and without
    /// copying: header fields, then every descriptor and data sector header
    /// (§2.3.1.2–§2.3.1.4), stopping at the first that does not fit. Only an
    /// entry that passes gets its checksum computed and its data copied. No
    /// sector of a well-formed entry but its first starts with "loge", so
    /// well-formed entries never overlap, and a ring full of entry headers
    /// that each claim the whole ring costs time linear in the ring, not one
    /// checksum of the ring per sector.
    pub fn decode(log: &[u8], offset: usize, log_guid: Uuid) -> Option<(LogEntry, usize)> {
        let ring = log.len();
        if !offset.is_multiple_of(LOG_SECTOR_SIZE)
            || !ring.is_multiple_of(LOG_SECTOR_SIZE)
            || offset >= ring
        {
            return None;
        }
        // The k-th 4 KB sector of the entry.
        let sector = |k: usize| {
            let at = (offset + k * LOG_SECTOR_SIZE) % ring;
            &log[at..at + LOG_SECTOR_SIZE]
        };
        let first = sector(0);
        if &first[0..4] != LOG_ENTRY_SIGNATURE {
            return None;
        }
        let len = le32(first, 8) as usize;
        if len == 0 || !len.is_multiple_of(LOG_SECTOR_SIZE) || len > ring {
            return None;
        }
        let sectors = len / LOG_SECTOR_SIZE;
        let tail = le32(first, 12);
        let seq = le64(first, 16);
        let count = le32(first, 24) as usize;
        let flushed = le64(first, 48);
        let last = le64(first, 56);
        if seq == 0
            || !(tail as usize).is_multiple_of(LOG_SECTOR_SIZE)
            || tail as usize >= ring
            || guid(first, 32) != log_guid
            || !flushed.is_multiple_of(MIB)
            || !last.is_multiple_of(MIB)
            || count > len / LOG_DESCRIPTOR_SIZE
        {
            return None;
        }
        let desc_sectors = descriptor_sectors(count);
        if desc_sectors > sectors {
            return None;
        }
        let descriptor = |i: usize| {
            let d = descriptor_pos(i);
            &sector(d / LOG_SECTOR_SIZE)[d % LOG_SECTOR_SIZE..][..LOG_DESCRIPTOR_SIZE]
        };
        let mut data_sector = desc_sectors;
        for i in 0..count {
            let d = descriptor(i);
            if le64(d, 24) != seq || !le64(d, 16).is_multiple_of(LOG_SECTOR_SIZE as u64) {
                return None;
            }
            match &d[0..4] {
                s if s == ZERO_DESCRIPTOR_SIGNATURE => {
                    if !le64(d, 8).is_multiple_of(LOG_SECTOR_SIZE as u64) {
                        return None;
                    }
                }
                s if s == DATA_DESCRIPTOR_SIGNATURE => {
                    if data_sector >= sectors {
                        return None;
                    }
                    let s = sector(data_sector);
                    if &s[0..4] != DATA_SECTOR_SIGNATURE
                        || le32(s, 4) != (seq >> 32) as u32
                        || le32(s, 4092) != seq as u32
                    {
                        return None;
                    }
                    data_sector += 1;
                }
                _ => return None,
            }
        }
        if data_sector != sectors {
            return None;
        }
        let mut crc = crc_with_zeroed_field(first, 4);
        for k in 1..sectors {
            crc = crc32c::crc32c_append(crc, sector(k));
        }
        if le32(first, 4) != crc {
            return None;
        }
        let mut data_sector = desc_sectors;
        let mut updates = Vec::with_capacity(count);
        for i in 0..count {
            let d = descriptor(i);
            let file_offset = le64(d, 16);
            if &d[0..4] == ZERO_DESCRIPTOR_SIGNATURE {
                updates.push(LogUpdate::Zero {
                    file_offset,
                    length: le64(d, 8),
                });
            } else {
                let s = sector(data_sector);
                let mut data = vec![0u8; LOG_SECTOR_SIZE].into_boxed_slice();
                data[0..8].copy_from_slice(&d[8..16]);
                data[8..4092].copy_from_slice(&s[8..4092]);
                data[4092..4096].copy_from_slice(&d[4..8]);
                updates.push(LogUpdate::Data { file_offset, data });
                data_sector += 1;
            }
        }
        let entry = LogEntry {
            sequence_number: seq,
            tail,
            log_guid,
            flushed_file_offset: flushed,
            last_file_offset: last,
            updates,
        };
        Some((entry, len))
    }
}

/// Finds the active log sequence (§2.3.3): the newest valid and complete
/// sequence whose entries carry `log_guid`. Returns its entries in replay
/// order, or `None` if the log holds no valid sequence.
///
/// The scan moves forward only: past each sequence it reads, valid or not
/// (starting again inside a sequence whose head's tail lies outside it
/// would only find a shorter one with the same head), or by one sector
/// where none starts; it ends once it has wrapped around the ring or stands
/// still (a sequence covering the whole ring). With [`LogEntry::decode`]
/// stopping at the first sector that does not fit, the search takes time
/// linear in the ring, whatever the ring holds.
pub fn find_active_sequence(log: &[u8], log_guid: Uuid) -> Option<Vec<LogEntry>> {
    let ring = log.len();
    if ring == 0 || !ring.is_multiple_of(LOG_SECTOR_SIZE) {
        return None;
    }
    let mut candidate: Option<Vec<LogEntry>> = None;
    let (mut current_tail, mut old_tail) = (0usize, 0usize);
    loop {
        let mut seq: Vec<(usize, LogEntry)> = Vec::new();
        let mut head = current_tail;
        let mut covered = 0;
        while covered < ring {
            match LogEntry::decode(log, head, log_guid) {
                Some((e, len))
                    if seq.last().is_none_or(|(_, l)| {
                        l.sequence_number.checked_add(1) == Some(e.sequence_number)
                    }) =>
                {
                    seq.push((head, e));
                    head = (head + len) % ring;
                    covered += len;
                }
                _ => break,
            }
        }
        let empty = seq.is_empty();
        let valid_from = seq.last().and_then(|(_, head_entry)| {
            seq.iter()
                .position(|(off, _)| *off == head_entry.tail as usize)
        });
        if let Some(from) = valid_from {
            let head_seq = seq.last().unwrap().1.sequence_number;
            let better = candidate
                .as_ref()
                .is_none_or(|c| c.last().unwrap().sequence_number < head_seq);
            if better {
                candidate = Some(seq.drain(from..).map(|(_, e)| e).collect());
            }
        }
        current_tail = if empty {
            (current_tail + LOG_SECTOR_SIZE) % ring
        } else {
            head
        };
        if current_tail <= old_tail {
            break;
        }
        old_tail = current_tail;
    }
    candidate
}

/// Places entries in the log ring so that a new entry never overlaps the
/// previous one (which may be the only valid entry if the new write tears).
#[derive(Debug, Clone)]
pub struct LogWriter {
    pub log_offset: u64,
    pub log_length: u32,
    pub log_guid: Uuid,
    pub next_sequence: u64,
    head: u64,
}

impl LogWriter {
    pub fn new(log_offset: u64, log_length: u32) -> Self {
        Self {
            log_offset,
            log_length,
            log_guid: Uuid::new_v4(),
            next_sequence: 1,
            head: 0,
        }
    }

    /// The most data sectors one entry may carry: a third of the ring, so
    /// that a wrapped entry cannot reach the previous one.
    pub fn max_data_sectors(&self) -> usize {
        let budget = self.log_length as usize / 3 / LOG_SECTOR_SIZE;
        let mut n = budget.saturating_sub(1);
        while n > 0 && LogEntry::len_for(n) > budget * LOG_SECTOR_SIZE {
            n -= 1;
        }
        n
    }

    /// Builds the next entry for `updates` and returns it with the file
    /// offset where it must be written.
    pub fn next_entry(
        &mut self,
        updates: Vec<LogUpdate>,
        flushed: u64,
        last: u64,
    ) -> (u64, Vec<u8>) {
        let mut entry = LogEntry {
            sequence_number: self.next_sequence,
            tail: 0,
            log_guid: self.log_guid,
            flushed_file_offset: flushed,
            last_file_offset: last,
            updates,
        };
        let len = entry.encoded_len() as u64;
        if self.head + len > self.log_length as u64 {
            self.head = 0;
        }
        entry.tail = self.head as u32;
        let at = self.log_offset + self.head;
        self.head += len;
        if self.head >= self.log_length as u64 {
            self.head = 0;
        }
        self.next_sequence += 1;
        (at, entry.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(fill: u8) -> Box<[u8]> {
        let mut p = vec![fill; LOG_SECTOR_SIZE];
        p[0] = 0xA5;
        p[4095] = 0x5A;
        p.into_boxed_slice()
    }

    fn entry(seq: u64, tail: u32, g: Uuid, n: usize) -> LogEntry {
        let mut updates: Vec<_> = (0..n)
            .map(|i| LogUpdate::Data {
                file_offset: (2 * MIB) + i as u64 * 4096,
                data: page(i as u8),
            })
            .collect();
        updates.push(LogUpdate::Zero {
            file_offset: 3 * MIB,
            length: 8192,
        });
        LogEntry {
            sequence_number: seq,
            tail,
            log_guid: g,
            flushed_file_offset: 4 * MIB,
            last_file_offset: 5 * MIB,
            updates,
        }
    }

    #[test]
    fn encode_decode_round_trip_including_many_descriptors() {
        let g = Uuid::new_v4();
        for n in [0, 1, 125, 126, 127, 300] {
            let e = entry(9, 0, g, n);
            let mut log = e.encode();
            log.resize(2 * MIB as usize, 0);
            let (d, len) = LogEntry::decode(&log, 0, g).unwrap();
            assert_eq!(d, e);
            assert_eq!(len, e.encoded_len());
            assert!(
                LogEntry::decode(&log, 0, Uuid::new_v4()).is_none(),
                "wrong guid accepted"
            );
        }
    }

    #[test]
    fn any_flipped_byte_invalidates_the_entry() {
        let g = Uuid::new_v4();
        let e = entry(3, 0, g, 2).encode();
        for i in (0..e.len()).step_by(97) {
            let mut bad = e.clone();
            bad[i] ^= 0x10;
            assert!(
                LogEntry::decode(&bad, 0, g).is_none(),
                "flip at {i} accepted"
            );
        }
    }

    #[test]
    fn decodes_an_entry_that_wraps_the_ring() {
        let g = Uuid::new_v4();
        let e = entry(5, 61440, g, 3);
        let bytes = e.encode();
        let mut log = vec![0u8; 65536];
        let at = 61440;
        for (i, b) in bytes.iter().enumerate() {
            log[(at + i) % 65536] = *b;
        }
        assert_eq!(LogEntry::decode(&log, at, g).unwrap().0, e);
        assert_eq!(find_active_sequence(&log, g).unwrap(), vec![e]);
    }

    #[test]
    fn active_sequence_is_the_newest_valid_one() {
        let g = Uuid::new_v4();
        let mut w = LogWriter::new(0, MIB as u32);
        w.log_guid = g;
        let mut log = vec![0u8; MIB as usize];
        let mut last = None;
        for round in 0..40 {
            let updates = (0..(round % 7) + 1)
                .map(|i| LogUpdate::Data {
                    file_offset: 2 * MIB + i as u64 * 4096,
                    data: page(round as u8),
                })
                .collect();
            let (at, bytes) = w.next_entry(updates, MIB, 2 * MIB);
            log[at as usize..at as usize + bytes.len()].copy_from_slice(&bytes);
            last = Some(LogEntry::decode(&log, at as usize, g).unwrap().0);
            let active = find_active_sequence(&log, g).unwrap();
            assert_eq!(active, vec![last.clone().unwrap()]);
        }
        // Tearing the newest entry falls back to the previous one.
        let newest = last.unwrap();
        let pos = newest.tail as usize;
        log[pos + 100] ^= 1;
        let active = find_active_sequence(&log, g).unwrap();
        assert_eq!(active[0].sequence_number, newest.sequence_number - 1);
        assert!(find_active_sequence(&vec![0u8; 65536], g).is_none());
    }

    #[test]
    fn multi_entry_sequences_replay_from_the_tail() {
        let g = Uuid::new_v4();
        let mut log = vec![0u8; MIB as usize];
        let a = entry(10, 0, g, 1);
        let a_len = a.encoded_len();
        let b = entry(11, 0, g, 2);
        log[..a_len].copy_from_slice(&a.encode());
        log[a_len..a_len + b.encoded_len()].copy_from_slice(&b.encode());
        assert_eq!(find_active_sequence(&log, g).unwrap(), vec![a, b]);
    }

    #[test]
    fn writer_never_overlaps_the_previous_entry() {
        let mut w = LogWriter::new(MIB, MIB as u32);
        let max = w.max_data_sectors();
        assert!(max > 50);
        let mut prev: Option<(u64, u64)> = None;
        for n in (1..400).map(|i| (i * 37) % max + 1) {
            let updates = (0..n)
                .map(|_| LogUpdate::Data {
                    file_offset: 0,
                    data: page(0),
                })
                .collect();
            let (at, bytes) = w.next_entry(updates, 0, 0);
            let (s, e) = (at, at + bytes.len() as u64);
            assert!(e <= 2 * MIB);
            if let Some((ps, pe)) = prev {
                assert!(
                    e <= ps || s >= pe,
                    "entry {s:#x}..{e:#x} overlaps {ps:#x}..{pe:#x}"
                );
            }
            prev = Some((s, e));
        }
    }
}
