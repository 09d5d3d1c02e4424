//! fuzz_manifest — mutation fuzzing of backup manifests
//! (`<repo>/<NNNN>/manifest.json`, `backup` crate) and what reads them, on
//! the stable toolchain.
//!
//! ```sh
//! cargo run --release -p refpoint-fuzz --bin fuzz_manifest -- --seconds 60   # or --iterations N (default 100000)
//! cargo run --release -p refpoint-fuzz --bin fuzz_manifest -- --reproduce target/fuzz-crashes/panic-point-2-1a2b3c4d.json
//! ```
//!
//! The seeds are the manifests of a real repository (`refpoint_fuzz::repo`:
//! two disks, a full and two incremental backups by `backup::backup` on
//! `storage::CrashFs`), one of them also without the file hashes (a
//! manifest from before they existed). A mutant is, most of the time, the
//! seed's JSON changed as a tree: a value set to a boundary number (0, the
//! other points, 2^32, 2^64 - 1, negative, fractional), to an odd string
//! (empty, `..`, absolute and other points' paths, a long one), to another
//! type or to a donor's value at the same place; a key removed, renamed or
//! added; array entries dropped, repeated or reordered; else bit flips,
//! byte sets, splices and truncation of the text.
//!
//! The mutant replaces its point's manifest in the repository, and then
//! `Repo::manifest` (the parser), `Repo::points`, `Repo::resolve_point`,
//! `Repo::disk_file` and `restore` (for each disk the manifest names, onto
//! an existing file, so it looks everything up and opens the chain but
//! writes nothing) and `verify` of the point and of the whole repository
//! must return `Ok` or an error, never panic (`verify` re-hashes megabytes,
//! so it runs for a quarter of the inputs only, and for every reproduced
//! one). A parsed manifest must serialize to JSON that parses to the same
//! manifest; one equal to its seed's must verify clean. The seed's
//! manifest is put back after each input. A panic, a broken oracle, heap
//! growth past 256 MiB or an input running past `--timeout` seconds is
//! saved to `--crashes DIR` (default `target/fuzz-crashes`) as
//! `<kind>-<seed>-<crc>.json` with a `.txt`; the exit status is then 1.
//! The repository is made afresh by every run, and its files hold random
//! GUIDs: a saved input names the file hashes and RCT IDs it holds
//! (`@file_hashes/<point>/<disk>/<i>@`, `@rct_id/<point>/<disk>@`), which
//! `--reproduce` replaces by this run's.

use backup::manifest::HASH_BLOCK;
use backup::{restore, verify, Format, Manifest};
use clap::Parser;
use rand::rngs::SmallRng;
use rand::Rng;
use refpoint_fuzz::alloc_track::TrackingAlloc;
use refpoint_fuzz::harness::{self, Failure, LoopArgs, Target};
use refpoint_fuzz::mutate::Mutator;
use refpoint_fuzz::repo::{repository, Repository, POINTS};
use refpoint_fuzz::{guarded, heap_bounded, Finding, FindingKind};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[global_allocator]
static ALLOC: TrackingAlloc = TrackingAlloc;

/// Heap growth during one input beyond this is a finding.
const ALLOC_LIMIT: usize = 256 << 20;
/// Of this many inputs in a row, two verify their point, and one its point
/// and then the whole repository (verifying re-hashes megabytes).
const VERIFY_EVERY: u64 = 12;
/// An existing file: restores onto it look everything up, then refuse.
const EXISTING: &str = "/restored";

#[derive(Parser)]
#[command(about = "Mutation fuzzing of backup manifests (stable toolchain)")]
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

/// A manifest of the repository, as bytes and as a JSON tree.
struct Seed {
    name: String,
    point: u32,
    bytes: Vec<u8>,
    json: Value,
    manifest: Manifest,
    /// What the repository holds at the point (the content-only seed
    /// replaces the real manifest only while one of its mutants runs).
    original: Arc<Vec<u8>>,
}

fn seeds(r: &Repository) -> Vec<Seed> {
    let mut out: Vec<Seed> = r
        .manifests
        .iter()
        .map(|(m, b)| Seed {
            name: format!("point-{}", m.point),
            point: m.point,
            bytes: b.clone(),
            json: serde_json::from_slice(b).expect("a manifest is JSON"),
            manifest: m.clone(),
            original: Arc::new(b.clone()),
        })
        .collect();
    // The last point as written before manifests had file hashes.
    let (last, original) = &r.manifests[POINTS as usize - 1];
    let mut m = last.clone();
    for d in &mut m.disks {
        d.file_size = 0;
        d.file_hashes.clear();
    }
    let mut json = serde_json::to_value(&m).expect("serializes");
    for d in json["disks"].as_array_mut().expect("disks") {
        let d = d.as_object_mut().expect("disk");
        d.remove("file_size");
        d.remove("file_hashes");
    }
    out.push(Seed {
        name: format!("point-{}-content-only", last.point),
        point: last.point,
        bytes: serde_json::to_vec_pretty(&json).expect("serializes"),
        json,
        manifest: m,
        original: Arc::new(original.clone()),
    });
    out
}

// ---------------------------------------------------------------------------
// Mutation

fn interesting_numbers(point: u32) -> Vec<Value> {
    let p = point as u64;
    vec![
        json!(0),
        json!(1),
        json!(2),
        json!(3),
        json!(p),
        json!(p + 1),
        json!(p - 1),
        json!(-1),
        json!(512),
        json!(4096),
        json!(HASH_BLOCK - 1),
        json!(HASH_BLOCK),
        json!(HASH_BLOCK + 1),
        json!(3 * HASH_BLOCK),
        json!(u32::MAX),
        json!(u32::MAX as u64 + 1),
        json!(1u64 << 53),
        json!(i64::MAX),
        json!(u64::MAX),
        json!(1.5),
        json!(1e300),
    ]
}

fn interesting_strings() -> Vec<Value> {
    let zeros = backup::export::hash(&vec![0u8; HASH_BLOCK as usize]);
    [
        "",
        ".",
        "..",
        "../0001/disk0.vhdx",
        "/repo/0001/disk0.vhdx",
        "/restored",
        "0001",
        "disk0",
        "data",
        "disk0.vhdx",
        "disk0.avhdx",
        "manifest.json",
        "full",
        "incremental",
        "refpoint-backup-0",
        "rct:00000000-0000-0000-0000-000000000000:00000001",
        "not hex",
        &zeros,
        &zeros[..63],
        "\u{0}",
        "é",
    ]
    .iter()
    .map(|s| json!(s))
    .chain([json!("x".repeat(5000))])
    .collect()
}

fn escape(k: &str) -> String {
    k.replace('~', "~0").replace('/', "~1")
}

/// The JSON pointers of every node of `v`.
fn pointers(v: &Value, at: &str, out: &mut Vec<String>) {
    out.push(at.to_string());
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                pointers(x, &format!("{at}/{}", escape(k)), out);
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                pointers(x, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

struct JsonMutator {
    m: Mutator,
    numbers: Vec<Vec<Value>>,
    strings: Vec<Value>,
}

impl JsonMutator {
    fn rng(&mut self) -> &mut SmallRng {
        &mut self.m.rng
    }

    fn pick(&mut self, xs: &[Value]) -> Value {
        xs[self.rng().gen_range(0..xs.len())].clone()
    }

    /// One change of the tree `v` of seed `seed` at a random node.
    fn change(&mut self, v: &mut Value, seed: usize, donors: &[Seed]) {
        let mut ps = Vec::new();
        pointers(v, "", &mut ps);
        let p = ps[self.rng().gen_range(0..ps.len())].clone();
        let (parent, key) = match p.rsplit_once('/') {
            Some((a, k)) => (a.to_string(), k.replace("~1", "/").replace("~0", "~")),
            None => (String::new(), String::new()),
        };
        let donor = &donors[self.rng().gen_range(0..donors.len())].json;
        let numbers = self.numbers[seed.min(self.numbers.len() - 1)].clone();
        let strings = self.strings.clone();
        let node = v.pointer_mut(&p).expect("a pointer of v");
        match self.rng().gen_range(0..12) {
            0..=2 => {
                *node = match node {
                    Value::Number(_) => self.pick(&numbers),
                    Value::String(_) => self.pick(&strings),
                    _ if self.rng().gen_bool(0.5) => self.pick(&numbers),
                    _ => self.pick(&strings),
                }
            }
            3 => {
                *node = self.pick(&[
                    Value::Null,
                    json!(true),
                    json!({}),
                    json!([]),
                    json!([null]),
                    json!("1"),
                ])
            }
            4 | 5 => {
                // A donor's value at the same place, or anywhere.
                if let Some(d) = donor.pointer(&p) {
                    *node = d.clone();
                } else {
                    let mut dps = Vec::new();
                    pointers(donor, "", &mut dps);
                    let q = &dps[self.rng().gen_range(0..dps.len())];
                    *node = donor.pointer(q).cloned().unwrap_or(Value::Null);
                }
            }
            6 => {
                if let Value::Array(a) = node {
                    let n = self.rng().gen_range(0..=a.len());
                    a.truncate(n);
                } else if let Value::Object(m) = node {
                    m.insert("unknown".into(), json!(1));
                }
            }
            7 => {
                if let Value::Array(a) = node {
                    if !a.is_empty() {
                        let i = self.rng().gen_range(0..a.len());
                        let x = a[i].clone();
                        a.insert(self.rng().gen_range(0..=a.len()), x);
                    }
                }
            }
            8 => {
                if let Value::Array(a) = node {
                    a.reverse();
                }
            }
            _ => {
                // Remove the node, or rename its key.
                let rename = self.rng().gen_bool(0.3);
                match v.pointer_mut(&parent) {
                    Some(Value::Object(m)) if !p.is_empty() => {
                        if let Some(x) = m.remove(&key) {
                            if rename {
                                m.insert(format!("{key}_"), x);
                            }
                        }
                    }
                    Some(Value::Array(a)) if !p.is_empty() => {
                        if let Ok(i) = key.parse::<usize>() {
                            a.remove(i);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    fn mutate(&mut self, seed: usize, all: &[Seed], b: &mut Vec<u8>) {
        let s = &all[seed];
        if self.rng().gen_bool(0.7) {
            let mut v = s.json.clone();
            for _ in 0..self.rng().gen_range(1..5) {
                self.change(&mut v, seed, all);
            }
            *b = if self.rng().gen_bool(0.5) {
                serde_json::to_vec_pretty(&v)
            } else {
                serde_json::to_vec(&v)
            }
            .expect("serializes");
        } else {
            let donors: Vec<&[u8]> = all.iter().map(|d| &d.bytes[..]).collect();
            self.m
                .mutate_zoned(&s.bytes, &[(0, s.bytes.len())], &donors, b);
        }
    }
}

// ---------------------------------------------------------------------------
// Running one input

#[derive(Debug, Default)]
struct Coverage {
    inputs: u64,
    parsed: u64,
    /// Parsed, and equal to the seed's manifest.
    unchanged: u64,
    points_listed: u64,
    disk_files: u64,
    /// Disk files the manifest places outside its point's directory.
    outside: u64,
    chains_looked_up: u64,
    verified_clean: u64,
    verified_bad: u64,
    verify_errors: u64,
    /// `Repo::manifest` errors by their first words.
    errors: BTreeMap<String, u64>,
}

fn oracle(step: &'static str, detail: String) -> Finding {
    Finding {
        kind: FindingKind::Oracle,
        step,
        detail,
    }
}

/// The steps for the `k`th input (`None`: a reproduced one).
fn steps(r: &Repository, seed: &Seed, k: Option<u64>, cov: &mut Coverage) -> Result<(), Finding> {
    let repo = r.repo();
    let p = seed.point;
    let parsed = guarded("Repo::manifest", || repo.manifest(p))?;
    match &parsed {
        Ok(m) => {
            cov.parsed += 1;
            let json = serde_json::to_vec(m).expect("a manifest serializes");
            let again: Result<Manifest, _> = serde_json::from_slice(&json);
            if again.as_ref().ok() != Some(m) {
                return Err(oracle(
                    "serialize and parse again",
                    format!("{m:?} serializes to JSON that parses as {again:?}"),
                ));
            }
        }
        Err(e) => {
            // "…/manifest.json: invalid manifest: <serde's message> at line …"
            let s = e.to_string();
            let why = s.split("invalid manifest: ").nth(1).unwrap_or(&s);
            let why: String = why.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
            *cov.errors.entry(why).or_default() += 1;
        }
    }
    if guarded("Repo::points", || repo.points())?.is_ok() {
        cov.points_listed += 1;
    }
    let _ = guarded("Repo::resolve_point", || {
        (repo.resolve_point(None), repo.resolve_point(Some(p)))
    })?;
    if let Ok(m) = &parsed {
        let names = m.disks.iter().map(|d| d.name.as_str()).take(4);
        let own = backup::repo::point_dir(r.dir(), p);
        for name in names.chain(["nope"]) {
            if let Ok(f) = guarded("Repo::disk_file", || repo.disk_file(p, name))? {
                cov.disk_files += 1;
                cov.outside += (f.parent() != Some(&own)) as u64;
            }
            let to = Path::new(EXISTING);
            let restored = guarded("restore", || {
                restore(
                    &r.fs,
                    r.dir(),
                    Some(p),
                    Some(name),
                    to,
                    Format::Raw,
                    &mut |_, _| {},
                )
            })?;
            match restored {
                Ok(files) => {
                    return Err(oracle(
                        "restore",
                        format!("restore of disk {name:?} onto an existing file wrote {files:?}"),
                    ))
                }
                Err(e) => cov.chains_looked_up += e.to_string().contains("already exists") as u64,
            }
        }
    }
    let unchanged = parsed.as_ref().is_ok_and(|m| *m == seed.manifest);
    cov.unchanged += unchanged as u64;
    let points = match k.map(|k| k % VERIFY_EVERY) {
        None | Some(0) => &[Some(p), None][..],
        Some(1 | 2) => &[Some(p)][..],
        _ => &[],
    };
    for &point in points {
        match guarded("verify", || verify(&r.fs, r.dir(), point, &mut |_, _| {}))? {
            Ok(v) if v.first_bad.is_none() => cov.verified_clean += 1,
            Ok(v) => {
                cov.verified_bad += 1;
                if unchanged {
                    return Err(oracle(
                        "verify",
                        format!(
                            "a manifest equal to the seed's does not verify: {:?}",
                            v.first_bad
                        ),
                    ));
                }
            }
            Err(e) => {
                cov.verify_errors += 1;
                if unchanged {
                    return Err(oracle(
                        "verify",
                        format!("a manifest equal to the seed's does not verify: {e}"),
                    ));
                }
            }
        }
    }
    Ok(())
}

/// Installs `input` as the seed's point's manifest, runs the steps, puts
/// the seed's manifest back.
fn run_one(
    r: &Repository,
    seed: &Seed,
    input: &[u8],
    k: Option<u64>,
    cov: &mut Coverage,
) -> Result<(), Failure> {
    cov.inputs += 1;
    let path = Repository::manifest_path(seed.point);
    r.fs.insert(&path, Arc::new(input.to_vec()));
    let res = heap_bounded(ALLOC_LIMIT, input.len(), || steps(r, seed, k, cov));
    r.fs.insert(&path, seed.original.clone());
    res
}

// ---------------------------------------------------------------------------
// Saved inputs

/// The values of the manifests that change from one build of the
/// repository to the next (its files hold random GUIDs): file hashes and
/// RCT IDs, each with a name that does not change. Saved inputs carry the
/// names, so that a reproduced input means what it meant.
fn volatile(r: &Repository) -> Vec<(Vec<u8>, Vec<u8>)> {
    let fixed: HashSet<&String> = r
        .manifests
        .iter()
        .flat_map(|(m, _)| m.disks.iter().flat_map(|d| &d.hashes))
        .collect();
    let mut out: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
    for (m, _) in &r.manifests {
        for d in &m.disks {
            let (p, n) = (m.point, &d.name);
            let hashes = d.file_hashes.iter().enumerate();
            let named = hashes
                .map(|(i, h)| (h, format!("@file_hashes/{p}/{n}/{i}@")))
                .chain(d.rct_id.iter().map(|id| (id, format!("@rct_id/{p}/{n}@"))));
            for (v, name) in named {
                if !fixed.contains(v) && !out.iter().any(|(x, _)| x == v.as_bytes()) {
                    out.push((v.as_bytes().to_vec(), name.into_bytes()));
                }
            }
        }
    }
    out
}

/// `b` with each `from` of `pairs` replaced by its `to`.
fn replace<'a>(b: &[u8], pairs: impl Iterator<Item = (&'a [u8], &'a [u8])>) -> Vec<u8> {
    let mut b = b.to_vec();
    for (from, to) in pairs {
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            if b[i..].starts_with(from) {
                out.extend_from_slice(to);
                i += from.len();
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        b = out;
    }
    b
}

// ---------------------------------------------------------------------------
// The loop

struct Manifests<'a> {
    r: &'a Repository,
    volatile: &'a [(Vec<u8>, Vec<u8>)],
    all: &'a [Seed],
    m: JsonMutator,
    cov: Coverage,
}

impl Target for Manifests<'_> {
    const WHAT: &'static str = "backup manifests, ";
    const EXT: &'static str = "json";

    fn names(&self) -> Vec<String> {
        self.all.iter().map(|s| s.name.clone()).collect()
    }

    fn rng(&mut self) -> &mut SmallRng {
        self.m.rng()
    }

    fn mutate(&mut self, seed: usize, buf: &mut Vec<u8>) {
        self.m.mutate(seed, self.all, buf);
    }

    fn run(&mut self, seed: usize, input: &Arc<Vec<u8>>) -> Result<(), Failure> {
        let k = self.cov.inputs;
        run_one(self.r, &self.all[seed], input, Some(k), &mut self.cov).map_err(|mut f| {
            let names = self.volatile.iter().map(|(v, n)| (&v[..], &n[..]));
            f.bytes = Some(replace(input, names));
            f
        })
    }

    fn print_reached(&self) {
        let c = &self.cov;
        println!(
            "reached: inputs {}, parsed {}, unchanged {}, points listed {}, disk files {}, outside their point {}, chains looked up {}, verified clean {}, verified bad {}, verify errors {}",
            c.inputs, c.parsed, c.unchanged, c.points_listed, c.disk_files, c.outside, c.chains_looked_up, c.verified_clean, c.verified_bad, c.verify_errors
        );
        let mut errs: Vec<_> = c.errors.iter().collect();
        errs.sort_by_key(|(_, n)| std::cmp::Reverse(**n));
        let errs: Vec<String> = errs
            .iter()
            .take(12)
            .map(|(k, n)| format!("{k} {n}"))
            .collect();
        println!("parse errors: {}", errs.join(", "));
    }
}

fn main() {
    let args = Args::parse();
    refpoint_fuzz::install_panic_capture();
    let r = repository();
    r.fs.insert(Path::new(EXISTING), Arc::new(vec![0; 512]));
    let all = seeds(&r);
    let volatile = volatile(&r);
    if let Some(p) = &args.reproduce {
        let bytes = std::fs::read(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        let bytes = replace(&bytes, volatile.iter().map(|(v, n)| (&n[..], &v[..])));
        let seed = harness::seed_of(p, &all, |s| &s.name).unwrap_or(&all[0]);
        let mut cov = Coverage::default();
        let res = run_one(&r, seed, &bytes, None, &mut cov);
        harness::print_reproduced(res, || format!("(seed {}); {cov:?}", seed.name));
        return;
    }
    for s in &all {
        let mut cov = Coverage::default();
        match run_one(&r, s, &s.bytes, None, &mut cov) {
            Ok(()) if cov.verified_clean == 2 => {}
            Ok(()) => eprintln!("note: seed {} does not verify clean: {cov:?}", s.name),
            Err(f) => eprintln!("note: seed {} itself misbehaves: {f}", s.name),
        }
    }
    let numbers = all.iter().map(|s| interesting_numbers(s.point)).collect();
    harness::fuzz(
        &args.run,
        Duration::from_secs(args.timeout),
        |rng: SmallRng| Manifests {
            r: &r,
            volatile: &volatile,
            all: &all,
            m: JsonMutator {
                m: Mutator::new(rng),
                numbers,
                strings: interesting_strings(),
            },
            cov: Coverage::default(),
        },
    );
}
