//! `bootstrap`: converge the whole cluster, phase by phase, in k0sctl's
//! manner: each phase is one step over the hosts it concerns, and each
//! change is gated on the real thing being healthy before the next.
//!
//! - `files` writes every host's files, except the masters' static pod
//!   manifests when the `control-plane` phase runs: writing a manifest
//!   restarts its pod, so that phase writes them one master at a time.
//! - `etcd` starts a new cluster's members together (none has data yet) and
//!   waits until all are healthy; in a running cluster it starts stopped
//!   members and restarts members whose inputs changed one at a time, each
//!   gated on every member being healthy and caught up, the leader last
//!   after moving leadership to a caught-up follower.
//! - `control-plane`, one master at a time: its manifests, containerd and
//!   kubelet, then its apiserver's `/readyz`.
//! - `nodes`: host preparation, containerd, kubelet and kube-proxy on every
//!   node; kubelet's healthz.
//! - `lb`: keepalived and nginx on the masters, reloaded (after `nginx -t`)
//!   rather than restarted when their configuration changes; then exactly
//!   one master must hold the VIP.
//!
//! Services act only when the plan says so (stopped, or not running with
//! their current inputs), so a second run with nothing changed restarts
//! nothing, and a restart owed by a killed run is made by the next one.

use std::time::Duration;

use anyhow::Context;

use crate::inventory::{Cluster, InstallMethod, Node};
use crate::phase::Phase;
use crate::plan::{HostPlan, ServiceAction, ServiceChange};
use crate::printer::{HostProgress, Printer};
use crate::remote::etcdctl::Etcdctl;
use crate::remote::{self, systemd, Host};
use crate::render::{EtcdBootstrap, HostFiles};

use super::addons;
use super::desired::{desired_files, render_files};
use super::fleet::{self, Fleet};
use super::health;
use super::install::{self, InstallWork};
use super::membership;
use super::settings::RunSettings;

/// Where static pod manifests live; their writes restart pods.
const MANIFESTS: &str = "/etc/kubernetes/manifests/";

const ETCD_NEW_CLUSTER_TIMEOUT: Duration = Duration::from_secs(120);
const ETCD_MEMBER_TIMEOUT: Duration = Duration::from_secs(90);
const APISERVER_TIMEOUT: Duration = Duration::from_secs(180);
const KUBELET_TIMEOUT: Duration = Duration::from_secs(120);
const UNIT_TIMEOUT: Duration = Duration::from_secs(60);
const VIP_TIMEOUT: Duration = Duration::from_secs(30);
const ADDONS_READY_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) fn run(
    cluster: &Cluster,
    settings: &RunSettings,
    phases: &[Phase],
    dry_run: bool,
    printer: &Printer,
) -> anyhow::Result<()> {
    if dry_run {
        return super::survey::show(
            cluster,
            settings,
            phases,
            super::survey::PlanFormat::Text,
            false,
            printer,
        );
    }
    let nodes: Vec<&Node> = cluster.nodes().collect();
    converge(cluster, settings, &nodes, phases, "bootstrap", printer)
}

/// What a run does once its hosts are connected and preflight passed.
pub(crate) trait Operation {
    async fn apply(&self, run: &Run<'_>) -> anyhow::Result<()>;

    /// Whether the operation begins with the pki phase and renders every
    /// host's files from the store as it is: the store is then checked, and
    /// the files rendered, while the hosts are being connected, so that
    /// each host's state comes back with its facts.
    fn renders_from_store(&self) -> bool {
        false
    }
}

/// `bootstrap`'s operation: `phases` in order.
pub(crate) struct Converge;

impl Operation for Converge {
    async fn apply(&self, run: &Run<'_>) -> anyhow::Result<()> {
        run.refuse_masters_outside_etcd().await?;
        run.phases().await
    }

    fn renders_from_store(&self) -> bool {
        true
    }
}

/// Run `phases` on `nodes` only (every host for `bootstrap`, one worker for
/// `add-worker`), under the run lock taken as `command`.
pub(crate) fn converge(
    cluster: &Cluster,
    settings: &RunSettings,
    nodes: &[&Node],
    phases: &[Phase],
    command: &str,
    printer: &Printer,
) -> anyhow::Result<()> {
    converge_with(
        cluster, settings, nodes, phases, command, printer, &Converge,
    )
}

/// Take the run lock of `cluster` exclusively as `command`, or fail at
/// once naming the run that holds it.
pub(crate) fn take_run_lock(
    cluster: &Cluster,
    command: &str,
    printer: &Printer,
) -> anyhow::Result<crate::lock::RunLock> {
    let _timer = crate::timings::step("run lock");
    let lock = crate::lock::acquire(&cluster.pki_dir, command)?;
    printer.detail(&format!("holding the run lock {}", lock.path().display()));
    Ok(lock)
}

/// The run lock a converging run works under.
enum RunLockOf<'a> {
    /// Taken as the run starts, as this command.
    Command(&'a str),
    /// Taken earlier by a command that must hold it before it reads the
    /// store or reaches any host (see [`take_run_lock`]).
    Held(crate::lock::RunLock),
}

/// Connect to `nodes` under the run lock taken as `command`, check them
/// for `phases` (preflight) and apply `operation`.
pub(crate) fn converge_with(
    cluster: &Cluster,
    settings: &RunSettings,
    nodes: &[&Node],
    phases: &[Phase],
    command: &str,
    printer: &Printer,
    operation: &impl Operation,
) -> anyhow::Result<()> {
    converge_under(
        cluster,
        settings,
        nodes,
        phases,
        RunLockOf::Command(command),
        printer,
        operation,
    )
}

/// [`converge_with`] under the run lock `lock` the caller already holds.
pub(crate) fn converge_held(
    cluster: &Cluster,
    settings: &RunSettings,
    nodes: &[&Node],
    phases: &[Phase],
    lock: crate::lock::RunLock,
    printer: &Printer,
    operation: &impl Operation,
) -> anyhow::Result<()> {
    converge_under(
        cluster,
        settings,
        nodes,
        phases,
        RunLockOf::Held(lock),
        printer,
        operation,
    )
}

fn converge_under(
    cluster: &Cluster,
    settings: &RunSettings,
    nodes: &[&Node],
    phases: &[Phase],
    lock: RunLockOf<'_>,
    printer: &Printer,
    operation: &impl Operation,
) -> anyhow::Result<()> {
    // Local checks first: a missing file to upload changes nothing anywhere.
    let work = install::prepare(cluster, phases)?;
    let lock = match lock {
        RunLockOf::Command(command) => take_run_lock(cluster, command, printer)?,
        RunLockOf::Held(lock) => lock,
    };
    let runtime = fleet::runtime()?;
    std::thread::scope(|scope| {
        // The store is checked (and, when complete, every host's files
        // rendered to learn what each host's state read asks for) on a
        // thread of its own while the hosts are connected.
        let (reads, prepared) = if operation.renders_from_store() {
            let (plan_sender, plan_receiver) = tokio::sync::oneshot::channel();
            let (prepared_sender, prepared_receiver) = tokio::sync::oneshot::channel();
            let (lock, work) = (&lock, &work);
            scope.spawn(move || {
                let prepared = crate::pki::Prepared::read(cluster, lock, printer);
                let guess = EtcdBootstrap::new_cluster(cluster);
                let rendered = prepared
                    .as_ref()
                    .ok()
                    .and_then(crate::pki::Prepared::ready)
                    .and_then(|store| {
                        let _timer = crate::timings::step("render, early");
                        render_files(
                            cluster,
                            &store,
                            settings.templates.as_deref(),
                            guess.clone(),
                        )
                        .ok()
                    });
                let plan = rendered.as_ref().map(|desired| {
                    std::sync::Arc::new(fleet::read_plan(cluster, desired, work, phases))
                });
                let _ = plan_sender.send(plan);
                let _ = prepared_sender.send(prepared.map(|prepared| Early {
                    prepared,
                    rendered: rendered.map(|files| (guess, files)),
                }));
            });
            (
                Some(futures::FutureExt::shared(plan_receiver)),
                Some(prepared_receiver),
            )
        } else {
            (None, None)
        };
        let prepared = std::sync::Mutex::new(prepared);
        runtime.block_on(async {
            printer.info(&format!(
                "preflight: connecting to {}",
                if nodes.len() == cluster.nodes().count() {
                    "every host".to_string()
                } else {
                    nodes
                        .iter()
                        .map(|node| node.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                }
            ));
            let progress = printer.host_progress(nodes.iter().map(|node| node.name.as_str()));
            let mut fleet = Fleet::connect(
                cluster,
                nodes,
                settings.concurrency,
                settings.accept_new_host_keys,
                &progress,
                reads,
            )
            .await?;
            fleet.set_install(cluster, &work);
            let run = Run {
                cluster,
                settings,
                lock: &lock,
                phases,
                fleet: &fleet,
                work: &work,
                printer,
                progress: &progress,
                only: None,
                prepared: &prepared,
            };
            let result = match run.preflight() {
                Ok(()) => {
                    let applied = std::pin::pin!(operation.apply(&run));
                    let kept = std::pin::pin!(fleet.keep_alive());
                    match futures::future::select(applied, kept).await {
                        futures::future::Either::Left((result, _)) => result,
                        futures::future::Either::Right((never, _)) => match never {},
                    }
                }
                Err(error) => Err(error),
            };
            drop(progress);
            fleet.close().await;
            result
        })
    })
}

/// What a run learns from the store while it connects: the store check,
/// and every host's files as rendered with the etcd settings of a new
/// cluster (used as they are when the cluster turns out to be one).
struct Early {
    prepared: crate::pki::Prepared,
    rendered: Option<(EtcdBootstrap, Vec<HostFiles>)>,
}

/// The store check made while connecting, for the pki phase to finish.
type PreparedStore =
    std::sync::Mutex<Option<tokio::sync::oneshot::Receiver<anyhow::Result<Early>>>>;

/// One connected run: the steps of every phase, on the fleet's hosts (or,
/// through [`Run::only`], some of them).
#[derive(Clone)]
pub(crate) struct Run<'a> {
    pub(crate) cluster: &'a Cluster,
    pub(crate) settings: &'a RunSettings,
    pub(crate) lock: &'a crate::lock::RunLock,
    phases: &'a [Phase],
    pub(crate) fleet: &'a Fleet,
    work: &'a InstallWork,
    pub(crate) printer: &'a Printer,
    pub(crate) progress: &'a HostProgress,
    /// When set, the phases act on these hosts only.
    only: Option<Vec<String>>,
    /// The store check begun while connecting, if any.
    prepared: &'a PreparedStore,
}

impl Run<'_> {
    /// This run, acting on the hosts named `names` only.
    pub(crate) fn only(&self, names: &[&str]) -> Self {
        Run {
            only: Some(names.iter().map(|name| name.to_string()).collect()),
            ..self.clone()
        }
    }

    /// The hosts the phases act on.
    pub(crate) fn hosts(&self) -> Vec<&Host> {
        self.fleet
            .hosts
            .iter()
            .filter(|host| {
                self.only
                    .as_ref()
                    .is_none_or(|names| names.contains(&host.name))
            })
            .collect()
    }

    /// Every host's files from the checked `store`, with `etcd` settings.
    pub(crate) fn render(
        &self,
        store: &crate::pki::Store,
        etcd: EtcdBootstrap,
    ) -> anyhow::Result<Vec<HostFiles>> {
        desired_files(
            self.cluster,
            store,
            self.settings.templates.as_deref(),
            etcd,
        )
    }

    /// The plans of the run's hosts that are not empty: what the run's
    /// phases still owe against `desired`.
    pub(crate) async fn pending(&self, desired: &[HostFiles]) -> anyhow::Result<Vec<HostPlan>> {
        let plans = self
            .fleet
            .survey_hosts(&self.hosts(), desired, self.phases, false, self.progress)
            .await?;
        Ok(plans.into_iter().filter(|plan| !plan.is_empty()).collect())
    }

    /// Refuse hosts preflight finds unfit, before anything is written;
    /// show its warnings.
    fn preflight(&self) -> anyhow::Result<()> {
        let problems = self
            .fleet
            .preflight_problems(self.cluster, self.work, self.phases);
        for (host, found) in &problems {
            for warning in &found.warnings {
                self.printer.warn(&format!("{host}: preflight: {warning}"));
            }
        }
        let failed: Vec<&(String, super::preflight::Problems)> = problems
            .iter()
            .filter(|(_, found)| !found.errors.is_empty())
            .collect();
        if failed.is_empty() {
            return Ok(());
        }
        let mut message = format!(
            "step `preflight` failed on {} host{} ({})",
            failed.len(),
            if failed.len() == 1 { "" } else { "s" },
            failed
                .iter()
                .map(|(host, _)| host.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        for (host, found) in failed {
            for error in &found.errors {
                message.push_str(&format!("\n  {host}: preflight: {error}"));
            }
        }
        Err(anyhow::anyhow!(message))
    }

    async fn phases(&self) -> anyhow::Result<()> {
        // The pki phase cannot be skipped and comes first: it checks the
        // store once, and everything after renders from that checked store.
        let mut desired = None;
        let mut store = None;
        for phase in self.phases {
            match phase {
                Phase::Preflight => {}
                Phase::Pki => {
                    let early = self.prepared.lock().ok().and_then(|mut slot| slot.take());
                    let (prepared, rendered) = match early {
                        Some(receiver) => {
                            let early = receiver
                                .await
                                .context("the PKI store check ended without an answer")??;
                            (Some(early.prepared), early.rendered)
                        }
                        None => (None, None),
                    };
                    let checked =
                        pki_phase_prepared(self.cluster, self.lock, self.printer, prepared)?;
                    let etcd = membership::desired_etcd(self.cluster, &self.fleet.hosts).await;
                    desired = Some(match rendered {
                        // Rendered from this same store (the run lock
                        // keeps it) with these same settings.
                        Some((guess, files)) if guess == etcd => files,
                        _ => desired_files(
                            self.cluster,
                            &checked,
                            self.settings.templates.as_deref(),
                            etcd,
                        )?,
                    });
                    store = Some(checked);
                }
                Phase::Install => self.install().await?,
                Phase::Files => self.files(desired_ref(&desired)?).await?,
                Phase::Etcd => {
                    if let Some(formed) = self.etcd(desired_ref(&desired)?).await? {
                        // A new cluster formed: from now on the masters'
                        // etcd settings describe it as running.
                        let checked = store
                            .as_ref()
                            .context("the pki phase must run before the others")?;
                        let rendered = desired_files(
                            self.cluster,
                            checked,
                            self.settings.templates.as_deref(),
                            formed,
                        )?;
                        self.write_etcd_settings(&rendered).await?;
                        desired = Some(rendered);
                    }
                }
                Phase::ControlPlane => self.control_plane(desired_ref(&desired)?).await?,
                Phase::Nodes => self.nodes(desired_ref(&desired)?).await?,
                Phase::Lb => self.lb(desired_ref(&desired)?).await?,
                Phase::Addons => {
                    let store = store
                        .as_ref()
                        .context("the pki phase must run before the others")?;
                    self.addons(desired_ref(&desired)?, store).await?
                }
            }
        }
        Ok(())
    }

    pub(crate) async fn install(&self) -> anyhow::Result<()> {
        if self.work.method == InstallMethod::None {
            self.printer.info(&format!(
                "install: nothing to install ([install] method = \"none\"); every host holds its binaries in {}",
                self.cluster.install.bin_dir
            ));
            return Ok(());
        }
        let summaries = install::run(
            self.cluster,
            self.work,
            self.fleet,
            &self.hosts(),
            self.progress,
        )
        .await?;
        let changed = summaries
            .iter()
            .filter(|summary| summary.contains("uploaded") || summary.contains("installed:"))
            .count();
        if changed == 0 {
            self.printer
                .output("install: nothing to do: every host holds its binaries.");
        } else {
            self.printer.output(&format!(
                "install: binaries or packages installed on {changed} of {} host(s).",
                summaries.len()
            ));
        }
        Ok(())
    }

    fn master(&self, host: &Host) -> Option<&Node> {
        self.cluster
            .masters
            .iter()
            .find(|master| master.name == host.name)
    }

    fn desired_of<'d>(
        &self,
        desired: &'d [HostFiles],
        host: &Host,
    ) -> anyhow::Result<&'d HostFiles> {
        desired
            .iter()
            .find(|files| files.node == host.name)
            .with_context(|| format!("no rendered files for host {}", host.name))
    }

    pub(crate) async fn files(&self, desired: &[HostFiles]) -> anyhow::Result<()> {
        let hold_manifests = self.phases.contains(&Phase::ControlPlane);
        let to_push: Vec<HostFiles> = desired
            .iter()
            .map(|host| {
                let master = self
                    .cluster
                    .masters
                    .iter()
                    .any(|master| master.name == host.node);
                if hold_manifests && master {
                    without_manifests(host)
                } else {
                    host.clone()
                }
            })
            .collect();
        let results = self
            .fleet
            .push(&self.hosts(), &to_push, self.phases, self.progress)
            .await?;
        let changed: Vec<_> = results
            .iter()
            .filter(|(_, report)| *report != Default::default())
            .collect();
        if changed.is_empty() {
            self.printer
                .output("files: nothing to do: every host already holds its files.");
        } else {
            let written: usize = changed.iter().map(|(_, report)| report.written).sum();
            self.printer.output(&format!(
                "files: {written} file(s) written on {} of {} host(s).",
                changed.len(),
                results.len()
            ));
        }
        Ok(())
    }

    /// The service changes `phase` owes on every host, read from the hosts.
    pub(crate) async fn service_plans(
        &self,
        desired: &[HostFiles],
        phase: Phase,
    ) -> anyhow::Result<Vec<HostPlan>> {
        self.fleet
            .survey_hosts(&self.hosts(), desired, &[phase], false, self.progress)
            .await
    }

    /// Start or roll etcd; when this run formed a new cluster, its members'
    /// settings as a running cluster.
    pub(crate) async fn etcd(
        &self,
        desired: &[HostFiles],
    ) -> anyhow::Result<Option<EtcdBootstrap>> {
        let plans = self.service_plans(desired, Phase::Etcd).await?;
        let masters: Vec<(&Host, &Node)> = self
            .hosts()
            .into_iter()
            .filter_map(|host| self.master(host).map(|node| (host, node)))
            .collect();
        let owed: Vec<(&Host, &Node, Vec<ServiceChange>)> = masters
            .iter()
            .map(|(host, node)| (*host, *node, changes_for(&plans, &host.name)))
            .filter(|(_, _, changes)| !changes.is_empty())
            .collect();
        if owed.is_empty() {
            self.printer
                .info("etcd: every member runs with its current inputs");
            return Ok(None);
        }
        // Preflight read which masters hold etcd data; nothing before this
        // phase creates any.
        let with_data: Vec<&Host> = masters
            .iter()
            .map(|(host, _)| *host)
            .filter(|host| host.facts.etcd_data)
            .collect();
        if with_data.is_empty() {
            // A new cluster: its members must start together to elect a
            // leader, and only a member with data may run alone.
            if owed.len() != masters.len() {
                anyhow::bail!("etcd: a new cluster needs every master to start, but only {} of {} are to start", owed.len(), masters.len());
            }
            self.printer.info(&format!(
                "etcd: starting a new cluster of {} member(s)",
                masters.len()
            ));
            let started = futures::future::join_all(
                owed.iter()
                    .map(|(host, _, changes)| systemd::apply(host, changes)),
            )
            .await;
            for (result, (host, _, _)) in started.into_iter().zip(&owed) {
                result.with_context(|| format!("{}: etcd: starting etcd", host.name))?;
            }
            let (asker, _) = masters[0];
            health::wait_etcd_healthy(
                self.cluster,
                asker,
                &asker.name,
                "etcd",
                Some(masters.len()),
                self.settings.gate(ETCD_NEW_CLUSTER_TIMEOUT),
            )
            .await?;
            self.printer
                .info(&format!("etcd: {} member(s) healthy", masters.len()));
            let view = health::etcd_view(self.cluster, asker)
                .await
                .with_context(|| format!("{}: etcd: reading the member list", asker.name))?;
            return Ok(Some(membership::running(self.cluster, &view.members)));
        }

        // A running cluster: a master with no data that is not a member
        // needs add-master, never a new cluster beside the old one.
        let asker = *with_data
            .first()
            .context("etcd: no master with etcd data")?;
        let view = health::etcd_view(self.cluster, asker)
            .await
            .with_context(|| format!("{}: etcd: reading the member list", asker.name))?;
        for (_, node) in &masters {
            if view.member_named(&node.name).is_none()
                && !view
                    .members
                    .iter()
                    .any(|member| super::status::member_is(member, node))
            {
                return Err(crate::error::bad_input(format!(
                    "etcd: {} is listed as a master but is not a member of the running etcd cluster; add it with `ocfk8s add-master {}`",
                    node.name, node.name
                )));
            }
        }
        // Stopped members first (starting one only adds to quorum), then
        // restarts, the leader last.
        let leader = view.leader();
        let mut order: Vec<&(&Host, &Node, Vec<ServiceChange>)> = owed.iter().collect();
        order.sort_by_key(|(_, node, changes)| {
            let starting = changes
                .iter()
                .all(|change| change.action == ServiceAction::Start);
            let leads = view
                .member_named(&node.name)
                .is_some_and(|member| Some(member.id) == leader);
            (!starting, leads)
        });
        for (host, node, changes) in order {
            self.etcd_member(host, node, changes, &masters).await?;
        }
        Ok(None)
    }

    /// Write the masters' etcd environment files from `desired` (they
    /// restart nothing: etcd reads them only on a first start).
    async fn write_etcd_settings(&self, desired: &[HostFiles]) -> anyhow::Result<()> {
        for host in self.hosts() {
            if self.master(host).is_none() {
                continue;
            }
            let files = self.desired_of(desired, host)?;
            let subset = HostFiles {
                node: files.node.clone(),
                files: files
                    .file(crate::render::ETCD_INITIAL_CLUSTER_ENV)
                    .into_iter()
                    .cloned()
                    .collect(),
            };
            write_subset(host, &subset, self.fleet.scope(host, self.phases))
                .await
                .with_context(|| {
                    format!(
                        "{}: etcd: recording the running cluster's members",
                        host.name
                    )
                })?;
        }
        Ok(())
    }

    /// Apply `changes` to one member of a running cluster, gated on the
    /// cluster being healthy before (for restarts) and after.
    async fn etcd_member(
        &self,
        host: &Host,
        node: &Node,
        changes: &[ServiceChange],
        masters: &[(&Host, &Node)],
    ) -> anyhow::Result<()> {
        let asker = masters
            .iter()
            .map(|(host, _)| *host)
            .find(|other| other.name != host.name)
            .unwrap_or(host);
        let restart = changes
            .iter()
            .any(|change| change.action != ServiceAction::Start);
        // Every member healthy and caught up, asked of another member.
        let gate = || {
            health::wait_etcd_healthy(
                self.cluster,
                asker,
                &node.name,
                "etcd",
                None,
                self.settings.gate(ETCD_MEMBER_TIMEOUT),
            )
        };
        if restart {
            gate().await?;
            self.move_leadership_off(asker, node).await?;
        }
        self.progress.start(&host.name, "etcd");
        systemd::apply(host, changes)
            .await
            .with_context(|| format!("{}: etcd: {}", host.name, describe(changes)))?;
        gate().await?;
        self.progress
            .finish(&host.name, "etcd", &describe(changes), true);
        Ok(())
    }

    /// If `node` leads, hand leadership to the follower closest to the
    /// leader's raft index, and wait until it has moved.
    pub(crate) async fn move_leadership_off(
        &self,
        asker: &Host,
        node: &Node,
    ) -> anyhow::Result<()> {
        let view = health::etcd_view(self.cluster, asker).await?;
        let Some(member) = view.member_named(&node.name) else {
            return Ok(());
        };
        if view.leader() != Some(member.id) {
            return Ok(());
        }
        let target = view
            .statuses
            .iter()
            .filter(|status| status.member_id != member.id && !status.is_learner)
            .max_by_key(|status| status.raft_index)
            .and_then(|status| view.members.iter().find(|m| m.id == status.member_id))
            .with_context(|| format!("{}: etcd: no follower to take over leadership", node.name))?;
        let Some(leader_endpoint) = member.client_urls.first() else {
            anyhow::bail!("{}: etcd: the leader advertises no client URL", node.name);
        };
        let etcdctl = Etcdctl {
            host: asker,
            bin_dir: &self.cluster.install.bin_dir,
        };
        etcdctl
            .move_leader(leader_endpoint, target)
            .await
            .with_context(|| {
                format!("{}: etcd: moving leadership to {}", node.name, target.name)
            })?;
        let target_id = target.id;
        health::wait(
            &node.name,
            "etcd",
            "leadership move",
            self.settings.gate(ETCD_MEMBER_TIMEOUT),
            || async {
                let view = health::etcd_view(self.cluster, asker).await?;
                Ok((view.leader() != Some(target_id))
                    .then(|| "leadership has not moved yet".to_string()))
            },
        )
        .await?;
        self.printer.info(&format!(
            "etcd: moved leadership from {} to {}",
            node.name, target.name
        ));
        Ok(())
    }

    pub(crate) async fn control_plane(&self, desired: &[HostFiles]) -> anyhow::Result<()> {
        let plans = self.service_plans(desired, Phase::ControlPlane).await?;
        for host in self.hosts() {
            let Some(node) = self.master(host) else {
                continue;
            };
            let manifests = only_manifests(self.desired_of(desired, host)?);
            let changes = changes_for(&plans, &host.name);
            self.progress.start(&host.name, "control-plane");
            let written = write_subset(host, &manifests, self.fleet.scope(host, self.phases))
                .await
                .with_context(|| {
                    format!(
                        "{}: control-plane: writing the static pod manifests",
                        host.name
                    )
                })?;
            systemd::apply(host, &changes)
                .await
                .with_context(|| format!("{}: control-plane: {}", host.name, describe(&changes)))?;
            health::wait_apiserver_ready(
                host,
                node,
                "control-plane",
                self.settings.gate(APISERVER_TIMEOUT),
            )
            .await?;
            let mut summary = Vec::new();
            if written > 0 {
                summary.push(format!("{written} manifest(s) written"));
            }
            if !changes.is_empty() {
                summary.push(describe(&changes));
            }
            summary.push("apiserver ready".into());
            self.progress
                .finish(&host.name, "control-plane", &summary.join(", "), true);
        }
        Ok(())
    }

    pub(crate) async fn nodes(&self, desired: &[HostFiles]) -> anyhow::Result<()> {
        let plans = self.service_plans(desired, Phase::Nodes).await?;
        let plans = &plans;
        let hosts = self.hosts();
        remote::for_each_host(
            &hosts,
            |host| host.name.as_str(),
            self.fleet.concurrency,
            "nodes",
            true,
            self.progress,
            |host| async move {
                let changes = changes_for(plans, &host.name);
                systemd::apply(host, &changes)
                    .await
                    .with_context(|| describe(&changes))?;
                health::wait_kubelet_healthy(host, "nodes", self.settings.gate(KUBELET_TIMEOUT))
                    .await?;
                health::wait_unit_active(host, "kube-proxy.service", "nodes", UNIT_TIMEOUT).await?;
                let summary = if changes.is_empty() {
                    "kubelet healthy".to_string()
                } else {
                    format!("{}; kubelet healthy", describe(&changes))
                };
                Ok(((), summary))
            },
        )
        .await?;
        Ok(())
    }

    pub(crate) async fn lb(&self, desired: &[HostFiles]) -> anyhow::Result<()> {
        if self.cluster.ingress.is_none() {
            self.printer.info("lb: no [ingress] in the inventory");
            return Ok(());
        }
        let plans = self.service_plans(desired, Phase::Lb).await?;
        let plans = &plans;
        let masters: Vec<&Host> = self
            .hosts()
            .into_iter()
            .filter(|host| self.master(host).is_some())
            .collect();
        remote::for_each_host(
            &masters,
            |host| host.name.as_str(),
            self.fleet.concurrency,
            "lb",
            true,
            self.progress,
            |host| async move {
                let changes = changes_for(plans, &host.name);
                systemd::apply(host, &changes)
                    .await
                    .with_context(|| describe(&changes))?;
                for unit in ["keepalived.service", "nginx.service"] {
                    health::wait_unit_active(host, unit, "lb", UNIT_TIMEOUT).await?;
                }
                let summary = if changes.is_empty() {
                    "keepalived and nginx running".to_string()
                } else {
                    describe(&changes)
                };
                Ok(((), summary))
            },
        )
        .await?;
        // A run on some hosts checks the VIP once all are done.
        if self.only.is_none() {
            self.check_vip().await?;
        }
        Ok(())
    }

    /// Exactly one of the fleet's masters must hold the VIP.
    pub(crate) async fn check_vip(&self) -> anyhow::Result<()> {
        let Some(ingress) = &self.cluster.ingress else {
            return Ok(());
        };
        let masters: Vec<&Host> = self
            .fleet
            .hosts
            .iter()
            .filter(|host| self.master(host).is_some())
            .collect();
        let vip = ingress.vip;
        let script = super::status::host_script(&[], Some(vip), None);
        let script = &script;
        let masters = &masters;
        let holder = health::wait_value("masters", "lb", "VIP", VIP_TIMEOUT, || async {
            let mut holders = Vec::new();
            for host in masters {
                let output = host.exec(script).await?;
                let text = String::from_utf8_lossy(&output.stdout);
                if super::status::parse_host_output(&text).1 == Some(true) {
                    holders.push(host.name.clone());
                }
            }
            Ok(match holders.len() {
                1 => Ok(holders.remove(0)),
                0 => Err(format!("no master holds {vip}")),
                _ => Err(format!("{vip} is held by {}", holders.join(", "))),
            })
        })
        .await?;
        self.printer
            .info(&format!("lb: {holder} holds the VIP {vip}"));
        Ok(())
    }
}

impl Run<'_> {
    /// Before anything changes: in a running etcd cluster (some master has
    /// etcd data), a master without data that is not a member must be
    /// added with `add-master`, never started as a cluster of its own.
    /// When etcd cannot be asked, the etcd phase checks again.
    async fn refuse_masters_outside_etcd(&self) -> anyhow::Result<()> {
        if !self.phases.contains(&Phase::Etcd) {
            return Ok(());
        }
        let masters: Vec<(&Host, &Node)> = self
            .fleet
            .hosts
            .iter()
            .filter_map(|host| self.master(host).map(|node| (host, node)))
            .collect();
        let Some((asker, _)) = masters.iter().find(|(host, _)| host.facts.etcd_data) else {
            return Ok(());
        };
        let newcomers: Vec<&Node> = masters
            .iter()
            .filter(|(host, _)| !host.facts.etcd_data)
            .map(|(_, node)| *node)
            .collect();
        if newcomers.is_empty() {
            return Ok(());
        }
        let Ok(view) = health::etcd_view(self.cluster, asker).await else {
            return Ok(());
        };
        let outside: Vec<&str> = newcomers
            .iter()
            .filter(|node| {
                !view
                    .members
                    .iter()
                    .any(|member| super::status::member_is(member, node))
            })
            .map(|node| node.name.as_str())
            .collect();
        if outside.is_empty() {
            return Ok(());
        }
        Err(crate::error::bad_input(format!(
            "{} {} listed as master{} but {} not a member of the running etcd cluster; nothing was changed. \
             Add {} with `ocfk8s add-master {}`",
            outside.join(", "),
            if outside.len() == 1 { "is" } else { "are" },
            if outside.len() == 1 { "" } else { "s" },
            if outside.len() == 1 { "it is" } else { "they are" },
            if outside.len() == 1 { "it" } else { "each" },
            if outside.len() == 1 { outside[0] } else { "NAME" },
        )))
    }

    async fn addons(&self, desired: &[HostFiles], store: &crate::pki::Store) -> anyhow::Result<()> {
        let super_admin = store
            .read("super-admin.conf")
            .context("addons: the store's super-admin.conf")?;
        let mut last_error = None;
        for host in &self.fleet.hosts {
            let Some(node) = self.master(host) else {
                continue;
            };
            if let Err(error) =
                health::wait_apiserver_ready(host, node, "addons", ADDONS_READY_TIMEOUT).await
            {
                last_error = Some(error);
                continue;
            }
            let sha256 = addons::addons_sha256(self.desired_of(desired, host)?);
            self.progress.start(&host.name, "addons");
            let summary = addons::apply(self.cluster, host, node, &super_admin, &sha256).await?;
            self.progress.finish(&host.name, "addons", &summary, true);
            return Ok(());
        }
        Err(last_error
            .unwrap_or_else(|| anyhow::anyhow!("no master is connected"))
            .context("addons: no master's apiserver is ready"))
    }
}

fn desired_ref(desired: &Option<Vec<HostFiles>>) -> anyhow::Result<&[HostFiles]> {
    desired
        .as_deref()
        .context("the pki phase must run before the others")
}

/// `host`'s files without its static pod manifests.
fn without_manifests(host: &HostFiles) -> HostFiles {
    HostFiles {
        node: host.node.clone(),
        files: host
            .files
            .iter()
            .filter(|file| !file.path.starts_with(MANIFESTS))
            .cloned()
            .collect(),
    }
}

/// Only `host`'s static pod manifests.
fn only_manifests(host: &HostFiles) -> HostFiles {
    HostFiles {
        node: host.node.clone(),
        files: host
            .files
            .iter()
            .filter(|file| file.path.starts_with(MANIFESTS))
            .cloned()
            .collect(),
    }
}

/// Make `host` hold `subset`'s files (a part of its files, written outside
/// the files phase); returns how many were written.
async fn write_subset(
    host: &Host,
    subset: &HostFiles,
    scope: crate::plan::ServiceScope<'_>,
) -> anyhow::Result<usize> {
    let plan = fleet::survey_host(host, subset, &[], scope).await?;
    if plan.files.is_empty() && plan.stray_temporaries.is_empty() {
        return Ok(0);
    }
    let writes: Vec<remote::FileWrite<'_>> = plan
        .files
        .iter()
        .filter_map(|change| {
            let file = subset.file(&change.path)?;
            Some(remote::FileWrite {
                path: &file.path,
                contents: &file.contents,
                mode: file.mode,
                contents_differ: change.action != crate::plan::FileAction::Mode,
            })
        })
        .collect();
    remote::write_files(host, &writes, &plan.stray_temporaries).await?;
    Ok(writes.len())
}

pub(crate) fn changes_for(plans: &[HostPlan], host: &str) -> Vec<ServiceChange> {
    plans
        .iter()
        .find(|plan| plan.node == host)
        .map(|plan| plan.services.clone())
        .unwrap_or_default()
}

pub(crate) fn describe(changes: &[ServiceChange]) -> String {
    changes
        .iter()
        .map(|change| format!("{} {}", change.action.verb(), change.unit))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Create what is missing in the PKI store; never replace what exists.
/// Returns the checked store.
pub(crate) fn pki_phase(
    cluster: &Cluster,
    lock: &crate::lock::RunLock,
    printer: &Printer,
) -> anyhow::Result<crate::pki::Store> {
    pki_phase_prepared(cluster, lock, printer, None)
}

/// [`pki_phase`], from the store check `prepared` when one was made
/// earlier in the run.
fn pki_phase_prepared(
    cluster: &Cluster,
    lock: &crate::lock::RunLock,
    printer: &Printer,
    prepared: Option<crate::pki::Prepared>,
) -> anyhow::Result<crate::pki::Store> {
    let _timer = crate::timings::step("pki store");
    let prepared = match prepared {
        Some(prepared) => prepared,
        None => crate::pki::Prepared::read(cluster, lock, printer)?,
    };
    let (generated, store) = prepared.ensure(cluster, lock)?;
    for warning in &generated.warnings {
        printer.warn(warning);
    }
    if generated.created.is_empty() {
        printer.info(&format!(
            "pki: the store {} is complete",
            cluster.pki_dir.display()
        ));
    } else {
        printer.info(&format!(
            "pki: created {} file(s) in {}",
            generated.created.len(),
            cluster.pki_dir.display()
        ));
    }
    Ok(store)
}
