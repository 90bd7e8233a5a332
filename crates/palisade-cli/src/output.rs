//! Printing: kubectl-style columns for people, JSON or YAML for programs.
//!
//! Everything goes through [`outln!`]/[`out!`], which return the write error
//! instead of panicking as `println!` does, so `palisade list | head` ends
//! quietly: `main` recognises a [`StdoutError`] whose cause is
//! `ErrorKind::BrokenPipe` and exits as a SIGPIPE death would.

use anyhow::Result;
use comfy_table::{Table, presets};
use serde::Serialize;

/// How listings are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// JSON for programs.
    Json,
    /// YAML for programs and people.
    Yaml,
}

/// A failed write to stdout.
#[derive(Debug)]
pub struct StdoutError(pub std::io::Error);

impl std::fmt::Display for StdoutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("failed to write to stdout")
    }
}

impl std::error::Error for StdoutError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

impl StdoutError {
    /// Whether `e` (or a cause of it) is a write to a closed stdout.
    pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
        e.chain().any(|c| {
            c.downcast_ref::<Self>()
                .is_some_and(|s| s.0.kind() == std::io::ErrorKind::BrokenPipe)
        })
    }
}

/// `print!` that returns a [`StdoutError`] instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        write!(std::io::stdout().lock(), $($arg)*).map_err($crate::output::StdoutError)
    }};
}

/// `println!` that returns a [`StdoutError`] instead of panicking.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        writeln!(std::io::stdout().lock(), $($arg)*).map_err($crate::output::StdoutError)
    }};
}

pub(crate) use {out, outln};

/// Prints `value` as JSON/YAML, or as a table built by `table`.
pub fn print<T: Serialize + ?Sized>(
    format: Format,
    value: &T,
    table: impl FnOnce() -> (Vec<&'static str>, Vec<Vec<String>>),
) -> Result<()> {
    match format {
        Format::Json => outln!("{}", serde_json::to_string_pretty(value)?)?,
        Format::Yaml => out!("{}", serde_yaml_ng::to_string(value)?)?,
        Format::Table => {
            let (header, rows) = table();
            outln!("{}", columns(&header, rows))?;
        }
    }
    Ok(())
}

/// Plain aligned columns, no borders, as `kubectl get` prints.
pub fn columns(header: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut t = Table::new();
    t.load_preset(presets::NOTHING);
    t.set_header(header.iter().map(|h| h.to_string()));
    for row in rows {
        t.add_row(row);
    }
    // comfy-table pads the first column with a leading space; trim per line.
    t.to_string()
        .lines()
        .map(|l| l.strip_prefix(' ').unwrap_or(l).trim_end().to_owned())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `key: value` lines for one object.
pub fn fields(pairs: &[(&str, String)]) -> String {
    let width = pairs.iter().map(|(k, _)| k.len()).max().unwrap_or(0) + 1;
    pairs
        .iter()
        .map(|(k, v)| format!("{:width$} {v}", format!("{k}:")))
        .collect::<Vec<_>>()
        .join("\n")
}
