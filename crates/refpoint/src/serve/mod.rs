//! `refpoint serve`: the daemon. It holds every machine disk open
//! (read-write, tracked) and serves it over NBD as `<machine>/<disk>`,
//! checkpoints and backup points read-only, and answers the management
//! API. The CLI talks to it when it runs (see [`client`]).
//!
//! ```text
//!  NBD clients ──► nbd.sock / --listen (TLS) ──► nbd::Server ──► DaemonExports
//!                                                                  │
//!  CLI, tools ───► api.sock / --api-listen (TLS + token) ──► Api   │
//!                                                          │       ▼
//!                                  gated Store (checkpoints, ──► Registry: one slot
//!                                  merges, backups park the       per machine disk,
//!                                  machine's slots)               RwLock<Option<Disk>>
//! ```
//!
//! Shutdown (SIGTERM, SIGINT, `POST /v1/shutdown`): stop accepting, let
//! in-flight requests and running jobs finish, flush and close every disk.
//! After `kill -9`, the next start replays the VHDX logs and the tracking
//! journals: every write acknowledged by a flush is there, and every write
//! that reached a disk file is in its changes.

pub mod api;
pub mod client;
pub mod device;
pub mod exports;
pub mod jobs;
pub mod registry;

use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use storage::LocalFs;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::Notify;
use vdisk::Store;

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

pub fn run(o: ServeOptions) -> Result<()> {
    // Plain NBD writes run on the connection's task and may wait for the
    // disk (page-cache throttling, a checkpoint switch): more workers than
    // CPUs keep the other connections and the API going meanwhile.
    let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads((cpus * 2).max(4))
        .enable_all()
        .thread_name("refpoint-serve")
        .build()?;
    rt.block_on(serve(o))
}

/// Binds a unix socket, refusing if a live daemon answers on it and
/// removing a stale one.
async fn bind_unix(path: &Path) -> Result<UnixListener> {
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            bail!(
                "a refpoint daemon already listens on {}; stop it first (refpoint serve --stop) or use another state directory",
                path.display()
            );
        }
        std::fs::remove_file(path)
            .with_context(|| format!("removing the stale socket {}", path.display()))?;
    }
    let l = UnixListener::bind(path).with_context(|| format!("listening on {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

async fn bind_tcp(addr: Option<SocketAddr>) -> Result<Option<tokio::net::TcpListener>> {
    let Some(addr) = addr else { return Ok(None) };
    let l = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
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
            bail!(
                "the token in {} is shorter than 16 characters",
                path.display()
            );
        }
        return Ok(t);
    }
    let t = format!(
        "{}{}",
        uuid::Uuid::new_v4().simple(),
        uuid::Uuid::new_v4().simple()
    );
    std::fs::write(&path, format!("{t}\n"))
        .with_context(|| format!("writing {}", path.display()))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    eprintln!("API token written to {}", path.display());
    Ok(t)
}

async fn serve(o: ServeOptions) -> Result<()> {
    std::fs::create_dir_all(&o.home).with_context(|| format!("creating {}", o.home.display()))?;
    let tls = match (&o.tls_cert, &o.tls_key) {
        (Some(c), Some(k)) => Some(nbd::tls::server_config(c, k, o.tls_client_ca.as_deref())?),
        (None, None) => None,
        _ => bail!("--tls-cert and --tls-key go together"),
    };
    if (o.listen.is_some() || o.api_listen.is_some()) && tls.is_none() {
        bail!("listening on TCP needs TLS: give --tls-cert and --tls-key (PEM files)");
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

    let store = Store::new(Arc::new(LocalFs), &o.home);
    let registry = registry::Registry::new(store);
    let r = registry.clone();
    let problems = tokio::task::spawn_blocking(move || r.open_all()).await?;
    for p in &problems {
        tracing::warn!("not serving {p}");
    }
    let exports = Arc::new(exports::DaemonExports {
        registry: registry.clone(),
    });
    let server = nbd::Server::new(exports, tls.clone());
    let shutdown = Arc::new(Notify::new());
    let jobs = Arc::new(jobs::Jobs::default());
    let api_state = api::Api {
        registry: registry.clone(),
        store: registry.gated_store(),
        jobs: jobs.clone(),
        shutdown: shutdown.clone(),
        token: None,
    };

    let mut tasks = tokio::task::JoinSet::new();
    {
        let s = server.clone();
        tasks.spawn(async move {
            s.serve_unix(nbd_listener)
                .await
                .map_err(anyhow::Error::from)
        });
    }
    if let Some(l) = nbd_tcp {
        eprintln!("NBD on {} (TLS required)", l.local_addr()?);
        let s = server.clone();
        tasks.spawn(async move { s.serve_tcp(l, true).await.map_err(anyhow::Error::from) });
    }
    let stop_api = Arc::new(Notify::new());
    {
        let router = api::router(api_state.clone());
        let stop = stop_api.clone();
        tasks.spawn(async move {
            axum::serve(api_listener, router)
                .with_graceful_shutdown(async move { stop.notified().await })
                .await
                .map_err(anyhow::Error::from)
        });
    }
    if let Some(l) = api_tcp {
        let mut state = api_state.clone();
        state.token = api_token;
        eprintln!("API on https://{} (token required)", l.local_addr()?);
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.clone().expect("checked above"));
        tasks.spawn(client::serve_api_tls(
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
        registry.open_count(),
        if problems.is_empty() {
            String::new()
        } else {
            format!(", {} not served", problems.len())
        }
    );

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
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
            tracing::warn!("listener ended with {e:#}");
        }
    }
    let r = registry.clone();
    let problems = tokio::task::spawn_blocking(move || r.close_all()).await?;
    let _ = std::fs::remove_file(&o.nbd_socket);
    let _ = std::fs::remove_file(&o.api_socket);
    if !problems.is_empty() {
        bail!("closing disks failed: {}", problems.join("; "));
    }
    eprintln!("refpoint daemon: every disk flushed and closed");
    Ok(())
}
