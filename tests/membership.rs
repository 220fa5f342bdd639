//! Membership on sandbox hosts with real etcd, nginx and keepalived:
//! add-master to an even count (warned) and to five while a linearizable
//! reader sees no failure, an add-master killed at five points and
//! finished by re-running it, remove-master of a healthy member, refusals
//! while another member is down, and a dead master removed with `--force`
//! and replaced: three healthy members again and the data intact.
//!
//! kube-apiserver, kubelet and kube-proxy are the sandbox's stand-ins
//! (`sandbox/standins`).

mod sandbox;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

#[path = "common/mod.rs"]
mod common;

#[path = "sandbox/cluster.rs"]
mod cluster;

use cluster::{snapshot_named, stdout, wait_until, walk, Cluster, Reader};

const SUBNET: u8 = 214;

#[test]
fn masters_are_added_removed_and_replaced_without_losing_quorum_or_data() {
    let cluster = Cluster::up(SUBNET, 5, 1);
    cluster.set_masters(&["m1", "m2", "m3"]);
    let run = cluster.run(&["--accept-new-host-keys", "pki", "generate"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    let first = cluster.run(&["--accept-new-host-keys", "bootstrap"]);
    assert_eq!(first.status, 0, "{}\n{}", first.stdout, first.stderr);
    let put = cluster.etcdctl(&["m1", "m2"], &["put", "canary", "alive"]);
    assert!(put.status.success(), "{put:?}");
    let etcd_ca_before = std::fs::read(cluster.pki("etcd/ca.crt")).expect("etcd ca");
    let store_before: Vec<(PathBuf, Vec<u8>)> = walk(&cluster.pki(""));

    // Refused before anything changes: a name not in the inventory (exit
    // 2), a member already (exit 2), and any member down (exit 1).
    let refused = cluster.run(&["add-master", "m4"]);
    assert_eq!(refused.status, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("add it under [[master]]"),
        "{}",
        refused.stderr
    );
    let refused = cluster.run(&["add-master", "m2"]);
    assert_eq!(refused.status, 2, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("already a member"),
        "{}",
        refused.stderr
    );
    cluster.set_masters(&["m1", "m2", "m3", "m4"]);
    cluster.sandbox.ssh("m3", "systemctl stop etcd");
    let refused = cluster.run(&["--accept-new-host-keys", "add-master", "m4"]);
    assert_eq!(refused.status, 1, "{}", refused.stderr);
    assert!(
        refused.stderr.contains("etcd is not healthy") && refused.stderr.contains("m3"),
        "{}",
        refused.stderr
    );
    assert_eq!(cluster.members(&["m1", "m2"]), ["m1", "m2", "m3"]);
    assert!(
        !cluster.pki("nodes/m4").exists(),
        "a refused add-master minted certificates"
    );
    cluster.sandbox.ssh("m3", "systemctl start etcd");
    wait_until("m3 healthy again", Duration::from_secs(30), || {
        cluster.all_healthy(&["m1", "m2", "m3"])
    });

    // 3 -> 4 under a linearizable reader: an even count is warned about.
    let reader = Reader::start(&cluster, &["m1", "m2"]);
    let added = cluster.run(&["add-master", "m4"]);
    reader.finish("add-master m4");
    assert_eq!(added.status, 0, "{}\n{}", added.stdout, added.stderr);
    assert!(
        added.stderr.contains("etcd has 4 members: an even number"),
        "{}",
        added.stderr
    );
    assert!(snapshot_named(&added).exists());
    assert_eq!(cluster.members(&["m1", "m2"]), ["m1", "m2", "m3", "m4"]);
    // m4's certificates verify against the unchanged etcd CA and carry its
    // address; nothing else in the store changed.
    assert_eq!(
        std::fs::read(cluster.pki("etcd/ca.crt")).expect("etcd ca"),
        etcd_ca_before
    );
    for kind in ["server", "peer"] {
        let cert = cluster.pki(&format!("nodes/m4/etcd/{kind}.crt"));
        let verify = Command::new("openssl")
            .arg("verify")
            .arg("-CAfile")
            .arg(cluster.pki("etcd/ca.crt"))
            .arg(&cert)
            .output()
            .expect("openssl");
        assert!(verify.status.success(), "{verify:?}");
        let text = Command::new("openssl")
            .args(["x509", "-noout", "-ext", "subjectAltName", "-in"])
            .arg(&cert)
            .output()
            .expect("openssl");
        assert!(
            stdout(&text).contains(&format!("IP Address:{}", cluster.address("m4"))),
            "{}",
            stdout(&text)
        );
    }
    for (path, contents) in &store_before {
        assert_eq!(
            &std::fs::read(path).expect("store file"),
            contents,
            "add-master changed {}",
            path.display()
        );
    }
    // The other masters' apiservers list m4's client URL.
    let m4_url = format!("https://{}:2379", cluster.address("m4"));
    for name in ["m1", "m2", "m3"] {
        let manifest = stdout(
            &cluster
                .sandbox
                .ssh(name, "cat /etc/kubernetes/manifests/kube-apiserver.yaml"),
        );
        assert!(manifest.contains(&m4_url), "{name}: {manifest}");
    }
    cluster.plan_is_empty();
    assert_eq!(cluster.canary(&["m4"]), "alive");

    // 4 -> 5, killed at five points (each re-run resumes and is killed at
    // the next), then finished by the same command, under the reader.
    cluster.set_masters(&["m1", "m2", "m3", "m4", "m5"]);
    let reader = Reader::start(&cluster, &["m1", "m2"]);
    for at in [
        "pki: created",
        "added as a learner",
        "m5  etcd: start etcd.service",
        "promoted to a voting member",
        "m5  lb:",
    ] {
        let lines = cluster.killed_at(&["--accept-new-host-keys", "add-master", "m5"], at);
        eprintln!("add-master m5 killed at {at:?} after {} lines", lines.len());
        let members = cluster.members(&["m1", "m2"]);
        assert!(
            members.len() <= 5,
            "a killed add-master duplicated a member: {members:?}"
        );
    }
    let finished = cluster.run(&["add-master", "m5"]);
    reader.finish("add-master m5 killed at five points and re-run");
    assert_eq!(
        finished.status, 0,
        "{}\n{}",
        finished.stdout, finished.stderr
    );
    assert!(
        finished.stderr.contains("finishing an earlier add-master"),
        "{}",
        finished.stderr
    );
    assert_eq!(
        cluster.members(&["m1", "m2"]),
        ["m1", "m2", "m3", "m4", "m5"]
    );
    assert!(cluster.all_healthy(&["m1", "m2", "m3", "m4", "m5"]));
    cluster.plan_is_empty();
    assert_eq!(cluster.canary(&["m5"]), "alive");

    // remove-master applies a removal from the inventory: a master still
    // listed is refused.
    let refused = cluster.run(&["remove-master", "m5"]);
    assert_eq!(refused.status, 2, "{}", refused.stderr);
    assert_eq!(cluster.members(&["m1", "m2"]).len(), 5);

    // 5 -> 4: a healthy member removed under the reader; its etcd data is
    // moved aside on its host and its certificates archived in the store.
    cluster.set_masters(&["m1", "m2", "m3", "m4"]);
    // Until then, plan names the member the inventory no longer lists.
    let plan = cluster.run(&["plan", "--exit-code"]);
    assert_eq!(plan.status, 3, "{}", plan.stderr);
    assert!(
        plan.stdout.contains(
            "m5 is an etcd member but not a master in the inventory: remove it with `ocfk8s remove-master m5`"
        ),
        "{}",
        plan.stdout
    );
    let reader = Reader::start(&cluster, &["m1", "m2"]);
    let removed = cluster.run(&["remove-master", "m5"]);
    reader.finish("remove-master m5");
    assert_eq!(removed.status, 0, "{}\n{}", removed.stdout, removed.stderr);
    assert!(snapshot_named(&removed).exists());
    assert!(
        removed
            .stderr
            .contains("etcd has 4 members: an even number"),
        "{}",
        removed.stderr
    );
    assert_eq!(cluster.members(&["m1", "m2"]), ["m1", "m2", "m3", "m4"]);
    let aside = stdout(&cluster.sandbox.ssh(
        "m5",
        "ls -d /var/lib/etcd.removed-*/member; test ! -e /var/lib/etcd && echo gone; systemctl is-active etcd kubelet nginx keepalived || true",
    ));
    assert!(
        aside.contains("/member") && aside.contains("gone"),
        "{aside}"
    );
    assert!(
        !aside.contains("\nactive"),
        "a service still runs on m5: {aside}"
    );
    assert!(!cluster.pki("nodes/m5").exists());
    assert!(
        std::fs::read_dir(cluster.pki("archive"))
            .expect("archive")
            .any(|entry| entry
                .expect("entry")
                .file_name()
                .to_string_lossy()
                .starts_with("m5")),
        "m5's material archived"
    );
    let m5_url = format!("https://{}:2379", cluster.address("m5"));
    for name in ["m1", "m2", "m3", "m4"] {
        let manifest = stdout(
            &cluster
                .sandbox
                .ssh(name, "cat /etc/kubernetes/manifests/kube-apiserver.yaml"),
        );
        assert!(!manifest.contains(&m5_url), "{name}: {manifest}");
    }
    cluster.plan_is_empty();
    let again = cluster.run(&["remove-master", "m5"]);
    assert_eq!(again.status, 2, "{}", again.stderr);
    assert!(again.stderr.contains("nothing to do"), "{}", again.stderr);

    // Refused while another member is down; membership unchanged.
    cluster.set_masters(&["m1", "m2", "m3"]);
    cluster.sandbox.ssh("m2", "systemctl stop etcd");
    let refused = cluster.run(&["remove-master", "m4"]);
    assert_eq!(refused.status, 1, "{}", refused.stderr);
    assert!(refused.stderr.contains("m2"), "{}", refused.stderr);
    cluster.set_masters(&["m1", "m2", "m3", "m4", "m5"]);
    let refused = cluster.run(&["add-master", "m5"]);
    assert_eq!(refused.status, 1, "{}", refused.stderr);
    assert!(refused.stderr.contains("m2"), "{}", refused.stderr);
    assert_eq!(cluster.members(&["m1", "m3"]), ["m1", "m2", "m3", "m4"]);
    cluster.sandbox.ssh("m2", "systemctl start etcd");
    wait_until("m2 healthy again", Duration::from_secs(30), || {
        cluster.all_healthy(&["m1", "m2", "m3", "m4"])
    });

    // 4 -> 3.
    cluster.set_masters(&["m1", "m2", "m3"]);
    let removed = cluster.run(&["remove-master", "m4", "--no-snapshot"]);
    assert_eq!(removed.status, 0, "{}\n{}", removed.stdout, removed.stderr);
    assert!(!removed.stdout.contains("snapshot:"), "{}", removed.stdout);
    assert_eq!(cluster.members(&["m1", "m2"]), ["m1", "m2", "m3"]);
    cluster.plan_is_empty();

    // A dead master (m3, every process on its host killed) is refused
    // without --force, removed with it, and replaced by m5: three healthy
    // members again with the data intact.
    cluster.power_off("m3");
    cluster.set_masters(&["m1", "m2"]);
    let refused = cluster.run(&["remove-master", "m3"]);
    assert_eq!(refused.status, 1, "{}", refused.stderr);
    assert!(refused.stderr.contains("--force"), "{}", refused.stderr);
    assert_eq!(cluster.members(&["m1", "m2"]).len(), 3);
    let forced = cluster.run(&["remove-master", "m3", "--force"]);
    assert_eq!(forced.status, 0, "{}\n{}", forced.stdout, forced.stderr);
    assert_eq!(cluster.members(&["m1", "m2"]), ["m1", "m2"]);
    assert!(
        forced.stderr.contains("etcd has 2 members: an even number"),
        "{}",
        forced.stderr
    );
    cluster.plan_is_empty();
    cluster.set_masters(&["m1", "m2", "m5"]);
    let replaced = cluster.run(&["add-master", "m5"]);
    assert_eq!(
        replaced.status, 0,
        "{}\n{}",
        replaced.stdout, replaced.stderr
    );
    assert_eq!(cluster.members(&["m1", "m2"]), ["m1", "m2", "m5"]);
    assert!(cluster.all_healthy(&["m1", "m2", "m5"]));
    assert_eq!(cluster.canary(&["m5"]), "alive");
    cluster.plan_is_empty();
    let status = cluster.run(&["status"]);
    assert_eq!(status.status, 0, "{}\n{}", status.stdout, status.stderr);
}
