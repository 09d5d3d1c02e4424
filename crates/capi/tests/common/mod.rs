//! What the tests of librefpoint share: the library as a vendor installs
//! it (`make install`, pkg-config) from the build the tests were made with.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use testkit::tools;

pub const LIMIT: Duration = Duration::from_secs(300);

/// The directory of the `librefpoint.so` and `.a` this test was built with.
fn build_dir() -> PathBuf {
    // Built beside the test binary, in the same rustc run as the rlib the
    // test links (the copy one directory up may be older).
    let exe = std::env::current_exe().unwrap();
    let deps = exe.parent().unwrap();
    assert!(
        deps.join("librefpoint.so").exists(),
        "librefpoint.so not found beside {}",
        exe.display()
    );
    deps.to_path_buf()
}

/// The library installed under a prefix by `make install`, as a vendor
/// gets it, and compiled against through pkg-config.
pub struct Installed {
    pub prefix: PathBuf,
}

impl Installed {
    pub fn new(prefix: &Path) -> Installed {
        let capi = Path::new(env!("CARGO_MANIFEST_DIR"));
        tools::run_ok(
            Command::new("make")
                .arg("-C")
                .arg(capi)
                .arg("install")
                .arg("NO_BUILD=1")
                .arg(format!("BUILD_DIR={}", build_dir().display()))
                .arg(format!("PREFIX={}", prefix.display())),
            LIMIT,
        );
        Installed {
            prefix: prefix.into(),
        }
    }

    pub fn pkg_config(&self, args: &[&str]) -> Vec<String> {
        let out = tools::ok(
            Command::new("pkg-config")
                .args(args)
                .arg("refpoint")
                .env("PKG_CONFIG_PATH", self.prefix.join("lib/pkgconfig")),
            LIMIT,
        );
        out.split_whitespace().map(String::from).collect()
    }

    /// Compiles `src` into `out` against the shared library (found at run
    /// time by the soname `librefpoint.so.1` in the prefix) or the static one.
    pub fn compile(&self, src: &Path, out: &Path, flags: &[&str], link_static: bool) {
        let mut cc = Command::new("cc");
        cc.args(["-std=gnu11", "-Wall", "-Wextra", "-Werror", "-g"])
            .args(flags)
            .args(self.pkg_config(&["--cflags"]))
            .arg(src)
            .arg("-o")
            .arg(out);
        if link_static {
            cc.arg(self.prefix.join("lib/librefpoint.a")).args(
                self.pkg_config(&["--libs-only-l", "--static"])
                    .iter()
                    .filter(|l| *l != "-lrefpoint"),
            );
        } else {
            cc.args(self.pkg_config(&["--libs"]))
                // DT_RPATH, which outranks LD_LIBRARY_PATH: cargo's points
                // at directories that may hold an older build.
                .arg(format!(
                    "-Wl,--disable-new-dtags,-rpath,{}",
                    self.prefix.join("lib").display()
                ))
                .arg("-lpthread");
        }
        tools::run_ok(&mut cc, LIMIT);
    }

    /// `tests/c/<name>.c`, linked against the shared library.
    #[allow(dead_code)] // not every test compiles the programs
    pub fn program(&self, name: &str, out_dir: &Path, flags: &[&str]) -> PathBuf {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/c/{name}.c"));
        let out = out_dir.join(format!(
            "{name}{}",
            flags.join("").replace(['-', '=', ','], "_")
        ));
        self.compile(&src, &out, flags, false);
        out
    }
}
