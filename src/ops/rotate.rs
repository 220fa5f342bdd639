//! `rotate-certs`: re-issue leaf certificates (new keys, new serials, the
//! same CAs) and roll them out so that no client notices:
//!
//! 1. refuse unless every etcd member is healthy;
//! 2. re-issue the chosen leaves (all by default; `--expiring-within`
//!    those expiring within that time; `--only` those of some hosts), with
//!    the kubeconfigs that embed them, in one journaled store write;
//! 3. masters one at a time: their files, then etcd (leadership moved away
//!    first if this member leads; restarted; every member healthy and
//!    caught up), then the control plane (apiserver `/readyz`), then
//!    kube-proxy;
//! 4. workers in batches of at most a quarter of them: files, kubelet,
//!    kube-proxy (kubelet's healthz);
//! 5. the front door: nginx reloaded for the ingress certificate; exactly
//!    one VIP holder.
//!
//! Old and new leaves come from the same CAs, so a run killed anywhere
//! leaves every host on its old or its new certificates, both valid; the
//! next run re-issues and finishes.

use std::collections::BTreeSet;

use crate::error::bad_input;
use crate::inventory::{Cluster, Node};
use crate::phase::Phase;
use crate::pki::certlist::{self, LeafSpec};
use crate::printer::Printer;
use crate::remote::Host;
use crate::render::HostFiles;

use super::add_master::first_view;
use super::bootstrap::{self, Operation, Run};
use super::settings::RunSettings;

/// The phases whose checks and services a rotation covers.
const PHASES: [Phase; 7] = [
    Phase::Preflight,
    Phase::Pki,
    Phase::Files,
    Phase::Etcd,
    Phase::ControlPlane,
    Phase::Nodes,
    Phase::Lb,
];

pub(crate) struct Request<'a> {
    pub(crate) expiring_within: Option<u64>,
    pub(crate) only: &'a [String],
    pub(crate) dry_run: bool,
}

/// `--only` names hosts of the inventory.
fn check_only(cluster: &Cluster, request: &Request<'_>) -> anyhow::Result<()> {
    for name in request.only {
        if cluster.node(name).is_none() {
            return Err(bad_input(format!(
                "rotate-certs: --only {}: not a host in the inventory {}",
                crate::inventory::shown(name),
                cluster.inventory_path.display()
            )));
        }
    }
    Ok(())
}

/// The leaves a request picks from `store`, by store base
/// (`nodes/m1/apiserver`).
fn chosen(
    cluster: &Cluster,
    request: &Request<'_>,
    store: &crate::pki::Store,
) -> anyhow::Result<Vec<(LeafSpec, Option<i64>)>> {
    let report = crate::pki::inspect::inspect(store)?;
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let mut chosen = Vec::new();
    for spec in certlist::leaves(cluster) {
        if !request.only.is_empty()
            && !spec
                .node
                .as_ref()
                .is_some_and(|node| request.only.contains(node))
        {
            continue;
        }
        let conf = format!("{}.conf", spec.base);
        let expires = report
            .certificates
            .iter()
            .filter(|entry| entry.name == spec.base || entry.name == conf)
            .map(|entry| entry.not_after)
            .min();
        if let Some(within) = request.expiring_within {
            let within = i64::try_from(within).unwrap_or(i64::MAX);
            if expires.is_none_or(|expires| expires - now > within) {
                continue;
            }
        }
        chosen.push((spec, expires));
    }
    Ok(chosen)
}

pub(crate) fn run(
    cluster: &Cluster,
    settings: &RunSettings,
    request: &Request<'_>,
    printer: &Printer,
) -> anyhow::Result<()> {
    check_only(cluster, request)?;
    // A dry run only reads the store; a rotation takes the run lock before
    // it reads the store, so it is refused at once (not kept waiting) while
    // another run changes the cluster.
    let lock = if request.dry_run {
        None
    } else {
        Some(bootstrap::take_run_lock(cluster, "rotate-certs", printer)?)
    };
    let store = match &lock {
        Some(lock) => crate::pki::load_locked(cluster, lock, printer)?,
        None => crate::pki::load(cluster, printer)?,
    };
    let chosen = chosen(cluster, request, &store)?;
    if chosen.is_empty() {
        printer.output(&match request.expiring_within {
            Some(within) => format!(
                "rotate-certs: no certificate expires within {}; nothing to do",
                crate::pki::inspect::short_duration(i64::try_from(within).unwrap_or(i64::MAX))
            ),
            None => "rotate-certs: no certificate to re-issue; nothing to do".to_string(),
        });
        return Ok(());
    }
    let Some(lock) = lock else {
        printer.output(&dry_run_text(cluster, &chosen));
        return Ok(());
    };
    let bases: BTreeSet<String> = chosen.into_iter().map(|(spec, _)| spec.base).collect();
    let nodes: Vec<&Node> = cluster.nodes().collect();
    bootstrap::converge_held(
        cluster,
        settings,
        &nodes,
        &PHASES,
        lock,
        printer,
        &Rotate { bases },
    )
}

/// What `--dry-run` prints: the certificates, then the order of restarts.
fn dry_run_text(cluster: &Cluster, chosen: &[(LeafSpec, Option<i64>)]) -> String {
    let mut out = format!(
        "rotate-certs would re-issue {} certificate(s):\n",
        chosen.len()
    );
    for (spec, expires) in chosen {
        let mut files = Vec::new();
        if spec.files {
            files.push(format!("{}.crt", spec.base));
        }
        if spec.kubeconfig.is_some() {
            files.push(format!("{}.conf", spec.base));
        }
        out.push_str(&format!(
            "  {:<44} {:<28} expires {}\n",
            spec.base,
            files.join(", "),
            expires
                .map(crate::pki::inspect::rfc3339)
                .unwrap_or_else(|| "-".into())
        ));
    }
    let touched: BTreeSet<&str> = chosen
        .iter()
        .filter_map(|(spec, _)| spec.node.as_deref())
        .collect();
    let cluster_wide = chosen.iter().any(|(spec, _)| spec.node.is_none());
    out.push_str("then, in this order (only where a host's files change):\n");
    let mut step = 1;
    for master in &cluster.masters {
        if cluster_wide || touched.contains(master.name.as_str()) {
            out.push_str(&format!(
                "  {step}. {}: files; etcd restarted (leadership moved away first if it leads), gated on every member healthy and caught up; control plane restarted, gated on /readyz; kube-proxy\n",
                master.name
            ));
            step += 1;
        }
    }
    let workers: Vec<&str> = cluster
        .workers
        .iter()
        .map(|worker| worker.name.as_str())
        .filter(|name| cluster_wide || touched.contains(name))
        .collect();
    for batch in workers.chunks(batch_size(cluster.workers.len())) {
        out.push_str(&format!(
            "  {step}. {}: files; kubelet and kube-proxy restarted, gated on kubelet's healthz\n",
            batch.join(", ")
        ));
        step += 1;
    }
    if cluster.ingress.is_some() {
        out.push_str(&format!(
            "  {step}. masters: nginx reloaded where its certificate changed; exactly one VIP holder\n"
        ));
    }
    out.trim_end().to_string()
}

/// Workers restart in batches of at most a quarter of them.
fn batch_size(workers: usize) -> usize {
    workers.div_ceil(4).max(1)
}

struct Rotate {
    bases: BTreeSet<String>,
}

impl Operation for Rotate {
    async fn apply(&self, run: &Run<'_>) -> anyhow::Result<()> {
        let cluster = run.cluster;
        let printer = run.printer;
        let view = healthy_etcd(run, "rotate-certs").await?;
        let store = bootstrap::pki_phase(cluster, run.lock, printer)?;
        refuse_foreign_hosts(run, &store).await?;
        let reissued =
            crate::pki::reissue_locked(cluster, run.lock, |spec| self.bases.contains(&spec.base))?;
        printer.info(&format!(
            "pki: re-issued {} certificate(s) from the same CAs ({} file(s) written)",
            self.bases.len(),
            reissued.created.len()
        ));
        let store = bootstrap::pki_phase(cluster, run.lock, printer)?;
        let desired = run.render(&store, super::membership::running(cluster, &view.members))?;

        roll_out(run, &desired).await?;
        printer.output(&format!(
            "rotate-certs: {} certificate(s) re-issued and rolled out; every etcd member healthy",
            self.bases.len()
        ));
        Ok(())
    }
}

pub(crate) struct CaRequest {
    pub(crate) all: bool,
    pub(crate) sa: bool,
    pub(crate) dry_run: bool,
}

/// What each step of a CA rotation does, by the step it completes.
fn ca_step_text(step: u8) -> &'static str {
    match step {
        1 => "step 1 of 3: new Kubernetes, etcd and front-proxy CAs created beside the old ones; every host trusts both",
        2 => "step 2 of 3: every leaf certificate re-issued from the new CAs; both still trusted",
        _ => "step 3 of 3: the old CAs dropped from every trust file and archived in the store",
    }
}

/// `rotate-certs --ca [--all]`: finish rolling out the store's current
/// step if hosts lag behind it, else take the next step and roll it out
/// (with `--all`, every remaining step).
pub(crate) fn run_ca(
    cluster: &Cluster,
    settings: &RunSettings,
    request: &CaRequest,
    printer: &Printer,
) -> anyhow::Result<()> {
    if request.dry_run {
        let rotation = crate::pki::ca_rotation_state(cluster, printer)?;
        let done = rotation.step();
        let mut out = format!("{}\n", rotation.report().summary);
        let last = if request.all { 3 } else { done + 1 };
        for step in done + 1..=last {
            out.push_str(&format!(
                "rotate-certs --ca would run {}, then roll it out: masters one at a time (etcd gated, \
                 leader last), workers in batches, the front door\n",
                ca_step_text(step)
            ));
        }
        printer.output(out.trim_end());
        return Ok(());
    }
    let nodes: Vec<&Node> = cluster.nodes().collect();
    bootstrap::converge_with(
        cluster,
        settings,
        &nodes,
        &PHASES,
        "rotate-certs --ca",
        printer,
        &RotateCa {
            all: request.all,
            sa: request.sa,
        },
    )
}

struct RotateCa {
    all: bool,
    sa: bool,
}

impl Operation for RotateCa {
    async fn apply(&self, run: &Run<'_>) -> anyhow::Result<()> {
        let cluster = run.cluster;
        let printer = run.printer;
        let view = healthy_etcd(run, "rotate-certs --ca").await?;
        let store = bootstrap::pki_phase(cluster, run.lock, printer)?;
        refuse_foreign_hosts(run, &store).await?;
        let members = view.members;
        let mut store = store;
        loop {
            let rotation = crate::pki::ca_rotation::ca_rotation_step(cluster, &store)?;
            let desired = run.render(&store, super::membership::running(cluster, &members))?;
            if !run.pending(&desired).await?.is_empty() {
                // A run killed during a rollout: finish it first.
                printer.info(&format!(
                    "rotate-certs --ca: the hosts lag behind the store ({}); rolling it out",
                    rotation.report().summary
                ));
                roll_out(run, &desired).await?;
                if !self.all || rotation.step() == 0 {
                    break;
                }
            }
            let next = crate::pki::ca_rotation::ca_rotate_next(cluster, run.lock, self.sa)?;
            let done = if next.step() == 0 { 3 } else { next.step() };
            printer.info(&format!("pki: CA rotation {}", ca_step_text(done)));
            store = bootstrap::pki_phase(cluster, run.lock, printer)?;
            let desired = run.render(&store, super::membership::running(cluster, &members))?;
            roll_out(run, &desired).await?;
            printer.output(&format!(
                "rotate-certs --ca: {} rolled out",
                ca_step_text(done)
            ));
            if !self.all || next.step() == 0 {
                break;
            }
        }
        let rotation = crate::pki::ca_rotation::ca_rotation_step(cluster, &store)?;
        printer.output(&rotation.report().summary);
        Ok(())
    }
}

/// Refuse (exit 2, before anything changes) a host whose cluster CA is not
/// one of the store's: a host of another cluster.
async fn refuse_foreign_hosts(run: &Run<'_>, store: &crate::pki::Store) -> anyhow::Result<()> {
    for host in &run.fleet.hosts {
        let output = host
            .exec("cat /etc/kubernetes/pki/ca.crt 2>/dev/null")
            .await
            .map_err(|error| error.context(format!("{}: reading its cluster CA", host.name)))?;
        if output.status == Some(0) && !output.stdout.is_empty() {
            crate::pki::ca_rotation::same_cluster_ca(run.cluster, store, &output.stdout).map_err(
                |error| error.context(format!("{}: /etc/kubernetes/pki/ca.crt", host.name)),
            )?;
        }
    }
    Ok(())
}

/// Refuse unless every etcd member is healthy; the view when it is.
async fn healthy_etcd(run: &Run<'_>, command: &str) -> anyhow::Result<super::health::EtcdView> {
    let askers: Vec<&Host> = run
        .fleet
        .hosts
        .iter()
        .filter(|host| host.facts.etcd_data && run.fleet.is_master(&host.name))
        .collect();
    if askers.is_empty() {
        anyhow::bail!(
            "{command}: no master holds etcd data: the cluster is not running; nothing was changed \
             (a new cluster gets its certificates with `ocfk8s bootstrap`)"
        );
    }
    let (_, view) = first_view(run.cluster, &askers).await?;
    if let Some(problem) = view.problem() {
        anyhow::bail!(
            "{command}: etcd is not healthy: {problem}; nothing was changed. \
             Bring every member back first (`ocfk8s status`, `ocfk8s bootstrap`)"
        );
    }
    Ok(view)
}

/// Make every host hold `desired`, restarting what changed in the order
/// that keeps the cluster serving: masters one at a time (etcd, then the
/// control plane, then kube-proxy), workers in batches, the front door.
pub(crate) async fn roll_out(run: &Run<'_>, desired: &[HostFiles]) -> anyhow::Result<()> {
    let cluster = run.cluster;
    for master in &cluster.masters {
        let one = run.only(&[master.name.as_str()]);
        one.files(desired).await?;
        one.etcd(desired).await?;
        one.control_plane(desired).await?;
        one.nodes(desired).await?;
    }
    let workers: Vec<&str> = cluster
        .workers
        .iter()
        .map(|worker| worker.name.as_str())
        .collect();
    for batch in workers.chunks(batch_size(workers.len())) {
        let some = run.only(batch);
        some.files(desired).await?;
        some.nodes(desired).await?;
    }
    let masters: Vec<&str> = cluster
        .masters
        .iter()
        .map(|master| master.name.as_str())
        .collect();
    run.only(&masters).lb(desired).await?;
    run.check_vip().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_restart_in_quarters() {
        assert_eq!(batch_size(0), 1);
        assert_eq!(batch_size(1), 1);
        assert_eq!(batch_size(4), 1);
        assert_eq!(batch_size(7), 2);
        assert_eq!(batch_size(200), 50);
    }
}
