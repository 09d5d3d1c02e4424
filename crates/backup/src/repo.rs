//! A backup repository: a directory of numbered points,
//!
//! ```text
//! <repo>/0001/manifest.json  disk0.vhdx            (full)
//! <repo>/0002/manifest.json  disk0.avhdx → ../0001/disk0.vhdx
//! <repo>/0003/manifest.json  disk0.avhdx → ../0002/disk0.avhdx
//! ```
//!
//! so every point's file is the top of a valid VHDX chain. A directory
//! without a manifest is an interrupted backup and is removed by the next.

use crate::cv;
use crate::error::{BackupError, Result};
use crate::manifest::{Manifest, ManifestHead, HASH_BLOCK, MANIFEST_NAME};
use std::path::{Path, PathBuf};
use storage::{Fs, OpenMode};

pub struct Repo<'a> {
    pub fs: &'a dyn Fs,
    pub dir: PathBuf,
}

/// The error of an I/O operation `op` on `path`, for `map_err`.
pub(crate) fn io_error(
    path: &Path,
    op: &'static str,
) -> impl FnOnce(std::io::Error) -> BackupError {
    let path = path.display().to_string();
    move |source| BackupError::Io { path, op, source }
}

pub fn point_dir(dir: &Path, point: u32) -> PathBuf {
    dir.join(format!("{point:04}"))
}

impl<'a> Repo<'a> {
    pub fn new(fs: &'a dyn Fs, dir: &Path) -> Self {
        Self {
            fs,
            dir: vhdx::paths::absolute(dir),
        }
    }

    pub(crate) fn io(
        &self,
        path: &Path,
        op: &'static str,
    ) -> impl FnOnce(std::io::Error) -> BackupError {
        io_error(path, op)
    }

    /// Whether a file exists (an error when that cannot be told).
    pub(crate) fn exists(&self, path: &Path) -> Result<bool> {
        self.fs.exists(path).map_err(self.io(path, "looking up"))
    }

    /// Numbers of the directories that look like points, complete or not.
    fn point_dirs(&self) -> Result<Vec<u32>> {
        if !self.exists(&self.dir)? {
            return Ok(vec![]);
        }
        let mut out: Vec<u32> = self
            .fs
            .list_dir(&self.dir)
            .map_err(self.io(&self.dir, "listing"))?
            .iter()
            .filter_map(|p| p.file_name()?.to_str()?.parse().ok())
            .collect();
        out.sort();
        Ok(out)
    }

    /// Whether any directory looks like a point, complete or not.
    pub(crate) fn has_point_dirs(&self) -> Result<bool> {
        Ok(!self.point_dirs()?.is_empty())
    }

    /// The complete points, oldest first.
    pub fn points(&self) -> Result<Vec<Manifest>> {
        let mut out = Vec::new();
        for n in self.point_dirs()? {
            if self.exists(&point_dir(&self.dir, n).join(MANIFEST_NAME))? {
                out.push(self.manifest(n)?);
            }
        }
        Ok(out)
    }

    pub fn manifest(&self, point: u32) -> Result<Manifest> {
        let (m, p): (Manifest, _) = self.read_manifest(point)?;
        check_names(&p, m.disks.iter().map(|d| (&*d.name, &*d.file)))?;
        Ok(m)
    }

    /// A point's manifest without its hashes: quick on any disk size.
    pub fn manifest_head(&self, point: u32) -> Result<ManifestHead> {
        let (m, p): (ManifestHead, _) = self.read_manifest(point)?;
        check_names(&p, m.disks.iter().map(|d| (&*d.name, &*d.file)))?;
        Ok(m)
    }

    /// The disks of complete point `point` and their files, from the
    /// point's directory: what opening a point takes, in a time that does
    /// not grow with the disk (a manifest holds a hash per MiB).
    pub fn point_files(&self, point: u32) -> Result<Vec<(String, PathBuf)>> {
        let n = self.resolve_point(Some(point))?;
        let d = point_dir(&self.dir, n);
        let mut disks: Vec<(String, PathBuf)> = self
            .fs
            .list_dir(&d)
            .map_err(self.io(&d, "listing"))?
            .into_iter()
            .filter(|p| p.extension().is_some_and(|e| e == "vhdx" || e == "avhdx"))
            .filter_map(|p| {
                let stem = p.file_stem()?.to_str()?.to_string();
                (!stem.starts_with('.')).then_some((stem, p))
            })
            .collect();
        disks.sort();
        Ok(disks)
    }

    /// The machine complete point `point` is a backup of, from the start of
    /// its manifest (quick on any disk size).
    pub fn point_machine(&self, point: u32) -> Result<String> {
        let n = self.resolve_point(Some(point))?;
        let m = point_dir(&self.dir, n).join(MANIFEST_NAME);
        let f = self
            .fs
            .open(&m, OpenMode::ReadOnly)
            .map_err(self.io(&m, "opening"))?;
        let mut head = vec![0u8; 4096.min(f.len().map_err(self.io(&m, "reading"))? as usize)];
        f.read_at(0, &mut head).map_err(self.io(&m, "reading"))?;
        match machine_in_head(&head) {
            Some(name) => Ok(name),
            None => Ok(self.manifest_head(n)?.machine),
        }
    }

    fn read_manifest<T: serde::de::DeserializeOwned>(&self, point: u32) -> Result<(T, PathBuf)> {
        let p = point_dir(&self.dir, point).join(MANIFEST_NAME);
        if !self.exists(&p)? {
            return Err(BackupError::NoPoint {
                dir: self.dir.clone(),
                point,
            });
        }
        let b = self.fs.read_file(&p).map_err(self.io(&p, "reading"))?;
        let m = serde_json::from_slice(&b).map_err(|e| BackupError::BadManifest {
            path: p.clone(),
            reason: e.to_string(),
        })?;
        Ok((m, p))
    }

    /// Writes a point's manifest atomically and durably: the point is
    /// complete once this returns, and stays so after a power cut.
    pub fn write_manifest(&self, m: &Manifest) -> Result<()> {
        let p = point_dir(&self.dir, m.point).join(MANIFEST_NAME);
        let b = serde_json::to_vec_pretty(m).expect("manifest serializes");
        self.fs
            .write_file_atomic(&p, &b)
            .map_err(self.io(&p, "writing"))
    }

    /// Removes point directories without a manifest (interrupted backups);
    /// returns their numbers.
    pub fn remove_incomplete(&self) -> Result<Vec<u32>> {
        let mut removed = Vec::new();
        for n in self.point_dirs()? {
            let d = point_dir(&self.dir, n);
            if !self.exists(&d.join(MANIFEST_NAME))? {
                self.remove_point_files(&d)?;
                removed.push(n);
            }
        }
        Ok(removed)
    }

    /// Removes the point directories numbered above `point`, complete or
    /// not, newest first (so every point still complete keeps the chain it
    /// reads through); returns their numbers.
    pub fn remove_points_after(&self, point: u32) -> Result<Vec<u32>> {
        let mut removed = Vec::new();
        for n in self.point_dirs()?.into_iter().rev().filter(|&n| n > point) {
            self.remove_point_files(&point_dir(&self.dir, n))?;
            removed.push(n);
        }
        removed.reverse();
        Ok(removed)
    }

    /// Removes a point directory, manifest first and durably: removal cut
    /// short leaves an incomplete point (which the next backup removes),
    /// never a point that looks complete but lacks files.
    pub(crate) fn remove_point_files(&self, d: &Path) -> Result<()> {
        let m = d.join(MANIFEST_NAME);
        if self.exists(&m)? {
            self.fs
                .remove_durable(&m)
                .map_err(self.io(&m, "removing"))?;
        }
        for f in self.fs.list_dir(d).map_err(self.io(d, "listing"))? {
            self.fs.remove(&f).map_err(self.io(&f, "removing"))?;
        }
        self.fs.remove_dir(d).map_err(self.io(d, "removing"))
    }

    /// Length and BLAKE3 per [`HASH_BLOCK`] of the bytes of a (closed)
    /// file, read back through the file system: what the file holds, not
    /// what its writer meant to put there.
    pub fn hash_file(&self, path: &Path) -> Result<(u64, Vec<String>)> {
        let f = self
            .fs
            .open(path, OpenMode::ReadOnly)
            .map_err(self.io(path, "opening"))?;
        let len = f.len().map_err(self.io(path, "reading the length of"))?;
        // Holes of a sparse file read as zeros, so they need no reading: a
        // hash block of a differential is mostly hole (each changed range
        // takes a whole payload block of space). A whole block is hashed
        // from the chaining values of its 64 KiB pieces, those in holes
        // being the known values of zeros.
        let data = f.data_ranges(0, len).unwrap_or_else(|_| vec![(0, len)]);
        let mut data = data.iter().peekable();
        let zero_cvs = cv::zero_block();
        let mut cvs = [[0u8; 32]; cv::PIECES];
        let mut buf = vec![0u8; HASH_BLOCK as usize];
        let mut hashes = Vec::with_capacity(len.div_ceil(HASH_BLOCK) as usize);
        let mut pos = 0;
        while pos < len {
            let b = &mut buf[..HASH_BLOCK.min(len - pos) as usize];
            if (b.len() as u64) < HASH_BLOCK {
                f.read_at(pos, b).map_err(self.io(path, "reading"))?;
                hashes.push(crate::export::hash(b));
                break;
            }
            // Which pieces hold data; runs of them are read at once.
            let mut has_data = [false; cv::PIECES];
            for (i, d) in has_data.iter_mut().enumerate() {
                let (s, e) = (pos + i as u64 * cv::PIECE, pos + (i as u64 + 1) * cv::PIECE);
                while data.next_if(|&&(o, l)| o + l <= s).is_some() {}
                *d = data.peek().is_some_and(|&&(o, _)| o < e);
            }
            let mut i = 0;
            while i < cv::PIECES {
                if !has_data[i] {
                    cvs[i] = zero_cvs[i];
                    i += 1;
                    continue;
                }
                let j = i + has_data[i..].iter().take_while(|&&d| d).count();
                let (a, z) = (i * cv::PIECE as usize, j * cv::PIECE as usize);
                f.read_at(pos + a as u64, &mut b[a..z])
                    .map_err(self.io(path, "reading"))?;
                for (k, piece) in (i..j).zip(b[a..z].chunks(cv::PIECE as usize)) {
                    cvs[k] = cv::piece(piece, k);
                }
                i = j;
            }
            hashes.push(cv::block_hash(&cvs).to_hex().to_string());
            pos += HASH_BLOCK;
        }
        Ok((len, hashes))
    }

    /// The file of `disk` at `point`.
    pub fn disk_file(&self, point: u32, disk: &str) -> Result<PathBuf> {
        let m = self.manifest(point)?;
        let d = m
            .disks
            .iter()
            .find(|d| d.name == disk)
            .ok_or_else(|| BackupError::NoDisk {
                point,
                disk: disk.into(),
                have: m.disks.iter().map(|d| d.name.clone()).collect(),
            })?;
        Ok(point_dir(&self.dir, point).join(&d.file))
    }

    /// Resolves "latest" / a number to the number of a complete point
    /// (one whose manifest exists; no manifest is read).
    pub fn resolve_point(&self, point: Option<u32>) -> Result<u32> {
        let complete = |n: u32| self.exists(&point_dir(&self.dir, n).join(MANIFEST_NAME));
        match point {
            Some(n) if complete(n)? => Ok(n),
            Some(n) => Err(BackupError::NoPoint {
                dir: self.dir.clone(),
                point: n,
            }),
            None => {
                for n in self.point_dirs()?.into_iter().rev() {
                    if complete(n)? {
                        return Ok(n);
                    }
                }
                Err(BackupError::Empty {
                    dir: self.dir.clone(),
                })
            }
        }
    }
}

/// Names become paths inside the point's directory (and a restore's
/// destination): a manifest must not lead outside them.
fn check_names<'n>(path: &Path, mut disks: impl Iterator<Item = (&'n str, &'n str)>) -> Result<()> {
    let plain =
        |s: &str| !s.is_empty() && s != "." && s != ".." && !s.contains('/') && !s.contains('\0');
    match disks.find(|(name, file)| !plain(name) || !plain(file)) {
        Some((name, file)) => Err(BackupError::BadManifest {
            path: path.to_path_buf(),
            reason: format!("disk {name:?} with file {file:?} is not a plain file name"),
        }),
        None => Ok(()),
    }
}

/// The `"machine"` of a manifest from its first bytes (it is the second
/// field written, and machine names need no escapes), if it is there.
fn machine_in_head(head: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(head).ok().or_else(|| {
        // Cut inside a character: what comes before is enough.
        let e = std::str::from_utf8(head).err()?;
        std::str::from_utf8(&head[..e.valid_up_to()]).ok()
    })?;
    let rest = text.split_once("\"machine\"")?.1.trim_start();
    let rest = rest.strip_prefix(':')?.trim_start().strip_prefix('"')?;
    let name = rest.split_once('"')?.0;
    machine::valid_name(name).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::machine_in_head;

    #[test]
    fn the_machine_is_read_from_the_start_of_a_manifest() {
        let m = crate::Manifest {
            format: crate::manifest::MANIFEST_FORMAT.into(),
            machine: "web-01.prod".into(),
            point: 3,
            kind: "full".into(),
            created: 1,
            checkpoint: 2,
            disks: vec![],
        };
        let b = serde_json::to_vec_pretty(&m).unwrap();
        assert_eq!(machine_in_head(&b).as_deref(), Some("web-01.prod"));
        assert_eq!(machine_in_head(&b[..20]), None);
        assert_eq!(machine_in_head(br#"{"machine": "a\"b"}"#), None);
        assert_eq!(
            machine_in_head(br#"{"machine":"vm1","point":1}"#).as_deref(),
            Some("vm1")
        );
        assert_eq!(machine_in_head(&[0xff, 0xfe]), None);
    }
}
