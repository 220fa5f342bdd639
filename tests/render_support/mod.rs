//! Rendered trees for the render tests: an inventory, its PKI store, and
//! `ocfk8s render --out` run by the real binary.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

#[path = "../common/mod.rs"]
pub mod common;

pub use common::{run_in, Run, BASE};

/// A folder holding an inventory, its PKI store and rendered trees.
pub struct Rendered {
    pub dir: tempfile::TempDir,
    pub inventory: PathBuf,
    pub out: PathBuf,
    pub run: Run,
}

impl Rendered {
    /// `DIR/<host>` of the rendered tree.
    pub fn host(&self, name: &str) -> PathBuf {
        self.out.join(name)
    }

    /// A rendered file's text.
    pub fn text(&self, host: &str, path: &str) -> String {
        let full = self.host(host).join(path.trim_start_matches('/'));
        std::fs::read_to_string(&full).unwrap_or_else(|error| panic!("{}: {error}", full.display()))
    }
}

/// The test inventory (3 masters, 2 workers, `[ingress]`) adjusted for this
/// machine: the VIP on `eth0`, which exists here so keepalived can check it.
pub fn base_inventory() -> String {
    BASE.to_string()
}

/// Write `inventory` (inventory text) in a fresh folder, create its PKI
/// store, and render it to `out/`.
pub fn render(inventory: &str, extra_args: &[&str]) -> Rendered {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("inventory.toml");
    std::fs::write(&path, inventory).expect("write inventory");
    generate_store(dir.path(), &path);
    let out = dir.path().join("out");
    let mut args = vec![
        "-i",
        path.to_str().expect("utf-8 path"),
        "render",
        "--out",
        "out",
    ];
    args.extend_from_slice(extra_args);
    let run = run_in(dir.path(), &args);
    Rendered {
        dir,
        inventory: path,
        out,
        run,
    }
}

/// Create the inventory's PKI store.
pub fn generate_store(dir: &Path, inventory: &Path) {
    let text = std::fs::read_to_string(inventory).expect("inventory");
    let resolved = ocfk8s::inventory::from_str(inventory, &text).expect("valid inventory");
    let cluster = resolved.cluster;
    let masters: Vec<&str> = cluster.masters.iter().map(|n| n.name.as_str()).collect();
    let workers: Vec<&str> = cluster.workers.iter().map(|n| n.name.as_str()).collect();
    let _ = dir;
    fake_store(
        &cluster.pki_dir,
        &masters,
        &workers,
        cluster.ingress.is_some(),
    );
}

/// Every file below `dir`, as absolute host paths (`/etc/...`), sorted.
pub fn host_paths(dir: &Path) -> Vec<String> {
    common::tree(dir)
        .into_iter()
        .map(|relative| format!("/{relative}"))
        .collect()
}

/// Stand-in for `ocfk8s pki generate`: self-signed material at every path
/// of the store layout (src/pki/mod.rs).
pub fn fake_store(store: &Path, masters: &[&str], workers: &[&str], ingress: bool) {
    use base64::Engine;
    let pair = |relative: &str| {
        let key = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("cert");
        let crt_path = store.join(format!("{relative}.crt"));
        std::fs::create_dir_all(crt_path.parent().expect("parent")).expect("mkdir");
        std::fs::write(&crt_path, key.cert.pem()).expect("write crt");
        std::fs::write(
            store.join(format!("{relative}.key")),
            key.signing_key.serialize_pem(),
        )
        .expect("write key");
        (key.cert.pem(), key.signing_key.serialize_pem())
    };
    let (ca, _) = pair("ca");
    let b64 = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
    let kubeconfig = |relative: &str, user: &str| {
        let (crt, key) = pair(relative.trim_end_matches(".conf"));
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: https://kube.example.org:6443\n    certificate-authority-data: {}\nusers:\n- name: {user}\n  user:\n    client-certificate-data: {}\n    client-key-data: {}\ncontexts:\n- name: {user}@test\n  context:\n    cluster: test\n    user: {user}\ncurrent-context: {user}@test\n",
            b64(&ca),
            b64(&crt),
            b64(&key)
        );
        std::fs::write(store.join(relative), text).expect("write kubeconfig");
    };
    for stem in ["front-proxy-ca", "etcd/ca", "sa", "apiserver-etcd-client"] {
        pair(stem);
    }
    std::fs::copy(store.join("sa.crt"), store.join("sa.pub")).expect("sa.pub");
    kubeconfig("admin.conf", "admin");
    kubeconfig("super-admin.conf", "super-admin");
    if ingress {
        pair("ingress-ca");
        pair("ingress");
    }
    for node in masters.iter().chain(workers) {
        kubeconfig(&format!("nodes/{node}/kubelet.conf"), "kubelet");
        kubeconfig(&format!("nodes/{node}/kube-proxy.conf"), "kube-proxy");
    }
    for node in masters {
        for stem in [
            "etcd/server",
            "etcd/peer",
            "etcd/healthcheck-client",
            "apiserver",
            "apiserver-kubelet-client",
            "front-proxy-client",
        ] {
            pair(&format!("nodes/{node}/{stem}"));
        }
        kubeconfig(
            &format!("nodes/{node}/controller-manager.conf"),
            "controller-manager",
        );
        kubeconfig(&format!("nodes/{node}/scheduler.conf"), "scheduler");
    }
}
