//! `refpoint backup`, `backup list|consolidate`, `restore`, `verify`.

use super::*;
use api::{BackupRequest, HostBackupRequest};
use refpoint_cli::progress::Bars;

#[derive(Args)]
pub(crate) struct BackupArgs {
    #[command(subcommand)]
    cmd: Option<BackupCmd>,
    /// The machine to back up, into a plain repository (its points at the
    /// top of DIR).
    #[arg(required_unless_present_any = ["all", "machines"], conflicts_with_all = ["all", "machines"])]
    machine: Option<String>,
    /// Back every machine up as one host point, into a host repository: all
    /// freeze hooks, then every checkpoint as one consistent cut, thaw,
    /// export each machine. All or nothing.
    #[arg(long)]
    all: bool,
    /// Back these machines up as one host point (repeat the option), like
    /// --all for a few machines.
    #[arg(long = "machine", value_name = "MACHINE", conflicts_with = "all")]
    machines: Vec<String>,
    /// The backup repository (a directory).
    #[arg(long, required = true)]
    to: Option<PathBuf>,
    /// Host backups: how long each freeze (and thaw) command may run, in
    /// seconds, before it is killed and the backup fails; 0: no limit.
    #[arg(long, value_name = "SECONDS")]
    freeze_timeout: Option<u64>,
    /// Print a JSON summary.
    #[arg(long)]
    json: bool,
}

#[derive(Subcommand)]
pub(crate) enum BackupCmd {
    /// List the points of a repository (1 is the first full backup); of a
    /// host repository, each host point with its machines' points.
    List {
        dir: PathBuf,
        /// One JSON row per point (a host repository: per machine of each
        /// host point, with "host_point" and "machine").
        #[arg(long)]
        json: bool,
    },
    /// Merge old differentials into a synthetic full so only N points remain
    /// (a host repository: N host points).
    Consolidate {
        dir: PathBuf,
        #[arg(long)]
        keep: usize,
    },
}

pub(crate) fn run(b: BackupArgs) -> Result<ExitCode> {
    match b.cmd {
        Some(BackupCmd::List { dir, json }) => list(&dir, json)?,
        Some(BackupCmd::Consolidate { dir, keep }) => {
            ::backup::instant::check_not_in_use(&refpoint_cli::machines::store(), &dir)?;
            let removed = ::backup::consolidate(&LocalFs, &dir, keep, &mut |_, _| {})?;
            let what = if ::backup::host::is_host_repo(&LocalFs, &dir)? {
                "host points"
            } else {
                "points"
            };
            if removed.is_empty() {
                println!("nothing to consolidate: at most {keep} {what}");
            } else {
                println!("consolidated: removed {what} {removed:?}; the oldest kept point is now a full backup");
            }
        }
        None if b.all || !b.machines.is_empty() => host_backup(b)?,
        None => {
            let (machine, to) = (
                b.machine.expect("clap requires MACHINE"),
                b.to.expect("clap requires --to"),
            );
            if b.freeze_timeout.is_some() {
                anyhow::bail!("--freeze-timeout is for host backups (--all or --machine)");
            }
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
                print_disks(&s, "  ");
                print_totals(s.bytes_read, s.bytes_written, s.seconds);
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `backup --all` / `backup --machine A --machine B`: one host point.
fn host_backup(b: BackupArgs) -> Result<()> {
    let to = b.to.expect("clap requires --to");
    let ms = refpoint_cli::machines::machines();
    let machines = if b.all {
        ms.machines()?.into_iter().map(|m| m.name).collect()
    } else {
        b.machines
    };
    if machines.is_empty() {
        anyhow::bail!("there is no machine to back up (see `refpoint machine list`)");
    }
    let r = HostBackupRequest {
        to: vhdx::paths::absolute(&to),
        machines,
        freeze_timeout_seconds: b.freeze_timeout,
    };
    let bars = Bars::new("host point", b.json);
    let s = ms.host_backup(&r, &|whole, parts| {
        bars.whole(whole.done, whole.total);
        for p in parts {
            let key = p.item.split('/').next().unwrap_or(&p.item);
            bars.part(key, &p.item, p.done, p.total);
        }
    });
    bars.finish();
    let s = s?;
    if b.json {
        return print_json(&s);
    }
    for r in &s.recovered {
        println!("recovered: {r}");
    }
    println!(
        "host point {} of {} machine(s) in {}",
        s.host_point,
        s.machines.len(),
        s.repository
    );
    for m in &s.machines {
        println!(
            "  {}: point {} ({}), {} written",
            m.machine,
            m.point,
            m.kind,
            human(m.bytes_written)
        );
        print_disks(m, "    ");
    }
    print_totals(s.bytes_read, s.bytes_written, s.seconds);
    Ok(())
}

fn print_disks(s: &api::BackupSummary, indent: &str) {
    for d in &s.disks {
        let why = d
            .full_reason
            .as_deref()
            .map(|r| format!(" — full because {r}"))
            .unwrap_or_default();
        println!(
            "{indent}{}: {}, {} changed, {} written{why}",
            d.name,
            d.kind,
            human(d.changed_bytes),
            human(d.bytes_written)
        );
    }
}

fn print_totals(read: u64, written: u64, seconds: f64) {
    println!(
        "{} read, {} written in {seconds:.1}s",
        human(read),
        human(written),
    );
}

/// `backup list DIR`: the points, or the host points with their machines'.
fn list(dir: &std::path::Path, json: bool) -> Result<()> {
    let groups: Vec<(Option<::backup::host::HostPoint>, Vec<::backup::Manifest>)> =
        if ::backup::host::is_host_repo(&LocalFs, dir)? {
            ::backup::host::list(&LocalFs, dir)?
                .into_iter()
                .map(|(hp, ms)| (Some(hp), ms))
                .collect()
        } else {
            vec![(None, ::backup::Repo::new(&LocalFs, dir).points()?)]
        };
    if json {
        let rows: Vec<_> = groups
            .iter()
            .flat_map(|(hp, ms)| {
                ms.iter()
                    .map(|m| PointRow::of(hp.as_ref().map(|h| h.host_point), m))
            })
            .collect();
        return print_json(&rows);
    }
    for (hp, ms) in &groups {
        let indent = match hp {
            Some(hp) => {
                println!(
                    "host point {}  {}  {} machine(s)",
                    hp.host_point,
                    refpoint_cli::machines::time(hp.created),
                    hp.machines.len()
                );
                "  "
            }
            None => "",
        };
        for p in ms {
            let w: u64 = p.disks.iter().map(|d| d.bytes_written).sum();
            println!(
                "{indent}{:>4}  {:<11}  {}  {}  {} written",
                p.point,
                p.kind,
                refpoint_cli::machines::time(p.created),
                p.machine,
                human(w)
            );
        }
    }
    Ok(())
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
    /// Point number (see `refpoint backup list DIR`) or "latest"; of a host
    /// repository, a host point.
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
    /// The machine to restore, of a host repository's host point (--point
    /// is then a host point).
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
    // One machine of a host point: its repository and point.
    let (dir, point) = match &a.machine {
        Some(m) => {
            let (dir, p) = ::backup::host::machine_point(&LocalFs, &dir, point, Some(m))?;
            (dir, Some(p))
        }
        None => (dir, point),
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
    /// Only this point, or host point of a host repository [default: every point].
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
        let of = b
            .machine
            .as_ref()
            .map(|m| format!("{m} "))
            .unwrap_or_default();
        println!(
            "BAD: {of}point {} disk {} at offset {} ({:#x}) in {}: {}",
            b.point, b.disk, b.offset, b.offset, b.file, b.problem
        );
    } else if !r.machines.is_empty() {
        let each: Vec<String> = r
            .machines
            .iter()
            .map(|m| format!("{} {:?}", m.machine, m.points_checked))
            .collect();
        println!(
            "host points {:?} verified ({}): {} checked, all blocks match",
            r.points_checked,
            each.join(", "),
            human(r.bytes_checked)
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
    /// In a host repository: the host point this machine point is of.
    #[serde(skip_serializing_if = "Option::is_none")]
    host_point: Option<u32>,
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
    fn of(host_point: Option<u32>, p: &'a ::backup::Manifest) -> Self {
        PointRow {
            host_point,
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
