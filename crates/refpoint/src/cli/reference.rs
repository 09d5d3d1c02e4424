//! `refpoint reference list|show|destroy`.

use super::*;

#[derive(Subcommand)]
pub(crate) enum ReferenceCmd {
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

pub(crate) fn run(c: ReferenceCmd) -> Result<ExitCode> {
    let ms = refpoint_cli::machines::machines();
    match c {
        ReferenceCmd::List { machine, json } => {
            let m = ms.machine(&machine)?;
            if json {
                print_json(&m.reference_points)?;
            } else {
                for r in &m.reference_points {
                    let b = r
                        .backup
                        .as_ref()
                        .map(|b| format!("  backup {} point {}", b.dir.display(), b.point))
                        .unwrap_or_default();
                    println!("{}  {}{b}", r.id, refpoint_cli::machines::time(r.created));
                }
            }
        }
        ReferenceCmd::Show { machine, id } => {
            let m = ms.machine(&machine)?;
            let r = m
                .reference_points
                .iter()
                .find(|r| r.id == id)
                .with_context(|| format!("{machine} has no reference point {id}"))?;
            print_json(r)?;
        }
        ReferenceCmd::Destroy { machine, id } => {
            ms.destroy_reference_point(&machine, id)?;
            println!("reference point {id} of {machine} destroyed; its RCT IDs are released");
        }
    }
    Ok(ExitCode::SUCCESS)
}
