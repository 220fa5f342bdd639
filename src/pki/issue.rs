//! Minting keys and certificates with rcgen.
//!
//! Every certificate gets a random positive 16-byte serial and an explicit
//! validity starting a few minutes in the past (so a host whose clock lags
//! slightly accepts it). Identities and usages follow kubeadm: CAs may sign
//! certificates and CRLs; leaves carry digitalSignature (plus
//! keyEncipherment for RSA keys), their extended usages, SKI and AKI.

use anyhow::Context;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose, RsaKeySize, SanType, SerialNumber,
};
use time::{Duration, OffsetDateTime};

use super::certlist::LeafSpec;
use super::material::{Certificate, CertificateAuthority, PrivateKey};
use crate::inventory::KeyAlgorithm;

/// How far in the past certificates start being valid.
const BACKDATE: Duration = Duration::minutes(5);

pub fn generate_key(algorithm: KeyAlgorithm) -> anyhow::Result<PrivateKey> {
    let pair = match algorithm {
        KeyAlgorithm::EcdsaP256 => KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256),
        KeyAlgorithm::Rsa2048 => {
            KeyPair::generate_rsa_for(&rcgen::PKCS_RSA_SHA256, RsaKeySize::_2048)
        }
    }
    .with_context(|| format!("generating a {} key", algorithm.as_str()))?;
    Ok(PrivateKey::generated(pair))
}

fn random_serial() -> SerialNumber {
    let mut bytes: [u8; 16] = rand::random();
    // Positive and exactly 16 bytes long once DER-encoded.
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::from_slice(&bytes)
}

fn validity(params: &mut CertificateParams, days: u32) {
    let now = OffsetDateTime::now_utc();
    params.not_before = now - BACKDATE;
    params.not_after = now + Duration::days(i64::from(days));
}

fn distinguished_name(common_name: &str, organizations: &[String]) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    for organization in organizations {
        name.push(DnType::OrganizationName, organization.as_str());
    }
    name.push(DnType::CommonName, common_name);
    name
}

fn is_rsa(key: &PrivateKey) -> bool {
    key.pair.algorithm() == &rcgen::PKCS_RSA_SHA256
}

/// A new self-signed CA.
pub fn new_authority(
    common_name: &str,
    algorithm: KeyAlgorithm,
    validity_days: u32,
) -> anyhow::Result<CertificateAuthority> {
    new_authority_in_unit(common_name, None, algorithm, validity_days)
}

/// A new self-signed CA whose subject also carries `unit` (an OU): the new
/// CA of a rotation keeps its authority's CN (`kubernetes`, `etcd-ca`...)
/// but needs a subject distinct from the CA it sits beside in one bundle,
/// since verifiers look issuers up by subject.
pub fn new_authority_in_unit(
    common_name: &str,
    unit: Option<&str>,
    algorithm: KeyAlgorithm,
    validity_days: u32,
) -> anyhow::Result<CertificateAuthority> {
    let key = generate_key(algorithm)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(common_name, &[]);
    if let Some(unit) = unit {
        params
            .distinguished_name
            .push(DnType::OrganizationalUnitName, unit);
    }
    params.serial_number = Some(random_serial());
    validity(&mut params, validity_days);
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    if is_rsa(&key) {
        params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
    }
    let certificate = params
        .self_signed(&key.pair)
        .with_context(|| format!("self-signing CA {common_name}"))?;
    let certificate = Certificate::from_der(certificate.der().to_vec());
    CertificateAuthority::from_parts(
        std::path::Path::new(common_name),
        std::path::Path::new(common_name),
        certificate,
        key,
    )
}

/// A new key and a certificate for `spec`, signed by `authority`.
pub fn new_leaf(
    spec: &LeafSpec,
    authority: &CertificateAuthority,
    algorithm: KeyAlgorithm,
    validity_days: u32,
) -> anyhow::Result<(Certificate, PrivateKey)> {
    let key = generate_key(algorithm)?;
    let certificate = sign_leaf(spec, &key, authority, validity_days)?;
    Ok((certificate, key))
}

/// A certificate for `spec` over an existing key.
pub fn sign_leaf(
    spec: &LeafSpec,
    key: &PrivateKey,
    authority: &CertificateAuthority,
    validity_days: u32,
) -> anyhow::Result<Certificate> {
    let mut params = CertificateParams::default();
    params.distinguished_name = distinguished_name(&spec.common_name, &spec.organizations);
    params.serial_number = Some(random_serial());
    validity(&mut params, validity_days);
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    if is_rsa(key) {
        params.key_usages.push(KeyUsagePurpose::KeyEncipherment);
    }
    if spec.server_auth {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ServerAuth);
    }
    if spec.client_auth {
        params
            .extended_key_usages
            .push(ExtendedKeyUsagePurpose::ClientAuth);
    }
    for name in &spec.dns_names {
        let name = name
            .clone()
            .try_into()
            .with_context(|| format!("{}: invalid DNS name {name:?}", spec.base))?;
        params.subject_alt_names.push(SanType::DnsName(name));
    }
    for ip in &spec.ip_addresses {
        params.subject_alt_names.push(SanType::IpAddress(*ip));
    }
    params.use_authority_key_identifier_extension = true;
    let certificate = params
        .signed_by(&key.pair, &authority.issuer)
        .with_context(|| format!("signing {}", spec.base))?;
    Ok(Certificate::from_der(certificate.der().to_vec()))
}
