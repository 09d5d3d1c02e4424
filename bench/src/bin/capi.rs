//! `capi`: reading a whole VHDX through librefpoint from C, against
//! `qemu-img convert` of the same file into qemu's `null-co` driver, both
//! from a cold page cache, in one run.
//!
//! ```text
//! cargo run --release -p refpoint-bench --bin capi \
//!     [-- --size 4G --runs 3 --dir /var/tmp --read-sizes 1M,4M,8M --threads 1,2,4 --quick --keep]
//! ```
//!
//! 1. librefpoint is built (`cargo build --release -p refpoint-capi -p
//!    refpoint-bench`: with the benchmark, so the two builds share their
//!    dependencies),
//!    installed into the work directory by `make -C crates/capi install
//!    NO_BUILD=1`, and `bench/capi/read_disk.c` is compiled against it with
//!    `cc` and `pkg-config --cflags --libs refpoint`, as a vendor would.
//! 2. A raw file of `--size` (4 GiB) of random data is written (its
//!    checksum computed on the way) and converted by `qemu-img convert -O
//!    vhdx -o subformat=dynamic` (qemu's default block size); the raw file
//!    is then removed. Every block of the VHDX is allocated.
//! 3. Each run times every configuration once, the order reversed every
//!    other run: `read_disk` with each read size and thread count (it opens
//!    the file read-only, walks `refpoint_allocation` and reads every
//!    allocated range; see the C file), and `qemu-img convert -n -f vhdx`
//!    to `driver=null-co` with its default settings (`-T writeback`, 8
//!    coroutines), with `-m 16 -W`, and with `-T none` (O_DIRECT) both ways.
//!    Before each: `sync; echo 3 > /proc/sys/vm/drop_caches` (as root;
//!    otherwise the figures are warm and marked so).
//!
//! Every figure is the wall time of the process, median of the runs. Every
//! run of `read_disk` must report all bytes of the disk and the checksum of
//! the raw source. The peer is the fastest qemu-img configuration; the
//! ratio is its time over ours (above 1.0 librefpoint is faster).

use anyhow::{bail, ensure, Context, Result};
use clap::Parser;
use rand::rngs::SmallRng;
use rand::{RngCore, SeedableRng};
use refpoint_cli::units::human;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use refpoint_bench::runner::{loadavg, median, run, settle, version};
use refpoint_bench::setup::{self, build_release, parse_size, WorkDir};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
/// The checksum weighs each 8-byte word by the 64 KiB granule it lies in
/// (as `read_disk.c` does).
const GRANULE: u64 = 64 << 10;
const SRC_PREFIX: &str = "refpoint-capi-bench-";

#[derive(Parser)]
#[command(
    name = "capi",
    about = "Reading a VHDX through librefpoint from C against qemu-img convert to null-co, cold",
    after_help = "Run from the workspace: cargo run --release -p refpoint-bench --bin capi\n\
librefpoint is built first (cargo build --release -p refpoint-capi -p refpoint-bench) unless --lib-dir is given.\n\
Needs qemu-img, make, cc and pkg-config; root to drop the page cache."
)]
struct Opts {
    /// Virtual size of the disk, all of it written with random data (K/M/G) [default: 4G].
    #[arg(long, value_parser = parse_size)]
    size: Option<u64>,
    /// Runs of every configuration; the median is reported [default: 3].
    #[arg(long)]
    runs: Option<usize>,
    /// Sizes of librefpoint's reads to try, comma-separated.
    #[arg(long, value_parser = parse_size, value_delimiter = ',', default_value = "1M,4M,8M")]
    read_sizes: Vec<u64>,
    /// Reader threads to try, comma-separated (each with its own handle).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    threads: Vec<u32>,
    /// With several threads, each takes stripes of this many bytes in turn and reads each front to back.
    #[arg(long, value_parser = parse_size, default_value = "256M")]
    stripe: u64,
    /// Directory for the work files, on a real disk [default: a fresh directory under /var/tmp, removed afterwards].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Directory for the raw source while it is converted [default: /dev/shm if it has room, else the work directory].
    #[arg(long)]
    src_dir: Option<PathBuf>,
    /// A directory holding librefpoint.so and librefpoint.a (e.g. target/release) instead of building it.
    #[arg(long)]
    lib_dir: Option<PathBuf>,
    /// Small smoke run: 256 MiB disk, one run.
    #[arg(long)]
    quick: bool,
    /// Keep the work directory (the installed library, read_disk, the VHDX).
    #[arg(long)]
    keep: bool,
    /// The qemu-img to compare against.
    #[arg(long, default_value = "/usr/bin/qemu-img")]
    qemu_img: PathBuf,
    /// Seed of the random data.
    #[arg(long, default_value = "20240601")]
    seed: u64,
}

/// One way of reading the whole disk.
#[derive(Clone, Debug, PartialEq)]
enum Config {
    /// `qemu-img convert` to null-co with these extra arguments.
    Qemu { args: Vec<&'static str> },
    /// `read_disk` through librefpoint.
    Ours {
        read: u64,
        threads: u32,
        stripe: u64,
    },
}

impl Config {
    fn label(&self) -> String {
        match self {
            Config::Qemu { args } => {
                // Every setting named, the defaults too.
                let after = |flag: &str| {
                    args.iter()
                        .position(|a| *a == flag)
                        .and_then(|i| args.get(i + 1))
                };
                format!(
                    "qemu-img convert -T {} -m {}{}",
                    after("-T").unwrap_or(&"writeback"),
                    after("-m").unwrap_or(&"8"),
                    if args.contains(&"-W") { " -W" } else { "" }
                )
            }
            Config::Ours {
                read,
                threads,
                stripe,
            } => {
                let t = if *threads == 1 {
                    "1 thread".to_string()
                } else {
                    format!("{threads} threads, {} stripes", size(*stripe))
                };
                format!("librefpoint {} reads, {t}", size(*read))
            }
        }
    }
}

/// `1 MiB`, `256 MiB`; other sizes as [`human`] writes them.
fn size(n: u64) -> String {
    if n.is_multiple_of(MIB) {
        format!("{} MiB", n / MIB)
    } else {
        human(n)
    }
}

/// One timed run.
#[derive(Clone, Copy)]
struct Sample {
    secs: f64,
    /// `read_disk`'s own account: seconds in `refpoint_read` and in the
    /// checksum, summed over its threads.
    read_secs: f64,
    sum_secs: f64,
}

struct Bench {
    qemu_img: PathBuf,
    read_disk: PathBuf,
    disk: PathBuf,
    size: u64,
    checksum: u64,
    cold: bool,
}

fn main() -> Result<()> {
    let o = Opts::parse();
    if cfg!(debug_assertions) {
        eprintln!("warning: the benchmark is built without --release (it only drives the programs; librefpoint is a release build)");
    }
    let size = o.size.unwrap_or(if o.quick { 256 * MIB } else { 4 * GIB });
    let runs = o.runs.unwrap_or(if o.quick { 1 } else { 3 });
    ensure!(
        size >= 16 * MIB && size.is_multiple_of(MIB),
        "--size must be a multiple of 1M, at least 16M"
    );
    ensure!(runs >= 1, "--runs must be at least 1");
    ensure!(
        !o.read_sizes.is_empty()
            && o.read_sizes
                .iter()
                .all(|&r| r >= GRANULE && r.is_multiple_of(GRANULE) && r <= 1 << 30),
        "--read-sizes must be multiples of 64K up to 1G"
    );
    ensure!(
        !o.threads.is_empty() && o.threads.iter().all(|&t| (1..=16).contains(&t)),
        "--threads must be from 1 to 16"
    );
    ensure!(
        o.qemu_img.exists(),
        "qemu-img not found at {}",
        o.qemu_img.display()
    );

    let lib_dir = match &o.lib_dir {
        Some(d) => d.clone(),
        // With the benchmark: see build_release.
        None => build_release(&["refpoint-capi", "refpoint-bench"])?,
    };
    let work = WorkDir::new(o.dir.as_deref(), "refpoint-capi-bench.")?;
    let dir = work.path().to_path_buf();
    let fs = setup::fs_type(&dir)?;
    if fs == "tmpfs" {
        eprintln!(
            "warning: {} is on a tmpfs: nothing is read from a disk there; give --dir on a disk",
            dir.display()
        );
    }

    // 1. The library as a vendor installs it, and the C reader.
    eprintln!("installing librefpoint from {}…", lib_dir.display());
    let prefix = dir.join("prefix");
    let capi = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../crates/capi"));
    run(Command::new("make")
        .arg("-s")
        .arg("-C")
        .arg(capi)
        .arg("install")
        .arg("NO_BUILD=1")
        .arg(format!("BUILD_DIR={}", lib_dir.display()))
        .arg(format!("PREFIX={}", prefix.display())))?;
    let read_disk = dir.join("read_disk");
    let cflags = compile(&prefix, &read_disk)?;

    // 2. The disk.
    let src_guard = setup::random_source(o.src_dir.as_deref(), &dir, SRC_PREFIX, size);
    let src = src_guard.0.clone();
    eprintln!(
        "writing {} of random data to {}…",
        human(size),
        src.display()
    );
    let checksum = write_random(&src, size, o.seed)?;
    let disk = dir.join("disk.vhdx");
    eprintln!("qemu-img convert -O vhdx -o subformat=dynamic…");
    run(Command::new(&o.qemu_img)
        .args([
            "convert",
            "-q",
            "-f",
            "raw",
            "-O",
            "vhdx",
            "-o",
            "subformat=dynamic",
        ])
        .arg(&src)
        .arg(&disk))?;
    drop(src_guard);
    let info: serde_json::Value = serde_json::from_str(&run(Command::new(&o.qemu_img)
        .args(["info", "--output=json", "-f", "vhdx"])
        .arg(&disk))?)
    .context("qemu-img info printed no JSON")?;
    let block_size = info["cluster-size"].as_u64().unwrap_or(0);
    let file_size = std::fs::metadata(&disk)?.len();
    settle()?;

    let cold = drop_caches().is_ok();
    if !cold {
        eprintln!(
            "warning: cannot write /proc/sys/vm/drop_caches (not root): every figure is WARM"
        );
    }
    let b = Bench {
        qemu_img: o.qemu_img.clone(),
        read_disk,
        disk,
        size,
        checksum,
        cold,
    };

    let mut configs: Vec<Config> = [
        vec![],
        vec!["-m", "16", "-W"],
        vec!["-T", "none"],
        vec!["-T", "none", "-m", "16", "-W"],
    ]
    .into_iter()
    .map(|args| Config::Qemu { args })
    .collect();
    for &threads in &o.threads {
        for &read in &o.read_sizes {
            configs.push(Config::Ours {
                read,
                threads,
                // One thread reads everything front to back.
                stripe: if threads == 1 {
                    read
                } else {
                    o.stripe.div_ceil(read).max(1) * read
                },
            });
        }
    }

    let qv = version(&o.qemu_img)?;
    eprintln!(
        "work dir {} ({fs}); {qv}; {} configurations × {runs} run(s)",
        dir.display(),
        configs.len()
    );
    let load_before = loadavg();
    let t = Instant::now();
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); configs.len()];
    for r in 0..runs {
        let mut order: Vec<usize> = (0..configs.len()).collect();
        if r % 2 == 1 {
            order.reverse();
        }
        for i in order {
            eprintln!("run {}/{runs}: {}…", r + 1, configs[i].label());
            let s = b.time(&configs[i])?;
            samples[i].push(s);
        }
    }
    let elapsed = t.elapsed().as_secs_f64();
    let load = format!("{load_before} at the start, {} at the end", loadavg());

    print!(
        "{}",
        b.report(&Report {
            configs: &configs,
            samples: &samples,
            runs,
            qemu_version: &qv,
            block_size,
            file_size,
            cflags: &cflags,
            lib_dir: &lib_dir,
            fs: &fs,
            load: &load,
            elapsed,
        })
    );

    if o.keep {
        work.keep();
    }
    Ok(())
}

/// Compiles `read_disk.c` against the library installed under `prefix`,
/// through pkg-config; returns the compiler command line.
fn compile(prefix: &Path, out: &Path) -> Result<String> {
    let pc = |arg: &str| -> Result<Vec<String>> {
        Ok(run(Command::new("pkg-config")
            .arg(arg)
            .arg("refpoint")
            .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig")))?
        .split_whitespace()
        .map(String::from)
        .collect())
    };
    let src = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/capi/read_disk.c"));
    let mut cc = Command::new("cc");
    cc.args(["-std=gnu11", "-O3", "-Wall", "-Wextra", "-Werror"])
        .args(pc("--cflags")?)
        .arg(src)
        .arg("-o")
        .arg(out)
        .args(pc("--libs")?)
        // DT_RPATH, so the program runs the library just installed.
        .arg(format!(
            "-Wl,--disable-new-dtags,-rpath,{}",
            prefix.join("lib").display()
        ))
        .arg("-lpthread");
    let line = format!("{cc:?}").replace('"', "");
    run(&mut cc)?;
    let ldd = run(Command::new("ldd").arg(out))?;
    let lib = prefix.join("lib/librefpoint.so.1");
    ensure!(
        ldd.lines()
            .any(|l| l.contains("librefpoint.so.1") && l.contains(&*lib.to_string_lossy())),
        "{} does not load {}:\n{ldd}",
        out.display(),
        lib.display()
    );
    Ok(line)
}

impl Bench {
    /// Empties the page cache (if it can), then runs `config` once.
    fn time(&self, config: &Config) -> Result<Sample> {
        if self.cold {
            drop_caches()?;
        } else {
            settle()?;
        }
        let mut cmd = match config {
            Config::Qemu { args } => {
                let mut c = Command::new(&self.qemu_img);
                c.args(["convert", "-n", "-f", "vhdx"])
                    .args(args)
                    .arg(&self.disk)
                    .arg("--target-image-opts")
                    .arg(format!("driver=null-co,size={}", self.size));
                c
            }
            Config::Ours {
                read,
                threads,
                stripe,
            } => {
                let mut c = Command::new(&self.read_disk);
                c.arg(&self.disk)
                    .arg(read.to_string())
                    .arg(stripe.to_string())
                    .arg(threads.to_string());
                c
            }
        };
        let t = Instant::now();
        let out = run(&mut cmd)?;
        let secs = t.elapsed().as_secs_f64();
        let mut s = Sample {
            secs,
            read_secs: f64::NAN,
            sum_secs: f64::NAN,
        };
        if let Config::Ours { .. } = config {
            let field = |k: &str| -> Result<&str> {
                out.lines()
                    .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
                    .with_context(|| format!("read_disk printed no {k}=: {out}"))
            };
            let bytes: u64 = field("bytes")?.parse()?;
            let sum: u64 = field("checksum")?.parse()?;
            ensure!(
                bytes == self.size,
                "read_disk read {bytes} bytes of the {}-byte disk, all of which was written",
                self.size
            );
            if sum != self.checksum {
                bail!(
                    "read_disk's checksum {sum:#018x} is not the raw source's {:#018x}",
                    self.checksum
                );
            }
            s.read_secs = field("read_seconds")?.parse()?;
            s.sum_secs = field("sum_seconds")?.parse()?;
        }
        Ok(s)
    }

    fn report(&self, r: &Report) -> String {
        let rows: Vec<Row> = r
            .configs
            .iter()
            .zip(r.samples)
            .map(|(c, v)| Row {
                label: c.label(),
                ours: matches!(c, Config::Ours { .. }),
                secs: median(&v.iter().map(|s| s.secs).collect::<Vec<_>>()),
                runs: v.clone(),
            })
            .collect();
        let best = |ours: bool| {
            rows.iter()
                .enumerate()
                .filter(|(_, x)| x.ours == ours)
                .min_by(|a, b| a.1.secs.total_cmp(&b.1.secs))
                .map(|(i, _)| i)
                .expect("both sides have configurations")
        };
        let (peer, ours) = (best(false), best(true));
        let rate = |secs: f64| self.size as f64 / MIB as f64 / secs;
        let state = if self.cold { "cold" } else { "WARM" };

        let mut s = String::new();
        s += &format!(
            "\nlibrefpoint (C, read_disk) vs qemu-img convert → null-co: reading a {} dynamic VHDX, {state}, {} run(s) each, medians\n\n",
            human(self.size),
            r.runs
        );
        let w = rows
            .iter()
            .map(|x| x.label.chars().count())
            .max()
            .unwrap_or(0)
            + 7;
        s += &format!(
            "{:<w$}  {:>8}  {:>11}  {:>11}\n",
            "configuration", "median", "throughput", "ours/peer"
        );
        for (i, x) in rows.iter().enumerate() {
            let mark = match i {
                _ if i == peer => " [peer]",
                _ if i == ours => " [best]",
                _ => "",
            };
            let ratio = if x.ours {
                format!("{:.2}×", rows[peer].secs / x.secs)
            } else {
                String::new()
            };
            s += &format!(
                "{:<w$}  {:>6.2} s  {:>6.0} MiB/s  {:>11}\n",
                format!("{}{mark}", x.label),
                x.secs,
                rate(x.secs),
                ratio
            );
        }
        let ratio = rows[peer].secs / rows[ours].secs;
        s += &format!(
            "\nratio ours/peer (throughput, >1 means librefpoint is faster): {ratio:.2}× — {} against {} (target ≥ 1.0×: {})\n",
            rows[ours].label,
            rows[peer].label,
            if ratio >= 1.0 { "met" } else { "MISSED" }
        );

        s += "\nruns (wall seconds; for read_disk also its seconds in refpoint_read and in the checksum, summed over its threads, medians):\n";
        for x in &rows {
            let runs: Vec<String> = x.runs.iter().map(|v| format!("{:.2}", v.secs)).collect();
            let inner = if x.ours {
                let m = |f: fn(&Sample) -> f64| median(&x.runs.iter().map(f).collect::<Vec<_>>());
                format!(
                    "; read {:.2} s, checksum {:.2} s",
                    m(|v| v.read_secs),
                    m(|v| v.sum_secs)
                )
            } else {
                String::new()
            };
            s += &format!("  {:<w$} [{}]{inner}\n", x.label, runs.join(", "));
        }

        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let notes = [
            format!("peer: {}", r.qemu_version),
            format!(
                "disk: {} of random data written to a raw file, converted by qemu-img convert -O vhdx -o subformat=dynamic ({} blocks, qemu's default for the size; file {}), in {} ({})",
                human(self.size),
                human(r.block_size),
                human(r.file_size),
                self.disk.parent().unwrap_or(Path::new("")).display(),
                r.fs
            ),
            format!(
                "qemu-img: convert -n -f vhdx SRC --target-image-opts driver=null-co,size={}; -T is the source cache mode (writeback is its default: the page cache; none: O_DIRECT), -m the coroutines in flight (default 8, at most 16), -W out-of-order writes",
                self.size
            ),
            format!(
                "librefpoint: {} from {}, installed by make -C crates/capi install NO_BUILD=1; read_disk compiled by {}",
                "librefpoint.so.1",
                r.lib_dir.display(),
                r.cflags
            ),
            "read_disk: refpoint_open(path, NULL, REFPOINT_OPEN_READ_ONLY) per thread, the allocation map by refpoint_allocation, every allocated byte read by refpoint_read and checksummed (each 8-byte word weighted by its 64 KiB granule); every run's byte count and checksum equal the raw source's, computed by this benchmark".into(),
            format!(
                "before every run: sync; {}",
                if self.cold {
                    "echo 3 > /proc/sys/vm/drop_caches (cold)"
                } else {
                    "the page cache could not be dropped (not root): WARM figures, the image is read from memory"
                }
            ),
            "configurations in a fixed order, reversed every other run".into(),
            format!(
                "machine: {cpus} CPUs; load average {}; the whole run took {:.0} s",
                r.load, r.elapsed
            ),
            "ratio = peer's median time / ours = our throughput / the peer's; peer = the fastest qemu-img configuration, ours = the fastest librefpoint one".into(),
        ];
        s += "\nnotes:\n";
        for n in notes {
            s += &format!("  - {n}\n");
        }
        s
    }
}

struct Report<'a> {
    configs: &'a [Config],
    samples: &'a [Vec<Sample>],
    runs: usize,
    qemu_version: &'a str,
    block_size: u64,
    file_size: u64,
    cflags: &'a str,
    lib_dir: &'a Path,
    fs: &'a str,
    load: &'a str,
    elapsed: f64,
}

struct Row {
    label: String,
    ours: bool,
    secs: f64,
    runs: Vec<Sample>,
}

/// `sync; echo 3 > /proc/sys/vm/drop_caches`: clean pages, dentries and
/// inodes leave the cache.
fn drop_caches() -> Result<()> {
    settle()?;
    std::fs::write("/proc/sys/vm/drop_caches", "3").context("writing /proc/sys/vm/drop_caches")
}

/// Writes `size` bytes of random data to `path`; returns their checksum.
fn write_random(path: &Path, size: u64, seed: u64) -> Result<u64> {
    let f = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut w = BufWriter::with_capacity(8 << 20, f);
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut buf = vec![0u8; MIB as usize];
    let mut sum = 0u64;
    for i in 0..size / MIB {
        rng.fill_bytes(&mut buf);
        sum = sum.wrapping_add(checksum(&buf, i * MIB));
        w.write_all(&buf)?;
    }
    w.into_inner()?.sync_all()?;
    Ok(sum)
}

/// The checksum of `buf` read at disk offset `offset` (a multiple of the
/// granule): the sum of its little-endian 8-byte words, each times
/// `2 × (its offset / 64 KiB) + 1`, modulo 2^64 — the one `read_disk.c`
/// prints. Sums of pieces add up to the sum of the whole.
fn checksum(buf: &[u8], offset: u64) -> u64 {
    debug_assert!(offset.is_multiple_of(GRANULE));
    buf.chunks(GRANULE as usize)
        .enumerate()
        .fold(0u64, |total, (i, g)| {
            let s = g.chunks_exact(8).fold(0u64, |s, w| {
                s.wrapping_add(u64::from_le_bytes(w.try_into().expect("8 bytes")))
            });
            let granule = offset / GRANULE + i as u64;
            total.wrapping_add(s.wrapping_mul(2 * granule + 1))
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_of_pieces_adds_up_and_depends_on_position() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut buf = vec![0u8; 4 * GRANULE as usize];
        rng.fill_bytes(&mut buf);
        let whole = checksum(&buf, 0);
        let g = GRANULE as usize;
        let parts = checksum(&buf[..g], 0)
            .wrapping_add(checksum(&buf[g..3 * g], GRANULE))
            .wrapping_add(checksum(&buf[3 * g..], 3 * GRANULE));
        assert_eq!(whole, parts);
        // The same bytes one granule further read differently.
        assert_ne!(whole, checksum(&buf, GRANULE));
        // One word: 1 × (2 × 2 + 1).
        let mut one = vec![0u8; g];
        one[0] = 1;
        assert_eq!(checksum(&one, 2 * GRANULE), 5);
    }
}
