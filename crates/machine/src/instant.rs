//! Machines that run on a backup point (instant restore), and making their
//! disks standalone while they run.
//!
//! ```text
//! create:  <home>/instant/<name>/<disk>.vhdx = differencing child of the
//!          point's file (the repository is only read), tracking on
//! finish:  copy the whole view (point + what the machine wrote) into
//!          .<disk>.vhdx.standalone while the machine writes; rounds of
//!          "changed since the last seal" catch up; then, parked (I/O
//!          waits for a moment): the last changes, the tracking adopts the
//!          new file's identity, rename over the child → the disk is one
//!          standalone file, same name, same tracking
//! discard: forget the machine, remove its directory
//! ```
//!
//! Every step survives a kill: the machine file says `finishing` until all
//! disks are switched, a disk whose file has no parent any more was
//! switched already, and a partial copy is started over.

use crate::error::{MachineError, Result};
use crate::model::{Instant, Machine, MachineDisk, Sealing};
use crate::store::{valid_name, Store};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::Duration;
use vdisk::{Disk, RctId};
use vhdx::{create, create_child, CreateOptions, DiskType, Vhdx};

/// How much a catch-up round copies at most before the final, parked one.
const SWITCH_BELOW: u64 = 16 << 20;
/// Catch-up rounds before the switch, however much still changes.
const MAX_ROUNDS: usize = 8;
/// The unit of copying: each chunk takes the disk only for its read.
const CHUNK: u64 = 4 << 20;

/// A disk of a machine to create on a backup point: its name and the
/// point's file it starts from.
#[derive(Debug, Clone)]
pub struct InstantDisk {
    pub name: String,
    pub parent: PathBuf,
}

#[derive(Debug, Clone, Default)]
pub struct FinishOptions {
    /// Copy the point's data at most this fast, in bytes per second (the
    /// catch-up of what the machine writes meanwhile is not held to it).
    pub throttle: Option<u64>,
}

/// What a finish did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinishSummary {
    pub machine: String,
    pub disks: Vec<FinishedDisk>,
    pub bytes_copied: u64,
    pub seconds: f64,
    /// Whether an interrupted finish was resumed.
    pub resumed: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FinishedDisk {
    pub name: String,
    pub file: PathBuf,
    pub bytes_copied: u64,
    /// Catch-up rounds before the switch.
    pub rounds: usize,
    /// How long writes waited at the switch, in seconds.
    pub paused_seconds: f64,
    /// Set when the disk had been switched by an interrupted finish.
    pub already_standalone: bool,
}

impl Store {
    /// The directory an instant machine's files live in.
    pub fn instant_dir(&self, name: &str) -> PathBuf {
        self.home().join("instant").join(name)
    }

    /// Creates machine `name` whose disks are new differencing children of
    /// `disks`' files (which are only read from now on), tracked.
    pub fn create_instant(
        &self,
        name: &str,
        disks: &[InstantDisk],
        origin: Instant,
    ) -> Result<Machine> {
        self.check_new(name, disks.len())?;
        let fs = &**self.fs();
        let dir = self.instant_dir(name);
        // Files of a create cut short: no machine file names them.
        if self.exists_file(&dir)? {
            self.remove_dir_files(&dir)?;
        }
        fs.create_dir_all(&dir).map_err(self.io(&dir, "creating"))?;
        let mut out = Vec::new();
        for d in disks {
            if !valid_name(&d.name) {
                return Err(MachineError::BadName {
                    what: "disk",
                    name: d.name.clone(),
                });
            }
            let child = dir.join(format!("{}.vhdx", d.name));
            create_child(fs, &child, &d.parent, None)?.close()?;
            let mut disk = Disk::open(self.fs().clone(), &child, true)?;
            disk.enable_tracking(rct::DEFAULT_GRANULARITY)?;
            disk.close()?;
            out.push(MachineDisk {
                name: d.name.clone(),
                base: child.clone(),
                active: child,
            });
        }
        // The files' names are durable before the machine file names them.
        for p in [
            &dir,
            &self.home().join("instant"),
            &self.home().to_path_buf(),
        ] {
            fs.sync_dir(p).map_err(self.io(p, "syncing"))?;
        }
        let m = Machine {
            name: name.into(),
            disks: out,
            freeze: None,
            thaw: None,
            checkpoints: vec![],
            reference_points: vec![],
            next_id: 1,
            instant: Some(origin),
        };
        self.save(&m)?;
        Ok(m)
    }

    /// Forgets instant machine `name` and removes its files (the point it
    /// ran on is untouched). Its held disks close; clients lose them.
    pub fn discard_instant(&self, name: &str) -> Result<()> {
        let m = self.load(name)?;
        if m.instant.is_none() {
            return Err(MachineError::NotInstant { name: name.into() });
        }
        self.pool().forget(name);
        // The machine file first: a cut after it leaves files no machine
        // names, which a later create of the name removes.
        let p = self.home().join("machines").join(format!("{name}.json"));
        self.fs()
            .remove_durable(&p)
            .map_err(self.io(&p, "removing"))?;
        let dir = self.instant_dir(name);
        if self.exists_file(&dir)? {
            self.remove_dir_files(&dir)?;
        }
        Ok(())
    }

    fn remove_dir_files(&self, dir: &Path) -> Result<()> {
        let fs = &**self.fs();
        for f in fs.list_dir(dir).map_err(self.io(dir, "listing"))? {
            fs.remove(&f).map_err(self.io(&f, "removing"))?;
        }
        fs.remove_dir(dir).map_err(self.io(dir, "removing"))?;
        if let Some(parent) = dir.parent() {
            fs.sync_dir(parent).map_err(self.io(parent, "syncing"))?;
        }
        Ok(())
    }

    /// Makes every disk of instant machine `name` a standalone file while
    /// the machine keeps running (see the module doc); then the machine is
    /// an ordinary one. Run again after an interruption to resume. The
    /// caller holds the machine's lock ([`Store::lock_machine`]).
    pub fn finish_instant(
        &self,
        name: &str,
        opts: &FinishOptions,
        progress: &mut dyn FnMut(&str, u64, u64),
    ) -> Result<FinishSummary> {
        let start = std::time::Instant::now();
        let mut m = self.load(name)?;
        let Some(inst) = m.instant.take() else {
            return Err(MachineError::NotInstant { name: name.into() });
        };
        // A checkpoint's children name the disk's file as their parent,
        // whose identity the switch changes.
        if !m.checkpoints.is_empty() {
            return Err(MachineError::InstantHasCheckpoints { name: name.into() });
        }
        if let Some(s) = &inst.sealing {
            self.release_interrupted(&m, s);
        }
        let resumed = inst.finishing;
        m.instant = Some(Instant {
            finishing: true,
            throttle: opts.throttle,
            sealing: None,
            ..inst
        });
        self.save(&m)?;
        let mut disks = Vec::new();
        for d in &m.disks {
            let standalone = Vhdx::open(&**self.fs(), &d.base, false)?
                .parent_locator()
                .is_none();
            if standalone {
                disks.push(FinishedDisk {
                    name: d.name.clone(),
                    file: d.base.clone(),
                    bytes_copied: 0,
                    rounds: 0,
                    paused_seconds: 0.0,
                    already_standalone: true,
                });
                continue;
            }
            disks.push(self.make_standalone(name, d, opts, progress)?);
        }
        let mut m = self.load(name)?;
        m.instant = None;
        self.save(&m)?;
        Ok(FinishSummary {
            machine: name.into(),
            bytes_copied: disks.iter().map(|d| d.bytes_copied).sum(),
            disks,
            seconds: start.elapsed().as_secs_f64(),
            resumed,
        })
    }

    /// Releases the IDs an interrupted finish sealed (nobody else knows
    /// them), best effort: one left only keeps some tracking history.
    fn release_interrupted(&self, m: &Machine, s: &Sealing) {
        let after = s.after.as_ref().and_then(|s| s.parse::<RctId>().ok());
        let kept: Vec<String> = m
            .reference_points
            .iter()
            .flat_map(|r| &r.disks)
            .filter(|r| r.name == s.disk)
            .filter_map(|r| r.rct_id.clone())
            .collect();
        let _ = self.with_held(&m.name, &s.disk, |d| {
            for id in d.retained_ids()? {
                let ours = match &after {
                    Some(a) => a.tracking == id.tracking && id.generation > a.generation,
                    None => true,
                };
                if ours && !kept.contains(&id.to_string()) {
                    let _ = d.release(&id);
                }
            }
            Ok(())
        });
    }

    /// Records that the finish seals IDs of `disk` after `after`.
    fn note_sealing(&self, machine: &str, disk: &str, after: Option<&RctId>) -> Result<()> {
        let mut m = self.load(machine)?;
        if let Some(i) = m.instant.as_mut() {
            i.sealing = Some(Sealing {
                disk: disk.to_string(),
                after: after.map(|a| a.to_string()),
            });
            self.save(&m)?;
        }
        Ok(())
    }

    fn make_standalone(
        &self,
        machine: &str,
        d: &MachineDisk,
        opts: &FinishOptions,
        progress: &mut dyn FnMut(&str, u64, u64),
    ) -> Result<FinishedDisk> {
        let fs = &**self.fs();
        let file_name = d
            .base
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let tmp = d.base.with_file_name(format!(".{file_name}.standalone"));
        if self.exists_file(&tmp)? {
            fs.remove(&tmp)
                .map_err(self.io(&tmp, "removing a stale copy"))?;
        }
        let child = Vhdx::open(fs, &d.base, false)?;
        let size = child.virtual_size();
        let mut out = create(
            fs,
            &tmp,
            &CreateOptions {
                virtual_size: size,
                disk_type: DiskType::Dynamic,
                block_size: child.block_size(),
                logical_sector_size: child.logical_sector_size(),
                physical_sector_size: child.physical_sector_size(),
            },
        )?;
        drop(child);
        let mut copy = Copier {
            disk: &d.name,
            throttle: opts.throttle,
            done: 0,
            total: 0,
            start: std::time::Instant::now(),
            progress,
        };
        let held = |f: &mut dyn FnMut(&mut Disk) -> Result<()>| {
            self.with_held(machine, &d.name, |disk| f(disk))
        };
        // Round 0: everything that may hold data, read while the machine
        // writes; what it writes meanwhile is in the next round's changes.
        // Untracked, nothing tells what changed: it is all copied parked.
        let mut since = None;
        let mut extents = Vec::new();
        held(&mut |disk| {
            if disk.is_tracked() {
                // Noted before sealing, so a cut right after leaves no ID
                // nobody knows.
                let before = match disk.tracking_status() {
                    vdisk::TrackingStatus::On(s) => s.most_recent_id,
                    _ => None,
                };
                self.note_sealing(machine, &d.name, before.as_ref())?;
                since = Some(disk.seal()?);
            }
            extents = disk.extents(0, size)?;
            Ok(())
        })?;
        let data = |extents: Vec<(u64, u64, bool)>| -> Vec<(u64, u64)> {
            extents
                .into_iter()
                .filter(|e| e.2)
                .map(|e| (e.0, e.1))
                .collect()
        };
        let mut rounds = 0;
        if let Some(since) = since.as_mut() {
            let ranges = data(extents);
            copy.total = ranges.iter().map(|r| r.1).sum();
            copy.ranges(&ranges, false, &mut out, &mut |o, b| {
                held(&mut |disk| Ok(disk.read(o, b)?))
            })?;
            // The throttle spares the machine's storage during the bulk
            // copy; held to it, catching up with a machine that writes
            // faster than the limit would never end.
            copy.throttle = None;
            while rounds < MAX_ROUNDS {
                rounds += 1;
                let mut changed = Vec::new();
                held(&mut |disk| {
                    let next = disk.seal()?;
                    changed = changes(disk, since, &next, size)?;
                    let _ = disk.release(since);
                    *since = next;
                    Ok(())
                })?;
                let n: u64 = changed.iter().map(|r| r.1).sum();
                copy.total += n;
                copy.ranges(&changed, true, &mut out, &mut |o, b| {
                    held(&mut |disk| Ok(disk.read(o, b)?))
                })?;
                if n <= SWITCH_BELOW {
                    break;
                }
            }
        }
        // The switch: writes wait from here until the disk reopens on the
        // standalone file.
        let paused = std::time::Instant::now();
        let parked = self.park(machine)?;
        let m = self.load(machine)?;
        let mut disk = self.open_disk(&m, &d.name, true)?;
        match &since {
            Some(since) => {
                let last = disk.seal()?;
                let changed = changes(&mut disk, since, &last, size)?;
                copy.total += changed.iter().map(|r| r.1).sum::<u64>();
                copy.ranges(&changed, true, &mut out, &mut |o, b| Ok(disk.read(o, b)?))?;
                let _ = disk.release(since);
                let _ = disk.release(&last);
            }
            None => {
                let ranges = data(disk.extents(0, size)?);
                copy.total = ranges.iter().map(|r| r.1).sum();
                copy.ranges(&ranges, false, &mut out, &mut |o, b| Ok(disk.read(o, b)?))?;
            }
        }
        out.close()?;
        let identity = vdisk::Image::open(fs, &tmp, false)?.identity()?;
        // Before the rename: a cut between the two leaves either file
        // under the name, and the tracking trusts both.
        disk.adopt_identity(&identity)?;
        disk.close()?;
        fs.rename_durable(&tmp, &d.base)
            .map_err(self.io(&d.base, "switching to the standalone file"))?;
        drop(parked);
        Ok(FinishedDisk {
            name: d.name.clone(),
            file: d.base.clone(),
            bytes_copied: copy.done,
            rounds,
            paused_seconds: paused.elapsed().as_secs_f64(),
            already_standalone: false,
        })
    }
}

/// The ranges of `disk` written between two of its RCT IDs.
fn changes(disk: &mut Disk, since: &RctId, until: &RctId, size: u64) -> Result<Vec<(u64, u64)>> {
    let c = disk.query_changes(since, Some(until), 0, size, usize::MAX)?;
    Ok(c.ranges.iter().map(|r| (r.offset, r.length)).collect())
}

/// Copies ranges of a disk into the standalone file, in chunks, at most
/// at the throttle's rate.
struct Copier<'a> {
    disk: &'a str,
    throttle: Option<u64>,
    done: u64,
    total: u64,
    start: std::time::Instant,
    progress: &'a mut dyn FnMut(&str, u64, u64),
}

impl Copier<'_> {
    /// `overwrite`: the file may hold older data there, so zeros are
    /// written too (a fresh file reads zeros where nothing was written).
    fn ranges(
        &mut self,
        ranges: &[(u64, u64)],
        overwrite: bool,
        out: &mut Vhdx,
        read: &mut dyn FnMut(u64, &mut [u8]) -> Result<()>,
    ) -> Result<()> {
        let mut buf = vec![0u8; CHUNK as usize];
        for &(offset, len) in ranges {
            let mut pos = offset;
            while pos < offset + len {
                let n = CHUNK.min(offset + len - pos);
                let b = &mut buf[..n as usize];
                read(pos, b)?;
                if !vdisk::is_zero(b) {
                    out.write(pos, b)?;
                } else if overwrite {
                    out.zero(pos, n)?;
                }
                pos += n;
                self.done += n;
                (self.progress)(self.disk, self.done, self.total);
                self.pace();
            }
        }
        Ok(())
    }

    fn pace(&self) {
        if let Some(rate) = self.throttle.filter(|r| *r > 0) {
            let due = Duration::from_secs_f64(self.done as f64 / rate as f64);
            if let Some(wait) = due.checked_sub(self.start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
    }
}
