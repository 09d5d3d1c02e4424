//! The loop every fuzzer binary runs: pick a seed, mutate it, run the
//! mutant, save what misbehaved (once per distinct finding), watch for
//! inputs that never finish, report progress and a summary; and the
//! pieces of `--reproduce`.

use crate::Finding;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The options of the loop, the same in every fuzzer.
#[derive(clap::Args)]
pub struct LoopArgs {
    /// Mutants to run (default 100000, or unlimited when --seconds is given).
    #[arg(long)]
    pub iterations: Option<u64>,
    /// Stop after this many seconds.
    #[arg(long)]
    pub seconds: Option<u64>,
    /// Seed of the random generator (default: from the clock).
    #[arg(long)]
    pub seed: Option<u64>,
    /// Where findings are saved.
    #[arg(long, default_value = "target/fuzz-crashes")]
    pub crashes: PathBuf,
}

/// A finding of one input, and the bytes saved for it: the input itself
/// unless `bytes` holds a part of it that shows the finding alone.
#[derive(Debug, Clone)]
pub struct Failure {
    pub finding: Finding,
    pub bytes: Option<Vec<u8>>,
}

impl From<Finding> for Failure {
    fn from(finding: Finding) -> Self {
        Failure {
            finding,
            bytes: None,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.finding.fmt(f)
    }
}

/// What one fuzzer plugs into [`fuzz`].
pub trait Target {
    /// How the first line names what is fuzzed, before "N seeds".
    const WHAT: &'static str;
    /// The extension of saved inputs.
    const EXT: &'static str;
    /// The names of the seeds, in the order [`Target::mutate`] counts them.
    fn names(&self) -> Vec<String>;
    /// The random generator the mutations draw from.
    fn rng(&mut self) -> &mut SmallRng;
    /// Writes a mutant of seed `seed` into `buf` (the previous input, to
    /// reuse).
    fn mutate(&mut self, seed: usize, buf: &mut Vec<u8>);
    /// Runs one mutant of seed `seed`.
    fn run(&mut self, seed: usize, input: &Arc<Vec<u8>>) -> Result<(), Failure>;
    /// The finding of an input from `seed` still running after `limit`.
    fn hang(seed: &str, limit: Duration) -> Finding {
        Finding {
            kind: crate::FindingKind::Hang,
            step: "run_one",
            detail: format!("input from seed {seed} still running after {limit:?}"),
        }
    }
    /// Prints what the inputs reached, after the loop.
    fn print_reached(&self);
}

/// The input being run: since when, its seed, its bytes.
type Current = Arc<Mutex<Option<(Instant, String, Arc<Vec<u8>>)>>>;

/// Saves `input` to `dir` as `<kind>-<seed>-<crc>.<ext>`, with `detail`
/// in a `.txt` next to it.
pub fn save(dir: &Path, ext: &str, kind: &str, seed: &str, input: &[u8], detail: &str) -> PathBuf {
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
    let path = dir.join(format!("{kind}-{seed}-{:08x}.{ext}", crc32c::crc32c(input)));
    if let Err(e) = std::fs::write(&path, input) {
        eprintln!("cannot save {}: {e}", path.display());
    }
    let _ = std::fs::write(path.with_extension("txt"), detail);
    path
}

/// Saves a finding of an input from `seed`.
fn save_failure<T: Target>(dir: &Path, f: &Failure, seed: &str, input: &[u8]) -> PathBuf {
    save(
        dir,
        T::EXT,
        f.finding.kind.name(),
        seed,
        f.bytes.as_deref().unwrap_or(input),
        &format!("seed {seed}\n{f}\n"),
    )
}

/// Saves the input in `current` and exits with status 3 once it has run
/// longer than `limit`: an input that blocks a thread for good.
fn watchdog<T: Target>(current: Current, limit: Duration, dir: PathBuf) {
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(250));
        let guard = current.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((start, seed, input)) = guard.as_ref() {
            if start.elapsed() > limit {
                let f = Failure::from(T::hang(seed, limit));
                let p = save_failure::<T>(&dir, &f, seed, input);
                eprintln!("HANG: {}; saved to {}", f.finding.detail, p.display());
                std::process::exit(3);
            }
        }
    });
}

/// Runs mutants until `--iterations` or `--seconds` are used up; a hang
/// is an input still running after `hang_after`. `make` gets the random
/// generator (seeded from `--seed` or the clock). Exits with status 1 if
/// anything was found.
pub fn fuzz<T: Target>(args: &LoopArgs, hang_after: Duration, make: impl FnOnce(SmallRng) -> T) {
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
    let mut target = make(SmallRng::seed_from_u64(rng_seed));
    let names = target.names();
    println!(
        "fuzzing {}{} seeds ({}), random seed {rng_seed}, {}",
        T::WHAT,
        names.len(),
        names.join(", "),
        match args.seconds {
            Some(s) if limit == u64::MAX => format!("for {s} s"),
            Some(s) => format!("for {limit} iterations or {s} s"),
            None => format!("for {limit} iterations"),
        }
    );

    let current: Current = Arc::default();
    watchdog::<T>(current.clone(), hang_after, args.crashes.clone());
    let mut unique: HashMap<String, (Failure, PathBuf, u64)> = HashMap::new();
    let mut slowest = (Duration::ZERO, String::new());
    let start = Instant::now();
    let mut last_report = start;
    let mut n = 0u64;
    let mut buf = Vec::new();
    while n < limit && deadline.is_none_or(|d| Instant::now() < d) {
        let seed = target.rng().gen_range(0..names.len());
        target.mutate(seed, &mut buf);
        let name = &names[seed];
        let input = Arc::new(std::mem::take(&mut buf));
        let t = Instant::now();
        *current.lock().unwrap_or_else(|e| e.into_inner()) = Some((t, name.clone(), input.clone()));
        let r = target.run(seed, &input);
        *current.lock().unwrap_or_else(|e| e.into_inner()) = None;
        let took = t.elapsed();
        if took > slowest.0 {
            slowest = (took, name.clone());
        }
        n += 1;
        if let Err(f) = r {
            // Findings are told apart by kind, step and the first line of
            // what happened (numbers, such as sizes, do not make a finding
            // distinct).
            let key: String = format!(
                "{:?} {} {}",
                f.finding.kind,
                f.finding.step,
                f.finding.detail.lines().next().unwrap_or("")
            )
            .chars()
            .filter(|c| !c.is_ascii_digit())
            .collect();
            match unique.get_mut(&key) {
                Some(e) => e.2 += 1,
                None => {
                    let p = save_failure::<T>(&args.crashes, &f, name, &input);
                    println!(
                        "FINDING #{}: {f}\n  saved to {}",
                        unique.len() + 1,
                        p.display()
                    );
                    unique.insert(key, (f, p, 1));
                }
            }
        }
        // Every handle on the input is gone (unless a task of the target
        // still holds one): take the buffer back.
        buf = Arc::try_unwrap(input).unwrap_or_default();
        if last_report.elapsed() > Duration::from_secs(10) {
            last_report = Instant::now();
            println!(
                "{n} iterations, {:.0}/s, {} distinct findings",
                n as f64 / start.elapsed().as_secs_f64(),
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
    target.print_reached();
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

/// The seed a saved input came from: the one whose name, between dashes,
/// is in the file name (the longest, if several are).
pub fn seed_of<'a, S>(path: &Path, seeds: &'a [S], name: impl Fn(&S) -> &str) -> Option<&'a S> {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    seeds
        .iter()
        .filter(|s| stem.contains(&format!("-{}-", name(s))))
        .max_by_key(|s| name(s).len())
}

/// Prints what running one saved input gave ("no finding " and `ok` if
/// nothing misbehaved); exits with status 1 on a finding.
pub fn print_reproduced(r: Result<(), Failure>, ok: impl FnOnce() -> String) {
    match r {
        Ok(()) => println!("no finding {}", ok()),
        Err(f) => {
            println!("{f}");
            std::process::exit(1);
        }
    }
}
