//! MS-VHDX §2.2.1 File Type Identifier: the signature at offset 0 and the
//! creator string. Written once at creation, never overwritten.

use crate::format::FILE_TYPE_IDENTIFIER_SIGNATURE;

/// The file type identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileTypeIdentifier {
    /// Creator: diagnostic only (UTF-16 in the file).
    pub creator: String,
}

impl FileTypeIdentifier {
    /// Size of the structure as stored (signature + 512-byte creator).
    pub const SIZE: usize = 8 + 512;

    /// Parses the identifier; `None` if the signature is wrong.
    pub fn parse(b: &[u8]) -> Option<Self> {
        if b.len() < Self::SIZE || &b[..8] != FILE_TYPE_IDENTIFIER_SIGNATURE {
            return None;
        }
        let units: Vec<u16> = b[8..Self::SIZE]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|&u| u != 0)
            .collect();
        Some(Self {
            creator: String::from_utf16_lossy(&units),
        })
    }

    /// The structure's bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; Self::SIZE];
        b[..8].copy_from_slice(FILE_TYPE_IDENTIFIER_SIGNATURE);
        for (i, u) in self.creator.encode_utf16().take(255).enumerate() {
            b[8 + 2 * i..10 + 2 * i].copy_from_slice(&u.to_le_bytes());
        }
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let id = FileTypeIdentifier {
            creator: "refpoint 0.1 ✓".into(),
        };
        assert_eq!(FileTypeIdentifier::parse(&id.to_bytes()), Some(id));
        assert_eq!(FileTypeIdentifier::parse(&[0u8; 520]), None);
    }
}
