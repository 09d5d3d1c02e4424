//! # daemon — the refpoint daemon as a library
//!
//! It holds every machine disk open (read-write, tracked) in the machine
//! store's pool and serves it over NBD as `<machine>/<disk>`, checkpoints
//! and backup points read-only, and answers the management API.
//! `refpoint serve` parses its flags into [`ServeOptions`] and calls
//! [`run`]; protocol front ends plug in beside NBD the same way.
//!
//! ```text
//!  NBD clients ──► nbd.sock / --listen (TLS) ──► nbd::Server ──► exports.rs ─► device.rs
//!                                                                               │
//!  CLI, tools ───► api.sock / --api-listen (https.rs, TLS + token) ──► api.rs   │
//!                                                          │  jobs.rs           ▼
//!                                  machine::Store (checkpoints, ──► pool: one slot per
//!                                  merges, backups park the         machine disk,
//!                                  machine's slots)                 RwLock<Option<Disk>>
//! ```
//!
//! * `lib.rs`      options, listeners, start-up and shutdown
//! * `api.rs`      the management API's routes and handlers
//! * `https.rs`    the API over TLS on TCP
//! * `exports.rs`  export names and the NBD export catalog
//! * `device.rs`   NBD block devices over live and frozen disks
//! * `disks.rs`    what a disk is (format, geometry, chain, tracking)
//! * `jobs.rs`     long operations with progress (backups, host backups,
//!   restores, verifications, finishing an instant machine); an
//!   interrupted finish resumes at start
//! * `tracking.rs` tracking status and changes as the API answers them
//! * `error.rs`    [`DaemonError`]
//!
//! Shutdown (SIGTERM, SIGINT, `POST /v1/shutdown`): stop accepting, let
//! in-flight requests and running jobs finish, flush and close every disk.
//! After `kill -9`, the next start replays the VHDX logs and the tracking
//! journals: every write acknowledged by a flush is there, and every write
//! that reached a disk file is in its changes.

#![forbid(unsafe_code)]

pub mod api;
pub mod convert;
pub mod device;
pub mod disks;
mod error;
pub mod exports;
mod https;
pub mod jobs;
mod service;
pub mod tracking;

pub use error::{DaemonError, Result};
pub use service::Service;

use error::io;
use machine::Store;
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Notify;

/// Where a daemon of state directory `home` listens.
pub fn nbd_socket(home: &Path) -> PathBuf {
    home.join("nbd.sock")
}
pub fn api_socket(home: &Path) -> PathBuf {
    home.join("api.sock")
}

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub home: PathBuf,
    pub nbd_socket: PathBuf,
    pub api_socket: PathBuf,
    /// NBD on TCP (TLS required).
    pub listen: Option<SocketAddr>,
    /// The API on TCP (TLS and token required).
    pub api_listen: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_client_ca: Option<PathBuf>,
    /// The API token file (created with a random token if missing).
    pub token_file: Option<PathBuf>,
}

/// Runs the daemon until SIGTERM, SIGINT or `POST /v1/shutdown`.
pub fn run(o: ServeOptions) -> Result<()> {
    // Plain NBD writes run on the connection's task and may wait for the
    // disk (page-cache throttling, a checkpoint switch): more workers than
    // CPUs keep the other connections and the API going meanwhile.
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads((cpus * 2).max(4))
        .enable_all()
        .thread_name("refpoint-serve")
        .build()
        .map_err(DaemonError::Runtime)?;
    rt.block_on(serve(o))
}

/// Binds a unix socket, refusing if a live daemon answers on it and
/// removing a stale one.
async fn bind_unix(path: &Path) -> Result<UnixListener> {
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(DaemonError::AlreadyRunning { path: path.into() });
        }
        std::fs::remove_file(path).map_err(io(path, "removing the stale socket"))?;
    }
    let l = UnixListener::bind(path).map_err(|source| DaemonError::Listen {
        addr: path.display().to_string(),
        source,
    })?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(io(path, "restricting access to"))?;
    Ok(l)
}

async fn bind_tcp(addr: Option<SocketAddr>) -> Result<Option<tokio::net::TcpListener>> {
    let Some(addr) = addr else { return Ok(None) };
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| DaemonError::Listen {
            addr: addr.to_string(),
            source,
        })?;
    Ok(Some(l))
}

fn token(o: &ServeOptions) -> Result<String> {
    let path = o
        .token_file
        .clone()
        .unwrap_or_else(|| o.home.join("api.token"));
    if let Ok(t) = std::fs::read_to_string(&path) {
        let t = t.trim().to_string();
        if t.len() < 16 {
            return Err(DaemonError::ShortToken { path });
        }
        return Ok(t);
    }
    let t = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    std::fs::write(&path, format!("{t}\n")).map_err(io(&path, "writing"))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        .map_err(io(&path, "restricting access to"))?;
    eprintln!("API token written to {}", path.display());
    Ok(t)
}

async fn serve(o: ServeOptions) -> Result<()> {
    std::fs::create_dir_all(&o.home).map_err(io(&o.home, "creating"))?;
    let tls = match (&o.tls_cert, &o.tls_key) {
        (Some(c), Some(k)) => Some(nbd::tls::server_config(c, k, o.tls_client_ca.as_deref())?),
        (None, None) => None,
        _ => return Err(DaemonError::TlsIncomplete),
    };
    if (o.listen.is_some() || o.api_listen.is_some()) && tls.is_none() {
        return Err(DaemonError::TlsRequired);
    }
    // Before binding anything or opening disks: a bad token file leaves
    // no sockets behind.
    let api_token = match o.api_listen {
        Some(_) => Some(Arc::new(token(&o)?)),
        None => None,
    };
    // TCP first: a port in use fails before any socket file exists.
    let nbd_tcp = bind_tcp(o.listen).await?;
    let api_tcp = bind_tcp(o.api_listen).await?;
    let nbd_listener = bind_unix(&o.nbd_socket).await?;
    let api_listener = match bind_unix(&o.api_socket).await {
        Ok(l) => l,
        Err(e) => {
            let _ = std::fs::remove_file(&o.nbd_socket);
            return Err(e);
        }
    };

    let store = Store::local(&o.home);
    let s = store.clone();
    let problems = tokio::task::spawn_blocking(move || s.hold_all())
        .await
        .unwrap_or_else(|e| vec![format!("opening the disks panicked: {e}")]);
    for p in &problems {
        tracing::warn!("not serving {p}");
    }
    let exports = Arc::new(exports::DaemonExports {
        store: store.clone(),
    });
    let server = nbd::Server::new(exports, tls.clone());
    let shutdown = Arc::new(Notify::new());
    let jobs = Arc::new(jobs::Jobs::default());
    let api_state = api::Api {
        service: Service::holding(store.clone()),
        jobs: jobs.clone(),
        shutdown: shutdown.clone(),
        token: None,
        nbd_port: nbd_tcp
            .as_ref()
            .and_then(|l| l.local_addr().ok())
            .map(|a| a.port()),
    };
    // A finish that a kill or a restart interrupted goes on.
    for m in store.list_each().map(|(ms, _)| ms).unwrap_or_default() {
        if let Some(i) = m.instant.as_ref().filter(|i| i.finishing) {
            eprintln!("resuming the finish of instant machine {}", m.name);
            let r = ::api::FinishRequest {
                throttle: i.throttle,
            };
            api::start_finish_job(&api_state, &m.name, r);
        }
    }

    let mut tasks = tokio::task::JoinSet::new();
    {
        let s = server.clone();
        tasks.spawn(async move { s.serve_unix(nbd_listener).await });
    }
    if let Some(l) = nbd_tcp {
        if let Ok(a) = l.local_addr() {
            eprintln!("NBD on {a} (TLS required)");
        }
        let s = server.clone();
        tasks.spawn(async move { s.serve_tcp(l, true).await });
    }
    let stop_api = Arc::new(Notify::new());
    {
        let router = api::router(api_state.clone());
        let stop = stop_api.clone();
        tasks.spawn(async move {
            axum::serve(api_listener, router)
                .with_graceful_shutdown(async move { stop.notified().await })
                .await
        });
    }
    if let Some(l) = api_tcp {
        let mut state = api_state.clone();
        state.token = api_token;
        if let Ok(a) = l.local_addr() {
            eprintln!("API on https://{a} (token required)");
        }
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone().expect("checked above"));
        tasks.spawn(https::serve_api_tls(
            l,
            acceptor,
            api::router(state),
            stop_api.clone(),
        ));
    }
    eprintln!(
        "refpoint daemon: NBD on {}, API on {} ({} machine disks open{})",
        o.nbd_socket.display(),
        o.api_socket.display(),
        store.held_count(),
        if problems.is_empty() {
            String::new()
        } else {
            format!(", {} not served", problems.len())
        }
    );

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(DaemonError::Runtime)?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
        _ = shutdown.notified() => {},
    }
    eprintln!("refpoint daemon: shutting down");
    server.shutdown();
    stop_api.notify_waiters();
    // Running jobs (backups) finish: they hold checkpoints that must not
    // be left half done.
    while jobs.running() > 0 {
        tracing::info!("waiting for {} running jobs", jobs.running());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    while let Some(r) = tasks.join_next().await {
        if let Ok(Err(e)) = r {
            tracing::warn!("listener ended with {e}");
        }
    }
    let s = store.clone();
    let problems = tokio::task::spawn_blocking(move || s.release_all())
        .await
        .unwrap_or_else(|e| vec![format!("closing the disks panicked: {e}")]);
    let _ = std::fs::remove_file(&o.nbd_socket);
    let _ = std::fs::remove_file(&o.api_socket);
    if !problems.is_empty() {
        return Err(DaemonError::Close { problems });
    }
    eprintln!("refpoint daemon: every disk flushed and closed");
    Ok(())
}
