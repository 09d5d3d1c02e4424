//! Resilient change tracking: enable, seal, release, retained IDs, and
//! the changed ranges between two RCT IDs, paged exactly like
//! `QueryChangesVirtualDisk`.

use super::args::{self, call, put_text, refpoint_disk};
use super::disk::put_page;
use super::types::refpoint_range;
use crate::error::{tracking_code, Failure, REFPOINT_E_BUFFER_TOO_SMALL};
use crate::paging;
use std::ffi::{c_char, c_int};

/// Starts (or restarts) change tracking; `granularity` is the bytes per
/// tracked region (a power of two, 0: the default of 64 KiB). Every
/// earlier RCT ID stops being valid.
///
/// # Safety
/// `disk` is an open handle.
#[no_mangle]
pub unsafe extern "C" fn refpoint_tracking_enable(
    disk: *mut refpoint_disk,
    granularity: u64,
) -> c_int {
    let g = (granularity != 0).then_some(granularity);
    // SAFETY: as the caller promises.
    call(|| unsafe { args::handle(disk) }?.enable_tracking(g))
}

/// Stops change tracking and removes its file.
///
/// # Safety
/// `disk` is an open handle.
#[no_mangle]
pub unsafe extern "C" fn refpoint_tracking_disable(disk: *mut refpoint_disk) -> c_int {
    // SAFETY: as the caller promises.
    call(|| unsafe { args::handle(disk) }?.disable_tracking())
}

/// Flushes, closes the current tracking generation and writes its RCT ID
/// (NUL-terminated, at most `REFPOINT_ID_MAX` bytes) to `id_out`: the ID
/// names this durable state of the disk.
///
/// # Safety
/// `disk` is an open handle; `id_out` points to `id_out_len` writable
/// bytes.
#[no_mangle]
pub unsafe extern "C" fn refpoint_seal(
    disk: *mut refpoint_disk,
    id_out: *mut c_char,
    id_out_len: usize,
) -> c_int {
    call(|| {
        // SAFETY: as the caller promises.
        let out = unsafe { args::bytes_mut(id_out.cast(), id_out_len, "id_out") }?;
        if out.len() < crate::abi::types::REFPOINT_ID_MAX {
            return Err(Failure::new(
                REFPOINT_E_BUFFER_TOO_SMALL,
                format!(
                    "id_out has {} bytes; give REFPOINT_ID_MAX ({})",
                    out.len(),
                    crate::abi::types::REFPOINT_ID_MAX
                ),
            ));
        }
        let id = unsafe { args::handle(disk) }?.seal()?;
        put_text(&id, out, "the RCT ID")
    })
}

/// Releases an RCT ID: changes since it can no longer be asked.
///
/// # Safety
/// `disk` is an open handle; `id` is a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn refpoint_release(disk: *mut refpoint_disk, id: *const c_char) -> c_int {
    call(|| {
        // SAFETY: as the caller promises.
        let id = unsafe { args::text(id, "id") }?;
        unsafe { args::handle(disk) }?.release(id)
    })
}

/// The RCT IDs changes can be asked since, oldest first, one per line,
/// NUL-terminated, into `buf`. `*needed` (if not NULL) gets the bytes
/// the list takes with its NUL, also when `buf` is too small
/// (`REFPOINT_E_BUFFER_TOO_SMALL`).
///
/// # Safety
/// `disk` is an open handle; `buf` points to `len` writable bytes;
/// `needed` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn refpoint_retained_ids(
    disk: *mut refpoint_disk,
    buf: *mut c_char,
    len: usize,
    needed: *mut usize,
) -> c_int {
    call(|| {
        // SAFETY: as the caller promises.
        let buf = unsafe { args::bytes_mut(buf.cast(), len, "buf") }?;
        let needed = unsafe { args::optional_out(needed, "needed") }?;
        let status = unsafe { args::handle(disk) }?.tracking_status()?;
        if let Some(e) = status.error {
            return Err(Failure::new(tracking_code(&e.error), e.message));
        }
        let list = status.retained_ids.join("\n");
        if let Some(n) = needed {
            n.set(list.len() + 1);
        }
        put_text(&list, buf, "the ID list")
    })
}

/// The ranges changed since `since_id` (until `until_id`; NULL: now)
/// within `offset..offset+length`, like `QueryChangesVirtualDisk`: at
/// most `max_ranges` ranges go to `ranges`, `*n_ranges` says how many, and
/// `*processed_length` how many bytes from `offset` they account for.
/// Continue at `offset + *processed_length` until it equals `length`
/// (which may reach past the end of the disk: `UINT64_MAX` means "to the
/// end"). A tracking error (`refpoint_is_tracking_error`) means: take a
/// full backup.
///
/// # Safety
/// `disk` is an open handle; `since_id` is a NUL-terminated string;
/// `until_id` is one or NULL; `ranges` points to `max_ranges` writable
/// `refpoint_range`; `n_ranges` and `processed_length` are writable (they
/// may alias each other or `ranges`: each is written once, at the end).
#[no_mangle]
#[allow(clippy::too_many_arguments)] // the shape QueryChangesVirtualDisk users know
pub unsafe extern "C" fn refpoint_query_changes(
    disk: *mut refpoint_disk,
    since_id: *const c_char,
    until_id: *const c_char,
    offset: u64,
    length: u64,
    ranges: *mut refpoint_range,
    max_ranges: usize,
    n_ranges: *mut usize,
    processed_length: *mut u64,
) -> c_int {
    call(|| {
        // SAFETY: as the caller promises.
        let since = unsafe { args::text(since_id, "since_id") }?;
        let until = unsafe { args::optional_text(until_id, "until_id") }?;
        let n = unsafe { args::out(n_ranges, "n_ranges") }?;
        let processed = unsafe { args::out(processed_length, "processed_length") }?;
        n.set(0);
        processed.set(0);
        let page = {
            let mut h = unsafe { args::handle(disk) }?;
            paging::changes(&mut h, since, until, offset, length, max_ranges)?
        };
        unsafe { put_page(&page, ranges, max_ranges, n, processed) }
    })
}
