//! `ocfk8s render --out DIR`: every host's files as they would be pushed.
//!
//! Each host's tree goes to `DIR/<host>/<absolute path>` with the mode the
//! host will get (keys and kubeconfigs 0600). DIR may hold other things, and
//! render only ever replaces what it wrote itself: the host folders listed in
//! `DIR/.ocfk8s-render` (written by an earlier render). A host folder that
//! exists but is not listed there, or is not a folder, is refused as bad
//! input before anything is written, and so is an output folder that
//! contains or lies inside the PKI store, the inventory or the templates:
//! a host named `pki` and `--out .` must never replace the store.
//!
//! Every host is first written beside its final place (`DIR/.<host>.<hex>`);
//! only when all hosts are written are the old trees swapped out, so a
//! failure midway leaves DIR as it was.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;

use crate::cli::{GlobalArgs, RenderArgs};
use crate::error::bad_input;
use crate::inventory::Cluster;
use crate::pki;
use crate::printer::Printer;
use crate::render::{render_cluster, HostFiles, RenderOptions};

/// The list of host folders a render wrote, one name a line.
const MANIFEST: &str = ".ocfk8s-render";

pub(crate) fn run(global: &GlobalArgs, args: &RenderArgs, printer: &Printer) -> anyhow::Result<()> {
    let resolved = super::load_inventory(&global.inventory, printer)?;
    let cluster = &resolved.cluster;
    let options =
        RenderOptions::for_cluster(cluster).with_templates_flag(global.templates.as_deref());
    refuse_dangerous_out(
        &args.out,
        cluster,
        &global.inventory,
        options.templates_dir.as_deref(),
    )?;
    let store = pki::load(cluster, printer)?;
    let hosts = render_cluster(cluster, &store, &options)?;

    let owned = check_host_folders(&args.out, &hosts)?;
    create_dir(&args.out, 0o755)?;
    write_all(&args.out, &hosts, &owned)?;
    for host in &hosts {
        let secrets = host.files.iter().filter(|file| file.secret).count();
        printer.summary(&format!(
            "{}: {} files ({} secret) in {}",
            host.node,
            host.files.len(),
            secrets,
            args.out.join(&host.node).display()
        ));
    }
    Ok(())
}

/// `path` made absolute with symlinks resolved as far as it exists; the
/// part that does not exist yet is appended as written.
fn resolve_path(path: &Path) -> anyhow::Result<PathBuf> {
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .context("reading the current folder")?
            .join(path)
    };
    let mut existing = absolute.as_path();
    let mut rest = Vec::new();
    loop {
        match existing.canonicalize() {
            Ok(real) => {
                let mut resolved = real;
                for part in rest.iter().rev() {
                    resolved.push(part);
                }
                return Ok(resolved);
            }
            Err(_) => match (existing.parent(), existing.file_name()) {
                (Some(parent), Some(name)) => {
                    rest.push(name.to_os_string());
                    existing = parent;
                }
                // `..` or the root: nothing left to resolve.
                _ => return Ok(absolute),
            },
        }
    }
}

/// Refuse an output folder that contains or lies inside the PKI store, the
/// inventory or the templates folder.
fn refuse_dangerous_out(
    out: &Path,
    cluster: &Cluster,
    inventory: &Path,
    templates: Option<&Path>,
) -> anyhow::Result<()> {
    let out_real = resolve_path(out)?;
    let mut protected = vec![
        ("the PKI store", resolve_path(&cluster.pki_dir)?),
        ("the inventory", resolve_path(inventory)?),
    ];
    if let Some(templates) = templates {
        protected.push(("the templates folder", resolve_path(templates)?));
    }
    for (what, path) in protected {
        if path.starts_with(&out_real) || out_real.starts_with(&path) {
            return Err(bad_input(format!(
                "render --out {}: the output folder {} {what} ({}); choose a folder apart from it",
                out.display(),
                if path.starts_with(&out_real) {
                    "contains"
                } else {
                    "lies inside"
                },
                path.display()
            )));
        }
    }
    Ok(())
}

/// The host folders an earlier render wrote (from the manifest), after
/// checking that every host's folder is either absent or one of those.
fn check_host_folders(out: &Path, hosts: &[HostFiles]) -> anyhow::Result<BTreeSet<String>> {
    match std::fs::symlink_metadata(out) {
        Ok(metadata) if !metadata.is_dir() => {
            return Err(bad_input(format!(
                "render --out {}: {}, not a folder",
                out.display(),
                crate::input_file::kind_of(metadata.file_type())
            )))
        }
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeSet::new()),
        Err(error) => return Err(error).with_context(|| format!("reading {}", out.display())),
    }
    let manifest = out.join(MANIFEST);
    let owned: BTreeSet<String> =
        match crate::input_file::read_text(&manifest, crate::input_file::MAX_TEXT_FILE) {
            Ok(text) => text.lines().map(str::to_string).collect(),
            Err(error) if error.is_not_found() => BTreeSet::new(),
            Err(error) => {
                return Err(bad_input(format!("{}: {error}", manifest.display())));
            }
        };
    let mut problems = Vec::new();
    for host in hosts {
        let folder = out.join(&host.node);
        match std::fs::symlink_metadata(&folder) {
            Ok(metadata) if !metadata.is_dir() => problems.push(format!(
                "{} is {}, not a folder render wrote",
                folder.display(),
                crate::input_file::kind_of(metadata.file_type())
            )),
            Ok(_) if !owned.contains(&host.node) => problems.push(format!(
                "{} exists and was not written by `ocfk8s render`",
                folder.display()
            )),
            Ok(_) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => problems.push(format!("{}: {error}", folder.display())),
        }
    }
    if problems.is_empty() {
        Ok(owned)
    } else {
        Err(bad_input(format!(
            "render --out {}: nothing was written, since render replaces only folders it wrote:\n  {}\nremove them or choose another output folder",
            out.display(),
            problems.join("\n  ")
        )))
    }
}

fn create_dir(dir: &Path, mode: u32) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(mode)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// Write every host beside its place, then swap the trees in.
fn write_all(out: &Path, hosts: &[HostFiles], owned: &BTreeSet<String>) -> anyhow::Result<()> {
    let suffix: u64 = rand::random();
    let staged: Vec<(PathBuf, PathBuf)> = hosts
        .iter()
        .map(|host| {
            (
                out.join(format!(".{}.{suffix:016x}", host.node)),
                out.join(&host.node),
            )
        })
        .collect();
    let written = hosts
        .iter()
        .zip(&staged)
        .try_for_each(|(host, (staging, _))| write_host(staging, host));
    if let Err(error) = written {
        for (staging, _) in &staged {
            let _ = std::fs::remove_dir_all(staging);
        }
        return Err(error);
    }

    // Record ownership before the swap, so a run killed midway still owns
    // every folder it may have placed.
    let mut listed = owned.clone();
    listed.extend(hosts.iter().map(|host| host.node.clone()));
    let manifest: String = listed.iter().map(|name| format!("{name}\n")).collect();
    write_manifest(out, &manifest)?;

    for (staging, target) in &staged {
        if target.exists() {
            std::fs::remove_dir_all(target)
                .with_context(|| format!("removing the previous rendering {}", target.display()))?;
        }
        std::fs::rename(staging, target)
            .with_context(|| format!("moving {} into place", target.display()))?;
    }
    Ok(())
}

fn write_manifest(out: &Path, text: &str) -> anyhow::Result<()> {
    let path = out.join(MANIFEST);
    let temporary = out.join(format!("{MANIFEST}.{:016x}", rand::random::<u64>()));
    std::fs::write(&temporary, text)
        .and_then(|()| std::fs::rename(&temporary, &path))
        .with_context(|| format!("writing {}", path.display()))
}

fn write_host(root: &Path, host: &HostFiles) -> anyhow::Result<()> {
    create_dir(root, 0o755)?;
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
