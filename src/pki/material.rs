//! Parsing and checking PEM material: certificates, private keys, and the
//! relations between them (a key matches its certificate, a certificate was
//! signed by a CA).
//!
//! rcgen reads keys and CA certificates but checks nothing about them, so
//! every relation is checked here with x509-parser and aws-lc (signatures).
//! Every failure is bad input (exit 2) naming the file it came from.

use std::path::Path;

use rcgen::{Issuer, KeyPair, PublicKeyData};
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use crate::error::bad_input;

/// A parsed certificate: its PEM text (as stored) and DER.
#[derive(Debug, Clone)]
pub struct Certificate {
    pub pem: String,
    pub der: Vec<u8>,
}

impl Certificate {
    /// Parse a file holding exactly one PEM certificate; `file` names it
    /// in errors. A second certificate (a bundle) is refused: whatever is
    /// in a store's CA file is trusted by every node it is shipped to.
    pub fn parse(file: &Path, bytes: &[u8]) -> anyhow::Result<Certificate> {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| bad_input(format!("{}: not a PEM certificate", file.display())))?;
        let block = single_block(file, text, "certificate")?;
        if block.tag() != "CERTIFICATE" {
            return Err(bad_input(format!(
                "{}: expected a CERTIFICATE, found a {} PEM block",
                file.display(),
                pem_tag(block.tag())
            )));
        }
        let der = block.into_contents();
        match x509_parser::parse_x509_certificate(&der) {
            Ok((&[], _)) => {}
            Ok(_) => {
                return Err(bad_input(format!(
                    "{}: trailing bytes after the certificate",
                    file.display()
                )))
            }
            Err(error) => {
                return Err(bad_input(format!(
                    "{}: not a valid X.509 certificate (truncated?): {error}",
                    file.display()
                )))
            }
        }
        Ok(Certificate {
            pem: text.to_string(),
            der,
        })
    }

    /// From DER (freshly issued or embedded), with canonical PEM text.
    pub fn from_der(der: Vec<u8>) -> Certificate {
        let pem = pem::encode_config(
            &pem::Pem::new("CERTIFICATE", der.clone()),
            pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF),
        );
        Certificate { pem, der }
    }

    /// The parsed view; parsing succeeded once already in [`Self::parse`].
    pub fn x509(&self) -> anyhow::Result<X509Certificate<'_>> {
        x509_parser::parse_x509_certificate(&self.der)
            .map(|(_, certificate)| certificate)
            .map_err(|error| anyhow::anyhow!("parsing certificate: {error}"))
    }

    /// Whether `issuer`'s key signed this certificate.
    pub fn is_signed_by(&self, issuer: &Certificate) -> bool {
        let (Ok(subject), Ok(issuer)) = (self.x509(), issuer.x509()) else {
            return false;
        };
        subject.verify_signature(Some(issuer.public_key())).is_ok()
    }

    pub fn common_name(&self) -> String {
        self.x509()
            .ok()
            .and_then(|certificate| {
                certificate
                    .subject()
                    .iter_common_name()
                    .next()
                    .and_then(|name| name.as_str().ok().map(str::to_string))
            })
            .unwrap_or_default()
    }

    pub fn validity(&self) -> anyhow::Result<Validity> {
        let parsed = self.x509()?;
        Ok(Validity {
            not_before: parsed.validity().not_before.timestamp(),
            not_after: parsed.validity().not_after.timestamp(),
        })
    }

    /// The subject public key (what a CA's signatures are checked with).
    pub fn public_key_bytes(&self) -> Vec<u8> {
        self.x509()
            .map(|certificate| certificate.public_key().raw.to_vec())
            .unwrap_or_default()
    }

    pub fn is_ca(&self) -> bool {
        self.x509()
            .map(|certificate| certificate.is_ca())
            .unwrap_or(false)
    }
}

/// Parse a trust bundle: one or more PEM certificates, each checked as
/// [`Certificate::parse`] checks one; `file` names it in errors. Used where
/// several CAs are trusted at once (a CA rotation in progress, a host's
/// `ca.crt`), never for the store's own certificate files.
pub fn parse_bundle(file: &Path, bytes: &[u8]) -> anyhow::Result<Vec<Certificate>> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| bad_input(format!("{}: not PEM certificates", file.display())))?;
    let blocks = pem::parse_many(text).map_err(|error| {
        bad_input(format!(
            "{}: not PEM certificates (truncated?): {error}",
            file.display()
        ))
    })?;
    if blocks.is_empty() {
        return Err(bad_input(format!(
            "{}: not a PEM certificate: no PEM block found",
            file.display()
        )));
    }
    blocks
        .into_iter()
        .map(|block| {
            if block.tag() != "CERTIFICATE" {
                return Err(bad_input(format!(
                    "{}: expected only CERTIFICATE blocks, found a {} PEM block",
                    file.display(),
                    pem_tag(block.tag())
                )));
            }
            let certificate = Certificate::from_der(block.into_contents());
            match x509_parser::parse_x509_certificate(&certificate.der) {
                Ok((&[], _)) => Ok(certificate),
                _ => Err(bad_input(format!(
                    "{}: holds a certificate that is not valid X.509",
                    file.display()
                ))),
            }
        })
        .collect()
}

/// Certificates as one PEM bundle, in order. A single certificate is its
/// PEM text exactly as stored, so a bundle of one is byte-identical to the
/// file it came from.
pub fn bundle_pem(certificates: &[&Certificate]) -> String {
    if let [only] = certificates {
        return only.pem.clone();
    }
    let mut text = String::new();
    for certificate in certificates {
        text.push_str(&certificate.pem);
        if !text.ends_with('\n') {
            text.push('\n');
        }
    }
    text
}

const PRIVATE_KEY_TAGS: [&str; 3] = ["PRIVATE KEY", "RSA PRIVATE KEY", "EC PRIVATE KEY"];

/// A PEM tag for a message: short and printable, since it comes from the
/// file (which may hold anything).
fn pem_tag(tag: &str) -> String {
    crate::input_file::excerpt(tag, 40)
}

/// The one PEM block of `text`; none, several or an unreadable one is bad
/// input naming `file`. Never quotes the contents (they may be a key).
fn single_block(file: &Path, text: &str, what: &str) -> anyhow::Result<pem::Pem> {
    let blocks = pem::parse_many(text).map_err(|error| {
        bad_input(format!(
            "{}: not a PEM {what} (truncated?): {error}",
            file.display()
        ))
    })?;
    let count = blocks.len();
    let mut blocks = blocks.into_iter();
    match (blocks.next(), count) {
        (Some(block), 1) => Ok(block),
        (None, _) => Err(bad_input(format!(
            "{}: not a PEM {what}: no PEM block found",
            file.display()
        ))),
        (Some(_), count) => Err(bad_input(format!(
            "{}: holds {count} PEM blocks; the file must hold exactly one {what}",
            file.display()
        ))),
    }
}

/// When a certificate may be used: not before and not after, UNIX seconds.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub not_before: i64,
    pub not_after: i64,
}

impl Validity {
    /// Why the certificate cannot be used at `now`, if it cannot.
    pub fn problem(&self, now: i64) -> Option<String> {
        if now > self.not_after {
            Some(format!(
                "expired on {}",
                super::inspect::rfc3339(self.not_after)
            ))
        } else if now < self.not_before {
            Some(format!(
                "not valid before {}",
                super::inspect::rfc3339(self.not_before)
            ))
        } else {
            None
        }
    }
}

/// A private key and its PEM text exactly as stored.
pub struct PrivateKey {
    pub pem: String,
    pub pair: KeyPair,
}

impl PrivateKey {
    /// Parse a file holding exactly one PEM private key: PKCS#8, PKCS#1
    /// (RSA) or SEC1 (EC).
    pub fn parse(file: &Path, bytes: &[u8]) -> anyhow::Result<PrivateKey> {
        let text = std::str::from_utf8(bytes)
            .map_err(|_| bad_input(format!("{}: not a PEM private key", file.display())))?;
        let block = single_block(file, text, "private key")?;
        if !PRIVATE_KEY_TAGS.contains(&block.tag()) {
            return Err(bad_input(format!(
                "{}: expected a private key (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY), \
                 found a {} PEM block",
                file.display(),
                pem_tag(block.tag())
            )));
        }
        let pair = KeyPair::from_pem(text).map_err(|error| {
            bad_input(format!(
                "{}: not a usable private key (PKCS#8, PKCS#1 RSA or SEC1 EC PEM): {error}",
                file.display()
            ))
        })?;
        Ok(PrivateKey {
            pem: text.to_string(),
            pair,
        })
    }

    pub fn generated(pair: KeyPair) -> PrivateKey {
        PrivateKey {
            pem: pair.serialize_pem(),
            pair,
        }
    }

    /// Whether this is the private half of `certificate`'s public key.
    pub fn matches(&self, certificate: &Certificate) -> bool {
        certificate.x509().is_ok_and(|parsed| {
            parsed.public_key().subject_public_key.data.as_ref() == self.pair.der_bytes()
        })
    }

    /// The public key as a PEM `PUBLIC KEY` (for `sa.pub`).
    pub fn public_pem(&self) -> String {
        self.pair.public_key_pem()
    }
}

/// Whether the PEM public key `public` (an `sa.pub`) belongs to `key`.
pub fn public_key_matches(public: &[u8], key: &PrivateKey) -> bool {
    let Ok(text) = std::str::from_utf8(public) else {
        return false;
    };
    let Ok(blocks) = pem::parse_many(text) else {
        return false;
    };
    let [block] = blocks.as_slice() else {
        return false;
    };
    if block.tag() != "PUBLIC KEY" {
        return false;
    }
    match x509_parser::x509::SubjectPublicKeyInfo::from_der(block.contents()) {
        Ok((_, spki)) => spki.subject_public_key.data.as_ref() == key.pair.der_bytes(),
        Err(_) => false,
    }
}

/// A CA ready to sign: its certificate and an rcgen issuer over its key.
pub struct CertificateAuthority {
    pub certificate: Certificate,
    pub key: PrivateKey,
    pub issuer: Issuer<'static, KeyPair>,
}

impl CertificateAuthority {
    /// Check and load a CA pair: the certificate parses, is a CA, and the key
    /// is its own.
    pub fn load(
        cert_file: &Path,
        cert_bytes: &[u8],
        key_file: &Path,
        key_bytes: &[u8],
    ) -> anyhow::Result<CertificateAuthority> {
        let certificate = Certificate::parse(cert_file, cert_bytes)?;
        let key = PrivateKey::parse(key_file, key_bytes)?;
        Self::from_parts(cert_file, key_file, certificate, key)
    }

    pub fn from_parts(
        cert_file: &Path,
        key_file: &Path,
        certificate: Certificate,
        key: PrivateKey,
    ) -> anyhow::Result<CertificateAuthority> {
        if !certificate.is_ca() {
            return Err(bad_input(format!(
                "{}: not a CA certificate (no basicConstraints CA:TRUE)",
                cert_file.display()
            )));
        }
        if !key.matches(&certificate) {
            return Err(bad_input(format!(
                "{}: key does not match its certificate {}",
                key_file.display(),
                cert_file.display()
            )));
        }
        let signing_key = KeyPair::from_pem(&key.pem)
            .map_err(|error| bad_input(format!("{}: unusable key: {error}", key_file.display())))?;
        let issuer = Issuer::from_ca_cert_der(&certificate.der.clone().into(), signing_key)
            .map_err(|error| {
                bad_input(format!(
                    "{}: cannot sign with this CA: {error}",
                    cert_file.display()
                ))
            })?;
        Ok(CertificateAuthority {
            certificate,
            key,
            issuer,
        })
    }
}
