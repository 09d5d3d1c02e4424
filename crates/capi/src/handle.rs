//! What a `refpoint_disk` is inside: where its data comes from and who
//! answers for its tracking and checkpoints.
//!
//! ```text
//!            data                              control
//! file       Own(vdisk::Disk)                  Own: daemon::tracking on that disk
//! MACHINE/   Held (this process's pool)        Machine: daemon::Service::holding
//!  DISK      Nbd (daemon's nbd.sock, or        Machine: api::Client (api.sock,
//!             a remote daemon over TLS)                  or HTTPS with token)
//! …@checkpoint-N  Frozen(chain) / Nbd          Frozen: checkpoints only, no tracking
//! ```
//!
//! Every answer is an API type, so a vendor's program sees the same
//! values whichever way the disk was reached.

#![forbid(unsafe_code)]

use crate::error::{Failure, Result, REFPOINT_E_OUT_OF_RANGE, REFPOINT_E_READ_ONLY};
use crate::registry::{self, Hold, View};
use api::{
    ChangesQuery, Checkpoint, CheckpointKind, CheckpointRequest, DiskInfo, EnableTrackingRequest,
    Machine, Machines, ReferencePoint, TrackingStatus,
};
use daemon::tracking;
use vdisk::{Disk, Image};

/// An extent of the allocation map: `allocated` ranges may hold data,
/// the others read as zeros.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub offset: u64,
    pub length: u64,
    pub allocated: bool,
}

pub enum Data {
    /// A disk file this handle opened.
    Own(Box<Disk>),
    /// A machine disk held in this process's pool.
    Held(Hold),
    /// A checkpoint's frozen chain, read-only.
    Frozen(Box<Image>),
    /// A disk the daemon holds, over NBD.
    Nbd(Box<nbd::client::Client>),
}

pub enum Control {
    /// Tracking of the handle's own disk.
    Own,
    /// A machine disk: tracking and checkpoints through the machines.
    Machine {
        machines: Box<dyn Machines + Send>,
        machine: String,
        disk: String,
    },
    /// A checkpoint's frozen view: the machine's checkpoints, no tracking.
    Frozen {
        machines: Box<dyn Machines + Send>,
        machine: String,
        disk: String,
        checkpoint: u64,
    },
}

pub struct Handle {
    /// What was opened, as the caller named it.
    pub name: String,
    /// Where its machine lives: the state directory, or the remote daemon.
    pub place: String,
    /// For a checkpoint's frozen view: counted while open, so this process
    /// cannot merge the checkpoint away under it.
    pub view: Option<View>,
    pub read_only: bool,
    pub size: u64,
    pub data: Data,
    pub control: Control,
}

impl Handle {
    fn writable(&self, what: &str) -> Result<()> {
        if self.read_only {
            return Err(Failure::new(
                REFPOINT_E_READ_ONLY,
                format!("{}: opened read-only; cannot {what}", self.name),
            ));
        }
        Ok(())
    }

    pub fn check_range(&self, offset: u64, len: u64) -> Result<()> {
        match offset.checked_add(len) {
            Some(end) if end <= self.size => Ok(()),
            _ => Err(Failure::new(
                REFPOINT_E_OUT_OF_RANGE,
                format!(
                    "{}: range offset {offset} length {len} lies past the end of the {}-byte disk",
                    self.name, self.size
                ),
            )),
        }
    }

    pub fn read(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        self.check_range(offset, buf.len() as u64)?;
        match &mut self.data {
            Data::Own(d) => Ok(d.read(offset, buf)?),
            Data::Held(h) => h.with(|d| d.read(offset, buf)),
            Data::Frozen(i) => Ok(i.read_at(offset, buf)?),
            Data::Nbd(c) => crate::remote::read(c, offset, buf),
        }
    }

    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        self.writable("write")?;
        self.check_range(offset, data.len() as u64)?;
        match &mut self.data {
            Data::Own(d) => Ok(d.write(offset, data)?),
            Data::Held(h) => h.with(|d| d.write(offset, data)),
            Data::Frozen(_) => Err(self.frozen("write")),
            Data::Nbd(c) => crate::remote::write(c, offset, data),
        }
    }

    pub fn zero(&mut self, offset: u64, len: u64) -> Result<()> {
        self.writable("zero")?;
        self.check_range(offset, len)?;
        match &mut self.data {
            Data::Own(d) => Ok(d.zero(offset, len)?),
            Data::Held(h) => h.with(|d| d.zero(offset, len)),
            Data::Frozen(_) => Err(self.frozen("zero")),
            Data::Nbd(c) => crate::remote::zero(c, offset, len),
        }
    }

    pub fn flush(&mut self) -> Result<()> {
        match &mut self.data {
            Data::Own(d) => Ok(d.flush()?),
            Data::Held(h) => h.with(|d| d.flush()),
            Data::Frozen(_) => Ok(()),
            Data::Nbd(c) => crate::remote::flush(c, self.read_only),
        }
    }

    /// The allocation map of `offset..offset+len`, in order, tiling it.
    pub fn allocation(&mut self, offset: u64, len: u64) -> Result<Vec<Extent>> {
        self.check_range(offset, len)?;
        let raw = match &mut self.data {
            Data::Own(d) => d.extents(offset, len)?,
            Data::Held(h) => h.with(|d| d.extents(offset, len))?,
            Data::Frozen(i) => i.extents(offset, len)?,
            Data::Nbd(c) => return crate::remote::allocation(c, offset, len),
        };
        Ok(raw
            .into_iter()
            .map(|(offset, length, allocated)| Extent {
                offset,
                length,
                allocated,
            })
            .collect())
    }

    pub fn info(&mut self) -> Result<DiskInfo> {
        match (&mut self.data, &self.control) {
            (Data::Own(d), _) => Ok(daemon::disks::info_of(d, self.name.clone())?),
            (Data::Frozen(i), _) => {
                let off = untracked(&self.name);
                Ok(daemon::disks::image_info(i, self.name.clone(), off)?)
            }
            (
                _,
                Control::Machine {
                    machines,
                    machine,
                    disk,
                },
            ) => Ok(machines.disk_info(machine, disk)?),
            (
                Data::Nbd(c),
                Control::Frozen {
                    machines,
                    machine,
                    disk,
                    ..
                },
            ) => {
                let live = machines.disk_info(machine, disk)?;
                Ok(crate::remote::frozen_info(c, live, &self.name))
            }
            _ => Err(Failure::unsupported(format!(
                "{}: no disk information",
                self.name
            ))),
        }
    }

    /// Flushes and closes: an own disk applies its queued writes and saves
    /// its tracking; a held one is released when its last handle closes;
    /// a connection flushes and disconnects.
    pub fn close(self) -> Result<()> {
        let read_only = self.read_only;
        match self.data {
            Data::Own(d) => Ok(d.close()?),
            Data::Held(h) => {
                let flushed = if read_only {
                    Ok(())
                } else {
                    h.with(|d| d.flush())
                };
                drop(h);
                flushed
            }
            Data::Frozen(_) => Ok(()),
            Data::Nbd(mut c) => {
                let flushed = crate::remote::flush(&mut c, read_only);
                let closed = c.disconnect().map_err(crate::remote::nbd_failure);
                flushed.and(closed)
            }
        }
    }

    fn frozen(&self, what: &str) -> Failure {
        Failure::new(
            REFPOINT_E_READ_ONLY,
            format!(
                "{}: a checkpoint's frozen view is read-only; cannot {what}",
                self.name
            ),
        )
    }

    fn no_tracking(&self) -> Failure {
        Failure::unsupported(format!(
            "{}: a checkpoint's frozen view has no tracking of its own; ask the live disk, with the checkpoint's RCT ID as `until`",
            self.name
        ))
    }

    // --- change tracking -------------------------------------------------

    /// Runs a tracking operation where the handle's tracking lives: on its
    /// own disk, or through its machine's API (a frozen view has none).
    fn tracked<T>(
        &mut self,
        own: impl FnOnce(&mut Disk, &str) -> Result<T, api::ApiError>,
        through: impl FnOnce(&dyn Machines, &str, &str) -> Result<T, api::ApiError>,
    ) -> Result<T> {
        match (&mut self.data, &self.control) {
            (Data::Own(d), _) => Ok(own(d, &self.name)?),
            (
                _,
                Control::Machine {
                    machines,
                    machine,
                    disk,
                },
            ) => Ok(through(&**machines, machine, disk)?),
            _ => Err(self.no_tracking()),
        }
    }

    pub fn tracking_status(&mut self) -> Result<TrackingStatus> {
        self.tracked(
            |d, name| tracking::status_of(d, name.to_string()),
            |ms, m, d| ms.tracking_status(m, d),
        )
    }

    pub fn enable_tracking(&mut self, granularity: Option<u64>) -> Result<()> {
        self.writable("enable tracking")?;
        let g = granularity.unwrap_or(rct::DEFAULT_GRANULARITY);
        let request = EnableTrackingRequest { granularity };
        self.tracked(
            |d, _| tracking::enable(d, g).map(drop),
            |ms, m, d| ms.enable_tracking(m, d, &request).map(drop),
        )
    }

    pub fn disable_tracking(&mut self) -> Result<()> {
        self.writable("disable tracking")?;
        self.tracked(
            |d, _| tracking::disable(d).map(drop),
            |ms, m, d| ms.disable_tracking(m, d).map(drop),
        )
    }

    pub fn seal(&mut self) -> Result<String> {
        self.writable("seal a tracking generation")?;
        let sealed = self.tracked(|d, _| tracking::seal(d), |ms, m, d| ms.seal(m, d))?;
        Ok(sealed.id)
    }

    pub fn release(&mut self, id: &str) -> Result<()> {
        self.writable("release an RCT ID")?;
        self.tracked(
            |d, _| tracking::release(d, id).map(drop),
            |ms, m, d| ms.release(m, d, id).map(drop),
        )
    }

    pub fn changes(&mut self, q: &ChangesQuery) -> Result<api::Changes> {
        self.tracked(
            |d, _| tracking::changes_of(d, q),
            |ms, m, d| ms.changes(m, d, q),
        )
    }

    // --- the machine's checkpoints and reference points ------------------

    fn machines(&self) -> Result<(&dyn Machines, &str, &str)> {
        match &self.control {
            Control::Machine {
                machines,
                machine,
                disk,
            }
            | Control::Frozen {
                machines,
                machine,
                disk,
                ..
            } => Ok((&**machines, machine, disk)),
            Control::Own => Err(Failure::unsupported(format!(
                "{}: belongs to no machine, so it has no checkpoints; open it as MACHINE/DISK",
                self.name
            ))),
        }
    }

    pub fn machine(&self) -> Result<Machine> {
        let (ms, m, _) = self.machines()?;
        Ok(ms.machine(m)?)
    }

    /// This handle's disk's name in its machine.
    pub fn machine_disk(&self) -> Result<String> {
        Ok(self.machines()?.2.to_string())
    }

    pub fn create_checkpoint(&mut self, kind: CheckpointKind) -> Result<Checkpoint> {
        self.writable("create a checkpoint")?;
        let (ms, m, _) = self.machines()?;
        let r = CheckpointRequest {
            kind: Some(kind),
            consistency: None,
        };
        let cp = ms.create_checkpoint(m, &r)?;
        self.settle()?;
        Ok(cp)
    }

    /// Refuses to merge away a checkpoint whose frozen view a handle of
    /// this process still reads.
    fn no_open_view(&self, machine: &str, id: u64, what: &str) -> Result<()> {
        let n = registry::views_open(&self.place, machine, id);
        if n > 0 {
            return Err(Failure::new(
                crate::error::REFPOINT_E_BUSY,
                format!("cannot {what} checkpoint {id} of {machine}: {n} handle(s) of its frozen view are open; close them first"),
            ));
        }
        Ok(())
    }

    pub fn convert_checkpoint(&mut self, id: u64) -> Result<ReferencePoint> {
        self.writable("convert a checkpoint")?;
        let (ms, m, _) = self.machines()?;
        self.no_open_view(m, id, "convert")?;
        let rp = ms.convert_checkpoint(m, id)?;
        self.settle()?;
        Ok(rp)
    }

    pub fn delete_checkpoint(&mut self, id: u64) -> Result<()> {
        self.writable("delete a checkpoint")?;
        let (ms, m, _) = self.machines()?;
        self.no_open_view(m, id, "delete")?;
        ms.delete_checkpoint(m, id)?;
        self.settle()
    }

    pub fn destroy_reference_point(&mut self, id: u64) -> Result<()> {
        self.writable("destroy a reference point")?;
        let (ms, m, _) = self.machines()?;
        ms.destroy_reference_point(m, id)?;
        Ok(())
    }

    /// After a checkpoint operation the disk may sit on another file; the
    /// size stays (no operation resizes), the pool or daemon reopened it.
    fn settle(&mut self) -> Result<()> {
        if let Data::Held(h) = &self.data {
            self.size = h.with(|d| Ok(d.size()))?;
        }
        Ok(())
    }
}

/// The tracking status of a view that has none.
pub fn untracked(name: &str) -> TrackingStatus {
    TrackingStatus {
        disk: name.to_string(),
        enabled: false,
        most_recent_id: None,
        newer_changes: None,
        retained_ids: vec![],
        error: None,
    }
}
