//! `refpoint machine | checkpoint | reference | backup | restore | verify`:
//! the backup workflow on machines in the state directory.

use crate::demo::state_dir;
use std::sync::Arc;
use storage::LocalFs;
use vdisk::Store;

/// The machine store of `$REFPOINT_HOME` (or `./refpoint-data`).
pub fn store() -> Store {
    Store::new(Arc::new(LocalFs), &state_dir())
}

/// The daemon of the state directory, if one runs: commands that touch
/// the disks it holds go through its API.
pub fn daemon() -> Option<crate::serve::client::Daemon> {
    crate::serve::client::Daemon::find(&state_dir())
}

/// Parses `--disk [NAME=]PATH`.
pub fn parse_disk_arg(s: &str) -> (Option<String>, std::path::PathBuf) {
    match s.split_once('=') {
        Some((n, p)) if !n.contains('/') => (Some(n.to_string()), p.into()),
        _ => (None, s.into()),
    }
}

/// Seconds since the epoch as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn time(secs: u64) -> String {
    let days = secs / 86400;
    let (h, m, s) = ((secs % 86400) / 3600, (secs % 3600) / 60, secs % 60);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719468;
    let era = z.div_euclid(146097);
    let doe = z.rem_euclid(146097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02}:{s:02} UTC")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(time(1_795_000_000), "2026-11-18 11:06:40 UTC");
        assert_eq!(
            parse_disk_arg("os=/a/b.vhdx"),
            (Some("os".into()), "/a/b.vhdx".into())
        );
        assert_eq!(parse_disk_arg("/a/b=c.vhdx"), (None, "/a/b=c.vhdx".into()));
    }
}
