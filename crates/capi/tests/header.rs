//! `include/refpoint.h` is what cbindgen makes of the crate now (with
//! negative constants parenthesized, so `x-REFPOINT_E_IO` means what it
//! says): a stale header fails here. `REFPOINT_BLESS=1` rewrites it. And
//! it compiles as strict C99 and as C++11.

use std::path::Path;

#[test]
fn the_committed_header_is_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    let mut fresh = Vec::new();
    cbindgen::Builder::new()
        .with_crate(dir)
        .with_config(config)
        .generate()
        .expect("cbindgen reads the crate")
        .write(&mut fresh);
    let fresh = parenthesize(&String::from_utf8(fresh).expect("UTF-8 header"));
    let path = dir.join("include/refpoint.h");
    if std::env::var_os("REFPOINT_BLESS").is_some() {
        std::fs::write(&path, &fresh).expect("writing the header");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == fresh,
        "include/refpoint.h is stale: regenerate it with \
         REFPOINT_BLESS=1 cargo test -p refpoint-capi --test header"
    );
}

/// `#define NAME -N` → `#define NAME (-N)`.
fn parenthesize(header: &str) -> String {
    header
        .lines()
        .map(
            |l| match l.strip_prefix("#define ").and_then(|r| r.split_once(" -")) {
                Some((name, n)) if n.bytes().all(|b| b.is_ascii_digit()) => {
                    format!("#define {name} (-{n})\n")
                }
                _ => format!("{l}\n"),
            },
        )
        .collect()
}

#[test]
fn the_header_compiles_as_strict_c_and_as_cpp() {
    if !testkit::tools::available(&["cc", "c++"]) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("include");
    let src = "#include \"refpoint.h\"\nint main(void) { refpoint_info i; (void)i; return REFPOINT_E_IO - REFPOINT_E_INVALID == -2 ? 0 : 1; }\n";
    for (compiler, file, flags) in [
        (
            "cc",
            "t.c",
            &[
                "-std=c99",
                "-pedantic",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-Wstrict-prototypes",
            ][..],
        ),
        (
            "c++",
            "t.cpp",
            &[
                "-std=c++11",
                "-pedantic",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-Wold-style-cast",
            ][..],
        ),
    ] {
        let path = dir.path().join(file);
        std::fs::write(&path, src).unwrap();
        testkit::tools::run_ok(
            std::process::Command::new(compiler)
                .args(flags)
                .arg("-fsyntax-only")
                .arg("-I")
                .arg(&include)
                .arg(&path),
            std::time::Duration::from_secs(120),
        );
    }
}
