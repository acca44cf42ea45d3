//! Everything the commands print on stdout: lines, tables, JSON.
//!
//! Every write goes through here and returns a [`StdoutError`] instead of
//! panicking as `println!` does. When the reader of stdout has gone
//! (`chittysync ls services | head -1`), the command stops at its next write
//! and `main` exits quietly, as Unix tools do.

use std::fmt;
use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, Ordering};

use chittysync::{Record, Schema};

/// Standard output could not be written.
#[derive(Debug)]
pub(crate) struct StdoutError(io::Error);

impl StdoutError {
    /// The reader closed the pipe: not a failure of the command.
    pub(crate) fn is_closed(&self) -> bool {
        self.0.kind() == io::ErrorKind::BrokenPipe
    }
}

impl From<io::Error> for StdoutError {
    fn from(e: io::Error) -> Self {
        StdoutError(e)
    }
}

impl fmt::Display for StdoutError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "writing to standard output: {}", self.0)
    }
}

impl std::error::Error for StdoutError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// Whether `e` is (or was caused by) a closed stdout pipe.
pub(crate) fn is_closed(e: &anyhow::Error) -> bool {
    e.chain()
        .filter_map(|c| c.downcast_ref::<StdoutError>())
        .any(StdoutError::is_closed)
}

static CARRY_ON_WHEN_CLOSED: AtomicBool = AtomicBool::new(false);

/// From now on a closed stdout does not stop the command: for commands whose
/// exit status reports checks that must run whether or not anyone reads what
/// they print (the demo).
pub(crate) fn carry_on_when_closed() {
    CARRY_ON_WHEN_CLOSED.store(true, Ordering::Relaxed);
}

/// A write's outcome, with a closed pipe forgiven when the command asked.
fn settle(written: io::Result<()>) -> Result<(), StdoutError> {
    match written {
        Err(e)
            if e.kind() == io::ErrorKind::BrokenPipe
                && CARRY_ON_WHEN_CLOSED.load(Ordering::Relaxed) =>
        {
            Ok(())
        }
        other => Ok(other?),
    }
}

/// Writes formatted text to stdout (what `print!` does, without the panic).
pub(crate) fn write(args: fmt::Arguments<'_>) -> Result<(), StdoutError> {
    settle(io::stdout().lock().write_fmt(args))
}

/// Writes formatted text and a newline to stdout.
pub(crate) fn write_line(args: fmt::Arguments<'_>) -> Result<(), StdoutError> {
    let mut out = io::stdout().lock();
    settle(out.write_fmt(args).and_then(|()| out.write_all(b"\n")))
}

/// `println!` that returns a [`StdoutError`] instead of panicking.
macro_rules! outln {
    () => {
        $crate::output::write_line(format_args!(""))
    };
    ($($arg:tt)*) => {
        $crate::output::write_line(format_args!($($arg)*))
    };
}

/// `print!` that returns a [`StdoutError`] instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::write(format_args!($($arg)*))
    };
}

pub(crate) use {out, outln};

/// Prints rows as an aligned table with a header.
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> Result<(), StdoutError> {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = io::stdout().lock();
    let mut line = |cells: &[&str]| -> Result<(), StdoutError> {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        settle(writeln!(out, "{}", padded.join("  ").trim_end()))
    };
    line(headers)?;
    let rules: Vec<String> = widths.iter().map(|w| "─".repeat(*w)).collect();
    line(&rules.iter().map(String::as_str).collect::<Vec<_>>())?;
    for row in rows {
        line(&row.iter().map(String::as_str).collect::<Vec<_>>())?;
    }
    Ok(())
}

/// Shortens long cell text for tables.
pub(crate) fn clip(text: &str, max: usize) -> String {
    let one_line = text.replace('\n', "⏎");
    if one_line.chars().count() <= max {
        one_line
    } else {
        let cut: String = one_line.chars().take(max.saturating_sub(1)).collect();
        format!("{cut}…")
    }
}

/// Prints records as a table whose columns are the schema's fields.
pub(crate) fn records(schema: &Schema, records: &[Record]) -> Result<(), StdoutError> {
    let mut headers = vec!["id"];
    headers.extend(schema.fields.iter().map(|f| f.name.as_str()));
    let rows: Vec<Vec<String>> = records
        .iter()
        .map(|r| {
            let mut row = vec![if r.deleted.is_some() {
                format!("{} (deleted)", r.id)
            } else {
                r.id.clone()
            }];
            for f in &schema.fields {
                let mut cell = r
                    .get(&f.name)
                    .map(|v| clip(&v.to_string(), 40))
                    .unwrap_or_default();
                if r.conflicted.contains(&f.name) {
                    cell.push_str(" ⚠");
                }
                row.push(cell);
            }
            row
        })
        .collect();
    table(&headers, &rows)
}

/// Prints a JSON value, pretty.
pub(crate) fn json(value: &serde_json::Value) -> Result<(), StdoutError> {
    outln!(
        "{}",
        serde_json::to_string_pretty(value).expect("JSON values serialize")
    )
}
