//! The one table of what each host receives, and its rendering.

use std::collections::BTreeMap;
use std::path::PathBuf;

use minijinja::value::Serde;
use minijinja::Value;
use sha2::{Digest, Sha256};

use crate::error::bad_input;
use crate::input_file::{read_regular, MAX_TEXT_FILE};
use crate::inventory::{Cluster, Cni, Node};
use crate::pki::certlist::{Authority, SERVICE_ACCOUNT_PUB};
use crate::pki::{ca_rotation, Store};

use super::context::{Context, CLUSTER_SIGNING_CERT};
use super::templates::Templates;
use super::{EtcdBootstrap, HostFiles, RenderedFile};

/// Where a file's bytes come from.
#[derive(Debug, Clone)]
enum Source {
    /// A PKI store file, by its path relative to the store.
    Store(String),
    /// What hosts trust for an authority: its CA certificate, or during a
    /// CA rotation the current CA followed by the other one.
    Trust(Authority),
    /// The service-account public keys: `sa.pub`, and during a rotation of
    /// the key the other public key after it.
    ServiceAccountKeys,
    /// The operator's own file named in the inventory, with the field that
    /// names it (`ingress.tls_cert`, `ingress.tls_key`).
    Operator { path: PathBuf, field: &'static str },
    /// A template, by name.
    Template(&'static str),
}

/// Secret files (keys, kubeconfigs) are 0600 and never shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sensitivity {
    Public,
    Secret,
}

#[derive(Debug, Clone)]
struct Planned {
    path: String,
    source: Source,
    sensitivity: Sensitivity,
    restarts: &'static [&'static str],
}

const KUBELET: &[&str] = &["kubelet.service"];
const CONTAINERD: &[&str] = &["containerd.service"];
const KUBE_PROXY: &[&str] = &["kube-proxy.service"];
const ETCD: &[&str] = &["etcd.service"];
const NGINX: &[&str] = &["nginx.service"];
const KEEPALIVED: &[&str] = &["keepalived.service"];
const NOTHING: &[&str] = &[];

const PKI: &str = "/etc/kubernetes/pki";
const MANIFESTS: &str = "/etc/kubernetes/manifests";
const ADDONS: &str = "/etc/kubernetes/addons";

/// The per-master environment file holding etcd's initial-cluster settings
/// (`/etc/kubernetes/etcd-initial-cluster.env`): read by etcd only on its
/// first start, so it restarts nothing when it changes.
pub const ETCD_INITIAL_CLUSTER_ENV: &str = "/etc/kubernetes/etcd-initial-cluster.env";

/// The files each control-plane component reads, for the
/// `ocfk8s/inputs-sha256` annotation of its manifest.
const COMPONENT_INPUTS: &[(&str, &[&str])] = &[
    (
        "kube-apiserver",
        &[
            "/etc/kubernetes/pki/ca.crt",
            "/etc/kubernetes/pki/apiserver.crt",
            "/etc/kubernetes/pki/apiserver.key",
            "/etc/kubernetes/pki/apiserver-kubelet-client.crt",
            "/etc/kubernetes/pki/apiserver-kubelet-client.key",
            "/etc/kubernetes/pki/apiserver-etcd-client.crt",
            "/etc/kubernetes/pki/apiserver-etcd-client.key",
            "/etc/kubernetes/pki/etcd/ca.crt",
            "/etc/kubernetes/pki/front-proxy-ca.crt",
            "/etc/kubernetes/pki/front-proxy-client.crt",
            "/etc/kubernetes/pki/front-proxy-client.key",
            "/etc/kubernetes/pki/sa.key",
            "/etc/kubernetes/pki/sa.pub",
        ],
    ),
    (
        "kube-controller-manager",
        &[
            "/etc/kubernetes/controller-manager.conf",
            "/etc/kubernetes/pki/ca.crt",
            "/etc/kubernetes/pki/ca.key",
            CLUSTER_SIGNING_CERT,
            "/etc/kubernetes/pki/front-proxy-ca.crt",
            "/etc/kubernetes/pki/sa.key",
        ],
    ),
    ("kube-scheduler", &["/etc/kubernetes/scheduler.conf"]),
];

fn store(
    path: &str,
    relative: &str,
    sensitivity: Sensitivity,
    restarts: &'static [&'static str],
) -> Planned {
    Planned {
        path: path.to_string(),
        source: Source::Store(relative.to_string()),
        sensitivity,
        restarts,
    }
}

fn trust(path: &str, authority: Authority, restarts: &'static [&'static str]) -> Planned {
    Planned {
        path: path.to_string(),
        source: Source::Trust(authority),
        sensitivity: Sensitivity::Public,
        restarts,
    }
}

fn template(path: &str, name: &'static str, restarts: &'static [&'static str]) -> Planned {
    Planned {
        path: path.to_string(),
        source: Source::Template(name),
        sensitivity: Sensitivity::Public,
        restarts,
    }
}

/// A certificate and its key from the store: `<store stem>.crt/.key` to
/// `<host stem>.crt/.key`.
fn pair(
    planned: &mut Vec<Planned>,
    host_stem: &str,
    store_stem: &str,
    restarts: &'static [&'static str],
) {
    planned.push(store(
        &format!("{host_stem}.crt"),
        &format!("{store_stem}.crt"),
        Sensitivity::Public,
        restarts,
    ));
    planned.push(store(
        &format!("{host_stem}.key"),
        &format!("{store_stem}.key"),
        Sensitivity::Secret,
        restarts,
    ));
}

/// What `node` receives, before reading or rendering anything. `rotating`:
/// a CA rotation is in progress, and masters also receive the signing CA's
/// own certificate (see [`CLUSTER_SIGNING_CERT`]).
fn plan(cluster: &Cluster, node: &Node, rotating: bool) -> Vec<Planned> {
    use Sensitivity::{Public, Secret};
    let own = |file: &str| format!("nodes/{}/{file}", node.name);
    let mut planned = vec![
        trust(&format!("{PKI}/ca.crt"), Authority::Kubernetes, KUBELET),
        store(
            "/etc/kubernetes/kubelet.conf",
            &own("kubelet.conf"),
            Secret,
            KUBELET,
        ),
        store(
            "/var/lib/kubelet/pki/kubelet.crt",
            &own("kubelet-server.crt"),
            Public,
            KUBELET,
        ),
        store(
            "/var/lib/kubelet/pki/kubelet.key",
            &own("kubelet-server.key"),
            Secret,
            KUBELET,
        ),
        store(
            "/var/lib/kube-proxy/kubeconfig.conf",
            &own("kube-proxy.conf"),
            Secret,
            KUBE_PROXY,
        ),
        template(
            "/etc/systemd/system/kubelet.service",
            "kubelet.service",
            KUBELET,
        ),
        template(
            "/var/lib/kubelet/config.yaml",
            "kubelet-config.yaml",
            KUBELET,
        ),
        template(
            "/etc/systemd/system/kube-proxy.service",
            "kube-proxy.service",
            KUBE_PROXY,
        ),
        template(
            "/var/lib/kube-proxy/config.conf",
            "kube-proxy-config.conf",
            KUBE_PROXY,
        ),
        template(
            "/etc/containerd/config.toml",
            "containerd-config.toml",
            CONTAINERD,
        ),
        template("/etc/crictl.yaml", "crictl.yaml", NOTHING),
        template(
            "/etc/modules-load.d/k8s.conf",
            "modules-load-k8s.conf",
            &["systemd-modules-load.service"],
        ),
        template(
            "/etc/sysctl.d/99-kubernetes.conf",
            "sysctl-kubernetes.conf",
            &["systemd-sysctl.service"],
        ),
    ];
    if !node.is_master() {
        return planned;
    }

    // The control plane's PKI, kubeadm's names. The CA keys are always the
    // signing CA's (`ca.key` in the store), the certificates what hosts
    // trust.
    planned.push(store(&format!("{PKI}/ca.key"), "ca.key", Secret, NOTHING));
    if rotating {
        planned.push(store(CLUSTER_SIGNING_CERT, "ca.crt", Public, NOTHING));
    }
    planned.push(trust(
        &format!("{PKI}/front-proxy-ca.crt"),
        Authority::FrontProxy,
        NOTHING,
    ));
    planned.push(store(
        &format!("{PKI}/front-proxy-ca.key"),
        "front-proxy-ca.key",
        Secret,
        NOTHING,
    ));
    planned.push(store(&format!("{PKI}/sa.key"), "sa.key", Secret, NOTHING));
    planned.push(Planned {
        path: format!("{PKI}/sa.pub"),
        source: Source::ServiceAccountKeys,
        sensitivity: Public,
        restarts: NOTHING,
    });
    pair(
        &mut planned,
        &format!("{PKI}/apiserver-etcd-client"),
        "apiserver-etcd-client",
        NOTHING,
    );
    pair(
        &mut planned,
        &format!("{PKI}/apiserver"),
        &own("apiserver"),
        NOTHING,
    );
    pair(
        &mut planned,
        &format!("{PKI}/apiserver-kubelet-client"),
        &own("apiserver-kubelet-client"),
        NOTHING,
    );
    pair(
        &mut planned,
        &format!("{PKI}/front-proxy-client"),
        &own("front-proxy-client"),
        NOTHING,
    );
    planned.push(trust(&format!("{PKI}/etcd/ca.crt"), Authority::Etcd, ETCD));
    pair(
        &mut planned,
        &format!("{PKI}/etcd/server"),
        &own("etcd/server"),
        ETCD,
    );
    pair(
        &mut planned,
        &format!("{PKI}/etcd/peer"),
        &own("etcd/peer"),
        ETCD,
    );
    pair(
        &mut planned,
        &format!("{PKI}/etcd/healthcheck-client"),
        &own("etcd/healthcheck-client"),
        NOTHING,
    );

    // Kubeconfigs.
    planned.push(store(
        "/etc/kubernetes/admin.conf",
        "admin.conf",
        Secret,
        NOTHING,
    ));
    planned.push(store(
        "/etc/kubernetes/controller-manager.conf",
        &own("controller-manager.conf"),
        Secret,
        NOTHING,
    ));
    planned.push(store(
        "/etc/kubernetes/scheduler.conf",
        &own("scheduler.conf"),
        Secret,
        NOTHING,
    ));

    // etcd and the control plane.
    planned.push(template(
        "/etc/systemd/system/etcd.service",
        "etcd.service",
        ETCD,
    ));
    planned.push(template(
        ETCD_INITIAL_CLUSTER_ENV,
        "etcd-initial-cluster.env",
        NOTHING,
    ));
    for name in [
        "kube-apiserver.yaml",
        "kube-controller-manager.yaml",
        "kube-scheduler.yaml",
    ] {
        planned.push(template(&format!("{MANIFESTS}/{name}"), name, NOTHING));
    }

    // Addons, applied with kubectl.
    planned.push(template(
        &format!("{ADDONS}/rbac.yaml"),
        "addon-rbac.yaml",
        NOTHING,
    ));
    match cluster.cni {
        Cni::Flannel => planned.push(template(
            &format!("{ADDONS}/flannel.yaml"),
            "addon-flannel.yaml",
            NOTHING,
        )),
        Cni::Weave => planned.push(template(
            &format!("{ADDONS}/weave.yaml"),
            "addon-weave.yaml",
            NOTHING,
        )),
    }
    planned.push(template(
        &format!("{ADDONS}/coredns.yaml"),
        "addon-coredns.yaml",
        NOTHING,
    ));

    // The front door.
    if let Some(ingress) = &cluster.ingress {
        planned.push(template(
            &format!("{ADDONS}/ingress-nginx.yaml"),
            "addon-ingress-nginx.yaml",
            NOTHING,
        ));
        planned.push(template(
            "/etc/keepalived/keepalived.conf",
            "keepalived.conf",
            KEEPALIVED,
        ));
        planned.push(template(
            "/etc/nginx/sites-enabled/ocfk8s-ingress.conf",
            "nginx-ingress.conf",
            NGINX,
        ));
        let (cert, key) = match &ingress.tls {
            Some(tls) => (
                Source::Operator {
                    path: tls.cert.clone(),
                    field: "ingress.tls_cert",
                },
                Source::Operator {
                    path: tls.key.clone(),
                    field: "ingress.tls_key",
                },
            ),
            None => (
                Source::Store("ingress.crt".to_string()),
                Source::Store("ingress.key".to_string()),
            ),
        };
        planned.push(Planned {
            path: "/etc/nginx/ssl/ingress.crt".to_string(),
            source: cert,
            sensitivity: Public,
            restarts: NGINX,
        });
        planned.push(Planned {
            path: "/etc/nginx/ssl/ingress.key".to_string(),
            source: key,
            sensitivity: Secret,
            restarts: NGINX,
        });
    }
    planned
}

/// Every path `node` receives, in the table's order, without reading or
/// rendering anything: what a host leaving the cluster must lose.
pub(crate) fn placed_paths(cluster: &Cluster, node: &Node) -> Vec<String> {
    // With what only a CA rotation places, so a host leaving mid-rotation
    // loses it too.
    plan(cluster, node, true)
        .into_iter()
        .map(|planned| planned.path)
        .collect()
}

/// Every PKI store file (relative) that rendering `cluster` reads.
pub fn required_store_files(cluster: &Cluster) -> Vec<String> {
    let mut files: Vec<String> = cluster
        .nodes()
        .flat_map(|node| plan(cluster, node, false))
        .filter_map(|planned| match planned.source {
            Source::Store(relative) => Some(relative),
            Source::Trust(authority) => Some(authority.cert_path().to_string()),
            Source::ServiceAccountKeys => Some(SERVICE_ACCOUNT_PUB.to_string()),
            _ => None,
        })
        .collect();
    files.sort();
    files.dedup();
    files
}

/// Read and render everything `node` receives.
pub(super) fn render_host(
    cluster: &Cluster,
    node: &Node,
    store: &Store,
    templates: &Templates,
    etcd: &EtcdBootstrap,
) -> anyhow::Result<HostFiles> {
    let rotating = ca_rotation::in_rotation(store);
    let planned = plan(cluster, node, rotating);
    let mut files = Vec::with_capacity(planned.len());
    let mut to_render = Vec::new();
    for item in planned {
        let contents = match &item.source {
            Source::Store(relative) => store.read_optional(relative)?.ok_or_else(|| {
                bad_input(format!(
                    "PKI store {} lacks {relative}: run `ocfk8s pki generate`",
                    store.dir().display()
                ))
            })?,
            Source::Trust(authority) => ca_rotation::trust_bundle(store, *authority)?,
            Source::ServiceAccountKeys => ca_rotation::service_account_keys(store)?,
            Source::Operator { path, field } => {
                read_regular(path, MAX_TEXT_FILE).map_err(|error| {
                    bad_input(format!(
                        "cannot read {} ({field} in {}): {error}",
                        path.display(),
                        cluster.inventory_path.display()
                    ))
                })?
            }
            Source::Template(_) => {
                to_render.push(item);
                continue;
            }
        };
        files.push(finish(item, contents));
    }

    let mut context = Context::new(cluster, node, etcd, inputs_sha256(node, &files));
    if rotating {
        context.pki.cluster_signing_cert_file = CLUSTER_SIGNING_CERT.to_string();
    }
    let context = Value::from(Serde(&context));
    for item in to_render {
        let Source::Template(name) = item.source else {
            continue;
        };
        let contents = templates
            .render(name, &context)
            .map_err(|error| error.context(format!("rendering {} for {}", item.path, node.name)))?;
        files.push(finish(item, contents));
    }
    files.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(HostFiles {
        node: node.name.clone(),
        files,
    })
}

fn finish(item: Planned, contents: Vec<u8>) -> RenderedFile {
    let secret = item.sensitivity == Sensitivity::Secret;
    RenderedFile {
        path: item.path,
        contents,
        mode: if secret { 0o600 } else { 0o644 },
        secret,
        restarts: item.restarts.iter().map(|unit| unit.to_string()).collect(),
    }
}

/// SHA-256 over the paths and contents of each control-plane component's
/// inputs (masters only).
fn inputs_sha256(node: &Node, files: &[RenderedFile]) -> BTreeMap<String, String> {
    let mut hashes = BTreeMap::new();
    if !node.is_master() {
        return hashes;
    }
    for (component, inputs) in COMPONENT_INPUTS {
        let mut hasher = Sha256::new();
        for input in *inputs {
            if let Some(file) = files.iter().find(|file| file.path == *input) {
                hasher.update(file.path.as_bytes());
                hasher.update((file.contents.len() as u64).to_be_bytes());
                hasher.update(&file.contents);
            }
        }
        hashes.insert(component.to_string(), hex::encode(hasher.finalize()));
    }
    hashes
}
