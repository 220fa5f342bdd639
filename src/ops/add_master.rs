//! `add-master NAME`: grow etcd and the control plane by one master listed
//! in the inventory, the way etcd's runtime-reconfiguration guide asks:
//!
//! 1. refuse unless every member is healthy, no member is missing from
//!    the inventory, and NAME's host holds no etcd data of its own;
//! 2. an etcd snapshot (unless `--no-snapshot`), NAME's certificates from
//!    the existing CAs, NAME's binaries;
//! 3. `member add --learner` (a learner does not vote, so quorum is
//!    unchanged while it catches up), NAME's files with the running
//!    cluster's members and state `existing`, etcd started on NAME, and
//!    `member promote` once it has caught up;
//! 4. NAME's control plane (apiserver `/readyz`), kubelet and kube-proxy,
//!    and front door;
//! 5. the other members' masters one at a time (apiserver
//!    `--etcd-servers`, keepalived and nginx peers), each gated on its
//!    apiserver and on etcd being healthy; then exactly one VIP holder.
//!
//! Every step reads its state from etcd and the hosts, so a run killed at
//! any point is finished by running the same command again: a learner
//! already added is not added again, one already started is not started
//! again, and a member already promoted goes straight on to step 4.

use std::time::Duration;

use anyhow::Context;

use crate::error::bad_input;
use crate::inventory::{Cluster, Node};
use crate::phase::Phase;
use crate::printer::Printer;
use crate::remote::etcdctl::{Etcdctl, Member};
use crate::remote::{systemd, Host};

use super::bootstrap::{self, Operation, Run};
use super::health::{self, EtcdView, CAUGHT_UP_GAP};
use super::settings::RunSettings;
use super::status::{member_is, url_host};

/// The phases whose checks (preflight) and services the command covers.
const PHASES: [Phase; 8] = [
    Phase::Preflight,
    Phase::Pki,
    Phase::Install,
    Phase::Files,
    Phase::Etcd,
    Phase::ControlPlane,
    Phase::Nodes,
    Phase::Lb,
];

/// How long a new learner may take to catch up with the leader.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(180);
const MEMBER_TIMEOUT: Duration = Duration::from_secs(90);

pub(crate) fn run(
    cluster: &Cluster,
    settings: &RunSettings,
    name: &str,
    snapshot: bool,
    skip_phases: &[String],
    printer: &Printer,
) -> anyhow::Result<()> {
    let wanted = crate::phase::phases_to_run(skip_phases)?;
    for phase in [Phase::Files, Phase::Etcd, Phase::ControlPlane] {
        if !wanted.contains(&phase) {
            return Err(bad_input(format!(
                "add-master: --skip-phases: the {} phase cannot be skipped: it is how a master joins",
                phase.name()
            )));
        }
    }
    let phases: Vec<Phase> = PHASES
        .into_iter()
        .filter(|phase| wanted.contains(phase))
        .collect();
    let Some(node) = cluster.masters.iter().find(|master| master.name == name) else {
        let hint = if cluster.workers.iter().any(|worker| worker.name == name) {
            format!("{name} is a worker: workers join with `ocfk8s add-worker {name}`")
        } else {
            format!(
                "add it under [[master]] in {} first",
                cluster.inventory_path.display()
            )
        };
        return Err(bad_input(format!(
            "add-master: {} is not a master in the inventory; {hint}",
            crate::inventory::shown(name)
        )));
    };
    if cluster.masters.len() == 1 {
        return Err(bad_input(format!(
            "add-master: {name} is the inventory's only master: a new cluster starts with `ocfk8s bootstrap`"
        )));
    }
    let masters: Vec<&Node> = cluster.masters.iter().collect();
    bootstrap::converge_with(
        cluster,
        settings,
        &masters,
        &phases,
        "add-master",
        printer,
        &AddMaster {
            node,
            snapshot,
            phases: phases.clone(),
        },
    )
}

struct AddMaster<'a> {
    node: &'a Node,
    snapshot: bool,
    /// The phases that run (`install`, `nodes` and `lb` may be skipped).
    phases: Vec<Phase>,
}

/// `https://ADDRESS:2380`, the peer URL etcd knows `node` by.
pub(crate) fn peer_url(node: &Node) -> String {
    format!("https://{}:2380", url_host(node.address))
}

/// etcd as seen from the first of `askers` that answers.
pub(crate) async fn first_view<'h>(
    cluster: &Cluster,
    askers: &[&'h Host],
) -> anyhow::Result<(&'h Host, EtcdView)> {
    let mut reasons = Vec::new();
    for asker in askers {
        match health::etcd_view(cluster, asker).await {
            Ok(view) => return Ok((asker, view)),
            Err(error) => reasons.push(format!("{}: {error:#}", asker.name)),
        }
    }
    anyhow::bail!(
        "etcd does not answer on any master holding etcd data; nothing was changed:\n  {}",
        reasons.join("\n  ")
    )
}

/// Refuse when etcd lists a member that is not an inventory master: the
/// masters' settings could not describe the cluster.
pub(crate) fn refuse_members_outside_inventory(
    cluster: &Cluster,
    view: &EtcdView,
    command: &str,
) -> anyhow::Result<()> {
    let outside: Vec<String> = view
        .members
        .iter()
        .filter(|member| {
            !cluster
                .masters
                .iter()
                .any(|master| member_is(member, master))
        })
        .map(|member| {
            if member.started() {
                member.name.clone()
            } else {
                format!(
                    "member {} ({})",
                    member.hex_id(),
                    member.peer_urls.join(", ")
                )
            }
        })
        .collect();
    if outside.is_empty() {
        return Ok(());
    }
    anyhow::bail!(
        "{command}: etcd has member(s) not in the inventory: {}; nothing was changed. \
         Finish their removal first with `ocfk8s remove-master NAME`",
        outside.join(", ")
    )
}

/// Warn when `members` is even: it adds no fault tolerance.
pub(crate) fn warn_if_even(members: usize, printer: &Printer) {
    if members.is_multiple_of(2) && members > 0 {
        printer.warn(&format!(
            "etcd has {members} members: an even number tolerates no more failures than {} \
             (quorum is {}); add or remove one master",
            members - 1,
            members / 2 + 1
        ));
    }
}

impl Operation for AddMaster<'_> {
    async fn apply(&self, run: &Run<'_>) -> anyhow::Result<()> {
        let cluster = run.cluster;
        let printer = run.printer;
        let name = self.node.name.as_str();
        let newcomer = run
            .fleet
            .hosts
            .iter()
            .find(|host| host.name == name)
            .with_context(|| format!("{name} is not connected"))?;
        let askers: Vec<&Host> = run
            .fleet
            .hosts
            .iter()
            .filter(|host| host.name != name && host.facts.etcd_data)
            .collect();
        if askers.is_empty() {
            anyhow::bail!(
                "add-master: no other master holds etcd data, so there is no running cluster to join; \
                 nothing was changed. A new cluster starts with `ocfk8s bootstrap`"
            );
        }
        let (asker, view) = first_view(cluster, &askers).await?;
        refuse_members_outside_inventory(cluster, &view, "add-master")?;
        let member = view
            .members
            .iter()
            .find(|member| member_is(member, self.node))
            .cloned();
        if newcomer.facts.etcd_data && member.is_none() {
            anyhow::bail!(
                "{name}: add-master: the host holds etcd data (/var/lib/etcd) but is not a member of the running cluster \
                 (left from another cluster or an earlier removal); nothing was changed. \
                 Move it aside on {name} and run `ocfk8s add-master {name}` again"
            );
        }
        let learner: Vec<u64> = member
            .iter()
            .filter(|member| member.is_learner)
            .map(|member| member.id)
            .collect();
        if let Some(problem) = view.problem_without(&learner) {
            anyhow::bail!(
                "add-master: etcd is not healthy: {problem}; nothing was changed. \
                 Bring every member back (`ocfk8s status`, `ocfk8s bootstrap`) or replace a dead one \
                 (`ocfk8s remove-master NAME --force`), then run add-master again"
            );
        }
        let store = bootstrap::pki_phase(cluster, run.lock, printer)?;
        let promoted = member.as_ref().is_some_and(|member| !member.is_learner);
        if promoted {
            let desired = run.render(&store, super::membership::running(cluster, &view.members))?;
            if run.pending(&desired).await?.is_empty() {
                return Err(bad_input(format!(
                    "add-master: {name} is already a member of etcd and every master holds its settings; nothing to do"
                )));
            }
            printer.info(&format!(
                "add-master: {name} is already a voting member; finishing an earlier add-master"
            ));
        }
        if self.snapshot {
            super::snapshot::before_change(cluster, run.fleet, "add-master", printer).await?;
        }
        let mine = run.only(&[name]);
        if self.phases.contains(&Phase::Install) {
            mine.install().await?;
        }

        let member = match member {
            Some(member) => {
                if member.is_learner {
                    printer.info(&format!(
                        "etcd: {name} was added as a learner by an earlier run (member {}); finishing",
                        member.hex_id()
                    ));
                }
                member
            }
            None => self.add_learner(run, asker, &view).await?,
        };

        // NAME's files, with the members etcd now lists (NAME among them).
        let view = health::etcd_view(cluster, asker)
            .await
            .with_context(|| format!("{}: etcd: reading the member list", asker.name))?;
        let members = view.members.len();
        let desired = run.render(&store, super::membership::running(cluster, &view.members))?;
        mine.files(&desired).await?;
        if member.is_learner {
            self.start_and_promote(run, asker, &member, &desired)
                .await?;
        }
        health::wait_etcd_healthy(
            cluster,
            asker,
            name,
            "etcd",
            Some(members),
            run.settings.gate(MEMBER_TIMEOUT),
        )
        .await?;

        // NAME's control plane, node services and front door.
        mine.control_plane(&desired).await?;
        if self.phases.contains(&Phase::Nodes) {
            mine.nodes(&desired).await?;
        }
        let front_door = self.phases.contains(&Phase::Lb);
        if front_door {
            mine.lb(&desired).await?;
        }

        // Then every other member's master, one at a time.
        for other in cluster.masters.iter().filter(|master| {
            master.name != name && view.members.iter().any(|member| member_is(member, master))
        }) {
            let one = run.only(&[other.name.as_str()]);
            one.files(&desired).await?;
            one.control_plane(&desired).await?;
            if front_door {
                one.lb(&desired).await?;
            }
            health::wait_etcd_healthy(
                cluster,
                asker,
                &other.name,
                "etcd",
                Some(members),
                run.settings.gate(MEMBER_TIMEOUT),
            )
            .await?;
        }
        if front_door {
            run.check_vip().await?;
        }
        printer.output(&format!(
            "add-master: {name} is a voting etcd member and runs the control plane; etcd has {members} healthy members"
        ));
        warn_if_even(members, printer);
        Ok(())
    }
}

impl AddMaster<'_> {
    /// `member add --learner`, then the member as etcd lists it.
    async fn add_learner(
        &self,
        run: &Run<'_>,
        asker: &Host,
        view: &EtcdView,
    ) -> anyhow::Result<Member> {
        let name = self.node.name.as_str();
        let etcdctl = Etcdctl {
            host: asker,
            bin_dir: &run.cluster.install.bin_dir,
        };
        let peer = peer_url(self.node);
        run.progress.start(name, "etcd");
        let endpoints = view.endpoints();
        // etcd refuses a new member until every member has been reachable
        // for a few seconds; a member already listed is never added again.
        let member = health::wait_value(
            name,
            "etcd",
            "adding the member",
            run.settings.gate(MEMBER_TIMEOUT),
            || async {
                let members = etcdctl
                    .member_list(&endpoints)
                    .await
                    .context("reading the member list")?;
                if let Some(member) = members
                    .into_iter()
                    .find(|member| member.peer_urls.contains(&peer))
                {
                    return Ok(Ok(member));
                }
                Ok(
                    match etcdctl.member_add_learner(&endpoints, name, &peer).await? {
                        Ok(()) => Err("added; reading the member list".to_string()),
                        Err(why) => Err(why),
                    },
                )
            },
        )
        .await?;
        run.progress.finish(
            name,
            "etcd",
            &format!("added as a learner (member {})", member.hex_id()),
            true,
        );
        Ok(member)
    }

    /// Start etcd on NAME (unless it runs), wait until the learner has
    /// caught up with the leader, and promote it.
    async fn start_and_promote(
        &self,
        run: &Run<'_>,
        asker: &Host,
        member: &Member,
        desired: &[crate::render::HostFiles],
    ) -> anyhow::Result<()> {
        let cluster = run.cluster;
        let name = self.node.name.as_str();
        let host = run
            .fleet
            .hosts
            .iter()
            .find(|host| host.name == name)
            .with_context(|| format!("{name} is not connected"))?;
        let mine = run.only(&[name]);
        let plans = mine.service_plans(desired, Phase::Etcd).await?;
        let changes = bootstrap::changes_for(&plans, name);
        if !changes.is_empty() {
            run.progress.start(name, "etcd");
            systemd::apply(host, &changes)
                .await
                .with_context(|| format!("{name}: etcd: {}", bootstrap::describe(&changes)))?;
            run.progress
                .finish(name, "etcd", &bootstrap::describe(&changes), true);
        }
        let id = member.id;
        health::wait(
            name,
            "etcd",
            "the learner catching up",
            run.settings.gate(CATCH_UP_TIMEOUT),
            || async {
                let view = health::etcd_view(cluster, asker).await?;
                let Some(member) = view.members.iter().find(|member| member.id == id) else {
                    anyhow::bail!("member {id:x} is no longer listed");
                };
                Ok(match view.lag(member) {
                    _ if !member.started() => Some("not started yet".to_string()),
                    Some(lag) if lag <= CAUGHT_UP_GAP => None,
                    Some(lag) => Some(format!("{lag} raft entries behind the leader")),
                    None => Some("its status does not answer yet".to_string()),
                })
            },
        )
        .await?;
        let etcdctl = Etcdctl {
            host: asker,
            bin_dir: &cluster.install.bin_dir,
        };
        health::wait(
            name,
            "etcd",
            "promotion",
            run.settings.gate(CATCH_UP_TIMEOUT),
            || async {
                let view = health::etcd_view(cluster, asker).await?;
                match view.members.iter().find(|member| member.id == id) {
                    Some(member) if !member.is_learner => return Ok(None),
                    Some(_) => {}
                    None => anyhow::bail!("member {id:x} is no longer listed"),
                }
                Ok(etcdctl.member_promote(&view.endpoints(), id).await?.err())
            },
        )
        .await?;
        run.progress.finish(
            name,
            "etcd",
            "caught up with the leader; promoted to a voting member",
            true,
        );
        Ok(())
    }
}
