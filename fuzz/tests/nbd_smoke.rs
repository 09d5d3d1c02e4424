//! A short run of the NBD server fuzzer in CI: a few thousand mutated
//! client streams, none of which may panic the server, leave a connection
//! open after its input ended, or break a parser oracle; and the mutants
//! must reach the whole protocol, not only fail early.

use nbd::option::{encode_option, InfoRequest};
use nbd::proto::*;
use nbd::request::Request;
use std::process::Command;

/// The counters of the fuzzer's `reached:` line, by name.
fn reached(stdout: &str) -> std::collections::HashMap<String, u64> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("reached: "))
        .unwrap_or_else(|| panic!("no `reached:` line in\n{stdout}"));
    line.split(", ")
        .map(|kv| {
            let (k, v) = kv.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

#[test]
fn nbd_mutants_never_misbehave() {
    let crashes = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("nbd-fuzz-crashes");
    let out = Command::new(env!("CARGO_BIN_EXE_fuzz_nbd"))
        .args(["--iterations", "20000", "--seed", "4660", "--timeout", "10"])
        .arg("--crashes")
        .arg(&crashes)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("no findings"), "{stdout}");
    let r = reached(&stdout);
    let inputs = r["inputs"];
    assert_eq!(inputs, 20000);
    // Deep paths: transmission with successful and refused requests,
    // option errors, connections the server cut short, parsers accepting.
    assert!(r["transmission"] > inputs / 5, "{r:?}");
    assert!(r["replies"] > r["reply errors"], "{r:?}");
    for k in [
        "option errors",
        "reply errors",
        "closed early",
        "info parsed",
        "meta parsed",
        "requests valid",
    ] {
        assert!(r[k] > 0, "{k}: {r:?}");
    }
}

#[test]
fn a_saved_input_reproduces() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("nbd-fuzz-reproduce");
    std::fs::create_dir_all(&dir).unwrap();
    // Client flags, then NBD_OPT_GO for "disk" with no information
    // requests, then a read of 512 bytes and NBD_CMD_DISC.
    let mut s = Vec::new();
    s.extend((NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES).to_be_bytes());
    let go = InfoRequest {
        name: "disk".into(),
        requests: vec![],
    };
    s.extend(encode_option(NBD_OPT_GO, &go.encode()));
    for (kind, length) in [(NBD_CMD_READ, 512), (NBD_CMD_DISC, 0)] {
        let r = Request {
            flags: 0,
            kind,
            cookie: 1,
            offset: 0,
            length,
        };
        s.extend(r.encode());
    }
    let path = dir.join("input-structured-00000000.nbd");
    std::fs::write(&path, &s).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fuzz_nbd"))
        .arg("--reproduce")
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("no finding"), "{stdout}");
    // Three option replies (export info, block size, ack), one read reply.
    assert!(stdout.contains("option_replies: 3,"), "{stdout}");
    assert!(stdout.contains("transmission: 1,"), "{stdout}");
}
