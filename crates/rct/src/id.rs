//! RCT IDs: `rct:<tracking-guid>:<generation as 8 hex digits>`, naming one
//! sealed generation of one disk's tracking.

use crate::error::RctError;
use std::fmt;
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RctId {
    pub tracking: Uuid,
    pub generation: u64,
}

impl fmt::Display for RctId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "rct:{}:{:08x}",
            self.tracking.hyphenated(),
            self.generation
        )
    }
}

impl std::str::FromStr for RctId {
    type Err = RctError;
    fn from_str(s: &str) -> Result<Self, RctError> {
        let bad = || RctError::MalformedId(s.to_string());
        let rest = s.strip_prefix("rct:").ok_or_else(bad)?;
        let (g, n) = rest.rsplit_once(':').ok_or_else(bad)?;
        if n.len() < 8 || !n.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(bad());
        }
        Ok(RctId {
            tracking: Uuid::parse_str(g).map_err(|_| bad())?,
            generation: u64::from_str_radix(n, 16).map_err(|_| bad())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        let id = RctId {
            tracking: Uuid::new_v4(),
            generation: 0x2a,
        };
        let s = id.to_string();
        assert!(s.ends_with(":0000002a"));
        assert_eq!(s.parse::<RctId>().unwrap(), id);
        for bad in [
            "",
            "rct:",
            "rct:nope:00000001",
            "rct:00000000-0000-0000-0000-000000000000:1",
            "x:00000000-0000-0000-0000-000000000000:00000001",
        ] {
            assert!(bad.parse::<RctId>().is_err(), "{bad}");
        }
    }
}
