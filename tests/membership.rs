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

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sandbox::Sandbox;

#[path = "common/mod.rs"]
mod common;

use common::{ocfk8s, Run};

const SUBNET: u8 = 214;
const VIP: &str = "10.213.214.100";

struct Cluster {
    sandbox: Sandbox,
    inventory: PathBuf,
    /// Each master's inventory entry, to take out and put back.
    entries: Vec<(String, String)>,
}

impl Cluster {
    fn run(&self, args: &[&str]) -> Run {
        let run: Run = self.command(args).output().expect("run ocfk8s").into();
        assert!(
            !run.stdout.contains("PRIVATE KEY") && !run.stderr.contains("PRIVATE KEY"),
            "key material in the output of {args:?}"
        );
        run
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = ocfk8s();
        command
            .current_dir(self.sandbox.dir.path())
            .arg("-i")
            .arg(&self.inventory)
            .arg("--no-progress")
            .args(args);
        command
    }

    fn pki(&self, file: &str) -> PathBuf {
        self.sandbox.dir.path().join("pki").join(file)
    }

    fn address(&self, name: &str) -> String {
        self.sandbox.host(name).address.clone()
    }

    /// The inventory with exactly `masters` (in this order).
    fn set_masters(&self, masters: &[&str]) {
        let text = std::fs::read_to_string(&self.inventory).expect("inventory");
        let mut text = text;
        for (_, entry) in &self.entries {
            text = text.replace(entry, "");
        }
        let cut = text.find("\n[ingress]").expect("ingress section");
        let mut grown = text[..cut].to_string();
        for name in masters {
            let (_, entry) = self
                .entries
                .iter()
                .find(|(entry_name, _)| entry_name == name)
                .expect("a master's entry");
            grown.push_str(entry);
        }
        grown.push_str(&text[cut..]);
        std::fs::write(&self.inventory, grown).expect("inventory");
    }

    /// etcdctl from this machine with the apiserver's etcd client
    /// identity, against `through`.
    fn etcdctl(&self, through: &[&str], args: &[&str]) -> std::process::Output {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoints(through)))
            .arg(format!("--cacert={}", self.pki("etcd/ca.crt").display()))
            .arg(format!(
                "--cert={}",
                self.pki("apiserver-etcd-client.crt").display()
            ))
            .arg(format!(
                "--key={}",
                self.pki("apiserver-etcd-client.key").display()
            ))
            .args(["--command-timeout=5s"])
            .args(args)
            .output()
            .expect("etcdctl")
    }

    fn endpoints(&self, names: &[&str]) -> String {
        names
            .iter()
            .map(|name| format!("https://{}:2379", self.address(name)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The member names etcd lists (sorted), and whether each is healthy.
    fn members(&self, through: &[&str]) -> Vec<String> {
        let output = self.etcdctl(through, &["member", "list", "-w", "json"]);
        assert!(output.status.success(), "{output:?}");
        let list: serde_json::Value = serde_json::from_slice(&output.stdout).expect("json");
        let mut names: Vec<String> = list["members"]
            .as_array()
            .expect("members")
            .iter()
            .map(|member| {
                let name = member["name"].as_str().unwrap_or("").to_string();
                if member["isLearner"].as_bool() == Some(true) {
                    format!("{name} (learner)")
                } else {
                    name
                }
            })
            .collect();
        names.sort();
        names
    }

    fn all_healthy(&self, names: &[&str]) -> bool {
        let output = self.etcdctl(names, &["endpoint", "health", "-w", "json"]);
        let health: serde_json::Value =
            serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null);
        health.as_array().is_some_and(|entries| {
            entries.len() == names.len()
                && entries
                    .iter()
                    .all(|entry| entry["health"].as_bool() == Some(true))
        })
    }

    fn canary(&self, through: &[&str]) -> String {
        stdout(&self.etcdctl(
            through,
            &["get", "canary", "--consistency=l", "--print-value-only"],
        ))
        .trim()
        .to_string()
    }

    fn plan_is_empty(&self) {
        let plan = self.run(&["plan", "--exit-code"]);
        assert_eq!(plan.status, 0, "{}\n{}", plan.stdout, plan.stderr);
    }

    /// Run ocfk8s with `args` and SIGKILL it as soon as a line of its
    /// error output contains `at`; the lines seen. Panics when the run
    /// ends before `at` appears.
    fn killed_at(&self, args: &[&str], at: &str) -> Vec<String> {
        let mut child = self
            .command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ocfk8s");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines() {
            let line = line.expect("line");
            let hit = line.contains(at);
            lines.push(line);
            if hit {
                child.kill().expect("kill");
                child.wait().expect("wait");
                return lines;
            }
        }
        let status = child.wait().expect("wait");
        panic!(
            "the run ended ({status}) before {at:?}:\n{}",
            lines.join("\n")
        );
    }

    /// Stop a host as a power cut would: every process in its namespace.
    fn power_off(&self, name: &str) {
        let netns = self.sandbox.netns(name);
        let pids = Command::new("ip")
            .args(["netns", "pids", &netns])
            .output()
            .expect("ip netns pids");
        for pid in stdout(&pids).split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
    }
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// A reader doing a linearizable get every 200 ms with a 2 s timeout
/// through `endpoints`, until stopped: (reads, failures, slowest read).
struct Reader {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(u32, Vec<String>, Duration)>,
}

impl Reader {
    fn start(cluster: &Cluster, through: &[&str]) -> Reader {
        let endpoints = cluster.endpoints(through);
        let ca = cluster.pki("etcd/ca.crt");
        let cert = cluster.pki("apiserver-etcd-client.crt");
        let key = cluster.pki("apiserver-etcd-client.key");
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let (mut reads, mut failures, mut slowest) = (0, Vec::new(), Duration::ZERO);
            while !stopped.load(Ordering::SeqCst) {
                let started = Instant::now();
                let output = Command::new("etcdctl")
                    .env("ETCDCTL_API", "3")
                    .arg(format!("--endpoints={endpoints}"))
                    .arg(format!("--cacert={}", ca.display()))
                    .arg(format!("--cert={}", cert.display()))
                    .arg(format!("--key={}", key.display()))
                    .args([
                        "--command-timeout=2s",
                        "get",
                        "canary",
                        "--consistency=l",
                        "--print-value-only",
                    ])
                    .output()
                    .expect("etcdctl");
                let took = started.elapsed();
                reads += 1;
                slowest = slowest.max(took);
                if !output.status.success()
                    || stdout(&output).trim() != "alive"
                    || took > Duration::from_secs(2)
                {
                    failures.push(format!(
                        "after {took:?}: {}{}",
                        stdout(&output),
                        String::from_utf8_lossy(&output.stderr)
                    ));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            (reads, failures, slowest)
        });
        std::thread::sleep(Duration::from_millis(600));
        Reader { stop, thread }
    }

    fn finish(self, what: &str) {
        std::thread::sleep(Duration::from_millis(600));
        self.stop.store(true, Ordering::SeqCst);
        let (reads, failures, slowest) = self.thread.join().expect("reader");
        eprintln!(
            "{what}: {reads} linearizable reads, {} failed, slowest {slowest:?}",
            failures.len()
        );
        assert!(failures.is_empty(), "{what}: failed reads: {failures:?}");
        assert!(reads >= 5, "{what}: the reader ran through it ({reads})");
    }
}

fn snapshot_named(run: &Run) -> PathBuf {
    let line = run
        .stdout
        .lines()
        .find(|line| line.starts_with("snapshot: etcd revision"))
        .unwrap_or_else(|| panic!("no snapshot named in:\n{}", run.stdout));
    let path = line
        .split(" saved to ")
        .nth(1)
        .and_then(|rest| rest.strip_suffix(" before the change"))
        .expect("a path");
    PathBuf::from(path)
}

#[test]
fn masters_are_added_removed_and_replaced_without_losing_quorum_or_data() {
    let sandbox = Sandbox::up(SUBNET, 5, 1);
    let inventory = sandbox.inventory(
        "inventory.toml",
        "",
        "",
        &format!(
            "\n[ingress]\nvip = \"{VIP}\"\ninterface = \"eth0\"\nvirtual_router_id = 62\n\
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
    let entries: Vec<(String, String)> = ["m1", "m2", "m3", "m4", "m5"]
        .iter()
        .map(|name| {
            let entry = format!(
                "\n[[master]]\nname = \"{name}\"\naddress = \"{}\"\n",
                sandbox.host(name).address
            );
            assert!(text.contains(&entry), "{text}");
            (name.to_string(), entry)
        })
        .collect();
    for name in ["m1", "m2", "m3", "m4", "m5", "w1"] {
        sandbox.install_standins(name);
    }
    let cluster = Cluster {
        sandbox,
        inventory,
        entries,
    };
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

/// Every file under `dir`, with its contents.
fn walk(dir: &std::path::Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(folder) = pending.pop() {
        for entry in std::fs::read_dir(&folder).expect("read_dir") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                pending.push(path);
            } else {
                let contents = std::fs::read(&path).expect("read");
                files.push((path, contents));
            }
        }
    }
    files
}
