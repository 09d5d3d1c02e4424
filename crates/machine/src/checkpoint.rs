//! Checkpoints and reference points of a machine (the Hyper-V model):
//!
//! ```text
//! create:  seal each disk's tracking (RCT ID) ─► new child <disk>_<id>.avhdx
//!          (its DataWriteGuid journaled first) ─► machine file names the child
//! delete:  journal the parent's post-merge DataWriteGuid ─► merge the child
//!          back (crash-safe, resumable) ─► machine file names the parent
//! convert: delete, keeping per disk the RCT ID of the checkpoint as a
//!          reference point ("what changed since" for the next backup)
//! apply:   mark what the child changed, replace it with a fresh child
//! ```
//!
//! Every step that changes which file carries a disk first tells the
//! tracking about the identity that file will have, so tracking survives a
//! crash at any point and never mistakes our own switch for a foreign write.

use crate::error::{MachineError, Result};
use crate::model::*;
use crate::store::{now, Store};
use std::path::{Path, PathBuf};
use uuid::Uuid;
use vdisk::Disk;
use vhdx::{create_child, merge_into_parent_as, pending_merge_linkage, Chain, Source, Vhdx};

fn child_path(base: &Path, id: u64, attempt: u32) -> PathBuf {
    let stem = base
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "disk".into());
    let suffix = if attempt == 0 {
        String::new()
    } else {
        format!("-{attempt}")
    };
    base.with_file_name(format!("{stem}_{id}{suffix}.avhdx"))
}

impl Store {
    /// Opens a machine disk's current file with its tracking.
    pub fn open_disk(&self, m: &Machine, disk: &str, writable: bool) -> Result<Disk> {
        let d = m.disk(disk).ok_or_else(|| MachineError::NoDisk {
            machine: m.name.clone(),
            disk: disk.into(),
        })?;
        Ok(Disk::open_tracked_as(
            self.fs().clone(),
            &d.active,
            &d.base,
            writable,
        )?)
    }

    /// Creates a checkpoint of every disk of the machine: freeze (when
    /// application-consistent), park, switch every disk to a new child,
    /// unpark, thaw. A failed freeze is thawed and refused; a failed thaw
    /// is an error, the checkpoint is kept.
    pub fn create_checkpoint(
        &self,
        name: &str,
        kind: CheckpointKind,
        consistency: Consistency,
    ) -> Result<Checkpoint> {
        let m = self.load(name)?;
        // A freeze may fail half way (one file system of several): its
        // thaw runs then too.
        let application = consistency == Consistency::Application;
        if application {
            self.freeze_all(&[&m], None)?;
        }
        // The guest writes while it freezes; the disks are parked (I/O
        // drained and flushed, new I/O waiting) only for the switch.
        let result = self.park(name).and_then(|guard| {
            let r = self.checkpoint_parked(&m, kind, consistency);
            drop(guard);
            r
        });
        if application {
            self.thaw_all(&[&m], None)?;
        }
        result
    }

    /// The checkpoint itself, with the machine parked by the caller:
    /// every disk switched to a new child, the machine file saved.
    pub(crate) fn checkpoint_parked(
        &self,
        m: &Machine,
        kind: CheckpointKind,
        consistency: Consistency,
    ) -> Result<Checkpoint> {
        let id = m.next_id;
        let disks = self.checkpoint_disks(m, id)?;
        let mut m = m.clone();
        for (d, cd) in m.disks.iter_mut().zip(&disks) {
            d.active = cd.child.clone();
        }
        let cp = Checkpoint {
            id,
            kind,
            consistency,
            created: now(),
            disks,
            backup: None,
        };
        m.checkpoints.push(cp.clone());
        m.next_id += 1;
        self.save(&m)?;
        Ok(cp)
    }

    fn checkpoint_disks(&self, m: &Machine, id: u64) -> Result<Vec<CheckpointDisk>> {
        let mut out = Vec::new();
        for d in &m.disks {
            let mut disk = Disk::open_tracked_as(self.fs().clone(), &d.active, &d.base, true)?;
            let rct_id = if disk.is_tracked() {
                Some(disk.seal()?.to_string())
            } else {
                None
            };
            // A child left by an interrupted attempt is not referenced by the
            // machine file: pick a fresh name rather than trust it.
            let mut attempt = 0;
            while self.exists_file(&child_path(&d.base, id, attempt))? {
                attempt += 1;
            }
            let child = child_path(&d.base, id, attempt);
            let c = create_child(&**self.fs(), &child, &d.active, None)?;
            let child_identity = format!("vhdx:{}", c.data_write_guid());
            c.close()?;
            disk.adopt_identity(&child_identity)?;
            disk.close()?;
            out.push(CheckpointDisk {
                name: d.name.clone(),
                frozen: d.active.clone(),
                child,
                rct_id,
            });
        }
        Ok(out)
    }

    fn newest_checkpoint(&self, m: &Machine, id: u64) -> Result<Checkpoint> {
        let cp = m
            .checkpoint(id)
            .ok_or_else(|| MachineError::NoCheckpoint {
                machine: m.name.clone(),
                id,
            })?
            .clone();
        let newest = cp
            .disks
            .iter()
            .all(|cd| m.disk(&cd.name).is_some_and(|d| d.active == cd.child));
        if !newest {
            return Err(MachineError::NotNewest {
                machine: m.name.clone(),
                id,
            });
        }
        Ok(cp)
    }

    /// Merges checkpoint `id`'s children back into their parents
    /// (crash-safe: run again after an interruption to finish) and releases
    /// the RCT IDs sealed for it.
    pub fn delete_checkpoint(&self, name: &str, id: u64) -> Result<Checkpoint> {
        // An unknown machine is refused before its disks are parked.
        self.load(name)?;
        let _parked = self.park(name)?;
        let cp = self.merge_back(name, id, |_| {})?;
        let m = self.load(name)?;
        for cd in &cp.disks {
            let Some(rid) = cd
                .rct_id
                .as_ref()
                .and_then(|s| s.parse::<rct::RctId>().ok())
            else {
                continue;
            };
            let mut disk = self.open_disk(&m, &cd.name, true)?;
            // Already released (an earlier, interrupted delete) is fine.
            let _ = disk.release(&rid);
            disk.close()?;
        }
        Ok(cp)
    }

    /// Merges checkpoint `id` back; `then` edits the machine in the same
    /// save that forgets the checkpoint.
    fn merge_back(
        &self,
        name: &str,
        id: u64,
        then: impl FnOnce(&mut Machine),
    ) -> Result<Checkpoint> {
        let mut m = self.load(name)?;
        let cp = self.newest_checkpoint(&m, id)?;
        for cd in &cp.disks {
            let base = m.disk(&cd.name).unwrap().base.clone();
            if self.exists_file(&cd.child)? {
                let g =
                    pending_merge_linkage(&**self.fs(), &cd.child)?.unwrap_or_else(Uuid::new_v4);
                let mut disk = Disk::open_tracked_as(self.fs().clone(), &cd.child, &base, true)?;
                disk.adopt_identity(&format!("vhdx:{g}"))?;
                disk.close()?;
                // The child stays until the machine file names the parent:
                // until then it is the disk's current file, and writes to it
                // after an interrupted merge are merged when this resumes.
                merge_into_parent_as(&**self.fs(), &cd.child, false, Some(g), &mut |_, _| {})?;
            }
            let d = m.disks.iter_mut().find(|d| d.name == cd.name).unwrap();
            d.active = cd.frozen.clone();
        }
        m.checkpoints.retain(|c| c.id != id);
        then(&mut m);
        self.save(&m)?;
        for cd in &cp.disks {
            // Nothing refers to the merged child any more; if it cannot be
            // removed it is only wasted space.
            let _ = self.fs().remove(&cd.child);
        }
        Ok(cp)
    }

    /// Converts recovery checkpoint `id` to a reference point: merges it
    /// back and keeps, per disk, its RCT ID.
    pub fn convert_checkpoint(&self, name: &str, id: u64) -> Result<ReferencePoint> {
        // An unknown machine is refused before its disks are parked.
        self.load(name)?;
        let _parked = self.park(name)?;
        let m = self.load(name)?;
        let cp = self.newest_checkpoint(&m, id)?;
        if cp.kind != CheckpointKind::Recovery {
            return Err(MachineError::NotRecovery {
                machine: name.into(),
                id,
            });
        }
        let rp = ReferencePoint {
            id: cp.id,
            created: cp.created,
            checkpoint: cp.id,
            disks: cp
                .disks
                .iter()
                .map(|d| ReferenceDisk {
                    name: d.name.clone(),
                    rct_id: d.rct_id.clone(),
                })
                .collect(),
            backup: cp.backup.clone(),
        };
        // The checkpoint becomes the reference point in one save of the
        // machine file: a crash leaves one or the other (the merge then
        // resumes), never neither, which would lose the RCT ID the next
        // backup needs to be incremental.
        self.merge_back(name, id, |m| m.reference_points.push(rp.clone()))?;
        Ok(rp)
    }

    /// Reverts the machine to checkpoint `id`: the changes since are
    /// discarded (and marked changed for tracking), a fresh child starts.
    pub fn apply_checkpoint(&self, name: &str, id: u64) -> Result<()> {
        // An unknown machine is refused before its disks are parked.
        self.load(name)?;
        let _parked = self.park(name)?;
        let mut m = self.load(name)?;
        let cp = self.newest_checkpoint(&m, id)?;
        let mut new_children = Vec::new();
        for cd in &cp.disks {
            let base = m.disk(&cd.name).unwrap().base.clone();
            let mut disk = Disk::open_tracked_as(self.fs().clone(), &cd.child, &base, true)?;
            // Everything the child holds goes back to the checkpoint's content.
            let child = Vhdx::open(&**self.fs(), &cd.child, false)?;
            for x in child.resolve(0, child.virtual_size())? {
                if x.source != Source::Parent {
                    disk.mark_changed(x.offset, x.len)?;
                }
            }
            drop(child);
            let mut attempt = 1;
            while self.exists_file(&child_path(&base, id, attempt))? {
                attempt += 1;
            }
            let fresh = child_path(&base, id, attempt);
            let c = create_child(&**self.fs(), &fresh, &cd.frozen, None)?;
            disk.adopt_identity(&format!("vhdx:{}", c.data_write_guid()))?;
            c.close()?;
            disk.close()?;
            new_children.push((cd.name.clone(), cd.child.clone(), fresh));
        }
        for (name, old, fresh) in &new_children {
            m.disks.iter_mut().find(|d| &d.name == name).unwrap().active = fresh.clone();
            for c in m.checkpoints.iter_mut().filter(|c| c.id == id) {
                c.disks.iter_mut().find(|d| &d.name == name).unwrap().child = fresh.clone();
            }
            let _ = old;
        }
        self.save(&m)?;
        for (_, old, _) in new_children {
            let _ = self.fs().remove(&old);
        }
        Ok(())
    }

    /// Forgets a reference point and releases its RCT IDs.
    pub fn destroy_reference_point(&self, name: &str, id: u64) -> Result<()> {
        // An unknown machine is refused before its disks are parked.
        self.load(name)?;
        let _parked = self.park(name)?;
        let mut m = self.load(name)?;
        let rp = m
            .reference_point(id)
            .ok_or_else(|| MachineError::NoReferencePoint {
                machine: name.into(),
                id,
            })?
            .clone();
        for rd in &rp.disks {
            let Some(idstr) = &rd.rct_id else { continue };
            if let (Ok(rid), Ok(mut disk)) = (
                idstr.parse::<rct::RctId>(),
                self.open_disk(&m, &rd.name, true),
            ) {
                // A stale ID (already released, tracking reset) is no reason
                // to keep the reference point.
                let _ = disk.release(&rid);
                disk.close()?;
            }
        }
        m.reference_points.retain(|r| r.id != id);
        self.save(&m)?;
        Ok(())
    }

    /// Records that checkpoint `id` was backed up to `link`.
    pub fn set_checkpoint_backup(&self, name: &str, id: u64, link: BackupLink) -> Result<()> {
        let mut m = self.load(name)?;
        if let Some(c) = m.checkpoints.iter_mut().find(|c| c.id == id) {
            c.backup = Some(link);
        }
        self.save(&m)
    }

    /// The consistency a checkpoint of `m` gets when none is asked for:
    /// application-consistent when the machine has freeze/thaw hooks.
    pub fn default_consistency(m: &Machine) -> Consistency {
        if m.freeze.is_some() {
            Consistency::Application
        } else {
            Consistency::Crash
        }
    }

    /// Opens the frozen content of a checkpoint's disk, read-only.
    pub fn open_checkpoint_disk(&self, cp: &Checkpoint, disk: &str) -> Result<Chain> {
        let cd = cp.disks.iter().find(|d| d.name == disk).ok_or_else(|| {
            MachineError::NoCheckpointDisk {
                checkpoint: cp.id,
                disk: disk.into(),
            }
        })?;
        Ok(Chain::open(&**self.fs(), &cd.frozen, false)?)
    }
}
