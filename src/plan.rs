//! Desired against actual, per host: which files to add or change, which
//! temporaries to clean up, and which services their changes (re)start.
//!
//! Pure: it compares rendered files with a host's state report (hashes and
//! modes) and never touches the network. Diffs need the old contents of the
//! changed non-secret files, fetched separately and passed in. Secrets are
//! only ever described by their sha256.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::phase::Phase;
use crate::remote::HostState;
use crate::render::HostFiles;
use crate::units::{self, OnChange};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum FileAction {
    /// Absent on the host.
    Add,
    /// Contents differ (the mode may too).
    Change,
    /// Only the mode or the owner differs.
    Mode,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct FileChange {
    pub(crate) path: String,
    pub(crate) action: FileAction,
    #[serde(serialize_with = "octal")]
    pub(crate) mode: u32,
    #[serde(serialize_with = "octal_option")]
    pub(crate) old_mode: Option<u32>,
    pub(crate) secret: bool,
    pub(crate) sha256: String,
    pub(crate) old_sha256: Option<String>,
    /// A binary placed by the install phase: shown by its sha256.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub(crate) binary: bool,
    /// Unified diff, for changed non-secret files when old contents are known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) diff: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum ServiceAction {
    Start,
    Restart,
    Reload,
}

impl ServiceAction {
    pub(crate) fn verb(self) -> &'static str {
        match self {
            ServiceAction::Start => "start",
            ServiceAction::Restart => "restart",
            ServiceAction::Reload => "reload",
        }
    }
}

/// A service that is not in its desired state: running (daemons) with the
/// inputs it should have.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ServiceChange {
    pub(crate) unit: String,
    pub(crate) action: ServiceAction,
    /// Why, for people: "inactive", "inputs changed", ...
    pub(crate) reason: String,
    /// The phase that acts on it.
    pub(crate) phase: &'static str,
    /// Recorded on the host once the action succeeded.
    pub(crate) inputs_sha256: String,
}

/// Which services a plan covers: those of the phases that will run, on a
/// master or a worker.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServiceScope<'a> {
    pub(crate) phases: &'a [Phase],
    pub(crate) master: bool,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct HostPlan {
    pub(crate) node: String,
    pub(crate) files: Vec<FileChange>,
    pub(crate) stray_temporaries: Vec<String>,
    pub(crate) services: Vec<ServiceChange>,
    /// Packages the install phase would install (`method = "apt"`), as
    /// `name=version` requests.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(crate) packages: Vec<String>,
}

/// A binary in `bin_dir` that a unit runs: its sha256 is part of the unit's
/// inputs, so a new binary restarts the service through the same plan as a
/// new configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BinaryInput {
    /// Absolute path on the host (`<bin_dir>/kubelet`).
    pub(crate) path: String,
    /// What the install phase will place there (`method = "upload"`, the
    /// phase not skipped); `None`: whatever the host holds is what the
    /// service runs, and nothing is planned for the file itself.
    pub(crate) sha256: Option<String>,
    /// Units that run it.
    pub(crate) restarts: Vec<String>,
}

/// The mode of every binary ocfk8s places.
pub(crate) const BINARY_MODE: u32 = 0o755;

impl HostPlan {
    pub(crate) fn is_empty(&self) -> bool {
        self.files.is_empty()
            && self.stray_temporaries.is_empty()
            && self.services.is_empty()
            && self.packages.is_empty()
    }

    /// Changed non-secret files whose diff needs the old contents.
    pub(crate) fn paths_to_diff(&self) -> Vec<&str> {
        self.files
            .iter()
            .filter(|file| file.action == FileAction::Change && !file.secret)
            .map(|file| file.path.as_str())
            .collect()
    }
}

pub(crate) fn sha256_hex(contents: &[u8]) -> String {
    hex::encode(Sha256::digest(contents))
}

/// What `host` needs to hold exactly `desired` (and `binaries` whose
/// sha256 is given) and run its services in `scope` with those files and
/// binaries.
pub(crate) fn plan_host(
    desired: &HostFiles,
    binaries: &[BinaryInput],
    state: &HostState,
    scope: ServiceScope,
) -> HostPlan {
    let mut files = Vec::new();
    for file in &desired.files {
        let sha256 = sha256_hex(&file.contents);
        let mode = file.mode & 0o7777;
        let actual = state.files.get(&file.path).cloned().flatten();
        let action = match &actual {
            None => Some(FileAction::Add),
            Some(remote) if remote.sha256 != sha256 => Some(FileAction::Change),
            Some(remote) if remote.mode != mode || !remote.root_owned => Some(FileAction::Mode),
            Some(_) => None,
        };
        if let Some(action) = action {
            files.push(FileChange {
                path: file.path.clone(),
                action,
                mode,
                old_mode: actual.as_ref().map(|remote| remote.mode),
                secret: file.secret,
                sha256,
                old_sha256: actual.map(|remote| remote.sha256),
                binary: false,
                diff: None,
            });
        }
    }
    for binary in binaries {
        let Some(sha256) = &binary.sha256 else {
            continue;
        };
        let actual = state.files.get(&binary.path).cloned().flatten();
        let action = match &actual {
            None => Some(FileAction::Add),
            Some(remote) if &remote.sha256 != sha256 => Some(FileAction::Change),
            Some(remote) if remote.mode != BINARY_MODE || !remote.root_owned => {
                Some(FileAction::Mode)
            }
            Some(_) => None,
        };
        if let Some(action) = action {
            files.push(FileChange {
                path: binary.path.clone(),
                action,
                mode: BINARY_MODE,
                old_mode: actual.as_ref().map(|remote| remote.mode),
                secret: false,
                sha256: sha256.clone(),
                old_sha256: actual.map(|remote| remote.sha256),
                binary: true,
                diff: None,
            });
        }
    }
    let services = plan_services(desired, binaries, state, scope);
    HostPlan {
        node: desired.node.clone(),
        files,
        stray_temporaries: state.temporaries.clone(),
        services,
        packages: Vec::new(),
    }
}

/// Fill in unified diffs from the old contents of changed non-secret files.
pub(crate) fn add_diffs(plan: &mut HostPlan, desired: &HostFiles, old: &BTreeMap<String, Vec<u8>>) {
    for change in &mut plan.files {
        if change.secret || change.action != FileAction::Change {
            continue;
        }
        let (Some(old), Some(new)) = (
            old.get(&change.path),
            desired.files.iter().find(|file| file.path == change.path),
        ) else {
            continue;
        };
        let old = String::from_utf8_lossy(old);
        let new = String::from_utf8_lossy(&new.contents);
        let diff = similar::TextDiff::from_lines(old.as_ref(), new.as_ref())
            .unified_diff()
            .context_radius(3)
            .header(
                &format!("{} (on host)", change.path),
                &format!("{} (rendered)", change.path),
            )
            .to_string();
        change.diff = Some(diff);
    }
}

/// The combined SHA-256 of `unit`'s inputs: the files naming it and the
/// binaries it runs (their desired sha256, else what `state` says the host
/// holds; an absent binary counts as zeros), in path order.
pub(crate) fn unit_inputs(
    desired: &HostFiles,
    binaries: &[BinaryInput],
    state: &HostState,
    unit: &str,
) -> String {
    let names = |restarts: &[String]| restarts.iter().any(|name| name == unit);
    let mut inputs: Vec<(&str, Vec<u8>)> = desired
        .files
        .iter()
        .filter(|file| names(&file.restarts))
        .map(|file| (file.path.as_str(), Sha256::digest(&file.contents).to_vec()))
        .collect();
    for binary in binaries.iter().filter(|binary| names(&binary.restarts)) {
        let sha256 = binary.sha256.clone().or_else(|| {
            state
                .files
                .get(&binary.path)
                .cloned()
                .flatten()
                .map(|remote| remote.sha256)
        });
        let digest = sha256
            .and_then(|hex| hex::decode(hex).ok())
            .unwrap_or_else(|| vec![0; 32]);
        inputs.push((binary.path.as_str(), digest));
    }
    // Files alone come sorted already; sorting keeps their hash as before.
    inputs.sort_by(|a, b| a.0.cmp(b.0));
    let mut hasher = Sha256::new();
    for (path, digest) in inputs {
        hasher.update(path.as_bytes());
        hasher.update([0]);
        hasher.update(digest);
    }
    hex::encode(hasher.finalize())
}

/// The services in `scope` that are not running with their inputs, in
/// start order.
fn plan_services(
    desired: &HostFiles,
    binaries: &[BinaryInput],
    state: &HostState,
    scope: ServiceScope,
) -> Vec<ServiceChange> {
    let mut names = scoped_units(desired, &scope);
    names.sort_by_key(|name| units::start_order(name));
    names
        .into_iter()
        .filter_map(|name| {
            let phase = units::phase_of(name, scope.master);
            let unit = units::unit(name);
            let inputs = unit_inputs(desired, binaries, state, name);
            let active = state.services.get(name).map(String::as_str);
            let recorded = state.stamps.get(name);
            let (action, reason) = if unit.daemon && active != Some("active") {
                (
                    ServiceAction::Start,
                    active.unwrap_or("unknown").to_string(),
                )
            } else if recorded != Some(&inputs) {
                let reason = if recorded.is_some() {
                    "inputs changed"
                } else {
                    "not yet run with ocfk8s's files"
                };
                let action = match (unit.daemon, unit.on_change) {
                    (true, OnChange::Reload) => ServiceAction::Reload,
                    _ => ServiceAction::Restart,
                };
                (action, reason.to_string())
            } else {
                return None;
            };
            Some(ServiceChange {
                unit: name.to_string(),
                action,
                reason,
                phase: phase.name(),
                inputs_sha256: inputs,
            })
        })
        .collect()
}

/// Every unit mentioned by `desired`'s files.
pub(crate) fn managed_units(desired: &HostFiles) -> Vec<&str> {
    let mut units: Vec<&str> = desired
        .files
        .iter()
        .flat_map(|file| file.restarts.iter().map(String::as_str))
        .collect();
    units.sort_unstable();
    units.dedup();
    units
}

/// The units of `desired` that `scope`'s phases act on: the ones whose
/// state a plan of those phases reads.
pub(crate) fn scoped_units<'a>(desired: &'a HostFiles, scope: &ServiceScope<'_>) -> Vec<&'a str> {
    managed_units(desired)
        .into_iter()
        .filter(|name| scope.phases.contains(&units::phase_of(name, scope.master)))
        .collect()
}

/// The human-readable plan.
pub(crate) fn text(plans: &[HostPlan]) -> String {
    let mut out = String::new();
    let mut adds = 0;
    let mut changes = 0;
    let mut pending_hosts = 0;
    for plan in plans {
        if plan.is_empty() {
            let _ = writeln!(out, "{}: up to date", plan.node);
            continue;
        }
        pending_hosts += 1;
        let _ = writeln!(out, "{}:", plan.node);
        for file in &plan.files {
            match file.action {
                FileAction::Add => {
                    adds += 1;
                    let _ = writeln!(
                        out,
                        "  + {} (mode {:04o}{})",
                        file.path,
                        file.mode,
                        hash_note(file)
                    );
                }
                FileAction::Change => {
                    changes += 1;
                    let mode = match file.old_mode {
                        Some(old) if old != file.mode => {
                            format!(", mode {old:04o} -> {:04o}", file.mode)
                        }
                        _ => String::new(),
                    };
                    let _ = writeln!(out, "  ~ {}{mode}{}", file.path, hash_note(file));
                    if let Some(diff) = &file.diff {
                        for line in diff.lines() {
                            let _ = writeln!(out, "      {line}");
                        }
                    }
                }
                FileAction::Mode => {
                    changes += 1;
                    let old_mode = file.old_mode.unwrap_or(0);
                    if old_mode == file.mode {
                        let _ = writeln!(out, "  ~ {} owner -> root:root", file.path);
                    } else {
                        let _ = writeln!(
                            out,
                            "  ~ {} mode {old_mode:04o} -> {:04o}",
                            file.path, file.mode
                        );
                    }
                }
            }
        }
        for temporary in &plan.stray_temporaries {
            let _ = writeln!(
                out,
                "  - {temporary} (temporary left by an interrupted run)"
            );
        }
        for package in &plan.packages {
            let _ = writeln!(out, "  + package {package} (install phase)");
        }
        for service in &plan.services {
            let _ = writeln!(
                out,
                "  ! {} {} ({}; {} phase)",
                service.action.verb(),
                service.unit,
                service.reason,
                service.phase
            );
        }
    }
    if pending_hosts == 0 {
        let _ = writeln!(out, "Nothing to do: every host is up to date.");
    } else {
        let _ = writeln!(
            out,
            "Plan: {adds} file(s) to add, {changes} to change, on {pending_hosts} of {} host(s).",
            plans.len()
        );
    }
    out
}

/// Secrets and binaries are shown by their hashes only.
fn hash_note(file: &FileChange) -> String {
    let kind = if file.secret {
        "secret"
    } else if file.binary {
        "upload"
    } else {
        return String::new();
    };
    match &file.old_sha256 {
        Some(old) => format!(", {kind}: sha256 {} -> {}", short(old), short(&file.sha256)),
        None => format!(", {kind}: sha256 {}", short(&file.sha256)),
    }
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(16)]
}

fn octal<S: serde::Serializer>(mode: &u32, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&format!("{mode:04o}"))
}

fn octal_option<S: serde::Serializer>(
    mode: &Option<u32>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match mode {
        Some(mode) => serializer.serialize_str(&format!("{mode:04o}")),
        None => serializer.serialize_none(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::remote::RemoteFile;
    use crate::render::RenderedFile;

    fn file(
        path: &str,
        contents: &str,
        mode: u32,
        secret: bool,
        restarts: &[&str],
    ) -> RenderedFile {
        RenderedFile {
            path: path.into(),
            contents: contents.as_bytes().to_vec(),
            mode,
            secret,
            restarts: restarts.iter().map(|unit| unit.to_string()).collect(),
        }
    }

    fn desired() -> HostFiles {
        HostFiles {
            node: "m1".into(),
            files: vec![
                file("/etc/etcd.conf", "a\nb\n", 0o644, false, &["etcd.service"]),
                file(
                    "/etc/kubernetes/pki/etcd/server.key",
                    "KEY-MATERIAL",
                    0o600,
                    true,
                    &["etcd.service"],
                ),
                file("/etc/nginx/site", "x\n", 0o644, false, &["nginx.service"]),
                file("/etc/mode", "m\n", 0o600, false, &[]),
            ],
        }
    }

    fn present(contents: &str, mode: u32) -> Option<RemoteFile> {
        Some(RemoteFile {
            sha256: sha256_hex(contents.as_bytes()),
            mode,
            root_owned: true,
        })
    }

    const ALL: ServiceScope<'static> = ServiceScope {
        phases: &Phase::ALL,
        master: true,
    };

    /// A host holding `desired`'s files, its services running with them.
    fn converged(desired: &HostFiles) -> HostState {
        let mut state = HostState::default();
        for file in &desired.files {
            state.files.insert(
                file.path.clone(),
                present(std::str::from_utf8(&file.contents).unwrap(), file.mode),
            );
        }
        for unit in managed_units(desired) {
            state.services.insert(unit.to_string(), "active".into());
            state
                .stamps
                .insert(unit.to_string(), unit_inputs(desired, &[], &state, unit));
        }
        state
    }

    #[test]
    fn a_host_holding_everything_has_an_empty_plan() {
        let desired = desired();
        let plan = plan_host(&desired, &[], &converged(&desired), ALL);
        assert!(plan.is_empty(), "{plan:?}");
        assert!(text(&[plan]).contains("Nothing to do"));
    }

    #[test]
    fn a_restart_owed_by_a_killed_run_is_still_planned_and_stopped_units_start() {
        let desired = desired();
        let mut state = converged(&desired);
        // Files in place, but etcd still runs with what it had before (the
        // run that wrote them was killed before restarting it).
        state.stamps.insert("etcd.service".into(), "0".repeat(64));
        // nginx was never recorded: reloaded, not restarted.
        state.stamps.remove("nginx.service");
        let plan = plan_host(&desired, &[], &state, ALL);
        assert!(plan.files.is_empty());
        let services: Vec<(&str, ServiceAction, &str)> = plan
            .services
            .iter()
            .map(|s| (s.unit.as_str(), s.action, s.reason.as_str()))
            .collect();
        assert_eq!(
            services,
            [
                ("etcd.service", ServiceAction::Restart, "inputs changed"),
                (
                    "nginx.service",
                    ServiceAction::Reload,
                    "not yet run with ocfk8s's files"
                )
            ]
        );
        assert_eq!(
            plan.services[0].inputs_sha256,
            unit_inputs(&desired, &[], &state, "etcd.service")
        );

        // A stopped unit is started whatever its record says.
        let mut state = converged(&desired);
        state
            .services
            .insert("etcd.service".into(), "failed".into());
        let plan = plan_host(&desired, &[], &state, ALL);
        assert_eq!(plan.services.len(), 1);
        assert_eq!(plan.services[0].action, ServiceAction::Start);
        assert_eq!(plan.services[0].reason, "failed");
        assert!(text(&[plan]).contains("! start etcd.service (failed; etcd phase)"));

        // Skipped phases plan nothing for their services.
        let files_only = ServiceScope {
            phases: &[Phase::Preflight, Phase::Pki, Phase::Install, Phase::Files],
            master: true,
        };
        assert!(plan_host(
            &desired,
            &[],
            &HostState {
                services: Default::default(),
                ..converged(&desired)
            },
            files_only
        )
        .is_empty());
    }

    #[test]
    fn a_new_binary_is_a_file_change_and_restarts_the_unit_that_runs_it() {
        let desired = HostFiles {
            node: "w1".into(),
            files: vec![file(
                "/etc/systemd/system/kube-proxy.service",
                "[Service]\n",
                0o644,
                false,
                &["kube-proxy.service"],
            )],
        };
        let held = |sha256: &str| BinaryInput {
            path: "/usr/bin/kube-proxy".into(),
            sha256: Some(sha256.into()),
            restarts: vec!["kube-proxy.service".into()],
        };
        let old = sha256_hex(b"old kube-proxy");
        let new = sha256_hex(b"new kube-proxy");
        let mut state = converged(&desired);
        state.files.insert(
            "/usr/bin/kube-proxy".into(),
            Some(RemoteFile {
                sha256: old.clone(),
                mode: 0o755,
                root_owned: true,
            }),
        );
        // Running with the old binary, recorded as such.
        let inputs = unit_inputs(&desired, &[held(&old)], &state, "kube-proxy.service");
        state.stamps.insert("kube-proxy.service".into(), inputs);
        assert!(plan_host(&desired, &[held(&old)], &state, ALL).is_empty());
        // The same binary, known only from the host, gives the same inputs.
        let as_held = BinaryInput {
            sha256: None,
            ..held(&old)
        };
        assert!(plan_host(&desired, &[as_held], &state, ALL).is_empty());

        let plan = plan_host(&desired, &[held(&new)], &state, ALL);
        assert_eq!(plan.files.len(), 1);
        assert!(plan.files[0].binary);
        assert_eq!(plan.files[0].action, FileAction::Change);
        assert_eq!(plan.services.len(), 1);
        assert_eq!(plan.services[0].unit, "kube-proxy.service");
        assert_eq!(plan.services[0].action, ServiceAction::Restart);
        let shown = text(&[plan]);
        assert!(
            shown.contains(&format!(
                "~ /usr/bin/kube-proxy, upload: sha256 {} -> {}",
                &old[..16],
                &new[..16]
            )),
            "{shown}"
        );
    }

    #[test]
    fn changes_restart_active_units_and_start_inactive_ones_without_showing_secrets() {
        let desired = desired();
        let mut state = HostState::default();
        state
            .files
            .insert("/etc/etcd.conf".into(), present("a\nc\n", 0o644));
        state
            .files
            .insert("/etc/kubernetes/pki/etcd/server.key".into(), None);
        state
            .files
            .insert("/etc/nginx/site".into(), present("old\n", 0o644));
        state
            .files
            .insert("/etc/mode".into(), present("m\n", 0o644));
        state
            .services
            .insert("etcd.service".into(), "active".into());
        state
            .services
            .insert("nginx.service".into(), "inactive".into());
        state
            .temporaries
            .push("/etc/.etcd.conf.ocfk8s-tmp-x".into());

        let mut plan = plan_host(&desired, &[], &state, ALL);
        let old = BTreeMap::from([("/etc/etcd.conf".to_string(), b"a\nc\n".to_vec())]);
        add_diffs(&mut plan, &desired, &old);

        let actions: Vec<(&str, FileAction)> = plan
            .files
            .iter()
            .map(|f| (f.path.as_str(), f.action))
            .collect();
        assert_eq!(
            actions,
            [
                ("/etc/etcd.conf", FileAction::Change),
                ("/etc/kubernetes/pki/etcd/server.key", FileAction::Add),
                ("/etc/nginx/site", FileAction::Change),
                ("/etc/mode", FileAction::Mode),
            ]
        );
        let services: Vec<(&str, ServiceAction)> = plan
            .services
            .iter()
            .map(|s| (s.unit.as_str(), s.action))
            .collect();
        assert_eq!(
            services,
            [
                ("etcd.service", ServiceAction::Restart),
                ("nginx.service", ServiceAction::Start)
            ]
        );
        let shown = text(std::slice::from_ref(&plan));
        assert!(
            shown.contains("-b") && shown.contains("+c")
                || shown.contains("-c") && shown.contains("+b"),
            "{shown}"
        );
        assert!(shown.contains("restart etcd.service"), "{shown}");
        assert!(shown.contains("/etc/.etcd.conf.ocfk8s-tmp-x"), "{shown}");
        assert!(!shown.contains("KEY-MATERIAL"), "{shown}");
        let json = serde_json::to_string(&plan).expect("json");
        assert!(!json.contains("KEY-MATERIAL"), "{json}");
        assert!(json.contains("\"mode\":\"0600\""), "{json}");
    }

    /// Bytes drawn by proptest, read as a stream of small choices.
    struct Choices<'a>(std::slice::Iter<'a, u8>);

    impl Choices<'_> {
        fn pick(&mut self, below: u8) -> u8 {
            self.0.next().copied().unwrap_or(0) % below.max(1)
        }
    }

    const UNITS: [&str; 6] = [
        "etcd.service",
        "containerd.service",
        "kubelet.service",
        "kube-proxy.service",
        "nginx.service",
        "keepalived.service",
    ];

    /// A random host: desired files and binaries naming real units, the
    /// phases in scope, and a remote state anywhere from empty to half
    /// done to tampered with.
    fn random_host(bytes: &[u8]) -> (HostFiles, Vec<BinaryInput>, HostState, Vec<Phase>, bool) {
        let mut c = Choices(bytes.iter());
        let units_of = |c: &mut Choices| -> Vec<String> {
            UNITS
                .iter()
                .filter(|_| c.pick(3) == 0)
                .map(|unit| unit.to_string())
                .collect()
        };
        let mut files = Vec::new();
        for index in 0..c.pick(7) + 1 {
            files.push(RenderedFile {
                path: format!("/etc/ocfk8s-test/{index}.conf"),
                contents: vec![b'a' + c.pick(4); 1 + c.pick(3) as usize],
                mode: if c.pick(2) == 0 { 0o600 } else { 0o644 },
                secret: c.pick(2) == 0,
                restarts: units_of(&mut c),
            });
        }
        let desired = HostFiles {
            node: "h".into(),
            files,
        };
        let mut binaries = Vec::new();
        for (index, name) in ["etcd", "kubelet"].iter().enumerate() {
            if c.pick(2) == 0 {
                continue;
            }
            binaries.push(BinaryInput {
                path: format!("/usr/local/bin/{name}"),
                sha256: (c.pick(2) == 0).then(|| sha256_hex(&[index as u8])),
                restarts: vec![UNITS[index * 2].to_string()],
            });
        }
        let mut state = HostState::default();
        let mut paths: Vec<(String, String, u32)> = desired
            .files
            .iter()
            .map(|file| (file.path.clone(), sha256_hex(&file.contents), file.mode))
            .collect();
        paths.extend(binaries.iter().map(|binary| {
            (
                binary.path.clone(),
                binary
                    .sha256
                    .clone()
                    .unwrap_or_else(|| sha256_hex(b"host's own")),
                BINARY_MODE,
            )
        }));
        for (path, sha256, mode) in paths {
            let remote = match c.pick(5) {
                0 => None,
                1 => Some(RemoteFile {
                    sha256,
                    mode,
                    root_owned: true,
                }),
                2 => Some(RemoteFile {
                    sha256: sha256_hex(b"other"),
                    mode,
                    root_owned: true,
                }),
                3 => Some(RemoteFile {
                    sha256,
                    mode: 0o666,
                    root_owned: true,
                }),
                _ => Some(RemoteFile {
                    sha256,
                    mode,
                    root_owned: false,
                }),
            };
            state.files.insert(path, remote);
        }
        for index in 0..c.pick(3) {
            state
                .temporaries
                .push(format!("/etc/ocfk8s-test/.{index}.conf.ocfk8s-tmp"));
        }
        for unit in UNITS {
            match c.pick(4) {
                0 => {}
                1 => {
                    state.services.insert(unit.into(), "active".into());
                }
                2 => {
                    state.services.insert(unit.into(), "inactive".into());
                }
                _ => {
                    state.services.insert(unit.into(), "failed".into());
                }
            }
            if c.pick(2) == 0 {
                state.stamps.insert(unit.into(), "0".repeat(64));
            }
        }
        let phases: Vec<Phase> = Phase::ALL
            .iter()
            .copied()
            .filter(|_| c.pick(3) != 0)
            .collect();
        (desired, binaries, state, phases, c.pick(2) == 0)
    }

    /// What the engine does with a plan, as the host would record it:
    /// files written root-owned with their modes, temporaries removed,
    /// services acted on and their inputs recorded.
    fn apply(plan: &HostPlan, state: &mut HostState) {
        for change in &plan.files {
            state.files.insert(
                change.path.clone(),
                Some(RemoteFile {
                    sha256: change.sha256.clone(),
                    mode: change.mode,
                    root_owned: true,
                }),
            );
        }
        state.temporaries.clear();
        for change in &plan.services {
            state.services.insert(change.unit.clone(), "active".into());
            state
                .stamps
                .insert(change.unit.clone(), change.inputs_sha256.clone());
        }
    }

    proptest::proptest! {
        #[test]
        fn applying_a_plan_to_any_host_state_leaves_nothing_to_do(
            bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 96)
        ) {
            let (desired, binaries, mut state, phases, master) = random_host(&bytes);
            let scope = ServiceScope { phases: &phases, master };
            let plan = plan_host(&desired, &binaries, &state, scope);
            apply(&plan, &mut state);
            let again = plan_host(&desired, &binaries, &state, scope);
            proptest::prop_assert!(again.is_empty(), "first {:?}\nthen {:?}", plan, again);
        }
    }
}
