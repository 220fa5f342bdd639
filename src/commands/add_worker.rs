//! `ocfk8s add-worker NAME`: see [`crate::ops::add_worker`].

use crate::cli::{AddWorkerArgs, GlobalArgs};
use crate::printer::Printer;

pub(crate) fn run(
    global: &GlobalArgs,
    args: &AddWorkerArgs,
    printer: &Printer,
) -> anyhow::Result<()> {
    let resolved = super::load_inventory(&global.inventory, printer)?;
    let cluster = &resolved.cluster;
    crate::ops::add_worker::run(
        cluster,
        &super::settings(cluster, global),
        &args.name,
        !args.no_snapshot,
        printer,
    )
}
