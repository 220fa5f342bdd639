//! `ocfk8s render --out DIR`: every host's files as they would be pushed.
//!
//! Each host's tree goes to `DIR/<host>/<absolute path>` with the mode the
//! host will get (keys and kubeconfigs 0600). DIR may hold other things: only
//! the `DIR/<host>` folders of the inventory's hosts are replaced, each
//! removed and written anew, so a file dropped from a host's set does not
//! linger. Nothing is written unless every host rendered.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use anyhow::Context;

use crate::cli::{GlobalArgs, RenderArgs};
use crate::pki;
use crate::printer::Printer;
use crate::render::{render_cluster, HostFiles, RenderOptions};

pub(crate) fn run(global: &GlobalArgs, args: &RenderArgs, printer: &Printer) -> anyhow::Result<()> {
    let resolved = super::load_inventory(&global.inventory, printer)?;
    let cluster = &resolved.cluster;
    let options =
        RenderOptions::for_cluster(cluster).with_templates_flag(global.templates.as_deref());
    let store = pki::load(cluster, printer)?;
    let hosts = render_cluster(cluster, &store, &options)?;

    create_dir(&args.out, 0o755)?;
    for host in &hosts {
        write_host(&args.out, host)?;
        let secrets = host.files.iter().filter(|file| file.secret).count();
        printer.output(&format!(
            "{}: {} files ({} secret) in {}",
            host.node,
            host.files.len(),
            secrets,
            args.out.join(&host.node).display()
        ));
    }
    Ok(())
}

fn create_dir(dir: &Path, mode: u32) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

fn write_host(out: &Path, host: &HostFiles) -> anyhow::Result<()> {
    let root = out.join(&host.node);
    if root.exists() {
        std::fs::remove_dir_all(&root)
            .with_context(|| format!("removing the previous rendering {}", root.display()))?;
    }
    create_dir(&root, 0o755)?;
    for file in &host.files {
        let relative = file.path.trim_start_matches('/');
        let path = root.join(relative);
        if let Some(parent) = path.parent() {
            create_dir(parent, 0o755)?;
        }
        let mut handle = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(file.mode)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        // The umask may have cleared bits of the mode asked for.
        handle
            .set_permissions(std::fs::Permissions::from_mode(file.mode))
            .with_context(|| format!("setting the mode of {}", path.display()))?;
        handle
            .write_all(&file.contents)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
