//! `vhd convert`: any image (raw, VHDX, the newest file of a chain) into a
//! flat VHDX (fixed or dynamic, any block size) or a raw file. Ranges that
//! are holes in the source or read as zeros are not written, so the output
//! stays sparse.

use crate::image::{self, is_zero, Image};
use anyhow::{bail, Context, Result};
use std::cell::Cell;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::sync::Arc;
use storage::{Fs, LocalFs, OpenMode, Storage};
use vhdx::{create, CreateOptions, DiskType};

/// The output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Vhdx,
    Raw,
}

impl Format {
    /// From the file name: `.vhdx`/`.avhdx` → VHDX, anything else → raw.
    pub fn from_path(p: &Path) -> Format {
        match p
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
        {
            Some(e) if e == "vhdx" || e == "avhdx" => Format::Vhdx,
            _ => Format::Raw,
        }
    }
}

/// Options of a conversion.
#[derive(Debug, Clone)]
pub struct ConvertOptions {
    pub format: Format,
    pub disk_type: DiskType,
    pub block_size: u32,
    /// Logical sector size of a VHDX output; `None` keeps the source's.
    pub logical_sector_size: Option<u32>,
    pub physical_sector_size: u32,
}

/// What a conversion did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ConvertSummary {
    pub virtual_size: u64,
    pub bytes_read: u64,
    pub bytes_written: u64,
}

/// Bytes moved per step: large enough for sequential speed.
const CHUNK: u64 = 8 << 20;

/// Converts `src` to `dst` (which must not exist).
pub fn convert(
    src: &Path,
    dst: &Path,
    opts: &ConvertOptions,
    progress: &dyn Fn(u64, u64),
) -> Result<ConvertSummary> {
    if dst.exists() {
        bail!(
            "{} already exists; remove it or choose another destination",
            dst.display()
        );
    }
    let image = image::open(src)?;
    let size = image.size();
    let mut sink: Box<dyn Sink> = match opts.format {
        Format::Vhdx => {
            let ss = opts
                .logical_sector_size
                .unwrap_or(image.logical_sector_size());
            if size % ss as u64 != 0 {
                bail!(
                    "{} is {size} bytes, not a multiple of the {ss}-byte sector a VHDX needs",
                    src.display()
                );
            }
            let co = CreateOptions {
                virtual_size: size,
                disk_type: opts.disk_type,
                block_size: opts.block_size,
                logical_sector_size: ss,
                physical_sector_size: opts.physical_sector_size,
            };
            Box::new(create(&LocalFs, dst, &co)?)
        }
        Format::Raw => {
            let f = LocalFs
                .create(dst)
                .with_context(|| format!("cannot create {}", dst.display()))?;
            f.set_len(size)?;
            Box::new(RawSink(f))
        }
    };
    // A second handle on the destination for write-behind flushes; without
    // one the copy is only slower, so failing to open it is no error.
    let writeback = LocalFs.open(dst, OpenMode::ReadOnly).ok();
    let (bytes_read, bytes_written) = copy(&image, &mut *sink, writeback, progress)?;
    sink.finish()
        .with_context(|| format!("cannot finish {}", dst.display()))?;
    Ok(ConvertSummary {
        virtual_size: size,
        bytes_read,
        bytes_written,
    })
}

/// Buffers in flight between the reader and the writer: one being read,
/// one being written, and one queued so neither waits on the other.
const BUFFERS: usize = 3;

/// Zero detection granule: ranges of zeros this long are not written.
const GRANULE: usize = 64 << 10;

/// Data read from the source: `runs` are the ranges of `buf` (start, end)
/// that are not all zeros, to be written at `offset + start`.
struct Piece {
    offset: u64,
    buf: Vec<u8>,
    runs: Vec<(usize, usize)>,
}

enum Msg {
    Data(Piece),
    /// Everything below this virtual offset has been sent.
    Done(u64),
}

/// Moves every non-zero byte of `image` into `sink`; returns the bytes read
/// and written.
///
/// Reading (with the zero scan) runs on its own thread and writing on this
/// one, so the copy out of the source's page cache overlaps the copy into
/// the destination's: each costs about as much as the other, and doing them
/// one after the other left half of the machine idle.
///
/// `writeback`, a handle on the destination file, is flushed from a third
/// thread every [`WRITEBACK_STEP`] of progress: the disk then writes while
/// the copy goes on, instead of all at once in the final flush.
fn copy(
    image: &Image,
    sink: &mut dyn Sink,
    writeback: Option<Arc<dyn Storage>>,
    progress: &dyn Fn(u64, u64),
) -> Result<(u64, u64)> {
    let size = image.size();
    std::thread::scope(|s| {
        let (full_tx, full_rx) = mpsc::sync_channel::<Result<Msg>>(BUFFERS);
        let (free_tx, free_rx) = mpsc::channel::<Vec<u8>>();
        for _ in 0..BUFFERS {
            free_tx
                .send(vec![0u8; CHUNK as usize])
                .expect("the receiver is alive");
        }
        let reader = s.spawn(move || read_pieces(image, &full_tx, &free_rx));
        let (tick_tx, tick_rx) = mpsc::channel::<()>();
        let flusher = writeback.map(|f| s.spawn(move || write_behind(&*f, &tick_rx)));
        let next_tick = Cell::new(WRITEBACK_STEP);
        let written = write_pieces(sink, full_rx, free_tx, &|done| {
            progress(done, size);
            if done >= next_tick.get() {
                let _ = tick_tx.send(());
                next_tick.set(done + WRITEBACK_STEP);
            }
        });
        drop(tick_tx);
        let read = reader.join().expect("the reader thread does not panic");
        let written = written?;
        if let Some(f) = flusher {
            f.join().expect("the flusher thread does not panic")?;
        }
        Ok((read, written))
    })
}

/// Progress between two write-behind flushes: enough data for the disk to
/// stream, little enough that the final flush finds little left to do.
const WRITEBACK_STEP: u64 = 128 << 20;

/// Flushes `file` once per tick (ticks that queue up while a flush runs
/// count as one) until the ticks stop.
fn write_behind(file: &dyn Storage, ticks: &Receiver<()>) -> Result<()> {
    while ticks.recv().is_ok() {
        while ticks.try_recv().is_ok() {}
        file.flush()?;
    }
    Ok(())
}

/// The reader's side of [`copy`]: sends the data of `image` piece by
/// piece, each in a buffer taken from `free`. Stops at the first error
/// (sent on) or when the writer has gone. Returns the bytes read.
fn read_pieces(image: &Image, full: &SyncSender<Result<Msg>>, free: &Receiver<Vec<u8>>) -> u64 {
    let size = image.size();
    let mut read = 0;
    let mut pos = 0;
    while pos < size {
        let len = CHUNK.min(size - pos);
        let extents = match image.extents(pos, len) {
            Ok(x) => x,
            Err(e) => {
                let _ = full.send(Err(e.into()));
                return read;
            }
        };
        for (offset, n, data) in extents {
            if !data {
                continue;
            }
            let Ok(mut buf) = free.recv() else {
                return read;
            };
            buf.resize(n as usize, 0);
            if let Err(e) = image.read_at(offset, &mut buf) {
                let _ = full.send(Err(e.into()));
                return read;
            }
            read += n;
            let runs = nonzero_runs(&buf);
            if full
                .send(Ok(Msg::Data(Piece { offset, buf, runs })))
                .is_err()
            {
                return read;
            }
        }
        pos += len;
        if full.send(Ok(Msg::Done(pos))).is_err() {
            return read;
        }
    }
    read
}

/// The writer's side of [`copy`]: writes each piece and hands its buffer
/// back. Returns the bytes written. Dropping `full` and `free` on return is
/// what stops the reader early after an error.
fn write_pieces(
    sink: &mut dyn Sink,
    full: Receiver<Result<Msg>>,
    free: Sender<Vec<u8>>,
    progress: &dyn Fn(u64),
) -> Result<u64> {
    let mut written = 0;
    for msg in full {
        match msg? {
            Msg::Data(p) => {
                for &(start, end) in &p.runs {
                    sink.write(p.offset + start as u64, &p.buf[start..end])?;
                    written += (end - start) as u64;
                }
                let _ = free.send(p.buf);
            }
            Msg::Done(pos) => progress(pos),
        }
    }
    Ok(written)
}

/// The ranges of `b` that are not all zeros, in [`GRANULE`] steps.
fn nonzero_runs(b: &[u8]) -> Vec<(usize, usize)> {
    let mut runs: Vec<(usize, usize)> = Vec::new();
    for (i, g) in b.chunks(GRANULE).enumerate() {
        if is_zero(g) {
            continue;
        }
        let (start, end) = (i * GRANULE, i * GRANULE + g.len());
        match runs.last_mut() {
            Some(last) if last.1 == start => last.1 = end,
            _ => runs.push((start, end)),
        }
    }
    runs
}

/// Where converted bytes go.
trait Sink {
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<()>;
    fn finish(self: Box<Self>) -> Result<()>;
}

impl Sink for vhdx::Vhdx {
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        Ok(vhdx::Vhdx::write(self, offset, data)?)
    }
    fn finish(self: Box<Self>) -> Result<()> {
        Ok(self.close()?)
    }
}

struct RawSink(std::sync::Arc<dyn Storage>);

impl Sink for RawSink {
    fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
        Ok(self.0.write_at(offset, data)?)
    }
    fn finish(self: Box<Self>) -> Result<()> {
        Ok(self.0.flush()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what it is given; fails at the write numbered `fail_at`.
    struct Recorder {
        writes: Vec<(u64, Vec<u8>)>,
        fail_at: Option<usize>,
    }

    impl Sink for Recorder {
        fn write(&mut self, offset: u64, data: &[u8]) -> Result<()> {
            if Some(self.writes.len()) == self.fail_at {
                bail!("the sink is full");
            }
            self.writes.push((offset, data.to_vec()));
            Ok(())
        }
        fn finish(self: Box<Self>) -> Result<()> {
            Ok(())
        }
    }

    /// A raw image of several chunks: data, a zero granule, more data.
    fn raw_image(dir: &Path) -> (Image, Vec<u8>) {
        let size = 3 * CHUNK as usize + 5 * GRANULE;
        let mut data: Vec<u8> = (0..size).map(|i| (i % 251) as u8 | 1).collect();
        let hole = CHUNK as usize + 2 * GRANULE;
        data[hole..hole + GRANULE].fill(0);
        let path = dir.join("src.img");
        std::fs::write(&path, &data).unwrap();
        let file = LocalFs.open(&path, OpenMode::ReadOnly).unwrap();
        (
            Image::Raw {
                file,
                size: size as u64,
            },
            data,
        )
    }

    #[test]
    fn nonzero_runs_merge_data_and_skip_zero_granules() {
        let mut b = vec![1u8; 4 * GRANULE + 10];
        b[GRANULE..2 * GRANULE].fill(0);
        b[4 * GRANULE..].fill(0);
        assert_eq!(
            nonzero_runs(&b),
            vec![(0, GRANULE), (2 * GRANULE, 4 * GRANULE)]
        );
        assert!(nonzero_runs(&[0u8; 100]).is_empty());
    }

    #[test]
    fn copy_writes_every_nonzero_byte_in_order() {
        let d = tempfile::tempdir().unwrap();
        let (image, data) = raw_image(d.path());
        let mut sink = Recorder {
            writes: vec![],
            fail_at: None,
        };
        let seen = std::cell::RefCell::new(vec![]);
        // The source stands in for the destination of the write-behind
        // flushes, which only need some file to flush.
        let Image::Raw { file, .. } = &image else {
            unreachable!()
        };
        let writeback = Some(file.clone());
        let (read, written) = copy(&image, &mut sink, writeback, &|done, _| {
            seen.borrow_mut().push(done)
        })
        .unwrap();
        assert_eq!(read, data.len() as u64);
        assert_eq!(written, (data.len() - GRANULE) as u64);
        let mut out = vec![0u8; data.len()];
        let mut last = 0;
        for (off, b) in &sink.writes {
            assert!(*off >= last, "writes arrive in order");
            out[*off as usize..*off as usize + b.len()].copy_from_slice(b);
            last = off + b.len() as u64;
        }
        assert_eq!(out, data);
        assert_eq!(seen.borrow().last(), Some(&(data.len() as u64)));
    }

    #[test]
    fn a_failing_sink_stops_the_copy() {
        let d = tempfile::tempdir().unwrap();
        let (image, _) = raw_image(d.path());
        let mut sink = Recorder {
            writes: vec![],
            fail_at: Some(1),
        };
        let e = copy(&image, &mut sink, None, &|_, _| {}).unwrap_err();
        assert!(e.to_string().contains("the sink is full"));
        assert_eq!(sink.writes.len(), 1);
    }
}
