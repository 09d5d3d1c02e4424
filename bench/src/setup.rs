//! Setting a benchmark run up the same way in every binary.

use anyhow::{ensure, Context, Result};
pub use refpoint_cli::units::parse_size;
use std::fs::File;
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The binaries every benchmark runs, as command-line options.
#[derive(clap::Args)]
pub struct Binaries {
    /// The refpoint binary [default: target/release/refpoint, built first].
    #[arg(long)]
    pub refpoint: Option<PathBuf>,
    /// The qemu-img to compare against.
    #[arg(long, default_value = "/usr/bin/qemu-img")]
    pub qemu_img: PathBuf,
}

impl Binaries {
    /// The refpoint binary given, or else the one [`build_refpoint`] builds.
    pub fn refpoint(&self) -> Result<PathBuf> {
        match &self.refpoint {
            Some(p) => Ok(p.clone()),
            None => build_refpoint(),
        }
    }
}

/// Builds the release refpoint binary and returns its path (next to the
/// running benchmark's own binary).
pub fn build_refpoint() -> Result<PathBuf> {
    let p = build_release(&["refpoint"])?.join("refpoint");
    ensure!(
        p.exists(),
        "{} does not exist; give --refpoint",
        p.display()
    );
    Ok(p)
}

/// `cargo build --release -p PACKAGE…` in the workspace; returns the
/// release directory of the target directory the running benchmark was
/// built in.
///
/// Cargo unifies the features of the dependencies over the packages built
/// together: building a package with `refpoint-bench` keeps the shared
/// dependencies as the benchmark's own build has them, so neither build
/// undoes the other's.
pub fn build_release(packages: &[&str]) -> Result<PathBuf> {
    let args: Vec<&str> = packages.iter().flat_map(|p| ["-p", p]).collect();
    let line = format!("cargo build --release {}", args.join(" "));
    eprintln!("{line}…");
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo
        .args(["build", "--release"])
        .args(&args)
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    // What `cargo run` tells the benchmark about its own package: build
    // scripts that watch these variables (ring's) would run again and
    // rebuild everything above them.
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        if k.starts_with("CARGO_PKG_")
            || k.starts_with("CARGO_MANIFEST_")
            || matches!(
                &*k,
                "CARGO_CRATE_NAME" | "CARGO_BIN_NAME" | "CARGO_PRIMARY_PACKAGE"
            )
        {
            cargo.env_remove(&*k);
        }
    }
    let st = cargo.status().context("cannot run cargo")?;
    ensure!(st.success(), "{line} failed");
    let exe = std::env::current_exe()?;
    // target/{release,debug}/BIN → target/release
    let target = exe
        .parent()
        .and_then(Path::parent)
        .context("the benchmark binary is not in a target directory")?;
    Ok(target.join("release"))
}

/// The directory of the work files: the one given (created if needed),
/// or a fresh one under /var/tmp that is removed when this is dropped.
pub struct WorkDir {
    path: PathBuf,
    tmp: Option<tempfile::TempDir>,
}

impl WorkDir {
    /// `dir` if given, else a fresh directory `/var/tmp/{prefix}XXXXXX`.
    pub fn new(dir: Option<&Path>, prefix: &str) -> Result<WorkDir> {
        Ok(match dir {
            Some(d) => {
                std::fs::create_dir_all(d)?;
                WorkDir {
                    path: std::fs::canonicalize(d)?,
                    tmp: None,
                }
            }
            None => {
                let t = tempfile::Builder::new()
                    .prefix(prefix)
                    .tempdir_in("/var/tmp")?;
                WorkDir {
                    path: t.path().to_path_buf(),
                    tmp: Some(t),
                }
            }
        })
    }

    /// The directory, absolute.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Leaves a fresh directory in place (a given one always stays) and
    /// says where it is.
    pub fn keep(self) {
        if let Some(t) = self.tmp {
            let p = t.keep();
            eprintln!("work files kept in {}", p.display());
        }
    }
}

/// Drops the clean pages of `f` from the page cache
/// (`posix_fadvise(DONTNEED)`); dirty ones stay, so sync first.
pub fn drop_cached(f: &File) -> nix::Result<()> {
    nix::fcntl::posix_fadvise(
        f.as_raw_fd(),
        0,
        0,
        nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
    )
}

/// A file removed when dropped (a random source may live in /dev/shm,
/// outside the work directory).
pub struct RemoveOnDrop(pub PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A random source of `size` bytes, named after this process: in
/// `explicit`, else in /dev/shm when it has room (writing it there keeps
/// the disk under test quiet), else in `fallback`. Sources of killed runs
/// (`prefix<pid>.raw` of a dead pid) are removed first.
pub fn random_source(
    explicit: Option<&Path>,
    fallback: &Path,
    prefix: &str,
    size: u64,
) -> RemoveOnDrop {
    let dir = match explicit {
        Some(d) => d.to_path_buf(),
        None => {
            let shm = Path::new("/dev/shm");
            if shm.is_dir() && free_bytes(shm).unwrap_or(0) > size + (2 << 30) {
                shm.to_path_buf()
            } else {
                fallback.to_path_buf()
            }
        }
    };
    remove_stale_sources(&dir, prefix);
    RemoveOnDrop(dir.join(format!("{prefix}{}.raw", std::process::id())))
}

fn remove_stale_sources(dir: &Path, prefix: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(prefix)
            .and_then(|r| r.strip_suffix(".raw"))
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// The type of the file system holding `p` (`stat -f -c %T`).
pub fn fs_type(p: &Path) -> Result<String> {
    let out = Command::new("stat")
        .args(["-f", "-c", "%T"])
        .arg(p)
        .output()
        .context("cannot run stat")?;
    ensure!(out.status.success(), "stat -f {} failed", p.display());
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

pub fn free_bytes(p: &Path) -> Result<u64> {
    let st = nix::sys::statvfs::statvfs(p)?;
    Ok(st.blocks_available() as u64 * st.fragment_size() as u64)
}
