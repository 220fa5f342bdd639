//! A sandbox cluster for end-to-end tests of operations: the real binary
//! against sandbox hosts, etcdctl from this machine with the store's
//! apiserver etcd client identity, a linearizable reader, and a way to
//! SIGKILL a run at a line of its output.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::common::{ocfk8s, Run};
use crate::sandbox::Sandbox;

pub struct Cluster {
    pub sandbox: Sandbox,
    pub inventory: PathBuf,
    /// Each master's inventory entry, to take out and put back.
    pub entries: Vec<(String, String)>,
}

impl Cluster {
    /// Sandbox hosts `m1..` and `w1..` with the stand-ins installed, and an
    /// inventory of them all with `[ingress]` (VIP `.100` of the subnet)
    /// and `bin_dir = "/usr/local/bin"`; each master's entry is kept for
    /// [`Cluster::set_masters`].
    pub fn up(subnet: u8, masters: usize, workers: usize) -> Cluster {
        let sandbox = Sandbox::up(subnet, masters, workers);
        let inventory = sandbox.inventory(
            "inventory.toml",
            "",
            "",
            &format!(
                "\n[ingress]\nvip = \"10.213.{subnet}.100\"\ninterface = \"eth0\"\nvirtual_router_id = {subnet}\n\
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
        let entries: Vec<(String, String)> = (1..=masters)
            .map(|index| {
                let name = format!("m{index}");
                let entry = format!(
                    "\n[[master]]\nname = \"{name}\"\naddress = \"{}\"\n",
                    sandbox.host(&name).address
                );
                assert!(text.contains(&entry), "{text}");
                (name, entry)
            })
            .collect();
        let names: Vec<String> = (1..=masters)
            .map(|index| format!("m{index}"))
            .chain((1..=workers).map(|index| format!("w{index}")))
            .collect();
        for name in &names {
            sandbox.install_standins(name);
        }
        Cluster {
            sandbox,
            inventory,
            entries,
        }
    }

    pub fn run(&self, args: &[&str]) -> Run {
        let run: Run = self.command(args).output().expect("run ocfk8s").into();
        assert!(
            !run.stdout.contains("PRIVATE KEY") && !run.stderr.contains("PRIVATE KEY"),
            "key material in the output of {args:?}"
        );
        run
    }

    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = ocfk8s();
        command
            .current_dir(self.sandbox.dir.path())
            .arg("-i")
            .arg(&self.inventory)
            .arg("--no-progress")
            .args(args);
        command
    }

    pub fn pki(&self, file: &str) -> PathBuf {
        self.sandbox.dir.path().join("pki").join(file)
    }

    pub fn address(&self, name: &str) -> String {
        self.sandbox.host(name).address.clone()
    }

    /// The inventory with exactly `masters` (in this order).
    pub fn set_masters(&self, masters: &[&str]) {
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
    pub fn etcdctl(&self, through: &[&str], args: &[&str]) -> std::process::Output {
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

    pub fn endpoints(&self, names: &[&str]) -> String {
        names
            .iter()
            .map(|name| format!("https://{}:2379", self.address(name)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// The member names etcd lists (sorted), and whether each is healthy.
    pub fn members(&self, through: &[&str]) -> Vec<String> {
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

    pub fn all_healthy(&self, names: &[&str]) -> bool {
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

    pub fn canary(&self, through: &[&str]) -> String {
        stdout(&self.etcdctl(
            through,
            &["get", "canary", "--consistency=l", "--print-value-only"],
        ))
        .trim()
        .to_string()
    }

    pub fn plan_is_empty(&self) {
        let plan = self.run(&["plan", "--exit-code"]);
        assert_eq!(plan.status, 0, "{}\n{}", plan.stdout, plan.stderr);
    }

    /// Run ocfk8s with `args` and SIGKILL it as soon as a line of its
    /// error output contains `at`; the lines seen. Panics when the run
    /// ends before `at` appears.
    pub fn killed_at(&self, args: &[&str], at: &str) -> Vec<String> {
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

    /// Run ocfk8s with `args`, calling `act` once when a line of its error
    /// output contains `at`; the whole run.
    pub fn acting_at(&self, args: &[&str], at: &str, act: impl FnOnce()) -> Run {
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ocfk8s");
        let stderr = child.stderr.take().expect("stderr");
        let mut act = Some(act);
        let mut lines = Vec::new();
        for line in BufReader::new(stderr).lines() {
            let line = line.expect("line");
            if line.contains(at) {
                if let Some(act) = act.take() {
                    act();
                }
            }
            lines.push(line);
        }
        let output = child.wait_with_output().expect("wait");
        assert!(
            act.is_none(),
            "{at:?} never appeared:\n{}",
            lines.join("\n")
        );
        let mut run: Run = output.into();
        run.stderr = lines.join("\n");
        crate::common::assert_no_key_material("error output", &run.stderr);
        run
    }

    /// Run ocfk8s with `args` and SIGKILL it after `delay` if it is still
    /// running: whether it was killed, and its exit status otherwise.
    pub fn killed_after(&self, args: &[&str], delay: Duration) -> (bool, Option<i32>) {
        let mut child = self
            .command(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn ocfk8s");
        let started = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return (false, status.code());
            }
            if started.elapsed() >= delay {
                child.kill().expect("kill");
                child.wait().expect("wait");
                return (true, None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stop a host as a power cut would: every process in its namespace.
    pub fn power_off(&self, name: &str) {
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

pub fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

pub fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// What etcd's client prints for a request a stopping etcd 3.4 member
/// answered with its gRPC server already stopped.
const SHUTDOWN_RACE: &str = "transport: missing content-type field";

/// A reader doing a linearizable get every 200 ms with a 2 s timeout
/// through `endpoints`, until stopped: (reads, failures, slowest read).
pub struct Reader {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(u32, Vec<String>, Duration, u32)>,
}

impl Reader {
    /// A reader presenting copies of the store's apiserver-etcd-client
    /// pair taken now: an operation that re-issues the store's pair
    /// replaces the certificate and the key one rename apart, and a
    /// client loading the files between them reads a mismatched pair.
    pub fn start(cluster: &Cluster, through: &[&str]) -> Reader {
        let copies = cluster.sandbox.dir.path().join("reader");
        std::fs::create_dir_all(&copies).expect("reader folder");
        let copy = |file: &str| {
            let to = copies.join(file);
            std::fs::copy(cluster.pki(file), &to).expect("copy a credential");
            to
        };
        Reader::start_with(
            cluster,
            through,
            cluster.pki("etcd/ca.crt"),
            copy("apiserver-etcd-client.crt"),
            copy("apiserver-etcd-client.key"),
        )
    }

    /// A reader trusting `ca` and presenting `cert` and `key` (copies
    /// taken before a rotation changes the store's).
    pub fn start_with(
        cluster: &Cluster,
        through: &[&str],
        ca: PathBuf,
        cert: PathBuf,
        key: PathBuf,
    ) -> Reader {
        let endpoints = cluster.endpoints(through);
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let (mut reads, mut failures, mut slowest) = (0, Vec::new(), Duration::ZERO);
            let mut retried = 0;
            let get = |budget: Duration| {
                Command::new("etcdctl")
                    .env("ETCDCTL_API", "3")
                    .arg(format!("--endpoints={endpoints}"))
                    .arg(format!("--cacert={}", ca.display()))
                    .arg(format!("--cert={}", cert.display()))
                    .arg(format!("--key={}", key.display()))
                    .arg(format!("--command-timeout={}ms", budget.as_millis().max(1)))
                    .args(["get", "canary", "--consistency=l", "--print-value-only"])
                    .output()
                    .expect("etcdctl")
            };
            while !stopped.load(Ordering::SeqCst) {
                let started = Instant::now();
                let mut output = get(Duration::from_secs(2));
                // etcd 3.4 stops a member's gRPC server before its client
                // listener: a request routed to it in those last
                // milliseconds gets an empty HTTP 200, which etcd's client
                // reports (code Unknown) instead of trying another
                // endpoint. Within the same 2 s, the read is asked again
                // once, as a client that retries would; these are counted.
                if !output.status.success()
                    && String::from_utf8_lossy(&output.stderr).contains(SHUTDOWN_RACE)
                    && started.elapsed() < Duration::from_millis(1500)
                {
                    retried += 1;
                    output = get(Duration::from_secs(2).saturating_sub(started.elapsed()));
                }
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
            (reads, failures, slowest, retried)
        });
        std::thread::sleep(Duration::from_millis(600));
        Reader { stop, thread }
    }

    pub fn finish(self, what: &str) {
        std::thread::sleep(Duration::from_millis(600));
        self.stop.store(true, Ordering::SeqCst);
        let (reads, failures, slowest, retried) = self.thread.join().expect("reader");
        eprintln!(
            "{what}: {reads} linearizable reads, {} failed, slowest {slowest:?}, \
             {retried} asked again after etcd's shutdown race",
            failures.len()
        );
        assert!(failures.is_empty(), "{what}: failed reads: {failures:?}");
        assert!(reads >= 5, "{what}: the reader ran through it ({reads})");
    }
}

pub fn snapshot_named(run: &Run) -> PathBuf {
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

/// Every file under `dir`, with its contents.
pub fn walk(dir: &std::path::Path) -> Vec<(PathBuf, Vec<u8>)> {
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
