//! `refpoint checkpoint create|list|apply|delete|convert`.

use super::*;
use api::{CheckpointKind, CheckpointRequest, Consistency};

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum KindArg {
    Standard,
    Recovery,
}

#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum ConsistencyArg {
    Application,
    Crash,
}

#[derive(Subcommand)]
pub(crate) enum CheckpointCmd {
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

pub(crate) fn run(c: CheckpointCmd) -> Result<ExitCode> {
    let ms = refpoint_cli::machines::machines();
    match c {
        CheckpointCmd::Create {
            machine,
            kind,
            consistency,
        } => {
            let r = CheckpointRequest {
                kind: Some(match kind {
                    KindArg::Standard => CheckpointKind::Standard,
                    KindArg::Recovery => CheckpointKind::Recovery,
                }),
                consistency: consistency.map(|c| match c {
                    ConsistencyArg::Application => Consistency::Application,
                    ConsistencyArg::Crash => Consistency::Crash,
                }),
            };
            let cp = ms.create_checkpoint(&machine, &r)?;
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
            let m = ms.machine(&machine)?;
            if json {
                print_json(&m.checkpoints)?;
            } else {
                for c in &m.checkpoints {
                    println!(
                        "{}  {:?}  {:?}  {}",
                        c.id,
                        c.kind,
                        c.consistency,
                        refpoint_cli::machines::time(c.created)
                    );
                }
            }
        }
        CheckpointCmd::Apply {
            machine,
            checkpoint,
        } => {
            ms.apply_checkpoint(&machine, checkpoint)?;
            println!("{machine} reverted to checkpoint {checkpoint}");
        }
        CheckpointCmd::Delete {
            machine,
            checkpoint,
        } => {
            ms.delete_checkpoint(&machine, checkpoint)?;
            println!("checkpoint {checkpoint} of {machine} merged back and deleted");
        }
        CheckpointCmd::Convert {
            machine,
            checkpoint,
        } => {
            let r = ms.convert_checkpoint(&machine, checkpoint)?;
            println!(
                "checkpoint {checkpoint} of {machine} is now reference point {}",
                r.id
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
