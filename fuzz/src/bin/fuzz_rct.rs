//! fuzz_rct — mutation fuzzing of the tracking file `<disk>.rct` (`rct`
//! crate): its header and record parsers and the journal replay of
//! `Tracker::open`, on the stable toolchain.
//!
//! ```sh
//! cargo run --release -p refpoint-fuzz --bin fuzz_rct -- --seconds 60   # or --iterations N (default 100000)
//! cargo run --release -p refpoint-fuzz --bin fuzz_rct -- --seed 7 disk.vhdx.rct
//! cargo run --release -p refpoint-fuzz --bin fuzz_rct -- --reproduce target/fuzz-crashes/panic-journal-1a2b3c4d.rct
//! ```
//!
//! Seeds are real tracking files, written by `rct::Tracker` on
//! `storage::CrashFs`: a fresh one; a journal of marks, seals, a release
//! and an identity, left open; the same closed (compacted into a retained
//! list, generation sets and identities); 4 KiB regions with thousands of
//! scattered marks and a partial last region; one distrusted after a
//! failed disk flush; a disabled one; and the files given. A mutant is,
//! half of the time, the seed's records decoded, dropped, repeated,
//! swapped, or joined by new ones (marks on the last region and past it,
//! seals and releases of boundary generations, long identities, retained
//! lists, distrust) with boundary values in the header fields,
//! then encoded again; else bit flips, byte sets, boundary values, splices
//! and truncation mostly inside the header's fields and the records; then,
//! most of the time, every checksum is recomputed.
//!
//! Each mutant goes
//!
//! 1. through `FileHeader::parse` and a `Record::decode` loop from the end
//!    of the header: a parsed header re-encodes (`to_bytes`) to one that
//!    parses the same; a decoded record re-encodes to bytes that decode to
//!    the same record, and the loop always moves on;
//! 2. into a `CrashFs` as `/d/disk.vhdx.rct`, opened by `Tracker::open`
//!    with the seed's virtual size and identity and again with the header's
//!    (so mutated sizes and granularities get past the size check): `Ok` or
//!    a typed `RctError`. After an `Ok`, `state`, `retained_ids` and
//!    `query_changes` from each retained ID (to now, and up to the next
//!    ones; whole disk, and paged one range at a time) must answer
//!    well-formed ranges (sorted, disjoint, non-empty, inside the window,
//!    pages agreeing with the whole answer); then the tracker closes
//!    (compacting the file) and reopens, answering the same.
//!
//! A panic, a broken oracle, heap growth past 256 MiB or an input running
//! past `--timeout` seconds is saved to `--crashes DIR` (default
//! `target/fuzz-crashes`) as `<kind>-<seed>-<crc>.rct` with a `.txt`; the
//! exit status is then 1.

use clap::Parser;
use rand::rngs::SmallRng;
use rand::Rng;
use rct::record::{FileHeader, Record, HEADER_SIZE, RECORD_HEADER};
use rct::{Changes, RctId, Tracker};
use refpoint_fuzz::alloc_track::{self, TrackingAlloc};
use refpoint_fuzz::harness::{self, Failure, LoopArgs, Target};
use refpoint_fuzz::mutate::Mutator;
use refpoint_fuzz::{guarded, heap_bounded, Finding, FindingKind};
use roaring::RoaringBitmap;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use storage::{CrashFs, Fs};
use uuid::Uuid;

#[global_allocator]
static ALLOC: TrackingAlloc = TrackingAlloc;

const MIB: u64 = 1 << 20;
/// Heap growth during one input beyond this is a finding.
const ALLOC_LIMIT: usize = 256 << 20;
/// The disk whose tracking file a mutant becomes.
const DISK: &str = "/d/disk.vhdx";
/// Retained IDs queried per open (a mutated retained list can be long).
const MAX_IDS: usize = 32;
/// Ranges per query.
const MAX_RANGES: usize = 4096;
/// Pages followed when paging one range at a time.
const PAGES: usize = 16;

#[derive(Parser)]
#[command(about = "Mutation fuzzing of the RCT tracking file (stable toolchain)")]
struct Args {
    #[command(flatten)]
    run: LoopArgs,
    /// An input running longer than this many seconds is a hang.
    #[arg(long, default_value_t = 20)]
    timeout: u64,
    /// Run one saved input instead of fuzzing.
    #[arg(long)]
    reproduce: Option<PathBuf>,
    /// More seeds: tracking files.
    files: Vec<PathBuf>,
}

// ---------------------------------------------------------------------------
// Seeds

/// A tracking file, and the disk it tracks.
struct Seed {
    name: String,
    bytes: Vec<u8>,
    virtual_size: u64,
    identity: String,
    /// Where its header fields and records are, for the byte mutations.
    zones: Vec<(usize, usize)>,
}

impl Seed {
    fn new(name: &str, bytes: Vec<u8>, virtual_size: u64, identity: &str) -> Self {
        Seed {
            name: name.into(),
            zones: zones(&bytes),
            bytes,
            virtual_size,
            identity: identity.into(),
        }
    }

    /// A seed from a file: the disk's size and identity are the header's.
    fn from_file(name: &str, bytes: Vec<u8>) -> Self {
        let (size, id) = FileHeader::parse(&bytes)
            .map(|h| (h.virtual_size, h.identity))
            .unwrap_or((1 << 30, String::new()));
        Seed::new(name, bytes, size, &id)
    }
}

/// Marks, seals, a release and an identity.
fn history(t: &mut Tracker) -> rct::Result<()> {
    let (g, size) = (t.granularity(), t.virtual_size());
    t.stage(0, MIB);
    t.stage(5 * MIB + 1, 10);
    t.commit()?;
    let first = t.seal()?;
    t.stage(64 * MIB, 3 * g);
    t.stage_identity("vhdx:two");
    t.commit()?;
    t.seal()?;
    t.stage(0, g);
    t.commit()?;
    t.seal()?;
    t.release(&first)?;
    t.stage(size - 1, 1);
    t.commit()
}

fn seeds() -> Vec<Seed> {
    const GIB: u64 = 1 << 30;
    let fs = CrashFs::new();
    let shared: Arc<dyn Fs> = Arc::new(fs.clone());
    let create = |name: &str, size: u64, g: u64, id: &str| {
        Tracker::create(
            shared.clone(),
            Path::new(&format!("/seeds/{name}")),
            size,
            g,
            id,
        )
        .unwrap_or_else(|e| panic!("seed {name}: {e}"))
    };
    // The files end in at least 1 MiB of zeros written ahead of the
    // journal; all but one seed keep only 4 KiB of them, so that mutants
    // copy less.
    let take = |name: &str, size: u64, id: &str| {
        let p = rct::tracking_path(Path::new(&format!("/seeds/{name}")));
        let mut b = fs.file(&p).expect("tracking file").contents();
        if name != "journal" {
            let end = records(&b, epoch_of(&b)).1;
            b.truncate(end + 4096);
        }
        Seed::new(name, b, size, id)
    };
    let ok = |name: &str, r: rct::Result<()>| r.unwrap_or_else(|e| panic!("seed {name}: {e}"));

    create("fresh", 64 * MIB, rct::DEFAULT_GRANULARITY, "vhdx:fresh");
    let mut t = create("journal", GIB, rct::DEFAULT_GRANULARITY, "vhdx:one");
    ok("journal", history(&mut t));
    let mut t = create("compacted", GIB, rct::DEFAULT_GRANULARITY, "vhdx:one");
    ok("compacted", history(&mut t));
    ok(
        "compacted",
        t.close(&["vhdx:three".into(), "vhdx:four".into()]),
    );
    // 4 KiB regions: a bitmap container, array containers, a long run; a
    // disk size that ends inside a region.
    let fine = GIB + 3 * 4096 + 512;
    let mut t = create("fine", fine, 4096, "raw:1:2:3");
    for r in (0..20_000u64)
        .step_by(3)
        .chain((70_000..fine / 4096).step_by(997))
    {
        t.stage(r * 4096, 1);
    }
    t.stage(600 * MIB, 200 * MIB);
    ok("fine", t.commit());
    ok("fine", t.seal().map(drop));
    t.stage(fine - 1, 1);
    ok("fine", t.commit());
    ok("fine", t.seal().map(drop));
    let mut t = create("distrusted", 16 * MIB, rct::DEFAULT_GRANULARITY, "vhdx:d");
    t.stage(MIB, 4096);
    ok("distrusted", t.commit());
    ok("distrusted", t.seal().map(drop));
    ok("distrusted", t.distrust("a flush of the disk failed"));
    let t = create("disabled", 8 * MIB, rct::DEFAULT_GRANULARITY, "vhdx:off");
    ok("disabled", t.disable());

    vec![
        take("fresh", 64 * MIB, "vhdx:fresh"),
        take("journal", GIB, "vhdx:one"),
        take("compacted", GIB, "vhdx:three"),
        take("fine", fine, "raw:1:2:3"),
        take("distrusted", 16 * MIB, "vhdx:d"),
        take("disabled", 8 * MIB, "vhdx:off"),
    ]
}

// ---------------------------------------------------------------------------
// Mutation

fn epoch_of(b: &[u8]) -> Uuid {
    b.get(32..48)
        .and_then(|e| Uuid::from_slice(e).ok())
        .unwrap_or_default()
}

/// The records replay reads (from the end of the header), and where they
/// end.
fn records(b: &[u8], epoch: Uuid) -> (Vec<(usize, Record)>, usize) {
    let mut out = Vec::new();
    let mut at = HEADER_SIZE;
    while let Some(Ok(Some((r, n)))) = b.get(at..).map(|s| Record::decode(s, epoch)) {
        out.push((at, r));
        at += n;
    }
    (out, at)
}

/// The header's fields, each record's header and payload, and the bytes
/// after the last record.
fn zones(b: &[u8]) -> Vec<(usize, usize)> {
    let id_len = FileHeader::parse(b).map_or(64, |h| h.identity.len());
    let mut z = vec![(0, 80), (80, id_len.max(1))];
    let (recs, end) = records(b, epoch_of(b));
    let mut ends = recs.iter().map(|r| r.0).skip(1).chain([end]);
    for (at, _) in &recs {
        let next = ends.next().unwrap_or(end);
        z.push((*at, RECORD_HEADER));
        z.push((at + RECORD_HEADER, (next - at - RECORD_HEADER).max(1)));
    }
    z.push((end, 64));
    z
}

fn crc_skip(b: &[u8], at: usize) -> u32 {
    let c = crc32c::crc32c(&b[..at]);
    let c = crc32c::crc32c_append(c, &[0; 4]);
    crc32c::crc32c_append(c, &b[at + 4..])
}

/// Recomputes the header's checksum and that of every record (anywhere
/// after the header, 8-aligned) under the header's epoch.
fn fix_checksums(b: &mut [u8]) {
    if b.len() < HEADER_SIZE || &b[..8] != rct::record::MAGIC {
        return;
    }
    let crc = crc_skip(&b[..HEADER_SIZE], 8);
    b[8..12].copy_from_slice(&crc.to_le_bytes());
    let epoch = epoch_of(b);
    let mut at = HEADER_SIZE;
    while at + RECORD_HEADER <= b.len() {
        let len = u32::from_le_bytes(b[at + 4..at + 8].try_into().unwrap()) as usize;
        if &b[at..at + 4] == rct::record::RECORD_MAGIC && len <= b.len() - at - RECORD_HEADER {
            let c = crc32c::crc32c(epoch.as_bytes());
            let c = crc32c::crc32c_append(c, &[b[at + 12]]);
            let c = crc32c::crc32c_append(c, &b[at + RECORD_HEADER..at + RECORD_HEADER + len]);
            b[at + 8..at + 12].copy_from_slice(&c.to_le_bytes());
            at += (RECORD_HEADER + len).div_ceil(8) * 8;
        } else {
            at += 8;
        }
    }
}

struct RctMutator {
    m: Mutator,
}

impl RctMutator {
    fn rng(&mut self) -> &mut SmallRng {
        &mut self.m.rng
    }

    fn pick<T: Clone>(&mut self, xs: &[T]) -> T {
        xs[self.rng().gen_range(0..xs.len())].clone()
    }

    /// A generation near the current one, or on some other boundary.
    fn generation(&mut self, h: &FileHeader) -> u64 {
        let c = h.current_generation;
        let g = [
            c.wrapping_sub(1),
            c,
            c.wrapping_add(1),
            c.wrapping_sub(2),
            0,
            1,
            2,
        ];
        let far = [u32::MAX as u64, 1 << 32, u64::MAX - 1, u64::MAX];
        if self.rng().gen_bool(0.85) {
            self.pick(&g)
        } else {
            self.pick(&far)
        }
    }

    /// Regions on the disk's boundaries, or runs and scatters of them.
    fn regions(&mut self, h: &FileHeader) -> RoaringBitmap {
        let n = h.virtual_size.div_ceil(h.granularity.max(1));
        let last = n.saturating_sub(1).min(u32::MAX as u64) as u32;
        let mut r = RoaringBitmap::new();
        for _ in 0..self.rng().gen_range(1..4) {
            match self.rng().gen_range(0..5) {
                0 => {
                    let x = self.pick(&[0, last, last.saturating_add(1), u32::MAX, last / 2]);
                    r.insert(x);
                }
                1 => {
                    let a = self.rng().gen_range(0..=last);
                    let b = a.saturating_add(self.rng().gen_range(1..100_000));
                    r.insert_range(a..b);
                }
                2 => {
                    let a = self.rng().gen_range(0..=last);
                    let step = self.rng().gen_range(2..5);
                    r.extend((a..a.saturating_add(20_000)).step_by(step));
                }
                3 => {
                    r.insert_range(last.saturating_sub(70_000)..=last.saturating_add(70_000));
                }
                _ => {
                    let x = self.rng().gen();
                    r.insert(x);
                }
            }
        }
        r
    }

    fn record(&mut self, h: &FileHeader, identity: &str) -> Record {
        let generation = self.generation(h);
        match self.rng().gen_range(0..7) {
            0 | 1 => Record::GenSet {
                generation,
                regions: self.regions(h),
            },
            2 => Record::Seal { generation },
            3 => Record::Release { generation },
            4 => Record::Identity {
                identity: self.pick(&[
                    String::new(),
                    identity.to_string(),
                    h.identity.clone(),
                    "é".repeat(700),
                ]),
            },
            5 => Record::Distrust {
                reason: self.pick(&[String::new(), "é".repeat(700)]),
            },
            _ => Record::Retained {
                generations: (0..self.rng().gen_range(0..6))
                    .map(|_| self.generation(h))
                    .collect(),
            },
        }
    }

    /// Sets one header field to a boundary value.
    fn header(&mut self, h: &mut FileHeader) {
        match self.rng().gen_range(0..5) {
            0 => {
                h.granularity =
                    self.pick(&[4096, 8192, MIB, 1 << 32, 1 << 62, 1 << 63, 4095, 3 << 12, 0]);
            }
            1 => {
                let s = h.virtual_size;
                let g = h.granularity;
                h.virtual_size = self.pick(&[
                    0,
                    1,
                    s.wrapping_sub(1),
                    s.wrapping_add(1),
                    s.wrapping_mul(2),
                    g.wrapping_mul(u32::MAX as u64),
                    g.wrapping_mul(u32::MAX as u64).wrapping_add(1),
                    u64::MAX,
                    u64::MAX - 1,
                    1 << 63,
                ]);
            }
            2 => h.current_generation = self.generation(h),
            3 => h.disabled = !h.disabled,
            _ => h.identity = self.pick(&[String::new(), "x".repeat(1024), "vhdx:two".into()]),
        }
    }

    /// The seed's records, changed as a list, encoded again.
    fn structured(&mut self, seed: &Seed, donors: &[Seed], b: &mut Vec<u8>) -> bool {
        let Ok(mut h) = FileHeader::parse(&seed.bytes) else {
            return false;
        };
        let mut recs: Vec<Record> = records(&seed.bytes, h.epoch)
            .0
            .into_iter()
            .map(|r| r.1)
            .collect();
        for _ in 0..self.rng().gen_range(1..5) {
            let n = recs.len();
            let i = self.rng().gen_range(0..=n);
            match self.rng().gen_range(0..12) {
                0 if n > 0 => {
                    recs.remove(i.min(n - 1));
                }
                1 if n > 0 => {
                    let r = recs[i.min(n - 1)].clone();
                    recs.insert(i, r);
                }
                2 if n > 1 => {
                    let j = self.rng().gen_range(0..n);
                    recs.swap(i.min(n - 1), j);
                }
                3 => recs.truncate(i),
                4 => {
                    let d = &donors[self.rng().gen_range(0..donors.len())];
                    let theirs = records(&d.bytes, epoch_of(&d.bytes)).0;
                    if !theirs.is_empty() {
                        let r = theirs[self.rng().gen_range(0..theirs.len())].1.clone();
                        recs.insert(i, r);
                    }
                }
                5 | 6 => self.header(&mut h),
                7 if n > 0 => {
                    // Another generation in an existing record.
                    let g = self.generation(&h);
                    match &mut recs[i.min(n - 1)] {
                        Record::GenSet { generation, .. }
                        | Record::Seal { generation }
                        | Record::Release { generation } => *generation = g,
                        Record::Retained { generations } => generations.push(g),
                        other => *other = self.record(&h, &seed.identity),
                    }
                }
                _ => {
                    let r = self.record(&h, &seed.identity);
                    recs.insert(i, r);
                }
            }
        }
        b.clear();
        b.extend(h.to_bytes());
        for r in &recs {
            b.extend(r.encode(h.epoch));
        }
        // The zeros the tracker keeps written ahead of the journal (or not).
        if self.rng().gen_bool(0.8) {
            b.resize(b.len().max(seed.bytes.len()), 0);
        }
        true
    }

    fn mutate(&mut self, seed: &Seed, donors: &[Seed], b: &mut Vec<u8>) {
        if !(self.rng().gen_bool(0.5) && self.structured(seed, donors, b)) {
            let d: Vec<&[u8]> = donors.iter().map(|d| &d.bytes[..]).collect();
            self.m.mutate_zoned(&seed.bytes, &seed.zones, &d, b);
        }
        if self.rng().gen_bool(0.85) {
            fix_checksums(b);
        }
    }
}

// ---------------------------------------------------------------------------
// Running one input

#[derive(Debug, Default)]
struct Coverage {
    inputs: u64,
    headers_parsed: u64,
    records_decoded: u64,
    record_errors: u64,
    opened: u64,
    queries_answered: u64,
    ranges: u64,
    reopened: u64,
    /// `Tracker::open` errors by kind.
    errors: BTreeMap<&'static str, u64>,
}

fn oracle(step: &'static str, detail: String) -> Finding {
    Finding {
        kind: FindingKind::Oracle,
        step,
        detail,
    }
}

/// The parsers alone; an `Err` names the broken oracle.
fn parsers(b: &[u8], cov: &mut Coverage) -> Result<(), String> {
    let header = FileHeader::parse(b);
    if let Ok(h) = &header {
        cov.headers_parsed += 1;
        let again = FileHeader::parse(&h.to_bytes());
        if again.as_ref() != Ok(h) {
            return Err(format!(
                "a parsed header re-encodes to one that parses differently: {h:?} then {again:?}"
            ));
        }
    }
    let epoch = header.map_or_else(|_| epoch_of(b), |h| h.epoch);
    let mut at = HEADER_SIZE.min(b.len());
    loop {
        match Record::decode(&b[at..], epoch) {
            Ok(Some((r, n))) => {
                cov.records_decoded += 1;
                if n < RECORD_HEADER || n > b.len() - at {
                    return Err(format!(
                        "Record::decode at {at} says the record takes {n} of the {} bytes left",
                        b.len() - at
                    ));
                }
                let e = r.encode(epoch);
                match Record::decode(&e, epoch) {
                    Ok(Some((r2, n2))) if r2 == r && n2 == e.len() => {}
                    other => {
                        return Err(format!(
                            "a decoded record re-encodes to bytes that decode differently: {r:?} at {at}, then {other:?}"
                        ))
                    }
                }
                at += n;
            }
            Ok(None) => return Ok(()),
            Err(_) => {
                cov.record_errors += 1;
                return Ok(());
            }
        }
    }
}

/// An answer's ranges lie sorted, disjoint and non-empty inside
/// `offset..offset+length`, and its processed length is consistent.
fn well_formed(c: &Changes, offset: u64, length: u64, max: usize) -> Result<(), String> {
    let end = offset + length;
    let mut prev = offset;
    for r in &c.ranges {
        let r_end = r.offset.checked_add(r.length);
        if r.length == 0 || r.offset < prev || r_end.is_none_or(|e| e > end) {
            return Err(format!(
                "range {r:?} is empty, overlaps the one before or leaves the window {offset}+{length}"
            ));
        }
        prev = r.offset + r.length;
    }
    let full = c.ranges.len() == max;
    if c.ranges.len() > max
        || c.processed_length > length
        || (!full && c.processed_length != length)
        || (full && c.processed_length < prev - offset)
    {
        return Err(format!(
            "{} ranges (at most {max}) and processed length {} for the window {offset}+{length}",
            c.ranges.len(),
            c.processed_length
        ));
    }
    Ok(())
}

fn answer(r: &rct::Result<Changes>) -> String {
    match r {
        Ok(c) => {
            let mut crc = 0;
            for x in &c.ranges {
                crc = crc32c::crc32c_append(crc, &x.offset.to_le_bytes());
                crc = crc32c::crc32c_append(crc, &x.length.to_le_bytes());
            }
            format!(
                "{} ranges ({crc:08x}), processed {}",
                c.ranges.len(),
                c.processed_length
            )
        }
        Err(e) => format!("{} error", e.kind()),
    }
}

/// What an open tracker answers, checking each answer; an `Err` names
/// the broken oracle.
fn answers(t: &Tracker, size: u64, cov: &mut Coverage) -> Result<String, String> {
    let state = t.state();
    let ids = t.retained_ids();
    let mut out = format!("{state:?}; {} retained\n", ids.len());
    let other = |generation| RctId {
        tracking: t.tracking_guid(),
        generation,
    };
    let queried: Vec<RctId> = ids
        .iter()
        .take(MAX_IDS)
        .copied()
        .chain(state.most_recent_id)
        .chain([other(0), other(u64::MAX)])
        .collect();
    for (i, since) in queried.iter().enumerate() {
        let untils = queried[i..].iter().take(3).map(Some);
        for until in [None].into_iter().chain(untils) {
            let r = t.query_changes(since, until, 0, size, MAX_RANGES);
            if let Ok(c) = &r {
                cov.queries_answered += 1;
                cov.ranges += c.ranges.len() as u64;
                well_formed(c, 0, size, MAX_RANGES)
                    .map_err(|e| format!("query since {since} until {until:?}: {e}"))?;
            }
            out += &format!("{since} {until:?}: {}\n", answer(&r));
        }
        // Paged one range at a time, the same ranges.
        let Ok(whole) = t.query_changes(since, None, 0, size, MAX_RANGES) else {
            continue;
        };
        let (mut pos, mut got) = (0, Vec::new());
        for _ in 0..PAGES {
            let p = t
                .query_changes(since, None, pos, size - pos, 1)
                .map_err(|e| format!("page at {pos} since {since} fails: {e}"))?;
            well_formed(&p, pos, size - pos, 1)
                .map_err(|e| format!("page at {pos} since {since}: {e}"))?;
            got.extend(p.ranges);
            if p.processed_length == size - pos {
                if whole.ranges.len() < MAX_RANGES && got.len() != whole.ranges.len() {
                    return Err(format!(
                        "pages since {since} hold {} ranges, the whole answer {}",
                        got.len(),
                        whole.ranges.len()
                    ));
                }
                break;
            }
            if p.processed_length == 0 {
                return Err(format!("paging since {since} does not advance at {pos}"));
            }
            pos += p.processed_length;
        }
        if let Some(i) = (0..got.len().min(whole.ranges.len())).find(|&i| got[i] != whole.ranges[i])
        {
            return Err(format!(
                "page {i} since {since} is {:?}, the whole answer's range {:?}",
                got[i], whole.ranges[i]
            ));
        }
    }
    Ok(out)
}

/// `Tracker::open` on a file system holding `b`, the queries, then close
/// and reopen.
fn open(b: &[u8], size: u64, identity: &str, cov: &mut Coverage) -> Result<(), Finding> {
    let disk = Path::new(DISK);
    let crash = CrashFs::new();
    crash.insert(&rct::tracking_path(disk), b.to_vec());
    let fs: Arc<dyn Fs> = Arc::new(crash);
    let opened = guarded("Tracker::open", || {
        Tracker::open(fs.clone(), disk, size, identity)
    })?;
    let t = match opened {
        Ok(t) => t,
        Err(e) => {
            *cov.errors.entry(e.kind()).or_default() += 1;
            return Ok(());
        }
    };
    cov.opened += 1;
    let before =
        guarded("queries", || answers(&t, size, cov))?.map_err(|e| oracle("queries", e))?;
    if guarded("Tracker::close", || t.close(&[identity.to_string()]))?.is_err() {
        return Ok(());
    }
    let again = guarded("reopen after close", || {
        Tracker::open(fs.clone(), disk, size, identity)
    })?
    .map_err(|e| {
        oracle(
            "reopen after close",
            format!("the tracker closed cleanly, but its file no longer opens: {e}"),
        )
    })?;
    let after = guarded("queries after reopen", || answers(&again, size, cov))?
        .map_err(|e| oracle("queries after reopen", e))?;
    if after != before {
        let diff = before
            .lines()
            .zip(after.lines())
            .find(|(a, b)| a != b)
            .map_or_else(
                || format!("{before}\nthen\n{after}"),
                |(a, b)| format!("{a}\nthen\n{b}"),
            );
        return Err(oracle(
            "reopen after close",
            format!("answers changed after close and reopen:\n{diff}"),
        ));
    }
    cov.reopened += 1;
    Ok(())
}

fn run_steps(seed: &Seed, b: &[u8], cov: &mut Coverage) -> Result<(), Finding> {
    guarded("parsers", || parsers(b, cov))?.map_err(|e| oracle("parsers", e))?;
    open(b, seed.virtual_size, &seed.identity, cov)?;
    if let Ok(h) = FileHeader::parse(b) {
        if (h.virtual_size, &h.identity) != (seed.virtual_size, &seed.identity) {
            open(b, h.virtual_size, &h.identity, cov)?;
        }
    }
    Ok(())
}

fn run_one(seed: &Seed, b: &[u8], cov: &mut Coverage) -> Result<(), Failure> {
    cov.inputs += 1;
    heap_bounded(ALLOC_LIMIT, b.len(), || run_steps(seed, b, cov))
}

// ---------------------------------------------------------------------------
// The loop

struct RctFile {
    all: Vec<Seed>,
    m: RctMutator,
    cov: Coverage,
}

impl Target for RctFile {
    const WHAT: &'static str = "tracking files, ";
    const EXT: &'static str = "rct";

    fn names(&self) -> Vec<String> {
        self.all.iter().map(|s| s.name.clone()).collect()
    }

    fn rng(&mut self) -> &mut SmallRng {
        self.m.rng()
    }

    fn mutate(&mut self, seed: usize, buf: &mut Vec<u8>) {
        self.m.mutate(&self.all[seed], &self.all, buf);
    }

    fn run(&mut self, seed: usize, input: &Arc<Vec<u8>>) -> Result<(), Failure> {
        run_one(&self.all[seed], input, &mut self.cov)
    }

    fn print_reached(&self) {
        let c = &self.cov;
        println!(
            "reached: inputs {}, headers parsed {}, records decoded {}, record errors {}, opened {}, queries answered {}, ranges {}, reopened {}",
            c.inputs, c.headers_parsed, c.records_decoded, c.record_errors, c.opened, c.queries_answered, c.ranges, c.reopened
        );
        let mut errs: Vec<_> = c.errors.iter().collect();
        errs.sort_by_key(|(_, n)| std::cmp::Reverse(**n));
        let errs: Vec<String> = errs.iter().map(|(k, n)| format!("{k} {n}")).collect();
        println!("open errors: {}", errs.join(", "));
    }
}

fn main() {
    let args = Args::parse();
    refpoint_fuzz::install_panic_capture();
    let mut all = seeds();
    if let Some(p) = &args.reproduce {
        if let Some(n) = std::env::var("REFPOINT_FUZZ_ALLOC_TRAP")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            alloc_track::set_trap(n);
        }
        let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let seed = match harness::seed_of(p, &all, |s| &s.name) {
            Some(s) => Seed::new(&s.name, Vec::new(), s.virtual_size, &s.identity),
            None => Seed::from_file("input", bytes.clone()),
        };
        let mut cov = Coverage::default();
        let r = run_one(&seed, &bytes, &mut cov);
        harness::print_reproduced(r, || format!("(seed {}); {cov:?}", seed.name));
        return;
    }
    for f in &args.files {
        match std::fs::read(f) {
            Ok(b) => all.push(Seed::from_file(&f.display().to_string(), b)),
            Err(e) => eprintln!("skipping {}: {e}", f.display()),
        }
    }
    for s in &all {
        let mut cov = Coverage::default();
        if let Err(f) = run_one(s, &s.bytes, &mut cov) {
            eprintln!("note: seed {} itself misbehaves: {f}", s.name);
        }
    }
    harness::fuzz(
        &args.run,
        Duration::from_secs(args.timeout),
        |rng: SmallRng| RctFile {
            all,
            m: RctMutator {
                m: Mutator::new(rng),
            },
            cov: Coverage::default(),
        },
    );
}
