//! The state directory: machine files, and the daemon's sockets and token.

use std::path::PathBuf;

/// Environment variable naming the state directory.
pub const HOME_VAR: &str = "REFPOINT_HOME";

/// The state directory: `$REFPOINT_HOME`, else `./refpoint-data`.
pub fn state_dir() -> PathBuf {
    std::env::var_os(HOME_VAR)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("refpoint-data"))
}
