//! Benchmark 3: 4 KiB writes that each allocate a new 1 MiB block of a
//! dynamic VHDX, by `qemu-img bench` and in-process through the `vhdx`
//! crate, both ending with the image flushed and closed.

use crate::convert::verify;
use crate::runner::{discard, run, settle};
use crate::table::{Measure, Row};
use crate::Config;
use anyhow::{Context, Result};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;
use storage::LocalFs;
use vhdx::{CreateOptions, DiskType, Vhdx};

const BLOCK: u64 = 1 << 20;
const WRITE: usize = 4096;
/// The byte both sides write (`qemu-img bench --pattern`); not zero, so
/// nothing can skip the writes as zeros.
const PATTERN: u8 = 0xab;

/// One timed configuration.
struct Job {
    name: &'static str,
    path: PathBuf,
    kind: Kind,
    /// Run in the first round only: qemu-img at queue depth 1 takes
    /// minutes, and it is the slower of its two depths anyway.
    once: bool,
    /// Total seconds of each run.
    total: Vec<f64>,
    /// Seconds of the write loop alone (qemu-img's own figure; for us the
    /// writes before the final flush and close).
    inner: Vec<f64>,
}

enum Kind {
    /// `qemu-img bench` with this cache mode and, if given, queue depth.
    Qemu {
        cache: &'static str,
        depth: Option<u32>,
    },
    /// The vhdx crate, writing at these offsets in this order.
    Ours { offsets: Vec<u64> },
}

pub fn run_all(cfg: &Config) -> Result<Vec<crate::table::Row>> {
    let n = cfg.writes;
    let size = n * BLOCK;
    let stepped: Vec<u64> = (0..n).map(|i| i * BLOCK).collect();
    let mut shuffled = stepped.clone();
    shuffled.shuffle(&mut StdRng::seed_from_u64(cfg.seed));
    let job = |name, file: &str, kind| Job {
        name,
        path: cfg.dir.join(file),
        kind,
        once: false,
        total: vec![],
        inner: vec![],
    };
    let mut jobs = vec![
        job(
            "qemu-img -t writeback",
            "q-wb.vhdx",
            Kind::Qemu {
                cache: "writeback",
                depth: None,
            },
        ),
        job(
            "refpoint stepped",
            "r-step.vhdx",
            Kind::Ours { offsets: stepped },
        ),
        job(
            "qemu-img -t writeback -d 1",
            "q-wb-d1.vhdx",
            Kind::Qemu {
                cache: "writeback",
                depth: Some(1),
            },
        ),
        job(
            "refpoint random",
            "r-rand.vhdx",
            Kind::Ours { offsets: shuffled },
        ),
        job(
            "qemu-img -t unsafe",
            "q-unsafe.vhdx",
            Kind::Qemu {
                cache: "unsafe",
                depth: None,
            },
        ),
    ];
    jobs[2].once = true;
    eprintln!("allocating 4 KiB writes ×{n}…");
    for i in 0..cfg.alloc_runs {
        let order: Vec<usize> = if i % 2 == 0 {
            (0..jobs.len()).collect()
        } else {
            (0..jobs.len()).rev().collect()
        };
        for j in order {
            let job = &mut jobs[j];
            if job.once && !job.total.is_empty() {
                continue;
            }
            discard(&job.path)?;
            let (total, inner) = match &job.kind {
                Kind::Qemu { cache, depth } => qemu(cfg, &job.path, size, cache, *depth)?,
                Kind::Ours { offsets } => ours(&job.path, size, offsets)?,
            };
            eprintln!(
                "  {:<28} run {}: {total:.3} s (write loop {inner:.3} s)",
                job.name,
                i + 1
            );
            job.total.push(total);
            job.inner.push(inner);
        }
    }

    let [q_wb, r_step, q_d1, r_rand, q_unsafe] = &jobs[..] else {
        unreachable!()
    };
    let check = |r: &Job| {
        verify(
            cfg,
            &[
                (vec!["check", "-f", "vhdx"], &r.path, None),
                (
                    vec!["compare", "-f", "vhdx", "-F", "vhdx"],
                    &q_wb.path,
                    Some(&r.path),
                ),
            ],
        )
    };
    let (step_ok, rand_ok) = (check(r_step), check(r_rand));
    let m = |j: &Job| {
        let what = match &j.kind {
            Kind::Qemu { cache, depth } => {
                let d = depth.map(|d| format!(" -d {d}")).unwrap_or_default();
                format!("qemu-img bench -w -f vhdx -t {cache}{d} -c {n} -s {WRITE} -S {BLOCK} --pattern {PATTERN}; loop alone (qemu-img's figure) {}", secs(&j.inner))
            }
            Kind::Ours { .. } => format!(
                "{}: vhdx open, {n} writes, flush, close; writes alone {}",
                j.name,
                secs(&j.inner)
            ),
        };
        Measure::new(what, j.total.clone(), n as f64, "writes/s")
    };
    let label = |what: &str| format!("alloc 4K ×{n}, {what}");
    let rows = vec![
        Row::new(
            label("stepped"),
            m(q_wb),
            m(r_step),
            Some(2.0),
            step_ok.clone(),
        ),
        Row::new(
            label("stepped, qemu -d 1 (1 run)"),
            m(q_d1),
            m(r_step),
            Some(2.0),
            step_ok.clone(),
        ),
        Row::new(
            label("random (qemu stepped)"),
            m(q_wb),
            m(r_rand),
            Some(2.0),
            rand_ok,
        ),
        Row::new(
            label("stepped, qemu unsafe"),
            m(q_unsafe),
            m(r_step),
            None,
            step_ok,
        ),
    ];
    for j in &jobs {
        discard(&j.path)?;
    }
    Ok(rows)
}

fn secs(v: &[f64]) -> String {
    format!("median {:.3} s", crate::runner::median(v))
}

/// Creates the image, then times `qemu-img bench` on it. Returns the wall
/// time and the loop time qemu-img reports.
fn qemu(
    cfg: &Config,
    path: &Path,
    size: u64,
    cache: &str,
    depth: Option<u32>,
) -> Result<(f64, f64)> {
    run(Command::new(&cfg.qemu_img)
        .args([
            "create",
            "-q",
            "-f",
            "vhdx",
            "-o",
            "block_size=1M,subformat=dynamic",
        ])
        .arg(path)
        .arg(size.to_string()))?;
    settle()?;
    let mut c = Command::new(&cfg.qemu_img);
    c.args(["bench", "-w", "-f", "vhdx", "-t", cache, "-c"])
        .arg(cfg.writes.to_string())
        .args([
            "-s",
            &WRITE.to_string(),
            "-S",
            &BLOCK.to_string(),
            "--pattern",
            &PATTERN.to_string(),
        ]);
    if let Some(d) = depth {
        c.args(["-d", &d.to_string()]);
    }
    c.arg(path);
    let t = Instant::now();
    let out = run(&mut c)?;
    let total = t.elapsed().as_secs_f64();
    let inner = out
        .lines()
        .find_map(|l| {
            l.strip_prefix("Run completed in ")?
                .strip_suffix(" seconds.")?
                .parse()
                .ok()
        })
        .with_context(|| format!("no \"Run completed in\" line in qemu-img bench output: {out}"))?;
    Ok((total, inner))
}

/// Creates the image with the vhdx crate, then times opening it, writing
/// at `offsets`, and the flush and close that make the writes durable.
fn ours(path: &Path, size: u64, offsets: &[u64]) -> Result<(f64, f64)> {
    let opts = CreateOptions {
        virtual_size: size,
        disk_type: DiskType::Dynamic,
        block_size: BLOCK as u32,
        logical_sector_size: 512,
        physical_sector_size: 4096,
    };
    vhdx::create(&LocalFs, path, &opts)?.close()?;
    settle()?;
    let buf = [PATTERN; WRITE];
    let t = Instant::now();
    let mut v = Vhdx::open(&LocalFs, path, true)?;
    for &o in offsets {
        v.write(o, &buf)?;
    }
    let inner = t.elapsed().as_secs_f64();
    v.flush()?;
    v.close()?;
    Ok((t.elapsed().as_secs_f64(), inner))
}
