//! A host's state in one round trip: for every managed path its sha256 and
//! mode (or that it is absent), the temporaries an interrupted run left in
//! the managed folders, and the state of the managed services.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use anyhow::{bail, Context};

use super::session::Host;
use super::shell::{check_path, parent, quote};
use super::write::TEMPORARY_MARKER;

/// A managed file as found on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RemoteFile {
    pub(crate) sha256: String,
    pub(crate) mode: u32,
    /// Owned by root:root, as every managed file must be.
    pub(crate) root_owned: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct HostState {
    /// Every managed path; `None` when absent.
    pub(crate) files: BTreeMap<String, Option<RemoteFile>>,
    /// Temporaries left by an interrupted run, by full path.
    pub(crate) temporaries: Vec<String>,
    /// `systemctl is-active` of every managed unit.
    pub(crate) services: BTreeMap<String, String>,
    /// The inputs each unit was last (re)started with, as recorded in
    /// [`crate::units::STAMP_DIR`]; absent when never recorded.
    pub(crate) stamps: BTreeMap<String, String>,
}

/// The script that prints a host's state; see [`parse_state`].
pub(crate) fn state_script(paths: &[&str], units: &[&str]) -> anyhow::Result<String> {
    let mut script = String::from("set -e\nexport LC_ALL=C\nset --\n");
    let mut folders = BTreeSet::new();
    if !paths.is_empty() {
        script.push_str("for p in");
        for path in paths {
            check_path(path)?;
            folders.insert(parent(path));
            let _ = write!(script, " {}", quote(path));
        }
        // Hashes come back as sha256sum prints them (a hash, two spaces,
        // the path); temporaries are found by the shell's own globbing.
        script.push_str(
            "; do\n  if [ -f \"$p\" ]; then set -- \"$@\" \"$p\"; else printf 'absent %s\\n' \"$p\"; fi\ndone\n\
             if [ $# -gt 0 ]; then\n  stat -L -c 'mode %a %u:%g %n' -- \"$@\"\n  sha256sum -- \"$@\"\nfi\n",
        );
        script.push_str("for d in");
        for folder in &folders {
            let _ = write!(script, " {}", quote(folder));
        }
        let _ = write!(
            script,
            "; do\n  for f in \"${{d%/}}\"/.*{TEMPORARY_MARKER}*; do\n    \
               if [ -f \"$f\" ] || [ -d \"$f\" ]; then [ -L \"$f\" ] || printf 'temporary %s\\n' \"$f\"; fi\n  \
             done\n\
             done\n"
        );
    }
    if !units.is_empty() {
        // One `systemctl is-active` for every unit: it prints one word
        // each, in order.
        let quoted: Vec<String> = units.iter().map(|unit| quote(unit)).collect();
        let quoted = quoted.join(" ");
        let _ = write!(
            script,
            "set --\n\
             if command -v systemctl >/dev/null 2>&1; then\n  \
               set -f\n  \
               set -- $(systemctl is-active {quoted} 2>/dev/null || true)\n  \
               set +f\n  \
               for u in {quoted}; do\n    \
                 if [ $# -gt 0 ]; then s=$1; shift; else s=unknown; fi\n    \
                 printf 'service %s %s\\n' \"$u\" \"$s\"\n  \
               done\n\
             fi\n\
             for u in {quoted}; do\n  \
               if [ -f {stamps}/\"$u\" ]; then\n    \
                 s=; read -r s < {stamps}/\"$u\" || true\n    \
                 printf 'stamp %s %.64s\\n' \"$u\" \"$s\"\n  \
               fi\n\
             done\n",
            stamps = crate::units::STAMP_DIR
        );
    }
    script.push_str("echo end\n");
    Ok(script)
}

/// Parse what [`state_script`] printed.
pub(crate) fn parse_state(paths: &[&str], output: &str) -> anyhow::Result<HostState> {
    let mut state = HostState::default();
    let mut modes = BTreeMap::new();
    let mut hashes = BTreeMap::new();
    let mut ended = false;
    for line in output.lines() {
        if line == "end" {
            ended = true;
        } else if let Some(path) = line.strip_prefix("absent ") {
            state.files.insert(path.to_string(), None);
        } else if let Some(rest) = line.strip_prefix("mode ") {
            let mut parts = rest.splitn(3, ' ');
            let (Some(mode), Some(owner), Some(path)) = (parts.next(), parts.next(), parts.next())
            else {
                bail!("unexpected line {line:?}");
            };
            let mode = u32::from_str_radix(mode, 8)
                .with_context(|| format!("unexpected mode in {line:?}"))?;
            modes.insert(path.to_string(), (mode, owner == "0:0"));
        } else if let Some((hash, path)) = sha256sum_line(line) {
            hashes.insert(path.to_string(), hash.to_string());
        } else if let Some(path) = line.strip_prefix("temporary ") {
            state.temporaries.push(path.to_string());
        } else if let Some(rest) = line.strip_prefix("service ") {
            let (unit, active) = rest.split_once(' ').unwrap_or((rest, ""));
            let active = if active.is_empty() { "unknown" } else { active };
            state.services.insert(unit.to_string(), active.to_string());
        } else if let Some(rest) = line.strip_prefix("stamp ") {
            let (unit, inputs) = rest.split_once(' ').unwrap_or((rest, ""));
            state
                .stamps
                .insert(unit.to_string(), inputs.trim().to_string());
        } else if !line.trim().is_empty() {
            bail!("unexpected line in the host's state: {line:?}");
        }
    }
    if !ended {
        bail!("the host's state report was cut short");
    }
    for (path, (mode, root_owned)) in modes {
        let sha256 = hashes
            .remove(&path)
            .with_context(|| format!("no sha256 reported for {path}"))?;
        state.files.insert(
            path,
            Some(RemoteFile {
                sha256,
                mode,
                root_owned,
            }),
        );
    }
    for path in paths {
        if !state.files.contains_key(*path) {
            bail!("the host's state report does not mention {path}");
        }
    }
    state.temporaries.sort();
    Ok(state)
}

/// Read a host's state: one round trip.
pub(crate) async fn read_state(
    host: &Host,
    paths: &[&str],
    units: &[&str],
) -> anyhow::Result<HostState> {
    if let Some(state) = host.prefetched_state(paths, units) {
        return Ok(state);
    }
    let _timer = crate::timings::step("state read");
    let script = state_script(paths, units)?;
    let output = host.run_script(&script).await?;
    parse_state(paths, &output.stdout)
}

/// A line as `sha256sum` prints it: 64 hex digits, two spaces, the path.
fn sha256sum_line(line: &str) -> Option<(&str, &str)> {
    let (hash, path) = line.split_once("  ")?;
    (hash.len() == 64 && hash.bytes().all(|byte| byte.is_ascii_hexdigit()) && path.starts_with('/'))
        .then_some((hash, path))
}

/// A host's state read together with its facts, as its connection was
/// made: it answers the first reads of any of its paths and units until a
/// script runs on the host (see [`Host::prefetched_state`]).
#[derive(Debug, Clone)]
pub(crate) struct Prefetched {
    paths: BTreeSet<String>,
    units: BTreeSet<String>,
    state: HostState,
}

impl Prefetched {
    pub(crate) fn new(paths: &[&str], units: &[&str], state: HostState) -> Self {
        Prefetched {
            paths: paths.iter().map(|path| path.to_string()).collect(),
            units: units.iter().map(|unit| unit.to_string()).collect(),
            state,
        }
    }

    /// The state of `paths` and `units`, exactly as [`read_state`] would
    /// report it, when every one of them was read.
    pub(crate) fn answer(&self, paths: &[&str], units: &[&str]) -> Option<HostState> {
        if !paths.iter().all(|path| self.paths.contains(*path))
            || !units.iter().all(|unit| self.units.contains(*unit))
        {
            return None;
        }
        let folders: BTreeSet<&str> = paths.iter().map(|path| parent(path)).collect();
        Some(HostState {
            files: picked(&self.state.files, paths),
            temporaries: self
                .state
                .temporaries
                .iter()
                .filter(|temporary| folders.contains(parent(temporary)))
                .cloned()
                .collect(),
            services: picked(&self.state.services, units),
            stamps: picked(&self.state.stamps, units),
        })
    }
}

/// The entries of `map` under `keys` (those it has).
fn picked<V: Clone>(map: &BTreeMap<String, V>, keys: &[&str]) -> BTreeMap<String, V> {
    keys.iter()
        .filter_map(|key| Some((key.to_string(), map.get(*key)?.clone())))
        .collect()
}

/// The contents of some (non-secret) files, for diffs: one round trip.
/// Absent files come back empty.
pub(crate) async fn read_files(
    host: &Host,
    paths: &[&str],
) -> anyhow::Result<BTreeMap<String, Vec<u8>>> {
    use base64::Engine as _;
    let mut script = String::from("set -e\nfor p in");
    for path in paths {
        check_path(path)?;
        let _ = write!(script, " {}", quote(path));
    }
    script.push_str(
        "; do\n  printf 'file %s\\n' \"$p\"\n  if [ -f \"$p\" ]; then base64 -w0 -- \"$p\"; fi\n  echo\ndone\necho end\n",
    );
    let output = host.run_script(&script).await?;
    let mut files = BTreeMap::new();
    let mut lines = output.stdout.lines();
    let mut ended = false;
    while let Some(line) = lines.next() {
        if line == "end" {
            ended = true;
        } else if let Some(path) = line.strip_prefix("file ") {
            let encoded = lines.next().unwrap_or_default();
            let contents = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .with_context(|| format!("decoding {path}"))?;
            files.insert(path.to_string(), contents);
        }
    }
    if !ended {
        bail!("the file listing was cut short");
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The script runs under the machine's real `sh` against real files.
    fn run_locally(script: &str) -> String {
        let output = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .output()
            .expect("run sh");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout).expect("utf-8")
    }

    #[test]
    fn reads_hashes_modes_absence_and_temporaries() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let present = dir.path().join("present.conf");
        std::fs::write(&present, "hello\n").expect("write");
        std::fs::set_permissions(&present, std::fs::Permissions::from_mode(0o640)).expect("chmod");
        let leftover = dir.path().join(".present.conf.ocfk8s-tmp-abc123");
        std::fs::write(&leftover, "hel").expect("write");
        let absent = dir.path().join("sub/absent.conf");
        let present = present.to_str().expect("utf-8").to_string();
        let absent = absent.to_str().expect("utf-8").to_string();
        let paths = [present.as_str(), absent.as_str()];

        let script = state_script(&paths, &[]).expect("script");
        let state = parse_state(&paths, &run_locally(&script)).expect("parse");

        assert_eq!(
            state.files[&present],
            Some(RemoteFile {
                // sha256 of "hello\n"
                sha256: "5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03".into(),
                mode: 0o640,
                root_owned: true,
            })
        );
        assert_eq!(state.files[&absent], None);
        assert_eq!(
            state.temporaries,
            vec![leftover.to_str().expect("utf-8").to_string()]
        );
    }

    #[test]
    fn a_cut_short_report_is_an_error() {
        assert!(parse_state(&[], "absent /x\n").is_err());
        assert!(parse_state(&["/x"], "end\n").is_err());
    }
}
