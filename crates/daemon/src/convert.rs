//! The library types as the API carries them (`api` knows no other
//! refpoint crate), and library errors as the API's errors.

use api::{ApiError, ErrorBody, ErrorKind, TrackingError, TrackingErrorKind};
use machine::MachineError;
use vdisk::VdiskError;

pub fn machine(m: machine::Machine) -> api::Machine {
    api::Machine {
        name: m.name,
        disks: m
            .disks
            .into_iter()
            .map(|d| api::MachineDisk {
                name: d.name,
                base: d.base,
                active: d.active,
            })
            .collect(),
        freeze: m.freeze,
        thaw: m.thaw,
        checkpoints: m.checkpoints.into_iter().map(checkpoint).collect(),
        reference_points: m
            .reference_points
            .into_iter()
            .map(reference_point)
            .collect(),
        next_id: m.next_id,
        instant: m.instant.map(|i| api::InstantOrigin {
            repository: i.repository,
            point: i.point,
            source_machine: i.source_machine,
            created: i.created,
            finishing: i.finishing,
            throttle: i.throttle,
        }),
    }
}

pub fn finish_summary(s: machine::FinishSummary) -> api::FinishSummary {
    api::FinishSummary {
        machine: s.machine,
        disks: s
            .disks
            .into_iter()
            .map(|d| api::FinishedDisk {
                name: d.name,
                file: d.file,
                bytes_copied: d.bytes_copied,
                rounds: d.rounds,
                paused_seconds: d.paused_seconds,
                already_standalone: d.already_standalone,
            })
            .collect(),
        bytes_copied: s.bytes_copied,
        seconds: s.seconds,
        resumed: s.resumed,
    }
}

pub fn checkpoint(c: machine::Checkpoint) -> api::Checkpoint {
    api::Checkpoint {
        id: c.id,
        kind: checkpoint_kind(c.kind),
        consistency: consistency(c.consistency),
        created: c.created,
        disks: c
            .disks
            .into_iter()
            .map(|d| api::CheckpointDisk {
                name: d.name,
                frozen: d.frozen,
                child: d.child,
                rct_id: d.rct_id,
            })
            .collect(),
        backup: c.backup.map(backup_link),
    }
}

pub fn reference_point(r: machine::ReferencePoint) -> api::ReferencePoint {
    api::ReferencePoint {
        id: r.id,
        created: r.created,
        checkpoint: r.checkpoint,
        disks: r
            .disks
            .into_iter()
            .map(|d| api::ReferenceDisk {
                name: d.name,
                rct_id: d.rct_id,
            })
            .collect(),
        backup: r.backup.map(backup_link),
    }
}

fn backup_link(b: machine::BackupLink) -> api::BackupLink {
    api::BackupLink {
        dir: b.dir,
        point: b.point,
    }
}

pub fn checkpoint_kind(k: machine::CheckpointKind) -> api::CheckpointKind {
    match k {
        machine::CheckpointKind::Standard => api::CheckpointKind::Standard,
        machine::CheckpointKind::Recovery => api::CheckpointKind::Recovery,
    }
}

pub fn checkpoint_kind_in(k: api::CheckpointKind) -> machine::CheckpointKind {
    match k {
        api::CheckpointKind::Standard => machine::CheckpointKind::Standard,
        api::CheckpointKind::Recovery => machine::CheckpointKind::Recovery,
    }
}

pub fn consistency(c: machine::Consistency) -> api::Consistency {
    match c {
        machine::Consistency::Application => api::Consistency::Application,
        machine::Consistency::Crash => api::Consistency::Crash,
    }
}

pub fn consistency_in(c: api::Consistency) -> machine::Consistency {
    match c {
        api::Consistency::Application => machine::Consistency::Application,
        api::Consistency::Crash => machine::Consistency::Crash,
    }
}

fn backup_kind(k: &str) -> api::BackupKind {
    match k {
        "incremental" => api::BackupKind::Incremental,
        "mixed" => api::BackupKind::Mixed,
        _ => api::BackupKind::Full,
    }
}

pub fn backup_summary(s: backup::Summary) -> api::BackupSummary {
    api::BackupSummary {
        machine: s.machine,
        repository: s.repository,
        point: s.point,
        kind: backup_kind(&s.kind),
        disks: s
            .disks
            .into_iter()
            .map(|d| api::DiskBackupSummary {
                name: d.name,
                kind: backup_kind(&d.kind),
                full_reason: d.full_reason,
                changed_bytes: d.changed_bytes,
                bytes_read: d.bytes_read,
                bytes_written: d.bytes_written,
            })
            .collect(),
        bytes_read: s.bytes_read,
        bytes_written: s.bytes_written,
        seconds: s.seconds,
        recovered: s.recovered,
    }
}

pub fn host_summary(s: backup::host::HostSummary) -> api::HostBackupSummary {
    api::HostBackupSummary {
        host_point: s.host_point,
        repository: s.repository,
        machines: s.machines.into_iter().map(backup_summary).collect(),
        bytes_read: s.bytes_read,
        bytes_written: s.bytes_written,
        seconds: s.seconds,
        recovered: s.recovered,
    }
}

pub fn verify_report(r: backup::VerifyReport) -> api::VerifyReport {
    api::VerifyReport {
        points_checked: r.points_checked,
        bytes_checked: r.bytes_checked,
        file_bytes_checked: r.file_bytes_checked,
        machines: r
            .machines
            .into_iter()
            .map(|m| api::MachineVerified {
                machine: m.machine,
                points_checked: m.points_checked,
            })
            .collect(),
        first_bad: r.first_bad.map(|b| api::BadBlock {
            machine: b.machine,
            point: b.point,
            disk: b.disk,
            scope: if b.scope == "file" {
                api::BadBlockScope::File
            } else {
                api::BadBlockScope::Content
            },
            offset: b.offset,
            file: b.file,
            problem: b.problem,
        }),
    }
}

/// A tracking error as scripts see it.
pub fn tracking_error(e: &rct::RctError) -> TrackingError {
    TrackingError::new(TrackingErrorKind::from_name(e.kind()), e.to_string())
}

fn answer(kind: ErrorKind, message: String) -> ApiError {
    let body = ErrorBody::new(kind, message);
    ApiError::from_answer(body.status(), body)
}

pub fn tracking_refusal(e: &rct::RctError) -> ApiError {
    let body = ErrorBody::from(tracking_error(e));
    ApiError::from_answer(body.status(), body)
}

pub fn disk_error(e: VdiskError) -> ApiError {
    let kind = match &e {
        // A bad granularity is the request's fault, not tracking's.
        VdiskError::Tracking(rct::RctError::InvalidParameter(_)) => ErrorKind::Invalid,
        VdiskError::Tracking(t) => return tracking_refusal(t),
        VdiskError::Vhdx(vhdx::Error::InvalidParameter(_)) | VdiskError::ReadOnly { .. } => {
            ErrorKind::Invalid
        }
        VdiskError::OutOfRange { .. } => ErrorKind::OutOfRange,
        e if e.is_no_space() => ErrorKind::NoSpace,
        VdiskError::Vhdx(vhdx::Error::Locked { .. }) => ErrorKind::Busy,
        VdiskError::Vhdx(
            vhdx::Error::Corrupt { .. }
            | vhdx::Error::ParentMismatch { .. }
            | vhdx::Error::BadChain { .. },
        ) => ErrorKind::Corrupt,
        _ => ErrorKind::Io,
    };
    answer(kind, e.to_string())
}

pub fn machine_error(e: MachineError) -> ApiError {
    let kind = match e {
        MachineError::Disk(d) => return disk_error(d),
        ref e if e.is_not_found() => ErrorKind::NotFound,
        MachineError::Frozen { .. } => ErrorKind::Frozen,
        MachineError::NotOpen { .. } => ErrorKind::Unavailable,
        MachineError::Corrupt { .. } => ErrorKind::Corrupt,
        ref e if e.is_no_space() => ErrorKind::NoSpace,
        ref e if e.is_invalid() => ErrorKind::Invalid,
        // As it always answered: the checkpoint was refused.
        MachineError::HookFailed { .. } | MachineError::HookTimedOut { .. } => ErrorKind::Invalid,
        MachineError::Io { .. } => ErrorKind::Io,
        _ => ErrorKind::Internal,
    };
    answer(kind, e.to_string())
}

pub fn backup_error(e: backup::BackupError) -> ApiError {
    match e {
        backup::BackupError::Machine(m) => machine_error(m),
        backup::BackupError::Disk(d) => disk_error(d),
        e @ (backup::BackupError::NoPoint { .. }
        | backup::BackupError::Empty { .. }
        | backup::BackupError::NoDisk { .. }
        | backup::BackupError::NoHostPoint { .. }
        | backup::BackupError::NoHostMachine { .. }) => answer(ErrorKind::NotFound, e.to_string()),
        e @ (backup::BackupError::KeepNone
        | backup::BackupError::IsHostRepo { .. }
        | backup::BackupError::NotHostRepo { .. }
        | backup::BackupError::NeedMachine { .. }
        | backup::BackupError::NoMachines
        | backup::BackupError::SharedDisk { .. }) => answer(ErrorKind::Invalid, e.to_string()),
        e @ backup::BackupError::Io { .. } => answer(ErrorKind::Io, e.to_string()),
        e => answer(ErrorKind::Internal, e.to_string()),
    }
}

/// A request the API refuses as malformed.
pub fn invalid(message: impl Into<String>) -> ApiError {
    answer(ErrorKind::Invalid, message.into())
}

pub fn not_found(message: impl Into<String>) -> ApiError {
    answer(ErrorKind::NotFound, message.into())
}
