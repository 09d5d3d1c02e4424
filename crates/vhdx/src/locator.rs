//! MS-VHDX §2.6.2.6 Parent Locator: a locator type and UTF-16 key/value
//! pairs; §2.6.2.6.3 defines the VHDX locator keys (`parent_linkage`,
//! `parent_linkage2`, `relative_path`, `volume_path`, `absolute_win32_path`).

use crate::error::Corruption;
use crate::format::*;
use std::collections::HashSet;
use uuid::Uuid;

pub const PARENT_LINKAGE: &str = "parent_linkage";
pub const PARENT_LINKAGE2: &str = "parent_linkage2";
pub const RELATIVE_PATH: &str = "relative_path";
pub const VOLUME_PATH: &str = "volume_path";
pub const ABSOLUTE_WIN32_PATH: &str = "absolute_win32_path";

/// A parent locator item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentLocator {
    pub locator_type: Uuid,
    pub entries: Vec<(String, String)>,
}

const HEADER_LEN: usize = 20;
const ENTRY_SIZE: usize = 12;

fn bad(why: impl Into<String>) -> Corruption {
    Corruption::BadParentLocator(why.into())
}

fn utf16(b: &[u8], off: u32, len: u16) -> Result<String, Corruption> {
    let (off, len) = (off as usize, len as usize);
    let s = b
        .get(off..off + len)
        .ok_or_else(|| bad("key or value lies outside the item"))?;
    if len % 2 != 0 {
        return Err(bad("odd-length UTF-16 string"));
    }
    let units: Vec<u16> = s
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect();
    let text = String::from_utf16(&units).map_err(|_| bad("invalid UTF-16"))?;
    if text.contains('\0') {
        return Err(bad("NUL inside a key or value"));
    }
    Ok(text)
}

impl ParentLocator {
    /// A VHDX locator with the given linkage and paths.
    pub fn new_vhdx(parent_linkage: Uuid, relative: &str, absolute: &str) -> Self {
        Self {
            locator_type: VHDX_PARENT_LOCATOR_TYPE,
            entries: vec![
                (PARENT_LINKAGE.into(), format_linkage(parent_linkage)),
                (RELATIVE_PATH.into(), relative.into()),
                (ABSOLUTE_WIN32_PATH.into(), absolute.into()),
            ],
        }
    }

    /// Parses a locator item. Each key and value is its own run of the item
    /// (§2.6.2.6.2), so together they cannot take more bytes than the item
    /// holds; entries that point many times at the same bytes are refused
    /// rather than decoded over and over (65535 entries × 64 KB strings
    /// would be gigabytes from a 1 MB item).
    pub fn parse(b: &[u8]) -> Result<Self, Corruption> {
        if b.len() < HEADER_LEN {
            return Err(bad("item shorter than its header"));
        }
        let count = le16(b, 18) as usize;
        if b.len() < HEADER_LEN + count * ENTRY_SIZE {
            return Err(bad("entry table runs past the item"));
        }
        let mut entries: Vec<(String, String)> = Vec::with_capacity(count);
        let mut keys = HashSet::with_capacity(count);
        let mut string_bytes = 0usize;
        for i in 0..count {
            let e = &b[HEADER_LEN + i * ENTRY_SIZE..];
            let (ko, vo, kl, vl) = (le32(e, 0), le32(e, 4), le16(e, 8), le16(e, 10));
            if ko == 0 || vo == 0 || kl == 0 || vl == 0 {
                return Err(bad("zero offset or length in an entry"));
            }
            string_bytes += kl as usize + vl as usize;
            if string_bytes > b.len() {
                return Err(bad("keys and values take more bytes than the item holds"));
            }
            let key = utf16(b, ko, kl)?;
            if !keys.insert(key.clone()) {
                return Err(bad(format!("key {key} appears twice")));
            }
            entries.push((key, utf16(b, vo, vl)?));
        }
        Ok(Self {
            locator_type: guid(b, 0),
            entries,
        })
    }

    pub fn to_bytes(&self) -> Vec<u8> {
        let mut table = vec![0u8; HEADER_LEN + self.entries.len() * ENTRY_SIZE];
        put_guid(&mut table, 0, self.locator_type);
        put16(&mut table, 18, self.entries.len() as u16);
        let mut strings = Vec::new();
        let push = |s: &str, strings: &mut Vec<u8>| -> (u32, u16) {
            let off = table_len(self.entries.len()) + strings.len();
            for u in s.encode_utf16() {
                strings.extend_from_slice(&u.to_le_bytes());
            }
            (
                off as u32,
                (strings.len() + table_len(self.entries.len()) - off) as u16,
            )
        };
        for (i, (k, v)) in self.entries.iter().enumerate() {
            let (ko, kl) = push(k, &mut strings);
            let (vo, vl) = push(v, &mut strings);
            let o = HEADER_LEN + i * ENTRY_SIZE;
            put32(&mut table, o, ko);
            put32(&mut table, o + 4, vo);
            put16(&mut table, o + 8, kl);
            put16(&mut table, o + 10, vl);
        }
        table.extend_from_slice(&strings);
        table
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.entries
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    pub fn set(&mut self, key: &str, value: String) {
        match self.entries.iter_mut().find(|(k, _)| k == key) {
            Some(e) => e.1 = value,
            None => self.entries.push((key.into(), value)),
        }
    }

    pub fn remove(&mut self, key: &str) {
        self.entries.retain(|(k, _)| k != key);
    }

    /// `parent_linkage` and, if present, `parent_linkage2`.
    pub fn linkages(&self) -> Result<(Uuid, Option<Uuid>), Corruption> {
        let first = self
            .get(PARENT_LINKAGE)
            .ok_or_else(|| bad("parent_linkage is missing"))?;
        let second = self.get(PARENT_LINKAGE2).map(parse_linkage).transpose()?;
        Ok((parse_linkage(first)?, second))
    }
}

fn table_len(n: usize) -> usize {
    HEADER_LEN + n * ENTRY_SIZE
}

/// `{83ed0ec3-24c8-49a6-a959-5e4bf1288bfb}` as §2.6.2.6.3 writes a GUID.
pub fn format_linkage(g: Uuid) -> String {
    format!("{{{}}}", g.hyphenated())
}

pub fn parse_linkage(s: &str) -> Result<Uuid, Corruption> {
    let inner = s.trim().trim_start_matches('{').trim_end_matches('}');
    Uuid::parse_str(inner).map_err(|_| bad(format!("parent linkage {s:?} is not a GUID")))
}

/// Converts a host path to the `\`-separated form the locator stores.
pub fn to_locator_path(p: &str) -> String {
    p.replace('/', "\\")
}

/// Converts a locator path back to a host path; an absolute Win32 path
/// `\\?\d:\x\y` keeps only what follows the drive (`/x/y`).
pub fn from_locator_path(p: &str) -> String {
    let p = p.strip_prefix("\\\\?\\").unwrap_or(p);
    let p = match p.as_bytes() {
        [d, b':', ..] if d.is_ascii_alphabetic() => &p[2..],
        _ => p,
    };
    p.replace('\\', "/")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let g = Uuid::new_v4();
        let mut l = ParentLocator::new_vhdx(g, "..\\base.vhdx", "/srv/base.vhdx");
        l.set(PARENT_LINKAGE2, format_linkage(Uuid::nil()));
        let parsed = ParentLocator::parse(&l.to_bytes()).unwrap();
        assert_eq!(parsed, l);
        assert_eq!(parsed.linkages().unwrap(), (g, Some(Uuid::nil())));
        assert_eq!(from_locator_path("..\\base.vhdx"), "../base.vhdx");
        assert_eq!(from_locator_path("\\\\?\\c:\\vms\\a.vhdx"), "/vms/a.vhdx");
    }

    #[test]
    fn rejects_garbage() {
        let l = ParentLocator::new_vhdx(Uuid::new_v4(), "a", "b");
        let b = l.to_bytes();
        assert!(ParentLocator::parse(&b[..30]).is_err());
        let mut bad_off = b.clone();
        put32(&mut bad_off, 20, 60000);
        assert!(ParentLocator::parse(&bad_off).is_err());
    }
}
