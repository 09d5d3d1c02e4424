//! The machine store's rules, on real files: frozen files are never
//! opened for writing, disk arguments resolve to the same machine disk
//! however they are named, parked disks reopen on the files a checkpoint
//! switched to, and a failing hook says how it failed.

use machine::{CheckpointKind, Consistency, MachineError, Store, Target};
use std::path::{Path, PathBuf};
use storage::LocalFs;
use vhdx::{create, CreateOptions};

const MIB: u64 = 1 << 20;

fn disk(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    let mut o = CreateOptions::dynamic(16 * MIB);
    o.block_size = MIB as u32;
    create(&LocalFs, &p, &o).unwrap().close().unwrap();
    p
}

/// A machine `vm1` with one disk and one checkpoint: (store, base, child).
fn checkpointed(dir: &Path) -> (Store, PathBuf, PathBuf) {
    let base = disk(dir, "os.vhdx");
    let st = Store::local(&dir.join("home"));
    st.create("vm1", &[(None, base.clone())], None, None)
        .unwrap();
    let cp = st
        .create_checkpoint("vm1", CheckpointKind::Standard, Consistency::Crash)
        .unwrap();
    (st, base, cp.disks[0].child.clone())
}

#[test]
fn a_frozen_file_is_refused_for_writing_and_readable() {
    let dir = tempfile::tempdir().unwrap();
    let (st, base, child) = checkpointed(dir.path());
    let t = st.resolve(&base).unwrap();
    assert_eq!(t, Target::File(base.clone()));
    match st.open_target(&t, true) {
        Err(MachineError::Frozen {
            machine,
            disk,
            active,
            ..
        }) => assert_eq!(
            (machine.as_str(), disk.as_str(), active),
            ("vm1", "disk0", child.clone())
        ),
        Err(e) => panic!("expected Frozen, got {e}"),
        Ok(_) => panic!("a frozen file opened for writing"),
    }
    st.open_target(&t, false).unwrap().close().unwrap();

    // Another machine cannot take the frozen file, nor vm1's current one.
    let e = st
        .create("vm2", &[(None, base.clone())], None, None)
        .unwrap_err();
    assert!(matches!(e, MachineError::Frozen { .. }), "{e}");
    let e = st
        .create("vm2", &[(None, child.clone())], None, None)
        .unwrap_err();
    assert!(matches!(e, MachineError::DiskInUse { .. }), "{e}");
    assert!(!st.exists("vm2").unwrap());
}

#[test]
fn a_machine_disk_resolves_the_same_by_name_and_by_file() {
    let dir = tempfile::tempdir().unwrap();
    let (st, _, child) = checkpointed(dir.path());
    let by_name = st.resolve(Path::new("vm1/disk0")).unwrap();
    assert_eq!(
        by_name,
        Target::Machine {
            machine: "vm1".into(),
            disk: "disk0".into()
        }
    );
    assert_eq!(st.resolve(&child).unwrap(), by_name);
    let d = st.open_target(&by_name, true).unwrap();
    assert_eq!(d.path(), child);
    d.close().unwrap();
    let plain = disk(dir.path(), "other.vhdx");
    assert_eq!(st.resolve(&plain).unwrap(), Target::File(plain.clone()));
    st.open_target(&Target::File(plain), true)
        .unwrap()
        .close()
        .unwrap();
}

#[test]
fn held_disks_are_parked_and_reopened_on_the_new_files() {
    let dir = tempfile::tempdir().unwrap();
    let base = disk(dir.path(), "os.vhdx");
    let st = Store::local(&dir.path().join("home"));
    st.create("vm1", &[(None, base.clone())], None, None)
        .unwrap();
    let slot = st.hold("vm1", "disk0").unwrap();
    slot.write().as_mut().unwrap().write(0, &[1; 4096]).unwrap();

    // A second clone of the store shares the pool: its checkpoint parks
    // the disk held through the first.
    let cp = st
        .clone()
        .create_checkpoint("vm1", CheckpointKind::Standard, Consistency::Crash)
        .unwrap();
    {
        let mut g = slot.write();
        let d = g.as_mut().expect("reopened after the checkpoint");
        assert_eq!(d.path(), cp.disks[0].child);
        d.write(0, &[2; 4096]).unwrap();
        d.flush().unwrap();
    }
    let m = st.load("vm1").unwrap();
    let mut buf = vec![0; 4096];
    st.with_disk(&m, "disk0", |d| Ok(d.read(0, &mut buf)?))
        .unwrap();
    assert_eq!(buf, [2; 4096], "with_disk uses the held handle");
    let frozen = st.open_checkpoint_disk(&cp, "disk0").unwrap();
    frozen.read(0, &mut buf).unwrap();
    assert_eq!(
        buf, [1; 4096],
        "the checkpoint keeps what was written before it"
    );
    assert_eq!(st.held_count(), 1);
    assert!(st.release_all().is_empty());
    assert_eq!(st.held_count(), 0);
}

#[test]
fn a_failing_freeze_hook_says_how_and_thaws() {
    let dir = tempfile::tempdir().unwrap();
    let base = disk(dir.path(), "os.vhdx");
    let st = Store::local(&dir.path().join("home"));
    let thawed = dir.path().join("thawed");
    st.create(
        "vm1",
        &[(None, base)],
        Some("echo guest agent not running >&2; exit 4".into()),
        Some(format!("touch {}", thawed.display())),
    )
    .unwrap();
    let m = st.load("vm1").unwrap();
    assert_eq!(Store::default_consistency(&m), Consistency::Application);
    match st.create_checkpoint("vm1", CheckpointKind::Recovery, Consistency::Application) {
        Err(MachineError::HookFailed {
            what, code, stderr, ..
        }) => {
            assert_eq!((what, code), ("freeze", Some(4)));
            assert!(stderr.contains("guest agent not running"), "{stderr}");
        }
        other => panic!("expected a failed hook, got {other:?}"),
    }
    assert!(st.load("vm1").unwrap().checkpoints.is_empty());
    assert!(thawed.exists(), "a failed freeze is thawed");
    std::fs::remove_file(&thawed).unwrap();
    // A crash-consistent checkpoint does not run the hooks.
    st.create_checkpoint("vm1", CheckpointKind::Standard, Consistency::Crash)
        .unwrap();
    assert!(!thawed.exists());
}

#[test]
fn names_are_checked_and_unknown_things_are_not_found() {
    let dir = tempfile::tempdir().unwrap();
    let base = disk(dir.path(), "os.vhdx");
    let st = Store::local(&dir.path().join("home"));
    for bad in ["", ".hidden", "a/b", "../x", "sp ace"] {
        let e = st
            .create(bad, &[(None, base.clone())], None, None)
            .unwrap_err();
        assert!(matches!(e, MachineError::BadName { .. }), "{bad:?}: {e}");
    }
    let e = st.load("../machines/x").unwrap_err();
    assert!(e.is_not_found(), "{e}");
    st.create("vm1", &[(Some("os".into()), base)], None, None)
        .unwrap();
    let e = st.delete_checkpoint("vm1", 7).unwrap_err();
    assert!(matches!(e, MachineError::NoCheckpoint { id: 7, .. }), "{e}");
    assert_eq!(e.kind(), "not_found");
}

#[test]
fn a_broken_machine_file_does_not_hide_the_others_but_writes_by_path_fail_closed() {
    let dir = tempfile::tempdir().unwrap();
    let base = disk(dir.path(), "os.vhdx");
    let st = Store::local(&dir.path().join("home"));
    st.create("vm1", &[(None, base.clone())], None, None)
        .unwrap();
    let machines = dir.path().join("home/machines");
    // Not a machine name: a copy a file manager made. Left alone.
    std::fs::copy(machines.join("vm1.json"), machines.join("vm1 copy.json")).unwrap();
    std::fs::write(machines.join("broken.json"), b"{").unwrap();

    let (ok, bad) = st.list_each().unwrap();
    assert_eq!(ok.len(), 1);
    assert!(matches!(bad[..], [MachineError::Corrupt { .. }]), "{bad:?}");
    assert!(matches!(st.list(), Err(MachineError::Corrupt { .. })));
    // Routing still finds vm1's disk by its file.
    assert!(matches!(st.resolve(&base).unwrap(), Target::Machine { .. }));
    // A write by path cannot be proven not to hit a frozen file.
    let plain = disk(dir.path(), "plain.vhdx");
    let e = st.open_target(&Target::File(plain), true).err().unwrap();
    assert!(matches!(e, MachineError::Corrupt { .. }), "{e}");
}
