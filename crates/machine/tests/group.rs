//! Checkpoints of several machines at once (`Store::create_checkpoints`):
//! one consistent cut while a writer keeps writing through the pool's
//! disks (and the check that shows it, failing for checkpoints taken one
//! machine after another); all or nothing when a freeze fails or times
//! out, or a checkpoint fails; thaw for every machine whose freeze started.

use machine::{CheckpointKind, Consistency, GroupOptions, MachineError, Store};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use storage::LocalFs;
use testkit::cut::{check_cut, round_of, round_sector, wait_rounds};
use vhdx::{create, CreateOptions};

const MIB: u64 = 1 << 20;
/// The writer's order: (machine, disk).
const ORDER: [(&str, &str); 4] = [
    ("a", "disk0"),
    ("b", "disk0"),
    ("b", "disk1"),
    ("c", "disk0"),
];

fn disk(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    let mut o = CreateOptions::dynamic(4 * MIB);
    o.block_size = MIB as u32;
    create(&LocalFs, &p, &o).unwrap().close().unwrap();
    p
}

/// Machines a (1 disk), b (2 disks), c (1 disk); hooks from `hooks(name)`.
fn machines(dir: &Path, hooks: impl Fn(&str) -> Option<(String, String)>) -> Store {
    let st = Store::local(&dir.join("home"));
    for m in ["a", "b", "c"] {
        let n = if m == "b" { 2 } else { 1 };
        let disks: Vec<_> = (0..n)
            .map(|i| (None, disk(dir, &format!("{m}{i}.vhdx"))))
            .collect();
        let (f, t) = hooks(m).unzip();
        st.create(m, &disks, f, t).unwrap();
    }
    st
}

/// Recovery checkpoints of a, b and c as one cut, with the defaults.
fn all_at_once(st: &Store) -> machine::Result<Vec<machine::Checkpoint>> {
    st.create_checkpoints(
        &["a", "b", "c"],
        CheckpointKind::Recovery,
        &GroupOptions::default(),
    )
}

/// The rounds the checkpoints froze, in the writer's order.
fn frozen_rounds(st: &Store, cps: &[(&str, machine::Checkpoint)]) -> Vec<u64> {
    ORDER
        .iter()
        .map(|(m, d)| {
            let cp = &cps.iter().find(|(n, _)| n == m).unwrap().1;
            let chain = st.open_checkpoint_disk(cp, d).unwrap();
            let mut b = vec![0u8; 512];
            chain.read(0, &mut b).unwrap();
            round_of(&b)
        })
        .collect()
}

#[test]
fn checkpoints_of_several_machines_are_one_cut_while_a_writer_writes() {
    let dir = tempfile::tempdir().unwrap();
    let st = machines(dir.path(), |_| None);
    assert!(st.hold_all().is_empty());
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    // Round r: r at the start of each disk, in ORDER, each write flushed
    // before the next is issued, through the disks the pool holds (as the
    // daemon's NBD writes go).
    let writer = {
        let (st, stop, rounds) = (st.clone(), stop.clone(), rounds.clone());
        std::thread::spawn(move || {
            let mut r = 0;
            while !stop.load(Ordering::SeqCst) {
                r += 1;
                for (m, d) in ORDER {
                    st.with_held(m, d, |disk| {
                        disk.write(0, &round_sector(r))?;
                        Ok(disk.flush()?)
                    })
                    .unwrap();
                }
                rounds.store(r, Ordering::SeqCst);
            }
        })
    };
    let mut cuts = Vec::new();
    for _ in 0..6 {
        wait_rounds(&rounds, 3);
        let cps = all_at_once(&st).unwrap();
        let named: Vec<_> = ["a", "b", "c"].into_iter().zip(cps).collect();
        let got = frozen_rounds(&st, &named);
        check_cut(&got).unwrap_or_else(|e| panic!("create_checkpoints: {e}"));
        assert!(got[0] > 0, "{got:?}");
        cuts.push(got);
        for (m, cp) in &named {
            st.delete_checkpoint(m, cp.id).unwrap();
        }
    }
    // The same check catches checkpoints taken one machine after another
    // while the writer goes on (here it gets two rounds further between
    // two machines, so the later machine's disks hold a higher round: the
    // rounds increase in the writer's order).
    let mut one_by_one = Vec::new();
    for m in ["c", "b", "a"] {
        let cp = st
            .create_checkpoint(m, CheckpointKind::Recovery, Consistency::Crash)
            .unwrap();
        one_by_one.push((m, cp));
        wait_rounds(&rounds, 2);
    }
    let got = frozen_rounds(&st, &one_by_one);
    assert!(
        check_cut(&got).is_err(),
        "checkpoints one after another passed as a cut: {got:?}"
    );
    for (m, cp) in &one_by_one {
        st.delete_checkpoint(m, cp.id).unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    eprintln!("cuts {cuts:?}; one machine after another: {got:?}");
    // Every disk is one file again and reads the writer's last round.
    let last = rounds.load(Ordering::SeqCst);
    for (m, d) in ORDER {
        let got = st
            .with_held(m, d, |disk| {
                let mut b = vec![0u8; 512];
                disk.read(0, &mut b)?;
                Ok(round_of(&b))
            })
            .unwrap();
        assert_eq!(got, last, "{m}/{d}");
        let mach = st.load(m).unwrap();
        assert!(mach.checkpoints.is_empty());
        assert!(mach.disks.iter().all(|d| d.active == d.base));
    }
    assert!(st.release_all().is_empty());
}

/// Hooks that append `freeze NAME` / `thaw NAME` to `log`; machine `bad`'s
/// freeze runs `bad_freeze` after logging.
fn logging_hooks(
    log: &Path,
    bad: &str,
    bad_freeze: &str,
) -> impl Fn(&str) -> Option<(String, String)> {
    let log = log.display().to_string();
    let (bad, bad_freeze) = (bad.to_string(), bad_freeze.to_string());
    move |m| {
        let mut freeze = format!("echo freeze {m} >> '{log}'");
        if m == bad {
            freeze = format!("{freeze}; {bad_freeze}");
        }
        Some((freeze, format!("echo thaw {m} >> '{log}'")))
    }
}

fn log_lines(log: &Path) -> Vec<String> {
    let mut l: Vec<String> = std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    l.sort();
    l
}

fn untouched(st: &Store) {
    for m in ["a", "b", "c"] {
        let mach = st.load(m).unwrap();
        assert!(mach.checkpoints.is_empty(), "{m}: {:?}", mach.checkpoints);
        assert!(mach.disks.iter().all(|d| d.active == d.base), "{m}");
    }
}

#[test]
fn a_failing_or_hanging_freeze_takes_no_checkpoint_and_thaws_every_machine() {
    let all_thawed = [
        "freeze a", "freeze b", "freeze c", "thaw a", "thaw b", "thaw c",
    ];
    for (bad_freeze, timeout) in [("echo no agent >&2; exit 3", None), ("sleep 30", Some(1))] {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("hooks.log");
        let st = machines(dir.path(), logging_hooks(&log, "c", bad_freeze));
        let opts = GroupOptions {
            consistency: None,
            hook_timeout: timeout.map(Duration::from_secs),
        };
        let t = Instant::now();
        let e = st
            .create_checkpoints(&["a", "b", "c"], CheckpointKind::Recovery, &opts)
            .unwrap_err();
        assert!(t.elapsed() < Duration::from_secs(20), "{:?}", t.elapsed());
        match (&e, timeout) {
            (
                MachineError::HookFailed {
                    machine,
                    what,
                    code,
                    ..
                },
                None,
            ) => {
                assert_eq!((machine.as_str(), *what, *code), ("c", "freeze", Some(3)));
            }
            (
                MachineError::HookTimedOut {
                    machine, timeout, ..
                },
                Some(s),
            ) => {
                assert_eq!((machine.as_str(), *timeout), ("c", Duration::from_secs(s)));
                assert!(e.to_string().contains("within 1 s"), "{e}");
            }
            _ => panic!("unexpected error {e:?}"),
        }
        assert_eq!(log_lines(&log), all_thawed, "{e}");
        untouched(&st);
    }
}

#[test]
fn a_failing_checkpoint_merges_back_the_ones_taken_and_thaws() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("hooks.log");
    let st = machines(dir.path(), logging_hooks(&log, "", ""));
    // c's disk file is gone: its checkpoint fails after a's and b's.
    let c0 = dir.path().join("c0.vhdx");
    let away = dir.path().join("c0.away");
    std::fs::rename(&c0, &away).unwrap();
    let e = all_at_once(&st).unwrap_err();
    assert!(!matches!(e, MachineError::HookFailed { .. }), "{e}");
    std::fs::rename(&away, &c0).unwrap();
    untouched(&st);
    assert_eq!(
        log_lines(&log),
        ["freeze a", "freeze b", "freeze c", "thaw a", "thaw b", "thaw c"]
    );
    // No child file is left behind by the merged-back checkpoints, and the
    // next attempt succeeds.
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".avhdx"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
    let cps = st
        .create_checkpoints(
            &["c", "a", "b"],
            CheckpointKind::Recovery,
            &GroupOptions::default(),
        )
        .unwrap();
    assert_eq!(cps.len(), 3);
    assert_eq!(cps[0].disks[0].frozen, c0);
    assert!(cps
        .iter()
        .all(|c| c.consistency == Consistency::Application));
    // A machine named twice is refused before anything runs.
    assert!(matches!(
        st.create_checkpoints(
            &["a", "a"],
            CheckpointKind::Recovery,
            &GroupOptions::default()
        ),
        Err(MachineError::DuplicateMachine { .. })
    ));
}
