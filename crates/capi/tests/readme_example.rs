//! The C example in the README compiles as shown and does what it says:
//! a full backup first, then incrementals that copy only what changed,
//! each leaving a file equal to the disk.

mod common;

use common::{Installed, LIMIT};
use std::path::Path;
use std::process::Command;

use storage::LocalFs;
use testkit::tools;

const MIB: u64 = 1 << 20;
const SIZE: u64 = 32 * MIB;

/// The ```c block of the README that starts with `/* backup.c`.
fn readme_example() -> String {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
    let text = std::fs::read_to_string(readme).unwrap();
    let start = text
        .find("```c\n/* backup.c")
        .expect("the README's C example")
        + 5;
    let len = text[start..].find("```").unwrap();
    text[start..start + len].to_string()
}

#[test]
fn the_readme_c_example_backs_up_incrementally() {
    if !tools::available(&["cc", "make", "pkg-config"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let lib = Installed::new(&dir.path().join("prefix"));
    let src = dir.path().join("backup.c");
    std::fs::write(&src, readme_example()).unwrap();
    let program = dir.path().join("backup");
    lib.compile(&src, &program, &[], false);

    let disk = dir.path().join("disk0.vhdx");
    let mut o = vhdx::CreateOptions::dynamic(SIZE);
    o.block_size = MIB as u32;
    vhdx::create(&LocalFs, &disk, &o).unwrap().close().unwrap();
    let mut model = vec![0u8; SIZE as usize];
    let home = dir.path().join("home");
    let store = machine::Store::local(&home);
    store.create("vm1", &[(None, disk)], None, None).unwrap();
    let out = dir.path().join("backup.raw");
    let write = |model: &mut Vec<u8>, at: u64, seed: u64| {
        let t = store.resolve(Path::new("vm1/disk0")).unwrap();
        let mut d = store.open_target(&t, true).unwrap();
        if !d.is_tracked() {
            d.enable_tracking(rct::DEFAULT_GRANULARITY).unwrap();
        }
        let data = testkit::pattern::bytes(100_000, seed);
        d.write(at, &data).unwrap();
        model[at as usize..at as usize + data.len()].copy_from_slice(&data);
        d.close().unwrap();
    };
    let backup = || {
        tools::ok(
            Command::new(&program)
                .arg("vm1/disk0")
                .arg(&out)
                .env("REFPOINT_HOME", &home)
                .env_remove("LD_LIBRARY_PATH"),
            LIMIT,
        )
    };

    write(&mut model, 3 * MIB + 17, 1);
    let first = backup();
    assert!(first.starts_with("full backup: "), "{first}");
    assert!(
        std::fs::read(&out).unwrap() == model,
        "after the full backup"
    );

    for (round, at) in [(2u64, 20 * MIB), (3, 7 * MIB + 4095)] {
        write(&mut model, at, round);
        let o = backup();
        assert!(o.starts_with("incremental backup: "), "{o}");
        let copied: u64 = o
            .split_whitespace()
            .nth(2)
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{o}"));
        assert!(copied <= 4 * 64 * 1024, "only the changed regions: {o}");
        assert!(
            std::fs::read(&out).unwrap() == model,
            "after incremental {round}"
        );
    }
}
