//! Sandbox hosts for end-to-end tests (SPEC section 7): real sshd in network
//! namespaces on a private bridge, created by `sandbox/sandbox` and removed
//! in `Drop`, even when the test panics. Each test passes its own subnet
//! number (10.213.<subnet>.0/24, bridge `ocft<subnet>`), so tests run in
//! parallel without meeting.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// Files the sandbox itself puts on every host.
pub const SANDBOX_FILES: [&str; 3] = [
    "/etc/hostname",
    "/etc/hosts",
    "/etc/ssh/sandbox_authorized_keys",
];

/// The folders a host overlays, and their folder names under `upper/`.
const OVERLAYS: [(&str, &str); 4] = [
    ("/etc", "etc"),
    ("/var", "var"),
    ("/usr/local", "usr-local"),
    ("/opt", "opt"),
];

pub struct Host {
    pub name: String,
    pub address: String,
    pub master: bool,
}

pub struct Sandbox {
    /// Holds the inventory, the PKI store, and `state/` (keys, known_hosts).
    pub dir: tempfile::TempDir,
    pub bridge: String,
    pub subnet: u8,
    pub hosts: Vec<Host>,
}

/// A file as it lies on a host: contents and permission bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Held {
    pub contents: Vec<u8>,
    pub mode: u32,
    pub uid: u32,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sandbox/sandbox")
}

fn check(output: Output, what: &str) -> Output {
    assert!(
        output.status.success(),
        "{what} failed: {}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

impl Sandbox {
    /// `masters` masters then `workers` workers on 10.213.<subnet>.0/24.
    pub fn up(subnet: u8, masters: usize, workers: usize) -> Sandbox {
        let bridge = format!("ocft{subnet}");
        // Whatever a crashed earlier run of this test left behind.
        let _ = Command::new(script()).args(["clean", &bridge]).output();
        let mut hosts = Vec::new();
        for index in 0..masters {
            hosts.push(Host {
                name: format!("m{}", index + 1),
                address: format!("10.213.{subnet}.{}", 11 + index),
                master: true,
            });
        }
        for index in 0..workers {
            hosts.push(Host {
                name: format!("w{}", index + 1),
                address: format!("10.213.{subnet}.{}", 51 + index),
                master: false,
            });
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let sandbox = Sandbox {
            dir,
            bridge,
            subnet,
            hosts,
        };
        let mut command = Command::new(script());
        command
            .arg("up")
            .arg(sandbox.state())
            .arg(&sandbox.bridge)
            .arg(format!("10.213.{subnet}.1/24"));
        for host in &sandbox.hosts {
            command.arg(format!("{}={}", host.name, host.address));
        }
        check(command.output().expect("run sandbox up"), "sandbox up");
        sandbox
    }

    pub fn state(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn known_hosts(&self) -> PathBuf {
        self.state().join("known_hosts")
    }

    pub fn host(&self, name: &str) -> &Host {
        self.hosts
            .iter()
            .find(|host| host.name == name)
            .expect("no such sandbox host")
    }

    /// The network namespace of a host.
    pub fn netns(&self, name: &str) -> String {
        format!("{}-{name}", self.bridge)
    }

    /// An inventory for these hosts; `cluster_extra` lines go into
    /// `[cluster]`, `ssh_extra` lines into `[ssh]`, `extra` at the end.
    pub fn inventory(
        &self,
        file: &str,
        cluster_extra: &str,
        ssh_extra: &str,
        extra: &str,
    ) -> PathBuf {
        let mut text = format!(
            "[cluster]\nname = \"sandbox{subnet}\"\nkubernetes_version = \"1.31.4\"\n\
             pod_cidr = \"10.244.0.0/16\"\nservice_cidr = \"10.96.0.0/12\"\npki_dir = \"pki\"\n{cluster_extra}\n\n\
             [ssh]\nuser = \"root\"\nknown_hosts = \"state/known_hosts\"\nidentity_file = \"state/id_ed25519\"\n\
             connect_timeout_secs = 3\n{ssh_extra}\n\n[install]\nmethod = \"none\"\n",
            subnet = self.subnet
        );
        for host in &self.hosts {
            text.push_str(&format!(
                "\n[[{}]]\nname = \"{}\"\naddress = \"{}\"\n",
                if host.master { "master" } else { "worker" },
                host.name,
                host.address
            ));
        }
        text.push_str(extra);
        let path = self.dir.path().join(file);
        std::fs::write(&path, text).expect("write inventory");
        path
    }

    /// Every regular file a host holds in its overlays (what was written on
    /// it since it was created), minus the sandbox's own files.
    pub fn files(&self, name: &str) -> BTreeMap<String, Held> {
        let mut files = BTreeMap::new();
        for (mount, folder) in OVERLAYS {
            let upper = self
                .state()
                .join("hosts")
                .join(name)
                .join("upper")
                .join(folder);
            walk(&upper, &upper, mount, &mut files);
        }
        for own in SANDBOX_FILES {
            files.remove(own);
        }
        files
    }

    /// Run a shell command on a host over plain ssh, as root.
    pub fn ssh(&self, name: &str, command: &str) -> Output {
        check(
            self.ssh_output(name, command),
            &format!("ssh {name} {command}"),
        )
    }

    /// Run a shell command on a host over plain ssh, as root, whatever its
    /// exit status.
    pub fn ssh_output(&self, name: &str, command: &str) -> Output {
        let host = self.host(name);
        Command::new("ssh")
            .arg("-F")
            .arg("/dev/null")
            .arg("-i")
            .arg(self.state().join("id_ed25519"))
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                self.known_hosts().display()
            ))
            .args(["-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes"])
            .arg(format!("root@{}", host.address))
            .arg(command)
            .output()
            .expect("run ssh")
    }

    /// Put the stand-ins for the Kubernetes binaries (`sandbox/standins`)
    /// and Debian's real etcd and etcdctl into a host's `/usr/local/bin`
    /// (an overlay of its own): an inventory with
    /// `bin_dir = "/usr/local/bin"` then runs them from its units.
    pub fn install_standins(&self, name: &str) {
        let standins = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sandbox/standins");
        let standins = standins.display();
        self.ssh(
            name,
            &format!(
                "install -m 0755 {standins}/kubelet {standins}/kube-proxy {standins}/kubectl \
                 /usr/bin/etcd /usr/bin/etcdctl /usr/local/bin/"
            ),
        );
    }

    /// Run `ip` with `args` inside a host's network namespace.
    pub fn ip(&self, name: &str, args: &[&str]) {
        check(
            Command::new("ip")
                .arg("-n")
                .arg(self.netns(name))
                .args(args)
                .output()
                .expect("run ip"),
            &format!("ip {args:?} on {name}"),
        );
    }
}

fn walk(base: &Path, dir: &Path, mount: &str, files: &mut BTreeMap<String, Held>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let metadata = std::fs::symlink_metadata(&path).expect("stat");
        if metadata.is_dir() {
            walk(base, &path, mount, files);
        } else if metadata.is_file() {
            let relative = path.strip_prefix(base).expect("inside");
            files.insert(
                format!("{mount}/{}", relative.display()),
                Held {
                    contents: std::fs::read(&path).expect("read"),
                    mode: metadata.permissions().mode() & 0o7777,
                    uid: metadata.uid(),
                },
            );
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = Command::new(script())
            .arg("down")
            .arg(self.state())
            .output();
    }
}
