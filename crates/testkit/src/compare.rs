//! Comparing contents (disk images, reads) and saying where they differ:
//! a bare `assert_eq!` of two megabyte vectors prints both in full.

/// The first offset where `a` and `b` differ; if one is a prefix of the
/// other, the shorter one's length.
pub fn first_difference(a: &[u8], b: &[u8]) -> Option<usize> {
    match a.iter().zip(b).position(|(x, y)| x != y) {
        Some(i) => Some(i),
        None if a.len() != b.len() => Some(a.len().min(b.len())),
        None => None,
    }
}

/// Asserts `got == want`, naming the first differing byte.
#[track_caller]
pub fn assert_same(what: &str, got: &[u8], want: &[u8]) {
    assert_eq!(got.len(), want.len(), "{what}: sizes differ");
    if let Some(i) = first_difference(got, want) {
        panic!(
            "{what}: first difference at byte {i} ({i:#x}): {:#04x}, expected {:#04x}",
            got[i], want[i]
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differences() {
        assert_eq!(first_difference(b"abc", b"abc"), None);
        assert_eq!(first_difference(b"abc", b"abd"), Some(2));
        assert_eq!(first_difference(b"ab", b"abc"), Some(2));
        assert_same("same", b"xyz", b"xyz");
        let r = std::panic::catch_unwind(|| assert_same("t", b"xyz", b"xqz"));
        assert!(r.is_err());
    }
}
