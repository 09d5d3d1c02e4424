//! `refpoint rct` as scripts use it.

mod common;

use common::{ok, refpoint, s};
use std::time::Duration;
use testkit::tools;

fn json(args: &[&str]) -> serde_json::Value {
    serde_json::from_str(&ok(args)).unwrap()
}

#[test]
fn seal_write_query_release() {
    let d = tempfile::tempdir().unwrap();
    let disk = d.path().join("d.vhdx");
    ok(&[
        "vhd",
        "create",
        s(&disk),
        "--size",
        "256M",
        "--block-size",
        "1M",
    ]);
    ok(&["rct", "enable", s(&disk)]);
    ok(&[
        "disk",
        "write",
        s(&disk),
        "--offset",
        "0",
        "--pattern",
        "7",
        "--length",
        "1M",
    ]);
    let id1 = ok(&["rct", "seal", s(&disk)])
        .lines()
        .last()
        .unwrap()
        .to_string();
    assert!(
        id1.starts_with("rct:") && id1.ends_with(":00000001"),
        "{id1}"
    );
    ok(&[
        "disk",
        "write",
        s(&disk),
        "--offset",
        "10M",
        "--pattern",
        "0xff",
        "--length",
        "4096",
    ]);
    ok(&[
        "disk",
        "write",
        s(&disk),
        "--offset",
        "200000000",
        "--pattern",
        "1",
        "--length",
        "70000",
    ]);
    let id2 = ok(&["rct", "seal", s(&disk)])
        .lines()
        .last()
        .unwrap()
        .to_string();
    ok(&[
        "disk",
        "write",
        s(&disk),
        "--offset",
        "100M",
        "--pattern",
        "2",
        "--length",
        "1",
    ]);

    let c = json(&["rct", "changes", s(&disk), "--since", &id1, "--json"]);
    assert_eq!(c["since"], id1.as_str());
    assert_eq!(c["until"], serde_json::Value::Null);
    assert_eq!(c["processed_length"], 256u64 << 20);
    let ranges: Vec<(u64, u64)> = c["ranges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["offset"].as_u64().unwrap(), r["length"].as_u64().unwrap()))
        .collect();
    let g = 65536;
    assert_eq!(
        ranges,
        vec![
            (10 << 20, g),
            (100 << 20, g),
            (
                200000000 / g * g,
                (200070000u64.div_ceil(g) - 200000000 / g) * g
            )
        ]
    );
    // Between the two IDs: not the write after the second seal.
    let c = json(&[
        "rct",
        "changes",
        s(&disk),
        "--since",
        &id1,
        "--until",
        &id2,
        "--json",
    ]);
    assert_eq!(c["ranges"].as_array().unwrap().len(), 2);
    // Paging.
    let c = json(&[
        "rct",
        "changes",
        s(&disk),
        "--since",
        &id1,
        "--max-ranges",
        "1",
        "--json",
    ]);
    assert_eq!(c["ranges"].as_array().unwrap().len(), 1);
    assert_eq!(c["processed_length"], 100u64 << 20);
    let st = json(&["rct", "status", s(&disk), "--json"]);
    assert_eq!(st["most_recent_id"], id2.as_str());
    assert_eq!(st["newer_changes"], true);
    ok(&["rct", "release", s(&disk), &id1]);
    let o = refpoint(&["rct", "changes", s(&disk), "--since", &id1, "--json"]);
    assert_eq!(o.status.code(), Some(3));
    let e: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(e["error"], "released_id");
    assert_eq!(e["full_backup_required"], true);
    assert!(String::from_utf8_lossy(&o.stderr).contains("full backup"));
}

#[test]
fn foreign_writes_and_missing_files_force_a_full_backup() {
    let d = tempfile::tempdir().unwrap();
    let disk = d.path().join("d.vhdx");
    ok(&["vhd", "create", s(&disk), "--size", "64M"]);
    ok(&["rct", "enable", s(&disk)]);
    let id = ok(&["rct", "seal", s(&disk)])
        .lines()
        .last()
        .unwrap()
        .to_string();
    tools::run_ok(
        &mut tools::qemu_io(&[], &["write -P 9 0 4k"], &disk),
        Duration::from_secs(120),
    );
    let o = refpoint(&["rct", "changes", s(&disk), "--since", &id]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("modified_while_untracked"));
    // Re-enabling starts over; the disk itself was never blocked.
    ok(&["rct", "enable", s(&disk)]);
    let id2 = ok(&["rct", "seal", s(&disk)])
        .lines()
        .last()
        .unwrap()
        .to_string();
    ok(&["rct", "changes", s(&disk), "--since", &id2]);
    let o = refpoint(&["rct", "changes", s(&disk), "--since", &id]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown_id"));
    std::fs::remove_file(d.path().join("d.vhdx.rct")).unwrap();
    let o = refpoint(&["rct", "changes", s(&disk), "--since", &id2]);
    assert_eq!(o.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&o.stderr).contains("tracking_file_missing"));
    ok(&[
        "disk",
        "write",
        s(&disk),
        "--offset",
        "0",
        "--pattern",
        "1",
        "--length",
        "512",
    ]);
    let o = refpoint(&["rct", "changes", s(&disk), "--since", "nonsense"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("malformed_id"));
    ok(&["rct", "disable", s(&disk)]);
    let o = refpoint(&["rct", "changes", s(&disk), "--since", &id2]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("tracking_disabled"));
}
