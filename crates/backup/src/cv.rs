//! BLAKE3 chaining values of the 64 KiB pieces of every hash block, kept
//! next to a point's disk file (`<point>/<disk>.cv`) so that the next
//! incremental rehashes a block from the pieces that changed only.
//!
//! ```text
//! manifest hash of a 1 MiB block = blake3(block)
//!                                = root of the BLAKE3 tree over its 16
//!                                  aligned 64 KiB subtrees (cv 0..15)
//! incremental: old cvs of the block ─► check against the previous
//!              manifest hash ─► replace the cvs of the changed pieces
//!              (reading those pieces only) ─► new manifest hash
//! ```
//!
//! The file is an optimisation, never trusted: the chaining values of a
//! block are used only if they hash to the previous manifest's hash of that
//! block; otherwise (no file, a file of an older point, damage) the whole
//! block is read as before. The last block of a disk whose size is not a
//! multiple of the hash block has no entry and is always read whole.

use crate::manifest::HASH_BLOCK;
use blake3::hazmat::{merge_subtrees_non_root, merge_subtrees_root, HasherExt, Mode};

/// Bytes per chaining value: the tracking granularity.
pub const PIECE: u64 = 64 << 10;
/// Pieces per hash block.
pub const PIECES: usize = (HASH_BLOCK / PIECE) as usize;
pub type Cv = blake3::hazmat::ChainingValue;

const MAGIC: &[u8; 8] = b"RPCV\0\0\0\x01";
const HEADER: usize = 24;

/// Name of the file next to a point's disk file.
pub fn file_name(disk: &str) -> String {
    format!("{disk}.cv")
}

/// Entries for a disk of `size` bytes: the pieces of its whole blocks.
pub fn count(size: u64) -> usize {
    (size / HASH_BLOCK) as usize * PIECES
}

/// Chaining value of piece `index` (0..PIECES) of a block, `data` being
/// the whole piece.
pub fn piece(data: &[u8], index: usize) -> Cv {
    debug_assert_eq!(data.len() as u64, PIECE);
    blake3::Hasher::new()
        .set_input_offset(index as u64 * PIECE)
        .update(data)
        .finalize_non_root()
}

/// The chaining values of all pieces of a whole block.
pub fn pieces(block: &[u8], cvs: &mut [Cv]) {
    for (i, (d, cv)) in block.chunks(PIECE as usize).zip(cvs).enumerate() {
        *cv = piece(d, i);
    }
}

/// The BLAKE3 hash of a whole block from its pieces' chaining values
/// (equal to `blake3::hash(block)`).
pub fn block_hash(cvs: &[Cv]) -> blake3::Hash {
    debug_assert_eq!(cvs.len(), PIECES);
    let mut level = [[0u8; 32]; PIECES];
    level.copy_from_slice(cvs);
    let mut n = PIECES;
    while n > 2 {
        for i in 0..n / 2 {
            level[i] = merge_subtrees_non_root(&level[2 * i], &level[2 * i + 1], Mode::Hash);
        }
        n /= 2;
    }
    merge_subtrees_root(&level[0], &level[1], Mode::Hash)
}

/// The chaining values of a block of zeros.
pub fn zero_block() -> Vec<Cv> {
    let z = vec![0u8; PIECE as usize];
    (0..PIECES).map(|i| piece(&z, i)).collect()
}

pub fn encode(size: u64, cvs: &[Cv]) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEADER + cvs.len() * 32);
    b.extend_from_slice(MAGIC);
    b.extend_from_slice(&PIECE.to_le_bytes());
    b.extend_from_slice(&size.to_le_bytes());
    for cv in cvs {
        b.extend_from_slice(cv);
    }
    b
}

/// The chaining values of a disk of `size` bytes, if `b` holds them.
pub fn decode(b: &[u8], size: u64) -> Option<Vec<Cv>> {
    let n = count(size);
    let ok = b.len() == HEADER + n * 32
        && &b[..8] == MAGIC
        && b[8..16] == PIECE.to_le_bytes()
        && b[16..24] == size.to_le_bytes();
    ok.then(|| {
        b[HEADER..]
            .chunks_exact(32)
            .map(|c| c.try_into().unwrap())
            .collect()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    #[test]
    fn pieces_hash_to_the_block_hash() {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(1);
        let mut b = vec![0u8; HASH_BLOCK as usize];
        let mut cvs = [[0u8; 32]; PIECES];
        for round in 0..3 {
            if round > 0 {
                rng.fill(&mut b[..]);
            }
            pieces(&b, &mut cvs);
            assert_eq!(block_hash(&cvs), blake3::hash(&b));
        }
        let zero = vec![0u8; HASH_BLOCK as usize];
        assert_eq!(block_hash(&zero_block()), blake3::hash(&zero));
    }

    #[test]
    fn file_round_trip_and_mismatches() {
        let size = 3 * HASH_BLOCK + 4096;
        let cvs: Vec<Cv> = (0..count(size)).map(|i| [i as u8; 32]).collect();
        let b = encode(size, &cvs);
        assert_eq!(decode(&b, size), Some(cvs));
        assert_eq!(decode(&b, size + HASH_BLOCK), None);
        assert_eq!(decode(&b[..b.len() - 1], size), None);
        let mut bad = b.clone();
        bad[0] ^= 1;
        assert_eq!(decode(&bad, size), None);
    }
}
