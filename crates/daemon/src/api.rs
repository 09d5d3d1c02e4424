//! The management API over HTTP: every route of [`api::routes`] mounted on
//! its handler. Handlers decode the request into the `api` types, run the
//! [`Service`] on a blocking thread and answer with its result; every
//! error answer is an [`ErrorBody`] with the status its kind maps to.
//! Served on a unix socket in the state directory and, with
//! `--api-listen`, on TCP with TLS and a bearer token.

use crate::convert::{invalid, not_found};
use crate::jobs::Jobs;
use crate::service::Service;
use api::routes::{self, Method, Route};
use api::*;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{on, MethodFilter, MethodRouter};
use axum::{Json, Router};
use serde::de::DeserializeOwned;
use std::sync::Arc;
use tokio::sync::Notify;

#[derive(Clone)]
pub struct Api {
    pub service: Service,
    pub jobs: Arc<Jobs>,
    pub shutdown: Arc<Notify>,
    /// Required as `Authorization: Bearer <token>` when set (TCP).
    pub token: Option<Arc<String>>,
    /// The NBD TCP listener's port (TLS), told to remote clients.
    pub nbd_port: Option<u16>,
}

/// An error answer.
pub struct Failure(ApiError);

impl From<ApiError> for Failure {
    fn from(e: ApiError) -> Self {
        Failure(e)
    }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let body = match self.0 {
            ApiError::Api {
                kind,
                message,
                tracking,
                ..
            } => ErrorBody {
                error: kind,
                message,
                tracking,
            },
            e => ErrorBody::new(ErrorKind::Internal, e.to_string()),
        };
        let status =
            StatusCode::from_u16(body.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, Json(body)).into_response()
    }
}

type Answer<T> = Result<Json<T>, Failure>;

/// Runs blocking work (disk I/O, merges, hooks) off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Answer<T> {
    match tokio::task::spawn_blocking(f).await {
        Ok(r) => Ok(Json(r?)),
        Err(e) => Err(Failure(ApiError::from_answer(
            500,
            ErrorBody::new(ErrorKind::Panic, format!("the request panicked: {e}")),
        ))),
    }
}

/// A JSON body; a malformed one is an `invalid` error answer. An empty
/// body is `T::default()` where the route allows leaving it out.
pub struct Body<T>(T);

impl<S: Send + Sync, T: DeserializeOwned + Default> FromRequest<S> for Body<T> {
    type Rejection = Failure;
    async fn from_request(req: Request, state: &S) -> Result<Self, Failure> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| Failure(invalid(e.body_text())))?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Body(T::default()));
        }
        serde_json::from_slice(&bytes)
            .map(Body)
            .map_err(|e| Failure(invalid(format!("the request body is not valid: {e}"))))
    }
}

/// A required JSON body.
pub struct Required<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Required<T> {
    type Rejection = Failure;
    async fn from_request(req: Request, state: &S) -> Result<Self, Failure> {
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| Failure(invalid(e.body_text())))?;
        serde_json::from_slice(&bytes)
            .map(Required)
            .map_err(|e| Failure(invalid(format!("the request body is not valid: {e}"))))
    }
}

/// Path segments; a bad one (an id that is not a number) is `invalid`.
pub struct Segments<T>(T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for Segments<T> {
    type Rejection = Failure;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Failure> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| Segments(v))
            .map_err(|e| Failure(invalid(e.body_text())))
    }
}

/// A query string; a malformed one is `invalid`.
pub struct Params<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Params<T> {
    type Rejection = Failure;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Failure> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| Params(v))
            .map_err(|e| Failure(invalid(e.body_text())))
    }
}

fn mount<H, T>(route: &'static Route, handler: H) -> (&'static Route, MethodRouter<Api>)
where
    H: axum::handler::Handler<T, Api>,
    T: 'static,
{
    let filter = match route.method {
        Method::Get => MethodFilter::GET,
        Method::Post => MethodFilter::POST,
        Method::Delete => MethodFilter::DELETE,
    };
    (route, on(filter, handler))
}

/// Every route with its handler.
pub fn mounts() -> Vec<(&'static Route, MethodRouter<Api>)> {
    vec![
        mount(&routes::OPENAPI, openapi),
        mount(&routes::STATUS, status),
        mount(&routes::SHUTDOWN, shutdown),
        mount(&routes::EXPORTS, exports),
        mount(&routes::MACHINES, machines),
        mount(&routes::MACHINE, machine),
        mount(&routes::CREATE_CHECKPOINT, create_checkpoint),
        mount(&routes::DELETE_CHECKPOINT, delete_checkpoint),
        mount(&routes::APPLY_CHECKPOINT, apply_checkpoint),
        mount(&routes::CONVERT_CHECKPOINT, convert_checkpoint),
        mount(&routes::DESTROY_REFERENCE_POINT, destroy_reference_point),
        mount(&routes::DISK_INFO, disk_info),
        mount(&routes::TRACKING_STATUS, tracking_status),
        mount(&routes::ENABLE_TRACKING, enable_tracking),
        mount(&routes::DISABLE_TRACKING, disable_tracking),
        mount(&routes::SEAL, seal),
        mount(&routes::RELEASE, release),
        mount(&routes::CHANGES, changes),
        mount(&routes::START_BACKUP, start_backup),
        mount(&routes::START_HOST_BACKUP, start_host_backup),
        mount(&routes::START_RESTORE, start_restore),
        mount(&routes::INSTANT_RESTORE, instant_restore),
        mount(&routes::START_FINISH, start_finish),
        mount(&routes::DISCARD_INSTANT, discard_instant),
        mount(&routes::START_VERIFY, start_verify),
        mount(&routes::JOBS, jobs),
        mount(&routes::JOB, job),
    ]
}

pub fn router(api: Api) -> Router {
    let mut r = Router::new();
    for (route, handler) in mounts() {
        r = r.route(route.path, handler);
    }
    r.fallback(|| async { Failure(not_found("no such route; see /v1/openapi.json")) })
        .layer(axum::middleware::from_fn_with_state(api.clone(), authorize))
        .with_state(api)
}

async fn authorize(
    State(api): State<Api>,
    headers: HeaderMap,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if let Some(token) = &api.token {
        let given = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| same_secret(g.as_bytes(), token.as_bytes())) {
            let body = ErrorBody::new(
                ErrorKind::Unauthorized,
                "send the daemon's token as `Authorization: Bearer <token>`",
            );
            return (StatusCode::UNAUTHORIZED, Json(body)).into_response();
        }
    }
    next.run(req).await
}

/// Compares secrets in time that does not depend on where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.ct_eq(b))
}

async fn openapi() -> Json<serde_json::Value> {
    Json(serde_json::to_value(api::openapi()).unwrap_or_default())
}

async fn status(State(api): State<Api>) -> Json<DaemonStatus> {
    Json(DaemonStatus {
        version: env!("CARGO_PKG_VERSION").into(),
        pid: std::process::id(),
        home: api.service.store().home().to_path_buf(),
        jobs_running: api.jobs.running() as u64,
        nbd_port: api.nbd_port,
    })
}

async fn shutdown(State(api): State<Api>) -> Json<ShuttingDown> {
    api.shutdown.notify_one();
    Json(ShuttingDown {
        shutting_down: true,
    })
}

async fn exports(State(api): State<Api>) -> Answer<Vec<Export>> {
    blocking(move || {
        let e = crate::exports::DaemonExports {
            store: api.service.store().clone(),
        };
        Ok(nbd::Exports::list(&e)
            .into_iter()
            .map(|e| Export {
                name: e.name,
                description: e.description,
            })
            .collect())
    })
    .await
}

async fn machines(State(api): State<Api>) -> Answer<Vec<Machine>> {
    blocking(move || api.service.machines()).await
}

async fn machine(State(api): State<Api>, Segments(name): Segments<String>) -> Answer<Machine> {
    blocking(move || api.service.machine(&name)).await
}

async fn create_checkpoint(
    State(api): State<Api>,
    Segments(name): Segments<String>,
    Body(r): Body<CheckpointRequest>,
) -> Answer<Checkpoint> {
    blocking(move || api.service.create_checkpoint(&name, &r)).await
}

async fn delete_checkpoint(
    State(api): State<Api>,
    Segments((name, id)): Segments<(String, u64)>,
) -> Answer<Checkpoint> {
    blocking(move || api.service.delete_checkpoint(&name, id)).await
}

async fn apply_checkpoint(
    State(api): State<Api>,
    Segments((name, id)): Segments<(String, u64)>,
) -> Answer<Applied> {
    blocking(move || api.service.apply_checkpoint(&name, id)).await
}

async fn convert_checkpoint(
    State(api): State<Api>,
    Segments((name, id)): Segments<(String, u64)>,
) -> Answer<ReferencePoint> {
    blocking(move || api.service.convert_checkpoint(&name, id)).await
}

async fn destroy_reference_point(
    State(api): State<Api>,
    Segments((name, id)): Segments<(String, u64)>,
) -> Answer<Destroyed> {
    blocking(move || api.service.destroy_reference_point(&name, id)).await
}

async fn disk_info(
    State(api): State<Api>,
    Segments((m, d)): Segments<(String, String)>,
) -> Answer<DiskInfo> {
    blocking(move || api.service.disk_info(&m, &d)).await
}

async fn tracking_status(
    State(api): State<Api>,
    Segments((m, d)): Segments<(String, String)>,
) -> Answer<TrackingStatus> {
    blocking(move || api.service.tracking_status(&m, &d)).await
}

async fn enable_tracking(
    State(api): State<Api>,
    Segments((m, d)): Segments<(String, String)>,
    Body(r): Body<EnableTrackingRequest>,
) -> Answer<TrackingSwitched> {
    blocking(move || api.service.enable_tracking(&m, &d, &r)).await
}

async fn disable_tracking(
    State(api): State<Api>,
    Segments((m, d)): Segments<(String, String)>,
) -> Answer<TrackingSwitched> {
    blocking(move || api.service.disable_tracking(&m, &d)).await
}

async fn seal(
    State(api): State<Api>,
    Segments((m, d)): Segments<(String, String)>,
) -> Answer<Sealed> {
    blocking(move || api.service.seal(&m, &d)).await
}

async fn release(
    State(api): State<Api>,
    Segments((m, d)): Segments<(String, String)>,
    Required(r): Required<ReleaseRequest>,
) -> Answer<Released> {
    blocking(move || api.service.release(&m, &d, &r.id)).await
}

async fn changes(
    State(api): State<Api>,
    Segments((m, d)): Segments<(String, String)>,
    Params(q): Params<ChangesQuery>,
) -> Answer<Changes> {
    blocking(move || api.service.changes(&m, &d, &q)).await
}

async fn start_backup(
    State(api): State<Api>,
    Segments(name): Segments<String>,
    Required(r): Required<BackupRequest>,
) -> Answer<Job> {
    // An unknown machine is refused now, not as a failed job.
    let a = api.clone();
    let n = name.clone();
    let _known = blocking(move || a.service.machine(&n).map(drop)).await?;
    let service = api.service.clone();
    let target = name.clone();
    Ok(Json(api.jobs.start(
        JobKind::Backup,
        &target,
        move |progress| service.backup(&name, &r, progress).map(JobResult::Backup),
    )))
}

async fn start_host_backup(
    State(api): State<Api>,
    Required(r): Required<HostBackupRequest>,
) -> Answer<Job> {
    // No machine, or an unknown one, is refused now, not as a failed job.
    let a = api.clone();
    let names = r.machines.clone();
    let _known = blocking(move || {
        if names.is_empty() {
            return Err(invalid("a host backup needs at least one machine"));
        }
        names
            .iter()
            .try_for_each(|n| a.service.machine(n).map(drop))
    })
    .await?;
    let service = api.service.clone();
    let target = r.to.display().to_string();
    Ok(Json(api.jobs.start_reporting(
        JobKind::HostBackup,
        &target,
        move |job| {
            let progress = |whole: &JobPart, parts: &[JobPart]| {
                job.set(&whole.item, whole.done, whole.total);
                job.set_parts(parts);
            };
            service
                .host_backup(&r, &progress)
                .map(JobResult::HostBackup)
        },
    )))
}

async fn start_restore(
    State(api): State<Api>,
    Required(r): Required<RestoreRequest>,
) -> Answer<Job> {
    let target = r.repository.display().to_string();
    let service = api.service.clone();
    Ok(Json(api.jobs.start(
        JobKind::Restore,
        &target,
        move |progress| {
            service
                .restore(&r, &mut |done, total| progress("restore", done, total))
                .map(JobResult::Restore)
        },
    )))
}

async fn instant_restore(
    State(api): State<Api>,
    Required(r): Required<InstantRequest>,
) -> Answer<InstantRestored> {
    blocking(move || api.service.instant_restore(&r)).await
}

async fn start_finish(
    State(api): State<Api>,
    Segments(name): Segments<String>,
    Body(r): Body<FinishRequest>,
) -> Answer<Job> {
    // A machine that cannot be finished is refused now, not as a failed job.
    let a = api.clone();
    let n = name.clone();
    let m = blocking(move || a.service.machine(&n)).await?.0;
    if m.instant.is_none() {
        return Err(Failure(invalid(format!(
            "machine {name} is not an instantly restored machine (nothing to finish)"
        ))));
    }
    Ok(Json(start_finish_job(&api, &name, r)))
}

/// Starts the job that finishes instant machine `name`.
pub fn start_finish_job(api: &Api, name: &str, r: FinishRequest) -> Job {
    let service = api.service.clone();
    let n = name.to_string();
    api.jobs.start(JobKind::Finish, name, move |progress| {
        service
            .finish_instant(&n, &r, progress)
            .map(JobResult::Finish)
    })
}

async fn discard_instant(
    State(api): State<Api>,
    Segments(name): Segments<String>,
) -> Answer<Discarded> {
    blocking(move || api.service.discard_instant(&name)).await
}

async fn start_verify(State(api): State<Api>, Required(r): Required<VerifyRequest>) -> Answer<Job> {
    let target = r.repository.display().to_string();
    let service = api.service.clone();
    Ok(Json(api.jobs.start(
        JobKind::Verify,
        &target,
        move |progress| {
            service
                .verify(&r, &mut |done, total| progress("verify", done, total))
                .map(JobResult::Verify)
        },
    )))
}

async fn jobs(State(api): State<Api>) -> Json<Vec<Job>> {
    Json(api.jobs.list())
}

async fn job(State(api): State<Api>, Segments(id): Segments<u64>) -> Answer<Job> {
    api.jobs
        .get(id)
        .map(Json)
        .ok_or_else(|| Failure(not_found(format!("no job {id}"))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_route_is_mounted_once_and_in_the_generated_document() {
        let mounted: Vec<_> = mounts()
            .into_iter()
            .map(|(r, _)| (r.method.as_str(), r.path))
            .collect();
        let unique: BTreeSet<_> = mounted.iter().cloned().collect();
        assert_eq!(unique.len(), mounted.len(), "a route is mounted twice");
        let table: BTreeSet<_> = routes::ROUTES
            .iter()
            .map(|r| (r.method.as_str(), r.path))
            .collect();
        assert_eq!(unique, table, "mounted routes and the route table differ");
        let doc = serde_json::to_value(api::openapi()).unwrap();
        for (method, path) in &mounted {
            assert!(
                doc["paths"][path][method.to_ascii_lowercase()].is_object(),
                "the OpenAPI document lacks {method} {path}"
            );
        }
    }
}
