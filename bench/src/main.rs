//! `refpoint-bench`: refpoint and qemu-img side by side, in one run, on the
//! same data.
//!
//! ```text
//! cargo run --release -p refpoint-bench [-- --size 2G --dir /var/tmp --quick --json]
//! ```
//!
//! 1. raw → VHDX: a generated raw image (random data and zero runs)
//!    converted by `qemu-img convert` and by `refpoint vhd convert`.
//! 2. VHDX → raw: the VHDX qemu-img made, converted back by both.
//! 3. Allocating 4 KiB writes: one write into each new 1 MiB block of a
//!    dynamic VHDX, by `qemu-img bench` and in-process through the `vhdx`
//!    crate.
//!
//! Every figure is the median of several alternating runs, and every output
//! of ours is checked with `qemu-img compare` / `qemu-img check`. The ratio
//! is always qemu-img's time over ours: above 1.0 refpoint is faster.

mod alloc;
mod convert;
mod runner;
mod source;
mod table;

use anyhow::{bail, Context, Result};
use clap::Parser;
use refpoint_cli::units::parse_size;
use std::path::{Path, PathBuf};
use std::process::Command;

#[derive(Parser)]
#[command(
    name = "refpoint-bench",
    about = "Benchmark refpoint against qemu-img on the same data",
    after_help = "Run from the workspace: cargo run --release -p refpoint-bench\n\
The refpoint binary is built first (cargo build --release -p refpoint) unless --refpoint is given."
)]
pub struct Opts {
    /// Size of the raw image for the conversion benchmarks (K/M/G suffixes).
    #[arg(long, value_parser = parse_size)]
    size: Option<u64>,
    /// Allocating writes to time (one per new 1 MiB block).
    #[arg(long)]
    writes: Option<u64>,
    /// Runs of each side of a conversion; the median is reported [default: 5].
    #[arg(long)]
    runs: Option<usize>,
    /// Runs of each side of the allocating-write benchmark [default: 3].
    #[arg(long)]
    alloc_runs: Option<usize>,
    /// Directory for the work files [default: a fresh directory under /var/tmp, removed afterwards].
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Small smoke run: 256 MiB image, 2000 writes, one run each.
    #[arg(long)]
    quick: bool,
    /// Print the results as JSON (progress still goes to stderr).
    #[arg(long)]
    json: bool,
    /// The qemu-img to compare against.
    #[arg(long, default_value = "/usr/bin/qemu-img")]
    qemu_img: PathBuf,
    /// A refpoint binary to use instead of building one.
    #[arg(long)]
    refpoint: Option<PathBuf>,
    /// Seed of the generated image and of the random write order.
    #[arg(long, default_value = "20240601")]
    seed: u64,
}

/// The settings a run uses once defaults and `--quick` are applied.
pub struct Config {
    pub size: u64,
    pub writes: u64,
    pub runs: usize,
    pub alloc_runs: usize,
    pub seed: u64,
    pub dir: PathBuf,
    pub qemu_img: PathBuf,
    /// The copy of the refpoint binary that is run.
    pub refpoint: PathBuf,
    /// Where that copy came from.
    pub refpoint_built: PathBuf,
}

/// Builds the refpoint binary with the cargo that runs us and returns its
/// path, so a single `cargo run` measures the current sources.
fn build_refpoint() -> Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    eprintln!("building refpoint (cargo build --release -p refpoint)…");
    let out = Command::new(cargo)
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "-p",
            "refpoint",
            "--bin",
            "refpoint",
            "--message-format=json-render-diagnostics",
        ])
        .stderr(std::process::Stdio::inherit())
        .output()
        .context("cannot run cargo to build refpoint")?;
    if !out.status.success() {
        bail!("cargo build --release -p refpoint failed");
    }
    let text = String::from_utf8_lossy(&out.stdout);
    for line in text.lines() {
        let Ok(msg) = serde_json::from_str::<serde_json::Value>(line) else {
            continue;
        };
        if msg["reason"] == "compiler-artifact" && msg["target"]["name"] == "refpoint" {
            if let Some(exe) = msg["executable"].as_str() {
                return Ok(PathBuf::from(exe));
            }
        }
    }
    bail!("cargo built refpoint but did not say where the binary is")
}

fn config(o: &Opts, dir: PathBuf) -> Result<Config> {
    let built = match &o.refpoint {
        Some(p) => p.clone(),
        None => build_refpoint()?,
    };
    // Run a copy, so a rebuild of the target directory during the run
    // cannot swap the binary between runs.
    let refpoint = dir.join("refpoint");
    std::fs::copy(&built, &refpoint)
        .with_context(|| format!("cannot copy {} to {}", built.display(), refpoint.display()))?;
    if !o.qemu_img.exists() {
        bail!(
            "{} not found (install qemu-utils or pass --qemu-img)",
            o.qemu_img.display()
        );
    }
    let size = o.size.unwrap_or(if o.quick { 256 << 20 } else { 2 << 30 });
    if size == 0 || !size.is_multiple_of(1 << 20) {
        bail!("--size must be a positive multiple of 1 MiB");
    }
    Ok(Config {
        size,
        writes: o
            .writes
            .unwrap_or(if o.quick { 2000 } else { 20000 })
            .max(1),
        runs: o.runs.unwrap_or(if o.quick { 1 } else { 5 }).max(1),
        alloc_runs: o.alloc_runs.unwrap_or(if o.quick { 1 } else { 3 }).max(1),
        seed: o.seed,
        dir,
        qemu_img: o.qemu_img.clone(),
        refpoint,
        refpoint_built: built,
    })
}

fn main() -> Result<()> {
    let o = Opts::parse();
    if cfg!(debug_assertions) {
        eprintln!("warning: built without --release; the in-process figures of refpoint are not representative");
    }
    // The default directory is on a real disk (/var/tmp), not a tmpfs, so
    // fsyncs cost what they cost in use.
    let temp = match &o.dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            None
        }
        None => Some(
            tempfile::Builder::new()
                .prefix("refpoint-bench-")
                .tempdir_in("/var/tmp")?,
        ),
    };
    let dir = match (&o.dir, &temp) {
        (Some(d), _) => d.clone(),
        (None, Some(t)) => t.path().to_path_buf(),
        (None, None) => unreachable!(),
    };
    let cfg = config(&o, dir)?;
    eprintln!(
        "work dir {}; refpoint {}; {}",
        cfg.dir.display(),
        cfg.refpoint_built.display(),
        runner::version(&cfg.qemu_img)?
    );
    let load_before = runner::loadavg();
    let src = source::prepare(&cfg)?;
    let mut rows = convert::run_all(&cfg, &src)?;
    rows.extend(alloc::run_all(&cfg)?);
    let load = format!(
        "{load_before} at the start, {} at the end",
        runner::loadavg()
    );
    let report = table::Report::new(&cfg, &src, rows, &runner::version(&cfg.qemu_img)?, &load);
    if o.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", report.to_text());
    }
    if report.rows.iter().any(|r| r.verified.starts_with("FAILED")) {
        bail!("an output of refpoint failed its check (see the table)");
    }
    Ok(())
}
