//! `ocfk8s plan`: per host, the files to add or change and the services to
//! (re)start, read from the hosts themselves. See [`crate::ops::survey`].

use crate::cli::{GlobalArgs, PlanArgs, TextOrJson};
use crate::ops::survey::{show, PlanFormat};
use crate::printer::Printer;

pub(crate) fn run(global: &GlobalArgs, args: &PlanArgs, printer: &Printer) -> anyhow::Result<()> {
    let phases = crate::phase::phases_to_run(&args.phases.skip_phases)?;
    let resolved = super::load_inventory(&global.inventory, printer)?;
    let cluster = &resolved.cluster;
    show(
        cluster,
        &super::settings(cluster, global),
        &phases,
        match args.output {
            TextOrJson::Text => PlanFormat::Text,
            TextOrJson::Json => PlanFormat::Json,
        },
        args.exit_code,
        printer,
    )
}
