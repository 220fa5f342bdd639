//! One module per command, each with a `run` taking its settings and the
//! printer.

pub(crate) mod add_master;
pub(crate) mod add_worker;
pub(crate) mod bootstrap;
pub(crate) mod certs;
pub(crate) mod certs_remote;
pub(crate) mod completions;
pub(crate) mod etcd;
pub(crate) mod init;
pub(crate) mod kubeconfig;
pub(crate) mod pki;
pub(crate) mod plan;
pub(crate) mod remove_master;
pub(crate) mod remove_worker;
pub(crate) mod render;
pub(crate) mod rotate;
pub(crate) mod status;
pub(crate) mod validate;

use std::path::Path;

use crate::inventory::{self, Resolved};
use crate::printer::Printer;

/// The run settings from the global flags, for `cluster`.
pub(crate) fn settings(
    cluster: &inventory::Cluster,
    global: &crate::cli::GlobalArgs,
) -> crate::ops::settings::RunSettings {
    crate::ops::settings::RunSettings {
        concurrency: global
            .concurrency
            .map(|value| value as usize)
            .unwrap_or(cluster.ssh.concurrency)
            .max(1),
        accept_new_host_keys: global.accept_new_host_keys,
        templates: global.templates.clone(),
        health_timeout: global.health_timeout.map(std::time::Duration::from_secs),
    }
}

/// Load the inventory and show its warnings.
pub(crate) fn load_inventory(path: &Path, printer: &Printer) -> anyhow::Result<Resolved> {
    let resolved = inventory::load(path)?;
    for warning in &resolved.warnings {
        printer.warn(&warning.to_string());
    }
    Ok(resolved)
}
