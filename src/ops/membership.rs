//! etcd membership against the inventory: how the masters' etcd
//! environment files must read.
//!
//! etcd reads its initial-cluster settings only on its first start, so they
//! describe how a member joins: while no master has etcd data, a new
//! cluster of every master; once the cluster runs, the members etcd itself
//! reports, with state `existing` (the truth lives in the cluster, not in
//! the inventory, so a plan after a membership change does not flip the
//! files back).

use crate::inventory::{Cluster, Node};
use crate::remote::etcdctl::Member;
use crate::remote::Host;
use crate::render::EtcdBootstrap;

use super::status::member_is;

/// The etcd settings of a cluster whose members are `members` (as etcd
/// reports them): the inventory's masters among them, in inventory order.
pub(crate) fn running(cluster: &Cluster, members: &[Member]) -> EtcdBootstrap {
    EtcdBootstrap::join(
        cluster
            .masters
            .iter()
            .filter(|master| members.iter().any(|member| member_is(member, master)))
            .map(|master| master.name.clone())
            .collect(),
    )
}

/// The etcd settings the masters must hold now, from the connected
/// `hosts` (their facts say which have etcd data) and, once a cluster runs,
/// etcd's member list asked on a master that has data.
pub(crate) async fn desired_etcd(cluster: &Cluster, hosts: &[Host]) -> EtcdBootstrap {
    desired_etcd_and_members(cluster, hosts).await.0
}

/// [`desired_etcd`], with etcd's member list when a running cluster
/// answered.
pub(crate) async fn desired_etcd_and_members(
    cluster: &Cluster,
    hosts: &[Host],
) -> (EtcdBootstrap, Option<Vec<Member>>) {
    let _timer = crate::timings::step("etcd members");
    let masters: Vec<(&Host, &Node)> = hosts
        .iter()
        .filter_map(|host| {
            cluster
                .masters
                .iter()
                .find(|master| master.name == host.name)
                .map(|node| (host, node))
        })
        .collect();
    let with_data: Vec<&(&Host, &Node)> = masters
        .iter()
        .filter(|(host, _)| host.facts.etcd_data)
        .collect();
    if with_data.is_empty() {
        return (EtcdBootstrap::new_cluster(cluster), None);
    }
    for (host, _) in &with_data {
        if let Ok(view) = super::health::etcd_view(cluster, host).await {
            let desired = running(cluster, &view.members);
            if !desired.members.is_empty() {
                return (desired, Some(view.members));
            }
        }
    }
    // etcd does not answer: the masters holding data are its members.
    (
        EtcdBootstrap::join(
            with_data
                .iter()
                .map(|(_, node)| node.name.clone())
                .collect(),
        ),
        None,
    )
}

/// Where etcd's membership and the inventory's masters disagree, each
/// with the command that settles it.
pub(crate) fn mismatches(cluster: &Cluster, members: &[Member]) -> Vec<String> {
    let mut found = Vec::new();
    for member in members {
        if !cluster
            .masters
            .iter()
            .any(|master| member_is(member, master))
        {
            let name = if member.started() {
                member.name.clone()
            } else {
                format!(
                    "member {} ({})",
                    member.hex_id(),
                    member.peer_urls.join(", ")
                )
            };
            found.push(format!(
                "etcd: {name} is an etcd member but not a master in the inventory: remove it with `ocfk8s remove-master {}`",
                if member.started() { member.name.as_str() } else { "NAME" }
            ));
        } else if member.is_learner {
            found.push(format!(
                "etcd: {} is a learner, not yet a voting member: finish with `ocfk8s add-master {}`",
                member.name, member.name
            ));
        }
    }
    for master in &cluster.masters {
        if !members.iter().any(|member| member_is(member, master)) {
            found.push(format!(
                "etcd: {} is a master in the inventory but not an etcd member: add it with `ocfk8s add-master {}`",
                master.name, master.name
            ));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_cluster_is_described_by_its_members_in_inventory_order() {
        let cluster = crate::inventory::from_str(
            std::path::Path::new("inventory.toml"),
            &crate::inventory::starter_inventory(
                &["10.0.0.11".into(), "10.0.0.12".into(), "10.0.0.13".into()],
                &[],
            ),
        )
        .expect("inventory")
        .cluster;
        let member = |id: u64, name: &str, address: &str| Member {
            id,
            name: name.into(),
            peer_urls: vec![format!("https://{address}:2380")],
            client_urls: vec![],
            is_learner: false,
        };
        let names: Vec<String> = cluster.masters.iter().map(|m| m.name.clone()).collect();
        // Two members, listed out of order; the third master is not one.
        let members = [
            member(2, &names[1], "10.0.0.12"),
            member(1, &names[0], "10.0.0.11"),
        ];
        let desired = running(&cluster, &members);
        assert_eq!(desired.state, crate::render::InitialClusterState::Existing);
        assert_eq!(desired.members, [names[0].clone(), names[1].clone()]);
    }

    #[test]
    fn mismatches_name_the_command_that_settles_them() {
        let cluster = crate::inventory::from_str(
            std::path::Path::new("inventory.toml"),
            &crate::inventory::starter_inventory(
                &["10.0.0.11".into(), "10.0.0.12".into(), "10.0.0.13".into()],
                &[],
            ),
        )
        .expect("inventory")
        .cluster;
        let names: Vec<String> = cluster.masters.iter().map(|m| m.name.clone()).collect();
        let member = |id: u64, name: &str, address: &str, is_learner: bool| Member {
            id,
            name: name.into(),
            peer_urls: vec![format!("https://{address}:2380")],
            client_urls: vec![],
            is_learner,
        };
        let members = [
            member(1, &names[0], "10.0.0.11", false),
            member(2, &names[1], "10.0.0.12", true),
            member(3, "old", "10.0.0.99", false),
        ];
        let found = mismatches(&cluster, &members);
        assert_eq!(found.len(), 3, "{found:?}");
        assert!(found[0].contains(&format!("`ocfk8s add-master {}`", names[1])));
        assert!(found[1].contains("`ocfk8s remove-master old`"), "{found:?}");
        assert!(found[2].contains(&format!(
            "{} is a master in the inventory but not an etcd member",
            names[2]
        )));
        assert!(mismatches(&cluster, &members[..1]).len() == 2);
    }
}
