//! `GET /v1/exports`: the NBD export catalog.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// One NBD export: `<machine>/<disk>` (live, read-write, tracked),
/// `<machine>/<disk>@checkpoint-<id>` or `<machine>/<disk>@backup-<point>`
/// (read-only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Export {
    /// The name an NBD client asks for.
    pub name: String,
    /// For people, e.g. "live disk (read-write, tracked)".
    pub description: String,
}
