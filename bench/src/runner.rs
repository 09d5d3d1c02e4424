//! Running and timing the two sides the same way.

use anyhow::{bail, Context, Result};
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

/// Runs `cmd` to completion and returns its standard output; fails with
/// its standard error if it exits non-zero.
pub fn run(cmd: &mut Command) -> Result<String> {
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Wall time of `cmd` plus an fdatasync of `output`, and its stdout.
///
/// qemu-img convert opens its destination with cache=unsafe and never
/// flushes it, while refpoint makes its output durable before it exits.
/// Syncing the output inside the timed span of both sides makes both pay
/// for getting the data to the disk (the second sync of an already durable
/// file costs next to nothing).
pub fn time_durable(cmd: &mut Command, output: &Path) -> Result<(f64, String)> {
    let t = Instant::now();
    let stdout = run(cmd)?;
    File::open(output)
        .and_then(|f| f.sync_data())
        .with_context(|| format!("cannot sync {}", output.display()))?;
    Ok((t.elapsed().as_secs_f64(), stdout))
}

/// Removes `path` if it exists and lets the file system settle, so the
/// next run does not pay for this one's deferred work.
pub fn discard(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot remove {}", path.display())),
    }
    settle()
}

/// `sync(1)`: writes back everything dirty, outside the timed spans.
pub fn settle() -> Result<()> {
    run(&mut Command::new("sync"))?;
    Ok(())
}

/// Reads `path` once so the runs that follow start from the page cache.
pub fn warm(path: &Path) -> Result<()> {
    let mut f = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut buf = vec![0u8; 8 << 20];
    while f.read(&mut buf)? > 0 {}
    Ok(())
}

/// The first line of `qemu-img --version`.
pub fn version(qemu_img: &Path) -> Result<String> {
    let v = run(Command::new(qemu_img).arg("--version"))?;
    Ok(v.lines().next().unwrap_or("qemu-img").to_string())
}

/// The 1, 5 and 15 minute load averages, to tell a quiet machine from a
/// busy one when reading the figures.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The median of `v` (the mean of the middle two for an even count).
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
    }
}
