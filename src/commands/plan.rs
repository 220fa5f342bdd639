//! `ocfk8s plan`: per host, the files to add or change and the services to
//! (re)start, read from the hosts themselves.

use crate::cli::{GlobalArgs, PlanArgs, TextOrJson};
use crate::error::ChangesPending;
use crate::inventory::Cluster;
use crate::ops::desired::desired_files;
use crate::ops::fleet::{self, Fleet};
use crate::phase::Phase;
use crate::printer::Printer;

pub(crate) fn run(global: &GlobalArgs, args: &PlanArgs, printer: &Printer) -> anyhow::Result<()> {
    let phases = crate::phase::phases_to_run(&args.phases.skip_phases)?;
    let resolved = super::load_inventory(&global.inventory, printer)?;
    show(
        &resolved.cluster,
        global,
        &phases,
        args.output,
        args.exit_code,
        printer,
    )
}

/// Print the plan of `phases`; with `exit_code`, pending changes end in
/// exit status 3.
pub(crate) fn show(
    cluster: &Cluster,
    global: &GlobalArgs,
    phases: &[Phase],
    output: TextOrJson,
    exit_code: bool,
    printer: &Printer,
) -> anyhow::Result<()> {
    let work = crate::ops::install::prepare(cluster, phases)?;
    let store = crate::pki::load(cluster, printer)?;
    let desired = desired_files(cluster, &store, global.templates.as_deref())?;
    let plans = fleet::runtime()?.block_on(async {
        let progress = printer.host_progress(cluster.nodes().map(|node| node.name.as_str()));
        let mut fleet = Fleet::connect_all(cluster, global, &progress).await?;
        fleet.set_install(cluster, &work);
        for (host, problems) in fleet.preflight_problems(cluster, &work, phases) {
            for problem in problems.errors.iter().chain(&problems.warnings) {
                printer.warn(&format!("{host}: preflight: {problem}"));
            }
        }
        let plans = fleet
            .survey(&desired, phases, output == TextOrJson::Text, &progress)
            .await;
        drop(progress);
        fleet.close().await;
        plans
    })?;
    let pending = plans.iter().any(|plan| !plan.is_empty());
    match output {
        TextOrJson::Text => printer.output(&crate::plan::text(&plans)),
        TextOrJson::Json => printer.output(&serde_json::to_string_pretty(&serde_json::json!({
            "changes_pending": pending,
            "hosts": plans,
        }))?),
    }
    if exit_code && pending {
        return Err(ChangesPending.into());
    }
    Ok(())
}
