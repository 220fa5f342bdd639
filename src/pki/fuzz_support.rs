//! What the `pki_store` fuzz target drives: arbitrary bytes become changes
//! to a real, generated store (and a kubeadm import folder), which then go
//! through the one checked loader and through `pki import`. The target
//! must never panic or hang, and whatever the checks accept must hold up
//! when judged independently here: every accepted key is its
//! certificate's.
//!
//! Input format, repeated until the bytes run out: one selector byte (the
//! low 6 bits pick a path from [`PATHS`]; bit 7 sends the entry to the
//! import folder instead of the store; bit 6 writes it readable by
//! everyone), a little-endian `u16` length (`0xffff` removes the file;
//! `0xfffe` copies the generated store's file picked by the next byte, so
//! keys and certificates can be swapped), then that many bytes of contents.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context;

use super::{generate, import, kubeconfig, Store};
use crate::inventory::Cluster;

/// The files an entry can change: the store's, and (with bit 7) the same
/// names in a kubeadm `/etc/kubernetes/pki` folder.
pub const PATHS: &[&str] = &[
    "ca.crt",
    "ca.key",
    "etcd/ca.crt",
    "etcd/ca.key",
    "front-proxy-ca.crt",
    "front-proxy-ca.key",
    "sa.key",
    "sa.pub",
    "apiserver-etcd-client.crt",
    "apiserver-etcd-client.key",
    "admin.conf",
    "super-admin.conf",
    "nodes/m1/apiserver.crt",
    "nodes/m1/apiserver.key",
    "nodes/m1/etcd/server.crt",
    "nodes/m1/etcd/server.key",
    "nodes/m1/kubelet.crt",
    "nodes/m1/kubelet.key",
    "nodes/m1/kubelet.conf",
    "nodes/m1/scheduler.conf",
    "nodes/w1/kubelet.crt",
    "nodes/w1/kubelet.key",
    "nodes/w1/kubelet.conf",
    "nodes/w1/kube-proxy.conf",
    "apiserver.crt",
    "apiserver.key",
    "etcd/server.crt",
    "etcd/server.key",
    "etcd/peer.crt",
    "etcd/peer.key",
    "front-proxy-client.crt",
    "front-proxy-client.key",
];

const INVENTORY: &str = r#"[cluster]
name = "fuzz"
kubernetes_version = "1.31.4"
pod_cidr = "10.244.0.0/16"
service_cidr = "10.96.0.0/12"
cluster_domain = "cluster.local"
cni = "flannel"
key_algorithm = "ecdsa-p256"
cert_validity_days = 365
ca_validity_days = 3650

[ssh]
user = "root"
port = 22
concurrency = 8

[install]
method = "apt"
bin_dir = "/usr/bin"

[[master]]
name = "m1"
address = "192.0.2.11"

[[worker]]
name = "w1"
address = "192.0.2.21"
"#;

/// What an entry puts in its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Contents {
    Remove,
    Bytes(Vec<u8>),
    /// The generated store's file at this path.
    CopyOf(&'static str),
}

/// One change to a file.
#[derive(Debug, Clone)]
pub struct Entry {
    pub path: &'static str,
    pub to_import_folder: bool,
    pub world_readable: bool,
    pub contents: Contents,
}

const REMOVE: u16 = u16::MAX;
const COPY: u16 = u16::MAX - 1;

fn path_at(index: u8) -> &'static str {
    PATHS[usize::from(index & 0x3f) % PATHS.len()]
}

/// Decode fuzz input into entries (see the module docs).
pub fn entries(mut data: &[u8]) -> Vec<Entry> {
    let mut entries = Vec::new();
    while let [selector, low, high, rest @ ..] = data {
        let length = u16::from_le_bytes([*low, *high]);
        let (contents, rest) = match (length, rest) {
            (REMOVE, rest) => (Contents::Remove, rest),
            (COPY, [source, rest @ ..]) => (Contents::CopyOf(path_at(*source)), rest),
            (COPY, []) => break,
            (length, rest) => {
                let taken = rest.len().min(usize::from(length));
                (Contents::Bytes(rest[..taken].to_vec()), &rest[taken..])
            }
        };
        entries.push(Entry {
            path: path_at(*selector),
            to_import_folder: selector & 0x80 != 0,
            world_readable: selector & 0x40 != 0,
            contents,
        });
        data = rest;
    }
    entries
}

/// Encode entries as fuzz input (for seeds).
pub fn encode(entries: &[Entry]) -> Vec<u8> {
    let mut data = Vec::new();
    for entry in entries {
        let index = PATHS
            .iter()
            .position(|path| *path == entry.path)
            .unwrap_or_default() as u8;
        let mut selector = index;
        if entry.to_import_folder {
            selector |= 0x80;
        }
        if entry.world_readable {
            selector |= 0x40;
        }
        data.push(selector);
        match &entry.contents {
            Contents::Remove => data.extend_from_slice(&REMOVE.to_le_bytes()),
            Contents::CopyOf(source) => {
                data.extend_from_slice(&COPY.to_le_bytes());
                data.push(
                    PATHS
                        .iter()
                        .position(|path| path == source)
                        .unwrap_or_default() as u8,
                );
            }
            Contents::Bytes(contents) => {
                let length = contents.len().min(usize::from(COPY - 1));
                data.extend_from_slice(&(length as u16).to_le_bytes());
                data.extend_from_slice(&contents[..length]);
            }
        }
    }
    data
}

/// What one run accepted.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    pub store_accepted: bool,
    pub import_accepted: bool,
}

/// A generated store to start every run from.
pub struct Fixture {
    _dir: tempfile::TempDir,
    cluster: Cluster,
    /// Every file of the generated store.
    pub files: BTreeMap<String, Vec<u8>>,
}

impl Fixture {
    /// Generate a small store (one master, one worker, ECDSA keys).
    pub fn new() -> anyhow::Result<Fixture> {
        let dir = tempfile::tempdir().context("temp dir")?;
        let inventory = dir.path().join("inventory.toml");
        std::fs::write(&inventory, INVENTORY).context("writing the inventory")?;
        let cluster = crate::inventory::load(&inventory)?.cluster;
        let lock = crate::lock::acquire(&cluster.pki_dir, "fuzz")?;
        let (_, store) = generate::generate_locked(&cluster, &lock)?;
        let mut files = BTreeMap::new();
        for relative in store.files() {
            files.insert(relative.clone(), store.read(&relative)?);
        }
        Ok(Fixture {
            _dir: dir,
            cluster,
            files,
        })
    }

    /// Apply `data` to a fresh copy of the store and a kubeadm folder made
    /// from it, then check the store and import the folder. Panics when a
    /// check accepts what it must not.
    pub fn run(&self, data: &[u8]) -> Outcome {
        let mut outcome = Outcome::default();
        let changes = entries(data);
        let Ok(work) = tempfile::tempdir() else {
            return outcome;
        };
        let mut cluster = self.cluster.clone();
        cluster.pki_dir = work.path().join("store");

        let mut store: BTreeMap<String, (Vec<u8>, bool)> = self
            .files
            .iter()
            .map(|(path, bytes)| (path.clone(), (bytes.clone(), false)))
            .collect();
        let mut folder: BTreeMap<String, (Vec<u8>, bool)> = BTreeMap::new();
        for change in &changes {
            let target = if change.to_import_folder {
                &mut folder
            } else {
                &mut store
            };
            let bytes = match &change.contents {
                Contents::Remove => {
                    target.remove(change.path);
                    continue;
                }
                Contents::Bytes(bytes) => bytes.clone(),
                Contents::CopyOf(source) => match self.files.get(*source) {
                    Some(bytes) => bytes.clone(),
                    None => continue,
                },
            };
            target.insert(change.path.to_string(), (bytes, change.world_readable));
        }
        if write_tree(&cluster.pki_dir, &store).is_err() {
            return outcome;
        }
        if let Ok(checked) = generate::check_complete(&cluster, &Store::open(&cluster.pki_dir)) {
            judge(&checked.store, "the loader");
            outcome.store_accepted = true;
        }

        if folder.is_empty() {
            return outcome;
        }
        let source = work.path().join("kubeadm");
        cluster.pki_dir = work.path().join("imported");
        if write_tree(&source, &folder).is_err() {
            return outcome;
        }
        let Ok(lock) = crate::lock::acquire(&cluster.pki_dir, "fuzz") else {
            return outcome;
        };
        if import::from_kubeadm(&cluster, &lock, &source, "m1").is_ok() {
            let imported = Store::open(&cluster.pki_dir);
            for path in PATHS {
                let _ = imported.read_optional(path);
            }
            judge(&imported.into_checked(&[]), "pki import");
            outcome.import_accepted = true;
        }
        outcome
    }
}

/// Seed inputs for the fuzz target: the store as generated, swapped and
/// foreign keys and certificates, a CA bundle, a key others may read, a
/// kubeconfig with a second user, and kubeadm import folders (one copied
/// from the fixture, one from another store).
pub fn seeds(fixture: &Fixture) -> anyhow::Result<Vec<(String, Vec<u8>)>> {
    let other = Fixture::new()?;
    let entry = |path: &'static str, contents: Contents| Entry {
        path,
        to_import_folder: false,
        world_readable: false,
        contents,
    };
    let bytes = |files: &BTreeMap<String, Vec<u8>>, path: &str| {
        Contents::Bytes(files.get(path).cloned().unwrap_or_default())
    };
    let mut bundle = fixture.files.get("ca.crt").cloned().unwrap_or_default();
    bundle.extend(other.files.get("ca.crt").cloned().unwrap_or_default());
    let mut admin = fixture.files.get("admin.conf").cloned().unwrap_or_default();
    admin.extend_from_slice(b"- name: extra\n  user:\n    token: secret\n");
    let kubeadm = [
        ("ca.crt", "ca.crt"),
        ("ca.key", "ca.key"),
        ("etcd/ca.crt", "etcd/ca.crt"),
        ("etcd/ca.key", "etcd/ca.key"),
        ("front-proxy-ca.crt", "front-proxy-ca.crt"),
        ("front-proxy-ca.key", "front-proxy-ca.key"),
        ("sa.key", "sa.key"),
        ("sa.pub", "sa.pub"),
        ("apiserver-etcd-client.crt", "apiserver-etcd-client.crt"),
        ("apiserver-etcd-client.key", "apiserver-etcd-client.key"),
        ("apiserver.crt", "nodes/m1/apiserver.crt"),
        ("apiserver.key", "nodes/m1/apiserver.key"),
        ("etcd/server.crt", "nodes/m1/etcd/server.crt"),
        ("etcd/server.key", "nodes/m1/etcd/server.key"),
    ];
    let import = |copy: bool| -> Vec<Entry> {
        kubeadm
            .iter()
            .filter_map(|(target, source)| {
                let path = PATHS.iter().find(|path| *path == target)?;
                let source = PATHS.iter().find(|path| *path == source)?;
                Some(Entry {
                    path,
                    to_import_folder: true,
                    world_readable: false,
                    contents: if copy {
                        Contents::CopyOf(source)
                    } else {
                        bytes(&other.files, source)
                    },
                })
            })
            .collect()
    };
    let mut world_readable = entry("ca.key", Contents::CopyOf("ca.key"));
    world_readable.world_readable = true;
    let seeds = vec![
        ("unchanged", Vec::new()),
        (
            "swapped-ca-key",
            vec![entry("ca.key", Contents::CopyOf("etcd/ca.key"))],
        ),
        (
            "swapped-leaf-keys",
            vec![
                entry(
                    "nodes/m1/kubelet.key",
                    Contents::CopyOf("nodes/w1/kubelet.key"),
                ),
                entry(
                    "nodes/w1/kubelet.key",
                    Contents::CopyOf("nodes/m1/kubelet.key"),
                ),
            ],
        ),
        (
            "foreign-leaf",
            vec![
                entry(
                    "nodes/m1/apiserver.crt",
                    bytes(&other.files, "nodes/m1/apiserver.crt"),
                ),
                entry(
                    "nodes/m1/apiserver.key",
                    bytes(&other.files, "nodes/m1/apiserver.key"),
                ),
            ],
        ),
        ("ca-bundle", vec![entry("ca.crt", Contents::Bytes(bundle))]),
        ("world-readable-key", vec![world_readable]),
        (
            "admin-extra-user",
            vec![entry("admin.conf", Contents::Bytes(admin))],
        ),
        (
            "kubeconfig-of-another-node",
            vec![entry(
                "nodes/m1/kubelet.conf",
                Contents::CopyOf("nodes/w1/kubelet.conf"),
            )],
        ),
        ("missing-ca-key", vec![entry("ca.key", Contents::Remove)]),
        ("kubeadm-copied", import(true)),
        ("kubeadm-foreign", import(false)),
    ];
    Ok(seeds
        .into_iter()
        .map(|(name, entries)| (name.to_string(), encode(&entries)))
        .collect())
}

fn write_tree(root: &Path, files: &BTreeMap<String, (Vec<u8>, bool)>) -> std::io::Result<()> {
    for (relative, (bytes, world_readable)) in files {
        let path = root.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let private = super::store_file::is_private(relative);
        let mode = if private && !world_readable {
            0o600
        } else {
            0o644
        };
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&path)?;
        file.write_all(bytes)?;
    }
    Ok(())
}

/// Panic unless every key `store` holds is its certificate's, judged
/// without the store's own checks: the certificate's SubjectPublicKeyInfo
/// as x509-parser reads it against the key's public half as rcgen derives
/// it.
fn judge(store: &Store, who: &str) {
    for relative in store.files() {
        let Ok(bytes) = store.read(&relative) else {
            continue;
        };
        if let Some(base) = relative.strip_suffix(".key") {
            let Ok(Some(cert)) = store.read_optional(&format!("{base}.crt")) else {
                continue;
            };
            assert!(
                pair_matches(&cert, &bytes),
                "{who} accepted {relative}, which is not the key of {base}.crt"
            );
        } else if relative.ends_with(".conf") {
            let Ok(embedded) = kubeconfig::parse(Path::new(&relative), &bytes) else {
                panic!("{who} accepted {relative}, which does not parse as a kubeconfig");
            };
            assert!(
                pair_matches(
                    embedded.certificate.pem.as_bytes(),
                    embedded.key.pem.as_bytes()
                ),
                "{who} accepted {relative}, whose client key is not its certificate's"
            );
        }
    }
}

fn pair_matches(cert: &[u8], key: &[u8]) -> bool {
    let Ok((_, block)) = x509_parser::pem::parse_x509_pem(cert) else {
        return false;
    };
    let Ok(certificate) = block.parse_x509() else {
        return false;
    };
    let Ok(text) = std::str::from_utf8(key) else {
        return false;
    };
    let Ok(pair) = rcgen::KeyPair::from_pem(text) else {
        return false;
    };
    certificate.public_key().raw == rcgen::PublicKeyData::subject_public_key_info(&pair).as_slice()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes the fuzz target's seed corpus into the folder named by
    /// `OCFK8S_FUZZ_SEEDS`: `cargo test --lib write_fuzz_seeds -- --ignored`.
    #[test]
    #[ignore = "writes the fuzz corpus when asked"]
    fn write_fuzz_seeds() {
        let Some(folder) = std::env::var_os("OCFK8S_FUZZ_SEEDS") else {
            return;
        };
        let fixture = Fixture::new().expect("fixture");
        std::fs::create_dir_all(&folder).expect("corpus folder");
        for (name, seed) in seeds(&fixture).expect("seeds") {
            std::fs::write(Path::new(&folder).join(name), seed).expect("write seed");
        }
    }

    #[test]
    fn entries_round_trip_and_the_generated_store_passes() {
        let fixture = Fixture::new().expect("fixture");
        let changes = vec![
            Entry {
                path: "ca.key",
                to_import_folder: false,
                world_readable: false,
                contents: Contents::CopyOf("etcd/ca.key"),
            },
            Entry {
                path: "admin.conf",
                to_import_folder: true,
                world_readable: true,
                contents: Contents::Remove,
            },
            Entry {
                path: "sa.pub",
                to_import_folder: false,
                world_readable: false,
                contents: Contents::Bytes(b"garbage".to_vec()),
            },
        ];
        let decoded = entries(&encode(&changes));
        assert_eq!(decoded.len(), 3);
        assert_eq!(decoded[0].path, "ca.key");
        assert_eq!(decoded[0].contents, changes[0].contents);
        assert!(decoded[1].to_import_folder && decoded[1].world_readable);
        assert_eq!(decoded[1].contents, Contents::Remove);
        assert_eq!(decoded[2].contents, changes[2].contents);
        // Nothing changed: passes; a swapped CA key: refused, no panic.
        assert!(fixture.run(&[]).store_accepted);
        assert!(!fixture.run(&encode(&changes)).store_accepted);
        for (name, seed) in seeds(&fixture).expect("seeds") {
            let outcome = fixture.run(&seed);
            assert_eq!(
                outcome.store_accepted,
                name == "unchanged" || name.starts_with("kubeadm"),
                "{name}"
            );
            assert_eq!(
                outcome.import_accepted,
                name.starts_with("kubeadm"),
                "{name}"
            );
        }
        for (relative, bytes) in &fixture.files {
            if let Some(base) = relative.strip_suffix(".key") {
                if let Some(cert) = fixture.files.get(&format!("{base}.crt")) {
                    assert!(pair_matches(cert, bytes), "{relative}");
                }
            }
        }
    }
}
