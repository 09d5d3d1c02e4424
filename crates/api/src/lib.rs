//! # api — refpoint's management API, typed
//!
//! The daemon answers HTTP/JSON on `<home>/api.sock` (and, when asked, on
//! TCP with TLS and a bearer token). This crate is that API as Rust: the
//! daemon's handlers take and return its types, the CLI calls it through
//! [`Client`], and the OpenAPI document is generated from the same types
//! and route table, so the three cannot disagree.
//!
//! ```text
//!   routes::ROUTES ──────────────┬──────────────────────┐
//!   (method, path, operation,    │                      │
//!    request / response types)   ▼                      ▼
//!                         openapi::openapi()      Client::<operation>()
//!   types::* ──ToSchema──►  (OpenAPI 3.1)          (blocking, unix or
//!      │                                            HTTPS; decodes types)
//!      └──serde──► the daemon's answers ◄──────────────────┘
//! ```
//!
//! ## Map
//!
//! * [`types`] — one module per resource: status and shutdown, exports,
//!   machines, checkpoints, reference points, tracking, changes, jobs,
//!   backups / restores / verifications, errors. Every request body, query
//!   and response, with JSON exactly as the daemon sends it.
//! * [`routes`] — the route table ([`routes::ROUTES`]): one [`routes::Route`]
//!   per route, with [`routes::Route::path_with`] to fill in (and
//!   percent-encode) its path.
//! * [`openapi()`] — the OpenAPI document, built from the table and the
//!   types' schemas, error answers and bearer scheme included.
//! * [`Client`] — one method per route, named as its operation id, plus
//!   [`Client::wait_job`] and `run_backup` / `run_host_backup` / `run_restore` /
//!   `run_verify`.
//! * [`Machines`] — the machines as a trait: [`Client`] implements it
//!   through the daemon, the daemon's service over a local store, so every
//!   command is written once.
//! * [`ApiError`] — what a call can fail with; [`ErrorBody`] and
//!   [`ErrorKind`] — the error answer on the wire and its stable kinds,
//!   each with the HTTP status the daemon sends it with.
//!
//! ## Errors on the wire
//!
//! Every error answer is an [`ErrorBody`]: `{"error": kind, "message":
//! text}`, and on a tracking refusal (always HTTP 409, nothing else is) also
//! `"tracking": {"error": kind, "message": text, "full_backup_required":
//! true}`. The daemon builds it with [`ErrorBody::new`] and sends it with
//! [`ErrorBody::status`]; the client turns it into [`ApiError::Api`].
//!
//! ## What this crate does not do
//!
//! It serves nothing (the daemon owns the HTTP server) and uses no other
//! refpoint crate: the daemon converts its own types into these.

#![forbid(unsafe_code)]

mod client;
mod encode;
mod error;
mod machines;
mod openapi;
pub mod routes;
pub mod types;

pub use client::{Client, DEFAULT_POLL_INTERVAL, SOCKET_NAME};
pub use error::ApiError;
pub use machines::{HostProgress, Machines, Progress};
pub use openapi::{openapi, BEARER};
pub use types::*;
