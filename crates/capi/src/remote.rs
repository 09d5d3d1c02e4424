//! Disks a daemon holds, reached over NBD (data) and the API (tracking,
//! checkpoints): on this host through the state directory's sockets, on
//! another through `refpoint+https://HOST:PORT/MACHINE/DISK`, where
//! HOST:PORT is the daemon's `--api-listen` and its status names the NBD
//! port (`--listen`, TLS).

#![forbid(unsafe_code)]

use crate::error::*;
use crate::handle::{untracked, Control, Data, Extent, Handle};
use crate::open::split_checkpoint;
use crate::open::REMOTE_SCHEME as REMOTE_PREFIX;
use crate::registry::View;
use api::DiskInfo;
use nbd::client::{Client as Nbd, Error as NbdError, Options};
use nbd::proto::*;
use nbd::rustls::pki_types::ServerName;
use std::path::Path;
use std::sync::Mutex;

/// How `refpoint+https://` handles authenticate (`refpoint_config_remote`);
/// what is unset comes from the environment.
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

fn setting(pick: impl Fn(&Settings) -> Option<String>, var: &str) -> Option<String> {
    let set = SETTINGS.lock().unwrap_or_else(|p| p.into_inner());
    set.as_ref()
        .and_then(pick)
        .or_else(|| std::env::var(var).ok().filter(|v| !v.is_empty()))
}

/// A machine disk (or its checkpoint view) of the daemon answering on
/// `home`'s sockets.
pub fn through_daemon(
    what: &str,
    home: &Path,
    client: api::Client,
    machine: String,
    disk: String,
    checkpoint: Option<u64>,
    read_only: bool,
) -> Result<Handle> {
    let export = export_name(&machine, &disk, checkpoint);
    let nbd = match Nbd::connect_unix(daemon::nbd_socket(home), &Options::new(export)) {
        Ok(c) => c,
        Err(e) => return Err(classify(e, &client, &machine, &disk)),
    };
    let place = home.display().to_string();
    Ok(over_nbd(
        what, place, nbd, client, machine, disk, checkpoint, read_only,
    ))
}

/// The NBD server refuses every export it cannot open alike
/// (`NBD_REP_ERR_UNKNOWN`); the API tells why (no such disk, not open in
/// the daemon because another process holds it, …).
fn classify(e: NbdError, client: &api::Client, machine: &str, disk: &str) -> Failure {
    if e.refusal() == Some(NBD_REP_ERR_UNKNOWN) {
        if let Err(why) = client.disk_info(machine, disk) {
            return why.into();
        }
    }
    nbd_failure(e)
}

/// `refpoint+https://HOST:PORT/MACHINE/DISK[@checkpoint-N]` (`rest` is
/// what follows the scheme).
pub fn open(what: &str, rest: &str, read_only: bool) -> Result<Handle> {
    let bad = || {
        Failure::invalid(format!(
            "{what}: give refpoint+https://HOST:PORT/MACHINE/DISK (HOST:PORT is the daemon's --api-listen)"
        ))
    };
    let (addr, path) = rest.split_once('/').ok_or_else(bad)?;
    let (base, checkpoint) = split_checkpoint(path)?;
    let (machine, disk) = base.split_once('/').ok_or_else(bad)?;
    if machine.is_empty() || disk.is_empty() || disk.contains('/') {
        return Err(bad());
    }
    let host = host_of(addr).ok_or_else(bad)?;

    let token = setting(|s| s.token.clone(), "REFPOINT_TOKEN").ok_or_else(|| {
        Failure::new(
            REFPOINT_E_AUTH,
            format!("{what}: no API token; set REFPOINT_TOKEN or call refpoint_config_remote"),
        )
    })?;
    let ca_file = setting(|s| s.ca_file.clone(), "REFPOINT_CA").ok_or_else(|| {
        Failure::invalid(format!(
            "{what}: no CA to trust the daemon by; set REFPOINT_CA to its PEM file or call refpoint_config_remote"
        ))
    })?;
    let identity = match (
        setting(|s| s.cert_file.clone(), "REFPOINT_CERT"),
        setting(|s| s.key_file.clone(), "REFPOINT_KEY"),
    ) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        _ => return Err(Failure::invalid(
            "give both a client certificate and its key (REFPOINT_CERT, REFPOINT_KEY), or neither",
        )),
    };
    let read = |p: &str, what_file: &str| {
        std::fs::read(p).map_err(|e| {
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                REFPOINT_E_NOT_FOUND
            } else {
                REFPOINT_E_IO
            };
            Failure::new(code, format!("reading the {what_file} {p}: {e}"))
        })
    };
    let ca_pem = read(&ca_file, "CA file")?;
    let client = match &identity {
        None => api::Client::https(addr, host, &ca_pem, &token)?,
        Some((c, k)) => {
            let (cert, key) = (read(c, "client certificate")?, read(k, "client key")?);
            api::Client::https_with_client_cert(addr, host, &ca_pem, &token, &cert, &key)?
        }
    };
    let port = client.status()?.nbd_port.ok_or_else(|| {
        Failure::unsupported(format!(
            "{what}: the daemon serves NBD on its socket only; start it with --listen ADDR:PORT"
        ))
    })?;

    let cert = identity
        .as_ref()
        .map(|(c, k)| (Path::new(c.as_str()), Path::new(k.as_str())));
    let config = nbd::tls::client_config(Path::new(&ca_file), cert)
        .map_err(|e| Failure::new(REFPOINT_E_AUTH, format!("{what}: TLS set-up: {e}")))?;
    let name = ServerName::try_from(host.to_string())
        .map_err(|e| Failure::invalid(format!("{what}: {host} is no TLS server name: {e}")))?;
    let options = Options::new(export_name(machine, disk, checkpoint)).tls(config, name);
    let nbd = match Nbd::connect_tcp((host, port), &options) {
        Ok(c) => c,
        Err(e) => return Err(classify(e, &client, machine, disk)),
    };
    Ok(over_nbd(
        what,
        format!("{REMOTE_PREFIX}{addr}"),
        nbd,
        client,
        machine.into(),
        disk.into(),
        checkpoint,
        read_only,
    ))
}

/// The host of `HOST:PORT` or `[V6]:PORT`.
fn host_of(addr: &str) -> Option<&str> {
    let (host, port) = addr.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then_some(host)
}

fn export_name(machine: &str, disk: &str, checkpoint: Option<u64>) -> String {
    match checkpoint {
        Some(id) => format!("{machine}/{disk}@checkpoint-{id}"),
        None => format!("{machine}/{disk}"),
    }
}

#[allow(clippy::too_many_arguments)] // one place builds both kinds
fn over_nbd(
    what: &str,
    place: String,
    nbd: Nbd,
    client: api::Client,
    machine: String,
    disk: String,
    checkpoint: Option<u64>,
    read_only: bool,
) -> Handle {
    let machines = Box::new(client);
    Handle {
        name: what.to_string(),
        view: checkpoint.map(|id| View::open(&place, &machine, id)),
        place,
        read_only,
        size: nbd.size(),
        data: Data::Nbd(Box::new(nbd)),
        control: match checkpoint {
            Some(checkpoint) => Control::Frozen {
                machines,
                machine,
                disk,
                checkpoint,
            },
            None => Control::Machine {
                machines,
                machine,
                disk,
            },
        },
    }
}

// --- the data path -------------------------------------------------------

pub fn read(c: &mut Nbd, offset: u64, buf: &mut [u8]) -> Result<()> {
    c.read(offset, buf).map_err(nbd_failure)
}

pub fn write(c: &mut Nbd, offset: u64, data: &[u8]) -> Result<()> {
    c.write(offset, data).map_err(nbd_failure)
}

pub fn zero(c: &mut Nbd, offset: u64, len: u64) -> Result<()> {
    c.write_zeroes(offset, len, true).map_err(nbd_failure)
}

pub fn flush(c: &mut Nbd, read_only: bool) -> Result<()> {
    if read_only || c.flags().read_only() || !c.flags().can_flush() {
        return Ok(());
    }
    c.flush().map_err(nbd_failure)
}

/// Ranges known to read as zeros are unallocated; without
/// `base:allocation` everything may hold data.
pub fn allocation(c: &mut Nbd, offset: u64, len: u64) -> Result<Vec<Extent>> {
    if len == 0 {
        return Ok(vec![]);
    }
    if !c.has_base_allocation() {
        return Ok(vec![Extent {
            offset,
            length: len,
            allocated: true,
        }]);
    }
    Ok(c.block_status(offset, len)
        .map_err(nbd_failure)?
        .into_iter()
        .map(|e| Extent {
            offset: e.offset,
            length: e.length,
            allocated: !e.zero,
        })
        .collect())
}

/// A checkpoint's frozen view in a daemon: its size and the live disk's
/// geometry; its chain and identity are not told over the API (0, "").
pub fn frozen_info(c: &Nbd, live: DiskInfo, name: &str) -> DiskInfo {
    DiskInfo {
        disk: name.to_string(),
        virtual_size: c.size(),
        chain_depth: 0,
        identity: String::new(),
        tracking: untracked(name),
        ..live
    }
}

/// NBD errors as codes: the server's errno where it sent one.
pub fn nbd_failure(e: NbdError) -> Failure {
    let code = match &e {
        NbdError::Request { errno, .. } => match *errno {
            NBD_EPERM => REFPOINT_E_READ_ONLY,
            NBD_ENOSPC => REFPOINT_E_NO_SPACE,
            NBD_EINVAL => REFPOINT_E_INVALID,
            NBD_EOVERFLOW => REFPOINT_E_OUT_OF_RANGE,
            NBD_ENOTSUP => REFPOINT_E_UNSUPPORTED,
            NBD_ESHUTDOWN => REFPOINT_E_CONNECTION,
            _ => REFPOINT_E_IO,
        },
        NbdError::Refused { reply, .. } => match *reply {
            NBD_REP_ERR_UNKNOWN => REFPOINT_E_NOT_FOUND,
            NBD_REP_ERR_TLS_REQD | NBD_REP_ERR_POLICY => REFPOINT_E_AUTH,
            _ => REFPOINT_E_CONNECTION,
        },
        // As for the API over HTTPS: a failed handshake is a connection
        // failure; AUTH is the daemon refusing the token or the name.
        NbdError::OutOfRange { .. } => REFPOINT_E_OUT_OF_RANGE,
        NbdError::Misaligned { .. } => REFPOINT_E_INVALID,
        NbdError::Unsupported { .. } => REFPOINT_E_UNSUPPORTED,
        _ => REFPOINT_E_CONNECTION,
    };
    Failure::new(code, e.to_string())
}
