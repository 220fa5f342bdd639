//! `ocfk8s validate`: load the inventory (every error at once, exit 2) and
//! print a summary an operator can check at a glance. The warnings about
//! the number of masters come from the inventory itself and go to stderr,
//! so the summary on stdout stays the same whatever they say.

use std::fmt::Write;

use crate::cli::GlobalArgs;
use crate::inventory::Cluster;
use crate::printer::Printer;

pub(crate) fn run(global: &GlobalArgs, printer: &Printer) -> anyhow::Result<()> {
    let resolved = super::load_inventory(&global.inventory, printer)?;
    // The operator's ingress certificate and key must belong together:
    // nginx would refuse them on every master.
    crate::pki::check_operator_tls(&resolved.cluster)?;
    printer.output(&summary(&resolved.cluster));
    Ok(())
}

/// What an operator wants to see at a glance: who is who, the quorum
/// arithmetic, the networks and the front door.
pub(crate) fn summary(cluster: &Cluster) -> String {
    let mut out = String::new();
    let quorum = cluster.quorum();
    let names = |nodes: &[crate::inventory::Node]| {
        nodes
            .iter()
            .map(|node| format!("{} ({})", node.name, node.address))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        out,
        "{}: cluster {:?}, Kubernetes {}",
        cluster.inventory_path.display(),
        cluster.name,
        cluster.kubernetes_version
    );
    let _ = writeln!(
        out,
        "  {} master{}: quorum {}, tolerates {} failure{}: {}",
        quorum.members,
        if quorum.members == 1 { "" } else { "s" },
        quorum.quorum,
        quorum.tolerates,
        if quorum.tolerates == 1 { "" } else { "s" },
        names(&cluster.masters)
    );
    if cluster.workers.is_empty() {
        let _ = writeln!(out, "  0 workers");
    } else {
        let _ = writeln!(
            out,
            "  {} worker{}: {}",
            cluster.workers.len(),
            if cluster.workers.len() == 1 { "" } else { "s" },
            names(&cluster.workers)
        );
    }
    let _ = writeln!(
        out,
        "  control plane endpoint: {}",
        cluster.control_plane_endpoint.url()
    );
    let _ = writeln!(
        out,
        "  pods {} ({}), services {} (kubernetes {}, DNS {}), domain {}",
        cluster.pod_cidr,
        cluster.cni.as_str(),
        cluster.service_cidr,
        cluster.kubernetes_service_ip(),
        cluster.dns_service_ip(),
        cluster.cluster_domain
    );
    if let Some(ingress) = &cluster.ingress {
        let _ = writeln!(
            out,
            "  ingress: VIP {} on {} (VRRP id {}), nginx for {} -> NodePort {} on {}",
            ingress.vip,
            ingress.interface,
            ingress.virtual_router_id,
            ingress.server_names.join(", "),
            ingress.node_port,
            if ingress.nodes.is_empty() {
                "no workers".to_string()
            } else {
                ingress.nodes.join(", ")
            }
        );
    }
    let _ = writeln!(
        out,
        "  PKI store: {} ({} keys, certificates {} days, CAs {} days)",
        cluster.pki_dir.display(),
        cluster.key_algorithm.as_str(),
        cluster.cert_validity_days,
        cluster.ca_validity_days
    );
    out
}
