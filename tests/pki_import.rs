//! `ocfk8s pki import`: a kubeadm master's pki folder (made here with
//! openssl: PKCS#1 RSA, SEC1 EC and PKCS#8 keys) and kubetool's hiera files
//! (made here with cfssl, kubetool's engine) are adopted byte for byte, and
//! the adopted CAs sign new leaves that verify against the original files.
//! Bad material is refused with exit 2 and nothing written.

mod common;
mod pki_support;

use std::path::Path;

use common::BASE;
use pki_support::*;

/// A kubeadm master's /etc/kubernetes/pki.
fn kubeadm_pki(dir: &Path) {
    openssl_ca(dir, "ca", "kubernetes", KeyForm::RsaPkcs1);
    openssl_ca(dir, "etcd/ca", "etcd-ca", KeyForm::EcSec1);
    openssl_ca(dir, "front-proxy-ca", "front-proxy-ca", KeyForm::EcPkcs8);
    openssl_key(dir, "sa.key", KeyForm::EcSec1);
    tool(
        "openssl",
        &["pkey", "-in", "sa.key", "-pubout", "-out", "sa.pub"],
        dir,
    );
    for (name, ca, subject, form) in [
        ("apiserver", "ca", "/CN=kube-apiserver", KeyForm::EcPkcs8),
        (
            "apiserver-kubelet-client",
            "ca",
            "/O=kubeadm:cluster-admins/CN=kube-apiserver-kubelet-client",
            KeyForm::EcSec1,
        ),
        (
            "front-proxy-client",
            "front-proxy-ca",
            "/CN=front-proxy-client",
            KeyForm::EcPkcs8,
        ),
        (
            "apiserver-etcd-client",
            "etcd/ca",
            "/CN=kube-apiserver-etcd-client",
            KeyForm::EcSec1,
        ),
        ("etcd/server", "etcd/ca", "/CN=m1", KeyForm::EcSec1),
        ("etcd/peer", "etcd/ca", "/CN=m1", KeyForm::EcSec1),
        (
            "etcd/healthcheck-client",
            "etcd/ca",
            "/CN=kube-etcd-healthcheck-client",
            KeyForm::EcPkcs8,
        ),
    ] {
        openssl_leaf(dir, name, ca, subject, form);
    }
}

fn import_kubeadm(cluster: &Cluster, dir: &Path) -> common::Run {
    cluster.run(&[
        "pki",
        "import",
        "--from-kubeadm",
        &dir.display().to_string(),
        "--node",
        "m1",
    ])
}

#[test]
fn kubeadm_folder_round_trips_and_imported_cas_sign_new_leaves() {
    let source = tempfile::tempdir().expect("temp dir");
    kubeadm_pki(source.path());
    let cluster = Cluster::base();

    let run = import_kubeadm(&cluster, source.path());
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(run.stdout.contains("imported 22 files"), "{}", run.stdout);
    for (from, to) in [
        ("ca.crt", "ca.crt"),
        ("ca.key", "ca.key"),
        ("etcd/ca.key", "etcd/ca.key"),
        ("front-proxy-ca.key", "front-proxy-ca.key"),
        ("sa.key", "sa.key"),
        ("sa.pub", "sa.pub"),
        ("apiserver.crt", "nodes/m1/apiserver.crt"),
        ("apiserver.key", "nodes/m1/apiserver.key"),
        ("etcd/server.key", "nodes/m1/etcd/server.key"),
        ("apiserver-etcd-client.crt", "apiserver-etcd-client.crt"),
    ] {
        assert_eq!(
            read(&source.path().join(from)),
            read(&cluster.file(to)),
            "{to}"
        );
    }

    let imported = snapshot(&cluster.store());
    let run = cluster.generate();
    assert!(run.stdout.starts_with("created "), "{}", run.stdout);
    let after = snapshot(&cluster.store());
    for (file, state) in &imported {
        if !file.ends_with('/') {
            assert_eq!(after.get(file), Some(state), "imported {file} was touched");
        }
    }
    for (leaf, original_ca) in [
        ("nodes/m2/apiserver.crt", "ca.crt"),
        ("nodes/w1/kubelet.crt", "ca.crt"),
        ("nodes/m1/kubelet.crt", "ca.crt"),
        ("nodes/m3/etcd/peer.crt", "etcd/ca.crt"),
        ("nodes/m2/front-proxy-client.crt", "front-proxy-ca.crt"),
    ] {
        assert!(
            openssl_verifies(&source.path().join(original_ca), &cluster.file(leaf)),
            "{leaf} does not verify against the original {original_ca}"
        );
    }
    let scratch = tempfile::tempdir().expect("temp dir");
    let client = scratch.path().join("admin.crt");
    kubeconfig_client_cert(&cluster.file("admin.conf"), &client);
    assert!(openssl_verifies(&source.path().join("ca.crt"), &client));

    // Importing again finds everything in place.
    let again = import_kubeadm(&cluster, source.path());
    assert_eq!(again.status, 0, "{}", again.stderr);
    assert!(
        again.stdout.contains("nothing to import"),
        "{}",
        again.stdout
    );
    assert_eq!(after, snapshot(&cluster.store()));
}

/// Break the kubeadm folder with `corrupt` and check the import is refused
/// naming `named`, with no store created.
fn kubeadm_import_refused(corrupt: impl FnOnce(&Path), named: &str) {
    let source = tempfile::tempdir().expect("temp dir");
    kubeadm_pki(source.path());
    corrupt(source.path());
    let cluster = Cluster::base();
    let run = import_kubeadm(&cluster, source.path());
    assert_eq!(run.status, 2, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr
            .contains(&source.path().join(named).display().to_string()),
        "error does not name {named}:\n{}",
        run.stderr
    );
    assert!(!run.stderr.contains("BEGIN"));
    assert!(!cluster.store().exists(), "something was written");
}

#[test]
fn kubeadm_key_not_matching_its_certificate_is_refused() {
    kubeadm_import_refused(
        |dir| {
            std::fs::copy(dir.join("etcd/peer.key"), dir.join("etcd/server.key")).expect("copy");
        },
        "etcd/server.key",
    );
}

#[test]
fn kubeadm_leaf_signed_by_another_ca_is_refused() {
    kubeadm_import_refused(
        |dir| {
            openssl_leaf(dir, "etcd/server", "ca", "/CN=m1", KeyForm::EcSec1);
        },
        "etcd/server.crt",
    );
}

#[test]
fn kubeadm_truncated_ca_is_refused() {
    kubeadm_import_refused(
        |dir| {
            let bytes = read(&dir.join("front-proxy-ca.crt"));
            std::fs::write(dir.join("front-proxy-ca.crt"), &bytes[..200]).expect("truncate");
        },
        "front-proxy-ca.crt",
    );
}

#[test]
fn import_over_a_different_existing_ca_is_refused() {
    let source = tempfile::tempdir().expect("temp dir");
    kubeadm_pki(source.path());
    let cluster = Cluster::base();
    cluster.generate();
    let before = snapshot(&cluster.store());
    let run = import_kubeadm(&cluster, source.path());
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(run.stderr.contains("different"), "{}", run.stderr);
    assert!(run.stderr.contains("ca.crt"), "{}", run.stderr);
    assert_eq!(before, snapshot(&cluster.store()));
}

#[test]
fn kubeadm_import_needs_a_master() {
    let source = tempfile::tempdir().expect("temp dir");
    let cluster = Cluster::base();
    let run = cluster.run(&[
        "pki",
        "import",
        "--from-kubeadm",
        &source.path().display().to_string(),
        "--node",
        "w1",
    ]);
    assert_eq!(run.status, 2);
    assert!(run.stderr.contains("w1"), "{}", run.stderr);
}

/// cfssl through a shell pipe, as kubetool runs it.
fn cfssl(dir: &Path, command: &str) {
    tool("sh", &["-c", &format!("set -e; {command}")], dir);
}

/// YAML block scalar for a PEM value.
fn hiera_entry(key: &str, pem: &[u8]) -> String {
    let text = String::from_utf8(pem.to_vec()).expect("utf-8");
    let body: String = text.lines().map(|line| format!("  {line}\n")).collect();
    format!("---\n{key}: |\n{body}")
}

/// kubetool's output: `Debian.yaml` (several YAML documents, as kubetool
/// appends them) and one `<host>.yaml` per etcd member, made with cfssl.
fn kubetool_hiera(work: &Path, hiera: &Path, hosts: &[(&str, &str)]) {
    std::fs::write(
        work.join("ca-conf.json"),
        r#"{"signing":{"default":{"expiry":"43800h"},"profiles":{
            "server":{"expiry":"43800h","usages":["signing","key encipherment","server auth","client auth"]},
            "client":{"expiry":"43800h","usages":["signing","key encipherment","client auth"]},
            "peer":{"expiry":"43800h","usages":["signing","key encipherment","server auth","client auth"]}}}}"#,
    )
    .expect("write");
    for (name, common_name, algo, size) in [
        ("kube-ca", "kubernetes", "ecdsa", 256),
        ("etcd-ca", "etcd", "ecdsa", 256),
        ("front-proxy-ca", "front-proxy-ca", "rsa", 2048),
    ] {
        std::fs::write(
            work.join(format!("{name}-csr.json")),
            format!(r#"{{"CN":"{common_name}","key":{{"algo":"{algo}","size":{size}}}}}"#),
        )
        .expect("write");
        cfssl(
            work,
            &format!("cfssl gencert -initca {name}-csr.json 2>/dev/null | cfssljson -bare {name}"),
        );
    }
    std::fs::write(
        work.join("client-csr.json"),
        r#"{"CN":"client","hosts":[""],"key":{"algo":"ecdsa","size":256}}"#,
    )
    .expect("write");
    cfssl(
        work,
        "cfssl gencert -ca=etcd-ca.pem -ca-key=etcd-ca-key.pem -config=ca-conf.json \
         -profile client client-csr.json 2>/dev/null | cfssljson -bare client",
    );
    tool(
        "openssl",
        &["genrsa", "-traditional", "-out", "sa-key.pem", "2048"],
        work,
    );
    tool(
        "openssl",
        &["rsa", "-in", "sa-key.pem", "-pubout", "-out", "sa-pub.pem"],
        work,
    );

    let pem = |file: &str| read(&work.join(file));
    let mut common = String::from("---\nkubernetes::kubernetes_version: 1.10.2\n");
    common += "---\nkubernetes::install_dashboard: false\n";
    for (key, file) in [
        ("kubernetes::etcd_ca_crt", "etcd-ca.pem"),
        ("kubernetes::etcd_ca_key", "etcd-ca-key.pem"),
        ("kubernetes::etcdclient_crt", "client.pem"),
        ("kubernetes::etcdclient_key", "client-key.pem"),
        ("kubernetes::kubernetes_ca_crt", "kube-ca.pem"),
        ("kubernetes::kubernetes_ca_key", "kube-ca-key.pem"),
        (
            "kubernetes::kubernetes_front_proxy_ca_crt",
            "front-proxy-ca.pem",
        ),
        (
            "kubernetes::kubernetes_front_proxy_ca_key",
            "front-proxy-ca-key.pem",
        ),
        ("kubernetes::sa_pub", "sa-pub.pem"),
        ("kubernetes::sa_key", "sa-key.pem"),
    ] {
        common += &hiera_entry(key, &pem(file));
    }
    std::fs::write(hiera.join("Debian.yaml"), common).expect("write");

    let ips: Vec<&str> = hosts.iter().map(|(_, ip)| *ip).collect();
    for (host, ip) in hosts {
        std::fs::write(
            work.join("host-csr.json"),
            format!(
                r#"{{"CN":"etcd-{host}","hosts":{ips:?},"key":{{"algo":"ecdsa","size":256}}}}"#
            ),
        )
        .expect("write");
        for (profile, hostnames) in [
            ("server", format!("{},{host}", ips.join(","))),
            ("peer", format!("{ip},{host}")),
            ("client", format!("{ip},{host}")),
        ] {
            cfssl(
                work,
                &format!(
                    "cfssl gencert -ca=etcd-ca.pem -ca-key=etcd-ca-key.pem -config=ca-conf.json \
                     -profile {profile} --hostname={hostnames} host-csr.json 2>/dev/null \
                     | cfssljson -bare {host}-{profile}"
                ),
            );
        }
        let mut text = String::new();
        for (key, file) in [
            ("kubernetes::etcdserver_crt", format!("{host}-server.pem")),
            (
                "kubernetes::etcdserver_key",
                format!("{host}-server-key.pem"),
            ),
            ("kubernetes::etcdpeer_crt", format!("{host}-peer.pem")),
            ("kubernetes::etcdpeer_key", format!("{host}-peer-key.pem")),
            ("kubernetes::etcdclient_crt", format!("{host}-client.pem")),
            (
                "kubernetes::etcdclient_key",
                format!("{host}-client-key.pem"),
            ),
        ] {
            text += &hiera_entry(key, &pem(&file));
        }
        std::fs::write(hiera.join(format!("{host}.yaml")), text).expect("write");
    }
}

#[test]
fn kubetool_hiera_round_trips_and_imported_cas_sign_new_leaves() {
    let work = tempfile::tempdir().expect("temp dir");
    let hiera = tempfile::tempdir().expect("temp dir");
    kubetool_hiera(
        work.path(),
        hiera.path(),
        &[
            ("m1", "192.0.2.11"),
            ("m2", "192.0.2.12"),
            ("old", "192.0.2.99"),
        ],
    );
    let cluster = Cluster::base();
    let run = cluster.run(&[
        "pki",
        "import",
        "--from-kubetool",
        &hiera.path().display().to_string(),
    ]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("old.yaml"),
        "unknown host not reported:\n{}",
        run.stderr
    );
    // 3 CAs, sa pair, etcd client, 3 pairs for each of m1 and m2.
    assert!(run.stdout.contains("imported 22 files"), "{}", run.stdout);
    let original = |file: &str| read(&work.path().join(file));
    for (to, from) in [
        ("ca.crt", "kube-ca.pem"),
        ("ca.key", "kube-ca-key.pem"),
        ("etcd/ca.crt", "etcd-ca.pem"),
        ("front-proxy-ca.key", "front-proxy-ca-key.pem"),
        ("sa.key", "sa-key.pem"),
        ("apiserver-etcd-client.crt", "client.pem"),
        ("nodes/m1/etcd/server.crt", "m1-server.pem"),
        ("nodes/m2/etcd/peer.key", "m2-peer-key.pem"),
        ("nodes/m2/etcd/healthcheck-client.crt", "m2-client.pem"),
    ] {
        assert_eq!(read(&cluster.file(to)), original(from), "{to}");
    }
    assert!(!cluster.file("nodes/old").exists());

    let run = cluster.generate();
    assert!(run.stdout.starts_with("created "), "{}", run.stdout);
    assert_eq!(
        read(&cluster.file("nodes/m1/etcd/server.crt")),
        original("m1-server.pem")
    );
    for (leaf, original_ca) in [
        ("nodes/m3/etcd/server.crt", "etcd-ca.pem"),
        ("nodes/m1/apiserver.crt", "kube-ca.pem"),
        ("nodes/w2/kubelet.crt", "kube-ca.pem"),
        ("nodes/m3/front-proxy-client.crt", "front-proxy-ca.pem"),
    ] {
        assert!(
            openssl_verifies(&work.path().join(original_ca), &cluster.file(leaf)),
            "{leaf} does not verify against the original {original_ca}"
        );
    }
    let before = snapshot(&cluster.store());
    assert!(cluster.generate().stdout.contains("nothing to do"));
    assert_eq!(before, snapshot(&cluster.store()));
}

#[test]
fn kubetool_key_not_matching_is_refused_and_nothing_written() {
    let work = tempfile::tempdir().expect("temp dir");
    let hiera = tempfile::tempdir().expect("temp dir");
    kubetool_hiera(work.path(), hiera.path(), &[("m1", "192.0.2.11")]);
    let host = hiera.path().join("m1.yaml");
    let text = String::from_utf8(read(&host)).expect("utf-8");
    let peer_key = String::from_utf8(read(&work.path().join("m1-peer-key.pem"))).expect("utf-8");
    let server_key =
        String::from_utf8(read(&work.path().join("m1-server-key.pem"))).expect("utf-8");
    let indent = |pem: &str| -> String { pem.lines().map(|line| format!("  {line}\n")).collect() };
    std::fs::write(
        &host,
        text.replacen(&indent(&server_key), &indent(&peer_key), 1),
    )
    .expect("write");
    let cluster = Cluster::new(BASE);
    let run = cluster.run(&[
        "pki",
        "import",
        "--from-kubetool",
        &hiera.path().display().to_string(),
    ]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("m1.yaml (kubernetes::etcdserver_key)"),
        "{}",
        run.stderr
    );
    assert!(!run.stderr.contains("BEGIN"));
    assert!(!cluster.store().exists());
}

/// Run `args` on the cluster, killing it after `limit`: `None` if it hung.
fn run_within(cluster: &Cluster, args: &[&str], limit: std::time::Duration) -> Option<common::Run> {
    let mut child = common::ocfk8s()
        .current_dir(cluster.dir.path())
        .arg("-i")
        .arg("inventory.toml")
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start ocfk8s");
    let started = std::time::Instant::now();
    while started.elapsed() < limit {
        if child.try_wait().expect("wait").is_some() {
            return Some(child.wait_with_output().expect("output").into());
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

fn mkfifo(path: &Path) {
    let status = std::process::Command::new("mkfifo")
        .arg(path)
        .status()
        .expect("mkfifo");
    assert!(status.success());
}

#[test]
fn a_fifo_in_an_import_folder_is_refused_without_hanging() {
    let limit = std::time::Duration::from_secs(30);
    let source = tempfile::tempdir().expect("temp dir");
    kubeadm_pki(source.path());
    std::fs::remove_file(source.path().join("etcd/peer.key")).expect("remove");
    mkfifo(&source.path().join("etcd/peer.key"));
    let cluster = Cluster::base();
    let args = [
        "pki",
        "import",
        "--from-kubeadm",
        &source.path().display().to_string(),
        "--node",
        "m1",
    ];
    let run = run_within(&cluster, &args, limit).expect("kubeadm import hung on a FIFO");
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("etcd/peer.key: a FIFO, not a regular file"),
        "{}",
        run.stderr
    );
    assert!(!cluster.store().exists(), "something was written");

    let hiera = tempfile::tempdir().expect("temp dir");
    mkfifo(&hiera.path().join("Debian.yaml"));
    let args = [
        "pki",
        "import",
        "--from-kubetool",
        &hiera.path().display().to_string(),
    ];
    let run = run_within(&cluster, &args, limit).expect("kubetool import hung on a FIFO");
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(
        run.stderr
            .contains("Debian.yaml: a FIFO, not a regular file"),
        "{}",
        run.stderr
    );
    assert!(!cluster.store().exists(), "something was written");
}
