//! Rendering: every host's files from templates, the cluster model and the
//! PKI store. Pure: no network, no writes; [`render_cluster`] returns what
//! each host must hold, byte for byte, and `ocfk8s render` and the SSH
//! engine both take it from there.
//!
//! # What a host receives
//!
//! `host_plan.rs` holds the one table of what each host gets: certificates, keys
//! and kubeconfigs copied from the PKI store (kubeadm's paths under
//! `/etc/kubernetes`), and files rendered from the templates in
//! `templates/` (see `templates.rs`). Workers get only the CA certificate
//! from the PKI: never a CA key, `sa.key` or anything of etcd's.
//!
//! # Restarts
//!
//! Each file lists the systemd units to restart when it changes. Static pod
//! manifests and addon manifests restart nothing: kubelet reloads a static
//! pod when its manifest changes, and addons are applied with kubectl. So
//! that a new certificate or kubeconfig still reaches a control-plane pod,
//! each manifest carries the SHA-256 of the files its component reads
//! (annotation `ocfk8s/inputs-sha256`): new inputs make a new manifest,
//! which kubelet turns into a restarted pod.
//!
//! # etcd's initial cluster
//!
//! `etcd.service` is the same whatever the operation: the initial member
//! list, state and token live in a small per-master environment file,
//! [`ETCD_INITIAL_CLUSTER_ENV`], read through
//! `EnvironmentFile=`. etcd reads those settings only when its data folder
//! is empty (its first start); afterwards they are ignored. So when
//! `add-master` renders with [`InitialClusterState::Existing`] and a longer
//! member list, the running members' units do not change and nothing on
//! them restarts (the environment file restarts nothing).

mod context;
mod files;
mod host_plan;
mod templates;

use std::path::PathBuf;

pub use files::{HostFiles, RenderedFile};
pub(crate) use host_plan::placed_paths;
pub use host_plan::required_store_files;
pub use host_plan::ETCD_INITIAL_CLUSTER_ENV;

use crate::error::bad_input;
use crate::inventory::Cluster;

/// How etcd members of this operation start: `--initial-cluster-state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitialClusterState {
    /// The members form a new cluster (bootstrap).
    New,
    /// The members join a running cluster (`add-master`).
    Existing,
}

/// The etcd bootstrap facts of an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdBootstrap {
    pub state: InitialClusterState,
    /// Names of the masters in the initial cluster, in order. For
    /// `add-master`: the current members plus the new one.
    pub members: Vec<String>,
}

impl EtcdBootstrap {
    /// A new cluster of every master in the inventory (bootstrap's default).
    pub fn new_cluster(cluster: &Cluster) -> Self {
        EtcdBootstrap {
            state: InitialClusterState::New,
            members: cluster
                .masters
                .iter()
                .map(|master| master.name.clone())
                .collect(),
        }
    }

    /// Joining a running cluster whose members, with the new one, are
    /// `members`.
    pub fn join(members: Vec<String>) -> Self {
        EtcdBootstrap {
            state: InitialClusterState::Existing,
            members,
        }
    }
}

/// Settings of one rendering.
#[derive(Debug, Clone)]
pub struct RenderOptions {
    /// Folder of templates overriding the built-in ones (`--templates DIR`,
    /// else `[cluster] templates_dir`).
    pub templates_dir: Option<PathBuf>,
    pub etcd: EtcdBootstrap,
}

impl RenderOptions {
    /// Defaults for `cluster`: its `templates_dir`, a new etcd cluster of
    /// every master.
    pub fn for_cluster(cluster: &Cluster) -> Self {
        RenderOptions {
            templates_dir: cluster.templates_dir.clone(),
            etcd: EtcdBootstrap::new_cluster(cluster),
        }
    }

    /// The global `--templates DIR` flag, when given, wins over the
    /// inventory's `templates_dir`.
    pub fn with_templates_flag(mut self, flag: Option<&std::path::Path>) -> Self {
        if let Some(dir) = flag {
            self.templates_dir = Some(dir.to_path_buf());
        }
        self
    }
}

/// Render every host's files: one [`HostFiles`] per node, masters first
/// (inventory order), each host's files sorted by path.
///
/// Errors are bad input (exit 2) when the PKI store is missing or lacks a
/// file (the message says to run `ocfk8s pki generate`), when an override
/// template is broken (naming its file and line), when the operator's
/// `tls_cert`/`tls_key` cannot be read or the key is not the certificate's,
/// or when `options.etcd` names a
/// member that is not a master.
pub fn render_cluster(
    cluster: &Cluster,
    store: &crate::pki::Store,
    options: &RenderOptions,
) -> anyhow::Result<Vec<HostFiles>> {
    check_etcd_members(cluster, &options.etcd)?;
    if !store.is_checked() {
        anyhow::bail!("rendering needs the checked PKI store (`pki::load`)");
    }
    check_store(cluster, store)?;
    crate::pki::check_operator_tls(cluster)?;
    let templates = templates::Templates::load(options.templates_dir.as_deref())?;
    cluster
        .nodes()
        .map(|node| host_plan::render_host(cluster, node, store, &templates, &options.etcd))
        .collect()
}

fn check_etcd_members(cluster: &Cluster, etcd: &EtcdBootstrap) -> anyhow::Result<()> {
    if etcd.members.is_empty() {
        return Err(bad_input("the etcd initial cluster has no member"));
    }
    for name in &etcd.members {
        if !cluster.masters.iter().any(|master| &master.name == name) {
            return Err(bad_input(format!(
                "etcd member {name:?} is not a master in {}",
                cluster.inventory_path.display()
            )));
        }
    }
    Ok(())
}

/// Every store file the cluster needs must exist before anything renders.
fn check_store(cluster: &Cluster, store: &crate::pki::Store) -> anyhow::Result<()> {
    let dir = store.dir();
    let mut missing = Vec::new();
    for relative in required_store_files(cluster) {
        if store.read_optional(&relative)?.is_none() {
            missing.push(relative);
        }
    }
    if missing.is_empty() {
        return Ok(());
    }
    const SHOWN: usize = 8;
    let mut listed = missing
        .iter()
        .take(SHOWN)
        .cloned()
        .collect::<Vec<_>>()
        .join(", ");
    if missing.len() > SHOWN {
        listed.push_str(&format!(" and {} more", missing.len() - SHOWN));
    }
    Err(bad_input(format!(
        "PKI store {} is incomplete: missing {listed}: run `ocfk8s pki generate` to create what is missing",
        dir.display()
    )))
}
