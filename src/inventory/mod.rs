//! The inventory: one TOML file describing the cluster.
//!
//! Two stages, as in ripgrep's LowArgs/HiArgs: [`raw`] deserialises strictly
//! (unknown keys, missing keys and wrong types are errors with line:column),
//! then [`resolve`] applies every cross-field rule and builds the [`Cluster`]
//! the rest of the program uses. All problems are collected and reported at
//! once, and nothing is written anywhere when any is found.

mod cluster;
mod diagnostic;
mod raw;
mod resolve;
mod starter;
mod syntax;

use std::path::Path;

pub use cluster::*;
pub use diagnostic::{Diagnostic, Location};
pub use resolve::Resolved;
pub use starter::starter_inventory;
pub(crate) use syntax::{canonical, family, is_dns_label, not_a_label, same_family, shown};
pub use syntax::{unusable_address, SUPPORTED_KUBERNETES_MINORS};

use crate::error::bad_input;

/// Read, parse and validate an inventory file. Only a regular UTF-8 file
/// of at most [`crate::input_file::MAX_TEXT_FILE`] bytes is read, so a FIFO
/// or a device named by mistake cannot hang or exhaust the run.
///
/// Errors are [`crate::error::BadInput`] (exit status 2) listing every
/// problem, each with its file, line:column and field.
pub fn load(path: &Path) -> anyhow::Result<Resolved> {
    let _timer = crate::timings::step("inventory");
    let text = crate::input_file::read_text(path, crate::input_file::MAX_TEXT_FILE)
        .map_err(|error| bad_input(format!("cannot read inventory {}: {error}", path.display())))?;
    from_str(path, &text)
}

/// Parse and validate inventory text; `path` is used for locations and for
/// relative paths inside it.
pub fn from_str(path: &Path, text: &str) -> anyhow::Result<Resolved> {
    let raw = resolve::parse(path, text).map_err(report)?;
    resolve::resolve(path, text, raw).map_err(report)
}

fn report(diagnostics: Vec<Diagnostic>) -> anyhow::Error {
    let count = diagnostics.len();
    let mut message = format!(
        "invalid inventory ({count} error{}):",
        if count == 1 { "" } else { "s" }
    );
    for diagnostic in &diagnostics {
        message.push_str(&format!("\n  {diagnostic}"));
    }
    bad_input(message)
}
