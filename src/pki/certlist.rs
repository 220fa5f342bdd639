//! What the store holds for a cluster: one table, like kubeadm's certlist.
//!
//! Every certificate is described by a [`LeafSpec`] (identity, usages, SANs,
//! issuing authority, where it is stored) computed from the inventory alone,
//! so generation, checking and import all agree on the same list. The list
//! is ordered: cluster-wide material first, then per node, masters first.

use std::net::IpAddr;

use crate::inventory::{Cluster, Node};

/// The certificate authorities of a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Authority {
    /// Signs the apiserver, the kubelet and every Kubernetes client identity.
    Kubernetes,
    /// Signs etcd's server, peer and client certificates.
    Etcd,
    /// Signs the apiserver's aggregation-layer client certificate.
    FrontProxy,
    /// Signs nginx's server certificate when the inventory brings none.
    Ingress,
}

impl Authority {
    pub const ALL: [Authority; 4] = [
        Authority::Kubernetes,
        Authority::Etcd,
        Authority::FrontProxy,
        Authority::Ingress,
    ];

    /// The name `certs check` shows, as kubeadm does.
    pub fn label(self) -> &'static str {
        match self {
            Authority::Kubernetes => "ca",
            Authority::Etcd => "etcd-ca",
            Authority::FrontProxy => "front-proxy-ca",
            Authority::Ingress => "ingress-ca",
        }
    }

    pub fn cert_path(self) -> &'static str {
        match self {
            Authority::Kubernetes => "ca.crt",
            Authority::Etcd => "etcd/ca.crt",
            Authority::FrontProxy => "front-proxy-ca.crt",
            Authority::Ingress => "ingress-ca.crt",
        }
    }

    pub fn key_path(self) -> &'static str {
        match self {
            Authority::Kubernetes => "ca.key",
            Authority::Etcd => "etcd/ca.key",
            Authority::FrontProxy => "front-proxy-ca.key",
            Authority::Ingress => "ingress-ca.key",
        }
    }

    /// Whether `rotate-certs --ca` rotates this CA: the Kubernetes, etcd and
    /// front-proxy CAs. The ingress CA signs only nginx's certificate for
    /// outside clients and is not part of the cluster's trust.
    pub fn rotates(self) -> bool {
        !matches!(self, Authority::Ingress)
    }

    /// Where the second CA of a rotation in progress lives: `ca.next.crt`
    /// (the new CA, step 1 done) or `ca.prev.crt` (the old CA, step 2
    /// done). See [`super::ca_rotation`].
    pub fn rotation_cert_path(self, slot: RotationSlot) -> String {
        rotation_path(self.cert_path(), slot)
    }

    pub fn rotation_key_path(self, slot: RotationSlot) -> String {
        rotation_path(self.key_path(), slot)
    }

    pub(crate) fn common_name(self, cluster: &Cluster) -> String {
        match self {
            Authority::Kubernetes => "kubernetes".to_string(),
            Authority::Etcd => "etcd-ca".to_string(),
            Authority::FrontProxy => "front-proxy-ca".to_string(),
            Authority::Ingress => format!("{}-ingress-ca", cluster.name),
        }
    }
}

/// Which second CA file of a rotation: the new CA beside the current
/// signer (`.next`, step 1 done) or the old CA beside the new signer
/// (`.prev`, step 2 done).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RotationSlot {
    Next,
    Prev,
}

impl RotationSlot {
    pub const ALL: [RotationSlot; 2] = [RotationSlot::Next, RotationSlot::Prev];

    pub fn infix(self) -> &'static str {
        match self {
            RotationSlot::Next => "next",
            RotationSlot::Prev => "prev",
        }
    }
}

/// `ca.crt` -> `ca.next.crt`, `etcd/ca.key` -> `etcd/ca.prev.key`,
/// `sa.pub` -> `sa.next.pub`.
pub fn rotation_path(path: &str, slot: RotationSlot) -> String {
    match path.rsplit_once('.') {
        Some((stem, extension)) => format!("{stem}.{}.{extension}", slot.infix()),
        None => format!("{path}.{}", slot.infix()),
    }
}

/// The authorities a cluster needs: the ingress CA only when `[ingress]`
/// brings no certificate of its own.
pub(crate) fn authorities(cluster: &Cluster) -> Vec<Authority> {
    Authority::ALL
        .into_iter()
        .filter(|authority| *authority != Authority::Ingress || issues_ingress_cert(cluster))
        .collect()
}

fn issues_ingress_cert(cluster: &Cluster) -> bool {
    matches!(&cluster.ingress, Some(ingress) if ingress.tls.is_none())
}

/// One leaf certificate of the store.
#[derive(Debug, Clone)]
pub struct LeafSpec {
    /// The store path without extension: `nodes/m1/apiserver`, `admin`.
    pub base: String,
    pub authority: Authority,
    pub common_name: String,
    pub organizations: Vec<String>,
    pub server_auth: bool,
    pub client_auth: bool,
    pub dns_names: Vec<String>,
    pub ip_addresses: Vec<IpAddr>,
    /// Stored as `<base>.crt` and `<base>.key`.
    pub files: bool,
    /// Also (or only) stored as the kubeconfig `<base>.conf`.
    pub kubeconfig: Option<KubeconfigSpec>,
    /// The node the certificate belongs to, if any.
    pub node: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeconfigSpec {
    pub server: String,
    /// The kubeconfig's user name, as kubeadm names it.
    pub user: String,
}

impl LeafSpec {
    pub fn cert_path(&self) -> String {
        format!("{}.crt", self.base)
    }

    pub fn key_path(&self) -> String {
        format!("{}.key", self.base)
    }

    pub fn conf_path(&self) -> String {
        format!("{}.conf", self.base)
    }

    /// Every store file this spec produces.
    pub fn paths(&self) -> Vec<String> {
        let mut paths = Vec::new();
        if self.files {
            paths.push(self.cert_path());
            paths.push(self.key_path());
        }
        if self.kubeconfig.is_some() {
            paths.push(self.conf_path());
        }
        paths
    }
}

/// The service-account signing pair.
pub const SERVICE_ACCOUNT_KEY: &str = "sa.key";
pub const SERVICE_ACCOUNT_PUB: &str = "sa.pub";

fn client(
    base: String,
    authority: Authority,
    common_name: &str,
    organizations: &[&str],
) -> LeafSpec {
    LeafSpec {
        base,
        authority,
        common_name: common_name.to_string(),
        organizations: organizations
            .iter()
            .map(|organization| organization.to_string())
            .collect(),
        server_auth: false,
        client_auth: true,
        dns_names: Vec::new(),
        ip_addresses: Vec::new(),
        files: true,
        kubeconfig: None,
        node: None,
    }
}

/// A server certificate; `also_client` adds clientAuth (etcd's server and
/// peer certificates serve both directions).
fn server(
    base: String,
    authority: Authority,
    common_name: &str,
    also_client: bool,
    dns_names: Vec<String>,
    ip_addresses: Vec<IpAddr>,
) -> LeafSpec {
    LeafSpec {
        server_auth: true,
        client_auth: also_client,
        dns_names,
        ip_addresses,
        ..client(base, authority, common_name, &[])
    }
}

/// Every leaf of the store for this inventory, in a stable order.
pub fn leaves(cluster: &Cluster) -> Vec<LeafSpec> {
    let endpoint = cluster.control_plane_endpoint.url();
    let mut specs = vec![client(
        "apiserver-etcd-client".to_string(),
        Authority::Etcd,
        "kube-apiserver-etcd-client",
        &[],
    )];
    for (base, common_name, organization) in [
        ("admin", "kubernetes-admin", "kubeadm:cluster-admins"),
        ("super-admin", "kubernetes-super-admin", "system:masters"),
    ] {
        let mut spec = client(
            base.to_string(),
            Authority::Kubernetes,
            common_name,
            &[organization],
        );
        spec.files = false;
        spec.kubeconfig = Some(KubeconfigSpec {
            server: endpoint.clone(),
            user: common_name.to_string(),
        });
        specs.push(spec);
    }
    if let Some(ingress) = cluster
        .ingress
        .as_ref()
        .filter(|ingress| ingress.tls.is_none())
    {
        let common_name = ingress
            .server_names
            .first()
            .cloned()
            .unwrap_or_else(|| ingress.vip.to_string());
        specs.push(server(
            "ingress".to_string(),
            Authority::Ingress,
            &common_name,
            false,
            ingress.server_names.clone(),
            vec![ingress.vip],
        ));
    }
    for node in cluster.nodes() {
        specs.extend(node_leaves(cluster, node));
    }
    specs
}

/// The leaves of one node: kubelet (client and serving) and kube-proxy
/// everywhere, etcd and the control plane on masters.
pub fn node_leaves(cluster: &Cluster, node: &Node) -> Vec<LeafSpec> {
    let endpoint = cluster.control_plane_endpoint.url();
    let local_endpoint = crate::inventory::Endpoint {
        host: node.address.to_string(),
        port: 6443,
    }
    .url();
    let dir = format!("nodes/{}", node.name);
    let with_kubeconfig = |mut spec: LeafSpec, server: &str| {
        spec.kubeconfig = Some(KubeconfigSpec {
            server: server.to_string(),
            user: spec.common_name.clone(),
        });
        spec
    };
    let mut specs = vec![
        with_kubeconfig(
            client(
                format!("{dir}/kubelet"),
                Authority::Kubernetes,
                &format!("system:node:{}", node.name),
                &["system:nodes"],
            ),
            &endpoint,
        ),
        with_kubeconfig(
            client(
                format!("{dir}/kube-proxy"),
                Authority::Kubernetes,
                "system:kube-proxy",
                &[],
            ),
            &endpoint,
        ),
        // kubelet's serving certificate, from the cluster CA (kubeadm leaves
        // it self-signed): the apiserver verifies kubelets against the CA
        // (`--kubelet-certificate-authority`), as the kubelet-serving
        // signer would issue it.
        LeafSpec {
            organizations: vec!["system:nodes".to_string()],
            ..server(
                format!("{dir}/kubelet-server"),
                Authority::Kubernetes,
                &format!("system:node:{}", node.name),
                false,
                vec![node.name.clone()],
                vec![node.address],
            )
        },
    ];
    if node.is_master() {
        let etcd_dns = vec![node.name.clone(), "localhost".to_string()];
        let etcd_ips = vec![
            node.address,
            IpAddr::from([127, 0, 0, 1]),
            IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        ];
        for kind in ["server", "peer"] {
            specs.push(server(
                format!("{dir}/etcd/{kind}"),
                Authority::Etcd,
                &node.name,
                true,
                etcd_dns.clone(),
                etcd_ips.clone(),
            ));
        }
        specs.push(client(
            format!("{dir}/etcd/healthcheck-client"),
            Authority::Etcd,
            "kube-etcd-healthcheck-client",
            &[],
        ));

        let mut dns_names = vec![
            "kubernetes".to_string(),
            "kubernetes.default".to_string(),
            "kubernetes.default.svc".to_string(),
            format!("kubernetes.default.svc.{}", cluster.cluster_domain),
            node.name.clone(),
        ];
        let mut ip_addresses = vec![cluster.kubernetes_service_ip(), node.address];
        if let Some(ingress) = &cluster.ingress {
            ip_addresses.push(ingress.vip);
        }
        let endpoint_host = &cluster.control_plane_endpoint.host;
        match endpoint_host.parse::<IpAddr>() {
            Ok(ip) => ip_addresses.push(ip),
            Err(_) => dns_names.push(endpoint_host.clone()),
        }
        dedup(&mut dns_names);
        dedup(&mut ip_addresses);
        specs.push(server(
            format!("{dir}/apiserver"),
            Authority::Kubernetes,
            "kube-apiserver",
            false,
            dns_names,
            ip_addresses,
        ));

        specs.push(client(
            format!("{dir}/apiserver-kubelet-client"),
            Authority::Kubernetes,
            "kube-apiserver-kubelet-client",
            &["kubeadm:cluster-admins"],
        ));
        specs.push(client(
            format!("{dir}/front-proxy-client"),
            Authority::FrontProxy,
            "front-proxy-client",
            &[],
        ));
        specs.push(with_kubeconfig(
            client(
                format!("{dir}/controller-manager"),
                Authority::Kubernetes,
                "system:kube-controller-manager",
                &[],
            ),
            &local_endpoint,
        ));
        specs.push(with_kubeconfig(
            client(
                format!("{dir}/scheduler"),
                Authority::Kubernetes,
                "system:kube-scheduler",
                &[],
            ),
            &local_endpoint,
        ));
    }
    for spec in &mut specs {
        spec.node = Some(node.name.clone());
    }
    specs
}

fn dedup<T: PartialEq + Clone>(items: &mut Vec<T>) {
    let mut seen: Vec<T> = Vec::with_capacity(items.len());
    items.retain(|item| {
        if seen.contains(item) {
            false
        } else {
            seen.push(item.clone());
            true
        }
    });
}
