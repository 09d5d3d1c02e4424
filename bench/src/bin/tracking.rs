//! `tracking`: change-tracking benchmarks (see `bench/src/tracking.rs`).
//!
//! ```text
//! cargo run --release -p refpoint-bench --bin tracking \
//!     [-- --dir /var/tmp --disk-size 4G --total 1G --runs 3 --query-runs 7 --quick]
//! ```

#[path = "../tracking.rs"]
mod tracking;

use anyhow::{bail, Context, Result};
use tracking::{parse_size, Options};

const USAGE: &str = "usage: tracking [--dir DIR] [--disk-size SIZE] [--total SIZE] [--runs N] [--query-runs N] [--quick]

  --dir DIR         where the work files go (a fresh directory inside it) [/var/tmp]
  --disk-size SIZE  virtual size of the written disk [4G]
  --total SIZE      bytes written per run [1G]
  --runs N          runs of each side, tracking off and on; medians [3]
  --query-runs N    runs of the query; median [7]
  --quick           smoke run: 256M disk, 64M written, one run each";

fn main() -> Result<()> {
    let mut o = Options::default();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = || args.next().with_context(|| format!("{a} needs a value"));
        match a.as_str() {
            "--dir" => o.dir = value()?.into(),
            "--disk-size" => o.disk_size = parse_size(&value()?)?,
            "--total" => o.total = parse_size(&value()?)?,
            "--runs" => o.runs = value()?.parse().context("--runs")?,
            "--query-runs" => o.query_runs = value()?.parse().context("--query-runs")?,
            "--quick" => {
                o.disk_size = 256 << 20;
                o.total = 64 << 20;
                o.runs = 1;
                o.query_runs = 3;
            }
            "-h" | "--help" => {
                println!("{USAGE}");
                return Ok(());
            }
            other => bail!("unknown argument {other:?}\n{USAGE}"),
        }
    }
    if o.runs == 0 || o.query_runs == 0 || o.total < 1 << 20 || o.total > o.disk_size {
        bail!("--runs and --query-runs must be at least 1, --total between 1M and --disk-size");
    }
    tracking::run(&o)
}
