//! `pki generate`: bring the store up to what the inventory needs, adding
//! only what is missing.
//!
//! Two stages. [`plan`] reads and checks the whole existing store (every CA
//! pair, every leaf against its key and its CA, every kubeconfig against the
//! files it duplicates) and collects every problem; if there is any, the run
//! stops with bad input (exit 2) before anything is written. Then the
//! missing material is minted, leaves in parallel (RSA key generation
//! dominates and scales with cores), and written in one durable batch.
//!
//! Existing material is never replaced: a CA is created only when neither it
//! nor anything it could have signed exists, and a leaf only when none of its
//! files exist. A kubeconfig missing beside an existing certificate pair is
//! rebuilt from that pair; a pair missing beside an existing kubeconfig is
//! taken from the kubeconfig. Only [`reissue`] (certificate rotation)
//! replaces leaves, and only those it is asked to.
//!
//! The same check, without writing, is what every reader of the store runs
//! ([`check_complete`], behind [`super::load`]): one checker for writers
//! and readers. A certificate outside its validity is not inconsistent,
//! but `pki generate` refuses to call such a store up to date, and says
//! how to renew the leaf.

use std::collections::BTreeMap;
use std::path::Path;

use rayon::prelude::*;

use super::atomic_write::{self, NewFile, PRIVATE, PUBLIC};
use super::ca_rotation::Rotation;
use super::certlist::{
    self, rotation_path, Authority, KubeconfigSpec, LeafSpec, RotationSlot, SERVICE_ACCOUNT_KEY,
    SERVICE_ACCOUNT_PUB,
};
use super::issue;
use super::kubeconfig;
use super::material::{self, Certificate, CertificateAuthority, PrivateKey};
use super::{Checked, Store};
use crate::error::bad_input;
use crate::inventory::Cluster;
use crate::lock::RunLock;

/// A certificate outside its validity: the leaf's base when it is a leaf
/// (a CA has none), and the message naming the file and the way out.
type Expired = (Option<String>, String);

/// What a `pki generate` run created.
#[derive(Debug, Clone, Default)]
pub struct Generated {
    /// Store-relative paths of the files written, in store order.
    pub created: Vec<String>,
    /// Existing certificates whose identity or SANs no longer match the
    /// inventory (kept as they are; `rotate-certs` re-issues them).
    pub warnings: Vec<String>,
}

pub(super) enum AuthorityState {
    Existing(Box<CertificateAuthority>),
    Create,
    /// Present but unusable; the problem is already recorded.
    Broken,
}

pub(super) enum LeafAction {
    /// Nothing exists: a new key and certificate (and kubeconfig).
    Create,
    /// The pair exists; only its kubeconfig is missing.
    WriteKubeconfig(Certificate, PrivateKey),
    /// The kubeconfig exists; its embedded pair becomes the files.
    AdoptFromKubeconfig(Certificate, PrivateKey),
}

enum ServiceAccountAction {
    Keep,
    WritePublic(String),
    Create,
}

pub(crate) struct Plan {
    pub(super) authorities: BTreeMap<Authority, AuthorityState>,
    service_account: ServiceAccountAction,
    pub(super) leaves: Vec<(LeafSpec, LeafAction)>,
    /// Sound existing material that differs from what the inventory asks.
    pub(super) warnings: Vec<String>,
    /// Certificates outside their validity: (the leaf's base, when a leaf,
    /// and the message).
    pub(super) expired: Vec<Expired>,
    /// A CA rotation in progress, as the store's files say.
    pub(super) rotation: Rotation,
}

impl Plan {
    /// Store-relative paths of what the plan would write: what is missing.
    pub(super) fn missing(&self) -> Vec<String> {
        let mut missing = Vec::new();
        for (authority, state) in &self.authorities {
            if matches!(state, AuthorityState::Create) {
                missing.push(authority.cert_path().to_string());
                missing.push(authority.key_path().to_string());
            }
        }
        match &self.service_account {
            ServiceAccountAction::Keep => {}
            ServiceAccountAction::WritePublic(_) => missing.push(SERVICE_ACCOUNT_PUB.to_string()),
            ServiceAccountAction::Create => {
                missing.push(SERVICE_ACCOUNT_KEY.to_string());
                missing.push(SERVICE_ACCOUNT_PUB.to_string());
            }
        }
        for (spec, action) in &self.leaves {
            let pair = [spec.cert_path(), spec.key_path()];
            match action {
                LeafAction::Create => {
                    if spec.files {
                        missing.extend(pair);
                    }
                    if spec.kubeconfig.is_some() {
                        missing.push(spec.conf_path());
                    }
                }
                LeafAction::WriteKubeconfig(..) => missing.push(spec.conf_path()),
                LeafAction::AdoptFromKubeconfig(..) => missing.extend(pair),
            }
        }
        missing
    }

    /// The messages about certificates outside their validity.
    pub(crate) fn expired_messages(&self) -> Vec<String> {
        self.expired
            .iter()
            .map(|(_, message)| message.clone())
            .collect()
    }

    pub(super) fn is_empty(&self) -> bool {
        !self
            .authorities
            .values()
            .any(|state| matches!(state, AuthorityState::Create))
            && matches!(self.service_account, ServiceAccountAction::Keep)
            && self.leaves.is_empty()
    }
}

/// Check the store and create what the inventory needs; see the module
/// docs. Returns what was created and the store as checked (with the new
/// files). The caller holds the exclusive run lock (see
/// [`super::lock_for_writing`]). Certificates outside their validity are
/// bad input: nothing is written, and the message says how to renew them.
pub(crate) fn generate_locked(
    cluster: &Cluster,
    lock: &RunLock,
) -> anyhow::Result<(Generated, Store)> {
    let store = Store::open(&cluster.pki_dir);
    let timer = crate::timings::step("pki store read");
    let plan = plan(cluster, &store)?;
    drop(timer);
    refuse_expired(&plan.expired, |_| false)?;
    write(cluster, lock, store, plan)
}

/// Re-issue the leaves `select` picks (new keys, new serials, same CAs),
/// replacing their files and kubeconfigs atomically, and create whatever
/// else is missing, as [`generate_locked`] would. The whole store is checked
/// first, exactly as for `generate`: an inconsistent store is bad input and
/// nothing is written; an expired leaf is fine when it is one being
/// re-issued. This is the PKI half of `rotate-certs`.
pub(crate) fn reissue(
    cluster: &Cluster,
    lock: &RunLock,
    select: impl Fn(&LeafSpec) -> bool,
) -> anyhow::Result<Generated> {
    let store = Store::open(&cluster.pki_dir);
    let mut plan = plan(cluster, &store)?;
    let specs = certlist::leaves(cluster);
    refuse_expired(&plan.expired, |base| {
        specs.iter().any(|spec| spec.base == base && select(spec))
    })?;
    let mut planned: BTreeMap<String, LeafAction> = std::mem::take(&mut plan.leaves)
        .into_iter()
        .map(|(spec, action)| (spec.base, action))
        .collect();
    for spec in specs {
        let repair = planned.remove(&spec.base);
        if select(&spec) {
            plan.leaves.push((spec, LeafAction::Create));
        } else if let Some(action) = repair {
            plan.leaves.push((spec, action));
        }
    }
    write(cluster, lock, store, plan).map(|(generated, _)| generated)
}

pub(super) fn refuse_expired(
    expired: &[Expired],
    renewed: impl Fn(&str) -> bool,
) -> anyhow::Result<()> {
    let refused: Vec<&str> = expired
        .iter()
        .filter(|(base, _)| !base.as_deref().is_some_and(&renewed))
        .map(|(_, message)| message.as_str())
        .collect();
    if refused.is_empty() {
        return Ok(());
    }
    Err(bad_input(format!(
        "the PKI store holds certificates that cannot be used now; nothing was changed:\n  {}",
        refused.join("\n  ")
    )))
}

/// Check the store as [`generate_locked`] does, for reading: everything
/// the inventory needs must exist (else bad input listing what is missing)
/// and be sound. Returns the checked store; certificates outside their
/// validity are listed, not refused.
pub(crate) fn check_complete(cluster: &Cluster, store: &Store) -> anyhow::Result<Checked> {
    let plan = plan(cluster, store)?;
    let missing = plan.missing();
    if !missing.is_empty() && store.nothing_read() {
        return Err(bad_input(format!(
            "{}: no PKI store; run `ocfk8s pki generate` first",
            store.dir().display()
        )));
    }
    if !missing.is_empty() {
        const SHOWN: usize = 8;
        let mut listed: Vec<String> = missing
            .iter()
            .take(SHOWN)
            .map(|relative| store.path(relative).display().to_string())
            .collect();
        if missing.len() > SHOWN {
            listed.push(format!("and {} more", missing.len() - SHOWN));
        }
        return Err(bad_input(format!(
            "the PKI store {} is incomplete: missing {}; run `ocfk8s pki generate` \
             to create what is missing",
            store.dir().display(),
            listed.join(", ")
        )));
    }
    Ok(Checked {
        store: store.clone().into_checked(&[]),
        expired: plan
            .expired
            .into_iter()
            .map(|(_, message)| message)
            .collect(),
        warnings: plan.warnings,
    })
}

pub(super) fn write(
    cluster: &Cluster,
    lock: &RunLock,
    store: Store,
    mut plan: Plan,
) -> anyhow::Result<(Generated, Store)> {
    let warnings = std::mem::take(&mut plan.warnings);
    if plan.is_empty() {
        let generated = Generated {
            created: Vec::new(),
            warnings,
        };
        return Ok((generated, store.into_checked(&[])));
    }
    // Creating the files is much of the work: done while the keys and
    // certificates are made (the first key waits for the random number
    // generator to seed itself, and leaves a core idle meanwhile).
    let layout = atomic_write::Layout::new(outputs(&plan));
    let (staged, files) = std::thread::scope(|scope| {
        let staging = scope.spawn(|| atomic_write::stage(lock, store.dir(), &layout, &[]));
        let files = execute(cluster, plan);
        let staged = staging
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("creating the store's files failed")));
        (staged, files)
    });
    // An error either way drops the staged batch, which removes its files.
    let files = files?;
    staged?.commit(&files)?;
    let generated = Generated {
        created: files.iter().map(|file| file.relative.clone()).collect(),
        warnings,
    };
    Ok((generated, store.into_checked(&files)))
}

/// Collects every problem found, so one run reports them all, and the
/// warnings about material that is sound but no longer what the inventory
/// describes.
#[derive(Default)]
struct Problems {
    errors: Vec<String>,
    warnings: Vec<String>,
    expired: Vec<Expired>,
    /// Leaves (bases) signed by the second CA of a rotation.
    from_other: Vec<String>,
}

impl Problems {
    fn push(&mut self, error: anyhow::Error) {
        self.errors.push(format!("{error:#}"));
    }

    fn say(&mut self, message: String) {
        self.errors.push(message);
    }

    fn into_result(self) -> anyhow::Result<(Vec<String>, Vec<Expired>)> {
        if self.errors.is_empty() {
            return Ok((self.warnings, self.expired));
        }
        Err(bad_input(format!(
            "the PKI store is inconsistent; nothing was changed:\n  {}",
            self.errors.join("\n  ")
        )))
    }
}

/// Read and check the existing store; decide what to create.
pub(crate) fn plan(cluster: &Cluster, store: &Store) -> anyhow::Result<Plan> {
    let mut problems = Problems::default();
    let mut authorities = BTreeMap::new();
    for authority in certlist::authorities(cluster) {
        let state = check_authority(store, authority, &mut problems)?;
        authorities.insert(authority, state);
    }

    let service_account = check_service_account(store, &mut problems)?;
    let rotation = check_rotation(cluster, store, &authorities, &mut problems)?;

    // Checking a large store is signature verification and key loading for
    // every leaf: spread over the cores, results merged in store order.
    let checked: Vec<(LeafSpec, anyhow::Result<Option<LeafAction>>, Problems)> =
        certlist::leaves(cluster)
            .into_par_iter()
            .map(|spec| {
                let state = authorities
                    .get(&spec.authority)
                    .unwrap_or(&AuthorityState::Broken);
                let other = rotation.others.get(&spec.authority).map(|ca| ca.as_ref());
                let mut leaf_problems = Problems::default();
                let action = check_leaf(store, &spec, state, other, &mut leaf_problems);
                (spec, action, leaf_problems)
            })
            .collect();
    let mut leaves = Vec::new();
    let mut rotation = rotation;
    for (spec, action, leaf_problems) in checked {
        problems.errors.extend(leaf_problems.errors);
        problems.warnings.extend(leaf_problems.warnings);
        problems.expired.extend(leaf_problems.expired);
        rotation.from_other.extend(leaf_problems.from_other);
        if let Some(action) = action? {
            leaves.push((spec, action));
        }
    }
    let (warnings, expired) = problems.into_result()?;
    Ok(Plan {
        authorities,
        service_account,
        leaves,
        warnings,
        expired,
        rotation,
    })
}

fn check_authority(
    store: &Store,
    authority: Authority,
    problems: &mut Problems,
) -> anyhow::Result<AuthorityState> {
    let cert_path = store.path(authority.cert_path());
    let key_path = store.path(authority.key_path());
    let state = match (
        store.read_optional(authority.cert_path())?,
        store.read_optional(authority.key_path())?,
    ) {
        (Some(cert), Some(key)) => {
            match CertificateAuthority::load(&cert_path, &cert, &key_path, &key) {
                Ok(loaded) => {
                    if let Some(problem) = validity_problem(&loaded.certificate) {
                        problems.expired.push((
                            None,
                            format!(
                                "{}: {problem}; a CA cannot be renewed in place, and an expired \
                                 one no longer vouches for anything (rotate CAs before they expire \
                                 with `ocfk8s rotate-certs --ca`)",
                                cert_path.display()
                            ),
                        ));
                    }
                    AuthorityState::Existing(Box::new(loaded))
                }
                Err(error) => {
                    problems.push(error);
                    AuthorityState::Broken
                }
            }
        }
        (Some(_), None) => {
            problems.say(format!(
                "{}: missing, but its CA certificate {} exists (a CA is never regenerated)",
                key_path.display(),
                cert_path.display()
            ));
            AuthorityState::Broken
        }
        (None, Some(_)) => {
            problems.say(format!(
                "{}: exists without its certificate {}",
                key_path.display(),
                cert_path.display()
            ));
            AuthorityState::Broken
        }
        (None, None) => AuthorityState::Create,
    };
    Ok(state)
}

fn check_service_account(
    store: &Store,
    problems: &mut Problems,
) -> anyhow::Result<ServiceAccountAction> {
    let key_path = store.path(SERVICE_ACCOUNT_KEY);
    let public_path = store.path(SERVICE_ACCOUNT_PUB);
    let action = match (
        store.read_optional(SERVICE_ACCOUNT_KEY)?,
        store.read_optional(SERVICE_ACCOUNT_PUB)?,
    ) {
        (Some(key), public) => match PrivateKey::parse(&key_path, &key) {
            Ok(key) => match public {
                Some(public) if material::public_key_matches(&public, &key) => {
                    ServiceAccountAction::Keep
                }
                Some(_) => {
                    problems.say(format!(
                        "{}: not the public half of {}",
                        public_path.display(),
                        key_path.display()
                    ));
                    ServiceAccountAction::Keep
                }
                None => ServiceAccountAction::WritePublic(key.public_pem()),
            },
            Err(error) => {
                problems.push(error);
                ServiceAccountAction::Keep
            }
        },
        (None, Some(_)) => {
            problems.say(format!(
                "{}: exists without its private key {}",
                public_path.display(),
                key_path.display()
            ));
            ServiceAccountAction::Keep
        }
        (None, None) => ServiceAccountAction::Create,
    };
    Ok(action)
}

/// The second CA of each rotating authority and the second service-account
/// key, when a CA rotation is in progress (see [`super::ca_rotation`]):
/// each a sound pair, distinct from the current one, and all in the same
/// slot (`.next` after step 1, `.prev` after step 2).
fn check_rotation(
    cluster: &Cluster,
    store: &Store,
    authorities: &BTreeMap<Authority, AuthorityState>,
    problems: &mut Problems,
) -> anyhow::Result<Rotation> {
    let mut rotation = Rotation::default();
    let mut found: Vec<(RotationSlot, String)> = Vec::new();
    for authority in certlist::authorities(cluster)
        .into_iter()
        .filter(|authority| authority.rotates())
    {
        for slot in RotationSlot::ALL {
            let cert_relative = authority.rotation_cert_path(slot);
            let key_relative = authority.rotation_key_path(slot);
            let cert_path = store.path(&cert_relative);
            let key_path = store.path(&key_relative);
            match (
                store.read_optional(&cert_relative)?,
                store.read_optional(&key_relative)?,
            ) {
                (None, None) => {}
                (Some(cert), Some(key)) => {
                    found.push((slot, cert_relative.clone()));
                    let loaded =
                        match CertificateAuthority::load(&cert_path, &cert, &key_path, &key) {
                            Ok(loaded) => loaded,
                            Err(error) => {
                                problems.push(error);
                                continue;
                            }
                        };
                    if let Some(problem) = validity_problem(&loaded.certificate) {
                        problems.expired.push((
                            None,
                            format!(
                                "{}: {problem}; start the CA rotation again once the \
                                 store is back to one CA per authority",
                                cert_path.display()
                            ),
                        ));
                    }
                    match authorities.get(&authority) {
                        Some(AuthorityState::Existing(current)) => {
                            let current = &current.certificate;
                            let same_subject = match (current.x509(), loaded.certificate.x509()) {
                                (Ok(left), Ok(right)) => left.subject() == right.subject(),
                                _ => false,
                            };
                            if current.public_key_bytes() == loaded.certificate.public_key_bytes() {
                                problems.say(format!(
                                    "{}: the same key as {}; the two CAs of a rotation differ",
                                    cert_path.display(),
                                    store.path(authority.cert_path()).display()
                                ));
                            } else if same_subject {
                                problems.say(format!(
                                    "{}: the same subject as {}; the two CAs of a rotation \
                                     share one bundle and need distinct subjects",
                                    cert_path.display(),
                                    store.path(authority.cert_path()).display()
                                ));
                            } else {
                                rotation.others.insert(authority, Box::new(loaded));
                            }
                        }
                        Some(AuthorityState::Create) | None => problems.say(format!(
                            "{}: exists, but {} does not; a CA rotation keeps the current \
                             CA at its usual place",
                            cert_path.display(),
                            store.path(authority.cert_path()).display()
                        )),
                        Some(AuthorityState::Broken) => {}
                    }
                }
                (Some(_), None) => problems.say(format!(
                    "{}: missing, but its CA certificate {} exists",
                    key_path.display(),
                    cert_path.display()
                )),
                (None, Some(_)) => problems.say(format!(
                    "{}: exists without its certificate {}",
                    key_path.display(),
                    cert_path.display()
                )),
            }
        }
    }
    let current_key = match store.read_optional(SERVICE_ACCOUNT_KEY)? {
        Some(bytes) => PrivateKey::parse(&store.path(SERVICE_ACCOUNT_KEY), &bytes).ok(),
        None => None,
    };
    for slot in RotationSlot::ALL {
        let key_relative = rotation_path(SERVICE_ACCOUNT_KEY, slot);
        let public_relative = rotation_path(SERVICE_ACCOUNT_PUB, slot);
        let key_path = store.path(&key_relative);
        let public_path = store.path(&public_relative);
        match (
            store.read_optional(&key_relative)?,
            store.read_optional(&public_relative)?,
        ) {
            (None, None) => {}
            (Some(key), Some(public)) => {
                found.push((slot, key_relative.clone()));
                match PrivateKey::parse(&key_path, &key) {
                    Ok(key) => {
                        if !material::public_key_matches(&public, &key) {
                            problems.say(format!(
                                "{}: not the public half of {}",
                                public_path.display(),
                                key_path.display()
                            ));
                        } else if current_key
                            .as_ref()
                            .is_some_and(|current| current.public_pem() == key.public_pem())
                        {
                            problems.say(format!(
                                "{}: the same key as {}; the two keys of a rotation differ",
                                key_path.display(),
                                store.path(SERVICE_ACCOUNT_KEY).display()
                            ));
                        } else {
                            rotation.service_account = true;
                        }
                    }
                    Err(error) => problems.push(error),
                }
            }
            (Some(_), None) => problems.say(format!(
                "{}: missing beside its private key {}",
                public_path.display(),
                key_path.display()
            )),
            (None, Some(_)) => problems.say(format!(
                "{}: exists without its private key {}",
                public_path.display(),
                key_path.display()
            )),
        }
    }
    let next = found
        .iter()
        .find(|(slot, _)| *slot == RotationSlot::Next)
        .map(|(_, file)| file);
    let prev = found
        .iter()
        .find(|(slot, _)| *slot == RotationSlot::Prev)
        .map(|(_, file)| file);
    match (next, prev) {
        (Some(next), Some(prev)) => problems.say(format!(
            "{} (a new CA, step 1 of a CA rotation) and {} (an old CA, step 2) both \
             exist; a store is at one step of a rotation",
            store.path(next).display(),
            store.path(prev).display()
        )),
        (Some(_), None) => rotation.slot = Some(RotationSlot::Next),
        (None, Some(_)) => rotation.slot = Some(RotationSlot::Prev),
        (None, None) => {}
    }
    Ok(rotation)
}

/// Check a leaf's existing files; `None` when nothing is to be written.
fn check_leaf(
    store: &Store,
    spec: &LeafSpec,
    authority: &AuthorityState,
    other: Option<&CertificateAuthority>,
    problems: &mut Problems,
) -> anyhow::Result<Option<LeafAction>> {
    let read = |relative: String, wanted: bool| -> anyhow::Result<Option<(String, Vec<u8>)>> {
        if !wanted {
            return Ok(None);
        }
        Ok(store
            .read_optional(&relative)?
            .map(|bytes| (relative, bytes)))
    };
    let cert = read(spec.cert_path(), spec.files)?;
    let key = read(spec.key_path(), spec.files)?;
    let conf = read(spec.conf_path(), spec.kubeconfig.is_some())?;

    let ca = match authority {
        AuthorityState::Existing(ca) => Some(ca.as_ref()),
        AuthorityState::Broken => None,
        AuthorityState::Create => {
            if let Some((relative, _)) = cert.iter().chain(&key).chain(&conf).next() {
                problems.say(format!(
                    "{}: exists, but its CA {} does not; refusing to create a new CA \
                     while material from the old one remains",
                    store.path(relative).display(),
                    store.path(spec.authority.cert_path()).display()
                ));
                return Ok(None);
            }
            return Ok(Some(LeafAction::Create));
        }
    };

    let pair = match (cert, key) {
        (Some((cert_relative, cert)), Some((key_relative, key))) => {
            let cert_path = store.path(&cert_relative);
            let key_path = store.path(&key_relative);
            let ca_certificate = ca.map(|ca| &ca.certificate);
            match check_pair_rotating(
                &cert_path,
                &cert,
                &key_path,
                &key,
                ca_certificate,
                other.map(|other| &other.certificate),
                spec.authority,
            ) {
                Ok(pair) => {
                    if let (Some(ca), Some(other)) = (ca, other) {
                        if !pair.0.is_signed_by(&ca.certificate)
                            && pair.0.is_signed_by(&other.certificate)
                        {
                            problems.from_other.push(spec.base.clone());
                        }
                    }
                    if let Some(problem) = validity_problem(&pair.0) {
                        problems.expired.push((
                            Some(spec.base.clone()),
                            format!(
                                "{}: {problem}; {}",
                                cert_path.display(),
                                renewal(store, spec)
                            ),
                        ));
                    }
                    if let Some(difference) = differs_from_spec(spec, &pair.0) {
                        problems.warnings.push(format!(
                            "{}: {difference}; kept; to {}",
                            cert_path.display(),
                            renewal(store, spec)
                        ));
                    }
                    Some(pair)
                }
                Err(error) => {
                    problems.push(error);
                    return Ok(None);
                }
            }
        }
        (Some((cert_relative, _)), None) => {
            problems.say(format!(
                "{}: missing, but its certificate {} exists",
                store.path(&spec.key_path()).display(),
                store.path(&cert_relative).display()
            ));
            return Ok(None);
        }
        (None, Some((key_relative, _))) => {
            problems.say(format!(
                "{}: exists without its certificate {}",
                store.path(&key_relative).display(),
                store.path(&spec.cert_path()).display()
            ));
            return Ok(None);
        }
        (None, None) => None,
    };

    let embedded = match conf {
        Some((relative, bytes)) => {
            let path = store.path(&relative);
            let verified = pair.as_ref().map(|(certificate, _)| certificate);
            match check_kubeconfig(&path, &bytes, ca, other, spec.authority, verified) {
                Ok(embedded) => {
                    if let (Some(ca), Some(other)) = (ca, other) {
                        if !embedded.certificate.is_signed_by(&ca.certificate)
                            && embedded.certificate.is_signed_by(&other.certificate)
                            && !problems.from_other.contains(&spec.base)
                        {
                            problems.from_other.push(spec.base.clone());
                        }
                    }
                    if let Some(problem) = validity_problem(&embedded.certificate) {
                        problems.expired.push((
                            Some(spec.base.clone()),
                            format!(
                                "{}: client certificate {problem}; {}",
                                path.display(),
                                renewal(store, spec)
                            ),
                        ));
                    }
                    if let Some(wanted) = &spec.kubeconfig {
                        if embedded.server != wanted.server {
                            problems.warnings.push(format!(
                                "{}: server {}, the inventory asks for {}; kept; to rewrite it: \
                                 `rm {}` then `ocfk8s pki generate`",
                                path.display(),
                                embedded.server,
                                wanted.server,
                                path.display()
                            ));
                        }
                    }
                    Some((path, embedded))
                }
                Err(error) => {
                    problems.push(error);
                    return Ok(None);
                }
            }
        }
        None => None,
    };

    let action = match (pair, embedded) {
        (Some((certificate, key)), None) if spec.kubeconfig.is_some() => {
            Some(LeafAction::WriteKubeconfig(certificate, key))
        }
        (Some(_), None) => None,
        (Some((certificate, _)), Some((path, embedded))) => {
            if embedded.certificate.der != certificate.der {
                problems.say(format!(
                    "{}: embeds a different client certificate than {}",
                    path.display(),
                    store.path(&spec.cert_path()).display()
                ));
            }
            None
        }
        (None, Some((_, embedded))) if spec.files => Some(LeafAction::AdoptFromKubeconfig(
            embedded.certificate,
            embedded.key,
        )),
        (None, Some(_)) => None,
        (None, None) => Some(LeafAction::Create),
    };
    Ok(action)
}

/// Why `certificate` cannot be used now, if it cannot.
fn validity_problem(certificate: &Certificate) -> Option<String> {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    match certificate.validity() {
        Ok(validity) => validity.problem(now),
        Err(error) => Some(format!("unreadable validity dates: {error:#}")),
    }
}

/// How to renew one leaf until `rotate-certs` exists: remove its files and
/// let `pki generate` issue it anew from the same CA.
fn renewal(store: &Store, spec: &LeafSpec) -> String {
    let files: Vec<String> = spec
        .paths()
        .iter()
        .map(|relative| store.path(relative).display().to_string())
        .collect();
    format!(
        "renew it: `rm {}` then `ocfk8s pki generate` issues it anew from the same CA, \
         and push it to its hosts",
        files.join(" ")
    )
}

/// A leaf pair: both parse, the key is the certificate's, and the store's
/// CA signed it.
pub(crate) fn check_pair(
    cert_path: &Path,
    cert: &[u8],
    key_path: &Path,
    key: &[u8],
    ca: Option<&Certificate>,
    authority: Authority,
) -> anyhow::Result<(Certificate, PrivateKey)> {
    check_pair_rotating(cert_path, cert, key_path, key, ca, None, authority)
}

/// [`check_pair`] during a CA rotation: the leaf may also be signed by the
/// other CA of the rotation (`other`), and by nothing else.
fn check_pair_rotating(
    cert_path: &Path,
    cert: &[u8],
    key_path: &Path,
    key: &[u8],
    ca: Option<&Certificate>,
    other: Option<&Certificate>,
    authority: Authority,
) -> anyhow::Result<(Certificate, PrivateKey)> {
    let certificate = Certificate::parse(cert_path, cert)?;
    let key = PrivateKey::parse(key_path, key)?;
    if !key.matches(&certificate) {
        return Err(bad_input(format!(
            "{}: key does not match its certificate {}",
            key_path.display(),
            cert_path.display()
        )));
    }
    if let Some(ca) = ca {
        let by_other = other.is_some_and(|other| certificate.is_signed_by(other));
        if !certificate.is_signed_by(ca) && !by_other {
            return Err(bad_input(format!(
                "{}: not signed by the store's {} ({:?}); it comes from another CA",
                cert_path.display(),
                authority.label(),
                ca.common_name()
            )));
        }
    }
    Ok((certificate, key))
}

/// A kubeconfig: its pair matches, it trusts exactly the store's CA (during
/// a rotation: the current CA followed by the other one, the bundle every
/// host trusts), and its client certificate was signed by one of them.
/// `verified` is the leaf's certificate file, already checked against the
/// same CAs: the same certificate embedded is not verified again.
fn check_kubeconfig(
    path: &Path,
    bytes: &[u8],
    ca: Option<&CertificateAuthority>,
    other: Option<&CertificateAuthority>,
    authority: Authority,
    verified: Option<&Certificate>,
) -> anyhow::Result<kubeconfig::Embedded> {
    let embedded = kubeconfig::parse(path, bytes)?;
    if !embedded.key.matches(&embedded.certificate) {
        return Err(bad_input(format!(
            "{}: client-key-data does not match client-certificate-data",
            path.display()
        )));
    }
    if let Some(ca) = ca {
        let wanted: Vec<&[u8]> = std::iter::once(&ca.certificate)
            .chain(other.map(|other| &other.certificate))
            .map(|certificate| certificate.der.as_slice())
            .collect();
        let found: Vec<&[u8]> = embedded
            .authorities
            .iter()
            .map(|certificate| certificate.der.as_slice())
            .collect();
        if found != wanted {
            return Err(bad_input(format!(
                "{}: certificate-authority-data is not the store's {}{}",
                path.display(),
                authority.label(),
                if other.is_some() {
                    " followed by the other CA of the rotation in progress"
                } else {
                    ""
                }
            )));
        }
        let already = verified.is_some_and(|verified| verified.der == embedded.certificate.der);
        if !already
            && !embedded.certificate.is_signed_by(&ca.certificate)
            && !other.is_some_and(|other| embedded.certificate.is_signed_by(&other.certificate))
        {
            return Err(bad_input(format!(
                "{}: client certificate not signed by the store's {}",
                path.display(),
                authority.label()
            )));
        }
    }
    Ok(embedded)
}

/// Mint everything the plan lacks; returns the files in store order (the
/// order of [`outputs`]).
pub(super) fn execute(cluster: &Cluster, plan: Plan) -> anyhow::Result<Vec<NewFile>> {
    let _timer = crate::timings::step("pki keys, certs");
    let algorithm = cluster.key_algorithm;
    let Plan {
        authorities,
        service_account,
        leaves,
        warnings: _,
        expired: _,
        rotation,
    } = plan;
    let to_create: Vec<Authority> = authorities
        .iter()
        .filter(|(_, state)| matches!(state, AuthorityState::Create))
        .map(|(authority, _)| *authority)
        .collect();
    // The CAs and the service-account key in parallel: with RSA each key
    // takes long enough that this barrier before the leaves matters.
    let (created, service_account_key) = rayon::join(
        || {
            to_create
                .par_iter()
                .map(|authority| {
                    issue::new_authority(
                        &authority.common_name(cluster),
                        algorithm,
                        cluster.ca_validity_days,
                    )
                    .map(|ca| (*authority, ca))
                })
                .collect::<anyhow::Result<Vec<(Authority, CertificateAuthority)>>>()
        },
        || match service_account {
            ServiceAccountAction::Create => issue::generate_key(algorithm).map(Some),
            _ => Ok(None),
        },
    );
    let created = created?;
    let service_account_key = service_account_key?;

    let mut files = Vec::new();
    for (authority, ca) in &created {
        files.push(NewFile {
            relative: authority.cert_path().to_string(),
            contents: ca.certificate.pem.clone().into_bytes(),
            mode: PUBLIC,
        });
        files.push(NewFile {
            relative: authority.key_path().to_string(),
            contents: ca.key.pem.clone().into_bytes(),
            mode: PRIVATE,
        });
    }
    let mut signers: BTreeMap<Authority, &CertificateAuthority> = BTreeMap::new();
    for (authority, state) in &authorities {
        if let AuthorityState::Existing(ca) = state {
            signers.insert(*authority, ca.as_ref());
        }
    }
    for (authority, ca) in &created {
        signers.insert(*authority, ca);
    }

    match service_account {
        ServiceAccountAction::Keep => {}
        ServiceAccountAction::WritePublic(public) => files.push(NewFile {
            relative: SERVICE_ACCOUNT_PUB.to_string(),
            contents: public.into_bytes(),
            mode: PUBLIC,
        }),
        ServiceAccountAction::Create => {
            let key = service_account_key
                .ok_or_else(|| anyhow::anyhow!("service-account key was not generated"))?;
            files.push(NewFile {
                relative: SERVICE_ACCOUNT_KEY.to_string(),
                contents: key.pem.clone().into_bytes(),
                mode: PRIVATE,
            });
            files.push(NewFile {
                relative: SERVICE_ACCOUNT_PUB.to_string(),
                contents: key.public_pem().into_bytes(),
                mode: PUBLIC,
            });
        }
    }

    let leaf_files: Vec<Vec<NewFile>> = leaves
        .into_par_iter()
        .map(|(spec, action)| {
            let ca = signers.get(&spec.authority).ok_or_else(|| {
                anyhow::anyhow!("no {} to sign {}", spec.authority.label(), spec.base)
            })?;
            let other = rotation
                .others
                .get(&spec.authority)
                .map(|other| other.as_ref());
            leaf_files(cluster, &spec, action, ca, other)
        })
        .collect::<anyhow::Result<_>>()?;
    files.extend(leaf_files.into_iter().flatten());
    Ok(files)
}

/// The files [`execute`] writes for `plan`, in its order: store-relative
/// path and mode.
fn outputs(plan: &Plan) -> Vec<(String, u32)> {
    let mut outputs = Vec::new();
    for (authority, state) in &plan.authorities {
        if matches!(state, AuthorityState::Create) {
            outputs.push((authority.cert_path().to_string(), PUBLIC));
            outputs.push((authority.key_path().to_string(), PRIVATE));
        }
    }
    match plan.service_account {
        ServiceAccountAction::Keep => {}
        ServiceAccountAction::WritePublic(_) => {
            outputs.push((SERVICE_ACCOUNT_PUB.to_string(), PUBLIC));
        }
        ServiceAccountAction::Create => {
            outputs.push((SERVICE_ACCOUNT_KEY.to_string(), PRIVATE));
            outputs.push((SERVICE_ACCOUNT_PUB.to_string(), PUBLIC));
        }
    }
    for (spec, action) in &plan.leaves {
        outputs.extend(
            leaf_writes(spec, action)
                .into_iter()
                .map(|file| (file.path(spec), file.mode())),
        );
    }
    outputs
}

/// One file a leaf's action writes.
#[derive(Clone, Copy)]
enum LeafFile<'a> {
    Certificate,
    Key,
    Kubeconfig(&'a KubeconfigSpec),
}

impl LeafFile<'_> {
    fn path(self, spec: &LeafSpec) -> String {
        match self {
            LeafFile::Certificate => spec.cert_path(),
            LeafFile::Key => spec.key_path(),
            LeafFile::Kubeconfig(_) => spec.conf_path(),
        }
    }

    fn mode(self) -> u32 {
        match self {
            LeafFile::Certificate => PUBLIC,
            LeafFile::Key | LeafFile::Kubeconfig(_) => PRIVATE,
        }
    }
}

/// The files a leaf's action writes, in the batch's order: its
/// certificate and key unless they exist, its kubeconfig (when it has
/// one) unless that exists.
fn leaf_writes<'a>(spec: &'a LeafSpec, action: &LeafAction) -> Vec<LeafFile<'a>> {
    let (pair, conf) = match action {
        LeafAction::Create => (spec.files, true),
        LeafAction::WriteKubeconfig(..) => (false, true),
        LeafAction::AdoptFromKubeconfig(..) => (true, false),
    };
    let mut writes = Vec::new();
    if pair {
        writes.extend([LeafFile::Certificate, LeafFile::Key]);
    }
    if let (true, Some(kubeconfig)) = (conf, &spec.kubeconfig) {
        writes.push(LeafFile::Kubeconfig(kubeconfig));
    }
    writes
}

fn leaf_files(
    cluster: &Cluster,
    spec: &LeafSpec,
    action: LeafAction,
    ca: &CertificateAuthority,
    other: Option<&CertificateAuthority>,
) -> anyhow::Result<Vec<NewFile>> {
    let writes = leaf_writes(spec, &action);
    let (certificate, key) = match action {
        LeafAction::Create => {
            issue::new_leaf(spec, ca, cluster.key_algorithm, cluster.cert_validity_days)?
        }
        LeafAction::WriteKubeconfig(certificate, key)
        | LeafAction::AdoptFromKubeconfig(certificate, key) => (certificate, key),
    };
    let contents = |file: LeafFile| match file {
        LeafFile::Certificate => certificate.pem.clone(),
        LeafFile::Key => key.pem.clone(),
        LeafFile::Kubeconfig(kubeconfig) => {
            let trusted: Vec<&Certificate> = std::iter::once(&ca.certificate)
                .chain(other.map(|other| &other.certificate))
                .collect();
            kubeconfig::render(
                &cluster.name,
                &kubeconfig.server,
                &kubeconfig.user,
                &trusted,
                &certificate,
                &key,
            )
        }
    };
    Ok(writes
        .into_iter()
        .map(|file| NewFile {
            relative: file.path(spec),
            contents: contents(file).into_bytes(),
            mode: file.mode(),
        })
        .collect())
}

/// How an existing certificate differs from what the inventory asks of it:
/// subject or SANs (a changed endpoint, an adopted kubeadm certificate).
fn differs_from_spec(spec: &LeafSpec, certificate: &Certificate) -> Option<String> {
    use x509_parser::extensions::GeneralName;
    let parsed = certificate.x509().ok()?;
    let common_name = certificate.common_name();
    if common_name != spec.common_name {
        return Some(format!(
            "subject CN {common_name:?}, the inventory asks for {:?}",
            spec.common_name
        ));
    }
    let mut dns_names = Vec::new();
    let mut ip_addresses = Vec::new();
    if let Ok(Some(names)) = parsed.subject_alternative_name() {
        for name in &names.value.general_names {
            match name {
                GeneralName::DNSName(dns) => dns_names.push(dns.to_string()),
                GeneralName::IPAddress(bytes) => {
                    let ip = match bytes.len() {
                        4 => <[u8; 4]>::try_from(*bytes).ok().map(std::net::IpAddr::from),
                        16 => <[u8; 16]>::try_from(*bytes)
                            .ok()
                            .map(std::net::IpAddr::from),
                        _ => None,
                    };
                    ip_addresses.extend(ip);
                }
                _ => {}
            }
        }
    }
    let missing: Vec<String> = spec
        .dns_names
        .iter()
        .filter(|name| !dns_names.contains(name))
        .cloned()
        .chain(
            spec.ip_addresses
                .iter()
                .filter(|ip| !ip_addresses.contains(ip))
                .map(|ip| ip.to_string()),
        )
        .collect();
    if missing.is_empty() {
        None
    } else {
        Some(format!("lacks the SANs {}", missing.join(", ")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVENTORY: &str = r#"
[cluster]
name = "unit"
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

    #[test]
    fn reissue_replaces_only_the_selected_leaves_under_the_same_ca() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("inventory.toml");
        std::fs::write(&path, INVENTORY).expect("write inventory");
        let cluster = crate::inventory::load(&path).expect("inventory").cluster;
        let lock = crate::lock::acquire(&cluster.pki_dir, "test").expect("lock");
        generate_locked(&cluster, &lock).expect("generate");
        let store = Store::open(&cluster.pki_dir);
        let read = |relative: &str| store.read(relative).expect("read");
        let ca = read("ca.crt");
        let apiserver = read("nodes/m1/apiserver.crt");
        let kubelet = read("nodes/w1/kubelet.crt");
        std::fs::remove_file(store.path("nodes/w1/kube-proxy.conf")).expect("remove");

        let written =
            reissue(&cluster, &lock, |spec| spec.base == "nodes/m1/apiserver").expect("reissue");
        let mut files = written.created.clone();
        files.sort();
        assert_eq!(
            files,
            [
                "nodes/m1/apiserver.crt",
                "nodes/m1/apiserver.key",
                "nodes/w1/kube-proxy.conf"
            ]
        );
        // A store reads the disk once: open it again to see the new files.
        let store = Store::open(&cluster.pki_dir);
        let read = |relative: &str| store.read(relative).expect("read");
        assert_eq!(read("ca.crt"), ca);
        assert_eq!(read("nodes/w1/kubelet.crt"), kubelet);
        let renewed = read("nodes/m1/apiserver.crt");
        assert_ne!(renewed, apiserver);
        let path = store.path("nodes/m1/apiserver.crt");
        let authority = Certificate::parse(&store.path("ca.crt"), &ca).expect("ca");
        assert!(Certificate::parse(&path, &renewed)
            .expect("leaf")
            .is_signed_by(&authority));
        // The store is consistent afterwards: nothing left to do.
        assert!(generate_locked(&cluster, &lock)
            .expect("generate")
            .0
            .created
            .is_empty());
    }
}
