//! `ocfk8s remove-master NAME`: see [`crate::ops::remove_master`].

use crate::cli::{GlobalArgs, RemoveArgs};
use crate::printer::Printer;

pub(crate) fn run(global: &GlobalArgs, args: &RemoveArgs, printer: &Printer) -> anyhow::Result<()> {
    let resolved = super::load_inventory(&global.inventory, printer)?;
    let cluster = &resolved.cluster;
    crate::ops::remove_master::run(
        cluster,
        &super::settings(cluster, global),
        &crate::ops::remove_master::Request {
            name: &args.name,
            address: args.address.as_deref(),
            force: args.force,
            snapshot: !args.no_snapshot,
        },
        printer,
    )
}
