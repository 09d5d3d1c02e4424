//! The commands, one module per noun: each holds its arguments (clap) and
//! what it does. They share the helpers here.

pub(crate) mod backup;
pub(crate) mod checkpoint;
pub(crate) mod disk;
pub(crate) mod hints;
pub(crate) mod instant;
pub(crate) mod machine;
pub(crate) mod rct;
pub(crate) mod reference;
pub(crate) mod serve;
pub(crate) mod vhd;

pub(crate) use anyhow::{Context, Result};
pub(crate) use clap::{Args, Subcommand, ValueEnum};
pub(crate) use refpoint_cli::progress::bar;
pub(crate) use refpoint_cli::units::{human, parse_size};
pub(crate) use std::path::PathBuf;
pub(crate) use std::process::ExitCode;
pub(crate) use storage::LocalFs;

/// Exit status of a tracking error: take a full backup.
pub(crate) const EXIT_TRACKING: u8 = 3;

/// Output format of an image (`--format`).
#[derive(Clone, Copy, ValueEnum)]
pub(crate) enum FormatArg {
    Vhdx,
    Raw,
}

pub(crate) fn print_json<T: serde::Serialize>(v: &T) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}
