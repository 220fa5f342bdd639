//! One module per command, each with a `run` taking its settings and the
//! printer.

pub(crate) mod bootstrap;
pub(crate) mod certs;
pub(crate) mod certs_remote;
pub(crate) mod completions;
pub(crate) mod init;
pub(crate) mod kubeconfig;
pub(crate) mod pki;
pub(crate) mod plan;
pub(crate) mod render;
pub(crate) mod status;
pub(crate) mod validate;

use std::path::Path;

use crate::inventory::{self, Resolved};
use crate::printer::Printer;

/// Commands whose capability has not been built yet fail honestly (exit 1).
pub(crate) fn not_yet(command: &str) -> anyhow::Result<()> {
    anyhow::bail!("`ocfk8s {command}` is not implemented yet")
}

/// Load the inventory and show its warnings.
pub(crate) fn load_inventory(path: &Path, printer: &Printer) -> anyhow::Result<Resolved> {
    let resolved = inventory::load(path)?;
    for warning in &resolved.warnings {
        printer.warn(&warning.to_string());
    }
    Ok(resolved)
}
