use super::*;
use rand::rngs::SmallRng;
use rand::SeedableRng;

fn rng(seed: u64) -> SmallRng {
    SmallRng::seed_from_u64(seed)
}

#[test]
fn flushed_writes_always_survive_a_crash() {
    let fs = CrashFs::new();
    let p = Path::new("/d");
    fs.insert(p, Vec::new());
    for seed in 0..200 {
        let f = fs.open(p, OpenMode::ReadWrite).unwrap();
        f.set_len(0).unwrap();
        f.write_at(0, &[1u8; 2048]).unwrap();
        f.flush().unwrap();
        f.write_at(0, &[2u8; 2048]).unwrap();
        fs.crash(&mut rng(seed));
        assert!(f.len().is_err(), "a handle must die with the crash");
        let g = fs.open(p, OpenMode::ReadWrite).unwrap();
        let mut buf = vec![0u8; 2048];
        g.read_at(0, &mut buf).unwrap();
        // Each 512-byte sector is either all old or all new.
        for s in buf.chunks(TEAR_SECTOR) {
            assert!(s.iter().all(|&b| b == s[0]) && (s[0] == 1 || s[0] == 2));
        }
    }
}

#[test]
fn unflushed_writes_are_dropped_kept_and_torn() {
    let (mut dropped, mut kept, mut torn) = (0, 0, 0);
    for seed in 0..300 {
        let fs = CrashFs::new();
        let p = Path::new("/d");
        fs.insert(p, vec![0u8; 4096]);
        let f = fs.open(p, OpenMode::ReadWrite).unwrap();
        f.write_at(0, &[9u8; 4096]).unwrap();
        fs.crash(&mut rng(seed));
        let data = fs.file(p).unwrap().contents();
        match data.iter().filter(|&&b| b == 9).count() {
            0 => dropped += 1,
            4096 => kept += 1,
            _ => torn += 1,
        }
    }
    assert!(
        dropped > 20 && kept > 20 && torn > 20,
        "{dropped} {kept} {torn}"
    );
}

#[test]
fn a_small_write_across_a_sector_boundary_can_tear_there_only() {
    let mut torn = 0;
    for seed in 0..200 {
        let fs = CrashFs::new();
        let p = Path::new("/d");
        fs.insert(p, vec![0u8; 2048]);
        let f = fs.open(p, OpenMode::ReadWrite).unwrap();
        // 16 bytes straddling the boundary at 512.
        f.write_at(504, &[7u8; 16]).unwrap();
        fs.crash(&mut rng(seed));
        let d = fs.file(p).unwrap().contents();
        let (a, b) = (&d[504..512], &d[512..520]);
        assert!(a.iter().all(|&x| x == a[0]) && b.iter().all(|&x| x == b[0]));
        if a[0] != b[0] {
            torn += 1;
        }
    }
    assert!(torn > 10, "{torn}");
}

#[test]
fn directory_changes_are_lost_unless_the_directory_is_synced() {
    let (mut lost, mut kept) = (0, 0);
    for seed in 0..100 {
        let fs = CrashFs::new();
        fs.insert(Path::new("/a/old"), b"old".to_vec());
        let f = fs.create(Path::new("/a/new.tmp")).unwrap();
        f.write_at(0, b"new").unwrap();
        f.flush().unwrap();
        fs.rename(Path::new("/a/new.tmp"), Path::new("/a/old"))
            .unwrap();
        let g = fs.create(Path::new("/b/synced")).unwrap();
        g.flush().unwrap();
        fs.sync_dir(Path::new("/b")).unwrap();
        fs.crash(&mut rng(seed));
        assert!(fs.exists(Path::new("/b/synced")).unwrap());
        let old = fs.file(Path::new("/a/old")).unwrap().contents();
        match &old[..] {
            b"old" => lost += 1,
            b"new" => kept += 1,
            other => panic!("{other:?}"),
        }
        // Never half a rename: the name is the old file or the new one, and
        // the temporary name exists only if the rename was lost.
        let tmp = fs.exists(Path::new("/a/new.tmp")).unwrap();
        assert!(!(tmp && old == b"new"));
    }
    assert!(lost > 10 && kept > 10, "{lost} {kept}");
}

#[test]
fn a_synced_rename_survives_with_the_create_it_depends_on() {
    for seed in 0..50 {
        let fs = CrashFs::new();
        let f = fs.create(Path::new("/a/x.tmp")).unwrap();
        f.write_at(0, b"data").unwrap();
        f.flush().unwrap();
        fs.rename_durable(Path::new("/a/x.tmp"), Path::new("/a/x"))
            .unwrap();
        fs.crash(&mut rng(seed));
        assert_eq!(fs.file(Path::new("/a/x")).unwrap().contents(), b"data");
        assert!(!fs.exists(Path::new("/a/x.tmp")).unwrap());
    }
}

#[test]
fn removes_and_creates_revert_whole() {
    let (mut back, mut gone) = (0, 0);
    for seed in 0..100 {
        let fs = CrashFs::new();
        fs.insert(Path::new("/r"), b"x".to_vec());
        fs.remove(Path::new("/r")).unwrap();
        let _ = fs.create(Path::new("/c")).unwrap();
        fs.crash(&mut rng(seed));
        if fs.exists(Path::new("/r")).unwrap() {
            back += 1;
        } else {
            gone += 1;
        }
    }
    assert!(back > 10 && gone > 10, "{back} {gone}");
}

#[test]
fn capacity_gives_storage_full() {
    let fs = CrashFs::with_options(CrashOptions {
        capacity: Some(8192),
        ..Default::default()
    });
    let f = fs.create(Path::new("/d")).unwrap();
    f.write_at(0, &[1; 8192]).unwrap();
    assert_eq!(
        f.write_at(8000, &[1; 500]).unwrap_err().kind(),
        io::ErrorKind::StorageFull
    );
    assert_eq!(
        f.set_len(1 << 20).unwrap_err().kind(),
        io::ErrorKind::StorageFull
    );
    assert_eq!(f.len().unwrap(), 8192);
}

#[test]
fn power_budget_cuts_at_the_given_operation_directory_ops_included() {
    let fs = CrashFs::new();
    let f = fs.create(Path::new("/d")).unwrap();
    fs.sync_dir(Path::new("/")).unwrap();
    fs.set_power_budget(Some(3));
    f.write_at(0, b"a").unwrap();
    f.flush().unwrap();
    fs.rename(Path::new("/d"), Path::new("/e")).unwrap();
    assert!(fs.sync_dir(Path::new("/")).is_err());
    assert!(f.write_at(1, b"b").is_err());
    assert!(fs.power_failed());
    fs.crash(&mut rng(1));
    let name = if fs.exists(Path::new("/e")).unwrap() {
        "/e"
    } else {
        "/d"
    };
    assert_eq!(fs.file(Path::new(name)).unwrap().contents(), b"a");
    let g = fs.open(Path::new(name), OpenMode::ReadWrite).unwrap();
    g.write_at(1, b"b").unwrap();
}

#[test]
fn an_injected_write_error_changes_nothing_and_the_program_goes_on() {
    let fs = CrashFs::new();
    let f = fs.create(Path::new("/d")).unwrap();
    f.write_at(0, b"aaaa").unwrap();
    fs.inject_fault(0, Fault::NoSpace);
    let e = f.write_at(0, b"bbbb").unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::StorageFull);
    assert_eq!(fs.file(Path::new("/d")).unwrap().contents(), b"aaaa");
    f.write_at(0, b"cccc").unwrap();
    f.flush().unwrap();
    assert!(!fs.fault_pending());
    fs.inject_fault(1, Fault::Io);
    fs.sync_dir(Path::new("/")).unwrap();
    assert_eq!(
        fs.rename(Path::new("/d"), Path::new("/e"))
            .unwrap_err()
            .raw_os_error(),
        Some(5)
    );
    assert!(fs.exists(Path::new("/d")).unwrap());
}

#[test]
fn a_failed_flush_loses_writes_a_later_flush_does_not_bring_back() {
    let mut lost = 0;
    for seed in 0..60 {
        let fs = CrashFs::with_options(CrashOptions {
            seed,
            ..Default::default()
        });
        fs.insert(Path::new("/d"), vec![0u8; 4096]);
        let f = fs.open(Path::new("/d"), OpenMode::ReadWrite).unwrap();
        f.write_at(0, &[5u8; 4096]).unwrap();
        fs.inject_fault(0, Fault::Io);
        assert!(f.flush().is_err());
        // The process still reads what it wrote.
        let mut b = [0u8; 4096];
        f.read_at(0, &mut b).unwrap();
        assert_eq!(b, [5u8; 4096]);
        f.flush().unwrap();
        fs.crash(&mut rng(seed));
        if fs.file(Path::new("/d")).unwrap().contents() != vec![5u8; 4096] {
            lost += 1;
        }
    }
    assert!(lost > 10, "{lost}");
}

#[test]
fn change_stamps_follow_writes_and_survive_a_clean_crash() {
    let fs = CrashFs::new();
    fs.insert(Path::new("/d"), vec![0u8; 16]);
    let f = fs.open(Path::new("/d"), OpenMode::ReadWrite).unwrap();
    let s0 = f.change_stamp().unwrap();
    f.write_at(0, b"x").unwrap();
    f.flush().unwrap();
    let s1 = f.change_stamp().unwrap();
    assert_ne!(s0, s1);
    fs.crash(&mut rng(3));
    let g = fs.open(Path::new("/d"), OpenMode::ReadOnly).unwrap();
    assert_eq!(g.change_stamp().unwrap(), s1, "nothing was pending");
}

#[test]
fn read_only_handles_refuse_writes() {
    let fs = CrashFs::new();
    fs.insert(Path::new("/d"), vec![7; 10]);
    let f = fs.open(Path::new("/d"), OpenMode::ReadOnly).unwrap();
    assert!(f.write_at(0, b"x").is_err());
    assert!(f.set_len(0).is_err());
}

#[test]
fn a_surviving_rename_keeps_the_remove_and_create_of_its_source_before_it() {
    for seed in 0..200 {
        let fs = CrashFs::new();
        // A stale temporary file, durable.
        fs.insert(Path::new("/a/x.tmp"), b"stale".to_vec());
        fs.insert(Path::new("/a/x"), b"old".to_vec());
        fs.remove(Path::new("/a/x.tmp")).unwrap();
        let f = fs.create(Path::new("/a/x.tmp")).unwrap();
        f.write_at(0, b"new").unwrap();
        f.flush().unwrap();
        fs.rename(Path::new("/a/x.tmp"), Path::new("/a/x")).unwrap();
        fs.crash(&mut rng(seed));
        let x = fs.file(Path::new("/a/x")).unwrap().contents();
        assert!(x == b"old" || x == b"new", "seed {seed}: {x:?}");
    }
}
