//! Benchmarks 1 and 2: raw → VHDX and VHDX → raw, as whole processes.

use crate::runner::{discard, run, time_durable, warm};
use crate::source::Source;
use crate::table::{Measure, Row};
use crate::Config;
use anyhow::Result;
use std::path::Path;
use std::process::Command;

/// Both sides write the same layout: dynamic, 32 MiB blocks (refpoint's
/// default; qemu-img would pick a size from the disk size).
const BLOCK: &str = "32M";

pub fn run_all(cfg: &Config, src: &Source) -> Result<Vec<Row>> {
    let mut rows = Vec::new();
    let q_vhdx = cfg.dir.join("q.vhdx");
    let r_vhdx = cfg.dir.join("r.vhdx");
    warm(&src.path)?;
    eprintln!("raw → vhdx…");
    let (qemu, ours) = alternate(
        cfg,
        &q_vhdx,
        &r_vhdx,
        || {
            let mut c = Command::new(&cfg.qemu_img);
            c.args(["convert", "-f", "raw", "-O", "vhdx", "-o"])
                .arg(format!("subformat=dynamic,block_size={BLOCK}"))
                .arg(&src.path)
                .arg(&q_vhdx);
            c
        },
        || refpoint_convert(cfg, &src.path, &r_vhdx, &["--block-size", BLOCK]),
    )?;
    let verified = verify(
        cfg,
        &[
            (
                vec!["compare", "-f", "raw", "-F", "vhdx"],
                &src.path,
                Some(&r_vhdx),
            ),
            (vec!["check", "-f", "vhdx"], &r_vhdx, None),
        ],
    );
    let work = src.size as f64;
    rows.push(Row::new(
        format!("raw→vhdx {}", size_label(src.size)),
        Measure::new(
            format!("qemu-img convert -f raw -O vhdx -o subformat=dynamic,block_size={BLOCK}"),
            qemu,
            work,
            "MiB/s",
        ),
        Measure::new(
            format!("refpoint vhd convert SRC.raw DST.vhdx --block-size {BLOCK}"),
            ours,
            work,
            "MiB/s",
        ),
        Some(1.0),
        verified,
    ));
    discard(&r_vhdx)?;

    // The VHDX qemu-img wrote is the input of both sides.
    let q_raw = cfg.dir.join("q.raw");
    let r_raw = cfg.dir.join("r.raw");
    warm(&q_vhdx)?;
    eprintln!("vhdx → raw…");
    let (qemu, ours) = alternate(
        cfg,
        &q_raw,
        &r_raw,
        || {
            let mut c = Command::new(&cfg.qemu_img);
            c.args(["convert", "-f", "vhdx", "-O", "raw"])
                .arg(&q_vhdx)
                .arg(&q_raw);
            c
        },
        || refpoint_convert(cfg, &q_vhdx, &r_raw, &[]),
    )?;
    let verified = verify(
        cfg,
        &[(
            vec!["compare", "-f", "raw", "-F", "raw"],
            &src.path,
            Some(&r_raw),
        )],
    );
    rows.push(Row::new(
        format!("vhdx→raw {}", size_label(src.size)),
        Measure::new(
            "qemu-img convert -f vhdx -O raw".into(),
            qemu,
            work,
            "MiB/s",
        ),
        Measure::new(
            "refpoint vhd convert SRC.vhdx DST.raw".into(),
            ours,
            work,
            "MiB/s",
        ),
        Some(1.0),
        verified,
    ));
    for p in [&q_raw, &r_raw, &q_vhdx] {
        discard(p)?;
    }
    Ok(rows)
}

fn refpoint_convert(cfg: &Config, src: &Path, dst: &Path, extra: &[&str]) -> Command {
    let mut c = Command::new(&cfg.refpoint);
    c.args(["vhd", "convert"]).arg(src).arg(dst).args(extra);
    c
}

/// Runs both sides `cfg.runs` times, alternating which goes first, each
/// into a fresh output; the outputs of the last run are kept.
fn alternate(
    cfg: &Config,
    q_out: &Path,
    r_out: &Path,
    qemu: impl Fn() -> Command,
    ours: impl Fn() -> Command,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let (mut q, mut r) = (Vec::new(), Vec::new());
    for i in 0..cfg.runs {
        for side in if i % 2 == 0 { [0, 1] } else { [1, 0] } {
            let (cmd, out, times) = if side == 0 {
                (qemu(), q_out, &mut q)
            } else {
                (ours(), r_out, &mut r)
            };
            discard(out)?;
            let mut cmd = cmd;
            let (t, _) = time_durable(&mut cmd, out)?;
            eprintln!(
                "  {:<8} run {}: {t:.3} s",
                if side == 0 { "qemu-img" } else { "refpoint" },
                i + 1
            );
            times.push(t);
        }
    }
    Ok((q, r))
}

/// Runs `qemu-img <args> <a> [<b>]` for each check and says how they went.
pub fn verify(cfg: &Config, checks: &[(Vec<&str>, &Path, Option<&Path>)]) -> String {
    let mut said = Vec::new();
    for (args, a, b) in checks {
        let mut c = Command::new(&cfg.qemu_img);
        c.args(args).arg(a);
        if let Some(b) = b {
            c.arg(b);
        }
        let names: Vec<String> = std::iter::once(*a)
            .chain(*b)
            .map(|p| {
                p.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        let what = format!("qemu-img {} {}", args[0], names.join(" "));
        match run(&mut c) {
            Ok(out) => said.push(format!(
                "{what}: {}",
                out.lines().next().unwrap_or("ok").trim()
            )),
            Err(e) => return format!("FAILED: {what}: {e:#}"),
        }
    }
    said.join("; ")
}

pub fn size_label(n: u64) -> String {
    if n.is_multiple_of(1 << 30) {
        format!("{} GiB", n >> 30)
    } else {
        format!("{} MiB", n >> 20)
    }
}
