//! Raw inventory to validated [`Cluster`]: every rule of the inventory
//! contract, with all problems collected so one run shows all of them.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde_spanned::Spanned;

use super::cluster::*;
use super::diagnostic::{Diagnostic, SourceMap};
use super::raw::*;

/// The result of resolving an inventory that had no errors.
#[derive(Debug)]
pub struct Resolved {
    pub cluster: Cluster,
    pub warnings: Vec<Diagnostic>,
}

struct Checker<'a> {
    source: SourceMap<'a>,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl Checker<'_> {
    fn error<T>(&mut self, value: &Spanned<T>, field: &str, message: impl Into<String>) {
        let location = self.source.at(Some(value.span()), field.to_string());
        self.errors.push(Diagnostic {
            location,
            message: message.into(),
        });
    }

    fn error_at_field(&mut self, field: &str, message: impl Into<String>) {
        let location = self.source.at(None, field.to_string());
        self.errors.push(Diagnostic {
            location,
            message: message.into(),
        });
    }

    fn warn(&mut self, field: Option<&str>, message: impl Into<String>) {
        let location = self.source.at(None, field.map(str::to_string));
        self.warnings.push(Diagnostic {
            location,
            message: message.into(),
        });
    }
}

/// Parse TOML text strictly into the raw model: syntax errors, unknown keys,
/// missing keys and wrong types all point at a line and column.
pub(crate) fn parse(file: &Path, text: &str) -> Result<RawInventory, Vec<Diagnostic>> {
    toml::from_str::<RawInventory>(text).map_err(|error| {
        let source = SourceMap::new(file, text);
        let message = error.message().trim().to_string();
        vec![Diagnostic {
            location: source.at(error.span(), None),
            message,
        }]
    })
}

/// Resolve a parsed inventory. `file` is the inventory path, used for
/// locations and to resolve relative paths (`pki_dir`, `upload_from`, ...).
pub(crate) fn resolve(
    file: &Path,
    text: &str,
    raw: RawInventory,
) -> Result<Resolved, Vec<Diagnostic>> {
    let mut check = Checker {
        source: SourceMap::new(file, text),
        errors: Vec::new(),
        warnings: Vec::new(),
    };
    let base_dir = file
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));

    let RawInventory {
        cluster,
        ssh,
        install,
        ingress,
        master,
        worker,
    } = raw;
    let RawCluster {
        name,
        kubernetes_version,
        control_plane_endpoint,
        pod_cidr,
        service_cidr,
        cluster_domain,
        cni,
        key_algorithm,
        cert_validity_days,
        ca_validity_days,
        pki_dir,
        templates_dir,
    } = cluster;

    if !is_dns_label(name.get_ref()) {
        check.error(&name, "cluster.name", not_a_label(name.get_ref()));
    }
    if !is_kubernetes_version(kubernetes_version.get_ref()) {
        check.error(
            &kubernetes_version,
            "cluster.kubernetes_version",
            format!(
                "{:?} is not a Kubernetes release such as \"1.31.4\"",
                kubernetes_version.get_ref()
            ),
        );
    }

    let pod_cidr = parse_cidr(&mut check, pod_cidr, "cluster.pod_cidr", "10.244.0.0/16");
    let service_cidr = parse_cidr(
        &mut check,
        service_cidr,
        "cluster.service_cidr",
        "10.96.0.0/12",
    );
    if let (Some(pod), Some((service, span))) = (&pod_cidr, &service_cidr) {
        if pod.0.contains(&service.network()) || service.contains(&pod.0.network()) {
            let message = format!("service_cidr {service} overlaps pod_cidr {}", pod.0);
            match span {
                Some(span) => check.error(span, "cluster.service_cidr", message),
                None => check.error_at_field("cluster.service_cidr", message),
            }
        }
    }
    if let Some((service, span)) = &service_cidr {
        // kubeadm's rule: the DNS service IP is the 10th address, so the
        // network needs at least 16 addresses.
        let too_small = match service {
            IpNet::V4(net) => net.prefix_len() > 28,
            IpNet::V6(net) => net.prefix_len() > 124,
        };
        if too_small {
            let message = format!(
                "service_cidr {service} is too small: it needs room for the cluster DNS address (the 10th)"
            );
            match span {
                Some(span) => check.error(span, "cluster.service_cidr", message),
                None => check.error_at_field("cluster.service_cidr", message),
            }
        }
    }

    let cluster_domain = match cluster_domain {
        Some(domain) => {
            if !is_dns_name(domain.get_ref()) {
                check.error(
                    &domain,
                    "cluster.cluster_domain",
                    format!("{:?} is not a DNS domain", domain.get_ref()),
                );
            }
            domain.into_inner()
        }
        None => "cluster.local".to_string(),
    };

    let cni = choice(
        &mut check,
        cni,
        "cluster.cni",
        "CNI",
        &[("flannel", Cni::Flannel), ("weave", Cni::Weave)],
    );

    let key_algorithm = choice(
        &mut check,
        key_algorithm,
        "cluster.key_algorithm",
        "key algorithm",
        &[
            ("ecdsa-p256", KeyAlgorithm::EcdsaP256),
            ("rsa-2048", KeyAlgorithm::Rsa2048),
        ],
    );

    let cert_validity_days = positive_days(
        &mut check,
        cert_validity_days,
        "cluster.cert_validity_days",
        365,
    );
    let ca_validity_days = positive_days(
        &mut check,
        ca_validity_days,
        "cluster.ca_validity_days",
        3650,
    );
    if cert_validity_days > ca_validity_days {
        check.error_at_field(
            "cluster.cert_validity_days",
            format!(
                "certificates ({cert_validity_days} days) cannot outlive their CA (ca_validity_days = {ca_validity_days})"
            ),
        );
    }

    // SSH.
    let RawSsh {
        user,
        port,
        identity_file,
        known_hosts,
        jump_host,
        concurrency,
        connect_timeout_secs,
    } = ssh;
    let ssh_user = user.unwrap_or_else(|| "root".to_string());
    let ssh_port = port.unwrap_or(22);
    let concurrency = match concurrency {
        Some(value) if *value.get_ref() == 0 => {
            check.error(&value, "ssh.concurrency", "must be at least 1");
            1
        }
        Some(value) => value.into_inner() as usize,
        None => 32,
    };
    let connect_timeout_secs = match connect_timeout_secs {
        Some(value) if *value.get_ref() == 0 => {
            check.error(&value, "ssh.connect_timeout_secs", "must be at least 1");
            10
        }
        Some(value) => value.into_inner(),
        None => 10,
    };
    let ssh = Ssh {
        user: ssh_user.clone(),
        port: ssh_port,
        identity_file: identity_file.map(|path| expand_path(&base_dir, &path)),
        known_hosts: known_hosts.map(|path| expand_path(&base_dir, &path)),
        jump_host,
        concurrency,
        connect_timeout_secs,
    };

    // Install.
    let RawInstall {
        method,
        bin_dir,
        upload_from,
    } = install;
    let method = choice(
        &mut check,
        method,
        "install.method",
        "install method",
        &[
            ("apt", InstallMethod::Apt),
            ("upload", InstallMethod::Upload),
            ("none", InstallMethod::None),
        ],
    );
    let bin_dir = match bin_dir {
        Some(dir) => {
            if !dir.get_ref().starts_with('/') {
                check.error(
                    &dir,
                    "install.bin_dir",
                    "must be an absolute path on the hosts",
                );
            }
            dir.into_inner()
        }
        None => "/usr/bin".to_string(),
    };
    if method == InstallMethod::Upload && upload_from.is_none() {
        check.error_at_field(
            "install.upload_from",
            "install.method = \"upload\" needs upload_from, the local folder holding the binaries",
        );
    }
    let install = Install {
        method,
        bin_dir,
        upload_from: upload_from.map(|path| expand_path(&base_dir, &path)),
    };

    // Hosts.
    if master.is_empty() {
        check.error_at_field(
            "master",
            "no master: list at least one [[master]] with a name and an address",
        );
    }
    let mut names: HashMap<String, String> = HashMap::new();
    let mut addresses: HashMap<IpAddr, String> = HashMap::new();
    let mut nodes = Vec::new();
    for (role, hosts) in [(Role::Master, master), (Role::Worker, worker)] {
        let table = match role {
            Role::Master => "master",
            Role::Worker => "worker",
        };
        for (index, host) in hosts.into_iter().enumerate() {
            let path = format!("{table}[{index}]");
            let RawHost {
                name,
                address,
                ssh_user: host_user,
                ssh_port: host_port,
                labels,
                taints,
            } = host;
            let name_field = format!("{path}.name");
            if !is_dns_label(name.get_ref()) {
                check.error(&name, &name_field, not_a_label(name.get_ref()));
            } else if let Some(first) = names.get(name.get_ref()) {
                let message = format!("host name {:?} is already used by {first}", name.get_ref());
                check.error(&name, &name_field, message);
            } else {
                names.insert(name.get_ref().clone(), path.clone());
            }
            let address_field = format!("{path}.address");
            let parsed: Option<IpAddr> = match address.get_ref().parse::<IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => {
                    check.error(
                        &address,
                        &address_field,
                        format!(
                            "{:?} is not an IP address (certificates and etcd URLs need the host's IP)",
                            address.get_ref()
                        ),
                    );
                    None
                }
            };
            if let Some(ip) = parsed {
                if let Some(first) = addresses.get(&ip) {
                    let message = format!("address {ip} is already used by {first}");
                    check.error(&address, &address_field, message);
                } else {
                    addresses.insert(ip, format!("{path} ({})", name.get_ref()));
                }
                if let Some((pod, _)) = &pod_cidr {
                    if pod.contains(&ip) {
                        check.error(
                            &address,
                            &address_field,
                            format!("address {ip} is inside pod_cidr {pod}"),
                        );
                    }
                }
                if let Some((service, _)) = &service_cidr {
                    if service.contains(&ip) {
                        check.error(
                            &address,
                            &address_field,
                            format!("address {ip} is inside service_cidr {service}"),
                        );
                    }
                }
            }
            for key in labels.keys() {
                if key.is_empty() || key.contains(char::is_whitespace) {
                    check.error_at_field(
                        &format!("{path}.labels"),
                        format!("{key:?} is not a label key"),
                    );
                }
            }
            for taint in &taints {
                if !is_taint(taint) {
                    check.error_at_field(
                        &format!("{path}.taints"),
                        format!("{taint:?} is not a taint: expected key[=value]:NoSchedule|PreferNoSchedule|NoExecute"),
                    );
                }
            }
            if let Some(ip) = parsed {
                nodes.push(Node {
                    name: name.into_inner(),
                    address: ip,
                    role,
                    ssh_user: host_user.unwrap_or_else(|| ssh_user.clone()),
                    ssh_port: host_port.unwrap_or(ssh_port),
                    labels,
                    taints,
                });
            }
        }
    }
    let (masters, workers): (Vec<Node>, Vec<Node>) = nodes
        .into_iter()
        .partition(|node| node.role == Role::Master);

    // Control-plane endpoint.
    let control_plane_endpoint = match control_plane_endpoint {
        Some(value) => match parse_endpoint(value.get_ref()) {
            Ok(endpoint) => endpoint,
            Err(message) => {
                check.error(&value, "cluster.control_plane_endpoint", message);
                Endpoint {
                    host: String::new(),
                    port: 6443,
                }
            }
        },
        None => Endpoint {
            host: masters
                .first()
                .map(|node| node.address.to_string())
                .unwrap_or_default(),
            port: 6443,
        },
    };

    // Ingress.
    let ingress = match ingress {
        None => None,
        Some(raw) => resolve_ingress(
            &mut check,
            &base_dir,
            raw,
            &addresses,
            &workers,
            pod_cidr.as_ref().map(|pair| &pair.0),
            service_cidr.as_ref().map(|pair| &pair.0),
        ),
    };

    // Warnings: quorum arithmetic.
    let quorum = Quorum::of(masters.len());
    if masters.len() == 1 {
        check.warn(
            Some("master"),
            "a single master: etcd has no redundancy (quorum 1, tolerates 0 failures); losing it loses the cluster",
        );
    } else if masters.len() > 1 && masters.len() % 2 == 0 {
        let below = Quorum::of(masters.len() - 1);
        check.warn(
            Some("master"),
            format!(
                "an even number of masters: {} masters need quorum {} and tolerate {} failure{}, the same as {}; a {} master adds no fault tolerance",
                quorum.members,
                quorum.quorum,
                quorum.tolerates,
                plural(quorum.tolerates),
                below.members,
                ordinal(masters.len()),
            ),
        );
    }
    if masters.len() > 7 {
        check.warn(
            Some("master"),
            format!(
                "{} masters: etcd recommends at most 7 members; every write waits for {} of them",
                masters.len(),
                quorum.quorum
            ),
        );
    }

    if !check.errors.is_empty() {
        return Err(check.errors);
    }

    let pki_dir = match pki_dir {
        Some(dir) => expand_path(&base_dir, &dir),
        None => normalize(&base_dir.join("pki").join(name.get_ref())),
    };
    let cluster = Cluster {
        name: name.into_inner(),
        kubernetes_version: kubernetes_version.into_inner(),
        control_plane_endpoint,
        pod_cidr: pod_cidr.map(|pair| pair.0).unwrap_or_else(default_pod_cidr),
        service_cidr: service_cidr
            .map(|pair| pair.0)
            .unwrap_or_else(default_service_cidr),
        cluster_domain,
        cni,
        key_algorithm,
        cert_validity_days,
        ca_validity_days,
        pki_dir,
        templates_dir: templates_dir.map(|dir| expand_path(&base_dir, &dir)),
        ssh,
        install,
        ingress,
        masters,
        workers,
        inventory_path: file.to_path_buf(),
    };
    Ok(Resolved {
        cluster,
        warnings: check.warnings,
    })
}

#[allow(clippy::too_many_arguments)]
fn resolve_ingress(
    check: &mut Checker<'_>,
    base_dir: &Path,
    raw: RawIngress,
    addresses: &HashMap<IpAddr, String>,
    workers: &[Node],
    pod_cidr: Option<&IpNet>,
    service_cidr: Option<&IpNet>,
) -> Option<Ingress> {
    let RawIngress {
        vip,
        interface,
        virtual_router_id,
        node_port,
        nodes,
        server_names,
        tls_cert,
        tls_key,
    } = raw;
    let vip_ip = match vip.get_ref().parse::<IpAddr>() {
        Ok(ip) => Some(ip),
        Err(_) => {
            check.error(
                &vip,
                "ingress.vip",
                format!("{:?} is not an IP address", vip.get_ref()),
            );
            None
        }
    };
    if let Some(ip) = vip_ip {
        if let Some(host) = addresses.get(&ip) {
            check.error(
                &vip,
                "ingress.vip",
                format!("VIP {ip} is the address of {host}: the VIP must be a free address that keepalived moves between masters"),
            );
        }
        if let Some(pod) = pod_cidr.filter(|net| net.contains(&ip)) {
            check.error(
                &vip,
                "ingress.vip",
                format!("VIP {ip} is inside pod_cidr {pod}"),
            );
        }
        if let Some(service) = service_cidr.filter(|net| net.contains(&ip)) {
            check.error(
                &vip,
                "ingress.vip",
                format!("VIP {ip} is inside service_cidr {service}"),
            );
        }
    }
    if interface.get_ref().is_empty()
        || interface.get_ref().len() > 15
        || interface.get_ref().contains(['/', ' '])
    {
        check.error(
            &interface,
            "ingress.interface",
            format!("{:?} is not a network interface name", interface.get_ref()),
        );
    }
    let virtual_router_id = match virtual_router_id {
        Some(value) if !(1..=255).contains(value.get_ref()) => {
            check.error(
                &value,
                "ingress.virtual_router_id",
                "must be between 1 and 255 (a VRRP router id)",
            );
            51
        }
        Some(value) => value.into_inner() as u8,
        None => 51,
    };
    let node_port = match node_port {
        Some(value) if !(30000..=32767).contains(value.get_ref()) => {
            check.error(
                &value,
                "ingress.node_port",
                format!(
                    "{} is outside the NodePort range 30000-32767",
                    value.get_ref()
                ),
            );
            31234
        }
        Some(value) => value.into_inner() as u16,
        None => 31234,
    };
    let nodes = match nodes {
        Some(list) => {
            let mut names = Vec::new();
            for (index, name) in list.into_iter().enumerate() {
                if !workers.iter().any(|worker| &worker.name == name.get_ref()) {
                    check.error(
                        &name,
                        &format!("ingress.nodes[{index}]"),
                        format!("{:?} is not a worker in this inventory", name.get_ref()),
                    );
                }
                names.push(name.into_inner());
            }
            names
        }
        None => workers.iter().map(|worker| worker.name.clone()).collect(),
    };
    if server_names.is_empty() {
        check.error_at_field(
            "ingress.server_names",
            "list at least one name nginx serves, such as \"*.example.org\"",
        );
    }
    for (index, server_name) in server_names.iter().enumerate() {
        let name = server_name.get_ref();
        let bare = name.strip_prefix("*.").unwrap_or(name);
        if !is_dns_name(bare) {
            check.error(
                server_name,
                &format!("ingress.server_names[{index}]"),
                format!("{name:?} is not a host name or wildcard such as \"*.example.org\""),
            );
        }
    }
    let tls = match (tls_cert, tls_key) {
        (Some(cert), Some(key)) => Some(IngressTls {
            cert: expand_path(base_dir, cert.get_ref()),
            key: expand_path(base_dir, key.get_ref()),
        }),
        (Some(cert), None) => {
            check.error(
                &cert,
                "ingress.tls_key",
                "tls_cert is set but tls_key is missing",
            );
            None
        }
        (None, Some(key)) => {
            check.error(
                &key,
                "ingress.tls_cert",
                "tls_key is set but tls_cert is missing",
            );
            None
        }
        (None, None) => None,
    };
    vip_ip.map(|vip| Ingress {
        vip,
        interface: interface.into_inner(),
        virtual_router_id,
        node_port,
        nodes,
        server_names: server_names.into_iter().map(Spanned::into_inner).collect(),
        tls,
    })
}

/// One of a fixed set of words; the first is the default. An unknown word is
/// an error listing the accepted ones.
fn choice<T: Copy>(
    check: &mut Checker<'_>,
    value: Option<Spanned<String>>,
    field: &str,
    what: &str,
    choices: &[(&str, T)],
) -> T {
    let default = choices[0].1;
    let Some(value) = value else {
        return default;
    };
    if let Some((_, chosen)) = choices.iter().find(|(word, _)| word == value.get_ref()) {
        return *chosen;
    }
    let expected: Vec<String> = choices
        .iter()
        .map(|(word, _)| format!("{word:?}"))
        .collect();
    check.error(
        &value,
        field,
        format!(
            "unknown {what} {:?}: expected {}",
            value.get_ref(),
            expected.join(" or ")
        ),
    );
    default
}

fn default_pod_cidr() -> IpNet {
    IpNet::V4(ipnet::Ipv4Net::new([10, 244, 0, 0].into(), 16).unwrap_or_default())
}

fn default_service_cidr() -> IpNet {
    IpNet::V4(ipnet::Ipv4Net::new([10, 96, 0, 0].into(), 12).unwrap_or_default())
}

type CidrWithSpan = (IpNet, Option<Spanned<String>>);

fn parse_cidr(
    check: &mut Checker<'_>,
    value: Option<Spanned<String>>,
    field: &str,
    default: &str,
) -> Option<CidrWithSpan> {
    let Some(value) = value else {
        return default.parse().ok().map(|net| (net, None));
    };
    match value.get_ref().parse::<IpNet>() {
        Ok(net) if net.network() != net.addr() => {
            let message = format!(
                "{} has host bits set: did you mean {}?",
                value.get_ref(),
                net.trunc()
            );
            check.error(&value, field, message);
            None
        }
        Ok(net) => Some((net, Some(value))),
        Err(_) => {
            let message = format!("{:?} is not a CIDR such as \"{default}\"", value.get_ref());
            check.error(&value, field, message);
            None
        }
    }
}

fn positive_days(
    check: &mut Checker<'_>,
    value: Option<Spanned<u32>>,
    field: &str,
    default: u32,
) -> u32 {
    match value {
        Some(days) if *days.get_ref() == 0 => {
            check.error(&days, field, "must be at least 1 day");
            default
        }
        Some(days) => days.into_inner(),
        None => default,
    }
}

fn parse_endpoint(text: &str) -> Result<Endpoint, String> {
    let invalid = || format!("{text:?} is not host[:port], such as \"kube.example.org:6443\"");
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(invalid)?;
        let port = match after.strip_prefix(':') {
            Some(port) => Some(port),
            None if after.is_empty() => None,
            None => return Err(invalid()),
        };
        (host.to_string(), port)
    } else if text.matches(':').count() > 1 {
        (text.to_string(), None)
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host.to_string(), Some(port)),
            None => (text.to_string(), None),
        }
    };
    let port = match port {
        Some(port) => port
            .parse::<u16>()
            .ok()
            .filter(|port| *port > 0)
            .ok_or_else(invalid)?,
        None => 6443,
    };
    if host.parse::<IpAddr>().is_err() && !is_dns_name(&host) {
        return Err(invalid());
    }
    Ok(Endpoint { host, port })
}

/// RFC 1123 label: lowercase letters, digits and '-', 1 to 63 characters,
/// starting and ending with a letter or digit.
pub(crate) fn is_dns_label(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 63
        && text
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}

pub(crate) fn is_dns_name(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    !lower.is_empty() && lower.len() <= 253 && lower.split('.').all(is_dns_label)
}

fn is_kubernetes_version(text: &str) -> bool {
    let text = text.strip_prefix('v').unwrap_or(text);
    let parts: Vec<&str> = text.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|part| !part.is_empty() && part.bytes().all(|byte| byte.is_ascii_digit()))
}

fn is_taint(text: &str) -> bool {
    match text.rsplit_once(':') {
        Some((key, effect)) => {
            !key.is_empty() && matches!(effect, "NoSchedule" | "PreferNoSchedule" | "NoExecute")
        }
        None => false,
    }
}

fn not_a_label(text: &str) -> String {
    format!(
        "{text:?} is not a DNS label (lowercase letters, digits and '-', at most 63 characters, starting and ending with a letter or digit)"
    )
}

fn plural(count: usize) -> &'static str {
    if count == 1 {
        ""
    } else {
        "s"
    }
}

fn ordinal(n: usize) -> String {
    let suffix = match (n % 10, n % 100) {
        (1, 11) | (2, 12) | (3, 13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// Expand `~/` and make relative paths relative to the inventory's folder.
pub(crate) fn expand_path(base_dir: &Path, text: &str) -> PathBuf {
    if let Some(rest) = text.strip_prefix("~/") {
        if let Some(home) = std::env::var_os("HOME") {
            return PathBuf::from(home).join(rest);
        }
    }
    let path = PathBuf::from(text);
    if path.is_absolute() {
        normalize(&path)
    } else {
        normalize(&base_dir.join(path))
    }
}

/// Remove `.` and `name/..` pairs without touching the file system, so
/// paths read well in messages (`pki/ocf`, not `inventory/../pki/ocf`).
fn normalize(path: &Path) -> PathBuf {
    use std::path::Component;
    let mut out: Vec<Component<'_>> = Vec::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => match out.last() {
                Some(Component::Normal(_)) => {
                    out.pop();
                }
                Some(Component::RootDir) => {}
                _ => out.push(component),
            },
            other => out.push(other),
        }
    }
    if out.is_empty() {
        PathBuf::from(".")
    } else {
        out.iter().collect()
    }
}
