//! The checkpoints and reference points of the machine a disk belongs
//! to: enough to run a whole backup without the command line.
//!
//! ```text
//! refpoint_checkpoint_create(disk, REFPOINT_CHECKPOINT_RECOVERY, &cp)
//! refpoint_checkpoint_rct_id(disk, cp, id)      the disk's ID at the checkpoint
//! refpoint_open("vm1/disk0@checkpoint-<cp>")    its frozen view, to read
//! refpoint_query_changes(disk, previous, id, …) what changed since last time
//! refpoint_checkpoint_convert(disk, cp, &rp)    the next backup starts here
//! ```

use super::args::{self, call, put_text, refpoint_disk, Out};
use crate::error::{Failure, Result, REFPOINT_E_BUFFER_TOO_SMALL, REFPOINT_E_NOT_FOUND};
use crate::handle::Handle;
use api::CheckpointKind;
use std::ffi::{c_char, c_int};

/// A standard checkpoint (kept, can be applied).
pub const REFPOINT_CHECKPOINT_STANDARD: u32 = 0;
/// A recovery checkpoint (for backup; becomes a reference point).
pub const REFPOINT_CHECKPOINT_RECOVERY: u32 = 1;

/// Creates a checkpoint of the disk's machine (every disk of it at one
/// instant; the freeze and thaw hooks run). Writes through open handles
/// wait while the disks switch, then go to the new files.
///
/// # Safety
/// `disk` is an open handle; `id_out` is NULL or a writable `uint64_t`.
#[no_mangle]
pub unsafe extern "C" fn refpoint_checkpoint_create(
    disk: *mut refpoint_disk,
    kind: u32,
    id_out: *mut u64,
) -> c_int {
    call(|| {
        let kind = match kind {
            REFPOINT_CHECKPOINT_STANDARD => CheckpointKind::Standard,
            REFPOINT_CHECKPOINT_RECOVERY => CheckpointKind::Recovery,
            k => return Err(Failure::invalid(format!(
                "checkpoint kind {k}: give REFPOINT_CHECKPOINT_STANDARD or REFPOINT_CHECKPOINT_RECOVERY"
            ))),
        };
        // SAFETY: as the caller promises.
        let out = unsafe { args::optional_out(id_out, "id_out") }?;
        let cp = unsafe { args::handle(disk) }?.create_checkpoint(kind)?;
        if let Some(o) = out {
            o.set(cp.id);
        }
        Ok(())
    })
}

/// The RCT ID this disk had at checkpoint `checkpoint` (ask changes
/// `until` it), NUL-terminated into `id_out`.
///
/// # Safety
/// `disk` is an open handle; `id_out` points to `id_out_len` writable
/// bytes.
#[no_mangle]
pub unsafe extern "C" fn refpoint_checkpoint_rct_id(
    disk: *mut refpoint_disk,
    checkpoint: u64,
    id_out: *mut c_char,
    id_out_len: usize,
) -> c_int {
    call(|| {
        // SAFETY: as the caller promises.
        let out = unsafe { args::bytes_mut(id_out.cast(), id_out_len, "id_out") }?;
        let h = unsafe { args::handle(disk) }?;
        let id = rct_id_at(&h, "checkpoint", checkpoint, |m, disk| {
            let cp = m.checkpoints.iter().find(|c| c.id == checkpoint)?;
            Some(
                cp.disks
                    .iter()
                    .find(|d| d.name == disk)
                    .and_then(|d| d.rct_id.clone()),
            )
        })?;
        put_text(&id, out, "the RCT ID")
    })
}

/// Converts recovery checkpoint `checkpoint` to a reference point (its
/// frozen files merge back; the RCT IDs stay); `*reference_point_out`
/// (if not NULL) gets its number.
///
/// # Safety
/// `disk` is an open handle; `reference_point_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn refpoint_checkpoint_convert(
    disk: *mut refpoint_disk,
    checkpoint: u64,
    reference_point_out: *mut u64,
) -> c_int {
    call(|| {
        // SAFETY: as the caller promises.
        let out = unsafe { args::optional_out(reference_point_out, "reference_point_out") }?;
        let rp = unsafe { args::handle(disk) }?.convert_checkpoint(checkpoint)?;
        if let Some(o) = out {
            o.set(rp.id);
        }
        Ok(())
    })
}

/// Deletes (merges back) the machine's newest checkpoint `checkpoint`.
///
/// # Safety
/// `disk` is an open handle.
#[no_mangle]
pub unsafe extern "C" fn refpoint_checkpoint_delete(
    disk: *mut refpoint_disk,
    checkpoint: u64,
) -> c_int {
    // SAFETY: as the caller promises.
    call(|| unsafe { args::handle(disk) }?.delete_checkpoint(checkpoint))
}

/// The machine's checkpoint numbers, oldest first, into `ids`;
/// `*count` gets how many there are, also when `max_ids` is too small
/// (`REFPOINT_E_BUFFER_TOO_SMALL`).
///
/// # Safety
/// `disk` is an open handle; `ids` points to `max_ids` writable
/// `uint64_t`; `count` is writable.
#[no_mangle]
pub unsafe extern "C" fn refpoint_checkpoints(
    disk: *mut refpoint_disk,
    ids: *mut u64,
    max_ids: usize,
    count: *mut usize,
) -> c_int {
    call(|| {
        // SAFETY: as the caller promises.
        let count = unsafe { args::out(count, "count") }?;
        let m = unsafe { args::handle(disk) }?.machine()?;
        let all: Vec<u64> = m.checkpoints.iter().map(|c| c.id).collect();
        unsafe { put_ids(&all, ids, max_ids, count) }
    })
}

/// The machine's reference point numbers, oldest first (as
/// `refpoint_checkpoints`).
///
/// # Safety
/// As `refpoint_checkpoints`.
#[no_mangle]
pub unsafe extern "C" fn refpoint_reference_points(
    disk: *mut refpoint_disk,
    ids: *mut u64,
    max_ids: usize,
    count: *mut usize,
) -> c_int {
    call(|| {
        // SAFETY: as the caller promises.
        let count = unsafe { args::out(count, "count") }?;
        let m = unsafe { args::handle(disk) }?.machine()?;
        let all: Vec<u64> = m.reference_points.iter().map(|r| r.id).collect();
        unsafe { put_ids(&all, ids, max_ids, count) }
    })
}

/// The RCT ID this disk had at reference point `reference_point` (the
/// `since_id` of the next incremental backup).
///
/// # Safety
/// As `refpoint_checkpoint_rct_id`.
#[no_mangle]
pub unsafe extern "C" fn refpoint_reference_point_rct_id(
    disk: *mut refpoint_disk,
    reference_point: u64,
    id_out: *mut c_char,
    id_out_len: usize,
) -> c_int {
    call(|| {
        // SAFETY: as the caller promises.
        let out = unsafe { args::bytes_mut(id_out.cast(), id_out_len, "id_out") }?;
        let h = unsafe { args::handle(disk) }?;
        let id = rct_id_at(&h, "reference point", reference_point, |m, disk| {
            let rp = m
                .reference_points
                .iter()
                .find(|r| r.id == reference_point)?;
            Some(
                rp.disks
                    .iter()
                    .find(|d| d.name == disk)
                    .and_then(|d| d.rct_id.clone()),
            )
        })?;
        put_text(&id, out, "the RCT ID")
    })
}

/// Destroys a reference point and releases its RCT IDs.
///
/// # Safety
/// `disk` is an open handle.
#[no_mangle]
pub unsafe extern "C" fn refpoint_reference_point_destroy(
    disk: *mut refpoint_disk,
    reference_point: u64,
) -> c_int {
    // SAFETY: as the caller promises.
    call(|| unsafe { args::handle(disk) }?.destroy_reference_point(reference_point))
}

/// Copies `all` into the caller's `ids`, then sets `count` (also when
/// `ids` is too small, so the caller learns the size to give).
///
/// # Safety
/// `ids` points to `max_ids` writable `uint64_t` (or `max_ids` is 0).
unsafe fn put_ids(all: &[u64], ids: *mut u64, max_ids: usize, count: Out<usize>) -> Result<()> {
    if max_ids < all.len() {
        count.set(all.len());
        return Err(Failure::new(
            REFPOINT_E_BUFFER_TOO_SMALL,
            format!("ids has room for {max_ids}, there are {}", all.len()),
        ));
    }
    {
        // SAFETY: as the caller promises.
        let ids = unsafe { args::array_mut(ids, max_ids, "ids") }?;
        ids[..all.len()].copy_from_slice(all);
    }
    count.set(all.len());
    Ok(())
}

/// The RCT ID the handle's disk had at `what` `id` of its machine:
/// `find` gives `None` when there is no such point, `Some(None)` when the
/// disk was not tracked then (a tracking error: take a full backup).
fn rct_id_at(
    h: &Handle,
    what: &str,
    id: u64,
    find: impl FnOnce(&api::Machine, &str) -> Option<Option<String>>,
) -> Result<String> {
    let (m, disk) = (h.machine()?, h.machine_disk()?);
    match find(&m, &disk) {
        None => Err(not_found(&m.name, what, id)),
        Some(None) => Err(untracked(&m.name, &disk, what, id)),
        Some(Some(rct)) => Ok(rct),
    }
}

fn not_found(machine: &str, what: &str, id: u64) -> Failure {
    Failure::new(
        REFPOINT_E_NOT_FOUND,
        format!("machine {machine} has no {what} {id}"),
    )
}

fn untracked(machine: &str, disk: &str, what: &str, id: u64) -> Failure {
    Failure::new(
        crate::error::REFPOINT_E_TRACKING_DISABLED,
        format!("{what} {id} of machine {machine} holds no RCT ID for disk {disk} (it was not tracked then)"),
    )
}
