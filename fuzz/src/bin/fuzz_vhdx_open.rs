//! fuzz_vhdx_open — mutation fuzzing of VHDX open, check, repair and read,
//! on the stable toolchain (no cargo-fuzz, no nightly).
//!
//! ```sh
//! cargo run --release -p refpoint-fuzz -- --seconds 60     # or --iterations N (default 100000)
//! cargo run --release -p refpoint-fuzz -- --seed 7 my.vhdx  # fixed random seed, extra seed files
//! cargo run --release -p refpoint-fuzz -- --reproduce target/fuzz-crashes/panic-child-1a2b3c4d.vhdx
//! ```
//!
//! Seeds come from `vhdx::create` plus writes (dynamic, fixed, 4 KiB sectors,
//! differencing, dirty log) and the files given. Each mutant (bit flips, byte
//! sets, interesting values, chunk splices, truncation; mostly inside the
//! headers, region tables, log, metadata and BAT, often with checksums
//! recomputed) goes through `refpoint_fuzz::run_one`. A panic, a broken
//! oracle, a write through a read-only handle, runaway file growth or heap
//! use, or an input running past `--timeout` seconds is saved to `--crashes
//! DIR` (default `target/fuzz-crashes`) as `<kind>-<seed>-<crc>.vhdx` with a
//! `.txt`, and the exit status is 1. Iterations per second are printed at
//! the end. To have overflow checks too, build with
//! `CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS=true` (in a separate
//! `CARGO_TARGET_DIR`); with `--reproduce`, `REFPOINT_FUZZ_ALLOC_TRAP=<bytes>`
//! prints a backtrace for every allocation at least that large.

use clap::Parser;
use rand::rngs::SmallRng;
use refpoint_fuzz::alloc_track::TrackingAlloc;
use refpoint_fuzz::harness::{self, Failure, LoopArgs, Target};
use refpoint_fuzz::mutate::Mutator;
use refpoint_fuzz::seeds::{self, Seed};
use refpoint_fuzz::{run_one, Coverage};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

#[global_allocator]
static ALLOC: TrackingAlloc = TrackingAlloc;

#[derive(Parser)]
#[command(about = "Mutation fuzzing of VHDX open/check/repair/read (stable toolchain)")]
struct Args {
    #[command(flatten)]
    run: LoopArgs,
    /// An input running longer than this many seconds is a hang.
    #[arg(long, default_value_t = 20)]
    timeout: u64,
    /// Run one saved input instead of fuzzing.
    #[arg(long)]
    reproduce: Option<PathBuf>,
    /// More seed files.
    files: Vec<PathBuf>,
}

/// The seed a saved finding came from (its name is part of the file name).
fn seed_for(path: &Path, generated: &[Seed]) -> std::io::Result<Seed> {
    let bytes = std::fs::read(path)?;
    Ok(match harness::seed_of(path, generated, |s| &s.name) {
        Some(s) => {
            let mut s = s.clone();
            s.files[0].1 = Arc::new(bytes);
            s
        }
        None => {
            let mut s = seeds::from_file(path)?;
            s.name = "input".into();
            s
        }
    })
}

/// VHDX files through [`run_one`].
struct VhdxOpen<'a> {
    all: &'a [Seed],
    donors: Vec<&'a [u8]>,
    m: Mutator,
    cov: Coverage,
}

impl Target for VhdxOpen<'_> {
    const WHAT: &'static str = "";
    const EXT: &'static str = "vhdx";

    fn names(&self) -> Vec<String> {
        self.all.iter().map(|s| s.name.clone()).collect()
    }

    fn rng(&mut self) -> &mut SmallRng {
        &mut self.m.rng
    }

    fn mutate(&mut self, seed: usize, buf: &mut Vec<u8>) {
        self.m
            .mutate_into(self.all[seed].bytes(), &self.donors, buf);
    }

    fn run(&mut self, seed: usize, input: &Arc<Vec<u8>>) -> Result<(), Failure> {
        Ok(run_one(&self.all[seed], input, &mut self.cov)?)
    }

    fn print_reached(&self) {
        let cov = &self.cov;
        println!(
            "reached: read-only open {}, writable open {}, chain open {}, log replayed {}, check valid {}, check with problems {}, repaired to valid {}",
            cov.read_only_opened,
            cov.writable_opened,
            cov.chain_opened,
            cov.log_replayed,
            cov.check_valid,
            cov.check_problems,
            cov.repaired_valid
        );
        let mut errs: Vec<_> = cov.errors.iter().collect();
        errs.sort_by_key(|(_, c)| std::cmp::Reverse(**c));
        println!(
            "open errors: {}",
            errs.iter()
                .map(|(k, c)| format!("{k} {c}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
}

fn main() {
    let args = Args::parse();
    let generated = seeds::generated();

    if let Some(path) = &args.reproduce {
        if let Some(n) = std::env::var("REFPOINT_FUZZ_ALLOC_TRAP")
            .ok()
            .and_then(|v| v.parse().ok())
        {
            refpoint_fuzz::alloc_track::set_trap(n);
        }
        let seed = seed_for(path, &generated).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut cov = Coverage::default();
        let r = run_one(&seed, &seed.files[0].1, &mut cov).map_err(Failure::from);
        harness::print_reproduced(r, || format!("(seed {}); {cov:?}", seed.name));
        return;
    }

    let mut all = generated;
    for f in &args.files {
        match seeds::from_file(f) {
            Ok(s) => all.push(s),
            Err(e) => eprintln!("skipping {}: {e}", f.display()),
        }
    }
    for s in &all {
        if let Err(e) = seeds::validate(s) {
            eprintln!(
                "note: seed {} does not open cleanly ({e}); fuzzing it anyway",
                s.name
            );
        }
    }
    harness::fuzz(
        &args.run,
        Duration::from_secs(args.timeout),
        |rng: SmallRng| VhdxOpen {
            all: &all,
            donors: all.iter().map(|s| s.bytes()).collect(),
            m: Mutator::new(rng),
            cov: Coverage::default(),
        },
    );
}
