//! `ocfk8s pki generate`, `certs check` and `kubeconfig` on the real binary,
//! with openssl and kubectl judging the result: identities, usages, SANs and
//! signatures as kubeadm makes them; idempotence; only growth; refusal of a
//! corrupt store without writing anything.

mod common;
mod pki_support;

use std::os::unix::fs::PermissionsExt;

use common::BASE;
use pki_support::*;

/// One row per certificate kind: file, issuing CA file, subject, extended
/// usages and SANs as openssl prints them.
struct Row {
    file: &'static str,
    ca: &'static str,
    subject: &'static str,
    extended_key_usage: &'static str,
    subject_alt_names: &'static [&'static str],
}

const CLIENT: &str = "TLS Web Client Authentication";
const SERVER: &str = "TLS Web Server Authentication";
const SERVER_CLIENT: &str = "TLS Web Server Authentication, TLS Web Client Authentication";

const ETCD_SANS_M1: &[&str] = &[
    "DNS:m1",
    "DNS:localhost",
    "IP Address:192.0.2.11",
    "IP Address:127.0.0.1",
    "IP Address:0:0:0:0:0:0:0:1",
];

const ROWS: &[Row] = &[
    Row {
        file: "nodes/m1/apiserver.crt",
        ca: "ca.crt",
        subject: "CN = kube-apiserver",
        extended_key_usage: SERVER,
        subject_alt_names: &[
            "DNS:kubernetes",
            "DNS:kubernetes.default",
            "DNS:kubernetes.default.svc",
            "DNS:kubernetes.default.svc.cluster.local",
            "DNS:m1",
            "DNS:kube.example.org",
            "IP Address:10.96.0.1",
            "IP Address:192.0.2.11",
            "IP Address:192.0.2.100",
        ],
    },
    Row {
        file: "nodes/m1/apiserver-kubelet-client.crt",
        ca: "ca.crt",
        subject: "O = kubeadm:cluster-admins, CN = kube-apiserver-kubelet-client",
        extended_key_usage: CLIENT,
        subject_alt_names: &[],
    },
    Row {
        file: "nodes/m1/front-proxy-client.crt",
        ca: "front-proxy-ca.crt",
        subject: "CN = front-proxy-client",
        extended_key_usage: CLIENT,
        subject_alt_names: &[],
    },
    Row {
        file: "apiserver-etcd-client.crt",
        ca: "etcd/ca.crt",
        subject: "CN = kube-apiserver-etcd-client",
        extended_key_usage: CLIENT,
        subject_alt_names: &[],
    },
    Row {
        file: "nodes/m1/etcd/server.crt",
        ca: "etcd/ca.crt",
        subject: "CN = m1",
        extended_key_usage: SERVER_CLIENT,
        subject_alt_names: ETCD_SANS_M1,
    },
    Row {
        file: "nodes/m1/etcd/peer.crt",
        ca: "etcd/ca.crt",
        subject: "CN = m1",
        extended_key_usage: SERVER_CLIENT,
        subject_alt_names: ETCD_SANS_M1,
    },
    Row {
        file: "nodes/m1/etcd/healthcheck-client.crt",
        ca: "etcd/ca.crt",
        subject: "CN = kube-etcd-healthcheck-client",
        extended_key_usage: CLIENT,
        subject_alt_names: &[],
    },
    Row {
        file: "nodes/m1/kubelet.crt",
        ca: "ca.crt",
        subject: "O = system:nodes, CN = system:node:m1",
        extended_key_usage: CLIENT,
        subject_alt_names: &[],
    },
    Row {
        file: "nodes/w2/kubelet.crt",
        ca: "ca.crt",
        subject: "O = system:nodes, CN = system:node:w2",
        extended_key_usage: CLIENT,
        subject_alt_names: &[],
    },
    Row {
        file: "nodes/w2/kubelet-server.crt",
        ca: "ca.crt",
        subject: "O = system:nodes, CN = system:node:w2",
        extended_key_usage: SERVER,
        subject_alt_names: &["DNS:w2", "IP Address:192.0.2.22"],
    },
    Row {
        file: "nodes/w1/kube-proxy.crt",
        ca: "ca.crt",
        subject: "CN = system:kube-proxy",
        extended_key_usage: CLIENT,
        subject_alt_names: &[],
    },
    Row {
        file: "nodes/m2/controller-manager.crt",
        ca: "ca.crt",
        subject: "CN = system:kube-controller-manager",
        extended_key_usage: CLIENT,
        subject_alt_names: &[],
    },
    Row {
        file: "nodes/m3/scheduler.crt",
        ca: "ca.crt",
        subject: "CN = system:kube-scheduler",
        extended_key_usage: CLIENT,
        subject_alt_names: &[],
    },
    Row {
        file: "ingress.crt",
        ca: "ingress-ca.crt",
        subject: "CN = *.example.org",
        extended_key_usage: SERVER,
        subject_alt_names: &["DNS:*.example.org", "IP Address:192.0.2.100"],
    },
];

const AUTHORITIES: &[(&str, &str)] = &[
    ("ca.crt", "CN = kubernetes"),
    ("etcd/ca.crt", "CN = etcd-ca"),
    ("front-proxy-ca.crt", "CN = front-proxy-ca"),
    ("ingress-ca.crt", "CN = test-ingress-ca"),
];

fn sorted(items: &[String]) -> Vec<String> {
    let mut items = items.to_vec();
    items.sort();
    items
}

#[test]
fn every_certificate_has_kubeadm_identity_usages_sans_and_verifies_against_its_ca() {
    let cluster = Cluster::base();
    let run = cluster.generate();
    assert!(run.stdout.starts_with("created "), "{}", run.stdout);

    for (file, subject) in AUTHORITIES {
        let described = describe(&cluster.file(file));
        assert_eq!(described.subject, *subject, "{file}");
        assert_eq!(described.issuer, *subject, "{file} is self-signed");
        assert!(described.is_ca, "{file} is a CA");
        assert_eq!(
            described.key_usage, "Digital Signature, Certificate Sign, CRL Sign",
            "{file}"
        );
        assert!(described.has_subject_key_id, "{file} has a SKI");
        assert_eq!(described.serial_bytes, 16, "{file}: 16-byte serial");
        assert!(openssl_verifies(&cluster.file(file), &cluster.file(file)));
    }

    for row in ROWS {
        let cert = cluster.file(row.file);
        let described = describe(&cert);
        assert_eq!(described.subject, row.subject, "{}", row.file);
        assert_eq!(
            described.extended_key_usage, row.extended_key_usage,
            "{}",
            row.file
        );
        let expected: Vec<String> = row
            .subject_alt_names
            .iter()
            .map(|s| s.to_string())
            .collect();
        assert_eq!(
            sorted(&described.subject_alt_names),
            sorted(&expected),
            "{}",
            row.file
        );
        assert_eq!(described.key_usage, "Digital Signature", "{}", row.file);
        assert!(!described.is_ca, "{} is not a CA", row.file);
        assert!(
            described.has_subject_key_id && described.has_authority_key_id,
            "{}",
            row.file
        );
        assert_eq!(described.serial_bytes, 16, "{}: 16-byte serial", row.file);
        assert_eq!(
            described.public_key_algorithm, "id-ecPublicKey",
            "{}",
            row.file
        );
        assert!(
            openssl_verifies(&cluster.file(row.ca), &cert),
            "{} does not verify against {}",
            row.file,
            row.ca
        );
        for (other, _) in AUTHORITIES.iter().filter(|(ca, _)| *ca != row.ca) {
            assert!(
                !openssl_verifies(&cluster.file(other), &cert),
                "{} also verifies against {other}",
                row.file
            );
        }
        let key = cluster.file(&row.file.replace(".crt", ".key"));
        assert_eq!(
            public_key_of_cert(&cert),
            public_key_of_key(&key),
            "{}",
            row.file
        );
    }

    let sa_public = String::from_utf8(read(&cluster.file("sa.pub"))).expect("utf-8");
    assert_eq!(sa_public, public_key_of_key(&cluster.file("sa.key")));

    // Masters only: workers get no etcd or control-plane material.
    assert!(!cluster.file("nodes/w1/etcd").exists());
    assert!(!cluster.file("nodes/w1/apiserver.crt").exists());
}

#[test]
fn validity_comes_from_the_inventory_and_starts_in_the_past() {
    let cluster = Cluster::new(
        &BASE
            .replace("cert_validity_days = 365", "cert_validity_days = 30")
            .replace("ca_validity_days = 3650", "ca_validity_days = 400"),
    );
    cluster.generate();
    let in_days = |days: u64| (days * 86400).to_string();
    let check = |file: &str, days: u64| {
        let path = cluster.file(file).display().to_string();
        let inside = std::process::Command::new("openssl")
            .args([
                "x509",
                "-noout",
                "-checkend",
                &in_days(days - 1),
                "-in",
                &path,
            ])
            .status()
            .expect("openssl");
        let outside = std::process::Command::new("openssl")
            .args([
                "x509",
                "-noout",
                "-checkend",
                &in_days(days + 1),
                "-in",
                &path,
            ])
            .status()
            .expect("openssl");
        assert!(
            inside.success() && !outside.success(),
            "{file}: not {days} days"
        );
    };
    check("ca.crt", 400);
    check("nodes/m1/apiserver.crt", 30);
    let described = describe(&cluster.file("nodes/m1/apiserver.crt"));
    let not_before = described
        .text
        .lines()
        .find_map(|line| line.trim().strip_prefix("Not Before: "))
        .expect("Not Before")
        .to_string();
    let epoch = tool(
        "date",
        &["-u", "-d", &not_before, "+%s"],
        std::path::Path::new("/"),
    );
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let not_before: u64 = epoch.trim().parse().expect("epoch");
    assert!(
        not_before + 60 <= now && now - not_before < 3600,
        "not_before should be a few minutes in the past"
    );
}

#[test]
fn kubeconfigs_load_in_kubectl_and_carry_verified_identities() {
    let cluster = Cluster::base();
    cluster.generate();
    let scratch = tempfile::tempdir().expect("temp dir");
    for (conf, subject, server, context) in [
        (
            "admin.conf",
            "O = kubeadm:cluster-admins, CN = kubernetes-admin",
            "https://kube.example.org:6443",
            "kubernetes-admin@test",
        ),
        (
            "super-admin.conf",
            "O = system:masters, CN = kubernetes-super-admin",
            "https://kube.example.org:6443",
            "kubernetes-super-admin@test",
        ),
        (
            "nodes/w1/kubelet.conf",
            "O = system:nodes, CN = system:node:w1",
            "https://kube.example.org:6443",
            "system:node:w1@test",
        ),
        (
            "nodes/w1/kube-proxy.conf",
            "CN = system:kube-proxy",
            "https://kube.example.org:6443",
            "system:kube-proxy@test",
        ),
        (
            "nodes/m2/controller-manager.conf",
            "CN = system:kube-controller-manager",
            "https://192.0.2.12:6443",
            "system:kube-controller-manager@test",
        ),
        (
            "nodes/m2/scheduler.conf",
            "CN = system:kube-scheduler",
            "https://192.0.2.12:6443",
            "system:kube-scheduler@test",
        ),
    ] {
        let path = cluster.file(conf);
        let view = |jsonpath: &str| {
            tool(
                "kubectl",
                &[
                    "--kubeconfig",
                    &path.display().to_string(),
                    "config",
                    "view",
                    "--raw",
                    "-o",
                    &format!("jsonpath={jsonpath}"),
                ],
                std::path::Path::new("/"),
            )
        };
        assert_eq!(view("{.clusters[0].cluster.server}"), server, "{conf}");
        assert_eq!(view("{.clusters[0].name}"), "test", "{conf}");
        assert_eq!(view("{.current-context}"), context, "{conf}");
        let client = scratch.path().join("client.crt");
        kubeconfig_client_cert(&path, &client);
        assert!(openssl_verifies(&cluster.file("ca.crt"), &client), "{conf}");
        assert_eq!(describe(&client).subject, subject, "{conf}");
        assert_eq!(describe(&client).extended_key_usage, CLIENT, "{conf}");
    }
    // A conf beside its pair embeds exactly that pair.
    let client = scratch.path().join("kubelet.crt");
    kubeconfig_client_cert(&cluster.file("nodes/m1/kubelet.conf"), &client);
    assert_eq!(read(&client), read(&cluster.file("nodes/m1/kubelet.crt")));
}

#[test]
fn second_generate_changes_no_byte_and_says_so() {
    let cluster = Cluster::base();
    let first = cluster.generate();
    assert!(
        first.stdout.contains("created 110 files"),
        "{}",
        first.stdout
    );
    let before = snapshot(&cluster.store());
    let second = cluster.generate();
    assert_eq!(second.stdout.trim(), "PKI store up to date, nothing to do");
    assert_eq!(before, snapshot(&cluster.store()));
}

#[test]
fn timings_break_a_generate_into_its_steps() {
    let cluster = Cluster::base();
    // The batch flushed by one syncfs, as when little is dirty on the
    // machine: the flush is a step of its own.
    let run: common::Run = common::ocfk8s()
        .current_dir(cluster.dir.path())
        .args(["-i", "inventory.toml", "--timings", "pki", "generate"])
        .env("OCFK8S_STORE_SYNC", "syncfs")
        .output()
        .expect("run ocfk8s")
        .into();
    assert_eq!(run.status, 0, "{}", run.stderr);
    for step in [
        "pki store read",
        "pki keys, certs",
        "pki files created",
        "pki files written",
        "pki flush",
        "pki renames",
        "total",
    ] {
        assert!(
            run.stderr
                .lines()
                .any(|line| line.trim_start().starts_with(step)),
            "no {step:?} step in:\n{}",
            run.stderr
        );
    }
    // Nothing to write: nothing is timed as written.
    let again = cluster.run(&["--timings", "pki", "generate"]);
    assert_eq!(again.status, 0, "{}", again.stderr);
    assert!(again.stderr.contains("pki store read"), "{}", again.stderr);
    assert!(
        !again.stderr.contains("pki files created"),
        "{}",
        again.stderr
    );
}

#[test]
fn verbose_lists_files_and_output_never_shows_key_material() {
    let cluster = Cluster::base();
    let run = cluster.run(&["-v", "pki", "generate"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(
        run.stderr.contains("nodes/m1/etcd/server.key"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("admin.conf"));
    for output in [&run.stdout, &run.stderr] {
        assert!(!output.contains("PRIVATE KEY"));
        assert!(!output.contains("BEGIN"));
    }
}

#[test]
fn adding_a_worker_adds_only_its_files() {
    let cluster = Cluster::base();
    cluster.generate();
    let before = snapshot(&cluster.store());
    cluster.set_inventory(&format!(
        "{BASE}\n[[worker]]\nname = \"w3\"\naddress = \"192.0.2.23\"\n"
    ));
    let run = cluster.generate();
    assert!(run.stdout.contains("created 8 files"), "{}", run.stdout);
    let after = snapshot(&cluster.store());
    for (file, state) in &before {
        if file == "nodes/" {
            continue; // the folder gains an entry
        }
        assert_eq!(after.get(file), Some(state), "{file} changed");
    }
    let added: Vec<&String> = after
        .keys()
        .filter(|file| !before.contains_key(*file))
        .collect();
    assert_eq!(
        added,
        [
            "nodes/w3/",
            "nodes/w3/kube-proxy.conf",
            "nodes/w3/kube-proxy.crt",
            "nodes/w3/kube-proxy.key",
            "nodes/w3/kubelet-server.crt",
            "nodes/w3/kubelet-server.key",
            "nodes/w3/kubelet.conf",
            "nodes/w3/kubelet.crt",
            "nodes/w3/kubelet.key",
        ]
    );
    assert!(openssl_verifies(
        &cluster.file("ca.crt"),
        &cluster.file("nodes/w3/kubelet.crt")
    ));
}

#[test]
fn keys_and_kubeconfigs_are_private_folders_0700_and_no_temporary_files_remain() {
    let cluster = Cluster::base();
    cluster.generate();
    let store = snapshot(&cluster.store());
    assert!(!store.is_empty());
    for (file, (_, mode, _, _)) in &store {
        let name = file
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or_default();
        assert!(!name.starts_with('.'), "stray temporary file {file}");
        let expected = if file.ends_with('/') {
            0o700
        } else if file.ends_with(".key") || file.ends_with(".conf") {
            0o600
        } else {
            0o644
        };
        assert_eq!(*mode, expected, "{file} has mode {mode:o}");
    }
    let root = std::fs::metadata(cluster.store()).expect("store");
    assert_eq!(root.permissions().mode() & 0o777, 0o700);
}

/// Break the store with `corrupt`, then check that `pki generate` exits 2
/// naming `named` and that not one byte changed, even though it had
/// something to create (w2's folder is removed first).
fn refused_without_writing(corrupt: impl FnOnce(&Cluster), named: &str) {
    let cluster = Cluster::base();
    cluster.generate();
    std::fs::remove_dir_all(cluster.file("nodes/w2")).expect("remove w2");
    corrupt(&cluster);
    let before = snapshot(&cluster.store());
    let run = cluster.run(&["pki", "generate"]);
    assert_eq!(
        run.status, 2,
        "stdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    assert!(
        run.stderr
            .contains(&cluster.file(named).display().to_string())
            || run.stderr.contains(named),
        "error does not name {named}:\n{}",
        run.stderr
    );
    assert!(!run.stderr.contains("BEGIN"), "{}", run.stderr);
    assert_eq!(before, snapshot(&cluster.store()), "the store changed");
    assert!(!cluster.file("nodes/w2").exists());
}

#[test]
fn key_not_matching_its_certificate_is_refused() {
    refused_without_writing(
        |cluster| {
            std::fs::copy(
                cluster.file("nodes/m2/kubelet.key"),
                cluster.file("nodes/m1/kubelet.key"),
            )
            .expect("copy");
        },
        "nodes/m1/kubelet.key",
    );
}

#[test]
fn ca_key_not_matching_its_certificate_is_refused() {
    refused_without_writing(
        |cluster| {
            std::fs::copy(cluster.file("front-proxy-ca.key"), cluster.file("ca.key"))
                .expect("copy");
        },
        "ca.key",
    );
}

#[test]
fn truncated_certificate_is_refused() {
    refused_without_writing(
        |cluster| {
            let path = cluster.file("nodes/m1/apiserver.crt");
            let bytes = read(&path);
            std::fs::write(&path, &bytes[..bytes.len() / 2]).expect("truncate");
        },
        "nodes/m1/apiserver.crt",
    );
}

#[test]
fn foreign_certificate_is_refused() {
    refused_without_writing(
        |cluster| {
            let foreign = tempfile::tempdir().expect("temp dir");
            openssl_ca(foreign.path(), "other", "kubernetes", KeyForm::EcPkcs8);
            openssl_leaf(
                foreign.path(),
                "apiserver",
                "other",
                "/CN=kube-apiserver",
                KeyForm::EcPkcs8,
            );
            for extension in ["crt", "key"] {
                std::fs::copy(
                    foreign.path().join(format!("apiserver.{extension}")),
                    cluster.file(&format!("nodes/m1/apiserver.{extension}")),
                )
                .expect("copy");
            }
        },
        "nodes/m1/apiserver.crt",
    );
}

#[test]
fn leaf_signed_by_another_store_ca_is_refused() {
    refused_without_writing(
        |cluster| {
            for extension in ["crt", "key"] {
                std::fs::copy(
                    cluster.file(&format!("nodes/m1/apiserver.{extension}")),
                    cluster.file(&format!("nodes/m1/etcd/server.{extension}")),
                )
                .expect("copy");
            }
        },
        "nodes/m1/etcd/server.crt",
    );
}

#[test]
fn kubeconfig_with_a_foreign_ca_is_refused() {
    refused_without_writing(
        |cluster| {
            let text = String::from_utf8(read(&cluster.file("admin.conf"))).expect("utf-8");
            let etcd_ca = String::from_utf8(read(&cluster.file("etcd/ca.crt"))).expect("utf-8");
            let ca = String::from_utf8(read(&cluster.file("ca.crt"))).expect("utf-8");
            use base64::Engine;
            let encode = |pem: &str| base64::engine::general_purpose::STANDARD.encode(pem);
            std::fs::write(
                cluster.file("admin.conf"),
                text.replace(&encode(&ca), &encode(&etcd_ca)),
            )
            .expect("write");
        },
        "admin.conf",
    );
}

#[test]
fn a_key_in_place_of_a_kubeconfig_is_refused_without_showing_it() {
    let key_line = |cluster: &Cluster| {
        String::from_utf8(read(&cluster.file("ca.key")))
            .expect("utf-8")
            .lines()
            .nth(1)
            .expect("key body")
            .to_string()
    };
    refused_without_writing(
        |cluster| {
            std::fs::copy(cluster.file("ca.key"), cluster.file("admin.conf")).expect("copy");
        },
        "admin.conf",
    );
    let cluster = Cluster::base();
    cluster.generate();
    std::fs::copy(cluster.file("ca.key"), cluster.file("admin.conf")).expect("copy");
    let run = cluster.run(&["certs", "check"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(run.stderr.contains("admin.conf"), "{}", run.stderr);
    assert!(
        !run.stderr.contains(&key_line(&cluster)) && !run.stderr.contains("BEGIN"),
        "certs check shows the key:\n{}",
        run.stderr
    );
}

#[test]
fn ca_is_never_regenerated_while_its_leaves_exist() {
    refused_without_writing(
        |cluster| {
            std::fs::remove_file(cluster.file("etcd/ca.crt")).expect("remove");
            std::fs::remove_file(cluster.file("etcd/ca.key")).expect("remove");
        },
        "etcd/ca.crt",
    );
}

#[test]
fn missing_kubeconfig_is_rebuilt_from_its_existing_pair() {
    let cluster = Cluster::base();
    cluster.generate();
    let pair_before = (
        read(&cluster.file("nodes/m1/kubelet.crt")),
        read(&cluster.file("nodes/m1/kubelet.key")),
    );
    std::fs::remove_file(cluster.file("nodes/m1/kubelet.conf")).expect("remove");
    let run = cluster.generate();
    assert!(run.stdout.contains("created 1 file"), "{}", run.stdout);
    let scratch = tempfile::tempdir().expect("temp dir");
    let client = scratch.path().join("client.crt");
    kubeconfig_client_cert(&cluster.file("nodes/m1/kubelet.conf"), &client);
    assert_eq!(read(&client), pair_before.0);
    assert_eq!(read(&cluster.file("nodes/m1/kubelet.key")), pair_before.1);
}

#[test]
fn rsa_2048_store_is_complete_and_verifies() {
    // One master, no workers, no ingress: RSA key generation is slow.
    let inventory = BASE
        .replace(
            "key_algorithm = \"ecdsa-p256\"",
            "key_algorithm = \"rsa-2048\"",
        )
        .split("[ingress]")
        .next()
        .expect("head")
        .to_string()
        + "[[master]]\nname = \"m1\"\naddress = \"192.0.2.11\"\n";
    let cluster = Cluster::new(&inventory);
    let run = cluster.generate();
    assert!(run.stdout.contains("created 38 files"), "{}", run.stdout);
    assert!(!cluster.file("ingress-ca.crt").exists());
    for (file, ca) in [
        ("nodes/m1/apiserver.crt", "ca.crt"),
        ("nodes/m1/etcd/peer.crt", "etcd/ca.crt"),
        ("nodes/m1/front-proxy-client.crt", "front-proxy-ca.crt"),
    ] {
        let described = describe(&cluster.file(file));
        assert_eq!(described.public_key_algorithm, "rsaEncryption", "{file}");
        assert_eq!(
            described.key_usage, "Digital Signature, Key Encipherment",
            "{file}"
        );
        assert!(
            openssl_verifies(&cluster.file(ca), &cluster.file(file)),
            "{file}"
        );
        assert_eq!(
            public_key_of_cert(&cluster.file(file)),
            public_key_of_key(&cluster.file(&file.replace(".crt", ".key")))
        );
    }
    assert!(tool(
        "openssl",
        &[
            "rsa",
            "-noout",
            "-text",
            "-in",
            &cluster.file("sa.key").display().to_string()
        ],
        std::path::Path::new("/")
    )
    .contains("2048 bit"));
    let before = snapshot(&cluster.store());
    assert!(cluster.generate().stdout.contains("nothing to do"));
    assert_eq!(before, snapshot(&cluster.store()));
}

#[test]
fn certs_check_lists_every_certificate_and_kubeconfig_with_its_ca() {
    let cluster = Cluster::base();
    cluster.generate();
    let run = cluster.run(&["certs", "check", "-o", "json"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    let report: serde_json::Value = serde_json::from_str(&run.stdout).expect("json");
    let certificates = report["certificates"].as_array().expect("certificates");
    let files = snapshot(&cluster.store());
    let expected = files
        .keys()
        .filter(|file| {
            (file.ends_with(".crt") && !AUTHORITIES.iter().any(|(ca, _)| ca == file))
                || file.ends_with(".conf")
        })
        .count();
    assert_eq!(certificates.len(), expected);
    for entry in certificates {
        let file = entry["file"].as_str().expect("file");
        let authority = entry["authority"].as_str().expect("authority");
        let wanted = if file.contains("/etcd/") || file.starts_with("apiserver-etcd") {
            "etcd-ca"
        } else if file.contains("front-proxy") {
            "front-proxy-ca"
        } else if file.starts_with("ingress") {
            "ingress-ca"
        } else {
            "ca"
        };
        assert_eq!(authority, wanted, "{file}");
        let residual = entry["residual_seconds"].as_i64().expect("residual");
        assert!(residual > 364 * 86400 && residual <= 365 * 86400, "{file}");
    }
    let authorities: Vec<&str> = report["authorities"]
        .as_array()
        .expect("authorities")
        .iter()
        .map(|entry| entry["name"].as_str().expect("name"))
        .collect();
    assert_eq!(
        authorities,
        ["ca", "etcd-ca", "front-proxy-ca", "ingress-ca"]
    );

    let table = cluster.run(&["certs", "check"]);
    assert_eq!(table.status, 0);
    assert!(table.stdout.starts_with("CERTIFICATE "), "{}", table.stdout);
    let line = table
        .stdout
        .lines()
        .find(|line| line.starts_with("nodes/m1/etcd/server "))
        .expect("etcd server row");
    // 365 days from now, read back within the same second or just after.
    assert!(
        (line.contains(" 364d ") || line.contains(" 1y ")) && line.ends_with("etcd-ca"),
        "{line}"
    );
    assert!(table.stdout.contains("CERTIFICATE AUTHORITY   EXPIRES"));
    // Rows sorted by name, as kubeadm lists them.
    let names: Vec<&str> = table
        .stdout
        .lines()
        .skip(1)
        .take_while(|line| !line.is_empty())
        .filter_map(|line| line.split_whitespace().next())
        .collect();
    assert_eq!(names.len(), certificates.len(), "{}", table.stdout);
    let mut sorted_names = names.clone();
    sorted_names.sort();
    assert_eq!(names, sorted_names);
    let position = |name: &str| {
        names
            .iter()
            .position(|row| *row == name)
            .unwrap_or_else(|| panic!("no {name} row:\n{}", table.stdout))
    };
    assert!(
        position("nodes/m1/apiserver") < position("nodes/m1/apiserver-kubelet-client"),
        "{}",
        table.stdout
    );
}

#[test]
fn certs_check_on_a_missing_store_is_bad_input() {
    let cluster = Cluster::base();
    let run = cluster.run(&["certs", "check"]);
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(run.stderr.contains("pki generate"), "{}", run.stderr);
}

#[test]
fn kubeconfig_prints_the_stored_admin_conf_and_requires_the_store() {
    let cluster = Cluster::base();
    let missing = cluster.run(&["kubeconfig"]);
    assert_eq!(missing.status, 2);
    assert!(
        missing.stderr.contains("pki generate"),
        "{}",
        missing.stderr
    );
    cluster.generate();
    let admin = cluster.run(&["kubeconfig"]);
    assert_eq!(admin.status, 0, "{}", admin.stderr);
    assert_eq!(admin.stdout.as_bytes(), read(&cluster.file("admin.conf")));
    let super_admin = cluster.run(&["kubeconfig", "--user", "super-admin"]);
    assert_eq!(
        super_admin.stdout.as_bytes(),
        read(&cluster.file("super-admin.conf"))
    );
    let unknown = cluster.run(&["kubeconfig", "--user", "root"]);
    assert_eq!(unknown.status, 2);
}

#[test]
fn changed_endpoint_keeps_existing_certificates_and_warns() {
    let cluster = Cluster::base();
    cluster.generate();
    let before = snapshot(&cluster.store());
    cluster.set_inventory(&BASE.replace("kube.example.org", "api.example.net"));
    let run = cluster.generate();
    assert_eq!(run.stdout.trim(), "PKI store up to date, nothing to do");
    assert!(
        run.stderr
            .contains("nodes/m1/apiserver.crt: lacks the SANs api.example.net"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("then `ocfk8s pki generate` issues it anew from the same CA"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(
            "admin.conf: server https://kube.example.org:6443, the inventory asks for https://api.example.net:6443"
        ),
        "{}",
        run.stderr
    );
    assert_eq!(before, snapshot(&cluster.store()));
}
