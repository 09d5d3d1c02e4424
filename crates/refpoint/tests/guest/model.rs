//! The host's model of the guest's disks: what was acknowledged, what was
//! in flight at the cut, which RCT IDs are retained since when; and the
//! plan of operations for the next WORK phase.

use rand::rngs::SmallRng;
use rand::Rng;
use std::collections::BTreeMap;

pub const DISK_SIZE: usize = 16 << 20;
pub const SLOT_MIB: usize = 16;
/// Where on the output disk the host puts the WORK plan (after the check text).
pub const PLAN_MIB: usize = 8;
/// Disks per file system; the slot after the last is for restored points.
pub const MAX_DISKS: usize = 6;
pub const RESTORE_SLOT: usize = MAX_DISKS;
pub const PATTERNS: usize = 4;
pub const PATTERN_SIZE: usize = 1 << 20;
pub const MACHINE: &str = "vm1";

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Vhdx,
    Raw,
    /// A VHDX that is the machine's disk0: written and queried as vm1/disk0.
    Machine,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum State {
    Absent,
    Exists,
    Tracked,
}

/// An acknowledged write (or the part of an in-flight one that landed).
#[derive(Clone, Debug)]
pub struct Write {
    pub seq: u64,
    pub round: u64,
    pub off: usize,
    pub len: usize,
}

#[derive(Clone, Debug)]
pub struct RctId {
    pub id: String,
    /// Writes with a larger seq must be reported as changed since this ID.
    pub seal_seq: u64,
    /// A backup may have released it (it replaces the reference point, and
    /// one after an interrupted backup may keep the old one): while it is
    /// retained it is checked, once gone it is forgotten.
    pub may_go: bool,
}

pub struct Disk {
    pub name: String,
    pub kind: Kind,
    pub slot: usize,
    pub state: State,
    /// Unusable after a failure (not planned for or checked again).
    pub broken: bool,
    /// For the machine's disk: the machine record exists.
    pub machine: bool,
    pub content: Vec<u8>,
    pub writes: Vec<Write>,
    pub ids: Vec<RctId>,
}

impl Disk {
    fn new(name: &str, kind: Kind, slot: usize) -> Disk {
        Disk {
            name: name.into(),
            kind,
            slot,
            state: State::Absent,
            broken: false,
            machine: false,
            content: vec![0; DISK_SIZE],
            writes: Vec::new(),
            ids: Vec::new(),
        }
    }

    /// How refpoint commands address the disk.
    pub fn target(&self) -> String {
        match self.kind {
            Kind::Machine => format!("{MACHINE}/disk0"),
            _ => self.name.clone(),
        }
    }

    pub fn kind_word(&self) -> &'static str {
        match self.kind {
            Kind::Vhdx => "vhdx",
            Kind::Raw => "raw",
            Kind::Machine => "machine",
        }
    }
}

#[derive(Clone, Debug)]
pub enum Op {
    Write {
        disk: usize,
        off: usize,
        pattern: usize,
        poff: usize,
        len: usize,
    },
    Seal(usize),
    Release(usize),
    Create(usize),
    RawCreate(usize),
    Enable(usize),
    MachineCreate(usize),
    Backup(usize),
}

impl Op {
    pub fn disk(&self) -> usize {
        match *self {
            Op::Write { disk, .. } => disk,
            Op::Seal(d) | Op::Release(d) | Op::Create(d) | Op::RawCreate(d) => d,
            Op::Enable(d) | Op::MachineCreate(d) | Op::Backup(d) => d,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Op::Write { .. } => "write",
            Op::Seal(_) => "seal",
            Op::Release(_) => "release",
            Op::Create(_) => "create",
            Op::RawCreate(_) => "rawcreate",
            Op::Enable(_) => "enable",
            Op::MachineCreate(_) => "mcreate",
            Op::Backup(_) => "backup",
        }
    }

    /// The line of /rp/work that runs it (init.sh's op_* functions).
    pub fn line(&self, seq: u64, disks: &[Disk]) -> String {
        let d = &disks[self.disk()];
        let (name, target) = (&d.name, d.target());
        match *self {
            Op::Write {
                off,
                pattern,
                poff,
                len,
                ..
            } => format!("write {seq} {target} {off} {pattern} {poff} {len}"),
            Op::Create(_) => format!("create {seq} {name} {DISK_SIZE} 1M"),
            Op::RawCreate(_) => format!("rawcreate {seq} {name} {DISK_SIZE}"),
            Op::MachineCreate(_) => format!("mcreate {seq} {MACHINE} {name}"),
            Op::Backup(_) => format!("backup {seq} {MACHINE}"),
            _ => format!("{} {seq} {target}", self.kind()),
        }
    }
}

/// An acknowledged backup point and the machine disk's content then.
pub struct Point {
    pub point: u64,
    pub content: Vec<u8>,
}

/// The operation that had begun and not been acknowledged at the cut.
pub struct InFlight {
    pub seq: u64,
    pub op: Op,
    /// The ID a release named in its BEGIN line.
    pub id: Option<String>,
}

/// What the WORK phase of one boot did, as the console showed it.
#[derive(Default)]
pub struct Applied {
    pub acked: Vec<&'static str>,
    pub failed: Vec<String>,
    /// Typed refusals of seal/release in the work (each followed by a
    /// restart of the disk's tracking), by kind.
    pub refused: Vec<String>,
    pub inflight: Option<&'static str>,
}

pub struct Model {
    pub disks: Vec<Disk>,
    pub patterns: Vec<Vec<u8>>,
    pub points: Vec<Point>,
    pub inflight: Option<InFlight>,
    /// Verify and restore the latest point at the next check.
    pub verify_due: bool,
    created: usize,
}

impl Model {
    /// A fresh file system: a dynamic VHDX, a raw image and a machine's
    /// VHDX, all still to be created.
    pub fn new(patterns: Vec<Vec<u8>>) -> Model {
        let disks = vec![
            Disk::new("a.vhdx", Kind::Vhdx, 0),
            Disk::new("b.img", Kind::Raw, 1),
            Disk::new("m.vhdx", Kind::Machine, 2),
        ];
        Model {
            disks,
            patterns,
            points: Vec::new(),
            inflight: None,
            verify_due: false,
            created: 0,
        }
    }

    /// About `n` operations for the next WORK phase (more than it can run
    /// before the cut), starting with whatever brings every disk to tracked.
    pub fn plan(&mut self, rng: &mut SmallRng, seq: &mut u64, n: usize) -> Vec<(u64, Op)> {
        let mut ops = Vec::new();
        let setup = |d: &Disk, i: usize, ops: &mut Vec<Op>| {
            if d.broken {
                return;
            }
            if d.state == State::Absent {
                ops.push(if d.kind == Kind::Raw {
                    Op::RawCreate(i)
                } else {
                    Op::Create(i)
                });
            }
            if d.state != State::Tracked {
                ops.push(if d.kind == Kind::Machine && !d.machine {
                    Op::MachineCreate(i)
                } else {
                    Op::Enable(i)
                });
            }
        };
        for (i, d) in self.disks.iter().enumerate() {
            setup(d, i, &mut ops);
        }
        // What the guest will have once the setup is done.
        let mut tracked: Vec<usize> = (0..self.disks.len())
            .filter(|&i| !self.disks[i].broken)
            .collect();
        let mut ids: Vec<usize> = self
            .disks
            .iter()
            .map(|d| {
                if d.state == State::Tracked {
                    d.ids.len()
                } else {
                    0
                }
            })
            .collect();
        let machine = tracked
            .iter()
            .copied()
            .find(|&i| self.disks[i].kind == Kind::Machine);
        while ops.len() < n {
            let roll = rng.gen_range(0..100);
            let plain: Vec<usize> = tracked
                .iter()
                .copied()
                .filter(|&i| self.disks[i].kind != Kind::Machine)
                .collect();
            let releasable: Vec<usize> = plain.iter().copied().filter(|&i| ids[i] >= 3).collect();
            if (60..74).contains(&roll) && !plain.is_empty() {
                let d = plain[rng.gen_range(0..plain.len())];
                ids[d] += 1;
                ops.push(Op::Seal(d));
            } else if (74..84).contains(&roll) && !releasable.is_empty() {
                let d = releasable[rng.gen_range(0..releasable.len())];
                ids[d] -= 1;
                ops.push(Op::Release(d));
            } else if (84..87).contains(&roll) && self.disks.len() < MAX_DISKS {
                self.created += 1;
                let i = self.disks.len();
                self.disks
                    .push(Disk::new(&format!("c{}.vhdx", self.created), Kind::Vhdx, i));
                ops.push(Op::Create(i));
                ops.push(Op::Enable(i));
                tracked.push(i);
                ids.push(0);
            } else if (87..92).contains(&roll) && machine.is_some() {
                ops.push(Op::Backup(machine.unwrap()));
            } else if !tracked.is_empty() {
                let d = tracked[rng.gen_range(0..tracked.len())];
                ops.push(self.write(rng, d));
            }
        }
        ops.into_iter()
            .map(|op| {
                *seq += 1;
                (*seq, op)
            })
            .collect()
    }

    fn write(&self, rng: &mut SmallRng, disk: usize) -> Op {
        let mut len = match rng.gen_range(0..10) {
            0..=6 => rng.gen_range(1..=64 << 10),
            7..=8 => rng.gen_range(64 << 10..=256 << 10),
            _ => rng.gen_range(256 << 10..=PATTERN_SIZE),
        };
        let align = rng.gen_range(0..3); // 64 KiB, 4 KiB or none
        if align < 2 {
            len = len.div_ceil(4096).min(PATTERN_SIZE / 4096) * 4096;
        }
        let mut off = rng.gen_range(0..=DISK_SIZE - len);
        off -= off % [64 << 10, 4096, 1][align];
        let poff = rng.gen_range(0..=PATTERN_SIZE - len);
        Op::Write {
            disk,
            off,
            pattern: rng.gen_range(0..PATTERNS),
            poff,
            len,
        }
    }

    /// Takes one boot's BEGIN/ACK/SKIP/FAIL lines: acknowledged operations
    /// change the model, the last begun and unacknowledged one is in flight.
    pub fn apply(&mut self, plan: &BTreeMap<u64, Op>, lines: &[String], round: u64) -> Applied {
        let mut out = Applied::default();
        let mut current: Option<InFlight> = None;
        for line in lines {
            let mut words = line.split_whitespace();
            let (Some(what), Some(seq)) = (
                words.next(),
                words.next().and_then(|s| s.parse::<u64>().ok()),
            ) else {
                continue;
            };
            let kv: BTreeMap<&str, &str> = words.filter_map(|w| w.split_once('=')).collect();
            let Some(op) = plan.get(&seq) else { continue };
            match what {
                "BEGIN" => {
                    assert!(
                        current.is_none(),
                        "BEGIN {seq} while an earlier operation was unacknowledged"
                    );
                    current = Some(InFlight {
                        seq,
                        op: op.clone(),
                        id: kv.get("id").map(|s| s.to_string()),
                    });
                }
                "ACK" => {
                    self.ack(seq, op, &kv, round);
                    out.acked.push(op.kind());
                    current = None;
                }
                "SKIP" => current = None,
                "REFUSED" => {
                    // The IDs may go with the restart that follows.
                    let d = &mut self.disks[op.disk()];
                    d.ids.iter_mut().for_each(|i| i.may_go = true);
                    out.refused
                        .push(kv.get("kind").unwrap_or(&"unknown").to_string());
                }
                "RESTARTED" => {
                    let d = &mut self.disks[op.disk()];
                    d.ids.clear();
                    d.state = State::Tracked;
                    current = None;
                }
                "FAIL" => out
                    .failed
                    .push(format!("{line} [{}]", op.line(seq, &self.disks))),
                _ => {}
            }
        }
        out.inflight = current.as_ref().map(|f| f.op.kind());
        // Disks planned but never begun are forgotten (they come last).
        let keep = current.as_ref().map(|f| f.op.disk());
        while self.disks.len() > 3 {
            let last = self.disks.len() - 1;
            if self.disks[last].state != State::Absent || keep == Some(last) {
                break;
            }
            self.disks.pop();
            self.created -= 1;
        }
        self.inflight = current;
        out
    }

    fn ack(&mut self, seq: u64, op: &Op, kv: &BTreeMap<&str, &str>, round: u64) {
        let id = kv.get("id").map(|s| s.to_string()).unwrap_or_default();
        let d = &mut self.disks[op.disk()];
        match *op {
            Op::Write {
                off,
                pattern,
                poff,
                len,
                ..
            } => {
                d.content[off..off + len]
                    .copy_from_slice(&self.patterns[pattern][poff..poff + len]);
                d.writes.push(Write {
                    seq,
                    round,
                    off,
                    len,
                });
            }
            Op::Seal(_) => d.ids.push(RctId {
                id,
                seal_seq: seq,
                may_go: false,
            }),
            Op::Release(_) => d.ids.retain(|i| i.id != id),
            Op::Create(_) | Op::RawCreate(_) => d.state = State::Exists,
            Op::Enable(_) | Op::MachineCreate(_) => {
                d.machine |= matches!(op, Op::MachineCreate(_));
                d.state = State::Tracked;
                d.ids.clear();
            }
            Op::Backup(_) => {
                d.ids.iter_mut().for_each(|i| i.may_go = true);
                d.ids.push(RctId {
                    id,
                    seal_seq: seq,
                    may_go: false,
                });
                let point = kv.get("point").and_then(|p| p.parse().ok()).unwrap_or(0);
                let content = d.content.clone();
                self.points.push(Point { point, content });
                self.verify_due = true;
            }
        }
    }
}
