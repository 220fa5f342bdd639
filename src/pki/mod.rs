//! The local PKI store: one folder per cluster in kubeadm's layout.
//!
//! Relative paths inside the store (the contract shared with rendering):
//!
//! ```text
//! ca.crt ca.key                          Kubernetes CA (CN kubernetes)
//! front-proxy-ca.crt front-proxy-ca.key  front-proxy CA
//! etcd/ca.crt etcd/ca.key                etcd CA (CN etcd-ca)
//! sa.key sa.pub                          service-account signing pair
//! apiserver-etcd-client.crt/.key         etcd client identity of the apiservers and of ocfk8s
//! admin.conf super-admin.conf            kubeconfigs
//! ingress-ca.crt ingress-ca.key          only when [ingress] has no tls_cert
//! ingress.crt ingress.key                nginx's server certificate, issued by the ingress CA
//! nodes/<name>/kubelet.crt/.key          every node: CN=system:node:<name>, O=system:nodes
//! nodes/<name>/kubelet.conf
//! nodes/<name>/kube-proxy.crt/.key       every node: CN=system:kube-proxy
//! nodes/<name>/kube-proxy.conf
//! nodes/<name>/etcd/server.crt/.key      masters only
//! nodes/<name>/etcd/peer.crt/.key
//! nodes/<name>/etcd/healthcheck-client.crt/.key
//! nodes/<name>/apiserver.crt/.key
//! nodes/<name>/apiserver-kubelet-client.crt/.key
//! nodes/<name>/front-proxy-client.crt/.key
//! nodes/<name>/controller-manager.crt/.key
//! nodes/<name>/controller-manager.conf
//! nodes/<name>/scheduler.crt/.key
//! nodes/<name>/scheduler.conf
//! ```
//!
//! Certificate and public key files are 0644, private keys and kubeconfigs
//! 0600, folders 0700. The store only ever grows: [`ensure`] (what
//! `pki generate` runs) checks everything that exists and adds what the
//! inventory lacks, [`import`] adopts an existing cluster's material, and
//! [`inspect`] reads expiry for `certs check`. What each certificate is
//! (identity, usages, SANs, issuer) is one table in [`certlist`].

pub(crate) mod atomic_write;
pub(crate) mod certlist;
mod generate;
pub(crate) mod import;
pub(crate) mod inspect;
pub(crate) mod issue;
pub(crate) mod kubeconfig;
pub(crate) mod material;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::Context;

pub use generate::{generate, reissue, Generated};

use crate::inventory::Cluster;

/// Make the store complete for `cluster` and open it: creates whatever is
/// missing (see [`generate`]) and never replaces existing material. Fails
/// with bad input (exit 2), writing nothing, when the existing store is
/// inconsistent. Other code (rendering, operations) calls this before
/// reading the store.
pub fn ensure(cluster: &Cluster) -> anyhow::Result<Store> {
    generate(cluster)?;
    Ok(Store::open(&cluster.pki_dir))
}

/// Read access to a PKI store on disk.
#[derive(Clone)]
pub struct Store {
    dir: PathBuf,
    /// Files about to be written (an import being checked), seen as if they
    /// were already in the store.
    pending: Arc<BTreeMap<String, Vec<u8>>>,
}

impl std::fmt::Debug for Store {
    /// Only the folder: pending files may hold keys.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Store")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Store {
    pub fn open(dir: &Path) -> Self {
        Store {
            dir: dir.to_path_buf(),
            pending: Arc::default(),
        }
    }

    /// This store as it would be with `pending` written (nothing is written).
    pub(crate) fn with_pending(&self, pending: BTreeMap<String, Vec<u8>>) -> Store {
        Store {
            dir: self.dir.clone(),
            pending: Arc::new(pending),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The absolute path of a store file.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.join(relative)
    }

    /// The bytes of a store file, or `None` when it does not exist.
    pub fn read_optional(&self, relative: &str) -> anyhow::Result<Option<Vec<u8>>> {
        if let Some(bytes) = self.pending.get(relative) {
            return Ok(Some(bytes.clone()));
        }
        let path = self.dir.join(relative);
        match std::fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(error) => {
                Err(error).with_context(|| format!("reading PKI store file {}", path.display()))
            }
        }
    }

    /// The bytes of a store file, by its path relative to the store.
    pub fn read(&self, relative: &str) -> anyhow::Result<Vec<u8>> {
        let path = self.dir.join(relative);
        std::fs::read(&path).with_context(|| format!("reading PKI store file {}", path.display()))
    }
}
