//! The files every host must hold: the inventory rendered with the PKI
//! store, with the `--templates` override when given.

use crate::inventory::Cluster;
use crate::pki::Store;
use crate::render::{render_cluster, EtcdBootstrap, HostFiles, RenderOptions};

/// Every host's files, in inventory order (masters, then workers), from
/// a checked store ([`crate::pki::load`], or what `pki generate` checked),
/// with the masters' etcd settings `etcd` (see [`super::membership`]).
pub(crate) fn desired_files(
    cluster: &Cluster,
    store: &Store,
    templates: Option<&std::path::Path>,
    etcd: EtcdBootstrap,
) -> anyhow::Result<Vec<HostFiles>> {
    let _timer = crate::timings::step("render");
    render_files(cluster, store, templates, etcd)
}

/// [`desired_files`], untimed.
pub(crate) fn render_files(
    cluster: &Cluster,
    store: &Store,
    templates: Option<&std::path::Path>,
    etcd: EtcdBootstrap,
) -> anyhow::Result<Vec<HostFiles>> {
    let mut options = RenderOptions::for_cluster(cluster).with_templates_flag(templates);
    options.etcd = etcd;
    render_cluster(cluster, store, &options)
}
