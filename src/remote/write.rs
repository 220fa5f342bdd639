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

/// The script that applies `writes` and removes `stray` temporaries on a
/// host of architecture `arch` (its facts' `uname -m`; empty if unknown).
/// `suffix` makes this run's temporaries and heredoc marker unique.
pub(crate) fn write_script(
    writes: &[FileWrite<'_>],
    stray: &[String],
    suffix: &str,
    arch: &str,
) -> anyhow::Result<WriteBatch> {
    let mut script = String::from("ocfk8s_write() {\nset -e\numask 077\ntrap '' HUP PIPE\n");
    if !stray.is_empty() {
        script.push_str("rm -rf --");
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
        // Folders are made (0755) only when one is missing.
        let tests: Vec<String> = new_folders
            .iter()
            .map(|folder| format!("[ ! -d {} ]", quote(folder)))
            .collect();
        let _ = writeln!(
            script,
            "if {}; then\n  (umask 022 && mkdir -p --{})\nfi",
            tests.join(" || "),
            quoted(new_folders.iter().map(|folder| folder.to_string()))
        );
    }
    // Folders holding private keys are root's alone.
    let key_folders: BTreeSet<&str> = writes
        .iter()
        .filter(|write| write.contents_differ && write.path.ends_with(".key"))
        .map(|write| parent(write.path))
        .collect();
    if !key_folders.is_empty() {
        let _ = writeln!(
            script,
            "chmod 0700 --{}",
            quoted(key_folders.iter().map(|folder| folder.to_string()))
        );
    }
    // Changed files are unpacked by one `tar` into temporaries beside
    // their targets (created 0600 under umask 077, given their mode once
    // written), then renamed over their targets.
    let mut archive = super::archive::Archive::default();
    let mut staged: Vec<(String, &str)> = Vec::new();
    let mut to_own = Vec::new();
    let mut by_mode: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for write in writes {
        check_path(write.path)?;
        if !write.contents_differ {
            let mode = format!("{:04o}", write.mode & 0o7777);
            to_own.push(quote(write.path));
            by_mode.entry(mode).or_default().push(quote(write.path));
            continue;
        }
        let _ = writeln!(
            script,
            "if [ -d {target} ] && [ ! -L {target} ]; then echo {target}' is a folder, not a file' >&2; exit 1; fi",
            target = quote(write.path),
        );
        let temporary = temporary_path(write.path, suffix);
        archive.file(&temporary, write.mode, write.contents);
        staged.push((temporary, write.path));
    }
    let temporaries = quoted(staged.iter().map(|(temporary, _)| temporary.clone()));
    if !staged.is_empty() {
        // Whatever stops the batch before its renames (a full disk, a
        // folder in a file's place, an archive cut short) takes this
        // batch's temporaries with it.
        let _ = writeln!(
            script,
            "trap {} EXIT",
            quote(&format!("rm -f --{temporaries}"))
        );
        let _ = writeln!(
            script,
            "tar -x -p -m --numeric-owner -C / -f - || {{ echo '{UNPACK_FAILED}' >&2; exit 1; }}"
        );
    }
    if !to_own.is_empty() {
        let _ = writeln!(script, "chown 0:0 -- {}", to_own.join(" "));
    }
    for (mode, paths) in &by_mode {
        let _ = writeln!(script, "chmod {mode} -- {}", paths.join(" "));
    }
    if !staged.is_empty() {
        // Every temporary synced, then renamed over its target, and the
        // folders synced: by one perl (Debian's perl-base is always
        // there) or, without it, `sync`, one `mv` per file and `sync`.
        let folders = quoted(new_folders.iter().map(|folder| folder.to_string()));
        let pairs = quoted(
            staged
                .iter()
                .flat_map(|(temporary, target)| [temporary.clone(), target.to_string()]),
        );
        let _ = writeln!(
            script,
            "if command -v perl >/dev/null 2>&1; then\n  perl -e {} --{pairs} --{folders}\nelse\n  sync --{temporaries}",
            quote(&commit_script(arch))
        );
        for (temporary, target) in &staged {
            let _ = writeln!(
                script,
                "  mv -f -T -- {} {}",
                quote(temporary),
                quote(target)
            );
        }
        let _ = write!(script, "  sync --{folders}");
        script.push_str("\nfi\ntrap - EXIT\n");
    }
    script.push_str("echo done\n}\nocfk8s_write\n");
    Ok(WriteBatch {
        script,
        archive: if staged.is_empty() {
            Vec::new()
        } else {
            archive.finish()
        },
        staged: staged
            .into_iter()
            .map(|(temporary, target)| (temporary, target.to_string()))
            .collect(),
    })
}

/// The commit of a batch in perl: its arguments are the temporaries each
/// followed by its target, `--`, the folders to sync. Each temporary is
/// synced before any rename, so a crash after a rename never leaves a
/// target with contents not on disk. `fsync` comes first (see
/// [`commit_script`]).
const COMMIT: &str = r#"use strict;
my (@pairs, @folders); my $list = \@pairs;
for (@ARGV) { if ($_ eq "--") { $list = \@folders; next } push @$list, $_ }
sub flush { my $p = shift; open(my $h, "<", $p) or die "cannot open $p: $!\n"; fsync($h) or die "cannot sync $p: $!\n"; close $h }
for (my $i = 0; $i < @pairs; $i += 2) { flush($pairs[$i]) }
for (my $i = 0; $i < @pairs; $i += 2) { rename($pairs[$i], $pairs[$i + 1]) or die "cannot rename $pairs[$i] over $pairs[$i + 1]: $!\n" }
flush($_) for @folders;
"#;

/// The commit for a host of architecture `arch` (`uname -m`): where Linux's
/// number for fsync(2) is known, perl's builtin `syscall` makes it;
/// elsewhere `require IO` does (loading it costs the host some 7 ms of CPU,
/// more than the rest of the commit).
fn commit_script(arch: &str) -> String {
    let fsync = match arch {
        "x86_64" => "sub fsync { syscall(74, fileno($_[0])) == 0 }",
        "aarch64" => "sub fsync { syscall(82, fileno($_[0])) == 0 }",
        _ => "require IO; sub fsync { IO::Handle::sync($_[0]) }",
    };
    format!("{fsync}\n{COMMIT}")
}

/// The longest write script sent (Linux's limit on one argument is 128 KiB).
const MAX_SCRIPT: usize = 120 * 1024;

/// Each of `words` quoted for the shell, each after a space.
fn quoted(words: impl IntoIterator<Item = String>) -> String {
    words.into_iter().fold(String::new(), |mut line, word| {
        line.push(' ');
        line.push_str(&quote(&word));
        line
    })
}

/// What the host's error output says when its `tar` could not unpack.
const UNPACK_FAILED: &str = "the changed files could not be unpacked: no file was changed";

/// One batch for a host: the script (run with `sh -c`), the archive fed
/// to it on stdin, and each temporary with its target.
pub(crate) struct WriteBatch {
    pub(crate) script: String,
    pub(crate) archive: Vec<u8>,
    pub(crate) staged: Vec<(String, String)>,
}

/// The host's error output, told in the targets' names: `tar` names the
/// staged file it could not write.
fn explain(stderr: &str, staged: &[(String, String)]) -> String {
    for line in stderr.lines() {
        for (path, target) in staged {
            let relative = path.trim_start_matches('/');
            if let Some(rest) = line.split_once(relative).map(|(_, rest)| rest) {
                let reason = rest.trim_start_matches(':').trim();
                return format!("cannot write {target}: {reason}; no file was changed");
            }
        }
    }
    stderr.to_string()
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
    let _timer = crate::timings::step("write");
    let suffix = random_suffix();
    let batch = write_script(writes, stray, &suffix, &host.facts.arch)?;
    // The script travels as one argument of `sh -c` (the data on stdin):
    // Linux takes at most 128 KiB in one argument.
    if batch.script.len() > MAX_SCRIPT {
        anyhow::bail!(
            "the write batch names too many or too long paths to send in one command ({} bytes of script)",
            batch.script.len()
        );
    }
    let output = host
        .exec_streaming(&batch.script, batch.archive.as_slice())
        .await?;
    match output.status {
        Some(0) if String::from_utf8_lossy(&output.stdout).trim_end() == "done" => Ok(report),
        Some(0) => anyhow::bail!("the write script did not finish"),
        Some(code) => anyhow::bail!(
            "remote script exited with status {code}: {}",
            explain(&output.stderr, &batch.staged)
        ),
        None => anyhow::bail!("remote script was killed: {}", output.stderr),
    }
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
    use crate::test_support::listing;
    use std::os::unix::fs::PermissionsExt;

    /// Run `batch` as a host does: `sh -c` with the archive on stdin.
    fn run_locally(batch: &WriteBatch, archive: &[u8]) -> std::process::Output {
        run_with_path(batch, archive, None)
    }

    /// [`run_locally`] on a host without perl: `PATH` holds only the tools
    /// the batch's other way uses.
    fn run_without_perl(batch: &WriteBatch) -> std::process::Output {
        let tools = tempfile::tempdir().expect("temp dir");
        for tool in [
            "tar", "sync", "mv", "rmdir", "rm", "mkdir", "chmod", "chown",
        ] {
            let found = ["/usr/bin", "/bin"]
                .iter()
                .map(|dir| std::path::Path::new(dir).join(tool))
                .find(|path| path.exists())
                .expect("tool");
            std::os::unix::fs::symlink(found, tools.path().join(tool)).expect("symlink");
        }
        run_with_path(batch, &batch.archive, Some(tools.path()))
    }

    fn run_with_path(
        batch: &WriteBatch,
        archive: &[u8],
        path: Option<&std::path::Path>,
    ) -> std::process::Output {
        use std::io::Write;
        let mut command = std::process::Command::new("/bin/sh");
        if let Some(path) = path {
            command.env("PATH", path);
        }
        let mut child = command
            .arg("-c")
            .arg(&batch.script)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("spawn sh");
        let mut stdin = child.stdin.take().expect("stdin");
        // The script may stop before reading it all.
        let _ = stdin.write_all(archive);
        drop(stdin);
        child.wait_with_output().expect("wait")
    }

    #[test]
    fn writes_new_and_changed_files_with_modes_and_removes_stray_temporaries() {
        writes_a_batch(false, std::env::consts::ARCH);
    }

    #[test]
    fn writes_a_batch_the_same_way_without_perl() {
        writes_a_batch(true, std::env::consts::ARCH);
    }

    #[test]
    fn writes_a_batch_the_same_way_where_fsync_has_no_known_number() {
        writes_a_batch(false, "riscv64");
    }

    fn writes_a_batch(without_perl: bool, arch: &str) {
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
        // A staging folder an earlier version's killed run left.
        let stray_stage = format!("{root}/etc/.stage{TEMPORARY_MARKER}killed");
        std::fs::create_dir_all(&stray_stage).expect("mkdir");
        std::fs::write(format!("{stray_stage}/app.conf"), "half").expect("write");
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

        let batch = write_script(&writes, &[stray.clone(), stray_stage.clone()], "run1", arch)
            .expect("script");
        let output = if without_perl {
            run_without_perl(&batch)
        } else {
            run_locally(&batch, &batch.archive)
        };

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
        assert_eq!(mode(&format!("{root}/etc/pki")), 0o700);
        assert_eq!(
            listing(format!("{root}/etc")),
            ["app.conf", "mode.conf", "pki"]
        );
        assert_eq!(listing(format!("{root}/etc/pki")), ["new.key"]);
    }

    #[test]
    fn a_file_the_host_cannot_write_is_named_and_nothing_changes() {
        let staged = vec![(
            "/etc/kubernetes/.admin.conf.ocfk8s-tmp-abc".to_string(),
            "/etc/kubernetes/admin.conf".to_string(),
        )];
        let stderr = "tar: etc/kubernetes/.admin.conf.ocfk8s-tmp-abc: Cannot write: No space left on device\n\
                      tar: Exiting with failure status due to previous errors\n\
                      the changed files could not be unpacked: no file was changed";
        assert_eq!(
            explain(stderr, &staged),
            "cannot write /etc/kubernetes/admin.conf: Cannot write: No space left on device; no file was changed"
        );
    }

    #[test]
    fn an_archive_cut_short_changes_nothing_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().to_str().expect("utf-8");
        let first = format!("{root}/a.conf");
        let second = format!("{root}/b.conf");
        std::fs::write(&first, "old a").expect("write");
        let big: Vec<u8> = (0..=255u8).cycle().take(100_000).collect();
        let writes = [
            FileWrite {
                path: &first,
                contents: b"new a",
                mode: 0o644,
                contents_differ: true,
            },
            FileWrite {
                path: &second,
                contents: &big,
                mode: 0o600,
                contents_differ: true,
            },
        ];
        let batch = write_script(&writes, &[], "cut", std::env::consts::ARCH).expect("script");
        for cut in [0, 700, batch.archive.len() / 2, batch.archive.len() - 1100] {
            let output = run_locally(&batch, &batch.archive[..cut]);
            assert!(
                !output.status.success(),
                "an archive cut at {cut} was taken"
            );
            assert!(
                !String::from_utf8_lossy(&output.stdout).contains("done"),
                "a batch cut at {cut} finished"
            );
            assert_eq!(std::fs::read(&first).expect("read"), b"old a");
            assert_eq!(listing(root), ["a.conf"], "cut at {cut}");
        }
    }

    #[test]
    fn a_folder_in_a_files_place_is_named_and_nothing_changes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let root = dir.path().to_str().expect("utf-8");
        let first = format!("{root}/a.conf");
        let second = format!("{root}/b.conf");
        std::fs::write(&first, "old a").expect("write");
        std::fs::create_dir(&second).expect("mkdir");
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
        let batch = write_script(&writes, &[], "folder", std::env::consts::ARCH).expect("script");
        let output = run_locally(&batch, &batch.archive);
        assert!(!output.status.success());
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.contains(&format!("{second} is a folder, not a file")),
            "{stderr}"
        );
        assert_eq!(std::fs::read(&first).expect("read"), b"old a");
        assert_eq!(listing(root), ["a.conf", "b.conf"]);
    }
}
