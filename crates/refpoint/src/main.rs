//! The `refpoint` command: `refpoint <noun> <verb> ...`.

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand, ValueEnum};
use refpoint::compare::{compare, Comparison};
use refpoint::convert::{convert, ConvertOptions, Format};
use refpoint::progress::bar;
use refpoint::report;
use refpoint::units::{human, parse_size};
use std::path::PathBuf;
use std::process::ExitCode;
use storage::LocalFs;
use vhdx::{create, create_child, CreateOptions, DiskType};

#[derive(Parser)]
#[command(
    name = "refpoint",
    version,
    about = "VHDX virtual disks with resilient change tracking, checkpoints and incremental backup",
    long_about = "refpoint manages VHDX virtual disks the way Hyper-V's host backup stack does: \
fixed, dynamic and differencing disks with crash-safe metadata; resilient change tracking \
that never misses a change, even across power cuts; machines, checkpoints and reference \
points; full and incremental backups you can restore and verify.\n\n\
Everything is `refpoint <noun> <verb>`. State lives in ./refpoint-data (or $REFPOINT_HOME).",
    after_help = "Examples:\n  refpoint vhd create os.vhdx --size 10G\n  refpoint machine create vm1 --disk os.vhdx\n  refpoint backup vm1 --to /backups/vm1\n  refpoint rct changes vm1/disk0 --since rct:…:00000001 --json\n  refpoint restore /backups/vm1 --point latest --to os-restored.vhdx\n  refpoint demo run"
)]
struct Cli {
    #[command(subcommand)]
    noun: Noun,
}

#[derive(Args)]
struct ServeArgs {
    /// NBD unix socket [default: <state dir>/nbd.sock].
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Management API unix socket [default: <state dir>/api.sock].
    #[arg(long)]
    api_socket: Option<PathBuf>,
    /// Also serve NBD on TCP (e.g. 0.0.0.0:10809); clients must use TLS.
    #[arg(long, value_name = "ADDR:PORT", requires_all = ["tls_cert", "tls_key"])]
    listen: Option<std::net::SocketAddr>,
    /// Also serve the API on TCP over TLS; requests need the token
    /// (`Authorization: Bearer ...`, see --token-file).
    #[arg(long, value_name = "ADDR:PORT", requires_all = ["tls_cert", "tls_key"])]
    api_listen: Option<std::net::SocketAddr>,
    /// TLS certificate chain (PEM) for TCP listeners.
    #[arg(long)]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long)]
    tls_key: Option<PathBuf>,
    /// Require NBD/API clients on TCP to present a certificate signed by this CA (PEM).
    #[arg(long)]
    tls_client_ca: Option<PathBuf>,
    /// API token file [default: <state dir>/api.token, created if missing].
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Ask the running daemon to shut down gracefully, and wait for it.
    #[arg(long)]
    stop: bool,
}

#[derive(Subcommand)]
enum Noun {
    /// Create, inspect, check, convert, compare and merge VHDX files.
    #[command(subcommand)]
    Vhd(Vhd),
    /// Resilient change tracking: which ranges changed since an RCT ID.
    #[command(subcommand)]
    Rct(Rct),
    /// Read and write disks through the tracked I/O path.
    #[command(subcommand)]
    Disk(DiskCmd),
    /// Named sets of disks (virtual machines) in the state directory.
    #[command(subcommand)]
    Machine(MachineCmd),
    /// Point-in-time states of a machine's disks.
    #[command(subcommand)]
    Checkpoint(CheckpointCmd),
    /// What remains of converted recovery checkpoints: the RCT IDs to back up from.
    #[command(subcommand)]
    Reference(ReferenceCmd),
    /// Run the daemon: machine disks over NBD (tracked), checkpoints and backups read-only, the API
    ///
    /// Every machine disk is served read-write with every write tracked;
    /// checkpoints and backup points read-only; the management API answers
    /// on api.sock.
    ///
    /// Exports: `<machine>/<disk>`, `<machine>/<disk>@checkpoint-<id>`,
    /// `<machine>/<disk>@backup-<point>`. Each offers the meta contexts
    /// `base:allocation`, `refpoint:changes:<RCT ID>` and
    /// `qemu:dirty-bitmap:<RCT ID>` (changes since that ID).
    ///
    /// While it runs, `rct`, `checkpoint`, `reference` and `backup` commands
    /// go through it. Stop it with Ctrl-C, SIGTERM or `refpoint serve --stop`:
    /// in-flight I/O finishes and every disk is flushed and closed.
    ///
    /// Examples:
    ///   refpoint serve &
    ///   qemu-system-x86_64 -drive file=nbd+unix:///vm1/disk0?socket=refpoint-data/nbd.sock,format=raw ...
    ///   nbdinfo --map=qemu:dirty-bitmap:rct:... 'nbd+unix:///vm1/disk0?socket=refpoint-data/nbd.sock'
    #[command(verbatim_doc_comment)]
    Serve(ServeArgs),
    /// Back up a machine (full or incremental), or manage a backup repository.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Backup(BackupArgs),
    /// Restore a backup point as one flat image.
    Restore {
        /// The backup repository.
        dir: PathBuf,
        /// Point number (see `refpoint backup list DIR`) or "latest".
        #[arg(long, default_value = "latest")]
        point: String,
        /// Where to write the image (a directory when restoring several disks).
        #[arg(long)]
        to: PathBuf,
        #[arg(long, value_enum, default_value = "vhdx")]
        format: FormatArg,
        /// Only this disk.
        #[arg(long)]
        disk: Option<String>,
    },
    /// Re-hash a repository's chains against the manifests.
    Verify {
        dir: PathBuf,
        /// Only this point [default: every point].
        #[arg(long)]
        point: Option<u32>,
        #[arg(long)]
        json: bool,
    },
    /// A guided run on local files in the state directory.
    #[command(subcommand)]
    Demo(Demo),
}

#[derive(Subcommand)]
enum MachineCmd {
    /// Create a machine; enables change tracking on its disks.
    #[command(
        after_help = "Example:\n  refpoint machine create vm1 --disk os.vhdx --disk data=data.vhdx --freeze 'ssh vm1 fsfreeze -f /' --thaw 'ssh vm1 fsfreeze -u /'"
    )]
    Create {
        name: String,
        /// A disk file, optionally named: NAME=PATH (default names disk0, disk1, ...).
        #[arg(long = "disk", required = true)]
        disks: Vec<String>,
        /// Command run before an application-consistent checkpoint.
        #[arg(long, requires = "thaw")]
        freeze: Option<String>,
        /// Command run after it (also when the checkpoint fails).
        #[arg(long, requires = "freeze")]
        thaw: Option<String>,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Forget a machine (its disk files stay).
    Remove { name: String },
}

#[derive(Clone, Copy, ValueEnum)]
enum KindArg {
    Standard,
    Recovery,
}

#[derive(Clone, Copy, ValueEnum)]
enum ConsistencyArg {
    Application,
    Crash,
}

#[derive(Subcommand)]
enum CheckpointCmd {
    /// Give every disk a new differencing child; the parents become a frozen, consistent image.
    Create {
        machine: String,
        #[arg(long, value_enum, default_value = "standard")]
        kind: KindArg,
        /// application runs the machine's freeze/thaw commands around it.
        #[arg(long, value_enum)]
        consistency: Option<ConsistencyArg>,
    },
    List {
        machine: String,
        #[arg(long)]
        json: bool,
    },
    /// Revert the machine to a checkpoint (the newest); later changes are discarded.
    Apply { machine: String, checkpoint: u64 },
    /// Merge a checkpoint (the newest) back; crash-safe, run again to resume.
    Delete { machine: String, checkpoint: u64 },
    /// Turn a recovery checkpoint into a reference point (merge back, keep the RCT IDs).
    Convert { machine: String, checkpoint: u64 },
}

#[derive(Subcommand)]
enum ReferenceCmd {
    List {
        machine: String,
        #[arg(long)]
        json: bool,
    },
    Show {
        machine: String,
        id: u64,
    },
    /// Forget a reference point and release its RCT IDs.
    Destroy {
        machine: String,
        id: u64,
    },
}

#[derive(Args)]
struct BackupArgs {
    #[command(subcommand)]
    cmd: Option<BackupCmd>,
    /// The machine to back up.
    #[arg(required = true)]
    machine: Option<String>,
    /// The backup repository (a directory).
    #[arg(long, required = true)]
    to: Option<PathBuf>,
    /// Print a JSON summary.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
enum BackupCmd {
    /// List the points of a repository (1 is the first full backup).
    List {
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Merge old differentials into a synthetic full so only N points remain.
    Consolidate {
        dir: PathBuf,
        #[arg(long)]
        keep: usize,
    },
}

#[derive(Subcommand)]
enum Rct {
    /// Start tracking a disk (a new tracking GUID: earlier RCT IDs become unknown).
    Enable {
        disk: PathBuf,
        /// Tracking granularity (a power of two, at least 4K).
        #[arg(long, value_parser = parse_size, default_value = "64K")]
        granularity: u64,
    },
    /// Stop tracking a disk; later queries fail with "tracking disabled".
    Disable { disk: PathBuf },
    /// Show the tracking state: enabled, most recent RCT ID, newer changes.
    Status {
        disk: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Close the current generation; prints the new RCT ID alone on the last line.
    Seal { disk: PathBuf },
    /// Release an RCT ID: changes since it can no longer be asked for.
    Release { disk: PathBuf, id: String },
    /// Ranges changed since an RCT ID (virtual-disk byte offsets).
    #[command(
        after_help = "Exit status: 0 with the ranges; 3 when tracking cannot prove the answer
(unknown or released ID, tracking disabled, tracking file missing or corrupt, disk modified
while not tracked): take a full backup instead. 1 for other errors.

JSON: {\"since\": ID, \"until\": ID|null, \"ranges\": [{\"offset\": N, \"length\": N}, ...], \"processed_length\": N}
When --max-ranges stops early, continue with --offset <offset + processed_length>."
    )]
    Changes {
        disk: PathBuf,
        #[arg(long)]
        since: String,
        /// Only changes up to this later RCT ID.
        #[arg(long)]
        until: Option<String>,
        #[arg(long, value_parser = parse_size, default_value = "0")]
        offset: u64,
        /// Bytes to look at [default: to the end of the disk].
        #[arg(long, value_parser = parse_size)]
        length: Option<u64>,
        #[arg(long, default_value_t = usize::MAX, hide_default_value = true)]
        max_ranges: usize,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum DiskCmd {
    /// Write bytes to a disk through the tracked path (a file's content, or a repeated byte).
    Write {
        disk: PathBuf,
        #[arg(long, value_parser = parse_size)]
        offset: u64,
        /// Write the content of this file.
        #[arg(long, conflicts_with_all = ["pattern", "length"])]
        from: Option<PathBuf>,
        /// Byte value to repeat (with --length).
        #[arg(long, requires = "length", value_parser = clap_num_u8)]
        pattern: Option<u8>,
        #[arg(long, value_parser = parse_size)]
        length: Option<u64>,
    },
}

fn clap_num_u8(s: &str) -> Result<u8, String> {
    let r = match s.strip_prefix("0x") {
        Some(h) => u8::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("{s:?} is not a byte value (0-255 or 0x00-0xff)"))
}

#[derive(Subcommand)]
enum Demo {
    /// Create a disk, write, take a differencing child, flatten, merge,
    /// check and convert, in `<state dir>/demo` (./refpoint-data or $REFPOINT_HOME).
    Run,
}

#[derive(Clone, Copy, ValueEnum)]
enum TypeArg {
    Dynamic,
    Fixed,
}

#[derive(Clone, Copy, ValueEnum)]
enum FormatArg {
    Vhdx,
    Raw,
}

#[derive(Args)]
struct CreateArgs {
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
enum Vhd {
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

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn block_size(v: u64) -> Result<u32> {
    u32::try_from(v)
        .ok()
        .filter(|b| b.is_power_of_two())
        .with_context(|| format!("block size {v} must be a power of two from 1M to 256M"))
}

fn disk_type(t: TypeArg) -> DiskType {
    match t {
        TypeArg::Dynamic => DiskType::Dynamic,
        TypeArg::Fixed => DiskType::Fixed,
    }
}

fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.noun {
        Noun::Vhd(cmd) => vhd(cmd),
        Noun::Rct(cmd) => rct_cmd(cmd),
        Noun::Disk(DiskCmd::Write {
            disk,
            offset,
            from,
            pattern,
            length,
        }) => {
            let data = match (from, pattern, length) {
                (Some(f), _, _) => {
                    std::fs::read(&f).with_context(|| format!("cannot read {}", f.display()))?
                }
                (None, Some(p), Some(n)) => vec![p; n as usize],
                _ => anyhow::bail!("give --from FILE, or --pattern BYTE with --length N"),
            };
            refpoint::tracking::write(&disk, offset, &data)?;
            println!(
                "wrote {} at offset {offset} of {}",
                human(data.len() as u64),
                disk.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Noun::Machine(c) => machine_cmd(c),
        Noun::Checkpoint(c) => checkpoint_cmd(c),
        Noun::Reference(c) => reference_cmd(c),
        Noun::Backup(b) => backup_cmd(b),
        Noun::Restore {
            dir,
            point,
            to,
            format,
            disk,
        } => {
            let point = if point == "latest" {
                None
            } else {
                Some(
                    point
                        .parse()
                        .context("--point takes a number or \"latest\"")?,
                )
            };
            let fmt = match format {
                FormatArg::Vhdx => Format::Vhdx,
                FormatArg::Raw => Format::Raw,
            };
            let pb = bar(0, "restore", false);
            let out = backup::restore(
                &LocalFs,
                &dir,
                point,
                disk.as_deref(),
                &to,
                fmt,
                &mut |d, t| {
                    pb.set_length(t);
                    pb.set_position(d);
                },
            )?;
            pb.finish_and_clear();
            for p in out {
                println!("restored {}", p.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        Noun::Verify { dir, point, json } => {
            let pb = bar(0, "verify", json);
            let r = backup::verify(&LocalFs, &dir, point, &mut |d, t| {
                pb.set_length(t);
                pb.set_position(d);
            })?;
            pb.finish_and_clear();
            if json {
                print_json(&r)?;
            } else if let Some(b) = &r.first_bad {
                println!(
                    "BAD: point {} disk {} at offset {} ({:#x}) in {}: {}",
                    b.point, b.disk, b.offset, b.offset, b.file, b.problem
                );
            } else {
                println!(
                    "points {:?} verified: {} checked, all blocks match",
                    r.points_checked,
                    human(r.bytes_checked)
                );
            }
            Ok(if r.first_bad.is_none() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            })
        }
        Noun::Serve(a) => serve_cmd(a),
        Noun::Demo(Demo::Run) => {
            refpoint::demo::run(&refpoint::demo::state_dir())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn machine_cmd(c: MachineCmd) -> Result<ExitCode> {
    use refpoint::machines::{parse_disk_arg, store};
    let st = store();
    match c {
        MachineCmd::Create {
            name,
            disks,
            freeze,
            thaw,
        } => {
            let disks: Vec<_> = disks.iter().map(|d| parse_disk_arg(d)).collect();
            let m = st.create(&name, &disks, freeze, thaw)?;
            println!(
                "created machine {} with {} disk(s); change tracking enabled",
                m.name,
                m.disks.len()
            );
            for d in &m.disks {
                println!("  {}/{}  {}", m.name, d.name, d.base.display());
            }
        }
        MachineCmd::List { json } => {
            let ms = st.list()?;
            if json {
                print_json(&ms)?;
            } else {
                for m in ms {
                    println!(
                        "{}  {} disk(s), {} checkpoint(s), {} reference point(s)",
                        m.name,
                        m.disks.len(),
                        m.checkpoints.len(),
                        m.reference_points.len()
                    );
                }
            }
        }
        MachineCmd::Show { name, json } => {
            let m = st.load(&name)?;
            if json {
                print_json(&m)?;
            } else {
                println!("machine {}", m.name);
                for d in &m.disks {
                    println!(
                        "  disk {}: {} (writing to {})",
                        d.name,
                        d.base.display(),
                        d.active.display()
                    );
                }
                if let (Some(f), Some(t)) = (&m.freeze, &m.thaw) {
                    println!("  freeze: {f}\n  thaw:   {t}");
                }
                for c in &m.checkpoints {
                    println!(
                        "  checkpoint {} ({:?}, {})",
                        c.id,
                        c.kind,
                        refpoint::machines::time(c.created)
                    );
                }
                for r in &m.reference_points {
                    println!(
                        "  reference point {} ({})",
                        r.id,
                        refpoint::machines::time(r.created)
                    );
                }
            }
        }
        MachineCmd::Remove { name } => {
            if refpoint::machines::daemon().is_some() {
                anyhow::bail!(
                    "the refpoint daemon is serving the machines of this state directory; stop it (refpoint serve --stop) before removing {name}"
                );
            }
            st.remove(&name)?;
            println!("removed machine {name} (its disk files are untouched)");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn serve_cmd(a: ServeArgs) -> Result<ExitCode> {
    let home = refpoint::demo::state_dir();
    let api_socket = a
        .api_socket
        .unwrap_or_else(|| refpoint::serve::api_socket(&home));
    if a.stop {
        let Some(d) = refpoint::machines::daemon() else {
            anyhow::bail!("no refpoint daemon answers on {}", api_socket.display());
        };
        d.post("/v1/shutdown", serde_json::json!({}))?;
        while api_socket.exists() {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
        println!("the refpoint daemon stopped");
        return Ok(ExitCode::SUCCESS);
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("REFPOINT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    refpoint::serve::run(refpoint::serve::ServeOptions {
        nbd_socket: a
            .socket
            .unwrap_or_else(|| refpoint::serve::nbd_socket(&home)),
        api_socket,
        home,
        listen: a.listen,
        api_listen: a.api_listen,
        tls_cert: a.tls_cert,
        tls_key: a.tls_key,
        tls_client_ca: a.tls_client_ca,
        token_file: a.token_file,
    })?;
    Ok(ExitCode::SUCCESS)
}

fn checkpoint_cmd(c: CheckpointCmd) -> Result<ExitCode> {
    use vdisk::{CheckpointKind, Consistency};
    let st = refpoint::machines::store();
    match c {
        CheckpointCmd::Create {
            machine,
            kind,
            consistency,
        } => {
            let kind = match kind {
                KindArg::Standard => CheckpointKind::Standard,
                KindArg::Recovery => CheckpointKind::Recovery,
            };
            let has_hooks = st.load(&machine)?.freeze.is_some();
            let consistency = match consistency {
                Some(ConsistencyArg::Application) => Consistency::Application,
                Some(ConsistencyArg::Crash) => Consistency::Crash,
                None if has_hooks => Consistency::Application,
                None => Consistency::Crash,
            };
            let cp: vdisk::Checkpoint = match refpoint::machines::daemon() {
                Some(d) => serde_json::from_value(d.post(
                    &format!("/v1/machines/{machine}/checkpoints"),
                    serde_json::json!({
                        "kind": if kind == CheckpointKind::Recovery { "recovery" } else { "standard" },
                        "consistency": if consistency == Consistency::Application { "application" } else { "crash" },
                    }),
                )?)?,
                None => st.create_checkpoint(&machine, kind, consistency)?,
            };
            println!("checkpoint {} of {machine} created", cp.id);
            for d in &cp.disks {
                println!(
                    "  {}: frozen {}, writes go to {}",
                    d.name,
                    d.frozen.display(),
                    d.child.display()
                );
                if let Some(id) = &d.rct_id {
                    println!("    RCT ID {id}");
                }
            }
        }
        CheckpointCmd::List { machine, json } => {
            let m = st.load(&machine)?;
            if json {
                print_json(&m.checkpoints)?;
            } else {
                for c in &m.checkpoints {
                    println!(
                        "{}  {:?}  {:?}  {}",
                        c.id,
                        c.kind,
                        c.consistency,
                        refpoint::machines::time(c.created)
                    );
                }
            }
        }
        CheckpointCmd::Apply {
            machine,
            checkpoint,
        } => {
            match refpoint::machines::daemon() {
                Some(d) => {
                    d.post(
                        &format!("/v1/machines/{machine}/checkpoints/{checkpoint}/apply"),
                        serde_json::json!({}),
                    )?;
                }
                None => st.apply_checkpoint(&machine, checkpoint)?,
            }
            println!("{machine} reverted to checkpoint {checkpoint}");
        }
        CheckpointCmd::Delete {
            machine,
            checkpoint,
        } => {
            match refpoint::machines::daemon() {
                Some(d) => {
                    d.delete(&format!("/v1/machines/{machine}/checkpoints/{checkpoint}"))?;
                }
                None => {
                    st.delete_checkpoint(&machine, checkpoint)?;
                }
            }
            println!("checkpoint {checkpoint} of {machine} merged back and deleted");
        }
        CheckpointCmd::Convert {
            machine,
            checkpoint,
        } => {
            let r: vdisk::ReferencePoint = match refpoint::machines::daemon() {
                Some(d) => serde_json::from_value(d.post(
                    &format!("/v1/machines/{machine}/checkpoints/{checkpoint}/convert"),
                    serde_json::json!({}),
                )?)?,
                None => st.convert_checkpoint(&machine, checkpoint)?,
            };
            println!(
                "checkpoint {checkpoint} of {machine} is now reference point {}",
                r.id
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn reference_cmd(c: ReferenceCmd) -> Result<ExitCode> {
    let st = refpoint::machines::store();
    match c {
        ReferenceCmd::List { machine, json } => {
            let m = st.load(&machine)?;
            if json {
                print_json(&m.reference_points)?;
            } else {
                for r in &m.reference_points {
                    let b = r
                        .backup
                        .as_ref()
                        .map(|b| format!("  backup {} point {}", b.dir.display(), b.point))
                        .unwrap_or_default();
                    println!("{}  {}{b}", r.id, refpoint::machines::time(r.created));
                }
            }
        }
        ReferenceCmd::Show { machine, id } => {
            let m = st.load(&machine)?;
            let r = m
                .reference_point(id)
                .with_context(|| format!("{machine} has no reference point {id}"))?;
            print_json(r)?;
        }
        ReferenceCmd::Destroy { machine, id } => {
            match refpoint::machines::daemon() {
                Some(d) => {
                    d.delete(&format!("/v1/machines/{machine}/reference-points/{id}"))?;
                }
                None => st.destroy_reference_point(&machine, id)?,
            }
            println!("reference point {id} of {machine} destroyed; its RCT IDs are released");
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn backup_cmd(b: BackupArgs) -> Result<ExitCode> {
    match b.cmd {
        Some(BackupCmd::List { dir, json }) => {
            let repo = backup::Repo::new(&LocalFs, &dir);
            let points = repo.points()?;
            if json {
                let rows: Vec<_> = points
                    .iter()
                    .map(|p| serde_json::json!({"point": p.point, "kind": p.kind, "created": p.created, "machine": p.machine,
                        "disks": p.disks.iter().map(|d| serde_json::json!({"name": d.name, "file": d.file, "bytes_written": d.bytes_written})).collect::<Vec<_>>()}))
                    .collect();
                print_json(&rows)?;
            } else {
                for p in &points {
                    let w: u64 = p.disks.iter().map(|d| d.bytes_written).sum();
                    println!(
                        "{:>4}  {:<11}  {}  {}  {} written",
                        p.point,
                        p.kind,
                        refpoint::machines::time(p.created),
                        p.machine,
                        human(w)
                    );
                }
            }
        }
        Some(BackupCmd::Consolidate { dir, keep }) => {
            let removed = backup::consolidate(&LocalFs, &dir, keep, &mut |_, _| {})?;
            if removed.is_empty() {
                println!("nothing to consolidate: at most {keep} point(s)");
            } else {
                println!("consolidated: removed points {removed:?}; the oldest kept point is now a full backup");
            }
        }
        None => {
            let (machine, to) = (
                b.machine.expect("clap requires MACHINE"),
                b.to.expect("clap requires --to"),
            );
            let st = refpoint::machines::store();
            let pb = bar(0, "backup", b.json);
            let s: serde_json::Value = match refpoint::machines::daemon() {
                Some(d) => {
                    // The daemon holds the disks: it runs the backup as a job.
                    let to = vhdx::paths::absolute(&to);
                    let job = d.post(
                        &format!("/v1/machines/{machine}/backups"),
                        serde_json::json!({"to": to}),
                    )?;
                    d.wait_job(&job, &mut |disk, done, total| {
                        pb.set_message(disk.to_string());
                        pb.set_length(total);
                        pb.set_position(done);
                    })?
                }
                None => serde_json::to_value(backup::backup(
                    &st,
                    &machine,
                    &to,
                    &mut |disk, n, total| {
                        pb.set_message(disk.to_string());
                        pb.set_length(total);
                        pb.inc(n);
                    },
                )?)?,
            };
            pb.finish_and_clear();
            let s: backup::Summary = serde_json::from_value(s)?;
            if b.json {
                print_json(&s)?;
            } else {
                for r in &s.recovered {
                    println!("recovered: {r}");
                }
                println!(
                    "point {} of {} ({}) in {}",
                    s.point, machine, s.kind, s.repository
                );
                for d in &s.disks {
                    let why = d
                        .full_reason
                        .as_deref()
                        .map(|r| format!(" — full because {r}"))
                        .unwrap_or_default();
                    println!(
                        "  {}: {}, {} changed, {} written{why}",
                        d.name,
                        d.kind,
                        human(d.changed_bytes),
                        human(d.bytes_written)
                    );
                }
                println!(
                    "{} read, {} written in {:.1}s",
                    human(s.bytes_read),
                    human(s.bytes_written),
                    s.seconds
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Exit status of a tracking error: take a full backup.
const EXIT_TRACKING: u8 = 3;

fn print_status(s: &refpoint::tracking::Status, json: bool) -> Result<()> {
    if json {
        return print_json(s);
    }
    println!("disk:            {}", s.disk);
    println!("enabled:         {}", s.enabled);
    if let Some(id) = &s.most_recent_id {
        println!("most recent ID:  {id}");
    }
    if let Some(n) = s.newer_changes {
        println!("newer changes:   {n}");
    }
    for id in &s.retained_ids {
        println!("retained:        {id}");
    }
    if let Some(e) = &s.error {
        println!(
            "error:           {} ({}); a full backup is needed",
            e.message, e.error
        );
    }
    Ok(())
}

fn print_changes(c: &refpoint::tracking::ChangesOut, json: bool) -> Result<()> {
    if json {
        return print_json(c);
    }
    let total: u64 = c.ranges.iter().map(|r| r.length).sum();
    for r in &c.ranges {
        println!("{:>#18x} {:>#14x}", r.offset, r.length);
    }
    println!(
        "{} ranges, {} changed; processed {} bytes",
        c.ranges.len(),
        human(total),
        c.processed_length
    );
    Ok(())
}

/// The disk argument of an `rct` command.
fn rct_disk(cmd: &Rct) -> &std::path::Path {
    match cmd {
        Rct::Enable { disk, .. }
        | Rct::Disable { disk }
        | Rct::Status { disk, .. }
        | Rct::Seal { disk }
        | Rct::Release { disk, .. }
        | Rct::Changes { disk, .. } => disk,
    }
}

/// `rct` on a disk the daemon holds: through its API.
fn rct_remote(
    daemon: refpoint::serve::client::Daemon,
    machine: &str,
    name: &str,
    cmd: Rct,
) -> Result<ExitCode> {
    use refpoint::tracking::ErrorOut;
    let base = format!("/v1/machines/{machine}/disks/{name}");
    let r = match cmd {
        Rct::Enable { granularity, .. } => daemon
            .post(
                &format!("{base}/tracking/enable"),
                serde_json::json!({"granularity": granularity}),
            )
            .map(|_| {
                println!(
                    "change tracking enabled on {machine}/{name} ({} granularity)",
                    human(granularity)
                )
            }),
        Rct::Disable { .. } => daemon
            .post(&format!("{base}/tracking/disable"), serde_json::json!({}))
            .map(|_| println!("change tracking disabled on {machine}/{name}")),
        Rct::Status { json, .. } => {
            let v = daemon.get(&format!("{base}/tracking"))?;
            print_status(&serde_json::from_value(v)?, json)?;
            Ok(())
        }
        Rct::Seal { .. } => daemon
            .post(&format!("{base}/tracking/seal"), serde_json::json!({}))
            .map(|v| {
                println!(
                    "sealed {machine}/{name}; changes since this point can be asked for with:"
                );
                println!("{}", v["id"].as_str().unwrap_or_default());
            }),
        Rct::Release { id, .. } => daemon
            .post(
                &format!("{base}/tracking/release"),
                serde_json::json!({"id": id}),
            )
            .map(|_| println!("released {id}")),
        Rct::Changes {
            since,
            until,
            offset,
            length,
            max_ranges,
            json,
            ..
        } => {
            let mut q =
                format!("{base}/changes?since={since}&offset={offset}&max_ranges={max_ranges}");
            if let Some(u) = until {
                q.push_str(&format!("&until={u}"));
            }
            if let Some(l) = length {
                q.push_str(&format!("&length={l}"));
            }
            match daemon.get(&q) {
                Ok(v) => {
                    print_changes(&serde_json::from_value(v)?, json)?;
                    Ok(())
                }
                Err(e) if e.is_tracking() => {
                    if json {
                        if let refpoint::serve::client::DaemonError::Api { message, .. } = &e {
                            if let Ok(out) = serde_json::from_str::<ErrorOut>(message) {
                                print_json(&out)?;
                            }
                        }
                    }
                    Err(e)
                }
                Err(e) => Err(e),
            }
        }
    };
    match r {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.is_tracking() => {
            let msg = match &e {
                refpoint::serve::client::DaemonError::Api { kind, message, .. } => {
                    let m = serde_json::from_str::<ErrorOut>(message)
                        .map(|o| o.message)
                        .unwrap_or(message.clone());
                    format!("error ({kind}): {m}")
                }
                e => e.to_string(),
            };
            eprintln!("{msg}");
            Ok(ExitCode::from(EXIT_TRACKING))
        }
        Err(e) => Err(e.into()),
    }
}

fn rct_cmd(cmd: Rct) -> Result<ExitCode> {
    use refpoint::tracking::{self as t, ChangesResult, ErrorOut};
    if let Some((m, d)) = t::machine_disk(rct_disk(&cmd)) {
        if let Some(daemon) = refpoint::machines::daemon() {
            return rct_remote(daemon, &m, &d, cmd);
        }
    }
    match cmd {
        Rct::Enable { disk, granularity } => {
            let mut d = t::open(&disk, true)?;
            d.enable_tracking(granularity)?;
            d.close()?;
            println!(
                "change tracking enabled on {} ({} granularity)",
                disk.display(),
                human(granularity)
            );
        }
        Rct::Disable { disk } => {
            let mut d = t::open(&disk, true)?;
            d.disable_tracking()?;
            d.close()?;
            println!("change tracking disabled on {}", disk.display());
        }
        Rct::Status { disk, json } => print_status(&t::status(&disk)?, json)?,
        Rct::Seal { disk } => {
            let mut d = t::open(&disk, true)?;
            let id = d.seal()?;
            d.close()?;
            println!(
                "sealed {}; changes since this point can be asked for with:",
                disk.display()
            );
            println!("{id}");
        }
        Rct::Release { disk, id } => {
            let id: rct::RctId = id.parse()?;
            let mut d = t::open(&disk, true)?;
            d.release(&id)?;
            d.close()?;
            println!("released {id}");
        }
        Rct::Changes {
            disk,
            since,
            until,
            offset,
            length,
            max_ranges,
            json,
        } => match t::changes(&disk, &since, until.as_deref(), offset, length, max_ranges)? {
            ChangesResult::Changes(c) => print_changes(&c, json)?,
            ChangesResult::TrackingError(e) => {
                if json {
                    print_json(&ErrorOut::new(&e))?;
                }
                eprintln!("error ({}): {e}", e.kind());
                return Ok(ExitCode::from(EXIT_TRACKING));
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}

fn vhd(cmd: Vhd) -> Result<ExitCode> {
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
