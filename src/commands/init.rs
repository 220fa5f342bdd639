//! `ocfk8s init`: print a commented starter inventory (see
//! [`crate::inventory::starter_inventory`]). Only the addresses are checked
//! here, before anything is printed: a host needs a usable IP, since
//! certificates and etcd URLs are built from it; and the inventory printed
//! is validated as `ocfk8s validate` would, so it never fails to validate.

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
        let shown = crate::input_file::excerpt(address, 64);
        match address.parse::<IpAddr>() {
            Err(_) => {
                return Err(bad_input(format!(
                    "{flag} \"{shown}\": not an IP address (certificates and etcd URLs need the host's IP)"
                )));
            }
            Ok(ip) => {
                if let Some(why) = crate::inventory::unusable_address(ip) {
                    return Err(bad_input(format!("{flag} \"{shown}\": {why}")));
                }
            }
        }
    }
    if args.masters.is_empty() && !args.workers.is_empty() {
        return Err(bad_input(
            "--worker without --master: a cluster needs at least one master",
        ));
    }
    let text = crate::inventory::starter_inventory(&args.masters, &args.workers);
    // What init prints must validate: repeated addresses or mixed address
    // families are refused here, with the inventory's own words.
    crate::inventory::from_str(std::path::Path::new("<init>"), &text)?;
    printer.output(&text);
    Ok(())
}
