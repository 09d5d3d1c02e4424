//! `refpoint rct enable|disable|status|seal|release|changes`.

use super::*;
use ::machine::Target;
use api::{ApiError, Changes, ChangesQuery, EnableTrackingRequest, Machines, TrackingStatus};

#[derive(Subcommand)]
pub(crate) enum Rct {
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

fn print_status(s: &TrackingStatus, json: bool) -> Result<()> {
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

fn print_changes(c: &Changes, json: bool) -> Result<()> {
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

/// The query of `rct changes`.
fn changes_query(
    since: String,
    until: Option<String>,
    offset: u64,
    length: Option<u64>,
    max_ranges: usize,
) -> ChangesQuery {
    ChangesQuery {
        since,
        until,
        offset,
        length,
        max_ranges: (max_ranges != usize::MAX).then_some(max_ranges as u64),
    }
}

/// What an `rct` command found or did, printed the same for a machine
/// disk and a plain file.
enum Outcome {
    Enabled(u64),
    Disabled,
    Status(TrackingStatus, bool),
    Sealed(String),
    Released(String),
    Changes(Changes, bool),
}

fn print_outcome(name: &str, o: Outcome) -> Result<()> {
    match o {
        Outcome::Enabled(g) => {
            println!(
                "change tracking enabled on {name} ({} granularity)",
                human(g)
            )
        }
        Outcome::Disabled => println!("change tracking disabled on {name}"),
        Outcome::Status(s, json) => print_status(&s, json)?,
        Outcome::Sealed(id) => {
            println!("sealed {name}; changes since this point can be asked for with:");
            println!("{id}");
        }
        Outcome::Released(id) => println!("released {id}"),
        Outcome::Changes(c, json) => print_changes(&c, json)?,
    }
    Ok(())
}

/// `rct` on a machine disk, through the machines (the daemon's when it
/// runs): the same code with or without it.
fn on_machine(ms: &dyn Machines, machine: &str, disk: &str, cmd: Rct) -> Result<Outcome, ApiError> {
    Ok(match cmd {
        Rct::Enable { granularity, .. } => {
            let r = EnableTrackingRequest {
                granularity: Some(granularity),
            };
            ms.enable_tracking(machine, disk, &r)?;
            Outcome::Enabled(granularity)
        }
        Rct::Disable { .. } => {
            ms.disable_tracking(machine, disk)?;
            Outcome::Disabled
        }
        Rct::Status { json, .. } => Outcome::Status(ms.tracking_status(machine, disk)?, json),
        Rct::Seal { .. } => Outcome::Sealed(ms.seal(machine, disk)?.id),
        Rct::Release { id, .. } => Outcome::Released(ms.release(machine, disk, &id)?.released),
        Rct::Changes {
            since,
            until,
            offset,
            length,
            max_ranges,
            json,
            ..
        } => {
            let q = changes_query(since, until, offset, length, max_ranges);
            Outcome::Changes(ms.changes(machine, disk, &q)?, json)
        }
    })
}

/// `rct` on a disk file that is no machine's: the daemon's tracking verbs
/// on a handle opened for the call. Tracking refusals come out as
/// [`ApiError`]s, as on a machine disk.
fn on_file(path: &std::path::Path, cmd: Rct) -> Result<Outcome> {
    use daemon::tracking as t;
    let writable = !matches!(cmd, Rct::Status { .. } | Rct::Changes { .. });
    let mut d = refpoint_cli::tracking::open(path, writable)?;
    let r = match cmd {
        Rct::Enable { granularity, .. } => {
            t::enable(&mut d, granularity).map(|_| Outcome::Enabled(granularity))
        }
        Rct::Disable { .. } => t::disable(&mut d).map(|_| Outcome::Disabled),
        Rct::Status { json, .. } => {
            t::status_of(&mut d, path.display().to_string()).map(|s| Outcome::Status(s, json))
        }
        Rct::Seal { .. } => t::seal(&mut d).map(|s| Outcome::Sealed(s.id)),
        Rct::Release { id, .. } => t::release(&mut d, &id).map(|r| Outcome::Released(r.released)),
        Rct::Changes {
            since,
            until,
            offset,
            length,
            max_ranges,
            json,
            ..
        } => {
            let q = changes_query(since, until, offset, length, max_ranges);
            t::changes_of(&mut d, &q).map(|c| Outcome::Changes(c, json))
        }
    };
    let closed = d.close().map_err(daemon::convert::disk_error);
    let o = r?;
    closed?;
    Ok(o)
}

pub(crate) fn run(cmd: Rct) -> Result<ExitCode> {
    let json_refusal = matches!(cmd, Rct::Changes { json: true, .. });
    let target = refpoint_cli::machines::store().resolve(rct_disk(&cmd))?;
    let name = target.to_string();
    let r = match target {
        Target::Machine { machine, disk } => {
            on_machine(&*refpoint_cli::machines::machines(), &machine, &disk, cmd)
                .map_err(Into::into)
        }
        Target::File(p) => on_file(&p, cmd),
    };
    match r {
        Ok(o) => {
            print_outcome(&name, o)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => match e.downcast_ref::<ApiError>().and_then(ApiError::tracking) {
            // Tracking cannot prove the answer: the caller takes a full backup.
            Some(t) => {
                if json_refusal {
                    print_json(t)?;
                }
                eprintln!("error ({}): {}", t.error, t.message);
                Ok(ExitCode::from(EXIT_TRACKING))
            }
            None => Err(e),
        },
    }
}
