//! The mutator: bit flips, byte sets, interesting values, chunk splices,
//! truncation and extension, aimed mostly at the structures the parser
//! reads (headers, region tables, log, metadata, BAT) and, half of the time,
//! followed by recomputing the checksums so the mutation gets past them
//! and reaches the validation behind. [`Mutator::mutate_zoned`] does the
//! same for other formats, in the zones their fuzzer names.

use rand::rngs::SmallRng;
use rand::Rng;

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// Values that often sit on a boundary of some check.
const INTERESTING: &[u64] = &[
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x100,
    0xfff,
    0x1000,
    0x7fff,
    0x8000,
    0xffff,
    0x1_0000,
    0x10_0000,
    0x20_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    0x4000_0000_0000,
    0x7fff_ffff_ffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX,
];

/// Where the structures of a file made by `vhdx::create` are, as
/// `(start, length)`; the metadata and BAT places come from the file's own
/// region table when it can be read.
fn zones(b: &[u8]) -> Vec<(usize, usize)> {
    let (mut meta, mut bat) = (2 * MIB, 3 * MIB);
    if let Some(t) = b.get(192 * KIB..256 * KIB) {
        if let Ok(t) = vhdx::region::RegionTable::parse(t) {
            for e in &t.entries {
                let off = usize::try_from(e.file_offset).unwrap_or(usize::MAX);
                if e.guid == vhdx::format::METADATA_REGION_GUID {
                    meta = off;
                } else if e.guid == vhdx::format::BAT_REGION_GUID {
                    bat = off;
                }
            }
        }
    }
    vec![
        (0, 520),
        (64 * KIB, 80),
        (128 * KIB, 80),
        (64 * KIB, 4096),
        (192 * KIB, 16 + 4 * 32),
        (256 * KIB, 16 + 4 * 32),
        (MIB, 64),
        (MIB, 4096),
        (MIB, 64 * KIB),
        (meta, 32 + 8 * 32),
        (meta.saturating_add(64 * KIB), 512),
        (bat, 64),
        (bat, 4096),
        (bat.saturating_add(32 * KIB), 64),
    ]
}

/// Mutates seeds; deterministic for a given random generator.
pub struct Mutator {
    pub rng: SmallRng,
}

impl Mutator {
    pub fn new(rng: SmallRng) -> Self {
        Self { rng }
    }

    /// An offset to mutate: mostly inside a structure, else anywhere in the
    /// first few MiB.
    fn offset(&mut self, zones: &[(usize, usize)], len: usize) -> usize {
        if len == 0 {
            return 0;
        }
        let off = if self.rng.gen_bool(0.75) {
            let (s, l) = zones[self.rng.gen_range(0..zones.len())];
            s.saturating_add(self.rng.gen_range(0..l))
        } else {
            self.rng.gen_range(0..len.min(6 * MIB))
        };
        off.min(len - 1)
    }

    /// A mutant of `seed`; `donors` provide chunks to splice in.
    pub fn mutate(&mut self, seed: &[u8], donors: &[&[u8]]) -> Vec<u8> {
        let mut b = Vec::new();
        self.mutate_into(seed, donors, &mut b);
        b
    }

    /// Like [`Mutator::mutate`], into a buffer kept from one input to the
    /// next (a fresh multi-megabyte buffer per input costs page faults).
    pub fn mutate_into(&mut self, seed: &[u8], donors: &[&[u8]], b: &mut Vec<u8>) {
        self.mutate_zoned(seed, &zones(seed), donors, b);
        if self.rng.gen_bool(0.5) {
            fix_checksums(b);
        }
    }

    /// Like [`Mutator::mutate_into`] for any format: the same mutations,
    /// mostly inside `zones` (`(start, length)` of the structures a parser
    /// reads), without the VHDX checksum fixes (each target fixes its own).
    pub fn mutate_zoned(
        &mut self,
        seed: &[u8],
        zones: &[(usize, usize)],
        donors: &[&[u8]],
        b: &mut Vec<u8>,
    ) {
        b.clear();
        b.extend_from_slice(seed);
        let n = 1 + (self.rng.gen::<f64>().powi(3) * 16.0) as usize;
        for _ in 0..n {
            self.one(b, zones, donors);
        }
    }

    fn one(&mut self, b: &mut Vec<u8>, zones: &[(usize, usize)], donors: &[&[u8]]) {
        let len = b.len();
        match self.rng.gen_range(0..100) {
            0..=29 if len > 0 => {
                let o = self.offset(zones, len);
                b[o] ^= 1 << self.rng.gen_range(0..8);
            }
            30..=44 if len > 0 => {
                let o = self.offset(zones, len);
                b[o] = self.rng.gen();
            }
            45..=74 if len > 0 => {
                let o = self.offset(zones, len);
                let v = if self.rng.gen_bool(0.8) {
                    INTERESTING[self.rng.gen_range(0..INTERESTING.len())]
                } else {
                    self.rng.gen()
                };
                let width = [1, 2, 4, 8][self.rng.gen_range(0..4)];
                let o = o / width * width;
                let bytes = v.to_le_bytes();
                let end = (o + width).min(len);
                b[o..end].copy_from_slice(&bytes[..end - o]);
            }
            75..=86 if len > 0 && !donors.is_empty() => {
                let d = donors[self.rng.gen_range(0..donors.len())];
                if d.is_empty() {
                    return;
                }
                let n = self.rng.gen_range(1..=4096).min(d.len());
                let from = if self.rng.gen_bool(0.5) {
                    self.offset(zones, d.len()).min(d.len() - n)
                } else {
                    self.rng.gen_range(0..=d.len() - n)
                };
                let to = self.offset(zones, len);
                let n = n.min(len - to);
                b[to..to + n].copy_from_slice(&d[from..from + n]);
            }
            87..=93 => {
                let new_len = match self.rng.gen_range(0..4) {
                    0 => self.rng.gen_range(0..=len),
                    1 => self.rng.gen_range(0..=len / MIB) * MIB,
                    2 => len.saturating_sub(self.rng.gen_range(1..=8) * 4096),
                    _ => self.offset(zones, len),
                };
                b.truncate(new_len);
            }
            94..=96 => {
                let extra = [512, 4096, MIB, 3 * MIB][self.rng.gen_range(0..4)];
                let fill = if self.rng.gen_bool(0.5) {
                    0
                } else {
                    self.rng.gen()
                };
                b.resize(len + extra, fill);
            }
            _ if len > 0 => {
                // Copy a run of the file over another place in it (e.g. one
                // header over the other, a region table entry over another).
                let n = self.rng.gen_range(1..=512).min(len);
                let from = self.offset(zones, len).min(len - n);
                let to = self.offset(zones, len).min(len - n);
                b.copy_within(from..from + n, to);
            }
            _ => {}
        }
    }
}

fn crc_with_zeroed_field(buf: &[u8], at: usize) -> u32 {
    let crc = crc32c::crc32c(&buf[..at]);
    let crc = crc32c::crc32c_append(crc, &[0; 4]);
    crc32c::crc32c_append(crc, &buf[at + 4..])
}

/// Recomputes the checksum of every header, region table and log entry that
/// still carries its signature, so that mutated fields are judged on their
/// values instead of being caught by the checksum.
pub fn fix_checksums(b: &mut [u8]) {
    fix(b, 64 * KIB, 4096, b"head");
    fix(b, 128 * KIB, 4096, b"head");
    fix(b, 192 * KIB, 64 * KIB, b"regi");
    fix(b, 256 * KIB, 64 * KIB, b"regi");
    // Log entries (no wrapping) in the standard 1 MiB log.
    let mut at = MIB;
    while at < 2 * MIB && at + 4096 <= b.len() {
        let entry_len = u32::from_le_bytes(b[at + 8..at + 12].try_into().unwrap()) as usize;
        if &b[at..at + 4] == b"loge"
            && entry_len >= 4096
            && entry_len.is_multiple_of(4096)
            && at + entry_len <= 2 * MIB
        {
            fix(b, at, entry_len, b"loge");
            at += entry_len;
        } else {
            at += 4096;
        }
    }
}

/// Recomputes the checksum of the structure at `start` if it has `sig`.
fn fix(b: &mut [u8], start: usize, len: usize, sig: &[u8]) {
    if let Some(s) = b.get_mut(start..start.saturating_add(len)) {
        if &s[..4] == sig {
            let crc = crc_with_zeroed_field(s, 4);
            s[4..8].copy_from_slice(&crc.to_le_bytes());
        }
    }
}
