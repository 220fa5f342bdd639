//! `remove-worker NAME [--address ADDR] [--force] [--no-snapshot]`: make the
//! cluster match an inventory NAME has left.
//!
//! Refused before anything changes (exit 2): NAME still listed, a name or
//! address that breaks the inventory's rules, a NAME neither the store nor
//! `--address` knows, and a NAME with nothing left anywhere ("nothing to
//! do"). Then, under the run lock: connect to the masters and (unless
//! `--force`) to NAME; an etcd snapshot; through the first master whose
//! apiserver is ready, cordon, drain and delete NAME's Node; on NAME, stop
//! kubelet and kube-proxy and remove every file ocfk8s placed (see
//! [`super::departure`]); the Node deleted once more in case the kubelet
//! registered it again before it stopped; the masters' front door and the
//! addons converged (NAME may have been an ingress node, which nginx and
//! ingress-nginx's node affinity name); and last, NAME's store
//! material archived. That last step is what tells a re-run that work is
//! left, so a run stopped anywhere is finished by running it again.

use anyhow::Context;

use crate::error::bad_input;
use crate::inventory::{Cluster, Node, Role};
use crate::phase::Phase;
use crate::printer::{HostProgress, Printer};
use crate::remote::Host;

use super::departure;
use super::fleet::{self, Fleet};
use super::health;
use super::settings::RunSettings;

const COMMAND: &str = "remove-worker";

/// How long each master's apiserver is given to answer `/readyz`.
const APISERVER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// What the command line asked for.
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
    let Request {
        name,
        address,
        force,
        snapshot,
    } = *request;
    departure::check_departed(cluster, name, COMMAND)?;
    let given = address
        .map(|text| departure::parse_address(cluster, text))
        .transpose()?;
    let material = departure::store_material(cluster, name)?;
    if material.is_none() && given.is_none() {
        return Err(not_part_of_the_cluster(cluster, name));
    }
    // With --force nothing is attempted on the host: no address needed.
    let address = match given {
        Some(address) => Some(address),
        None if force => None,
        None => Some(departure::address_from_store(cluster, name)?.ok_or_else(|| {
            bad_input(format!(
                "{COMMAND}: the PKI store holds material of {name}'s but no certificate naming its address; \
                 nothing was changed. Pass --address ADDR, or --force if its host is dead"
            ))
        })?),
    };
    let departing = address
        .filter(|_| !force)
        .map(|address| departure::departing_node(cluster, name, address, Role::Worker));

    let lock = crate::lock::acquire(&cluster.pki_dir, COMMAND)?;
    printer.detail(&format!("holding the run lock {}", lock.path().display()));
    // Checked under the lock, before any host is reached: the Node is
    // removed with the store's super-admin.conf.
    crate::pki::load_locked(cluster, &lock, printer)?;

    let removal = Removal {
        cluster,
        settings,
        name,
        departing: departing.as_ref(),
        snapshot,
        has_material: material.is_some(),
        printer,
    };
    fleet::runtime()?.block_on(removal.run())?;
    drop(lock);

    // NAME may have been an ingress node: the masters' nginx forgets it (a
    // reload; nothing else changes on them), and so does ingress-nginx's
    // node affinity (the addons, applied only when their manifests
    // changed).
    if cluster.ingress.is_some() {
        let masters: Vec<&Node> = cluster.masters.iter().collect();
        super::bootstrap::converge(
            cluster,
            settings,
            &masters,
            &[
                Phase::Preflight,
                Phase::Pki,
                Phase::Files,
                Phase::Lb,
                Phase::Addons,
            ],
            COMMAND,
            printer,
        )
        .context("remove-worker: the masters' front door (re-run the command to finish)")?;
    }

    let lock = crate::lock::acquire(&cluster.pki_dir, COMMAND)?;
    match departure::archive_store_material(cluster, &lock, name)? {
        Some(path) => printer.output(&format!(
            "pki: {name}'s material archived to {}",
            path.display()
        )),
        None => printer.info(&format!("pki: the store holds no material of {name}'s")),
    }
    printer.output(&format!("remove-worker: {name} removed from the cluster."));
    Ok(())
}

/// Exit 2: nothing of NAME's is known anywhere.
fn not_part_of_the_cluster(cluster: &Cluster, name: &str) -> anyhow::Error {
    let archived = departure::archived(cluster, name);
    let store = match archived.last() {
        Some(path) => format!(
            "the PKI store holds no material of {name}'s (archived in {})",
            path.display()
        ),
        None => format!(
            "the PKI store {} holds no material of {name}'s",
            cluster.pki_dir.display()
        ),
    };
    bad_input(format!(
        "{COMMAND}: {name} is not part of the cluster; nothing to do: {store}. \
         If its host still holds ocfk8s's files, pass its address with --address ADDR"
    ))
}

/// The work on the hosts, under the run lock.
struct Removal<'a> {
    cluster: &'a Cluster,
    settings: &'a RunSettings,
    name: &'a str,
    /// The host to clean up; `None` with `--force`.
    departing: Option<&'a Node>,
    snapshot: bool,
    /// The store holds material of NAME's (archived at the end).
    has_material: bool,
    printer: &'a Printer,
}

impl Removal<'_> {
    /// Connect to the masters and the departing host, work, disconnect.
    async fn run(&self) -> anyhow::Result<()> {
        let Removal {
            cluster,
            settings,
            name,
            printer,
            ..
        } = *self;
        let masters: Vec<&Node> = cluster.masters.iter().collect();
        let mut names: Vec<&str> = masters.iter().map(|node| node.name.as_str()).collect();
        names.extend(self.departing.map(|node| node.name.as_str()));
        printer.info(&format!("preflight: connecting to {}", names.join(", ")));
        let progress = printer.host_progress(names.iter().copied());
        let fleet = Fleet::connect(
            cluster,
            &masters,
            settings.concurrency,
            settings.accept_new_host_keys,
            &progress,
            None,
        )
        .await?;
        let departing_fleet = match self.departing {
            Some(node) => {
                match Fleet::connect(
                    cluster,
                    &[node],
                    1,
                    settings.accept_new_host_keys,
                    &progress,
                    None,
                )
                .await
                {
                    Ok(connected) => Some(connected),
                    Err(error) => {
                        drop(progress);
                        fleet.close().await;
                        return Err(anyhow::anyhow!(
                            "{name} ({}) is unreachable: {error:#}\nnothing was changed. If {name}'s host is dead, \
                             remove it without touching it: `ocfk8s {COMMAND} {name} --force`",
                            node.address
                        ));
                    }
                }
            }
            None => None,
        };
        let departing = departing_fleet
            .as_ref()
            .and_then(|connected| connected.hosts.first())
            .zip(self.departing);
        let result = self.work(&fleet, departing, &progress).await;
        drop(progress);
        fleet.close().await;
        if let Some(connected) = departing_fleet {
            connected.close().await;
        }
        result
    }

    async fn work(
        &self,
        fleet: &Fleet,
        departing: Option<(&Host, &Node)>,
        progress: &HostProgress,
    ) -> anyhow::Result<()> {
        let Removal {
            cluster,
            name,
            printer,
            ..
        } = *self;
        // The first master whose apiserver answers carries the API steps.
        let mut apiserver = None;
        for host in &fleet.hosts {
            let Some(master) = cluster
                .masters
                .iter()
                .find(|master| master.name == host.name)
            else {
                continue;
            };
            match health::wait_apiserver_ready(host, master, "node", APISERVER_TIMEOUT).await {
                Ok(()) => {
                    apiserver = Some((host, master));
                    break;
                }
                Err(error) => printer.detail(&format!("{error:#}")),
            }
        }
        let node_object = match apiserver {
            Some((host, master)) => {
                Some(departure::has_node_object(cluster, host, master, name).await?)
            }
            None => {
                printer.warn(&format!(
                    "no master's apiserver is ready: {name}'s Node object is neither drained nor deleted; \
                     delete it later with `kubectl delete node {name}`"
                ));
                None
            }
        };
        let leftovers = match departing {
            Some((host, node)) => departure::leftovers(cluster, host, node).await?,
            None => Vec::new(),
        };
        if !self.has_material && node_object == Some(false) && leftovers.is_empty() {
            return Err(bad_input(format!(
                "{COMMAND}: {name} is not part of the cluster; nothing to do: no material in the PKI store, \
                 no Node object{}",
                match departing {
                    Some((_, node)) => format!(", nothing of ocfk8s's on {}", node.address),
                    None => String::new(),
                }
            )));
        }
        printer.detail(&format!(
            "{name}: left on the host: {}",
            leftovers.join("; ")
        ));

        if self.snapshot {
            super::snapshot::before_change(cluster, fleet, COMMAND, printer).await?;
        }

        if let Some((host, master)) = apiserver {
            progress.start(&host.name, "node");
            let drain = departing.is_some();
            let summary = departure::remove_node_object(cluster, host, master, name, drain).await?;
            progress.finish(&host.name, "node", &summary, false);
            printer.output(&format!("node: {summary} (through {})", master.name));
        }

        let Some((host, node)) = departing else {
            printer.output(&format!(
                "{name}: --force: nothing attempted on the host; its services and files are left as they are"
            ));
            return Ok(());
        };
        progress.start(&host.name, "clean");
        let summary = departure::clean_host(cluster, host, node).await?;
        progress.finish(&host.name, "clean", &summary, false);
        printer.output(&format!("{name}: {summary}"));
        // The kubelet may have registered its Node again between the
        // deletion and its stop.
        if let Some((host, master)) = apiserver {
            if departure::has_node_object(cluster, host, master, name).await? {
                let summary =
                    departure::remove_node_object(cluster, host, master, name, false).await?;
                printer.output(&format!(
                    "node: {name} registered again before its kubelet stopped: {summary}"
                ));
            }
        }
        Ok(())
    }
}
