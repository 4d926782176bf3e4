//! The command's outputs: stdout for results, stderr for notes, and a
//! closed stdout pipe that ends a command quietly.

use super::progress::Progress;
use anyhow::Result;
use lichen_fcp::blocking::CHUNK;
use std::io::{self, BufWriter, IsTerminal, Write};

/// The command's outputs, injectable for tests.
pub(super) struct Term<'a> {
    pub(super) out: &'a mut dyn Write,
    pub(super) err: &'a mut dyn Write,
    /// stdout is a terminal (genkey prints labels then).
    pub(super) out_tty: bool,
    /// Draw progress bars (stderr is a terminal).
    pub(super) progress: bool,
}

pub(super) fn with_std_term(f: impl FnOnce(&mut Term<'_>) -> Result<()>) -> Result<()> {
    let stdout = io::stdout();
    let out_tty = stdout.is_terminal();
    let mut out = BufWriter::with_capacity(CHUNK, stdout.lock());
    let mut err = io::stderr();
    let progress = err.is_terminal();
    let mut t = Term {
        out: &mut out,
        err: &mut err,
        out_tty,
        progress,
    };
    let result = f(&mut t).and_then(|()| flush_out(t.out));
    quiet_pipe(result)
}

/// stdout was closed by the reader (`lichen get … | head`): stop quietly.
#[derive(Debug)]
pub(super) struct StdoutClosed;

impl std::fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("stdout was closed")
    }
}

impl std::error::Error for StdoutClosed {}

pub(super) fn stdout_error(e: io::Error) -> anyhow::Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        anyhow::Error::new(StdoutClosed)
    } else {
        anyhow::Error::new(e).context("cannot write to stdout")
    }
}

pub(super) fn write_out(out: &mut dyn Write, bytes: &[u8]) -> Result<()> {
    out.write_all(bytes).map_err(stdout_error)
}

pub(super) fn flush_out(out: &mut dyn Write) -> Result<()> {
    out.flush().map_err(stdout_error)
}

pub(super) fn quiet_pipe(r: Result<()>) -> Result<()> {
    match r {
        Err(e) if e.downcast_ref::<StdoutClosed>().is_some() => Ok(()),
        other => other,
    }
}

pub(super) fn print_line(t: &mut Term<'_>, line: &str) -> Result<()> {
    write_out(t.out, line.as_bytes())?;
    write_out(t.out, b"\n")?;
    flush_out(t.out)
}

pub(super) fn note(t: &mut Term<'_>, bar: &Progress, text: &str) {
    let err = &mut *t.err;
    bar.bar.suspend(|| {
        let _ = writeln!(err, "lichen: {text}");
    });
}
