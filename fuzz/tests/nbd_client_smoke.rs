//! A short run of the NBD client fuzzer in CI: a few thousand mutated
//! server streams, none of which may panic or hang the client, grow the
//! heap without bound, or break one of the client's promises or a reply
//! parser's oracle; and the mutants must reach the whole protocol (every
//! kind of call answered, the client's checks of the server tripped),
//! not only fail early. The seeds are recorded sessions whose reads must
//! give back what the fake server holds, so the run starts with those.

use nbd::proto::*;
use nbd::reply::{self, Chunk};
use std::collections::HashMap;
use std::process::Command;

/// The counters of the fuzzer's `reached:` line, and its `errors:` line,
/// by name.
fn counters(stdout: &str, prefix: &str) -> HashMap<String, u64> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no `{prefix}` line in\n{stdout}"));
    line.split(", ")
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.rsplit_once(' ').unwrap();
            (k.to_string(), v.parse().unwrap())
        })
        .collect()
}

#[test]
fn nbd_client_mutants_never_misbehave() {
    let crashes = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("nbd-client-fuzz-crashes");
    let out = Command::new(env!("CARGO_BIN_EXE_fuzz_nbd_client"))
        .args(["--iterations", "20000", "--seed", "4660", "--timeout", "10"])
        .arg("--crashes")
        .arg(&crashes)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("no findings"),
        "{}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let r = counters(&stdout, "reached: ");
    let inputs = r["inputs"];
    assert_eq!(inputs, 20000);
    assert!(r["connected"] > inputs / 5, "{r:?}");
    assert!(r["calls ok"] > r["connected"], "{r:?}");
    for k in [
        "structured",
        "base allocation",
        "refused",
        "reads ok",
        "block status ok",
        "request errors",
        "option headers",
        "infos",
        "meta contexts",
        "listings",
        "simple replies",
        "chunk headers",
        "chunks",
    ] {
        assert!(r[k] > 0, "{k}: {r:?}");
    }
    // The client's checks of what the server sends, tripped.
    let e = counters(&stdout, "errors: ");
    for k in [
        "io",
        "tls",
        "closed",
        "unsupported",
        "protocol:BadMagic",
        "protocol:BadLength",
        "protocol:WrongOption",
        "protocol:WrongCookie",
        "protocol:OutsideRequest",
        "protocol:Incomplete",
        "protocol:UnexpectedChunk",
    ] {
        assert!(e.get(k).is_some_and(|&n| n > 0), "{k}: {e:?}");
    }
}

#[test]
fn a_saved_input_reproduces() {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("nbd-client-fuzz-reproduce");
    std::fs::create_dir_all(&dir).unwrap();
    // A server that negotiates structured replies and base:allocation,
    // then answers the first read with another request's cookie.
    let mut s = NBDMAGIC.to_be_bytes().to_vec();
    s.extend(IHAVEOPT.to_be_bytes());
    s.extend((NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES).to_be_bytes());
    s.extend(reply::option_reply(
        NBD_OPT_STRUCTURED_REPLY,
        NBD_REP_ACK,
        &[],
    ));
    let context = reply::meta_context(1, BASE_ALLOCATION);
    s.extend(reply::option_reply(
        NBD_OPT_SET_META_CONTEXT,
        NBD_REP_META_CONTEXT,
        &context,
    ));
    s.extend(reply::option_reply(
        NBD_OPT_SET_META_CONTEXT,
        NBD_REP_ACK,
        &[],
    ));
    let export = reply::info_export(1 << 20, NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH);
    s.extend(reply::option_reply(NBD_OPT_GO, NBD_REP_INFO, &export));
    s.extend(reply::option_reply(NBD_OPT_GO, NBD_REP_ACK, &[]));
    let data = Chunk::OffsetData {
        offset: 0,
        data: vec![7; 4096],
    };
    s.extend(data.encode(2, NBD_REPLY_FLAG_DONE));
    let path = dir.join("input-structured-00000000.nbdc");
    std::fs::write(&path, &s).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_fuzz_nbd_client"))
        .arg("--reproduce")
        .arg(&path)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("no finding"), "{stdout}");
    assert!(stdout.contains("connected: 1,"), "{stdout}");
    assert!(stdout.contains("\"protocol:WrongCookie\": 1"), "{stdout}");
}
