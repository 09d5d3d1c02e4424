//! The boundary: every pointer and length a C caller passes is checked
//! here, and every call runs under [`call`], which catches panics and
//! records the failure message for `refpoint_last_error`.
//!
//! The only `unsafe` of the crate is in this directory: turning the
//! caller's pointers into references. Each conversion states what the
//! caller promises (the header documents it); what can be checked (null,
//! a length that overflows, a handle that was closed, text that is not
//! UTF-8) is checked and refused with `REFPOINT_E_INVALID`.

use crate::error::{record, Failure, Result, REFPOINT_E_INTERNAL, REFPOINT_OK};
use crate::handle::Handle;
use std::ffi::{c_char, c_int, c_void, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, MutexGuard};

/// Marks a live handle. Using a handle after `refpoint_close` is undefined
/// behaviour (the memory may hold another handle by then); the mark only
/// catches a pointer that never was a handle, or some double closes.
const LIVE: u64 = 0x7265_6670_6f69_6e74; // "refpoint"

/// An open disk (opaque to C).
pub struct refpoint_disk {
    magic: u64,
    inner: Mutex<Handle>,
}

impl refpoint_disk {
    pub fn new(h: Handle) -> Box<Self> {
        Box::new(Self {
            magic: LIVE,
            inner: Mutex::new(h),
        })
    }
}

/// Runs one C call: `Ok` is `REFPOINT_OK`, a failure is recorded and its
/// code returned, and a panic becomes `REFPOINT_E_INTERNAL` instead of
/// unwinding into C.
pub fn call(f: impl FnOnce() -> Result<()>) -> c_int {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(())) => REFPOINT_OK,
        Ok(Err(e)) => record(&e),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".into());
            record(&Failure::new(
                REFPOINT_E_INTERNAL,
                format!("internal error in librefpoint (please report it): {what}"),
            ))
        }
    }
}

/// The handle behind `disk`, locked for this call.
///
/// # Safety
/// `disk` is null or a pointer `refpoint_open` returned and
/// `refpoint_close` has not yet freed.
pub unsafe fn handle<'a>(disk: *mut refpoint_disk) -> Result<MutexGuard<'a, Handle>> {
    // SAFETY: the caller promises a live handle or null; null is refused.
    let d = unsafe { disk.as_ref() }.ok_or_else(|| Failure::invalid("disk is NULL"))?;
    if d.magic != LIVE {
        return Err(Failure::invalid(
            "disk is not an open handle (closed already, or not from refpoint_open)",
        ));
    }
    d.inner.lock().map_err(|_| {
        Failure::new(
            REFPOINT_E_INTERNAL,
            "the handle is unusable after an internal error in an earlier call; close it",
        )
    })
}

/// Frees a handle.
///
/// # Safety
/// As [`handle`]; no other call may use `disk` now or later.
pub unsafe fn close(disk: *mut refpoint_disk) {
    if disk.is_null() {
        return;
    }
    // SAFETY: the caller promises a live handle that no other thread uses.
    let d = unsafe { &mut *disk };
    if d.magic != LIVE {
        return;
    }
    d.magic = 0;
    // SAFETY: `refpoint_open` made it with Box::into_raw, and it is freed
    // once (the magic is cleared above).
    let d = unsafe { Box::from_raw(disk) };
    let h = d.inner.into_inner().unwrap_or_else(|p| p.into_inner());
    if let Err(e) = h.close() {
        record(&e);
    }
}

/// A NUL-terminated UTF-8 string argument.
///
/// # Safety
/// `p` is null or points to a NUL-terminated string that stays valid for
/// the call.
pub unsafe fn text<'a>(p: *const c_char, what: &str) -> Result<&'a str> {
    if p.is_null() {
        return Err(Failure::invalid(format!("{what} is NULL")));
    }
    // SAFETY: non-null and NUL-terminated, as the caller promises.
    let s = unsafe { CStr::from_ptr(p) };
    s.to_str()
        .map_err(|_| Failure::invalid(format!("{what} is not UTF-8")))
}

/// An optional string argument: NULL is `None`.
///
/// # Safety
/// As [`text`].
pub unsafe fn optional_text<'a>(p: *const c_char, what: &str) -> Result<Option<&'a str>> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: as the caller promises.
    unsafe { text(p, what) }.map(Some)
}

fn check_len(p: *const c_void, len: usize, what: &str) -> Result<()> {
    if p.is_null() && len > 0 {
        return Err(Failure::invalid(format!(
            "{what} is NULL but its length is {len}"
        )));
    }
    if len > isize::MAX as usize {
        return Err(Failure::invalid(format!(
            "{what}: length {len} is too large"
        )));
    }
    Ok(())
}

/// A byte buffer to read from.
///
/// # Safety
/// `p` points to `len` readable bytes (or `len` is 0).
pub unsafe fn bytes<'a>(p: *const c_void, len: usize, what: &str) -> Result<&'a [u8]> {
    check_len(p, len, what)?;
    if len == 0 {
        return Ok(&[]);
    }
    // SAFETY: non-null, `len` bytes readable and at most isize::MAX, as
    // checked and promised; u8 has no alignment.
    Ok(unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len) })
}

/// A byte buffer to write into.
///
/// # Safety
/// `p` points to `len` writable bytes no one else touches during the call
/// (or `len` is 0).
pub unsafe fn bytes_mut<'a>(p: *mut c_void, len: usize, what: &str) -> Result<&'a mut [u8]> {
    check_len(p, len, what)?;
    if len == 0 {
        return Ok(&mut []);
    }
    // SAFETY: as for `bytes`, and exclusively the callee's for the call.
    Ok(unsafe { std::slice::from_raw_parts_mut(p.cast::<u8>(), len) })
}

/// An array of `len` `T` to fill.
///
/// # Safety
/// `p` points to `len` properly aligned, writable `T` (or `len` is 0).
pub unsafe fn array_mut<'a, T>(p: *mut T, len: usize, what: &str) -> Result<&'a mut [T]> {
    check_len(p.cast(), len.saturating_mul(size_of::<T>()), what)?;
    if len == 0 {
        return Ok(&mut []);
    }
    if !p.is_aligned() {
        return Err(Failure::invalid(format!("{what} is misaligned")));
    }
    // SAFETY: non-null, aligned, `len` writable elements (checked: the
    // byte length does not overflow isize), exclusively ours for the call.
    Ok(unsafe { std::slice::from_raw_parts_mut(p, len) })
}

/// An out-parameter, written through its raw pointer (never a reference),
/// so out-parameters that alias each other or a buffer stay defined: the
/// last write wins.
pub struct Out<T>(*mut T);

impl<T> Out<T> {
    pub fn set(&self, value: T) {
        // SAFETY: checked non-null and aligned at construction; the caller
        // promised it writable for the call; a raw write creates no
        // reference, so aliasing another argument is fine.
        unsafe { self.0.write(value) }
    }
}

/// An out-parameter (see [`Out`]).
///
/// # Safety
/// `p` is null or points to a writable, aligned `T` for the call.
pub unsafe fn out<T>(p: *mut T, what: &str) -> Result<Out<T>> {
    if p.is_null() {
        return Err(Failure::invalid(format!("{what} is NULL")));
    }
    if !p.is_aligned() {
        return Err(Failure::invalid(format!("{what} is misaligned")));
    }
    Ok(Out(p))
}

/// An optional out-parameter: NULL means the caller does not want it.
///
/// # Safety
/// As [`out`].
pub unsafe fn optional_out<T>(p: *mut T, what: &str) -> Result<Option<Out<T>>> {
    if p.is_null() {
        return Ok(None);
    }
    // SAFETY: as the caller promises.
    unsafe { out(p, what) }.map(Some)
}

/// Copies `s` with a terminating NUL into the caller's `buf` of `len`
/// bytes; too small → `REFPOINT_E_BUFFER_TOO_SMALL` naming the size needed.
pub fn put_text(s: &str, buf: &mut [u8], what: &str) -> Result<()> {
    let need = s.len() + 1;
    if buf.len() < need {
        return Err(Failure::new(
            crate::error::REFPOINT_E_BUFFER_TOO_SMALL,
            format!("{what} needs {need} bytes, the buffer has {}", buf.len()),
        ));
    }
    buf[..s.len()].copy_from_slice(s.as_bytes());
    buf[s.len()] = 0;
    Ok(())
}

// A handle may be used from any thread, one call at a time per handle.
const _: () = {
    const fn shared_across_threads<T: Send + Sync>() {}
    shared_across_threads::<refpoint_disk>();
};
