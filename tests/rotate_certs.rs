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

use sandbox::Sandbox;

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
    let sandbox = Sandbox::up(SUBNET, 5, 1);
    let inventory = sandbox.inventory(
        "inventory.toml",
        "",
        "",
        &format!(
            "\n[ingress]\nvip = \"10.213.{SUBNET}.100\"\ninterface = \"eth0\"\nvirtual_router_id = 63\n\
             node_port = 31234\nserver_names = [\"*.sandbox.test\"]\n"
        ),
    );
    let text = std::fs::read_to_string(&inventory)
        .expect("inventory")
        .replace(
            "method = \"none\"\n",
            "method = \"none\"\nbin_dir = \"/usr/local/bin\"\n",
        );
    std::fs::write(&inventory, &text).expect("inventory");
    for name in MASTERS.iter().chain(&["w1"]) {
        sandbox.install_standins(name);
    }
    let cluster = Cluster {
        sandbox,
        inventory,
        entries: Vec::new(),
    };
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
