//! Writing files atomically, all of a host's changes in one round trip.
//!
//! Each changed file is written to a temporary beside it
//! (`.<name>.ocfk8s-tmp-<random>`, created 0600 under `umask 077`), given its
//! mode and root ownership, fsync'd; only when every temporary of the batch
//! is complete are they renamed over their targets, and the folders fsync'd.
//! A reader therefore sees each file either whole-old or whole-new.
//!
//! The whole script is one shell function called on its last line: the shell
//! parses a function completely before running it, so a script cut short (the
//! run was killed while sending it) runs nothing at all. A batch that fails
//! on the host (a full filesystem, a folder in a file's place) removes its
//! own temporaries on the way out and names the file it could not write;
//! the lost connection of a killed sshd does not stop it half-way (SIGHUP
//! and SIGPIPE are ignored: it finishes or fails cleanly). Temporaries that
//! a run killed mid-way leaves behind are removed by the next run's batch.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use base64::Engine as _;

use super::session::Host;
use super::shell::{check_path, file_name, parent, quote};

/// Marks our temporaries; the state report lists files carrying it.
pub(crate) const TEMPORARY_MARKER: &str = ".ocfk8s-tmp-";

/// One file to make right on a host.
#[derive(Debug, Clone)]
pub(crate) struct FileWrite<'a> {
    pub(crate) path: &'a str,
    pub(crate) contents: &'a [u8],
    pub(crate) mode: u32,
    /// False when only the mode (or owner) differs: no content is sent.
    pub(crate) contents_differ: bool,
}

/// The temporary beside `path` for the run marked `suffix`:
/// `.<name>.ocfk8s-tmp-<suffix>`, which the state report's sweep finds.
pub(crate) fn temporary_path(path: &str, suffix: &str) -> String {
    format!(
        "{}/.{}{TEMPORARY_MARKER}{suffix}",
        parent(path).trim_end_matches('/'),
        file_name(path)
    )
}

/// What one batch did on a host.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct WriteReport {
    pub(crate) written: usize,
    pub(crate) modes_fixed: usize,
    pub(crate) temporaries_removed: usize,
}

/// The script that applies `writes` and removes `stray` temporaries.
/// `suffix` makes this run's temporaries and heredoc marker unique.
pub(crate) fn write_script(
    writes: &[FileWrite<'_>],
    stray: &[String],
    suffix: &str,
) -> anyhow::Result<String> {
    let engine = base64::engine::general_purpose::STANDARD;
    let mut script = String::from("ocfk8s_write() {\nset -e\numask 077\ntrap '' HUP PIPE\n");
    if !stray.is_empty() {
        script.push_str("rm -f --");
        for path in stray {
            check_path(path)?;
            if !file_name(path).contains(TEMPORARY_MARKER) {
                anyhow::bail!("refusing to remove {path}: not an ocfk8s temporary");
            }
            let _ = write!(script, " {}", quote(path));
        }
        script.push('\n');
    }
    let new_folders: BTreeSet<&str> = writes
        .iter()
        .filter(|write| write.contents_differ)
        .map(|write| parent(write.path))
        .collect();
    if !new_folders.is_empty() {
        script.push_str("(umask 022 && mkdir -p --");
        for folder in &new_folders {
            let _ = write!(script, " {}", quote(folder));
        }
        script.push_str(")\n");
    }
    // Folders holding private keys are root's alone.
    let key_folders: BTreeSet<&str> = writes
        .iter()
        .filter(|write| write.contents_differ && write.path.ends_with(".key"))
        .map(|write| parent(write.path))
        .collect();
    if !key_folders.is_empty() {
        script.push_str("chmod 0700 --");
        for folder in &key_folders {
            let _ = write!(script, " {}", quote(folder));
        }
        script.push('\n');
    }
    let temporaries: Vec<(String, &str)> = writes
        .iter()
        .filter(|write| write.contents_differ)
        .map(|write| (temporary_path(write.path, suffix), write.path))
        .collect();
    if !temporaries.is_empty() {
        // Whatever stops the batch before its renames (a full disk, a
        // folder in a file's place) takes this batch's temporaries with it.
        let mut remove = String::from("rm -f --");
        for (temporary, _) in &temporaries {
            let _ = write!(remove, " {}", quote(temporary));
        }
        let _ = writeln!(script, "trap {} EXIT", quote(&remove));
    }
    // Ownership and modes are set in one command per mode, not per file: a
    // master's first push is some fifty files.
    let mut to_own = Vec::new();
    let mut by_mode: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for write in writes {
        check_path(write.path)?;
        let mode = format!("{:04o}", write.mode & 0o7777);
        if !write.contents_differ {
            to_own.push(quote(write.path));
            by_mode.entry(mode).or_default().push(quote(write.path));
            continue;
        }
        let temporary = temporary_path(write.path, suffix);
        let encoded = engine.encode(write.contents);
        let _ = writeln!(
            script,
            "if [ -d {target} ] && [ ! -L {target} ]; then echo {target}' is a folder, not a file' >&2; exit 1; fi",
            target = quote(write.path),
        );
        let _ = writeln!(
            script,
            "base64 -d > {} <<'OCFK8S_EOF' || {{ echo 'cannot write '{}': no file was changed' >&2; exit 1; }}",
            quote(&temporary),
            quote(write.path)
        );
        for chunk in encoded.as_bytes().chunks(76) {
            script.push_str(std::str::from_utf8(chunk).unwrap_or_default());
            script.push('\n');
        }
        script.push_str("OCFK8S_EOF\n");
        to_own.push(quote(&temporary));
        by_mode.entry(mode).or_default().push(quote(&temporary));
    }
    if !to_own.is_empty() {
        let _ = writeln!(script, "chown 0:0 -- {}", to_own.join(" "));
    }
    for (mode, paths) in &by_mode {
        let _ = writeln!(script, "chmod {mode} -- {}", paths.join(" "));
    }
    if !temporaries.is_empty() {
        script.push_str("sync --");
        for (temporary, _) in &temporaries {
            let _ = write!(script, " {}", quote(temporary));
        }
        script.push('\n');
        for (temporary, target) in &temporaries {
            let _ = writeln!(script, "mv -f -- {} {}", quote(temporary), quote(target));
        }
        script.push_str("trap - EXIT\n");
        script.push_str("sync --");
        for folder in &new_folders {
            let _ = write!(script, " {}", quote(folder));
        }
        script.push('\n');
    }
    script.push_str("echo done\n}\nocfk8s_write\n");
    Ok(script)
}

/// Apply `writes` and remove `stray` temporaries on `host`: one round trip.
pub(crate) async fn write_files(
    host: &Host,
    writes: &[FileWrite<'_>],
    stray: &[String],
) -> anyhow::Result<WriteReport> {
    let report = WriteReport {
        written: writes.iter().filter(|write| write.contents_differ).count(),
        modes_fixed: writes.iter().filter(|write| !write.contents_differ).count(),
        temporaries_removed: stray.len(),
    };
    if writes.is_empty() && stray.is_empty() {
        return Ok(report);
    }
    let suffix = random_suffix();
    let script = write_script(writes, stray, &suffix)?;
    let output = host.run_script(&script).await?;
    if output.stdout.trim_end() != "done" {
        anyhow::bail!("the write script did not finish");
    }
    Ok(report)
}

pub(crate) fn random_suffix() -> String {
    use rand::Rng as _;
    let mut rng = rand::rng();
    (0..12)
        .map(|_| char::from(b"abcdefghijklmnopqrstuvwxyz0123456789"[rng.random_range(0..36)]))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn run_locally(script: &str) -> std::process::Output {
        use std::io::Write;
        let mut child = std::process::Command::new("sh")
            .arg("-s")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn sh");
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(script.as_bytes())
            .expect("feed");
        child.wait_with_output().expect("wait")
    }

    #[test]
    fn writes_new_and_changed_files_with_modes_and_removes_stray_temporaries() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().to_str().expect("utf-8");
        let changed = format!("{root}/etc/app.conf");
        let added = format!("{root}/etc/pki/new.key");
        let mode_only = format!("{root}/etc/mode.conf");
        std::fs::create_dir_all(format!("{root}/etc")).expect("mkdir");
        std::fs::write(&changed, "old").expect("write");
        std::fs::write(&mode_only, "same").expect("write");
        let stray = format!("{root}/etc/.app.conf.ocfk8s-tmp-leftover");
        std::fs::write(&stray, "ol").expect("write");
        let binary: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        let writes = [
            FileWrite {
                path: &changed,
                contents: b"new\n",
                mode: 0o644,
                contents_differ: true,
            },
            FileWrite {
                path: &added,
                contents: &binary,
                mode: 0o600,
                contents_differ: true,
            },
            FileWrite {
                path: &mode_only,
                contents: b"same",
                mode: 0o640,
                contents_differ: false,
            },
        ];

        let script = write_script(&writes, std::slice::from_ref(&stray), "run1").expect("script");
        let output = run_locally(&script);

        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        assert_eq!(std::fs::read(&changed).expect("read"), b"new\n");
        assert_eq!(std::fs::read(&added).expect("read"), binary);
        let mode =
            |path: &str| std::fs::metadata(path).expect("stat").permissions().mode() & 0o7777;
        assert_eq!(mode(&changed), 0o644);
        assert_eq!(mode(&added), 0o600);
        assert_eq!(mode(&mode_only), 0o640);
        let mut left: Vec<String> = std::fs::read_dir(format!("{root}/etc"))
            .expect("list")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        left.sort();
        assert_eq!(left, ["app.conf", "mode.conf", "pki"]);
    }

    #[test]
    fn a_full_disk_names_the_file_changes_nothing_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().to_str().expect("utf-8");
        let first = format!("{root}/a.conf");
        let second = format!("{root}/b.conf");
        std::fs::write(&first, "old a").expect("write");
        let writes = [
            FileWrite {
                path: &first,
                contents: b"new a",
                mode: 0o644,
                contents_differ: true,
            },
            FileWrite {
                path: &second,
                contents: b"new b",
                mode: 0o600,
                contents_differ: true,
            },
        ];
        // The second temporary lands on a device that is always full.
        std::os::unix::fs::symlink("/dev/full", temporary_path(&second, "full")).expect("symlink");
        let script = write_script(&writes, &[], "full").expect("script");
        let output = run_locally(&script);

        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("No space left on device"), "{stderr}");
        assert!(
            stderr.contains(&format!("cannot write {second}: no file was changed")),
            "{stderr}"
        );
        assert_eq!(std::fs::read(&first).expect("read"), b"old a");
        let left: Vec<String> = std::fs::read_dir(root)
            .expect("list")
            .map(|entry| {
                entry
                    .expect("entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(left, ["a.conf"]);
    }

    #[test]
    fn a_script_cut_short_changes_nothing() {
        let dir = tempfile::tempdir().expect("temp dir");
        let target = format!("{}/file.conf", dir.path().to_str().expect("utf-8"));
        std::fs::write(&target, "old").expect("write");
        let writes = [FileWrite {
            path: &target,
            contents: b"new contents",
            mode: 0o644,
            contents_differ: true,
        }];
        let script = write_script(&writes, &[], "cut").expect("script");
        for cut in [script.len() / 3, script.len() / 2, script.len() - 14] {
            let output = run_locally(&script[..cut]);
            assert!(
                !String::from_utf8_lossy(&output.stdout).contains("done"),
                "a script cut at {cut} ran"
            );
            assert_eq!(std::fs::read(&target).expect("read"), b"old");
            assert_eq!(std::fs::read_dir(dir.path()).expect("list").count(), 1);
        }
    }
}
