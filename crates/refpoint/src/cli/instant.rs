//! `refpoint restore … --instant --as NAME`, `restore --finish NAME`,
//! `restore --discard NAME`: machines that run on a backup point at once.

use super::*;
use api::{FinishRequest, InstantRequest};

/// The instant-restore flags of `refpoint restore`.
#[derive(Args)]
pub(crate) struct InstantArgs {
    /// Start a machine on the point at once instead of copying it: its
    /// disks are differencing children of the point's files (which stay
    /// unchanged), exported read-write and tracked by a running daemon.
    #[arg(long, requires = "as_name", conflicts_with_all = ["to", "discard"])]
    pub instant: bool,
    /// The name of the machine --instant creates.
    #[arg(long = "as", value_name = "NAME", requires = "instant")]
    pub as_name: Option<String>,
    /// Copy an instant machine's remaining data into standalone disks while
    /// it runs, then switch to them without stopping its I/O. Alone:
    /// `--finish NAME`; with --instant: right after the restore. Resumes
    /// an interrupted finish (the daemon resumes one by itself at start).
    #[arg(long, value_name = "NAME", num_args = 0..=1, conflicts_with = "discard")]
    pub finish: Option<Option<String>>,
    /// Copy the point's data at most this fast while finishing, in bytes per
    /// second (e.g. 100M); catching up with new writes is not held to it.
    #[arg(long, value_name = "RATE", value_parser = parse_size)]
    pub throttle: Option<u64>,
    /// With a daemon: start the finish as a job and return at once
    /// (`refpoint machine show NAME` tells when it is done).
    #[arg(long, requires = "finish")]
    pub no_wait: bool,
    /// Drop an instant machine and its files (the backup point is untouched).
    #[arg(long, value_name = "NAME")]
    pub discard: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

impl InstantArgs {
    /// Whether these flags ask for an instant-restore operation.
    pub fn given(&self) -> bool {
        self.instant || self.finish.is_some() || self.discard.is_some()
    }
}

pub(crate) fn run(
    dir: Option<PathBuf>,
    point: Option<u32>,
    machine: Option<String>,
    a: InstantArgs,
) -> Result<ExitCode> {
    let machines = refpoint_cli::machines::machines();
    if let Some(name) = &a.discard {
        let d = machines.discard_instant(name)?;
        if a.json {
            print_json(&d)?;
        } else {
            println!("discarded instant machine {}", d.discarded);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let mut finish = a.finish.clone().map(|n| n.or(a.as_name.clone()));
    if a.instant {
        let dir = dir
            .context("--instant needs the repository: refpoint restore DIR --instant --as NAME")?;
        let name = a.as_name.clone().expect("clap requires --as");
        let r = machines.instant_restore(&InstantRequest {
            repository: vhdx::paths::absolute(&dir),
            point,
            machine,
            name: name.clone(),
        })?;
        if a.json && finish.is_none() {
            print_json(&r)?;
        } else if !a.json {
            let i = r.machine.instant.as_ref();
            println!(
                "machine {name} runs on point {} of {} ({:.2}s)",
                i.map(|i| i.point).unwrap_or_default(),
                dir.display(),
                r.seconds
            );
            match refpoint_cli::machines::daemon() {
                Some(_) => {
                    for e in &r.exports {
                        println!("  export {e} (read-write, tracked)");
                    }
                }
                None => println!(
                    "  no daemon runs: `refpoint serve` exports {} at once",
                    r.exports.join(", ")
                ),
            }
            if finish.is_none() {
                println!("make it standalone with `refpoint restore --finish {name}`, or drop it with `refpoint restore --discard {name}`");
            }
        }
        finish = finish.map(|n| n.or(Some(name)));
    }
    let name = match finish {
        None => return Ok(ExitCode::SUCCESS),
        Some(None) => {
            anyhow::bail!("--finish needs the machine: refpoint restore --finish NAME")
        }
        Some(Some(name)) => name,
    };
    let request = FinishRequest {
        throttle: a.throttle,
    };
    if a.no_wait {
        let client = refpoint_cli::machines::daemon()
            .context("--no-wait needs a running daemon (`refpoint serve`); without one the finish runs in this command")?;
        let job = client.start_finish(&name, &request)?;
        if a.json {
            print_json(&job)?;
        } else {
            println!("finishing {name} as job {} of the daemon", job.id);
        }
        return Ok(ExitCode::SUCCESS);
    }
    let pb = bar(0, "finish", a.json);
    let s = machines.finish_instant(&name, &request, &mut |disk, done, total| {
        pb.set_message(disk.to_string());
        pb.set_length(total);
        pb.set_position(done);
    });
    pb.finish_and_clear();
    let s = s?;
    if a.json {
        print_json(&s)?;
    } else {
        if s.resumed {
            println!("resumed an interrupted finish");
        }
        for d in &s.disks {
            if d.already_standalone {
                println!("  {}: already standalone ({})", d.name, d.file.display());
            } else {
                println!(
                    "  {}: {} copied in {} round(s), writes paused {:.3}s; now {}",
                    d.name,
                    human(d.bytes_copied),
                    d.rounds + 1,
                    d.paused_seconds,
                    d.file.display()
                );
            }
        }
        println!(
            "machine {name} is standalone: {} copied in {:.1}s",
            human(s.bytes_copied),
            s.seconds
        );
    }
    Ok(ExitCode::SUCCESS)
}
