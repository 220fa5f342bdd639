//! The one output channel: requested output goes to stdout, everything about
//! the run (progress, warnings, notes) to stderr, filtered by verbosity.
//!
//! On a terminal, per-host spinners show what each host is doing. While they
//! are live, every line printed goes through them (`MultiProgress::suspend`),
//! so a line is never drawn over by a spinner and no spinner is left behind
//! in the scrollback: a host's finished step becomes a plain line, exactly
//! as it is printed when output is not a terminal, and the spinners are
//! cleared when the work ends.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};

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
    /// The spinners currently drawn, if any.
    live: Arc<Mutex<Option<indicatif::MultiProgress>>>,
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
            live: Arc::default(),
        }
    }

    /// Run `print` with the live spinners (if any) hidden, then redraw them.
    fn around_spinners(&self, print: impl FnOnce()) {
        let live = self
            .live
            .lock()
            .ok()
            .and_then(|live| live.as_ref().cloned());
        match live {
            Some(multi) => multi.suspend(print),
            None => print(),
        }
    }

    fn line_to_stderr(&self, text: &str) {
        self.around_spinners(|| eprintln!("{text}"));
    }

    /// The command's result (a summary, a table, a kubeconfig): always shown.
    pub fn output(&self, text: &str) {
        self.around_spinners(|| {
            let mut stdout = std::io::stdout().lock();
            let _ = stdout.write_all(text.as_bytes());
            if !text.ends_with('\n') {
                let _ = stdout.write_all(b"\n");
            }
            let _ = stdout.flush();
        });
    }

    /// A summary of what a command did (files created, trees written): on
    /// stdout like [`Printer::output`], but hidden by `--quiet`, which asks
    /// for errors and requested output only.
    pub fn summary(&self, text: &str) {
        if self.verbosity >= Verbosity::Normal {
            self.output(text);
        }
    }

    /// Progress and notes about the run, hidden by `--quiet`.
    pub fn info(&self, text: &str) {
        if self.verbosity >= Verbosity::Normal {
            self.line_to_stderr(text);
        }
    }

    /// Details shown with `--verbose`.
    pub fn detail(&self, text: &str) {
        if self.verbosity >= Verbosity::Verbose {
            self.line_to_stderr(text);
        }
    }

    /// Warnings are shown even with `--quiet`: they are about the input.
    pub fn warn(&self, text: &str) {
        self.line_to_stderr(&format!("warning: {text}"));
    }
}

/// One progress line per host: an indicatif spinner per host on a terminal,
/// plain `host: step: result` lines otherwise.
pub struct HostProgress {
    printer: Printer,
    bars: Option<(
        indicatif::MultiProgress,
        std::collections::BTreeMap<String, indicatif::ProgressBar>,
    )>,
    width: usize,
}

impl Printer {
    /// Progress for work on `hosts`.
    pub fn host_progress<'a>(&self, hosts: impl IntoIterator<Item = &'a str>) -> HostProgress {
        let hosts: Vec<&str> = hosts.into_iter().collect();
        let width = hosts.iter().map(|host| host.len()).max().unwrap_or(0);
        let bars = self.progress_bars.then(|| {
            let multi = indicatif::MultiProgress::new();
            let style = indicatif::ProgressStyle::with_template("{spinner} {prefix} {wide_msg}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner());
            let bars = hosts
                .iter()
                .map(|host| {
                    let bar = multi.add(indicatif::ProgressBar::new_spinner());
                    bar.set_style(style.clone());
                    bar.set_prefix(format!("{host:width$}"));
                    bar.enable_steady_tick(std::time::Duration::from_millis(120));
                    (host.to_string(), bar)
                })
                .collect();
            if let Ok(mut live) = self.live.lock() {
                *live = Some(multi.clone());
            }
            (multi, bars)
        });
        HostProgress {
            printer: self.clone(),
            bars,
            width,
        }
    }
}

impl HostProgress {
    pub fn start(&self, host: &str, step: &str) {
        match self.bar(host) {
            Some(bar) => bar.set_message(format!("{step}...")),
            None => self
                .printer
                .detail(&format!("{host:width$}  {step}...", width = self.width)),
        }
    }

    /// A host finished a step: shown at normal verbosity when `report`,
    /// else only with `--verbose` (a spinner shows it while it lasts).
    pub fn finish(&self, host: &str, step: &str, summary: &str, report: bool) {
        let line = if summary.is_empty() {
            format!("{step}: ok")
        } else {
            format!("{step}: {summary}")
        };
        if let Some(bar) = self.bar(host) {
            bar.set_message(line.clone());
        }
        let line = format!("{host:width$}  {line}", width = self.width);
        if report {
            self.printer.info(&line);
        } else {
            self.printer.detail(&line);
        }
    }

    pub fn fail(&self, host: &str, step: &str, error: &str) {
        let line = format!("{step}: FAILED: {error}");
        if let Some(bar) = self.bar(host) {
            bar.set_message(line.clone());
        }
        self.printer
            .info(&format!("{host:width$}  {line}", width = self.width));
    }

    fn bar(&self, host: &str) -> Option<&indicatif::ProgressBar> {
        self.bars.as_ref().and_then(|(_, bars)| bars.get(host))
    }
}

impl Drop for HostProgress {
    /// Clear the spinners: what they showed that matters was printed as
    /// lines.
    fn drop(&mut self) {
        if let Some((multi, bars)) = &self.bars {
            for bar in bars.values() {
                bar.finish_and_clear();
            }
            let _ = multi.clear();
            if let Ok(mut live) = self.printer.live.lock() {
                *live = None;
            }
        }
    }
}
