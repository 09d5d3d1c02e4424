//! The raw image both converters start from: runs of random data and runs
//! of zeros, as a used disk has, from a fixed seed so every run (and every
//! machine) converts the same bytes.

use crate::Config;
use anyhow::{Context, Result};
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use serde::Serialize;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::PathBuf;

/// Share of runs that hold data; the rest are zeros.
const DATA_SHARE: f64 = 0.6;
/// Runs are 64 KiB to 16 MiB long, in 64 KiB steps.
const GRANULE: u64 = 64 << 10;
const MAX_RUN_GRANULES: u64 = 256;

/// The generated image.
#[derive(Debug, Clone, Serialize)]
pub struct Source {
    pub path: PathBuf,
    pub size: u64,
    pub data_bytes: u64,
}

/// Writes the image unless the same one (size and seed) is already there.
/// The zero runs are written as zeros, not left as holes, so both sides
/// have to find them by reading.
pub fn prepare(cfg: &Config) -> Result<Source> {
    let path = cfg.dir.join("src.raw");
    let stamp = cfg.dir.join("src.raw.stamp");
    let want = format!("{} {} {}", cfg.size, cfg.seed, DATA_SHARE);
    let data_bytes = plan(cfg.size, cfg.seed)
        .iter()
        .filter(|r| r.1)
        .map(|r| r.0)
        .sum();
    let reuse = std::fs::read_to_string(&stamp).is_ok_and(|s| s == want)
        && std::fs::metadata(&path).is_ok_and(|m| m.len() == cfg.size);
    if !reuse {
        eprintln!("generating {} ({} MiB)…", path.display(), cfg.size >> 20);
        let _ = std::fs::remove_file(&stamp);
        write(&path, cfg.size, cfg.seed)?;
        std::fs::write(&stamp, &want)?;
    }
    Ok(Source {
        path,
        size: cfg.size,
        data_bytes,
    })
}

/// The runs of the image: (length, holds data).
fn plan(size: u64, seed: u64) -> Vec<(u64, bool)> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut runs = Vec::new();
    let mut pos = 0;
    while pos < size {
        let len = (rng.gen_range(1..=MAX_RUN_GRANULES) * GRANULE).min(size - pos);
        runs.push((len, rng.gen_bool(DATA_SHARE)));
        pos += len;
    }
    runs
}

fn write(path: &PathBuf, size: u64, seed: u64) -> Result<()> {
    let f = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut w = BufWriter::with_capacity(8 << 20, f);
    let mut rng = SmallRng::seed_from_u64(seed ^ 0x5eed);
    let mut buf = vec![0u8; GRANULE as usize];
    let zeros = vec![0u8; GRANULE as usize];
    for (len, data) in plan(size, seed) {
        for _ in 0..len / GRANULE {
            if data {
                rng.fill_bytes(&mut buf);
                w.write_all(&buf)?;
            } else {
                w.write_all(&zeros)?;
            }
        }
    }
    w.into_inner()?.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_covers_the_size_with_the_intended_mix() {
        let size = 2u64 << 30;
        let runs = plan(size, 7);
        assert_eq!(runs.iter().map(|r| r.0).sum::<u64>(), size);
        let data: u64 = runs.iter().filter(|r| r.1).map(|r| r.0).sum();
        let share = data as f64 / size as f64;
        assert!((0.5..0.7).contains(&share), "data share {share}");
        assert_eq!(plan(size, 7), runs, "the plan is deterministic");
    }
}
