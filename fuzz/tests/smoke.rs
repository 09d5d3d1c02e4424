//! A short fuzzing run in CI: a few thousand mutants of every seed must
//! pass every check of `run_one` (no panic, no broken oracle, no runaway
//! file growth or heap use).

use rand::rngs::SmallRng;
use rand::SeedableRng;
use refpoint_fuzz::alloc_track::TrackingAlloc;
use refpoint_fuzz::mutate::Mutator;
use refpoint_fuzz::seeds;
use refpoint_fuzz::{run_one, Coverage};

#[global_allocator]
static ALLOC: TrackingAlloc = TrackingAlloc;

#[test]
fn every_seed_opens_and_passes_unmodified() {
    for s in seeds::generated() {
        seeds::validate(&s).unwrap_or_else(|e| panic!("seed {}: {e}", s.name));
        let mut cov = Coverage::default();
        run_one(&s, &s.files[0].1, &mut cov).unwrap_or_else(|f| panic!("seed {}: {f}", s.name));
        assert_eq!(
            (cov.read_only_opened, cov.writable_opened, cov.check_valid),
            (1, 1, 1),
            "seed {}",
            s.name
        );
    }
}

#[test]
fn mutants_never_misbehave() {
    let seeds = seeds::generated();
    let donors: Vec<&[u8]> = seeds.iter().map(|s| s.bytes()).collect();
    let mut m = Mutator::new(SmallRng::seed_from_u64(0x5eed));
    let mut cov = Coverage::default();
    let mut findings = Vec::new();
    for i in 0..3000 {
        let seed = &seeds[i % seeds.len()];
        let input = std::sync::Arc::new(m.mutate(seed.bytes(), &donors));
        if let Err(f) = run_one(seed, &input, &mut cov) {
            findings.push(format!("iteration {i}, seed {}: {f}", seed.name));
        }
    }
    assert!(
        findings.is_empty(),
        "{} findings:\n{}",
        findings.len(),
        findings.join("\n")
    );
    // The mutants must reach the deep paths, not only fail early.
    assert!(cov.read_only_opened > cov.inputs / 10, "{cov:?}");
    assert!(
        cov.log_replayed > 0 && cov.chain_opened > 0 && cov.check_problems > 0,
        "{cov:?}"
    );
}
