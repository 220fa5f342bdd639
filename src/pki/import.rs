//! `pki import`: adopt a running cluster's CAs and leaves, so it is taken
//! over without re-keying.
//!
//! Two sources: a master's kubeadm `/etc/kubernetes/pki` copied locally, and
//! kubetool's hiera files (the `<Os>.yaml` holding the `kubernetes::` CA
//! material, one `<host>.yaml` per etcd member). Keys are adopted verbatim
//! (PKCS#1, SEC1 or PKCS#8), since every consumer reads all three.
//!
//! Imported material is checked exactly like the store: each key matches
//! its certificate, each leaf was signed by its CA, and the store as it
//! would be after the import passes the same check as `pki generate`. A CA
//! is never imported over a different existing one, and an existing file is
//! never replaced by different content. Any problem is bad input (exit 2)
//! and nothing is written.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::atomic_write::{self, NewFile, PRIVATE, PUBLIC};
use super::certlist::{Authority, SERVICE_ACCOUNT_KEY, SERVICE_ACCOUNT_PUB};
use super::generate;
use super::material::{self, Certificate, CertificateAuthority, PrivateKey};
use super::Store;
use crate::error::bad_input;
use crate::input_file::{self, MAX_TEXT_FILE};
use crate::inventory::Cluster;
use crate::lock::RunLock;

/// What an import wrote, and what it had to leave aside.
#[derive(Debug, Clone, Default)]
pub struct Imported {
    /// Store-relative paths written.
    pub files: Vec<String>,
    pub warnings: Vec<String>,
}

/// Bytes read from the source, with a label naming where they came from.
struct Source {
    label: PathBuf,
    bytes: Vec<u8>,
}

enum Item {
    Authority {
        authority: Authority,
        cert: Source,
        key: Source,
    },
    ServiceAccount {
        key: Source,
        public: Option<Source>,
    },
    Leaf {
        authority: Authority,
        base: String,
        cert: Source,
        key: Source,
    },
}

/// Adopt a kubeadm master's `/etc/kubernetes/pki` (copied to `dir`) as the
/// material of master `node`.
pub fn from_kubeadm(
    cluster: &Cluster,
    lock: &RunLock,
    dir: &Path,
    node: &str,
) -> anyhow::Result<Imported> {
    match cluster.node(node) {
        Some(found) if found.is_master() => {}
        Some(_) => {
            return Err(bad_input(format!(
                "--node {node}: a worker; a kubeadm pki folder comes from a master"
            )))
        }
        None => {
            return Err(bad_input(format!(
                "--node {node}: no such master in {}",
                cluster.inventory_path.display()
            )))
        }
    }
    if !dir.is_dir() {
        return Err(bad_input(format!(
            "{}: not a folder (--from-kubeadm takes a copy of a master's /etc/kubernetes/pki)",
            dir.display()
        )));
    }
    if !dir.join("ca.crt").exists() {
        return Err(bad_input(format!(
            "{}: not a kubeadm pki folder (no ca.crt)",
            dir.display()
        )));
    }
    let read = |relative: &str| -> anyhow::Result<Option<Source>> {
        let label = dir.join(relative);
        match input_file::read_regular(&label, MAX_TEXT_FILE) {
            Ok(bytes) => Ok(Some(Source { label, bytes })),
            Err(error) if error.is_not_found() => Ok(None),
            Err(error) => Err(bad_input(format!("{}: {error}", label.display()))),
        }
    };
    let pair = |base: &str| -> anyhow::Result<Option<(Source, Source)>> {
        match (read(&format!("{base}.crt"))?, read(&format!("{base}.key"))?) {
            (Some(cert), Some(key)) => Ok(Some((cert, key))),
            (Some(cert), None) => Err(bad_input(format!(
                "{}: has no key {base}.key beside it",
                cert.label.display()
            ))),
            (None, Some(key)) => Err(bad_input(format!(
                "{}: has no certificate {base}.crt beside it",
                key.label.display()
            ))),
            (None, None) => Ok(None),
        }
    };

    let mut items = Vec::new();
    for (base, authority) in [
        ("ca", Authority::Kubernetes),
        ("etcd/ca", Authority::Etcd),
        ("front-proxy-ca", Authority::FrontProxy),
    ] {
        if let Some((cert, key)) = pair(base)? {
            items.push(Item::Authority {
                authority,
                cert,
                key,
            });
        }
    }
    if let Some(key) = read("sa.key")? {
        items.push(Item::ServiceAccount {
            key,
            public: read("sa.pub")?,
        });
    }
    let node_dir = format!("nodes/{node}");
    for (source, authority, target) in [
        (
            "apiserver-etcd-client",
            Authority::Etcd,
            "apiserver-etcd-client".to_string(),
        ),
        (
            "apiserver",
            Authority::Kubernetes,
            format!("{node_dir}/apiserver"),
        ),
        (
            "apiserver-kubelet-client",
            Authority::Kubernetes,
            format!("{node_dir}/apiserver-kubelet-client"),
        ),
        (
            "front-proxy-client",
            Authority::FrontProxy,
            format!("{node_dir}/front-proxy-client"),
        ),
        (
            "etcd/server",
            Authority::Etcd,
            format!("{node_dir}/etcd/server"),
        ),
        (
            "etcd/peer",
            Authority::Etcd,
            format!("{node_dir}/etcd/peer"),
        ),
        (
            "etcd/healthcheck-client",
            Authority::Etcd,
            format!("{node_dir}/etcd/healthcheck-client"),
        ),
    ] {
        if let Some((cert, key)) = pair(source)? {
            items.push(Item::Leaf {
                authority,
                base: target,
                cert,
                key,
            });
        }
    }
    adopt(cluster, lock, items, Vec::new())
}

/// The string values of one kubetool hiera file (all its YAML documents).
fn read_hiera(path: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    use serde::Deserialize;
    let text = input_file::read_text(path, MAX_TEXT_FILE)
        .map_err(|error| bad_input(format!("{}: {error}", path.display())))?;
    let mut values = BTreeMap::new();
    for document in serde_norway::Deserializer::from_str(&text) {
        let value = serde_norway::Value::deserialize(document).map_err(|error| {
            bad_input(format!(
                "{}: not YAML: {}",
                path.display(),
                super::kubeconfig::yaml_error(&error)
            ))
        })?;
        if let serde_norway::Value::Mapping(mapping) = value {
            for (key, value) in mapping {
                if let (Some(key), Some(value)) = (key.as_str(), value.as_str()) {
                    values.insert(key.to_string(), value.to_string());
                }
            }
        }
    }
    Ok(values)
}

const KUBETOOL_KUBERNETES_CA: &str = "kubernetes::kubernetes_ca_crt";

/// Adopt kubetool's hiera folder: CAs, the service-account pair and the
/// etcd client from `<Os>.yaml`, etcd server/peer/client certificates from
/// each master's `<host>.yaml`.
pub fn from_kubetool(cluster: &Cluster, lock: &RunLock, dir: &Path) -> anyhow::Result<Imported> {
    let entries =
        std::fs::read_dir(dir).map_err(|error| bad_input(format!("{}: {error}", dir.display())))?;
    let mut files: Vec<PathBuf> = Vec::new();
    for entry in entries {
        let path = entry
            .map_err(|error| bad_input(format!("{}: {error}", dir.display())))?
            .path();
        if path
            .extension()
            .is_some_and(|extension| extension == "yaml" || extension == "yml")
        {
            files.push(path);
        }
    }
    files.sort();

    let mut common: Option<(PathBuf, BTreeMap<String, String>)> = None;
    let mut hosts = Vec::new();
    let mut warnings = Vec::new();
    for path in files {
        let values = read_hiera(&path)?;
        if values.contains_key(KUBETOOL_KUBERNETES_CA) {
            if let Some((first, first_values)) = &common {
                if first_values.get(KUBETOOL_KUBERNETES_CA) != values.get(KUBETOOL_KUBERNETES_CA) {
                    return Err(bad_input(format!(
                        "{} and {}: two different Kubernetes CAs",
                        first.display(),
                        path.display()
                    )));
                }
            } else {
                common = Some((path, values));
            }
        } else if ["kubernetes::etcdserver_crt", "kubernetes::etcdpeer_crt"]
            .iter()
            .any(|key| values.contains_key(*key))
        {
            hosts.push((path, values));
        }
    }
    let Some((common_path, common)) = common else {
        return Err(bad_input(format!(
            "{}: no kubetool <Os>.yaml holding {KUBETOOL_KUBERNETES_CA}",
            dir.display()
        )));
    };

    let source = |path: &Path, values: &BTreeMap<String, String>, key: &str| {
        values.get(key).map(|value| Source {
            label: PathBuf::from(format!("{} ({key})", path.display())),
            bytes: value.clone().into_bytes(),
        })
    };
    let pair = |path: &Path,
                values: &BTreeMap<String, String>,
                cert_key: &str,
                key_key: &str|
     -> anyhow::Result<Option<(Source, Source)>> {
        match (
            source(path, values, cert_key),
            source(path, values, key_key),
        ) {
            (Some(cert), Some(key)) => Ok(Some((cert, key))),
            (None, None) => Ok(None),
            (Some(_), None) | (None, Some(_)) => Err(bad_input(format!(
                "{}: {cert_key} and {key_key} must come together",
                path.display()
            ))),
        }
    };

    let mut items = Vec::new();
    for (prefix, authority) in [
        ("kubernetes::kubernetes_ca", Authority::Kubernetes),
        ("kubernetes::etcd_ca", Authority::Etcd),
        (
            "kubernetes::kubernetes_front_proxy_ca",
            Authority::FrontProxy,
        ),
    ] {
        if let Some((cert, key)) = pair(
            &common_path,
            &common,
            &format!("{prefix}_crt"),
            &format!("{prefix}_key"),
        )? {
            items.push(Item::Authority {
                authority,
                cert,
                key,
            });
        }
    }
    if let Some(key) = source(&common_path, &common, "kubernetes::sa_key") {
        items.push(Item::ServiceAccount {
            key,
            public: source(&common_path, &common, "kubernetes::sa_pub"),
        });
    }
    if let Some((cert, key)) = pair(
        &common_path,
        &common,
        "kubernetes::etcdclient_crt",
        "kubernetes::etcdclient_key",
    )? {
        items.push(Item::Leaf {
            authority: Authority::Etcd,
            base: "apiserver-etcd-client".to_string(),
            cert,
            key,
        });
    }

    for (path, values) in hosts {
        let stem = path
            .file_stem()
            .map(|stem| stem.to_string_lossy().into_owned())
            .unwrap_or_default();
        let node = cluster
            .masters
            .iter()
            .find(|master| stem == master.name || stem.starts_with(&format!("{}.", master.name)));
        let Some(node) = node else {
            warnings.push(format!(
                "{}: no master named {stem:?} in the inventory; skipped",
                path.display()
            ));
            continue;
        };
        for (name, target) in [
            ("etcdserver", "etcd/server"),
            ("etcdpeer", "etcd/peer"),
            ("etcdclient", "etcd/healthcheck-client"),
        ] {
            if let Some((cert, key)) = pair(
                &path,
                &values,
                &format!("kubernetes::{name}_crt"),
                &format!("kubernetes::{name}_key"),
            )? {
                items.push(Item::Leaf {
                    authority: Authority::Etcd,
                    base: format!("nodes/{}/{target}", node.name),
                    cert,
                    key,
                });
            }
        }
    }
    adopt(cluster, lock, items, warnings)
}

/// Check every item against its CA and the store, then write the new files.
fn adopt(
    cluster: &Cluster,
    lock: &RunLock,
    items: Vec<Item>,
    warnings: Vec<String>,
) -> anyhow::Result<Imported> {
    let store = Store::open(&cluster.pki_dir);
    let mut problems: Vec<String> = Vec::new();
    let mut pending: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let mut authorities: BTreeMap<Authority, Certificate> = BTreeMap::new();

    // Stage a file unless the store already holds exactly it.
    let mut stage =
        |relative: String, source: &Source, problems: &mut Vec<String>| -> anyhow::Result<()> {
            match store.read_optional(&relative)? {
                Some(existing) if existing == source.bytes => {}
                Some(_) => problems.push(format!(
                    "{}: already in the store with different content; not replaced by {}",
                    store.path(&relative).display(),
                    source.label.display()
                )),
                None => {
                    pending.insert(relative, source.bytes.clone());
                }
            }
            Ok(())
        };

    for item in &items {
        if let Item::Authority {
            authority,
            cert,
            key,
        } = item
        {
            let loaded = match CertificateAuthority::load(
                &cert.label,
                &cert.bytes,
                &key.label,
                &key.bytes,
            ) {
                Ok(loaded) => loaded,
                Err(error) => {
                    problems.push(format!("{error:#}"));
                    continue;
                }
            };
            if let Some(existing) = store.read_optional(authority.cert_path())? {
                let existing_path = store.path(authority.cert_path());
                let same = Certificate::parse(&existing_path, &existing)
                    .is_ok_and(|existing| existing.der == loaded.certificate.der);
                if !same {
                    problems.push(format!(
                        "{}: the store already has a different {}; refusing to import {} over it",
                        existing_path.display(),
                        authority.label(),
                        cert.label.display()
                    ));
                    continue;
                }
            } else {
                stage(authority.cert_path().to_string(), cert, &mut problems)?;
                stage(authority.key_path().to_string(), key, &mut problems)?;
            }
            authorities.insert(*authority, loaded.certificate);
        }
    }

    for item in &items {
        match item {
            Item::Authority { .. } => {}
            Item::ServiceAccount { key, public } => {
                let parsed = match PrivateKey::parse(&key.label, &key.bytes) {
                    Ok(parsed) => parsed,
                    Err(error) => {
                        problems.push(format!("{error:#}"));
                        continue;
                    }
                };
                stage(SERVICE_ACCOUNT_KEY.to_string(), key, &mut problems)?;
                match public {
                    Some(public) if material::public_key_matches(&public.bytes, &parsed) => {
                        stage(SERVICE_ACCOUNT_PUB.to_string(), public, &mut problems)?;
                    }
                    Some(public) => problems.push(format!(
                        "{}: not the public half of {}",
                        public.label.display(),
                        key.label.display()
                    )),
                    None => {
                        let derived = Source {
                            label: key.label.clone(),
                            bytes: parsed.public_pem().into_bytes(),
                        };
                        stage(SERVICE_ACCOUNT_PUB.to_string(), &derived, &mut problems)?;
                    }
                }
            }
            Item::Leaf {
                authority,
                base,
                cert,
                key,
            } => {
                let ca = match authorities.get(authority) {
                    Some(ca) => Some(ca.clone()),
                    None => match store.read_optional(authority.cert_path())? {
                        Some(bytes) => {
                            Certificate::parse(&store.path(authority.cert_path()), &bytes).ok()
                        }
                        None => None,
                    },
                };
                let Some(ca) = ca else {
                    problems.push(format!(
                        "{}: no {} to check it against; import that CA too",
                        cert.label.display(),
                        authority.label()
                    ));
                    continue;
                };
                if let Err(error) = generate::check_pair(
                    &cert.label,
                    &cert.bytes,
                    &key.label,
                    &key.bytes,
                    Some(&ca),
                    *authority,
                ) {
                    problems.push(format!("{error:#}"));
                    continue;
                }
                stage(format!("{base}.crt"), cert, &mut problems)?;
                stage(format!("{base}.key"), key, &mut problems)?;
            }
        }
    }
    if !problems.is_empty() {
        return Err(bad_input(format!(
            "cannot import; nothing was written:\n  {}",
            problems.join("\n  ")
        )));
    }

    // The store as it would be must pass the same check as `pki generate`.
    // Expired material is adopted (it is what the cluster runs on), but
    // said, with the way to renew it.
    let plan = generate::plan(cluster, &store.with_pending(pending.clone()))?;
    let mut warnings = warnings;
    warnings.extend(plan.expired_messages());

    let files: Vec<NewFile> = pending
        .into_iter()
        .map(|(relative, contents)| {
            let mode = if relative.ends_with(".key") {
                PRIVATE
            } else {
                PUBLIC
            };
            NewFile {
                relative,
                contents,
                mode,
            }
        })
        .collect();
    atomic_write::write_batch(lock, store.dir(), &files)?;
    Ok(Imported {
        files: files.into_iter().map(|file| file.relative).collect(),
        warnings,
    })
}
