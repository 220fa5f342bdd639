//! The validated cluster model everything else is built from.
//!
//! Values of these types only come out of [`super::load`] /
//! [`super::resolve`], so the rest of the program can rely on every rule of
//! the inventory contract already holding: names are unique DNS labels,
//! addresses are unique IPs outside the pod and service networks, there is at
//! least one master, and so on.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;
use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub struct Cluster {
    pub name: String,
    pub kubernetes_version: String,
    pub control_plane_endpoint: Endpoint,
    pub pod_cidr: IpNet,
    pub service_cidr: IpNet,
    pub cluster_domain: String,
    pub cni: Cni,
    pub key_algorithm: KeyAlgorithm,
    pub cert_validity_days: u32,
    pub ca_validity_days: u32,
    /// Absolute (or inventory-relative resolved) path of the PKI store.
    pub pki_dir: PathBuf,
    pub templates_dir: Option<PathBuf>,
    /// The resolv.conf kubelet hands to pods (and CoreDNS forwards to):
    /// on hosts running systemd-resolved, its real file, not the stub.
    pub resolv_conf: String,
    pub ssh: Ssh,
    pub install: Install,
    pub ingress: Option<Ingress>,
    pub masters: Vec<Node>,
    pub workers: Vec<Node>,
    /// The inventory file this was read from.
    pub inventory_path: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
}

impl Endpoint {
    /// `https://host:port`, with IPv6 literals bracketed.
    pub fn url(&self) -> String {
        format!("https://{}", self.host_port())
    }

    pub fn host_port(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Cni {
    Flannel,
    Weave,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum KeyAlgorithm {
    #[serde(rename = "ecdsa-p256")]
    EcdsaP256,
    #[serde(rename = "rsa-2048")]
    Rsa2048,
}

#[derive(Debug, Clone, Serialize)]
pub struct Ssh {
    pub user: String,
    pub port: u16,
    pub identity_file: Option<PathBuf>,
    pub known_hosts: Option<PathBuf>,
    pub jump_host: Option<String>,
    pub concurrency: usize,
    pub connect_timeout_secs: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum InstallMethod {
    Apt,
    Upload,
    None,
}

#[derive(Debug, Clone, Serialize)]
pub struct Install {
    pub method: InstallMethod,
    pub bin_dir: String,
    pub upload_from: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Ingress {
    pub vip: IpAddr,
    pub interface: String,
    pub virtual_router_id: u8,
    pub node_port: u16,
    /// Names of the workers that run ingress-nginx (every worker by default).
    pub nodes: Vec<String>,
    pub server_names: Vec<String>,
    pub tls: Option<IngressTls>,
}

#[derive(Debug, Clone, Serialize)]
pub struct IngressTls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Master,
    Worker,
}

#[derive(Debug, Clone, Serialize)]
pub struct Node {
    pub name: String,
    pub address: IpAddr,
    pub role: Role,
    pub ssh_user: String,
    pub ssh_port: u16,
    pub labels: BTreeMap<String, String>,
    pub taints: Vec<String>,
}

impl Node {
    pub fn is_master(&self) -> bool {
        self.role == Role::Master
    }
}

impl Cluster {
    /// Masters first, then workers, each in inventory order.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.masters.iter().chain(self.workers.iter())
    }

    pub fn node(&self, name: &str) -> Option<&Node> {
        self.nodes().find(|node| node.name == name)
    }

    /// The first address of the service network: the `kubernetes` Service.
    pub fn kubernetes_service_ip(&self) -> IpAddr {
        nth_address(&self.service_cidr, 1)
    }

    /// The 10th address of the service network: cluster DNS, as kubeadm does.
    pub fn dns_service_ip(&self) -> IpAddr {
        nth_address(&self.service_cidr, 10)
    }

    /// Workers that run ingress-nginx.
    pub fn ingress_nodes(&self) -> Vec<&Node> {
        match &self.ingress {
            Some(ingress) => ingress
                .nodes
                .iter()
                .filter_map(|name| self.node(name))
                .collect(),
            None => Vec::new(),
        }
    }

    /// etcd quorum arithmetic for the current number of masters.
    pub fn quorum(&self) -> Quorum {
        Quorum::of(self.masters.len())
    }
}

/// Quorum of an etcd cluster of `members` voters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quorum {
    pub members: usize,
    pub quorum: usize,
    pub tolerates: usize,
}

impl Quorum {
    pub fn of(members: usize) -> Self {
        let quorum = members / 2 + 1;
        Quorum {
            members,
            quorum,
            tolerates: members.saturating_sub(quorum),
        }
    }
}

/// The `n`th address after the network address (validation guarantees the
/// service network has room for it).
pub(crate) fn nth_address(net: &IpNet, n: u32) -> IpAddr {
    match net.network() {
        IpAddr::V4(v4) => IpAddr::V4((u32::from(v4).wrapping_add(n)).into()),
        IpAddr::V6(v6) => IpAddr::V6((u128::from(v6).wrapping_add(u128::from(n))).into()),
    }
}

impl KeyAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyAlgorithm::EcdsaP256 => "ecdsa-p256",
            KeyAlgorithm::Rsa2048 => "rsa-2048",
        }
    }
}

impl Cni {
    pub fn as_str(self) -> &'static str {
        match self {
            Cni::Flannel => "flannel",
            Cni::Weave => "weave",
        }
    }
}
