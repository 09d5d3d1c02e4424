//! `tracking`: change-tracking benchmarks (see `bench/src/tracking.rs`).
//!
//! ```text
//! cargo run --release -p refpoint-bench --bin tracking \
//!     [-- --dir /var/tmp --disk-size 4G --total 1G --runs 3 --query-runs 7 --quick]
//! ```

#[path = "../tracking.rs"]
mod tracking;

use anyhow::{bail, Result};
use clap::Parser;
use refpoint_cli::units::parse_size;
use tracking::Options;

/// Change-tracking benchmarks: the write path with tracking off and on,
/// and the changed-range query.
#[derive(Parser)]
struct Args {
    /// Where the work files go (a fresh directory inside it).
    #[arg(long, default_value = "/var/tmp")]
    dir: std::path::PathBuf,
    /// Virtual size of the written disk.
    #[arg(long, value_parser = parse_size, default_value = "4G")]
    disk_size: u64,
    /// Bytes written per run.
    #[arg(long, value_parser = parse_size, default_value = "1G")]
    total: u64,
    /// Runs of each side, tracking off and on; medians.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Runs of the query; median.
    #[arg(long, default_value_t = 7)]
    query_runs: usize,
    /// Smoke run: 256M disk, 64M written, one run each.
    #[arg(long)]
    quick: bool,
}

fn main() -> Result<()> {
    let a = Args::parse();
    let mut o = Options {
        dir: a.dir,
        disk_size: a.disk_size,
        total: a.total,
        runs: a.runs,
        query_runs: a.query_runs,
        ..Options::default()
    };
    if a.quick {
        o.disk_size = 256 << 20;
        o.total = 64 << 20;
        o.runs = 1;
        o.query_runs = 3;
    }
    if o.runs == 0 || o.query_runs == 0 || o.total < 1 << 20 || o.total > o.disk_size {
        bail!("--runs and --query-runs must be at least 1, --total between 1M and --disk-size");
    }
    tracking::run(&o)
}
