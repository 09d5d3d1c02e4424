//! The state directory's machine store and, when it runs, its daemon.

use crate::daemon_client::Daemon;
use machine::home::state_dir;
use machine::Store;

/// The machine store of `$REFPOINT_HOME` (or `./refpoint-data`).
pub fn store() -> Store {
    Store::local(&state_dir())
}

/// The daemon of the state directory, if one runs: commands that touch
/// the disks it holds go through its API.
pub fn daemon() -> Option<Daemon> {
    Daemon::find(&state_dir())
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
    match jiff::Timestamp::from_second(secs as i64) {
        Ok(t) => t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string(),
        Err(_) => format!("{secs} s after the epoch"),
    }
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
