//! Percent-encoding of path segments and query strings.

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use std::borrow::Cow;

/// Bytes left as they are in a path segment: RFC 3986's unreserved ones.
/// Everything else is encoded, `/` (it would split the segment), `%`, `?`,
/// `#` and `:` (RCT IDs hold colons) included.
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// One path segment, encoded. `.` and `..` are encoded whole, or they
/// would walk the path instead of naming something.
pub(crate) fn path_segment(s: &str) -> Cow<'_, str> {
    if s == "." || s == ".." {
        return Cow::Owned("%2E".repeat(s.len()));
    }
    utf8_percent_encode(s, SEGMENT).into()
}

/// A query string (without the `?`), as axum's `Query` decodes it.
pub(crate) fn query<T: serde::Serialize>(q: &T) -> Result<String, String> {
    serde_urlencoded::to_string(q).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segments_keep_only_unreserved_bytes() {
        assert_eq!(path_segment("vm1"), "vm1");
        assert_eq!(path_segment("disk-0_a.b~"), "disk-0_a.b~");
        assert_eq!(path_segment("rct:3f2a:00000001"), "rct%3A3f2a%3A00000001");
        assert_eq!(path_segment("a/b c?d#e%"), "a%2Fb%20c%3Fd%23e%25");
        assert_eq!(path_segment("é"), "%C3%A9");
        assert_eq!(path_segment(".."), "%2E%2E");
        assert_eq!(path_segment("."), "%2E");
        assert_eq!(path_segment("..a"), "..a");
    }
}
