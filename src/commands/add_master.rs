//! `ocfk8s add-master NAME`: see [`crate::ops::add_master`].

use crate::cli::{AddMasterArgs, GlobalArgs};
use crate::printer::Printer;

pub(crate) fn run(
    global: &GlobalArgs,
    args: &AddMasterArgs,
    printer: &Printer,
) -> anyhow::Result<()> {
    let resolved = super::load_inventory(&global.inventory, printer)?;
    let cluster = &resolved.cluster;
    crate::ops::add_master::run(
        cluster,
        &super::settings(cluster, global),
        &args.name,
        !args.no_snapshot,
        &args.phases.skip_phases,
        printer,
    )
}
