//! Snapshots of every template as rendered for the Open Computing
//! Facility's inventory (inventory/ocf.toml): a master (deadlock) and a
//! worker (jaws). Only rendered files are snapshotted, never PKI material,
//! and the manifests' input hashes are redacted, so the snapshots do not
//! change when the PKI is generated again.

mod render_support;

use render_support::{host_paths, Rendered};

/// Render inventory/ocf.toml (with `edit` applied) in a fresh folder whose
/// layout matches the repository's (`inventory/`, `pki/ocf`).
fn render_ocf(edit: impl Fn(String) -> String) -> Rendered {
    let source = render_support::common::repo_root().join("inventory/ocf.toml");
    let text = edit(std::fs::read_to_string(source).expect("inventory/ocf.toml"));
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("inventory")).expect("mkdir");
    let inventory = dir.path().join("inventory/ocf.toml");
    std::fs::write(&inventory, text).expect("write inventory");
    let rendered = render_support::render_at(dir, inventory);
    assert_eq!(rendered.run.status, 0, "stderr: {}", rendered.run.stderr);
    rendered
}

/// Rendered from a template: not PKI material copied from the store.
fn is_rendered(path: &str) -> bool {
    !(path.starts_with("/etc/kubernetes/pki/")
        || path.starts_with("/var/lib/kubelet/pki/")
        || path.starts_with("/etc/nginx/ssl/")
        || path.ends_with("kubelet.conf")
        || path.ends_with("kubeconfig.conf")
        || path.ends_with("admin.conf")
        || path.ends_with("controller-manager.conf")
        || path.ends_with("scheduler.conf"))
}

fn redact(text: &str) -> String {
    text.lines()
        .map(|line| match line.split_once("ocfk8s/inputs-sha256: ") {
            Some((indent, _)) => format!("{indent}ocfk8s/inputs-sha256: \"[sha256]\""),
            None => line.to_string(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn snapshot_host(rendered: &Rendered, host: &str) -> usize {
    let mut count = 0;
    for path in host_paths(&rendered.host(host)) {
        if !is_rendered(&path) {
            continue;
        }
        let name = format!("{host}{}", path.replace('/', "_"));
        insta::assert_snapshot!(name, redact(&rendered.text(host, &path)));
        count += 1;
    }
    count
}

#[test]
fn ocf_master_files() {
    let rendered = render_ocf(|text| text);
    // Every template but weave's (OCF runs flannel).
    assert_eq!(snapshot_host(&rendered, "deadlock"), 19);
}

#[test]
fn ocf_worker_files() {
    let rendered = render_ocf(|text| text);
    assert_eq!(snapshot_host(&rendered, "jaws"), 8);
}

#[test]
fn ocf_with_weave() {
    let rendered = render_ocf(|text| text.replace("cni = \"flannel\"", "cni = \"weave\""));
    insta::assert_snapshot!(
        "deadlock_etc_kubernetes_addons_weave.yaml",
        rendered.text("deadlock", "/etc/kubernetes/addons/weave.yaml")
    );
}
