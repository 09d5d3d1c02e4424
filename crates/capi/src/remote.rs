//! Disks the daemon holds, reached over NBD (data) and the API
//! (tracking, checkpoints): on this host through the state directory's
//! sockets, on another through `refpoint+https://HOST:PORT/…`.

#![forbid(unsafe_code)]

use crate::error::{Failure, Result};
use crate::handle::Handle;
use std::path::Path;
use std::sync::Mutex;

/// How `refpoint+https://` handles authenticate (`refpoint_config_remote`).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub token: Option<String>,
    pub ca_file: Option<String>,
    pub cert_file: Option<String>,
    pub key_file: Option<String>,
}

static SETTINGS: Mutex<Option<Settings>> = Mutex::new(None);

pub fn configure(s: Settings) {
    *SETTINGS.lock().unwrap_or_else(|p| p.into_inner()) = Some(s);
}

pub fn open(what: &str, _rest: &str, _read_only: bool) -> Result<Handle> {
    Err(Failure::unsupported(format!("{what}: remote daemons are not reachable yet")))
}

pub fn through_daemon(
    what: &str,
    _home: &Path,
    _client: api::Client,
    _machine: String,
    _disk: String,
    _checkpoint: Option<u64>,
    _read_only: bool,
) -> Result<Handle> {
    Err(Failure::unsupported(format!("{what}: held by the daemon")))
}
