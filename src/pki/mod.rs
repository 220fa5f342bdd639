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

use std::path::{Path, PathBuf};

use anyhow::Context;

/// Read access to a PKI store on disk.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    pub fn open(dir: &Path) -> Self {
        Store {
            dir: dir.to_path_buf(),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The bytes of a store file, by its path relative to the store.
    pub fn read(&self, relative: &str) -> anyhow::Result<Vec<u8>> {
        let path = self.dir.join(relative);
        std::fs::read(&path).with_context(|| format!("reading PKI store file {}", path.display()))
    }
}
