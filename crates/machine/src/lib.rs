//! # machine — machines, checkpoints, reference points, the disk pool
//!
//! A machine is a named set of tracked disks (Hyper-V's virtual machine)
//! with optional freeze/thaw hooks; its checkpoints freeze every disk at
//! once, and a converted recovery checkpoint leaves a reference point: the
//! RCT IDs the next incremental backup starts from.
//!
//! ```text
//! Store (one state directory; clones share one pool)
//!  ├─ store.rs       load / save / list / create / remove machine files
//!  ├─ model.rs       Machine, MachineDisk, Checkpoint, ReferencePoint (the file format)
//!  ├─ checkpoint.rs  create / delete / apply / convert, destroy reference points
//!  ├─ group.rs       checkpoints of several machines as one consistent cut
//!  │                 (freeze all at once, park all, checkpoint each, unpark, thaw all)
//!  ├─ hooks.rs       freeze / thaw commands (exit code and stderr on failure,
//!  │                 a timeout that kills the hook's process group)
//!  ├─ instant.rs     machines running on a backup point: create, finish, discard
//!  ├─ pool.rs        disks held open (the daemon), parked while files switch
//!  ├─ resolve.rs     MACHINE/DISK arguments and the frozen-file rule
//!  └─ home.rs        the state directory
//! ```
//!
//! Every operation that switches or merges a machine's files parks the
//! disks the pool holds for it (in-flight I/O drains, the disks close, new
//! I/O waits) and reopens them on the machine's new files afterwards, so
//! the command line and the daemon run the same code. Callers that may run
//! operations concurrently serialize them per machine with
//! [`Store::lock_machine`].

#![forbid(unsafe_code)]

mod checkpoint;
mod error;
mod group;
pub mod home;
mod hooks;
mod instant;
mod model;
mod pool;
mod resolve;
mod store;

pub use error::{MachineError, Result};
pub use group::GroupOptions;
pub use instant::{FinishOptions, FinishSummary, InstantDisk};
pub use model::{
    BackupLink, Checkpoint, CheckpointDisk, CheckpointKind, Consistency, Instant, Machine,
    MachineDisk, ReferenceDisk, ReferencePoint,
};
pub use pool::{MachineLock, Parked, Slot};
pub use resolve::Target;
pub use store::{valid_name, Store};
