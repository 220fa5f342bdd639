//! `ocfk8s status`: per host, reachability and services; etcd's members
//! against the inventory; the VIP holder; each apiserver's readiness. Exit
//! 0 when all of it is healthy and 1 otherwise, so scripts can gate on it.

use crate::cli::{GlobalArgs, StatusArgs, TextOrJson};
use crate::ops::fleet;
use crate::ops::status::{gather, text};
use crate::printer::Printer;
use crate::remote::Connector;

pub(crate) fn run(global: &GlobalArgs, args: &StatusArgs, printer: &Printer) -> anyhow::Result<()> {
    let resolved = super::load_inventory(&global.inventory, printer)?;
    let cluster = &resolved.cluster;
    let settings = super::settings(cluster, global);
    let report = fleet::runtime()?.block_on(async {
        let connector = Connector::new(cluster, settings.accept_new_host_keys)?;
        connector.connect_jump_host().await?;
        Ok::<_, anyhow::Error>(gather(cluster, &connector, settings.concurrency).await)
    })?;
    let mut report = report;
    // The store's CA rotation step, when the store can be read here.
    report.ca_rotation =
        crate::pki::ca_rotation_state(cluster, &crate::printer::Printer::new(0, true, true))
            .ok()
            .map(|rotation| rotation.report());
    let problems = report.problems();
    match args.output {
        TextOrJson::Text => printer.output(&text(&report)),
        TextOrJson::Json => printer.output(&serde_json::to_string_pretty(&serde_json::json!({
            "healthy": problems.is_empty(),
            "problems": problems,
            "report": report,
        }))?),
    }
    if problems.is_empty() {
        Ok(())
    } else {
        anyhow::bail!(
            "cluster {} is not healthy: {}",
            cluster.name,
            problems.join("; ")
        )
    }
}
