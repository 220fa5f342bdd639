//! The `addons` phase: the addon manifests (CNI, CoreDNS, ingress-nginx,
//! the RBAC the certificate identities need) applied with
//! `kubectl apply --server-side` on one master whose apiserver is ready, and
//! the masters' role labels set through the API.
//!
//! What was applied is recorded in the cluster itself, in the ConfigMap
//! `kube-system/ocfk8s-addons` (the SHA-256 of the manifests), so a run
//! whose manifests did not change applies nothing, whichever machine it
//! runs from. The RBAC must be applied by a `system:masters` identity (it
//! is what gives `admin.conf` its rights), so the store's
//! `super-admin.conf` travels to the master for the run only, into a
//! private temporary folder removed when the script ends; it is never
//! left on a host.

use std::fmt::Write as _;

use anyhow::Context;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::inventory::{Cluster, Node};
use crate::remote::shell::quote;
use crate::remote::Host;
use crate::render::HostFiles;

use super::status::url_host;

/// Where masters hold the addon manifests.
pub(crate) const ADDONS_DIR: &str = "/etc/kubernetes/addons/";

/// The ConfigMap recording what was applied.
const RECORD: &str = "ocfk8s-addons";

/// Labels every master carries, as kubeadm sets them.
pub(crate) const MASTER_LABELS: [&str; 2] = [
    "node-role.kubernetes.io/control-plane",
    "node.kubernetes.io/exclude-from-external-load-balancers",
];

/// SHA-256 over the addon manifests' paths and contents.
pub(crate) fn addons_sha256(master: &HostFiles) -> String {
    let mut hasher = Sha256::new();
    for file in master
        .files
        .iter()
        .filter(|file| file.path.starts_with(ADDONS_DIR))
    {
        hasher.update(file.path.as_bytes());
        hasher.update([0]);
        hasher.update(Sha256::digest(&file.contents));
    }
    hex::encode(hasher.finalize())
}

/// The script run on `node`: check the record, apply if it differs, record,
/// then label the masters that lack their labels. It prints `applied` or
/// `unchanged`, then `labelled NAME` per master it labelled.
pub(crate) fn addons_script(
    cluster: &Cluster,
    node: &Node,
    super_admin: &[u8],
    sha256: &str,
) -> String {
    let mut script = String::from("set -u\numask 077\n");
    script.push_str(
        "dir=$(mktemp -d /run/ocfk8s-addons.XXXXXX) || exit 1\ntrap 'rm -rf \"$dir\"' EXIT\n",
    );
    let _ = writeln!(
        script,
        "printf '%s' {} | base64 -d > \"$dir/kubeconfig\" || exit 1",
        quote(&base64::engine::general_purpose::STANDARD.encode(super_admin))
    );
    let _ = writeln!(
        script,
        "k() {{ {} --kubeconfig=\"$dir/kubeconfig\" {} --request-timeout=30s \"$@\"; }}",
        quote(&format!(
            "{}/kubectl",
            cluster.install.bin_dir.trim_end_matches('/')
        )),
        quote(&format!("--server=https://{}:6443", url_host(node.address)))
    );
    let sha256 = quote(sha256);
    let _ = writeln!(
        script,
        "current=$(k get configmap {RECORD} -n kube-system -o jsonpath='{{.data.sha256}}' 2>/dev/null || true)\n\
         if [ \"$current\" = {sha256} ]; then\n  echo unchanged\nelse\n  \
           out=$(k apply --server-side --force-conflicts --field-manager=ocfk8s -f {addons} 2>&1) || {{ printf 'kubectl apply failed: %s\\n' \"$out\" >&2; exit 1; }}\n  \
           cat > \"$dir/record.yaml\" <<OCFK8S_RECORD\n\
apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {RECORD}\n  namespace: kube-system\ndata:\n  sha256: \"$(printf '%s' {sha256})\"\n\
OCFK8S_RECORD\n  \
           out=$(k apply --server-side --force-conflicts --field-manager=ocfk8s -f \"$dir/record.yaml\" 2>&1) || {{ printf 'recording the applied addons failed: %s\\n' \"$out\" >&2; exit 1; }}\n  \
           echo applied\nfi",
        addons = quote(ADDONS_DIR),
    );
    for master in &cluster.masters {
        let name = quote(&master.name);
        let missing: Vec<String> = MASTER_LABELS
            .iter()
            .map(|label| format!("grep -qF {} \"$dir/node\"", quote(&format!("\"{label}\""))))
            .collect();
        let labels: Vec<String> = MASTER_LABELS
            .iter()
            .map(|label| quote(&format!("{label}=")))
            .collect();
        let _ = writeln!(
            script,
            "k get node {name} -o json > \"$dir/node\" 2>/dev/null || {{ printf 'node %s is not registered\\n' {name} >&2; exit 1; }}\n\
             if ! {{ {}; }}; then\n  \
               out=$(k label node {name} {} --overwrite 2>&1) || {{ printf 'labelling %s failed: %s\\n' {name} \"$out\" >&2; exit 1; }}\n  \
               echo labelled {name}\nfi",
            missing.join(" && "),
            labels.join(" ")
        );
    }
    script
}

/// Run the addons phase on `host` (a master whose apiserver is ready).
pub(crate) async fn apply(
    cluster: &Cluster,
    host: &Host,
    node: &Node,
    super_admin: &[u8],
    sha256: &str,
) -> anyhow::Result<String> {
    let script = addons_script(cluster, node, super_admin, sha256);
    let output = host
        .run_script(&script)
        .await
        .with_context(|| format!("{}: addons", host.name))?;
    let mut summary = Vec::new();
    for line in output.stdout.lines() {
        match line {
            "applied" => summary.push("manifests applied".to_string()),
            "unchanged" => summary.push("manifests unchanged since last applied".to_string()),
            other => summary.push(other.to_string()),
        }
    }
    Ok(summary.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_script_never_prints_the_kubeconfig_and_parses_under_sh() {
        let cluster = crate::inventory::from_str(
            std::path::Path::new("inventory.toml"),
            crate::inventory::starter_inventory(&["10.0.0.11".into()], &["10.0.0.21".into()])
                .as_str(),
        )
        .expect("inventory")
        .cluster;
        let secret = b"client-key-data: SECRET-KEY-MATERIAL\n";
        let script = addons_script(&cluster, &cluster.masters[0], secret, &"a".repeat(64));
        assert!(!script.contains("SECRET-KEY-MATERIAL"));
        let check = std::process::Command::new("sh")
            .args(["-n", "-c", &script])
            .output()
            .expect("sh -n");
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stderr)
        );
        assert!(
            script.contains("--server=https://10.0.0.11:6443"),
            "{script}"
        );
    }
}
