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
            backup::BackupError::NoPoint { .. } | backup::BackupError::NoDisk { .. } => {
                Some("see `refpoint backup list DIR`")
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
            ErrorKind::Invalid if message.contains("freeze command") => {
                Some("fix the hook, or take a crash-consistent checkpoint (--consistency crash)")
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
        _ => return None,
    })
}
