//! `ocfk8s etcd snapshot`: see [`crate::ops::snapshot`].

use crate::cli::{GlobalArgs, SnapshotArgs};
use crate::printer::Printer;

pub(crate) fn snapshot(
    global: &GlobalArgs,
    args: &SnapshotArgs,
    printer: &Printer,
) -> anyhow::Result<()> {
    let resolved = super::load_inventory(&global.inventory, printer)?;
    let cluster = &resolved.cluster;
    let taken = crate::ops::snapshot::run(
        cluster,
        &super::settings(cluster, global),
        args.out.as_deref(),
        args.keep as usize,
        printer,
    )?;
    printer.output(&format!(
        "etcd snapshot of revision {} from {}: {} ({} bytes, sha256 {})",
        taken.revision,
        taken.member,
        taken.path.display(),
        taken.size,
        taken.sha256
    ));
    for removed in &taken.removed {
        printer.detail(&format!("removed the older snapshot {}", removed.display()));
    }
    Ok(())
}
