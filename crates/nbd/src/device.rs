//! What the server serves: a [`BlockDevice`] per export, found by name in
//! an [`Exports`] catalog. The server knows nothing about disk formats.

use crate::proto::*;
use std::sync::Arc;

/// An error a device reports for one request; the server answers the
/// request with [`DeviceError::errno`] and keeps serving.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct DeviceError {
    /// One of the protocol's error values (`NBD_EIO`, `NBD_ENOSPC`, ...).
    pub errno: u32,
    pub message: String,
}

impl DeviceError {
    pub fn new(errno: u32, message: impl Into<String>) -> Self {
        DeviceError {
            errno,
            message: message.into(),
        }
    }
    pub fn io(message: impl Into<String>) -> Self {
        Self::new(NBD_EIO, message)
    }
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(NBD_EINVAL, message)
    }
}

impl From<std::io::Error> for DeviceError {
    fn from(e: std::io::Error) -> Self {
        let errno = match e.raw_os_error() {
            Some(28) => NBD_ENOSPC,
            Some(1) | Some(13) | Some(30) => NBD_EPERM,
            Some(12) => NBD_ENOMEM,
            Some(22) => NBD_EINVAL,
            _ => NBD_EIO,
        };
        DeviceError::new(errno, e.to_string())
    }
}

pub type DeviceResult<T> = std::result::Result<T, DeviceError>;

/// One run of a block-status answer: `length` bytes with `flags`
/// (for `base:allocation`: `NBD_STATE_HOLE | NBD_STATE_ZERO`; for change
/// contexts: `NBD_STATE_DIRTY`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub length: u64,
    pub flags: u32,
}

/// Block size constraints (§ "Block size constraints").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSize {
    pub minimum: u32,
    pub preferred: u32,
    pub maximum: u32,
}

impl Default for BlockSize {
    fn default() -> Self {
        BlockSize {
            minimum: 1,
            preferred: 4096,
            maximum: MAX_PAYLOAD,
        }
    }
}

/// A disk as the server sees it. Calls are blocking; the server runs them
/// on a blocking thread pool, several at once (the device serializes what
/// it must). Ranges are checked against [`size`](Self::size) before a call.
pub trait BlockDevice: Send + Sync {
    fn size(&self) -> u64;
    fn read_only(&self) -> bool;
    /// Why writes are refused on a read-only export: the message of the
    /// EPERM error a structured reply carries.
    fn read_only_reason(&self) -> String {
        "the export is read-only".into()
    }
    fn block_size(&self) -> BlockSize {
        BlockSize::default()
    }
    /// Whether clients may open several connections that all see each
    /// other's writes once flushed (`NBD_FLAG_CAN_MULTI_CONN`).
    fn multi_conn(&self) -> bool {
        false
    }
    fn description(&self) -> Option<String> {
        None
    }

    fn read(&self, offset: u64, buf: &mut [u8]) -> DeviceResult<()>;
    /// Writes; with `fua` the data must be durable when this returns.
    fn write(&self, offset: u64, data: &[u8], fua: bool) -> DeviceResult<()>;
    fn flush(&self) -> DeviceResult<()>;
    fn trim(&self, offset: u64, length: u64) -> DeviceResult<()>;
    /// Makes the range read as zeros; `may_trim` allows deallocating it.
    fn write_zeroes(&self, offset: u64, length: u64, may_trim: bool) -> DeviceResult<()>;
    /// A hint to prefetch; the default does nothing.
    fn cache(&self, _offset: u64, _length: u64) -> DeviceResult<()> {
        Ok(())
    }

    /// `base:allocation` from `offset` on: extents covering at least a
    /// prefix of `offset..offset+length` (the server asks again for the rest).
    fn allocation(&self, offset: u64, length: u64) -> DeviceResult<Vec<Extent>>;

    /// Meta contexts besides `base:allocation` that match `query` (a
    /// prefix such as `"qemu:dirty-bitmap:"`, or a whole name), for
    /// NBD_OPT_LIST_META_CONTEXT.
    fn list_meta_contexts(&self, _query: &str) -> Vec<String> {
        Vec::new()
    }
    /// Whether `name` (not `base:allocation`) is a context this device can
    /// answer, for NBD_OPT_SET_META_CONTEXT.
    fn has_meta_context(&self, _name: &str) -> bool {
        false
    }
    /// Block status for a context accepted by `has_meta_context`.
    fn meta_extents(&self, name: &str, _offset: u64, _length: u64) -> DeviceResult<Vec<Extent>> {
        Err(DeviceError::invalid(format!("unknown meta context {name}")))
    }
}

/// An export as listed to clients.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportInfo {
    pub name: String,
    pub description: String,
}

/// The catalog the server looks exports up in; it may change while the
/// server runs (new checkpoints, new machines).
pub trait Exports: Send + Sync {
    fn list(&self) -> Vec<ExportInfo>;
    /// The device for `name`, or why there is none (sent to the client).
    fn open(&self, name: &str) -> Result<Arc<dyn BlockDevice>, String>;
}
