//! What a run needs from the command line beyond the inventory, resolved
//! once by the command that starts it: operations never see clap's types.

use std::path::PathBuf;

/// The run-wide settings of an operation.
#[derive(Debug, Clone)]
pub(crate) struct RunSettings {
    /// Hosts worked on at once: `--concurrency`, else `[ssh] concurrency`.
    pub(crate) concurrency: usize,
    /// `--accept-new-host-keys`: trust a host key seen for the first time.
    pub(crate) accept_new_host_keys: bool,
    /// `--templates DIR`, overriding `[cluster] templates_dir`.
    pub(crate) templates: Option<PathBuf>,
    /// `--health-timeout SECS`: how long each health gate of an etcd
    /// member, apiserver or kubelet waits; each gate's own default when
    /// absent.
    pub(crate) health_timeout: Option<std::time::Duration>,
}

impl RunSettings {
    /// The timeout of a gate whose default is `default`.
    pub(crate) fn gate(&self, default: std::time::Duration) -> std::time::Duration {
        self.health_timeout.unwrap_or(default)
    }
}
