//! `ocfk8s etcd snapshot` on a sandbox master running real etcd: the
//! snapshot comes back 0600 into `backups/` beside the PKI store, restores
//! into a fresh single-member etcd with the canary key present, leaves no
//! temporary on the host, and only the newest `--keep` are kept.

mod sandbox;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sandbox::Sandbox;

#[path = "common/mod.rs"]
mod common;

use common::{ocfk8s, Run};

fn run(sandbox: &Sandbox, inventory: &Path, args: &[&str]) -> Run {
    ocfk8s()
        .current_dir(sandbox.dir.path())
        .arg("-i")
        .arg(inventory)
        .arg("--no-progress")
        .args(args)
        .output()
        .expect("run ocfk8s")
        .into()
}

fn etcdctl(sandbox: &Sandbox, args: &[&str]) -> std::process::Output {
    let pki = sandbox.dir.path().join("pki");
    Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!(
            "--endpoints=https://{}:2379",
            sandbox.host("m1").address
        ))
        .arg(format!("--cacert={}", pki.join("etcd/ca.crt").display()))
        .arg(format!(
            "--cert={}",
            pki.join("apiserver-etcd-client.crt").display()
        ))
        .arg(format!(
            "--key={}",
            pki.join("apiserver-etcd-client.key").display()
        ))
        .args(args)
        .output()
        .expect("etcdctl")
}

fn snapshots(dir: &Path) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|entry| entry.path()).collect())
        .unwrap_or_default();
    found.sort();
    found
}

#[test]
fn a_snapshot_comes_back_private_restores_with_the_canary_and_old_ones_are_pruned() {
    let sandbox = Sandbox::up(211, 1, 0);
    let inventory = sandbox.inventory("inventory.toml", "", "", "");
    let text = std::fs::read_to_string(&inventory).expect("inventory");
    std::fs::write(
        &inventory,
        text.replace(
            "method = \"none\"\n",
            "method = \"none\"\nbin_dir = \"/usr/local/bin\"\n",
        ),
    )
    .expect("inventory");
    sandbox.install_standins("m1");
    let generate = run(
        &sandbox,
        &inventory,
        &["--accept-new-host-keys", "pki", "generate"],
    );
    assert_eq!(generate.status, 0, "{}", generate.stderr);
    let bootstrap = run(
        &sandbox,
        &inventory,
        &[
            "bootstrap",
            "--skip-phases",
            "control-plane,nodes,lb,addons",
        ],
    );
    assert_eq!(bootstrap.status, 0, "{}", bootstrap.stderr);
    let put = etcdctl(&sandbox, &["put", "canary", "alive"]);
    assert!(put.status.success(), "{put:?}");

    let taken = run(&sandbox, &inventory, &["etcd", "snapshot"]);
    assert_eq!(taken.status, 0, "{}", taken.stderr);
    assert!(
        taken.stdout.contains("etcd snapshot of revision "),
        "{}",
        taken.stdout
    );
    assert!(taken.stdout.contains(" from m1: "), "{}", taken.stdout);
    let backups = sandbox.dir.path().join("backups");
    let first = snapshots(&backups);
    assert_eq!(first.len(), 1, "{first:?}");
    let name = first[0]
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert!(
        name.starts_with("sandbox211-") && name.contains("-rev") && name.ends_with(".db"),
        "{name}"
    );
    let metadata = std::fs::metadata(&first[0]).expect("metadata");
    assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
    assert_eq!(
        std::fs::metadata(&backups)
            .expect("backups")
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    // Nothing is left on the master.
    let left = String::from_utf8_lossy(
        &sandbox
            .ssh("m1", "ls -d /var/lib/ocfk8s-snapshot.* 2>/dev/null || true")
            .stdout,
    )
    .into_owned();
    assert_eq!(left.trim(), "", "temporary snapshot left on the host");

    // It restores into a fresh single-member etcd holding the canary.
    let scratch = tempfile::tempdir().expect("temp dir");
    let data = scratch.path().join("restored");
    let restore = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args(["snapshot", "restore"])
        .arg(&first[0])
        .arg("--data-dir")
        .arg(&data)
        .args([
            "--name",
            "solo",
            "--initial-cluster",
            "solo=http://127.0.0.1:23890",
            "--initial-advertise-peer-urls",
            "http://127.0.0.1:23890",
        ])
        .output()
        .expect("etcdctl snapshot restore");
    assert!(restore.status.success(), "{restore:?}");
    let mut etcd = Command::new("etcd")
        .arg("--name=solo")
        .arg(format!("--data-dir={}", data.display()))
        .args([
            "--listen-client-urls=http://127.0.0.1:23891",
            "--advertise-client-urls=http://127.0.0.1:23891",
            "--listen-peer-urls=http://127.0.0.1:23890",
            "--initial-advertise-peer-urls=http://127.0.0.1:23890",
            "--initial-cluster=solo=http://127.0.0.1:23890",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("etcd");
    let started = Instant::now();
    let value = loop {
        let get = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .args([
                "--endpoints=http://127.0.0.1:23891",
                "--command-timeout=2s",
                "get",
                "canary",
                "--print-value-only",
            ])
            .output()
            .expect("etcdctl get");
        let value = String::from_utf8_lossy(&get.stdout).trim().to_string();
        if get.status.success() && !value.is_empty() {
            break value;
        }
        if started.elapsed() > Duration::from_secs(20) {
            break format!("no answer: {}", String::from_utf8_lossy(&get.stderr));
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let _ = etcd.kill();
    let _ = etcd.wait();
    assert_eq!(value, "alive");

    // --keep: only the newest of this cluster's snapshots stay.
    for round in 0..2 {
        let put = etcdctl(&sandbox, &["put", "canary", &format!("alive-{round}")]);
        assert!(put.status.success(), "{put:?}");
        std::thread::sleep(Duration::from_millis(1100));
        let taken = run(&sandbox, &inventory, &["etcd", "snapshot", "--keep", "2"]);
        assert_eq!(taken.status, 0, "{}", taken.stderr);
    }
    let kept = snapshots(&backups);
    assert_eq!(kept.len(), 2, "{kept:?}");
    assert!(
        !kept.contains(&first[0]),
        "the oldest was removed: {kept:?}"
    );

    // --out writes exactly there; a folder is refused before any host.
    let out = sandbox.dir.path().join("mine.db");
    let taken = run(
        &sandbox,
        &inventory,
        &["etcd", "snapshot", "--out", "mine.db"],
    );
    assert_eq!(taken.status, 0, "{}", taken.stderr);
    assert_eq!(
        std::fs::metadata(&out).expect("out").permissions().mode() & 0o777,
        0o600
    );
    let refused = run(
        &sandbox,
        &inventory,
        &["etcd", "snapshot", "--out", "backups"],
    );
    assert_eq!(refused.status, 2, "{}", refused.stderr);
}
