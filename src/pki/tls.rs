//! The operator's own ingress certificate (`[ingress] tls_cert`/`tls_key`):
//! nginx refuses to start when the key is not the certificate's, so a
//! mismatched pair is caught by `validate` and `render` instead, before any
//! host is touched.

use crate::error::bad_input;
use crate::input_file::{self, MAX_TEXT_FILE};
use crate::inventory::Cluster;

use super::material::{Certificate, PrivateKey};

/// Check `[ingress] tls_cert`/`tls_key`, when given: both regular files of
/// sane size, the certificate file one or more PEM certificates (the
/// server's first, then its chain), the key one private key, and the key
/// the first certificate's. Bad input (exit 2) naming both files and the
/// inventory fields otherwise.
pub fn check_operator_tls(cluster: &Cluster) -> anyhow::Result<()> {
    let Some(tls) = cluster
        .ingress
        .as_ref()
        .and_then(|ingress| ingress.tls.as_ref())
    else {
        return Ok(());
    };
    let inventory = cluster.inventory_path.display();
    let read = |path: &std::path::Path, field: &str| {
        input_file::read_regular(path, MAX_TEXT_FILE).map_err(|error| {
            bad_input(format!(
                "{}: {error} (ingress.{field} in {inventory})",
                path.display()
            ))
        })
    };
    let cert_bytes = read(&tls.cert, "tls_cert")?;
    let key_bytes = read(&tls.key, "tls_key")?;
    let label = |path: &std::path::Path, field: &str| {
        std::path::PathBuf::from(format!(
            "{} (ingress.{field} in {inventory})",
            path.display()
        ))
    };
    let server = first_certificate(&label(&tls.cert, "tls_cert"), &cert_bytes)?;
    let key = PrivateKey::parse(&label(&tls.key, "tls_key"), &key_bytes)?;
    if !key.matches(&server) {
        return Err(bad_input(format!(
            "{} (ingress.tls_key) is not the key of {} (ingress.tls_cert) in {inventory}: \
             nginx would refuse to start",
            tls.key.display(),
            tls.cert.display()
        )));
    }
    Ok(())
}

/// The first of one or more PEM certificates (a server certificate and its
/// chain); anything but CERTIFICATE blocks is refused.
fn first_certificate(label: &std::path::Path, bytes: &[u8]) -> anyhow::Result<Certificate> {
    let text = std::str::from_utf8(bytes)
        .map_err(|_| bad_input(format!("{}: not a PEM certificate", label.display())))?;
    let blocks = pem::parse_many(text).map_err(|error| {
        bad_input(format!(
            "{}: not a PEM certificate (truncated?): {error}",
            label.display()
        ))
    })?;
    if blocks.is_empty() {
        return Err(bad_input(format!(
            "{}: not a PEM certificate: no PEM block found",
            label.display()
        )));
    }
    if let Some(other) = blocks.iter().find(|block| block.tag() != "CERTIFICATE") {
        return Err(bad_input(format!(
            "{}: expected only CERTIFICATE blocks (the server's, then its chain), found a {} block",
            label.display(),
            input_file::excerpt(other.tag(), 40)
        )));
    }
    let first = pem::encode(&blocks[0]);
    Certificate::parse(label, first.as_bytes())
}
