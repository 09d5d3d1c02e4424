//! `refpoint disk write`.

use super::*;

#[derive(Subcommand)]
pub(crate) enum DiskCmd {
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

pub(crate) fn clap_num_u8(s: &str) -> Result<u8, String> {
    let r = match s.strip_prefix("0x") {
        Some(h) => u8::from_str_radix(h, 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("{s:?} is not a byte value (0-255 or 0x00-0xff)"))
}

pub(crate) fn run(c: DiskCmd) -> Result<ExitCode> {
    let DiskCmd::Write {
        disk,
        offset,
        from,
        pattern,
        length,
    } = c;
    let data = match (from, pattern, length) {
        (Some(f), _, _) => {
            std::fs::read(&f).with_context(|| format!("cannot read {}", f.display()))?
        }
        (None, Some(p), Some(n)) => vec![p; n as usize],
        _ => anyhow::bail!("give --from FILE, or --pattern BYTE with --length N"),
    };
    refpoint_cli::tracking::write(&disk, offset, &data)?;
    println!(
        "wrote {} at offset {offset} of {}",
        human(data.len() as u64),
        disk.display()
    );
    Ok(ExitCode::SUCCESS)
}
