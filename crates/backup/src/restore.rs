//! Reading a repository back: restore a point as one flat image, verify
//! the chain against the manifests, consolidate old points into a full.

use crate::error::{BackupError, Result};
use crate::export::hash;
use crate::manifest::{DiskManifest, Manifest, HASH_BLOCK};
use crate::repo::{point_dir, Repo};
use serde::Serialize;
use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use storage::Fs;
use vdisk::copy::{copy_into, CopyOptions, Format, Output};
use vhdx::{locator, Chain, CreateOptions, DiskType, Vhdx};

/// Writes the content of `chain` as a flat image at `dst` (a dynamic VHDX
/// with the sectors of the chain, or a raw file) through the copy engine:
/// the image appears under its name only once complete and durable, and a
/// failed copy leaves nothing behind. Returns the bytes written.
pub fn flatten(
    fs: &dyn Fs,
    chain: &Chain,
    dst: &Path,
    format: Format,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u64> {
    let opts = CreateOptions {
        virtual_size: chain.virtual_size(),
        disk_type: DiskType::Dynamic,
        block_size: crate::export::FULL_BLOCK_SIZE,
        logical_sector_size: chain.logical_sector_size(),
        physical_sector_size: chain.top().physical_sector_size(),
    };
    let out = Output::create(fs, dst, format, &opts)?;
    Ok(copy_into(chain, out, CopyOptions::default(), progress)?.bytes_written)
}

/// Restores `disk` (or every disk, into directory `to`) of a point.
pub fn restore(
    fs: &dyn Fs,
    dir: &Path,
    point: Option<u32>,
    disk: Option<&str>,
    to: &Path,
    format: Format,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Vec<PathBuf>> {
    crate::host::refuse_without_machine(fs, dir, point)?;
    let repo = Repo::new(fs, dir);
    let n = repo.resolve_point(point)?;
    let m = repo.manifest(n)?;
    let ext = format.extension();
    let targets: Vec<(String, PathBuf)> = match disk {
        Some(d) => vec![(d.to_string(), to.to_path_buf())],
        None if m.disks.len() == 1 => vec![(m.disks[0].name.clone(), to.to_path_buf())],
        None => {
            fs.create_dir_all(to).map_err(|source| BackupError::Io {
                path: to.display().to_string(),
                op: "creating",
                source,
            })?;
            m.disks
                .iter()
                .map(|d| (d.name.clone(), to.join(format!("{}.{ext}", d.name))))
                .collect()
        }
    };
    let mut out = Vec::new();
    for (d, dst) in targets {
        let chain = Chain::open(fs, &repo.disk_file(n, &d)?, false)?;
        flatten(fs, &chain, &dst, format, progress)?;
        out.push(dst);
    }
    Ok(out)
}

/// The first block of a point that does not match its manifest.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct BadBlock {
    /// In a host repository: the machine whose point it is.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine: Option<String>,
    pub point: u32,
    pub disk: String,
    /// `"file"`: `offset` is a byte offset in `file` (its bytes differ from
    /// what was written); `"content"`: a virtual-disk offset (the disk's
    /// content differs from what was backed up).
    pub scope: &'static str,
    pub offset: u64,
    /// The file that holds the bad data.
    pub file: String,
    pub problem: String,
}

/// Verification of a repository.
#[derive(Debug, Clone, Serialize, Default)]
pub struct VerifyReport {
    pub points_checked: Vec<u32>,
    /// Virtual-disk bytes re-hashed against the content hashes.
    pub bytes_checked: u64,
    /// File bytes re-hashed against the file hashes.
    pub file_bytes_checked: u64,
    pub first_bad: Option<BadBlock>,
    /// In a host repository (whose `points_checked` are host points): the
    /// points checked of each machine.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub machines: Vec<MachineVerified>,
}

/// The points of one machine a verification of a host repository checked.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct MachineVerified {
    pub machine: String,
    pub points_checked: Vec<u32>,
}

/// The files of a disk's chain at point `m`, oldest (the full) first:
/// `(point, manifest of the disk there)` through the `parent_point` links.
fn chain_files(
    repo: &Repo,
    m: &Manifest,
    disk: &DiskManifest,
    cache: &mut HashMap<u32, Manifest>,
) -> std::result::Result<Vec<(u32, DiskManifest)>, String> {
    let mut out = vec![(m.point, disk.clone())];
    while let Some(pp) = out.last().unwrap().1.parent_point {
        if out.len() > vhdx::MAX_CHAIN_DEPTH {
            return Err(format!("the chain of point {} loops", m.point));
        }
        let pm = match cache.entry(pp) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => e.insert(
                repo.manifest(pp)
                    .map_err(|e| format!("parent point {pp} is unusable: {e}"))?,
            ),
        };
        let pd = pm
            .disks
            .iter()
            .find(|d| d.name == disk.name)
            .ok_or_else(|| format!("parent point {pp} has no disk {:?}", disk.name))?
            .clone();
        out.push((pp, pd));
    }
    out.reverse();
    Ok(out)
}

/// Re-hashes a file against its manifest's file hashes; the offset of the
/// first bad block and what is wrong, if any.
fn check_file(
    repo: &Repo,
    path: &Path,
    d: &DiskManifest,
    checked: &mut u64,
) -> Option<(u64, String)> {
    // The same hashing as at export (holes are not read), so verifying a
    // sparse differential costs what it holds, not its apparent size.
    let (len, hashes) = match repo.hash_file(path) {
        Ok(h) => h,
        Err(e) => return Some((0, format!("cannot be read: {e}"))),
    };
    // Blocks that lie wholly inside both lengths compare by hash; a length
    // difference is reported as such.
    let common = len.min(d.file_size);
    for (i, (have, want)) in hashes.iter().zip(&d.file_hashes).enumerate() {
        let off = i as u64 * HASH_BLOCK;
        let n = HASH_BLOCK.min(len - off);
        if off + n > common || off + HASH_BLOCK.min(d.file_size - off) > common {
            break;
        }
        *checked += n;
        if have != want {
            return Some((
                off,
                format!(
                    "file bytes {off}..{} do not match the manifest's BLAKE3 hash",
                    off + n
                ),
            ));
        }
    }
    if len != d.file_size {
        let what = if len < d.file_size {
            ": it was truncated"
        } else {
            ""
        };
        return Some((
            len.min(d.file_size),
            format!(
                "the file is {len} bytes, the manifest says {}{what}",
                d.file_size
            ),
        ));
    }
    None
}

/// Re-hashes each disk at `point` (every point if `None`) against the
/// manifests, stopping at the first bad block: first the bytes of every
/// file of its chain (the full and each differential up to the point), so
/// damage anywhere in a file is found, then the content the chain reads as.
/// A host repository is verified host point by host point (`point` is
/// then a host point): each record must name complete machine points from
/// the recorded checkpoints, and those points re-hash as above.
pub fn verify(
    fs: &dyn Fs,
    dir: &Path,
    point: Option<u32>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<VerifyReport> {
    if crate::host::is_host_repo(fs, dir)? {
        return crate::host::verify(fs, dir, point, progress);
    }
    let repo = Repo::new(fs, dir);
    let points: Vec<Manifest> = match point {
        Some(n) => vec![repo.manifest(repo.resolve_point(Some(n))?)?],
        None => repo.points()?,
    };
    if points.is_empty() {
        return Err(BackupError::Empty {
            dir: repo.dir.to_path_buf(),
        });
    }
    let mut r = VerifyReport::default();
    let mut cache: HashMap<u32, Manifest> = points.iter().map(|m| (m.point, m.clone())).collect();
    // Files already re-hashed (a full is part of every later point's chain).
    let mut files_ok: HashSet<PathBuf> = HashSet::new();
    for m in &points {
        r.points_checked.push(m.point);
        for d in &m.disks {
            let file = point_dir(&repo.dir, m.point).join(&d.file);
            let bad = |scope, offset, file: String, problem: String| BadBlock {
                machine: None,
                point: m.point,
                disk: d.name.clone(),
                scope,
                offset,
                file,
                problem,
            };
            let chain_files = match chain_files(&repo, m, d, &mut cache) {
                Ok(c) => c,
                Err(why) => {
                    r.first_bad = Some(bad("file", 0, file.display().to_string(), why));
                    return Ok(r);
                }
            };
            for (p, cd) in &chain_files {
                let path = point_dir(&repo.dir, *p).join(&cd.file);
                if cd.file_hashes.is_empty() || files_ok.contains(&path) {
                    continue;
                }
                if let Some((off, why)) = check_file(&repo, &path, cd, &mut r.file_bytes_checked) {
                    r.first_bad = Some(bad("file", off, path.display().to_string(), why));
                    return Ok(r);
                }
                files_ok.insert(path);
            }
            let chain = match Chain::open(fs, &file, false) {
                Ok(c) => c,
                Err(e) => {
                    let f = match &e {
                        vhdx::Error::Corrupt { file, .. } | vhdx::Error::Io { file, .. } => {
                            file.clone()
                        }
                        _ => file.display().to_string(),
                    };
                    r.first_bad = Some(bad("file", 0, f, e.to_string()));
                    return Ok(r);
                }
            };
            let blocks = d.virtual_size.div_ceil(HASH_BLOCK);
            if d.hashes.len() as u64 != blocks {
                let why = format!(
                    "the manifest lists {} content hashes for a {}-byte disk, which has {blocks} blocks of {HASH_BLOCK} bytes",
                    d.hashes.len(),
                    d.virtual_size
                );
                r.first_bad = Some(bad("manifest", 0, file.display().to_string(), why));
                return Ok(r);
            }
            let mut buf = vec![0u8; HASH_BLOCK as usize];
            let zero_hash = hash(&vec![0u8; HASH_BLOCK as usize]);
            for (i, want) in d.hashes.iter().enumerate() {
                let off = i as u64 * HASH_BLOCK;
                let len = HASH_BLOCK.min(d.virtual_size - off);
                // Blocks no file of the chain stores read as zeros: no need
                // to read them (the files themselves were re-hashed above).
                let stored = chain.map(off, len)?.iter().any(|x| x.2.is_some());
                if !stored && len == HASH_BLOCK {
                    r.bytes_checked += len;
                    if zero_hash != *want {
                        r.first_bad = Some(bad(
                            "content",
                            off,
                            file.display().to_string(),
                            "block reads as zeros but the manifest's hash is of data".into(),
                        ));
                        return Ok(r);
                    }
                    progress(off + len, d.virtual_size);
                    continue;
                }
                let b = &mut buf[..len as usize];
                if let Err(e) = chain.read(off, b) {
                    r.first_bad = Some(bad(
                        "content",
                        off,
                        file.display().to_string(),
                        e.to_string(),
                    ));
                    return Ok(r);
                }
                r.bytes_checked += len;
                if hash(b) != *want {
                    // Name the file holding the data of the first bad byte
                    // range: the chain layer the block's data comes from.
                    let holder = chain
                        .map(off, len)?
                        .into_iter()
                        .find_map(|x| x.2)
                        .map(|l| chain.layers()[l].name().to_string())
                        .unwrap_or_else(|| file.display().to_string());
                    r.first_bad = Some(bad(
                        "content",
                        off,
                        holder,
                        "content does not match the manifest's BLAKE3 hash".into(),
                    ));
                    return Ok(r);
                }
                progress(off + len, d.virtual_size);
            }
        }
    }
    Ok(r)
}

/// Merges the oldest points into a synthetic full so that `keep` points
/// remain; returns the points removed. A consolidation that was cut short
/// is finished first (see [`finish_interrupted_consolidation`]). A host
/// repository keeps `keep` host points: the older records go, then each
/// machine's repository is consolidated down to the points they name.
pub fn consolidate(
    fs: &dyn Fs,
    dir: &Path,
    keep: usize,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Vec<u32>> {
    if keep == 0 {
        return Err(BackupError::KeepNone);
    }
    if crate::host::is_host_repo(fs, dir)? {
        return crate::host::consolidate(fs, dir, keep, progress);
    }
    let repo = Repo::new(fs, dir);
    let (mut removed, _) = finish_interrupted(&repo, progress)?;
    let points = repo.points()?;
    if points.len() > keep {
        let k = points[points.len() - keep].point;
        removed.extend(consolidate_into(&repo, &points, k, progress)?);
    }
    Ok(removed)
}

/// Finishes a consolidation that was cut short, if there is one; returns
/// what it did, for the log of the run that found it.
///
/// Such a point holds a full file (`<disk>.vhdx`, present only once it was
/// completely written) next to the differential its manifest still names,
/// and the next point's file may already point at the full: its bytes then
/// no longer match its manifest until the consolidation finishes.
pub fn finish_interrupted_consolidation(
    fs: &dyn Fs,
    dir: &Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Vec<String>> {
    let repo = Repo::new(fs, dir);
    Ok(finish_interrupted(&repo, progress)?.1)
}

fn finish_interrupted(
    repo: &Repo,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<(Vec<u32>, Vec<String>)> {
    let (mut removed, mut notes) = (Vec::new(), Vec::new());
    loop {
        let points = repo.points()?;
        let started = points.iter().find(|m| {
            m.disks.iter().any(|d| {
                d.parent_point.is_some()
                    && repo
                        .fs
                        .exists(&point_dir(&repo.dir, m.point).join(full_name(&d.name)))
                        .unwrap_or(true)
            })
        });
        let Some(k) = started.map(|m| m.point) else {
            break;
        };
        let r = consolidate_into(repo, &points, k, progress)?;
        notes.push(format!(
            "finished an interrupted consolidation into point {k} (removed points {r:?})"
        ));
        removed.extend(r);
    }
    Ok((removed, notes))
}

fn full_name(disk: &str) -> String {
    format!("{disk}.vhdx")
}

/// Makes point `k` a full and removes the older points.
///
/// Each step can be cut short (a crash, a full disk) and the whole run
/// redone: the full is written under a temporary name and renamed only
/// once complete, and kept if a run before got that far (the next point
/// may already point at it); re-pointing the next point's file is skipped
/// when done; the manifests change only after the files, the next point's
/// first; points go newest first, each manifest first.
fn consolidate_into(
    repo: &Repo,
    points: &[Manifest],
    k: u32,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Vec<u32>> {
    let fs = repo.fs;
    let first_kept = points
        .iter()
        .find(|p| p.point == k)
        .cloned()
        .ok_or_else(|| BackupError::NoPoint {
            dir: repo.dir.to_path_buf(),
            point: k,
        })?;
    let next = points.iter().find(|p| p.point > k).cloned();
    let mut next_manifest = next.clone();
    let kdir = point_dir(&repo.dir, k);
    let mut manifest = first_kept.clone();
    for d in manifest.disks.iter_mut() {
        if d.parent_point.is_none() {
            continue;
        }
        // 1. flatten point k into a full file next to its differential.
        let full_name = full_name(&d.name);
        let full = kdir.join(&full_name);
        let old = kdir.join(&d.file);
        if !repo.exists(&full)? {
            // The full gets its name only once complete, and durably so,
            // before the next point is re-pointed at it (see `flatten`).
            // Earlier versions wrote the full as `.<name>.consolidating`;
            // one of their runs cut short may have left it.
            let legacy = kdir.join(format!(".{full_name}.consolidating"));
            if repo.exists(&legacy)? {
                fs.remove(&legacy).map_err(repo.io(&legacy, "removing"))?;
            }
            let chain = Chain::open(fs, &old, false)?;
            flatten(fs, &chain, &full, Format::Vhdx, progress)?;
        }
        let guid = Vhdx::open(fs, &full, false)?.data_write_guid();
        (d.file_size, d.file_hashes) = repo.hash_file(&full)?;
        // 2. re-point the next point's differential at the new full.
        if let Some(nd) = next_manifest.as_mut().and_then(|n| {
            n.disks
                .iter_mut()
                .find(|x| x.name == d.name && x.parent_point == Some(k))
        }) {
            let np = next.as_ref().unwrap().point;
            let nfile = point_dir(&repo.dir, np).join(&nd.file);
            let v = Vhdx::open(fs, &nfile, false)?;
            let done = matches!(vhdx::open_parent(fs, &nfile, &v, false), Ok((p, _)) if p == full);
            drop(v);
            if !done {
                let mut v = Vhdx::open(fs, &nfile, true)?;
                let rel = vhdx::paths::relative_to(nfile.parent().unwrap(), &full);
                let loc = locator::ParentLocator::new_vhdx(
                    guid,
                    &locator::to_locator_path(&rel.to_string_lossy()),
                    &full.to_string_lossy(),
                );
                v.set_parent_locator(loc)?;
                v.close()?;
            }
            // Its bytes changed (locator, headers, log): new file hashes.
            (nd.file_size, nd.file_hashes) = repo.hash_file(&nfile)?;
        }
        d.file = full_name;
        d.parent_point = None;
        d.since_rct_id = None;
        d.full_reason = Some("consolidated".into());
    }
    manifest.kind = "full".into();
    // 3. the manifests: the next point's first (its file changed already);
    //    from point k's on, the full is what point k is.
    if let (Some(n), Some(old)) = (&next_manifest, &next) {
        if n != old {
            repo.write_manifest(n)?;
        }
    }
    if manifest != first_kept {
        repo.write_manifest(&manifest)?;
    }
    // 4. remove what is no longer referenced: point k's differentials, then
    //    the older points, newest first, so that every point still complete
    //    keeps the whole chain it reads through.
    for d in &first_kept.disks {
        if d.parent_point.is_some() {
            let old = kdir.join(&d.file);
            if repo.exists(&old)? {
                fs.remove(&old).map_err(repo.io(&old, "removing"))?;
            }
        }
    }
    let mut removed = Vec::new();
    for p in points.iter().rev().filter(|p| p.point < k) {
        repo.remove_point_files(&point_dir(&repo.dir, p.point))?;
        removed.push(p.point);
    }
    removed.reverse();
    Ok(removed)
}
