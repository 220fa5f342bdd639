//! Adopting an existing cluster's PKI.

use std::path::Path;

use crate::inventory::Cluster;

pub fn from_kubeadm(_cluster: &Cluster, _dir: &Path, _node: &str) -> anyhow::Result<Vec<String>> {
    anyhow::bail!("`ocfk8s pki import --from-kubeadm` is not implemented yet")
}

pub fn from_kubetool(_cluster: &Cluster, _dir: &Path) -> anyhow::Result<Vec<String>> {
    anyhow::bail!("`ocfk8s pki import --from-kubetool` is not implemented yet")
}
