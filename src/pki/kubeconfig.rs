//! Kubeconfigs with embedded credentials, shaped like kubeadm's: one
//! cluster named after the inventory's cluster, one user named after the
//! certificate's identity, and the context `<user>@<cluster>`.

use std::path::Path;

use base64::Engine;
use serde::Deserialize;

use super::material::{Certificate, PrivateKey};
use crate::error::bad_input;

pub fn render(
    cluster_name: &str,
    server: &str,
    user: &str,
    authority: &Certificate,
    certificate: &Certificate,
    key: &PrivateKey,
) -> String {
    let encode = |text: &str| base64::engine::general_purpose::STANDARD.encode(text.as_bytes());
    format!(
        "apiVersion: v1\n\
         clusters:\n\
         - cluster:\n    \
             certificate-authority-data: {ca}\n    \
             server: {server}\n  \
           name: {cluster_name}\n\
         contexts:\n\
         - context:\n    \
             cluster: {cluster_name}\n    \
             user: {user}\n  \
           name: {user}@{cluster_name}\n\
         current-context: {user}@{cluster_name}\n\
         kind: Config\n\
         preferences: {{}}\n\
         users:\n\
         - name: {user}\n  \
           user:\n    \
             client-certificate-data: {cert}\n    \
             client-key-data: {key}\n",
        ca = encode(&authority.pem),
        cert = encode(&certificate.pem),
        key = encode(&key.pem),
    )
}

#[derive(Deserialize)]
struct Kubeconfig {
    #[serde(default)]
    clusters: Vec<NamedCluster>,
    #[serde(default)]
    users: Vec<NamedUser>,
}

#[derive(Deserialize)]
struct NamedCluster {
    cluster: ClusterEntry,
}

#[derive(Deserialize)]
struct ClusterEntry {
    #[serde(rename = "certificate-authority-data")]
    certificate_authority_data: Option<String>,
    #[serde(default)]
    server: String,
}

#[derive(Deserialize)]
struct NamedUser {
    user: UserEntry,
}

#[derive(Deserialize)]
struct UserEntry {
    #[serde(rename = "client-certificate-data")]
    client_certificate_data: Option<String>,
    #[serde(rename = "client-key-data")]
    client_key_data: Option<String>,
}

/// What a stored kubeconfig embeds.
pub struct Embedded {
    pub server: String,
    pub authority: Certificate,
    pub certificate: Certificate,
    pub key: PrivateKey,
}

/// A YAML error without the values it quotes: serde echoes a mistyped
/// value (`invalid type: string "-----BEGIN PRIVATE KEY----- ..."`), and
/// the files read here hold keys.
pub(crate) fn yaml_error(error: &serde_norway::Error) -> String {
    let message = error.to_string();
    match (message.find('"'), message.rfind('"')) {
        (Some(first), Some(last)) if first < last => {
            format!(
                "{}<value not shown>{}",
                &message[..first],
                &message[last + 1..]
            )
        }
        _ => message,
    }
}

/// Read the credentials embedded in a kubeconfig; `file` names it in errors.
pub fn parse(file: &Path, bytes: &[u8]) -> anyhow::Result<Embedded> {
    let config: Kubeconfig = serde_norway::from_slice(bytes).map_err(|error| {
        bad_input(format!(
            "{}: not a kubeconfig: {}",
            file.display(),
            yaml_error(&error)
        ))
    })?;
    let missing = |what: &str| bad_input(format!("{}: kubeconfig has no {what}", file.display()));
    let cluster = config
        .clusters
        .into_iter()
        .next()
        .ok_or_else(|| missing("cluster"))?
        .cluster;
    let user = config
        .users
        .into_iter()
        .next()
        .ok_or_else(|| missing("user"))?
        .user;
    let decode = |field: &str, value: Option<String>| -> anyhow::Result<Vec<u8>> {
        let value = value.ok_or_else(|| missing(field))?;
        base64::engine::general_purpose::STANDARD
            .decode(value.trim())
            .map_err(|error| {
                bad_input(format!(
                    "{}: {field} is not base64: {error}",
                    file.display()
                ))
            })
    };
    let label = |field: &str| std::path::PathBuf::from(format!("{} ({field})", file.display()));
    let authority_bytes = decode(
        "certificate-authority-data",
        cluster.certificate_authority_data,
    )?;
    let certificate_bytes = decode("client-certificate-data", user.client_certificate_data)?;
    let key_bytes = decode("client-key-data", user.client_key_data)?;
    Ok(Embedded {
        server: cluster.server,
        authority: Certificate::parse(&label("certificate-authority-data"), &authority_bytes)?,
        certificate: Certificate::parse(&label("client-certificate-data"), &certificate_bytes)?,
        key: PrivateKey::parse(&label("client-key-data"), &key_bytes)?,
    })
}
