//! The `refpoint vhd` commands as a user runs them, checked against qemu-img.

mod common;

use common::{ok, refpoint, s};
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use testkit::{pattern, tools};

/// Runs `qemu-img`, which must succeed.
fn qemu_img(args: &[&str]) {
    tools::run_ok(
        Command::new("qemu-img").args(args),
        Duration::from_secs(120),
    );
}

/// A raw image of `size` bytes: a pattern in the first 300000 bytes of
/// every third MiB, zeros elsewhere.
fn write_pattern(path: &Path, size: usize) -> Vec<u8> {
    let mut data = vec![0u8; size];
    for (i, chunk) in data.chunks_mut(1 << 20).step_by(3).enumerate() {
        let n = chunk.len().min(300_000);
        pattern::fill(&mut chunk[..n], i as u64);
    }
    std::fs::write(path, &data).unwrap();
    data
}

#[test]
fn convert_round_trip_is_accepted_by_qemu() {
    let d = tempfile::tempdir().unwrap();
    let raw = d.path().join("src.img");
    write_pattern(&raw, 24 << 20);
    for (name, extra) in [
        ("dyn.vhdx", vec![]),
        ("fix.vhdx", vec!["--type", "fixed", "--block-size", "1M"]),
        (
            "4k.vhdx",
            vec!["--sector-size", "4096", "--block-size", "2M"],
        ),
    ] {
        let vhdx = d.path().join(name);
        let mut args = vec!["vhd", "convert", s(&raw), s(&vhdx)];
        args.extend(extra);
        ok(&args);
        assert!(ok(&["vhd", "check", s(&vhdx)]).contains("No errors"));
        // qemu-img refuses 4096-byte logical sectors ("Operation not
        // supported"), so those are verified by our own reader only.
        if name != "4k.vhdx" {
            qemu_img(&["check", "-f", "vhdx", s(&vhdx)]);
            qemu_img(&["compare", "-f", "vhdx", "-F", "raw", s(&vhdx), s(&raw)]);
        }
        let back = d.path().join(format!("{name}.img"));
        ok(&["vhd", "convert", s(&vhdx), s(&back)]);
        assert_eq!(std::fs::read(&back).unwrap(), std::fs::read(&raw).unwrap());
        assert!(ok(&["vhd", "compare", s(&vhdx), s(&raw)]).contains("identical"));
    }
}

#[test]
fn convert_refuses_an_existing_destination_and_leaves_it_alone() {
    let d = tempfile::tempdir().unwrap();
    let raw = d.path().join("src.img");
    write_pattern(&raw, 4 << 20);
    for name in ["mine.vhdx", "mine.img"] {
        let dst = d.path().join(name);
        std::fs::write(&dst, b"precious").unwrap();
        let o = refpoint(&["vhd", "convert", s(&raw), s(&dst)]);
        assert_eq!(o.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
        assert_eq!(std::fs::read(&dst).unwrap(), b"precious");
    }
    // Nothing but the source and those two is left behind.
    assert_eq!(std::fs::read_dir(d.path()).unwrap().count(), 3);
}

#[test]
fn compare_names_the_first_difference_and_exit_status() {
    let d = tempfile::tempdir().unwrap();
    let a = d.path().join("a.img");
    let mut data = write_pattern(&a, 8 << 20);
    let vhdx = d.path().join("a.vhdx");
    ok(&["vhd", "convert", s(&a), s(&vhdx)]);
    data[5_000_123] ^= 0xff;
    let b = d.path().join("b.img");
    std::fs::write(&b, &data).unwrap();
    let o = refpoint(&["vhd", "compare", s(&vhdx), s(&b), "--json"]);
    assert_eq!(o.status.code(), Some(1));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["result"], "differ");
    assert_eq!(v["offset"], 5_000_123);
}

#[test]
fn chain_info_map_merge_and_flatten() {
    let d = tempfile::tempdir().unwrap();
    let base = d.path().join("base.vhdx");
    ok(&[
        "vhd",
        "create",
        s(&base),
        "--size",
        "64M",
        "--block-size",
        "1M",
    ]);
    let child = d.path().join("child.avhdx");
    ok(&["vhd", "create", s(&child), "--parent", s(&base)]);
    let info: serde_json::Value =
        serde_json::from_str(&ok(&["vhd", "info", s(&child), "--json"])).unwrap();
    assert_eq!(info["disk_type"], "differencing");
    assert_eq!(info["virtual_size"], 64 << 20);
    assert_eq!(info["chain"].as_array().unwrap().len(), 2);
    let map: serde_json::Value =
        serde_json::from_str(&ok(&["vhd", "map", s(&child), "--json"])).unwrap();
    assert_eq!(
        map.as_array().unwrap().len(),
        1,
        "empty chain maps to one zero run"
    );
    assert_eq!(map[0]["data"], false);
    ok(&["vhd", "check", s(&child)]);
    let flat = d.path().join("flat.vhdx");
    ok(&["vhd", "convert", s(&child), s(&flat)]);
    let m: serde_json::Value =
        serde_json::from_str(&ok(&["vhd", "merge", s(&child), "--json"])).unwrap();
    assert_eq!(m["child_removed"], true);
    assert!(!child.exists());
    qemu_img(&["check", s(&base)]);
}

#[test]
fn errors_are_clear_and_nonzero() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("x.vhdx");
    ok(&["vhd", "create", s(&p), "--size", "10M"]);
    let o = refpoint(&["vhd", "create", s(&p), "--size", "10M"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stderr).contains("already exists"));
    let o = refpoint(&[
        "vhd",
        "create",
        s(&d.path().join("y.vhdx")),
        "--size",
        "10M",
        "--block-size",
        "3M",
    ]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("power of two"));
    let junk = d.path().join("junk.vhdx");
    std::fs::write(&junk, vec![7u8; 1 << 20]).unwrap();
    let o = refpoint(&["vhd", "info", s(&junk)]);
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("not a VHDX file"),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let o = refpoint(&["vhd", "check", s(&junk)]);
    assert_eq!(o.status.code(), Some(2));
    // A child whose parent moved away names the paths it tried.
    let base = d.path().join("base.vhdx");
    ok(&["vhd", "create", s(&base), "--size", "10M"]);
    let child = d.path().join("c.avhdx");
    ok(&["vhd", "create", s(&child), "--parent", s(&base)]);
    std::fs::rename(&base, d.path().join("moved.vhdx")).unwrap();
    let o = refpoint(&["vhd", "info", s(&child)]);
    assert!(String::from_utf8_lossy(&o.stdout).contains("parent disk not found"));
}
