//! Option payloads of the handshake phase (§ "Option types"): parsed from
//! untrusted bytes into typed requests, never panicking.

use crate::proto::*;

/// Why an option's payload was refused; answered with `NBD_REP_ERR_INVALID`
/// (or `NBD_REP_ERR_TOO_BIG`) and the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
