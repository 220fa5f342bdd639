//! Kubeconfigs with embedded credentials, shaped like kubeadm's: one
//! cluster named after the inventory's cluster, one user named after the
//! certificate's identity, and the context `<user>@<cluster>`.

use std::path::Path;

use base64::Engine;
use serde::Deserialize;

use super::material::{self, Certificate, PrivateKey};
use crate::error::bad_input;

/// `authorities` is what the kubeconfig trusts: the one CA, or during a CA
/// rotation the current signer followed by the other CA (a bundle).
pub fn render(
    cluster_name: &str,
    server: &str,
    user: &str,
    authorities: &[&Certificate],
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
        ca = encode(&material::bundle_pem(authorities)),
        cert = encode(&certificate.pem),
        key = encode(&key.pem),
    )
}

/// A kubeconfig exactly as [`render`] writes it: anything else (a second
/// user, a token, an exec plugin, a proxy) is refused, since whatever a
/// store kubeconfig holds is handed to hosts and operators.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Kubeconfig {
    #[serde(rename = "apiVersion")]
    api_version: String,
    kind: String,
    #[serde(default)]
    clusters: Vec<NamedCluster>,
    #[serde(default)]
    contexts: Vec<NamedContext>,
    #[serde(rename = "current-context", default)]
    current_context: String,
    #[serde(default)]
    preferences: serde_norway::Mapping,
    #[serde(default)]
    users: Vec<NamedUser>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamedCluster {
    name: String,
    cluster: ClusterEntry,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ClusterEntry {
    #[serde(rename = "certificate-authority-data")]
    certificate_authority_data: Option<String>,
    #[serde(default)]
    server: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamedContext {
    name: String,
    context: ContextEntry,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ContextEntry {
    cluster: String,
    user: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NamedUser {
    name: String,
    user: UserEntry,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    #[serde(rename = "client-certificate-data")]
    client_certificate_data: Option<String>,
    #[serde(rename = "client-key-data")]
    client_key_data: Option<String>,
}

/// An API server URL as ocfk8s writes one: `https://host:port`, the host a
/// DNS name or an IP address (IPv6 in brackets), nothing else.
pub(crate) fn sane_server(server: &str) -> bool {
    let Some(rest) = server.strip_prefix("https://") else {
        return false;
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let Some((host, port)) = rest.rsplit_once(':') else {
        return false;
    };
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|byte| byte.is_ascii_digit()) {
        return false;
    }
    if port.parse::<u16>().map_or(true, |port| port == 0) {
        return false;
    }
    if let Some(inner) = host
        .strip_prefix('[')
        .and_then(|host| host.strip_suffix(']'))
    {
        return inner.parse::<std::net::Ipv6Addr>().is_ok();
    }
    !host.is_empty()
        && host.len() <= 253
        && host.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label
                    .bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
        })
}

/// What a stored kubeconfig embeds.
pub struct Embedded {
    pub server: String,
    /// Every certificate of `certificate-authority-data`: one, or two
    /// during a CA rotation.
    pub authorities: Vec<Certificate>,
    pub certificate: Certificate,
    pub key: PrivateKey,
}

/// A YAML error without the values it quotes: serde echoes a mistyped
/// value (`invalid type: string "-----BEGIN PRIVATE KEY----- ..."`) and an
/// unknown key (``unknown field `...` ``), and the files read here hold
/// keys. Short field-like names in backquotes are kept; everything else
/// quoted is replaced.
pub(crate) fn yaml_error(error: &serde_norway::Error) -> String {
    let message = error.to_string();
    let mut shown = String::with_capacity(message.len());
    let mut rest = message.as_str();
    while let Some(start) = rest.find(['"', '`']) {
        let quote = rest[start..].chars().next().unwrap_or('"');
        let Some(length) = rest[start + 1..].find(quote) else {
            break;
        };
        let inner = &rest[start + 1..start + 1 + length];
        shown.push_str(&rest[..start]);
        let field_like = quote == '`'
            && inner.len() <= 40
            && inner
                .bytes()
                .all(|byte| byte.is_ascii_alphanumeric() || b"-_.".contains(&byte));
        if field_like {
            shown.push('`');
            shown.push_str(inner);
            shown.push('`');
        } else {
            shown.push_str("<value not shown>");
        }
        rest = &rest[start + 2 + length..];
    }
    // An unmatched quote: whatever follows it is not shown either.
    match rest.find(['"', '`']) {
        Some(start) => {
            shown.push_str(&rest[..start]);
            shown.push_str("<value not shown>");
        }
        None => shown.push_str(rest),
    }
    shown
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
    let unexpected = |what: String| {
        bad_input(format!(
            "{}: {what}; a store kubeconfig holds one cluster, one context and one user, \
             as ocfk8s writes it",
            file.display()
        ))
    };
    if config.api_version != "v1" || config.kind != "Config" {
        return Err(unexpected(
            "not `apiVersion: v1`, `kind: Config`".to_string(),
        ));
    }
    if !config.preferences.is_empty() {
        return Err(unexpected("preferences are set".to_string()));
    }
    for (what, count) in [
        ("clusters", config.clusters.len()),
        ("contexts", config.contexts.len()),
        ("users", config.users.len()),
    ] {
        if count > 1 {
            return Err(unexpected(format!("{count} {what}")));
        }
    }
    let context = config
        .contexts
        .into_iter()
        .next()
        .ok_or_else(|| missing("context"))?;
    let cluster = config
        .clusters
        .into_iter()
        .next()
        .ok_or_else(|| missing("cluster"))?;
    let user = config
        .users
        .into_iter()
        .next()
        .ok_or_else(|| missing("user"))?;
    if config.current_context != context.name
        || context.context.cluster != cluster.name
        || context.context.user != user.name
    {
        return Err(unexpected(
            "its current-context, context, cluster and user names do not refer to each other"
                .to_string(),
        ));
    }
    let (cluster, user) = (cluster.cluster, user.user);
    if !sane_server(&cluster.server) {
        // Not quoted: a tampered file may hold anything there.
        return Err(bad_input(format!(
            "{}: its server is not an https://host:port URL",
            file.display()
        )));
    }
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
    let authority_label = label("certificate-authority-data");
    let authorities = match Certificate::parse(&authority_label, &authority_bytes) {
        Ok(single) => vec![single],
        // A bundle (a CA rotation in progress); whether its CAs are the
        // store's is the caller's check.
        Err(single_error) => match material::parse_bundle(&authority_label, &authority_bytes) {
            Ok(bundle) if bundle.len() > 1 => bundle,
            _ => return Err(single_error),
        },
    };
    Ok(Embedded {
        server: cluster.server,
        authorities,
        certificate: Certificate::parse(&label("client-certificate-data"), &certificate_bytes)?,
        key: PrivateKey::parse(&label("client-key-data"), &key_bytes)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_never_quote_values_or_unknown_keys_that_look_like_secrets() {
        let key = "-----BEGIN PRIVATE KEY-----MIGHAgEAMBMGByqGSM49";
        for text in [
            format!("apiVersion: v1\nkind: Config\nclusters: \"{key}\"\n"),
            format!("apiVersion: v1\nkind: Config\n\"{key}\": 1\n"),
            format!("apiVersion: v1\nkind: Config\nusers:\n- name: a\n  user:\n    `{key}`: 1\n"),
        ] {
            let error = parse(Path::new("admin.conf"), text.as_bytes())
                .err()
                .map(|error| format!("{error:#}"))
                .unwrap_or_default();
            assert!(error.starts_with("admin.conf: "), "{error}");
            assert!(
                !error.contains("BEGIN") && !error.contains("MIGHA"),
                "{error}"
            );
        }
        let error = parse(
            Path::new("admin.conf"),
            b"apiVersion: v1\nkind: Config\ntoken: x\n",
        )
        .err()
        .map(|error| format!("{error:#}"))
        .unwrap_or_default();
        assert!(error.contains("unknown field `token`"), "{error}");
    }

    #[test]
    fn only_https_host_port_servers_are_sane() {
        for good in [
            "https://kube.example.org:6443",
            "https://192.0.2.11:6443",
            "https://[::1]:6443",
            "https://127.0.0.1:6443/",
        ] {
            assert!(sane_server(good), "{good}");
        }
        for bad in [
            "http://kube.example.org:6443",
            "https://kube.example.org",
            "https://user@kube.example.org:6443",
            "https://kube.example.org:6443/path",
            "https://kube.example.org:0",
            "https://kube example.org:6443",
            "https://:6443",
            "https://[nothing]:6443",
        ] {
            assert!(!sane_server(bad), "{bad}");
        }
    }
}
