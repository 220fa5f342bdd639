//! `ocfk8s bootstrap`: see [`crate::ops::bootstrap`].

use crate::cli::{BootstrapArgs, GlobalArgs};
use crate::printer::Printer;

pub(crate) fn run(
    global: &GlobalArgs,
    args: &BootstrapArgs,
    printer: &Printer,
) -> anyhow::Result<()> {
    let resolved = super::load_inventory(&global.inventory, printer)?;
    crate::ops::bootstrap::run(&resolved.cluster, global, args, printer)
}
