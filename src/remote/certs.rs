//! The certificates a host really has, read in one round trip.
//!
//! Certificate files (`*.crt`) under the Kubernetes folders come back whole;
//! from kubeconfigs only the `client-certificate-data` line is sent, so no
//! private key ever leaves the host.

use anyhow::Context;
use base64::Engine as _;

use super::session::Host;

/// Folders searched for certificates and kubeconfigs.
const CERTIFICATE_FOLDERS: [&str; 4] = [
    "/etc/kubernetes",
    "/var/lib/kubelet",
    "/var/lib/kube-proxy",
    "/etc/nginx",
];

/// One certificate found on a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct HostCertificate {
    pub(crate) path: String,
    /// The subject's common name, or the whole subject when it has none.
    pub(crate) subject: String,
    /// Unix time of notAfter; `None` when the file holds no readable
    /// certificate.
    pub(crate) not_after: Option<i64>,
    /// The serial number in upper-case hex, as `openssl x509 -serial`
    /// prints it.
    pub(crate) serial: Option<String>,
}

pub(crate) fn certificates_script() -> String {
    let folders = CERTIFICATE_FOLDERS.join(" ");
    format!(
        "set -e\n\
         for d in {folders}; do\n\
           [ -d \"$d\" ] || continue\n\
           find \"$d\" -type f \\( -name '*.crt' -o -name '*.conf' \\) | sort | while read -r f; do\n\
             case \"$f\" in\n\
               *.crt) printf 'crt %s ' \"$f\"; base64 -w0 \"$f\"; echo ;;\n\
               *.conf) sed -n 's/^ *client-certificate-data: *\\([A-Za-z0-9+/=]*\\) *$/\\1/p' \"$f\" | while read -r data; do printf 'conf %s %s\\n' \"$f\" \"$data\"; done ;;\n\
             esac\n\
           done\n\
         done\n\
         echo end\n"
    )
}

pub(crate) fn parse_certificates(output: &str) -> anyhow::Result<Vec<HostCertificate>> {
    let engine = base64::engine::general_purpose::STANDARD;
    let mut found = Vec::new();
    let mut ended = false;
    for line in output.lines() {
        if line == "end" {
            ended = true;
            continue;
        }
        let mut parts = line.splitn(3, ' ');
        let (Some(_kind), Some(path), encoded) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let pem = engine
            .decode(encoded.unwrap_or_default().trim())
            .unwrap_or_default();
        let mut any = false;
        for pem in x509_parser::pem::Pem::iter_from_buffer(&pem).flatten() {
            if pem.label != "CERTIFICATE" {
                continue;
            }
            if let Ok(certificate) = pem.parse_x509() {
                any = true;
                let subject = certificate
                    .subject()
                    .iter_common_name()
                    .next()
                    .and_then(|name| name.as_str().ok())
                    .map(str::to_string)
                    .unwrap_or_else(|| certificate.subject().to_string());
                found.push(HostCertificate {
                    path: path.to_string(),
                    subject,
                    not_after: Some(certificate.validity().not_after.timestamp()),
                    serial: Some(serial_hex(certificate.raw_serial())),
                });
            }
        }
        if !any {
            found.push(HostCertificate {
                path: path.to_string(),
                subject: String::new(),
                not_after: None,
                serial: None,
            });
        }
    }
    if !ended {
        anyhow::bail!("the certificate listing was cut short");
    }
    Ok(found)
}

/// A serial's bytes as `openssl x509 -serial` prints them: upper-case hex
/// without the leading zero byte DER adds to keep it positive.
fn serial_hex(bytes: &[u8]) -> String {
    let trimmed: &[u8] = match bytes {
        [0, rest @ ..] if !rest.is_empty() => rest,
        _ => bytes,
    };
    hex::encode_upper(trimmed)
}

/// Every certificate on `host`: one round trip.
pub(crate) async fn read_certificates(host: &Host) -> anyhow::Result<Vec<HostCertificate>> {
    let output = host
        .run_script(&certificates_script())
        .await
        .context("reading certificates")?;
    parse_certificates(&output.stdout)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_certificate_files_and_kubeconfig_client_certificates_but_no_keys() {
        let dir = tempfile::tempdir().expect("temp dir");
        let key = dir.path().join("ca.key");
        let cert = dir.path().join("ca.crt");
        let status = std::process::Command::new("openssl")
            .args([
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-days",
                "30",
                "-subj",
                "/CN=test-ca",
            ])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("openssl");
        assert!(status.status.success());
        let engine = base64::engine::general_purpose::STANDARD;
        let pem = std::fs::read(&cert).expect("read cert");
        let key_pem = std::fs::read(&key).expect("read key");
        let output = format!(
            "crt /etc/kubernetes/pki/ca.crt {}\nconf /etc/kubernetes/admin.conf {}\ncrt /etc/kubernetes/pki/bad.crt {}\nend\n",
            engine.encode(&pem),
            engine.encode(&pem),
            engine.encode("not a certificate")
        );
        let found = parse_certificates(&output).expect("parse");
        assert_eq!(found.len(), 3);
        assert_eq!(found[0].subject, "test-ca");
        let days = (found[0].not_after.expect("expiry")
            - time::OffsetDateTime::now_utc().unix_timestamp())
            / 86400;
        assert!((29..=30).contains(&days), "{days}");
        assert_eq!(found[1].path, "/etc/kubernetes/admin.conf");
        assert_eq!(found[2].not_after, None);

        // The script sends only the client-certificate-data of a kubeconfig.
        let root = dir.path().join("etc/kubernetes");
        std::fs::create_dir_all(&root).expect("mkdir");
        std::fs::write(
            root.join("admin.conf"),
            format!(
                "users:\n- user:\n    client-certificate-data: {}\n    client-key-data: {}\n",
                engine.encode(&pem),
                engine.encode(&key_pem)
            ),
        )
        .expect("write kubeconfig");
        let script =
            certificates_script().replace("/etc/kubernetes", root.to_str().expect("utf-8"));
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .output()
            .expect("sh");
        let stdout = String::from_utf8(output.stdout).expect("utf-8");
        assert!(!stdout.contains(&engine.encode(&key_pem)), "{stdout}");
        let found = parse_certificates(&stdout).expect("parse");
        assert_eq!(found.len(), 1, "{stdout}");
        assert_eq!(found[0].subject, "test-ca");
    }
}
