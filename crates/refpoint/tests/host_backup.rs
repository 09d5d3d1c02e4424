//! `refpoint backup --all` as a user runs it: host points of three
//! machines (one with two disks).
//!
//! * through the daemon while a writer keeps writing through NBD, every
//!   host point is one consistent cut of the four disks (and the same check
//!   fails for checkpoints taken one machine after another);
//! * a freeze that fails or times out leaves every machine as it was, and
//!   every machine whose freeze started is thawed;
//! * `kill -9` at random moments: the next run cleans up and is a normal
//!   incremental; every host point restores exactly; verify passes;
//! * list / restore `--point N --machine M` / verify of a host repository,
//!   offline, and the two kinds of repository never mix.

mod common;

use common::{s, Cli, Env};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use testkit::cut::{check_cut, round_of, round_sector, wait_rounds};
use testkit::nbd_client::Disk;

const MIB: u64 = 1 << 20;
/// The disks in the writer's order d1, d2, d3, d4: (machine, disk, file).
/// The machines are parked in name order, vm1 first: the writer's last
/// disk, so a cut may catch it a round behind the others.
const DISKS: [(&str, &str, &str); 4] = [
    ("vm3", "disk0", "d1.vhdx"),
    ("vm2", "disk0", "d2.vhdx"),
    ("vm2", "disk1", "d3.vhdx"),
    ("vm1", "disk0", "d4.vhdx"),
];
const MACHINES: [&str; 3] = ["vm1", "vm2", "vm3"];

/// Creates the disks (`size` bytes each) and machines vm1, vm2 (two disks)
/// and vm3; `hooks(machine)` gives a machine's freeze and thaw commands.
fn three_machines(env: &Env, size: u64, hooks: impl Fn(&str) -> Option<(String, String)>) {
    for (_, _, f) in DISKS {
        let p = env.dir.join(f);
        env.ok(&[
            "vhd",
            "create",
            s(&p),
            "--size",
            &size.to_string(),
            "--block-size",
            "1M",
        ]);
    }
    for m in MACHINES {
        let files: Vec<PathBuf> = DISKS
            .iter()
            .filter(|d| d.0 == m)
            .map(|d| env.dir.join(d.2))
            .collect();
        let mut args = vec!["machine".to_string(), "create".into(), m.into()];
        for f in &files {
            args.extend(["--disk".into(), s(f).to_string()]);
        }
        if let Some((f, t)) = hooks(m) {
            args.extend(["--freeze".into(), f, "--thaw".into(), t]);
        }
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        env.ok(&a);
    }
}

/// Hooks that append `freeze M` / `thaw M` to `<dir>/hooks.log`. vm3's
/// freeze also fails while `<dir>/fail` exists and hangs while `<dir>/hang`
/// does; every freeze takes a while when `<dir>/slow` exists.
fn logging_hooks(dir: &Path) -> impl Fn(&str) -> Option<(String, String)> {
    let d = dir.display().to_string();
    move |m| {
        let mut freeze =
            format!("echo freeze {m} >> '{d}/hooks.log'; if [ -e '{d}/slow' ]; then sleep 0.3; fi");
        if m == "vm3" {
            freeze.push_str(&format!(
                "; if [ -e '{d}/fail' ]; then echo vm3 cannot freeze >&2; exit 5; fi; if [ -e '{d}/hang' ]; then sleep 30; fi"
            ));
        }
        Some((freeze, format!("echo thaw {m} >> '{d}/hooks.log'")))
    }
}

fn hook_log(dir: &Path) -> Vec<String> {
    std::fs::read_to_string(dir.join("hooks.log"))
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

impl Cli {
    /// `backup list DIR --json`.
    fn rows(&self, repo: &Path) -> Vec<Value> {
        let v = self.json(&["backup", "list", s(repo), "--json"]);
        v.as_array().unwrap().clone()
    }

    /// The host points of a host repository.
    fn host_points(&self, repo: &Path) -> Vec<u64> {
        let mut h: Vec<u64> = self
            .rows(repo)
            .iter()
            .map(|r| r["host_point"].as_u64().unwrap())
            .collect();
        h.dedup();
        h
    }

    /// Each machine's checkpoints and reference points (ids), as
    /// `machine show --json` has them.
    fn machine_state(&self) -> Vec<(Vec<u64>, Vec<u64>)> {
        MACHINES
            .iter()
            .map(|m| {
                let v = self.json(&["machine", "show", m, "--json"]);
                let ids = |k: &str| -> Vec<u64> {
                    v[k].as_array()
                        .unwrap()
                        .iter()
                        .map(|c| c["id"].as_u64().unwrap())
                        .collect()
                };
                (ids("checkpoints"), ids("reference_points"))
            })
            .collect()
    }

    /// Restores `machine` of host point `hp` as raw images; returns the
    /// directory holding `<disk>.img`.
    fn restore_machine(&self, repo: &Path, hp: u64, machine: &str, out: &Path) -> PathBuf {
        let dst = out.join(format!("hp{hp}-{machine}"));
        let _ = std::fs::remove_dir_all(&dst);
        std::fs::create_dir_all(&dst).unwrap();
        let disks = DISKS.iter().filter(|d| d.0 == machine).count();
        // One disk restores to a file, several into a directory.
        let to = if disks == 1 {
            dst.join("disk0.img")
        } else {
            dst.clone()
        };
        self.ok(&[
            "restore",
            s(repo),
            "--point",
            &hp.to_string(),
            "--machine",
            machine,
            "--to",
            s(&to),
            "--format",
            "raw",
        ]);
        dst
    }
}

// ---------------------------------------------------------------------------
// 1. One consistent cut while a writer writes
// ---------------------------------------------------------------------------

/// Goes round the four disks over NBD: round r writes r at the start of
/// each (and 64 KiB of noise somewhere), flushing each disk before the
/// next is written. Counts finished rounds in `rounds`.
fn writer(
    env: &Env,
    stop: Arc<AtomicBool>,
    rounds: Arc<AtomicU64>,
    size: u64,
) -> std::thread::JoinHandle<()> {
    let mut disks: Vec<Disk> = DISKS
        .iter()
        .map(|(m, d, _)| {
            Disk::connect(
                &env.nbd_socket(),
                &format!("{m}/{d}"),
                Duration::from_secs(60),
            )
            .unwrap_or_else(|e| panic!("NBD {m}/{d}: {e:?}"))
        })
        .collect();
    std::thread::spawn(move || {
        let mut rng = SmallRng::seed_from_u64(11);
        let mut r = 0;
        while !stop.load(Ordering::SeqCst) {
            r += 1;
            for d in disks.iter_mut() {
                d.write(0, &round_sector(r)).unwrap();
                if rng.gen_ratio(1, 4) {
                    let off = rng.gen_range(1..size / (64 << 10)) * (64 << 10);
                    let noise: Vec<u8> = (0..64 << 10).map(|_| rng.gen()).collect();
                    d.write(off, &noise).unwrap();
                }
                d.flush().unwrap();
            }
            rounds.store(r, Ordering::SeqCst);
        }
        for d in disks {
            d.disconnect();
        }
    })
}

/// The round at the start of a raw image or an NBD export.
fn round_in(img: &Path) -> u64 {
    let b = std::fs::read(img).unwrap();
    round_of(&b[..8])
}

#[test]
fn host_points_through_the_daemon_are_one_cut_while_a_writer_writes() {
    let env = Env::new();
    let size = 16 * MIB;
    three_machines(&env, size, logging_hooks(&env.dir));
    let _d = env.serve(&[]);
    let repo = env.dir.join("repo");
    let stop = Arc::new(AtomicBool::new(false));
    let rounds = Arc::new(AtomicU64::new(0));
    let w = writer(&env, stop.clone(), rounds.clone(), size);

    let mut cuts = Vec::new();
    for i in 0..3 {
        wait_rounds(&rounds, 20);
        let sum = env.json(&["backup", "--all", "--to", s(&repo), "--json"]);
        assert_eq!(sum["host_point"], i + 1, "{sum}");
        let kinds: Vec<&str> = sum["machines"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["kind"].as_str().unwrap())
            .collect();
        let want = if i == 0 { "full" } else { "incremental" };
        assert!(kinds.iter().all(|k| *k == want), "{sum}");
    }
    // Checkpoints one machine after another, the writer going on between
    // them: the check below must refuse them as a cut.
    let mut one_by_one = Vec::new();
    for m in MACHINES {
        let out = env.ok(&[
            "checkpoint",
            "create",
            m,
            "--kind",
            "standard",
            "--consistency",
            "crash",
        ]);
        let id: u64 = out.split_whitespace().nth(1).unwrap().parse().unwrap();
        one_by_one.push((m, id));
        wait_rounds(&rounds, 3);
    }
    stop.store(true, Ordering::SeqCst);
    w.join().unwrap();

    let got: Vec<u64> = DISKS
        .iter()
        .map(|(m, d, _)| {
            let id = one_by_one.iter().find(|c| c.0 == *m).unwrap().1;
            let export = format!("{m}/{d}@checkpoint-{id}");
            let mut c = Disk::connect(&env.nbd_socket(), &export, Duration::from_secs(60)).unwrap();
            let b = c.read(0, 512).unwrap();
            c.disconnect();
            round_of(&b)
        })
        .collect();
    assert!(
        check_cut(&got).is_err(),
        "checkpoints one machine after another passed as a cut: {got:?}"
    );
    for (m, id) in one_by_one.iter().rev() {
        env.ok(&["checkpoint", "delete", m, &id.to_string()]);
    }

    // Every host point is one cut of the four disks.
    let out = env.dir.join("restored");
    for hp in 1..=3u64 {
        for m in MACHINES {
            env.restore_machine(&repo, hp, m, &out);
        }
        // In the writer's order.
        let round: Vec<u64> = DISKS
            .iter()
            .map(|(m, d, _)| round_in(&out.join(format!("hp{hp}-{m}")).join(format!("{d}.img"))))
            .collect();
        check_cut(&round).unwrap_or_else(|e| panic!("host point {hp}: {e}"));
        assert!(round[0] > 0, "host point {hp}: {round:?}");
        cuts.push(round);
    }
    assert!(cuts.windows(2).all(|w| w[1][0] > w[0][0]), "{cuts:?}");
    eprintln!("host point cuts {cuts:?}; one machine after another {got:?}");
    // Every freeze was thawed; the freezes of a host point ran together.
    let log = hook_log(&env.dir);
    assert_eq!(log.len(), 18, "{log:?}");
    for chunk in log.chunks(6) {
        assert!(
            chunk[..3].iter().all(|l| l.starts_with("freeze")),
            "{log:?}"
        );
        assert!(chunk[3..].iter().all(|l| l.starts_with("thaw")), "{log:?}");
    }
    let v = env.json(&["verify", s(&repo), "--json"]);
    assert!(v["first_bad"].is_null(), "{v}");
    assert_eq!(v["points_checked"], serde_json::json!([1, 2, 3]));
}

// ---------------------------------------------------------------------------
// 2. A freeze that fails or times out
// ---------------------------------------------------------------------------

/// The host backup fails, and nothing changed but the hook log, which shows
/// every machine frozen and thawed.
fn refused_and_untouched(env: &Env, repo: &Path, extra: &[&str], want_in_error: &[&str]) {
    let before = (env.machine_state(), env.rows(repo));
    std::fs::remove_file(env.dir.join("hooks.log")).unwrap();
    let mut args = vec!["backup", "--all", "--to", s(repo)];
    args.extend(extra);
    let t = Instant::now();
    let o = env.run(&args);
    let err = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(!o.status.success(), "the host backup succeeded: {err}");
    assert!(t.elapsed() < Duration::from_secs(25), "{:?}", t.elapsed());
    for w in want_in_error {
        assert!(err.contains(w), "{w:?} not in: {err}");
    }
    let mut log = hook_log(&env.dir);
    log.sort();
    assert_eq!(
        log,
        [
            "freeze vm1",
            "freeze vm2",
            "freeze vm3",
            "thaw vm1",
            "thaw vm2",
            "thaw vm3"
        ],
        "{err}"
    );
    assert_eq!((env.machine_state(), env.rows(repo)), before, "{err}");
    assert!(!repo.join("host-points/pending.json").exists());
    for m in MACHINES {
        let points: Vec<_> = std::fs::read_dir(repo.join("machines").join(m))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(points, ["0001"], "{m}: {points:?}");
    }
}

#[test]
fn a_failing_or_hanging_freeze_changes_nothing_and_thaws_every_machine() {
    let env = Env::new();
    three_machines(&env, 8 * MIB, logging_hooks(&env.dir));
    let repo = env.dir.join("repo");
    env.ok(&["backup", "--all", "--to", s(&repo)]);
    // Offline: vm3's freeze fails.
    std::fs::write(env.dir.join("fail"), b"").unwrap();
    refused_and_untouched(&env, &repo, &[], &["vm3", "freeze", "exit code 5"]);
    std::fs::remove_file(env.dir.join("fail")).unwrap();
    // Offline: vm3's freeze hangs past --freeze-timeout.
    std::fs::write(env.dir.join("hang"), b"").unwrap();
    refused_and_untouched(
        &env,
        &repo,
        &["--freeze-timeout", "1"],
        &["vm3", "freeze", "within 1 s", "--freeze-timeout"],
    );
    // Through the daemon, both again.
    let _d = env.serve(&[]);
    refused_and_untouched(
        &env,
        &repo,
        &["--freeze-timeout", "1"],
        &["vm3", "within 1 s"],
    );
    std::fs::remove_file(env.dir.join("hang")).unwrap();
    std::fs::write(env.dir.join("fail"), b"").unwrap();
    refused_and_untouched(&env, &repo, &[], &["vm3", "exit code 5"]);
    std::fs::remove_file(env.dir.join("fail")).unwrap();
    // The next run is a normal incremental.
    let sum = env.json(&["backup", "--all", "--to", s(&repo), "--json"]);
    assert_eq!(sum["host_point"], 2);
    for m in sum["machines"].as_array().unwrap() {
        assert_eq!(m["kind"], "incremental", "{sum}");
        assert_eq!(m["point"], 2, "{sum}");
    }
}

// ---------------------------------------------------------------------------
// 3. kill -9
// ---------------------------------------------------------------------------

/// A fingerprint of a file: BLAKE3 of each 8 MiB.
fn file_hash(p: &Path) -> String {
    let b = std::fs::read(p).unwrap();
    b.chunks(8 << 20)
        .map(backup::export::hash)
        .collect::<Vec<_>>()
        .join(",")
}

/// The disks' content as written: one model file per disk.
struct Models {
    files: Vec<PathBuf>,
}

impl Models {
    fn new(dir: &Path, size: u64) -> Models {
        let files = DISKS
            .iter()
            .map(|(m, d, _)| {
                let p = dir.join(format!("model-{m}-{d}.img"));
                std::fs::File::create(&p).unwrap().set_len(size).unwrap();
                p
            })
            .collect();
        Models { files }
    }

    /// `len` random bytes at a random offset of disk `i`, through `refpoint
    /// disk write` and into its model.
    fn write(&self, cli: &Cli, dir: &Path, rng: &mut SmallRng, i: usize, len: u64, size: u64) {
        use std::os::unix::fs::FileExt;
        let off = rng.gen_range(0..(size - len) / 512) * 512;
        let mut data = vec![0u8; len as usize];
        rng.fill(&mut data[..]);
        let chunk = dir.join("chunk.bin");
        std::fs::write(&chunk, &data).unwrap();
        let (m, d, _) = DISKS[i];
        cli.ok(&[
            "disk",
            "write",
            &format!("{m}/{d}"),
            "--offset",
            &off.to_string(),
            "--from",
            s(&chunk),
        ]);
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.files[i])
            .unwrap();
        f.write_all_at(&data, off).unwrap();
    }

    fn hashes(&self) -> Vec<String> {
        self.files.iter().map(|f| file_hash(f)).collect()
    }
}

/// Restores every machine of host point `hp` and compares with `want`
/// (the model hashes, in DISKS order).
fn check_host_point(cli: &Cli, repo: &Path, out: &Path, hp: u64, want: &[String]) {
    for m in MACHINES {
        let dst = cli.restore_machine(repo, hp, m, out);
        for (i, (_, d, _)) in DISKS.iter().enumerate().filter(|(_, d)| d.0 == m) {
            let got = file_hash(&dst.join(format!("{d}.img")));
            assert!(got == want[i], "host point {hp}: {m}/{d} restores wrong");
        }
        std::fs::remove_dir_all(&dst).unwrap();
    }
}

/// Every freeze in the log is followed, later, by a thaw of its machine.
fn every_freeze_thawed(log: &[String]) {
    for m in MACHINES {
        let mut frozen = false;
        for l in log {
            if *l == format!("freeze {m}") {
                frozen = true;
            } else if *l == format!("thaw {m}") {
                frozen = false;
            }
        }
        assert!(!frozen, "{m} was left frozen: {log:?}");
    }
}

#[test]
fn host_backups_killed_with_sigkill_recover_and_restore_exactly() {
    let seed = std::env::var("REFPOINT_KILL_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| rand::random::<u64>() % 1_000_000);
    eprintln!("seed {seed} (REFPOINT_KILL_SEED={seed} replays the writes and delays)");
    let mut rng = SmallRng::seed_from_u64(seed);
    let env = Env::new();
    let size = 64 * MIB;
    three_machines(&env, size, logging_hooks(&env.dir));
    let models = Models::new(&env.dir, size);
    let repo = env.dir.join("repo");
    let out = env.dir.join("restored");
    // Slow freezes: some kills land while the machines are frozen.
    std::fs::write(env.dir.join("slow"), b"").unwrap();
    for i in 0..DISKS.len() {
        for _ in 0..3 {
            models.write(&env, &env.dir, &mut rng, i, 8 * MIB, size);
        }
    }
    // How long an uninterrupted first host backup takes sets the delays.
    let t = Instant::now();
    let scratch = env.dir.join("scratch");
    env.ok(&["backup", "--all", "--to", s(&scratch)]);
    let full_time = t.elapsed();
    std::fs::remove_dir_all(&scratch).unwrap();

    let mut want: Vec<(u64, Vec<String>)> = Vec::new();
    let mut recovered: Vec<Value> = Vec::new();
    let mut kills = 0;
    let mut max_delay = full_time;
    for round in 0..4 {
        // Kill runs until three died mid-run.
        let mut killed_here = 0;
        for _ in 0..15 {
            if killed_here == 3 {
                break;
            }
            for _ in 0..2 {
                let i = rng.gen_range(0..DISKS.len());
                models.write(&env, &env.dir, &mut rng, i, MIB, size);
            }
            let before = (
                env.machine_state(),
                env.host_points_or_none(&repo),
                env.rows_or_none(&repo),
            );
            let delay = max_delay.mul_f64(rng.gen_range(0.05..1.0));
            if env.killed_after(&["backup", "--all", "--to", s(&repo), "--json"], delay) {
                killed_here += 1;
                kills += 1;
                max_delay = max_delay.mul_f64(1.1);
            } else {
                max_delay = max_delay.mul_f64(0.7);
            }
            let after = env.host_points_or_none(&repo);
            let new: Vec<u64> = after
                .iter()
                .filter(|h| !before.1.contains(h))
                .copied()
                .collect();
            assert!(new.len() <= 1, "{new:?}");
            // A reference point appears only for a checkpoint a recorded
            // host point names (this run's, or an earlier one whose
            // conversion was cut short and is finished now).
            let recorded = recorded_checkpoints(&repo);
            for (m, (now, was)) in MACHINES
                .iter()
                .zip(env.machine_state().iter().zip(&before.0))
            {
                for r in now.1.iter().filter(|r| !was.1.contains(r)) {
                    assert!(
                        recorded.contains(&(m.to_string(), *r)),
                        "{m}: reference point {r} without a host point (delay {delay:?}, recorded {recorded:?})"
                    );
                }
            }
            if new.is_empty() {
                // Nothing recorded: no new machine point either.
                assert_eq!(env.rows_or_none(&repo), before.2, "delay {delay:?}");
            } else {
                // A host point the killed run recorded holds the models as
                // they are (nothing was written since it started).
                want.push((new[0], models.hashes()));
            }
        }
        assert_eq!(killed_here, 3, "too few runs could be killed mid-run");
        let existed = !env.host_points_or_none(&repo).is_empty();
        let sum = env.json(&["backup", "--all", "--to", s(&repo), "--json"]);
        recovered.extend(sum["recovered"].as_array().unwrap().iter().cloned());
        want.push((sum["host_point"].as_u64().unwrap(), models.hashes()));
        if existed {
            // A host point existed before: a normal incremental.
            for m in sum["machines"].as_array().unwrap() {
                assert_eq!(m["kind"], "incremental", "round {round}: {sum}");
            }
        }
        let state = env.machine_state();
        for (m, (cps, refs)) in MACHINES.iter().zip(&state) {
            assert!(cps.is_empty(), "{m}: checkpoints left {cps:?}");
            assert_eq!(refs.len(), 1, "{m}: {refs:?}");
        }
        every_freeze_thawed(&hook_log(&env.dir));
        // Only the points of recorded host points are left.
        let named = env.rows(&repo);
        for m in MACHINES {
            let mut have: Vec<u64> = std::fs::read_dir(repo.join("machines").join(m))
                .unwrap()
                .map(|e| {
                    e.unwrap()
                        .file_name()
                        .into_string()
                        .unwrap()
                        .parse()
                        .unwrap()
                })
                .collect();
            have.sort();
            let want: Vec<u64> = named
                .iter()
                .filter(|r| r["machine"] == m)
                .map(|r| r["point"].as_u64().unwrap())
                .collect();
            assert_eq!(have, want, "{m}");
        }
        assert!(!repo.join("host-points/pending.json").exists());
    }
    let log = hook_log(&env.dir);
    let (freezes, thaws) = (
        log.iter().filter(|l| l.starts_with("freeze")).count(),
        log.iter().filter(|l| l.starts_with("thaw")).count(),
    );
    eprintln!("{kills} kills; {freezes} freezes, {thaws} thaws; recovered: {recovered:?}");
    assert!(
        !recovered.is_empty(),
        "no run had anything to clean up after the kills"
    );
    let hps = env.host_points(&repo);
    assert_eq!(
        hps,
        (1..=hps.len() as u64).collect::<Vec<_>>(),
        "host points have gaps"
    );
    want.sort();
    want.dedup_by_key(|w| w.0);
    assert_eq!(want.iter().map(|w| w.0).collect::<Vec<_>>(), hps);
    let v = env.json(&["verify", s(&repo), "--json"]);
    assert!(v["first_bad"].is_null(), "{v}");
    for (hp, hashes) in &want {
        check_host_point(&env, &repo, &out, *hp, hashes);
    }
}

/// (machine, checkpoint) of every machine of every host point record.
fn recorded_checkpoints(repo: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let Ok(dir) = std::fs::read_dir(repo.join("host-points")) else {
        return out;
    };
    for e in dir {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "json") && p.file_stem().unwrap() != "pending" {
            let v: Value = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
            for m in v["machines"].as_array().unwrap() {
                out.push((
                    m["machine"].as_str().unwrap().to_string(),
                    m["checkpoint"].as_u64().unwrap(),
                ));
            }
        }
    }
    out
}

impl Cli {
    /// `backup list --json`, or nothing while the repository does not exist.
    fn rows_or_none(&self, repo: &Path) -> Vec<Value> {
        if repo.join("host.json").exists() {
            self.rows(repo)
        } else {
            vec![]
        }
    }

    /// The host points, or none while the repository does not exist.
    fn host_points_or_none(&self, repo: &Path) -> Vec<u64> {
        if repo.join("host.json").exists() {
            self.host_points(repo)
        } else {
            vec![]
        }
    }
}

// ---------------------------------------------------------------------------
// 4, 5. Offline: list, restore, verify; the kinds of repository
// ---------------------------------------------------------------------------

#[test]
fn offline_host_points_list_restore_and_verify() {
    let env = Env::new();
    let size = 8 * MIB;
    three_machines(&env, size, |_| None);
    let models = Models::new(&env.dir, size);
    let mut rng = SmallRng::seed_from_u64(3);
    let repo = env.dir.join("repo");
    let out = env.dir.join("restored");
    let mut want = Vec::new();
    for hp in 1..=2u64 {
        for i in 0..DISKS.len() {
            models.write(&env, &env.dir, &mut rng, i, MIB / 2, size);
        }
        let sum = env.json(&["backup", "--all", "--to", s(&repo), "--json"]);
        assert_eq!(sum["host_point"], hp);
        for m in sum["machines"].as_array().unwrap() {
            let kind = if hp == 1 { "full" } else { "incremental" };
            assert_eq!(m["kind"], kind, "{sum}");
            assert!(m["repository"]
                .as_str()
                .unwrap()
                .ends_with(&format!("machines/{}", m["machine"].as_str().unwrap())));
        }
        want.push(models.hashes());
    }
    // A host point of two machines only; vm3's point stays at 2.
    models.write(&env, &env.dir, &mut rng, 0, MIB / 2, size);
    let sum = env.json(&[
        "backup",
        "--machine",
        "vm2",
        "--machine",
        "vm1",
        "--to",
        s(&repo),
        "--json",
    ]);
    assert_eq!(sum["host_point"], 3);
    assert_eq!(sum["machines"].as_array().unwrap().len(), 2);
    want.push(models.hashes());

    // backup list: a row per machine of each host point.
    let rows = env.rows(&repo);
    let keys: Vec<(u64, &str, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["host_point"].as_u64().unwrap(),
                r["machine"].as_str().unwrap(),
                r["point"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        keys,
        [
            (1, "vm1", 1),
            (1, "vm2", 1),
            (1, "vm3", 1),
            (2, "vm1", 2),
            (2, "vm2", 2),
            (2, "vm3", 2),
            (3, "vm1", 3),
            (3, "vm2", 3),
        ]
    );
    assert_eq!(rows[1]["disks"].as_array().unwrap().len(), 2);
    let text = env.ok(&["backup", "list", s(&repo)]);
    assert!(
        text.contains("host point 3") && text.contains("2 machine(s)"),
        "{text}"
    );

    // restore --point N --machine M: every machine of every host point.
    for (i, hashes) in want.iter().enumerate() {
        let hp = i as u64 + 1;
        if hp == 3 {
            // vm3 is not in host point 3.
            let o = env.run(&[
                "restore",
                s(&repo),
                "--point",
                "3",
                "--machine",
                "vm3",
                "--to",
                s(&out),
            ]);
            assert!(!o.status.success());
            let e = String::from_utf8_lossy(&o.stderr);
            assert!(e.contains("no machine \"vm3\""), "{e}");
            for m in ["vm1", "vm2"] {
                let dst = env.restore_machine(&repo, hp, m, &out);
                for (j, (_, d, _)) in DISKS.iter().enumerate().filter(|(_, d)| d.0 == m) {
                    assert!(file_hash(&dst.join(format!("{d}.img"))) == hashes[j]);
                }
            }
        } else {
            check_host_point(&env, &repo, &out, hp, hashes);
        }
    }
    // Without --machine: refused, naming the machines.
    let o = env.run(&["restore", s(&repo), "--to", s(&out)]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && e.contains("--machine"), "{e}");

    // verify: all of it, one host point, and a flipped byte in one file.
    let v = env.json(&["verify", s(&repo), "--json"]);
    assert!(v["first_bad"].is_null(), "{v}");
    assert_eq!(v["points_checked"], serde_json::json!([1, 2, 3]));
    assert_eq!(
        v["machines"][2]["points_checked"],
        serde_json::json!([1, 2])
    );
    let v = env.json(&["verify", s(&repo), "--point", "2", "--json"]);
    assert!(v["first_bad"].is_null(), "{v}");
    assert_eq!(v["machines"][0]["points_checked"], serde_json::json!([2]));
    {
        use std::os::unix::fs::FileExt;
        let file = repo.join("machines/vm2/0002/disk1.avhdx");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(&file)
            .unwrap();
        let mut b = [0u8; 1];
        f.read_exact_at(&mut b, 70_000).unwrap();
        f.write_all_at(&[b[0] ^ 0x40], 70_000).unwrap();
        let o = env.run(&["verify", s(&repo), "--json"]);
        assert_eq!(o.status.code(), Some(2));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["first_bad"]["machine"], "vm2", "{v}");
        assert_eq!(v["first_bad"]["point"], 2, "{v}");
        assert_eq!(v["first_bad"]["file"], s(&file), "{v}");
        let o = env.run(&["verify", s(&repo)]);
        assert_eq!(o.status.code(), Some(2));
        let text = String::from_utf8_lossy(&o.stdout);
        assert!(text.contains("BAD: vm2 point 2"), "{text}");
        f.write_all_at(&b, 70_000).unwrap();
    }

    // The two kinds of repository never mix.
    let o = env.run(&["backup", "vm1", "--to", s(&repo)]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("is a host repository"),
        "{e}"
    );
    let plain = env.dir.join("plain");
    env.ok(&["backup", "vm1", "--to", s(&plain)]);
    let o = env.run(&["backup", "--all", "--to", s(&plain)]);
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && e.contains("single-machine backups"),
        "{e}"
    );
    // Nothing the refused runs did shows: the host repository still
    // verifies and its next host point is incremental, but for vm1: its
    // backup into the plain repository took over its reference point (a
    // machine keeps one), so it goes full, saying why.
    let sum = env.json(&["backup", "--all", "--to", s(&repo), "--json"]);
    assert_eq!(sum["host_point"], 4);
    for m in sum["machines"].as_array().unwrap() {
        if m["machine"] == "vm1" {
            assert_eq!(m["kind"], "full", "{sum}");
            let why = m["disks"][0]["full_reason"].as_str().unwrap();
            assert!(why.contains("no reference point"), "{why}");
        } else {
            assert_eq!(m["kind"], "incremental", "{sum}");
        }
    }
    let v = env.json(&["verify", s(&repo), "--json"]);
    assert!(v["first_bad"].is_null(), "{v}");

    // consolidate keeps the newest host points.
    let o = env.ok(&["backup", "consolidate", s(&repo), "--keep", "2"]);
    assert!(o.contains("removed host points [1, 2]"), "{o}");
    assert_eq!(env.host_points(&repo), [3, 4]);
    check_host_point(&env, &repo, &out, 4, &models.hashes());
    for m in ["vm1", "vm2"] {
        let dst = env.restore_machine(&repo, 3, m, &out);
        for (j, (_, d, _)) in DISKS.iter().enumerate().filter(|(_, d)| d.0 == m) {
            assert!(file_hash(&dst.join(format!("{d}.img"))) == want[2][j]);
        }
    }
    assert!(!repo.join("machines/vm3/0002").exists());
    let v = env.json(&["verify", s(&repo), "--json"]);
    assert!(v["first_bad"].is_null(), "{v}");
}
