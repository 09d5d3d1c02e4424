//! `refpoint backup`, `backup list|consolidate`, `restore`, `verify`.

use super::*;
use api::BackupRequest;

#[derive(Args)]
pub(crate) struct BackupArgs {
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
pub(crate) enum BackupCmd {
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

pub(crate) fn run(b: BackupArgs) -> Result<ExitCode> {
    match b.cmd {
        Some(BackupCmd::List { dir, json }) => {
            let repo = ::backup::Repo::new(&LocalFs, &dir);
            let points = repo.points()?;
            if json {
                let rows: Vec<_> = points.iter().map(PointRow::of).collect();
                print_json(&rows)?;
            } else {
                for p in &points {
                    let w: u64 = p.disks.iter().map(|d| d.bytes_written).sum();
                    println!(
                        "{:>4}  {:<11}  {}  {}  {} written",
                        p.point,
                        p.kind,
                        refpoint_cli::machines::time(p.created),
                        p.machine,
                        human(w)
                    );
                }
            }
        }
        Some(BackupCmd::Consolidate { dir, keep }) => {
            ::backup::instant::check_not_in_use(&refpoint_cli::machines::store(), &dir)?;
            let removed = ::backup::consolidate(&LocalFs, &dir, keep, &mut |_, _| {})?;
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
            let pb = bar(0, "backup", b.json);
            let r = BackupRequest {
                to: vhdx::paths::absolute(&to),
            };
            let s = refpoint_cli::machines::machines().backup(
                &machine,
                &r,
                &mut |disk, done, total| {
                    pb.set_message(disk.to_string());
                    pb.set_length(total);
                    pb.set_position(done);
                },
            );
            pb.finish_and_clear();
            let s = s?;
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

#[derive(Args)]
#[command(after_help = "Examples:
  refpoint restore /backups/vm1 --to vm1-os.vhdx
  refpoint restore /backups/vm1 --point 3 --instant --as vm1-restored
  refpoint restore --finish vm1-restored --throttle 200M
  refpoint restore --discard vm1-restored")]
pub(crate) struct RestoreArgs {
    /// The backup repository.
    dir: Option<PathBuf>,
    /// Point number (see `refpoint backup list DIR`) or "latest".
    #[arg(long, default_value = "latest")]
    point: String,
    /// Where to write the image (a directory when restoring several disks).
    #[arg(long)]
    to: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "vhdx")]
    format: FormatArg,
    /// Only this disk.
    #[arg(long)]
    disk: Option<String>,
    /// Of a host repository: the machine of the host point.
    #[arg(long)]
    machine: Option<String>,
    #[command(flatten)]
    instant: super::instant::InstantArgs,
}

pub(crate) fn restore(a: RestoreArgs) -> Result<ExitCode> {
    let point = if a.point == "latest" {
        None
    } else {
        Some(
            a.point
                .parse()
                .context("--point takes a number or \"latest\"")?,
        )
    };
    if a.instant.given() {
        return super::instant::run(a.dir, point, a.machine, a.instant);
    }
    let (Some(dir), Some(to)) = (a.dir, a.to) else {
        anyhow::bail!(
            "restore needs the repository and --to: refpoint restore DIR --to FILE (or --instant --as NAME)"
        );
    };
    let fmt = match a.format {
        FormatArg::Vhdx => vdisk::copy::Format::Vhdx,
        FormatArg::Raw => vdisk::copy::Format::Raw,
    };
    let pb = bar(0, "restore", false);
    let out = ::backup::restore(
        &LocalFs,
        &dir,
        point,
        a.disk.as_deref(),
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

#[derive(Args)]
pub(crate) struct VerifyArgs {
    dir: PathBuf,
    /// Only this point [default: every point].
    #[arg(long)]
    point: Option<u32>,
    #[arg(long)]
    json: bool,
}

pub(crate) fn verify(a: VerifyArgs) -> Result<ExitCode> {
    let pb = bar(0, "verify", a.json);
    let r = ::backup::verify(&LocalFs, &a.dir, a.point, &mut |d, t| {
        pb.set_length(t);
        pb.set_position(d);
    })?;
    pb.finish_and_clear();
    if a.json {
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

/// A row of `backup list --json`.
#[derive(serde::Serialize)]
struct PointRow<'a> {
    point: u32,
    kind: &'a str,
    created: u64,
    machine: &'a str,
    disks: Vec<PointDiskRow<'a>>,
}

#[derive(serde::Serialize)]
struct PointDiskRow<'a> {
    name: &'a str,
    file: &'a str,
    bytes_written: u64,
}

impl<'a> PointRow<'a> {
    fn of(p: &'a ::backup::Manifest) -> Self {
        PointRow {
            point: p.point,
            kind: &p.kind,
            created: p.created,
            machine: &p.machine,
            disks: p
                .disks
                .iter()
                .map(|d| PointDiskRow {
                    name: &d.name,
                    file: &d.file,
                    bytes_written: d.bytes_written,
                })
                .collect(),
        }
    }
}
