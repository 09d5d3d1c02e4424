//! Option payloads of the handshake phase (§ "Option types"): parsed from
//! untrusted bytes into typed requests, never panicking; and encoded again
//! (what a client sends), so that `parse(encode(x)) == x`.

use crate::proto::*;

/// Why an option's payload was refused; answered with `NBD_REP_ERR_INVALID`
/// (or `NBD_REP_ERR_TOO_BIG`) and the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OptionError {
    #[error("option payload is truncated: {0}")]
    Truncated(&'static str),
    #[error("option payload has {0} trailing bytes")]
    Trailing(usize),
    #[error("{what} is {len} bytes, more than the {MAX_STRING}-byte limit")]
    TooLong { what: &'static str, len: u32 },
    #[error("{0} is not valid UTF-8")]
    NotUtf8(&'static str),
}

/// An option as the client sends it (§ "Option haggling"): `IHAVEOPT`,
/// the option, the payload's length, the payload. The server reads these
/// fields one at a time from the stream (the length decides how much more
/// to read), so there is no `parse` for the whole message.
pub fn encode_option(option: u32, data: &[u8]) -> Vec<u8> {
    let len = u32::try_from(data.len()).expect("an option payload is under 4 GiB");
    let mut b = Vec::with_capacity(16 + data.len());
    b.extend(IHAVEOPT.to_be_bytes());
    b.extend(option.to_be_bytes());
    b.extend(len.to_be_bytes());
    b.extend(data);
    b
}

/// Appends a string as the protocol writes it: 32-bit length, then the
/// bytes (no terminator).
fn put_string(b: &mut Vec<u8>, s: &str) {
    let len = u32::try_from(s.len()).expect("a string is under 4 GiB");
    b.extend(len.to_be_bytes());
    b.extend(s.as_bytes());
}

/// A cursor over an option payload.
struct Fields<'a> {
    data: &'a [u8],
}

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], OptionError> {
        if self.data.len() < n {
            return Err(OptionError::Truncated(what));
        }
        let (head, rest) = self.data.split_at(n);
        self.data = rest;
        Ok(head)
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, OptionError> {
        Ok(u16::from_be_bytes(self.take(2, what)?.try_into().unwrap()))
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, OptionError> {
        Ok(u32::from_be_bytes(self.take(4, what)?.try_into().unwrap()))
    }
    /// A 32-bit length followed by that many UTF-8 bytes.
    fn string(&mut self, what: &'static str) -> Result<String, OptionError> {
        let len = self.u32(what)?;
        if len > MAX_STRING {
            return Err(OptionError::TooLong { what, len });
        }
        let bytes = self.take(len as usize, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| OptionError::NotUtf8(what))
    }
    fn end(&self) -> Result<(), OptionError> {
        match self.data.len() {
            0 => Ok(()),
            n => Err(OptionError::Trailing(n)),
        }
    }
}

/// NBD_OPT_INFO / NBD_OPT_GO: export name and the information requested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InfoRequest {
    pub name: String,
    pub requests: Vec<u16>,
}

impl InfoRequest {
    pub fn parse(data: &[u8]) -> Result<Self, OptionError> {
        let mut f = Fields { data };
        let name = f.string("export name")?;
        let n = f.u16("number of information requests")?;
        let requests = (0..n)
            .map(|_| f.u16("information request"))
            .collect::<Result<_, _>>()?;
        f.end()?;
        Ok(InfoRequest { name, requests })
    }

    /// The payload [`Self::parse`] reads. Panics on more than 65535
    /// information requests, which the 16-bit count cannot say.
    pub fn encode(&self) -> Vec<u8> {
        let n = u16::try_from(self.requests.len()).expect("at most 65535 information requests");
        let mut b = Vec::with_capacity(4 + self.name.len() + 2 + 2 * self.requests.len());
        put_string(&mut b, &self.name);
        b.extend(n.to_be_bytes());
        for r in &self.requests {
            b.extend(r.to_be_bytes());
        }
        b
    }
}

/// NBD_OPT_LIST_META_CONTEXT / NBD_OPT_SET_META_CONTEXT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaRequest {
    pub export: String,
    pub queries: Vec<String>,
}

impl MetaRequest {
    pub fn parse(data: &[u8]) -> Result<Self, OptionError> {
        let mut f = Fields { data };
        let export = f.string("export name")?;
        let n = f.u32("number of queries")?;
        // Each query takes at least its 4-byte length: bound the count by
        // the payload before allocating.
        if n as usize > f.data.len() / 4 {
            return Err(OptionError::Truncated("queries"));
        }
        let queries = (0..n)
            .map(|_| f.string("query"))
            .collect::<Result<_, _>>()?;
        f.end()?;
        Ok(MetaRequest { export, queries })
    }

    /// The payload [`Self::parse`] reads.
    pub fn encode(&self) -> Vec<u8> {
        let n = u32::try_from(self.queries.len()).expect("fewer than 2^32 queries");
        let mut b = Vec::new();
        put_string(&mut b, &self.export);
        b.extend(n.to_be_bytes());
        for q in &self.queries {
            put_string(&mut b, q);
        }
        b
    }
}

/// The export name of NBD_OPT_EXPORT_NAME (the whole payload).
pub fn export_name(data: &[u8]) -> Result<String, OptionError> {
    if data.len() > MAX_STRING as usize {
        return Err(OptionError::TooLong {
            what: "export name",
            len: data.len() as u32,
        });
    }
    String::from_utf8(data.to_vec()).map_err(|_| OptionError::NotUtf8("export name"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Names and queries the parser accepts: UTF-8 (multi-byte characters
    /// too), short or right at the `MAX_STRING`-byte limit.
    fn string() -> impl Strategy<Value = String> {
        prop_oneof![".{0,40}", "[a-z:]{4090,4096}"]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn info_request_parses_what_it_encodes(
            name in string(),
            requests in proptest::collection::vec(any::<u16>(), 0..20),
        ) {
            let r = InfoRequest { name, requests };
            prop_assert_eq!(InfoRequest::parse(&r.encode()), Ok(r));
        }

        #[test]
        fn meta_request_parses_what_it_encodes(
            export in string(),
            queries in proptest::collection::vec(string(), 0..8),
        ) {
            let r = MetaRequest { export, queries };
            prop_assert_eq!(MetaRequest::parse(&r.encode()), Ok(r));
        }
    }

    #[test]
    fn option_framing() {
        let b = encode_option(NBD_OPT_GO, b"xyz");
        assert_eq!(&b[..8], &IHAVEOPT.to_be_bytes());
        assert_eq!(&b[8..12], &NBD_OPT_GO.to_be_bytes());
        assert_eq!(&b[12..16], &3u32.to_be_bytes());
        assert_eq!(&b[16..], b"xyz");
    }

    #[test]
    fn info_request_round_trip_and_errors() {
        let mut d = Vec::new();
        d.extend(3u32.to_be_bytes());
        d.extend(b"vm1");
        d.extend(2u16.to_be_bytes());
        d.extend(NBD_INFO_BLOCK_SIZE.to_be_bytes());
        d.extend(NBD_INFO_NAME.to_be_bytes());
        let r = InfoRequest::parse(&d).unwrap();
        assert_eq!(r.name, "vm1");
        assert_eq!(r.requests, vec![NBD_INFO_BLOCK_SIZE, NBD_INFO_NAME]);
        assert_eq!(r.encode(), d);
        assert_eq!(
            InfoRequest::parse(&d[..d.len() - 1]),
            Err(OptionError::Truncated("information request"))
        );
        d.push(0);
        assert_eq!(InfoRequest::parse(&d), Err(OptionError::Trailing(1)));
    }

    #[test]
    fn meta_request_bounds_the_query_count() {
        let mut d = Vec::new();
        d.extend(0u32.to_be_bytes());
        d.extend(u32::MAX.to_be_bytes());
        assert_eq!(
            MetaRequest::parse(&d),
            Err(OptionError::Truncated("queries"))
        );
        let mut d = Vec::new();
        d.extend(1u32.to_be_bytes());
        d.extend(b"e");
        d.extend(1u32.to_be_bytes());
        d.extend(5u32.to_be_bytes());
        d.extend(b"base:");
        let r = MetaRequest::parse(&d).unwrap();
        assert_eq!(r.queries, vec!["base:".to_string()]);
        assert_eq!(r.encode(), d);
    }

    #[test]
    fn strings_are_bounded() {
        let mut d = Vec::new();
        d.extend(5000u32.to_be_bytes());
        d.extend(vec![b'a'; 5000]);
        d.extend(0u16.to_be_bytes());
        assert!(matches!(
            InfoRequest::parse(&d),
            Err(OptionError::TooLong { .. })
        ));
    }
}
