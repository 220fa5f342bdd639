//! What the `install` phase puts on hosts: one table of the binaries each
//! role runs from `bin_dir`, the packages of `method = "apt"`, and the apt
//! script. Pure: the phase itself (local hashing, uploads, running the
//! script) is `ops/install.rs`.
//!
//! # Methods
//!
//! - `none`: the operator placed the binaries; preflight checks they are
//!   there and executable.
//! - `upload`: etcd, etcdctl, kubelet, kube-proxy and kubectl are copied
//!   from the local `upload_from` folder to the hosts that run them.
//! - `apt`: Debian's archive for what it carries (containerd, etcd, the
//!   front door, the CNI plugins), the Kubernetes community repository
//!   (`pkgs.k8s.io`) for kubelet and kubectl, pinned to the inventory's
//!   version and held; kube-proxy, which no package carries as a binary,
//!   is uploaded from `upload_from`.

use std::fmt::Write as _;

use crate::inventory::Cluster;
use crate::remote::shell::quote;

/// One binary a host runs from `bin_dir`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Binary {
    pub(crate) name: &'static str,
    /// Only masters run it (etcd and the tools that talk to it or the API).
    pub(crate) masters_only: bool,
    /// The unit that runs it: a new binary restarts it.
    pub(crate) unit: Option<&'static str>,
    /// `method = "apt"`: the package that carries it, if any.
    pub(crate) package: Option<&'static str>,
}

pub(crate) const BINARIES: [Binary; 5] = [
    Binary {
        name: "etcd",
        masters_only: true,
        unit: Some("etcd.service"),
        package: Some("etcd-server"),
    },
    Binary {
        name: "etcdctl",
        masters_only: true,
        unit: None,
        package: Some("etcd-client"),
    },
    Binary {
        name: "kubelet",
        masters_only: false,
        unit: Some("kubelet.service"),
        package: Some("kubelet"),
    },
    Binary {
        name: "kube-proxy",
        masters_only: false,
        unit: Some("kube-proxy.service"),
        package: None,
    },
    Binary {
        name: "kubectl",
        masters_only: true,
        unit: None,
        package: Some("kubectl"),
    },
];

/// The binaries a master (or a worker) needs.
pub(crate) fn binaries_for(master: bool) -> impl Iterator<Item = &'static Binary> {
    BINARIES
        .iter()
        .filter(move |binary| master || !binary.masters_only)
}

/// `<bin_dir>/<name>`.
pub(crate) fn binary_path(bin_dir: &str, name: &str) -> String {
    format!("{}/{name}", bin_dir.trim_end_matches('/'))
}

/// Where Debian's packages put their programs: `method = "apt"` needs
/// `bin_dir` to be this.
pub(crate) const APT_BIN_DIR: &str = "/usr/bin";

/// The keyring holding the Kubernetes repository's signing key.
pub(crate) const KUBERNETES_KEYRING: &str = "/etc/apt/keyrings/kubernetes-apt-keyring.gpg";

/// The apt source naming the Kubernetes repository.
pub(crate) const KUBERNETES_SOURCE: &str = "/etc/apt/sources.list.d/kubernetes.list";

/// Kubernetes packages, from `pkgs.k8s.io`, pinned and held.
const KUBERNETES_PACKAGES: [&str; 2] = ["kubelet", "kubectl"];

/// What one host gets from apt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct AptRequest {
    /// `1.31.4`.
    pub(crate) kubernetes_version: String,
    /// Debian packages, unpinned.
    pub(crate) debian: Vec<&'static str>,
    /// Kubernetes packages, pinned to `kubernetes_version`.
    pub(crate) kubernetes: Vec<&'static str>,
}

impl AptRequest {
    /// What a master (or a worker) of `cluster` needs: workers get no etcd
    /// and no front door; masters get keepalived and nginx only with
    /// `[ingress]`.
    pub(crate) fn for_node(cluster: &Cluster, master: bool) -> AptRequest {
        let mut debian = vec!["containerd"];
        if master {
            debian.extend(["etcd-server", "etcd-client"]);
            if cluster.ingress.is_some() {
                debian.extend(["keepalived", "nginx-light"]);
            }
        }
        debian.extend(["conntrack", "socat", "containernetworking-plugins", "curl"]);
        let kubernetes = KUBERNETES_PACKAGES
            .into_iter()
            .filter(|package| master || *package != "kubectl")
            .collect();
        AptRequest {
            kubernetes_version: cluster.kubernetes_version.clone(),
            debian,
            kubernetes,
        }
    }

    /// `1.31` of `1.31.4`.
    pub(crate) fn minor(&self) -> String {
        let mut parts = self.kubernetes_version.split('.');
        match (parts.next(), parts.next()) {
            (Some(major), Some(minor)) => format!("{major}.{minor}"),
            _ => self.kubernetes_version.clone(),
        }
    }

    /// `https://pkgs.k8s.io/core:/stable:/v1.31/deb/`.
    pub(crate) fn repository(&self) -> String {
        format!("https://pkgs.k8s.io/core:/stable:/v{}/deb/", self.minor())
    }

    /// The requests a host still lacks, given its installed packages (name
    /// to version).
    pub(crate) fn missing(
        &self,
        installed: &std::collections::BTreeMap<String, String>,
    ) -> Vec<String> {
        let pinned = format!("{}-", self.kubernetes_version);
        let debian = self
            .debian
            .iter()
            .filter(|package| !installed.contains_key(**package))
            .map(|package| package.to_string());
        let kubernetes = self
            .kubernetes
            .iter()
            .filter(|package| {
                !installed
                    .get(**package)
                    .is_some_and(|version| version.starts_with(&pinned))
            })
            .map(|package| format!("{package}={}-*", self.kubernetes_version));
        debian.chain(kubernetes).collect()
    }

    /// Every package name the request concerns (for the preflight query).
    pub(crate) fn names(&self) -> Vec<&'static str> {
        self.debian
            .iter()
            .chain(self.kubernetes.iter())
            .copied()
            .collect()
    }
}

/// The script that makes a host hold `request`'s packages. It runs on the
/// host as root and, like the other remote scripts, is one function called
/// on its last line, so a script cut short runs nothing.
///
/// - Packages already installed (Kubernetes ones at the pinned version) are
///   left alone; with nothing missing the script changes nothing and never
///   reaches the network.
/// - The Kubernetes repository's key is fetched with curl from the
///   repository's `Release.key`, dearmored into [`KUBERNETES_KEYRING`], and
///   the source [`KUBERNETES_SOURCE`] is signed by that keyring only.
/// - Package scripts may not start services while installing (a
///   `policy-rc.d` that refuses, removed afterwards): Debian's etcd would
///   otherwise start with its own configuration on the ports ocfk8s's etcd
///   needs. The phases after `install` start every service with ocfk8s's
///   files.
/// - kubelet and kubectl are pinned (`kubelet=<version>-*`) and held, so an
///   unattended upgrade cannot move them.
pub(crate) fn apt_script(request: &AptRequest) -> String {
    let mut script = String::from("ocfk8s_apt() {\nset -eu\nset -f\n");
    script.push_str("export DEBIAN_FRONTEND=noninteractive LC_ALL=C\n");
    let _ = writeln!(script, "keyring='{KUBERNETES_KEYRING}'");
    let _ = writeln!(script, "source_list='{KUBERNETES_SOURCE}'");
    // Values go in quoted (the version is validated, the package names
    // are ocfk8s's own: quoted all the same, so no value is ever code).
    let _ = writeln!(script, "repository={}", quote(&request.repository()));
    let _ = writeln!(script, "version={}", quote(&request.kubernetes_version));
    script.push_str("policy=/usr/sbin/policy-rc.d\n");
    let _ = writeln!(script, "debian={}", quote(&request.debian.join(" ")));
    let _ = writeln!(
        script,
        "kubernetes={}",
        quote(&request.kubernetes.join(" "))
    );
    script.push_str(
        r#"status() { dpkg-query -W -f='${db:Status-Abbrev}|${Version}' "$1" 2>/dev/null || true; }
# Debian's CNI plugins live in /usr/lib/cni; containerd and flannel's own
# plugin use /opt/cni/bin: link the ones flannel needs there.
link_cni() {
  [ -d /usr/lib/cni ] || return 0
  mkdir -p /opt/cni/bin
  for p in bridge host-local loopback portmap; do
    if [ -e "/usr/lib/cni/$p" ] && [ ! -e "/opt/cni/bin/$p" ]; then
      ln -s "/usr/lib/cni/$p" "/opt/cni/bin/$p"
    fi
  done
  return 0
}
missing=''
for p in $debian; do
  case "$(status "$p")" in
    'ii |'*) ;;
    *) missing="$missing $p" ;;
  esac
done
kube_missing=''
for p in $kubernetes; do
  case "$(status "$p")" in
    "ii |$version-"*) ;;
    *) kube_missing="$kube_missing $p=$version-*" ;;
  esac
done
if [ -z "$missing$kube_missing" ]; then
  apt-mark hold $kubernetes >/dev/null
  link_cni
  echo 'nothing to install'
  return 0
fi
our_policy=''
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\n# ocfk8s: no service starts while packages install\nexit 101\n' > "$policy"
  chmod 0755 "$policy"
  our_policy=yes
fi
trap '[ -z "$our_policy" ] || rm -f "$policy"' EXIT
if [ -n "$kube_missing" ]; then
  line="deb [signed-by=$keyring] $repository /"
  if [ ! -s "$keyring" ] || [ "$(cat "$source_list" 2>/dev/null || true)" != "$line" ]; then
    if ! command -v curl >/dev/null 2>&1 || ! command -v gpg >/dev/null 2>&1; then
      apt-get update -q
      apt-get install -y -q --no-install-recommends ca-certificates curl gnupg
    fi
    (umask 022 && mkdir -p "$(dirname "$keyring")")
    curl -fsSL "${repository}Release.key" | gpg --dearmor --batch --yes -o "$keyring.ocfk8s-new"
    chmod 0644 "$keyring.ocfk8s-new"
    mv -f "$keyring.ocfk8s-new" "$keyring"
    printf '%s\n' "$line" > "$source_list.ocfk8s-new"
    chmod 0644 "$source_list.ocfk8s-new"
    mv -f "$source_list.ocfk8s-new" "$source_list"
  fi
fi
apt-get update -q
apt-get install -y -q --no-install-recommends --allow-downgrades --allow-change-held-packages $missing $kube_missing
apt-mark hold $kubernetes >/dev/null
link_cni
echo "installed:$missing$kube_missing"
}
ocfk8s_apt
"#,
    );
    script
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn request(master: bool) -> AptRequest {
        let mut debian = vec!["containerd"];
        if master {
            debian.extend(["etcd-server", "etcd-client", "keepalived", "nginx-light"]);
        }
        debian.extend(["conntrack", "socat", "containernetworking-plugins", "curl"]);
        AptRequest {
            kubernetes_version: "1.31.4".into(),
            debian,
            kubernetes: if master {
                vec!["kubelet", "kubectl"]
            } else {
                vec!["kubelet"]
            },
        }
    }

    #[test]
    fn the_script_parses_and_pins_holds_and_signs() {
        let script = apt_script(&request(true));
        let check = std::process::Command::new("sh")
            .arg("-n")
            .arg("-c")
            .arg(&script)
            .output()
            .expect("sh -n");
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stderr)
        );
        for expected in [
            "DEBIAN_FRONTEND=noninteractive",
            "https://pkgs.k8s.io/core:/stable:/v1.31/deb/",
            "${repository}Release.key",
            "gpg --dearmor",
            "/etc/apt/keyrings/kubernetes-apt-keyring.gpg",
            "deb [signed-by=$keyring] $repository /",
            " $p=$version-*\"",
            "version='1.31.4'",
            "apt-mark hold $kubernetes",
            "exit 101",
        ] {
            assert!(script.contains(expected), "{expected:?} missing:\n{script}");
        }
        assert_eq!(request(true).minor(), "1.31");
    }

    #[test]
    fn workers_get_no_etcd_front_door_or_kubectl() {
        let worker = request(false);
        for absent in ["etcd-server", "etcd-client", "keepalived", "nginx-light"] {
            assert!(!worker.debian.contains(&absent));
        }
        assert_eq!(worker.kubernetes, ["kubelet"]);
        assert!(binaries_for(false).all(|binary| !binary.masters_only));
        assert_eq!(binaries_for(true).count(), 5);
        assert_eq!(
            binaries_for(false)
                .map(|binary| binary.name)
                .collect::<Vec<_>>(),
            ["kubelet", "kube-proxy"]
        );
    }

    /// Run the script against stand-in dpkg-query, apt-get, apt-mark, curl
    /// and gpg that record what they were asked; `installed` lines are
    /// `name version` of what dpkg holds.
    fn run_with_standins(request: &AptRequest, installed: &str) -> (bool, String, String) {
        let dir = tempfile::tempdir().expect("temp dir");
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("mkdir");
        let log = dir.path().join("log");
        let db = dir.path().join("installed");
        std::fs::write(&db, installed).expect("write");
        let standin = |name: &str, body: &str| {
            let path = bin.join(name);
            std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).expect("write");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        };
        let log_line = format!("echo \"$(basename \"$0\") $*\" >> '{}'", log.display());
        standin(
            "dpkg-query",
            &format!(
                "eval \"p=\\${{$#}}\"; v=$(awk -v p=\"$p\" '$1 == p {{ print $2 }}' '{}'); [ -n \"$v\" ] || exit 1; printf 'ii |%s' \"$v\"",
                db.display()
            ),
        );
        standin("apt-get", &log_line);
        standin("apt-mark", &log_line);
        standin("curl", &format!("{log_line}; echo KEY"));
        standin(
            "gpg",
            &format!(
                "{log_line}; while [ $# -gt 1 ]; do [ \"$1\" = -o ] && cat > \"$2\"; shift; done"
            ),
        );
        let root = dir.path().to_str().expect("utf-8");
        let script = apt_script(request)
            .replace("/etc/apt/", &format!("{root}/etc/apt/"))
            .replace("/usr/sbin/policy-rc.d", &format!("{root}/policy-rc.d"))
            .replace("/usr/lib/cni", &format!("{root}/usr/lib/cni"))
            .replace("/opt/cni/bin", &format!("{root}/opt/cni/bin"));
        std::fs::create_dir_all(dir.path().join("etc/apt/sources.list.d")).expect("mkdir");
        // Debian's CNI plugins, as containernetworking-plugins installs them.
        std::fs::create_dir_all(dir.path().join("usr/lib/cni")).expect("mkdir");
        for plugin in ["bridge", "host-local", "loopback", "portmap", "macvlan"] {
            std::fs::write(dir.path().join("usr/lib/cni").join(plugin), "").expect("write");
        }
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(&script)
            .current_dir(dir.path())
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .output()
            .expect("sh");
        assert!(
            !dir.path().join("policy-rc.d").exists(),
            "the policy-rc.d was left behind"
        );
        // flannel's plugins are linked where containerd looks for them.
        for plugin in ["bridge", "host-local", "loopback", "portmap"] {
            let link = dir.path().join("opt/cni/bin").join(plugin);
            assert_eq!(
                std::fs::read_link(&link).ok(),
                Some(dir.path().join("usr/lib/cni").join(plugin)),
                "{plugin}"
            );
        }
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned()
                + &String::from_utf8_lossy(&output.stderr),
            std::fs::read_to_string(&log).unwrap_or_default(),
        )
    }

    #[test]
    fn installs_only_what_is_missing_pinned_and_holds_kubernetes_packages() {
        let worker = request(false);
        // containerd and curl present, kubelet at another version.
        let (ok, output, log) = run_with_standins(
            &worker,
            "containerd 1.6.20\ncurl 7.88\nkubelet 1.30.2-1.1\n",
        );
        assert!(ok, "{output}");
        let install = log
            .lines()
            .find(|line| line.starts_with("apt-get install") && line.contains("kubelet"))
            .unwrap_or_else(|| panic!("no install:\n{log}"));
        assert!(install.contains("-y"), "{install}");
        assert!(install.contains(" kubelet=1.31.4-*"), "{install}");
        assert!(install.contains(" conntrack "), "{install}");
        assert!(!install.contains("containerd"), "{install}");
        assert!(!install.contains(" curl"), "{install}");
        assert!(log.contains("apt-mark hold kubelet"), "{log}");
        assert!(
            log.contains("curl -fsSL https://pkgs.k8s.io/core:/stable:/v1.31/deb/Release.key"),
            "{log}"
        );

        // Everything in place at the right version: no apt-get at all.
        let (ok, output, log) = run_with_standins(
            &worker,
            "containerd 1.6.20\nconntrack 1.4.7\nsocat 1.7\ncontainernetworking-plugins 1.1.1\ncurl 7.88\nkubelet 1.31.4-1.1\n",
        );
        assert!(ok, "{output}");
        assert!(output.contains("nothing to install"), "{output}");
        assert!(!log.contains("apt-get"), "{log}");
        assert!(log.contains("apt-mark hold kubelet"), "{log}");
    }

    #[test]
    fn plans_show_only_what_is_missing() {
        let worker = request(false);
        let installed = [
            ("containerd".to_string(), "1.6.20".to_string()),
            ("kubelet".to_string(), "1.31.4-1.1".to_string()),
        ]
        .into_iter()
        .collect();
        let missing = worker.missing(&installed);
        assert_eq!(
            missing,
            ["conntrack", "socat", "containernetworking-plugins", "curl"]
        );
        let older = [("kubelet".to_string(), "1.31.3-1.1".to_string())]
            .into_iter()
            .collect();
        assert!(worker
            .missing(&older)
            .contains(&"kubelet=1.31.4-*".to_string()));
    }
}
