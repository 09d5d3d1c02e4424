//! Serves a 64 MiB in-memory disk as export `mem` on a unix socket:
//! `cargo run -p nbd --example memserve -- /tmp/mem.sock`
use nbd::mem::{MemDevice, StaticExports};
use std::sync::Arc;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let path = std::env::args().nth(1).unwrap_or_else(|| "mem.sock".into());
    let _ = std::fs::remove_file(&path);
    let listener = tokio::net::UnixListener::bind(&path)?;
    let exports = StaticExports::default().with("mem", Arc::new(MemDevice::new(64 << 20, false)));
    nbd::Server::new(Arc::new(exports), None)
        .serve_unix(listener)
        .await
}
