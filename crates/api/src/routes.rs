//! The route table: every route of the API, once. The daemon's router, the
//! client's requests and the OpenAPI document ([`crate::openapi`]) all
//! read it, so they cannot drift apart.
//!
//! A route names its method, path template (`{name}` placeholders, as axum
//! and OpenAPI spell them), operation id (the [`crate::Client`] method of
//! the same name calls it), summary, request body, query and response
//! types. Types are held as [`Payload`]s: enough to emit their schema and
//! to let the client check, in debug builds, that it decodes the type the
//! table promises.

use crate::types::*;
use std::any::TypeId;
use std::borrow::Cow;
use std::fmt;
use utoipa::openapi::path::{Parameter, ParameterIn};
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, Type};
use utoipa::openapi::{Ref, RefOr};
use utoipa::{IntoParams, ToSchema};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    Get,
    Post,
    Delete,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Delete => "DELETE",
        }
    }
}

impl fmt::Display for Method {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A JSON body's type, as the table keeps it.
#[derive(Clone, Copy)]
pub struct Payload {
    shape: Shape,
    name: fn() -> Cow<'static, str>,
    schemas: fn(&mut Vec<(String, RefOr<Schema>)>),
    type_id: fn() -> TypeId,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// One `T`, referenced as a component schema.
    One,
    /// A JSON array of `T`.
    List,
    /// Any JSON object (the OpenAPI document itself).
    Document,
}

impl Payload {
    /// One `T`.
    pub const fn of<T: ToSchema + 'static>() -> Self {
        Self {
            shape: Shape::One,
            name: T::name,
            schemas: collect::<T>,
            type_id: TypeId::of::<T>,
        }
    }

    /// A `Vec<T>`.
    pub const fn list_of<T: ToSchema + 'static>() -> Self {
        Self {
            shape: Shape::List,
            name: T::name,
            schemas: collect::<T>,
            type_id: TypeId::of::<Vec<T>>,
        }
    }

    /// Any JSON object, decoded as a `serde_json::Value`.
    pub const fn document() -> Self {
        Self {
            shape: Shape::Document,
            name: document_name,
            schemas: no_schemas,
            type_id: TypeId::of::<serde_json::Value>,
        }
    }

    /// The component schema's name (of the element, for a list).
    pub fn name(&self) -> Cow<'static, str> {
        (self.name)()
    }

    /// Whether the Rust type of this body is `T`.
    pub fn is<T: 'static>(&self) -> bool {
        (self.type_id)() == TypeId::of::<T>()
    }

    /// The schema a request or response refers to.
    pub fn schema(&self) -> RefOr<Schema> {
        let one = RefOr::Ref(Ref::from_schema_name(self.name()));
        match self.shape {
            Shape::One => one,
            Shape::List => ArrayBuilder::new().items(one).into(),
            Shape::Document => ObjectBuilder::new().schema_type(Type::Object).into(),
        }
    }

    /// The component schemas this body needs: its own and those it uses.
    pub fn component_schemas(&self, out: &mut Vec<(String, RefOr<Schema>)>) {
        (self.schemas)(out)
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.shape {
            Shape::One => write!(f, "{}", self.name()),
            Shape::List => write!(f, "[{}]", self.name()),
            Shape::Document => write!(f, "document"),
        }
    }
}

fn collect<T: ToSchema>(out: &mut Vec<(String, RefOr<Schema>)>) {
    out.push((T::name().into_owned(), T::schema()));
    T::schemas(out);
}

fn no_schemas(_: &mut Vec<(String, RefOr<Schema>)>) {}

fn document_name() -> Cow<'static, str> {
    Cow::Borrowed("document")
}

/// A request's JSON body.
#[derive(Debug, Clone, Copy)]
pub enum Body {
    None,
    /// The daemon takes the request without a body too (defaults apply).
    Optional(Payload),
    Required(Payload),
}

impl Body {
    pub fn payload(&self) -> Option<&Payload> {
        match self {
            Body::None => None,
            Body::Optional(p) | Body::Required(p) => Some(p),
        }
    }
}

/// A request's query string, from a type deriving `IntoParams`.
#[derive(Clone, Copy)]
pub struct Query {
    params: fn() -> Vec<Parameter>,
    type_id: fn() -> TypeId,
}

impl Query {
    pub const fn of<T: IntoParams + 'static>() -> Self {
        Self {
            params: query_params::<T>,
            type_id: TypeId::of::<T>,
        }
    }

    /// The query parameters, for the OpenAPI document.
    pub fn parameters(&self) -> Vec<Parameter> {
        (self.params)()
    }

    pub fn is<T: 'static>(&self) -> bool {
        (self.type_id)() == TypeId::of::<T>()
    }
}

impl fmt::Debug for Query {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = self.parameters().into_iter().map(|p| p.name).collect();
        write!(f, "?{}", names.join("&"))
    }
}

fn query_params<T: IntoParams>() -> Vec<Parameter> {
    T::into_params(|| Some(ParameterIn::Query))
}

/// One route of the API.
#[derive(Debug, Clone, Copy)]
pub struct Route {
    pub method: Method,
    /// The path template, e.g. `/v1/machines/{machine}/checkpoints`.
    pub path: &'static str,
    /// The OpenAPI operation id; also the name of the client method.
    pub operation_id: &'static str,
    pub summary: &'static str,
    pub body: Body,
    pub query: Option<Query>,
    /// The body of a 2xx answer.
    pub response: Payload,
    pub response_description: &'static str,
}

impl Route {
    /// The names of the path's placeholders, in order.
    pub fn path_params(&self) -> impl Iterator<Item = &'static str> {
        let path: &'static str = self.path;
        path.split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
    }

    /// The path with each placeholder replaced, in order, by a segment
    /// (percent-encoded: machine names and RCT IDs may hold any byte).
    ///
    /// # Panics
    /// If the number of segments differs from the number of placeholders:
    /// a bug in the caller, not bad input.
    pub fn path_with(&self, segments: &[&dyn fmt::Display]) -> String {
        let mut given = segments.iter();
        let mut out = String::with_capacity(self.path.len() + 16);
        for part in self.path.split('/').skip(1) {
            out.push('/');
            if part.starts_with('{') {
                let s = given
                    .next()
                    .unwrap_or_else(|| panic!("{} needs more path segments", self.path));
                out.push_str(&crate::encode::path_segment(&s.to_string()));
            } else {
                out.push_str(part);
            }
        }
        assert!(
            given.next().is_none(),
            "{} takes {} path segments, got {}",
            self.path,
            self.path_params().count(),
            segments.len()
        );
        out
    }

    /// What a path placeholder holds, for the OpenAPI document.
    pub(crate) fn describe_param(name: &str) -> (&'static str, Type) {
        match name {
            "machine" => ("machine name", Type::String),
            "disk" => ("disk name, e.g. disk0", Type::String),
            "id" => ("a checkpoint, reference point or job number", Type::Integer),
            _ => ("", Type::String),
        }
    }
}

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
    &TRACKING_STATUS,
    &ENABLE_TRACKING,
    &DISABLE_TRACKING,
    &SEAL,
    &RELEASE,
    &CHANGES,
    &START_BACKUP,
    &START_RESTORE,
    &START_VERIFY,
    &JOBS,
    &JOB,
];
