//! The `refpoint` command: `refpoint <noun> <verb> ...`.

mod cli;

use anyhow::Result;
use clap::{Parser, Subcommand};
use cli::backup::{BackupArgs, RestoreArgs, VerifyArgs};
use cli::checkpoint::CheckpointCmd;
use cli::disk::DiskCmd;
use cli::machine::MachineCmd;
use cli::rct::Rct;
use cli::reference::ReferenceCmd;
use cli::serve::ServeArgs;
use cli::vhd::Vhd;
use std::process::ExitCode;

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
    after_help = "Examples:\n  refpoint vhd create os.vhdx --size 10G\n  refpoint machine create vm1 --disk os.vhdx\n  refpoint backup vm1 --to /backups/vm1\n  refpoint backup --all --to /backups/host\n  refpoint rct changes vm1/disk0 --since rct:…:00000001 --json\n  refpoint restore /backups/vm1 --point latest --to os-restored.vhdx\n  refpoint demo run"
)]
struct Cli {
    #[command(subcommand)]
    noun: Noun,
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
    /// Back up a machine, or several as one host point (full or incremental), or manage a repository
    ///
    /// `refpoint backup vm1 --to DIR` backs one machine up into a plain
    /// repository: a recovery checkpoint (freeze/thaw around it when the
    /// machine has hooks), an export of each disk (full, or the ranges
    /// changed since the repository's last point), a manifest, and the
    /// checkpoint converted into a reference point.
    ///
    /// `refpoint backup --all --to DIR` (or `--machine A --machine B`) takes
    /// one host point of several machines, as Hyper-V's VSS writer does:
    /// every freeze hook at once, then all recovery checkpoints together
    /// (writes to every disk of every machine held for that instant only,
    /// so the checkpoints are one consistent cut), thaw, export each machine
    /// (in parallel), convert every checkpoint. All or nothing: a freeze
    /// that fails or outlives --freeze-timeout, a failed checkpoint or a
    /// killed run changes no machine's reference point, and the next run
    /// cleans up and is a normal incremental. DIR is then a host
    /// repository: `DIR/machines/<machine>/` per machine and
    /// `DIR/host-points/`; the two kinds of repository never mix.
    ///
    /// Examples:
    ///   refpoint backup vm1 --to /backups/vm1
    ///   refpoint backup --all --to /backups/host --freeze-timeout 30
    ///   refpoint backup --machine db --machine web --to /backups/app --json
    ///   refpoint backup list /backups/host
    ///   refpoint restore /backups/host --point 4 --machine db --to db-restored
    #[command(
        args_conflicts_with_subcommands = true,
        subcommand_negates_reqs = true,
        verbatim_doc_comment
    )]
    Backup(BackupArgs),
    /// Restore a backup point as one flat image (of a host point: one machine's, --machine), or start a machine on it at once (--instant).
    Restore(RestoreArgs),
    /// Re-hash a repository's chains against the manifests (a host repository: every machine's).
    Verify(VerifyArgs),
    /// A guided run on local files in the state directory.
    #[command(subcommand)]
    Demo(Demo),
}
#[derive(Subcommand)]
enum Demo {
    /// Create a disk, write, take a differencing child, flatten, merge,
    /// check and convert, in `<state dir>/demo` (./refpoint-data or $REFPOINT_HOME).
    Run,
}
fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if let Some(h) = cli::hints::hint(&e) {
                eprintln!("hint: {h}");
            }
            ExitCode::from(1)
        }
    }
}
fn run(cli: Cli) -> Result<ExitCode> {
    match cli.noun {
        Noun::Vhd(c) => cli::vhd::run(c),
        Noun::Rct(c) => cli::rct::run(c),
        Noun::Disk(c) => cli::disk::run(c),
        Noun::Machine(c) => cli::machine::run(c),
        Noun::Checkpoint(c) => cli::checkpoint::run(c),
        Noun::Reference(c) => cli::reference::run(c),
        Noun::Backup(b) => cli::backup::run(b),
        Noun::Restore(a) => cli::backup::restore(a),
        Noun::Verify(a) => cli::backup::verify(a),
        Noun::Serve(a) => cli::serve::run(a),
        Noun::Demo(Demo::Run) => {
            refpoint_cli::demo::run(&machine::home::state_dir())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}
