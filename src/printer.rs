//! The one output channel: requested output goes to stdout, everything about
//! the run (progress, warnings, notes) to stderr, filtered by verbosity.

use std::io::{IsTerminal, Write};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    Quiet,
    Normal,
    Verbose,
}

#[derive(Debug, Clone)]
pub struct Printer {
    pub verbosity: Verbosity,
    /// Progress bars on a terminal; plain lines otherwise.
    pub progress_bars: bool,
}

impl Printer {
    pub fn new(verbose: u8, quiet: bool, no_progress: bool) -> Self {
        let verbosity = if quiet {
            Verbosity::Quiet
        } else if verbose > 0 {
            Verbosity::Verbose
        } else {
            Verbosity::Normal
        };
        Printer {
            verbosity,
            progress_bars: !no_progress
                && verbosity != Verbosity::Quiet
                && std::io::stderr().is_terminal(),
        }
    }

    /// The command's result (a summary, a table, a kubeconfig): always shown.
    pub fn output(&self, text: &str) {
        let mut stdout = std::io::stdout().lock();
        let _ = stdout.write_all(text.as_bytes());
        if !text.ends_with('\n') {
            let _ = stdout.write_all(b"\n");
        }
        let _ = stdout.flush();
    }

    /// Progress and notes about the run, hidden by `--quiet`.
    pub fn info(&self, text: &str) {
        if self.verbosity >= Verbosity::Normal {
            eprintln!("{text}");
        }
    }

    /// Details shown with `--verbose`.
    pub fn detail(&self, text: &str) {
        if self.verbosity >= Verbosity::Verbose {
            eprintln!("{text}");
        }
    }

    /// Warnings are shown even with `--quiet`: they are about the input.
    pub fn warn(&self, text: &str) {
        eprintln!("warning: {text}");
    }
}
