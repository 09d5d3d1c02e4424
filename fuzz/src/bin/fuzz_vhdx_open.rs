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
use rand::{Rng, SeedableRng};
use refpoint_fuzz::alloc_track::TrackingAlloc;
use refpoint_fuzz::mutate::Mutator;
use refpoint_fuzz::seeds::{self, Seed};
use refpoint_fuzz::{run_one, Coverage, Finding};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[global_allocator]
static ALLOC: TrackingAlloc = TrackingAlloc;

#[derive(Parser)]
#[command(about = "Mutation fuzzing of VHDX open/check/repair/read (stable toolchain)")]
struct Args {
    /// Mutants to run (default 100000, or unlimited when --seconds is given).
    #[arg(long)]
    iterations: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    seconds: Option<u64>,
    /// Seed of the random generator (default: from the clock).
    #[arg(long)]
    seed: Option<u64>,
    /// Where findings are saved.
    #[arg(long, default_value = "target/fuzz-crashes")]
    crashes: PathBuf,
    /// An input running longer than this many seconds is a hang.
    #[arg(long, default_value_t = 20)]
    timeout: u64,
    /// Run one saved input instead of fuzzing.
    #[arg(long)]
    reproduce: Option<PathBuf>,
    /// More seed files.
    files: Vec<PathBuf>,
}

/// What the watchdog needs to save a hanging input.
type Current = Arc<Mutex<Option<(Instant, String, Arc<Vec<u8>>)>>>;

fn save(dir: &Path, kind: &str, seed: &str, input: &[u8], detail: &str) -> PathBuf {
    let _ = std::fs::create_dir_all(dir);
    let seed: String = seed
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let path = dir.join(format!("{kind}-{seed}-{:08x}.vhdx", crc32c::crc32c(input)));
    if let Err(e) = std::fs::write(&path, input) {
        eprintln!("cannot save {}: {e}", path.display());
    }
    let _ = std::fs::write(path.with_extension("txt"), detail);
    path
}

fn watchdog(current: Current, timeout: Duration, dir: PathBuf) {
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(250));
        let guard = current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((start, seed, input)) = guard.as_ref() {
            if start.elapsed() > timeout {
                let detail = format!("input from seed {seed} still running after {timeout:?}");
                let p = save(&dir, "hang", seed, input, &detail);
                eprintln!("HANG: {detail}; saved to {}", p.display());
                std::process::exit(3);
            }
        }
    });
}

/// The seed a saved finding came from (its name is part of the file name).
fn seed_for(path: &Path, generated: &[Seed]) -> std::io::Result<Seed> {
    let bytes = std::fs::read(path)?;
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut named: Vec<_> = generated
        .iter()
        .filter(|s| stem.contains(&format!("-{}-", s.name)))
        .collect();
    named.sort_by_key(|s| std::cmp::Reverse(s.name.len()));
    Ok(match named.first() {
        Some(s) => {
            let mut s = (*s).clone();
            s.files[0].1 = std::sync::Arc::new(bytes);
            s
        }
        None => {
            let mut s = seeds::from_file(path)?;
            s.name = "input".into();
            s
        }
    })
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
        match run_one(&seed, &seed.files[0].1, &mut cov) {
            Ok(()) => println!("no finding (seed {}); {cov:?}", seed.name),
            Err(f) => {
                println!("{f}");
                std::process::exit(1);
            }
        }
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
    let donors: Vec<&[u8]> = all.iter().map(|s| s.bytes()).collect();
    let rng_seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0)
    });
    let limit = args.iterations.unwrap_or(if args.seconds.is_some() {
        u64::MAX
    } else {
        100_000
    });
    let deadline = args
        .seconds
        .map(|s| Instant::now() + Duration::from_secs(s));
    println!(
        "fuzzing {} seeds ({}), random seed {rng_seed}, {} ",
        all.len(),
        all.iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        match (args.iterations, args.seconds) {
            (_, Some(s)) if limit == u64::MAX => format!("for {s} s"),
            (_, Some(s)) => format!("for {limit} iterations or {s} s"),
            _ => format!("for {limit} iterations"),
        }
    );

    let current: Current = Arc::default();
    watchdog(
        current.clone(),
        Duration::from_secs(args.timeout),
        args.crashes.clone(),
    );
    let mut m = Mutator::new(SmallRng::seed_from_u64(rng_seed));
    let mut cov = Coverage::default();
    let mut unique: HashMap<String, (Finding, PathBuf, u64)> = HashMap::new();
    let mut slowest = (Duration::ZERO, String::new());
    let start = Instant::now();
    let mut last_report = start;
    let mut n = 0u64;
    let mut buf = Vec::new();
    while n < limit && deadline.is_none_or(|d| Instant::now() < d) {
        let seed = &all[m.rng.gen_range(0..all.len())];
        m.mutate_into(seed.bytes(), &donors, &mut buf);
        let input = Arc::new(std::mem::take(&mut buf));
        let t = Instant::now();
        *current.lock().unwrap_or_else(|e| e.into_inner()) =
            Some((t, seed.name.clone(), input.clone()));
        let r = run_one(seed, &input, &mut cov);
        *current.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let took = t.elapsed();
        if took > slowest.0 {
            slowest = (took, seed.name.clone());
        }
        n += 1;
        if let Err(f) = r {
            // Findings are told apart by kind, step and where they happen
            // (numbers, such as sizes, do not make a finding distinct).
            let key: String = format!(
                "{:?} {} {}",
                f.kind,
                f.step,
                f.detail.lines().next().unwrap_or("")
            )
            .chars()
            .filter(|c| !c.is_ascii_digit())
            .collect();
            match unique.get_mut(&key) {
                Some(e) => e.2 += 1,
                None => {
                    let p = save(
                        &args.crashes,
                        f.kind.name(),
                        &seed.name,
                        &input,
                        &format!("seed {}\n{f}\n", seed.name),
                    );
                    println!(
                        "FINDING #{}: {f}\n  saved to {}",
                        unique.len() + 1,
                        p.display()
                    );
                    unique.insert(key, (f, p, 1));
                }
            }
        }
        // Every handle on the input is gone: take the buffer back.
        buf = Arc::try_unwrap(input).unwrap_or_default();
        if last_report.elapsed() > Duration::from_secs(10) {
            last_report = Instant::now();
            let secs = start.elapsed().as_secs_f64();
            println!(
                "{n} iterations, {:.0}/s, {} distinct findings",
                n as f64 / secs,
                unique.len()
            );
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "done: {n} iterations in {secs:.1} s = {:.0} iterations/s; slowest input {:?} (seed {})",
        n as f64 / secs,
        slowest.0,
        slowest.1
    );
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
    if unique.is_empty() {
        println!("no findings");
    } else {
        println!("{} distinct findings:", unique.len());
        for (f, p, count) in unique.values() {
            println!("  {count:>6}× {f}\n          e.g. {}", p.display());
        }
        std::process::exit(1);
    }
}
