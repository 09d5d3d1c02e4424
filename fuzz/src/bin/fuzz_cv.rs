//! fuzz_cv — mutation fuzzing of the chaining-value files next to a backup
//! point's disk file (`<point>/<disk>.cv`, `backup::cv`), and of the
//! incremental export that trusts them only after checking, on the stable
//! toolchain.
//!
//! ```sh
//! cargo run --release -p refpoint-fuzz --bin fuzz_cv -- --seconds 60   # or --iterations N (default 100000)
//! cargo run --release -p refpoint-fuzz --bin fuzz_cv -- --reproduce target/fuzz-crashes/oracle-2-disk0-1a2b3c4d.cv
//! ```
//!
//! The seeds are the cv files of a real repository (`refpoint_fuzz::repo`:
//! every point of both disks, one ending in a partial hash block). A mutant
//! is, some of the time, the seed's chaining values changed as a list (one
//! replaced by a donor's, by a zero block's or by another of its own, two
//! swapped, entries added or dropped with the size field following or not,
//! the size field set to a boundary value); else bit flips, byte sets,
//! boundary values, splices and truncation, mostly in the header and the
//! values.
//!
//! Each mutant goes through `cv::decode` for the disk's size, the size its
//! header claims, and boundary sizes (0, one block, 2^64 - 1, one block
//! more or less): `None`, or values that encode (`cv::encode`) back to the
//! same bytes, one per piece of each whole block. A mutant that decodes for
//! the disk's size to other values than its seed's goes, as the previous
//! point's values, into `export::export_diff` of that point's own content
//! over a few ranges (part of a piece, whole pieces, across a block
//! boundary, the partial last block): the values are an optimisation that
//! is never trusted, so the new hashes must still be the point's manifest
//! hashes, and the touched blocks' values the seed's. A panic, a broken
//! oracle, heap growth past 64 MiB or an input running past `--timeout`
//! seconds is saved to `--crashes DIR` (default `target/fuzz-crashes`) as
//! `<kind>-<seed>-<crc>.cv` with a `.txt`; the exit status is then 1.

use backup::cv::{self, Cv, PIECE, PIECES};
use backup::export::{export_diff, Exported};
use backup::manifest::HASH_BLOCK;
use clap::Parser;
use rand::rngs::SmallRng;
use rand::Rng;
use refpoint_fuzz::alloc_track::TrackingAlloc;
use refpoint_fuzz::harness::{self, Failure, LoopArgs, Target};
use refpoint_fuzz::mutate::Mutator;
use refpoint_fuzz::repo::{repository, Repository};
use refpoint_fuzz::{guarded, heap_bounded, Finding, FindingKind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use storage::Fs;
use vhdx::Chain;

#[global_allocator]
static ALLOC: TrackingAlloc = TrackingAlloc;

/// Heap growth during one input beyond this is a finding.
const ALLOC_LIMIT: usize = 64 << 20;
/// Where the exports of the fuzzer go (removed after each).
const SCRATCH: &str = "/scratch/out.avhdx";
/// Header bytes of a cv file (magic, piece size, disk size).
const HEADER: usize = 24;

#[derive(Parser)]
#[command(about = "Mutation fuzzing of backup cv files (stable toolchain)")]
struct Args {
    #[command(flatten)]
    run: LoopArgs,
    /// An input running longer than this many seconds is a hang.
    #[arg(long, default_value_t = 20)]
    timeout: u64,
    /// Run one saved input instead of fuzzing.
    #[arg(long)]
    reproduce: Option<PathBuf>,
}

/// The cv file of one disk at one point, and what exporting over it needs.
struct Seed {
    name: String,
    bytes: Vec<u8>,
    size: u64,
    cvs: Vec<Cv>,
    /// The point's disk file: the parent of the export, and (as a chain)
    /// its source.
    file: PathBuf,
    src: Chain,
    hashes: Vec<String>,
    ranges: Vec<(u64, u64)>,
    zones: Vec<(usize, usize)>,
}

fn seeds(r: &Repository) -> Vec<Seed> {
    let mut out = Vec::new();
    for (m, _) in &r.manifests {
        for d in &m.disks {
            let bytes = r.bytes(&Repository::cv_path(m.point, &d.name));
            let size = d.virtual_size;
            let cvs = cv::decode(&bytes, size).expect("a backup's cv file decodes");
            let file = backup::repo::point_dir(r.dir(), m.point).join(&d.file);
            let src = Chain::open(&r.fs, &file, false).expect("a point's chain opens");
            let s = d.logical_sector_size as u64;
            let ranges = vec![
                (0, s),
                (3 * PIECE, 2 * PIECE),
                (HASH_BLOCK - s, 2 * s),
                (size - s, s),
            ];
            let zones = [(0, HEADER)]
                .into_iter()
                .chain((0..cvs.len()).map(|i| (HEADER + 32 * i, 32)))
                .collect();
            out.push(Seed {
                name: format!("{}-{}", m.point, d.name),
                bytes,
                size,
                cvs,
                file,
                src,
                hashes: d.hashes.clone(),
                ranges,
                zones,
            });
        }
    }
    out
}

// ---------------------------------------------------------------------------
// Mutation

struct CvMutator {
    m: Mutator,
    zero: Vec<Cv>,
}

impl CvMutator {
    fn rng(&mut self) -> &mut SmallRng {
        &mut self.m.rng
    }

    /// The seed's values changed as a list, with a header.
    fn structured(&mut self, s: &Seed, donors: &[Seed], b: &mut Vec<u8>) {
        let mut cvs = s.cvs.clone();
        let mut size = s.size;
        for _ in 0..self.rng().gen_range(1..4) {
            let n = cvs.len();
            let i = self.rng().gen_range(0..n.max(1));
            match self.rng().gen_range(0..8) {
                0 if n > 0 => {
                    let d = &donors[self.rng().gen_range(0..donors.len())].cvs;
                    if !d.is_empty() {
                        cvs[i] = d[self.rng().gen_range(0..d.len())];
                    }
                }
                1 if n > 0 => cvs[i] = self.zero[i % PIECES],
                2 if n > 0 => cvs[i] = cvs[self.rng().gen_range(0..n)],
                3 if n > 0 => cvs.swap(i, self.rng().gen_range(0..n)),
                4 => {
                    // A whole block more or less, the size following.
                    if self.rng().gen_bool(0.5) || n < PIECES {
                        cvs.extend_from_slice(&self.zero);
                        size = size.saturating_add(HASH_BLOCK);
                    } else {
                        cvs.truncate(n - PIECES);
                        size = size.saturating_sub(HASH_BLOCK);
                    }
                }
                5 => {
                    let k = self.rng().gen_range(1..=3);
                    cvs.truncate(n.saturating_sub(k));
                }
                _ => {
                    size = [
                        0,
                        1,
                        s.size - 1,
                        s.size + 1,
                        s.size / HASH_BLOCK * HASH_BLOCK,
                        s.size + HASH_BLOCK,
                        HASH_BLOCK - 1,
                        u64::MAX,
                        u64::MAX / HASH_BLOCK * HASH_BLOCK,
                    ][self.rng().gen_range(0..9)]
                }
            }
        }
        *b = cv::encode(size, &cvs);
    }

    fn mutate(&mut self, s: &Seed, all: &[Seed], b: &mut Vec<u8>) {
        if self.rng().gen_bool(0.4) {
            self.structured(s, all, b);
        } else {
            let donors: Vec<&[u8]> = all.iter().map(|d| &d.bytes[..]).collect();
            self.m.mutate_zoned(&s.bytes, &s.zones, &donors, b);
        }
    }
}

// ---------------------------------------------------------------------------
// Running one input

#[derive(Debug, Default)]
struct Coverage {
    inputs: u64,
    decoded: u64,
    /// Decoded for the size the header claims, not the disk's.
    decoded_other_size: u64,
    exported: u64,
    /// Exports whose values were partly right (some block's values hash to
    /// its hash), so some pieces were read alone.
    partly_trusted: u64,
}

fn oracle(step: &'static str, detail: String) -> Finding {
    Finding {
        kind: FindingKind::Oracle,
        step,
        detail,
    }
}

/// Exports the seed's ranges of its point's content over its point's file,
/// with `cvs` as the values kept at that point.
fn export(r: &Repository, s: &Seed, cvs: Option<Vec<Cv>>) -> backup::Result<Exported> {
    let e = export_diff(
        &r.fs,
        &s.src,
        &s.file,
        Path::new(SCRATCH),
        &s.ranges,
        &s.hashes,
        cvs,
        &mut |_| {},
    );
    let _ = r.fs.remove(Path::new(SCRATCH));
    e
}

fn steps(r: &Repository, s: &Seed, b: &[u8], cov: &mut Coverage) -> Result<(), Finding> {
    let claimed = b
        .get(16..24)
        .map(|x| u64::from_le_bytes(x.try_into().unwrap()));
    let sizes = [
        Some(s.size),
        claimed,
        Some(0),
        Some(HASH_BLOCK),
        Some(u64::MAX),
        Some(s.size + HASH_BLOCK),
        Some(s.size - HASH_BLOCK),
    ];
    let mut mine = None;
    for (i, size) in sizes.into_iter().enumerate() {
        let Some(size) = size else { continue };
        let Some(cvs) = guarded("cv::decode", || cv::decode(b, size))? else {
            continue;
        };
        cov.decoded += 1;
        cov.decoded_other_size += (i > 0) as u64;
        let again = cv::encode(size, &cvs);
        if cvs.len() != cv::count(size) || again != b {
            return Err(oracle(
                "cv::decode",
                format!(
                    "decode({} bytes, size {size}) gives {} values (a disk of that size has {}), which encode to {} other bytes",
                    b.len(),
                    cvs.len(),
                    cv::count(size),
                    again.len()
                ),
            ));
        }
        if i == 0 {
            mine = Some(cvs);
        }
    }
    let Some(cvs) = mine.filter(|c| *c != s.cvs) else {
        return Ok(());
    };
    // The values as the previous point's, for an export of the point's own
    // content: untrusted values change nothing but what is read.
    let exported = guarded("export_diff", || export(r, s, Some(cvs.clone())))?
        .map_err(|e| oracle("export_diff", format!("the export fails: {e}")))?;
    cov.exported += 1;
    if exported.hashes != s.hashes {
        let i = (0..s.hashes.len())
            .find(|&i| exported.hashes.get(i) != Some(&s.hashes[i]))
            .unwrap_or(0);
        return Err(oracle(
            "export_diff",
            format!("with these values, block {i} of unchanged content hashes differently"),
        ));
    }
    let mut trusted = false;
    for &(o, l) in &s.ranges {
        for block in o / HASH_BLOCK..=(o + l - 1) / HASH_BLOCK {
            let c = block as usize * PIECES;
            if c + PIECES > s.cvs.len() {
                continue; // the partial last block has no values
            }
            if exported.cvs[c..c + PIECES] != s.cvs[c..c + PIECES] {
                return Err(oracle(
                    "export_diff",
                    format!("with these values, the touched block {block} gets wrong values"),
                ));
            }
            trusted |= cvs[c..c + PIECES] == s.cvs[c..c + PIECES];
        }
    }
    cov.partly_trusted += trusted as u64;
    Ok(())
}

fn run_one(r: &Repository, s: &Seed, b: &[u8], cov: &mut Coverage) -> Result<(), Failure> {
    cov.inputs += 1;
    heap_bounded(ALLOC_LIMIT, b.len(), || steps(r, s, b, cov))
}

// ---------------------------------------------------------------------------
// The loop

struct CvFiles<'a> {
    r: &'a Repository,
    all: &'a [Seed],
    m: CvMutator,
    cov: Coverage,
}

impl Target for CvFiles<'_> {
    const WHAT: &'static str = "cv files, ";
    const EXT: &'static str = "cv";

    fn names(&self) -> Vec<String> {
        self.all.iter().map(|s| s.name.clone()).collect()
    }

    fn rng(&mut self) -> &mut SmallRng {
        self.m.rng()
    }

    fn mutate(&mut self, seed: usize, buf: &mut Vec<u8>) {
        self.m.mutate(&self.all[seed], self.all, buf);
    }

    fn run(&mut self, seed: usize, input: &Arc<Vec<u8>>) -> Result<(), Failure> {
        run_one(self.r, &self.all[seed], input, &mut self.cov)
    }

    fn print_reached(&self) {
        let c = &self.cov;
        println!(
            "reached: inputs {}, decoded {}, decoded for another size {}, exported {}, partly trusted {}",
            c.inputs, c.decoded, c.decoded_other_size, c.exported, c.partly_trusted
        );
    }
}

fn main() {
    let args = Args::parse();
    refpoint_fuzz::install_panic_capture();
    let r = repository();
    let all = seeds(&r);
    if let Some(p) = &args.reproduce {
        let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let seed = harness::seed_of(p, &all, |s| &s.name).unwrap_or(&all[0]);
        let mut cov = Coverage::default();
        let res = run_one(&r, seed, &bytes, &mut cov);
        harness::print_reproduced(res, || format!("(seed {}); {cov:?}", seed.name));
        return;
    }
    for s in &all {
        for cvs in [None, Some(s.cvs.clone())] {
            match export(&r, s, cvs) {
                Ok(e) if e.hashes == s.hashes => {}
                e => eprintln!(
                    "note: seed {} does not export its own hashes: {e:?}",
                    s.name
                ),
            }
        }
    }
    harness::fuzz(
        &args.run,
        Duration::from_secs(args.timeout),
        |rng: SmallRng| CvFiles {
            r: &r,
            all: &all,
            m: CvMutator {
                m: Mutator::new(rng),
                zero: cv::zero_block(),
            },
            cov: Coverage::default(),
        },
    );
}
