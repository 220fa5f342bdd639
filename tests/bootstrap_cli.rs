//! `bootstrap` refuses what it cannot do before touching anything: bad or
//! unskippable phases, and install methods whose local files are missing
//! (exit 2, before connecting to any host).

mod common;

use common::{inventory, run_in, BASE};

#[test]
fn install_refuses_missing_local_binaries_before_connecting() {
    let apt_without_folder = BASE.to_string();
    let apt_with_empty_folder = BASE.replace(
        "bin_dir = \"/usr/bin\"\n",
        "bin_dir = \"/usr/bin\"\nupload_from = \"bin\"\n",
    );
    let upload_with_empty_folder =
        apt_with_empty_folder.replace("method = \"apt\"", "method = \"upload\"");
    let apt_elsewhere = apt_with_empty_folder.replace("/usr/bin", "/opt/k8s/bin");
    for (text, message) in [
        (
            apt_without_folder.as_str(),
            "no package carries kube-proxy: set [install] upload_from",
        ),
        (
            apt_with_empty_folder.as_str(),
            "kube-proxy missing from upload_from",
        ),
        (
            upload_with_empty_folder.as_str(),
            "etcd, etcdctl, kubelet, kube-proxy, kubectl missing from upload_from",
        ),
        (apt_elsewhere.as_str(), "but bin_dir is \"/opt/k8s/bin\""),
    ] {
        let (dir, path) = inventory(text);
        if text.contains("upload_from") {
            std::fs::create_dir(dir.path().join("bin")).expect("mkdir");
        }
        for command in [&["bootstrap"][..], &["plan"][..]] {
            let mut args = vec!["-i", path.to_str().expect("utf-8")];
            args.extend_from_slice(command);
            let run = run_in(dir.path(), &args);
            assert_eq!(run.status, 2, "{command:?}: {}", run.stderr);
            assert!(run.stderr.contains(message), "{command:?}: {}", run.stderr);
        }
        // Refused before anything happened: no PKI store, no lock.
        let tree = common::tree(dir.path());
        assert!(
            tree.iter()
                .all(|path| path == "inventory.toml" || path.starts_with("bin")),
            "{tree:?}"
        );
    }
}

#[test]
fn unknown_or_required_phases_are_bad_usage() {
    let (dir, path) = inventory(BASE);
    let path = path.to_str().expect("utf-8");
    for (skip, message) in [
        ("preflight", "the preflight phase cannot be skipped"),
        ("pki", "the pki phase cannot be skipped"),
        ("etcd,bogus", "unknown phase \"bogus\""),
    ] {
        let run = run_in(
            dir.path(),
            &["-i", path, "bootstrap", "--skip-phases", skip],
        );
        assert_eq!(run.status, 2, "{skip}: {}", run.stderr);
        assert!(run.stderr.contains(message), "{skip}: {}", run.stderr);
    }
    assert_eq!(common::tree(dir.path()), ["inventory.toml"]);
}
