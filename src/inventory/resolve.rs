//! Raw inventory to validated [`Cluster`]: every rule of the inventory
//! contract, with all problems collected so one run shows all of them.
//!
//! This is the one place where inventory values are judged. Besides the
//! cross-field rules (unique names and addresses, networks that do not
//! overlap, one address family), every string is checked against what its
//! destination accepts ([`super::syntax`]): a value that reaches a unit
//! file, a manifest, a keepalived or nginx configuration or an ssh command
//! line cannot carry a newline, a quote or an option into it. Numbers are
//! bounded so that nothing downstream (certificate dates, fan-out) can
//! overflow. Messages quote values only as short excerpts.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde_spanned::Spanned;

use super::cluster::*;
use super::diagnostic::{Diagnostic, SourceMap};
use super::raw::*;
use super::syntax::{self, not_a_label, shown};

/// The longest CA lifetime accepted: 100 years keeps every date well inside
/// what X.509 and the certificate library can express.
pub const MAX_CA_VALIDITY_DAYS: u32 = 36_500;
/// The longest leaf certificate lifetime accepted (10 years).
pub const MAX_CERT_VALIDITY_DAYS: u32 = 3_650;
/// The most SSH connections a run opens at once.
pub const MAX_CONCURRENCY: u32 = 1_024;
/// The longest SSH connect timeout, in seconds.
pub const MAX_CONNECT_TIMEOUT_SECS: u32 = 3_600;

/// The longest parser message kept whole; longer ones (which quote the
/// offending value) are cut in the middle.
const MAX_MESSAGE: usize = 400;

/// kubelet's `resolvConf` unless the inventory says otherwise.
pub const DEFAULT_RESOLV_CONF: &str = "/etc/resolv.conf";

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
        self.error_span(Some(value.span()), field, message);
    }

    fn error_span(&mut self, span: Option<Range<usize>>, field: &str, message: impl Into<String>) {
        let location = self.source.at(span, field.to_string());
        self.errors.push(Diagnostic {
            location,
            message: message.into(),
        });
    }

    fn error_at_field(&mut self, field: &str, message: impl Into<String>) {
        self.error_span(None, field, message);
    }

    /// Record `rule`'s refusal of `value`, if it refuses.
    fn check<T>(
        &mut self,
        value: &Spanned<T>,
        field: &str,
        rule: impl FnOnce(&T) -> Result<(), String>,
    ) -> bool {
        match rule(value.get_ref()) {
            Ok(()) => true,
            Err(message) => {
                self.error(value, field, message);
                false
            }
        }
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
        let message = short_message(error.message().trim());
        vec![Diagnostic {
            location: source.at(error.span(), None),
            message,
        }]
    })
}

/// A parser message fit to print: control characters escaped, and when it
/// quotes a long value, cut in the middle so its start and its end (what
/// was expected) both remain.
fn short_message(message: &str) -> String {
    let count = message.chars().count();
    if count <= MAX_MESSAGE {
        return crate::input_file::excerpt(message, MAX_MESSAGE);
    }
    let head: String = message.chars().take(MAX_MESSAGE / 2).collect();
    let tail: String = message.chars().skip(count - MAX_MESSAGE / 4).collect();
    format!(
        "{} … {}",
        crate::input_file::excerpt(&head, MAX_MESSAGE),
        crate::input_file::excerpt(&tail, MAX_MESSAGE)
    )
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
        resolv_conf,
    } = cluster;

    if !syntax::is_dns_label(name.get_ref()) {
        check.error(&name, "cluster.name", not_a_label(name.get_ref()));
    }
    let version = match syntax::kubernetes_version(kubernetes_version.get_ref()) {
        Ok(version) => version,
        Err(message) => {
            check.error(&kubernetes_version, "cluster.kubernetes_version", message);
            String::new()
        }
    };

    let pod_cidr = parse_cidr(&mut check, pod_cidr, "cluster.pod_cidr", "10.244.0.0/16");
    let service_cidr = parse_cidr(
        &mut check,
        service_cidr,
        "cluster.service_cidr",
        "10.96.0.0/12",
    );
    if let (Some(pod), Some(service)) = (&pod_cidr, &service_cidr) {
        if pod.net.contains(&service.net.network()) || service.net.contains(&pod.net.network()) {
            let message = format!("service_cidr {} overlaps pod_cidr {}", service.net, pod.net);
            check.error_span(service.span.clone(), "cluster.service_cidr", message);
        }
    }
    if let Some(service) = &service_cidr {
        // kubeadm's rule: the DNS service IP is the 10th address, so the
        // network needs at least 16 addresses.
        let too_small = match service.net {
            IpNet::V4(net) => net.prefix_len() > 28,
            IpNet::V6(net) => net.prefix_len() > 124,
        };
        // kube-apiserver refuses a service network of more than 2^20
        // addresses (an IPv4 mask shorter than /12, IPv6 shorter than /108).
        let host_bits = match service.net {
            IpNet::V4(net) => 32 - net.prefix_len(),
            IpNet::V6(net) => 128 - net.prefix_len(),
        };
        if host_bits > 20 {
            let longest = match service.net {
                IpNet::V4(_) => 12,
                IpNet::V6(_) => 108,
            };
            let message = format!(
                "service_cidr {} is too large: kube-apiserver takes at most 2^20 service addresses (a /{longest} or longer)",
                service.net
            );
            check.error_span(service.span.clone(), "cluster.service_cidr", message);
        }
        if too_small {
            let message = format!(
                "service_cidr {} is too small: it needs room for the cluster DNS address (the 10th)",
                service.net
            );
            check.error_span(service.span.clone(), "cluster.service_cidr", message);
        }
    }

    let resolv_conf = match resolv_conf {
        Some(path) => {
            check.check(&path, "cluster.resolv_conf", |path| syntax::host_path(path));
            path.into_inner()
        }
        None => DEFAULT_RESOLV_CONF.to_string(),
    };

    let cluster_domain = match cluster_domain {
        Some(domain) => {
            if !syntax::is_dns_name(domain.get_ref()) {
                check.error(
                    &domain,
                    "cluster.cluster_domain",
                    format!("{} is not a DNS domain", shown(domain.get_ref())),
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

    let cert_validity_span = cert_validity_days.as_ref().map(Spanned::span);
    let cert_validity_days = bounded(
        &mut check,
        cert_validity_days,
        "cluster.cert_validity_days",
        365,
        1..=MAX_CERT_VALIDITY_DAYS,
        "days",
    );
    let ca_validity_days = bounded(
        &mut check,
        ca_validity_days,
        "cluster.ca_validity_days",
        3650,
        1..=MAX_CA_VALIDITY_DAYS,
        "days",
    );
    if cert_validity_days > ca_validity_days {
        check.error_span(
            cert_validity_span,
            "cluster.cert_validity_days",
            format!(
                "certificates ({cert_validity_days} days) cannot outlive their CA (ca_validity_days = {ca_validity_days})"
            ),
        );
    }
    let pki_dir = local_path(&mut check, &base_dir, pki_dir, "cluster.pki_dir");
    let templates_dir = local_path(
        &mut check,
        &base_dir,
        templates_dir,
        "cluster.templates_dir",
    );

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
    let ssh_user = match user {
        Some(user) => {
            check.check(&user, "ssh.user", |user| syntax::ssh_user(user));
            user.into_inner()
        }
        None => "root".to_string(),
    };
    let ssh_port = port_number(&mut check, port, "ssh.port").unwrap_or(22);
    let concurrency = bounded(
        &mut check,
        concurrency,
        "ssh.concurrency",
        32,
        1..=MAX_CONCURRENCY,
        "connections",
    ) as usize;
    let connect_timeout_secs = bounded(
        &mut check,
        connect_timeout_secs,
        "ssh.connect_timeout_secs",
        10,
        1..=MAX_CONNECT_TIMEOUT_SECS,
        "seconds",
    );
    for (value, field) in [
        (&identity_file, "ssh.identity_file"),
        (&known_hosts, "ssh.known_hosts"),
    ] {
        if let Some(value) = value {
            check.check(value, field, |path| syntax::ssh_config_path(path));
        }
    }
    if let Some(jump_host) = &jump_host {
        check.check(jump_host, "ssh.jump_host", |host| syntax::jump_host(host));
    }
    let ssh = Ssh {
        user: ssh_user.clone(),
        port: ssh_port,
        identity_file: identity_file.map(|path| expand_path(&base_dir, path.get_ref())),
        known_hosts: known_hosts.map(|path| expand_path(&base_dir, path.get_ref())),
        jump_host: jump_host.map(Spanned::into_inner),
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
            check.check(&dir, "install.bin_dir", |dir| syntax::host_path(dir));
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
        upload_from: local_path(&mut check, &base_dir, upload_from, "install.upload_from"),
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
    // The address family of the cluster: that of the first host address.
    let mut first_address: Option<(IpAddr, String)> = None;
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
            if !syntax::is_dns_label(name.get_ref()) {
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
                            "{} is not an IP address (certificates and etcd URLs need the host's IP)",
                            shown(address.get_ref())
                        ),
                    );
                    None
                }
            };
            if let Some(ip) = parsed {
                if let Some(why) = syntax::unusable_address(ip) {
                    check.error(&address, &address_field, why);
                }
                let same = syntax::canonical(ip);
                if let Some(first) = addresses.get(&same) {
                    let message = format!("address {ip} is already used by {first}");
                    check.error(&address, &address_field, message);
                } else {
                    addresses.insert(same, format!("{path} ({})", name.get_ref()));
                }
                match &first_address {
                    None => first_address = Some((ip, path.clone())),
                    Some((first, first_path)) if !syntax::same_family(*first, ip) => {
                        let message = format!(
                            "{ip} is {} but {first_path} is {} ({first}): a cluster uses one address family",
                            syntax::family(ip),
                            syntax::family(*first),
                        );
                        check.error(&address, &address_field, message);
                    }
                    Some(_) => {}
                }
                if let Some(pod) = &pod_cidr {
                    if pod.net.contains(&ip) {
                        check.error(
                            &address,
                            &address_field,
                            format!("address {ip} is inside pod_cidr {}", pod.net),
                        );
                    }
                }
                if let Some(service) = &service_cidr {
                    if service.net.contains(&ip) {
                        check.error(
                            &address,
                            &address_field,
                            format!("address {ip} is inside service_cidr {}", service.net),
                        );
                    }
                }
            }
            let node_user = match host_user {
                Some(user) => {
                    check.check(&user, &format!("{path}.ssh_user"), |user| {
                        syntax::ssh_user(user)
                    });
                    user.into_inner()
                }
                None => ssh_user.clone(),
            };
            let node_port =
                port_number(&mut check, host_port, &format!("{path}.ssh_port")).unwrap_or(ssh_port);
            let mut node_labels = BTreeMap::new();
            for (key, value) in labels {
                let field = format!("{path}.labels.{}", shown(key.get_ref()));
                check.check(&key, &field, |key| syntax::node_label_key(key));
                check.check(&value, &field, |value| syntax::label_value(value));
                node_labels.insert(key.into_inner(), value.into_inner());
            }
            let mut node_taints = Vec::new();
            for (taint_index, taint) in taints.into_iter().enumerate() {
                check.check(&taint, &format!("{path}.taints[{taint_index}]"), |taint| {
                    syntax::taint(taint)
                });
                node_taints.push(taint.into_inner());
            }
            if let Some(ip) = parsed {
                nodes.push(Node {
                    name: name.into_inner(),
                    address: ip,
                    role,
                    ssh_user: node_user,
                    ssh_port: node_port,
                    labels: node_labels,
                    taints: node_taints,
                });
            }
        }
    }
    let (masters, workers): (Vec<Node>, Vec<Node>) = nodes
        .into_iter()
        .partition(|node| node.role == Role::Master);

    // One address family: the networks follow the hosts.
    if let Some((first, first_path)) = &first_address {
        for (network, field) in [
            (&pod_cidr, "cluster.pod_cidr"),
            (&service_cidr, "cluster.service_cidr"),
        ] {
            if let Some(network) = network {
                if network.net.addr().is_ipv4() != syntax::canonical(*first).is_ipv4() {
                    let spelled = if network.span.is_some() {
                        ""
                    } else {
                        " (the default)"
                    };
                    let message = format!(
                        "{}{spelled} is {} but {first_path} is {} ({first}): a cluster uses one address family",
                        network.net,
                        syntax::family(network.net.addr()),
                        syntax::family(*first),
                    );
                    check.error_span(network.span.clone(), field, message);
                }
            }
        }
    }

    // One pod subnet per node: the controller-manager (and flannel) hand
    // each node a /24 (IPv4) or /64 (IPv6) of the pod network.
    if let Some(pod) = &pod_cidr {
        let node_count = masters.len() + workers.len();
        let subnet_prefix: u8 = match pod.net {
            IpNet::V4(_) => 24,
            IpNet::V6(_) => 64,
        };
        let prefix = pod.net.prefix_len();
        let room: u128 = if prefix > subnet_prefix {
            0
        } else {
            1u128
                .checked_shl(u32::from(subnet_prefix - prefix))
                .unwrap_or(u128::MAX)
        };
        if room < node_count as u128 {
            let message = format!(
                "pod_cidr {} has room for {room} node subnet{} (a /{subnet_prefix} each) but the inventory lists {node_count} nodes",
                pod.net,
                plural(room as usize),
            );
            check.error_span(pod.span.clone(), "cluster.pod_cidr", message);
        }
    }

    // Control-plane endpoint.
    let control_plane_endpoint = match control_plane_endpoint {
        Some(value) => match parse_endpoint(value.get_ref()) {
            Ok(endpoint) => {
                if let Ok(ip) = endpoint.host.parse::<IpAddr>() {
                    let field = "cluster.control_plane_endpoint";
                    if let Some(why) = syntax::unusable_address(ip) {
                        check.error(&value, field, why);
                    }
                    if let Some((first, first_path)) = &first_address {
                        if !syntax::same_family(*first, ip) {
                            check.error(
                                &value,
                                field,
                                format!(
                                    "{ip} is {} but {first_path} is {} ({first}): a cluster uses one address family",
                                    syntax::family(ip),
                                    syntax::family(*first)
                                ),
                            );
                        }
                    }
                    for (network, what) in
                        [(&pod_cidr, "pod_cidr"), (&service_cidr, "service_cidr")]
                    {
                        if let Some(network) =
                            network.as_ref().filter(|network| network.net.contains(&ip))
                        {
                            check.error(
                                &value,
                                field,
                                format!("{ip} is inside {what} {}: the API must be reached from outside the cluster's networks", network.net),
                            );
                        }
                    }
                }
                endpoint
            }
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
            first_address.as_ref(),
            &workers,
            pod_cidr.as_ref().map(|cidr| &cidr.net),
            service_cidr.as_ref().map(|cidr| &cidr.net),
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

    let pki_dir = pki_dir.unwrap_or_else(|| normalize(&base_dir.join("pki").join(name.get_ref())));
    let cluster = Cluster {
        name: name.into_inner(),
        kubernetes_version: version,
        control_plane_endpoint,
        pod_cidr: pod_cidr
            .map(|cidr| cidr.net)
            .unwrap_or_else(default_pod_cidr),
        service_cidr: service_cidr
            .map(|cidr| cidr.net)
            .unwrap_or_else(default_service_cidr),
        cluster_domain,
        cni,
        key_algorithm,
        cert_validity_days,
        ca_validity_days,
        pki_dir,
        templates_dir,
        resolv_conf,
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
    first_address: Option<&(IpAddr, String)>,
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
                format!("{} is not an IP address", shown(vip.get_ref())),
            );
            None
        }
    };
    if let Some(ip) = vip_ip {
        if let Some(why) = syntax::unusable_address(ip) {
            check.error(&vip, "ingress.vip", why);
        }
        if let Some(host) = addresses.get(&syntax::canonical(ip)) {
            check.error(
                &vip,
                "ingress.vip",
                format!("VIP {ip} is the address of {host}: the VIP must be a free address that keepalived moves between masters"),
            );
        }
        if let Some((first, first_path)) = first_address {
            if !syntax::same_family(*first, ip) {
                check.error(
                    &vip,
                    "ingress.vip",
                    format!(
                        "VIP {ip} is {} but {first_path} is {} ({first}): a cluster uses one address family",
                        syntax::family(ip),
                        syntax::family(*first)
                    ),
                );
            }
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
    check.check(&interface, "ingress.interface", |name| {
        syntax::interface(name)
    });
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
            let mut names: Vec<String> = Vec::new();
            for (index, name) in list.into_iter().enumerate() {
                let field = format!("ingress.nodes[{index}]");
                if !workers.iter().any(|worker| &worker.name == name.get_ref()) {
                    check.error(
                        &name,
                        &field,
                        format!(
                            "{} is not a worker in this inventory",
                            shown(name.get_ref())
                        ),
                    );
                } else if names.contains(name.get_ref()) {
                    check.error(
                        &name,
                        &field,
                        format!("{} is listed twice", shown(name.get_ref())),
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
        if !syntax::is_dns_name(bare) {
            check.error(
                server_name,
                &format!("ingress.server_names[{index}]"),
                format!(
                    "{} is not a host name or wildcard such as \"*.example.org\"",
                    shown(name)
                ),
            );
        }
    }
    let tls_cert_path = local_path(check, base_dir, tls_cert.clone(), "ingress.tls_cert");
    let tls_key_path = local_path(check, base_dir, tls_key.clone(), "ingress.tls_key");
    let tls = match (tls_cert, tls_key) {
        (Some(_), Some(_)) => match (tls_cert_path, tls_key_path) {
            (Some(cert), Some(key)) => Some(IngressTls { cert, key }),
            _ => None,
        },
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

/// A local path from the inventory, checked and made absolute (relative to
/// the inventory's folder).
fn local_path(
    check: &mut Checker<'_>,
    base_dir: &Path,
    value: Option<Spanned<String>>,
    field: &str,
) -> Option<PathBuf> {
    let value = value?;
    if check.check(&value, field, |path| syntax::local_path(path)) {
        Some(expand_path(base_dir, value.get_ref()))
    } else {
        None
    }
}

/// A TCP port: 1 to 65535.
fn port_number(check: &mut Checker<'_>, value: Option<Spanned<u16>>, field: &str) -> Option<u16> {
    let value = value?;
    if *value.get_ref() == 0 {
        check.error(
            &value,
            field,
            "port 0 is not a port ssh can connect to: 1 to 65535",
        );
        return None;
    }
    Some(value.into_inner())
}

/// A number within `range`, or the default when absent.
fn bounded(
    check: &mut Checker<'_>,
    value: Option<Spanned<u32>>,
    field: &str,
    default: u32,
    range: std::ops::RangeInclusive<u32>,
    unit: &str,
) -> u32 {
    match value {
        Some(number) if !range.contains(number.get_ref()) => {
            let (word, limit) = if number.get_ref() < range.start() {
                ("at least", *range.start())
            } else {
                ("at most", *range.end())
            };
            let unit = if limit == 1 {
                unit.trim_end_matches('s')
            } else {
                unit
            };
            let bound = format!("{word} {limit}");
            check.error(
                &number,
                field,
                format!(
                    "{} is out of range: must be {bound} {unit}",
                    number.get_ref()
                ),
            );
            // Kept as written: other rules compare it, and no cluster is
            // built from an inventory with errors.
            number.into_inner()
        }
        Some(number) => number.into_inner(),
        None => default,
    }
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
            "unknown {what} {}: expected {}",
            shown(value.get_ref()),
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

/// A cluster network and where it was written (none for the default).
struct Cidr {
    net: IpNet,
    span: Option<Range<usize>>,
}

fn parse_cidr(
    check: &mut Checker<'_>,
    value: Option<Spanned<String>>,
    field: &str,
    default: &str,
) -> Option<Cidr> {
    let Some(value) = value else {
        return default.parse().ok().map(|net| Cidr { net, span: None });
    };
    match value.get_ref().parse::<IpNet>() {
        Ok(net) if net.network() != net.addr() => {
            let message = format!(
                "{} has host bits set: did you mean {}?",
                shown(value.get_ref()),
                net.trunc()
            );
            check.error(&value, field, message);
            None
        }
        Ok(net) => {
            if let Some(why) = syntax::unusable_network(&net) {
                check.error(&value, field, why);
                return None;
            }
            Some(Cidr {
                net,
                span: Some(value.span()),
            })
        }
        Err(_) => {
            let message = format!(
                "{} is not a CIDR such as \"{default}\"",
                shown(value.get_ref())
            );
            check.error(&value, field, message);
            None
        }
    }
}

fn parse_endpoint(text: &str) -> Result<Endpoint, String> {
    let invalid = || {
        format!(
            "{} is not host[:port], such as \"kube.example.org:6443\"",
            shown(text)
        )
    };
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
    if host.parse::<IpAddr>().is_err() && !syntax::is_dns_name(&host) {
        return Err(invalid());
    }
    Ok(Endpoint { host, port })
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
