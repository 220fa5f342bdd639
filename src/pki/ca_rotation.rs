//! CA rotation in the store: the Kubernetes, etcd and front-proxy CAs (and,
//! when asked, the service-account key) replaced in three steps, each a
//! single journaled batch, with the step read from the store's files alone.
//!
//! ```text
//! step 0, no rotation   ca.crt ca.key                   one CA per authority
//! step 1 done           ca.crt ca.key                   the old CA, still signing every leaf
//! ("trusting")          ca.next.crt ca.next.key         the new CA, trusted beside it
//! step 2 done           ca.crt ca.key                   the new CA, which signed every leaf
//! ("reissued")          ca.prev.crt ca.prev.key         the old CA, still trusted
//! step 3 done = step 0  ca.crt ca.key                   the new CA only
//!                       archive/ca_<UTC time>/ca.crt... the old CAs, under their usual names
//! ```
//!
//! The same for `etcd/ca.*` (`etcd/ca.next.crt`...) and `front-proxy-ca.*`,
//! and with `--sa` for `sa.key`/`sa.pub` (`sa.next.key`, `sa.prev.pub`).
//! The ingress CA signs only what outside clients see and is not rotated.
//!
//! So `ca.crt`/`ca.key` are always the CA that signs: `pki generate`,
//! leaf rotation and rendering keep using them unchanged, and after step 3
//! the store is a normal store. The second file is what makes a rotation:
//! every trust root a host receives (`ca.crt`, `etcd/ca.crt`,
//! `front-proxy-ca.crt`, every kubeconfig's `certificate-authority-data`,
//! `sa.pub`) is the current CA followed by the second one while it exists.
//! The store's kubeconfigs carry that bundle too, so the operator's
//! `admin.conf` works against every apiserver while their certificates
//! change. A leaf signed by either CA of a rotation is accepted; anything
//! else is refused as before. Archived CAs go to `archive/ca_<time>/`: an
//! underscore, which no host name has, so they never pass for a departed
//! host's material (`archive/<host>-<time>/`).
//!
//! Steps: 0->1 creates the new CAs (same algorithm, fresh validity, random
//! serial, the authority's CN plus an OU naming the rotation, so both fit in
//! one bundle) and rewrites every kubeconfig to trust both; 1->2 swaps the
//! CAs (`.next` becomes the signer, the old one `.prev`) and re-issues
//! every leaf and kubeconfig of the rotated authorities from the new CA;
//! 2->3 moves the `.prev` files to the archive and rewrites the kubeconfigs
//! to trust the new CA only. Each is one batch of
//! [`atomic_write::write_batch_removing`]: a run killed at any instant
//! leaves the store before or after the step, once [`super::recover`] ran.

use std::collections::BTreeMap;

use anyhow::Context;
use serde::Serialize;

use super::atomic_write::{self, Interrupt, NewFile, PRIVATE, PUBLIC};
use super::certlist::{
    self, rotation_path, Authority, RotationSlot, SERVICE_ACCOUNT_KEY, SERVICE_ACCOUNT_PUB,
};
use super::generate::{self, AuthorityState, LeafAction, Plan};
use super::issue;
use super::kubeconfig;
use super::material::{self, Certificate, CertificateAuthority};
use super::Store;
use crate::error::bad_input;
use crate::inventory::Cluster;
use crate::lock::RunLock;

/// Where archived CAs go, below the store's archive folder.
pub(crate) const ARCHIVE_PREFIX: &str = "ca_";

/// The store's archive folder (shared with departed hosts' material).
const ARCHIVE_DIR: &str = "archive";

/// What the checker found of a rotation in progress.
#[derive(Default)]
pub(crate) struct Rotation {
    /// Which second files exist (all in one slot); `None` outside a rotation.
    pub slot: Option<RotationSlot>,
    /// The second CA of each rotated authority.
    pub others: BTreeMap<Authority, Box<CertificateAuthority>>,
    /// A second service-account key pair exists.
    pub service_account: bool,
    /// Leaves (bases) signed by the second CA rather than the current one.
    pub from_other: Vec<String>,
}

/// Where a store is in a CA rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaRotation {
    /// Step 0 (or step 3 done): one CA per authority.
    None,
    /// Step 1 done: the new CAs exist beside the old ones, which still sign
    /// every leaf; hosts are to trust both.
    Trusting(Involved),
    /// Step 2 done: every leaf of the rotated authorities was re-issued from
    /// the new CAs; the old ones are still trusted.
    Reissued(Involved),
}

/// What a rotation in progress involves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Involved {
    pub authorities: Vec<Authority>,
    /// The service-account key rotates too (`--sa`).
    pub service_account: bool,
}

/// [`CaRotation`] as `certs check -o json` and `status` show it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RotationReport {
    /// `none`, `trusting` or `reissued`.
    pub state: &'static str,
    /// Steps done of 3 (0 outside a rotation).
    pub step: u8,
    /// The CAs involved, by `certs check` label.
    pub authorities: Vec<&'static str>,
    pub service_account: bool,
    /// One line for people.
    pub summary: String,
    /// The command that runs the next step, when one is pending.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

impl CaRotation {
    /// Steps done of 3 (0 outside a rotation).
    pub fn step(&self) -> u8 {
        match self {
            CaRotation::None => 0,
            CaRotation::Trusting(_) => 1,
            CaRotation::Reissued(_) => 2,
        }
    }

    pub fn involved(&self) -> Option<&Involved> {
        match self {
            CaRotation::None => None,
            CaRotation::Trusting(involved) | CaRotation::Reissued(involved) => Some(involved),
        }
    }

    pub fn report(&self) -> RotationReport {
        let next = "`ocfk8s rotate-certs --ca`".to_string();
        let (state, summary, next) = match self {
            CaRotation::None => ("none", "CA rotation: none in progress".to_string(), None),
            CaRotation::Trusting(_) => (
                "trusting",
                format!(
                    "CA rotation: step 1 of 3 done (new CAs trusted, leaves still from the old \
                     CAs); next: {next}"
                ),
                Some(next),
            ),
            CaRotation::Reissued(_) => (
                "reissued",
                format!(
                    "CA rotation: step 2 of 3 done (every leaf from the new CAs, the old CAs \
                     still trusted); next: {next}"
                ),
                Some(next),
            ),
        };
        let involved = self.involved();
        RotationReport {
            state,
            step: self.step(),
            authorities: involved
                .map(|involved| {
                    involved
                        .authorities
                        .iter()
                        .map(|authority| authority.label())
                        .collect()
                })
                .unwrap_or_default(),
            service_account: involved.is_some_and(|involved| involved.service_account),
            summary,
            next,
        }
    }
}

fn state_of(rotation: &Rotation) -> CaRotation {
    let involved = Involved {
        authorities: rotation.others.keys().copied().collect(),
        service_account: rotation.service_account,
    };
    match rotation.slot {
        None => CaRotation::None,
        Some(RotationSlot::Next) => CaRotation::Trusting(involved),
        Some(RotationSlot::Prev) => CaRotation::Reissued(involved),
    }
}

/// Where `store` is in a CA rotation, from its files: the store is read
/// and checked as every reader checks it (an inconsistent rotation, such as
/// both a `.next` and a `.prev` file, is bad input).
pub(crate) fn ca_rotation_step(cluster: &Cluster, store: &Store) -> anyhow::Result<CaRotation> {
    let plan = generate::plan(cluster, store)?;
    Ok(state_of(&plan.rotation))
}

/// Perform the next store step of a CA rotation (see the module docs) as
/// one journaled batch, under the exclusive run lock, and return where the
/// store is now. `sa` also rotates the service-account key when the
/// rotation starts; given later, it must match what the store shows. The
/// store must be complete and sound first (bad input otherwise, nothing
/// written).
pub(crate) fn ca_rotate_next(
    cluster: &Cluster,
    lock: &RunLock,
    sa: bool,
) -> anyhow::Result<CaRotation> {
    rotate_next(cluster, lock, sa, Interrupt::Never)
}

/// [`ca_rotate_next`], stopping where a test interrupts the batch.
fn rotate_next(
    cluster: &Cluster,
    lock: &RunLock,
    sa: bool,
    interrupt: Interrupt,
) -> anyhow::Result<CaRotation> {
    if !lock.is_exclusive() {
        anyhow::bail!("rotating the CAs needs the exclusive run lock");
    }
    let dir = &cluster.pki_dir;
    atomic_write::recover(lock, dir)?;
    let store = Store::open(dir);
    let plan = generate::plan(cluster, &store)?;
    let missing = plan.missing();
    if !missing.is_empty() {
        return Err(bad_input(format!(
            "the PKI store {} is incomplete (missing {}); run `ocfk8s pki generate` before \
             rotating the CAs; nothing was changed",
            dir.display(),
            missing.join(", ")
        )));
    }
    let slot = plan.rotation.slot;
    // Expired leaves are fine where every leaf is re-issued anyway.
    let all_reissued = slot == Some(RotationSlot::Next);
    generate::refuse_expired(&plan.expired, |_| all_reissued)?;
    if sa && slot.is_some() && !plan.rotation.service_account {
        return Err(bad_input(
            "--sa: this CA rotation started without the service-account key, which is \
             rotated only from the start of a rotation; finish this one, then start another \
             with --sa; nothing was changed"
                .to_string(),
        ));
    }
    let (files, removals) = match slot {
        None => trust(cluster, &store, &plan, sa)?,
        Some(RotationSlot::Next) => reissue(cluster, &store, plan)?,
        Some(RotationSlot::Prev) => archive(cluster, &store, &plan)?,
    };
    atomic_write::write_batch_until(lock, dir, &files, &removals, interrupt)?;
    ca_rotation_step(cluster, &Store::open(dir))
}

/// The authorities a rotation of `cluster` replaces.
fn rotated(cluster: &Cluster) -> Vec<Authority> {
    certlist::authorities(cluster)
        .into_iter()
        .filter(|authority| authority.rotates())
        .collect()
}

fn current(plan: &Plan, authority: Authority) -> anyhow::Result<&CertificateAuthority> {
    match plan.authorities.get(&authority) {
        Some(AuthorityState::Existing(ca)) => Ok(ca),
        _ => Err(anyhow::anyhow!(
            "the store has no usable {}",
            authority.label()
        )),
    }
}

/// Now in UTC as `20250102T030405Z`.
fn utc_stamp() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

/// Step 0 -> 1: new CAs (and service-account key) beside the current ones,
/// every kubeconfig trusting both.
fn trust(
    cluster: &Cluster,
    store: &Store,
    plan: &Plan,
    sa: bool,
) -> anyhow::Result<(Vec<NewFile>, Vec<String>)> {
    // The time, for people, and random bits, so that two rotations within
    // one second still give distinct subjects.
    let unit = format!(
        "ocfk8s rotation {} {:08x}",
        utc_stamp(),
        rand::random::<u32>()
    );
    let mut files = Vec::new();
    let mut created: BTreeMap<Authority, CertificateAuthority> = BTreeMap::new();
    for authority in rotated(cluster) {
        let ca = issue::new_authority_in_unit(
            &authority.common_name(cluster),
            Some(&unit),
            cluster.key_algorithm,
            cluster.ca_validity_days,
        )?;
        let subject = |certificate: &Certificate| {
            certificate
                .x509()
                .map(|parsed| parsed.subject().to_string())
                .unwrap_or_default()
        };
        if subject(&ca.certificate) == subject(&current(plan, authority)?.certificate) {
            anyhow::bail!(
                "the new {} has the subject of the current one; run the step again",
                authority.label()
            );
        }
        files.push(NewFile {
            relative: authority.rotation_cert_path(RotationSlot::Next),
            contents: ca.certificate.pem.clone().into_bytes(),
            mode: PUBLIC,
        });
        files.push(NewFile {
            relative: authority.rotation_key_path(RotationSlot::Next),
            contents: ca.key.pem.clone().into_bytes(),
            mode: PRIVATE,
        });
        created.insert(authority, ca);
    }
    if sa {
        let key = issue::generate_key(cluster.key_algorithm)?;
        files.push(NewFile {
            relative: rotation_path(SERVICE_ACCOUNT_KEY, RotationSlot::Next),
            contents: key.pem.clone().into_bytes(),
            mode: PRIVATE,
        });
        files.push(NewFile {
            relative: rotation_path(SERVICE_ACCOUNT_PUB, RotationSlot::Next),
            contents: key.public_pem().into_bytes(),
            mode: PUBLIC,
        });
    }
    let mut trusted = BTreeMap::new();
    for (authority, ca) in &created {
        trusted.insert(
            *authority,
            vec![&current(plan, *authority)?.certificate, &ca.certificate],
        );
    }
    files.extend(rewrite_kubeconfigs(cluster, store, &trusted)?);
    Ok((files, Vec::new()))
}

/// Step 1 -> 2: the new CAs become the signers (the old ones move to
/// `.prev`), and every leaf of the rotated authorities is re-issued from
/// them, as `rotate-certs` re-issues leaves, with kubeconfigs trusting new
/// then old.
fn reissue(
    cluster: &Cluster,
    store: &Store,
    mut plan: Plan,
) -> anyhow::Result<(Vec<NewFile>, Vec<String>)> {
    let mut files = Vec::new();
    let mut removals = Vec::new();
    let others = std::mem::take(&mut plan.rotation.others);
    for (authority, new) in others {
        let Some(AuthorityState::Existing(old)) = plan.authorities.remove(&authority) else {
            anyhow::bail!("the store has no usable {}", authority.label());
        };
        files.push(NewFile {
            relative: authority.cert_path().to_string(),
            contents: new.certificate.pem.clone().into_bytes(),
            mode: PUBLIC,
        });
        files.push(NewFile {
            relative: authority.key_path().to_string(),
            contents: new.key.pem.clone().into_bytes(),
            mode: PRIVATE,
        });
        files.push(NewFile {
            relative: authority.rotation_cert_path(RotationSlot::Prev),
            contents: old.certificate.pem.clone().into_bytes(),
            mode: PUBLIC,
        });
        files.push(NewFile {
            relative: authority.rotation_key_path(RotationSlot::Prev),
            contents: old.key.pem.clone().into_bytes(),
            mode: PRIVATE,
        });
        removals.push(authority.rotation_cert_path(RotationSlot::Next));
        removals.push(authority.rotation_key_path(RotationSlot::Next));
        plan.authorities
            .insert(authority, AuthorityState::Existing(new));
        plan.rotation.others.insert(authority, old);
    }
    if plan.rotation.service_account {
        for (path, mode) in [
            (SERVICE_ACCOUNT_KEY, PRIVATE),
            (SERVICE_ACCOUNT_PUB, PUBLIC),
        ] {
            let next = rotation_path(path, RotationSlot::Next);
            files.push(NewFile {
                relative: path.to_string(),
                contents: store.read(&next)?,
                mode,
            });
            files.push(NewFile {
                relative: rotation_path(path, RotationSlot::Prev),
                contents: store.read(path)?,
                mode,
            });
            removals.push(next);
        }
    }
    // Every leaf of a rotated authority anew; what else the plan would
    // repair (nothing, in a complete store) stays as planned.
    let mut planned: BTreeMap<String, LeafAction> = std::mem::take(&mut plan.leaves)
        .into_iter()
        .map(|(spec, action)| (spec.base, action))
        .collect();
    for spec in certlist::leaves(cluster) {
        let repair = planned.remove(&spec.base);
        if plan.rotation.others.contains_key(&spec.authority) {
            plan.leaves.push((spec, LeafAction::Create));
        } else if let Some(action) = repair {
            plan.leaves.push((spec, action));
        }
    }
    plan.rotation.slot = Some(RotationSlot::Prev);
    files.extend(generate::execute(cluster, plan)?);
    Ok((files, removals))
}

/// Step 2 -> 3: the old CAs (and service-account key) move to
/// `archive/ca_<time>/` under their usual names, and every kubeconfig
/// trusts the new CA only.
fn archive(
    cluster: &Cluster,
    store: &Store,
    plan: &Plan,
) -> anyhow::Result<(Vec<NewFile>, Vec<String>)> {
    if !plan.rotation.from_other.is_empty() {
        return Err(bad_input(format!(
            "{} certificate(s) are still signed by the old CAs ({}); re-issue them from the \
             new CAs (`ocfk8s rotate-certs --only ...`) and push them before the old CAs \
             are dropped; nothing was changed",
            plan.rotation.from_other.len(),
            plan.rotation.from_other.join(", ")
        )));
    }
    let archive = store.path(ARCHIVE_DIR);
    match std::fs::symlink_metadata(&archive) {
        Ok(metadata) if metadata.is_dir() => {}
        Ok(metadata) => {
            return Err(bad_input(format!(
                "{}: {}, not a folder; the store keeps archived CAs there",
                archive.display(),
                crate::input_file::kind_of(metadata.file_type())
            )))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(error).with_context(|| format!("reading {}", archive.display()));
        }
    }
    // A `ca_<time>` folder holding only empty folders is what a run killed
    // before its batch was committed leaves (the batch makes its folders
    // first, and recovery removes the temporaries): remove it.
    if let Ok(entries) = std::fs::read_dir(&archive) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.to_string_lossy().starts_with(ARCHIVE_PREFIX)
                && entry.file_type().is_ok_and(|kind| kind.is_dir())
            {
                remove_empty_folders(&entry.path());
            }
        }
    }
    let stamp = utc_stamp();
    let mut folder = format!("{ARCHIVE_DIR}/{ARCHIVE_PREFIX}{stamp}");
    let mut attempt = 1;
    while std::fs::symlink_metadata(store.path(&folder)).is_ok() {
        attempt += 1;
        folder = format!("{ARCHIVE_DIR}/{ARCHIVE_PREFIX}{stamp}-{attempt}");
    }
    let mut files = Vec::new();
    let mut removals = Vec::new();
    let mut moved = |normal: &str, mode: u32| -> anyhow::Result<()> {
        let second = rotation_path(normal, RotationSlot::Prev);
        files.push(NewFile {
            relative: format!("{folder}/{normal}"),
            contents: store.read(&second)?,
            mode,
        });
        removals.push(second);
        Ok(())
    };
    for authority in plan.rotation.others.keys() {
        moved(authority.cert_path(), PUBLIC)?;
        moved(authority.key_path(), PRIVATE)?;
    }
    if plan.rotation.service_account {
        moved(SERVICE_ACCOUNT_KEY, PRIVATE)?;
        moved(SERVICE_ACCOUNT_PUB, PUBLIC)?;
    }
    let mut trusted = BTreeMap::new();
    for authority in plan.rotation.others.keys() {
        trusted.insert(*authority, vec![&current(plan, *authority)?.certificate]);
    }
    files.extend(rewrite_kubeconfigs(cluster, store, &trusted)?);
    Ok((files, removals))
}

/// Remove `folder` if it holds nothing but empty folders (never following
/// symlinks: `remove_dir` refuses anything but an empty folder).
fn remove_empty_folders(folder: &std::path::Path) {
    if let Ok(entries) = std::fs::read_dir(folder) {
        for entry in entries.flatten() {
            if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
                remove_empty_folders(&entry.path());
            }
        }
    }
    let _ = std::fs::remove_dir(folder);
}

/// Every kubeconfig of an authority in `trusted`, with the same client
/// pair and server, trusting those CAs; only those that change.
fn rewrite_kubeconfigs(
    cluster: &Cluster,
    store: &Store,
    trusted: &BTreeMap<Authority, Vec<&Certificate>>,
) -> anyhow::Result<Vec<NewFile>> {
    let mut files = Vec::new();
    for spec in certlist::leaves(cluster) {
        let (Some(wanted), Some(authorities)) = (&spec.kubeconfig, trusted.get(&spec.authority))
        else {
            continue;
        };
        let relative = spec.conf_path();
        let bytes = store.read(&relative)?;
        let embedded = kubeconfig::parse(&store.path(&relative), &bytes)?;
        let text = kubeconfig::render(
            &cluster.name,
            &embedded.server,
            &wanted.user,
            authorities,
            &embedded.certificate,
            &embedded.key,
        );
        if text.as_bytes() != bytes.as_slice() {
            files.push(NewFile {
                relative,
                contents: text.into_bytes(),
                mode: PRIVATE,
            });
        }
    }
    Ok(files)
}

/// The CAs a host is to trust for `authority` in a checked store: the
/// current CA, then the second CA of a rotation in progress, as one PEM
/// bundle (byte-identical to the store's file outside a rotation).
pub(crate) fn trust_bundle(store: &Store, authority: Authority) -> anyhow::Result<Vec<u8>> {
    bundle_of(store, authority.cert_path(), |path| {
        Certificate::parse(&store.path(path), &store.read(path)?)
    })
}

/// The service-account public keys the apiserver accepts tokens from: the
/// current key, then the second one of a rotation in progress.
pub(crate) fn service_account_keys(store: &Store) -> anyhow::Result<Vec<u8>> {
    let current = store.read(SERVICE_ACCOUNT_PUB)?;
    for slot in RotationSlot::ALL {
        if let Some(other) = store.read_optional(&rotation_path(SERVICE_ACCOUNT_PUB, slot))? {
            let mut text = current;
            if !text.ends_with(b"\n") {
                text.push(b'\n');
            }
            text.extend(other);
            return Ok(text);
        }
    }
    Ok(current)
}

fn bundle_of(
    store: &Store,
    path: &str,
    parse: impl Fn(&str) -> anyhow::Result<Certificate>,
) -> anyhow::Result<Vec<u8>> {
    for slot in RotationSlot::ALL {
        let second = rotation_path(path, slot);
        if store.read_optional(&second)?.is_some() {
            let first = parse(path)?;
            let other = parse(&second)?;
            return Ok(material::bundle_pem(&[&first, &other]).into_bytes());
        }
    }
    store.read(path)
}

/// Where a checked store is in a CA rotation, from the files it holds
/// (the check that made it refused inconsistent ones): what rendering and
/// `certs check` ask, without checking signatures again.
pub fn rotation_of_checked(store: &Store) -> CaRotation {
    let files = store.files();
    let has = |path: &str| files.iter().any(|file| file == path);
    for slot in RotationSlot::ALL {
        let authorities: Vec<Authority> = Authority::ALL
            .into_iter()
            .filter(|authority| authority.rotates() && has(&authority.rotation_cert_path(slot)))
            .collect();
        let service_account = has(&rotation_path(SERVICE_ACCOUNT_PUB, slot));
        if authorities.is_empty() && !service_account {
            continue;
        }
        let involved = Involved {
            authorities,
            service_account,
        };
        return match slot {
            RotationSlot::Next => CaRotation::Trusting(involved),
            RotationSlot::Prev => CaRotation::Reissued(involved),
        };
    }
    CaRotation::None
}

/// Whether a checked store is in a CA rotation.
pub(crate) fn in_rotation(store: &Store) -> bool {
    rotation_of_checked(store) != CaRotation::None
}

/// Refuse (exit 2) a host whose `/etc/kubernetes/pki/ca.crt` (`host_ca_pem`)
/// holds anything but this store's Kubernetes CAs (the current one, or the
/// other of a rotation in progress): a host of another cluster, whose
/// certificates no CA of this store signed.
// Called by `rotate-certs --ca` before it changes anything on a host.
#[cfg_attr(not(test), allow(dead_code))]
pub(crate) fn same_cluster_ca(
    cluster: &Cluster,
    store: &Store,
    host_ca_pem: &[u8],
) -> anyhow::Result<()> {
    let host_file = std::path::Path::new("/etc/kubernetes/pki/ca.crt");
    let refuse = |what: String| {
        bad_input(format!(
            "{what}; it belongs to another cluster than the store {} of {}, or was changed \
             by hand; nothing was changed",
            store.dir().display(),
            cluster.name
        ))
    };
    let host_cas = material::parse_bundle(host_file, host_ca_pem)
        .map_err(|error| refuse(format!("the host's {error:#}")))?;
    let authority = Authority::Kubernetes;
    let mut ours = vec![store.read(authority.cert_path())?];
    for slot in RotationSlot::ALL {
        ours.extend(store.read_optional(&authority.rotation_cert_path(slot))?);
    }
    let ours: Vec<Certificate> = ours
        .iter()
        .map(|bytes| Certificate::parse(&store.path(authority.cert_path()), bytes))
        .collect::<anyhow::Result<_>>()?;
    for host_ca in &host_cas {
        if !ours.iter().any(|our| our.der == host_ca.der) {
            return Err(refuse(format!(
                "the host's {} trusts a CA that is not this store's ({})",
                host_file.display(),
                crate::input_file::excerpt(
                    &host_ca
                        .x509()
                        .map(|parsed| parsed.subject().to_string())
                        .unwrap_or_default(),
                    120
                )
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lock;

    const INVENTORY: &str = r#"
[cluster]
name = "unit"
kubernetes_version = "1.31.4"
pod_cidr = "10.244.0.0/16"
service_cidr = "10.96.0.0/12"
key_algorithm = "ecdsa-p256"

[ssh]
user = "root"

[install]
method = "none"
bin_dir = "/usr/bin"

[[master]]
name = "m1"
address = "192.0.2.11"

[[worker]]
name = "w1"
address = "192.0.2.21"
"#;

    struct Fixture {
        _dir: tempfile::TempDir,
        cluster: Cluster,
        lock: RunLock,
    }

    fn generated() -> Fixture {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("inventory.toml");
        std::fs::write(&path, INVENTORY).expect("write inventory");
        let cluster = crate::inventory::load(&path).expect("inventory").cluster;
        let lock = lock::acquire(&cluster.pki_dir, "test").expect("lock");
        generate::generate_locked(&cluster, &lock).expect("generate");
        Fixture {
            _dir: dir,
            cluster,
            lock,
        }
    }

    impl Fixture {
        fn read(&self, relative: &str) -> Vec<u8> {
            std::fs::read(self.cluster.pki_dir.join(relative)).expect(relative)
        }

        fn certificate(&self, relative: &str) -> Certificate {
            Certificate::parse(&self.cluster.pki_dir.join(relative), &self.read(relative))
                .expect(relative)
        }

        fn step(&self) -> CaRotation {
            ca_rotation_step(&self.cluster, &Store::open(&self.cluster.pki_dir)).expect("step")
        }

        /// The store reads as every reader reads it, and `pki generate`
        /// has nothing to add.
        fn sound(&self) {
            generate::check_complete(&self.cluster, &Store::open(&self.cluster.pki_dir))
                .expect("checked");
            let (generated, _) =
                generate::generate_locked(&self.cluster, &self.lock).expect("generate");
            assert!(generated.created.is_empty(), "{:?}", generated.created);
        }

        fn kubeconfig_trusts(&self, relative: &str) -> Vec<Vec<u8>> {
            kubeconfig::parse(std::path::Path::new(relative), &self.read(relative))
                .expect(relative)
                .authorities
                .into_iter()
                .map(|certificate| certificate.der)
                .collect()
        }

        fn kubeconfig_client(&self, relative: &str) -> Certificate {
            kubeconfig::parse(std::path::Path::new(relative), &self.read(relative))
                .expect(relative)
                .certificate
        }
    }

    const LEAVES: [(&str, &str); 4] = [
        ("nodes/m1/apiserver.crt", "ca"),
        ("nodes/w1/kubelet-server.crt", "ca"),
        ("nodes/m1/etcd/server.crt", "etcd/ca"),
        ("nodes/m1/front-proxy-client.crt", "front-proxy-ca"),
    ];

    #[test]
    fn three_steps_trust_reissue_and_archive_back_to_a_normal_store() {
        let fixture = generated();
        assert_eq!(fixture.step(), CaRotation::None);
        let old = fixture.certificate("ca.crt");
        let old_etcd = fixture.certificate("etcd/ca.crt");
        let admin_before = fixture.kubeconfig_client("admin.conf");

        // Step 1: the new CAs beside the old, distinct in subject and key.
        let state = ca_rotate_next(&fixture.cluster, &fixture.lock, false).expect("step 1");
        assert_eq!(
            state,
            CaRotation::Trusting(Involved {
                authorities: vec![
                    Authority::Kubernetes,
                    Authority::Etcd,
                    Authority::FrontProxy
                ],
                service_account: false
            })
        );
        assert_eq!(fixture.step(), state);
        let new = fixture.certificate("ca.next.crt");
        assert_eq!(fixture.certificate("ca.crt").der, old.der);
        assert_eq!(new.common_name(), "kubernetes");
        assert_ne!(
            new.x509().expect("new").subject().to_string(),
            old.x509().expect("old").subject().to_string()
        );
        assert!(!fixture.cluster.pki_dir.join("ingress-ca.next.crt").exists());
        for (leaf, _) in LEAVES {
            let ca = if leaf.contains("etcd") {
                &old_etcd
            } else if leaf.contains("front-proxy") {
                continue;
            } else {
                &old
            };
            assert!(fixture.certificate(leaf).is_signed_by(ca), "{leaf}");
        }
        // Kubeconfigs trust old then new, same client certificate.
        assert_eq!(
            fixture.kubeconfig_trusts("admin.conf"),
            vec![old.der.clone(), new.der.clone()]
        );
        assert_eq!(
            fixture.kubeconfig_client("admin.conf").der,
            admin_before.der
        );
        fixture.sound();
        // A new leaf now is still signed by the current (old) CA.
        std::fs::remove_file(fixture.cluster.pki_dir.join("nodes/w1/kube-proxy.conf")).expect("rm");
        std::fs::remove_file(fixture.cluster.pki_dir.join("nodes/w1/kube-proxy.crt")).expect("rm");
        std::fs::remove_file(fixture.cluster.pki_dir.join("nodes/w1/kube-proxy.key")).expect("rm");
        generate::generate_locked(&fixture.cluster, &fixture.lock).expect("generate");
        assert!(fixture
            .certificate("nodes/w1/kube-proxy.crt")
            .is_signed_by(&old));
        assert_eq!(
            fixture.kubeconfig_trusts("nodes/w1/kube-proxy.conf"),
            vec![old.der.clone(), new.der.clone()]
        );

        // Step 2: the new CA signs, the old one is kept beside it.
        let state = ca_rotate_next(&fixture.cluster, &fixture.lock, false).expect("step 2");
        assert!(matches!(state, CaRotation::Reissued(_)), "{state:?}");
        assert_eq!(fixture.certificate("ca.crt").der, new.der);
        assert_eq!(fixture.certificate("ca.prev.crt").der, old.der);
        assert!(!fixture.cluster.pki_dir.join("ca.next.crt").exists());
        assert!(!fixture.cluster.pki_dir.join("ca.next.key").exists());
        let new_etcd = fixture.certificate("etcd/ca.crt");
        assert_ne!(new_etcd.der, old_etcd.der);
        for (leaf, _) in LEAVES {
            let ca = if leaf.contains("etcd") {
                &new_etcd
            } else if leaf.contains("front-proxy") {
                continue;
            } else {
                &new
            };
            assert!(fixture.certificate(leaf).is_signed_by(ca), "{leaf}");
        }
        for conf in ["admin.conf", "super-admin.conf", "nodes/w1/kubelet.conf"] {
            assert!(fixture.kubeconfig_client(conf).is_signed_by(&new), "{conf}");
            assert_eq!(
                fixture.kubeconfig_trusts(conf),
                vec![new.der.clone(), old.der.clone()]
            );
        }
        fixture.sound();

        // Step 3: the old CAs archived, a normal store whose CA is the new.
        let state = ca_rotate_next(&fixture.cluster, &fixture.lock, false).expect("step 3");
        assert_eq!(state, CaRotation::None);
        assert_eq!(fixture.certificate("ca.crt").der, new.der);
        for gone in [
            "ca.prev.crt",
            "ca.prev.key",
            "etcd/ca.prev.crt",
            "front-proxy-ca.prev.key",
        ] {
            assert!(!fixture.cluster.pki_dir.join(gone).exists(), "{gone}");
        }
        let archive: Vec<_> = std::fs::read_dir(fixture.cluster.pki_dir.join("archive"))
            .expect("archive")
            .flatten()
            .map(|entry| entry.path())
            .collect();
        assert_eq!(archive.len(), 1, "{archive:?}");
        let name = archive[0]
            .file_name()
            .and_then(|name| name.to_str())
            .unwrap_or_default();
        assert!(name.starts_with("ca_"), "{name}");
        assert_eq!(
            std::fs::read(archive[0].join("ca.crt")).expect("archived"),
            old.pem.as_bytes()
        );
        assert!(archive[0].join("etcd/ca.key").exists());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(archive[0].join("ca.key"))
            .expect("key")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(
            fixture.kubeconfig_trusts("admin.conf"),
            vec![new.der.clone()]
        );
        fixture.sound();
    }

    #[test]
    fn the_service_account_key_rotates_only_with_sa() {
        let fixture = generated();
        let old_key = fixture.read("sa.key");
        let old_pub = fixture.read("sa.pub");
        let state = ca_rotate_next(&fixture.cluster, &fixture.lock, true).expect("step 1");
        assert!(state
            .involved()
            .is_some_and(|involved| involved.service_account));
        let new_key = fixture.read("sa.next.key");
        assert_eq!(fixture.read("sa.key"), old_key);
        let store =
            generate::check_complete(&fixture.cluster, &Store::open(&fixture.cluster.pki_dir))
                .expect("checked")
                .store;
        let published = service_account_keys(&store).expect("keys");
        let text = String::from_utf8(published).expect("utf-8");
        assert_eq!(text.matches("BEGIN PUBLIC KEY").count(), 2);
        assert!(text.starts_with(std::str::from_utf8(&old_pub).expect("utf-8")));

        ca_rotate_next(&fixture.cluster, &fixture.lock, true).expect("step 2");
        assert_eq!(fixture.read("sa.key"), new_key);
        assert_eq!(fixture.read("sa.prev.key"), old_key);
        fixture.sound();
        ca_rotate_next(&fixture.cluster, &fixture.lock, false).expect("step 3");
        assert_eq!(fixture.read("sa.key"), new_key);
        assert!(!fixture.cluster.pki_dir.join("sa.prev.key").exists());
        fixture.sound();

        // Without --sa the key stays; --sa later than the start is refused.
        let key = fixture.read("sa.key");
        ca_rotate_next(&fixture.cluster, &fixture.lock, false).expect("step 1");
        let error = ca_rotate_next(&fixture.cluster, &fixture.lock, true).expect_err("--sa");
        assert_eq!(crate::error::exit_code(&error), 2);
        assert!(format!("{error:#}").contains("--sa"), "{error:#}");
        assert!(!fixture.cluster.pki_dir.join("sa.next.key").exists());
        assert_eq!(fixture.read("sa.key"), key);
    }

    /// Every file of the store (archive included), by relative path.
    fn files(root: &std::path::Path) -> BTreeMap<String, Vec<u8>> {
        let mut found = BTreeMap::new();
        let mut folders = vec![root.to_path_buf()];
        while let Some(folder) = folders.pop() {
            for entry in std::fs::read_dir(&folder).expect("read").flatten() {
                let path = entry.path();
                if path.is_dir() {
                    folders.push(path);
                } else if let Ok(relative) = path.strip_prefix(root) {
                    let relative = relative.to_string_lossy().to_string();
                    if relative != ".ocfk8s.lock" {
                        found.insert(relative, std::fs::read(&path).expect("file"));
                    }
                }
            }
        }
        found
    }

    #[test]
    fn a_step_interrupted_before_or_after_its_commit_recovers_to_before_or_after() {
        let fixture = generated();
        for step in 0..3u8 {
            let before = files(&fixture.cluster.pki_dir);
            let state = fixture.step();
            assert_eq!(state.step(), step);

            // Killed before the journal's commit: rolled back, as before.
            rotate_next(
                &fixture.cluster,
                &fixture.lock,
                true,
                Interrupt::BeforeCommit,
            )
            .expect("interrupted");
            let recovered =
                atomic_write::recover(&fixture.lock, &fixture.cluster.pki_dir).expect("recover");
            assert!(recovered.removed > 0, "step {step}: {recovered:?}");
            assert_eq!(recovered.finished, 0);
            let after_rollback = files(&fixture.cluster.pki_dir);
            assert_eq!(
                after_rollback.keys().collect::<Vec<_>>(),
                before.keys().collect::<Vec<_>>(),
                "step {step}"
            );
            assert!(after_rollback == before, "step {step}: bytes changed");
            assert_eq!(fixture.step(), state);

            // Killed after it: finished, the step done.
            rotate_next(
                &fixture.cluster,
                &fixture.lock,
                true,
                Interrupt::AfterCommit,
            )
            .expect("interrupted");
            assert!(atomic_write::has_journal(&fixture.cluster.pki_dir));
            // A reader refuses nothing and sees the finished step once
            // the journal is applied.
            let recovered =
                atomic_write::recover(&fixture.lock, &fixture.cluster.pki_dir).expect("recover");
            assert!(recovered.finished > 0);
            assert_eq!(fixture.step().step(), (step + 1) % 3, "step {step}");
            fixture.sound();
        }
        // One archive, no empty folder left by the interrupted attempt.
        let archived: Vec<_> = std::fs::read_dir(fixture.cluster.pki_dir.join("archive"))
            .expect("archive")
            .flatten()
            .map(|entry| entry.path())
            .collect();
        assert_eq!(archived.len(), 1, "{archived:?}");
    }

    #[test]
    fn the_loader_refuses_what_no_rotation_makes() {
        let fixture = generated();
        ca_rotate_next(&fixture.cluster, &fixture.lock, false).expect("step 1");
        let dir = &fixture.cluster.pki_dir;
        let refused = |named: &str| {
            let error = generate::check_complete(&fixture.cluster, &Store::open(dir))
                .err()
                .expect("refused");
            assert_eq!(crate::error::exit_code(&error), 2);
            let message = format!("{error:#}");
            assert!(message.contains(named), "{named}: {message}");
            assert!(!message.contains("BEGIN"), "{message}");
        };
        // Both a .next and a .prev: no step of a rotation.
        std::fs::copy(dir.join("ca.next.crt"), dir.join("etcd/ca.prev.crt")).expect("copy");
        std::fs::copy(dir.join("ca.next.key"), dir.join("etcd/ca.prev.key")).expect("copy");
        refused("etcd/ca.prev.crt");
        std::fs::remove_file(dir.join("etcd/ca.prev.crt")).expect("rm");
        std::fs::remove_file(dir.join("etcd/ca.prev.key")).expect("rm");
        // A leaf from a third CA.
        let foreign = issue::new_authority("kubernetes", cluster_algorithm(), 10).expect("ca");
        let spec = certlist::leaves(&fixture.cluster)
            .into_iter()
            .find(|spec| spec.base == "nodes/m1/apiserver")
            .expect("spec");
        let (certificate, key) =
            issue::new_leaf(&spec, &foreign, cluster_algorithm(), 10).expect("leaf");
        let saved = (
            fixture.read("nodes/m1/apiserver.crt"),
            fixture.read("nodes/m1/apiserver.key"),
        );
        std::fs::write(dir.join("nodes/m1/apiserver.crt"), &certificate.pem).expect("write");
        std::fs::write(dir.join("nodes/m1/apiserver.key"), &key.pem).expect("write");
        refused("nodes/m1/apiserver.crt");
        // A leaf from the new CA is fine during the rotation.
        let next = CertificateAuthority::load(
            &dir.join("ca.next.crt"),
            &fixture.read("ca.next.crt"),
            &dir.join("ca.next.key"),
            &fixture.read("ca.next.key"),
        )
        .expect("next");
        let (certificate, key) =
            issue::new_leaf(&spec, &next, cluster_algorithm(), 10).expect("leaf");
        std::fs::write(dir.join("nodes/m1/apiserver.crt"), &certificate.pem).expect("write");
        std::fs::write(dir.join("nodes/m1/apiserver.key"), &key.pem).expect("write");
        fixture.sound();
        std::fs::write(dir.join("nodes/m1/apiserver.crt"), &saved.0).expect("write");
        std::fs::write(dir.join("nodes/m1/apiserver.key"), &saved.1).expect("write");
        // A kubeconfig trusting only one of the two CAs.
        let admin = fixture.read("admin.conf");
        let embedded = kubeconfig::parse(&dir.join("admin.conf"), &admin).expect("admin");
        let only_old = kubeconfig::render(
            "unit",
            &embedded.server,
            "kubernetes-admin",
            &[&embedded.authorities[0]],
            &embedded.certificate,
            &embedded.key,
        );
        std::fs::write(dir.join("admin.conf"), only_old).expect("write");
        refused("admin.conf");
        std::fs::write(dir.join("admin.conf"), &admin).expect("write");
        // The store's own CA files still hold one certificate each.
        let mut bundle = fixture.read("ca.crt");
        bundle.extend(fixture.read("ca.next.crt"));
        std::fs::write(dir.join("ca.crt"), bundle).expect("write");
        refused("ca.crt");
    }

    fn cluster_algorithm() -> crate::inventory::KeyAlgorithm {
        crate::inventory::KeyAlgorithm::EcdsaP256
    }

    #[test]
    fn a_host_trusting_another_clusters_ca_is_refused() {
        let fixture = generated();
        let store = || {
            generate::check_complete(&fixture.cluster, &Store::open(&fixture.cluster.pki_dir))
                .expect("checked")
                .store
        };
        let ours = fixture.read("ca.crt");
        same_cluster_ca(&fixture.cluster, &store(), &ours).expect("ours");
        let foreign = issue::new_authority("kubernetes", cluster_algorithm(), 10).expect("ca");
        let error = same_cluster_ca(
            &fixture.cluster,
            &store(),
            foreign.certificate.pem.as_bytes(),
        )
        .expect_err("foreign");
        assert_eq!(crate::error::exit_code(&error), 2);
        assert!(
            format!("{error:#}").contains("another cluster"),
            "{error:#}"
        );
        let error = same_cluster_ca(&fixture.cluster, &store(), b"garbage").expect_err("garbage");
        assert_eq!(crate::error::exit_code(&error), 2);

        // During a rotation: the old CA alone, the bundle, the new alone.
        ca_rotate_next(&fixture.cluster, &fixture.lock, false).expect("step 1");
        let bundle = trust_bundle(&store(), Authority::Kubernetes).expect("bundle");
        for host in [ours.clone(), bundle.clone(), fixture.read("ca.next.crt")] {
            same_cluster_ca(&fixture.cluster, &store(), &host).expect("ours");
        }
        let mut mixed = bundle;
        mixed.extend(foreign.certificate.pem.as_bytes());
        let error = same_cluster_ca(&fixture.cluster, &store(), &mixed).expect_err("mixed");
        assert_eq!(crate::error::exit_code(&error), 2);
    }

    #[test]
    fn step_three_refuses_while_a_leaf_is_still_from_the_old_ca() {
        let fixture = generated();
        ca_rotate_next(&fixture.cluster, &fixture.lock, false).expect("step 1");
        let dir = &fixture.cluster.pki_dir;
        let old_apiserver = (
            fixture.read("nodes/m1/apiserver.crt"),
            fixture.read("nodes/m1/apiserver.key"),
        );
        ca_rotate_next(&fixture.cluster, &fixture.lock, false).expect("step 2");
        std::fs::write(dir.join("nodes/m1/apiserver.crt"), &old_apiserver.0).expect("write");
        std::fs::write(dir.join("nodes/m1/apiserver.key"), &old_apiserver.1).expect("write");
        fixture.sound();
        let error = ca_rotate_next(&fixture.cluster, &fixture.lock, false).expect_err("refused");
        assert_eq!(crate::error::exit_code(&error), 2);
        assert!(
            format!("{error:#}").contains("nodes/m1/apiserver"),
            "{error:#}"
        );
        assert!(dir.join("ca.prev.crt").exists());
        // Re-issued from the current (new) CA, the step goes through.
        generate::reissue(&fixture.cluster, &fixture.lock, |spec| {
            spec.base == "nodes/m1/apiserver"
        })
        .expect("reissue");
        ca_rotate_next(&fixture.cluster, &fixture.lock, false).expect("step 3");
        fixture.sound();
    }
}
