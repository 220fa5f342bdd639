//! `ocfk8s bootstrap`: see [`crate::ops::bootstrap`].

use crate::cli::{BootstrapArgs, GlobalArgs};
use crate::printer::Printer;

pub(crate) fn run(
    global: &GlobalArgs,
    args: &BootstrapArgs,
    printer: &Printer,
) -> anyhow::Result<()> {
    let phases = crate::phase::phases_to_run(&args.phases.skip_phases)?;
    let resolved = super::load_inventory(&global.inventory, printer)?;
    let cluster = &resolved.cluster;
    crate::ops::bootstrap::run(
        cluster,
        &super::settings(cluster, global),
        &phases,
        args.dry_run,
        printer,
    )
}
