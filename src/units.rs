//! The services ocfk8s manages: which phase starts each one, whether it
//! must stay running, and how new inputs reach it. One table, like
//! `render/host_plan.rs` for files.
//!
//! A service's inputs are the files that name it in their `restarts`. After
//! a service is (re)started with some inputs, their combined SHA-256 is
//! recorded on the host in [`STAMP_DIR`]`/<unit>`; a service whose record
//! differs from the inputs it should run with is still owed its restart,
//! even when the files themselves were written by an earlier, killed run.

use crate::phase::Phase;

/// Where each service's applied inputs are recorded on a host.
pub(crate) const STAMP_DIR: &str = "/var/lib/ocfk8s/units";

/// How new inputs reach a running service.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OnChange {
    Restart,
    /// `systemctl reload`: nginx and keepalived keep their sockets and the
    /// VIP.
    Reload,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Unit {
    pub(crate) name: &'static str,
    /// Must be active (a daemon); `false` for one-shot units that only run
    /// again when their inputs change (sysctl, modules).
    pub(crate) daemon: bool,
    pub(crate) on_change: OnChange,
}

const TABLE: &[Unit] = &[
    Unit {
        name: "systemd-modules-load.service",
        daemon: false,
        on_change: OnChange::Restart,
    },
    Unit {
        name: "systemd-sysctl.service",
        daemon: false,
        on_change: OnChange::Restart,
    },
    Unit {
        name: "containerd.service",
        daemon: true,
        on_change: OnChange::Restart,
    },
    Unit {
        name: "etcd.service",
        daemon: true,
        on_change: OnChange::Restart,
    },
    Unit {
        name: "kubelet.service",
        daemon: true,
        on_change: OnChange::Restart,
    },
    Unit {
        name: "kube-proxy.service",
        daemon: true,
        on_change: OnChange::Restart,
    },
    Unit {
        name: "keepalived.service",
        daemon: true,
        on_change: OnChange::Reload,
    },
    Unit {
        name: "nginx.service",
        daemon: true,
        on_change: OnChange::Reload,
    },
];

/// The unit called `name`; units outside the table are plain daemons.
pub(crate) fn unit(name: &str) -> Unit {
    TABLE
        .iter()
        .find(|unit| unit.name == name)
        .copied()
        .unwrap_or(Unit {
            name: "",
            daemon: true,
            on_change: OnChange::Restart,
        })
}

/// The phase that (re)starts `name` on a master or a worker: etcd in
/// `etcd`; containerd and kubelet on masters in `control-plane` (kubelet
/// runs the static control-plane pods), elsewhere in `nodes`; host
/// preparation and kube-proxy in `nodes`; the front door in `lb`.
pub(crate) fn phase_of(name: &str, master: bool) -> Phase {
    match name {
        "etcd.service" => Phase::Etcd,
        "containerd.service" | "kubelet.service" if master => Phase::ControlPlane,
        "keepalived.service" | "nginx.service" => Phase::Lb,
        _ => Phase::Nodes,
    }
}

/// Order in which a host's units start: the table's order.
pub(crate) fn start_order(name: &str) -> usize {
    TABLE
        .iter()
        .position(|unit| unit.name == name)
        .unwrap_or(TABLE.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_and_kinds() {
        assert_eq!(phase_of("kubelet.service", true), Phase::ControlPlane);
        assert_eq!(phase_of("kubelet.service", false), Phase::Nodes);
        assert_eq!(phase_of("etcd.service", true), Phase::Etcd);
        assert_eq!(phase_of("nginx.service", true), Phase::Lb);
        assert_eq!(unit("nginx.service").on_change, OnChange::Reload);
        assert!(!unit("systemd-sysctl.service").daemon);
        assert!(start_order("containerd.service") < start_order("kubelet.service"));
    }
}
