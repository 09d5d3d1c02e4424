//! Byte ranges as `(offset, length)` pairs, the form change queries
//! (`rct changes`, block status maps) answer in.

/// Whether the union of `ranges` (in any order, overlapping or not)
/// covers `[offset, offset + len)`.
pub fn covered(ranges: &[(u64, u64)], offset: u64, len: u64) -> bool {
    let mut r = ranges.to_vec();
    r.sort();
    let (mut pos, end) = (offset, offset + len);
    for (o, l) in r {
        if o <= pos && o + l > pos {
            pos = o + l;
        }
        if pos >= end {
            return true;
        }
    }
    pos >= end
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage() {
        let r = [(100, 50), (0, 60), (50, 60)];
        assert!(covered(&r, 0, 150));
        assert!(covered(&r, 10, 0));
        assert!(!covered(&r, 0, 151));
        assert!(!covered(&[(0, 10), (11, 10)], 0, 20));
    }
}
