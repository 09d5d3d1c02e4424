//! `refpoint vhd create|info|check|map|convert|compare|merge`.

use super::*;
use refpoint_cli::compare::{compare, Comparison};
use refpoint_cli::convert::{convert, ConvertOptions, Format};
use refpoint_cli::report;
use vhdx::{create, create_child, CreateOptions, DiskType};

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum TypeArg {
    Dynamic,
    Fixed,
}

#[derive(Args)]
pub(crate) struct CreateArgs {
    /// Path of the new file (it must not exist).
    path: PathBuf,
    /// Virtual size, e.g. 10G, 512M (K/M/G/T suffixes). Not with --parent.
    #[arg(long, value_parser = parse_size, required_unless_present = "parent")]
    size: Option<u64>,
    /// Make a differencing disk on top of this VHDX; size and sector sizes
    /// come from the parent.
    #[arg(long, conflicts_with_all = ["size", "disk_type", "sector_size", "physical_sector_size"])]
    parent: Option<PathBuf>,
    /// Dynamic files grow as data is written; fixed ones are allocated up front.
    #[arg(long = "type", value_enum, default_value = "dynamic", id = "disk_type")]
    disk_type: TypeArg,
    /// Payload block size, a power of two from 1M to 256M [default: 32M, or the parent's].
    #[arg(long, value_parser = parse_size)]
    block_size: Option<u64>,
    /// Logical sector size the guest sees: 512 or 4096.
    #[arg(long, default_value = "512")]
    sector_size: u32,
    /// Physical sector size reported to the guest: 512 or 4096.
    #[arg(long, default_value = "4096")]
    physical_sector_size: u32,
}

#[derive(Subcommand)]
pub(crate) enum Vhd {
    /// Create a fixed, dynamic or differencing VHDX.
    #[command(
        after_help = "Examples:\n  refpoint vhd create disk.vhdx --size 10G\n  refpoint vhd create disk.vhdx --size 1T --block-size 64M --sector-size 4096\n  refpoint vhd create snap.avhdx --parent disk.vhdx"
    )]
    Create(CreateArgs),
    /// Show a VHDX file's parameters, allocation and chain.
    Info {
        path: PathBuf,
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Check a VHDX file's structure; exits 0 only if it is valid.
    #[command(
        after_help = "Exit status: 0 valid, 2 problems found, 1 the check itself failed.\n\
--repair replays the log, rewrites a damaged header or region table copy from the good one,\n\
and turns BAT entries that point outside the file into zero blocks. It never touches a file\n\
with problems it cannot repair safely."
    )]
    Check {
        path: PathBuf,
        /// Repair what can be repaired without losing data.
        #[arg(long)]
        repair: bool,
        #[arg(long)]
        json: bool,
    },
    /// List which ranges of the virtual disk hold data and in which file.
    Map {
        path: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Convert between raw and VHDX, or flatten a differencing chain.
    #[command(
        after_help = "SRC may be raw, VHDX or the newest file of a differencing chain (the whole chain is read).\n\
The output format follows DST's extension (.vhdx/.avhdx → VHDX, else raw) unless --format is given.\n\
Zero ranges are not written, so outputs stay sparse.\n\n\
Examples:\n  refpoint vhd convert disk.img disk.vhdx\n  refpoint vhd convert snap.avhdx flat.vhdx --block-size 1M\n  refpoint vhd convert disk.vhdx disk.img"
    )]
    Convert {
        src: PathBuf,
        dst: PathBuf,
        #[arg(long, value_enum)]
        format: Option<FormatArg>,
        /// VHDX output type.
        #[arg(long = "type", value_enum, default_value = "dynamic")]
        disk_type: TypeArg,
        /// VHDX output block size.
        #[arg(long, value_parser = parse_size, default_value = "32M")]
        block_size: u64,
        /// VHDX output logical sector size [default: the source's, 512 for raw].
        #[arg(long)]
        sector_size: Option<u32>,
        #[arg(long, default_value = "4096")]
        physical_sector_size: u32,
        /// Print a JSON summary.
        #[arg(long)]
        json: bool,
    },
    /// Say where two images (raw or VHDX chains) first differ.
    #[command(after_help = "Exit status: 0 identical, 1 different, 2 error.")]
    Compare {
        a: PathBuf,
        b: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Merge a differencing disk into its parent, then remove it.
    #[command(
        after_help = "The merge is crash-safe: if it is interrupted, the child still opens on top of its\n\
parent with the same content, and running the same command again finishes it.\n\
Other children of the same parent become invalid, as the parent's content changes."
    )]
    Merge {
        child: PathBuf,
        /// Keep the child file after the merge (it stays valid on top of the parent).
        #[arg(long)]
        keep_child: bool,
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn block_size(v: u64) -> Result<u32> {
    u32::try_from(v)
        .ok()
        .filter(|b| b.is_power_of_two())
        .with_context(|| format!("block size {v} must be a power of two from 1M to 256M"))
}

pub(crate) fn disk_type(t: TypeArg) -> DiskType {
    match t {
        TypeArg::Dynamic => DiskType::Dynamic,
        TypeArg::Fixed => DiskType::Fixed,
    }
}

pub(crate) fn run(cmd: Vhd) -> Result<ExitCode> {
    match cmd {
        Vhd::Create(a) => {
            let bs = a.block_size.map(block_size).transpose()?;
            let v = match &a.parent {
                Some(parent) => create_child(&LocalFs, &a.path, parent, bs)?,
                None => {
                    let opts = CreateOptions {
                        virtual_size: a.size.expect("clap requires --size"),
                        disk_type: disk_type(a.disk_type),
                        block_size: bs.unwrap_or(vhdx::format::DEFAULT_BLOCK_SIZE),
                        logical_sector_size: a.sector_size,
                        physical_sector_size: a.physical_sector_size,
                    };
                    create(&LocalFs, &a.path, &opts)?
                }
            };
            println!(
                "created {} ({}, {}, {} blocks, {}-byte sectors)",
                a.path.display(),
                v.disk_type().name(),
                human(v.virtual_size()),
                human(v.block_size() as u64),
                v.logical_sector_size()
            );
            v.close()?;
        }
        Vhd::Info { path, json } => {
            let info = report::info(&path)?;
            if json {
                print_json(&info)?;
            } else {
                print!("{}", info.to_text());
            }
        }
        Vhd::Check { path, repair, json } => {
            let r = if repair {
                vhdx::repair(&LocalFs, &path)?
            } else {
                vhdx::check(&LocalFs, &path)?
            };
            let out = report::CheckOutput::new(&path, r);
            if json {
                print_json(&out)?;
            } else {
                print!("{}", out.to_text());
            }
            return Ok(if out.valid {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            });
        }
        Vhd::Map { path, json } => {
            let m = report::map(&path)?;
            if json {
                print_json(&m)?;
            } else {
                println!("{:>20} {:>20}  {:<5} file", "offset", "length", "data");
                for e in m {
                    println!(
                        "{:>#20x} {:>#20x}  {:<5} {}",
                        e.offset,
                        e.length,
                        e.data,
                        e.file.unwrap_or_default()
                    );
                }
            }
        }
        Vhd::Convert {
            src,
            dst,
            format,
            disk_type: t,
            block_size: bs,
            sector_size,
            physical_sector_size,
            json,
        } => {
            let format = match format {
                Some(FormatArg::Vhdx) => Format::Vhdx,
                Some(FormatArg::Raw) => Format::Raw,
                None => Format::from_path(&dst),
            };
            let opts = ConvertOptions {
                format,
                disk_type: disk_type(t),
                block_size: block_size(bs)?,
                logical_sector_size: sector_size,
                physical_sector_size,
            };
            let pb = bar(0, "convert", json);
            let start = std::time::Instant::now();
            let result = convert(&src, &dst, &opts, &|done, total| {
                pb.set_length(total);
                pb.set_position(done);
            });
            pb.finish_and_clear();
            // A failed conversion has removed what it wrote.
            let s = result?;
            if json {
                print_json(&serde_json::json!({
                    "source": src, "destination": dst, "virtual_size": s.virtual_size,
                    "bytes_read": s.bytes_read, "bytes_written": s.bytes_written,
                    "seconds": start.elapsed().as_secs_f64(),
                }))?;
            } else {
                println!(
                    "converted {} → {}: {} virtual, {} of data written in {:.1}s",
                    src.display(),
                    dst.display(),
                    human(s.virtual_size),
                    human(s.bytes_written),
                    start.elapsed().as_secs_f64()
                );
            }
        }
        Vhd::Compare { a, b, json } => {
            let pb = bar(0, "compare", json);
            let r = compare(&a, &b, &|done, total| {
                pb.set_length(total);
                pb.set_position(done);
            });
            pb.finish_and_clear();
            let r = match r {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    return Ok(ExitCode::from(2));
                }
            };
            if json {
                print_json(&r)?;
            } else {
                match &r {
                    Comparison::Identical { .. } => println!("Images are identical."),
                    Comparison::Differ { offset } => {
                        println!("Content mismatch at offset {offset} ({offset:#x}).")
                    }
                    Comparison::SizeMismatch {
                        size_a,
                        size_b,
                        offset,
                    } => {
                        println!("Image sizes differ: {size_a} and {size_b} bytes.");
                        match offset {
                            Some(o) => println!("The longer image holds data at offset {o} ({o:#x}) beyond the shorter one."),
                            None => println!("The common part is identical and the rest of the longer image is zeros."),
                        }
                    }
                }
            }
            return Ok(if matches!(r, Comparison::Identical { .. }) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            });
        }
        Vhd::Merge {
            child,
            keep_child,
            json,
        } => {
            let pb = bar(0, "merge", json);
            let r = vhdx::merge_into_parent(&LocalFs, &child, !keep_child, &mut |done, total| {
                pb.set_length(total);
                pb.set_position(done);
            })?;
            pb.finish_and_clear();
            if json {
                print_json(&serde_json::json!({
                    "child": child, "parent": r.parent, "bytes_merged": r.bytes_merged,
                    "resumed": r.resumed, "child_removed": r.child_removed,
                }))?;
            } else {
                let resumed = if r.resumed {
                    " (resumed an interrupted merge)"
                } else {
                    ""
                };
                println!(
                    "merged {} into {}{resumed}: {} merged",
                    child.display(),
                    r.parent.display(),
                    human(r.bytes_merged)
                );
                if r.child_removed {
                    println!("removed {}", child.display());
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
