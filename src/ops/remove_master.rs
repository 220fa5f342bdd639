//! `remove-master NAME [--address ADDR] [--force]`: shrink etcd and the
//! control plane by one master already taken out of the inventory (the
//! inventory is the desired state; this command applies the removal).
//!
//! 1. refuse when NAME is the last member, when the members left would
//!    lack quorum given which of them are healthy, or (without `--force`)
//!    when any other member is unhealthy or NAME's host cannot be reached;
//! 2. an etcd snapshot (unless `--no-snapshot`);
//! 3. leadership moved away if NAME leads, then `member remove`, asked of
//!    the members that stay, and etcd healthy with one member fewer;
//! 4. NAME's Node object deleted through the API (drained first unless
//!    `--force`);
//! 5. unless `--force`: on NAME the front door stopped first (the VIP
//!    moves), then its control plane, kubelet and etcd, the files ocfk8s
//!    placed removed and its etcd data folder moved aside, never deleted;
//! 6. the other masters one at a time (apiserver `--etcd-servers`,
//!    keepalived and nginx peers), each gated; exactly one VIP holder;
//! 7. NAME's material in the PKI store archived under `archive/`.
//!
//! NAME's address comes from `--address`, else etcd's member list, else
//! NAME's certificates in the store. Every step reads its state, so a
//! killed run is finished by running the same command again.

use std::net::IpAddr;
use std::time::Duration;

use anyhow::Context;

use crate::error::bad_input;
use crate::inventory::{Cluster, Node, Role};
use crate::phase::Phase;
use crate::printer::Printer;
use crate::remote::etcdctl::{Etcdctl, Member};
use crate::remote::Host;

use super::add_master::{first_view, refuse_members_outside_inventory, warn_if_even};
use super::bootstrap::{self, Operation, Run};
use super::departure;
use super::fleet::Fleet;
use super::health::{self, EtcdView};
use super::settings::RunSettings;
use super::status::member_is;

/// The phases whose checks (preflight) and services the command covers on
/// the masters that stay.
const PHASES: [Phase; 5] = [
    Phase::Preflight,
    Phase::Pki,
    Phase::Files,
    Phase::ControlPlane,
    Phase::Lb,
];

const MEMBER_TIMEOUT: Duration = Duration::from_secs(90);
const APISERVER_TIMEOUT: Duration = Duration::from_secs(20);

pub(crate) struct Request<'a> {
    pub(crate) name: &'a str,
    pub(crate) address: Option<&'a str>,
    pub(crate) force: bool,
    pub(crate) snapshot: bool,
}

pub(crate) fn run(
    cluster: &Cluster,
    settings: &RunSettings,
    request: &Request<'_>,
    printer: &Printer,
) -> anyhow::Result<()> {
    departure::check_departed(cluster, request.name, "remove-master")?;
    let address = request
        .address
        .map(|text| departure::parse_address(cluster, text))
        .transpose()?;
    if cluster.masters.is_empty() {
        return Err(bad_input(
            "remove-master: the inventory lists no master to keep; a cluster needs at least one",
        ));
    }
    let masters: Vec<&Node> = cluster.masters.iter().collect();
    bootstrap::converge_with(
        cluster,
        settings,
        &masters,
        &PHASES,
        "remove-master",
        printer,
        &RemoveMaster {
            name: request.name,
            address,
            force: request.force,
            snapshot: request.snapshot,
        },
    )
}

struct RemoveMaster<'a> {
    name: &'a str,
    address: Option<IpAddr>,
    force: bool,
    snapshot: bool,
}

/// The address in a peer URL (`https://10.0.0.1:2380`,
/// `https://[fd00::1]:2380`).
pub(crate) fn url_address(url: &str) -> Option<IpAddr> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let host = match rest.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next()?,
        None => rest.rsplit_once(':').map_or(rest, |(host, _)| host),
    };
    host.parse().ok()
}

impl RemoveMaster<'_> {
    /// NAME's member: by name once started, else by peer address.
    fn member<'v>(&self, view: &'v EtcdView) -> Option<&'v Member> {
        view.members.iter().find(|member| {
            member.name == self.name
                || self.address.is_some_and(|address| {
                    member
                        .peer_urls
                        .iter()
                        .any(|url| url_address(url) == Some(address))
                })
        })
    }

    /// NAME's address: `--address`, else etcd's member list, else the
    /// store; `--address` must agree with etcd.
    fn address(&self, cluster: &Cluster, member: Option<&Member>) -> anyhow::Result<IpAddr> {
        let from_etcd =
            member.and_then(|member| member.peer_urls.iter().find_map(|url| url_address(url)));
        match (self.address, from_etcd) {
            (Some(given), Some(known)) if given != known => Err(bad_input(format!(
                "remove-master: --address {given} disagrees with etcd, which knows {} at {known}",
                self.name
            ))),
            (Some(given), _) => Ok(given),
            (None, Some(known)) => Ok(known),
            (None, None) => departure::address_from_store(cluster, self.name)?.ok_or_else(|| {
                bad_input(format!(
                    "remove-master: {} is not an etcd member and the PKI store holds no certificate for it; \
                     give its address with --address ADDR",
                    self.name
                ))
            }),
        }
    }
}

impl Operation for RemoveMaster<'_> {
    async fn apply(&self, run: &Run<'_>) -> anyhow::Result<()> {
        let cluster = run.cluster;
        let printer = run.printer;
        let name = self.name;
        let askers: Vec<&Host> = run
            .fleet
            .hosts
            .iter()
            .filter(|host| host.facts.etcd_data)
            .collect();
        if askers.is_empty() {
            anyhow::bail!(
                "remove-master: no master in the inventory holds etcd data, so there is no running cluster; nothing was changed"
            );
        }
        let (asker, view) = first_view(cluster, &askers).await?;
        let member = self.member(&view).cloned();
        if member.is_none()
            && self.address.is_none()
            && departure::store_material(cluster, name)?.is_none()
        {
            return Err(bad_input(format!(
                "remove-master: {name} is not an etcd member and the PKI store holds nothing of it; \
                 nothing to do (give --address ADDR to clean a host that is left)"
            )));
        }
        let address = self.address(cluster, member.as_ref())?;
        let departing = departure::departing_node(cluster, name, address, Role::Master);
        // Other members outside the inventory: one removal at a time.
        let stays = EtcdView {
            members: view
                .members
                .iter()
                .filter(|other| Some(other.id) != member.as_ref().map(|member| member.id))
                .cloned()
                .collect(),
            statuses: view.statuses.clone(),
            unhealthy: view.unhealthy.clone(),
        };
        refuse_members_outside_inventory(cluster, &stays, "remove-master")?;

        if let Some(member) = &member {
            self.refuse_unsafe(&view, member)?;
        }
        let store = bootstrap::pki_phase(cluster, run.lock, printer)?;
        let desired = run.render(&store, super::membership::running(cluster, &stays.members))?;
        if member.is_none() {
            let has_material = departure::store_material(cluster, name)?.is_some();
            if !has_material && run.pending(&desired).await?.is_empty() {
                return Err(bad_input(format!(
                    "remove-master: {name} is not a member of etcd, the PKI store holds nothing of it \
                     and every master holds its settings; nothing to do"
                )));
            }
            printer.info(&format!(
                "remove-master: {name} is no longer an etcd member; finishing an earlier remove-master"
            ));
        }

        // NAME's own host, unless it is dead (--force).
        let departing_fleet = if self.force {
            None
        } else {
            Some(
                Fleet::connect(
                    cluster,
                    &[&departing],
                    1,
                    run.settings.accept_new_host_keys,
                    run.progress,
                    None,
                )
                .await
                .with_context(|| {
                    format!(
                        "{name} cannot be reached; nothing was changed. If its host is dead, \
                         remove it with `ocfk8s remove-master {name} --force`"
                    )
                })?,
            )
        };
        let result = self
            .remove(
                run,
                asker,
                member.as_ref(),
                &departing,
                departing_fleet.as_ref(),
                &desired,
            )
            .await;
        if let Some(fleet) = departing_fleet {
            fleet.close().await;
        }
        result?;

        let members = stays.members.len();
        let archived = departure::archive_store_material(cluster, run.lock, name)?;
        if let Some(archived) = archived {
            printer.info(&format!(
                "pki: {name}'s certificates archived in {}",
                archived.display()
            ));
        }
        printer.output(&format!(
            "remove-master: {name} removed; etcd has {members} healthy member(s)"
        ));
        warn_if_even(members, printer);
        Ok(())
    }
}

impl RemoveMaster<'_> {
    /// Refuse what would cost quorum: NAME as the last member, too few
    /// healthy members left, or (without --force) any other member down.
    fn refuse_unsafe(&self, view: &EtcdView, member: &Member) -> anyhow::Result<()> {
        let name = self.name;
        let remaining: Vec<&Member> = view
            .members
            .iter()
            .filter(|other| other.id != member.id)
            .collect();
        if remaining.is_empty() {
            anyhow::bail!(
                "remove-master: {name} is etcd's last member; removing it would end the cluster. Nothing was changed"
            );
        }
        let voters: Vec<&&Member> = remaining.iter().filter(|other| !other.is_learner).collect();
        let healthy = voters.iter().filter(|other| view.healthy(other)).count();
        let quorum = voters.len() / 2 + 1;
        if healthy < quorum {
            anyhow::bail!(
                "remove-master: without {name}, {healthy} of the {} remaining members would be healthy, \
                 short of their quorum of {quorum}; nothing was changed. Bring members back first",
                voters.len()
            );
        }
        if !self.force {
            let down: Vec<String> = remaining
                .iter()
                .filter(|other| !other.is_learner && !view.healthy(other))
                .map(|other| {
                    if other.started() {
                        other.name.clone()
                    } else {
                        format!("member {}", other.hex_id())
                    }
                })
                .collect();
            if !down.is_empty() {
                anyhow::bail!(
                    "remove-master: etcd is not healthy: {} not healthy; nothing was changed. \
                     Bring it back (`ocfk8s status`, `ocfk8s bootstrap`) first; a dead master is removed with --force",
                    down.join(", ")
                );
            }
        }
        Ok(())
    }

    async fn remove(
        &self,
        run: &Run<'_>,
        asker: &Host,
        member: Option<&Member>,
        departing: &Node,
        departing_fleet: Option<&Fleet>,
        desired: &[crate::render::HostFiles],
    ) -> anyhow::Result<()> {
        let cluster = run.cluster;
        let printer = run.printer;
        let name = self.name;
        if self.snapshot {
            super::snapshot::before_change(cluster, run.fleet, "remove-master", printer).await?;
        }
        if let Some(member) = member {
            if member.started() && !self.force {
                run.move_leadership_off(asker, departing).await?;
            }
            let view = health::etcd_view(cluster, asker).await?;
            let endpoints: Vec<String> = view
                .members
                .iter()
                .filter(|other| other.id != member.id)
                .filter_map(|other| other.client_urls.first().cloned())
                .collect();
            let etcdctl = Etcdctl {
                host: asker,
                bin_dir: &cluster.install.bin_dir,
            };
            run.progress.start(name, "etcd");
            // etcd refuses a removal until every member has been reachable
            // for a few seconds; a member already gone is not removed again.
            let id = member.id;
            health::wait(
                name,
                "etcd",
                "removing the member",
                run.settings.gate(MEMBER_TIMEOUT),
                || async {
                    let members = etcdctl
                        .member_list(&endpoints)
                        .await
                        .context("reading the member list")?;
                    if !members.iter().any(|other| other.id == id) {
                        return Ok(None);
                    }
                    Ok(Some(match etcdctl.member_remove(&endpoints, id).await? {
                        Ok(()) => "removed; reading the member list".to_string(),
                        Err(why) => why,
                    }))
                },
            )
            .await?;
            run.progress.finish(
                name,
                "etcd",
                &format!("member {} removed", member.hex_id()),
                true,
            );
            health::wait_etcd_healthy(
                cluster,
                asker,
                name,
                "etcd",
                Some(view.members.len() - 1),
                run.settings.gate(MEMBER_TIMEOUT),
            )
            .await?;
        }
        self.remove_node_object(run).await;
        if let Some(fleet) = departing_fleet {
            for host in &fleet.hosts {
                run.progress.start(name, "clean");
                let summary = departure::clean_host(cluster, host, departing)
                    .await
                    .with_context(|| format!("{name}: clean"))?;
                run.progress.finish(name, "clean", &summary, true);
            }
        }
        let stay: Vec<&Node> = cluster
            .masters
            .iter()
            .filter(|master| run.fleet.hosts.iter().any(|host| host.name == master.name))
            .collect();
        let view = health::etcd_view(cluster, asker).await?;
        for master in stay
            .iter()
            .filter(|master| view.members.iter().any(|member| member_is(member, master)))
        {
            let one = run.only(&[master.name.as_str()]);
            one.files(desired).await?;
            one.control_plane(desired).await?;
            one.lb(desired).await?;
            health::wait_etcd_healthy(
                cluster,
                asker,
                &master.name,
                "etcd",
                None,
                run.settings.gate(MEMBER_TIMEOUT),
            )
            .await?;
        }
        run.check_vip().await?;
        Ok(())
    }

    /// Delete NAME's Node object through the first ready apiserver
    /// (drained first unless --force); without one, say so and go on.
    async fn remove_node_object(&self, run: &Run<'_>) {
        let cluster = run.cluster;
        for host in &run.fleet.hosts {
            let Some(master) = cluster
                .masters
                .iter()
                .find(|master| master.name == host.name)
            else {
                continue;
            };
            if health::wait_apiserver_ready(host, master, "node", APISERVER_TIMEOUT)
                .await
                .is_err()
            {
                continue;
            }
            run.progress.start(self.name, "node");
            match departure::remove_node_object(cluster, host, master, self.name, !self.force).await
            {
                Ok(summary) => run.progress.finish(self.name, "node", &summary, true),
                Err(error) => {
                    run.progress.finish(self.name, "node", "not removed", false);
                    run.printer.warn(&format!(
                        "{}: node: the Node object {} was not removed: {error:#}",
                        host.name, self.name
                    ));
                }
            }
            return;
        }
        run.printer.warn(&format!(
            "node: no apiserver is ready; delete the Node object {} once one is",
            self.name
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_read_from_peer_urls() {
        assert_eq!(
            url_address("https://10.0.0.1:2380"),
            Some(IpAddr::from([10, 0, 0, 1]))
        );
        assert_eq!(
            url_address("https://[fd00::1]:2380"),
            Some("fd00::1".parse().expect("v6"))
        );
        assert_eq!(url_address("https://name.example:2380"), None);
    }
}
