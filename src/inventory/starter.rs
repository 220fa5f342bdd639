//! `ocfk8s init`: a commented starter inventory.

use std::fmt::Write;

/// A commented inventory for the given master and worker addresses; with none
/// given, a three-master, two-worker example on documentation addresses.
pub fn starter_inventory(masters: &[String], workers: &[String]) -> String {
    let (masters, workers) = if masters.is_empty() && workers.is_empty() {
        (
            vec!["192.0.2.10", "192.0.2.11", "192.0.2.12"],
            vec!["192.0.2.20", "192.0.2.21"],
        )
    } else {
        (
            masters.iter().map(String::as_str).collect(),
            workers.iter().map(String::as_str).collect(),
        )
    };

    // One address family per cluster: IPv6 hosts get IPv6 networks
    // (unique local addresses, the sizes of kubeadm's IPv6 examples).
    let ipv6 = masters
        .first()
        .and_then(|address| address.parse::<std::net::IpAddr>().ok())
        .is_some_and(|address| address.is_ipv6());
    let (pod_cidr, service_cidr) = if ipv6 {
        ("fd00:10:244::/56", "fd00:10:96::/112")
    } else {
        ("10.244.0.0/16", "10.96.0.0/12")
    };

    let mut out = String::new();
    out.push_str(
        r#"# ocfk8s inventory: the one file that describes the cluster.
# Check it with `ocfk8s validate`; see the README for every key.

[cluster]
name = "k8s"                          # DNS label; names the PKI store and certificates
kubernetes_version = "1.31.4"
# control_plane_endpoint = "kube.example.org:6443"  # default: first master's address, port 6443
"#,
    );
    out.push_str(&commented(
        &format!("pod_cidr = \"{pod_cidr}\""),
        "flannel Network, kube-proxy clusterCIDR",
    ));
    out.push_str(&commented(
        &format!("service_cidr = \"{service_cidr}\""),
        "1st IP: the kubernetes Service; 10th: cluster DNS",
    ));
    out.push_str(
        r#"cluster_domain = "cluster.local"
cni = "flannel"                       # flannel | weave
key_algorithm = "ecdsa-p256"          # ecdsa-p256 | rsa-2048
cert_validity_days = 365
ca_validity_days = 3650
# pki_dir = "pki/k8s"                 # default: pki/<name> beside this file

[ssh]
user = "root"                         # non-root users are elevated with `sudo -n`
port = 22
# identity_file = "~/.ssh/id_ed25519" # ssh-agent and ~/.ssh/config are honoured
# known_hosts = "~/.ssh/known_hosts"  # checked strictly; --accept-new-host-keys trusts on first use
# jump_host = "admin@bastion.example.org"
concurrency = 32
connect_timeout_secs = 10

[install]
method = "apt"                        # apt | upload | none
bin_dir = "/usr/bin"                  # where etcd, etcdctl, kubelet, kube-proxy, kubectl live

# The front door: keepalived moves a virtual IP between masters, nginx there
# terminates TLS and proxies to ingress-nginx on the workers' NodePort.
# [ingress]
# vip = "192.0.2.100"
# interface = "eth0"
# virtual_router_id = 51
# node_port = 31234
# server_names = ["*.example.org"]
# tls_cert = "certs/wildcard.crt"     # if absent, issued from the store's ingress CA
# tls_key = "certs/wildcard.key"

# An odd number of masters: 3 tolerate 1 failure, 5 tolerate 2.
"#,
    );
    for (index, address) in masters.iter().enumerate() {
        let _ = write!(
            out,
            "\n[[master]]\nname = \"master-{}\"\naddress = \"{address}\"\n",
            index + 1
        );
    }
    for (index, address) in workers.iter().enumerate() {
        let _ = write!(
            out,
            "\n[[worker]]\nname = \"worker-{}\"\naddress = \"{address}\"\n",
            index + 1
        );
    }
    out
}

/// `line` with `comment` aligned at column 39, as in the rest of the file.
fn commented(line: &str, comment: &str) -> String {
    format!("{line:<38}# {comment}\n")
}
