//! What to do about an error: the libraries state what failed, the
//! command line adds the next step.

use api::{ApiError, ErrorKind};
use machine::MachineError;

/// The hint for an error, if there is one worth giving.
pub(crate) fn hint(e: &anyhow::Error) -> Option<&'static str> {
    if let Some(m) = e.downcast_ref::<MachineError>() {
        return machine_hint(m);
    }
    if let Some(b) = e.downcast_ref::<backup::BackupError>() {
        return match b {
            backup::BackupError::NoPoint { .. }
            | backup::BackupError::NoDisk { .. }
            | backup::BackupError::NoHostPoint { .. }
            | backup::BackupError::NoHostMachine { .. } => Some("see `refpoint backup list DIR`"),
            backup::BackupError::NeedMachine { .. } => {
                Some("add --machine NAME (see `refpoint backup list DIR`)")
            }
            backup::BackupError::IsHostRepo { .. } => Some(
                "back the machine up into another directory, or into this one with `refpoint backup --machine NAME --to DIR`",
            ),
            backup::BackupError::NotHostRepo { .. } => {
                Some("a host backup (--all, --machine) needs a directory of its own")
            }
            backup::BackupError::Machine(m) => machine_hint(m),
            _ => None,
        };
    }
    match e.downcast_ref::<ApiError>()? {
        ApiError::Api { kind, message, .. } => match kind {
            ErrorKind::NotFound if message.contains("no machine") => {
                Some("see `refpoint machine list`")
            }
            ErrorKind::NotFound => Some("see `refpoint machine show MACHINE`"),
            ErrorKind::Frozen => Some("write to the machine disk (MACHINE/DISK) instead"),
            ErrorKind::NoSpace => {
                Some("free space on the disk's file system; a pending write is retried at the next flush")
            }
            ErrorKind::Unavailable => Some("see the daemon's log (REFPOINT_LOG=debug for more)"),
            ErrorKind::Invalid if message.contains("not the newest") => {
                Some("delete or convert the newer checkpoints first")
            }
            ErrorKind::Invalid if message.contains("freeze command") && message.contains("within") => {
                Some("make the freeze finish sooner, or allow it more time (--freeze-timeout SECONDS)")
            }
            ErrorKind::Invalid if message.contains("freeze command") => {
                Some("fix the hook, or take a crash-consistent checkpoint (--consistency crash)")
            }
            ErrorKind::Invalid if message.contains("host repository") => {
                Some("a host repository holds host backups (--all, --machine) only, a plain one single-machine backups only")
            }
            _ => None,
        },
        ApiError::Transport { .. } => {
            Some("is the daemon still running? start it with `refpoint serve`")
        }
        _ => None,
    }
}

fn machine_hint(e: &MachineError) -> Option<&'static str> {
    Some(match e {
        MachineError::NoMachine { .. } => "see `refpoint machine list`",
        MachineError::NoDisk { .. } | MachineError::NoCheckpoint { .. } => {
            "see `refpoint machine show MACHINE`"
        }
        MachineError::NotNewest { .. } => "delete or convert the newer checkpoints first",
        MachineError::HasCheckpoints { .. } => {
            "delete them first (`refpoint checkpoint delete`) so every disk is one file again"
        }
        MachineError::Frozen { .. } => "write to the machine disk (MACHINE/DISK) instead",
        MachineError::DiskInUse { .. } => "a disk file belongs to one machine",
        MachineError::HookFailed { .. } => {
            "fix the hook, or take a crash-consistent checkpoint (--consistency crash)"
        }
        MachineError::HookTimedOut { .. } => {
            "make the hook finish sooner, or allow it more time (--freeze-timeout SECONDS)"
        }
        _ => return None,
    })
}
