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
//! ca.next.crt ca.prev.crt ...            a CA rotation in progress (see [`ca_rotation`])
//! archive/                               departed hosts' material, rotated-out CAs
//! ```
//!
//! Certificate and public key files are 0644, private keys and kubeconfigs
//! 0600, folders 0700. The store only ever grows: [`generate`] (what
//! `pki generate` runs) checks everything that exists and adds what the
//! inventory lacks, [`import`] adopts an existing cluster's material, and
//! [`inspect`] reads expiry for `certs check`. What each certificate is
//! (identity, usages, SANs, issuer) is one table in [`certlist`].
//!
//! # One writer, one reader
//!
//! Every write goes through [`atomic_write`] under the exclusive run lock
//! ([`crate::lock`]): a batch is committed by a journal, so a run killed at
//! any instant leaves a store the next writer finishes or rolls back
//! ([`atomic_write::recover`]). Every read goes through [`load`] (or
//! [`generate`], which checks the same way before it writes): under the
//! shared run lock, every file the inventory needs is read without
//! following symlinks ([`store_file`]) and checked (each key against its
//! certificate, each leaf and kubeconfig against its CA, validity dates);
//! the [`Store`] it returns hands out only those checked bytes, never the
//! disk again. So nothing renders, prints or ships a file that was not
//! checked in the same run.

pub(crate) mod atomic_write;
pub(crate) mod ca_rotation;
pub(crate) mod certlist;
#[doc(hidden)]
pub mod fuzz_support;
mod generate;
pub(crate) mod import;
pub(crate) mod inspect;
pub(crate) mod issue;
pub(crate) mod kubeconfig;
pub(crate) mod material;
pub(crate) mod store_file;
mod tls;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use anyhow::Context;

pub(crate) use generate::generate_locked;
pub use generate::Generated;
pub use tls::check_operator_tls;

use crate::error::bad_input;
use crate::inventory::Cluster;
use crate::lock::{self, RunLock};
use crate::printer::Printer;

/// Take the exclusive run lock for a command that writes the store,
/// waiting a while for another run (saying so), and make the store whole
/// after an interrupted run.
pub(crate) fn lock_for_writing(
    cluster: &Cluster,
    command: &str,
    printer: &Printer,
) -> anyhow::Result<RunLock> {
    let lock = lock::acquire_waiting(&cluster.pki_dir, command, lock::STORE_WAIT, &|message| {
        printer.info(message)
    })?;
    recover(&lock, cluster, printer)?;
    Ok(lock)
}

/// Finish or roll back what an interrupted run began (see
/// [`atomic_write::recover`]), saying what was done.
pub(crate) fn recover(lock: &RunLock, cluster: &Cluster, printer: &Printer) -> anyhow::Result<()> {
    let recovered = atomic_write::recover(lock, &cluster.pki_dir)?;
    if recovered.finished > 0 {
        printer.warn(&format!(
            "{}: finished writing {} file(s) an interrupted run had committed",
            cluster.pki_dir.display(),
            recovered.finished
        ));
    }
    if recovered.removed > 0 {
        printer.warn(&format!(
            "{}: removed {} temporary file(s) an interrupted run left",
            cluster.pki_dir.display(),
            recovered.removed
        ));
    }
    Ok(())
}

/// `pki generate`: take the run lock (waiting for a concurrent run, then
/// seeing what it made), recover, check the store and create whatever is
/// missing. See [`generate_locked`].
pub fn generate(cluster: &Cluster, printer: &Printer) -> anyhow::Result<Generated> {
    let lock = lock_for_writing(cluster, "pki generate", printer)?;
    match generate_locked(cluster, &lock) {
        Ok((generated, _)) => Ok(generated),
        Err(error) => {
            // A first run that failed (a full disk) leaves no store behind.
            lock.release_unused_store();
            Err(error)
        }
    }
}

/// Re-issue the leaves `select` picks (new keys, new serials, same CAs)
/// under the run lock: the PKI half of `rotate-certs`. See
/// [`generate::reissue`].
pub fn reissue(
    cluster: &Cluster,
    printer: &Printer,
    select: impl Fn(&certlist::LeafSpec) -> bool,
) -> anyhow::Result<Generated> {
    let lock = lock_for_writing(cluster, "rotate-certs", printer)?;
    generate::reissue(cluster, &lock, select)
}

/// [`reissue`] by a caller that holds the exclusive run lock.
pub(crate) fn reissue_locked(
    cluster: &Cluster,
    lock: &RunLock,
    select: impl Fn(&certlist::LeafSpec) -> bool,
) -> anyhow::Result<Generated> {
    generate::reissue(cluster, lock, select)
}

/// Where the store of `cluster` is in a CA rotation (for `status` and
/// `certs check`): the store is read and checked as [`check`] reads it.
pub fn ca_rotation_state(
    cluster: &Cluster,
    printer: &Printer,
) -> anyhow::Result<ca_rotation::CaRotation> {
    Ok(ca_rotation::rotation_of_checked(
        &check(cluster, printer)?.store,
    ))
}

/// Run the next store step of a CA rotation under the exclusive run lock,
/// recovering first: test support until `rotate-certs --ca` drives it (see
/// [`ca_rotation::ca_rotate_next`]). Returns the steps done after it.
#[doc(hidden)]
pub fn ca_rotate_next_for_tests(
    cluster: &Cluster,
    sa: bool,
    printer: &Printer,
) -> anyhow::Result<u8> {
    let lock = lock_for_writing(cluster, "rotate-certs --ca", printer)?;
    Ok(ca_rotation::ca_rotate_next(cluster, &lock, sa)?.step())
}

/// The pki phase of a run in two halves, so that the store is checked
/// while the run connects to its hosts, and only once:
/// [`Prepared::read`] finishes an interrupted write and checks the whole
/// store; [`Prepared::ensure`] then creates what that check found missing.
/// The run holds the exclusive run lock from before the first half, so the
/// store cannot change between them.
pub(crate) struct Prepared {
    store: Store,
    plan: generate::Plan,
}

impl Prepared {
    pub(crate) fn read(
        cluster: &Cluster,
        lock: &RunLock,
        printer: &Printer,
    ) -> anyhow::Result<Prepared> {
        if !lock.is_exclusive() {
            anyhow::bail!("preparing the PKI store under a lock that is not exclusive");
        }
        let _timer = crate::timings::step("pki store check");
        recover(lock, cluster, printer)?;
        let store = Store::open(&cluster.pki_dir);
        let plan = generate::plan(cluster, &store)?;
        Ok(Prepared { store, plan })
    }

    /// The checked store, when nothing is missing and every certificate is
    /// within its validity: what [`Prepared::ensure`] will return.
    pub(crate) fn ready(&self) -> Option<Store> {
        (self.plan.is_empty() && self.plan.expired.is_empty())
            .then(|| self.store.clone().into_checked(&[]))
    }

    /// Create what is missing (refusing expired certificates): what
    /// `pki generate` does, from this check.
    pub(crate) fn ensure(
        self,
        cluster: &Cluster,
        lock: &RunLock,
    ) -> anyhow::Result<(Generated, Store)> {
        generate::refuse_expired(&self.plan.expired, |_| false)?;
        generate::write(cluster, lock, self.store, self.plan)
    }
}

/// The store as checked, with what the check found that does not make it
/// unreadable but that the caller must act on.
pub struct Checked {
    pub store: Store,
    /// Certificates expired or not yet valid, one message each, naming the
    /// file and how to renew it.
    pub expired: Vec<String>,
    /// Sound material that no longer matches the inventory.
    pub warnings: Vec<String>,
}

/// Open and check the store of `cluster` for reading: the shared run lock
/// is held while the files are read, an interrupted write is finished
/// first, and everything the inventory needs must be present and sound
/// (else bad input, exit 2, naming the files). Certificates outside their
/// validity are reported in [`Checked::expired`].
pub fn check(cluster: &Cluster, printer: &Printer) -> anyhow::Result<Checked> {
    let dir = &cluster.pki_dir;
    let waiting = |message: &str| printer.info(message);
    let Some(shared) = lock::acquire_shared(dir, lock::STORE_WAIT, &waiting)? else {
        return Err(bad_input(format!(
            "{}: no PKI store; run `ocfk8s pki generate` first",
            dir.display()
        )));
    };
    if atomic_write::has_journal(dir) {
        // A batch was committed but not finished: finish it (which needs
        // the exclusive lock) before reading.
        drop(shared);
        let exclusive = lock_for_writing(cluster, "pki recover", printer)?;
        let checked = generate::check_complete(cluster, &Store::open(dir));
        drop(exclusive);
        return checked;
    }
    let checked = generate::check_complete(cluster, &Store::open(dir));
    drop(shared);
    checked
}

/// [`check`], refusing certificates outside their validity: what every
/// command that ships or prints store material uses.
pub fn load(cluster: &Cluster, printer: &Printer) -> anyhow::Result<Store> {
    usable(cluster, check(cluster, printer)?)
}

/// [`load`] for a run that already holds the exclusive run lock (taking
/// the shared one as well would wait for itself): an interrupted write is
/// finished first, then the store is checked the same way.
pub(crate) fn load_locked(
    cluster: &Cluster,
    lock: &RunLock,
    printer: &Printer,
) -> anyhow::Result<Store> {
    if !lock.is_exclusive() {
        anyhow::bail!("reading the PKI store under a lock that is not exclusive");
    }
    recover(lock, cluster, printer)?;
    usable(
        cluster,
        generate::check_complete(cluster, &Store::open(&cluster.pki_dir))?,
    )
}

/// The checked store, unless it holds certificates that cannot be used now.
fn usable(cluster: &Cluster, checked: Checked) -> anyhow::Result<Store> {
    if !checked.expired.is_empty() {
        return Err(bad_input(format!(
            "the PKI store {} holds certificates that cannot be used now:\n  {}",
            cluster.pki_dir.display(),
            checked.expired.join("\n  ")
        )));
    }
    Ok(checked.store)
}

/// Read access to a PKI store. Outside this module a `Store` comes only
/// from [`load`]/[`check`] (or `pki generate`): then it holds the checked
/// bytes of every file the inventory needs and never reads the disk again.
#[derive(Clone)]
pub struct Store {
    dir: PathBuf,
    /// Files about to be written (an import being checked), seen as if they
    /// were already in the store.
    pending: Arc<BTreeMap<String, Vec<u8>>>,
    /// Once checked: the only files this store hands out.
    checked: Option<Arc<BTreeMap<String, Vec<u8>>>>,
    /// While being checked: every file read so far.
    seen: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    /// The store on disk as one walk found it, taken at the first read and
    /// shared by every view of this store, so each file is read once a run.
    snapshot: Arc<OnceLock<store_file::Snapshot>>,
}

impl std::fmt::Debug for Store {
    /// Only the folder: pending files may hold keys.
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Store")
            .field("dir", &self.dir)
            .field("checked", &self.checked.is_some())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// The store on disk, not checked: only for the checks themselves.
    pub(crate) fn open(dir: &Path) -> Self {
        Store {
            dir: dir.to_path_buf(),
            pending: Arc::default(),
            checked: None,
            seen: Arc::default(),
            snapshot: Arc::default(),
        }
    }

    /// A store of the given in-memory files, taken as checked: for rendering
    /// in property tests and fuzzing, where the files are placeholders and
    /// no key material is involved. Never used by the product.
    #[doc(hidden)]
    pub fn from_files_for_tests(dir: &Path, files: BTreeMap<String, Vec<u8>>) -> Store {
        Store {
            dir: dir.to_path_buf(),
            pending: Arc::default(),
            checked: Some(Arc::new(files)),
            seen: Arc::default(),
            snapshot: Arc::default(),
        }
    }

    /// This store as it would be with `pending` written (nothing is written).
    pub(crate) fn with_pending(&self, pending: BTreeMap<String, Vec<u8>>) -> Store {
        Store {
            dir: self.dir.clone(),
            pending: Arc::new(pending),
            checked: None,
            seen: Arc::default(),
            snapshot: Arc::clone(&self.snapshot),
        }
    }

    /// The checked view: what was read while checking, plus `written`.
    pub(crate) fn into_checked(self, written: &[atomic_write::NewFile]) -> Store {
        let mut files = self
            .seen
            .lock()
            .map(|seen| seen.clone())
            .unwrap_or_default();
        for file in written {
            files.insert(file.relative.clone(), file.contents.clone());
        }
        Store {
            dir: self.dir,
            pending: Arc::default(),
            checked: Some(Arc::new(files)),
            seen: Arc::default(),
            snapshot: Arc::default(),
        }
    }

    /// Whether reading it found no file at all (an empty store).
    pub(crate) fn nothing_read(&self) -> bool {
        self.seen
            .lock()
            .map(|seen| seen.is_empty())
            .unwrap_or(false)
    }

    /// Whether this store was checked (see [`load`]).
    pub fn is_checked(&self) -> bool {
        self.checked.is_some()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The absolute path of a store file.
    pub fn path(&self, relative: &str) -> PathBuf {
        self.dir.join(relative)
    }

    /// Store-relative paths of the checked files, in order (empty for an
    /// unchecked store).
    pub fn files(&self) -> Vec<String> {
        self.checked
            .as_ref()
            .map(|files| files.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// The bytes of a store file, or `None` when it does not exist (or, for
    /// a checked store, was not checked). An unchecked store reads the disk
    /// once, at its first read (see [`store_file::Snapshot`]): open a new
    /// one to see later changes.
    pub fn read_optional(&self, relative: &str) -> anyhow::Result<Option<Vec<u8>>> {
        if let Some(bytes) = self.pending.get(relative) {
            return Ok(Some(bytes.clone()));
        }
        if let Some(checked) = &self.checked {
            return Ok(checked.get(relative).cloned());
        }
        let snapshot = self
            .snapshot
            .get_or_init(|| store_file::Snapshot::take(&self.dir));
        let bytes = match snapshot.lookup(relative) {
            store_file::Lookup::Read(bytes) => Some(bytes.to_vec()),
            store_file::Lookup::Missing => None,
            store_file::Lookup::Unknown => store_file::read(&self.dir, relative)?,
        };
        if let (Some(bytes), Ok(mut seen)) = (&bytes, self.seen.lock()) {
            seen.insert(relative.to_string(), bytes.clone());
        }
        Ok(bytes)
    }

    /// The bytes of a store file, by its path relative to the store.
    pub fn read(&self, relative: &str) -> anyhow::Result<Vec<u8>> {
        self.read_optional(relative)?
            .ok_or_else(|| bad_input(format!("{}: missing", self.path(relative).display())))
            .with_context(|| format!("reading PKI store file {relative}"))
    }
}
