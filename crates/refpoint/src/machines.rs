//! The state directory's machines: through its daemon when one runs (it
//! holds the disks), else over the local store. Either way the commands
//! see one [`api::Machines`], so each is written once.

use api::{Client, Machines};
use machine::home::state_dir;
use machine::Store;

/// The machine store of `$REFPOINT_HOME` (or `./refpoint-data`).
pub fn store() -> Store {
    Store::local(&state_dir())
}

/// The daemon of the state directory, if one answers.
pub fn daemon() -> Option<Client> {
    Client::find(&state_dir())
}

/// The machines: the running daemon's, or the local store's.
pub fn machines() -> Box<dyn Machines> {
    match daemon() {
        Some(c) => Box::new(c),
        None => Box::new(daemon::Service::local(store())),
    }
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
