//! `ocfk8s kubeconfig`: print an administrator kubeconfig from the checked
//! store.

use crate::cli::{GlobalArgs, KubeconfigArgs};
use crate::error::bad_input;
use crate::pki;
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
    // Checked: a kubeconfig whose credentials are not the store's, or a
    // symlink to some other file, is refused, not printed.
    let store = pki::load(&resolved.cluster, printer)?;
    let bytes = store.read(file)?;
    let text = String::from_utf8(bytes)
        .map_err(|_| bad_input(format!("{}: not UTF-8 text", store.path(file).display())))?;
    printer.output(&text);
    Ok(())
}
