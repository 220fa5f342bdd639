//! `add-worker NAME`: join one worker listed in the inventory, touching
//! nothing else: its PKI material (minted if missing), then on that host
//! only the `install`, `files` and `nodes` phases (after an etcd snapshot,
//! read from a master, unless `--no-snapshot`). The masters' front door
//! learns of a new ingress node at the next `bootstrap`.

use anyhow::Context;

use crate::error::bad_input;
use crate::inventory::Cluster;
use crate::phase::Phase;
use crate::printer::Printer;

use super::settings::RunSettings;

/// The phases `add-worker` runs, on the new worker alone.
const PHASES: [Phase; 5] = [
    Phase::Preflight,
    Phase::Pki,
    Phase::Install,
    Phase::Files,
    Phase::Nodes,
];

pub(crate) fn run(
    cluster: &Cluster,
    settings: &RunSettings,
    name: &str,
    snapshot: bool,
    printer: &Printer,
) -> anyhow::Result<()> {
    let Some(node) = cluster.workers.iter().find(|worker| worker.name == name) else {
        let hint = if cluster.masters.iter().any(|master| master.name == name) {
            format!("{name} is a master: masters join with `ocfk8s add-master {name}`")
        } else {
            format!(
                "add it under [[worker]] in {} first",
                cluster.inventory_path.display()
            )
        };
        return Err(bad_input(format!(
            "add-worker: {} is not a worker in the inventory; {hint}",
            crate::inventory::shown(name)
        )));
    };
    // The run lock first: while another run changes the cluster, this one
    // is refused at once, before it reaches any host (the snapshot too).
    let lock = super::bootstrap::take_run_lock(cluster, "add-worker", printer)?;
    if snapshot {
        let taken = super::snapshot::run(
            cluster,
            settings,
            None,
            super::snapshot::KEEP_BEFORE_CHANGE,
            printer,
        )
        .context(
            "add-worker: the etcd snapshot taken before the change (--no-snapshot skips it)",
        )?;
        super::snapshot::announce(&taken, printer);
    }
    super::bootstrap::converge_held(
        cluster,
        settings,
        &[node],
        &PHASES,
        lock,
        printer,
        &super::bootstrap::Converge,
    )
}
