//! `bootstrap`: converge the whole cluster, phase by phase.
//!
//! Phases whose machinery does not exist yet refuse up front, before any
//! host is touched, unless skipped, so a run never stops half-way for that.

use crate::cli::{BootstrapArgs, GlobalArgs};
use crate::inventory::{Cluster, InstallMethod};
use crate::printer::Printer;

use super::desired::desired_files;
use super::fleet::{self, Fleet};
use super::phase::{phases_to_run, Phase};

pub(crate) fn run(
    cluster: &Cluster,
    global: &GlobalArgs,
    args: &BootstrapArgs,
    printer: &Printer,
) -> anyhow::Result<()> {
    let phases = phases_to_run(&args.phases.skip_phases)?;
    let missing: Vec<&str> = phases
        .iter()
        .filter(|phase| !implemented(**phase, cluster))
        .map(|phase| phase.name())
        .collect();
    if args.dry_run {
        if !missing.is_empty() {
            printer.warn(&format!(
                "the {} phase(s) cannot run yet (not implemented); showing the files plan only",
                missing.join(", ")
            ));
        }
        return crate::commands::plan::show(
            cluster,
            global,
            crate::cli::TextOrJson::Text,
            false,
            printer,
        );
    }
    if !missing.is_empty() {
        anyhow::bail!(
            "bootstrap: the {} phase{} cannot run yet (not implemented); skip {} with --skip-phases {}",
            missing.join(", "),
            if missing.len() == 1 { "" } else { "s" },
            if missing.len() == 1 { "it" } else { "them" },
            missing.join(",")
        );
    }
    let lock = crate::lock::acquire(&cluster.pki_dir, "bootstrap")?;
    printer.detail(&format!("holding the run lock {}", lock.path().display()));

    fleet::runtime()?.block_on(async {
        printer.info("preflight: connecting to every host");
        let progress = printer.host_progress(cluster.nodes().map(|node| node.name.as_str()));
        let fleet = Fleet::connect_all(cluster, global, &progress).await?;
        let result = run_phases(cluster, global, &lock, &phases, &fleet, printer, &progress).await;
        drop(progress);
        fleet.close().await;
        result
    })
}

async fn run_phases(
    cluster: &Cluster,
    global: &GlobalArgs,
    lock: &crate::lock::RunLock,
    phases: &[Phase],
    fleet: &Fleet,
    printer: &Printer,
    progress: &crate::printer::HostProgress,
) -> anyhow::Result<()> {
    // The pki phase cannot be skipped and comes before files: it checks the
    // store once and hands the checked store on.
    let mut store = None;
    for phase in phases {
        match phase {
            Phase::Preflight => {}
            Phase::Pki => store = Some(pki_phase(cluster, lock, printer)?),
            Phase::Install => {
                printer.info("install: nothing to install ([install] method = \"none\")")
            }
            Phase::Files => {
                let store = store.as_ref().ok_or_else(|| {
                    anyhow::anyhow!("bootstrap: the files phase needs the pki phase first")
                })?;
                let desired = desired_files(cluster, store, global.templates.as_deref())?;
                let results = fleet.push(&desired, progress).await?;
                let changed: Vec<_> = results
                    .iter()
                    .filter(|(_, report)| *report != Default::default())
                    .collect();
                if changed.is_empty() {
                    printer.output("Nothing to do: every host already holds its files.");
                } else {
                    let written: usize = changed.iter().map(|(_, report)| report.written).sum();
                    printer.output(&format!(
                        "files: {written} file(s) written on {} of {} host(s).",
                        changed.len(),
                        results.len()
                    ));
                }
            }
            Phase::Etcd | Phase::ControlPlane | Phase::Nodes | Phase::Lb | Phase::Addons => {
                anyhow::bail!("bootstrap: the {phase} phase is not implemented yet")
            }
        }
    }
    Ok(())
}

/// Create what is missing in the PKI store; never replace what exists.
/// Returns the checked store.
fn pki_phase(
    cluster: &Cluster,
    lock: &crate::lock::RunLock,
    printer: &Printer,
) -> anyhow::Result<crate::pki::Store> {
    crate::pki::recover(lock, cluster, printer)?;
    let (generated, store) = crate::pki::ensure(cluster, lock)?;
    for warning in &generated.warnings {
        printer.warn(warning);
    }
    if generated.created.is_empty() {
        printer.info(&format!(
            "pki: the store {} is complete",
            cluster.pki_dir.display()
        ));
    } else {
        printer.info(&format!(
            "pki: created {} file(s) in {}",
            generated.created.len(),
            cluster.pki_dir.display()
        ));
    }
    Ok(store)
}

fn implemented(phase: Phase, cluster: &Cluster) -> bool {
    match phase {
        Phase::Preflight | Phase::Pki | Phase::Files => true,
        Phase::Install => cluster.install.method == InstallMethod::None,
        Phase::Etcd | Phase::ControlPlane | Phase::Nodes | Phase::Lb | Phase::Addons => false,
    }
}
