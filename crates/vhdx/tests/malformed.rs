//! Malformed input (DESIGN.md invariant 5): a damaged VHDX file gets a clear,
//! typed error, never a panic, a hang or an allocation out of proportion to
//! the file.
//!
//! Valid images (dynamic with 512- and 4096-byte sectors, differencing with
//! sector bitmaps, a dirty log) are made with `create` and some writes, then
//! one structure at a time is damaged: header copies, region table copies,
//! the metadata table and items, the BAT, the log (raw, and re-encoded with
//! valid checksums so the damage reaches the replay logic), the file length.
//! Every mutant goes through read-only and writable open, `Chain::open`,
//! `check` and `repair`, and whatever opens is read end to end. Specific
//! damage must give its specific `Corruption`, one bad copy of a header or
//! region table must fall back to the other, and `repair` must fix what it
//! calls repairable. Round trips cover every structure's parse and encode.

use proptest::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use storage::CrashFs;
use uuid::Uuid;
use vhdx::format::*;
use vhdx::header::Header;
use vhdx::known_meta::FileParameters;
use vhdx::locator::ParentLocator;
use vhdx::log::{find_active_sequence, LogEntry, LogUpdate};
use vhdx::metadata::{MetadataTable, MetadataTableEntry};
use vhdx::region::{RegionTable, RegionTableEntry};
use vhdx::{create, create_child, Chain, Corruption, CreateOptions, DiskType, Source, Vhdx};

// ---------------------------------------------------------------------------
// Images

/// A valid image: the file under test first, then any parent it needs.
struct Image {
    name: &'static str,
    files: Vec<(PathBuf, Vec<u8>)>,
}

impl Image {
    fn path(&self) -> &Path {
        &self.files[0].0
    }
    fn bytes(&self) -> &[u8] {
        &self.files[0].1
    }
    /// A file system holding the image with `bytes` as the file under test.
    fn install(&self, bytes: &[u8]) -> CrashFs {
        let fs = CrashFs::new();
        fs.insert(self.path(), bytes.to_vec());
        for (p, b) in &self.files[1..] {
            fs.insert(p, b.clone());
        }
        fs
    }
}

fn opts(size: u64, bs: u64, ss: u32) -> CreateOptions {
    CreateOptions {
        virtual_size: size,
        disk_type: DiskType::Dynamic,
        block_size: bs as u32,
        logical_sector_size: ss,
        physical_sector_size: 4096,
    }
}

fn pattern(len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(13) ^ salt)
        .collect()
}

fn contents(fs: &CrashFs, p: &Path) -> Vec<u8> {
    fs.file(p).unwrap().contents()
}

const DYN512: usize = 0;
const CHILD: usize = 2;
const DIRTY: usize = 3;
const DIRTY_CHILD: usize = 4;

fn images() -> &'static [Image] {
    static IMAGES: OnceLock<Vec<Image>> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let fs = CrashFs::new();
        let mut out = Vec::new();

        let p = Path::new("/m/dyn512.vhdx");
        let mut v = create(&fs, p, &opts(8 * MIB, MIB, 512)).unwrap();
        v.write(4096, &pattern(8192, 1)).unwrap();
        v.write(2 * MIB, &pattern(MIB as usize, 2)).unwrap();
        v.zero(5 * MIB, MIB).unwrap();
        v.trim(6 * MIB, MIB).unwrap();
        v.write(8 * MIB - 512, &pattern(512, 3)).unwrap();
        v.close().unwrap();
        out.push(Image {
            name: "dynamic-512",
            files: vec![(p.into(), contents(&fs, p))],
        });

        let p = Path::new("/m/dyn4k.vhdx");
        let mut v = create(&fs, p, &opts(6 * MIB, 2 * MIB, 4096)).unwrap();
        v.write(2 * MIB + 12288, &pattern(20480, 4)).unwrap();
        v.close().unwrap();
        out.push(Image {
            name: "dynamic-4k",
            files: vec![(p.into(), contents(&fs, p))],
        });

        let base = Path::new("/m/base.vhdx");
        let mut v = create(&fs, base, &opts(4 * MIB, MIB, 512)).unwrap();
        v.write(0, &pattern(2 * MIB as usize, 5)).unwrap();
        v.close().unwrap();
        for (name, p, dirty) in [
            ("child", "/m/child.avhdx", false),
            ("child-dirty", "/m/child-dirty.avhdx", true),
        ] {
            let p = Path::new(p);
            let mut c = create_child(&fs, p, base, None).unwrap();
            c.write(512, &pattern(1024, 6)).unwrap();
            c.write(MIB + 4096, &pattern(8192, 7)).unwrap();
            c.flush().unwrap();
            if dirty {
                c.abandon();
            } else {
                c.close().unwrap();
            }
            out.push(Image {
                name,
                files: vec![
                    (p.into(), contents(&fs, p)),
                    (base.into(), contents(&fs, base)),
                ],
            });
        }

        // A crash after the log entry was flushed and before it was applied:
        // the first BAT page goes back to its state before the entry.
        let p = Path::new("/m/dirty.vhdx");
        let mut v = create(&fs, p, &opts(4 * MIB, MIB, 512)).unwrap();
        v.write(0, &pattern(65536, 8)).unwrap();
        v.write(3 * MIB, &pattern(4096, 9)).unwrap();
        v.flush().unwrap();
        v.abandon();
        let mut bytes = contents(&fs, p);
        bytes[3 * MIB as usize..][..4096].fill(0);
        out.push(Image {
            name: "dirty-log",
            files: vec![(p.into(), bytes)],
        });

        let dirty_child = out.remove(3);
        out.push(dirty_child);
        out
    })
}

// ---------------------------------------------------------------------------
// Byte helpers

fn get32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
}
fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn crc_with_zeroed_field(buf: &[u8], at: usize) -> u32 {
    let crc = crc32c::crc32c(&buf[..at]);
    let crc = crc32c::crc32c_append(crc, &[0; 4]);
    crc32c::crc32c_append(crc, &buf[at + 4..])
}

/// Recomputes the checksum of the structure of `len` bytes at `at`.
fn fix_crc(b: &mut [u8], at: usize, len: usize) {
    let crc = crc_with_zeroed_field(&b[at..at + len], 4);
    put32(b, at + 4, crc);
}

const H: [usize; 2] = [HEADER_OFFSETS[0] as usize, HEADER_OFFSETS[1] as usize];
const RT: [usize; 2] = [
    REGION_TABLE_OFFSETS[0] as usize,
    REGION_TABLE_OFFSETS[1] as usize,
];

/// Where the structures of an image are, from its own tables.
struct Layout {
    header_slot: usize,
    header: Header,
    meta: usize,
    meta_table: MetadataTable,
    bat: usize,
    bat_entries: usize,
}

fn layout(b: &[u8]) -> Layout {
    let headers = H.map(|o| Header::parse(&b[o..o + HEADER_SIZE]).unwrap());
    let header_slot = (headers[1].sequence_number > headers[0].sequence_number) as usize;
    let rt = RegionTable::parse(&b[RT[0]..RT[0] + REGION_TABLE_SIZE]).unwrap();
    let meta = rt.find(METADATA_REGION_GUID).unwrap();
    let bat = rt.find(BAT_REGION_GUID).unwrap();
    let meta_off = meta.file_offset as usize;
    let meta_table =
        MetadataTable::parse(&b[meta_off..meta_off + METADATA_TABLE_SIZE], meta.length).unwrap();
    let item = |id| {
        meta_table
            .find(id)
            .map(|e| meta_off + e.offset as usize)
            .unwrap()
    };
    let bs = get32(b, item(FILE_PARAMETERS_GUID)) as u64;
    let has_parent = get32(b, item(FILE_PARAMETERS_GUID) + 4) & 2 != 0;
    let ss = get32(b, item(LOGICAL_SECTOR_SIZE_GUID));
    let size = u64::from_le_bytes(b[item(VIRTUAL_DISK_SIZE_GUID)..][..8].try_into().unwrap());
    let g = vhdx::bat::BatGeometry::new(bs as u32, ss, size, has_parent);
    Layout {
        header_slot,
        header: headers[header_slot].clone(),
        meta: meta_off,
        meta_table,
        bat: bat.file_offset as usize,
        bat_entries: g.total_entries() as usize,
    }
}

// ---------------------------------------------------------------------------
// Exercising a mutant

/// Virtual disks up to this size are read whole; larger ones (a damaged
/// size field) are mapped whole and read at both ends.
const READ_WHOLE: u64 = 64 * MIB;

/// Reads a virtual disk through `read`, mapping it with `map`; returns a
/// digest of what was read. Errors are fine, panics are not.
fn read_disk(
    size: u64,
    read: &dyn Fn(u64, &mut [u8]) -> vhdx::Result<()>,
    map: &dyn Fn(u64, u64) -> vhdx::Result<()>,
) -> Result<u32, String> {
    let mut crc = 0;
    let mut buf = vec![0u8; MIB as usize];
    let mut piece = |off: u64, len: u64, crc: &mut u32| -> Result<(), String> {
        read(off, &mut buf[..len as usize]).map_err(|e| e.to_string())?;
        *crc = crc32c::crc32c_append(*crc, &buf[..len as usize]);
        Ok(())
    };
    if size <= READ_WHOLE {
        let mut off = 0;
        while off < size {
            let n = MIB.min(size - off);
            piece(off, n, &mut crc)?;
            off += n;
        }
    } else {
        let mut off = 0;
        while off < size {
            let n = GIB.min(size - off);
            map(off, n).map_err(|e| e.to_string())?;
            off += n;
        }
        piece(0, MIB, &mut crc)?;
        piece(size - MIB, MIB, &mut crc)?;
    }
    Ok(crc)
}

fn read_vhdx(v: &Vhdx) -> Result<u32, String> {
    read_disk(v.virtual_size(), &|o, b| v.read(o, b), &|o, l| {
        v.resolve(o, l).map(drop)
    })
}

fn read_chain(c: &Chain) -> Result<u32, String> {
    read_disk(c.virtual_size(), &|o, b| c.read(o, b), &|o, l| {
        c.map(o, l).map(drop)
    })
}

/// What the steps of [`exercise`] gave.
struct Outcome {
    read_only: vhdx::Result<Result<u32, String>>,
    writable_ok: bool,
}

impl Outcome {
    /// The corruption the read-only open reported.
    fn corruption(&self) -> Option<Corruption> {
        self.read_only
            .as_ref()
            .err()
            .and_then(|e| e.corruption().cloned())
    }
}

/// Runs every entry point on `bytes` (as the image's file under test). Any
/// panic fails the calling test; results are returned for assertions. A
/// read-only and a writable open that both succeed must read the same.
fn exercise(img: &Image, bytes: &[u8]) -> Outcome {
    let p = img.path();
    let fs = img.install(bytes);
    let read_only = Vhdx::open(&fs, p, false).map(|v| read_vhdx(&v));
    let _ = vhdx::check(&fs, p);
    let chain_ro = Chain::open(&fs, p, false).map(|c| read_chain(&c)).ok();
    assert_eq!(
        contents(&fs, p),
        bytes,
        "{}: a read-only step modified the file",
        img.name
    );

    let fs = img.install(bytes);
    let mut writable_ok = false;
    if let Ok(v) = Vhdx::open(&fs, p, true) {
        writable_ok = true;
        let d = read_vhdx(&v);
        if let Ok(ro) = &read_only {
            assert_eq!(
                &d, ro,
                "{}: read-only and writable opens read differently",
                img.name
            );
        }
        let _ = v.close();
    }
    let fs = img.install(bytes);
    if let Ok(c) = Chain::open(&fs, p, true) {
        let d = read_chain(&c);
        if let Some(ro) = &chain_ro {
            assert_eq!(
                &d, ro,
                "{}: read-only and writable chains read differently",
                img.name
            );
        }
        let _ = c.close();
    }
    let fs = img.install(bytes);
    if let Ok(r) = vhdx::repair(&fs, p) {
        if r.is_valid() {
            if let Err(e) = Vhdx::open(&fs, p, false) {
                panic!(
                    "{}: repair reports a valid file, but it does not open: {e}",
                    img.name
                );
            }
        }
    }
    Outcome {
        read_only,
        writable_ok,
    }
}

/// The corruption a read-only open of `bytes` reports (panics if it opens).
fn open_corruption(img: &Image, bytes: &[u8]) -> Corruption {
    let fs = img.install(bytes);
    match Vhdx::open(&fs, img.path(), false) {
        Ok(_) => panic!("{}: the damaged file opened", img.name),
        Err(e) => e
            .corruption()
            .cloned()
            .unwrap_or_else(|| panic!("{}: not a corruption: {e}", img.name)),
    }
}

fn check_problems(img: &Image, bytes: &[u8]) -> Vec<vhdx::Problem> {
    let fs = img.install(bytes);
    vhdx::check(&fs, img.path()).unwrap().problems
}

/// Repairs `bytes`; asserts the result checks valid and opens, and returns
/// the repaired bytes.
fn repaired(img: &Image, bytes: &[u8]) -> Vec<u8> {
    let fs = img.install(bytes);
    let r = vhdx::repair(&fs, img.path()).unwrap();
    assert!(
        r.is_valid(),
        "{}: still broken after repair: {:?}",
        img.name,
        r.problems
    );
    assert!(!r.repaired.is_empty(), "{}: repair did nothing", img.name);
    let v = Vhdx::open(&fs, img.path(), false).unwrap();
    read_vhdx(&v).unwrap();
    contents(&fs, img.path())
}

/// The value of `width` bytes: mostly boundary values, else anything.
fn field_value() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => prop::sample::select(vec![
            0u64, 1, 0xff, 0x1000, 0xffff, 0x10_0000, 0x20_0000, 0x7fff_ffff, 0x8000_0000, 0xffff_ffff,
            0x1_0000_0000, 0x4000_0000_0000, 0x7fff_ffff_ffff_ffff, u64::MAX, u64::MAX - MIB + 1,
        ]),
        1 => (0u64..64).prop_map(|m| m * MIB),
        2 => any::<u64>(),
    ]
}

fn put_width(b: &mut [u8], at: usize, width: usize, v: u64) {
    let end = (at + width).min(b.len());
    b[at..end].copy_from_slice(&v.to_le_bytes()[..end - at]);
}

/// A BAT entry: any value, or a valid state at an offset in or near the file.
fn bat_entry() -> impl Strategy<Value = u64> {
    prop_oneof![
        field_value(),
        (0u64..8).prop_map(|s| s | 3 << 20),
        (0u64..8, 0u64..64).prop_map(|(s, mb)| mb << 20 | s),
    ]
}

/// A file length: anywhere, on a 1 MiB boundary, or just short of the end.
fn file_length() -> impl Strategy<Value = usize> {
    let mib = MIB as usize;
    prop_oneof![
        0..8 * mib,
        (0usize..8).prop_map(move |m| m * mib),
        (1usize..64).prop_map(move |k| 8 * mib - k * 4096),
    ]
}

fn image_index() -> impl Strategy<Value = usize> {
    0..images().len()
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

// ---------------------------------------------------------------------------
// Mutation properties

proptest! {
    #![proptest_config(config(48))]

    /// Header fields get any value; the checksum is usually recomputed so
    /// the values themselves are judged.
    #[test]
    fn header_fields(
        img in image_index(),
        slots in 1usize..4,
        field in prop::sample::select(vec![8usize, 16, 32, 48, 64, 66, 68, 72, 76]),
        width in prop::sample::select(vec![2usize, 4, 8]),
        v in field_value(),
        fix in any::<bool>(),
    ) {
        let img = &images()[img];
        let mut b = img.bytes().to_vec();
        for (slot, &h) in H.iter().enumerate() {
            if slots & (1 << slot) != 0 {
                put_width(&mut b, h + field, width, v);
                if fix { fix_crc(&mut b, h, HEADER_SIZE); }
            }
        }
        exercise(img, &b);
    }

    /// Any flipped bit in one header copy falls back to the other copy.
    #[test]
    fn one_bad_header_copy_still_opens(
        img in image_index(),
        slot in 0usize..2,
        at in 0usize..HEADER_SIZE,
        bit in 0u8..8,
    ) {
        let img = &images()[img];
        let mut b = img.bytes().to_vec();
        b[H[slot] + at] ^= 1 << bit;
        let o = exercise(img, &b);
        prop_assert!(o.read_only.is_ok(), "{}: {:?}", img.name, o.read_only.err());
        prop_assert!(o.writable_ok);
    }

    /// Region table header and entry fields get any value.
    #[test]
    fn region_table_fields(
        img in image_index(),
        copies in 1usize..4,
        field in prop::sample::select(vec![8usize, 12, 16, 20, 32, 36, 40, 44, 48, 52, 56, 64, 72, 76]),
        width in prop::sample::select(vec![4usize, 8]),
        v in field_value(),
        fix in any::<bool>(),
    ) {
        let img = &images()[img];
        let mut b = img.bytes().to_vec();
        for (copy, &t) in RT.iter().enumerate() {
            if copies & (1 << copy) != 0 {
                put_width(&mut b, t + field, width, v);
                if fix { fix_crc(&mut b, t, REGION_TABLE_SIZE); }
            }
        }
        exercise(img, &b);
    }

    /// Any flipped bit in one region table copy falls back to the other.
    #[test]
    fn one_bad_region_table_copy_still_opens(
        img in image_index(),
        copy in 0usize..2,
        at in 0usize..96,
        bit in 0u8..8,
    ) {
        let img = &images()[img];
        let mut b = img.bytes().to_vec();
        b[RT[copy] + at] ^= 1 << bit;
        let o = exercise(img, &b);
        prop_assert!(o.read_only.is_ok(), "{}: {:?}", img.name, o.read_only.err());
    }

    /// Metadata table header, entries and item contents get any value.
    #[test]
    fn metadata_fields(
        img in image_index(),
        place in 0usize..3,
        index in 0usize..8,
        field in prop::sample::select(vec![0usize, 4, 8, 12, 16, 20, 24, 28]),
        width in prop::sample::select(vec![1usize, 2, 4, 8]),
        v in field_value(),
    ) {
        let img = &images()[img];
        let mut b = img.bytes().to_vec();
        let l = layout(&b);
        let at = match place {
            0 => l.meta + (index * 4) % 32,
            1 => l.meta + 32 + index * 32 + field,
            _ => {
                let e = &l.meta_table.entries[index % l.meta_table.entries.len()];
                l.meta + e.offset as usize + field % e.length.max(1) as usize
            }
        };
        put_width(&mut b, at, width, v);
        exercise(img, &b);
    }

    /// Random bytes over the parent locator item.
    #[test]
    fn parent_locator_bytes(
        img in prop::sample::select(vec![CHILD, DIRTY_CHILD]),
        edits in prop::collection::vec((0usize..400, any::<u8>()), 1..6),
    ) {
        let img = &images()[img];
        let mut b = img.bytes().to_vec();
        let l = layout(&b);
        let e = l.meta_table.find(PARENT_LOCATOR_GUID).unwrap();
        for (at, v) in edits {
            b[l.meta + e.offset as usize + at % e.length as usize] = v;
        }
        exercise(img, &b);
    }

    /// BAT entries get any value: state, reserved bits, offset.
    #[test]
    fn bat_entries(
        img in image_index(),
        edits in prop::collection::vec((0usize..5000, bat_entry()), 1..4),
    ) {
        let img = &images()[img];
        let mut b = img.bytes().to_vec();
        let l = layout(&b);
        for (i, v) in edits {
            put64(&mut b, l.bat + (i % (l.bat_entries + 8)) * 8, v);
        }
        exercise(img, &b);
    }

    /// Bit flips anywhere in the first 4 MiB (all structures).
    #[test]
    fn bit_flips(
        img in image_index(),
        flips in prop::collection::vec((0usize..4 * MIB as usize, 0u8..8), 1..16),
    ) {
        let img = &images()[img];
        let mut b = img.bytes().to_vec();
        for (at, bit) in flips {
            let at = at % b.len();
            b[at] ^= 1 << bit;
        }
        exercise(img, &b);
    }

    /// Any length: truncated inside any structure, or extended.
    #[test]
    fn truncation(
        img in image_index(),
        len in file_length(),
    ) {
        let img = &images()[img];
        let mut b = img.bytes().to_vec();
        b.resize(len, 0);
        exercise(img, &b);
    }

    /// Raw damage to the log of a dirty image (no checksum fixed: the entry
    /// becomes invalid, or a header points elsewhere).
    #[test]
    fn log_bytes(
        img in prop::sample::select(vec![DIRTY, DIRTY_CHILD]),
        edits in prop::collection::vec((0usize..16384, any::<u8>()), 1..8),
    ) {
        let img = &images()[img];
        let mut b = img.bytes().to_vec();
        let l = layout(&b);
        for (at, v) in edits {
            b[l.header.log_offset as usize + at] = v;
        }
        exercise(img, &b);
    }

    /// The log location in the current header, checksum recomputed.
    #[test]
    fn log_location(
        img in prop::sample::select(vec![DIRTY, DIRTY_CHILD, DYN512]),
        offset in field_value(),
        length in field_value(),
    ) {
        let img = &images()[img];
        let mut b = img.bytes().to_vec();
        let l = layout(&b);
        let h = H[l.header_slot];
        put64(&mut b, h + 72, offset);
        put32(&mut b, h + 68, length as u32);
        fix_crc(&mut b, h, HEADER_SIZE);
        let o = exercise(img, &b);
        let file_len = b.len() as u64;
        let length = length as u32 as u64;
        let sane = offset.is_multiple_of(MIB)
            && offset >= MIB
            && length.is_multiple_of(MIB)
            && length != 0
            && offset.checked_add(length).is_some_and(|e| e <= file_len);
        if !sane && l.header.log_guid != Uuid::nil() {
            let c = o.corruption();
            prop_assert!(matches!(c, Some(Corruption::BadLogLocation { .. })), "{:?}", c);
        }
    }

    #[test]
    fn log_entry_fields(
        img in prop::sample::select(vec![DIRTY, DIRTY_CHILD]),
        edit in 0usize..8,
        v in field_value(),
        extra in 0usize..3,
    ) {
        check_log_entry_fields(img, edit, v, extra)?;
    }
}

/// Log entries re-encoded with valid checksums and any field values:
/// sequence numbers, tails, file offsets, update targets, zero lengths.
fn check_log_entry_fields(
    img: usize,
    edit: usize,
    v: u64,
    extra: usize,
) -> Result<(), TestCaseError> {
    let img = &images()[img];
    let mut b = img.bytes().to_vec();
    let l = layout(&b);
    let lo = l.header.log_offset as usize;
    let log = &b[lo..lo + l.header.log_length as usize];
    let (mut e, _) =
        LogEntry::decode(log, 0, l.header.log_guid).expect("the dirty image has a log entry");
    match edit {
        0 => e.sequence_number = v,
        1 => e.tail = v as u32,
        2 => e.flushed_file_offset = v / MIB * MIB,
        3 => e.last_file_offset = v / MIB * MIB,
        4 => e.last_file_offset = v,
        5 => {
            let u = e.updates.len() - 1;
            if let LogUpdate::Data { file_offset, .. } = &mut e.updates[u] {
                *file_offset = v / 4096 * 4096;
            }
        }
        _ => {}
    }
    for i in 0..extra + (edit >= 6) as usize {
        let length = if edit == 7 {
            v / 4096 * 4096
        } else {
            4096 << i
        };
        let file_offset = (v / 4096 * 4096).wrapping_add(i as u64 * MIB);
        e.updates.push(LogUpdate::Zero {
            file_offset,
            length,
        });
    }
    let enc = e.encode();
    prop_assume!(enc.len() <= log.len());
    b[lo..lo + enc.len()].copy_from_slice(&enc);
    let o = exercise(img, &b);
    // The sequence number must not be 0 (§2.3.1.1).
    if edit == 0 && v == 0 {
        prop_assert_eq!(o.corruption(), Some(Corruption::NoValidLogSequence));
    }
    // A replay may grow the file by at most 1 GiB.
    if edit == 3 && e.last_file_offset > b.len() as u64 + GIB {
        let c = o.corruption();
        prop_assert!(
            matches!(c, Some(Corruption::LogGrowsFile { .. })),
            "{:?}",
            c
        );
    }
    Ok(())
}

/// Found by `log_entry_fields`: a LastFileOffset far past the file plus
/// zero descriptors that wrap to offset 0; the entry's own field is judged
/// first.
#[test]
fn log_entry_growing_the_file_and_writing_the_header_section() {
    check_log_entry_fields(DIRTY, 3, 18446744073708503040, 2).unwrap();
}

// ---------------------------------------------------------------------------
// Specific damage, specific errors

#[test]
fn every_image_is_valid_to_begin_with() {
    for img in images() {
        let o = exercise(img, img.bytes());
        assert!(
            o.read_only.is_ok() && o.writable_ok,
            "{}: {:?}",
            img.name,
            o.read_only.err()
        );
        let fs = img.install(img.bytes());
        let r = vhdx::check(&fs, img.path()).unwrap();
        assert!(r.is_valid(), "{}: {:?}", img.name, r.problems);
    }
}

#[test]
fn not_a_vhdx_file() {
    for img in images() {
        let mut b = img.bytes().to_vec();
        b[0] = b'V';
        assert_eq!(open_corruption(img, &b), Corruption::BadFileSignature);
        let fs = img.install(&b);
        let e = Chain::open(&fs, img.path(), false).err().unwrap();
        assert_eq!(e.corruption(), Some(&Corruption::BadFileSignature));
        assert!(check_problems(img, &b)[0].what.contains("vhdxfile"));
        // Files too short for the signature, or for anything after it.
        for len in [0, 7] {
            assert_eq!(
                open_corruption(img, &img.bytes()[..len]),
                Corruption::BadFileSignature
            );
        }
        for len in [8, 519, 4096, 65536] {
            assert_eq!(
                open_corruption(img, &img.bytes()[..len]),
                Corruption::NoValidHeader
            );
        }
    }
}

#[test]
fn both_headers_bad() {
    for img in images() {
        let mut b = img.bytes().to_vec();
        b[H[0]] = b'x';
        b[H[1] + 100] ^= 1;
        assert_eq!(open_corruption(img, &b), Corruption::NoValidHeader);
        let problems = check_problems(img, &b);
        assert!(
            problems.iter().any(|p| p.what.contains("signature")),
            "{problems:?}"
        );
        assert!(
            problems.iter().any(|p| p.what.contains("checksum")),
            "{problems:?}"
        );
    }
}

#[test]
fn one_bad_header_is_reported_and_repaired() {
    for img in images() {
        for slot in 0..2 {
            let mut b = img.bytes().to_vec();
            b[H[slot] + 40] ^= 0x20;
            let o = exercise(img, &b);
            assert!(o.read_only.is_ok(), "{}: {:?}", img.name, o.read_only.err());
            let problems = check_problems(img, &b);
            assert_eq!(problems.len(), 1, "{}: {problems:?}", img.name);
            assert_eq!(problems[0].offset, H[slot] as u64);
            assert!(problems[0].repairable);
            let fixed = repaired(img, &b);
            for h in H {
                Header::parse(&fixed[h..h + HEADER_SIZE]).unwrap();
            }
        }
    }
}

#[test]
fn unsupported_header_version() {
    let img = &images()[DYN512];
    let mut b = img.bytes().to_vec();
    for h in H {
        b[h + 66] = 2;
        fix_crc(&mut b, h, HEADER_SIZE);
    }
    assert_eq!(open_corruption(img, &b), Corruption::UnsupportedVersion(2));
}

#[test]
fn both_region_tables_bad() {
    for img in images() {
        let mut b = img.bytes().to_vec();
        b[RT[0] + 20] ^= 1;
        b[RT[1]] = 0;
        assert_eq!(open_corruption(img, &b), Corruption::NoValidRegionTable);
        let problems = check_problems(img, &b);
        assert!(
            problems
                .iter()
                .filter(|p| p.what.starts_with("region table copy"))
                .count()
                == 2,
            "{problems:?}"
        );
    }
}

#[test]
fn one_bad_region_table_is_reported_and_repaired() {
    for img in images() {
        for copy in 0..2 {
            let mut b = img.bytes().to_vec();
            b[RT[copy] + 17] ^= 0x40;
            let o = exercise(img, &b);
            assert!(o.read_only.is_ok(), "{}: {:?}", img.name, o.read_only.err());
            let problems = check_problems(img, &b);
            assert!(
                problems.iter().any(|p| p.offset == RT[copy] as u64
                    && p.repairable
                    && p.what.starts_with("region table copy")),
                "{}: {problems:?}",
                img.name
            );
            let fixed = repaired(img, &b);
            for t in RT {
                RegionTable::parse(&fixed[t..t + REGION_TABLE_SIZE]).unwrap();
            }
        }
    }
}

#[test]
fn unknown_required_region() {
    let img = &images()[DYN512];
    let mut b = img.bytes().to_vec();
    let g = Uuid::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0);
    for t in RT {
        let mut rt = RegionTable::parse(&b[t..t + REGION_TABLE_SIZE]).unwrap();
        rt.entries.push(RegionTableEntry {
            guid: g,
            file_offset: 100 * MIB,
            length: MIB as u32,
            required: true,
        });
        b[t..t + REGION_TABLE_SIZE].copy_from_slice(&rt.to_bytes());
    }
    assert_eq!(
        open_corruption(img, &b),
        Corruption::UnknownRequiredRegion(g)
    );
    // Not required: ignored.
    for t in RT {
        let mut rt = RegionTable::parse(&b[t..t + REGION_TABLE_SIZE]).unwrap();
        rt.entries.last_mut().unwrap().required = false;
        b[t..t + REGION_TABLE_SIZE].copy_from_slice(&rt.to_bytes());
    }
    exercise(img, &b).read_only.unwrap().unwrap();
}

#[test]
fn region_table_overflowing_the_address_space() {
    let img = &images()[DYN512];
    let mut b = img.bytes().to_vec();
    for t in RT {
        let mut rt = RegionTable::parse(&b[t..t + REGION_TABLE_SIZE]).unwrap();
        rt.entries[0].file_offset = u64::MAX / MIB * MIB;
        b[t..t + REGION_TABLE_SIZE].copy_from_slice(&rt.to_bytes());
    }
    assert!(matches!(
        open_corruption(img, &b),
        Corruption::NoValidRegionTable | Corruption::BadRegionLocation { .. }
    ));
}

#[test]
fn bad_metadata_signature() {
    for img in images() {
        let mut b = img.bytes().to_vec();
        let l = layout(&b);
        b[l.meta + 3] ^= 0x55;
        assert_eq!(open_corruption(img, &b), Corruption::BadMetadataSignature);
        exercise(img, &b);
    }
}

#[test]
fn unknown_required_metadata() {
    for img in images() {
        let mut b = img.bytes().to_vec();
        let l = layout(&b);
        let g = Uuid::from_u128(0xfeed_0000_0000_4000_8000_0000_0000_0001);
        let mut t = l.meta_table.clone();
        t.entries.push(MetadataTableEntry {
            item_id: g,
            offset: 0,
            length: 0,
            is_user: false,
            is_virtual_disk: false,
            is_required: true,
        });
        b[l.meta..l.meta + METADATA_TABLE_SIZE].copy_from_slice(&t.to_bytes());
        assert_eq!(
            open_corruption(img, &b),
            Corruption::UnknownRequiredMetadata(g)
        );
        // A user item marked required is unknown by definition.
        t.entries.last_mut().unwrap().is_user = true;
        b[l.meta..l.meta + METADATA_TABLE_SIZE].copy_from_slice(&t.to_bytes());
        assert_eq!(
            open_corruption(img, &b),
            Corruption::UnknownRequiredMetadata(g)
        );
        // Optional: ignored.
        t.entries.last_mut().unwrap().is_required = false;
        b[l.meta..l.meta + METADATA_TABLE_SIZE].copy_from_slice(&t.to_bytes());
        assert!(exercise(img, &b).read_only.is_ok());
    }
}

#[test]
fn bad_metadata_values() {
    let img = &images()[DYN512];
    let l = layout(img.bytes());
    let at = |id| l.meta + l.meta_table.find(id).unwrap().offset as usize;
    for (id, v) in [
        (FILE_PARAMETERS_GUID, 3 << 20),
        (FILE_PARAMETERS_GUID, 512 << 20),
        (LOGICAL_SECTOR_SIZE_GUID, 1024),
        (PHYSICAL_SECTOR_SIZE_GUID, 0),
        (VIRTUAL_DISK_SIZE_GUID, 0),
        (VIRTUAL_DISK_SIZE_GUID, 1000),
    ] {
        let mut b = img.bytes().to_vec();
        put32(&mut b, at(id), v);
        assert!(
            matches!(
                open_corruption(img, &b),
                Corruption::BadMetadataValue { .. }
            ),
            "{id} = {v}"
        );
    }
    let mut b = img.bytes().to_vec();
    put64(&mut b, at(VIRTUAL_DISK_SIZE_GUID), 65 * TIB);
    assert!(matches!(
        open_corruption(img, &b),
        Corruption::BadMetadataValue { .. }
    ));
}

#[test]
fn bat_too_small_for_the_disk() {
    for img in images() {
        let mut b = img.bytes().to_vec();
        let l = layout(&b);
        let at = l.meta + l.meta_table.find(VIRTUAL_DISK_SIZE_GUID).unwrap().offset as usize;
        put64(&mut b, at, 64 * TIB);
        assert!(
            matches!(open_corruption(img, &b), Corruption::BatTooSmall { .. }),
            "{}",
            img.name
        );
        exercise(img, &b);
    }
}

#[test]
fn bad_bat_states() {
    let img = &images()[DYN512];
    let l = layout(img.bytes());
    for state in [4u64, 5, 7] {
        let mut b = img.bytes().to_vec();
        put64(&mut b, l.bat + 8, state);
        assert_eq!(
            open_corruption(img, &b),
            Corruption::BadBatState {
                index: 1,
                state: state as u8,
                disk_type: "dynamic"
            }
        );
        let problems = check_problems(img, &b);
        assert!(
            problems
                .iter()
                .any(|p| p.offset == l.bat as u64 + 8 && !p.repairable),
            "{problems:?}"
        );
    }
}

#[test]
fn bat_entries_outside_the_file_are_repaired() {
    let img = &images()[DYN512];
    let l = layout(img.bytes());
    let mut b = img.bytes().to_vec();
    put64(&mut b, l.bat + 3 * 8, 6 | (100 * 1024) << 20); // block 3 at 100 GiB
    put64(&mut b, l.bat + 4 * 8, 6); // block 4 inside the header section
    assert!(matches!(
        open_corruption(img, &b),
        Corruption::BatPastEof { index: 3, .. }
    ));
    let problems = check_problems(img, &b);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems.iter().all(|p| p.repairable));
    let fixed = repaired(img, &b);
    let fs = img.install(&fixed);
    let v = Vhdx::open(&fs, img.path(), false).unwrap();
    let mut buf = vec![1u8; 2 * MIB as usize];
    v.read(3 * MIB, &mut buf).unwrap();
    assert!(buf.iter().all(|&x| x == 0));
    // Data elsewhere is intact.
    let mut buf = vec![0u8; 8192];
    v.read(4096, &mut buf).unwrap();
    assert_eq!(buf, pattern(8192, 1));
}

#[test]
fn bat_reserved_bits_are_repaired() {
    let img = &images()[DYN512];
    let l = layout(img.bytes());
    let mut b = img.bytes().to_vec();
    let e = u64::from_le_bytes(b[l.bat..l.bat + 8].try_into().unwrap());
    put64(&mut b, l.bat, e | 1 << 10);
    assert_eq!(
        open_corruption(img, &b),
        Corruption::BatReservedBits { index: 0 }
    );
    let fixed = repaired(img, &b);
    assert_eq!(
        u64::from_le_bytes(fixed[l.bat..l.bat + 8].try_into().unwrap()),
        e
    );
}

#[test]
fn partially_present_without_bitmap() {
    let img = &images()[CHILD];
    let l = layout(img.bytes());
    let mut b = img.bytes().to_vec();
    // Chunk ratio 4096: the sector bitmap entry of chunk 0 is entry 4096.
    put64(&mut b, l.bat + 4096 * 8, 0);
    assert_eq!(
        open_corruption(img, &b),
        Corruption::PartialWithoutBitmap { block: 0 }
    );
}

#[test]
fn damaged_log_is_reported_and_repaired() {
    for img in [&images()[DIRTY], &images()[DIRTY_CHILD]] {
        let mut b = img.bytes().to_vec();
        let l = layout(&b);
        assert_ne!(
            l.header.log_guid,
            Uuid::nil(),
            "{}: log is not dirty",
            img.name
        );
        b[l.header.log_offset as usize + 200] ^= 1;
        assert_eq!(open_corruption(img, &b), Corruption::NoValidLogSequence);
        let problems = check_problems(img, &b);
        assert!(
            problems
                .iter()
                .any(|p| p.repairable && p.what.contains("log")),
            "{problems:?}"
        );
        let fixed = repaired(img, &b);
        assert_eq!(layout(&fixed).header.log_guid, Uuid::nil());
    }
}

#[test]
fn dirty_log_replays_in_memory_and_in_place() {
    for img in [&images()[DIRTY], &images()[DIRTY_CHILD]] {
        let o = exercise(img, img.bytes());
        let fs = img.install(img.bytes());
        let v = Vhdx::open(&fs, img.path(), false).unwrap();
        assert!(v.log_was_replayed());
        assert_eq!(o.read_only.unwrap().unwrap(), read_vhdx(&v).unwrap());
        let fs = img.install(img.bytes());
        let r = vhdx::check(&fs, img.path()).unwrap();
        assert!(r.is_valid() && !r.notes.is_empty(), "{:?}", r);
    }
    // The replayed BAT page carries the data: without replay it would read
    // as zeros.
    let img = &images()[DIRTY];
    let fs = img.install(img.bytes());
    let v = Vhdx::open(&fs, img.path(), false).unwrap();
    let mut buf = vec![0u8; 65536];
    v.read(0, &mut buf).unwrap();
    assert_eq!(buf, pattern(65536, 8));
}

#[test]
fn truncated_file_with_a_dirty_log() {
    let img = &images()[DIRTY];
    let b = &img.bytes()[..4 * MIB as usize];
    assert!(matches!(
        open_corruption(img, b),
        Corruption::Truncated { .. }
    ));
}

#[test]
fn log_writing_into_the_header_section() {
    let img = &images()[DIRTY];
    let mut b = img.bytes().to_vec();
    let l = layout(&b);
    let lo = l.header.log_offset as usize;
    let (mut e, _) = LogEntry::decode(&b[lo..lo + MIB as usize], 0, l.header.log_guid).unwrap();
    e.updates.push(LogUpdate::Zero {
        file_offset: 64 * KIB,
        length: 4096,
    });
    let enc = e.encode();
    b[lo..lo + enc.len()].copy_from_slice(&enc);
    assert_eq!(
        open_corruption(img, &b),
        Corruption::LogWriteInHeaderSection { offset: 64 * KIB }
    );
}

#[test]
fn log_growing_the_file_too_far() {
    let img = &images()[DIRTY];
    let l = layout(img.bytes());
    let lo = l.header.log_offset as usize;
    let entry = || {
        LogEntry::decode(&img.bytes()[lo..lo + MIB as usize], 0, l.header.log_guid)
            .unwrap()
            .0
    };
    let len = img.bytes().len() as u64;
    let with = |e: LogEntry| {
        let mut b = img.bytes().to_vec();
        let enc = e.encode();
        b[lo..lo + enc.len()].copy_from_slice(&enc);
        b
    };
    // LastFileOffset far past the end, and an update far past the end.
    let mut e = entry();
    e.last_file_offset = TIB;
    let b = with(e);
    assert_eq!(
        open_corruption(img, &b),
        Corruption::LogGrowsFile {
            file_len: len,
            needed: TIB
        }
    );
    assert!(check_problems(img, &b)
        .iter()
        .any(|p| p.what.contains("grow the file")));
    exercise(img, &b);
    let mut e = entry();
    e.updates.push(LogUpdate::Zero {
        file_offset: u64::MAX / 4096 * 4096,
        length: 8192,
    });
    assert!(matches!(
        open_corruption(img, &with(e)),
        Corruption::LogGrowsFile { .. }
    ));
    // Growing a little (a size change that did not reach the disk) is fine,
    // in memory for a read-only open and in place for a writable one.
    let mut e = entry();
    e.last_file_offset = len + 8 * MIB;
    let b = with(e);
    let o = exercise(img, &b);
    assert!(o.read_only.is_ok() && o.writable_ok);
    let fs = img.install(&b);
    Vhdx::open(&fs, img.path(), true).unwrap().close().unwrap();
    assert_eq!(contents(&fs, img.path()).len() as u64, len + 8 * MIB);
}

#[test]
fn log_zeroing_too_much() {
    let img = &images()[DIRTY];
    let l = layout(img.bytes());
    let lo = l.header.log_offset as usize;
    let mut e = LogEntry::decode(&img.bytes()[lo..lo + MIB as usize], 0, l.header.log_guid)
        .unwrap()
        .0;
    // Many zero descriptors, each small, together more than 64 MiB.
    for i in 0..17 {
        e.updates.push(LogUpdate::Zero {
            file_offset: 4 * MIB + i * 4 * MIB,
            length: 4 * MIB,
        });
    }
    let mut b = img.bytes().to_vec();
    let enc = e.encode();
    b[lo..lo + enc.len()].copy_from_slice(&enc);
    let fs = img.install(&b);
    let err = Vhdx::open(&fs, img.path(), false).err().unwrap();
    assert!(matches!(err, vhdx::Error::Unsupported { .. }), "{err}");
    exercise(img, &b);
}

#[test]
fn truncated_inside_a_region() {
    for img in images() {
        let l = layout(img.bytes());
        let b = &img.bytes()[..l.bat + 4096];
        match open_corruption(img, b) {
            // A dirty log notices first that the file lost what it flushed.
            Corruption::Truncated { .. } => assert!(img.name.contains("dirty")),
            Corruption::RegionPastEof { guid, .. } => assert_eq!(guid, BAT_REGION_GUID),
            other => panic!("{}: {other:?}", img.name),
        }
        let b = &img.bytes()[..l.meta + 4096];
        assert!(matches!(
            open_corruption(img, b),
            Corruption::RegionPastEof { .. } | Corruption::Truncated { .. }
        ));
    }
}

#[test]
fn sequence_number_at_its_maximum() {
    let img = &images()[DYN512];
    let mut b = img.bytes().to_vec();
    let l = layout(&b);
    let h = H[l.header_slot];
    put64(&mut b, h + 8, u64::MAX);
    fix_crc(&mut b, h, HEADER_SIZE);
    let fs = img.install(&b);
    assert_eq!(
        Vhdx::open(&fs, img.path(), false)
            .unwrap()
            .header()
            .sequence_number,
        u64::MAX
    );
    let err = Vhdx::open(&fs, img.path(), true).err().unwrap();
    assert!(matches!(err, vhdx::Error::Unsupported { .. }), "{err}");
    assert_eq!(
        contents(&fs, img.path()),
        b,
        "the refused open changed the file"
    );
}

#[test]
fn corrupt_parent_locator() {
    let img = &images()[CHILD];
    let l = layout(img.bytes());
    let e = l.meta_table.find(PARENT_LOCATOR_GUID).unwrap();
    let at = l.meta + e.offset as usize;
    let mut b = img.bytes().to_vec();
    put32(&mut b, at + 20, 60000); // first key offset outside the item
    assert!(matches!(
        open_corruption(img, &b),
        Corruption::BadParentLocator(_)
    ));
    let mut b = img.bytes().to_vec();
    b[at + 18] = 0xff; // entry count beyond the item
    b[at + 19] = 0xff;
    assert!(matches!(
        open_corruption(img, &b),
        Corruption::BadParentLocator(_)
    ));
    // Every value pointing at the same long run of the item: together more
    // bytes than the item has.
    let mut b = img.bytes().to_vec();
    let n = b[at + 18] as usize;
    let whole = (e.length as usize - 20 - 12 * n) & !1;
    for i in 0..n {
        put32(&mut b, at + 20 + 12 * i + 4, (20 + 12 * n) as u32);
        b[at + 20 + 12 * i + 10..][..2].copy_from_slice(&(whole as u16).to_le_bytes());
    }
    match open_corruption(img, &b) {
        Corruption::BadParentLocator(why) => assert!(why.contains("more bytes"), "{why}"),
        other => panic!("{other:?}"),
    }
}

/// A differencing disk whose reads touch more sector bitmaps than are kept
/// in memory: dropped bitmaps are read again, and bitmaps with unflushed
/// changes are never dropped.
#[test]
fn many_sector_bitmaps() {
    let fs = CrashFs::new();
    let (base, child) = (Path::new("/b/base.vhdx"), Path::new("/b/child.avhdx"));
    let chunks = 70u64; // 512-byte sectors: a chunk is 4 GiB
    let chunk = (1u64 << 23) * 512;
    create(&fs, base, &opts(chunks * chunk, MIB, 512))
        .unwrap()
        .close()
        .unwrap();
    let mut c = create_child(&fs, child, base, None).unwrap();
    for k in 0..chunks {
        c.write(k * chunk + 512 * (k % 7), &pattern(512, k as u8))
            .unwrap();
        if k % 9 == 0 {
            c.flush().unwrap();
        }
    }
    let check_all = |v: &Vhdx| {
        let mut buf = vec![0u8; 4096];
        for k in (0..chunks).rev() {
            v.read(k * chunk, &mut buf).unwrap();
            let at = 512 * (k % 7) as usize;
            assert_eq!(&buf[at..at + 512], &pattern(512, k as u8)[..], "chunk {k}");
            assert!(
                buf[..at].iter().chain(&buf[at + 512..]).all(|&x| x == 0),
                "chunk {k}"
            );
        }
    };
    check_all(&c);
    c.close().unwrap();
    check_all(&Vhdx::open(&fs, child, false).unwrap());
    // Damaged: every sector bitmap entry points at the same megabyte.
    let mut b = contents(&fs, child);
    let l = layout(&b);
    let first = u64::from_le_bytes(b[l.bat + 4096 * 8..][..8].try_into().unwrap());
    for k in 0..chunks as usize {
        put64(&mut b, l.bat + (k * 4097 + 4096) * 8, first);
    }
    fs.insert(child, b);
    // Blocks sharing file space make every read ambiguous and every write
    // destructive: the open refuses the file and `check` names the overlap.
    let e = Vhdx::open(&fs, child, false)
        .err()
        .expect("overlapping bitmaps must not open");
    assert!(
        matches!(e.corruption(), Some(Corruption::Overlap(_))),
        "{e}"
    );
    let r = vhdx::check(&fs, child).unwrap();
    assert!(
        r.problems
            .iter()
            .any(|p| p.what.contains("use the same file space")),
        "{:?}",
        r.problems
    );
}

// ---------------------------------------------------------------------------
// Round trips

fn guid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

fn header() -> impl Strategy<Value = Header> {
    (
        any::<u64>(),
        guid(),
        guid(),
        guid(),
        any::<u16>(),
        any::<u16>(),
        any::<u32>(),
        any::<u64>(),
    )
        .prop_map(
            |(
                sequence_number,
                file_write_guid,
                data_write_guid,
                log_guid,
                log_version,
                version,
                log_length,
                log_offset,
            )| Header {
                sequence_number,
                file_write_guid,
                data_write_guid,
                log_guid,
                log_version,
                version,
                log_length,
                log_offset,
            },
        )
}

fn region_table() -> impl Strategy<Value = RegionTable> {
    prop::collection::vec((guid(), 1u64..1 << 40, 1u32..4095, any::<bool>()), 0..40).prop_map(|v| {
        RegionTable {
            entries: v
                .into_iter()
                .enumerate()
                .map(|(i, (g, mb, len_mb, required))| RegionTableEntry {
                    guid: Uuid::from_u128(g.as_u128() ^ i as u128),
                    file_offset: mb * MIB,
                    length: len_mb * MIB as u32,
                    required,
                })
                .collect(),
        }
    })
}

fn metadata_table() -> impl Strategy<Value = MetadataTable> {
    prop::collection::vec(
        (
            guid(),
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
            0u32..4096,
            0u32..256,
        ),
        0..60,
    )
    .prop_map(|v| {
        let mut at = METADATA_TABLE_SIZE as u32;
        let entries = v
            .into_iter()
            .enumerate()
            .map(
                |(i, (g, is_user, is_virtual_disk, is_required, len, gap))| {
                    let (offset, length) = if len == 0 { (0, 0) } else { (at + gap, len) };
                    if len > 0 {
                        at += gap + len;
                    }
                    MetadataTableEntry {
                        item_id: Uuid::from_u128(g.as_u128() ^ i as u128),
                        offset,
                        length,
                        is_user,
                        is_virtual_disk,
                        is_required,
                    }
                },
            )
            .collect();
        MetadataTable { entries }
    })
}

fn text() -> impl Strategy<Value = String> {
    "[^\u{0}]{1,40}"
}

fn parent_locator() -> impl Strategy<Value = ParentLocator> {
    (guid(), prop::collection::btree_map(text(), text(), 0..12)).prop_map(|(locator_type, m)| {
        ParentLocator {
            locator_type,
            entries: m.into_iter().collect(),
        }
    })
}

fn log_entry() -> impl Strategy<Value = LogEntry> {
    let update = prop_oneof![
        (0u64..1 << 40, any::<[u8; 32]>()).prop_map(|(o, fill)| {
            let data: Vec<u8> = (0..LOG_SECTOR_SIZE)
                .map(|i| fill[i % 32] ^ (i >> 5) as u8)
                .collect();
            LogUpdate::Data {
                file_offset: o * 4096,
                data: data.into_boxed_slice(),
            }
        }),
        (0u64..1 << 40, 0u64..1 << 20).prop_map(|(o, n)| LogUpdate::Zero {
            file_offset: o * 4096,
            length: n * 4096
        }),
    ];
    (
        1u64..,
        0u32..256,
        guid(),
        0u64..1 << 30,
        0u64..1 << 30,
        prop::collection::vec(update, 0..300),
    )
        .prop_map(
            |(sequence_number, tail, log_guid, flushed, last, updates)| LogEntry {
                sequence_number,
                tail: tail * 4096,
                log_guid,
                flushed_file_offset: flushed * MIB,
                last_file_offset: last * MIB,
                updates,
            },
        )
}

proptest! {
    #![proptest_config(config(128))]

    #[test]
    fn header_round_trip(h in header()) {
        let b = h.to_bytes();
        prop_assert_eq!(b.len(), HEADER_SIZE);
        prop_assert_eq!(Header::parse(&b).unwrap(), h);
    }

    #[test]
    fn region_table_round_trip(t in region_table()) {
        prop_assert_eq!(RegionTable::parse(&t.to_bytes()).unwrap(), t);
    }

    #[test]
    fn metadata_table_round_trip(t in metadata_table()) {
        prop_assert_eq!(MetadataTable::parse(&t.to_bytes(), 64 * MIB as u32).unwrap(), t);
    }

    #[test]
    fn parent_locator_round_trip(l in parent_locator()) {
        prop_assert_eq!(ParentLocator::parse(&l.to_bytes()).unwrap(), l);
    }

    #[test]
    fn file_parameters_round_trip(
        shift in 20u32..=28,
        leave_block_allocated in any::<bool>(),
        has_parent in any::<bool>(),
    ) {
        let p = FileParameters { block_size: 1 << shift, leave_block_allocated, has_parent };
        prop_assert_eq!(FileParameters::parse(&p.to_bytes()).unwrap(), p);
    }

    /// Encoded anywhere in a ring (wrapping at its end), an entry decodes to
    /// itself and is the active sequence when its tail is itself.
    #[test]
    fn log_entry_round_trip(mut e in log_entry(), at in 0usize..512) {
        let enc = e.encode();
        prop_assert_eq!(enc.len(), e.encoded_len());
        let ring = (enc.len() + 4096).next_multiple_of(MIB as usize);
        let at = at * 4096 % ring;
        let mut log = vec![0u8; ring];
        for (i, x) in enc.iter().enumerate() {
            log[(at + i) % ring] = *x;
        }
        let (d, len) = LogEntry::decode(&log, at, e.log_guid).unwrap();
        prop_assert_eq!(len, enc.len());
        prop_assert_eq!(&d, &e);
        e.tail = at as u32;
        let enc = e.encode();
        for (i, x) in enc.iter().enumerate() {
            log[(at + i) % ring] = *x;
        }
        prop_assert_eq!(find_active_sequence(&log, e.log_guid), Some(vec![e]));
    }
}

// ---------------------------------------------------------------------------
// Parsers on arbitrary bytes

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn parsers_take_any_bytes(
        b in prop::collection::vec(any::<u8>(), 0..70_000),
        region_len in any::<u32>(),
    ) {
        let _ = Header::parse(&b);
        let _ = RegionTable::parse(&b);
        let _ = MetadataTable::parse(&b, region_len);
        let _ = ParentLocator::parse(&b);
        let _ = FileParameters::parse(&b);
        let _ = vhdx::known_meta::parse_virtual_disk_size(&b, 512);
        let _ = vhdx::known_meta::parse_sector_size(&b, "Logical Sector Size");
        let _ = vhdx::file_id::FileTypeIdentifier::parse(&b);
        for at in [0, 4096, b.len()] {
            let _ = LogEntry::decode(&b, at, Uuid::nil());
        }
        let _ = find_active_sequence(&b, Uuid::nil());
    }

    /// Structures with valid signatures and checksums but random contents.
    #[test]
    fn parsers_take_any_checksummed_structure(
        mut b in prop::collection::vec(any::<u8>(), 65536),
        region_len in any::<u32>(),
        count in 0u32..3000,
    ) {
        b[0..4].copy_from_slice(HEADER_SIGNATURE);
        fix_crc(&mut b, 0, HEADER_SIZE);
        let _ = Header::parse(&b);
        b[0..4].copy_from_slice(REGION_TABLE_SIGNATURE);
        put32(&mut b, 8, count);
        fix_crc(&mut b, 0, REGION_TABLE_SIZE);
        let _ = RegionTable::parse(&b);
        b[0..8].copy_from_slice(METADATA_TABLE_SIGNATURE);
        b[10..12].copy_from_slice(&(count as u16).to_le_bytes());
        let _ = MetadataTable::parse(&b, region_len);
        b[18..20].copy_from_slice(&(count as u16).to_le_bytes());
        let _ = ParentLocator::parse(&b);
    }
}

/// Log entries with valid checksums whose length is the whole ring, whose
/// tail points at themselves: the search for the active sequence must end.
#[test]
fn log_search_terminates_on_a_ring_sized_entry() {
    let g = Uuid::from_u128(7);
    let ring = 64 * 1024;
    let n = ring / LOG_SECTOR_SIZE - 1;
    let data = vec![0u8; LOG_SECTOR_SIZE].into_boxed_slice();
    let e = LogEntry {
        sequence_number: 5,
        tail: 0,
        log_guid: g,
        flushed_file_offset: MIB,
        last_file_offset: 2 * MIB,
        updates: (0..n)
            .map(|i| LogUpdate::Data {
                file_offset: 2 * MIB + i as u64 * 4096,
                data: data.clone(),
            })
            .collect(),
    };
    let log = e.encode();
    assert_eq!(log.len(), ring);
    assert_eq!(find_active_sequence(&log, g), Some(vec![e]));
}

/// A log full of entry headers that claim the whole ring but fail their
/// checksum: the search must stay linear, not checksum the ring once per
/// sector.
#[test]
fn log_search_is_fast_on_many_false_entries() {
    let g = Uuid::from_u128(9);
    let ring = 32 * MIB as usize;
    let mut log = vec![0u8; ring];
    for at in (0..ring).step_by(LOG_SECTOR_SIZE) {
        log[at..at + 4].copy_from_slice(LOG_ENTRY_SIGNATURE);
        put32(&mut log, at + 8, ring as u32);
        put64(&mut log, at + 16, 1);
        log[at + 32..at + 48].copy_from_slice(&g.to_bytes_le());
    }
    let t = std::time::Instant::now();
    assert_eq!(find_active_sequence(&log, g), None);
    assert!(
        t.elapsed() < std::time::Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
}

/// Whatever a damaged image maps to, a block's stored data is found where
/// `resolve` says.
#[test]
fn resolve_points_inside_the_file() {
    for img in images() {
        let fs = img.install(img.bytes());
        let v = Vhdx::open(&fs, img.path(), false).unwrap();
        for x in v.resolve(0, v.virtual_size()).unwrap() {
            if let Source::File(f) = x.source {
                assert!(f + x.len <= img.bytes().len() as u64, "{}: {x:?}", img.name);
            }
        }
    }
}
