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

mod payload;
mod table;

pub use payload::{Payload, Query};
pub use table::*;

use std::fmt;
use utoipa::openapi::schema::Type;

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
