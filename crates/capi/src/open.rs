//! What `refpoint_open` opens, and how:
//!
//! * `refpoint+https://HOST:PORT/MACHINE/DISK[@checkpoint-N]`: a remote
//!   daemon (its API at HOST:PORT, data over NBD with TLS).
//! * `MACHINE/DISK[@checkpoint-N]`, or the file a machine disk is written
//!   to now: through the daemon if one answers on the state directory's
//!   socket, else held in this process's pool.
//! * any other path: that disk file (a VHDX chain or raw), under the
//!   frozen-file rule (a checkpoint's frozen file never opens writable).

#![forbid(unsafe_code)]

use crate::error::{Failure, Result};
use crate::handle::{Control, Data, Handle};
use crate::registry::{self, Hold, View};
use machine::{Store, Target};
use std::path::{Path, PathBuf};
use vdisk::Image;

/// The URL scheme of a remote daemon.
pub const REMOTE_SCHEME: &str = "refpoint+https://";

/// Opens `what` in state directory `home` (`None`: `$REFPOINT_HOME` or
/// `./refpoint-data`).
pub fn open(what: &str, home: Option<&Path>, read_only: bool) -> Result<Handle> {
    if what.is_empty() {
        return Err(Failure::invalid(
            "no disk named: give a path or MACHINE/DISK",
        ));
    }
    if let Some(rest) = what.strip_prefix(REMOTE_SCHEME) {
        return crate::remote::open(what, rest, read_only);
    }
    let home = canonical(&home.map_or_else(machine::home::state_dir, PathBuf::from));
    let store = registry::store(&home);
    let (base, checkpoint) = split_checkpoint(what)?;
    let target = store.resolve(Path::new(base))?;
    match target {
        Target::Machine { machine, disk } => {
            if let Some(client) = api::Client::find(&home) {
                return crate::remote::through_daemon(
                    what, &home, client, machine, disk, checkpoint, read_only,
                );
            }
            match checkpoint {
                Some(id) => frozen_view(what, &store, machine, disk, id, read_only),
                None if read_only => read_only_machine_disk(what, &store, machine, disk),
                None => held(what, &store, machine, disk),
            }
        }
        Target::File(path) => {
            if checkpoint.is_some() {
                return Err(Failure::invalid(format!(
                    "{what}: @checkpoint-N names a machine disk's checkpoint, and {} is no machine disk",
                    path.display()
                )));
            }
            let d = store.open_target(&Target::File(path), !read_only)?;
            Ok(Handle {
                name: what.to_string(),
                place: store.home().display().to_string(),
                view: None,
                read_only,
                size: d.size(),
                data: Data::Own(Box::new(d)),
                control: Control::Own,
            })
        }
    }
}

/// `vm1/disk0@checkpoint-3` → (`vm1/disk0`, Some(3)); any other name
/// (a path may hold an '@') is itself.
pub fn split_checkpoint(what: &str) -> Result<(&str, Option<u64>)> {
    let view = what.rsplit_once('@').and_then(|(base, view)| {
        let id = view.strip_prefix("checkpoint-")?;
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some((base, id))
    });
    match view {
        Some((base, id)) => {
            let id = id.parse::<u64>().map_err(|_| {
                Failure::invalid(format!("{what}: checkpoint number {id} is too large"))
            })?;
            Ok((base, Some(id)))
        }
        None => Ok((what, None)),
    }
}

/// One spelling per state directory, so every handle of it shares one
/// store and pool (`home`, `./home`, `a/../home` are the same).
fn canonical(home: &Path) -> PathBuf {
    std::fs::canonicalize(home).unwrap_or_else(|_| vhdx::paths::absolute(home))
}

/// Read-only, with no daemon: a handle of its own that takes no writer's
/// lock (the pool holds disks writable), reading the machine's current
/// file with its tracking.
fn read_only_machine_disk(
    what: &str,
    store: &Store,
    machine: String,
    disk: String,
) -> Result<Handle> {
    let t = Target::Machine {
        machine: machine.clone(),
        disk: disk.clone(),
    };
    let d = store.open_target(&t, false)?;
    Ok(Handle {
        name: what.to_string(),
        place: store.home().display().to_string(),
        view: None,
        read_only: true,
        size: d.size(),
        data: Data::Own(Box::new(d)),
        control: Control::Machine {
            machines: Box::new(daemon::Service::local(store.clone())),
            machine,
            disk,
        },
    })
}

fn held(what: &str, store: &Store, machine: String, disk: String) -> Result<Handle> {
    let hold = Hold::new(store, &machine, &disk)?;
    let size = hold.with(|d| Ok(d.size()))?;
    Ok(Handle {
        name: what.to_string(),
        place: store.home().display().to_string(),
        view: None,
        read_only: false,
        size,
        data: Data::Held(hold),
        control: Control::Machine {
            machines: Box::new(daemon::Service::holding(store.clone())),
            machine,
            disk,
        },
    })
}

fn frozen_view(
    what: &str,
    store: &Store,
    machine: String,
    disk: String,
    id: u64,
    ro: bool,
) -> Result<Handle> {
    let m = store.load(&machine)?;
    let cp = m
        .checkpoint(id)
        .ok_or_else(|| machine::MachineError::NoCheckpoint {
            machine: machine.clone(),
            id,
        })?;
    let chain = store.open_checkpoint_disk(cp, &disk)?;
    let image = Image::Vhdx(chain);
    let place = store.home().display().to_string();
    Ok(Handle {
        name: what.to_string(),
        view: Some(View::open(&place, &machine, id)),
        place,
        read_only: ro,
        size: image.size(),
        data: Data::Frozen(Box::new(image)),
        control: Control::Frozen {
            machines: Box::new(daemon::Service::holding(store.clone())),
            machine,
            disk,
            checkpoint: id,
        },
    })
}
