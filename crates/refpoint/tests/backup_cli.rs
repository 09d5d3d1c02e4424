//! `refpoint backup | restore | verify | backup consolidate` as a user runs
//! them: backups killed with SIGKILL at random moments recover on the next
//! run, and every point restores bit-exact against a model of what was
//! written through `refpoint disk write`; consolidation keeps what it must.

mod common;

use common::{s, Cli};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

impl Cli {
    /// The points of a repository, oldest first.
    fn points(&self, repo: &Path) -> Vec<u32> {
        self.json(&["backup", "list", s(repo), "--json"])
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["point"].as_u64().unwrap() as u32)
            .collect()
    }
}

/// A fingerprint of a file's content: BLAKE3 of each 8 MiB (the models
/// are large).
fn file_hash(p: &Path) -> String {
    use std::os::unix::fs::FileExt;
    let f = std::fs::File::open(p).unwrap();
    let len = f.metadata().unwrap().len();
    let mut buf = vec![0u8; 8 << 20];
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < len {
        let b = &mut buf[..(8 << 20).min(len - pos) as usize];
        f.read_exact_at(b, pos).unwrap();
        out.push(backup::export::hash(b));
        pos += b.len() as u64;
    }
    out.join(",")
}

/// Writes `len` random bytes at `offset` of the machine's disk (through
/// `refpoint disk write --from`) and of the model file.
fn write(cli: &Cli, dir: &Path, model: &Path, rng: &mut SmallRng, offset: u64, len: u64) {
    use std::os::unix::fs::FileExt;
    let mut data = vec![0u8; len as usize];
    rng.fill(&mut data[..]);
    let chunk = dir.join("chunk.bin");
    std::fs::write(&chunk, &data).unwrap();
    cli.ok(&[
        "disk",
        "write",
        "vm1/disk0",
        "--offset",
        &offset.to_string(),
        "--from",
        s(&chunk),
    ]);
    let f = std::fs::OpenOptions::new().write(true).open(model).unwrap();
    f.write_all_at(&data, offset).unwrap();
}

/// Restores `point` as raw and checks it against the model hash.
fn check_point(cli: &Cli, dir: &Path, repo: &Path, point: u32, want: &str) {
    let out = dir.join(format!("restored-{point}.img"));
    let _ = std::fs::remove_file(&out);
    cli.ok(&[
        "restore",
        s(repo),
        "--point",
        &point.to_string(),
        "--disk",
        "disk0",
        "--to",
        s(&out),
        "--format",
        "raw",
    ]);
    assert!(file_hash(&out) == want, "point {point} restores wrong");
    std::fs::remove_file(&out).unwrap();
}

/// Machine `vm1` with one disk of `size` bytes; returns the model file
/// (zeros, like the new disk).
fn machine(cli: &Cli, dir: &Path, size: u64) -> PathBuf {
    let disk = dir.join("d0.vhdx");
    cli.ok(&["vhd", "create", s(&disk), "--size", &size.to_string()]);
    cli.ok(&["machine", "create", "vm1", "--disk", s(&disk)]);
    let model = dir.join("model.img");
    std::fs::File::create(&model)
        .unwrap()
        .set_len(size)
        .unwrap();
    model
}

/// Runs backups killed with SIGKILL after random delays until `kills` of
/// them died mid-run; before each, `writes` pieces of 16 MiB are written so
/// every run has work to do. The delays start below `max_delay` and adapt:
/// shorter after a run that finished first. Records the model's hash for
/// each point a killed run completed.
#[allow(clippy::too_many_arguments)]
fn killed_backups(
    cli: &Cli,
    dir: &Path,
    repo: &Path,
    model: &Path,
    rng: &mut SmallRng,
    mut max_delay: Duration,
    kills: u32,
    writes: usize,
    want: &mut Vec<(u32, String)>,
    delays: &mut Vec<Duration>,
) {
    let mut killed = 0;
    for _ in 0..kills * 5 {
        for _ in 0..writes {
            let off = rng.gen_range(0..512 - 16) * MIB + rng.gen_range(0..MIB / 512) * 512;
            write(cli, dir, model, rng, off, 16 * MIB);
        }
        let delay = max_delay.mul_f64(rng.gen_range(0.05..1.0));
        if cli.killed_after(&["backup", "vm1", "--to", s(repo), "--json"], delay) {
            killed += 1;
            delays.push(delay);
            max_delay = max_delay.mul_f64(1.1);
        } else {
            max_delay = max_delay.mul_f64(0.7);
        }
        // A point the run completed holds the model as it is (nothing was
        // written since the run started).
        for p in cli.points(repo) {
            if !want.iter().any(|w| w.0 == p) {
                want.push((p, file_hash(model)));
            }
        }
        if killed == kills {
            return;
        }
    }
    panic!("only {killed} of the backups could be killed mid-run");
}

/// The backup after killed ones: succeeds and says what it cleaned up.
fn recovering_backup(cli: &Cli, repo: &Path, model: &Path) -> (serde_json::Value, String) {
    let s = cli.json(&["backup", "vm1", "--to", s(repo), "--json"]);
    (s, file_hash(model))
}

#[test]
fn backups_killed_with_sigkill_recover_and_restore_bit_exact() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cli = Cli {
        home: dir.join("home"),
    };
    let repo = dir.join("repo");
    let model = machine(&cli, dir, 512 * MIB);
    let mut rng = SmallRng::seed_from_u64(42);
    // 200 MiB of data in 25 pieces of 8 MiB, anywhere on the disk.
    let mut slots: Vec<u64> = (0..64).collect();
    for _ in 0..25 {
        let slot = slots.swap_remove(rng.gen_range(0..slots.len()));
        write(&cli, dir, &model, &mut rng, slot * 8 * MIB, 8 * MIB);
    }
    // How long an uninterrupted full backup takes, on a scratch copy of
    // the machine, sets the range of the delays.
    let t = Instant::now();
    let scratch = dir.join("scratch-repo");
    cli.ok(&["backup", "vm1", "--to", s(&scratch)]);
    let full_time = t.elapsed();
    std::fs::remove_dir_all(&scratch).unwrap();

    let mut want: Vec<(u32, String)> = Vec::new();
    let mut delays = Vec::new();
    let mut recovered = Vec::new();
    // The first full backup of this repository, killed again and again.
    killed_backups(
        &cli,
        dir,
        &repo,
        &model,
        &mut rng,
        full_time,
        6,
        0,
        &mut want,
        &mut delays,
    );
    let (sum, h) = recovering_backup(&cli, &repo, &model);
    recovered.extend(sum["recovered"].as_array().unwrap().clone());
    want.push((sum["point"].as_u64().unwrap() as u32, h));
    // Incrementals: more writes, more kills.
    for round in 0..3 {
        let first = cli.points(&repo).len();
        killed_backups(
            &cli,
            dir,
            &repo,
            &model,
            &mut rng,
            full_time / 2,
            3,
            4,
            &mut want,
            &mut delays,
        );
        write(&cli, dir, &model, &mut rng, round * 8 * MIB, MIB);
        let (sum, h) = recovering_backup(&cli, &repo, &model);
        recovered.extend(sum["recovered"].as_array().unwrap().clone());
        want.push((sum["point"].as_u64().unwrap() as u32, h));
        // Tracking survived the kills: no full backup needed.
        assert_eq!(sum["kind"], "incremental", "round {round}: {sum}");
        assert!(cli.points(&repo).len() > first);
    }
    assert!(
        !recovered.is_empty(),
        "no backup had anything to clean up after the kills"
    );
    // Every point verifies and restores bit-exact.
    let points = cli.points(&repo);
    assert_eq!(
        points,
        (1..=points.len() as u32).collect::<Vec<_>>(),
        "points are numbered without gaps"
    );
    let v = cli.json(&["verify", s(&repo), "--json"]);
    assert!(v["first_bad"].is_null(), "{v}");
    want.sort();
    want.dedup_by_key(|w| w.0);
    assert_eq!(want.iter().map(|w| w.0).collect::<Vec<_>>(), points);
    for (p, h) in &want {
        check_point(&cli, dir, &repo, *p, h);
    }
    eprintln!(
        "full backup {full_time:?}; {} kills after {:?}; recovered: {recovered:?}",
        delays.len(),
        delays
    );
}

#[test]
fn consolidate_keeps_three_points_that_restore_and_verify() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let cli = Cli {
        home: dir.join("home"),
    };
    let repo = dir.join("repo");
    let model = machine(&cli, dir, 64 * MIB);
    let mut rng = SmallRng::seed_from_u64(5);
    let mut want = Vec::new();
    for round in 0..6 {
        for _ in 0..if round == 0 { 12 } else { 3 } {
            let len = rng.gen_range(1..2048) * 512;
            let off = rng.gen_range(0..(64 * MIB - len) / 512) * 512;
            write(&cli, dir, &model, &mut rng, off, len);
        }
        let sum = cli.json(&["backup", "vm1", "--to", s(&repo), "--json"]);
        assert_eq!(sum["kind"], if round == 0 { "full" } else { "incremental" });
        want.push((sum["point"].as_u64().unwrap() as u32, file_hash(&model)));
    }
    assert_eq!(cli.points(&repo), vec![1, 2, 3, 4, 5, 6]);
    let out = cli.ok(&["backup", "consolidate", s(&repo), "--keep", "3"]);
    assert!(out.contains("removed points [1, 2, 3]"), "{out}");
    assert_eq!(cli.points(&repo), vec![4, 5, 6]);
    for n in 1..=3 {
        assert!(!repo.join(format!("{n:04}")).exists());
    }
    // Point 4 is a full file now, point 5 reads through it.
    let list = cli.json(&["backup", "list", s(&repo), "--json"]);
    assert_eq!(list[0]["kind"], "full");
    assert_eq!(list[0]["disks"][0]["file"], "disk0.vhdx");
    assert!(!repo.join("0004/disk0.avhdx").exists());
    for (p, h) in &want[3..] {
        check_point(&cli, dir, &repo, *p, h);
    }
    let v = cli.json(&["verify", s(&repo), "--json"]);
    assert!(v["first_bad"].is_null(), "{v}");
    assert_eq!(v["points_checked"], serde_json::json!([4, 5, 6]));
    // Nothing more to do with the same --keep.
    let out = cli.ok(&["backup", "consolidate", s(&repo), "--keep", "3"]);
    assert!(out.contains("nothing to consolidate"), "{out}");
    // The next backup is incremental on top of point 6.
    for _ in 0..3 {
        let off = rng.gen_range(0..63) * MIB;
        write(&cli, dir, &model, &mut rng, off, MIB / 2);
    }
    let sum = cli.json(&["backup", "vm1", "--to", s(&repo), "--json"]);
    assert_eq!(sum["kind"], "incremental", "{sum}");
    assert_eq!(sum["point"], 7);
    check_point(&cli, dir, &repo, 7, &file_hash(&model));
    for (p, h) in &want[3..] {
        check_point(&cli, dir, &repo, *p, h);
    }
    let o = cli.run(&["verify", s(&repo)]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stdout));
    // A flipped byte in the new full, where no reader looks (the reserved
    // space after the first header), is still found and named.
    {
        use std::os::unix::fs::FileExt;
        let full = repo.join("0004/disk0.vhdx");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&full)
            .unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, 128 * 1024 - 7).unwrap();
        f.write_all_at(&[b[0] ^ 1], 128 * 1024 - 7).unwrap();
        let o = cli.run(&["verify", s(&repo), "--json"]);
        assert_eq!(o.status.code(), Some(2));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["first_bad"]["file"], s(&full), "{v}");
        assert_eq!(v["first_bad"]["scope"], "file", "{v}");
        assert_eq!(v["first_bad"]["point"], 4, "{v}");
    }
}
