//! `ocfk8s kubeconfig`: print an administrator kubeconfig from the store.

use crate::cli::{GlobalArgs, KubeconfigArgs};
use crate::error::bad_input;
use crate::pki::Store;
use crate::printer::Printer;

pub(crate) fn run(
    args: &KubeconfigArgs,
    global: &GlobalArgs,
    printer: &Printer,
) -> anyhow::Result<()> {
    let file = match args.user.as_str() {
        "admin" => "admin.conf",
        "super-admin" => "super-admin.conf",
        other => {
            return Err(bad_input(format!(
                "unknown --user {other:?}: expected admin or super-admin"
            )))
        }
    };
    let resolved = super::load_inventory(&global.inventory, printer)?;
    let store = Store::open(&resolved.cluster.pki_dir);
    let bytes = store.read_optional(file)?.ok_or_else(|| {
        bad_input(format!(
            "{}: missing; run `ocfk8s pki generate` first",
            store.path(file).display()
        ))
    })?;
    let text = String::from_utf8(bytes)
        .map_err(|_| bad_input(format!("{}: not UTF-8 text", store.path(file).display())))?;
    printer.output(&text);
    Ok(())
}
