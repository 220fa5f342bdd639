//! `ocfk8s rotate-certs`: see [`crate::ops::rotate`].

use crate::cli::{GlobalArgs, RotateCertsArgs};
use crate::printer::Printer;

pub(crate) fn run(
    global: &GlobalArgs,
    args: &RotateCertsArgs,
    printer: &Printer,
) -> anyhow::Result<()> {
    let resolved = super::load_inventory(&global.inventory, printer)?;
    let cluster = &resolved.cluster;
    if args.ca {
        return crate::ops::rotate::run_ca(
            cluster,
            &super::settings(cluster, global),
            &crate::ops::rotate::CaRequest {
                all: args.all,
                sa: args.sa,
                dry_run: args.dry_run,
            },
            printer,
        );
    }
    crate::ops::rotate::run(
        cluster,
        &super::settings(cluster, global),
        &crate::ops::rotate::Request {
            expiring_within: args.expiring_within,
            only: &args.only,
            dry_run: args.dry_run,
        },
        printer,
    )
}
