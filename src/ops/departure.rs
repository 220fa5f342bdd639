//! What every departure from the cluster shares, whatever the host's role
//! (`remove-worker`, `remove-master`): the checks that refuse bad input
//! before anything changes, the departing host's address, its Node object,
//! the files and services ocfk8s gave it, and its material in the store.
//!
//! The inventory is the desired state, so a departing host is one the
//! operator already took out of it: [`check_departed`] refuses a name that
//! is still listed. Its address then comes from `--address` or from its
//! kubelet serving certificate in the store, and either must obey the
//! inventory's address rules and must not be a listed host's address, so a
//! typo cannot aim the cleanup at a host that stays.
//!
//! Every step is idempotent, so re-running a command that stopped half way
//! finishes the job: [`clean_host`] stops what runs and removes what is
//! there, [`remove_node_object`] skips a Node that is gone, and
//! [`archive_store_material`] is the last step (the store material is what
//! tells a re-run that something is left to do). Nothing is deleted that
//! cannot be recreated: etcd's data is moved aside on the host and the
//! store material into `archive/` in the store.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine as _;

use crate::error::bad_input;
use crate::input_file::excerpt;
use crate::inventory::{self, Cluster, Node, Role};
use crate::pki::material::Certificate;
use crate::remote::shell::{check_path, file_name, parent, quote};
use crate::remote::Host;
use crate::units::STAMP_DIR;

use super::status::url_host;

/// Where the store keeps the material of departed hosts:
/// `<pki_dir>/archive/<name>-<UTC timestamp>/`.
pub(crate) const ARCHIVE_DIR: &str = "archive";

/// etcd's data on a master (`--data-dir` in `etcd.service`).
const ETCD_DATA: &str = "/var/lib/etcd";

/// Where static pod manifests live.
const MANIFESTS: &str = "/etc/kubernetes/manifests/";

/// How long `kubectl drain` may wait for the pods to leave.
const DRAIN_TIMEOUT: &str = "120s";

/// Folders ocfk8s's files live in that are removed once empty; package
/// folders (`/etc/systemd/system`, `/etc/containerd`...) are never removed.
const OWN_FOLDERS: [&str; 4] = [
    "/etc/kubernetes",
    "/var/lib/kubelet",
    "/var/lib/kube-proxy",
    "/var/lib/ocfk8s",
];

/// The front door of a master, stopped first so the VIP moves away.
const FRONT_DOOR: [&str; 2] = ["keepalived.service", "nginx.service"];

/// Refuse (exit 2) a `name` that breaks the inventory's host-name rules or
/// that the inventory still lists: the inventory is the desired state, so a
/// host leaves it first and the command then makes the cluster match.
pub(crate) fn check_departed(cluster: &Cluster, name: &str, command: &str) -> anyhow::Result<()> {
    if !inventory::is_dns_label(name) {
        return Err(bad_input(format!(
            "{command}: {}: a host's name in the inventory is one, so no host of this cluster has this name",
            inventory::not_a_label(name)
        )));
    }
    let listed = cluster
        .masters
        .iter()
        .map(|node| (node, "[[master]]"))
        .chain(cluster.workers.iter().map(|node| (node, "[[worker]]")))
        .find(|(node, _)| node.name == name);
    if let Some((_, table)) = listed {
        return Err(bad_input(format!(
            "{command}: {name} is still listed under {table} in {}; nothing was changed. \
             The inventory is the desired state: remove {name}'s entry from it first, then run `ocfk8s {command} {name}`",
            cluster.inventory_path.display()
        )));
    }
    Ok(())
}

/// `--address ADDR`, checked with the inventory's address rules (exit 2).
pub(crate) fn parse_address(cluster: &Cluster, text: &str) -> anyhow::Result<IpAddr> {
    let address: IpAddr = text.parse().map_err(|_| {
        bad_input(format!(
            "--address \"{}\" is not an IP address; give the departing host's address as the inventory listed it",
            excerpt(text, 64)
        ))
    })?;
    check_address(cluster, address, &format!("--address {address}"))?;
    Ok(address)
}

/// The inventory's rules for a host address, and one more: it must not be
/// the address of a host the inventory still lists.
fn check_address(cluster: &Cluster, address: IpAddr, source: &str) -> anyhow::Result<()> {
    let refuse = |why: String| Err(bad_input(format!("{source}: {why}; nothing was changed")));
    if let Some(why) = inventory::unusable_address(address) {
        return refuse(why);
    }
    if let Some(first) = cluster.nodes().next() {
        if !inventory::same_family(first.address, address) {
            return refuse(format!(
                "{address} is {} but the cluster's hosts are {} ({} is {}): a cluster uses one address family",
                inventory::family(address),
                inventory::family(first.address),
                first.name,
                first.address
            ));
        }
    }
    if cluster.pod_cidr.contains(&address) {
        return refuse(format!(
            "{address} is inside pod_cidr {}, not a host's address",
            cluster.pod_cidr
        ));
    }
    if cluster.service_cidr.contains(&address) {
        return refuse(format!(
            "{address} is inside service_cidr {}, not a host's address",
            cluster.service_cidr
        ));
    }
    if let Some(ingress) = &cluster.ingress {
        if inventory::canonical(ingress.vip) == inventory::canonical(address) {
            return refuse(format!(
                "{address} is the VIP ([ingress] vip), which moves between the masters"
            ));
        }
    }
    let canonical = inventory::canonical(address);
    if let Some(node) = cluster
        .nodes()
        .find(|node| inventory::canonical(node.address) == canonical)
    {
        return refuse(format!(
            "{address} is the address of {}, which {} still lists: a host that stays in the cluster is never cleaned up. \
             Give the departing host's own address with --address, or use --force to leave the host alone",
            node.name,
            cluster.inventory_path.display()
        ));
    }
    Ok(())
}

/// The store folder holding `name`'s material, `None` when there is none.
/// Anything but a real folder there is bad input. `name` must have passed
/// [`check_departed`].
pub(crate) fn store_material(cluster: &Cluster, name: &str) -> anyhow::Result<Option<PathBuf>> {
    let folder = cluster.pki_dir.join("nodes").join(name);
    match std::fs::symlink_metadata(&folder) {
        Ok(metadata) if metadata.is_dir() => Ok(Some(folder)),
        Ok(metadata) => Err(bad_input(format!(
            "{}: {}, not a folder of the PKI store",
            folder.display(),
            crate::input_file::kind_of(metadata.file_type())
        ))),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(error) => Err(bad_input(format!("{}: {error}", folder.display()))),
    }
}

/// The archived copies of `name`'s material, oldest first.
pub(crate) fn archived(cluster: &Cluster, name: &str) -> Vec<PathBuf> {
    let prefix = format!("{name}-");
    let mut found: Vec<PathBuf> = std::fs::read_dir(cluster.pki_dir.join(ARCHIVE_DIR))
        .map(|entries| {
            entries
                .flatten()
                .filter(|entry| {
                    entry
                        .file_name()
                        .to_str()
                        .and_then(|file| file.strip_prefix(&prefix))
                        .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
                })
                .map(|entry| entry.path())
                .collect()
        })
        .unwrap_or_default();
    found.sort();
    found
}

/// `name`'s address from its kubelet serving certificate in the store
/// (`nodes/<name>/kubelet-server.crt`, whose one IP SAN is the node's
/// address), `None` when the store has no such certificate. The file is
/// read without following symlinks, and what it says must be `name`'s
/// identity and a usable address that no listed host has (bad input
/// otherwise). `name` must have passed [`check_departed`].
pub(crate) fn address_from_store(cluster: &Cluster, name: &str) -> anyhow::Result<Option<IpAddr>> {
    let relative = format!("nodes/{name}/kubelet-server.crt");
    let Some(bytes) = crate::pki::store_file::read(&cluster.pki_dir, &relative)? else {
        return Ok(None);
    };
    let path = cluster.pki_dir.join(&relative);
    let certificate = Certificate::parse(&path, &bytes)?;
    let expected = format!("system:node:{name}");
    let common_name = certificate.common_name();
    if common_name != expected {
        return Err(bad_input(format!(
            "{}: subject CN {:?}, not {expected:?}: not {name}'s kubelet serving certificate; \
             pass --address ADDR",
            path.display(),
            excerpt(&common_name, 64)
        )));
    }
    let addresses = ip_sans(&certificate)?;
    let [address] = addresses.as_slice() else {
        return Err(bad_input(format!(
            "{}: {} IP addresses among its SANs where the node's one address should be; pass --address ADDR",
            path.display(),
            addresses.len()
        )));
    };
    check_address(
        cluster,
        *address,
        &format!("{name}'s address {address} (from {})", path.display()),
    )?;
    Ok(Some(*address))
}

/// The IP addresses among a certificate's SANs.
fn ip_sans(certificate: &Certificate) -> anyhow::Result<Vec<IpAddr>> {
    use x509_parser::extensions::GeneralName;
    let parsed = certificate.x509()?;
    let mut addresses = Vec::new();
    if let Ok(Some(names)) = parsed.subject_alternative_name() {
        for name in &names.value.general_names {
            if let GeneralName::IPAddress(bytes) = name {
                let address = match bytes.len() {
                    4 => <[u8; 4]>::try_from(*bytes).ok().map(IpAddr::from),
                    16 => <[u8; 16]>::try_from(*bytes).ok().map(IpAddr::from),
                    _ => None,
                };
                addresses.extend(address);
            }
        }
    }
    Ok(addresses)
}

/// The departing host as a [`Node`] to connect to, with the cluster's
/// `[ssh]` user and port (its own overrides left the inventory with it).
pub(crate) fn departing_node(cluster: &Cluster, name: &str, address: IpAddr, role: Role) -> Node {
    Node {
        name: name.to_string(),
        address,
        role,
        ssh_user: cluster.ssh.user.clone(),
        ssh_port: cluster.ssh.port,
        labels: Default::default(),
        taints: Vec::new(),
    }
}

/// Every path ocfk8s writes on a host like `node`: the render table's
/// paths, nothing read or rendered.
pub(crate) fn placed_paths(cluster: &Cluster, node: &Node) -> Vec<String> {
    crate::render::placed_paths(cluster, node)
}

/// The units ocfk8s runs on `node` and stops when it leaves, in stop order
/// (the front door first, so the VIP moves, then kubelet, kube-proxy,
/// etcd). containerd is left running: it may serve more than Kubernetes.
fn departing_units(node: &Node) -> Vec<&'static str> {
    let mut units = Vec::new();
    if node.is_master() {
        units.extend(FRONT_DOOR);
    }
    units.extend(["kubelet.service", "kube-proxy.service"]);
    if node.is_master() {
        units.push("etcd.service");
    }
    units
}

/// The script that lists what of ocfk8s's is left on a departing host:
/// `file PATH` per placed file (and the unit records, and a master's etcd
/// data), `active UNIT` per unit still running.
pub(crate) fn leftovers_script(cluster: &Cluster, node: &Node) -> anyhow::Result<String> {
    let mut script = String::from("set -u\nexport LC_ALL=C\n");
    let mut paths = placed_paths(cluster, node);
    paths.push(STAMP_DIR.to_string());
    if node.is_master() {
        paths.push(ETCD_DATA.to_string());
    }
    for path in &paths {
        check_path(path)?;
        let _ = writeln!(
            script,
            "if [ -e {path} ] || [ -L {path} ]; then printf 'file %s\\n' {path}; fi",
            path = quote(path)
        );
    }
    for unit in departing_units(node) {
        let _ = writeln!(
            script,
            "if systemctl is-active --quiet {unit} 2>/dev/null; then echo {line}; fi",
            unit = quote(unit),
            line = quote(&format!("active {unit}"))
        );
    }
    Ok(script)
}

/// What of ocfk8s's is left on the departing `host` (see
/// [`leftovers_script`]): empty when it holds nothing of the cluster's.
pub(crate) async fn leftovers(
    cluster: &Cluster,
    host: &Host,
    node: &Node,
) -> anyhow::Result<Vec<String>> {
    let output = host
        .run_script(&leftovers_script(cluster, node)?)
        .await
        .with_context(|| format!("{}: reading what ocfk8s left there", host.name))?;
    Ok(output
        .stdout
        .lines()
        .filter(|line| line.starts_with("file ") || line.starts_with("active "))
        .map(str::to_string)
        .collect())
}

/// The script run on a departing host; `timestamp` names the folder etcd's
/// data moves to. One pass, idempotent: a unit is stopped only when
/// active and disabled only when enabled, a file removed only when there.
/// It prints `stopped UNIT`, `disabled UNIT`, `removed N`, `records N`,
/// `etcd-moved PATH`, `pods N` for [`summarize`].
pub(crate) fn clean_script(
    cluster: &Cluster,
    node: &Node,
    timestamp: &str,
) -> anyhow::Result<String> {
    if !timestamp
        .bytes()
        .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-')
    {
        anyhow::bail!("unexpected timestamp {timestamp:?}");
    }
    script_removing(&placed_paths(cluster, node), node, timestamp)
}

/// [`clean_script`] for these `paths`.
fn script_removing(paths: &[String], node: &Node, timestamp: &str) -> anyhow::Result<String> {
    for path in paths {
        check_path(path)?;
    }
    let mut script = String::from(
        "set -u\nexport LC_ALL=C\n\
         fail() { printf '%s\\n' \"$*\" >&2; exit 1; }\n\
         quiesce() {\n  \
           if systemctl is-active --quiet \"$1\" 2>/dev/null; then\n    \
             out=$(systemctl stop \"$1\" 2>&1) || fail \"systemctl stop $1 failed: $out\"\n    \
             echo \"stopped $1\"\n  \
           fi\n  \
           if systemctl is-enabled --quiet \"$1\" 2>/dev/null; then\n    \
             out=$(systemctl disable \"$1\" 2>&1) || fail \"systemctl disable $1 failed: $out\"\n    \
             echo \"disabled $1\"\n  \
           fi\n\
         }\n\
         removed=0\n\
         remove() {\n  \
           if [ -e \"$1\" ] || [ -L \"$1\" ]; then\n    \
             rm -f -- \"$1\" || fail \"cannot remove $1\"\n    \
             removed=$((removed + 1))\n  \
           fi\n\
         }\n",
    );
    let units = departing_units(node);
    if node.is_master() {
        // The VIP leaves with the front door; then the kubelet still runs
        // and stops the control-plane pods whose manifests go.
        for unit in FRONT_DOOR {
            let _ = writeln!(script, "quiesce {}", quote(unit));
        }
        for path in paths.iter().filter(|path| path.starts_with(MANIFESTS)) {
            let _ = writeln!(script, "remove {}", quote(path));
        }
    }
    for unit in units.iter().filter(|unit| !FRONT_DOOR.contains(unit)) {
        let _ = writeln!(script, "quiesce {}", quote(unit));
    }
    // As `kubeadm reset` does: the pods' containers outlive the kubelet.
    script.push_str(
        "if command -v crictl >/dev/null 2>&1 && [ -S /run/containerd/containerd.sock ]; then\n  \
           pods=$(crictl --runtime-endpoint unix:///run/containerd/containerd.sock pods -q 2>/dev/null | wc -l)\n  \
           if [ \"$pods\" -gt 0 ]; then\n    \
             out=$(crictl --runtime-endpoint unix:///run/containerd/containerd.sock rmp -fa 2>&1) || fail \"crictl rmp -fa failed: $out\"\n    \
             echo \"pods $pods\"\n  \
           fi\n\
         fi\n",
    );
    for path in paths {
        let _ = writeln!(script, "remove {}", quote(path));
        // Temporaries an interrupted write left beside it.
        let _ = writeln!(
            script,
            "for leftover in {}*; do remove \"$leftover\"; done",
            quote(&format!(
                "{}/.{}{}",
                parent(path).trim_end_matches('/'),
                file_name(path),
                crate::remote::TEMPORARY_MARKER
            ))
        );
    }
    let _ = writeln!(
        script,
        "records=0\n\
         if [ -d {stamps} ]; then\n  \
           records=$(find {stamps} -type f | wc -l)\n  \
           rm -rf -- {stamps} || fail 'cannot remove {STAMP_DIR}'\n\
         fi",
        stamps = quote(STAMP_DIR)
    );
    let _ = writeln!(
        script,
        "if [ \"$removed\" -gt 0 ]; then systemctl daemon-reload || fail 'systemctl daemon-reload failed'; fi"
    );
    for folder in own_folders(paths) {
        let _ = writeln!(script, "rmdir -- {} 2>/dev/null || true", quote(&folder));
    }
    if node.is_master() {
        let aside = format!("{ETCD_DATA}.removed-{timestamp}");
        let _ = writeln!(
            script,
            "if [ -e {data} ]; then\n  \
               [ ! -e {aside_word} ] || fail '{aside} already exists'\n  \
               mv -- {data} {aside_word} || fail 'cannot move {ETCD_DATA} to {aside}'\n  \
               echo {moved}\n\
             fi",
            data = quote(ETCD_DATA),
            aside_word = quote(&aside),
            moved = quote(&format!("etcd-moved {aside}")),
        );
    }
    script.push_str("echo \"removed $removed\"\necho \"records $records\"\n");
    Ok(script)
}

/// The folders of `paths` below ocfk8s's own folders (and those folders),
/// deepest first, for `rmdir` once empty.
fn own_folders(paths: &[String]) -> Vec<String> {
    let mut folders: Vec<String> = OWN_FOLDERS.iter().map(|own| own.to_string()).collect();
    folders.push(STAMP_DIR.to_string());
    for path in paths {
        let mut folder = parent(path);
        while OWN_FOLDERS
            .iter()
            .any(|own| folder.starts_with(&format!("{own}/")))
        {
            folders.push(folder.to_string());
            folder = parent(folder);
        }
    }
    folders.sort_by(|a, b| {
        b.matches('/')
            .count()
            .cmp(&a.matches('/').count())
            .then(a.cmp(b))
    });
    folders.dedup();
    folders
}

/// One line from what [`clean_script`] printed.
pub(crate) fn summarize(output: &str) -> String {
    let mut stopped = Vec::new();
    let mut disabled = 0;
    let mut removed = 0;
    let mut records = 0;
    let mut pods = 0;
    let mut moved = None;
    for line in output.lines() {
        if let Some(unit) = line.strip_prefix("stopped ") {
            stopped.push(unit.to_string());
        } else if line.starts_with("disabled ") {
            disabled += 1;
        } else if let Some(count) = line.strip_prefix("removed ") {
            removed = count.trim().parse().unwrap_or(0);
        } else if let Some(count) = line.strip_prefix("records ") {
            records = count.trim().parse().unwrap_or(0);
        } else if let Some(count) = line.strip_prefix("pods ") {
            pods = count.trim().parse().unwrap_or(0);
        } else if let Some(path) = line.strip_prefix("etcd-moved ") {
            moved = Some(path.to_string());
        }
    }
    let mut parts = Vec::new();
    if !stopped.is_empty() {
        parts.push(format!("stopped {}", stopped.join(", ")));
    }
    if disabled > 0 {
        parts.push(format!("disabled {disabled} unit(s)"));
    }
    if pods > 0 {
        parts.push(format!("removed {pods} pod sandbox(es)"));
    }
    if removed > 0 || records > 0 {
        parts.push(format!(
            "removed {removed} file(s) and {records} unit record(s)"
        ));
    }
    if let Some(path) = moved {
        parts.push(format!("etcd data moved to {path}"));
    }
    if parts.is_empty() {
        "nothing left: no service of ocfk8s's running, none of its files".to_string()
    } else {
        parts.join(", ")
    }
}

/// Stop ocfk8s's services on the departing `host` and remove what it
/// placed there (see [`clean_script`]); a one-line summary.
pub(crate) async fn clean_host(
    cluster: &Cluster,
    host: &Host,
    node: &Node,
) -> anyhow::Result<String> {
    let script = clean_script(cluster, node, &utc_stamp())?;
    let output = host.run_script(&script).await.with_context(|| {
        format!(
            "{}: cleaning up: stopping its services and removing ocfk8s's files",
            host.name
        )
    })?;
    Ok(summarize(&output.stdout))
}

/// The script run on a master for the departing Node `name`: the store's
/// `super-admin.conf` goes into a private folder removed when the script
/// ends (it is never printed nor left behind), then through the master's
/// own apiserver: nothing when the Node does not exist (`absent`), else
/// `cordon`, `drain` when asked, and `delete node`, each printed as done;
/// or, to probe, only `present`.
pub(crate) fn node_object_script(
    cluster: &Cluster,
    master: &Node,
    super_admin: &[u8],
    name: &str,
    action: NodeAction,
) -> String {
    let mut script = String::from("set -u\numask 077\n");
    script.push_str(
        "dir=$(mktemp -d /run/ocfk8s-departure.XXXXXX) || exit 1\ntrap 'rm -rf \"$dir\"' EXIT\n",
    );
    let _ = writeln!(
        script,
        "printf '%s' {} | base64 -d > \"$dir/kubeconfig\" || exit 1",
        quote(&base64::engine::general_purpose::STANDARD.encode(super_admin))
    );
    let _ = writeln!(
        script,
        "k() {{ {} --kubeconfig=\"$dir/kubeconfig\" {} --request-timeout=30s \"$@\"; }}",
        quote(&format!(
            "{}/kubectl",
            cluster.install.bin_dir.trim_end_matches('/')
        )),
        quote(&format!(
            "--server=https://{}:6443",
            url_host(master.address)
        ))
    );
    let _ = writeln!(
        script,
        "name={}\n\
         found=$(k get node \"$name\" --ignore-not-found -o name 2>&1) || {{ printf 'reading the Node %s failed: %s\\n' \"$name\" \"$found\" >&2; exit 1; }}\n\
         if [ -z \"$found\" ]; then echo absent; exit 0; fi",
        quote(name)
    );
    let (cordon, drain) = match action {
        NodeAction::Probe => {
            script.push_str("echo present\n");
            return script;
        }
        NodeAction::Remove { drain } => (true, drain),
    };
    let mut step = |verb: &str, args: &str, done: &str| {
        let _ = writeln!(
            script,
            "out=$(k {args} 2>&1) || {{ printf 'kubectl {verb} %s failed: %s\\n' \"$name\" \"$out\" >&2; exit 1; }}\necho {done}"
        );
    };
    if cordon {
        step("cordon", "cordon \"$name\"", "cordoned");
    }
    if drain {
        step(
            "drain",
            &format!(
                "drain \"$name\" --ignore-daemonsets --delete-emptydir-data --force --timeout={DRAIN_TIMEOUT}"
            ),
            "drained",
        );
    }
    step(
        "delete",
        "delete node \"$name\" --ignore-not-found",
        "deleted",
    );
    script
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NodeAction {
    Probe,
    Remove { drain: bool },
}

/// The store's `super-admin.conf`, read without following symlinks and
/// parsed as a kubeconfig. The caller holds the run lock and checked the
/// store ([`crate::pki::load_locked`]).
fn super_admin(cluster: &Cluster) -> anyhow::Result<Vec<u8>> {
    let relative = "super-admin.conf";
    let path = cluster.pki_dir.join(relative);
    let bytes = crate::pki::store_file::read(&cluster.pki_dir, relative)?.ok_or_else(|| {
        bad_input(format!(
            "{}: missing; run `ocfk8s pki generate`",
            path.display()
        ))
    })?;
    crate::pki::kubeconfig::parse(&path, &bytes)?;
    Ok(bytes)
}

async fn node_object(
    cluster: &Cluster,
    host: &Host,
    master: &Node,
    name: &str,
    action: NodeAction,
) -> anyhow::Result<Vec<String>> {
    let script = node_object_script(cluster, master, &super_admin(cluster)?, name, action);
    let output = host.run_script(&script).await.with_context(|| {
        format!(
            "{}: node: the Node object {name} through this master's apiserver",
            host.name
        )
    })?;
    Ok(output.stdout.lines().map(str::to_string).collect())
}

/// Whether the Node object `name` exists, asked through `master`'s
/// apiserver (on `host`).
pub(crate) async fn has_node_object(
    cluster: &Cluster,
    host: &Host,
    master: &Node,
    name: &str,
) -> anyhow::Result<bool> {
    let lines = node_object(cluster, host, master, name, NodeAction::Probe).await?;
    Ok(lines.iter().any(|line| line == "present"))
}

/// Cordon, drain (when `drain`) and delete the Node object `name` through
/// kubectl on `master` (connected as `host`), with the store's
/// `super-admin.conf` sent for the run only; nothing when it is gone.
/// Returns a one-line summary.
pub(crate) async fn remove_node_object(
    cluster: &Cluster,
    host: &Host,
    master: &Node,
    name: &str,
    drain: bool,
) -> anyhow::Result<String> {
    let lines = node_object(cluster, host, master, name, NodeAction::Remove { drain }).await?;
    if lines.iter().any(|line| line == "absent") {
        return Ok(format!("no Node object {name}: nothing to delete"));
    }
    let done: Vec<&str> = lines
        .iter()
        .map(String::as_str)
        .filter(|line| matches!(*line, "cordoned" | "drained" | "deleted"))
        .collect();
    Ok(format!("Node {name} {}", done.join(", ")))
}

/// Move `<pki_dir>/nodes/<name>` to `<pki_dir>/archive/<name>-<UTC
/// timestamp>/` (a rename: 0700 folders, both parents synced), under the
/// exclusive run lock; `None` when the store holds nothing of `name`'s.
pub(crate) fn archive_store_material(
    cluster: &Cluster,
    lock: &crate::lock::RunLock,
    name: &str,
) -> anyhow::Result<Option<PathBuf>> {
    if !lock.is_exclusive() {
        anyhow::bail!("archiving store material needs the exclusive run lock");
    }
    if !inventory::is_dns_label(name) {
        return Err(bad_input(inventory::not_a_label(name)));
    }
    let Some(source) = store_material(cluster, name)? else {
        return Ok(None);
    };
    let archive = cluster.pki_dir.join(ARCHIVE_DIR);
    match std::fs::symlink_metadata(&archive) {
        Ok(metadata) if metadata.is_dir() => {}
        Ok(metadata) => {
            return Err(bad_input(format!(
                "{}: {}, not a folder; the store keeps departed hosts' material there",
                archive.display(),
                crate::input_file::kind_of(metadata.file_type())
            )))
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(&archive)
                .with_context(|| format!("creating {}", archive.display()))?;
            sync_folder(&cluster.pki_dir)?;
        }
        Err(error) => return Err(error).with_context(|| format!("reading {}", archive.display())),
    }
    let stamp = utc_stamp();
    let mut target = archive.join(format!("{name}-{stamp}"));
    let mut attempt = 1;
    while std::fs::symlink_metadata(&target).is_ok() {
        attempt += 1;
        target = archive.join(format!("{name}-{stamp}-{attempt}"));
    }
    std::fs::rename(&source, &target).with_context(|| {
        format!(
            "archiving {}: moving it to {}",
            source.display(),
            target.display()
        )
    })?;
    std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700))
        .with_context(|| format!("chmod 0700 {}", target.display()))?;
    sync_folder(&archive)?;
    if let Some(nodes) = source.parent() {
        sync_folder(nodes)?;
    }
    Ok(Some(target))
}

fn sync_folder(folder: &Path) -> anyhow::Result<()> {
    std::fs::File::open(folder)
        .and_then(|handle| handle.sync_all())
        .with_context(|| format!("syncing {}", folder.display()))
}

/// Now in UTC as `20250102T030405Z`.
fn utc_stamp() -> String {
    let now = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}Z",
        now.year(),
        u8::from(now.month()),
        now.day(),
        now.hour(),
        now.minute(),
        now.second()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVENTORY: &str = r#"
[cluster]
name = "unit"
kubernetes_version = "1.31.4"
pod_cidr = "10.244.0.0/16"
service_cidr = "10.96.0.0/12"

[ssh]
user = "admin"
port = 2222

[install]
method = "none"
bin_dir = "/usr/local/bin"

[ingress]
vip = "192.0.2.100"
interface = "eth0"
virtual_router_id = 51
node_port = 31234
server_names = ["*.example.org"]

[[master]]
name = "m1"
address = "192.0.2.11"

[[worker]]
name = "w1"
address = "192.0.2.21"
"#;

    const W2: &str = "\n[[worker]]\nname = \"w2\"\naddress = \"192.0.2.22\"\n";

    fn cluster_in(dir: &Path, text: &str) -> Cluster {
        let path = dir.join("inventory.toml");
        std::fs::write(&path, text).expect("write inventory");
        inventory::load(&path).expect("inventory").cluster
    }

    #[test]
    fn listed_and_malformed_names_are_refused_with_exit_2() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cluster = cluster_in(dir.path(), INVENTORY);
        let error = check_departed(&cluster, "w1", "remove-worker").expect_err("listed");
        assert_eq!(crate::error::exit_code(&error), 2);
        let message = format!("{error:#}");
        assert!(message.contains("under [[worker]] in"), "{message}");
        assert!(message.contains("remove w1's entry"), "{message}");
        let error = check_departed(&cluster, "m1", "remove-master").expect_err("listed");
        assert!(format!("{error:#}").contains("[[master]]"));
        for hostile in ["w1;touch /tmp/x", "../w1", "W1", "", "w1\nw2"] {
            let error = check_departed(&cluster, hostile, "remove-worker").expect_err(hostile);
            assert_eq!(crate::error::exit_code(&error), 2, "{hostile:?}");
            assert!(!format!("{error:#}").contains('\n'), "{error:#}");
        }
        check_departed(&cluster, "w2", "remove-worker").expect("departed");
    }

    #[test]
    fn addresses_follow_the_inventory_rules() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cluster = cluster_in(dir.path(), INVENTORY);
        assert_eq!(
            parse_address(&cluster, "192.0.2.22").expect("fine"),
            "192.0.2.22".parse::<IpAddr>().expect("ip")
        );
        for (bad, why) in [
            ("nonsense", "not an IP address"),
            ("127.0.0.1", "loopback"),
            ("2001:db8::1", "one address family"),
            ("10.244.1.1", "pod_cidr"),
            ("10.96.0.5", "service_cidr"),
            ("192.0.2.100", "VIP"),
            ("192.0.2.21", "the address of w1"),
            ("::ffff:192.0.2.22", "IPv4-mapped"),
        ] {
            let error = parse_address(&cluster, bad).expect_err(bad);
            assert_eq!(crate::error::exit_code(&error), 2, "{bad}");
            assert!(format!("{error:#}").contains(why), "{bad}: {error:#}");
        }
    }

    #[test]
    fn the_address_comes_from_the_kubelet_serving_certificate() {
        let dir = tempfile::tempdir().expect("temp dir");
        let with_w2 = cluster_in(dir.path(), &format!("{INVENTORY}{W2}"));
        let lock = crate::lock::acquire(&with_w2.pki_dir, "test").expect("lock");
        crate::pki::generate_locked(&with_w2, &lock).expect("generate");
        drop(lock);
        let cluster = cluster_in(dir.path(), INVENTORY);
        assert_eq!(
            address_from_store(&cluster, "w2").expect("read"),
            Some("192.0.2.22".parse().expect("ip"))
        );
        assert_eq!(address_from_store(&cluster, "w9").expect("read"), None);
        assert!(store_material(&cluster, "w2").expect("w2").is_some());

        // Renamed in the inventory with the same address: refused, so the
        // host that stays is never cleaned.
        let renamed = cluster_in(
            dir.path(),
            &format!("{INVENTORY}\n[[worker]]\nname = \"w5\"\naddress = \"192.0.2.22\"\n"),
        );
        let error = address_from_store(&renamed, "w2").expect_err("w5's address");
        assert!(format!("{error:#}").contains("address of w5"), "{error:#}");

        // Another node's certificate in w2's place is not w2's.
        let store = &cluster.pki_dir;
        std::fs::copy(
            store.join("nodes/w1/kubelet-server.crt"),
            store.join("nodes/w2/kubelet-server.crt"),
        )
        .expect("copy");
        let error = address_from_store(&cluster, "w2").expect_err("w1's certificate");
        assert!(format!("{error:#}").contains("system:node:w1"), "{error:#}");

        // A symlink out of the store is not followed.
        std::fs::remove_file(store.join("nodes/w2/kubelet-server.crt")).expect("remove");
        std::os::unix::fs::symlink(
            store.join("nodes/w1/kubelet-server.crt"),
            store.join("nodes/w2/kubelet-server.crt"),
        )
        .expect("link");
        let error = address_from_store(&cluster, "w2").expect_err("symlink");
        assert_eq!(crate::error::exit_code(&error), 2);

        // Archived: the material moves to archive/w2-<timestamp>, 0700.
        let lock = crate::lock::acquire(&cluster.pki_dir, "test").expect("lock");
        let archived_to = archive_store_material(&cluster, &lock, "w2")
            .expect("archive")
            .expect("something archived");
        assert!(archived_to.starts_with(store.join("archive")));
        assert!(archived_to.join("kubelet.crt").is_file());
        let mode = std::fs::metadata(&archived_to)
            .expect("stat")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o700);
        assert!(store_material(&cluster, "w2").expect("gone").is_none());
        assert_eq!(archived(&cluster, "w2"), vec![archived_to]);
        assert!(archive_store_material(&cluster, &lock, "w2")
            .expect("again")
            .is_none());
    }

    #[test]
    fn a_worker_loses_its_own_files_and_no_etcd_path() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cluster = cluster_in(dir.path(), INVENTORY);
        let address = "192.0.2.22".parse().expect("ip");
        let worker = departing_node(&cluster, "w2", address, Role::Worker);
        assert_eq!(worker.ssh_user, "admin");
        assert_eq!(worker.ssh_port, 2222);
        let paths = placed_paths(&cluster, &worker);
        for expected in [
            "/etc/kubernetes/kubelet.conf",
            "/var/lib/kubelet/pki/kubelet.key",
            "/etc/systemd/system/kubelet.service",
            "/etc/systemd/system/kube-proxy.service",
            "/var/lib/kube-proxy/kubeconfig.conf",
        ] {
            assert!(paths.iter().any(|path| path == expected), "{expected}");
        }
        assert!(
            !paths.iter().any(|path| path.contains("etcd")
                || path.contains("manifests")
                || path.ends_with("ca.key")),
            "{paths:?}"
        );
        let master = departing_node(
            &cluster,
            "m2",
            "192.0.2.12".parse().expect("ip"),
            Role::Master,
        );
        let paths = placed_paths(&cluster, &master);
        assert!(paths
            .iter()
            .any(|path| path == "/etc/systemd/system/etcd.service"));
        assert!(paths.iter().any(|path| path.starts_with(MANIFESTS)));
    }

    #[test]
    fn the_clean_scripts_quote_every_path_and_parse_under_sh() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cluster = cluster_in(dir.path(), INVENTORY);
        let worker = departing_node(
            &cluster,
            "w2",
            "192.0.2.22".parse().expect("ip"),
            Role::Worker,
        );
        let master = departing_node(
            &cluster,
            "m2",
            "192.0.2.12".parse().expect("ip"),
            Role::Master,
        );
        for node in [&worker, &master] {
            let script = clean_script(&cluster, node, "20250102T030405Z").expect("script");
            let probe = leftovers_script(&cluster, node).expect("script");
            for text in [&script, &probe] {
                let check = std::process::Command::new("sh")
                    .args(["-n", "-c", text])
                    .output()
                    .expect("sh -n");
                assert!(
                    check.status.success(),
                    "{}",
                    String::from_utf8_lossy(&check.stderr)
                );
            }
            assert!(
                script.contains("remove '/etc/kubernetes/kubelet.conf'"),
                "{script}"
            );
            assert!(script.contains("quiesce 'kubelet.service'"));
            assert!(!script.contains("rmdir -- '/etc/systemd"), "{script}");
            assert!(!script.contains("rm -rf -- '/var/lib/etcd"), "{script}");
        }
        let script = clean_script(&cluster, &master, "20250102T030405Z").expect("script");
        let front = script.find("quiesce 'nginx.service'").expect("nginx");
        let manifests = script
            .find("remove '/etc/kubernetes/manifests/kube-apiserver.yaml'")
            .expect("manifest");
        let kubelet = script.find("quiesce 'kubelet.service'").expect("kubelet");
        assert!(front < manifests && manifests < kubelet, "{script}");
        assert!(script.contains("mv -- '/var/lib/etcd' '/var/lib/etcd.removed-20250102T030405Z'"));
        assert!(clean_script(&cluster, &master, "x; rm -rf /").is_err());

        // A hostile path travels as one word.
        let hostile = "/etc/kubernetes/it's $(touch pwned); a b".to_string();
        let script = script_removing(std::slice::from_ref(&hostile), &worker, "20250102T030405Z")
            .expect("script");
        assert!(
            script.contains(r"remove '/etc/kubernetes/it'\''s $(touch pwned); a b'"),
            "{script}"
        );
        assert!(script_removing(&["relative/path".to_string()], &worker, "x").is_err());
        assert!(script_removing(&["/etc/a\nb".to_string()], &worker, "x").is_err());
        let folders = own_folders(&placed_paths(&cluster, &master));
        assert_eq!(
            folders.first().map(String::as_str),
            Some("/etc/kubernetes/pki/etcd")
        );
        assert!(folders
            .iter()
            .all(|folder| OWN_FOLDERS.iter().any(|own| folder.starts_with(own))));
    }

    #[test]
    fn the_clean_script_really_cleans_a_fake_root_and_a_second_run_finds_nothing() {
        // The script on a scratch tree: every absolute path is rewritten
        // below it, and systemctl is a recording stub.
        let dir = tempfile::tempdir().expect("temp dir");
        let cluster = cluster_in(dir.path(), INVENTORY);
        let worker = departing_node(
            &cluster,
            "w2",
            "192.0.2.22".parse().expect("ip"),
            Role::Worker,
        );
        let root = dir.path().join("root");
        let bin = dir.path().join("bin");
        std::fs::create_dir_all(&bin).expect("bin");
        std::fs::write(
            bin.join("systemctl"),
            format!(
                "#!/bin/sh\necho \"$@\" >> {log}\ncase \"$1\" in is-active|is-enabled) [ -f {root}/active-$3 ] ;; stop|disable) rm -f {root}/active-$2 ;; esac\n",
                log = dir.path().join("systemctl.log").display(),
                root = root.display()
            ),
        )
        .expect("stub");
        std::fs::set_permissions(
            bin.join("systemctl"),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
        let paths = placed_paths(&cluster, &worker);
        for path in &paths {
            let file = root.join(path.trim_start_matches('/'));
            std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
            std::fs::write(&file, "x").expect("write");
        }
        let stamps = root.join(STAMP_DIR.trim_start_matches('/'));
        std::fs::create_dir_all(&stamps).expect("stamps");
        std::fs::write(stamps.join("kubelet.service"), "ab").expect("stamp");
        std::fs::write(root.join("active-kubelet.service"), "").expect("active");
        let rooted = |script: String| {
            let root = root.display().to_string();
            let mut script = script;
            for prefix in ["/etc/", "/var/"] {
                script = script.replace(&format!("'{prefix}"), &format!("'{root}{prefix}"));
            }
            script
        };
        let run = |script: String| {
            let output = std::process::Command::new("sh")
                .arg("-c")
                .arg(script)
                .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
                .output()
                .expect("sh");
            assert!(
                output.status.success(),
                "{}",
                String::from_utf8_lossy(&output.stderr)
            );
            String::from_utf8_lossy(&output.stdout).into_owned()
        };
        let before = run(rooted(leftovers_script(&cluster, &worker).expect("probe")));
        assert!(before.contains("active kubelet.service"), "{before}");
        assert!(before.contains("/etc/kubernetes/kubelet.conf"), "{before}");
        let output = run(rooted(
            clean_script(&cluster, &worker, "20250102T030405Z").expect("script"),
        ));
        let summary = summarize(&output);
        assert_eq!(
            summary,
            format!(
                "stopped kubelet.service, removed {} file(s) and 1 unit record(s)",
                paths.len()
            ),
            "{output}"
        );
        for path in &paths {
            assert!(!root.join(path.trim_start_matches('/')).exists(), "{path}");
        }
        assert!(
            !root.join("etc/kubernetes").exists(),
            "empty folders of ours go"
        );
        assert!(
            root.join("etc/systemd/system").exists(),
            "package folders stay"
        );
        let after = run(rooted(leftovers_script(&cluster, &worker).expect("probe")));
        assert_eq!(after, "");
        let again = run(rooted(
            clean_script(&cluster, &worker, "20250102T030405Z").expect("script"),
        ));
        assert!(summarize(&again).starts_with("nothing left"), "{again}");

        // A hostile name is removed as the one file it is, and runs nothing.
        let hostile = "/etc/kubernetes/it's $(touch pwned); a b".to_string();
        let file = root.join(hostile.trim_start_matches('/'));
        std::fs::create_dir_all(file.parent().expect("parent")).expect("mkdir");
        std::fs::write(&file, "x").expect("write");
        let script = script_removing(std::slice::from_ref(&hostile), &worker, "20250102T030405Z")
            .expect("script");
        let output = run(rooted(script).replace(
            "set -u\n",
            &format!("set -u\ncd {}\n", quote(&dir.path().display().to_string())),
        ));
        assert!(summarize(&output).contains("removed 1 file(s)"), "{output}");
        assert!(!file.exists());
        assert!(!dir.path().join("pwned").exists(), "the path ran a command");
    }

    #[test]
    fn the_node_script_never_holds_the_kubeconfig_in_clear_and_parses() {
        let dir = tempfile::tempdir().expect("temp dir");
        let cluster = cluster_in(dir.path(), INVENTORY);
        let secret = b"client-key-data: SECRET-KEY-MATERIAL\n";
        for action in [NodeAction::Probe, NodeAction::Remove { drain: true }] {
            let script = node_object_script(&cluster, &cluster.masters[0], secret, "w2", action);
            assert!(!script.contains("SECRET-KEY-MATERIAL"));
            let check = std::process::Command::new("sh")
                .args(["-n", "-c", &script])
                .output()
                .expect("sh -n");
            assert!(
                check.status.success(),
                "{}",
                String::from_utf8_lossy(&check.stderr)
            );
            assert!(script.contains("--server=https://192.0.2.11:6443"));
        }
        let script = node_object_script(
            &cluster,
            &cluster.masters[0],
            secret,
            "w2",
            NodeAction::Remove { drain: true },
        );
        assert!(
            script.contains("--ignore-daemonsets --delete-emptydir-data --force --timeout=120s")
        );
        let cordon = script.find("k cordon").expect("cordon");
        let drain = script.find("k drain").expect("drain");
        let delete = script.find("k delete node").expect("delete");
        assert!(cordon < drain && drain < delete);
        let no_drain = node_object_script(
            &cluster,
            &cluster.masters[0],
            secret,
            "w2",
            NodeAction::Remove { drain: false },
        );
        assert!(!no_drain.contains("k drain"));
    }
}
