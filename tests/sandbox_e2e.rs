//! The SSH engine end to end on ten real sandbox hosts: plan, files-only
//! bootstrap of the rendered files, idempotence, repair, killed runs, host
//! keys, unreachable hosts, the run lock, jump hosts and certs check
//! --remote. The scenarios share one sandbox and run in sequence, each
//! starting from the state the previous one left.

mod common;
mod sandbox;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{ocfk8s, Run};
use sandbox::{Held, Sandbox};

const SKIP_SERVICES: &str = "--skip-phases=etcd,control-plane,nodes,lb,addons";

/// What every host should hold, per host, per path.
type Desired = BTreeMap<String, BTreeMap<String, Held>>;

struct Test {
    sandbox: Sandbox,
    /// The inventory's `cluster_domain`: changing it changes files on every
    /// host (kubelet's config) without touching the PKI store.
    domain: RefCell<String>,
    /// Lines of private keys, which must never appear in any output.
    secret_lines: RefCell<Vec<String>>,
}

impl Test {
    fn inventory(&self, file: &str, ssh_extra: &str, extra: &str) -> PathBuf {
        let cluster = format!("cluster_domain = \"{}\"", self.domain.borrow());
        self.sandbox.inventory(file, &cluster, ssh_extra, extra)
    }

    fn run(&self, inventory: &Path, args: &[&str]) -> Run {
        let started = Instant::now();
        let run: Run = self
            .command(inventory, args)
            .output()
            .expect("run ocfk8s")
            .into();
        eprintln!("{args:?}: {:?}", started.elapsed());
        let secret_lines = self.secret_lines.borrow();
        for line in secret_lines.iter() {
            assert!(
                !run.stdout.contains(line.as_str()),
                "key material in stdout of {args:?}:\n{}",
                run.stdout
            );
            assert!(
                !run.stderr.contains(line.as_str()),
                "key material in stderr of {args:?}:\n{}",
                run.stderr
            );
        }
        assert!(
            !run.stdout.contains("PRIVATE KEY") && !run.stderr.contains("PRIVATE KEY"),
            "{args:?}"
        );
        run
    }

    fn command(&self, inventory: &Path, args: &[&str]) -> std::process::Command {
        let mut command = ocfk8s();
        command
            .current_dir(self.sandbox.dir.path())
            .arg("-i")
            .arg(inventory)
            .arg("--no-progress")
            .args(args);
        command
    }

    /// Switch the inventory to `domain` and render it: the files every host
    /// must hold, read from `ocfk8s render --out`.
    fn desire(&self, domain: &str) -> (PathBuf, Desired) {
        *self.domain.borrow_mut() = domain.to_string();
        let inventory = self.inventory("inventory.toml", "", "");
        let out = self.sandbox.dir.path().join("rendered");
        let render = self.run(
            &inventory,
            &["render", "--out", out.to_str().expect("utf-8")],
        );
        assert_status(&render, 0, "render");
        let mut desired = Desired::new();
        for host in &self.sandbox.hosts {
            let mut files = BTreeMap::new();
            read_tree(&out.join(&host.name), &out.join(&host.name), &mut files);
            assert!(!files.is_empty(), "nothing rendered for {}", host.name);
            for (path, held) in &files {
                if path.ends_with(".key") {
                    let mut secrets = self.secret_lines.borrow_mut();
                    let text = String::from_utf8_lossy(&held.contents);
                    secrets.extend(
                        text.lines()
                            .filter(|line| line.len() > 40)
                            .take(1)
                            .map(str::to_string),
                    );
                }
            }
            desired.insert(host.name.clone(), files);
        }
        (inventory, desired)
    }

    /// Every host holds exactly its desired files, modes and root ownership,
    /// and nothing else (no stray temporaries).
    fn assert_hosts_hold(&self, desired: &Desired) {
        for host in &self.sandbox.hosts {
            let held = self.sandbox.files(&host.name);
            let expected = &desired[&host.name];
            let held_paths: Vec<&String> = held.keys().collect();
            let expected_paths: Vec<&String> = expected.keys().collect();
            assert_eq!(held_paths, expected_paths, "files on {}", host.name);
            for (path, file) in expected {
                assert!(
                    held[path] == *file,
                    "{}:{path} differs from the rendered file",
                    host.name
                );
            }
        }
    }
}

fn read_tree(base: &Path, dir: &Path, files: &mut BTreeMap<String, Held>) {
    for entry in std::fs::read_dir(dir)
        .expect("read rendered tree")
        .flatten()
    {
        let path = entry.path();
        if path.is_dir() {
            read_tree(base, &path, files);
        } else {
            let relative = path.strip_prefix(base).expect("inside");
            let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o7777;
            let contents = std::fs::read(&path).expect("read");
            files.insert(
                format!("/{}", relative.display()),
                Held {
                    contents,
                    mode,
                    uid: 0,
                },
            );
        }
    }
}

fn assert_status(run: &Run, status: i32, what: &str) {
    assert_eq!(
        run.status, status,
        "{what}\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
}

fn mtimes(sandbox: &Sandbox) -> BTreeMap<PathBuf, std::time::SystemTime> {
    let mut times = BTreeMap::new();
    fn walk(dir: &Path, times: &mut BTreeMap<PathBuf, std::time::SystemTime>) {
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let metadata = std::fs::symlink_metadata(&path).expect("stat");
            if metadata.is_dir() {
                walk(&path, times);
            } else {
                times.insert(path, metadata.modified().expect("mtime"));
            }
        }
    }
    walk(&sandbox.state().join("hosts"), &mut times);
    times
}

#[test]
fn files_reach_ten_hosts_exactly_once_atomically_and_only_over_trusted_paths() {
    let sandbox = Sandbox::up(201, 3, 7);
    let test = Test {
        sandbox,
        domain: RefCell::new("cluster.local".into()),
        secret_lines: RefCell::new(Vec::new()),
    };
    let inventory = test.inventory("inventory.toml", "", "");
    assert_status(
        &test.run(&inventory, &["pki", "generate"]),
        0,
        "pki generate",
    );

    // Before the first push, plan lists every file of every host, and the
    // services those files start.
    let (inventory, first) = test.desire("cluster.local");
    let plan = test.run(&inventory, &["plan", "--exit-code"]);
    assert_status(&plan, 3, "plan before the first push");
    // Every file is to add, or to change where the host already has one of
    // its own (its /etc is a copy of this machine's: containerd's package
    // ships a config.toml).
    let expected: usize = first.values().map(BTreeMap::len).sum();
    let to_write = plan
        .stdout
        .lines()
        .filter(|line| {
            line.starts_with("  + ") || line.starts_with("  ~ /etc/containerd/config.toml")
        })
        .count();
    assert_eq!(to_write, expected, "{}", plan.stdout);
    for host in &test.sandbox.hosts {
        assert!(
            plan.stdout.contains(&format!("{}:\n", host.name)),
            "{}",
            plan.stdout
        );
    }
    assert!(
        plan.stdout
            .contains("  + /etc/kubernetes/pki/ca.key (mode 0600, secret: sha256 "),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("  ! start kubelet.service"),
        "{}",
        plan.stdout
    );
    let json = test.run(&inventory, &["plan", "-o", "json"]);
    assert_status(&json, 0, "plan -o json without --exit-code");
    let parsed: serde_json::Value = serde_json::from_str(&json.stdout).expect("plan JSON");
    assert_eq!(parsed["changes_pending"], true);
    assert_eq!(parsed["hosts"].as_array().expect("hosts").len(), 10);
    for host in &test.sandbox.hosts {
        assert!(
            test.sandbox.files(&host.name).is_empty(),
            "plan wrote to {}",
            host.name
        );
    }

    // The files-only bootstrap leaves every host holding exactly its tree.
    let started = Instant::now();
    let bootstrap = test.run(&inventory, &["bootstrap", SKIP_SERVICES]);
    let push_time = started.elapsed();
    assert_status(&bootstrap, 0, "first bootstrap");
    test.assert_hosts_hold(&first);
    for worker in test.sandbox.hosts.iter().filter(|host| !host.master) {
        let files = test.sandbox.files(&worker.name);
        assert!(
            files
                .keys()
                .all(|path| !path.contains("/etcd/") && !path.ends_with("ca.key")),
            "{:?}",
            files.keys()
        );
    }

    // Then plan is empty, and a second run writes nothing.
    let plan = test.run(&inventory, &["plan", SKIP_SERVICES, "--exit-code"]);
    assert_status(&plan, 0, "plan after the push");
    assert!(plan.stdout.contains("Nothing to do"), "{}", plan.stdout);
    let before = mtimes(&test.sandbox);
    let again = test.run(&inventory, &["--timings", "bootstrap", SKIP_SERVICES]);
    assert_status(&again, 0, "second bootstrap");
    assert!(again.stdout.contains("nothing to do"), "{}", again.stdout);
    // One round trip per host: its facts and its state in one script,
    // nothing written, every step of the run timed.
    let step = |name: &str| {
        again
            .stderr
            .lines()
            .find(|line| line.trim_start().starts_with(&format!("{name} ")))
            .map(|line| line.split_whitespace().collect::<Vec<_>>())
    };
    let read = step("host facts+state").expect("facts and state timed");
    assert_eq!(
        read[read.len() - 3],
        "10",
        "one read per host:\n{}",
        again.stderr
    );
    assert!(step("ssh connect").is_some(), "{}", again.stderr);
    assert!(step("pki store check").is_some(), "{}", again.stderr);
    assert!(step("total").is_some(), "{}", again.stderr);
    assert!(
        step("state read").is_none(),
        "a second read:\n{}",
        again.stderr
    );
    assert!(step("write").is_none(), "a write:\n{}", again.stderr);
    assert_eq!(
        mtimes(&test.sandbox),
        before,
        "the second run touched files"
    );

    // A file tampered with on one host is named by plan and repaired.
    test.sandbox.ssh(
        "w3",
        "echo tampered >> /var/lib/kubelet/config.yaml && chmod 0666 /etc/kubernetes/pki/ca.crt \
         && chown 1:1 /etc/kubernetes/kubelet.conf",
    );
    let plan = test.run(&inventory, &["plan", SKIP_SERVICES, "--exit-code"]);
    assert_status(&plan, 3, "plan after tampering");
    assert!(plan.stdout.contains("w3:\n"), "{}", plan.stdout);
    assert!(
        plan.stdout.contains("  ~ /var/lib/kubelet/config.yaml\n"),
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains("-tampered"),
        "diff missing:\n{}",
        plan.stdout
    );
    assert!(
        plan.stdout
            .contains("/etc/kubernetes/pki/ca.crt mode 0666 -> 0644"),
        "{}",
        plan.stdout
    );
    // With the service phases skipped, the plan holds files only; with
    // them, it also owes kubelet its start with the repaired inputs.
    assert!(!plan.stdout.contains("  ! "), "{}", plan.stdout);
    let full = test.run(&inventory, &["plan", "--exit-code"]);
    assert_status(&full, 3, "plan with every phase");
    assert!(
        full.stdout
            .contains("  ! start kubelet.service (inactive; nodes phase)"),
        "{}",
        full.stdout
    );
    assert!(
        plan.stdout
            .contains("/etc/kubernetes/kubelet.conf owner -> root:root"),
        "{}",
        plan.stdout
    );
    assert!(plan.stdout.contains("w2: up to date"), "{}", plan.stdout);
    // --dry-run shows the same plan and changes nothing.
    let tampered = test.sandbox.files("w3");
    let dry_run = test.run(&inventory, &["bootstrap", SKIP_SERVICES, "--dry-run"]);
    assert_status(&dry_run, 0, "bootstrap --dry-run");
    assert!(
        dry_run
            .stdout
            .contains("  ~ /var/lib/kubelet/config.yaml\n"),
        "{}",
        dry_run.stdout
    );
    assert_eq!(
        test.sandbox.files("w3"),
        tampered,
        "--dry-run changed a file"
    );
    let repair = test.run(&inventory, &["bootstrap", SKIP_SERVICES]);
    assert_status(&repair, 0, "repairing bootstrap");
    assert!(
        repair.stdout.contains("on 1 of 10 host(s)"),
        "{}",
        repair.stdout
    );
    test.assert_hosts_hold(&first);

    // A run killed at a random moment leaves every file whole (old or new),
    // and the next run converges and removes its temporaries.
    let mut desired = first;
    for (round, domain) in ["r1.local", "r2.local", "r3.local"].into_iter().enumerate() {
        let old = desired;
        let (inventory, new) = test.desire(domain);
        desired = new;
        let changed: usize = test
            .sandbox
            .hosts
            .iter()
            .map(|host| {
                desired[&host.name]
                    .iter()
                    .filter(|(path, file)| old[&host.name].get(*path) != Some(file))
                    .count()
            })
            .sum();
        assert!(changed >= 10, "a new domain changes files on every host");
        let limit = push_time.as_millis() as u64;
        let delay = Duration::from_millis(rand::random_range(0..=limit));
        let mut child = test
            .command(&inventory, &["bootstrap", SKIP_SERVICES])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("spawn bootstrap");
        std::thread::sleep(delay);
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");
        for host in &test.sandbox.hosts {
            for (path, held) in test.sandbox.files(&host.name) {
                if path.contains(".ocfk8s-tmp-") {
                    continue;
                }
                let whole = old[&host.name].get(&path) == Some(&held)
                    || desired[&host.name].get(&path) == Some(&held);
                assert!(whole, "round {round}: {}:{path} is neither the old nor the new file after a kill at {delay:?}", host.name);
            }
        }
        let converge = test.run(&inventory, &["bootstrap", SKIP_SERVICES]);
        assert_status(&converge, 0, "bootstrap after a killed run");
        test.assert_hosts_hold(&desired);
    }

    // A wrong host key is refused, and nothing reaches that host.
    let known_hosts = std::fs::read_to_string(test.sandbox.known_hosts()).expect("known_hosts");
    let address = |name: &str| test.sandbox.host(name).address.clone();
    let key_of = |name: &str| {
        known_hosts
            .lines()
            .find(|line| line.starts_with(&format!("{} ", address(name))))
            .expect("host key")
            .split_once(' ')
            .expect("key")
            .1
            .to_string()
    };
    let forged = known_hosts.replace(&key_of("m2"), &key_of("w1"));
    std::fs::write(test.sandbox.known_hosts(), forged).expect("forge known_hosts");
    let before = test.sandbox.files("m2");
    let (inventory, next) = test.desire("k1.local");
    let refused = test.run(&inventory, &["bootstrap", SKIP_SERVICES]);
    assert_status(&refused, 1, "bootstrap with a wrong host key");
    assert!(
        refused.stderr.contains("m2: connect:"),
        "{}",
        refused.stderr
    );
    assert!(
        refused.stderr.contains("Host key verification failed"),
        "{}",
        refused.stderr
    );
    assert_eq!(
        test.sandbox.files("m2"),
        before,
        "files reached a host with a wrong key"
    );
    // --accept-new-host-keys trusts unknown keys, never changed ones.
    let accepting = test.run(&inventory, &["--accept-new-host-keys", "plan"]);
    assert_status(
        &accepting,
        1,
        "plan --accept-new-host-keys with a changed key",
    );
    let without_m2 = known_hosts.replace(&format!("{} {}\n", address("m2"), key_of("m2")), "");
    std::fs::write(test.sandbox.known_hosts(), without_m2).expect("drop one key");
    let refused = test.run(&inventory, &["plan"]);
    assert_status(&refused, 1, "plan with an unknown host key");
    assert!(
        refused.stderr.contains("m2: connect:"),
        "{}",
        refused.stderr
    );
    let accepted = test.run(
        &inventory,
        &["--accept-new-host-keys", "bootstrap", SKIP_SERVICES],
    );
    assert_status(&accepted, 0, "bootstrap --accept-new-host-keys");
    test.assert_hosts_hold(&next);
    let recorded = std::fs::read_to_string(test.sandbox.known_hosts()).expect("known_hosts");
    assert!(
        recorded
            .lines()
            .any(|line| line.ends_with(key_of("m2").as_str())),
        "{recorded}"
    );

    // An unreachable host is named; while that run waits on it, a second
    // run is refused at once by the lock.
    let ghost = format!(
        "\n[[worker]]\nname = \"ghost\"\naddress = \"10.213.{}.250\"\n",
        test.sandbox.subnet
    );
    let unreachable = test.inventory("unreachable.toml", "", &ghost);
    let first_run = test
        .command(&unreachable, &["bootstrap", SKIP_SERVICES])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn bootstrap");
    let lock = test.sandbox.dir.path().join("pki/.ocfk8s.lock");
    let holder = format!("pid {} ", first_run.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(&lock)
        .unwrap_or_default()
        .contains(&holder)
    {
        assert!(
            Instant::now() < deadline,
            "the first run never took the lock"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let started = Instant::now();
    let second = test.run(&inventory, &["bootstrap", SKIP_SERVICES]);
    assert_status(&second, 1, "a concurrent bootstrap");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "the second run waited for the lock"
    );
    assert!(
        second.stderr.contains(".ocfk8s.lock") && second.stderr.contains(&holder),
        "{}",
        second.stderr
    );
    let first_run: Run = first_run.wait_with_output().expect("first run").into();
    assert_status(&first_run, 1, "bootstrap with an unreachable host");
    assert!(
        first_run
            .stderr
            .contains("ghost: connect: cannot connect to root@10.213.201.250:22"),
        "{}",
        first_run.stderr
    );

    // Jump host: w7 answers only m1 (its one route), so it can be reached
    // only through m1; every host but m1 itself is reached through m1.
    let m1 = address("m1");
    test.sandbox.ip("w7", &["route", "flush", "dev", "eth0"]);
    test.sandbox.ip("w7", &["route", "add", &m1, "dev", "eth0"]);
    let (inventory, last) = test.desire("j1.local");
    let direct = test.run(&inventory, &["bootstrap", SKIP_SERVICES]);
    assert_status(
        &direct,
        1,
        "bootstrap to a host behind a jump host, without it",
    );
    assert!(direct.stderr.contains("w7: connect:"), "{}", direct.stderr);
    let jump = test.inventory("jump.toml", &format!("jump_host = \"root@{m1}\""), "");
    let through = test.run(&jump, &["bootstrap", SKIP_SERVICES]);
    assert_status(&through, 0, "bootstrap through a jump host");
    test.assert_hosts_hold(&last);
    let plan = test.run(&jump, &["plan", SKIP_SERVICES, "--exit-code"]);
    assert_status(&plan, 0, "plan through a jump host");

    // certs check --remote reads what each host really has.
    let certs = test.run(&jump, &["certs", "check", "--remote"]);
    assert_status(&certs, 0, "certs check --remote");
    let row = |host: &str, path: &str| {
        certs
            .stdout
            .lines()
            .find(|line| line.starts_with(&format!("{host} ")) && line.contains(path))
            .unwrap_or_else(|| panic!("no {host} {path} in:\n{}", certs.stdout))
            .to_string()
    };
    assert!(
        row("m1", "/etc/kubernetes/pki/apiserver.crt").contains("364d"),
        "{}",
        certs.stdout
    );
    assert!(
        row("w7", "/etc/kubernetes/kubelet.conf").contains("system:node:w7"),
        "{}",
        certs.stdout
    );
    let json = test.run(&jump, &["certs", "check", "--remote", "-o", "json"]);
    assert_status(&json, 0, "certs check --remote -o json");
    let rows: serde_json::Value = serde_json::from_str(&json.stdout).expect("certs JSON");
    let etcd = rows
        .as_array()
        .expect("rows")
        .iter()
        .find(|row| row["host"] == "m2" && row["path"] == "/etc/kubernetes/pki/etcd/server.crt")
        .expect("m2's etcd server certificate");
    assert_eq!(etcd["residual_days"], 364);
}
