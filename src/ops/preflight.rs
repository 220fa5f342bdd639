//! Preflight's verdict on a connected host, from the facts read at connect
//! time ([`crate::remote::HostFacts`]): pure, so `bootstrap` can refuse what
//! `plan` only warns about.
//!
//! - Architecture: only x86_64 and aarch64 have Kubernetes binaries.
//! - Binaries: when the install phase will not place them (`method =
//!   "none"`, or the phase skipped), every binary the host runs must be in
//!   `bin_dir` and executable.
//! - Ports: on a host that does not run them yet (a master without etcd
//!   data; a worker whose kubelet is not running), the ports its services
//!   will listen on must be free, or held by the program that will serve
//!   them (a re-run after a killed one).
//! - Clock: more than [`MAX_CLOCK_SKEW_SECS`] from this machine's is a
//!   warning: etcd's TLS and leases dislike skew.

use crate::install::binaries_for;
use crate::phase::Phase;
use crate::remote::{BinaryPresence, HostFacts};

pub(crate) const MAX_CLOCK_SKEW_SECS: f64 = 2.0;

const ARCHITECTURES: [&str; 2] = ["x86_64", "aarch64"];

/// The ports a master's services serve, and the program serving each.
const MASTER_PORTS: [(u16, &str); 4] = [
    (2379, "etcd"),
    (2380, "etcd"),
    (6443, "kube-apiserver"),
    (10250, "kubelet"),
];

const WORKER_PORTS: [(u16, &str); 1] = [(10250, "kubelet")];

/// Whether `phases` install or start the cluster's services, so that the
/// ports they will listen on must be free (a run that only writes files
/// starts nothing).
pub(crate) fn ports_matter(phases: &[Phase]) -> bool {
    phases.iter().any(|phase| {
        matches!(
            phase,
            Phase::Install | Phase::Etcd | Phase::ControlPlane | Phase::Nodes
        )
    })
}

/// The ports whose holders preflight may check on a master or a worker.
pub(crate) fn checked_ports(master: bool) -> Vec<u16> {
    let ports: &[(u16, &str)] = if master { &MASTER_PORTS } else { &WORKER_PORTS };
    ports.iter().map(|(port, _)| *port).collect()
}

/// What preflight found wrong on one host.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Problems {
    pub(crate) errors: Vec<String>,
    pub(crate) warnings: Vec<String>,
}

/// kubelet hands `resolv_conf` to pods and CoreDNS forwards to its
/// nameservers: a file that is missing, or lists only loopback stubs (such
/// as systemd-resolved's 127.0.0.53, which CoreDNS's loop plugin then
/// detects and stops on), breaks cluster DNS.
fn resolv_conf_problem(facts: &HostFacts, resolv_conf: &str) -> Option<String> {
    let hint = if facts.systemd_resolved {
        "this host runs systemd-resolved: set [cluster] resolv_conf = \"/run/systemd/resolve/resolv.conf\""
    } else {
        "set [cluster] resolv_conf to a file listing the real nameservers"
    };
    match &facts.nameservers {
        None => Some(format!(
            "kubelet's resolv.conf {resolv_conf} is missing or unreadable; {hint}"
        )),
        Some(nameservers) => {
            let loopback = |server: &String| {
                server
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|address| address.is_loopback())
            };
            (!nameservers.is_empty() && nameservers.iter().all(loopback)).then(|| {
                format!(
                    "kubelet's resolv.conf {resolv_conf} names only the local stub {} (CoreDNS would forward to itself); {hint}",
                    nameservers.join(", ")
                )
            })
        }
    }
}

/// Check one host's facts; `need_binaries`: the binaries must already be
/// in `bin_dir`; `resolv_conf`: kubelet will run, reading that file.
pub(crate) fn check_host(
    facts: &HostFacts,
    master: bool,
    bin_dir: &str,
    resolv_conf: Option<&str>,
    need_binaries: bool,
    check_ports: bool,
) -> Problems {
    let mut problems = Problems::default();
    if !ARCHITECTURES.contains(&facts.arch.as_str()) {
        problems.errors.push(format!(
            "unsupported architecture {:?}: Kubernetes binaries exist for {} only",
            facts.arch,
            ARCHITECTURES.join(" and ")
        ));
    }
    if need_binaries {
        let mut missing = Vec::new();
        let mut not_executable = Vec::new();
        for binary in binaries_for(master) {
            match facts.binaries.get(binary.name) {
                Some(BinaryPresence::Executable) => {}
                Some(BinaryPresence::NotExecutable) => not_executable.push(binary.name),
                _ => missing.push(binary.name),
            }
        }
        if !missing.is_empty() {
            problems.errors.push(format!(
                "missing in {bin_dir}: {} (place them there, or set [install] method = \"upload\" or \"apt\")",
                missing.join(", ")
            ));
        }
        if !not_executable.is_empty() {
            problems.errors.push(format!(
                "not executable in {bin_dir}: {}",
                not_executable.join(", ")
            ));
        }
    }
    let ports: &[(u16, &str)] = if !check_ports {
        &[]
    } else if master && !facts.etcd_data {
        &MASTER_PORTS
    } else if !master && !facts.kubelet_active {
        &WORKER_PORTS
    } else {
        &[]
    };
    match &facts.listeners {
        Some(listeners) => {
            for (port, program) in ports {
                let mut holders: Vec<String> = listeners
                    .iter()
                    .filter(|listener| listener.port == *port)
                    .filter(|listener| listener.program.as_deref() != Some(*program))
                    .map(|listener| {
                        listener
                            .holder
                            .clone()
                            .unwrap_or_else(|| "an unknown process".to_string())
                    })
                    .collect();
                holders.dedup();
                if !holders.is_empty() {
                    problems.errors.push(format!(
                        "port {port} (for {program}) is already held by {}; stop it first",
                        holders.join(", ")
                    ));
                }
            }
        }
        None if !ports.is_empty() => problems
            .warnings
            .push("`ss` is missing: could not check that ports are free".to_string()),
        None => {}
    }
    if let Some(problem) = resolv_conf.and_then(|path| resolv_conf_problem(facts, path)) {
        problems.errors.push(problem);
    }
    if facts.clock_skew_secs.abs() > MAX_CLOCK_SKEW_SECS {
        problems.warnings.push(format!(
            "clock is {:+.1} s off this machine's; etcd's TLS and leases dislike skew (run NTP)",
            facts.clock_skew_secs
        ));
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::Listener;

    fn facts() -> HostFacts {
        HostFacts {
            arch: "x86_64".into(),
            listeners: Some(vec![Listener {
                port: 22,
                holder: Some("sshd (pid 1)".into()),
                program: Some("sshd".into()),
            }]),
            binaries: binaries_for(true)
                .map(|binary| (binary.name.to_string(), BinaryPresence::Executable))
                .collect(),
            ..HostFacts::default()
        }
    }

    #[test]
    fn a_ready_host_has_no_problems() {
        assert_eq!(
            check_host(&facts(), true, "/usr/bin", None, true, true),
            Problems::default()
        );
    }

    #[test]
    fn names_missing_binaries_foreign_port_holders_odd_architectures_and_skew() {
        let mut facts = facts();
        facts.arch = "riscv64".into();
        facts.binaries.remove("kubelet");
        facts
            .binaries
            .insert("etcd".into(), BinaryPresence::NotExecutable);
        facts.clock_skew_secs = -3.5;
        let listeners = facts.listeners.as_mut().expect("listeners");
        listeners.push(Listener {
            port: 2379,
            holder: Some("python3 (pid 42)".into()),
            program: Some("python3".into()),
        });
        listeners.push(Listener {
            port: 2380,
            holder: Some("etcd (pid 7)".into()),
            program: Some("etcd".into()),
        });
        let problems = check_host(&facts, true, "/usr/local/bin", None, true, true);
        let errors = problems.errors.join("\n");
        assert!(errors.contains("riscv64"), "{errors}");
        assert!(
            errors.contains("missing in /usr/local/bin: kubelet"),
            "{errors}"
        );
        assert!(
            errors.contains("not executable in /usr/local/bin: etcd"),
            "{errors}"
        );
        assert!(
            errors.contains("port 2379 (for etcd) is already held by python3 (pid 42)"),
            "{errors}"
        );
        assert!(!errors.contains("2380"), "etcd on 2380 is ours: {errors}");
        assert!(problems.warnings[0].contains("-3.5 s"), "{problems:?}");

        // A master already running etcd is not checked for its ports; a
        // worker needs no etcd binaries.
        facts.etcd_data = true;
        facts.arch = "aarch64".into();
        facts
            .binaries
            .insert("kubelet".into(), BinaryPresence::Executable);
        facts.binaries.remove("etcd");
        assert!(check_host(&facts, false, "/usr/bin", None, true, true)
            .errors
            .is_empty());
    }

    #[test]
    fn a_resolv_conf_naming_only_a_loopback_stub_is_refused_with_the_fix() {
        let errors_with_kubelet = |facts: &HostFacts| {
            check_host(
                facts,
                false,
                "/usr/bin",
                Some("/etc/resolv.conf"),
                false,
                true,
            )
            .errors
        };
        let mut facts = facts();
        facts.systemd_resolved = true;
        facts.nameservers = Some(vec!["127.0.0.53".into()]);
        let errors = errors_with_kubelet(&facts);
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(
            errors[0].contains("names only the local stub 127.0.0.53"),
            "{errors:?}"
        );
        assert!(
            errors[0].contains("resolv_conf = \"/run/systemd/resolve/resolv.conf\""),
            "{errors:?}"
        );
        facts.nameservers = Some(vec!["127.0.0.53".into(), "10.0.0.2".into()]);
        assert!(errors_with_kubelet(&facts).is_empty());
        facts.nameservers = None;
        let errors = errors_with_kubelet(&facts);
        assert!(errors[0].contains("missing or unreadable"), "{errors:?}");
        // Without kubelet in the run, the file does not matter.
        assert!(check_host(&facts, false, "/usr/bin", None, false, true)
            .errors
            .is_empty());
    }
}
