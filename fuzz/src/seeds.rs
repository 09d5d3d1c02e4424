//! Seed images: valid VHDX files made in-process with `vhdx::create`, each
//! with some data written, covering every structure the parser reads
//! (512- and 4096-byte sectors, fixed, dynamic, differencing with sector
//! bitmaps, zero and unmapped blocks, a dirty log).

use crate::memfs::MemFs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use vhdx::{create, create_child, CreateOptions, DiskType, Vhdx};

const MIB: u64 = 1 << 20;

/// One seed: the files to install; the first is the one mutated and opened,
/// the others (a parent) stay as they are.
#[derive(Debug, Clone)]
pub struct Seed {
    pub name: String,
    pub files: Vec<(PathBuf, Arc<Vec<u8>>)>,
}

impl Seed {
    /// The path of the file under test.
    pub fn target(&self) -> &Path {
        &self.files[0].0
    }
    /// The bytes of the file under test.
    pub fn bytes(&self) -> &[u8] {
        &self.files[0].1
    }
}

fn opts(size: u64, t: DiskType, bs: u64, ss: u32) -> CreateOptions {
    CreateOptions {
        virtual_size: size,
        disk_type: t,
        block_size: bs as u32,
        logical_sector_size: ss,
        physical_sector_size: 4096,
    }
}

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(salt))
        .collect()
}

fn take(fs: &MemFs, p: &Path) -> Arc<Vec<u8>> {
    Arc::new(fs.contents(p).expect("seed file exists"))
}

/// The generated seeds. Small on purpose: every iteration copies one.
pub fn generated() -> Vec<Seed> {
    let fs = MemFs::new(u64::MAX);
    let mut seeds = Vec::new();
    let mut single = |name: &str, path: &str, build: &dyn Fn(&MemFs, &Path) -> vhdx::Result<()>| {
        let p = Path::new(path);
        build(&fs, p).unwrap_or_else(|e| panic!("building seed {name}: {e}"));
        seeds.push(Seed {
            name: name.into(),
            files: vec![(p.into(), take(&fs, p))],
        });
    };

    // Dynamic, 512-byte sectors: a partial block, a full block, a zeroed
    // and a trimmed block.
    single("dynamic-512", "/fuzz/dynamic-512.vhdx", &|fs, p| {
        let mut v = create(fs, p, &opts(8 * MIB, DiskType::Dynamic, MIB, 512))?;
        v.write(4096, &pattern(8192, 1))?;
        v.write(2 * MIB, &pattern(MIB as usize, 2))?;
        v.zero(2 * MIB + 4096, 4096)?;
        v.zero(5 * MIB, MIB)?;
        v.trim(6 * MIB, MIB)?;
        v.write(8 * MIB - 512, &pattern(512, 3))?;
        v.close()
    });
    // Dynamic, 4096-byte sectors, 2 MiB blocks.
    single("dynamic-4k", "/fuzz/dynamic-4k.vhdx", &|fs, p| {
        let mut v = create(fs, p, &opts(6 * MIB, DiskType::Dynamic, 2 * MIB, 4096))?;
        v.write(2 * MIB + 12288, &pattern(20480, 4))?;
        v.close()
    });
    // Fixed: every block present.
    single("fixed", "/fuzz/fixed.vhdx", &|fs, p| {
        let mut v = create(fs, p, &opts(2 * MIB, DiskType::Fixed, MIB, 512))?;
        v.write(1000, &pattern(5000, 5))?;
        v.close()
    });
    // A dirty log: flushed, then the process "dies" without closing.
    single("dirty-log", "/fuzz/dirty-log.vhdx", &|fs, p| {
        let mut v = create(fs, p, &opts(4 * MIB, DiskType::Dynamic, MIB, 512))?;
        v.write(0, &pattern(65536, 6))?;
        v.write(3 * MIB, &pattern(4096, 7))?;
        v.flush()?;
        v.abandon();
        Ok(())
    });

    // A differencing child with partially present blocks (sector bitmap),
    // clean and with a dirty log.
    let base = Path::new("/fuzz/base.vhdx");
    let mut v = create(&fs, base, &opts(4 * MIB, DiskType::Dynamic, MIB, 512)).expect("base");
    v.write(0, &pattern(2 * MIB as usize, 8))
        .expect("base write");
    v.close().expect("base close");
    for (name, dirty) in [("child", false), ("child-dirty-log", true)] {
        let p = PathBuf::from(format!("/fuzz/{name}.avhdx"));
        let mut c = create_child(&fs, &p, base, None).expect("child");
        c.write(512, &pattern(1024, 9)).expect("child write");
        c.write(MIB + 4096, &pattern(8192, 10))
            .expect("child write");
        c.flush().expect("child flush");
        if dirty {
            c.abandon();
        } else {
            c.close().expect("child close");
        }
        seeds.push(Seed {
            name: name.into(),
            files: vec![(p.clone(), take(&fs, &p)), (base.into(), take(&fs, base))],
        });
    }
    // The dirty-log images model a crash after the log entry was flushed but
    // before it was applied: the first BAT page goes back to its state
    // before the entry, so only replay (in place, or in memory for a
    // read-only open) brings the data back.
    for s in &mut seeds {
        if s.name.ends_with("dirty-log") {
            Arc::make_mut(&mut s.files[0].1)[3 * MIB as usize..][..4096].fill(0);
        }
    }
    seeds
}

/// A seed from a file on the local disk (installed as `/fuzz/input.vhdx`).
pub fn from_file(path: &Path) -> std::io::Result<Seed> {
    let bytes = std::fs::read(path)?;
    Ok(Seed {
        name: path.display().to_string(),
        files: vec![(PathBuf::from("/fuzz/input.vhdx"), Arc::new(bytes))],
    })
}

/// Installs a seed's files, with `target` in place of the first one.
pub fn install(fs: &MemFs, seed: &Seed, target: Arc<Vec<u8>>) {
    fs.insert(seed.target(), target);
    for (p, b) in &seed.files[1..] {
        fs.insert(p, b.clone());
    }
}

/// Checks a seed opens cleanly (a broken seed would waste the run).
pub fn validate(seed: &Seed) -> vhdx::Result<()> {
    let fs = MemFs::new(u64::MAX);
    install(&fs, seed, seed.files[0].1.clone());
    Vhdx::open(&fs, seed.target(), false).map(drop)
}
