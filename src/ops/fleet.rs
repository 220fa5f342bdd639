//! The connected hosts of one run, and the steps every operation shares:
//! connect, preflight, survey (state + plan), push (state + plan + write).
//!
//! A host's steps are chained without waiting for the other hosts (its state
//! read is followed at once by its write), so a slow host delays only
//! itself; each step still reports per host and fails naming every host
//! that failed.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;

use super::settings::RunSettings;
use crate::install::{binaries_for, AptRequest};
use crate::inventory::{Cluster, InstallMethod, Node};
use crate::phase::Phase;
use crate::plan::{self, BinaryInput, HostPlan, ServiceScope};
use crate::printer::HostProgress;
use crate::remote::{self, Connector, FactsRequest, FileWrite, Host, HostFacts, WriteReport};
use crate::render::HostFiles;

use super::install::InstallWork;
use super::preflight::{self, Problems};

/// Well inside the masters' `ControlPersist` idle timeout (60 s).
const KEEP_ALIVE_EVERY: std::time::Duration = std::time::Duration::from_secs(20);

pub(crate) struct Fleet {
    connector: Connector,
    /// Connected hosts, in inventory order.
    pub(crate) hosts: Vec<Host>,
    /// Names of the connected hosts that are masters.
    masters: BTreeSet<String>,
    pub(crate) concurrency: usize,
    /// Per host: the binaries its units run, as unit inputs (see
    /// [`Fleet::set_install`]).
    binaries: BTreeMap<String, Vec<BinaryInput>>,
    /// Per host, when the install phase runs apt: what it installs.
    apt: BTreeMap<String, AptRequest>,
}

/// A tokio runtime for one command. Its work is waiting on ssh and
/// parsing what hosts print: one thread per core (at most four) keeps up
/// with any concurrency, while the ssh processes it drives get the cores.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    let threads = std::thread::available_parallelism()
        .map(std::num::NonZeroUsize::get)
        .unwrap_or(2)
        .clamp(1, 4);
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("starting the async runtime")
}

impl Fleet {
    /// Connect to `nodes` (the preflight step): the error names every host
    /// that could not be reached and why.
    pub(crate) async fn connect(
        cluster: &Cluster,
        nodes: &[&Node],
        concurrency: usize,
        accept_new_host_keys: bool,
        progress: &HostProgress,
        reads: Option<ReadPlanSource>,
    ) -> anyhow::Result<Fleet> {
        let connector = Connector::new(cluster, accept_new_host_keys)?;
        connector.connect_jump_host().await?;
        let connector_ref = &connector;
        let reads = &reads;
        let hosts = remote::for_each_host(
            nodes,
            |node| node.name.as_str(),
            concurrency,
            "connect",
            false,
            progress,
            |node| async move {
                let mut host = connector_ref.connect(node).await?;
                // With the host's read plan known (the store checked and
                // the files rendered while connecting), its state comes
                // back with its facts, in the same round trip.
                let plan = match reads {
                    Some(source) => source.clone().await.ok().flatten(),
                    None => None,
                };
                let reads = plan
                    .as_ref()
                    .and_then(|plan| Some((plan.hosts.get(&node.name)?, plan.ports)));
                host.facts = match reads {
                    Some(((paths, units), ports)) => {
                        let paths: Vec<&str> = paths.iter().map(String::as_str).collect();
                        let units: Vec<&str> = units.iter().map(String::as_str).collect();
                        let request = (paths.as_slice(), units.as_slice(), ports);
                        let (facts, state) =
                            preflight_with_state(cluster, &host, node.is_master(), request).await?;
                        host.set_prefetched(remote::Prefetched::new(&paths, &units, state));
                        facts
                    }
                    None => preflight(cluster, &host, node.is_master()).await?,
                };
                let summary = facts_summary(&host.facts);
                Ok((host, summary))
            },
        )
        .await?;
        let mut fleet = Fleet {
            connector,
            hosts,
            masters: nodes
                .iter()
                .filter(|node| node.is_master())
                .map(|node| node.name.clone())
                .collect(),
            concurrency,
            binaries: BTreeMap::new(),
            apt: BTreeMap::new(),
        };
        fleet.set_install(
            cluster,
            &InstallWork {
                method: cluster.install.method,
                runs: false,
                uploads: Vec::new(),
            },
        );
        Ok(fleet)
    }

    /// Plan with what `work` will install: uploaded binaries become file
    /// changes and their hashes the inputs of the units that run them;
    /// apt's packages appear in the plans.
    pub(crate) fn set_install(&mut self, cluster: &Cluster, work: &InstallWork) {
        let bin_dir = &cluster.install.bin_dir;
        self.binaries = self
            .hosts
            .iter()
            .map(|host| {
                let master = self.masters.contains(&host.name);
                (host.name.clone(), work.binary_inputs(bin_dir, master))
            })
            .collect();
        self.apt = if work.runs && work.method == InstallMethod::Apt {
            self.hosts
                .iter()
                .map(|host| {
                    let master = self.masters.contains(&host.name);
                    (host.name.clone(), AptRequest::for_node(cluster, master))
                })
                .collect()
        } else {
            BTreeMap::new()
        };
    }

    pub(crate) fn is_master(&self, name: &str) -> bool {
        self.masters.contains(name)
    }

    /// The binaries `host`'s units run.
    pub(crate) fn binaries(&self, host: &Host) -> &[BinaryInput] {
        self.binaries
            .get(&host.name)
            .map(Vec::as_slice)
            .unwrap_or_default()
    }

    /// Preflight's verdict on every host, from the facts read at connect
    /// time; hosts without problems are left out.
    pub(crate) fn preflight_problems(
        &self,
        cluster: &Cluster,
        work: &InstallWork,
        phases: &[Phase],
    ) -> Vec<(String, Problems)> {
        let need_binaries = work.needs_binaries_present(phases);
        let kubelet_runs = phases
            .iter()
            .any(|phase| matches!(phase, Phase::ControlPlane | Phase::Nodes));
        let resolv_conf = kubelet_runs.then_some(cluster.resolv_conf.as_str());
        self.hosts
            .iter()
            .map(|host| {
                let problems = preflight::check_host(
                    &host.facts,
                    self.is_master(&host.name),
                    &cluster.install.bin_dir,
                    resolv_conf,
                    need_binaries,
                    preflight::ports_matter(phases),
                );
                (host.name.clone(), problems)
            })
            .filter(|(_, problems)| *problems != Problems::default())
            .collect()
    }

    /// Connect to every node of the inventory with the run's settings.
    pub(crate) async fn connect_all(
        cluster: &Cluster,
        settings: &RunSettings,
        progress: &HostProgress,
    ) -> anyhow::Result<Fleet> {
        let nodes: Vec<&Node> = cluster.nodes().collect();
        Fleet::connect(
            cluster,
            &nodes,
            settings.concurrency,
            settings.accept_new_host_keys,
            progress,
            None,
        )
        .await
    }

    /// Read every host's state and compare it with `desired` (which holds
    /// one entry per host, in the same order) and the services of `phases`;
    /// with `diffs`, fetch the old contents of changed non-secret files for
    /// unified diffs.
    pub(crate) async fn survey(
        &self,
        desired: &[HostFiles],
        phases: &[Phase],
        diffs: bool,
        progress: &HostProgress,
    ) -> anyhow::Result<Vec<HostPlan>> {
        let hosts: Vec<&Host> = self.hosts.iter().collect();
        self.survey_hosts(&hosts, desired, phases, diffs, progress)
            .await
    }

    /// [`Fleet::survey`] on `hosts` (some of the fleet's) only.
    pub(crate) async fn survey_hosts(
        &self,
        hosts: &[&Host],
        desired: &[HostFiles],
        phases: &[Phase],
        diffs: bool,
        progress: &HostProgress,
    ) -> anyhow::Result<Vec<HostPlan>> {
        let pairs = pairs(hosts, desired)?;
        let plans = remote::for_each_host(
            &pairs,
            |(host, _)| host.name.as_str(),
            self.concurrency,
            "read state",
            false,
            progress,
            |(host, desired)| async move {
                let mut plan =
                    survey_host(host, desired, self.binaries(host), self.scope(host, phases))
                        .await?;
                if let Some(request) = self.apt.get(&host.name) {
                    plan.packages = request.missing(&host.facts.packages);
                }
                let to_diff = plan.paths_to_diff();
                if diffs && !to_diff.is_empty() {
                    let old = remote::read_files(host, &to_diff).await?;
                    plan::add_diffs(&mut plan, desired, &old);
                }
                let summary = summary_of(&plan);
                Ok((plan, summary))
            },
        )
        .await?;
        Ok(plans)
    }

    /// Make every host hold `desired`: per host, read its state and write
    /// what differs in one batch.
    pub(crate) async fn push(
        &self,
        hosts: &[&Host],
        desired: &[HostFiles],
        phases: &[Phase],
        progress: &HostProgress,
    ) -> anyhow::Result<Vec<(HostPlan, WriteReport)>> {
        let pairs = pairs(hosts, desired)?;
        let results = remote::for_each_host(
            &pairs,
            |(host, _)| host.name.as_str(),
            self.concurrency,
            "files",
            true,
            progress,
            |(host, desired)| async move {
                let plan =
                    survey_host(host, desired, self.binaries(host), self.scope(host, phases))
                        .await?;
                let writes: Vec<FileWrite<'_>> = plan
                    .files
                    .iter()
                    .filter_map(|change| {
                        let file = desired.files.iter().find(|file| file.path == change.path)?;
                        Some(FileWrite {
                            path: &file.path,
                            contents: &file.contents,
                            mode: file.mode,
                            contents_differ: change.action != plan::FileAction::Mode,
                        })
                    })
                    .collect();
                let report = remote::write_files(host, &writes, &plan.stray_temporaries).await?;
                let summary = if report == WriteReport::default() {
                    format!("{} file(s) up to date", desired.files.len())
                } else {
                    let mut parts = vec![format!("{} written", report.written)];
                    if report.modes_fixed > 0 {
                        parts.push(format!("{} mode(s) fixed", report.modes_fixed));
                    }
                    if report.temporaries_removed > 0 {
                        parts.push(format!(
                            "{} stray temporar{} removed",
                            report.temporaries_removed,
                            if report.temporaries_removed == 1 {
                                "y"
                            } else {
                                "ies"
                            }
                        ));
                    }
                    parts.join(", ")
                };
                Ok(((plan, report), summary))
            },
        )
        .await?;
        Ok(results)
    }

    /// The services of `phases` on `host`.
    pub(crate) fn scope<'a>(&self, host: &Host, phases: &'a [Phase]) -> ServiceScope<'a> {
        ServiceScope {
            phases,
            master: self.masters.contains(&host.name),
        }
    }

    /// Close every master connection and remove the control folder.
    /// Keep every host's master connection alive, forever: run it beside
    /// an operation. Without it a host left idle through a long rolling
    /// step (masters restarted one at a time while the workers wait) loses
    /// its master to the `ControlPersist` idle timeout, and the run fails
    /// there with "the connection was terminated".
    pub(crate) async fn keep_alive(&self) -> std::convert::Infallible {
        loop {
            tokio::time::sleep(KEEP_ALIVE_EVERY).await;
            futures::future::join_all(self.hosts.iter().map(Host::keep_alive)).await;
        }
    }

    pub(crate) async fn close(self) {
        futures::future::join_all(self.hosts.into_iter().map(Host::close)).await;
        drop(self.connector);
    }
}

/// Each of `hosts` with its entry in `desired`.
fn pairs<'a>(
    hosts: &[&'a Host],
    desired: &'a [HostFiles],
) -> anyhow::Result<Vec<(&'a Host, &'a HostFiles)>> {
    hosts
        .iter()
        .map(|host| {
            desired
                .iter()
                .find(|files| files.node == host.name)
                .map(|files| (*host, files))
                .with_context(|| format!("no rendered files for host {}", host.name))
        })
        .collect()
}

/// What preflight asks a host of the given role: the binaries its units
/// run, the packages apt would install, and the ports it checks.
struct FactsAsk<'a> {
    cluster: &'a Cluster,
    binaries: Vec<&'static str>,
    packages: Vec<&'static str>,
    ports: Vec<u16>,
}

impl<'a> FactsAsk<'a> {
    /// `ports`: whether which ports are held matters (only to a run that
    /// starts services).
    fn new(cluster: &'a Cluster, master: bool, ports: bool) -> Self {
        FactsAsk {
            cluster,
            binaries: binaries_for(master).map(|binary| binary.name).collect(),
            packages: packages_for(cluster, master),
            ports: if ports {
                preflight::checked_ports(master)
            } else {
                Vec::new()
            },
        }
    }

    fn request(&self) -> FactsRequest<'_> {
        FactsRequest {
            bin_dir: &self.cluster.install.bin_dir,
            resolv_conf: &self.cluster.resolv_conf,
            binaries: &self.binaries,
            packages: &self.packages,
            ports: &self.ports,
        }
    }
}

/// Check a freshly connected host can run the engine's scripts as root,
/// and read its facts (one round trip).
async fn preflight(cluster: &Cluster, host: &Host, master: bool) -> anyhow::Result<HostFacts> {
    let ask = FactsAsk::new(cluster, master, true);
    remote::read_facts(host, &ask.request())
        .await
        .context("preflight")
}

/// [`preflight`], reading the state of `paths` and `units` in the same
/// round trip.
async fn preflight_with_state(
    cluster: &Cluster,
    host: &Host,
    master: bool,
    (paths, units, ports): (&[&str], &[&str], bool),
) -> anyhow::Result<(HostFacts, remote::HostState)> {
    let ask = FactsAsk::new(cluster, master, ports);
    remote::read_facts_and_state(host, &ask.request(), paths, units)
        .await
        .context("preflight")
}

fn packages_for(cluster: &Cluster, master: bool) -> Vec<&'static str> {
    if cluster.install.method == InstallMethod::Apt {
        AptRequest::for_node(cluster, master).names()
    } else {
        Vec::new()
    }
}

/// What each host's first state read asks for.
pub(crate) struct ReadPlan {
    /// Per host (by name): its paths and units.
    hosts: BTreeMap<String, (Vec<String>, Vec<String>)>,
    /// Whether the run starts services (and so checks ports).
    ports: bool,
}

/// A read plan being made (the store checked and the files rendered) while
/// the hosts are connected; `None` when it cannot be made in advance.
pub(crate) type ReadPlanSource =
    futures::future::Shared<tokio::sync::oneshot::Receiver<Option<std::sync::Arc<ReadPlan>>>>;

/// A read plan known before connecting.
pub(crate) fn read_plan_ready(plan: ReadPlan) -> ReadPlanSource {
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let _ = sender.send(Some(std::sync::Arc::new(plan)));
    futures::FutureExt::shared(receiver)
}

/// The read plan of a run of `phases` for `desired`, with the binaries
/// `work` installs.
pub(crate) fn read_plan(
    cluster: &Cluster,
    desired: &[HostFiles],
    work: &InstallWork,
    phases: &[Phase],
) -> ReadPlan {
    let hosts = desired
        .iter()
        .map(|files| {
            let master = cluster.masters.iter().any(|node| node.name == files.node);
            let binaries = work.binary_inputs(&cluster.install.bin_dir, master);
            let scope = ServiceScope { phases, master };
            let (paths, units) = state_request(files, &binaries, &scope);
            (
                files.node.clone(),
                (
                    paths.into_iter().map(str::to_string).collect(),
                    units.into_iter().map(str::to_string).collect(),
                ),
            )
        })
        .collect();
    ReadPlan {
        hosts,
        ports: preflight::ports_matter(phases),
    }
}

/// The paths and units a state read of `desired` and `binaries` asks for:
/// the units whose state `scope`'s phases act on, and only the binaries
/// this run places or whose hash is an input of one of those units (a
/// files-only run does not hash a 100 MB kubelet).
fn state_request<'a>(
    desired: &'a HostFiles,
    binaries: &'a [BinaryInput],
    scope: &ServiceScope<'_>,
) -> (Vec<&'a str>, Vec<&'a str>) {
    let units = plan::scoped_units(desired, scope);
    let mut paths: Vec<&str> = desired
        .files
        .iter()
        .map(|file| file.path.as_str())
        .collect();
    paths.extend(
        binaries
            .iter()
            .filter(|binary| {
                binary.sha256.is_some()
                    || binary
                        .restarts
                        .iter()
                        .any(|unit| units.contains(&unit.as_str()))
            })
            .map(|binary| binary.path.as_str()),
    );
    (paths, units)
}

/// One line for the connect step: OS, architecture, kernel.
fn facts_summary(facts: &HostFacts) -> String {
    let mut parts = Vec::new();
    if !facts.os.is_empty() {
        parts.push(facts.os.clone());
    }
    parts.push(facts.arch.clone());
    parts.push(facts.kernel.clone());
    parts.join(", ")
}

/// Read `host`'s state for `desired`'s files and `binaries`, and plan.
pub(crate) async fn survey_host(
    host: &Host,
    desired: &HostFiles,
    binaries: &[BinaryInput],
    scope: ServiceScope<'_>,
) -> anyhow::Result<HostPlan> {
    let (paths, units) = state_request(desired, binaries, &scope);
    let state = remote::read_state(host, &paths, &units).await?;
    Ok(plan::plan_host(desired, binaries, &state, scope))
}

fn summary_of(plan: &HostPlan) -> String {
    if plan.is_empty() {
        "up to date".to_string()
    } else {
        format!(
            "{} file change(s), {} stray temporar{}, {} service action(s)",
            plan.files.len(),
            plan.stray_temporaries.len(),
            if plan.stray_temporaries.len() == 1 {
                "y"
            } else {
                "ies"
            },
            plan.services.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::RenderedFile;

    #[test]
    fn a_binary_is_read_only_when_placed_or_an_input_of_a_unit_in_scope() {
        let desired = HostFiles {
            node: "m1".into(),
            files: vec![RenderedFile {
                path: "/etc/systemd/system/etcd.service".into(),
                contents: b"[Service]\n".to_vec(),
                mode: 0o644,
                secret: false,
                restarts: vec!["etcd.service".into()],
            }],
        };
        let etcd = |sha256: Option<&str>| BinaryInput {
            path: "/usr/bin/etcd".into(),
            sha256: sha256.map(str::to_string),
            restarts: vec!["etcd.service".into()],
        };
        let read = |binary: BinaryInput, phases: &[Phase]| {
            let binaries = [binary];
            let scope = ServiceScope {
                phases,
                master: true,
            };
            let (paths, units) = state_request(&desired, &binaries, &scope);
            (
                paths
                    .iter()
                    .map(|path| path.to_string())
                    .collect::<Vec<_>>(),
                units.len(),
            )
        };
        // A files-only run neither hashes etcd nor asks about its unit.
        assert_eq!(
            read(etcd(None), &[Phase::Files]),
            (vec!["/etc/systemd/system/etcd.service".to_string()], 0)
        );
        // The etcd phase needs the binary's hash as an input of its unit.
        let (paths, units) = read(etcd(None), &[Phase::Files, Phase::Etcd]);
        assert!(paths.contains(&"/usr/bin/etcd".to_string()));
        assert_eq!(units, 1);
        // A binary this run uploads is compared whatever the phases.
        let (paths, _) = read(etcd(Some("00")), &[Phase::Files]);
        assert!(paths.contains(&"/usr/bin/etcd".to_string()));
    }
}
