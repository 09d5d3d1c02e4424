//! Every route of the API, in the order the OpenAPI document lists them.

use super::{Body, Method, Payload, Query, Route};
use crate::types::*;

pub const OPENAPI: Route = Route {
    method: Method::Get,
    path: "/v1/openapi.json",
    operation_id: "openapi",
    summary: "This document",
    body: Body::None,
    query: None,
    response: Payload::document(),
    response_description: "the OpenAPI document",
};

pub const STATUS: Route = Route {
    method: Method::Get,
    path: "/v1/status",
    operation_id: "status",
    summary: "Daemon status (version, pid, state directory, running jobs)",
    body: Body::None,
    query: None,
    response: Payload::of::<DaemonStatus>(),
    response_description: "status",
};

pub const SHUTDOWN: Route = Route {
    method: Method::Post,
    path: "/v1/shutdown",
    operation_id: "shutdown",
    summary: "Graceful shutdown: stop accepting, finish in-flight I/O, flush and close every disk",
    body: Body::None,
    query: None,
    response: Payload::of::<ShuttingDown>(),
    response_description: "shutting down",
};

pub const EXPORTS: Route = Route {
    method: Method::Get,
    path: "/v1/exports",
    operation_id: "exports",
    summary:
        "NBD exports: <machine>/<disk> (live), @checkpoint-<id> and @backup-<point> (read-only)",
    body: Body::None,
    query: None,
    response: Payload::list_of::<Export>(),
    response_description: "exports",
};

pub const MACHINES: Route = Route {
    method: Method::Get,
    path: "/v1/machines",
    operation_id: "machines",
    summary: "All machines with their disks, checkpoints and reference points",
    body: Body::None,
    query: None,
    response: Payload::list_of::<Machine>(),
    response_description: "machines",
};

pub const MACHINE: Route = Route {
    method: Method::Get,
    path: "/v1/machines/{machine}",
    operation_id: "machine",
    summary: "One machine",
    body: Body::None,
    query: None,
    response: Payload::of::<Machine>(),
    response_description: "the machine",
};

pub const CREATE_CHECKPOINT: Route = Route {
    method: Method::Post,
    path: "/v1/machines/{machine}/checkpoints",
    operation_id: "create_checkpoint",
    summary: "Create a checkpoint while clients write: freeze hook, drain and flush in-flight I/O, switch every disk to a new child, thaw",
    body: Body::Optional(Payload::of::<CheckpointRequest>()),
    query: None,
    response: Payload::of::<Checkpoint>(),
    response_description: "the checkpoint",
};

pub const DELETE_CHECKPOINT: Route = Route {
    method: Method::Delete,
    path: "/v1/machines/{machine}/checkpoints/{id}",
    operation_id: "delete_checkpoint",
    summary: "Delete (merge back) the newest checkpoint",
    body: Body::None,
    query: None,
    response: Payload::of::<Checkpoint>(),
    response_description: "the deleted checkpoint",
};

pub const APPLY_CHECKPOINT: Route = Route {
    method: Method::Post,
    path: "/v1/machines/{machine}/checkpoints/{id}/apply",
    operation_id: "apply_checkpoint",
    summary: "Revert the machine's disks to the newest checkpoint",
    body: Body::None,
    query: None,
    response: Payload::of::<Applied>(),
    response_description: "applied",
};

pub const CONVERT_CHECKPOINT: Route = Route {
    method: Method::Post,
    path: "/v1/machines/{machine}/checkpoints/{id}/convert",
    operation_id: "convert_checkpoint",
    summary: "Convert a recovery checkpoint to a reference point",
    body: Body::None,
    query: None,
    response: Payload::of::<ReferencePoint>(),
    response_description: "the reference point",
};

pub const DESTROY_REFERENCE_POINT: Route = Route {
    method: Method::Delete,
    path: "/v1/machines/{machine}/reference-points/{id}",
    operation_id: "destroy_reference_point",
    summary: "Destroy a reference point and release its RCT IDs",
    body: Body::None,
    query: None,
    response: Payload::of::<Destroyed>(),
    response_description: "destroyed",
};

pub const DISK_INFO: Route = Route {
    method: Method::Get,
    path: "/v1/machines/{machine}/disks/{disk}",
    operation_id: "disk_info",
    summary:
        "A live disk: format, virtual size, sector and block sizes, chain depth, identity, tracking",
    body: Body::None,
    query: None,
    response: Payload::of::<DiskInfo>(),
    response_description: "the disk",
};

pub const TRACKING_STATUS: Route = Route {
    method: Method::Get,
    path: "/v1/machines/{machine}/disks/{disk}/tracking",
    operation_id: "tracking_status",
    summary: "Change-tracking status of a live disk",
    body: Body::None,
    query: None,
    response: Payload::of::<TrackingStatus>(),
    response_description: "status",
};

pub const ENABLE_TRACKING: Route = Route {
    method: Method::Post,
    path: "/v1/machines/{machine}/disks/{disk}/tracking/enable",
    operation_id: "enable_tracking",
    summary: "Start (or restart) change tracking",
    body: Body::Optional(Payload::of::<EnableTrackingRequest>()),
    query: None,
    response: Payload::of::<TrackingSwitched>(),
    response_description: "enabled",
};

pub const DISABLE_TRACKING: Route = Route {
    method: Method::Post,
    path: "/v1/machines/{machine}/disks/{disk}/tracking/disable",
    operation_id: "disable_tracking",
    summary: "Stop change tracking",
    body: Body::None,
    query: None,
    response: Payload::of::<TrackingSwitched>(),
    response_description: "disabled",
};

pub const SEAL: Route = Route {
    method: Method::Post,
    path: "/v1/machines/{machine}/disks/{disk}/tracking/seal",
    operation_id: "seal",
    summary: "Seal the current generation; returns its RCT ID",
    body: Body::None,
    query: None,
    response: Payload::of::<Sealed>(),
    response_description: "the RCT ID",
};

pub const RELEASE: Route = Route {
    method: Method::Post,
    path: "/v1/machines/{machine}/disks/{disk}/tracking/release",
    operation_id: "release",
    summary: "Release an RCT ID",
    body: Body::Required(Payload::of::<ReleaseRequest>()),
    query: None,
    response: Payload::of::<Released>(),
    response_description: "released",
};

pub const CHANGES: Route = Route {
    method: Method::Get,
    path: "/v1/machines/{machine}/disks/{disk}/changes",
    operation_id: "changes",
    summary: "Ranges changed since an RCT ID (until another, or now), like QueryChangesVirtualDisk",
    body: Body::None,
    query: Some(Query::of::<ChangesQuery>()),
    response: Payload::of::<Changes>(),
    response_description: "changes",
};

pub const START_BACKUP: Route = Route {
    method: Method::Post,
    path: "/v1/machines/{machine}/backups",
    operation_id: "start_backup",
    summary: "Back the machine up into a repository (a job): full, or differential since the repository's last point",
    body: Body::Required(Payload::of::<BackupRequest>()),
    query: None,
    response: Payload::of::<Job>(),
    response_description: "the job",
};

pub const START_HOST_BACKUP: Route = Route {
    method: Method::Post,
    path: "/v1/backups",
    operation_id: "start_host_backup",
    summary: "Back several machines up as one host point (a job): every freeze at once, all checkpoints as one consistent cut, thaw, export each machine; all or nothing",
    body: Body::Required(Payload::of::<HostBackupRequest>()),
    query: None,
    response: Payload::of::<Job>(),
    response_description: "the job",
};

pub const START_RESTORE: Route = Route {
    method: Method::Post,
    path: "/v1/restores",
    operation_id: "start_restore",
    summary: "Restore a point's disks (a job)",
    body: Body::Required(Payload::of::<RestoreRequest>()),
    query: None,
    response: Payload::of::<Job>(),
    response_description: "the job",
};

pub const INSTANT_RESTORE: Route = Route {
    method: Method::Post,
    path: "/v1/instant-restores",
    operation_id: "instant_restore",
    summary: "Create a machine that runs on a backup point at once (its disks are differencing children of the point's files, exported read-write and tracked)",
    body: Body::Required(Payload::of::<InstantRequest>()),
    query: None,
    response: Payload::of::<InstantRestored>(),
    response_description: "the machine",
};

pub const START_FINISH: Route = Route {
    method: Method::Post,
    path: "/v1/machines/{machine}/finish",
    operation_id: "start_finish",
    summary: "Copy an instant machine's data into standalone disks while it runs, then switch to them (a job; resumes after a restart)",
    body: Body::Optional(Payload::of::<FinishRequest>()),
    query: None,
    response: Payload::of::<Job>(),
    response_description: "the job",
};

pub const DISCARD_INSTANT: Route = Route {
    method: Method::Delete,
    path: "/v1/machines/{machine}/instant",
    operation_id: "discard_instant",
    summary: "Drop an instant machine and its files (the backup point is untouched)",
    body: Body::None,
    query: None,
    response: Payload::of::<Discarded>(),
    response_description: "discarded",
};

pub const START_VERIFY: Route = Route {
    method: Method::Post,
    path: "/v1/verifications",
    operation_id: "start_verify",
    summary: "Verify a repository against its manifests (a job)",
    body: Body::Required(Payload::of::<VerifyRequest>()),
    query: None,
    response: Payload::of::<Job>(),
    response_description: "the job",
};

pub const JOBS: Route = Route {
    method: Method::Get,
    path: "/v1/jobs",
    operation_id: "jobs",
    summary: "All jobs",
    body: Body::None,
    query: None,
    response: Payload::list_of::<Job>(),
    response_description: "jobs",
};

pub const JOB: Route = Route {
    method: Method::Get,
    path: "/v1/jobs/{id}",
    operation_id: "job",
    summary: "One job: state, progress, result or error",
    body: Body::None,
    query: None,
    response: Payload::of::<Job>(),
    response_description: "the job",
};

/// Every route, in the order the OpenAPI document lists them.
pub const ROUTES: &[&Route] = &[
    &OPENAPI,
    &STATUS,
    &SHUTDOWN,
    &EXPORTS,
    &MACHINES,
    &MACHINE,
    &CREATE_CHECKPOINT,
    &DELETE_CHECKPOINT,
    &APPLY_CHECKPOINT,
    &CONVERT_CHECKPOINT,
    &DESTROY_REFERENCE_POINT,
    &DISK_INFO,
    &TRACKING_STATUS,
    &ENABLE_TRACKING,
    &DISABLE_TRACKING,
    &SEAL,
    &RELEASE,
    &CHANGES,
    &START_BACKUP,
    &START_HOST_BACKUP,
    &START_RESTORE,
    &INSTANT_RESTORE,
    &START_FINISH,
    &DISCARD_INSTANT,
    &START_VERIFY,
    &JOBS,
    &JOB,
];
