//! The management API: HTTP/JSON on a unix socket in the state directory
//! (and, with `--api-listen`, on TCP with TLS and a bearer token). The
//! OpenAPI document is served at `/v1/openapi.json`.

use crate::jobs::Jobs;
use crate::tracking::{self, ChangesResult, ErrorOut};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use machine::{CheckpointKind, MachineError, Store};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;
use tokio::sync::Notify;
use vdisk::VdiskError;

pub const OPENAPI: &str = include_str!("openapi.json");

#[derive(Clone)]
pub struct Api {
    /// The machines; its pool holds the disks the daemon serves.
    pub store: Store,
    pub jobs: Arc<Jobs>,
    pub shutdown: Arc<Notify>,
    /// Required as `Authorization: Bearer <token>` when set (TCP).
    pub token: Option<Arc<String>>,
}

/// An error answer: `{"error": kind, "message": ...}` with a status code.
pub struct ApiError(StatusCode, String, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1, "message": self.2}))).into_response()
    }
}

impl From<VdiskError> for ApiError {
    fn from(e: VdiskError) -> Self {
        match &e {
            VdiskError::Tracking(t) => {
                ApiError(StatusCode::CONFLICT, t.kind().into(), e.to_string())
            }
            VdiskError::Vhdx(vhdx::Error::InvalidParameter(_)) => {
                ApiError(StatusCode::BAD_REQUEST, "invalid".into(), e.to_string())
            }
            VdiskError::OutOfRange { .. } => ApiError(
                StatusCode::BAD_REQUEST,
                "out_of_range".into(),
                e.to_string(),
            ),
            _ => ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                "io".into(),
                e.to_string(),
            ),
        }
    }
}

impl From<MachineError> for ApiError {
    fn from(e: MachineError) -> Self {
        match e {
            MachineError::Disk(d) => d.into(),
            e => {
                let status = if e.is_not_found() {
                    StatusCode::NOT_FOUND
                } else if e.is_invalid() {
                    StatusCode::BAD_REQUEST
                } else {
                    StatusCode::INTERNAL_SERVER_ERROR
                };
                ApiError(status, e.kind().into(), e.to_string())
            }
        }
    }
}

fn not_found(what: String) -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "not_found".into(), what)
}
fn bad_request(what: String) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, "invalid".into(), what)
}

type ApiResult = Result<Json<Value>, ApiError>;

/// Runs blocking work off the async threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "panic".into(),
            e.to_string(),
        )
    })?
}

fn to_json<T: serde::Serialize>(v: T) -> ApiResult {
    Ok(Json(
        serde_json::to_value(v).map_err(|e| bad_request(e.to_string()))?,
    ))
}

/// Every route: method and path (the OpenAPI document lists the same).
pub const ROUTES: &[(&str, &str)] = &[
    ("get", "/v1/openapi.json"),
    ("get", "/v1/status"),
    ("post", "/v1/shutdown"),
    ("get", "/v1/exports"),
    ("get", "/v1/machines"),
    ("get", "/v1/machines/{machine}"),
    ("post", "/v1/machines/{machine}/checkpoints"),
    ("delete", "/v1/machines/{machine}/checkpoints/{id}"),
    ("post", "/v1/machines/{machine}/checkpoints/{id}/apply"),
    ("post", "/v1/machines/{machine}/checkpoints/{id}/convert"),
    ("delete", "/v1/machines/{machine}/reference-points/{id}"),
    ("get", "/v1/machines/{machine}/disks/{disk}/tracking"),
    (
        "post",
        "/v1/machines/{machine}/disks/{disk}/tracking/enable",
    ),
    (
        "post",
        "/v1/machines/{machine}/disks/{disk}/tracking/disable",
    ),
    ("post", "/v1/machines/{machine}/disks/{disk}/tracking/seal"),
    (
        "post",
        "/v1/machines/{machine}/disks/{disk}/tracking/release",
    ),
    ("get", "/v1/machines/{machine}/disks/{disk}/changes"),
    ("post", "/v1/machines/{machine}/backups"),
    ("post", "/v1/restores"),
    ("post", "/v1/verifications"),
    ("get", "/v1/jobs"),
    ("get", "/v1/jobs/{id}"),
];

pub fn router(api: Api) -> Router {
    Router::new()
        .route(
            "/v1/openapi.json",
            get(|| async { ([("content-type", "application/json")], OPENAPI) }),
        )
        .route("/v1/status", get(status))
        .route("/v1/shutdown", post(shutdown))
        .route("/v1/exports", get(exports))
        .route("/v1/machines", get(machines))
        .route("/v1/machines/{machine}", get(machine))
        .route(
            "/v1/machines/{machine}/checkpoints",
            post(checkpoint_create),
        )
        .route(
            "/v1/machines/{machine}/checkpoints/{id}",
            delete(checkpoint_delete),
        )
        .route(
            "/v1/machines/{machine}/checkpoints/{id}/apply",
            post(checkpoint_apply),
        )
        .route(
            "/v1/machines/{machine}/checkpoints/{id}/convert",
            post(checkpoint_convert),
        )
        .route(
            "/v1/machines/{machine}/reference-points/{id}",
            delete(reference_destroy),
        )
        .route(
            "/v1/machines/{machine}/disks/{disk}/tracking",
            get(tracking_status),
        )
        .route(
            "/v1/machines/{machine}/disks/{disk}/tracking/enable",
            post(tracking_enable),
        )
        .route(
            "/v1/machines/{machine}/disks/{disk}/tracking/disable",
            post(tracking_disable),
        )
        .route(
            "/v1/machines/{machine}/disks/{disk}/tracking/seal",
            post(tracking_seal),
        )
        .route(
            "/v1/machines/{machine}/disks/{disk}/tracking/release",
            post(tracking_release),
        )
        .route("/v1/machines/{machine}/disks/{disk}/changes", get(changes))
        .route("/v1/machines/{machine}/backups", post(backup_start))
        .route("/v1/restores", post(restore_start))
        .route("/v1/verifications", post(verify_start))
        .route("/v1/jobs", get(jobs))
        .route("/v1/jobs/{id}", get(job))
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
            return ApiError(
                StatusCode::UNAUTHORIZED,
                "unauthorized".into(),
                "send the daemon's token as `Authorization: Bearer <token>`".into(),
            )
            .into_response();
        }
    }
    next.run(req).await
}

/// Compares secrets in time that does not depend on where they differ.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    bool::from(a.ct_eq(b))
}

async fn status(State(api): State<Api>) -> ApiResult {
    Ok(Json(json!({
        "version": env!("CARGO_PKG_VERSION"),
        "pid": std::process::id(),
        "home": api.store.home(),
        "jobs_running": api.jobs.running(),
    })))
}

async fn shutdown(State(api): State<Api>) -> ApiResult {
    api.shutdown.notify_one();
    Ok(Json(json!({"shutting_down": true})))
}

async fn exports(State(api): State<Api>) -> ApiResult {
    let list = blocking(move || {
        let e = super::exports::DaemonExports {
            store: api.store.clone(),
        };
        Ok(nbd::Exports::list(&e))
    })
    .await?;
    Ok(Json(Value::Array(
        list.into_iter()
            .map(|e| json!({"name": e.name, "description": e.description}))
            .collect(),
    )))
}

async fn machines(State(api): State<Api>) -> ApiResult {
    blocking(move || to_json(api.store.list()?)).await
}

fn load(api: &Api, name: &str) -> Result<machine::Machine, ApiError> {
    if !api.store.exists(name)? {
        return Err(not_found(format!("no machine named {name:?}")));
    }
    Ok(api.store.load(name)?)
}

async fn machine(State(api): State<Api>, Path(name): Path<String>) -> ApiResult {
    blocking(move || to_json(load(&api, &name)?)).await
}

#[derive(Deserialize, Default)]
struct CheckpointBody {
    /// `standard` (default) or `recovery`.
    kind: Option<String>,
    /// `crash` or `application` (default when the machine has a freeze hook).
    consistency: Option<String>,
}

async fn checkpoint_create(
    State(api): State<Api>,
    Path(name): Path<String>,
    body: Option<Json<CheckpointBody>>,
) -> ApiResult {
    let b = body.map(|b| b.0).unwrap_or_default();
    blocking(move || {
        let m = load(&api, &name)?;
        let kind = match b.kind.as_deref() {
            None | Some("standard") => CheckpointKind::Standard,
            Some("recovery") => CheckpointKind::Recovery,
            Some(k) => {
                return Err(bad_request(format!(
                    "unknown checkpoint kind {k:?}: use standard or recovery"
                )))
            }
        };
        let consistency = match b.consistency.as_deref() {
            None => Store::default_consistency(&m),
            Some("crash") => machine::Consistency::Crash,
            Some("application") => machine::Consistency::Application,
            Some(c) => {
                return Err(bad_request(format!(
                    "unknown consistency {c:?}: use crash or application"
                )))
            }
        };
        let _lock = api.store.lock_machine(&name);
        to_json(api.store.create_checkpoint(&name, kind, consistency)?)
    })
    .await
}

async fn machine_op(
    api: Api,
    name: String,
    f: impl FnOnce(&Store, &str) -> ApiResult + Send + 'static,
) -> ApiResult {
    blocking(move || {
        load(&api, &name)?;
        let _lock = api.store.lock_machine(&name);
        f(&api.store, &name)
    })
    .await
}

async fn checkpoint_delete(
    State(api): State<Api>,
    Path((name, id)): Path<(String, u64)>,
) -> ApiResult {
    machine_op(api, name, move |s, n| to_json(s.delete_checkpoint(n, id)?)).await
}

async fn checkpoint_apply(
    State(api): State<Api>,
    Path((name, id)): Path<(String, u64)>,
) -> ApiResult {
    machine_op(api, name, move |s, n| {
        s.apply_checkpoint(n, id)?;
        Ok(Json(json!({"applied": id})))
    })
    .await
}

async fn checkpoint_convert(
    State(api): State<Api>,
    Path((name, id)): Path<(String, u64)>,
) -> ApiResult {
    machine_op(api, name, move |s, n| to_json(s.convert_checkpoint(n, id)?)).await
}

async fn reference_destroy(
    State(api): State<Api>,
    Path((name, id)): Path<(String, u64)>,
) -> ApiResult {
    machine_op(api, name, move |s, n| {
        s.destroy_reference_point(n, id)?;
        Ok(Json(json!({"destroyed": id})))
    })
    .await
}

/// Runs `f` on a live disk the daemon holds.
async fn on_disk(
    api: Api,
    machine: String,
    disk: String,
    f: impl FnOnce(&mut vdisk::Disk, String) -> ApiResult + Send + 'static,
) -> ApiResult {
    blocking(move || {
        let m = load(&api, &machine)?;
        if m.disk(&disk).is_none() {
            return Err(not_found(format!("machine {machine} has no disk {disk:?}")));
        }
        let name = format!("{machine}/{disk}");
        api.store
            .with_held(&machine, &disk, |d| Ok(f(d, name)))
            .map_err(|e| match e {
                e @ MachineError::NotOpen { .. } => ApiError(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "unavailable".into(),
                    e.to_string(),
                ),
                e => e.into(),
            })?
    })
    .await
}

async fn tracking_status(
    State(api): State<Api>,
    Path((m, d)): Path<(String, String)>,
) -> ApiResult {
    on_disk(api, m, d, |disk, name| {
        to_json(tracking::status_of(disk, name)?)
    })
    .await
}

#[derive(Deserialize, Default)]
struct EnableBody {
    granularity: Option<u64>,
}

async fn tracking_enable(
    State(api): State<Api>,
    Path((m, d)): Path<(String, String)>,
    body: Option<Json<EnableBody>>,
) -> ApiResult {
    let g = body
        .and_then(|b| b.0.granularity)
        .unwrap_or(rct::DEFAULT_GRANULARITY);
    on_disk(api, m, d, move |disk, _| {
        disk.enable_tracking(g)?;
        disk.flush()?;
        Ok(Json(json!({"enabled": true, "granularity": g})))
    })
    .await
}

async fn tracking_disable(
    State(api): State<Api>,
    Path((m, d)): Path<(String, String)>,
) -> ApiResult {
    on_disk(api, m, d, |disk, _| {
        disk.disable_tracking()?;
        disk.flush()?;
        Ok(Json(json!({"enabled": false})))
    })
    .await
}

async fn tracking_seal(State(api): State<Api>, Path((m, d)): Path<(String, String)>) -> ApiResult {
    on_disk(api, m, d, |disk, _| {
        let id = disk.seal()?;
        Ok(Json(json!({"id": id.to_string()})))
    })
    .await
}

#[derive(Deserialize)]
struct ReleaseBody {
    id: String,
}

async fn tracking_release(
    State(api): State<Api>,
    Path((m, d)): Path<(String, String)>,
    Json(b): Json<ReleaseBody>,
) -> ApiResult {
    on_disk(api, m, d, move |disk, _| {
        let id: rct::RctId = b.id.parse().map_err(|e: rct::RctError| {
            ApiError(StatusCode::CONFLICT, e.kind().into(), e.to_string())
        })?;
        disk.release(&id)?;
        Ok(Json(json!({"released": id.to_string()})))
    })
    .await
}

#[derive(Deserialize)]
struct ChangesQuery {
    since: String,
    until: Option<String>,
    #[serde(default)]
    offset: u64,
    length: Option<u64>,
    max_ranges: Option<usize>,
}

async fn changes(
    State(api): State<Api>,
    Path((m, d)): Path<(String, String)>,
    Query(q): Query<ChangesQuery>,
) -> ApiResult {
    on_disk(api, m, d, move |disk, _| {
        let r = tracking::changes_of(
            disk,
            &q.since,
            q.until.as_deref(),
            q.offset,
            q.length,
            q.max_ranges.unwrap_or(usize::MAX),
        )?;
        match r {
            ChangesResult::Changes(c) => to_json(c),
            ChangesResult::TrackingError(e) => Err(ApiError(
                StatusCode::CONFLICT,
                e.kind().into(),
                serde_json::to_string(&ErrorOut::new(&e)).unwrap_or_default(),
            )),
        }
    })
    .await
}

#[derive(Deserialize)]
struct BackupBody {
    /// The repository directory.
    to: std::path::PathBuf,
}

async fn backup_start(
    State(api): State<Api>,
    Path(name): Path<String>,
    Json(b): Json<BackupBody>,
) -> ApiResult {
    let a = api.clone();
    let n = name.clone();
    blocking(move || load(&a, &n).map(|_| ())).await?;
    let to = vhdx::paths::absolute(&b.to);
    let target = name.clone();
    let jobs = api.jobs.clone();
    let job = jobs.start("backup", &target, move |progress| {
        let _lock = api.store.lock_machine(&name);
        // The backup reports increments per disk; jobs report totals.
        let (mut disk, mut done) = (String::new(), 0u64);
        let mut tick = |d: &str, n: u64, total: u64| {
            if d != disk {
                disk = d.to_string();
                done = 0;
            }
            done += n;
            progress(d, done, total);
        };
        let s = backup::backup(&api.store, &name, &to, &mut tick).map_err(|e| e.to_string())?;
        serde_json::to_value(s).map_err(|e| e.to_string())
    });
    to_json(job)
}

#[derive(Deserialize)]
struct RestoreBody {
    repository: std::path::PathBuf,
    point: Option<u32>,
    disk: Option<String>,
    to: std::path::PathBuf,
    /// `vhdx` (default) or `raw`.
    format: Option<String>,
}

async fn restore_start(State(api): State<Api>, Json(b): Json<RestoreBody>) -> ApiResult {
    let format = match b.format.as_deref() {
        None | Some("vhdx") => backup::RestoreFormat::Vhdx,
        Some("raw") => backup::RestoreFormat::Raw,
        Some(f) => {
            return Err(bad_request(format!(
                "unknown format {f:?}: use vhdx or raw"
            )))
        }
    };
    let target = b.repository.display().to_string();
    let fs = api.store.fs().clone();
    let job = api.jobs.start("restore", &target, move |progress| {
        let mut p = |done, total| progress("restore", done, total);
        let files = backup::restore(
            &*fs,
            &b.repository,
            b.point,
            b.disk.as_deref(),
            &b.to,
            format,
            &mut p,
        )
        .map_err(|e| e.to_string())?;
        Ok(json!({ "files": files }))
    });
    to_json(job)
}

#[derive(Deserialize)]
struct VerifyBody {
    repository: std::path::PathBuf,
    point: Option<u32>,
}

async fn verify_start(State(api): State<Api>, Json(b): Json<VerifyBody>) -> ApiResult {
    let target = b.repository.display().to_string();
    let fs = api.store.fs().clone();
    let job = api.jobs.start("verify", &target, move |progress| {
        let mut p = |done, total| progress("verify", done, total);
        let r = backup::verify(&*fs, &b.repository, b.point, &mut p).map_err(|e| e.to_string())?;
        serde_json::to_value(r).map_err(|e| e.to_string())
    });
    to_json(job)
}

async fn jobs(State(api): State<Api>) -> ApiResult {
    to_json(api.jobs.list())
}

async fn job(State(api): State<Api>, Path(id): Path<u64>) -> ApiResult {
    api.jobs
        .get(id)
        .map(to_json)
        .unwrap_or_else(|| Err(not_found(format!("no job {id}"))))
}
