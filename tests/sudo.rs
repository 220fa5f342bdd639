//! A non-root `[ssh] user` elevated with `sudo -n` (Debian's real sudo on
//! sandbox hosts: one master, one worker, real etcd, keepalived and nginx;
//! stand-in kubelet, kube-proxy, kubectl and apiserver). `deploy` has
//! passwordless sudo: bootstrap (binaries uploaded), plan, status, etcd
//! snapshot, a leaf rotation, the remote certificate check, remove-worker
//! and add-worker all work through it, and every file placed is root's
//! with the right mode.
//! `nosudo` has no sudo, and `ttyonly` only from a terminal: bootstrap
//! fails with exit 1 and an error naming the host, the user and `sudo -n`,
//! before anything changed on any host.

mod sandbox;

use std::path::PathBuf;
use std::time::Instant;

use sandbox::Sandbox;

#[path = "common/mod.rs"]
mod common;

use common::{ocfk8s, Run};

const SUBNET: u8 = 217;
const HOSTS: [&str; 2] = ["m1", "w1"];

/// Per host, as root: the two users (homes under the host's own /var, a
/// `*` password so sshd does not see a locked account), the sandbox's key
/// readable by them (sshd reads `AuthorizedKeysFile` as the user), and
/// passwordless sudo for `deploy`, and for `ttyonly` only from a terminal
/// (`requiretty`, as some distributions ship it).
const USERS: &str = "set -e
useradd -m -d /var/lib/home-deploy -s /bin/sh deploy
useradd -m -d /var/lib/home-nosudo -s /bin/sh nosudo
usermod -p '*' deploy
useradd -m -d /var/lib/home-ttyonly -s /bin/sh ttyonly
usermod -p '*' nosudo
usermod -p '*' ttyonly
chmod 0644 /etc/ssh/sandbox_authorized_keys
printf 'deploy ALL=(ALL) NOPASSWD: ALL\\nDefaults:ttyonly requiretty\\nttyonly ALL=(ALL) NOPASSWD: ALL\\n' > /etc/sudoers.d/ocfk8s
chmod 0440 /etc/sudoers.d/ocfk8s
visudo -cq";

struct Cluster {
    sandbox: Sandbox,
}

impl Cluster {
    fn run(&self, inventory: &str, args: &[&str]) -> Run {
        let started = Instant::now();
        let run: Run = ocfk8s()
            .current_dir(self.sandbox.dir.path())
            .arg("-i")
            .arg(inventory)
            .arg("--no-progress")
            .args(args)
            .output()
            .expect("run ocfk8s")
            .into();
        eprintln!(
            "ocfk8s -i {inventory} {} -> exit {} in {:.1?}",
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

    fn ok(&self, inventory: &str, args: &[&str]) -> Run {
        let run = self.run(inventory, args);
        assert_eq!(
            run.status, 0,
            "ocfk8s {args:?} as {inventory}\n{}\n{}",
            run.stdout, run.stderr
        );
        run
    }

    /// What ocfk8s manages on a host: each file's mode, owner, mtime and
    /// sha256 (etcd's data and the services' logs change by themselves).
    fn managed(&self, name: &str) -> String {
        stdout(&self.sandbox.ssh(
            name,
            "find /etc/kubernetes /etc/systemd/system /etc/containerd /etc/crictl.yaml \
             /etc/nginx/sites-enabled /etc/nginx/ssl /etc/keepalived /etc/modules-load.d \
             /etc/sysctl.d /var/lib/kubelet /var/lib/kube-proxy /var/lib/ocfk8s \
             /var/lib/etcd /var/lib/home-deploy /var/lib/home-nosudo /var/lib/home-ttyonly /usr/local/bin \
             -type f -printf '%p %m %u %T@ ' -exec sha256sum {} ';' 2>/dev/null | sort",
        ))
    }
}

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn a_user_with_passwordless_sudo_runs_everything_and_one_without_is_refused_before_any_change() {
    let started = Instant::now();
    let sandbox = Sandbox::up(SUBNET, 1, 1);
    let inventory = sandbox.inventory(
        "deploy.toml",
        "",
        "",
        &format!(
            "\n[ingress]\nvip = \"10.213.{SUBNET}.100\"\ninterface = \"eth0\"\nvirtual_router_id = 64\n\
             node_port = 31234\nserver_names = [\"*.sandbox.test\"]\n"
        ),
    );
    let text = std::fs::read_to_string(&inventory)
        .expect("inventory")
        .replace(
            "method = \"none\"\n",
            "method = \"upload\"\nbin_dir = \"/usr/local/bin\"\nupload_from = \"bin\"\n",
        );
    assert!(text.contains("user = \"root\"\n"));
    std::fs::write(
        &inventory,
        text.replace("user = \"root\"\n", "user = \"deploy\"\n"),
    )
    .expect("inventory");
    for user in ["nosudo", "ttyonly"] {
        std::fs::write(
            sandbox.dir.path().join(format!("{user}.toml")),
            text.replace("user = \"root\"\n", &format!("user = \"{user}\"\n")),
        )
        .expect("inventory");
    }
    // Uploaded through sudo (`sh -c` with the file on stdin): Debian's etcd
    // and etcdctl, and the stand-ins.
    let bin = sandbox.dir.path().join("bin");
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
    for name in HOSTS {
        sandbox.ssh(name, USERS);
        // The users really are who the test says.
        let deploy = sandbox.ssh(name, "su -s /bin/sh deploy -c 'sudo -n id -u'");
        assert_eq!(stdout(&deploy).trim(), "0");
        for user in ["nosudo", "ttyonly"] {
            let refused =
                sandbox.ssh_output(name, &format!("su -s /bin/sh {user} -c 'sudo -n id -u'"));
            assert!(!refused.status.success(), "{user}: {refused:?}");
        }
    }
    let cluster = Cluster { sandbox };
    eprintln!("sandbox up with its users in {:.1?}", started.elapsed());

    cluster.ok("deploy.toml", &["pki", "generate"]);

    // nosudo: refused with the host named, before anything changed.
    let before: Vec<String> = HOSTS.iter().map(|name| cluster.managed(name)).collect();
    let refused = cluster.run("nosudo.toml", &["bootstrap"]);
    assert_eq!(refused.status, 1, "{}\n{}", refused.stdout, refused.stderr);
    assert!(
        refused.stderr.contains("sudo -n") && refused.stderr.contains("nosudo"),
        "{}",
        refused.stderr
    );
    assert!(
        HOSTS.iter().any(|name| refused
            .stderr
            .lines()
            .any(|line| line.contains(name) && line.contains("sudo -n"))),
        "the error names the host: {}",
        refused.stderr
    );
    // ttyonly: sudo's own refusal, passed on with the host named.
    let refused = cluster.run("ttyonly.toml", &["bootstrap"]);
    assert_eq!(refused.status, 1, "{}\n{}", refused.stdout, refused.stderr);
    assert!(
        refused.stderr.contains("m1: ")
            && refused
                .stderr
                .contains("user ttyonly cannot become root through `sudo -n`")
            && refused.stderr.contains("tty"),
        "{}",
        refused.stderr
    );
    let after: Vec<String> = HOSTS.iter().map(|name| cluster.managed(name)).collect();
    assert_eq!(after, before, "a refused bootstrap changed a host");

    // deploy: everything through sudo.
    let bootstrap = cluster.ok("deploy.toml", &["bootstrap"]);
    assert!(
        bootstrap
            .stderr
            .contains("m1  install: uploaded etcd, etcdctl, kubelet, kube-proxy, kubectl"),
        "{}",
        bootstrap.stderr
    );
    assert!(
        !bootstrap.stderr.contains("password"),
        "{}",
        bootstrap.stderr
    );
    cluster.ok("deploy.toml", &["plan", "--exit-code"]);
    cluster.ok("deploy.toml", &["status"]);
    cluster.ok("deploy.toml", &["etcd", "snapshot"]);
    let backups: Vec<PathBuf> = std::fs::read_dir(cluster.sandbox.dir.path().join("backups"))
        .expect("backups")
        .flatten()
        .map(|entry| entry.path())
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert!(
        std::fs::metadata(&backups[0]).expect("snapshot").len() > 0,
        "an empty snapshot"
    );
    let kubelet_cert = |cluster: &Cluster| {
        cluster
            .sandbox
            .files("w1")
            .get("/var/lib/kubelet/pki/kubelet.crt")
            .map(|held| held.contents.clone())
    };
    let w1_before = kubelet_cert(&cluster);
    assert!(w1_before.is_some(), "w1 holds no kubelet certificate");
    cluster.ok("deploy.toml", &["rotate-certs", "--only", "w1"]);
    assert_ne!(
        kubelet_cert(&cluster),
        w1_before,
        "w1's leaf was not rotated"
    );
    let check = cluster.ok("deploy.toml", &["certs", "check", "--remote"]);
    assert!(check.stdout.contains("m1") && check.stdout.contains("w1"));
    cluster.ok("deploy.toml", &["plan", "--exit-code"]);
    cluster.ok("deploy.toml", &["status"]);

    // Every file placed is root's; keys and kubeconfigs are 0600.
    let mut placed = 0;
    for name in HOSTS {
        for (path, held) in cluster.sandbox.files(name) {
            if path.starts_with("/usr/local/bin/") {
                assert_eq!((held.uid, held.mode), (0, 0o755), "{name}:{path}");
            }
            let ours = path.starts_with("/etc/kubernetes/")
                || path.starts_with("/usr/local/bin/")
                || path.starts_with("/var/lib/kubelet/")
                || path.starts_with("/var/lib/kube-proxy/")
                || path.starts_with("/var/lib/ocfk8s/")
                || path.starts_with("/etc/keepalived/")
                || path.starts_with("/etc/nginx/ssl/");
            if !ours {
                continue;
            }
            placed += 1;
            assert_eq!(held.uid, 0, "{name}:{path} is not root's");
            let secret = path.ends_with(".key")
                || path.ends_with(".conf") && path.starts_with("/etc/kubernetes/")
                || path.ends_with("kubeconfig.conf");
            if secret {
                assert_eq!(held.mode, 0o600, "{name}:{path} mode {:o}", held.mode);
            }
            assert_eq!(held.mode & 0o022, 0, "{name}:{path} mode {:o}", held.mode);
        }
        // Nothing of ocfk8s's lands in the ssh user's home.
        let home = stdout(&cluster.sandbox.ssh(
            name,
            "find /var/lib/home-deploy -newer /etc/sudoers.d/ocfk8s -type f",
        ));
        assert!(home.trim().is_empty(), "{name}: {home}");
    }
    assert!(placed > 20, "only {placed} files placed");

    // Leaving and joining again, through sudo: remove-worker drains, stops
    // and cleans w1; add-worker joins it again.
    let path = cluster.sandbox.dir.path().join("deploy.toml");
    let listed = std::fs::read_to_string(&path).expect("inventory");
    let entry = format!("\n[[worker]]\nname = \"w1\"\naddress = \"10.213.{SUBNET}.51\"\n");
    assert!(listed.contains(&entry), "{listed}");
    std::fs::write(&path, listed.replace(&entry, "\n")).expect("inventory");
    cluster.ok("deploy.toml", &["remove-worker", "w1"]);
    let left = cluster.sandbox.files("w1");
    for placed in [
        "/etc/kubernetes/kubelet.conf",
        "/var/lib/kubelet/pki/kubelet.key",
        "/etc/systemd/system/kubelet.service",
    ] {
        assert!(!left.contains_key(placed), "w1 still holds {placed}");
    }
    std::fs::write(&path, &listed).expect("inventory");
    cluster.ok("deploy.toml", &["add-worker", "w1"]);
    // add-worker touches no other host: the masters' copy of the ingress
    // addon (which lists the ingress nodes) follows with a bootstrap.
    cluster.ok("deploy.toml", &["bootstrap"]);
    cluster.ok("deploy.toml", &["plan", "--exit-code"]);
    eprintln!("whole test in {:.1?}", started.elapsed());
}
