//! What templates see: plain values computed once from the cluster, so
//! templates hold layout, not logic (URLs, flag lists and priorities are
//! built here, where they are unit-tested).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::inventory::{Cluster, Node};

use super::{EtcdBootstrap, InitialClusterState};

/// Container images, pinned. The Kubernetes components follow
/// `kubernetes_version`; the addons are the releases tested with it.
pub(crate) const COREDNS_IMAGE: &str = "registry.k8s.io/coredns/coredns:v1.11.3";
pub(crate) const FLANNEL_IMAGE: &str = "docker.io/flannel/flannel:v0.26.1";
pub(crate) const FLANNEL_CNI_PLUGIN_IMAGE: &str =
    "docker.io/flannel/flannel-cni-plugin:v1.5.1-flannel2";
pub(crate) const WEAVE_KUBE_IMAGE: &str = "docker.io/weaveworks/weave-kube:2.8.1";
pub(crate) const WEAVE_NPC_IMAGE: &str = "docker.io/weaveworks/weave-npc:2.8.1";
pub(crate) const INGRESS_NGINX_IMAGE: &str = "registry.k8s.io/ingress-nginx/controller:v1.12.8";

/// The sandbox (pause) image each supported Kubernetes minor expects, as
/// kubeadm pins it.
pub(crate) fn pause_image(kubernetes_version: &str) -> String {
    let minor: u32 = kubernetes_version
        .split('.')
        .nth(1)
        .and_then(|minor| minor.parse().ok())
        .unwrap_or(0);
    let tag = if minor >= 31 { "3.10" } else { "3.9" };
    format!("registry.k8s.io/pause:{tag}")
}

/// The container runtime every kubelet talks to.
pub(crate) const CONTAINER_RUNTIME_ENDPOINT: &str = "unix:///run/containerd/containerd.sock";

/// The taint kubeadm puts on control-plane nodes; masters register with it.
const CONTROL_PLANE_TAINT: &str = "node-role.kubernetes.io/control-plane:NoSchedule";

#[derive(Debug, Serialize)]
pub(crate) struct Context {
    pub cluster: ClusterFacts,
    pub node: NodeFacts,
    pub masters: Vec<HostRef>,
    pub workers: Vec<HostRef>,
    /// The masters' addresses as host networks (`a/32,b/32`): the proxies
    /// whose forwarded headers ingress-nginx trusts.
    pub trusted_proxies: String,
    pub etcd: EtcdFacts,
    pub ingress: Option<IngressFacts>,
    pub images: Images,
    /// SHA-256 of the files each control-plane component reads, keyed by
    /// component (`kube-apiserver`, ...): written into its static pod
    /// manifest so kubelet restarts the pod when a certificate or
    /// kubeconfig changes.
    pub inputs_sha256: BTreeMap<String, String>,
    pub pki: PkiFacts,
}

/// Host paths of PKI files whose place depends on the store's state.
#[derive(Debug, Serialize)]
pub(crate) struct PkiFacts {
    /// kube-controller-manager's `--cluster-signing-cert-file`: the one CA
    /// certificate matching `ca.key`. `/etc/kubernetes/pki/ca.crt`, except
    /// during a CA rotation, when that file is a bundle of two CAs (which
    /// the signer refuses) and the signer's own certificate is
    /// [`CLUSTER_SIGNING_CERT`].
    pub cluster_signing_cert_file: String,
}

/// Where the signing CA's certificate goes during a CA rotation.
pub(crate) const CLUSTER_SIGNING_CERT: &str = "/etc/kubernetes/pki/ca-signing.crt";

#[derive(Debug, Serialize)]
pub(crate) struct ClusterFacts {
    pub name: String,
    pub kubernetes_version: String,
    pub control_plane_endpoint: String,
    pub pod_cidr: String,
    pub service_cidr: String,
    pub cluster_domain: String,
    pub cni: String,
    pub kubernetes_service_ip: String,
    pub dns_service_ip: String,
    pub bin_dir: String,
    pub container_runtime_endpoint: String,
    pub resolv_conf: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct NodeFacts {
    pub name: String,
    pub address: String,
    /// The address as it appears in a URL (IPv6 bracketed).
    pub url_host: String,
    pub is_master: bool,
    /// `key=value,...` for kubelet's `--node-labels`, empty when none.
    pub node_labels: String,
    pub taints: Vec<Taint>,
}

#[derive(Debug, Serialize)]
pub(crate) struct Taint {
    pub key: String,
    pub value: Option<String>,
    pub effect: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct HostRef {
    pub name: String,
    pub address: String,
    pub url_host: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct EtcdFacts {
    /// `https://a:2379,https://b:2379,...`: every master, for the apiserver.
    pub servers: String,
    /// `name=https://a:2380,...`: the members etcd starts with.
    pub initial_cluster: String,
    pub initial_cluster_state: String,
    pub initial_cluster_token: String,
}

#[derive(Debug, Serialize)]
pub(crate) struct IngressFacts {
    pub vip: String,
    pub interface: String,
    pub virtual_router_id: u8,
    pub node_port: u16,
    pub server_names: Vec<String>,
    /// The workers running ingress-nginx: nginx's upstream.
    pub nodes: Vec<HostRef>,
    /// This master's VRRP priority (distinct per master).
    pub priority: u32,
    /// The other masters' addresses: keepalived's unicast peers.
    pub peers: Vec<String>,
    /// The control-plane endpoint is the VIP: keepalived also tracks the
    /// local apiserver.
    pub track_apiserver: bool,
}

#[derive(Debug, Serialize)]
pub(crate) struct Images {
    pub kube_apiserver: String,
    pub kube_controller_manager: String,
    pub kube_scheduler: String,
    pub coredns: String,
    pub flannel: String,
    pub flannel_cni_plugin: String,
    pub weave_kube: String,
    pub weave_npc: String,
    pub ingress_nginx: String,
    pub pause: String,
}

impl Context {
    pub(crate) fn new(
        cluster: &Cluster,
        node: &Node,
        etcd: &EtcdBootstrap,
        inputs_sha256: BTreeMap<String, String>,
    ) -> Self {
        let host_ref = |node: &Node| HostRef {
            name: node.name.clone(),
            address: node.address.to_string(),
            url_host: url_host(node),
        };
        let version = &cluster.kubernetes_version;
        Context {
            cluster: ClusterFacts {
                name: cluster.name.clone(),
                kubernetes_version: version.clone(),
                control_plane_endpoint: cluster.control_plane_endpoint.url(),
                pod_cidr: cluster.pod_cidr.to_string(),
                service_cidr: cluster.service_cidr.to_string(),
                cluster_domain: cluster.cluster_domain.clone(),
                cni: cluster.cni.as_str().to_string(),
                kubernetes_service_ip: cluster.kubernetes_service_ip().to_string(),
                dns_service_ip: cluster.dns_service_ip().to_string(),
                bin_dir: cluster.install.bin_dir.trim_end_matches('/').to_string(),
                container_runtime_endpoint: CONTAINER_RUNTIME_ENDPOINT.to_string(),
                resolv_conf: cluster.resolv_conf.clone(),
            },
            node: NodeFacts {
                name: node.name.clone(),
                address: node.address.to_string(),
                url_host: url_host(node),
                is_master: node.is_master(),
                node_labels: node
                    .labels
                    .iter()
                    .map(|(key, value)| format!("{key}={value}"))
                    .collect::<Vec<_>>()
                    .join(","),
                taints: taints(node),
            },
            masters: cluster.masters.iter().map(host_ref).collect(),
            trusted_proxies: cluster
                .masters
                .iter()
                .map(|master| match master.address {
                    std::net::IpAddr::V4(v4) => format!("{v4}/32"),
                    std::net::IpAddr::V6(v6) => format!("{v6}/128"),
                })
                .collect::<Vec<_>>()
                .join(","),
            workers: cluster.workers.iter().map(host_ref).collect(),
            etcd: etcd_facts(cluster, etcd),
            pki: PkiFacts {
                cluster_signing_cert_file: "/etc/kubernetes/pki/ca.crt".to_string(),
            },
            ingress: ingress_facts(cluster, node),
            images: Images {
                kube_apiserver: format!("registry.k8s.io/kube-apiserver:v{version}"),
                kube_controller_manager: format!(
                    "registry.k8s.io/kube-controller-manager:v{version}"
                ),
                kube_scheduler: format!("registry.k8s.io/kube-scheduler:v{version}"),
                coredns: COREDNS_IMAGE.to_string(),
                flannel: FLANNEL_IMAGE.to_string(),
                flannel_cni_plugin: FLANNEL_CNI_PLUGIN_IMAGE.to_string(),
                weave_kube: WEAVE_KUBE_IMAGE.to_string(),
                weave_npc: WEAVE_NPC_IMAGE.to_string(),
                ingress_nginx: INGRESS_NGINX_IMAGE.to_string(),
                pause: pause_image(version),
            },
            inputs_sha256,
        }
    }
}

fn url_host(node: &Node) -> String {
    match node.address {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// Masters carry kubeadm's control-plane taint, then the inventory's taints.
fn taints(node: &Node) -> Vec<Taint> {
    let mut texts: Vec<&str> = Vec::new();
    if node.is_master() && !node.taints.iter().any(|taint| taint == CONTROL_PLANE_TAINT) {
        texts.push(CONTROL_PLANE_TAINT);
    }
    texts.extend(node.taints.iter().map(String::as_str));
    texts
        .into_iter()
        .map(|text| {
            // Validation guarantees `key[=value]:Effect`.
            let (key_value, effect) = text.rsplit_once(':').unwrap_or((text, "NoSchedule"));
            let (key, value) = match key_value.split_once('=') {
                Some((key, value)) => (key, Some(value.to_string())),
                None => (key_value, None),
            };
            Taint {
                key: key.to_string(),
                value,
                effect: effect.to_string(),
            }
        })
        .collect()
}

fn etcd_facts(cluster: &Cluster, etcd: &EtcdBootstrap) -> EtcdFacts {
    let servers = cluster
        .masters
        .iter()
        .map(|master| format!("https://{}:2379", url_host(master)))
        .collect::<Vec<_>>()
        .join(",");
    let initial_cluster = etcd
        .members
        .iter()
        .filter_map(|name| cluster.masters.iter().find(|master| &master.name == name))
        .map(|master| format!("{}=https://{}:2380", master.name, url_host(master)))
        .collect::<Vec<_>>()
        .join(",");
    EtcdFacts {
        servers,
        initial_cluster,
        initial_cluster_state: match etcd.state {
            InitialClusterState::New => "new",
            InitialClusterState::Existing => "existing",
        }
        .to_string(),
        initial_cluster_token: cluster.name.clone(),
    }
}

/// Distinct VRRP priorities, highest for the first master: 150, 140, ...
/// while they fit, else one apart.
pub(crate) fn vrrp_priority(index: usize, masters: usize) -> u32 {
    let index = index as u32;
    if masters <= 14 {
        150 - 10 * index
    } else {
        254u32.saturating_sub(index).max(1)
    }
}

fn ingress_facts(cluster: &Cluster, node: &Node) -> Option<IngressFacts> {
    let ingress = cluster.ingress.as_ref()?;
    let index = cluster
        .masters
        .iter()
        .position(|master| master.name == node.name)
        .unwrap_or(0);
    Some(IngressFacts {
        vip: ingress.vip.to_string(),
        interface: ingress.interface.clone(),
        virtual_router_id: ingress.virtual_router_id,
        node_port: ingress.node_port,
        server_names: ingress.server_names.clone(),
        nodes: cluster
            .ingress_nodes()
            .into_iter()
            .map(|node| HostRef {
                name: node.name.clone(),
                address: node.address.to_string(),
                url_host: url_host(node),
            })
            .collect(),
        priority: vrrp_priority(index, cluster.masters.len()),
        peers: cluster
            .masters
            .iter()
            .filter(|master| master.name != node.name)
            .map(|master| master.address.to_string())
            .collect(),
        // Compared as addresses: `2001:DB8::64` and `2001:db8::64` are the
        // same VIP.
        track_apiserver: cluster
            .control_plane_endpoint
            .host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|host| host == ingress.vip),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVENTORY: &str = r#"
[cluster]
name = "unit"
kubernetes_version = "1.31.4"
control_plane_endpoint = "[2001:DB8::64]:6443"
pod_cidr = "fd00:10:244::/56"
service_cidr = "fd00:10:96::/112"

[ingress]
vip = "2001:db8::64"
interface = "eth0"
server_names = ["*.example.org"]

[[master]]
name = "m1"
address = "2001:db8::11"

[[worker]]
name = "w1"
address = "2001:db8::21"
"#;

    #[test]
    fn keepalived_tracks_the_apiserver_when_the_endpoint_is_the_vip_however_written() {
        let path = std::path::Path::new("/nonexistent/inventory.toml");
        let cluster = crate::inventory::from_str(path, INVENTORY)
            .expect("inventory")
            .cluster;
        let etcd = EtcdBootstrap::new_cluster(&cluster);
        let context = Context::new(&cluster, &cluster.masters[0], &etcd, BTreeMap::new());
        let ingress = context.ingress.expect("ingress facts");
        assert!(ingress.track_apiserver);

        let elsewhere = INVENTORY.replace("[2001:DB8::64]:6443", "kube.example.org:6443");
        let cluster = crate::inventory::from_str(path, &elsewhere)
            .expect("inventory")
            .cluster;
        let context = Context::new(&cluster, &cluster.masters[0], &etcd, BTreeMap::new());
        assert!(!context.ingress.expect("ingress facts").track_apiserver);
    }

    #[test]
    fn vrrp_priorities_are_distinct_and_valid() {
        for masters in [1, 3, 5, 7, 14, 15, 40, 254] {
            let priorities: std::collections::BTreeSet<u32> = (0..masters)
                .map(|index| vrrp_priority(index, masters))
                .collect();
            assert_eq!(priorities.len(), masters, "{masters} masters");
            assert!(priorities
                .iter()
                .all(|priority| (1..=254).contains(priority)));
        }
    }
}
