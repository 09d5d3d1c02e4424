//! The results: one row per comparison, printed as a table or as JSON.

use crate::source::Source;
use crate::Config;
use serde::Serialize;

/// One side of a comparison: its timed runs and the work each run did.
#[derive(Debug, Clone, Serialize)]
pub struct Measure {
    /// What was run, e.g. the command line.
    pub what: String,
    /// Seconds of each run, in run order.
    pub runs: Vec<f64>,
    pub median_s: f64,
    /// Work units per run (bytes or writes), for the rate.
    pub work: f64,
    /// `MiB/s` or `writes/s`.
    pub unit: &'static str,
    pub rate: f64,
}

impl Measure {
    pub fn new(what: String, runs: Vec<f64>, work: f64, unit: &'static str) -> Self {
        let median_s = crate::runner::median(&runs);
        let per = if unit == "MiB/s" {
            work / (1u64 << 20) as f64
        } else {
            work
        };
        Measure {
            what,
            runs,
            median_s,
            work,
            unit,
            rate: per / median_s,
        }
    }

    fn cell(&self) -> String {
        let rate = if self.rate >= 100.0 {
            format!("{:.0}", self.rate)
        } else {
            format!("{:.1}", self.rate)
        };
        format!("{:.3} s ({rate} {})", self.median_s, self.unit)
    }
}

/// One comparison.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub name: String,
    pub qemu: Measure,
    pub ours: Measure,
    /// qemu-img's median time over ours: above 1.0 refpoint is faster.
    pub ratio: f64,
    /// The ratio this row is expected to reach, if it has a target.
    pub target: Option<f64>,
    /// What was checked about our output, and the outcome.
    pub verified: String,
}

impl Row {
    pub fn new(
        name: String,
        qemu: Measure,
        ours: Measure,
        target: Option<f64>,
        verified: String,
    ) -> Self {
        let ratio = qemu.median_s / ours.median_s;
        Row {
            name,
            qemu,
            ours,
            ratio,
            target,
            verified,
        }
    }
}

/// Everything a run found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub qemu_img: String,
    pub refpoint: String,
    pub source: Source,
    pub runs_per_side: usize,
    pub alloc_runs_per_side: usize,
    pub cpus: usize,
    pub load_average: String,
    pub rows: Vec<Row>,
    pub notes: Vec<String>,
}

impl Report {
    pub fn new(cfg: &Config, src: &Source, rows: Vec<Row>, qemu_version: &str, load: &str) -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let notes = vec![
            format!(
                "source: {} MiB raw, {:.0}% random data in 64 KiB–16 MiB runs, the rest zeros (written, not holes); seed {}",
                src.size >> 20,
                100.0 * src.data_bytes as f64 / src.size as f64,
                cfg.seed
            ),
            format!(
                "each figure is the median of {} runs ({} for the allocating writes), the sides alternating; source in the page cache",
                cfg.runs, cfg.alloc_runs
            ),
            format!("machine: {cpus} CPUs; load average {load} (other work on the machine moves the figures)"),
            "conversions: process wall time including an fdatasync of the output for both sides \
             (qemu-img convert writes with cache=unsafe and never syncs; refpoint syncs before it exits)"
                .into(),
            "conversions: both write dynamic VHDX with 32 MiB blocks and sparse raw; rate = virtual size / time".into(),
            "allocating writes: qemu-img = process wall time of `qemu-img bench` (open, writes, close with its flush); \
             refpoint = in-process open, writes, flush, close of a file made by vhdx::create"
                .into(),
            "allocating writes: qemu-img bench has no random order, so the random row compares with qemu-img's stepped order".into(),
            "ratio = qemu-img time / refpoint time (above 1.0× refpoint is faster)".into(),
        ];
        Report {
            qemu_img: qemu_version.to_string(),
            refpoint: cfg.refpoint_built.display().to_string(),
            source: src.clone(),
            runs_per_side: cfg.runs,
            alloc_runs_per_side: cfg.alloc_runs,
            cpus,
            load_average: load.to_string(),
            rows,
            notes,
        }
    }

    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let name_w = self
            .rows
            .iter()
            .map(|r| r.name.chars().count())
            .max()
            .unwrap_or(10)
            .max(9);
        let q_w = self
            .rows
            .iter()
            .map(|r| r.qemu.cell().len())
            .max()
            .unwrap_or(10)
            .max(8);
        let o_w = self
            .rows
            .iter()
            .map(|r| r.ours.cell().len())
            .max()
            .unwrap_or(10)
            .max(8);
        s += &format!("\n{} vs refpoint\n\n", self.qemu_img);
        s += &format!(
            "{:<name_w$}  {:<q_w$}  {:<o_w$}  ratio\n",
            "benchmark", "qemu-img", "refpoint"
        );
        for r in &self.rows {
            let mark = match r.target {
                Some(t) if r.ratio >= t => format!("  (target ≥{t}×: met)"),
                Some(t) => format!("  (target ≥{t}×: MISSED)"),
                None => String::new(),
            };
            s += &format!(
                "{:<name_w$}  {:<q_w$}  {:<o_w$}  {:.2}×{mark}\n",
                r.name,
                r.qemu.cell(),
                r.ours.cell(),
                r.ratio
            );
        }
        s += "\nruns:\n";
        for r in &self.rows {
            s += &format!(
                "  {}\n    qemu-img: {}  {}\n    refpoint: {}  {}\n    check: {}\n",
                r.name,
                r.qemu.what,
                fmt_runs(&r.qemu.runs),
                r.ours.what,
                fmt_runs(&r.ours.runs),
                r.verified
            );
        }
        s += "\nnotes:\n";
        for n in &self.notes {
            s += &format!("  - {n}\n");
        }
        s
    }
}

fn fmt_runs(v: &[f64]) -> String {
    let parts: Vec<String> = v.iter().map(|x| format!("{x:.3}")).collect();
    format!("[{} s]", parts.join(", "))
}
