//! `ocfk8s etcd snapshot`: a consistent etcd snapshot, copied here.
//!
//! `etcdctl snapshot save` runs on a master whose member is healthy (its own
//! endpoint), into a private temporary folder on that host; `snapshot
//! status` checks it there and its SHA-256 is noted; then its bytes travel
//! back over the run's SSH connection, the temporary folder is removed, and
//! the copy is checked against that SHA-256 before it is written here,
//! 0600, atomically. By default snapshots go to `backups/` beside the PKI
//! store, named by cluster, time and revision, and only the newest `keep`
//! of the cluster's are kept there.

use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use serde::Deserialize;

use crate::error::bad_input;
use crate::inventory::{Cluster, Node};
use crate::printer::Printer;
use crate::remote::etcdctl;
use crate::remote::Host;

use super::fleet::{self, Fleet};
use super::settings::RunSettings;
use super::status::client_url;

/// Where the temporary snapshot lives on the master.
const REMOTE_PREFIX: &str = "/var/lib/ocfk8s-snapshot.";

/// A snapshot taken and written here.
#[derive(Debug)]
pub(crate) struct Taken {
    pub(crate) member: String,
    pub(crate) revision: u64,
    pub(crate) path: PathBuf,
    pub(crate) size: usize,
    pub(crate) sha256: String,
    /// Older snapshots removed to keep the newest `keep`.
    pub(crate) removed: Vec<PathBuf>,
}

/// `backups/` beside the PKI store.
pub(crate) fn default_dir(cluster: &Cluster) -> PathBuf {
    cluster
        .pki_dir
        .parent()
        .map(|parent| parent.join("backups"))
        .unwrap_or_else(|| PathBuf::from("backups"))
}

/// Take a snapshot on a healthy member and write it to `out` (or the
/// default folder, keeping the newest `keep` there).
pub(crate) fn run(
    cluster: &Cluster,
    settings: &RunSettings,
    out: Option<&Path>,
    keep: usize,
    printer: &Printer,
) -> anyhow::Result<Taken> {
    // Bad destinations are refused before any host is reached.
    if let Some(out) = out {
        if out.is_dir() {
            return Err(bad_input(format!(
                "--out {}: a folder; give the snapshot file's path",
                out.display()
            )));
        }
        if let Some(parent) = out.parent().filter(|parent| !parent.as_os_str().is_empty()) {
            if !parent.is_dir() {
                return Err(bad_input(format!(
                    "--out {}: the folder {} does not exist",
                    out.display(),
                    parent.display()
                )));
            }
        }
    }
    let (member, status, bytes) = fleet::runtime()?.block_on(async {
        let masters: Vec<&Node> = cluster.masters.iter().collect();
        let progress = printer.host_progress(masters.iter().map(|node| node.name.as_str()));
        let fleet = Fleet::connect(
            cluster,
            &masters,
            settings.concurrency,
            settings.accept_new_host_keys,
            &progress,
            None,
        )
        .await?;
        let result = take(cluster, &fleet).await;
        drop(progress);
        fleet.close().await;
        result
    })?;
    keep_copy(cluster, out, keep, member, status, bytes)
}

/// Check the copied `bytes` against the host's SHA-256 and write them to
/// `out` (or the default folder, keeping the newest `keep` there).
pub(crate) fn keep_copy(
    cluster: &Cluster,
    out: Option<&Path>,
    keep: usize,
    member: String,
    status: RemoteSnapshot,
    bytes: Vec<u8>,
) -> anyhow::Result<Taken> {
    let sha256 = crate::plan::sha256_hex(&bytes);
    if sha256 != status.sha256 {
        bail!(
            "{member}: etcd snapshot: the copy's sha256 {sha256} differs from the host's {}",
            status.sha256
        );
    }
    let (path, pruned_dir) = match out {
        Some(out) => (out.to_path_buf(), None),
        None => {
            let dir = default_dir(cluster);
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .with_context(|| format!("creating {}", dir.display()))?;
            let now = time::OffsetDateTime::now_utc();
            let name = format!(
                "{}-{:04}{:02}{:02}T{:02}{:02}{:02}Z-rev{}.db",
                cluster.name,
                now.year(),
                u8::from(now.month()),
                now.day(),
                now.hour(),
                now.minute(),
                now.second(),
                status.revision
            );
            (dir.join(name), Some(dir))
        }
    };
    write_private(&path, &bytes)?;
    let removed = match pruned_dir {
        Some(dir) => prune(&dir, &cluster.name, keep)?,
        None => Vec::new(),
    };
    Ok(Taken {
        member,
        revision: status.revision,
        path,
        size: bytes.len(),
        sha256,
        removed,
    })
}

/// What `snapshot status` and `sha256sum` said on the host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RemoteSnapshot {
    pub(crate) dir: String,
    pub(crate) revision: u64,
    pub(crate) sha256: String,
}

#[derive(Deserialize)]
struct StatusJson {
    revision: u64,
}

/// The script that saves a snapshot from `endpoint` into a new private
/// folder and reports it; the folder is removed if anything fails.
pub(crate) fn save_script(bin_dir: &str, endpoint: &str) -> String {
    let save = etcdctl::command(
        bin_dir,
        &[endpoint.to_string()],
        &["snapshot", "save", "SNAPSHOT_PATH"],
    )
    .replace("'SNAPSHOT_PATH'", "\"$dir/snapshot.db\"");
    let status = etcdctl::command(
        bin_dir,
        &[endpoint.to_string()],
        &["snapshot", "status", "SNAPSHOT_PATH", "-w", "json"],
    )
    .replace("'SNAPSHOT_PATH'", "\"$dir/snapshot.db\"");
    format!(
        "set -u\numask 077\n\
         dir=$(mktemp -d {REMOTE_PREFIX}XXXXXXXX) || exit 1\n\
         if ! out=$({save} 2>&1); then rm -rf \"$dir\"; printf 'snapshot save failed: %s\\n' \"$out\" >&2; exit 1; fi\n\
         if ! status=$({status} 2>&1); then rm -rf \"$dir\"; printf 'snapshot status failed: %s\\n' \"$status\" >&2; exit 1; fi\n\
         printf 'dir %s\\n' \"$dir\"\n\
         printf 'status %s\\n' \"$status\" | tr -d '\\n'; echo\n\
         sha256sum \"$dir/snapshot.db\" | sed 's/^\\([0-9a-f]*\\).*/sha256 \\1/'\n"
    )
}

/// The script that prints the saved snapshot in `dir` and removes the
/// folder.
pub(crate) fn copy_script(dir: &str) -> String {
    format!(
        "cat {dir}/snapshot.db; status=$?; rm -rf {dir}; exit $status",
        dir = crate::remote::shell::quote(dir)
    )
}

/// Parse what [`save_script`] printed.
pub(crate) fn parse_saved(output: &str) -> anyhow::Result<RemoteSnapshot> {
    let mut dir = None;
    let mut revision = None;
    let mut sha256 = None;
    for line in output.lines() {
        if let Some(value) = line.strip_prefix("dir ") {
            let suffix = value.strip_prefix(REMOTE_PREFIX).unwrap_or_default();
            if suffix.is_empty() || !suffix.bytes().all(|byte| byte.is_ascii_alphanumeric()) {
                bail!("unexpected snapshot folder {value:?}");
            }
            dir = Some(value.to_string());
        } else if let Some(value) = line.strip_prefix("status ") {
            let status: StatusJson =
                serde_json::from_str(value).context("reading etcdctl snapshot status")?;
            revision = Some(status.revision);
        } else if let Some(value) = line.strip_prefix("sha256 ") {
            if value.len() != 64 || !value.bytes().all(|byte| byte.is_ascii_hexdigit()) {
                bail!("unexpected sha256 {value:?}");
            }
            sha256 = Some(value.to_string());
        }
    }
    match (dir, revision, sha256) {
        (Some(dir), Some(revision), Some(sha256)) => Ok(RemoteSnapshot {
            dir,
            revision,
            sha256,
        }),
        _ => bail!("the snapshot report was cut short"),
    }
}

/// Save a snapshot on the first master whose own member is healthy and
/// bring its bytes back.
pub(crate) async fn take(
    cluster: &Cluster,
    fleet: &Fleet,
) -> anyhow::Result<(String, RemoteSnapshot, Vec<u8>)> {
    let mut reasons = Vec::new();
    for host in &fleet.hosts {
        let Some(node) = cluster
            .masters
            .iter()
            .find(|master| master.name == host.name)
        else {
            continue;
        };
        let endpoint = client_url(node);
        match member_healthy(cluster, host, &endpoint).await {
            Ok(()) => {}
            Err(why) => {
                reasons.push(format!("{}: {why:#}", host.name));
                continue;
            }
        }
        let saved = host
            .run_script(&save_script(&cluster.install.bin_dir, &endpoint))
            .await
            .with_context(|| format!("{}: etcd snapshot", host.name))?;
        let saved =
            parse_saved(&saved.stdout).with_context(|| format!("{}: etcd snapshot", host.name))?;
        let copy = host
            .exec(&copy_script(&saved.dir))
            .await
            .with_context(|| format!("{}: etcd snapshot: copying it", host.name))?;
        if copy.status != Some(0) {
            bail!(
                "{}: etcd snapshot: copying it failed: {}",
                host.name,
                copy.stderr
            );
        }
        return Ok((host.name.clone(), saved, copy.stdout));
    }
    bail!(
        "etcd snapshot: no master's member is healthy:\n  {}",
        reasons.join("\n  ")
    )
}

/// How many snapshots a membership change keeps in the default folder.
pub(crate) const KEEP_BEFORE_CHANGE: usize = 10;

/// The snapshot every membership change takes first (unless
/// `--no-snapshot`), through the run's connections; its path is printed.
pub(crate) async fn before_change(
    cluster: &Cluster,
    fleet: &Fleet,
    command: &str,
    printer: &Printer,
) -> anyhow::Result<Taken> {
    let (member, status, bytes) = take(cluster, fleet).await.with_context(|| {
        format!("{command}: the etcd snapshot taken before the change (--no-snapshot skips it)")
    })?;
    let taken = keep_copy(cluster, None, KEEP_BEFORE_CHANGE, member, status, bytes)?;
    announce(&taken, printer);
    Ok(taken)
}

/// Name the snapshot a change took first.
pub(crate) fn announce(taken: &Taken, printer: &Printer) {
    printer.output(&format!(
        "snapshot: etcd revision {} from {} saved to {} before the change",
        taken.revision,
        taken.member,
        taken.path.display()
    ));
}

/// The member at `endpoint` answers a linearizable health check.
async fn member_healthy(cluster: &Cluster, host: &Host, endpoint: &str) -> anyhow::Result<()> {
    let etcdctl = etcdctl::Etcdctl {
        host,
        bin_dir: &cluster.install.bin_dir,
    };
    let health = etcdctl.endpoint_health(&[endpoint.to_string()]).await?;
    match health.first() {
        Some(entry) if entry.health => Ok(()),
        Some(entry) => bail!(
            "not healthy{}",
            entry
                .error
                .as_deref()
                .map(|error| format!(": {error}"))
                .unwrap_or_default()
        ),
        None => bail!("no answer"),
    }
}

/// Write `bytes` to `path` as a new 0600 file: a temporary beside it,
/// synced, then renamed.
fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    let parent = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = parent.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
    let result = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temporary)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .and_then(|()| std::fs::rename(&temporary, path));
    if let Err(error) = result {
        let _ = std::fs::remove_file(&temporary);
        return Err(error).with_context(|| format!("writing {}", path.display()));
    }
    Ok(())
}

/// Remove all but the newest `keep` snapshots of `cluster` in `dir` (their
/// names sort by time).
fn prune(dir: &Path, cluster: &str, keep: usize) -> anyhow::Result<Vec<PathBuf>> {
    let prefix = format!("{cluster}-");
    let mut ours: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("listing {}", dir.display()))?
        .flatten()
        .filter(|entry| entry.file_type().is_ok_and(|kind| kind.is_file()))
        .filter_map(|entry| {
            let name = entry.file_name().to_string_lossy().into_owned();
            let rest = name.strip_prefix(&prefix)?;
            // <cluster>-YYYYMMDDTHHMMSSZ-rev<N>.db
            let valid = rest.len() > 20
                && rest.as_bytes()[16] == b'-'
                && rest[17..].starts_with("rev")
                && rest.ends_with(".db");
            valid.then(|| entry.path())
        })
        .collect();
    ours.sort();
    let excess = ours.len().saturating_sub(keep);
    let removed: Vec<PathBuf> = ours.drain(..excess).collect();
    for path in &removed {
        std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_is_parsed_and_odd_folders_refused() {
        let output = "dir /var/lib/ocfk8s-snapshot.Ab12Cd34\n\
             status {\"hash\":1,\"revision\":42,\"totalKey\":7,\"totalSize\":20480}\n\
             sha256 5891b5b522d5df086d0ff0b110fbd9d21bb4fc7163af34d08286a2e846f6be03\n";
        let saved = parse_saved(output).expect("parse");
        assert_eq!(saved.revision, 42);
        assert_eq!(saved.dir, "/var/lib/ocfk8s-snapshot.Ab12Cd34");
        let hostile = output.replace("Ab12Cd34", "x; rm -rf /");
        assert!(parse_saved(&hostile).is_err());
        assert!(parse_saved("dir /tmp/x\n").is_err());
    }

    #[test]
    fn the_script_parses_under_sh() {
        let script = save_script("/usr/bin", "https://10.0.0.11:2379");
        let check = std::process::Command::new("sh")
            .args(["-n", "-c", &script])
            .output()
            .expect("sh");
        assert!(
            check.status.success(),
            "{}",
            String::from_utf8_lossy(&check.stderr)
        );
        assert!(
            script.contains("'snapshot' 'save' \"$dir/snapshot.db\""),
            "{script}"
        );
    }

    #[test]
    fn pruning_keeps_the_newest_of_this_cluster_only() {
        let dir = tempfile::tempdir().expect("temp dir");
        for name in [
            "ocf-20261101T000000Z-rev10.db",
            "ocf-20261102T000000Z-rev20.db",
            "ocf-20261103T000000Z-rev30.db",
            "other-20261101T000000Z-rev1.db",
            "ocf-notes.txt",
        ] {
            std::fs::write(dir.path().join(name), "x").expect("write");
        }
        let removed = prune(dir.path(), "ocf", 2).expect("prune");
        assert_eq!(removed, [dir.path().join("ocf-20261101T000000Z-rev10.db")]);
        assert_eq!(
            crate::test_support::listing(dir.path()),
            [
                "ocf-20261102T000000Z-rev20.db",
                "ocf-20261103T000000Z-rev30.db",
                "ocf-notes.txt",
                "other-20261101T000000Z-rev1.db"
            ]
        );
    }
}
