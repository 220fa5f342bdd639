//! `rotate-certs` on five sandbox masters with real etcd, nginx and
//! keepalived: `--dry-run` changes nothing, `--expiring-within` rotates
//! only the short-lived leaf, a full rotation changes the certificate every
//! member serves on 2379 and 2380 while a linearizable reader sees no
//! failure (wall time next to the restart floor), and a rotation killed at
//! five points is finished by re-running it.

mod sandbox;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

#[path = "common/mod.rs"]
mod common;

#[path = "sandbox/cluster.rs"]
mod cluster;

use cluster::{stdout, wait_until, walk, Cluster, Reader};

const SUBNET: u8 = 215;
const MASTERS: [&str; 5] = ["m1", "m2", "m3", "m4", "m5"];

/// The serial of the certificate served at `address:port`.
fn served_serial(address: &str, port: u16) -> String {
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {address}:{port} </dev/null 2>/dev/null | openssl x509 -noout -serial"
        ))
        .output()
        .expect("openssl");
    let serial = stdout(&output).trim().to_string();
    assert!(
        serial.starts_with("serial="),
        "no certificate at {address}:{port}"
    );
    serial
}

fn served(cluster: &Cluster) -> Vec<String> {
    MASTERS
        .iter()
        .flat_map(|name| {
            let address = cluster.address(name);
            [served_serial(&address, 2379), served_serial(&address, 2380)]
        })
        .collect()
}

fn etcd_pids(cluster: &Cluster) -> Vec<String> {
    MASTERS
        .iter()
        .map(|name| {
            stdout(
                &cluster
                    .sandbox
                    .ssh(name, "cat /run/systemctl/etcd.service.pid"),
            )
            .trim()
            .to_string()
        })
        .collect()
}

#[test]
fn leaves_rotate_member_by_member_without_a_failed_read() {
    let cluster = Cluster::up(SUBNET, 5, 1);
    let run = cluster.run(&["--accept-new-host-keys", "pki", "generate"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    let first = cluster.run(&["--accept-new-host-keys", "bootstrap"]);
    assert_eq!(first.status, 0, "{}\n{}", first.stdout, first.stderr);
    let put = cluster.etcdctl(&["m1", "m2"], &["put", "canary", "alive"]);
    assert!(put.status.success(), "{put:?}");
    // The store's files, without the run lock (it records its holder).
    let store = |cluster: &Cluster| -> Vec<(PathBuf, Vec<u8>)> {
        let mut files: Vec<(PathBuf, Vec<u8>)> = walk(&cluster.pki(""))
            .into_iter()
            .filter(|(path, _)| !path.ends_with(".ocfk8s.lock"))
            .collect();
        files.sort();
        files
    };

    // Bad input: exit 2, nothing changed.
    let before = store(&cluster);
    for args in [
        &["rotate-certs", "--only", "w9"][..],
        &["rotate-certs", "--only", "m1;touch /tmp/x"],
        &["rotate-certs", "--expiring-within", "soon"],
        &["rotate-certs", "--expiring-within", "30y"],
    ] {
        let refused = cluster.run(args);
        assert_eq!(refused.status, 2, "{args:?}: {}", refused.stderr);
    }
    // --dry-run lists certificates and the order of restarts.
    let dry = cluster.run(&["rotate-certs", "--dry-run"]);
    assert_eq!(dry.status, 0, "{}", dry.stderr);
    for expected in [
        "nodes/m3/etcd/server",
        "apiserver-etcd-client",
        "1. m1: files; etcd restarted",
        "5. m5:",
        "6. w1:",
        "7. masters: nginx reloaded",
    ] {
        assert!(
            dry.stdout.contains(expected),
            "{expected:?}:\n{}",
            dry.stdout
        );
    }
    assert_eq!(store(&cluster), before, "--dry-run changed the store");

    // A host holding another cluster's CA is refused before anything
    // changes (exit 2, the host named).
    let foreign = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "30",
            "-subj",
            "/CN=kubernetes",
            "-keyout",
            "/dev/null",
        ])
        .output()
        .expect("openssl");
    assert!(foreign.status.success(), "{foreign:?}");
    cluster.sandbox.ssh(
        "w1",
        "cp /etc/kubernetes/pki/ca.crt /etc/kubernetes/pki/ca.crt.ours",
    );
    std::fs::write(
        cluster.sandbox.dir.path().join("foreign-ca.crt"),
        &foreign.stdout,
    )
    .expect("write");
    cluster.sandbox.ssh(
        "w1",
        &format!(
            "cat {} > /etc/kubernetes/pki/ca.crt",
            cluster.sandbox.dir.path().join("foreign-ca.crt").display()
        ),
    );
    let refused = cluster.run(&["rotate-certs"]);
    assert_eq!(refused.status, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("w1: /etc/kubernetes/pki/ca.crt"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        store(&cluster),
        before,
        "a refused rotation changed the store"
    );
    cluster.sandbox.ssh(
        "w1",
        "mv /etc/kubernetes/pki/ca.crt.ours /etc/kubernetes/pki/ca.crt",
    );

    // --expiring-within rotates only the leaf that expires soon: w1's
    // kubelet serving certificate, re-signed by the same CA for 2 days.
    let pki = cluster.pki("");
    let signed = Command::new("sh")
        .current_dir(&pki)
        .arg("-c")
        .arg(
            "set -e; b=nodes/w1/kubelet-server; \
             openssl x509 -in $b.crt -noout -ext subjectAltName | tail -n +2 | sed 's/^ *//; s/IP Address/IP/g' > san.txt; \
             printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\n' \"$(cat san.txt)\" > ext.cnf; \
             openssl req -new -key $b.key -subj '/O=system:nodes/CN=system:node:w1' -out short.csr; \
             openssl x509 -req -in short.csr -CA ca.crt -CAkey ca.key -set_serial 0x$(openssl rand -hex 8) -days 2 -extfile ext.cnf -out $b.crt; \
             rm -f san.txt ext.cnf short.csr"
        )
        .output()
        .expect("openssl");
    assert!(signed.status.success(), "{signed:?}");
    let short_lived = store(&cluster);
    let pids = etcd_pids(&cluster);
    let expiring = cluster.run(&["rotate-certs", "--expiring-within", "30d"]);
    assert_eq!(
        expiring.status, 0,
        "{}\n{}",
        expiring.stdout, expiring.stderr
    );
    assert!(
        expiring
            .stdout
            .contains("rotate-certs: 1 certificate(s) re-issued"),
        "{}",
        expiring.stdout
    );
    let changed: Vec<String> = store(&cluster)
        .iter()
        .zip(&short_lived)
        .filter(|(after, before)| after != before)
        .map(|(after, _)| after.0.display().to_string())
        .collect();
    assert!(
        changed.len() == 2
            && changed
                .iter()
                .all(|path| path.contains("nodes/w1/kubelet-server.")),
        "{changed:?}"
    );
    assert_eq!(
        etcd_pids(&cluster),
        pids,
        "etcd restarted for a worker's leaf"
    );
    let days = Command::new("openssl")
        .args([
            "x509",
            "-noout",
            "-checkend",
            &(30 * 86_400).to_string(),
            "-in",
        ])
        .arg(cluster.pki("nodes/w1/kubelet-server.crt"))
        .output()
        .expect("openssl");
    assert!(days.status.success(), "the new leaf expires within 30 days");
    cluster.plan_is_empty();
    let none = cluster.run(&["rotate-certs", "--expiring-within", "30d"]);
    assert_eq!(none.status, 0, "{}", none.stderr);
    assert!(none.stdout.contains("nothing to do"), "{}", none.stdout);

    // The restart floor: one etcd restart and catch-up per member, by hand.
    let floor = Instant::now();
    for name in MASTERS {
        cluster.sandbox.ssh(name, "systemctl restart etcd");
        wait_until(
            "etcd healthy after a restart",
            Duration::from_secs(60),
            || cluster.all_healthy(&MASTERS),
        );
    }
    let floor = floor.elapsed();

    // Every leaf, under the reader: each member serves a new certificate
    // on 2379 and 2380; the etcd CA is unchanged.
    let ca = std::fs::read(cluster.pki("etcd/ca.crt")).expect("etcd ca");
    let serials = served(&cluster);
    let reader = Reader::start(&cluster, &["m1", "m2", "m3", "m4", "m5"]);
    let started = Instant::now();
    let rotated = cluster.run(&["rotate-certs"]);
    let took = started.elapsed();
    reader.finish("rotate-certs on 5 members");
    assert_eq!(rotated.status, 0, "{}\n{}", rotated.stdout, rotated.stderr);
    eprintln!(
        "rotate-certs of 5 members + 1 worker: {took:?}; restart floor (5 etcd restarts and catch-ups): {floor:?}"
    );
    let restarted: Vec<&str> = rotated
        .stderr
        .lines()
        .filter(|line| line.ends_with("etcd: restart etcd.service"))
        .collect();
    assert_eq!(restarted.len(), 5, "{}", rotated.stderr);
    let after = served(&cluster);
    for (before, after) in serials.iter().zip(&after) {
        assert_ne!(before, after, "a member serves its old certificate");
    }
    assert_eq!(
        std::fs::read(cluster.pki("etcd/ca.crt")).expect("etcd ca"),
        ca
    );
    for name in MASTERS {
        let verify = Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(cluster.pki("etcd/ca.crt"))
            .arg(cluster.pki(&format!("nodes/{name}/etcd/server.crt")))
            .output()
            .expect("openssl");
        assert!(verify.status.success(), "{verify:?}");
    }
    cluster.plan_is_empty();
    // certs check --remote shows what every host now holds: the store's
    // new serials.
    let remote = cluster.run(&["certs", "check", "--remote", "-o", "json"]);
    assert_eq!(remote.status, 0, "{}", remote.stderr);
    let rows: serde_json::Value = serde_json::from_str(&remote.stdout).expect("json");
    for name in MASTERS {
        let store_serial = stdout(
            &Command::new("openssl")
                .args(["x509", "-noout", "-serial", "-in"])
                .arg(cluster.pki(&format!("nodes/{name}/etcd/server.crt")))
                .output()
                .expect("openssl"),
        );
        let store_serial = store_serial.trim().trim_start_matches("serial=");
        let held = rows
            .as_array()
            .expect("rows")
            .iter()
            .find(|row| row["host"] == name && row["path"] == "/etc/kubernetes/pki/etcd/server.crt")
            .and_then(|row| row["serial"].as_str())
            .unwrap_or_else(|| panic!("{name}: no etcd server certificate listed"));
        assert_eq!(held, store_serial, "{name}");
    }

    // Killed at five points, each re-run resuming, then finished: every
    // member healthy with the data, nothing pending.
    let reader = Reader::start(&cluster, &["m1", "m2", "m3", "m4", "m5"]);
    for at in [
        "pki: re-issued",
        "m1  etcd: restart etcd.service",
        "m2  control-plane:",
        "m4  etcd: restart etcd.service",
        "w1  nodes:",
    ] {
        let lines = cluster.killed_at(&["rotate-certs"], at);
        eprintln!("rotate-certs killed at {at:?} after {} lines", lines.len());
    }
    let finished = cluster.run(&["rotate-certs"]);
    reader.finish("rotate-certs killed at five points and re-run");
    assert_eq!(
        finished.status, 0,
        "{}\n{}",
        finished.stdout, finished.stderr
    );
    assert!(cluster.all_healthy(&MASTERS));
    assert_eq!(cluster.canary(&["m3"]), "alive");
    cluster.plan_is_empty();

    // A member down: refused before anything changes.
    cluster.sandbox.ssh("m4", "systemctl stop etcd");
    let before = store(&cluster);
    let refused = cluster.run(&["rotate-certs"]);
    assert_eq!(refused.status, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("etcd is not healthy") && refused.stderr.contains("m4"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        store(&cluster),
        before,
        "a refused rotation changed the store"
    );
}

/// Copy store files into one file beside the store (a client's own copy
/// of its identity or trust bundle).
fn copy_of(cluster: &Cluster, name: &str, files: &[&str]) -> PathBuf {
    let mut bytes = Vec::new();
    for file in files {
        bytes.extend(std::fs::read(cluster.pki(file)).expect("store file"));
    }
    let path = cluster.sandbox.dir.path().join(name);
    std::fs::write(&path, bytes).expect("write copy");
    path
}

/// PEM certificates in a file on a host.
fn certificates_in(cluster: &Cluster, host: &str, path: &str) -> usize {
    stdout(
        &cluster
            .sandbox
            .ssh(host, &format!("grep -c 'BEGIN CERTIFICATE' {path}")),
    )
    .trim()
    .parse()
    .expect("a count")
}

/// Whether the certificate served at `address:port` verifies against `ca`.
fn served_chains_to(cluster: &Cluster, address: &str, port: u16, ca: &str) -> bool {
    let output = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "openssl s_client -connect {address}:{port} -CAfile {ca} -cert {cert} -key {key} </dev/null 2>&1",
            ca = cluster.pki(ca).display(),
            cert = cluster.pki("apiserver-etcd-client.crt").display(),
            key = cluster.pki("apiserver-etcd-client.key").display(),
        ))
        .output()
        .expect("openssl");
    stdout(&output).contains("Verify return code: 0 (ok)")
}

#[test]
fn cas_rotate_in_three_resumable_steps_without_a_failed_read() {
    let cluster = Cluster::up(216, 5, 1);
    let run = cluster.run(&["--accept-new-host-keys", "pki", "generate"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    let first = cluster.run(&["--accept-new-host-keys", "bootstrap"]);
    assert_eq!(first.status, 0, "{}\n{}", first.stdout, first.stderr);
    let put = cluster.etcdctl(&["m1", "m2"], &["put", "canary", "alive"]);
    assert!(put.status.success(), "{put:?}");
    let old_etcd_ca = std::fs::read(cluster.pki("etcd/ca.crt")).expect("etcd ca");

    let dry = cluster.run(&["rotate-certs", "--ca", "--all", "--dry-run"]);
    assert_eq!(dry.status, 0, "{}", dry.stderr);
    assert!(
        dry.stdout.contains("step 1 of 3") && dry.stdout.contains("step 3 of 3"),
        "{}",
        dry.stdout
    );

    // Step 1: new CAs beside the old; every host trusts both. The reader
    // keeps the identity and trust it had before.
    let old_cert = copy_of(&cluster, "old-client.crt", &["apiserver-etcd-client.crt"]);
    let old_key = copy_of(&cluster, "old-client.key", &["apiserver-etcd-client.key"]);
    let old_ca = copy_of(&cluster, "old-ca.crt", &["etcd/ca.crt"]);
    let reader = Reader::start_with(
        &cluster,
        &MASTERS,
        old_ca,
        old_cert.clone(),
        old_key.clone(),
    );
    let step1 = cluster.run(&["rotate-certs", "--ca"]);
    reader.finish("rotate-certs --ca, step 1");
    assert_eq!(step1.status, 0, "{}\n{}", step1.stdout, step1.stderr);
    assert!(step1.stdout.contains("step 1 of 3"), "{}", step1.stdout);
    for name in MASTERS {
        for file in [
            "/etc/kubernetes/pki/etcd/ca.crt",
            "/etc/kubernetes/pki/ca.crt",
        ] {
            assert_eq!(certificates_in(&cluster, name, file), 2, "{name}: {file}");
        }
    }
    assert_eq!(
        certificates_in(&cluster, "w1", "/etc/kubernetes/pki/ca.crt"),
        2
    );
    let check = cluster.run(&["certs", "check"]);
    assert!(
        check.stdout.contains("step 1 of 3 done"),
        "{}",
        check.stdout
    );
    let status = cluster.run(&["status"]);
    assert_eq!(status.status, 0, "{}\n{}", status.stdout, status.stderr);
    assert!(
        status.stdout.contains("CA rotation: step 1 of 3 done"),
        "{}",
        status.stdout
    );
    cluster.plan_is_empty();

    // Step 2: every leaf from the new CAs, killed once mid-rollout and
    // finished by the same command; the reader trusts both CAs and still
    // presents its old identity.
    let both = copy_of(
        &cluster,
        "both-ca.crt",
        &["etcd/ca.crt", "etcd/ca.next.crt"],
    );
    let reader = Reader::start_with(&cluster, &MASTERS, both, old_cert, old_key);
    let lines = cluster.killed_at(&["rotate-certs", "--ca"], "m2  etcd: restart etcd.service");
    eprintln!(
        "rotate-certs --ca step 2 killed after {} lines",
        lines.len()
    );
    let step2 = cluster.run(&["rotate-certs", "--ca"]);
    reader.finish("rotate-certs --ca, step 2 (killed once)");
    assert_eq!(step2.status, 0, "{}\n{}", step2.stdout, step2.stderr);
    assert!(
        step2.stderr.contains("the hosts lag behind the store"),
        "{}",
        step2.stderr
    );
    let check = cluster.run(&["certs", "check"]);
    assert!(
        check.stdout.contains("step 2 of 3 done"),
        "{}",
        check.stdout
    );
    for name in MASTERS {
        let address = cluster.address(name);
        for port in [2379, 2380] {
            assert!(
                served_chains_to(&cluster, &address, port, "etcd/ca.crt"),
                "{name}:{port} does not serve a certificate from the new etcd CA"
            );
        }
    }
    cluster.plan_is_empty();

    // Step 3: the old CAs dropped from every trust file and archived; the
    // reader now holds the new identity and trusts the new CA alone.
    let new_cert = copy_of(&cluster, "new-client.crt", &["apiserver-etcd-client.crt"]);
    let new_key = copy_of(&cluster, "new-client.key", &["apiserver-etcd-client.key"]);
    let new_ca = copy_of(&cluster, "new-ca.crt", &["etcd/ca.crt"]);
    let reader = Reader::start_with(&cluster, &MASTERS, new_ca, new_cert, new_key);
    let step3 = cluster.run(&["rotate-certs", "--ca", "--all"]);
    reader.finish("rotate-certs --ca --all, step 3");
    assert_eq!(step3.status, 0, "{}\n{}", step3.stdout, step3.stderr);
    assert!(step3.stdout.contains("step 3 of 3"), "{}", step3.stdout);
    let new_etcd_ca = std::fs::read(cluster.pki("etcd/ca.crt")).expect("etcd ca");
    assert_ne!(new_etcd_ca, old_etcd_ca);
    for name in MASTERS {
        for file in [
            "/etc/kubernetes/pki/etcd/ca.crt",
            "/etc/kubernetes/pki/ca.crt",
        ] {
            assert_eq!(certificates_in(&cluster, name, file), 1, "{name}: {file}");
        }
        let held = cluster
            .sandbox
            .ssh(name, "cat /etc/kubernetes/pki/etcd/ca.crt")
            .stdout;
        assert_eq!(held, new_etcd_ca, "{name} holds the new etcd CA alone");
    }
    assert_eq!(
        certificates_in(&cluster, "w1", "/etc/kubernetes/pki/ca.crt"),
        1
    );
    assert!(
        std::fs::read_dir(cluster.pki("archive"))
            .expect("archive")
            .any(|entry| entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .starts_with("ca")),
        "the old CAs archived"
    );
    assert!(cluster.all_healthy(&MASTERS));
    assert_eq!(cluster.canary(&["m4"]), "alive");
    cluster.plan_is_empty();
    let check = cluster.run(&["certs", "check"]);
    assert!(
        !check.stdout.contains("CA rotation: step"),
        "{}",
        check.stdout
    );
}
