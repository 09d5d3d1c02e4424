//! The power-cut guest: qemu-system-x86_64 (TCG), Debian's kernel and
//! busybox from `prepare.sh`'s cache, an initramfs built here (newc cpio:
//! busybox, modules, the refpoint binary and its libraries, `init.sh`, the
//! pattern files), and two virtio disks: the ext4 data disk and an output
//! disk the CHECK phase writes its results to.

pub mod check;
pub mod model;

use std::collections::{BTreeSet, VecDeque};
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What `prepare.sh` leaves in the cache.
pub struct Kit {
    pub qemu: PathBuf,
    pub kernel: PathBuf,
    pub cache: PathBuf,
}

impl Kit {
    /// Runs `prepare.sh` (it returns at once when the cache is complete).
    pub fn prepare() -> Kit {
        let cache = std::env::var_os("REFPOINT_GUEST_CACHE")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/var/cache/refpoint-guest"));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/guest/prepare.sh");
        let status = Command::new("bash")
            .arg(&script)
            .env("REFPOINT_GUEST_CACHE", &cache)
            .status()
            .expect("run prepare.sh");
        assert!(status.success(), "{} failed: {status}", script.display());
        let vmlinux = cache.join("vmlinux");
        let kernel = if vmlinux.exists() {
            vmlinux
        } else {
            cache.join("vmlinuz")
        };
        Kit {
            qemu: cache.join("qemu-system-x86_64"),
            kernel,
            cache,
        }
    }
}

/// A newc cpio archive (what the kernel unpacks as its initramfs).
#[derive(Default)]
pub struct Cpio {
    buf: Vec<u8>,
    ino: u32,
    dirs: BTreeSet<String>,
}

impl Cpio {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) {
        self.ino += 1;
        let fields = [
            self.ino,
            mode,
            0,
            0,
            1,
            0,
            data.len() as u32,
            0,
            0,
            0,
            0,
            name.len() as u32 + 1,
            0,
        ];
        self.buf.extend_from_slice(b"070701");
        for f in fields {
            self.buf.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad();
        self.buf.extend_from_slice(data);
        self.pad();
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn parents(&mut self, path: &str) {
        let mut dir = String::new();
        for part in path.split('/').collect::<Vec<_>>().split_last().unwrap().1 {
            if !dir.is_empty() {
                dir.push('/');
            }
            dir.push_str(part);
            if self.dirs.insert(dir.clone()) {
                let d = dir.clone();
                self.entry(&d, 0o040755, &[]);
            }
        }
    }

    /// A regular file at `path` (relative, e.g. "bin/refpoint").
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) {
        self.parents(path);
        self.entry(path, 0o100000 | mode, data);
    }

    pub fn dir(&mut self, path: &str) {
        self.parents(&format!("{path}/x"));
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, &[]);
        self.buf
    }
}

/// The per-run part of the initramfs: busybox, modules, init, refpoint
/// (stripped when `strip` exists) with the libraries `ldd` names, patterns.
pub fn base_initramfs(kit: &Kit, refpoint: &Path, patterns: &[Vec<u8>], work: &Path) -> Vec<u8> {
    let mut c = Cpio::default();
    for d in ["dev", "proc", "sys", "tmp", "mnt", "rp/ids"] {
        c.dir(d);
    }
    c.file(
        "bin/busybox",
        0o755,
        &fs::read(kit.cache.join("busybox")).unwrap(),
    );
    c.file("init", 0o755, include_bytes!("init.sh"));
    let order = fs::read_to_string(kit.cache.join("modules/order")).unwrap();
    c.file("modules/order", 0o644, order.as_bytes());
    for m in order.split_whitespace() {
        let ko = fs::read(kit.cache.join(format!("modules/{m}.ko"))).unwrap();
        c.file(&format!("modules/{m}.ko"), 0o644, &ko);
    }
    let stripped = work.join("refpoint.stripped");
    let ok = Command::new("strip")
        .arg("-o")
        .arg(&stripped)
        .arg(refpoint)
        .status()
        .is_ok_and(|s| s.success());
    let bin = if ok { stripped } else { refpoint.to_path_buf() };
    c.file("bin/refpoint", 0o755, &fs::read(&bin).unwrap());
    let ldd = Command::new("ldd").arg(&bin).output().expect("ldd");
    for line in String::from_utf8_lossy(&ldd.stdout).lines() {
        // "libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)" or "/lib64/ld-linux-x86-64.so.2 (0x...)"
        let path = line
            .split("=>")
            .last()
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap_or("");
        if path.starts_with('/') {
            let real = fs::canonicalize(path).unwrap();
            c.file(
                path.trim_start_matches('/'),
                0o755,
                &fs::read(real).unwrap(),
            );
        }
    }
    for (i, p) in patterns.iter().enumerate() {
        c.file(&format!("rp/p{i}"), 0o644, p);
    }
    c.finish()
}

/// Returns the -drive cache mode: `none` (O_DIRECT on the host) where the
/// file system of `file` supports O_DIRECT, else `directsync`.
pub fn cache_mode(file: &Path) -> &'static str {
    const O_DIRECT: i32 = 0o40000;
    match fs::OpenOptions::new()
        .read(true)
        .custom_flags(O_DIRECT)
        .open(file)
    {
        Ok(_) => "none",
        Err(e) => {
            eprintln!(
                "power_cut: O_DIRECT not supported on {} ({e}): falling back to cache=directsync",
                file.display()
            );
            "directsync"
        }
    }
}

/// One boot of the guest; its serial console goes to a file that is read
/// as it grows.
pub struct Guest {
    child: Child,
    console: PathBuf,
    seen: usize,
    queue: VecDeque<String>,
}

pub struct Boot<'a> {
    pub kit: &'a Kit,
    pub initrd: &'a Path,
    pub data: &'a Path,
    pub out: &'a Path,
    pub console: &'a Path,
    pub cache: &'a str,
    pub round: u64,
}

impl Guest {
    pub fn boot(b: &Boot) -> Guest {
        let _ = fs::remove_file(b.console);
        let drive = |p: &Path| {
            format!(
                "file={},format=raw,if=virtio,cache={},aio=threads",
                p.display(),
                b.cache
            )
        };
        let stderr = fs::File::create(b.console.with_extension("qemu-stderr")).unwrap();
        let child = Command::new(&b.kit.qemu)
            .args([
                "-accel",
                "tcg",
                "-m",
                "512M",
                "-smp",
                "1",
                "-nodefaults",
                "-display",
                "none",
                "-no-reboot",
            ])
            .arg("-serial")
            .arg(format!("file:{}", b.console.display()))
            .arg("-kernel")
            .arg(&b.kit.kernel)
            .arg("-initrd")
            .arg(b.initrd)
            .arg("-append")
            .arg(format!(
                "console=ttyS0 quiet printk.devkmsg=on printk.time=0 panic=-1 rp.round={}",
                b.round
            ))
            .arg("-drive")
            .arg(drive(b.data))
            .arg("-drive")
            .arg(drive(b.out))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .expect("start qemu-system-x86_64");
        Guest {
            child,
            console: b.console.to_path_buf(),
            seen: 0,
            queue: VecDeque::new(),
        }
    }

    /// Queues the complete "RP ..." lines (without "RP ") printed since.
    fn read(&mut self) {
        let text = fs::read(&self.console).unwrap_or_default();
        let end = text.iter().rposition(|&b| b == b'\n').map_or(0, |p| p + 1);
        if end > self.seen {
            for line in String::from_utf8_lossy(&text[self.seen..end]).lines() {
                if let Some(i) = line.find("RP ") {
                    self.queue.push_back(line[i + 3..].trim_end().to_string());
                }
            }
            self.seen = end;
        }
    }

    pub fn exited(&mut self) -> bool {
        self.child.try_wait().unwrap().is_some()
    }

    /// Polls the console until `stop` returns true for a line (Ok(that
    /// line)), qemu exits or `timeout` passes (Err). Every line goes to `sink`.
    pub fn wait_for(
        &mut self,
        timeout: Duration,
        sink: &mut Vec<String>,
        stop: impl Fn(&str) -> bool,
    ) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            self.read();
            while let Some(l) = self.queue.pop_front() {
                sink.push(l.clone());
                if stop(&l) {
                    return Ok(l);
                }
                if l.starts_with("FATAL") {
                    return Err(l);
                }
            }
            if self.exited() {
                self.read();
                sink.extend(self.queue.drain(..));
                return Err("qemu exited".into());
            }
            if Instant::now() > deadline {
                return Err(format!("timeout after {timeout:?}"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Cuts the power: SIGKILL to qemu, then the console's last lines.
    pub fn cut(&mut self) -> Vec<String> {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.read();
        self.queue.drain(..).collect()
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Console lines where the guest's kernel reported trouble: a power cut
/// must never make ext4 (with its journal replayed) report errors.
pub fn kernel_trouble(console: &Path) -> Vec<String> {
    const SIGNS: [&str; 7] = [
        "EXT4-fs error",
        "EXT4-fs warning",
        "JBD2",
        "I/O error",
        "Kernel panic",
        "BUG:",
        "Oops",
    ];
    let text = fs::read(console).unwrap_or_default();
    String::from_utf8_lossy(&text)
        .lines()
        .filter(|l| !l.contains("RP ") && SIGNS.iter().any(|s| l.contains(s)))
        .map(|l| l.trim().to_string())
        .collect()
}

/// Hands the guest its WORK plan (a shell script): the body first, then the
/// header the guest polls for, each made durable before the next.
pub fn write_plan(out: &Path, at: u64, round: u64, script: &str) {
    use std::os::unix::fs::FileExt;
    let f = fs::OpenOptions::new().write(true).open(out).unwrap();
    f.write_all_at(script.as_bytes(), at + 4096).unwrap();
    f.sync_data().unwrap();
    f.write_all_at(format!("PLAN {round} {}\n", script.len()).as_bytes(), at)
        .unwrap();
    f.sync_data().unwrap();
}

/// Reads `len` bytes at `offset` of the output disk.
pub fn read_out(out: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut f = fs::File::open(out).unwrap();
    f.seek(SeekFrom::Start(offset)).unwrap();
    let mut buf = vec![0u8; len];
    f.read_exact(&mut buf).unwrap();
    buf
}
