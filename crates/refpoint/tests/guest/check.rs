//! The CHECK phase: what the guest is asked to look at after a cut
//! (init.sh's chk_* calls), and how the host judges the answers against
//! the model. Then the model adopts what the cut left (the in-flight
//! operation's outcome, the content actually read).

use super::model::{
    Disk, InFlight, Kind, Model, Op, RctId, State, Write, DISK_SIZE, RESTORE_SLOT, SLOT_MIB,
};
use super::read_out;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

pub struct Failure {
    pub round: u64,
    pub kind: &'static str,
    pub detail: String,
}

#[derive(Default)]
pub struct Stats {
    pub passed: u64,
    /// `rct changes` exit 3, by reason.
    pub refusals: BTreeMap<String, u64>,
    /// Acknowledged state that a cut took away (typed refusals followed).
    pub lost: BTreeMap<String, u64>,
    pub notes: BTreeMap<String, u64>,
    /// Bytes reported as changed, and really written, over the answers checked.
    pub reported: u64,
    pub required: u64,
}

fn creates(op: &Op) -> bool {
    matches!(op, Op::Create(_) | Op::RawCreate(_))
}

fn tracks(op: &Op) -> bool {
    matches!(op, Op::Enable(_) | Op::MachineCreate(_))
}

/// The disks a check looks at, with the in-flight operation if it was theirs.
fn checked(m: &Model) -> Vec<(usize, Option<&InFlight>)> {
    let mut out = Vec::new();
    for (i, d) in m.disks.iter().enumerate() {
        let inflight = m.inflight.as_ref().filter(|f| f.op.disk() == i);
        if d.broken || (d.state == State::Absent && !inflight.is_some_and(|f| creates(&f.op))) {
            continue;
        }
        out.push((i, inflight));
    }
    out
}

fn wants_ids(d: &Disk, inflight: Option<&InFlight>) -> bool {
    d.state == State::Tracked || inflight.is_some_and(|f| tracks(&f.op))
}

fn backup_due(m: &Model) -> Option<u64> {
    let inflight = m
        .inflight
        .as_ref()
        .is_some_and(|f| matches!(f.op, Op::Backup(_)));
    let last = m.points.last()?;
    (m.verify_due || inflight).then_some(last.point)
}

/// /rp/check for the state the model expects after the cut.
pub fn script(m: &Model) -> String {
    let mut s = String::new();
    for (i, inflight) in checked(m) {
        let d = &m.disks[i];
        s += &format!("chk_disk {} {} {}\n", d.slot, d.name, d.kind_word());
        if wants_ids(d, inflight) {
            // IDs a backup may have released are asked about if still listed.
            let mut ids: Vec<&str> = d
                .ids
                .iter()
                .filter(|i| !i.may_go)
                .map(|i| i.id.as_str())
                .collect();
            ids.extend(inflight.and_then(|f| f.id.as_deref()));
            s += &format!("chk_ids {} {} {}\n", d.name, d.target(), ids.join(" "));
        }
    }
    if let Some(point) = backup_due(m) {
        s += &format!("chk_backup /mnt/bk {point} {RESTORE_SLOT}\n");
    }
    s
}

/// /rp/ids/*: the retained IDs a WORK phase's releases choose from.
pub fn id_files(m: &Model) -> Vec<(String, String)> {
    m.disks
        .iter()
        .filter(|d| d.state == State::Tracked && d.kind != Kind::Machine)
        .map(|d| {
            let lines: String = d.ids.iter().map(|i| format!("{}\n", i.id)).collect();
            (d.target().replace('/', "_"), lines)
        })
        .collect()
}

struct Block {
    label: Vec<String>,
    rc: i32,
    out: String,
    err: String,
}

#[derive(Default)]
struct Answers {
    files: HashMap<String, bool>,
    blocks: Vec<Block>,
    dumps: HashMap<String, (usize, usize, i32)>,
}

impl Answers {
    fn parse(text: &str) -> Answers {
        let mut a = Answers::default();
        let mut lines = text.lines();
        while let Some(line) = lines.next() {
            let w: Vec<&str> = line.split_whitespace().collect();
            let num = |k: &str| -> i64 {
                w.iter()
                    .find_map(|x| x.strip_prefix(k))
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(-1)
            };
            match w.first().copied() {
                Some("@@FILE") => {
                    a.files
                        .insert(w[1].to_string(), w.get(2) != Some(&"missing"));
                }
                Some("@@DUMP") => {
                    a.dumps.insert(
                        w[1].to_string(),
                        (
                            num("slot=") as usize,
                            num("size=") as usize,
                            num("rc=") as i32,
                        ),
                    );
                }
                Some("@@BEGIN") => {
                    let label = w[1..w.len() - 1].iter().map(|s| s.to_string()).collect();
                    let (mut out, mut err, mut in_err) = (String::new(), String::new(), false);
                    for l in lines.by_ref() {
                        match l {
                            _ if l.starts_with("@@END") => break,
                            "@@STDERR" => in_err = true,
                            _ => {
                                let buf = if in_err { &mut err } else { &mut out };
                                buf.push_str(l);
                                buf.push('\n');
                            }
                        }
                    }
                    a.blocks.push(Block {
                        label,
                        rc: num("rc=") as i32,
                        out,
                        err,
                    });
                }
                _ => {}
            }
        }
        a
    }

    fn blocks(&self, label: &[&str]) -> Vec<&Block> {
        let matches = |b: &&Block| {
            b.label.len() >= label.len() && b.label.iter().zip(label).all(|(x, y)| x == y)
        };
        self.blocks.iter().filter(matches).collect()
    }
}

fn sorted_merged(mut v: Vec<(usize, usize)>) -> Vec<(usize, usize)> {
    v.sort();
    let mut out: Vec<(usize, usize)> = Vec::new();
    for (off, len) in v {
        match out.last_mut() {
            Some((o, l)) if off <= *o + *l => *l = (*l).max(off + len - *o),
            _ => out.push((off, len)),
        }
    }
    out
}

/// Byte runs of `need` outside `have` (both merged).
fn uncovered(need: &[(usize, usize)], have: &[(usize, usize)]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    for &(off, len) in need {
        let (mut pos, end) = (off, off + len);
        for &(h, hl) in have {
            if h + hl <= pos || h >= end {
                continue;
            }
            if h > pos {
                out.push((pos, h - pos));
            }
            pos = pos.max(h + hl);
        }
        if pos < end {
            out.push((pos, end - pos));
        }
    }
    out
}

fn runs(bad: impl Iterator<Item = usize>) -> Vec<(usize, usize)> {
    sorted_merged(bad.map(|i| (i, 1)).collect())
}

fn refusal_reason(b: &Block) -> String {
    if let Some(e) = serde_json::from_str::<Value>(&b.out)
        .ok()
        .and_then(|v| v["error"].as_str().map(String::from))
    {
        return e;
    }
    b.err
        .split_once("error (")
        .and_then(|(_, r)| r.split_once(')'))
        .map_or("unparsed".into(), |(r, _)| r.into())
}

fn excerpt(s: &str) -> String {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    s.chars().take(400).collect()
}

struct Judge<'a> {
    round: u64,
    failures: Vec<Failure>,
    st: &'a mut Stats,
}

impl Judge<'_> {
    fn fail(&mut self, kind: &'static str, detail: String) {
        self.failures.push(Failure {
            round: self.round,
            kind,
            detail,
        });
    }
}

/// Judges the check text (and the dumps on the output disk) against the
/// model, then makes the model what the cut left.
pub fn evaluate(m: &mut Model, text: &str, out: &Path, round: u64, st: &mut Stats) -> Vec<Failure> {
    let a = Answers::parse(text);
    let mut j = Judge {
        round,
        failures: Vec::new(),
        st,
    };
    let todo: Vec<usize> = checked(m).into_iter().map(|(i, _)| i).collect();
    let due = backup_due(m);
    let inflight = m.inflight.take();
    let patterns = m.patterns.clone();
    for i in todo {
        let mine = inflight.as_ref().filter(|f| f.op.disk() == i);
        disk(&mut j, &a, &mut m.disks[i], mine, &patterns, out);
    }
    if let Some(point) = due {
        backup(&mut j, &a, m, point, out);
    }
    m.verify_due = false;
    j.failures
}

fn disk(
    j: &mut Judge,
    a: &Answers,
    d: &mut Disk,
    inflight: Option<&InFlight>,
    patterns: &[Vec<u8>],
    out: &Path,
) {
    let name = d.name.clone();
    match a.files.get(&name) {
        None => return j.fail("harness", format!("{name}: the guest did not check it")),
        Some(false) if d.state == State::Absent => return, // an unacknowledged create
        Some(false) => {
            j.fail(
                "acknowledged file missing",
                format!("{name} ({:?}) is gone after the cut", d.state),
            );
            // Made anew by the next WORK phase (a machine's disk cannot be).
            d.broken = d.kind == Kind::Machine;
            (d.state, d.ids, d.writes) = (State::Absent, Vec::new(), Vec::new());
            d.content.fill(0);
            return;
        }
        Some(true) if d.state == State::Absent => {
            d.state = State::Exists;
            *j.st
                .notes
                .entry("in-flight create left the file".into())
                .or_default() += 1;
        }
        Some(true) => {}
    }
    if d.kind == Kind::Machine {
        let machine_ok = a.blocks(&["machine", &name]).iter().all(|b| b.rc == 0);
        if !machine_ok && d.state == State::Tracked {
            d.broken = true;
            return j.fail(
                "acknowledged file missing",
                format!("machine record of {name}: `machine show` failed"),
            );
        }
        d.machine = machine_ok;
        if !machine_ok {
            d.state = State::Exists;
        }
    }
    for b in a.blocks(&["vcheck", &name]) {
        if b.rc == 0 {
            j.st.passed += 1;
        } else {
            d.broken = true;
            let file = b.label.get(2).cloned().unwrap_or_default();
            j.fail(
                "vhd check failed",
                format!(
                    "{file} (rc {}): {} {}",
                    b.rc,
                    excerpt(&b.out),
                    excerpt(&b.err)
                ),
            );
        }
    }
    if let Some(b) = a
        .blocks(&["convert", &name])
        .into_iter()
        .find(|b| b.rc != 0)
    {
        d.broken = true;
        return j.fail(
            "disk unreadable",
            format!("{name}: vhd convert rc {}: {}", b.rc, excerpt(&b.err)),
        );
    }
    let Some(&(slot, size, rc)) = a.dumps.get(&name) else {
        d.broken = true;
        return j.fail("harness", format!("{name}: no dump"));
    };
    assert_eq!((slot, rc), (d.slot, 0), "{name}: dump slot/rc");
    let mut actual = read_out(
        out,
        ((slot + 1) * SLOT_MIB) as u64 * (1 << 20),
        size.min(DISK_SIZE),
    );
    if size != DISK_SIZE {
        *j.st
            .notes
            .entry(format!("{} read back as {size} bytes", d.kind_word()))
            .or_default() += 1;
    }
    actual.resize(DISK_SIZE, 0);
    content(j, d, &actual, inflight, patterns);
    if wants_ids(d, inflight) {
        tracking(j, a, d, inflight);
    }
}

/// Every acknowledged write reads back; bytes of the in-flight write may be
/// old or new. Then the model takes what was read, and the in-flight
/// write's bytes that landed count as written since every retained ID.
fn content(
    j: &mut Judge,
    d: &mut Disk,
    actual: &[u8],
    inflight: Option<&InFlight>,
    patterns: &[Vec<u8>],
) {
    let pending = match inflight.map(|f| (f.seq, &f.op)) {
        Some((
            seq,
            &Op::Write {
                off,
                pattern,
                poff,
                len,
                ..
            },
        )) => Some((seq, off, &patterns[pattern][poff..poff + len])),
        _ => None,
    };
    let allowed = |i: usize| {
        actual[i] == d.content[i]
            || pending.is_some_and(|(_, off, new)| {
                i >= off && i < off + new.len() && actual[i] == new[i - off]
            })
    };
    let mut bad = Vec::new();
    for c in (0..DISK_SIZE).step_by(4096) {
        if actual[c..c + 4096] != d.content[c..c + 4096] {
            bad.extend((c..c + 4096).filter(|&i| !allowed(i)));
        }
    }
    if bad.is_empty() {
        j.st.passed += 1;
    } else {
        let runs = runs(bad.into_iter());
        let total: usize = runs.iter().map(|r| r.1).sum();
        let mut detail = format!(
            "{}: {total} bytes in {} runs differ from acknowledged writes;",
            d.name,
            runs.len()
        );
        for &(off, len) in runs.iter().take(3) {
            let zeros = actual[off..off + len].iter().all(|&b| b == 0);
            let writer = d
                .writes
                .iter()
                .rev()
                .find(|w| w.off <= off && off < w.off + w.len);
            let by = writer.map_or("never written (expected zeros)".into(), |w| {
                format!(
                    "last acknowledged write seq {} (round {}, offset {}, length {})",
                    w.seq, w.round, w.off, w.len
                )
            });
            detail += &format!(
                " [{off}, +{len}) reads {}: {by};",
                if zeros { "zeros" } else { "other data" }
            );
        }
        j.fail("acknowledged write lost", detail);
    }
    if let Some((seq, off, new)) = pending {
        let landed = runs((off..off + new.len()).filter(|&i| actual[i] != d.content[i]));
        let round = j.round - 1;
        d.writes.extend(landed.into_iter().map(|(off, len)| Write {
            seq,
            round,
            off,
            len,
        }));
    }
    d.content.copy_from_slice(actual);
}

/// Status and `rct changes` answers: every retained ID's ranges cover what
/// was written since it, or the answer is a typed refusal.
fn tracking(j: &mut Judge, a: &Answers, d: &mut Disk, inflight: Option<&InFlight>) {
    let name = d.name.clone();
    let Some(status) = a.blocks(&["status", &name]).first().copied() else {
        return j.fail("harness", format!("{name}: no status"));
    };
    let json: Value = serde_json::from_str(&status.out).unwrap_or(Value::Null);
    if status.rc != 0 || json.is_null() {
        d.broken = true;
        return j.fail(
            "unexpected error",
            format!(
                "{name}: rct status rc {}: {}",
                status.rc,
                excerpt(&status.err)
            ),
        );
    }
    let enabled = json["enabled"].as_bool().unwrap_or(false);
    if let Some(e) = json["error"].as_str() {
        *j.st
            .notes
            .entry(format!("status error: {}", excerpt(e)))
            .or_default() += 1;
    }
    if d.state == State::Tracked && !enabled {
        *j.st
            .lost
            .entry("acknowledged rct enable".into())
            .or_default() += 1;
    }
    if d.state != State::Tracked && enabled {
        d.ids.clear(); // the in-flight enable happened
    }
    d.state = if enabled {
        State::Tracked
    } else {
        State::Exists
    };
    let retained: Vec<String> = json["retained_ids"]
        .as_array()
        .map(|v| {
            v.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default();
    let (op, seq) = (inflight.map(|f| &f.op), inflight.map_or(0, |f| f.seq));
    for id in &retained {
        if d.ids.iter().any(|i| &i.id == id) {
            continue;
        }
        if matches!(op, Some(Op::Seal(_) | Op::Backup(_))) {
            d.ids.push(RctId {
                id: id.clone(),
                seal_seq: seq,
                may_go: false,
            });
        } else {
            *j.st
                .notes
                .entry("retained ID the host never saw".into())
                .or_default() += 1;
        }
    }
    let released = |id: &str| match op {
        Some(Op::Release(_)) => inflight.and_then(|f| f.id.as_deref()) == Some(id),
        Some(Op::Backup(_)) => true,
        _ => false,
    };
    let lost = d
        .ids
        .iter()
        .filter(|i| !retained.contains(&i.id) && !released(&i.id) && !i.may_go)
        .count() as u64;
    if lost > 0 {
        let what = if d.kind == Kind::Machine {
            "acknowledged reference point's RCT ID"
        } else {
            "acknowledged sealed RCT ID"
        };
        *j.st.lost.entry(what.into()).or_default() += lost;
    }
    for b in a.blocks(&["changes", &name]) {
        let id = b.label.get(2).cloned().unwrap_or_default();
        match b.rc {
            0 => changes(j, d, &id, b),
            3 => {
                let known = d.ids.iter().any(|i| i.id == id);
                let which = if known && released(&id) {
                    "an ID the operation in flight at the cut released"
                } else if known && retained.contains(&id) {
                    "a retained ID"
                } else if known {
                    "an acknowledged ID the cut lost"
                } else {
                    "an ID the host does not know"
                };
                *j.st
                    .refusals
                    .entry(format!("{} for {which}", refusal_reason(b)))
                    .or_default() += 1;
            }
            rc => j.fail(
                "unexpected error",
                format!(
                    "{name}: rct changes --since {id} rc {rc}: {}",
                    excerpt(&b.err)
                ),
            ),
        }
    }
    d.ids.retain(|i| retained.contains(&i.id));
    d.ids.sort_by_key(|i| i.seal_seq);
}

fn changes(j: &mut Judge, d: &Disk, id: &str, b: &Block) {
    let Some(since) = d.ids.iter().find(|i| i.id == id) else {
        return; // no baseline known: nothing to compare with
    };
    let json: Value = serde_json::from_str(&b.out).unwrap_or(Value::Null);
    let Some(list) = json["ranges"].as_array() else {
        return j.fail(
            "unexpected error",
            format!(
                "{}: rct changes --since {id}: no ranges: {}",
                d.name,
                excerpt(&b.out)
            ),
        );
    };
    let have: Vec<(usize, usize)> = list
        .iter()
        .map(|r| {
            (
                r["offset"].as_u64().unwrap_or(0) as usize,
                r["length"].as_u64().unwrap_or(0) as usize,
            )
        })
        .collect();
    let have = sorted_merged(have);
    let written: Vec<&Write> = d.writes.iter().filter(|w| w.seq > since.seal_seq).collect();
    let need = sorted_merged(written.iter().map(|w| (w.off, w.len)).collect());
    j.st.reported += have.iter().map(|r| r.1 as u64).sum::<u64>();
    j.st.required += need.iter().map(|r| r.1 as u64).sum::<u64>();
    let missing = uncovered(&need, &have);
    if missing.is_empty() {
        j.st.passed += 1;
        return;
    }
    let mut detail = format!(
        "{}: changes since {id} (sealed at seq {}) miss {} ranges:",
        d.name,
        since.seal_seq,
        missing.len()
    );
    for &(off, len) in missing.iter().take(3) {
        let w = written
            .iter()
            .rev()
            .find(|w| w.off < off + len && off < w.off + w.len)
            .unwrap();
        detail += &format!(
            " [{off}, +{len}) written by seq {} (round {}, offset {}, length {});",
            w.seq, w.round, w.off, w.len
        );
    }
    j.fail("changes miss a write", detail);
}

fn backup(j: &mut Judge, a: &Answers, m: &Model, point: u64, out: &Path) {
    let p = m.points.iter().find(|p| p.point == point).unwrap();
    let p_s = point.to_string();
    for b in a.blocks(&["verify", &p_s]) {
        if b.rc == 0 {
            j.st.passed += 1;
        } else {
            j.fail(
                "acknowledged backup fails verify",
                format!(
                    "point {point} rc {}: {} {}",
                    b.rc,
                    excerpt(&b.out),
                    excerpt(&b.err)
                ),
            );
        }
    }
    if let Some(b) = a.blocks(&["restore", &p_s]).into_iter().find(|b| b.rc != 0) {
        return j.fail(
            "acknowledged backup fails restore",
            format!("point {point} rc {}: {}", b.rc, excerpt(&b.err)),
        );
    }
    let Some(&(slot, size, _)) = a.dumps.get(&format!("restore-{point}")) else {
        return j.fail("harness", format!("point {point}: no restore dump"));
    };
    let mut actual = read_out(
        out,
        ((slot + 1) * SLOT_MIB) as u64 * (1 << 20),
        size.min(DISK_SIZE),
    );
    actual.resize(DISK_SIZE, 0);
    if actual == p.content {
        j.st.passed += 1;
    } else {
        let first = (0..DISK_SIZE).find(|&i| actual[i] != p.content[i]).unwrap();
        j.fail(
            "restored backup differs",
            format!("point {point}: first differing byte at {first}"),
        );
    }
}

#[test]
fn coverage_arithmetic() {
    assert_eq!(
        sorted_merged(vec![(10, 5), (0, 4), (4, 2), (20, 1)]),
        vec![(0, 6), (10, 5), (20, 1)]
    );
    let have = sorted_merged(vec![(0, 64), (128, 64)]);
    assert_eq!(uncovered(&[(10, 200)], &have), vec![(64, 64), (192, 18)]);
    assert!(uncovered(&[(0, 64), (130, 10)], &have).is_empty());
    assert_eq!(runs([1, 2, 3, 7].into_iter()), vec![(1, 3), (7, 1)]);
}
