//! Opening, reading and writing a disk at virtual offsets, its
//! information and allocation map.

use super::args::{self, call, refpoint_disk};
use super::types::{fill_info, refpoint_info, refpoint_range};
use crate::error::{Failure, REFPOINT_E_BUFFER_TOO_SMALL};
use std::ffi::{c_char, c_int, c_void};
use std::path::Path;

/// Open the disk read-only: writes and tracking changes are refused.
pub const REFPOINT_OPEN_READ_ONLY: u32 = 1;
const KNOWN_FLAGS: u32 = REFPOINT_OPEN_READ_ONLY;

/// Opens a disk: a file path (VHDX chain or raw), `MACHINE/DISK` (or
/// `MACHINE/DISK@checkpoint-N`, a checkpoint's frozen view) in
/// `state_dir` (NULL: `$REFPOINT_HOME`, else `./refpoint-data`), or a
/// remote daemon's `refpoint+https://HOST:PORT/MACHINE/DISK`. A machine
/// disk goes through the daemon when one runs on that state directory.
///
/// # Safety
/// `path_or_machine_disk` and `state_dir` are NUL-terminated strings (or
/// NULL); `out` points to writable storage for one pointer.
#[no_mangle]
pub unsafe extern "C" fn refpoint_open(
    path_or_machine_disk: *const c_char,
    state_dir: *const c_char,
    flags: u32,
    out: *mut *mut refpoint_disk,
) -> c_int {
    call(|| {
        // SAFETY: as the caller promises (see above).
        let out = unsafe { args::out(out, "out") }?;
        *out = std::ptr::null_mut();
        let what = unsafe { args::text(path_or_machine_disk, "path_or_machine_disk") }?;
        let home = unsafe { args::optional_text(state_dir, "state_dir") }?;
        if flags & !KNOWN_FLAGS != 0 {
            return Err(Failure::invalid(format!(
                "unknown flags {:#x} (known: REFPOINT_OPEN_READ_ONLY)",
                flags & !KNOWN_FLAGS
            )));
        }
        let read_only = flags & REFPOINT_OPEN_READ_ONLY != 0;
        let h = crate::open::open(what, home.map(Path::new), read_only)?;
        *out = Box::into_raw(refpoint_disk::new(h));
        Ok(())
    })
}

/// Closes a disk (NULL is ignored). Writes not yet flushed are flushed,
/// but a failure then cannot be reported: call `refpoint_flush` first.
///
/// # Safety
/// `disk` is NULL or an open handle no other thread is using.
#[no_mangle]
pub unsafe extern "C" fn refpoint_close(disk: *mut refpoint_disk) {
    let _ = call(|| {
        // SAFETY: as the caller promises.
        unsafe { args::close(disk) };
        Ok(())
    });
}

/// The disk's virtual size in bytes.
///
/// # Safety
/// `disk` is an open handle; `out` points to a writable `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn refpoint_virtual_size(disk: *mut refpoint_disk, out: *mut u64) -> c_int {
    call(|| {
        // SAFETY: as the caller promises.
        let out = unsafe { args::out(out, "out") }?;
        *out = unsafe { args::handle(disk) }?.size;
        Ok(())
    })
}

/// Format, geometry, chain depth, identity and tracking state.
///
/// # Safety
/// `disk` is an open handle; `out` points to a writable `refpoint_info`.
#[no_mangle]
pub unsafe extern "C" fn refpoint_get_info(
    disk: *mut refpoint_disk,
    out: *mut refpoint_info,
) -> c_int {
    call(|| {
        // SAFETY: as the caller promises.
        let out = unsafe { args::out(out, "out") }?;
        let info = unsafe { args::handle(disk) }?.info()?;
        fill_info(out, &info)
    })
}

/// Reads `len` bytes at virtual offset `offset` (through the whole
/// differencing chain; unallocated ranges read as zeros).
///
/// # Safety
/// `disk` is an open handle; `buf` points to `len` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn refpoint_read(
    disk: *mut refpoint_disk,
    offset: u64,
    buf: *mut c_void,
    len: usize,
) -> c_int {
    call(|| {
        // SAFETY: as the caller promises.
        let buf = unsafe { args::bytes_mut(buf, len, "buf") }?;
        unsafe { args::handle(disk) }?.read(offset, buf)
    })
}

/// Writes `len` bytes at virtual offset `offset`; tracked when tracking is
/// on. Durable once `refpoint_flush` returns 0.
///
/// # Safety
/// `disk` is an open handle; `buf` points to `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn refpoint_write(
    disk: *mut refpoint_disk,
    offset: u64,
    buf: *const c_void,
    len: usize,
) -> c_int {
    call(|| {
        // SAFETY: as the caller promises.
        let data = unsafe { args::bytes(buf, len, "buf") }?;
        unsafe { args::handle(disk) }?.write(offset, data)
    })
}

/// Writes zeros over `length` bytes at `offset` (deallocating where the
/// format allows); tracked like a write.
///
/// # Safety
/// `disk` is an open handle.
#[no_mangle]
pub unsafe extern "C" fn refpoint_zero(
    disk: *mut refpoint_disk,
    offset: u64,
    length: u64,
) -> c_int {
    // SAFETY: as the caller promises.
    call(|| unsafe { args::handle(disk) }?.zero(offset, length))
}

/// Makes every write before it durable (and its tracking marks).
///
/// # Safety
/// `disk` is an open handle.
#[no_mangle]
pub unsafe extern "C" fn refpoint_flush(disk: *mut refpoint_disk) -> c_int {
    // SAFETY: as the caller promises.
    call(|| unsafe { args::handle(disk) }?.flush())
}

/// The ranges of `offset..offset+length` that may hold data (the others
/// read as zeros), so a full backup can skip holes. Pages like
/// `refpoint_query_changes`: at most `max_ranges` ranges go to `ranges`,
/// `*n_ranges` says how many, `*processed_length` how many bytes from
/// `offset` they cover; continue at `offset + *processed_length` until it
/// equals `length`. `length` is clamped to the end of the disk.
///
/// # Safety
/// `disk` is an open handle; `ranges` points to `max_ranges` writable
/// `refpoint_range`; `n_ranges` and `processed_length` are writable.
#[no_mangle]
pub unsafe extern "C" fn refpoint_allocation(
    disk: *mut refpoint_disk,
    offset: u64,
    length: u64,
    ranges: *mut refpoint_range,
    max_ranges: usize,
    n_ranges: *mut usize,
    processed_length: *mut u64,
) -> c_int {
    call(|| {
        // SAFETY: as the caller promises.
        let ranges = unsafe { args::array_mut(ranges, max_ranges, "ranges") }?;
        let n = unsafe { args::out(n_ranges, "n_ranges") }?;
        let processed = unsafe { args::out(processed_length, "processed_length") }?;
        *n = 0;
        *processed = 0;
        let mut h = unsafe { args::handle(disk) }?;
        let length = length.min(h.size.saturating_sub(offset));
        let map = h.allocation(offset, length)?;
        let mut done = 0;
        for e in map {
            if !e.allocated {
                done = e.offset + e.length - offset;
                continue;
            }
            if *n == ranges.len() {
                if *n == 0 {
                    return Err(Failure::new(
                        REFPOINT_E_BUFFER_TOO_SMALL,
                        "ranges has room for no range (max_ranges is 0)",
                    ));
                }
                break;
            }
            ranges[*n] = refpoint_range {
                offset: e.offset,
                length: e.length,
            };
            *n += 1;
            done = e.offset + e.length - offset;
        }
        *processed = done;
        Ok(())
    })
}
