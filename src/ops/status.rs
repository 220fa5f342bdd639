//! `ocfk8s status`: the cluster as it really is, read from the hosts.
//!
//! Per host: whether it answers over SSH and the state of each service
//! ocfk8s manages there; from one reachable master, etcd's own view
//! (`member list`, `endpoint status`, `endpoint health` through etcdctl on
//! that master) compared with the inventory; which master holds the VIP;
//! and each apiserver's `/readyz`, asked from its own host with the admin
//! identity and verified against the cluster CA. Unreachable hosts are
//! reported, not fatal: status exists to look at a sick cluster.
//!
//! Gathering is async and talks to hosts; judging ([`Report::problems`]) is
//! pure.

use std::collections::BTreeMap;
use std::net::IpAddr;

use futures::stream::{self, StreamExt};
use serde::Serialize;

use crate::inventory::{Cluster, Node};
use crate::remote::etcdctl::{EndpointStatus, Etcdctl, Member};
use crate::remote::shell::quote;
use crate::remote::{Connector, Host};

/// The services ocfk8s runs on `node`, in start order.
pub(crate) fn managed_services(cluster: &Cluster, node: &Node) -> Vec<&'static str> {
    let mut units = vec!["containerd.service"];
    if node.is_master() {
        units.push("etcd.service");
    }
    units.extend(["kubelet.service", "kube-proxy.service"]);
    if node.is_master() && cluster.ingress.is_some() {
        units.extend(["keepalived.service", "nginx.service"]);
    }
    units
}

/// `address` as it goes inside a URL.
pub(crate) fn url_host(address: IpAddr) -> String {
    match address {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => format!("[{v6}]"),
    }
}

/// A master's etcd client URL, as etcd advertises it.
pub(crate) fn client_url(node: &Node) -> String {
    format!("https://{}:2379", url_host(node.address))
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct HostStatus {
    pub(crate) name: String,
    pub(crate) address: String,
    pub(crate) role: &'static str,
    /// `None` when reachable; else why not.
    pub(crate) unreachable: Option<String>,
    /// `systemctl is-active` of each managed service.
    pub(crate) services: BTreeMap<String, String>,
    /// Masters with `[ingress]`: whether this host holds the VIP.
    pub(crate) holds_vip: Option<bool>,
    /// Masters: `None` when ready, else why not.
    pub(crate) apiserver: Option<ApiserverStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ApiserverStatus {
    pub(crate) ready: bool,
    pub(crate) detail: String,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct MemberStatus {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) client_url: Option<String>,
    pub(crate) learner: bool,
    pub(crate) leader: bool,
    pub(crate) raft_index: Option<u64>,
    pub(crate) db_size: Option<u64>,
    pub(crate) healthy: bool,
    pub(crate) error: Option<String>,
    pub(crate) in_inventory: bool,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct EtcdStatus {
    /// The master etcdctl ran on.
    pub(crate) asked: String,
    pub(crate) members: Vec<MemberStatus>,
    /// Inventory masters that are not members.
    pub(crate) missing: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Report {
    pub(crate) cluster: String,
    pub(crate) hosts: Vec<HostStatus>,
    /// `Err` holds why etcd could not be asked at all.
    pub(crate) etcd: Result<EtcdStatus, String>,
    pub(crate) vip: Option<String>,
    /// Where the store is in a CA rotation (`None` when it could not be
    /// read).
    pub(crate) ca_rotation: Option<crate::pki::ca_rotation::RotationReport>,
}

impl Report {
    /// Everything that is not healthy, one line each; empty when healthy.
    pub(crate) fn problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        for host in &self.hosts {
            if let Some(why) = &host.unreachable {
                problems.push(format!("{}: unreachable: {why}", host.name));
                continue;
            }
            for (unit, state) in &host.services {
                if state != "active" {
                    problems.push(format!("{}: {unit} is {state}", host.name));
                }
            }
            if let Some(apiserver) = &host.apiserver {
                if !apiserver.ready {
                    problems.push(format!(
                        "{}: apiserver not ready: {}",
                        host.name, apiserver.detail
                    ));
                }
            }
        }
        match &self.etcd {
            Err(why) => problems.push(format!("etcd: {why}")),
            Ok(etcd) => {
                for member in &etcd.members {
                    let name = if member.name.is_empty() {
                        format!("member {} (never started)", member.id)
                    } else {
                        format!("member {}", member.name)
                    };
                    if !member.in_inventory {
                        problems.push(format!("etcd: {name} is not a master in the inventory"));
                    }
                    if member.learner {
                        problems.push(format!("etcd: {name} is still a learner"));
                    }
                    if !member.healthy {
                        problems.push(format!(
                            "etcd: {name} is not healthy{}",
                            member
                                .error
                                .as_deref()
                                .map(|error| format!(": {error}"))
                                .unwrap_or_default()
                        ));
                    }
                }
                for name in &etcd.missing {
                    problems.push(format!(
                        "etcd: {name} is a master in the inventory but not an etcd member"
                    ));
                }
                if !etcd.members.iter().any(|member| member.leader) {
                    problems.push("etcd: no member reports a leader".to_string());
                }
            }
        }
        if let Some(vip) = &self.vip {
            let holders: Vec<&str> = self
                .hosts
                .iter()
                .filter(|host| host.holds_vip == Some(true))
                .map(|host| host.name.as_str())
                .collect();
            match holders.len() {
                1 => {}
                0 => problems.push(format!("VIP {vip}: held by no master")),
                _ => problems.push(format!(
                    "VIP {vip}: held by more than one master ({})",
                    holders.join(", ")
                )),
            }
        }
        problems
    }
}

/// The per-host script: service states, whether the VIP is on this host,
/// and (masters) the local apiserver's `/readyz` with the admin identity.
pub(crate) fn host_script(units: &[&str], vip: Option<IpAddr>, readyz: Option<&str>) -> String {
    let mut script = String::from("export LC_ALL=C\n");
    for unit in units {
        let unit = quote(unit);
        script.push_str(&format!(
            "printf 'service %s %s\\n' {unit} \"$(systemctl is-active {unit} 2>/dev/null || true)\"\n"
        ));
    }
    if let Some(vip) = vip {
        let vip = quote(&vip.to_string());
        script.push_str(&format!(
            "if ip -o addr show 2>/dev/null | awk '{{ sub(/\\/.*/, \"\", $4); print $4 }}' | grep -qxF {vip}; then echo 'vip yes'; else echo 'vip no'; fi\n"
        ));
    }
    if let Some(url) = readyz {
        // The admin client identity, from admin.conf, into a private folder
        // removed on exit; curl verifies the server against the cluster CA.
        script.push_str(&format!(
            "dir=$(mktemp -d /run/ocfk8s-status.XXXXXX) && trap 'rm -rf \"$dir\"' EXIT\n\
             conf=/etc/kubernetes/admin.conf\n\
             if [ ! -f \"$conf\" ]; then echo 'readyz no /etc/kubernetes/admin.conf is missing'\n\
             elif ! command -v curl >/dev/null 2>&1; then echo 'readyz no curl is not installed on the host'\n\
             else\n  \
               sed -n 's/^ *client-certificate-data: *//p' \"$conf\" | base64 -d > \"$dir/cert\" 2>/dev/null\n  \
               (umask 077; sed -n 's/^ *client-key-data: *//p' \"$conf\" | base64 -d > \"$dir/key\" 2>/dev/null)\n  \
               code=$(curl -s -o \"$dir/body\" -w '%{{http_code}}' --max-time 3 --cacert /etc/kubernetes/pki/ca.crt \
             --cert \"$dir/cert\" --key \"$dir/key\" {url} 2>\"$dir/err\") || true\n  \
               if [ \"$code\" = 200 ]; then echo 'readyz yes'\n  \
               else printf 'readyz no HTTP %s %s\\n' \"${{code:-000}}\" \"$(head -c 200 \"$dir/err\" \"$dir/body\" 2>/dev/null | tr '\\n' ' ')\"; fi\n\
             fi\n",
            url = quote(url)
        ));
    }
    script
}

/// What [`host_script`] printed: services, VIP held, readyz.
pub(crate) fn parse_host_output(
    output: &str,
) -> (
    BTreeMap<String, String>,
    Option<bool>,
    Option<ApiserverStatus>,
) {
    let mut services = BTreeMap::new();
    let mut vip = None;
    let mut apiserver = None;
    for line in output.lines() {
        if let Some(rest) = line.strip_prefix("service ") {
            let mut parts = rest.splitn(2, ' ');
            let unit = parts.next().unwrap_or_default();
            let state = parts.next().unwrap_or_default().trim();
            services.insert(
                unit.to_string(),
                if state.is_empty() { "unknown" } else { state }.to_string(),
            );
        } else if let Some(answer) = line.strip_prefix("vip ") {
            vip = Some(answer == "yes");
        } else if let Some(answer) = line.strip_prefix("readyz ") {
            apiserver = Some(if answer == "yes" {
                ApiserverStatus {
                    ready: true,
                    detail: "ready".to_string(),
                }
            } else {
                ApiserverStatus {
                    ready: false,
                    detail: answer
                        .strip_prefix("no ")
                        .unwrap_or(answer)
                        .trim()
                        .to_string(),
                }
            });
        }
    }
    (services, vip, apiserver)
}

/// Combine etcd's answers with the inventory.
pub(crate) fn etcd_status(
    cluster: &Cluster,
    asked: &str,
    members: &[Member],
    statuses: &[EndpointStatus],
    health: &[crate::remote::etcdctl::EndpointHealth],
    status_error: &str,
) -> EtcdStatus {
    let leader = statuses
        .iter()
        .map(|status| status.leader)
        .find(|id| *id != 0);
    let rows = members
        .iter()
        .map(|member| {
            let client_url = member.client_urls.first().cloned();
            let status = statuses.iter().find(|status| status.member_id == member.id);
            let endpoint_health = client_url
                .as_ref()
                .and_then(|url| health.iter().find(|entry| &entry.endpoint == url));
            let healthy = status.is_some_and(|status| status.errors.is_empty())
                && endpoint_health.is_some_and(|entry| entry.health);
            let error = if healthy {
                None
            } else if !member.started() {
                Some("added but never started".to_string())
            } else {
                endpoint_health
                    .and_then(|entry| entry.error.clone())
                    .or_else(|| status.map(|status| status.errors.join(", ")))
                    .filter(|error| !error.is_empty())
                    .or_else(|| (!status_error.is_empty()).then(|| first_line(status_error)))
            };
            MemberStatus {
                id: member.hex_id(),
                name: member.name.clone(),
                client_url,
                learner: member.is_learner,
                leader: Some(member.id) == leader,
                raft_index: status.map(|status| status.raft_index),
                db_size: status.map(|status| status.db_size),
                healthy,
                error,
                in_inventory: member_in_inventory(cluster, member),
            }
        })
        .collect();
    let missing = cluster
        .masters
        .iter()
        .filter(|master| !members.iter().any(|member| member_is(member, master)))
        .map(|master| master.name.clone())
        .collect();
    EtcdStatus {
        asked: asked.to_string(),
        members: rows,
        missing,
    }
}

fn first_line(text: &str) -> String {
    text.lines()
        .find(|line| !line.trim().is_empty())
        .unwrap_or_default()
        .trim()
        .to_string()
}

/// Whether `member` is `master`: by name once started, by peer URL before.
pub(crate) fn member_is(member: &Member, master: &Node) -> bool {
    let peer = format!("https://{}:2380", url_host(master.address));
    member.name == master.name || member.peer_urls.contains(&peer)
}

fn member_in_inventory(cluster: &Cluster, member: &Member) -> bool {
    cluster
        .masters
        .iter()
        .any(|master| member_is(member, master))
}

/// Connect to every host (failures recorded, not fatal), read each one's
/// services, VIP and apiserver, and etcd's view from the first reachable
/// master.
pub(crate) async fn gather(cluster: &Cluster, connector: &Connector, concurrency: usize) -> Report {
    let vip = cluster.ingress.as_ref().map(|ingress| ingress.vip);
    let nodes: Vec<&Node> = cluster.nodes().collect();
    let results: Vec<(HostStatus, Option<Host>)> = stream::iter(nodes.iter().copied())
        .map(|node| async move {
            let mut status = HostStatus {
                name: node.name.clone(),
                address: node.address.to_string(),
                role: if node.is_master() { "master" } else { "worker" },
                unreachable: None,
                services: BTreeMap::new(),
                holds_vip: None,
                apiserver: None,
            };
            let host = match connector.connect(node).await {
                Ok(host) => host,
                Err(error) => {
                    status.unreachable = Some(format!("{error:#}"));
                    return (status, None);
                }
            };
            let units = managed_services(cluster, node);
            let readyz = node
                .is_master()
                .then(|| format!("https://{}:6443/readyz", url_host(node.address)));
            let script = host_script(
                &units,
                if node.is_master() { vip } else { None },
                readyz.as_deref(),
            );
            match host.exec(&script).await {
                Ok(output) => {
                    let text = String::from_utf8_lossy(&output.stdout);
                    let (services, holds_vip, apiserver) = parse_host_output(&text);
                    status.services = services;
                    status.holds_vip = holds_vip;
                    status.apiserver = apiserver;
                }
                Err(error) => status.unreachable = Some(format!("{error:#}")),
            }
            (status, Some(host))
        })
        .buffered(concurrency.max(1))
        .collect()
        .await;

    let etcd = etcd_view(cluster, &results).await;
    let mut hosts = Vec::with_capacity(results.len());
    let mut connections = Vec::new();
    for (status, host) in results {
        hosts.push(status);
        connections.extend(host);
    }
    futures::future::join_all(connections.into_iter().map(Host::close)).await;
    Report {
        cluster: cluster.name.clone(),
        hosts,
        etcd,
        vip: vip.map(|vip| vip.to_string()),
        ca_rotation: None,
    }
}

/// etcd's view, asked through the first reachable master whose etcd
/// answers `member list`.
async fn etcd_view(
    cluster: &Cluster,
    results: &[(HostStatus, Option<Host>)],
) -> Result<EtcdStatus, String> {
    let endpoints: Vec<String> = cluster.masters.iter().map(client_url).collect();
    let mut last_error = "no master is reachable over SSH".to_string();
    for (status, host) in results {
        let Some(host) = host else { continue };
        if status.role != "master" || status.unreachable.is_some() {
            continue;
        }
        let etcdctl = Etcdctl {
            host,
            bin_dir: &cluster.install.bin_dir,
        };
        let members = match etcdctl.member_list(&endpoints).await {
            Ok(members) => members,
            Err(error) => {
                last_error = format!("{error:#}");
                continue;
            }
        };
        let member_endpoints: Vec<String> = members
            .iter()
            .filter_map(|member| member.client_urls.first().cloned())
            .collect();
        let (statuses, status_error) = etcdctl
            .endpoint_status(&member_endpoints)
            .await
            .map_err(|error| format!("{error:#}"))?;
        let health = etcdctl
            .endpoint_health(&member_endpoints)
            .await
            .map_err(|error| format!("{error:#}"))?;
        return Ok(etcd_status(
            cluster,
            &status.name,
            &members,
            &statuses,
            &health,
            &status_error,
        ));
    }
    Err(format!(
        "cannot read the member list from any master: {last_error}"
    ))
}

/// The human-readable report.
pub(crate) fn text(report: &Report) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let width = report
        .hosts
        .iter()
        .map(|host| host.name.len())
        .max()
        .unwrap_or(0);
    let _ = writeln!(out, "cluster {}", report.cluster);
    let _ = writeln!(out, "hosts:");
    for host in &report.hosts {
        let _ = write!(
            out,
            "  {:width$}  {:6}  {:15}  ",
            host.name, host.role, host.address
        );
        if let Some(why) = &host.unreachable {
            let _ = writeln!(out, "UNREACHABLE: {why}");
            continue;
        }
        let services: Vec<String> = host
            .services
            .iter()
            .map(|(unit, state)| format!("{} {state}", unit.trim_end_matches(".service")))
            .collect();
        let _ = write!(out, "{}", services.join(", "));
        if let Some(apiserver) = &host.apiserver {
            let _ = write!(
                out,
                "; apiserver {}",
                if apiserver.ready {
                    "ready".to_string()
                } else {
                    format!("NOT READY ({})", apiserver.detail)
                }
            );
        }
        if host.holds_vip == Some(true) {
            let _ = write!(out, "; holds the VIP");
        }
        let _ = writeln!(out);
    }
    match &report.etcd {
        Err(why) => {
            let _ = writeln!(out, "etcd: UNKNOWN: {why}");
        }
        Ok(etcd) => {
            let _ = writeln!(
                out,
                "etcd: {} member(s), asked on {}",
                etcd.members.len(),
                etcd.asked
            );
            let _ = writeln!(
                out,
                "  {:16}  {:width$}  {:7}  {:>10}  {:>10}  HEALTH",
                "ID", "NAME", "LEADER", "RAFT INDEX", "DB SIZE",
            );
            for member in &etcd.members {
                let _ = writeln!(
                    out,
                    "  {:16}  {:width$}  {:7}  {:>10}  {:>10}  {}{}{}",
                    member.id,
                    if member.name.is_empty() {
                        "-"
                    } else {
                        &member.name
                    },
                    if member.leader { "leader" } else { "" },
                    member
                        .raft_index
                        .map(|index| index.to_string())
                        .unwrap_or_else(|| "-".into()),
                    member
                        .db_size
                        .map(|size| size.to_string())
                        .unwrap_or_else(|| "-".into()),
                    if member.healthy {
                        "healthy"
                    } else {
                        "UNHEALTHY"
                    },
                    if member.learner { " (learner)" } else { "" },
                    member
                        .error
                        .as_deref()
                        .map(|error| format!(": {error}"))
                        .unwrap_or_default(),
                );
            }
            for name in &etcd.missing {
                let _ = writeln!(out, "  {name}: in the inventory, NOT an etcd member");
            }
        }
    }
    if let Some(vip) = &report.vip {
        let holders: Vec<&str> = report
            .hosts
            .iter()
            .filter(|host| host.holds_vip == Some(true))
            .map(|host| host.name.as_str())
            .collect();
        let _ = writeln!(
            out,
            "VIP {vip}: {}",
            if holders.is_empty() {
                "held by no master".to_string()
            } else {
                format!("held by {}", holders.join(", "))
            }
        );
    }
    if let Some(rotation) = report
        .ca_rotation
        .as_ref()
        .filter(|rotation| rotation.step > 0)
    {
        let _ = writeln!(out, "{}", rotation.summary);
    }
    let problems = report.problems();
    if problems.is_empty() {
        let _ = writeln!(out, "healthy");
    } else {
        let _ = writeln!(out, "NOT HEALTHY:");
        for problem in problems {
            let _ = writeln!(out, "  {problem}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_script_reads_services_vip_and_readyz_with_the_real_shell() {
        let script = host_script(
            &["ocfk8s-none.service"],
            Some("192.0.2.250".parse().expect("ip")),
            None,
        );
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .expect("sh");
        let text = String::from_utf8_lossy(&output.stdout);
        let (services, vip, apiserver) = parse_host_output(&text);
        assert!(services.contains_key("ocfk8s-none.service"), "{text}");
        assert!(!services["ocfk8s-none.service"].is_empty());
        assert_eq!(vip, Some(false), "{text}");
        assert!(apiserver.is_none());
    }

    #[test]
    fn parses_a_not_ready_apiserver() {
        let (_, _, apiserver) = parse_host_output("readyz no HTTP 000 connection refused\n");
        let apiserver = apiserver.expect("readyz line");
        assert!(!apiserver.ready);
        assert_eq!(apiserver.detail, "HTTP 000 connection refused");
    }
}
