//! The install phase and preflight on sandbox hosts: `method = "upload"`
//! places each binary only where it runs (masters all five, workers kubelet
//! and kube-proxy), 0755 and root-owned, uploads nothing on a second run,
//! re-uploads a changed binary and owes a restart of the service running
//! it; a binary missing locally is refused before connecting (exit 2,
//! nothing changed); `method = "none"` names the host and binary missing;
//! preflight refuses a master whose etcd port another program holds.
//!
//! The binaries are Debian's real etcd and etcdctl and the sandbox's
//! stand-ins (`sandbox/standins`) for kubelet, kube-proxy and kubectl.

mod sandbox;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use sandbox::Sandbox;

#[path = "common/mod.rs"]
mod common;

use common::{ocfk8s, Run};

const SUBNET: u8 = 209;
const BIN_DIR: &str = "/usr/local/bin";
const ALL: [&str; 5] = ["etcd", "etcdctl", "kubelet", "kube-proxy", "kubectl"];
const INSTALL_ONLY: &str = "etcd,control-plane,nodes,lb,addons";

struct Cluster {
    sandbox: Sandbox,
    inventory: PathBuf,
}

impl Cluster {
    fn run_with(&self, inventory: &Path, args: &[&str]) -> Run {
        ocfk8s()
            .current_dir(self.sandbox.dir.path())
            .arg("-i")
            .arg(inventory)
            .arg("--no-progress")
            .args(args)
            .output()
            .expect("run ocfk8s")
            .into()
    }

    fn run(&self, args: &[&str]) -> Run {
        self.run_with(&self.inventory, args)
    }

    fn upload_from(&self) -> PathBuf {
        self.sandbox.dir.path().join("bin")
    }

    /// `name sha256 mode owner mtime` of each of our binaries on a host.
    fn binaries(&self, host: &str) -> BTreeMap<String, String> {
        let output = self.sandbox.ssh(
            host,
            &format!(
                "cd {BIN_DIR} && for b in {}; do [ -e \"$b\" ] || continue; \
                 printf '%s %s %s\\n' \"$b\" \"$(sha256sum < \"$b\" | cut -d' ' -f1)\" \"$(stat -c '%a %u:%g %y' \"$b\")\"; done",
                ALL.join(" ")
            ),
        );
        stdout(&output)
            .lines()
            .filter_map(|line| line.split_once(' '))
            .map(|(name, rest)| (name.to_string(), rest.to_string()))
            .collect()
    }

    /// Every file both hosts hold in their overlays.
    fn snapshot(&self) -> Vec<BTreeMap<String, sandbox::Held>> {
        ["m1", "w1"]
            .iter()
            .map(|name| self.sandbox.files(name))
            .collect()
    }
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn local_sha256(path: &Path) -> String {
    let output = Command::new("sha256sum")
        .arg(path)
        .output()
        .expect("sha256sum");
    stdout(&output)
        .split_whitespace()
        .next()
        .expect("hash")
        .to_string()
}

fn wait_until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(started.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn upload_places_binaries_where_they_run_and_preflight_refuses_what_would_fail() {
    let started = Instant::now();
    let sandbox = Sandbox::up(SUBNET, 1, 1);
    let inventory = sandbox.inventory("inventory.toml", "", "", "");
    let text = std::fs::read_to_string(&inventory).expect("inventory");
    std::fs::write(
        &inventory,
        text.replace(
            "method = \"none\"\n",
            &format!("method = \"upload\"\nbin_dir = \"{BIN_DIR}\"\nupload_from = \"bin\"\n"),
        ),
    )
    .expect("inventory");
    let none_inventory = sandbox.dir.path().join("none.toml");
    std::fs::write(
        &none_inventory,
        text.replace(
            "method = \"none\"\n",
            &format!("method = \"none\"\nbin_dir = \"{BIN_DIR}\"\n"),
        ),
    )
    .expect("inventory");
    let cluster = Cluster { sandbox, inventory };

    // The local folder: Debian's etcd and etcdctl, the stand-ins.
    let bin = cluster.upload_from();
    std::fs::create_dir(&bin).expect("mkdir bin");
    let standins = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sandbox/standins");
    for (name, source) in [
        ("etcd", PathBuf::from("/usr/bin/etcd")),
        ("etcdctl", PathBuf::from("/usr/bin/etcdctl")),
        ("kubelet", standins.join("kubelet")),
        ("kube-proxy", standins.join("kube-proxy")),
        ("kubectl", standins.join("kubectl")),
    ] {
        std::fs::copy(&source, bin.join(name)).expect("copy binary");
    }
    let run = cluster.run(&["pki", "generate"]);
    assert_eq!(run.status, 0, "{}", run.stderr);

    // A binary missing locally: exit 2 before connecting, naming it and
    // upload_from; nothing changed on any host.
    let before = cluster.snapshot();
    std::fs::rename(
        bin.join("kubectl"),
        cluster.sandbox.dir.path().join("kubectl.aside"),
    )
    .expect("move kubectl aside");
    let refused = cluster.run(&["bootstrap", "--skip-phases", INSTALL_ONLY]);
    assert_eq!(refused.status, 2, "{}\n{}", refused.stdout, refused.stderr);
    assert!(
        refused.stderr.contains("kubectl missing from upload_from")
            && refused.stderr.contains(&bin.display().to_string()),
        "{}",
        refused.stderr
    );
    assert!(!refused.stderr.contains("connect"), "{}", refused.stderr);
    assert_eq!(cluster.snapshot(), before, "a refused run changed a host");
    std::fs::rename(
        cluster.sandbox.dir.path().join("kubectl.aside"),
        bin.join("kubectl"),
    )
    .expect("put kubectl back");

    // Another program on a new master's etcd port: preflight names host,
    // port and holder, and nothing is written.
    let server = cluster.sandbox.ssh(
        "m1",
        "cd /run; setsid python3 -m http.server 2379 > /dev/null 2>&1 < /dev/null & echo $!",
    );
    let server_pid = stdout(&server).trim().to_string();
    wait_until(
        "the stray server listening",
        Duration::from_secs(10),
        || stdout(&cluster.sandbox.ssh("m1", "ss -ltnH 'sport = :2379'")).contains("2379"),
    );
    let refused = cluster.run(&["bootstrap", "--skip-phases", INSTALL_ONLY]);
    cluster.sandbox.ssh("m1", &format!("kill {server_pid}"));
    assert_eq!(refused.status, 1, "{}\n{}", refused.stdout, refused.stderr);
    assert!(
        refused
            .stderr
            .contains("m1: preflight: port 2379 (for etcd) is already held by python3"),
        "{}",
        refused.stderr
    );
    assert!(
        !refused.stderr.contains("w1: preflight"),
        "{}",
        refused.stderr
    );
    assert_eq!(cluster.snapshot(), before, "a refused run changed a host");

    // Upload: masters get all five, workers kubelet and kube-proxy; 0755,
    // root-owned, no temporaries left.
    let first = cluster.run(&["bootstrap", "--skip-phases", INSTALL_ONLY]);
    assert_eq!(first.status, 0, "{}\n{}", first.stdout, first.stderr);
    assert!(
        first
            .stderr
            .contains("m1  install: uploaded etcd, etcdctl, kubelet, kube-proxy, kubectl"),
        "{}",
        first.stderr
    );
    assert!(
        first
            .stderr
            .contains("w1  install: uploaded kubelet, kube-proxy"),
        "{}",
        first.stderr
    );
    let m1 = cluster.binaries("m1");
    let w1 = cluster.binaries("w1");
    assert_eq!(
        m1.keys().map(String::as_str).collect::<Vec<_>>().len(),
        5,
        "{m1:?}"
    );
    assert_eq!(
        w1.keys().map(String::as_str).collect::<Vec<_>>(),
        ["kube-proxy", "kubelet"],
        "{w1:?}"
    );
    for (host, binaries) in [("m1", &m1), ("w1", &w1)] {
        for (name, held) in binaries {
            let expected = local_sha256(&bin.join(name));
            assert!(
                held.starts_with(&format!("{expected} 755 0:0 ")),
                "{host}: {name}: {held}"
            );
        }
        let listing = stdout(&cluster.sandbox.ssh(host, &format!("ls -a {BIN_DIR}")));
        assert!(!listing.contains("ocfk8s-tmp"), "{host}: {listing}");
    }

    // A second run uploads nothing: same files, same mtimes.
    let second = cluster.run(&["bootstrap", "--skip-phases", INSTALL_ONLY]);
    assert_eq!(second.status, 0, "{}", second.stderr);
    assert!(
        second
            .stdout
            .contains("install: nothing to do: every host holds its binaries."),
        "{}",
        second.stdout
    );
    assert_eq!((cluster.binaries("m1"), cluster.binaries("w1")), (m1, w1));

    // The whole cluster runs on the uploaded binaries.
    let full = cluster.run(&["bootstrap", "--skip-phases", "lb,addons"]);
    assert_eq!(full.status, 0, "{}\n{}", full.stdout, full.stderr);
    let plan = cluster.run(&["plan", "--exit-code", "--skip-phases", "lb,addons"]);
    assert_eq!(plan.status, 0, "{}\n{}", plan.stdout, plan.stderr);

    // A changed kube-proxy: the plan shows the upload and the restart it
    // causes; the install phase re-uploads it to every node, and the plan
    // then owes the restart wherever kube-proxy ran.
    let kube_proxy = bin.join("kube-proxy");
    let mut contents = std::fs::read(&kube_proxy).expect("read");
    contents.extend_from_slice(b"# a newer build\n");
    std::fs::write(&kube_proxy, &contents).expect("write");
    let new_sha256 = local_sha256(&kube_proxy);
    let plan = cluster.run(&["plan", "--skip-phases", "lb,addons"]);
    assert_eq!(plan.status, 0, "{}", plan.stderr);
    assert_eq!(
        plan.stdout
            .matches(&format!("~ {BIN_DIR}/kube-proxy, upload: sha256 "))
            .count(),
        2,
        "{}",
        plan.stdout
    );
    assert!(
        plan.stdout.contains(&format!("-> {}", &new_sha256[..16])),
        "{}",
        plan.stdout
    );
    assert_eq!(
        plan.stdout.matches("! restart kube-proxy.service").count(),
        2,
        "{}",
        plan.stdout
    );
    let upload = cluster.run(&["bootstrap", "--skip-phases", INSTALL_ONLY]);
    assert_eq!(upload.status, 0, "{}", upload.stderr);
    for host in ["m1", "w1"] {
        assert!(
            upload
                .stderr
                .contains(&format!("{host}  install: uploaded kube-proxy\n")),
            "{}",
            upload.stderr
        );
        assert!(
            cluster.binaries(host)["kube-proxy"].starts_with(&format!("{new_sha256} 755 0:0 ")),
            "{host}"
        );
    }
    let plan = cluster.run(&["plan", "--skip-phases", "lb,addons"]);
    assert!(!plan.stdout.contains("upload: sha256"), "{}", plan.stdout);
    for host in ["m1", "w1"] {
        let section = plan
            .stdout
            .split(&format!("{host}:\n"))
            .nth(1)
            .unwrap_or_else(|| panic!("no {host} in the plan:\n{}", plan.stdout));
        assert!(
            section
                .lines()
                .take_while(|line| line.starts_with("  "))
                .any(|line| line
                    .contains("! restart kube-proxy.service (inputs changed; nodes phase)")),
            "{}",
            plan.stdout
        );
    }
    let converge = cluster.run(&["bootstrap", "--skip-phases", "lb,addons"]);
    assert_eq!(converge.status, 0, "{}", converge.stderr);
    let plan = cluster.run(&["plan", "--exit-code", "--skip-phases", "lb,addons"]);
    assert_eq!(plan.status, 0, "{}", plan.stdout);

    // method = "none": a binary missing on one host is named with the host.
    cluster
        .sandbox
        .ssh("w1", &format!("rm {BIN_DIR}/kube-proxy"));
    let missing = cluster.run_with(&none_inventory, &["bootstrap"]);
    assert_eq!(missing.status, 1, "{}\n{}", missing.stdout, missing.stderr);
    assert!(
        missing
            .stderr
            .contains("w1: preflight: missing in /usr/local/bin: kube-proxy"),
        "{}",
        missing.stderr
    );
    assert!(
        !missing.stderr.contains("m1: preflight"),
        "{}",
        missing.stderr
    );
    eprintln!("install test took {:?}", started.elapsed());
}
