//! What rendering produces: the exact set of files one host receives.
//!
//! This is the contract between rendering (pure: cluster + PKI store ->
//! files) and the SSH engine (which makes hosts hold exactly these files).

use std::collections::BTreeSet;

use sha2::{Digest, Sha256};

/// One file a host receives, byte for byte.
///
/// Its `Debug` form shows a secret's size and hash, never its bytes, so a
/// `{:?}` in an error or a log cannot leak a key.
#[derive(Clone, PartialEq, Eq)]
pub struct RenderedFile {
    /// Absolute path on the host, such as `/etc/kubernetes/pki/ca.crt`.
    pub path: String,
    pub contents: Vec<u8>,
    /// Permission bits, such as `0o600` for keys and kubeconfigs.
    pub mode: u32,
    /// Keys and kubeconfigs: never shown, only their hashes.
    pub secret: bool,
    /// systemd units to restart when this file changes (`etcd.service`,
    /// `nginx.service`, ...). Empty for files read on demand.
    pub restarts: Vec<String>,
}

impl std::fmt::Debug for RenderedFile {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let contents = if self.secret {
            format!(
                "<secret: {} bytes, sha256 {}>",
                self.contents.len(),
                self.sha256_hex()
            )
        } else {
            String::from_utf8_lossy(&self.contents).into_owned()
        };
        formatter
            .debug_struct("RenderedFile")
            .field("path", &self.path)
            .field("contents", &contents)
            .field("mode", &format_args!("{:#o}", self.mode))
            .field("secret", &self.secret)
            .field("restarts", &self.restarts)
            .finish()
    }
}

impl RenderedFile {
    /// SHA-256 of the contents, lowercase hex: what plans show for secrets
    /// and what is compared with a host's file.
    pub fn sha256_hex(&self) -> String {
        hex::encode(Sha256::digest(&self.contents))
    }
}

/// Everything one host receives.
#[derive(Debug, Clone)]
pub struct HostFiles {
    /// The node's name in the inventory.
    pub node: String,
    /// Sorted by path.
    pub files: Vec<RenderedFile>,
}

impl HostFiles {
    /// The file at absolute `path`, if this host receives it.
    pub fn file(&self, path: &str) -> Option<&RenderedFile> {
        self.files
            .binary_search_by(|file| file.path.as_str().cmp(path))
            .ok()
            .map(|index| &self.files[index])
    }

    /// Every unit some file of this host restarts (the host's services).
    pub fn units(&self) -> BTreeSet<String> {
        self.files
            .iter()
            .flat_map(|file| file.restarts.iter().cloned())
            .collect()
    }

    /// Units whose inputs are among `changed` paths.
    pub fn units_to_restart<'a>(
        &self,
        changed: impl IntoIterator<Item = &'a str>,
    ) -> BTreeSet<String> {
        let changed: BTreeSet<&str> = changed.into_iter().collect();
        self.files
            .iter()
            .filter(|file| changed.contains(file.path.as_str()))
            .flat_map(|file| file.restarts.iter().cloned())
            .collect()
    }
}
