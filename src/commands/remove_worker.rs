//! `ocfk8s remove-worker NAME`: see [`crate::ops::remove_worker`].

use crate::cli::{GlobalArgs, RemoveArgs};
use crate::ops::remove_worker::Request;
use crate::printer::Printer;

pub(crate) fn run(global: &GlobalArgs, args: &RemoveArgs, printer: &Printer) -> anyhow::Result<()> {
    let RemoveArgs {
        name,
        address,
        force,
        no_snapshot,
    } = args;
    let resolved = super::load_inventory(&global.inventory, printer)?;
    let cluster = &resolved.cluster;
    crate::ops::remove_worker::run(
        cluster,
        &super::settings(cluster, global),
        &Request {
            name,
            address: address.as_deref(),
            force: *force,
            snapshot: !no_snapshot,
        },
        printer,
    )
}
