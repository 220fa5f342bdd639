//! `plan` (and `bootstrap --dry-run`): read every host and show what the
//! given phases would change, changing nothing.

use crate::error::ChangesPending;
use crate::inventory::Cluster;
use crate::phase::Phase;
use crate::printer::Printer;

use super::desired::desired_files;
use super::fleet::{self, Fleet};
use super::settings::RunSettings;

/// How a plan is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PlanFormat {
    /// Per host, with unified diffs of changed non-secret files.
    Text,
    Json,
}

/// Print the plan of `phases`; with `exit_code`, pending changes end in
/// exit status 3.
pub(crate) fn show(
    cluster: &Cluster,
    settings: &RunSettings,
    phases: &[Phase],
    format: PlanFormat,
    exit_code: bool,
    printer: &Printer,
) -> anyhow::Result<()> {
    let work = super::install::prepare(cluster, phases)?;
    let store = crate::pki::load(cluster, printer)?;
    // Bad templates or store material fail before any host is reached;
    // what this render lists is what each host's state read asks for, in
    // the same round trip as its facts.
    let guess = crate::render::EtcdBootstrap::new_cluster(cluster);
    let early = desired_files(
        cluster,
        &store,
        settings.templates.as_deref(),
        guess.clone(),
    )?;
    let (plans, membership) = fleet::runtime()?.block_on(async {
        let progress = printer.host_progress(cluster.nodes().map(|node| node.name.as_str()));
        let reads = fleet::read_plan_ready(fleet::read_plan(cluster, &early, &work, phases));
        let nodes: Vec<&crate::inventory::Node> = cluster.nodes().collect();
        let mut fleet = Fleet::connect(
            cluster,
            &nodes,
            settings.concurrency,
            settings.accept_new_host_keys,
            &progress,
            Some(reads),
        )
        .await?;
        let (etcd, members) =
            super::membership::desired_etcd_and_members(cluster, &fleet.hosts).await;
        let membership = members
            .map(|members| super::membership::mismatches(cluster, &members))
            .unwrap_or_default();
        let desired = if etcd == guess {
            early
        } else {
            desired_files(cluster, &store, settings.templates.as_deref(), etcd)?
        };
        fleet.set_install(cluster, &work);
        for (host, problems) in fleet.preflight_problems(cluster, &work, phases) {
            for problem in problems.errors.iter().chain(&problems.warnings) {
                printer.warn(&format!("{host}: preflight: {problem}"));
            }
        }
        let plans = fleet
            .survey(&desired, phases, format == PlanFormat::Text, &progress)
            .await;
        drop(progress);
        fleet.close().await;
        plans.map(|plans| (plans, membership))
    })?;
    // A membership that differs from the inventory is pending work too.
    let pending = plans.iter().any(|plan| !plan.is_empty()) || !membership.is_empty();
    match format {
        PlanFormat::Text => {
            let mut text = String::new();
            for line in &membership {
                text.push_str(line);
                text.push('\n');
            }
            text.push_str(&crate::plan::text(&plans));
            printer.output(&text)
        }
        PlanFormat::Json => printer.output(&serde_json::to_string_pretty(&serde_json::json!({
            "changes_pending": pending,
            "membership": membership,
            "hosts": plans,
        }))?),
    }
    if exit_code && pending {
        return Err(ChangesPending.into());
    }
    Ok(())
}
