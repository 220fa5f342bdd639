//! The files every host must hold.
//!
//! They come from rendering the inventory with the PKI store. Until
//! rendering is wired in, they are read from a tree laid out like
//! `ocfk8s render --out DIR` (`DIR/<host>/<absolute path>`) named by
//! `OCFK8S_DESIRED_TREE`: modes are kept, files no one but root may read are
//! secrets.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use anyhow::Context;

use crate::error::bad_input;
use crate::inventory::Cluster;
use crate::render::{HostFiles, RenderedFile};

pub(crate) const TREE_VARIABLE: &str = "OCFK8S_DESIRED_TREE";

/// Every host's files, in inventory order (masters, then workers).
pub(crate) fn desired_files(cluster: &Cluster) -> anyhow::Result<Vec<HostFiles>> {
    let Some(tree) = std::env::var_os(TREE_VARIABLE) else {
        return Err(bad_input(format!(
            "rendering is not available yet: set {TREE_VARIABLE} to a rendered tree (DIR/<host>/<path>)"
        )));
    };
    let tree = Path::new(&tree);
    cluster
        .nodes()
        .map(|node| read_host_tree(&node.name, &tree.join(&node.name)))
        .collect()
}

fn read_host_tree(node: &str, root: &Path) -> anyhow::Result<HostFiles> {
    let mut files = Vec::new();
    if root.is_dir() {
        walk(root, root, &mut files)?;
    }
    files.sort_by(|left: &RenderedFile, right| left.path.cmp(&right.path));
    Ok(HostFiles {
        node: node.to_string(),
        files,
    })
}

fn walk(root: &Path, dir: &Path, files: &mut Vec<RenderedFile>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        if path.is_dir() {
            walk(root, &path, files)?;
            continue;
        }
        let relative = path
            .strip_prefix(root)
            .with_context(|| format!("{} is outside {}", path.display(), root.display()))?;
        let mode = std::fs::metadata(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .permissions()
            .mode()
            & 0o7777;
        files.push(RenderedFile {
            path: format!("/{}", relative.display()),
            contents: std::fs::read(&path)
                .with_context(|| format!("reading {}", path.display()))?,
            mode,
            secret: mode & 0o077 == 0,
            restarts: Vec::new(),
        });
    }
    Ok(())
}
