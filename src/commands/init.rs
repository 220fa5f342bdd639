//! `ocfk8s init`: print a commented starter inventory (see
//! [`crate::inventory::starter_inventory`]). Only the addresses are checked
//! here, before anything is printed: a host needs an IP, since certificates
//! and etcd URLs are built from it. `ocfk8s validate` checks the rest.

use std::net::IpAddr;

use crate::cli::InitArgs;
use crate::error::bad_input;
use crate::printer::Printer;

pub(crate) fn run(args: &InitArgs, printer: &Printer) -> anyhow::Result<()> {
    for (flag, address) in args
        .masters
        .iter()
        .map(|address| ("--master", address))
        .chain(args.workers.iter().map(|address| ("--worker", address)))
    {
        if address.parse::<IpAddr>().is_err() {
            return Err(bad_input(format!(
                "{flag} {address:?}: not an IP address (certificates and etcd URLs need the host's IP)"
            )));
        }
    }
    if args.masters.is_empty() && !args.workers.is_empty() {
        return Err(bad_input(
            "--worker without --master: a cluster needs at least one master",
        ));
    }
    printer.output(&crate::inventory::starter_inventory(
        &args.masters,
        &args.workers,
    ));
    Ok(())
}
