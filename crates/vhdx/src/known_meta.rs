//! MS-VHDX §2.6.2 Known Metadata Items: File Parameters, Virtual Disk Size,
//! Virtual Disk ID, Logical and Physical Sector Size. (The Parent Locator,
//! §2.6.2.6, has its own module.)

use crate::error::Corruption;
use crate::format::*;
use uuid::Uuid;

/// §2.6.2.1 File Parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileParameters {
    pub block_size: u32,
    pub leave_block_allocated: bool,
    pub has_parent: bool,
}

impl FileParameters {
    pub const SIZE: usize = 8;

    pub fn parse(b: &[u8]) -> Result<Self, Corruption> {
        let b = need(b, Self::SIZE, "File Parameters")?;
        let block_size = le32(b, 0);
        let flags = le32(b, 4);
        if !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&block_size) || !block_size.is_power_of_two()
        {
            return Err(bad(
                "File Parameters",
                format!("BlockSize {block_size} is not a power of two between 1 MB and 256 MB"),
            ));
        }
        Ok(Self {
            block_size,
            leave_block_allocated: flags & 1 != 0,
            has_parent: flags & 2 != 0,
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut b = vec![0u8; Self::SIZE];
        put32(&mut b, 0, self.block_size);
        put32(
            &mut b,
            4,
            self.leave_block_allocated as u32 | (self.has_parent as u32) << 1,
        );
        b
    }
}

/// §2.6.2.2 Virtual Disk Size: a multiple of the logical sector size, ≤ 64 TB.
pub fn parse_virtual_disk_size(b: &[u8], logical_sector_size: u32) -> Result<u64, Corruption> {
    let v = le64(need(b, 8, "Virtual Disk Size")?, 0);
    if v == 0 || v > MAX_VIRTUAL_DISK_SIZE || !v.is_multiple_of(logical_sector_size as u64) {
        return Err(bad("Virtual Disk Size", format!("{v} is zero, above 64 TB or not a multiple of the {logical_sector_size}-byte sector")));
    }
    Ok(v)
}

/// §2.6.2.3 Virtual Disk ID.
pub fn parse_virtual_disk_id(b: &[u8]) -> Result<Uuid, Corruption> {
    Ok(guid(need(b, 16, "Virtual Disk ID")?, 0))
}

/// §2.6.2.4 / §2.6.2.5 Logical and Physical Sector Size: 512 or 4096.
pub fn parse_sector_size(b: &[u8], item: &'static str) -> Result<u32, Corruption> {
    let v = le32(need(b, 4, item)?, 0);
    if v != 512 && v != 4096 {
        return Err(bad(item, format!("{v} is neither 512 nor 4096")));
    }
    Ok(v)
}

fn need<'a>(b: &'a [u8], n: usize, item: &'static str) -> Result<&'a [u8], Corruption> {
    if b.len() < n {
        return Err(bad(
            item,
            format!("item is {} bytes, {n} expected", b.len()),
        ));
    }
    Ok(b)
}

fn bad(item: &'static str, why: String) -> Corruption {
    Corruption::BadMetadataValue { item, why }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_parameters_round_trip_and_bounds() {
        let p = FileParameters {
            block_size: 32 << 20,
            leave_block_allocated: false,
            has_parent: true,
        };
        assert_eq!(FileParameters::parse(&p.to_bytes()).unwrap(), p);
        let mut b = p.to_bytes();
        put32(&mut b, 0, 3 << 20);
        assert!(FileParameters::parse(&b).is_err());
        put32(&mut b, 0, 512 << 20);
        assert!(FileParameters::parse(&b).is_err());
    }

    #[test]
    fn sizes_are_validated() {
        assert_eq!(
            parse_sector_size(&4096u32.to_le_bytes(), "Logical Sector Size").unwrap(),
            4096
        );
        assert!(parse_sector_size(&1024u32.to_le_bytes(), "Logical Sector Size").is_err());
        assert!(parse_virtual_disk_size(&1000u64.to_le_bytes(), 512).is_err());
        assert!(parse_virtual_disk_size(&(65 * TIB).to_le_bytes(), 512).is_err());
        assert_eq!(
            parse_virtual_disk_size(&(MIB).to_le_bytes(), 4096).unwrap(),
            MIB
        );
    }
}
