//! Crash safety on a real kernel file system. A Linux guest under
//! qemu-system-x86_64 (TCG) runs refpoint on ext4, on a virtio disk that is
//! a host file opened with cache=none, while the host cuts the power
//! (SIGKILL to qemu) at random moments. The next boot mounts the file
//! system (the guest's kernel replays the journal) and checks: every
//! acknowledged write reads back (bytes of the one in flight may be old or
//! new), every VHDX passes `vhd check`, every acknowledged file exists,
//! acknowledged backup points verify and restore, and `rct changes` since
//! every retained RCT ID covers every byte written since it, or refuses
//! with exit 3 (counted by reason). Several cuts accumulate on each file
//! system. The guest and the host's model live in tests/guest/. Not reached
//! from the CLI: tracking-file compaction (the journal compacts past 16 MiB,
//! and a command appends about 70 bytes).
//!
//! CI runs 10 cuts. The long campaign:
//!
//! ```sh
//! REFPOINT_POWER_CUTS=200 cargo nextest run -p refpoint --test power_cut --no-capture
//! ```
//!
//! Environment: `REFPOINT_POWER_CUT_SEED` replays a run (each run prints its
//! seed), `REFPOINT_POWER_CUTS` (default 10), `REFPOINT_POWER_CUT_EPOCH`
//! (cuts per fresh file system, default 5), `REFPOINT_POWER_CUT_MAX_WORK`
//! (seconds of WORK before the cut at most, default 20),
//! `REFPOINT_POWER_CUT_STRICT=1` (acknowledged tracking state that a cut
//! took away fails the test too, not only typed refusals), `REFPOINT_BIN`
//! (test another refpoint binary), `REFPOINT_GUEST_CACHE` (prepare.sh's
//! cache, default /var/cache/refpoint-guest). Console logs stay in
//! target/tmp/power_cut-SEED/.

mod guest;

use guest::check::{self, Failure, Stats};
use guest::model::{Model, Op, MAX_DISKS, PATTERNS, PATTERN_SIZE, PLAN_MIB, SLOT_MIB};
use guest::{read_out, Boot, Cpio, Guest, Kit};
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

fn env_num(name: &str, default: f64) -> f64 {
    std::env::var(name).ok().map_or(default, |v| {
        v.parse()
            .unwrap_or_else(|_| panic!("{name}={v}: not a number"))
    })
}

struct Run {
    kit: Kit,
    dir: PathBuf,
    base: Vec<u8>,
    data: PathBuf,
    out: PathBuf,
    cache: &'static str,
    max_work: f64,
    rng: SmallRng,
    /// The last operation number handed out.
    seq: u64,
}

#[derive(Default)]
struct Summary {
    cuts: u64,
    boots: u64,
    file_systems: u64,
    acked: BTreeMap<&'static str, u64>,
    inflight: BTreeMap<&'static str, u64>,
    stats: Stats,
    failures: Vec<Failure>,
}

impl Summary {
    fn fail(&mut self, round: u64, kind: &'static str, detail: String) {
        eprintln!("power_cut: round {round}: FAILURE [{kind}] {detail}");
        self.failures.push(Failure {
            round,
            kind,
            detail,
        });
    }
}

fn new_fs(data: &Path) {
    let _ = fs::remove_file(data);
    fs::File::create(data).unwrap().set_len(256 << 20).unwrap();
    let mkfs = ["/usr/sbin/mkfs.ext4", "/sbin/mkfs.ext4"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("mkfs.ext4");
    let ok = Command::new(mkfs)
        .args(["-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0"])
        .arg(data)
        .status()
        .expect("mkfs.ext4");
    assert!(ok.success(), "mkfs.ext4 failed");
}

fn counts<K: std::fmt::Display>(m: &BTreeMap<K, u64>) -> String {
    let v: Vec<String> = m.iter().map(|(k, n)| format!("{k} {n}")).collect();
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

/// One boot: CHECK what the last cut left (unless the file system is new),
/// then WORK until the power is cut, or shut down cleanly. Returns false
/// when the file system cannot be used any more.
fn boot(
    run: &mut Run,
    m: &mut Model,
    round: u64,
    check: bool,
    work: bool,
    sum: &mut Summary,
) -> bool {
    let ok = boot_once(run, m, round, check, work, sum);
    for line in guest::kernel_trouble(&console_path(run, round)) {
        sum.fail(round, "kernel error", line);
    }
    ok
}

fn console_path(run: &Run, round: u64) -> PathBuf {
    run.dir.join(format!("round-{round:03}.log"))
}

fn boot_once(
    run: &mut Run,
    m: &mut Model,
    round: u64,
    check: bool,
    work: bool,
    sum: &mut Summary,
) -> bool {
    let mut c = Cpio::default();
    let flags = format!(
        "ROUND={round}\nCHECK={}\nWORK={}\nSLOT_MIB={SLOT_MIB}\nPLAN_MIB={PLAN_MIB}\n",
        check as u8, work as u8
    );
    c.file("rp/round", 0o644, flags.as_bytes());
    c.file("rp/check", 0o644, check::script(m).as_bytes());
    let initrd = run.dir.join("initrd");
    fs::write(&initrd, [run.base.as_slice(), &c.finish()].concat()).unwrap();
    let _ = fs::remove_file(&run.out);
    fs::File::create(&run.out)
        .unwrap()
        .set_len((((MAX_DISKS + 2) * SLOT_MIB) as u64) << 20)
        .unwrap();
    let console = console_path(run, round);
    let b = Boot {
        kit: &run.kit,
        initrd: &initrd,
        data: &run.data,
        out: &run.out,
        console: &console,
        cache: run.cache,
        round,
    };
    let started = Instant::now();
    let mut g = Guest::boot(&b);
    sum.boots += 1;
    let mut seen = Vec::new();
    let guest_failed = |sum: &mut Summary, what: &str, e: String| {
        sum.fail(
            round,
            "guest",
            format!("{what}: {e} (console: {})", console.display()),
        );
        false
    };
    if let Err(e) = g.wait_for(Duration::from_secs(120), &mut seen, |l| {
        l.starts_with("BOOT")
    }) {
        return guest_failed(sum, "boot", e);
    }
    if check {
        match g.wait_for(Duration::from_secs(900), &mut seen, |l| {
            l.starts_with("CHECK-DONE")
        }) {
            Ok(l) => {
                let len: usize = l.trim_start_matches("CHECK-DONE len=").parse().unwrap();
                let text = String::from_utf8_lossy(&read_out(&run.out, 0, len)).into_owned();
                fs::write(console.with_extension("check.txt"), &text).unwrap();
                for f in check::evaluate(m, &text, &run.out, round, &mut sum.stats) {
                    sum.fail(f.round, f.kind, f.detail);
                }
            }
            Err(e) => return guest_failed(sum, "check (mount and journal replay included)", e),
        }
    }
    let checked = started.elapsed().as_secs_f64();
    if !work {
        if let Err(e) = g.wait_for(Duration::from_secs(120), &mut seen, |l| l == "HALT") {
            return guest_failed(sum, "clean shutdown", e);
        }
        eprintln!("power_cut: round {round}: final check of this file system in {checked:.1} s");
        return true;
    }
    // The plan follows what the check found (files that exist, IDs kept).
    if let Err(e) = g.wait_for(Duration::from_secs(60), &mut seen, |l| l == "WAIT-PLAN") {
        return guest_failed(sum, "work start", e);
    }
    let plan = m.plan(&mut run.rng, &mut run.seq, 200);
    let mut script = String::new();
    for (name, ids) in check::id_files(m) {
        script += &format!("printf '%s' '{ids}' > /tmp/ids/{name}\n");
    }
    script += "say WORK-START\n";
    for (s, op) in &plan {
        script += &format!("op_{}\n", op.line(*s, &m.disks));
    }
    guest::write_plan(&run.out, (PLAN_MIB as u64) << 20, round, &script);
    if let Err(e) = g.wait_for(Duration::from_secs(60), &mut seen, |l| l == "WORK-START") {
        return guest_failed(sum, "work start", e);
    }
    let delay = run.rng.gen_range(0.0..run.max_work);
    let early = g.wait_for(Duration::from_secs_f64(delay), &mut seen, |l| {
        l == "WORK-STOP" || l == "WORK-END"
    });
    if let Ok(l) = early {
        *sum.stats.notes.entry(format!("cut after {l}")).or_default() += 1;
    }
    seen.extend(g.cut());
    drop(g);
    let plan: BTreeMap<u64, Op> = plan.into_iter().collect();
    let applied = m.apply(&plan, &seen, round);
    for f in &applied.failed {
        sum.fail(round, "operation failed", f.clone());
    }
    for k in &applied.refused {
        *sum.stats
            .refusals
            .entry(format!("{k} (in the work)"))
            .or_default() += 1;
    }
    sum.cuts += 1;
    for k in &applied.acked {
        *sum.acked.entry(k).or_default() += 1;
    }
    let inflight = applied.inflight.unwrap_or("between operations");
    *sum.inflight.entry(inflight).or_default() += 1;
    eprintln!(
        "power_cut: round {round}: cut {} after {delay:.1} s of work ({} acknowledged, in flight: {inflight}); boot {:.1} s, total {:.1} s",
        sum.cuts,
        applied.acked.len(),
        checked,
        started.elapsed().as_secs_f64()
    );
    true
}

#[test]
fn power_cut() {
    let seed = std::env::var("REFPOINT_POWER_CUT_SEED")
        .map(|s| s.parse::<u64>().expect("REFPOINT_POWER_CUT_SEED: a number"))
        .unwrap_or_else(|_| rand::thread_rng().next_u64());
    let cuts = env_num("REFPOINT_POWER_CUTS", 10.0) as u64;
    let epoch = (env_num("REFPOINT_POWER_CUT_EPOCH", 5.0) as u64).max(1);
    let strict = std::env::var("REFPOINT_POWER_CUT_STRICT").is_ok_and(|v| v == "1");
    eprintln!("power_cut: seed {seed} (replay: REFPOINT_POWER_CUT_SEED={seed}), {cuts} cuts, {epoch} per file system");
    let kit = Kit::prepare();
    let bin = std::env::var_os("REFPOINT_BIN")
        .map_or(PathBuf::from(env!("CARGO_BIN_EXE_refpoint")), PathBuf::from);
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("power_cut-{seed}"));
    let _ = fs::remove_dir_all(&dir);
    fs::create_dir_all(&dir).unwrap();
    let mut rng = SmallRng::seed_from_u64(seed);
    let patterns: Vec<Vec<u8>> = (0..PATTERNS)
        .map(|_| {
            let mut p = vec![0u8; PATTERN_SIZE];
            rng.fill_bytes(&mut p);
            p
        })
        .collect();
    let base = guest::base_initramfs(&kit, &bin, &patterns, &dir);
    let data = dir.join("data.img");
    new_fs(&data);
    let cache = guest::cache_mode(&data);
    let max_work = env_num("REFPOINT_POWER_CUT_MAX_WORK", 20.0);
    let mut run = Run {
        kit,
        out: dir.join("out.img"),
        dir,
        base,
        data,
        cache,
        max_work,
        rng,
        seq: 0,
    };
    let started = Instant::now();
    let (mut sum, mut round) = (Summary::default(), 0);
    while sum.cuts < cuts {
        if sum.file_systems > 0 {
            new_fs(&run.data);
        }
        sum.file_systems += 1;
        let mut m = Model::new(patterns.clone());
        for k in 0..=epoch {
            let work = k < epoch && sum.cuts < cuts;
            round += 1;
            if !boot(&mut run, &mut m, round, k > 0, work, &mut sum) || !work {
                break;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64();
    let st = &sum.stats;
    let acked: u64 = sum.acked.values().sum();
    let refused: u64 = st.refusals.values().sum();
    let ratio = if st.required > 0 {
        st.reported as f64 / st.required as f64
    } else {
        f64::NAN
    };
    eprintln!(
        "power_cut summary (seed {seed}, cache={}, {}):",
        run.cache,
        bin.display()
    );
    eprintln!(
        "  {} cuts, {} boots, {} file systems in {secs:.0} s ({:.1} s per cut)",
        sum.cuts,
        sum.boots,
        sum.file_systems,
        secs / sum.cuts.max(1) as f64
    );
    eprintln!(
        "  operations acknowledged: {acked} ({})",
        counts(&sum.acked)
    );
    eprintln!("  in flight at the cuts: {}", counts(&sum.inflight));
    eprintln!("  checks passed: {}", st.passed);
    eprintln!(
        "  typed refusals (rct changes exit 3): {refused} ({})",
        counts(&st.refusals)
    );
    eprintln!(
        "  acknowledged tracking state lost to a cut: {}",
        counts(&st.lost)
    );
    eprintln!("  notes: {}", counts(&st.notes));
    eprintln!(
        "  over-reporting: {ratio:.2} ({} bytes reported changed, {} written since the IDs)",
        st.reported, st.required
    );
    eprintln!("  failures: {}", sum.failures.len());
    let mut failures: Vec<String> = sum
        .failures
        .iter()
        .map(|f| format!("round {} [{}] {}", f.round, f.kind, f.detail))
        .collect();
    if strict {
        failures.extend(st.lost.iter().map(|(k, n)| format!("[lost] {k} ×{n}")));
    }
    if failures.is_empty() {
        let _ = fs::remove_file(&run.data);
        let _ = fs::remove_file(&run.out);
        let _ = fs::remove_file(run.dir.join("initrd"));
    }
    assert!(
        failures.is_empty(),
        "power_cut failed (seed {seed}, replay with REFPOINT_POWER_CUT_SEED={seed}; logs in {}):\n{}",
        run.dir.display(),
        failures.join("\n")
    );
}
