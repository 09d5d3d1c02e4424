//! Opening, reading and writing a disk at virtual offsets, its
//! information and allocation map.

use super::args::{self, call, refpoint_disk, Out};
use super::types::{make_info, refpoint_info, refpoint_range};
use crate::error::{Failure, Result};
use crate::paging::{self, Page};
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
        out.set(std::ptr::null_mut());
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
        out.set(Box::into_raw(refpoint_disk::new(h)));
        Ok(())
    })
}

/// Closes a disk (NULL is ignored): flushes what was written and closes
/// the file (or connection). A failure then can only be read from
/// `refpoint_last_error`: call `refpoint_flush` first to know. Using the
/// handle afterwards is undefined behaviour.
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
        let size = unsafe { args::handle(disk) }?.size;
        out.set(size);
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
        out.set(make_info(&info)?);
        Ok(())
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
/// `offset` they account for; continue at `offset + *processed_length`
/// until it equals `length` (which may reach past the end of the disk:
/// nothing lies there, so `UINT64_MAX` means "to the end").
///
/// # Safety
/// `disk` is an open handle; `ranges` points to `max_ranges` writable
/// `refpoint_range`; `n_ranges` and `processed_length` are writable (they
/// may alias each other or `ranges`: each is written once, at the end).
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
        let n = unsafe { args::out(n_ranges, "n_ranges") }?;
        let processed = unsafe { args::out(processed_length, "processed_length") }?;
        n.set(0);
        processed.set(0);
        let page = {
            let mut h = unsafe { args::handle(disk) }?;
            paging::allocation(&mut h, offset, length, max_ranges)?
        };
        unsafe { put_page(&page, ranges, max_ranges, n, processed) }
    })
}

/// Writes a page into the caller's buffers: the ranges first, then the
/// counts (so counts that alias the buffer still read right).
///
/// # Safety
/// As the page functions' callers promise for `ranges`.
pub unsafe fn put_page(
    page: &Page,
    ranges: *mut refpoint_range,
    max_ranges: usize,
    n: Out<usize>,
    processed: Out<u64>,
) -> Result<()> {
    {
        // SAFETY: as the caller promises.
        let out = unsafe { args::array_mut(ranges, max_ranges, "ranges") }?;
        for (slot, &(offset, length)) in out.iter_mut().zip(&page.ranges) {
            *slot = refpoint_range { offset, length };
        }
    }
    n.set(page.ranges.len());
    processed.set(page.processed);
    Ok(())
}
