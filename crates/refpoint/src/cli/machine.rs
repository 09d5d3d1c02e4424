//! `refpoint machine create|list|show|remove`.

use super::*;

#[derive(Subcommand)]
pub(crate) enum MachineCmd {
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

pub(crate) fn run(c: MachineCmd) -> Result<ExitCode> {
    use refpoint_cli::machines::{parse_disk_arg, store};
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
                        "{}  {} disk(s), {} checkpoint(s), {} reference point(s){}",
                        m.name,
                        m.disks.len(),
                        m.checkpoints.len(),
                        m.reference_points.len(),
                        m.instant.as_ref().map(instant_text).unwrap_or_default()
                    );
                }
            }
        }
        MachineCmd::Show { name, json } => {
            let m = st.load(&name)?;
            if json {
                print_json(&m)?;
            } else {
                println!(
                    "machine {}{}",
                    m.name,
                    m.instant.as_ref().map(instant_text).unwrap_or_default()
                );
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
                        refpoint_cli::machines::time(c.created)
                    );
                }
                for r in &m.reference_points {
                    println!(
                        "  reference point {} ({})",
                        r.id,
                        refpoint_cli::machines::time(r.created)
                    );
                }
            }
        }
        MachineCmd::Remove { name } => {
            if refpoint_cli::machines::daemon().is_some() {
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

/// How `machine list|show` tell that a machine runs on a backup point.
fn instant_text(i: &::machine::Instant) -> String {
    format!(
        ", instant on point {} of {}{}",
        i.point,
        i.repository.display(),
        if i.finishing { " (finishing)" } else { "" }
    )
}
