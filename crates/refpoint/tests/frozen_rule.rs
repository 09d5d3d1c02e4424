//! The frozen-file rule, end to end: a file a checkpoint froze is refused
//! for writing the same way with and without the daemon, by every path
//! that could write it — `disk write` and `rct enable` on the file,
//! `machine create` taking it, and an NBD write to the checkpoint's export.

mod common;

use common::{s, Env};
use std::time::Duration;
use testkit::nbd_client::Client;

const MIB: u64 = 1 << 20;
const NBD_EPERM: u32 = 1;

/// What every refusal says, in whatever words surround it.
fn frozen_text(env: &Env, base: &std::path::Path) -> String {
    let m = env.json(&["machine", "show", "vm1", "--json"]);
    let active = m["disks"][0]["active"].as_str().unwrap().to_string();
    format!(
        "{} is frozen by a checkpoint of machine vm1; its writes go to vm1/disk0 (now {active})",
        base.display()
    )
}

/// Runs each writing command on the frozen file; each must fail (exit 1)
/// with the rule's message and leave the file as it was.
fn refusals(env: &Env, base: &std::path::Path, expect: &str) -> Vec<String> {
    let before = std::fs::read(base).unwrap();
    let b = s(base);
    let mut out = Vec::new();
    for args in [
        vec![
            "disk",
            "write",
            b,
            "--offset",
            "0",
            "--pattern",
            "7",
            "--length",
            "4096",
        ],
        vec!["rct", "enable", b],
        vec!["machine", "create", "vm2", "--disk", b],
    ] {
        let o = env.run(&args);
        let err = String::from_utf8_lossy(&o.stderr).into_owned();
        assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(expect), "{args:?}: {err}");
        out.push(err);
    }
    assert_eq!(
        std::fs::read(base).unwrap(),
        before,
        "a refused write changed the file"
    );
    out
}

#[test]
fn a_frozen_file_is_refused_alike_by_the_cli_with_and_without_the_daemon_and_over_nbd() {
    let env = Env::new();
    let base = env.machine(16 * MIB, "1M", None);
    env.ok(&["checkpoint", "create", "vm1"]);
    let expect = frozen_text(&env, &base);

    let alone = refusals(&env, &base, &expect);
    let d = env.serve(&[]);
    let served = refusals(&env, &base, &expect);
    assert_eq!(
        alone, served,
        "the daemon changes how a frozen file is refused"
    );

    // The checkpoint's export is read-only, and a write to it is refused
    // with the same words.
    let mut c = Client::unix(&env.nbd_socket(), Duration::from_secs(30)).unwrap();
    c.start("vm1/disk0@checkpoint-1", true, &[]);
    let r = c.write(0, &[7; 4096]);
    assert_eq!(r.error, NBD_EPERM, "{r:?}");
    assert_eq!(r.message, expect);
    c.disconnect();
    // The live disk still takes writes.
    let mut c = Client::unix(&env.nbd_socket(), Duration::from_secs(30)).unwrap();
    c.start("vm1/disk0", true, &[]);
    assert_eq!(c.write(0, &[7; 4096]).error, 0);
    c.disconnect();
    env.stop(d, Duration::from_secs(30));
    assert!(!env.run(&["machine", "show", "vm2"]).status.success());
}
