//! The inventory exactly as written: strict serde types that mirror the TOML.
//!
//! Nothing here is trusted. Unknown keys are refused by `deny_unknown_fields`
//! so a typo never silently falls back to a default, and values that other
//! rules refer to keep their source span so cross-field errors can point at a
//! line. [`super::resolve`] turns this into a validated [`super::Cluster`].

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_spanned::Spanned;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawInventory {
    pub cluster: RawCluster,
    #[serde(default)]
    pub ssh: RawSsh,
    #[serde(default)]
    pub install: RawInstall,
    pub ingress: Option<RawIngress>,
    #[serde(default)]
    pub master: Vec<RawHost>,
    #[serde(default)]
    pub worker: Vec<RawHost>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCluster {
    pub name: Spanned<String>,
    pub kubernetes_version: Spanned<String>,
    pub control_plane_endpoint: Option<Spanned<String>>,
    pub pod_cidr: Option<Spanned<String>>,
    pub service_cidr: Option<Spanned<String>>,
    pub cluster_domain: Option<Spanned<String>>,
    pub cni: Option<Spanned<String>>,
    pub key_algorithm: Option<Spanned<String>>,
    pub cert_validity_days: Option<Spanned<u32>>,
    pub ca_validity_days: Option<Spanned<u32>>,
    pub pki_dir: Option<Spanned<String>>,
    pub templates_dir: Option<Spanned<String>>,
    pub resolv_conf: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawSsh {
    pub user: Option<Spanned<String>>,
    pub port: Option<Spanned<u16>>,
    pub identity_file: Option<Spanned<String>>,
    pub known_hosts: Option<Spanned<String>>,
    pub jump_host: Option<Spanned<String>>,
    pub concurrency: Option<Spanned<u32>>,
    pub connect_timeout_secs: Option<Spanned<u32>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawInstall {
    pub method: Option<Spanned<String>>,
    pub bin_dir: Option<Spanned<String>>,
    pub upload_from: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIngress {
    pub vip: Spanned<String>,
    pub interface: Spanned<String>,
    pub virtual_router_id: Option<Spanned<u16>>,
    pub node_port: Option<Spanned<u32>>,
    pub nodes: Option<Vec<Spanned<String>>>,
    pub server_names: Vec<Spanned<String>>,
    pub tls_cert: Option<Spanned<String>>,
    pub tls_key: Option<Spanned<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHost {
    pub name: Spanned<String>,
    pub address: Spanned<String>,
    pub ssh_user: Option<Spanned<String>>,
    pub ssh_port: Option<Spanned<u16>>,
    #[serde(default)]
    pub labels: BTreeMap<Spanned<String>, Spanned<String>>,
    #[serde(default)]
    pub taints: Vec<Spanned<String>>,
}
