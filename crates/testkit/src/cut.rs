//! Whether checkpoints of several disks are one consistent cut.
//!
//! A writer goes round the disks in a fixed order, writing the round's
//! number `r` at the start of each (and waiting for each write to be
//! acknowledged and flushed before the next). Any instant therefore sees,
//! in the writer's order, `r, …, r, r-1, …, r-1`: the disks it reached in
//! round `r` and those it has not yet. So the numbers of a consistent cut,
//! read in that order, never increase and span at most 1. A cut taken
//! disk after disk while the writer runs sees a later disk at a later
//! round: a number that increases, or a span above 1.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Waits until the writer, which counts its finished rounds in `rounds`,
/// has finished `n` more (panics after a minute without).
pub fn wait_rounds(rounds: &AtomicU64, n: u64) {
    let start = rounds.load(Ordering::SeqCst);
    let t = Instant::now();
    while rounds.load(Ordering::SeqCst) < start + n {
        assert!(t.elapsed() < Duration::from_secs(60), "the writer stalled");
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// The sector the writer puts at the start of a disk for round `r`.
pub fn round_sector(r: u64) -> Vec<u8> {
    let mut b = vec![0u8; 512];
    for chunk in b.chunks_mut(8) {
        chunk.copy_from_slice(&r.to_le_bytes());
    }
    b
}

/// The round a disk's first bytes hold.
pub fn round_of(first: &[u8]) -> u64 {
    u64::from_le_bytes(first[..8].try_into().expect("8 bytes"))
}

/// `Ok` if `rounds` (in the writer's order) can be one instant of the
/// writer; else why not.
pub fn check_cut(rounds: &[u64]) -> Result<(), String> {
    if let Some(w) = rounds.windows(2).find(|w| w[1] > w[0]) {
        return Err(format!(
            "rounds {rounds:?} increase ({} then {}): a later disk was caught later",
            w[0], w[1]
        ));
    }
    match (rounds.first(), rounds.last()) {
        (Some(a), Some(z)) if a - z > 1 => Err(format!(
            "rounds {rounds:?} span {}: the disks were caught at different times",
            a - z
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instants_of_the_writer_pass_and_nothing_else() {
        for ok in [&[5, 5, 5, 5][..], &[6, 6, 5, 5], &[6, 5, 5, 5], &[1], &[]] {
            check_cut(ok).unwrap();
        }
        for bad in [&[5, 6, 6, 6][..], &[7, 7, 5, 5], &[5, 5, 5, 6], &[8, 6]] {
            assert!(check_cut(bad).is_err(), "{bad:?}");
        }
        assert_eq!(round_of(&round_sector(77)), 77);
    }
}
