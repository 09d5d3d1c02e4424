//! `examples/python/vendor_flow.py` (ctypes, no bindings) runs its full
//! and incremental backup against the installed library, and its backup
//! equals what the test wrote.

mod common;

use api::Machines;
use common::{Installed, LIMIT};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use storage::LocalFs;
use testkit::tools;

const MIB: u64 = 1 << 20;
const SIZE: u64 = 16 * MIB;

#[test]
fn the_python_example_backs_up_a_machine_disk() {
    let python = std::env::var("REFPOINT_PYTHON").unwrap_or_else(|_| "python3".into());
    if !tools::available(&[&python, "cc", "make", "pkg-config"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lib = Installed::new(&dir.path().join("prefix"));
    let disk = dir.path().join("disk0.vhdx");
    let mut o = vhdx::CreateOptions::dynamic(SIZE);
    o.block_size = MIB as u32;
    vhdx::create(&LocalFs, &disk, &o).unwrap().close().unwrap();
    let mut model = vec![0u8; SIZE as usize];
    {
        let mut d = vdisk::Disk::open(Arc::new(LocalFs), &disk, true).unwrap();
        let data = testkit::pattern::bytes(3 * MIB as usize, 9);
        d.write(5 * MIB, &data).unwrap();
        model[5 * MIB as usize..8 * MIB as usize].copy_from_slice(&data);
        d.close().unwrap();
    }
    let home = dir.path().join("home");
    let store = machine::Store::local(&home);
    store.create("vm1", &[(None, disk)], None, None).unwrap();
    daemon::Service::local(store)
        .enable_tracking("vm1", "disk0", &Default::default())
        .unwrap();

    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/python/vendor_flow.py");
    let out = dir.path().join("backup.raw");
    let o = tools::ok(
        Command::new(&python)
            .arg(script)
            .arg("--lib")
            .arg(lib.prefix.join("lib/librefpoint.so.1"))
            .arg("--state")
            .arg(&home)
            .args(["--disk", "vm1/disk0", "--write", "--out"])
            .arg(&out),
        LIMIT,
    );
    // The example's writes, by this test's own account.
    for i in 0..8u64 {
        let at = ((i * 7919 * 4096) % (SIZE - 8192)) as usize;
        model[at..at + 8192].fill(0x40 + i as u8);
    }
    let got = std::fs::read(&out).unwrap();
    assert!(
        got == model,
        "the backup differs from what was written:\n{o}"
    );
    let number = |key: &str| -> u64 {
        o.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .unwrap_or_else(|| panic!("no {key} in:\n{o}"))
            .parse()
            .unwrap()
    };
    assert_eq!(number("full_bytes"), 3 * MIB, "holes skipped:\n{o}");
    let incr = number("incremental_bytes");
    assert!(
        incr > 0 && incr <= 8 * 2 * 64 * 1024,
        "only the changed regions:\n{o}"
    );
}
