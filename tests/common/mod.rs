//! What the integration tests share: run the real binary on files in
//! a temporary folder.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::cargo::cargo_bin;

/// A valid three-master, two-worker inventory with `[ingress]`, the base the
/// validation tests break one rule at a time.
pub const BASE: &str = r#"[cluster]
name = "test"
kubernetes_version = "1.31.4"
control_plane_endpoint = "kube.example.org:6443"
pod_cidr = "10.244.0.0/16"
service_cidr = "10.96.0.0/12"
cluster_domain = "cluster.local"
cni = "flannel"
key_algorithm = "ecdsa-p256"
cert_validity_days = 365
ca_validity_days = 3650

[ssh]
user = "root"
port = 22
concurrency = 8

[install]
method = "apt"
bin_dir = "/usr/bin"

[ingress]
vip = "192.0.2.100"
interface = "eth0"
virtual_router_id = 51
node_port = 31234
server_names = ["*.example.org"]

[[master]]
name = "m1"
address = "192.0.2.11"

[[master]]
name = "m2"
address = "192.0.2.12"

[[master]]
name = "m3"
address = "192.0.2.13"

[[worker]]
name = "w1"
address = "192.0.2.21"

[[worker]]
name = "w2"
address = "192.0.2.22"
"#;

pub struct Run {
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Every run of the binary in the suite goes through here: its output
/// and errors must never hold key material. The one exception is the
/// kubeconfig `ocfk8s kubeconfig` prints on request.
impl From<Output> for Run {
    fn from(output: Output) -> Self {
        let run = Run {
            status: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        };
        let requested_kubeconfig =
            run.stdout.starts_with("apiVersion: v1") && run.stdout.contains("kind: Config");
        if !requested_kubeconfig {
            assert_no_key_material("standard output", &run.stdout);
        }
        assert_no_key_material("error output", &run.stderr);
        run
    }
}

/// PEM private keys, as text or base64 (as a kubeconfig embeds them).
const KEY_MARKERS: [&str; 5] = [
    "PRIVATE KEY",
    "client-key-data",
    "LS0tLS1CRUdJTiBFQyBQUklWQVRF",
    "LS0tLS1CRUdJTiBQUklWQVRF",
    "LS0tLS1CRUdJTiBSU0EgUFJJVkFURSBL",
];

/// Panic when `text` holds key material.
pub fn assert_no_key_material(what: &str, text: &str) {
    for marker in KEY_MARKERS {
        assert!(
            !text.contains(marker),
            "key material ({marker}) in the {what} of a run:\n{text}"
        );
    }
}

pub fn ocfk8s() -> std::process::Command {
    let mut command = std::process::Command::new(cargo_bin("ocfk8s"));
    command.env_remove("OCFK8S_INVENTORY");
    command
}

/// Run the binary with `args` in `dir`.
pub fn run_in(dir: &Path, args: &[&str]) -> Run {
    ocfk8s()
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run ocfk8s")
        .into()
}

/// Write `text` as `inventory.toml` in a fresh folder.
pub fn inventory(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("inventory.toml");
    std::fs::write(&path, text).expect("write inventory");
    (dir, path)
}

/// Every file below `dir`, relative, sorted.
pub fn tree(dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    fn walk(base: &Path, dir: &Path, files: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                walk(base, &path, files);
            } else if let Ok(relative) = path.strip_prefix(base) {
                files.push(relative.display().to_string());
            }
        }
    }
    walk(dir, dir, &mut files);
    files.sort();
    files
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}
