//! `ocfk8s pki generate` and `ocfk8s pki import`.

use crate::cli::{GlobalArgs, PkiCommand, PkiImportArgs};
use crate::pki;
use crate::printer::Printer;

pub(crate) fn run(
    command: &PkiCommand,
    global: &GlobalArgs,
    printer: &Printer,
) -> anyhow::Result<()> {
    let resolved = super::load_inventory(&global.inventory, printer)?;
    let cluster = &resolved.cluster;
    match command {
        PkiCommand::Generate => {
            // Waits for a concurrent run, then sees (and checks) what it made.
            let generated = pki::generate(cluster, printer)?;
            for warning in &generated.warnings {
                printer.warn(warning);
            }
            report(printer, cluster, &generated.created);
            Ok(())
        }
        PkiCommand::Import(args) => import(args, cluster, printer),
    }
}

fn import(
    args: &PkiImportArgs,
    cluster: &crate::inventory::Cluster,
    printer: &Printer,
) -> anyhow::Result<()> {
    let imported = match (&args.from_kubeadm, &args.from_kubetool, &args.node) {
        (Some(dir), _, Some(node)) => {
            let lock = pki::lock_for_writing(cluster, "pki import", printer)?;
            let imported = pki::import::from_kubeadm(cluster, &lock, dir, node);
            release_if_failed(lock, imported)?
        }
        (Some(_), _, None) => {
            return Err(crate::error::bad_input("--from-kubeadm needs --node NAME"))
        }
        (None, Some(dir), _) => {
            let lock = pki::lock_for_writing(cluster, "pki import", printer)?;
            let imported = pki::import::from_kubetool(cluster, &lock, dir);
            release_if_failed(lock, imported)?
        }
        (None, None, _) => {
            return Err(crate::error::bad_input(
                "give --from-kubeadm DIR --node NAME or --from-kubetool DIR",
            ))
        }
    };
    for warning in &imported.warnings {
        printer.warn(warning);
    }
    let imported = imported.files;
    if imported.is_empty() {
        printer.summary("nothing to import: the store already holds this material");
    } else {
        printer.summary(&format!(
            "imported {} file{} into {}",
            imported.len(),
            if imported.len() == 1 { "" } else { "s" },
            cluster.pki_dir.display()
        ));
        for file in &imported {
            printer.detail(&format!("  {file}"));
        }
    }
    Ok(())
}

/// A refused import into a store that did not exist leaves no store.
fn release_if_failed<T>(
    lock: crate::lock::RunLock,
    result: anyhow::Result<T>,
) -> anyhow::Result<T> {
    if result.is_err() {
        lock.release_unused_store();
    }
    result
}

fn report(printer: &Printer, cluster: &crate::inventory::Cluster, created: &[String]) {
    if created.is_empty() {
        printer.summary("PKI store up to date, nothing to do");
        return;
    }
    printer.summary(&format!(
        "created {} file{} in {}",
        created.len(),
        if created.len() == 1 { "" } else { "s" },
        cluster.pki_dir.display()
    ));
    for file in created {
        printer.detail(&format!("  {file}"));
    }
}
