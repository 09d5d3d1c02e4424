//! Reading a repository back: restore a point as one flat image, verify
//! the chain against the manifests, consolidate old points into a full.

use crate::error::{BackupError, Result};
use crate::export::hash;
use crate::manifest::{Manifest, HASH_BLOCK};
use crate::repo::{point_dir, Repo};
use serde::Serialize;
use std::path::{Path, PathBuf};
use storage::Fs;
use vhdx::{create, locator, Chain, CreateOptions, DiskType, Vhdx};

/// Output format of a restore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestoreFormat {
    Vhdx,
    Raw,
}

/// Writes the content of `chain` as a flat image at `dst`.
pub fn flatten(
    fs: &dyn Fs,
    chain: &Chain,
    dst: &Path,
    format: RestoreFormat,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<u64> {
    if fs.exists(dst) {
        return Err(BackupError::Repository(format!(
            "{} already exists; choose another destination",
            dst.display()
        )));
    }
    let size = chain.virtual_size();
    let io = |op| {
        let p = dst.display().to_string();
        move |source| BackupError::Io {
            path: p,
            op,
            source,
        }
    };
    enum Out {
        V(Box<Vhdx>),
        R(std::sync::Arc<dyn storage::Storage>),
    }
    let mut out = match format {
        RestoreFormat::Vhdx => Out::V(Box::new(create(
            fs,
            dst,
            &CreateOptions {
                virtual_size: size,
                disk_type: DiskType::Dynamic,
                block_size: crate::export::FULL_BLOCK_SIZE,
                logical_sector_size: chain.logical_sector_size(),
                physical_sector_size: chain.top().physical_sector_size(),
            },
        )?)),
        RestoreFormat::Raw => {
            let f = fs.create(dst).map_err(io("creating"))?;
            f.set_len(size).map_err(io("sizing"))?;
            Out::R(f)
        }
    };
    let chunk = 8 << 20;
    let mut buf = vec![0u8; chunk as usize];
    let mut written = 0;
    let mut pos = 0;
    while pos < size {
        let len = chunk.min(size - pos);
        for (o, l, layer) in chain.map(pos, len)? {
            if layer.is_none() {
                continue;
            }
            let b = &mut buf[..l as usize];
            chain.read(o, b)?;
            match &mut out {
                Out::V(v) => v.write(o, b)?,
                Out::R(f) => f.write_at(o, b).map_err(io("writing"))?,
            }
            written += l;
        }
        pos += len;
        progress(pos, size);
    }
    match out {
        Out::V(v) => v.close()?,
        Out::R(f) => f.flush().map_err(io("flushing"))?,
    }
    Ok(written)
}

/// Restores `disk` (or every disk, into directory `to`) of a point.
pub fn restore(
    fs: &dyn Fs,
    dir: &Path,
    point: Option<u32>,
    disk: Option<&str>,
    to: &Path,
    format: RestoreFormat,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Vec<PathBuf>> {
    let repo = Repo::new(fs, dir);
    let n = repo.resolve_point(point)?;
    let m = repo.manifest(n)?;
    let ext = if format == RestoreFormat::Vhdx {
        "vhdx"
    } else {
        "img"
    };
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
    pub point: u32,
    pub disk: String,
    pub offset: u64,
    /// The file that holds the bad data.
    pub file: String,
    pub problem: String,
}

/// Verification of a repository.
#[derive(Debug, Clone, Serialize, Default)]
pub struct VerifyReport {
    pub points_checked: Vec<u32>,
    pub bytes_checked: u64,
    pub first_bad: Option<BadBlock>,
}

/// Re-hashes the chain of each disk at `point` (every point if `None`)
/// against the manifests; stops at the first bad block.
pub fn verify(
    fs: &dyn Fs,
    dir: &Path,
    point: Option<u32>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<VerifyReport> {
    let repo = Repo::new(fs, dir);
    let points: Vec<Manifest> = match point {
        Some(n) => vec![repo.manifest(repo.resolve_point(Some(n))?)?],
        None => repo.points()?,
    };
    if points.is_empty() {
        return Err(BackupError::Repository(format!(
            "{} holds no backup",
            repo.dir.display()
        )));
    }
    let mut r = VerifyReport::default();
    for m in &points {
        r.points_checked.push(m.point);
        for d in &m.disks {
            let file = point_dir(&repo.dir, m.point).join(&d.file);
            let bad = |offset, file: String, problem: String| BadBlock {
                point: m.point,
                disk: d.name.clone(),
                offset,
                file,
                problem,
            };
            let chain = match Chain::open(fs, &file, false) {
                Ok(c) => c,
                Err(e) => {
                    let f = match &e {
                        vhdx::Error::Corrupt { file, .. } | vhdx::Error::Io { file, .. } => {
                            file.clone()
                        }
                        _ => file.display().to_string(),
                    };
                    r.first_bad = Some(bad(0, f, e.to_string()));
                    return Ok(r);
                }
            };
            let mut buf = vec![0u8; HASH_BLOCK as usize];
            for (i, want) in d.hashes.iter().enumerate() {
                let off = i as u64 * HASH_BLOCK;
                let len = HASH_BLOCK.min(d.virtual_size - off);
                let b = &mut buf[..len as usize];
                if let Err(e) = chain.read(off, b) {
                    r.first_bad = Some(bad(off, file.display().to_string(), e.to_string()));
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
/// remain; returns the points removed.
pub fn consolidate(
    fs: &dyn Fs,
    dir: &Path,
    keep: usize,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Vec<u32>> {
    if keep == 0 {
        return Err(BackupError::Repository("--keep must be at least 1".into()));
    }
    let repo = Repo::new(fs, dir);
    let points = repo.points()?;
    if points.len() <= keep {
        return Ok(vec![]);
    }
    let first_kept = points[points.len() - keep].clone();
    let next = points.iter().find(|p| p.point > first_kept.point).cloned();
    let k = first_kept.point;
    let kdir = point_dir(&repo.dir, k);
    let mut manifest = first_kept.clone();
    for d in manifest.disks.iter_mut() {
        if d.parent_point.is_none() {
            continue;
        }
        // 1. flatten point k into a full file next to its differential.
        let full_name = format!("{}.vhdx", d.name);
        let full = kdir.join(&full_name);
        let old = kdir.join(&d.file);
        let tmp = kdir.join(format!(".{full_name}.consolidating"));
        if fs.exists(&tmp) {
            fs.remove(&tmp).map_err(repo.io(&tmp, "removing"))?;
        }
        let chain = Chain::open(fs, &old, false)?;
        flatten(fs, &chain, &tmp, RestoreFormat::Vhdx, progress)?;
        drop(chain);
        fs.rename(&tmp, &full).map_err(repo.io(&full, "renaming"))?;
        let guid = Vhdx::open(fs, &full, false)?.data_write_guid();
        // 2. re-point the next point's differential at the new full.
        if let Some(nd) = next.as_ref().and_then(|n| {
            n.disks
                .iter()
                .find(|x| x.name == d.name && x.parent_point == Some(k))
        }) {
            let nfile = point_dir(&repo.dir, next.as_ref().unwrap().point).join(&nd.file);
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
        d.file = full_name;
        d.parent_point = None;
        d.since_rct_id = None;
        d.full_reason = Some("consolidated".into());
        // 3. the old differential goes once the manifest no longer names it.
        let _ = old;
    }
    manifest.kind = "full".into();
    repo.write_manifest(&manifest)?;
    // 4. remove what is no longer referenced.
    for d in &first_kept.disks {
        if d.parent_point.is_some() {
            let old = kdir.join(&d.file);
            if fs.exists(&old) {
                fs.remove(&old).map_err(repo.io(&old, "removing"))?;
            }
        }
    }
    let mut removed = Vec::new();
    for p in points.iter().filter(|p| p.point < k) {
        repo.remove_point_files(&point_dir(&repo.dir, p.point))?;
        removed.push(p.point);
    }
    Ok(removed)
}
