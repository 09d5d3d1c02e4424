//! # librefpoint — VirtDisk for Linux
//!
//! A C library (`librefpoint.so`, `librefpoint.a`, `include/refpoint.h`)
//! that does what Hyper-V's VirtDisk API does for backup software, without
//! its limits: open a disk by path, as `MACHINE/DISK` or on a remote
//! daemon; read and write at virtual-disk offsets through differencing
//! chains; info, allocation map; resilient change tracking with
//! `QueryChangesVirtualDisk`-style paging; a machine's checkpoints and
//! reference points.
//!
//! ```text
//! abi/          the C functions, one module per concern; the only unsafe
//!   args.rs     pointer and length checks, panics caught, last error
//!   disk.rs     open / close / read / write / zero / flush / info / allocation
//!   tracking.rs enable / disable / seal / release / retained IDs / changes
//!   machine.rs  checkpoints and reference points of the disk's machine
//!   types.rs    refpoint_range, refpoint_info and their constants
//!   misc.rs     version, error names, remote settings
//! open.rs       what a name opens: file, held machine disk, daemon, remote
//! handle.rs     a handle's data path and control path (API types)
//! paging.rs     QueryChangesVirtualDisk-style pages, answers checked
//! registry.rs   one store per state directory, held disks, open views
//! remote.rs     disks in a daemon: NBD for data, the API for the rest
//! error.rs      REFPOINT_E_* codes, the mapping from library errors
//! ```
//!
//! Thread safety: every function may be called from any thread. Calls on
//! one handle are serialized (each takes the handle's lock); handles are
//! independent. `refpoint_close` must not race with other calls on the
//! same handle. `refpoint_last_error` is per thread.
//!
//! With no daemon, a writable `MACHINE/DISK` handle holds the disk in this
//! process (a daemon started meanwhile cannot open it until the handle
//! closes); read-only handles take no writer's lock. A daemon is found by
//! the sockets in the state directory (`nbd.sock`, `api.sock`), so one
//! started with other socket paths is reached as a remote daemon only.
//! A checkpoint's frozen view cannot be converted or deleted by this
//! process while open; another process can (the view then reads the
//! merged data), so vendors should close views before converting.

#![deny(unsafe_code)]
#![allow(non_camel_case_types)] // the C names

#[allow(unsafe_code)]
pub mod abi;
pub mod error;
mod handle;
mod open;
mod paging;
mod registry;
mod remote;
