/*
 * librefpoint: virtual disks, resilient change tracking and checkpoints
 * for backup software (VirtDisk for Linux).
 *
 * Every function returns 0 (REFPOINT_OK) or a negative REFPOINT_E_* code
 * unless it says otherwise; refpoint_last_error() gives the message of
 * the calling thread's last failure. Offsets are virtual-disk offsets.
 * Functions may be called from any thread; calls on one handle are
 * serialized; refpoint_close must not race with other calls on it.
 */

#ifndef REFPOINT_H
#define REFPOINT_H

/* Generated from crates/capi by cbindgen; do not edit. Regenerate: REFPOINT_BLESS=1 cargo test -p refpoint-capi --test header */

#include <stddef.h>
#include <stdint.h>

/*
 Open the disk read-only: writes and tracking changes are refused.
 */
#define REFPOINT_OPEN_READ_ONLY 1

/*
 A standard checkpoint (kept, can be applied).
 */
#define REFPOINT_CHECKPOINT_STANDARD 0

/*
 A recovery checkpoint (for backup; becomes a reference point).
 */
#define REFPOINT_CHECKPOINT_RECOVERY 1

/*
 The ABI version, semantic: a new minor adds functions, a new major may
 change or remove them. The shared library's soname carries the major.
 */
#define REFPOINT_VERSION_MAJOR 1

#define REFPOINT_VERSION_MINOR 0

#define REFPOINT_VERSION_PATCH 0

/*
 Room for an RCT ID (`rct:<tracking-guid>:<8 hex digits>`) with its NUL.
 */
#define REFPOINT_ID_MAX 64

/*
 Room for a disk identity (`vhdx:<DataWriteGuid>`, `raw:<change stamp>`).
 */
#define REFPOINT_IDENTITY_MAX 128

/*
 A VHDX file (a chain when `chain_depth` > 1).
 */
#define REFPOINT_FORMAT_VHDX 1

/*
 A raw image file.
 */
#define REFPOINT_FORMAT_RAW 2

/*
 Success.
 */
#define REFPOINT_OK 0

/*
 An argument is invalid: a null pointer, a bad flag, a malformed name.
 */
#define REFPOINT_E_INVALID (-1)

/*
 No such file, machine, disk, checkpoint or reference point.
 */
#define REFPOINT_E_NOT_FOUND (-2)

/*
 An I/O error (the message names the file and operation).
 */
#define REFPOINT_E_IO (-3)

/*
 The medium is full (ENOSPC); the write stays pending and a later flush
 retries it once space is freed.
 */
#define REFPOINT_E_NO_SPACE (-4)

/*
 A write or tracking change on a disk opened read-only.
 */
#define REFPOINT_E_READ_ONLY (-5)

/*
 The range lies past the end of the disk.
 */
#define REFPOINT_E_OUT_OF_RANGE (-6)

/*
 The disk is in use (another writer holds it) or its machine is busy.
 */
#define REFPOINT_E_BUSY (-7)

/*
 The file is frozen by a checkpoint: write to the machine disk instead.
 */
#define REFPOINT_E_FROZEN (-8)

/*
 The disk file is corrupt or not a disk refpoint can read.
 */
#define REFPOINT_E_CORRUPT (-9)

/*
 An output buffer is too small (a required length is reported where the
 function has an out-parameter for it).
 */
#define REFPOINT_E_BUFFER_TOO_SMALL (-10)

/*
 The operation does not apply to this handle (e.g. checkpoints of a disk
 that belongs to no machine, tracking of a checkpoint's frozen view).
 */
#define REFPOINT_E_UNSUPPORTED (-11)

/*
 The daemon or remote host could not be reached, or broke the protocol.
 */
#define REFPOINT_E_CONNECTION (-12)

/*
 The remote daemon refused the credentials (token, certificates).
 */
#define REFPOINT_E_AUTH (-13)

/*
 A bug in refpoint (a panic caught at the boundary); see the message.
 */
#define REFPOINT_E_INTERNAL (-14)

/*
 Tracking is not enabled on the disk.
 */
#define REFPOINT_E_TRACKING_DISABLED (-20)

/*
 The RCT ID was never issued by this disk's tracking, or tracking was
 reset since.
 */
#define REFPOINT_E_UNKNOWN_ID (-21)

/*
 The RCT ID was released.
 */
#define REFPOINT_E_RELEASED_ID (-22)

/*
 The text is no RCT ID (`rct:<tracking-guid>:<8 hex digits>`).
 */
#define REFPOINT_E_MALFORMED_ID (-23)

/*
 The tracking file is missing.
 */
#define REFPOINT_E_TRACKING_FILE_MISSING (-24)

/*
 The tracking file is corrupt.
 */
#define REFPOINT_E_TRACKING_FILE_CORRUPT (-25)

/*
 The disk was written while nothing tracked it (another tool, or a
 process that died before closing a raw file).
 */
#define REFPOINT_E_MODIFIED_WHILE_UNTRACKED (-26)

/*
 Tracking stopped after an I/O error it could not undo, or cannot prove
 its answer after one; reopen the disk and take a full backup.
 */
#define REFPOINT_E_TRACKING_FAILED (-27)

/*
 An open disk (opaque to C).
 */
typedef struct refpoint_disk refpoint_disk;

/*
 What `refpoint_get_info` reports (`GetVirtualDiskInformation`).
 */
typedef struct refpoint_info {
  /*
   The size the guest sees, in bytes.
   */
  uint64_t virtual_size;
  uint32_t logical_sector_size;
  uint32_t physical_sector_size;
  /*
   The VHDX payload block size (0 for a raw file).
   */
  uint32_t block_size;
  /*
   Files in the chain: 1 for a base disk.
   */
  uint32_t chain_depth;
  /*
   `REFPOINT_FORMAT_VHDX` or `REFPOINT_FORMAT_RAW`.
   */
  uint32_t format;
  /*
   1 when change tracking is on.
   */
  int32_t tracking_enabled;
  /*
   Whether anything was written since `most_recent_id`: 1, 0, or -1
   when unknown (no ID yet, or tracking cannot answer).
   */
  int32_t newer_changes;
  /*
   0, or the `REFPOINT_E_*` tracking code saying why tracking cannot
   answer (the next backup must be full).
   */
  int32_t tracking_error;
  /*
   What tracking checks the disk by (NUL-terminated).
   */
  char identity[REFPOINT_IDENTITY_MAX];
  /*
   The newest sealed RCT ID, or "" (NUL-terminated).
   */
  char most_recent_id[REFPOINT_ID_MAX];
} refpoint_info;

/*
 A byte range at virtual-disk offsets.
 */
typedef struct refpoint_range {
  uint64_t offset;
  uint64_t length;
} refpoint_range;

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

/*
 Opens a disk: a file path (VHDX chain or raw), `MACHINE/DISK` (or
 `MACHINE/DISK@checkpoint-N`, a checkpoint's frozen view) in
 `state_dir` (NULL: `$REFPOINT_HOME`, else `./refpoint-data`), or a
 remote daemon's `refpoint+https://HOST:PORT/MACHINE/DISK`. A machine
 disk goes through the daemon when one runs on that state directory.

 # Safety
 `path_or_machine_disk` and `state_dir` are NUL-terminated strings (or
 NULL); `out` points to writable storage for one pointer.
 */
int refpoint_open(const char *path_or_machine_disk, const char *state_dir, uint32_t flags, struct refpoint_disk **out);

/*
 Closes a disk (NULL is ignored): flushes what was written and closes
 the file (or connection). A failure then can only be read from
 `refpoint_last_error`: call `refpoint_flush` first to know. Using the
 handle afterwards is undefined behaviour.

 # Safety
 `disk` is NULL or an open handle no other thread is using.
 */
void refpoint_close(struct refpoint_disk *disk);

/*
 The disk's virtual size in bytes.

 # Safety
 `disk` is an open handle; `out` points to a writable `uint64_t`.
 */
int refpoint_virtual_size(struct refpoint_disk *disk, uint64_t *out);

/*
 Format, geometry, chain depth, identity and tracking state.

 # Safety
 `disk` is an open handle; `out` points to a writable `refpoint_info`.
 */
int refpoint_get_info(struct refpoint_disk *disk, struct refpoint_info *out);

/*
 Reads `len` bytes at virtual offset `offset` (through the whole
 differencing chain; unallocated ranges read as zeros).

 # Safety
 `disk` is an open handle; `buf` points to `len` writable bytes.
 */
int refpoint_read(struct refpoint_disk *disk, uint64_t offset, void *buf, size_t len);

/*
 Writes `len` bytes at virtual offset `offset`; tracked when tracking is
 on. Durable once `refpoint_flush` returns 0.

 # Safety
 `disk` is an open handle; `buf` points to `len` readable bytes.
 */
int refpoint_write(struct refpoint_disk *disk, uint64_t offset, const void *buf, size_t len);

/*
 Writes zeros over `length` bytes at `offset` (deallocating where the
 format allows); tracked like a write.

 # Safety
 `disk` is an open handle.
 */
int refpoint_zero(struct refpoint_disk *disk, uint64_t offset, uint64_t length);

/*
 Makes every write before it durable (and its tracking marks).

 # Safety
 `disk` is an open handle.
 */
int refpoint_flush(struct refpoint_disk *disk);

/*
 The ranges of `offset..offset+length` that may hold data (the others
 read as zeros), so a full backup can skip holes. Pages like
 `refpoint_query_changes`: at most `max_ranges` ranges go to `ranges`,
 `*n_ranges` says how many, `*processed_length` how many bytes from
 `offset` they account for; continue at `offset + *processed_length`
 until it equals `length` (which may reach past the end of the disk:
 nothing lies there, so `UINT64_MAX` means "to the end").

 # Safety
 `disk` is an open handle; `ranges` points to `max_ranges` writable
 `refpoint_range`; `n_ranges` and `processed_length` are writable (they
 may alias each other or `ranges`: each is written once, at the end).
 */
int refpoint_allocation(struct refpoint_disk *disk, uint64_t offset, uint64_t length, struct refpoint_range *ranges, size_t max_ranges, size_t *n_ranges, uint64_t *processed_length);

/*
 Creates a checkpoint of the disk's machine (every disk of it at one
 instant; the freeze and thaw hooks run). Writes through open handles
 wait while the disks switch, then go to the new files.

 # Safety
 `disk` is an open handle; `id_out` is NULL or a writable `uint64_t`.
 */
int refpoint_checkpoint_create(struct refpoint_disk *disk, uint32_t kind, uint64_t *id_out);

/*
 The RCT ID this disk had at checkpoint `checkpoint` (ask changes
 `until` it), NUL-terminated into `id_out`.

 # Safety
 `disk` is an open handle; `id_out` points to `id_out_len` writable
 bytes.
 */
int refpoint_checkpoint_rct_id(struct refpoint_disk *disk, uint64_t checkpoint, char *id_out, size_t id_out_len);

/*
 Converts recovery checkpoint `checkpoint` to a reference point (its
 frozen files merge back; the RCT IDs stay); `*reference_point_out`
 (if not NULL) gets its number.

 # Safety
 `disk` is an open handle; `reference_point_out` is NULL or writable.
 */
int refpoint_checkpoint_convert(struct refpoint_disk *disk, uint64_t checkpoint, uint64_t *reference_point_out);

/*
 Deletes (merges back) the machine's newest checkpoint `checkpoint`.

 # Safety
 `disk` is an open handle.
 */
int refpoint_checkpoint_delete(struct refpoint_disk *disk, uint64_t checkpoint);

/*
 The machine's checkpoint numbers, oldest first, into `ids`;
 `*count` gets how many there are, also when `max_ids` is too small
 (`REFPOINT_E_BUFFER_TOO_SMALL`).

 # Safety
 `disk` is an open handle; `ids` points to `max_ids` writable
 `uint64_t`; `count` is writable.
 */
int refpoint_checkpoints(struct refpoint_disk *disk, uint64_t *ids, size_t max_ids, size_t *count);

/*
 The machine's reference point numbers, oldest first (as
 `refpoint_checkpoints`).

 # Safety
 As `refpoint_checkpoints`.
 */
int refpoint_reference_points(struct refpoint_disk *disk, uint64_t *ids, size_t max_ids, size_t *count);

/*
 The RCT ID this disk had at reference point `reference_point` (the
 `since_id` of the next incremental backup).

 # Safety
 As `refpoint_checkpoint_rct_id`.
 */
int refpoint_reference_point_rct_id(struct refpoint_disk *disk, uint64_t reference_point, char *id_out, size_t id_out_len);

/*
 Destroys a reference point and releases its RCT IDs.

 # Safety
 `disk` is an open handle.
 */
int refpoint_reference_point_destroy(struct refpoint_disk *disk, uint64_t reference_point);

/*
 The ABI version as text, e.g. "1.0.0" (compare with the
 `REFPOINT_VERSION_*` macros the program was compiled with).
 */
const char *refpoint_version(void);

/*
 The message of this thread's last failed call ("" if none); valid
 until this thread's next failing call.
 */
const char *refpoint_last_error(void);

/*
 The stable name of a code (e.g. "unknown_id"), or "unknown".
 */
const char *refpoint_error_name(int code);

/*
 1 when `code` is a tracking error: the tracking cannot prove which
 ranges changed, so the backup must be full.
 */
int refpoint_is_tracking_error(int code);

/*
 How `refpoint+https://` handles reach a remote daemon; any NULL
 argument falls back to its environment variable: `token` to
 `REFPOINT_TOKEN`, `ca_file` (PEM of the CA that issued the daemon's
 certificate) to `REFPOINT_CA`, `cert_file` and `key_file` (a client
 certificate, for a daemon started with `--tls-client-ca`) to
 `REFPOINT_CERT` and `REFPOINT_KEY`. Applies to handles opened after.

 # Safety
 Each argument is NULL or a NUL-terminated string.
 */
int refpoint_config_remote(const char *token, const char *ca_file, const char *cert_file, const char *key_file);

/*
 Starts (or restarts) change tracking; `granularity` is the bytes per
 tracked region (a power of two, 0: the default of 64 KiB). Every
 earlier RCT ID stops being valid.

 # Safety
 `disk` is an open handle.
 */
int refpoint_tracking_enable(struct refpoint_disk *disk, uint64_t granularity);

/*
 Stops change tracking and removes its file.

 # Safety
 `disk` is an open handle.
 */
int refpoint_tracking_disable(struct refpoint_disk *disk);

/*
 Flushes, closes the current tracking generation and writes its RCT ID
 (NUL-terminated, at most `REFPOINT_ID_MAX` bytes) to `id_out`: the ID
 names this durable state of the disk.

 # Safety
 `disk` is an open handle; `id_out` points to `id_out_len` writable
 bytes.
 */
int refpoint_seal(struct refpoint_disk *disk, char *id_out, size_t id_out_len);

/*
 Releases an RCT ID: changes since it can no longer be asked.

 # Safety
 `disk` is an open handle; `id` is a NUL-terminated string.
 */
int refpoint_release(struct refpoint_disk *disk, const char *id);

/*
 The RCT IDs changes can be asked since, oldest first, one per line,
 NUL-terminated, into `buf`. `*needed` (if not NULL) gets the bytes
 the list takes with its NUL, also when `buf` is too small
 (`REFPOINT_E_BUFFER_TOO_SMALL`).

 # Safety
 `disk` is an open handle; `buf` points to `len` writable bytes;
 `needed` is NULL or writable.
 */
int refpoint_retained_ids(struct refpoint_disk *disk, char *buf, size_t len, size_t *needed);

/*
 The ranges changed since `since_id` (until `until_id`; NULL: now)
 within `offset..offset+length`, like `QueryChangesVirtualDisk`: at
 most `max_ranges` ranges go to `ranges`, `*n_ranges` says how many, and
 `*processed_length` how many bytes from `offset` they account for.
 Continue at `offset + *processed_length` until it equals `length`
 (which may reach past the end of the disk: `UINT64_MAX` means "to the
 end"). A tracking error (`refpoint_is_tracking_error`) means: take a
 full backup.

 # Safety
 `disk` is an open handle; `since_id` is a NUL-terminated string;
 `until_id` is one or NULL; `ranges` points to `max_ranges` writable
 `refpoint_range`; `n_ranges` and `processed_length` are writable (they
 may alias each other or `ranges`: each is written once, at the end).
 */
int refpoint_query_changes(struct refpoint_disk *disk, const char *since_id, const char *until_id, uint64_t offset, uint64_t length, struct refpoint_range *ranges, size_t max_ranges, size_t *n_ranges, uint64_t *processed_length);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* REFPOINT_H */
