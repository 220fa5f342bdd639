//! What each destination of an inventory value accepts.
//!
//! Every string in the inventory ends up somewhere with its own grammar: a
//! systemd unit's `ExecStart=`, a YAML manifest, a keepalived or nginx
//! configuration, an ssh command line or config file, a certificate. The
//! rules here are those grammars' (Kubernetes' label syntax, Linux interface
//! names, POSIX user names...), deliberately strict allow-lists: a value that
//! passes can be written into its destination as it is, so a newline, a
//! quote or a leading `-` can never start a new directive or option. Each
//! check returns why a value was refused, in words an operator can act on;
//! [`super::resolve`] adds the file, line and field.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

use crate::input_file::excerpt;

/// The Kubernetes minor releases ocfk8s renders for: the addon images it
/// pins (CoreDNS, flannel, ingress-nginx) and the flags in its manifests
/// are those these releases accept.
pub const SUPPORTED_KUBERNETES_MINORS: std::ops::RangeInclusive<u32> = 29..=32;

/// The longest value quoted back in a message.
const SHOWN: usize = 64;

/// A user's value quoted for a message: at most [`SHOWN`] characters,
/// control characters escaped.
pub(crate) fn shown(text: &str) -> String {
    format!("\"{}\"", excerpt(text, SHOWN))
}

/// RFC 1123 label: lowercase letters, digits and '-', 1 to 63 characters,
/// starting and ending with a letter or digit.
pub(crate) fn is_dns_label(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 63
        && text
            .bytes()
            .all(|byte| byte.is_ascii_lowercase() || byte.is_ascii_digit() || byte == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-')
}

/// Why `text` is refused as a host's (or the cluster's) name: it is not a
/// DNS label.
pub(crate) fn not_a_label(text: &str) -> String {
    format!(
        "{} is not a DNS label (lowercase letters, digits and '-', at most 63 characters, starting and ending with a letter or digit)",
        shown(text)
    )
}

/// A DNS name: dot-separated RFC 1123 labels (any case), at most 253
/// characters.
pub(crate) fn is_dns_name(text: &str) -> bool {
    let lower = text.to_ascii_lowercase();
    !lower.is_empty() && lower.len() <= 253 && lower.split('.').all(is_dns_label)
}

/// The name part of a Kubernetes qualified name (label key, taint key):
/// 1 to 63 of `[A-Za-z0-9-_.]`, starting and ending alphanumeric.
fn is_qualified_name_part(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 63
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.'))
        && text.starts_with(|c: char| c.is_ascii_alphanumeric())
        && text.ends_with(|c: char| c.is_ascii_alphanumeric())
}

/// A Kubernetes label key (also a taint key): `[prefix/]name`, the prefix a
/// lowercase DNS subdomain of at most 253 characters.
pub(crate) fn label_key(text: &str) -> Result<(), String> {
    let (prefix, name) = match text.split_once('/') {
        Some((prefix, name)) => (Some(prefix), name),
        None => (None, text),
    };
    if let Some(prefix) = prefix {
        if prefix.len() > 253 || !prefix.split('.').all(is_dns_label) {
            return Err(format!(
                "{} is not a label key: its prefix must be a lowercase DNS subdomain such as \"example.org\"",
                shown(text)
            ));
        }
    }
    if !is_qualified_name_part(name) {
        return Err(format!(
            "{} is not a label key: the name must be 1 to 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit, after an optional \"prefix/\"",
            shown(text)
        ));
    }
    Ok(())
}

/// Labels in the `kubernetes.io` and `k8s.io` namespaces that kubelet may
/// set on its own Node (`--node-labels`); any other label there makes
/// kubelet refuse to start (and the NodeRestriction admission plugin
/// refuses it too).
const KUBELET_LABELS: &[&str] = &[
    "kubernetes.io/hostname",
    "kubernetes.io/os",
    "kubernetes.io/arch",
    "beta.kubernetes.io/os",
    "beta.kubernetes.io/arch",
    "beta.kubernetes.io/instance-type",
    "node.kubernetes.io/instance-type",
    "failure-domain.beta.kubernetes.io/zone",
    "failure-domain.beta.kubernetes.io/region",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
];

/// Namespaces of the `kubernetes.io` family open to kubelet's labels.
const KUBELET_LABEL_NAMESPACES: &[&str] = &["kubelet.kubernetes.io", "node.kubernetes.io"];

/// A label kubelet can register its Node with, as kubelet itself checks
/// `--node-labels`: a valid key outside the reserved `kubernetes.io` and
/// `k8s.io` namespaces, or one of those kubelet may set.
pub(crate) fn node_label_key(text: &str) -> Result<(), String> {
    label_key(text)?;
    let Some((namespace, _)) = text.split_once('/') else {
        return Ok(());
    };
    let in_namespace = |root: &str| namespace == root || namespace.ends_with(&format!(".{root}"));
    let reserved = in_namespace("kubernetes.io") || in_namespace("k8s.io");
    let allowed = KUBELET_LABELS.contains(&text)
        || KUBELET_LABEL_NAMESPACES
            .iter()
            .any(|open| in_namespace(open));
    if reserved && !allowed {
        return Err(format!(
            "{} is in a namespace reserved for Kubernetes: kubelet refuses to start with it; use your own prefix (\"example.org/role\"), node.kubernetes.io/ or kubelet.kubernetes.io/, or set node-role labels with kubectl",
            shown(text)
        ));
    }
    Ok(())
}

/// A Kubernetes label value (also a taint value): empty, or what a
/// qualified name's name part accepts.
pub(crate) fn label_value(text: &str) -> Result<(), String> {
    if text.is_empty() || is_qualified_name_part(text) {
        Ok(())
    } else {
        Err(format!(
            "{} is not a label value: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit, or empty",
            shown(text)
        ))
    }
}

/// The effects a taint may have.
pub(crate) const TAINT_EFFECTS: &[&str] = &["NoSchedule", "PreferNoSchedule", "NoExecute"];

/// A taint as kubectl writes it: `key[=value]:Effect`.
pub(crate) fn taint(text: &str) -> Result<(), String> {
    let grammar = "expected key[=value]:NoSchedule|PreferNoSchedule|NoExecute";
    let Some((key_value, effect)) = text.rsplit_once(':') else {
        return Err(format!("{} is not a taint: {grammar}", shown(text)));
    };
    if !TAINT_EFFECTS.contains(&effect) {
        return Err(format!(
            "{} is not a taint: unknown effect {}; {grammar}",
            shown(text),
            shown(effect)
        ));
    }
    let (key, value) = match key_value.split_once('=') {
        Some((key, value)) => (key, Some(value)),
        None => (key_value, None),
    };
    label_key(key).map_err(|why| format!("taint {}: {why}", shown(text)))?;
    if let Some(value) = value {
        label_value(value).map_err(|why| format!("taint {}: {why}", shown(text)))?;
    }
    Ok(())
}

/// A folder on the hosts written into unit files, keepalived's script
/// line and remote commands: absolute, and only characters none of those
/// treat specially.
pub(crate) fn host_path(text: &str) -> Result<(), String> {
    if !text.starts_with('/') {
        return Err(format!(
            "{} must be an absolute path on the hosts",
            shown(text)
        ));
    }
    if text.len() > 256 {
        return Err(format!("{} is longer than 256 characters", shown(text)));
    }
    if let Some(bad) = text
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '/' | '.' | '_' | '-' | '+')))
    {
        return Err(format!(
            "{} holds {}: a path on the hosts may hold only letters, digits and / . _ - + (it is written into systemd units and keepalived's configuration)",
            shown(text),
            describe_char(bad)
        ));
    }
    if text.split('/').any(|part| part == "..") {
        return Err(format!("{} must not contain \"..\"", shown(text)));
    }
    Ok(())
}

/// A path on this machine (PKI store, templates, binaries to upload, TLS
/// files, ssh files): any characters but control characters.
pub(crate) fn local_path(text: &str) -> Result<(), String> {
    if text.is_empty() {
        return Err("must not be empty".to_string());
    }
    if text.len() > 4096 {
        return Err(format!("{} is longer than 4096 characters", shown(text)));
    }
    if let Some(bad) = text.chars().find(|c| c.is_control()) {
        return Err(format!(
            "{} holds {}: a path may not hold control characters",
            shown(text),
            describe_char(bad)
        ));
    }
    Ok(())
}

/// A local path written into the per-run ssh config inside double quotes,
/// where ssh also expands `%` tokens.
pub(crate) fn ssh_config_path(text: &str) -> Result<(), String> {
    local_path(text)?;
    if let Some(bad) = text.chars().find(|c| matches!(c, '"' | '%')) {
        return Err(format!(
            "{} holds {}, which ssh's configuration would read specially",
            shown(text),
            describe_char(bad)
        ));
    }
    Ok(())
}

/// A Linux network interface name (IFNAMSIZ: at most 15 bytes), kept to
/// the characters keepalived and `ip` take literally.
pub(crate) fn interface(text: &str) -> Result<(), String> {
    let valid = !text.is_empty()
        && text.len() <= 15
        && text != "."
        && text != ".."
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-'))
        && !text.starts_with('-');
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{} is not a network interface name: 1 to 15 letters, digits, '_', '.' or '-', not starting with '-'",
            shown(text)
        ))
    }
}

/// A login name for ssh: what `useradd` accepts, and never something ssh
/// would read as an option.
pub(crate) fn ssh_user(text: &str) -> Result<(), String> {
    if text.starts_with('-') {
        return Err(format!(
            "{} starts with '-', which ssh would read as an option",
            shown(text)
        ));
    }
    let valid = !text.is_empty()
        && text.len() <= 32
        && text
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || matches!(byte, b'_' | b'.' | b'-'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "{} is not a user name: 1 to 32 letters, digits, '_', '.' or '-'",
            shown(text)
        ))
    }
}

/// An ssh jump host: `[user@]host[:port]`, the host a DNS name or an IP
/// address (IPv6 in brackets when a port follows).
pub(crate) fn jump_host(text: &str) -> Result<(), String> {
    let grammar = || {
        format!(
            "{} is not [user@]host[:port], such as \"admin@bastion.example.org:22\"",
            shown(text)
        )
    };
    if text.starts_with('-') {
        return Err(format!(
            "{} starts with '-', which ssh would read as an option",
            shown(text)
        ));
    }
    let (user, rest) = match text.split_once('@') {
        Some((user, rest)) => (Some(user), rest),
        None => (None, text),
    };
    if let Some(user) = user {
        ssh_user(user)?;
    }
    let (host, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        let (host, after) = bracketed.split_once(']').ok_or_else(grammar)?;
        if host.parse::<Ipv6Addr>().is_err() {
            return Err(grammar());
        }
        match after.strip_prefix(':') {
            Some(port) => (host, Some(port)),
            None if after.is_empty() => (host, None),
            None => return Err(grammar()),
        }
    } else if rest.parse::<Ipv6Addr>().is_ok() {
        (rest, None)
    } else {
        match rest.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    if host.parse::<IpAddr>().is_err() && !is_dns_name(host) {
        return Err(grammar());
    }
    if let Some(port) = port {
        match port.parse::<u16>() {
            Ok(port) if port > 0 => {}
            _ => return Err(grammar()),
        }
    }
    Ok(())
}

/// A Kubernetes release `MAJOR.MINOR.PATCH`, with or without a leading
/// `v`, within [`SUPPORTED_KUBERNETES_MINORS`]; returned without the `v`.
pub(crate) fn kubernetes_version(text: &str) -> Result<String, String> {
    let bare = text.strip_prefix('v').unwrap_or(text);
    let parts: Vec<&str> = bare.split('.').collect();
    let numbers: Option<Vec<u32>> = parts
        .iter()
        .map(|part| {
            let digits = !part.is_empty()
                && part.len() <= 9
                && part.bytes().all(|byte| byte.is_ascii_digit())
                && (part.len() == 1 || !part.starts_with('0'));
            if digits {
                part.parse().ok()
            } else {
                None
            }
        })
        .collect();
    let supported = format!(
        "ocfk8s supports Kubernetes 1.{} to 1.{}",
        SUPPORTED_KUBERNETES_MINORS.start(),
        SUPPORTED_KUBERNETES_MINORS.end()
    );
    match numbers.as_deref() {
        Some([1, minor, _]) if SUPPORTED_KUBERNETES_MINORS.contains(minor) => Ok(bare.to_string()),
        Some([_, _, _]) => Err(format!(
            "Kubernetes {} is not supported: {supported}",
            shown(text)
        )),
        _ => Err(format!(
            "{} is not a Kubernetes release such as \"1.31.4\" ({supported})",
            shown(text)
        )),
    }
}

/// Address ranges no host, VIP or cluster network may use, with what they
/// are, for messages.
const SPECIAL_V4: &[(Ipv4Addr, u8, &str)] = &[
    (Ipv4Addr::new(0, 0, 0, 0), 8, "\"this network\" (0.0.0.0/8)"),
    (Ipv4Addr::new(127, 0, 0, 0), 8, "loopback (127.0.0.0/8)"),
    (
        Ipv4Addr::new(169, 254, 0, 0),
        16,
        "link-local (169.254.0.0/16)",
    ),
    (Ipv4Addr::new(224, 0, 0, 0), 4, "multicast (224.0.0.0/4)"),
    (
        Ipv4Addr::new(240, 0, 0, 0),
        4,
        "reserved or broadcast (240.0.0.0/4)",
    ),
];

const SPECIAL_V6: &[(Ipv6Addr, u8, &str)] = &[
    (Ipv6Addr::UNSPECIFIED, 128, "the unspecified address (::)"),
    (Ipv6Addr::LOCALHOST, 128, "loopback (::1)"),
    (
        Ipv6Addr::new(0, 0, 0, 0, 0, 0xffff, 0, 0),
        96,
        "IPv4-mapped (::ffff:0:0/96)",
    ),
    (
        Ipv6Addr::new(0xfe80, 0, 0, 0, 0, 0, 0, 0),
        10,
        "link-local (fe80::/10)",
    ),
    (
        Ipv6Addr::new(0xff00, 0, 0, 0, 0, 0, 0, 0),
        8,
        "multicast (ff00::/8)",
    ),
];

fn special_ranges() -> impl Iterator<Item = (IpNet, &'static str)> {
    let v4 = SPECIAL_V4.iter().filter_map(|(address, prefix, what)| {
        ipnet::Ipv4Net::new(*address, *prefix)
            .ok()
            .map(|net| (IpNet::V4(net), *what))
    });
    let v6 = SPECIAL_V6.iter().filter_map(|(address, prefix, what)| {
        ipnet::Ipv6Net::new(*address, *prefix)
            .ok()
            .map(|net| (IpNet::V6(net), *what))
    });
    v4.chain(v6)
}

/// Why `address` cannot be a host's address or a VIP, if it cannot.
pub fn unusable_address(address: IpAddr) -> Option<String> {
    if let IpAddr::V6(v6) = address {
        if let Some(v4) = v6.to_ipv4_mapped() {
            return Some(format!(
                "{address} is the IPv4 address {v4} written as IPv4-mapped IPv6: write \"{v4}\""
            ));
        }
    }
    special_ranges()
        .find(|(net, _)| net.contains(&address))
        .map(|(_, what)| format!("{address} is {what}, not an address a host can be reached at"))
}

/// Why `net` cannot be a cluster network (pods or services), if it cannot.
pub(crate) fn unusable_network(net: &IpNet) -> Option<String> {
    special_ranges()
        .find(|(special, _)| special.contains(net) || net.contains(special))
        .map(|(special, what)| format!("{net} overlaps {what} {special}"))
}

/// An address in the same spelling everywhere: an IPv4-mapped IPv6 address
/// is the IPv4 address it maps.
pub(crate) fn canonical(address: IpAddr) -> IpAddr {
    address.to_canonical()
}

/// Whether two addresses are of one family, an IPv4-mapped IPv6 address
/// counting as IPv4 (it is refused on its own account).
pub(crate) fn same_family(a: IpAddr, b: IpAddr) -> bool {
    canonical(a).is_ipv4() == canonical(b).is_ipv4()
}

/// "IPv4" or "IPv6".
pub(crate) fn family(address: IpAddr) -> &'static str {
    match address {
        IpAddr::V4(_) => "IPv4",
        IpAddr::V6(_) => "IPv6",
    }
}

/// How a character is named in a message: printable ones quoted, others
/// by their code point.
fn describe_char(character: char) -> String {
    if character.is_control() || character.is_whitespace() {
        format!("the character U+{:04X}", character as u32)
    } else {
        format!("the character '{character}'")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_keys_follow_kubernetes() {
        for good in [
            "zone",
            "example.org/disk",
            "a",
            "A_b.c-D",
            "node-role.kubernetes.io/ingress",
        ] {
            assert!(label_key(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "Example.org/x",
            "a/b/c",
            "x\ny",
            "/a",
            "a/",
            &"a".repeat(64),
        ] {
            assert!(label_key(bad).is_err(), "{bad:?}");
        }
        assert!(label_value("").is_ok());
        assert!(label_value("v\nExecStartPre=/bin/touch /tmp/pwned\nX=").is_err());
    }

    #[test]
    fn taints_follow_kubectl() {
        for good in [
            "gpu:NoExecute",
            "dedicated=batch:NoSchedule",
            "a/b=:PreferNoSchedule",
        ] {
            assert!(taint(good).is_ok(), "{good}");
        }
        for bad in [
            "gpu",
            "gpu:Never",
            "a\"b:NoSchedule",
            "k=v\n:NoSchedule",
            ":NoSchedule",
        ] {
            assert!(taint(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn versions_are_normalised_and_bounded() {
        assert_eq!(kubernetes_version("v1.31.4"), Ok("1.31.4".to_string()));
        assert_eq!(kubernetes_version("1.29.0"), Ok("1.29.0".to_string()));
        for bad in [
            "vv1.31.4",
            "1.28.9",
            "1.33.0",
            "2.31.0",
            "1.31",
            "1.031.4",
            "1.31.4-rc.0",
        ] {
            assert!(kubernetes_version(bad).is_err(), "{bad}");
        }
        let error = kubernetes_version("1.40.0").expect_err("unsupported");
        assert!(error.contains("1.29 to 1.32"), "{error}");
    }

    #[test]
    fn jump_hosts() {
        for good in [
            "bastion",
            "admin@bastion.example.org",
            "a@10.0.0.1:2222",
            "[2001:db8::1]:22",
            "2001:db8::1",
        ] {
            assert!(jump_host(good).is_ok(), "{good}");
        }
        for bad in [
            "-oProxyCommand=x",
            "a b",
            "x@-y",
            "host:0",
            "host:x",
            "@host",
            "h\n",
        ] {
            assert!(jump_host(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn special_addresses_are_named() {
        for bad in [
            "0.0.0.0",
            "127.0.0.1",
            "224.0.0.5",
            "255.255.255.255",
            "169.254.1.1",
            "::",
            "::1",
            "fe80::1",
            "ff02::1",
            "::ffff:10.9.0.11",
        ] {
            let address: IpAddr = bad.parse().expect("address");
            assert!(unusable_address(address).is_some(), "{bad}");
        }
        assert!(unusable_address("10.9.0.11".parse().expect("address")).is_none());
        assert!(unusable_network(&"127.0.0.0/16".parse().expect("net")).is_some());
        assert!(unusable_network(&"0.0.0.0/0".parse().expect("net")).is_some());
        assert!(unusable_network(&"10.244.0.0/16".parse().expect("net")).is_none());
    }

    #[test]
    fn host_paths_are_plain() {
        assert!(host_path("/usr/local/bin").is_ok());
        for bad in [
            "usr/bin",
            "/usr/bin\nExecStartPre=/x",
            "/a b",
            "/a\"b",
            "/a%b",
            "/a$b",
            "/a\\b",
            "/a/../b",
        ] {
            assert!(host_path(bad).is_err(), "{bad:?}");
        }
    }
}
