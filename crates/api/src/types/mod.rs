//! Request and response bodies of every route, one module per resource.
//!
//! Each type's JSON is what the daemon sends on the wire; where a response
//! used to be a library type serialized directly (a machine, a checkpoint,
//! a backup summary), the type here mirrors that serde shape field by field,
//! so the daemon converts into these without changing a byte a client sees.
//! `Option` fields serialize as `null` unless noted: that is how the daemon
//! has always sent them.

mod backups;
mod changes;
mod checkpoints;
mod disks;
mod errors;
mod exports;
mod instant;
mod jobs;
mod machines;
mod references;
mod status;
mod tracking;

pub use backups::{
    BackupKind, BackupRequest, BackupSummary, BadBlock, BadBlockScope, DiskBackupSummary,
    HostBackupRequest, HostBackupSummary, MachineVerified, RestoreFormat, RestoreRequest,
    RestoreResult, VerifyReport, VerifyRequest,
};
pub use changes::{ChangedRange, Changes, ChangesQuery};
pub use checkpoints::{
    Applied, BackupLink, Checkpoint, CheckpointDisk, CheckpointKind, CheckpointRequest, Consistency,
};
pub use disks::DiskInfo;
pub use errors::{ErrorBody, ErrorKind};
pub use exports::Export;
pub use instant::{
    Discarded, FinishRequest, FinishSummary, FinishedDisk, InstantOrigin, InstantRequest,
    InstantRestored,
};
pub use jobs::{Job, JobKind, JobPart, JobResult, JobState};
pub use machines::{Machine, MachineDisk};
pub use references::{Destroyed, ReferenceDisk, ReferencePoint};
pub use status::{DaemonStatus, ShuttingDown};
pub use tracking::{
    EnableTrackingRequest, ReleaseRequest, Released, Sealed, TrackingError, TrackingErrorKind,
    TrackingStatus, TrackingSwitched,
};

use utoipa::openapi::schema::{ObjectBuilder, Schema, Type};
use utoipa::openapi::RefOr;

/// The schema of a kind enum that travels as one of a list of strings.
pub(crate) fn string_enum_schema<'a>(
    names: impl IntoIterator<Item = &'a str>,
    description: &str,
) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(names))
        .description(Some(description))
        .into()
}
