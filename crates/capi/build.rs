//! The shared library's soname carries the ABI's major version, so
//! programs linked against ABI 1 keep loading `librefpoint.so.1` after a
//! minor upgrade and refuse an incompatible one.

/// Keep equal to `REFPOINT_VERSION_MAJOR` (a unit test checks it).
const ABI_MAJOR: u32 = 1;

fn main() {
    let soname = format!("librefpoint.so.{ABI_MAJOR}");
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,{soname}");
    println!("cargo:rustc-env=REFPOINT_SONAME={soname}");
    println!("cargo:rerun-if-changed=build.rs");
}
