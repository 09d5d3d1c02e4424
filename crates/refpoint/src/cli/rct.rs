//! `refpoint rct enable|disable|status|seal|release|changes`.

use super::*;

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

pub(crate) fn print_status(s: &refpoint::tracking::Status, json: bool) -> Result<()> {
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

pub(crate) fn print_changes(c: &refpoint::tracking::ChangesOut, json: bool) -> Result<()> {
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
pub(crate) fn rct_disk(cmd: &Rct) -> &std::path::Path {
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
pub(crate) fn rct_remote(
    daemon: refpoint::daemon_client::Daemon,
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
                        if let refpoint::daemon_client::DaemonError::Api { message, .. } = &e {
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
                refpoint::daemon_client::DaemonError::Api { kind, message, .. } => {
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

pub(crate) fn run(cmd: Rct) -> Result<ExitCode> {
    use refpoint::tracking::{self as t, ChangesResult, ErrorOut};
    if let Some((m, d)) = t::machine_disk(rct_disk(&cmd))? {
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
            let id: ::rct::RctId = id.parse()?;
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
