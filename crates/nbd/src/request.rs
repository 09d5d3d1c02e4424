//! Transmission-phase requests (§ "Request message") and their checks.

use crate::proto::*;

/// One request header as sent by the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    pub flags: u16,
    pub kind: u16,
    pub cookie: u64,
    pub offset: u64,
    pub length: u32,
}

/// A header the server cannot go on after: the stream is out of sync.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bad request magic {0:#010x} (expected {NBD_REQUEST_MAGIC:#010x})")]
pub struct BadMagic(pub u32);

impl Request {
    pub fn parse(b: &[u8; REQUEST_LEN]) -> Result<Request, BadMagic> {
        let magic = u32::from_be_bytes(b[0..4].try_into().unwrap());
        if magic != NBD_REQUEST_MAGIC {
            return Err(BadMagic(magic));
        }
        Ok(Request {
            flags: u16::from_be_bytes(b[4..6].try_into().unwrap()),
            kind: u16::from_be_bytes(b[6..8].try_into().unwrap()),
            cookie: u64::from_be_bytes(b[8..16].try_into().unwrap()),
            offset: u64::from_be_bytes(b[16..24].try_into().unwrap()),
            length: u32::from_be_bytes(b[24..28].try_into().unwrap()),
        })
    }

    pub fn encode(&self) -> [u8; REQUEST_LEN] {
        let mut b = [0u8; REQUEST_LEN];
        b[0..4].copy_from_slice(&NBD_REQUEST_MAGIC.to_be_bytes());
        b[4..6].copy_from_slice(&self.flags.to_be_bytes());
        b[6..8].copy_from_slice(&self.kind.to_be_bytes());
        b[8..16].copy_from_slice(&self.cookie.to_be_bytes());
        b[16..24].copy_from_slice(&self.offset.to_be_bytes());
        b[24..28].copy_from_slice(&self.length.to_be_bytes());
        b
    }

    /// Bytes of payload that follow the header.
    pub fn payload_len(&self) -> u32 {
        if self.kind == NBD_CMD_WRITE {
            self.length
        } else {
            0
        }
    }

    /// Checks a request against the export; the error is the protocol's
    /// error value for the reply (the request is not executed).
    pub fn validate(&self, size: u64, read_only: bool, structured: bool) -> Result<(), u32> {
        // FUA is valid on every command (the server MUST accept it, even
        // by ignoring it; clients are known to set it on reads).
        let allowed = NBD_CMD_FLAG_FUA
            | match self.kind {
                NBD_CMD_READ => NBD_CMD_FLAG_DF,
                NBD_CMD_WRITE_ZEROES => NBD_CMD_FLAG_NO_HOLE,
                NBD_CMD_BLOCK_STATUS => NBD_CMD_FLAG_REQ_ONE,
                NBD_CMD_WRITE | NBD_CMD_TRIM | NBD_CMD_FLUSH | NBD_CMD_CACHE | NBD_CMD_DISC => 0,
                _ => return Err(NBD_EINVAL),
            };
        if self.flags & !allowed != 0 {
            return Err(NBD_EINVAL);
        }
        if self.flags & NBD_CMD_FLAG_DF != 0 && !structured {
            return Err(NBD_EINVAL);
        }
        let writes = matches!(
            self.kind,
            NBD_CMD_WRITE | NBD_CMD_WRITE_ZEROES | NBD_CMD_TRIM
        );
        if writes && read_only {
            return Err(NBD_EPERM);
        }
        if matches!(self.kind, NBD_CMD_FLUSH | NBD_CMD_DISC) {
            return Ok(());
        }
        if matches!(self.kind, NBD_CMD_READ | NBD_CMD_WRITE) && self.length > MAX_PAYLOAD {
            return Err(NBD_EOVERFLOW);
        }
        if self.length == 0 {
            return Err(NBD_EINVAL);
        }
        let end = self.offset.checked_add(self.length as u64);
        if end.is_none_or(|e| e > size) {
            // ENOSPC for writes; a read or trim past the end is EINVAL.
            let write = writes && self.kind != NBD_CMD_TRIM;
            return Err(if write { NBD_ENOSPC } else { NBD_EINVAL });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Every header encodes and parses back; and every 28 bytes that
        /// start with the magic parse and encode back to themselves.
        #[test]
        fn parse_and_encode_are_inverse(
            flags in any::<u16>(),
            kind in any::<u16>(),
            cookie in any::<u64>(),
            offset in any::<u64>(),
            length in any::<u32>(),
            tail in any::<[u8; REQUEST_LEN - 4]>(),
        ) {
            let r = Request { flags, kind, cookie, offset, length };
            prop_assert_eq!(Request::parse(&r.encode()), Ok(r));
            let mut b = [0u8; REQUEST_LEN];
            b[..4].copy_from_slice(&NBD_REQUEST_MAGIC.to_be_bytes());
            b[4..].copy_from_slice(&tail);
            prop_assert_eq!(Request::parse(&b).map(|r| r.encode()), Ok(b));
        }
    }

    fn req(kind: u16, flags: u16, offset: u64, length: u32) -> Request {
        Request {
            flags,
            kind,
            cookie: 7,
            offset,
            length,
        }
    }

    #[test]
    fn round_trip() {
        let r = req(NBD_CMD_WRITE, NBD_CMD_FLAG_FUA, 4096, 512);
        assert_eq!(Request::parse(&r.encode()), Ok(r));
        let mut b = r.encode();
        b[0] ^= 1;
        assert!(Request::parse(&b).is_err());
    }

    #[test]
    fn validation() {
        let size = 1 << 20;
        assert_eq!(
            req(NBD_CMD_READ, 0, 0, 512).validate(size, false, false),
            Ok(())
        );
        assert_eq!(
            req(NBD_CMD_READ, 0, size - 1, 2).validate(size, false, false),
            Err(NBD_EINVAL)
        );
        assert_eq!(
            req(NBD_CMD_WRITE, 0, size, 1).validate(size, false, false),
            Err(NBD_ENOSPC)
        );
        assert_eq!(
            req(NBD_CMD_READ, 0, u64::MAX, 2).validate(size, false, false),
            Err(NBD_EINVAL)
        );
        assert_eq!(
            req(NBD_CMD_WRITE, 0, 0, 1).validate(size, true, false),
            Err(NBD_EPERM)
        );
        assert_eq!(
            req(NBD_CMD_READ, NBD_CMD_FLAG_DF, 0, 1).validate(size, false, false),
            Err(NBD_EINVAL)
        );
        assert_eq!(
            req(NBD_CMD_READ, NBD_CMD_FLAG_DF, 0, 1).validate(size, false, true),
            Ok(())
        );
        assert_eq!(
            req(NBD_CMD_READ, 0, 0, MAX_PAYLOAD + 1).validate(u64::MAX, false, true),
            Err(NBD_EOVERFLOW)
        );
        assert_eq!(
            req(NBD_CMD_TRIM, 0, 0, 0).validate(size, false, true),
            Err(NBD_EINVAL)
        );
        assert_eq!(
            req(99, 0, 0, 1).validate(size, false, true),
            Err(NBD_EINVAL)
        );
        assert_eq!(
            req(NBD_CMD_FLUSH, 0, 0, 0).validate(size, true, true),
            Ok(())
        );
        assert_eq!(
            req(NBD_CMD_READ, 1 << 9, 0, 1).validate(size, false, true),
            Err(NBD_EINVAL)
        );
    }
}
