//! Short runs of the tracking file, manifest and cv fuzzers in CI: a few
//! thousand mutants each, none of which may panic, hang, break an oracle or
//! grow the heap without bound; and the mutants must get deep (files that
//! open and replay, manifests that parse and verify, values that decode
//! and reach the export), not only fail early. The runs are reproducible
//! (random seed 1); inputs that showed bugs (to these fuzzers and to
//! `fuzz_nbd_client`) are kept in `fuzz/findings/` and replayed by
//! `saved_findings_run_clean`, so the bugs stay fixed.

use std::collections::HashMap;
use std::process::Command;

/// Runs a fuzzer for `iterations` mutants; the counters of its `reached:`
/// line, by name, and its whole output.
fn run(exe: &str, name: &str, iterations: u64) -> (HashMap<String, u64>, String) {
    let crashes = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}-crashes"));
    let out = Command::new(exe)
        .args(["--iterations", &iterations.to_string(), "--seed", "1"])
        .arg("--crashes")
        .arg(&crashes)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success() && stdout.contains("no findings"),
        "{}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("reached: "))
        .unwrap_or_else(|| panic!("no `reached:` line in\n{stdout}"));
    let r: HashMap<String, u64> = line
        .split(", ")
        .map(|kv| {
            let (k, v) = kv.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect();
    assert_eq!(r["inputs"], iterations, "{stdout}");
    (r, stdout)
}

#[test]
fn tracking_file_mutants_never_misbehave() {
    let (r, out) = run(env!("CARGO_BIN_EXE_fuzz_rct"), "rct", 3000);
    assert!(r["opened"] > r["inputs"] / 5, "{r:?}");
    assert!(r["records decoded"] > r["inputs"], "{r:?}");
    for k in ["record errors", "queries answered", "ranges", "reopened"] {
        assert!(r[k] > 0, "{k}: {r:?}");
    }
    for e in [
        "tracking_file_corrupt",
        "tracking_disabled",
        "modified_while_untracked",
    ] {
        assert!(out.contains(e), "no {e} error:\n{out}");
    }
}

#[test]
fn manifest_mutants_never_misbehave() {
    let (r, _) = run(env!("CARGO_BIN_EXE_fuzz_manifest"), "manifest", 2000);
    assert!(r["parsed"] > r["inputs"] / 5, "{r:?}");
    for k in [
        "unchanged",
        "points listed",
        "disk files",
        "chains looked up",
        "verified clean",
        "verified bad",
        "verify errors",
    ] {
        assert!(r[k] > 0, "{k}: {r:?}");
    }
}

#[test]
fn cv_mutants_never_misbehave() {
    let (r, _) = run(env!("CARGO_BIN_EXE_fuzz_cv"), "cv", 3000);
    for k in [
        "decoded",
        "decoded for another size",
        "exported",
        "partly trusted",
    ] {
        assert!(r[k] > 0, "{k}: {r:?}");
    }
}

/// Inputs the fuzzers found, kept in `fuzz/findings/` (what each shows is
/// in the `.txt` next to it): each runs clean now that its bug is fixed.
#[test]
fn saved_findings_run_clean() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("findings");
    let mut failed = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let exe = match p.extension().and_then(|x| x.to_str()) {
            Some("rct") => env!("CARGO_BIN_EXE_fuzz_rct"),
            Some("json") => env!("CARGO_BIN_EXE_fuzz_manifest"),
            Some("cv") => env!("CARGO_BIN_EXE_fuzz_cv"),
            Some("nbdc") => env!("CARGO_BIN_EXE_fuzz_nbd_client"),
            _ => continue,
        };
        let out = Command::new(exe)
            .arg("--reproduce")
            .arg(&p)
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        if !out.status.success() || !stdout.contains("no finding") {
            failed.push(format!("{}: {stdout}", p.display()));
        }
    }
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}
