//! `remove-worker` on sandbox hosts (one master, three workers, real etcd,
//! keepalived and nginx; stand-in kubelet, kube-proxy, kubectl and
//! apiserver): bad input is refused with exit 2 and nothing changed; w2 is
//! drained and its Node deleted, its services stopped and every file
//! ocfk8s placed removed, its store material archived, the masters' nginx
//! forgets it, and nothing else restarts; a second run has nothing to do;
//! an unreachable w3 is refused without `--force` and removed untouched
//! with it; and w1, whose store material is gone, is removed by address.

mod sandbox;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Instant;

use sandbox::Sandbox;

#[path = "common/mod.rs"]
mod common;

use common::{ocfk8s, Run};

const SUBNET: u8 = 212;

/// Paths ocfk8s places on every worker (a sample of the render table).
const PLACED: [&str; 8] = [
    "/etc/kubernetes/kubelet.conf",
    "/etc/kubernetes/pki/ca.crt",
    "/var/lib/kubelet/pki/kubelet.key",
    "/var/lib/kubelet/config.yaml",
    "/etc/systemd/system/kubelet.service",
    "/etc/systemd/system/kube-proxy.service",
    "/var/lib/kube-proxy/kubeconfig.conf",
    "/var/lib/ocfk8s/units/kubelet.service",
];

struct Cluster {
    sandbox: Sandbox,
    inventory: PathBuf,
}

impl Cluster {
    fn run(&self, args: &[&str]) -> Run {
        let started = Instant::now();
        let run: Run = ocfk8s()
            .current_dir(self.sandbox.dir.path())
            .arg("-i")
            .arg(&self.inventory)
            .arg("--no-progress")
            .args(args)
            .output()
            .expect("run ocfk8s")
            .into();
        eprintln!(
            "ocfk8s {} -> exit {} in {:.1?}",
            args.join(" "),
            run.status,
            started.elapsed()
        );
        if std::env::var_os("SHOW_OUTPUT").is_some() {
            eprintln!("--- stdout\n{}--- stderr\n{}---", run.stdout, run.stderr);
        }
        assert!(
            !run.stdout.contains("PRIVATE KEY") && !run.stderr.contains("PRIVATE KEY"),
            "key material in the output of {args:?}"
        );
        run
    }

    fn pki(&self) -> PathBuf {
        self.sandbox.dir.path().join("pki")
    }

    fn address(&self, name: &str) -> String {
        self.sandbox.host(name).address.clone()
    }

    /// Take `name`'s entry out of the inventory.
    fn unlist(&self, name: &str) {
        let text = std::fs::read_to_string(&self.inventory).expect("inventory");
        let entry = format!(
            "\n[[worker]]\nname = \"{name}\"\naddress = \"{}\"\n",
            self.address(name)
        );
        assert!(text.contains(&entry), "{text}");
        std::fs::write(&self.inventory, text.replace(&entry, "\n")).expect("inventory");
    }

    /// The Node objects, through kubectl on m1 with its admin.conf.
    fn nodes(&self) -> String {
        stdout(&self.sandbox.ssh(
            "m1",
            "/usr/local/bin/kubectl --kubeconfig /etc/kubernetes/admin.conf get nodes -o name",
        ))
    }

    /// The main pid of `unit` on `host` (empty when stopped).
    fn pid(&self, host: &str, unit: &str) -> String {
        stdout(&self.sandbox.ssh(
            host,
            &format!(
                "f=$(cat /run/systemctl/{unit}.pidfile 2>/dev/null || echo /run/systemctl/{unit}.pid); cat \"$f\" 2>/dev/null || true"
            ),
        ))
        .trim()
        .to_string()
    }

    fn pids(&self, hosts: &[&str]) -> BTreeMap<String, String> {
        let mut pids = BTreeMap::new();
        for host in hosts {
            let units: &[&str] = if *host == "m1" {
                &[
                    "etcd.service",
                    "kubelet.service",
                    "keepalived.service",
                    "nginx.service",
                ]
            } else {
                &["kubelet.service", "kube-proxy.service"]
            };
            for unit in units {
                let pid = self.pid(host, unit);
                assert!(!pid.is_empty(), "{unit} runs on {host}");
                pids.insert(format!("{host} {unit}"), pid);
            }
        }
        pids
    }

    /// Every file of the store but the lock, with its bytes.
    fn store(&self) -> BTreeMap<String, Vec<u8>> {
        let mut files = BTreeMap::new();
        walk(&self.pki(), &self.pki(), &mut files);
        files.remove(".ocfk8s.lock");
        files
    }

    fn archived(&self, name: &str) -> Vec<PathBuf> {
        let mut found: Vec<PathBuf> = std::fs::read_dir(self.pki().join("archive"))
            .map(|entries| {
                entries
                    .flatten()
                    .map(|entry| entry.path())
                    .filter(|path| {
                        path.file_name()
                            .and_then(|file| file.to_str())
                            .is_some_and(|file| file.starts_with(&format!("{name}-")))
                    })
                    .collect()
            })
            .unwrap_or_default();
        found.sort();
        found
    }

    /// Which of [`PLACED`] `host` still holds.
    fn placed_left(&self, host: &str) -> Vec<String> {
        PLACED
            .iter()
            .filter(|path| {
                self.sandbox
                    .ssh_output(host, &format!("test -e {path}"))
                    .status
                    .success()
            })
            .map(|path| path.to_string())
            .collect()
    }
}

fn walk(base: &Path, dir: &Path, files: &mut BTreeMap<String, Vec<u8>>) {
    for entry in std::fs::read_dir(dir).expect("read_dir").flatten() {
        let path = entry.path();
        if path.is_dir() {
            walk(base, &path, files);
        } else {
            let relative = path.strip_prefix(base).expect("inside");
            files.insert(
                relative.display().to_string(),
                std::fs::read(&path).expect("read"),
            );
        }
    }
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn refused(cluster: &Cluster, args: &[&str], expected: &[&str]) {
    let run = cluster.run(args);
    assert_eq!(run.status, 2, "{args:?}\n{}\n{}", run.stdout, run.stderr);
    for text in expected {
        assert!(
            run.stderr.contains(text),
            "{args:?}: {text:?} missing:\n{}",
            run.stderr
        );
    }
}

#[test]
fn remove_worker_drains_cleans_archives_and_touches_nothing_else() {
    let started = Instant::now();
    let sandbox = Sandbox::up(SUBNET, 1, 3);
    let inventory = sandbox.inventory(
        "inventory.toml",
        "",
        "",
        &format!(
            "\n[ingress]\nvip = \"10.213.{SUBNET}.100\"\ninterface = \"eth0\"\nvirtual_router_id = 62\n\
             node_port = 31234\nserver_names = [\"*.sandbox.test\"]\n"
        ),
    );
    let text = std::fs::read_to_string(&inventory).expect("inventory");
    std::fs::write(
        &inventory,
        text.replace(
            "method = \"none\"\n",
            "method = \"none\"\nbin_dir = \"/usr/local/bin\"\n",
        ),
    )
    .expect("inventory");
    for name in ["m1", "w1", "w2", "w3"] {
        sandbox.install_standins(name);
    }
    let cluster = Cluster { sandbox, inventory };
    let generate = cluster.run(&["--accept-new-host-keys", "pki", "generate"]);
    assert_eq!(generate.status, 0, "{}", generate.stderr);
    let bootstrap = cluster.run(&["bootstrap"]);
    assert_eq!(
        bootstrap.status, 0,
        "{}\n{}",
        bootstrap.stdout, bootstrap.stderr
    );
    eprintln!("sandbox up and bootstrapped in {:.1?}", started.elapsed());
    for name in ["w1", "w2", "w3"] {
        assert!(
            cluster.nodes().contains(&format!("node/{name}")),
            "{}",
            cluster.nodes()
        );
    }

    // Bad input: exit 2, and nothing changed anywhere.
    let store_before = cluster.store();
    let w2_before = cluster.sandbox.files("w2");
    let pids_before = cluster.pids(&["m1", "w1", "w2", "w3"]);
    refused(
        &cluster,
        &["remove-worker", "w2"],
        &[
            "w2 is still listed under [[worker]] in",
            "remove w2's entry",
        ],
    );
    refused(
        &cluster,
        &["remove-worker", "w1;touch /tmp/x"],
        &["is not a DNS label"],
    );
    refused(
        &cluster,
        &["remove-worker", "w9", "--address", "127.0.0.1"],
        &["loopback"],
    );
    refused(
        &cluster,
        &["remove-worker", "w9", "--address", "nonsense"],
        &["is not an IP address"],
    );
    let w1 = cluster.address("w1");
    refused(
        &cluster,
        &["remove-worker", "w9", "--address", &w1],
        &["is the address of w1", "still lists"],
    );
    refused(
        &cluster,
        &["remove-worker", "w9"],
        &["w9 is not part of the cluster; nothing to do", "--address"],
    );
    assert_eq!(cluster.store(), store_before, "a refusal changed the store");
    assert_eq!(
        cluster.sandbox.files("w2"),
        w2_before,
        "a refusal changed w2"
    );
    assert_eq!(cluster.pids(&["m1", "w1", "w2", "w3"]), pids_before);
    assert!(!cluster.sandbox.dir.path().join("backups").exists());

    // w2 leaves the inventory, then the cluster.
    let w2 = cluster.address("w2");
    let site = "cat /etc/nginx/sites-enabled/ocfk8s-ingress.conf";
    assert!(stdout(&cluster.sandbox.ssh("m1", site)).contains(&format!("{w2}:31234")));
    let w2_kubelet = pids_before["w2 kubelet.service"].clone();
    cluster.unlist("w2");
    let removed = cluster.run(&["remove-worker", "w2"]);
    assert_eq!(removed.status, 0, "{}\n{}", removed.stdout, removed.stderr);
    let out = &removed.stdout;
    assert!(out.contains("snapshot: etcd revision "), "{out}");
    assert!(out.contains("saved to "), "{out}");
    assert!(
        out.contains("node: Node w2 cordoned, drained, deleted (through m1)"),
        "{out}"
    );
    assert!(
        out.contains("w2: stopped kubelet.service, kube-proxy.service"),
        "{out}"
    );
    assert!(out.contains("pki: w2's material archived to "), "{out}");
    assert!(
        out.ends_with("remove-worker: w2 removed from the cluster.\n"),
        "{out}"
    );
    let snapshots: Vec<_> = std::fs::read_dir(cluster.sandbox.dir.path().join("backups"))
        .expect("backups")
        .flatten()
        .collect();
    assert_eq!(snapshots.len(), 1);
    assert!(
        out.contains(&snapshots[0].path().display().to_string()),
        "{out}"
    );
    // Drained with kubectl's flags on m1.
    let log = stdout(
        &cluster
            .sandbox
            .ssh("m1", "cat /var/log/standins/kubectl.log"),
    );
    assert!(
        log.contains(
            r#""drain", "w2", "--ignore-daemonsets", "--delete-emptydir-data", "--force""#
        ),
        "{log}"
    );
    // The Node is gone (and stays gone: its kubelet is stopped).
    let nodes = cluster.nodes();
    assert!(
        !nodes.contains("node/w2") && nodes.contains("node/w1"),
        "{nodes}"
    );
    for unit in ["kubelet", "kube-proxy"] {
        assert_eq!(
            stdout(
                &cluster
                    .sandbox
                    .ssh("w2", &format!("systemctl is-active {unit} || true"))
            )
            .trim(),
            "inactive"
        );
    }
    assert_eq!(
        stdout(&cluster.sandbox.ssh(
            "w2",
            &format!("kill -0 {w2_kubelet} 2>/dev/null && echo alive || echo gone")
        ))
        .trim(),
        "gone"
    );
    assert_eq!(cluster.placed_left("w2"), Vec::<String>::new());
    let left: Vec<String> = cluster
        .sandbox
        .files("w2")
        .into_keys()
        .filter(|path| {
            path.starts_with("/etc/kubernetes/")
                || path.starts_with("/var/lib/kube")
                || path.starts_with("/var/lib/ocfk8s/")
                || path.starts_with("/etc/systemd/system/kube")
        })
        .collect();
    assert_eq!(left, Vec::<String>::new(), "files of ocfk8s's left on w2");
    // The store material is archived, not deleted.
    assert!(!cluster.pki().join("nodes/w2").exists());
    let archived = cluster.archived("w2");
    assert_eq!(archived.len(), 1, "{archived:?}");
    assert!(archived[0].join("kubelet-server.crt").is_file());
    assert!(archived[0].join("kubelet.key").is_file());
    let mode = std::fs::metadata(&archived[0])
        .expect("archive")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
    // The masters' nginx forgot w2 with a reload; nothing else restarted.
    let after = stdout(&cluster.sandbox.ssh("m1", site));
    assert!(!after.contains(&format!("{w2}:31234")), "{after}");
    assert!(after.contains(&format!("{w1}:31234")), "{after}");
    let affinity = stdout(&cluster.sandbox.ssh(
        "m1",
        "/usr/local/bin/kubectl --kubeconfig /etc/kubernetes/admin.conf -n ingress-nginx \
         get daemonset ingress-nginx-controller -o json",
    ));
    assert!(
        affinity.contains("\"w1\"") && !affinity.contains("\"w2\""),
        "{affinity}"
    );
    let mut expected = pids_before.clone();
    expected.retain(|key, _| !key.starts_with("w2 "));
    assert_eq!(
        cluster.pids(&["m1", "w1", "w3"]),
        expected,
        "a service restarted"
    );
    let plan = cluster.run(&["plan", "--exit-code"]);
    assert_eq!(plan.status, 0, "{}\n{}", plan.stdout, plan.stderr);

    // Again: nothing to do, whether or not the address is given.
    refused(
        &cluster,
        &["remove-worker", "w2"],
        &[
            "w2 is not part of the cluster; nothing to do",
            "archive/w2-",
        ],
    );
    refused(
        &cluster,
        &["remove-worker", "w2", "--address", &w2],
        &[
            "w2 is not part of the cluster; nothing to do",
            "no Node object",
        ],
    );
    assert_eq!(cluster.archived("w2").len(), 1);

    // w3 is dead (its network is down): refused without --force, nothing
    // changed; with --force its Node and material go, the host untouched.
    cluster.unlist("w3");
    cluster.sandbox.ip("w3", &["link", "set", "eth0", "down"]);
    let w3_files = cluster.sandbox.files("w3");
    let store_before = cluster.store();
    let unreachable = cluster.run(&["remove-worker", "w3", "--no-snapshot"]);
    assert_eq!(unreachable.status, 1, "{}", unreachable.stderr);
    assert!(
        unreachable.stderr.contains("w3 (") && unreachable.stderr.contains("is unreachable"),
        "{}",
        unreachable.stderr
    );
    assert!(
        unreachable
            .stderr
            .contains("`ocfk8s remove-worker w3 --force`"),
        "{}",
        unreachable.stderr
    );
    assert_eq!(cluster.store(), store_before);
    assert!(cluster.nodes().contains("node/w3"));
    let forced = cluster.run(&["remove-worker", "w3", "--force"]);
    assert_eq!(forced.status, 0, "{}\n{}", forced.stdout, forced.stderr);
    assert!(
        forced
            .stdout
            .contains("node: Node w3 cordoned, deleted (through m1)"),
        "{}",
        forced.stdout
    );
    assert!(
        forced.stdout.contains("w3: --force: nothing attempted"),
        "{}",
        forced.stdout
    );
    assert!(!cluster.nodes().contains("node/w3"));
    assert_eq!(cluster.archived("w3").len(), 1);
    assert!(!cluster.pki().join("nodes/w3").exists());
    assert_eq!(cluster.sandbox.files("w3"), w3_files, "--force touched w3");

    // w1's store material is lost: refused until its address is given.
    cluster.unlist("w1");
    std::fs::remove_dir_all(cluster.pki().join("nodes/w1")).expect("remove w1's material");
    refused(
        &cluster,
        &["remove-worker", "w1"],
        &["w1 is not part of the cluster", "--address"],
    );
    // A failure half way (a folder where a file of ocfk8s's was) stops
    // the run naming the host and the step; the same command, re-run once
    // the folder is gone, finishes the job.
    cluster.sandbox.ssh(
        "w1",
        "rm -f /etc/crictl.yaml && mkdir -p /etc/crictl.yaml/held && touch /etc/crictl.yaml/held/file",
    );
    let args = ["remove-worker", "w1", "--address", &w1, "--no-snapshot"];
    let failed = cluster.run(&args);
    assert_eq!(failed.status, 1, "{}\n{}", failed.stdout, failed.stderr);
    assert!(
        failed.stderr.contains("w1: cleaning up: ")
            && failed.stderr.contains("cannot remove /etc/crictl.yaml"),
        "{}",
        failed.stderr
    );
    assert!(!cluster.nodes().contains("node/w1"));
    cluster.sandbox.ssh("w1", "rm -rf /etc/crictl.yaml");
    let by_address = cluster.run(&args);
    assert_eq!(
        by_address.status, 0,
        "{}\n{}",
        by_address.stdout, by_address.stderr
    );
    assert!(
        !by_address.stdout.contains("snapshot:"),
        "{}",
        by_address.stdout
    );
    assert!(
        by_address
            .stdout
            .contains("node: no Node object w1: nothing to delete"),
        "{}",
        by_address.stdout
    );
    assert!(
        by_address.stdout.contains("w1: removed ") && !by_address.stdout.contains("w1: stopped"),
        "{}",
        by_address.stdout
    );
    assert!(!cluster.nodes().contains("node/w1"));
    assert_eq!(cluster.placed_left("w1"), Vec::<String>::new());
    assert!(cluster.archived("w1").is_empty());
    let plan = cluster.run(&["plan", "--exit-code"]);
    assert_eq!(plan.status, 0, "{}\n{}", plan.stdout, plan.stderr);
    // The master ran through all of it without a restart.
    let mut expected = pids_before;
    expected.retain(|key, _| key.starts_with("m1 "));
    assert_eq!(
        cluster.pids(&["m1"]),
        expected,
        "a master service restarted"
    );
    eprintln!("whole test: {:.1?}", started.elapsed());
}
