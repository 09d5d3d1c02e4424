//! Deterministic byte patterns for data a test writes and expects back.
//!
//! The same `(len, seed)` always gives the same bytes and different seeds
//! unrelated ones; no byte is zero, so written data is never mistaken for
//! a hole or for space nothing was written to (and a client that sends
//! runs of zeros as zero requests sends a pattern as data); and the bytes
//! do not repeat with any short period, so data read from the wrong
//! offset, or another write's data, does not match.

/// `len` bytes of the pattern `seed`.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut b = vec![0u8; len];
    fill(&mut b, seed);
    b
}

/// Fills `buf` with the start of the pattern `seed`.
pub fn fill(buf: &mut [u8], seed: u64) {
    // SplitMix64 (Steele, Lea, Flood 2014): a counter through a bijective
    // mixer, so each 8 bytes depend on the seed and their position only.
    let mut state = seed ^ 0x5851_f42d_4c95_7f2d;
    for chunk in buf.chunks_mut(8) {
        state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        for (b, v) in chunk.iter_mut().zip(z.to_le_bytes()) {
            *b = if v == 0 { 0x5a } else { v };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_nonzero_and_distinct() {
        let a = bytes(1 << 16, 1);
        assert_eq!(a, bytes(1 << 16, 1));
        assert!(a.iter().all(|&b| b != 0));
        assert_ne!(a, bytes(1 << 16, 2));
        // A prefix of a longer pattern is the shorter pattern.
        assert_eq!(&bytes(1000, 7)[..], &bytes(3000, 7)[..1000]);
        // No short period: shifted by 1..=4096 bytes, it differs.
        for shift in 1..=4096 {
            assert_ne!(a[..4096], a[shift..shift + 4096], "shift {shift}");
        }
    }
}
