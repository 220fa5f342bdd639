//! `bootstrap` runs the cluster's services on sandbox hosts with real etcd,
//! keepalived and nginx: a new etcd cluster that demands certificates from
//! its CA, exactly one master holding the VIP with HTTPS through it reaching
//! a worker's NodePort, nothing restarted by a second run, a stopped
//! keepalived started again, and a changed etcd input rolled out one member
//! at a time while a reader doing linearizable gets sees no failure.
//!
//! kube-apiserver, kubelet and kube-proxy are the sandbox's stand-ins
//! (`sandbox/standins`), installed into `bin_dir` by the test: they use the
//! rendered manifests, certificates and kubeconfigs as the real ones would.

mod sandbox;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sandbox::Sandbox;

#[path = "common/mod.rs"]
mod common;

use common::{ocfk8s, Run};

const SUBNET: u8 = 204;

/// A stand-in ingress on a worker's NodePort: answers with the Host and
/// X-Forwarded-Proto headers it received.
const ECHO: &str = r#"
import http.server as h
class E(h.BaseHTTPRequestHandler):
    def do_GET(s):
        b = ("host=%s xfp=%s" % (s.headers["Host"], s.headers["X-Forwarded-Proto"])).encode()
        s.send_response(200)
        s.end_headers()
        s.wfile.write(b)
h.HTTPServer(("0.0.0.0", 31234), E).serve_forever()
"#;

struct Cluster {
    sandbox: Sandbox,
    inventory: PathBuf,
}

impl Cluster {
    fn run(&self, args: &[&str]) -> Run {
        let run: Run = ocfk8s()
            .current_dir(self.sandbox.dir.path())
            .arg("-i")
            .arg(&self.inventory)
            .arg("--no-progress")
            .args(args)
            .output()
            .expect("run ocfk8s")
            .into();
        assert!(
            !run.stdout.contains("PRIVATE KEY") && !run.stderr.contains("PRIVATE KEY"),
            "key material in the output of {args:?}"
        );
        run
    }

    fn pki(&self, file: &str) -> PathBuf {
        self.sandbox.dir.path().join("pki").join(file)
    }

    fn address(&self, name: &str) -> String {
        self.sandbox.host(name).address.clone()
    }

    fn endpoints(&self) -> String {
        ["m1", "m2", "m3"]
            .iter()
            .map(|name| format!("https://{}:2379", self.address(name)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// etcdctl from this machine with the apiserver's etcd client identity.
    fn etcdctl(&self, args: &[&str]) -> std::process::Output {
        Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoints()))
            .arg(format!("--cacert={}", self.pki("etcd/ca.crt").display()))
            .arg(format!(
                "--cert={}",
                self.pki("apiserver-etcd-client.crt").display()
            ))
            .arg(format!(
                "--key={}",
                self.pki("apiserver-etcd-client.key").display()
            ))
            .args(args)
            .output()
            .expect("etcdctl")
    }

    /// The main pids of a unit on every master, from the systemctl
    /// stand-in's records (each host has its own /run).
    fn pids(&self, unit: &str) -> Vec<String> {
        ["m1", "m2", "m3"]
            .iter()
            .map(|name| {
                stdout(&self.sandbox.ssh(
                    name,
                    &format!(
                        "f=$(cat /run/systemctl/{unit}.pidfile 2>/dev/null || echo /run/systemctl/{unit}.pid); cat \"$f\""
                    ),
                ))
                .trim()
                .to_string()
            })
            .collect()
    }

    /// The masters holding the VIP.
    fn vip_holders(&self) -> Vec<String> {
        let vip = format!("10.213.{SUBNET}.100");
        ["m1", "m2", "m3"]
            .iter()
            .filter(|name| {
                stdout(&self.sandbox.ssh(name, "ip -o -4 addr show dev eth0"))
                    .contains(&format!(" {vip}/"))
            })
            .map(|name| name.to_string())
            .collect()
    }
}

/// Run ocfk8s in a tmux pane, as a person at a terminal would, and return
/// the screen once it has exited.
fn at_terminal(cluster: &Cluster, args: &[&str]) -> String {
    let session = format!("ocfk8s-test-{}", std::process::id());
    let command = format!(
        "cd {} && {} -i {} {}; echo EXIT=$?; sleep 600",
        cluster.sandbox.dir.path().display(),
        assert_cmd::cargo::cargo_bin("ocfk8s").display(),
        cluster.inventory.display(),
        args.join(" ")
    );
    let status = Command::new("tmux")
        .args([
            "new-session",
            "-d",
            "-s",
            &session,
            "-x",
            "160",
            "-y",
            "60",
            &command,
        ])
        .status()
        .expect("tmux");
    assert!(status.success());
    let capture = || {
        stdout(
            &Command::new("tmux")
                .args(["capture-pane", "-p", "-t", &session])
                .output()
                .expect("tmux capture-pane"),
        )
    };
    let mut screen = String::new();
    wait_until("the run at the terminal", Duration::from_secs(120), || {
        screen = capture();
        screen.contains("EXIT=")
    });
    let _ = Command::new("tmux")
        .args(["kill-session", "-t", &session])
        .status();
    screen
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A reader doing a linearizable get every 200 ms with a 2 s timeout, until
/// stopped: (reads, failures, slowest read).
fn reader(
    cluster: &Cluster,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(u32, Vec<String>, Duration)> {
    let endpoints = cluster.endpoints();
    let ca = cluster.pki("etcd/ca.crt");
    let cert = cluster.pki("apiserver-etcd-client.crt");
    let key = cluster.pki("apiserver-etcd-client.key");
    std::thread::spawn(move || {
        let (mut reads, mut failures, mut slowest) = (0, Vec::new(), Duration::ZERO);
        while !stop.load(Ordering::SeqCst) {
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
    })
}

fn curl_etcd(
    cluster: &Cluster,
    port: u16,
    identity: Option<(&Path, &Path)>,
) -> std::process::Output {
    let mut command = Command::new("curl");
    command
        .args(["-s", "--max-time", "3", "--cacert"])
        .arg(cluster.pki("etcd/ca.crt"));
    if let Some((cert, key)) = identity {
        command.arg("--cert").arg(cert).arg("--key").arg(key);
    }
    command
        .arg(format!("https://{}:{port}/health", cluster.address("m2")))
        .output()
        .expect("curl")
}

#[test]
fn bootstrap_runs_etcd_and_the_front_door_and_rolls_changes_without_failed_reads() {
    // w2 exists but joins the inventory only at the end, with add-worker.
    let sandbox = Sandbox::up(SUBNET, 3, 2);
    let inventory = sandbox.inventory(
        "inventory.toml",
        "",
        "",
        &format!(
            "\n[ingress]\nvip = \"10.213.{SUBNET}.100\"\ninterface = \"eth0\"\nvirtual_router_id = 61\n\
             node_port = 31234\nserver_names = [\"*.sandbox.test\"]\n"
        ),
    );
    let with_w2 = std::fs::read_to_string(&inventory)
        .expect("inventory")
        .replace(
            "method = \"none\"\n",
            "method = \"none\"\nbin_dir = \"/usr/local/bin\"\n",
        );
    let w2 = format!(
        "\n[[worker]]\nname = \"w2\"\naddress = \"{}\"\n",
        sandbox.host("w2").address
    );
    assert!(with_w2.contains(&w2), "{with_w2}");
    std::fs::write(&inventory, with_w2.replace(&w2, "\n")).expect("inventory");
    for name in ["m1", "m2", "m3", "w1", "w2"] {
        sandbox.install_standins(name);
    }
    let cluster = Cluster { sandbox, inventory };
    let run = cluster.run(&["--accept-new-host-keys", "pki", "generate"]);
    assert_eq!(run.status, 0, "{}", run.stderr);

    let first = cluster.run(&["--timings", "bootstrap"]);
    assert_eq!(first.status, 0, "{}\n{}", first.stdout, first.stderr);
    assert!(
        first
            .stderr
            .contains("etcd: starting a new cluster of 3 member(s)"),
        "{}",
        first.stderr
    );
    // `--timings` breaks the first bootstrap into its steps, services too.
    for step in [
        "ssh connect",
        "host facts+state",
        "write",
        "service changes",
        "health gates",
        "total",
    ] {
        assert!(
            first
                .stderr
                .lines()
                .any(|line| line.trim_start().starts_with(&format!("{step} "))),
            "no {step} in the timings:\n{}",
            first.stderr
        );
    }

    // Once formed, the masters' etcd settings describe the running cluster
    // (etcd reads them only on a first start; a later plan keeps them).
    let env = stdout(
        &cluster
            .sandbox
            .ssh("m2", "cat /etc/kubernetes/etcd-initial-cluster.env"),
    );
    assert!(env.contains("ETCD_INITIAL_CLUSTER_STATE=existing"), "{env}");
    assert!(env.contains("m1=https://"), "{env}");

    // etcd: three members, clients and peers refused without a certificate
    // from its CA.
    let members = cluster.etcdctl(&["member", "list"]);
    assert!(members.status.success(), "{members:?}");
    assert_eq!(stdout(&members).lines().count(), 3, "{}", stdout(&members));
    let put = cluster.etcdctl(&["put", "canary", "alive"]);
    assert!(put.status.success(), "{put:?}");
    let client = (
        cluster.pki("apiserver-etcd-client.crt"),
        cluster.pki("apiserver-etcd-client.key"),
    );
    let with_cert = curl_etcd(&cluster, 2379, Some((&client.0, &client.1)));
    assert!(
        stdout(&with_cert).contains("\"health\":\"true\""),
        "{with_cert:?}"
    );
    assert!(
        !curl_etcd(&cluster, 2379, None).status.success(),
        "etcd served a client without a certificate"
    );
    assert!(
        !curl_etcd(&cluster, 2380, None).status.success(),
        "etcd served a peer without a certificate"
    );
    // A certificate from another CA (the cluster's Kubernetes CA) is refused.
    let foreign = (
        cluster.pki("nodes/m1/apiserver-kubelet-client.crt"),
        cluster.pki("nodes/m1/apiserver-kubelet-client.key"),
    );
    let refused = curl_etcd(&cluster, 2379, Some((&foreign.0, &foreign.1)));
    assert!(
        !stdout(&refused).contains("\"health\":\"true\""),
        "{refused:?}"
    );

    // The VIP on exactly one master; HTTPS through it, verified against the
    // ingress CA, reaches a worker's NodePort with the original Host.
    assert_eq!(cluster.vip_holders().len(), 1);
    cluster.sandbox.ssh(
        "w1",
        &format!("setsid python3 -c '{ECHO}' > /dev/null 2>&1 < /dev/null &"),
    );
    let vip = format!("10.213.{SUBNET}.100");
    let mut answer = String::new();
    wait_until("HTTPS through the VIP", Duration::from_secs(20), || {
        let output = Command::new("curl")
            .args(["-s", "--max-time", "3", "--cacert"])
            .arg(cluster.pki("ingress-ca.crt"))
            .args([
                "--resolve",
                &format!("app.sandbox.test:443:{vip}"),
                "https://app.sandbox.test/",
            ])
            .output()
            .expect("curl");
        answer = stdout(&output);
        answer.contains("host=app.sandbox.test")
    });
    assert!(answer.contains("xfp=https"), "{answer}");

    // A second run changes nothing and restarts nothing.
    let every_pid = || {
        [
            "etcd.service",
            "nginx.service",
            "keepalived.service",
            "containerd.service",
            "kubelet.service",
            "kube-proxy.service",
        ]
        .map(|unit| cluster.pids(unit))
    };
    let all_pids = every_pid();
    let second = cluster.run(&["bootstrap"]);
    assert_eq!(second.status, 0, "{}", second.stderr);
    assert!(second.stdout.contains("nothing to do"), "{}", second.stdout);
    assert!(
        second
            .stderr
            .contains("etcd: every member runs with its current inputs"),
        "{}",
        second.stderr
    );
    assert_eq!(
        every_pid(),
        all_pids,
        "a run with nothing changed restarted a service"
    );

    // At a terminal (tmux), the run shows every phase and host as lines,
    // with no spinner left behind.
    let screen = at_terminal(&cluster, &["bootstrap"]);
    for expected in [
        "pki: the store ",
        "files: nothing to do: every host already holds its files.",
        "etcd: every member runs with its current inputs",
        "m2  lb: keepalived and nginx running",
        "holds the VIP",
        "EXIT=0",
    ] {
        assert!(
            screen.contains(expected),
            "{expected:?} missing from the screen:\n{screen}"
        );
    }
    assert!(
        !screen
            .chars()
            .any(|c| ('\u{2800}'..='\u{28ff}').contains(&c)),
        "a spinner was left on the screen:\n{screen}"
    );

    // Stopping keepalived on the holder moves the VIP; a re-run starts it.
    let holder = cluster.vip_holders().remove(0);
    cluster.sandbox.ssh(&holder, "systemctl stop keepalived");
    wait_until("the VIP moving", Duration::from_secs(20), || {
        let holders = cluster.vip_holders();
        holders.len() == 1 && holders[0] != holder
    });
    let repair = cluster.run(&["bootstrap"]);
    assert_eq!(repair.status, 0, "{}", repair.stderr);
    assert!(
        repair
            .stderr
            .contains(&format!("{holder}  lb: start keepalived.service")),
        "{}",
        repair.stderr
    );
    assert_eq!(
        stdout(
            &cluster
                .sandbox
                .ssh(&holder, "systemctl is-active keepalived || true")
        )
        .trim(),
        "active"
    );
    assert_eq!(cluster.vip_holders().len(), 1);

    // New etcd server certificates for every member: restarted one at a
    // time, the leader last, while a reader sees no failure.
    for name in ["m1", "m2", "m3"] {
        for file in ["server.crt", "server.key"] {
            std::fs::remove_file(cluster.pki(&format!("nodes/{name}/etcd/{file}")))
                .expect("remove");
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let reading = reader(&cluster, Arc::clone(&stop));
    std::thread::sleep(Duration::from_millis(600));
    let rolled = cluster.run(&["bootstrap"]);
    std::thread::sleep(Duration::from_millis(600));
    stop.store(true, Ordering::SeqCst);
    let (reads, failures, slowest) = reading.join().expect("reader");
    assert_eq!(rolled.status, 0, "{}", rolled.stderr);
    eprintln!(
        "rolling etcd restart: {reads} linearizable reads, {} failed, slowest {slowest:?}",
        failures.len()
    );
    assert!(
        failures.is_empty(),
        "failed reads during the rolling restart: {failures:?}"
    );
    assert!(
        reads >= 5,
        "the reader ran through the restart ({reads} reads)"
    );
    let restarted: Vec<&str> = rolled
        .stderr
        .lines()
        .filter(|line| line.ends_with("etcd: restart etcd.service"))
        .collect();
    assert_eq!(restarted.len(), 3, "{}", rolled.stderr);
    let new_pids = cluster.pids("etcd.service");
    for (old, new) in all_pids[0].iter().zip(&new_pids) {
        assert_ne!(old, new, "every member restarted");
    }
    let plan = cluster.run(&["--timings", "plan", "--exit-code"]);
    assert_eq!(plan.status, 0, "{}", plan.stdout);
    // A running cluster's plan: asking etcd for its members on a master
    // keeps that master's state, read with its facts; one read per host.
    assert!(
        !plan
            .stderr
            .lines()
            .any(|line| line.trim_start().starts_with("state read ")),
        "a host read twice:\n{}",
        plan.stderr
    );
    assert!(plan.stderr.contains("etcd members"), "{}", plan.stderr);

    // status: healthy now; a stopped member is named and the exit is 1; a
    // re-run starts it again and status is healthy again.
    let status = cluster.run(&["status"]);
    assert_eq!(status.status, 0, "{}\n{}", status.stdout, status.stderr);
    assert!(status.stdout.ends_with("healthy\n"), "{}", status.stdout);
    cluster.sandbox.ssh("m2", "systemctl stop etcd");
    let status = cluster.run(&["status"]);
    assert_eq!(status.status, 1, "{}", status.stdout);
    assert!(
        status.stderr.contains("etcd: member m2 is not healthy"),
        "{}",
        status.stderr
    );
    assert!(
        status.stderr.contains("m2: etcd.service is inactive"),
        "{}",
        status.stderr
    );
    let repair = cluster.run(&["bootstrap"]);
    assert_eq!(repair.status, 0, "{}", repair.stderr);
    assert!(
        repair.stderr.contains("m2  etcd: start etcd.service"),
        "{}",
        repair.stderr
    );
    let status = cluster.run(&["status"]);
    assert_eq!(status.status, 0, "{}\n{}", status.stdout, status.stderr);

    // A master listed in the inventory that is not an etcd member (here w1,
    // moved under [[master]]) is refused before anything changes, with a
    // pointer to add-master.
    let text = std::fs::read_to_string(&cluster.inventory).expect("inventory");
    std::fs::write(
        cluster.sandbox.dir.path().join("grown.toml"),
        text.replace("[[worker]]\nname = \"w1\"", "[[master]]\nname = \"w1\""),
    )
    .expect("write");
    let before = cluster.sandbox.files("w1");
    let refused: Run = ocfk8s()
        .current_dir(cluster.sandbox.dir.path())
        .args(["-i", "grown.toml", "--no-progress", "bootstrap"])
        .output()
        .expect("run")
        .into();
    assert_eq!(refused.status, 2, "{}", refused.stderr);
    assert!(
        refused
            .stderr
            .contains("w1 is listed as master but it is not a member of the running etcd cluster")
            && refused.stderr.contains("`ocfk8s add-master w1`"),
        "{}",
        refused.stderr
    );
    assert_eq!(cluster.sandbox.files("w1"), before, "nothing changed on w1");

    // add-worker joins w2 alone: nothing on any other host changes (files
    // and service processes compared), and w2's kubelet is healthy.
    let others = ["m1", "m2", "m3", "w1"];
    // What ocfk8s manages on a host (etcd's data, containerd's state and
    // logs change by themselves): each file's mode, mtime and sha256.
    let managed = |name: &str| -> String {
        stdout(&cluster.sandbox.ssh(
            name,
            "find /etc/kubernetes /etc/systemd/system /etc/containerd /etc/crictl.yaml \
             /etc/nginx/sites-enabled /etc/nginx/ssl /etc/keepalived /etc/modules-load.d \
             /etc/sysctl.d /var/lib/kubelet/config.yaml /var/lib/kubelet/pki /var/lib/kube-proxy \
             /var/lib/ocfk8s /usr/local/bin -type f -printf '%p %m %T@ ' -exec sha256sum {} ';' \
             2>/dev/null | sort",
        ))
    };
    let files_before: Vec<String> = others.iter().map(|name| managed(name)).collect();
    assert!(files_before[0].contains("/etc/kubernetes/manifests/kube-apiserver.yaml"));
    let pids_before = every_pid();
    let w1_kubelet = |cluster: &Cluster| {
        stdout(
            &cluster
                .sandbox
                .ssh("w1", "cat /run/systemctl/kubelet.service.pid"),
        )
    };
    let w1_pid = w1_kubelet(&cluster);
    for (name, hint) in [("m1", "add-master m1"), ("w9", "add it under [[worker]]")] {
        let refused = cluster.run(&["add-worker", name]);
        assert_eq!(refused.status, 2, "{}", refused.stderr);
        assert!(refused.stderr.contains(hint), "{}", refused.stderr);
    }
    std::fs::write(&cluster.inventory, &with_w2).expect("inventory");
    let joined = cluster.run(&["add-worker", "w2"]);
    assert_eq!(joined.status, 0, "{}\n{}", joined.stdout, joined.stderr);
    assert!(joined.stderr.contains("w2  nodes: "), "{}", joined.stderr);
    assert!(
        joined.stderr.contains("kubelet healthy"),
        "{}",
        joined.stderr
    );
    // The masters are only read (the etcd snapshot taken first).
    assert!(
        joined.stdout.contains("snapshot: etcd revision"),
        "{}",
        joined.stdout
    );
    for line in joined
        .stderr
        .lines()
        .filter(|line| line.contains("  ") && !line.contains("  connect"))
    {
        assert!(
            !line.starts_with('m') && !line.starts_with("w1"),
            "another host was touched: {line}"
        );
    }
    let files_after: Vec<String> = others.iter().map(|name| managed(name)).collect();
    assert_eq!(
        files_after, files_before,
        "add-worker changed a file on another host"
    );
    assert_eq!(
        every_pid(),
        pids_before,
        "add-worker restarted a service on a master"
    );
    assert_eq!(
        w1_kubelet(&cluster),
        w1_pid,
        "add-worker restarted w1's kubelet"
    );
    assert!(cluster.pki("nodes/w2/kubelet.crt").exists());
}
