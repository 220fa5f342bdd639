//! The escaping layer on its own: every remote script builder that takes
//! an inventory value (or a value read back from a host) is fed values the
//! inventory's validation would refuse (quotes, `;`, `$()`, backticks,
//! newlines, glob characters, a leading `-`, NUL) and must keep each one
//! inert, as one shell word.
//!
//! Each built script is checked with `sh -n`, then run with the real `sh`
//! in a scratch folder whose `PATH` holds only stubs that log their
//! arguments (and the real `touch`): the values carry `touch PWNED`, and
//! the sentinel file must never appear, while the stubs must receive each
//! value intact as (part of) one argument. Paths are planted under the
//! scratch folder, so a script writing where its values say writes there.
//!
//! NUL cannot travel in a shell word at all (arguments are C strings, and
//! `sh` drops it from scripts): the inventory refuses it; here a value with
//! a NUL must only stay inert, not arrive intact.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::remote::shell::quote;

/// Values validation would refuse, each trying to run `touch PWNED`.
const HOSTILE: [&str; 16] = [
    "x';touch PWNED;'",
    "x'\"'\"';touch PWNED;'",
    "x$(touch PWNED)",
    "x`touch PWNED`",
    "x\"$(touch PWNED)\"",
    "x;touch PWNED",
    "x|touch PWNED",
    "x&touch PWNED&",
    "x\ntouch PWNED\n",
    "x${IFS}$(touch${IFS}PWNED)",
    "x\\';touch PWNED;\\'",
    "*",
    "[a-z]?*",
    "-rf --touch=PWNED",
    "~root",
    "x\u{202e}'$(touch PWNED)'",
];

/// A value with a NUL: it must stay inert.
const WITH_NUL: &str = "x\0';touch PWNED;'";

/// Commands the scripts call, stubbed: each logs its name and arguments.
const STUBBED: [&str; 46] = [
    "systemctl",
    "tar",
    "perl",
    "etcdctl",
    "kubectl",
    "curl",
    "crictl",
    "ip",
    "awk",
    "grep",
    "sed",
    "base64",
    "sha256sum",
    "stat",
    "find",
    "sync",
    "mv",
    "chmod",
    "chown",
    "cat",
    "rm",
    "mkdir",
    "rmdir",
    "head",
    "tr",
    "wc",
    "date",
    "uname",
    "id",
    "ss",
    "dpkg-query",
    "apt-get",
    "apt-mark",
    "gpg",
    "sleep",
    "ln",
    "cp",
    "install",
    "tee",
    "dirname",
    "basename",
    "env",
    "nginx",
    "openssl",
    "sort",
    "xargs",
];

/// Record separator in the stubs' log (arguments are NUL-separated).
const RECORD_END: &[u8] = b"\x01\0";

struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().expect("scratch folder");
        let scratch = Scratch { dir };
        let stubs = scratch.stubs();
        std::fs::create_dir_all(&stubs).expect("stubs");
        std::fs::create_dir_all(scratch.work()).expect("work");
        // A file for a glob to match, were a value left unquoted.
        std::fs::write(scratch.work().join("abc"), "").expect("glob bait");
        scratch.stub_folder(&stubs);
        std::os::unix::fs::symlink("/usr/bin/touch", stubs.join("touch")).expect("touch");
        scratch
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn stubs(&self) -> PathBuf {
        self.path().join("stubs")
    }

    fn work(&self) -> PathBuf {
        self.path().join("work")
    }

    fn log(&self) -> PathBuf {
        self.path().join("log")
    }

    /// Put every stub into `folder` (created): a `bin_dir` of its own.
    fn stub_folder(&self, folder: &Path) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::create_dir_all(folder).expect("stub folder");
        let log = quote(&self.log().display().to_string());
        let temporary = quote(&self.path().join("tmp").display().to_string());
        for name in STUBBED {
            // `id -u` says root, as `sudo -n` makes it.
            let answer = if name == "id" { "echo 0\n" } else { "" };
            let body = format!(
                "#!/bin/sh\nprintf '%s\\0' \"${{0##*/}}\" \"$@\" >> {log}\nprintf '\\001\\000' >> {log}\n{answer}exit 0\n"
            );
            let path = folder.join(name);
            std::fs::write(&path, body).expect("stub");
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        }
        // mktemp hands out folders inside the scratch folder.
        let mktemp = format!(
            "#!/bin/sh\nprintf '%s\\0' mktemp \"$@\" >> {log}\nprintf '\\001\\000' >> {log}\n\
             /bin/mkdir -p {temporary} && exec /bin/mktemp -d -p {temporary}\n"
        );
        let path = folder.join("mktemp");
        std::fs::write(&path, mktemp).expect("stub");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    }

    /// A `bin_dir` under the scratch folder whose last component is
    /// `value`, holding the stubs; `None` when no folder can have that
    /// name (NUL, `/`, `.`, `..`).
    fn bin_dir(&self, value: &str) -> Option<String> {
        if value.contains(['\0', '/']) || value == "." || value == ".." {
            return None;
        }
        let folder = self.path().join("bin").join(value);
        self.stub_folder(&folder);
        Some(folder.display().to_string())
    }

    /// Run `script` with the real `sh` (fed on stdin, as the engine
    /// does, or with `-c` and `input` on stdin), `PATH` only the stubs.
    fn run(&self, script: &str, input: Option<&[u8]>) -> std::process::Output {
        let _ = std::fs::remove_file(self.log());
        let mut command = Command::new("/bin/sh");
        match input {
            Some(_) => command.arg("-c").arg(script.replace('\0', "")),
            None => command.arg("-s"),
        };
        let mut child = command
            .current_dir(self.work())
            .env_clear()
            .env("PATH", self.stubs())
            .env("HOME", self.work())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("sh");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().expect("stdin");
            let bytes = input.unwrap_or(script.as_bytes());
            let _ = stdin.write_all(bytes);
        }
        child.wait_with_output().expect("sh")
    }

    /// Every stub call since the last run: name and arguments.
    fn calls(&self) -> Vec<Vec<String>> {
        let Ok(log) = std::fs::read(self.log()) else {
            return Vec::new();
        };
        let mut calls = Vec::new();
        let mut rest = &log[..];
        while let Some(end) = rest
            .windows(RECORD_END.len())
            .position(|window| window == RECORD_END)
        {
            let record = &rest[..end];
            calls.push(
                record
                    .split(|byte| *byte == 0)
                    .filter(|part| !part.is_empty())
                    .map(|part| String::from_utf8_lossy(part).into_owned())
                    .collect(),
            );
            rest = &rest[end + RECORD_END.len()..];
        }
        calls
    }

    /// Whether the sentinel appeared anywhere in the scratch folder.
    fn pwned(&self) -> Option<PathBuf> {
        let mut pending = vec![self.path().to_path_buf()];
        while let Some(folder) = pending.pop() {
            for entry in std::fs::read_dir(&folder).expect("read_dir").flatten() {
                let path = entry.path();
                if entry.file_name().to_string_lossy().starts_with("PWNED")
                    || entry.file_name() == "--touch=PWNED"
                {
                    return Some(path);
                }
                if path.is_dir() && !path.is_symlink() {
                    pending.push(path);
                }
            }
        }
        None
    }
}

/// `sh -n` accepts `script`.
fn parses(script: &str, what: &str) {
    let check = Command::new("/bin/sh")
        .arg("-n")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            if let Some(mut stdin) = child.stdin.take() {
                let _ = stdin.write_all(script.as_bytes());
            }
            child.wait_with_output()
        })
        .expect("sh -n");
    assert!(
        check.status.success(),
        "{what}: sh -n: {}\n{script}",
        String::from_utf8_lossy(&check.stderr)
    );
}

/// Run `script`, then: no sentinel, and every one of `expected` arrived in
/// one argument of some stub call.
fn inert(
    scratch: &Scratch,
    script: &str,
    input: Option<&[u8]>,
    expected: &[String],
    what: &str,
) -> std::process::Output {
    parses(script, what);
    let output = scratch.run(script, input);
    if let Some(path) = scratch.pwned() {
        panic!(
            "{what}: a value ran as code ({} appeared)\n{script}\n{}",
            path.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let calls = scratch.calls();
    for want in expected {
        assert!(
            calls
                .iter()
                .any(|call| call.iter().skip(1).any(|argument| argument.contains(want.as_str()))),
            "{what}: no stub received {want:?} in one argument; calls: {calls:?}\nstderr: {}\n{script}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    output
}

fn cluster() -> crate::inventory::Cluster {
    crate::inventory::from_str(
        Path::new("inventory.toml"),
        crate::inventory::starter_inventory(&["10.0.0.11".into()], &["10.0.0.21".into()]).as_str(),
    )
    .expect("inventory")
    .cluster
}

fn values() -> impl Iterator<Item = (&'static str, bool)> {
    HOSTILE
        .iter()
        .map(|value| (*value, true))
        .chain(std::iter::once((WITH_NUL, false)))
}

#[test]
fn quote_keeps_every_value_one_word() {
    let scratch = Scratch::new();
    for (value, intact) in values() {
        let script = format!(
            "printf '%s' {} > out; ls -d -- {}",
            quote(value),
            quote(value)
        );
        parses(&script, value);
        let output = scratch.run(&script, None);
        assert!(scratch.pwned().is_none(), "{value:?} ran");
        if intact {
            let printed = std::fs::read(scratch.work().join("out")).expect("out");
            assert_eq!(printed, value.as_bytes(), "{value:?}");
        }
        let _ = output;
    }
}

#[test]
fn etcdctl_commands_and_the_snapshot_scripts_keep_values_inert() {
    let scratch = Scratch::new();
    for (value, intact) in values() {
        let bin_dir = scratch
            .bin_dir(value)
            .unwrap_or_else(|| scratch.stubs().display().to_string());
        let endpoint = format!("https://{value}:2379");
        let script =
            crate::remote::etcdctl::command(&bin_dir, std::slice::from_ref(&endpoint), &[value]);
        let expected = if intact {
            vec![format!("--endpoints={endpoint}"), value.to_string()]
        } else {
            Vec::new()
        };
        inert(&scratch, &script, None, &expected, "etcdctl command");

        let script = super::snapshot::save_script(&bin_dir, &endpoint);
        let expected = if intact {
            vec![format!("--endpoints={endpoint}")]
        } else {
            Vec::new()
        };
        inert(&scratch, &script, None, &expected, "snapshot save script");

        let dir = format!("{}/{value}", scratch.path().display());
        let script = super::snapshot::copy_script(&dir);
        let expected = if intact {
            vec![format!("{dir}/snapshot.db")]
        } else {
            Vec::new()
        };
        inert(&scratch, &script, None, &expected, "snapshot copy script");
    }
}

#[test]
fn the_status_and_readyz_scripts_keep_values_inert() {
    let scratch = Scratch::new();
    for (value, intact) in values() {
        let url = format!("https://{value}:6443/readyz");
        let script = super::status::host_script(
            &[value],
            Some("10.0.0.100".parse().expect("vip")),
            Some(&url),
        );
        let expected = if intact {
            vec![value.to_string()]
        } else {
            Vec::new()
        };
        inert(&scratch, &script, None, &expected, "status host script");
    }
}

#[test]
fn the_engine_scripts_keep_planted_paths_and_names_inert() {
    let scratch = Scratch::new();
    for (value, intact) in values() {
        if value.contains('\n') || value.contains('\\') || value.contains('\0') {
            // check_path refuses these before any script is built.
            let path = format!("/etc/{value}");
            assert!(crate::remote::state_script(&[path.as_str()], &[]).is_err());
            continue;
        }
        let folder = scratch.path().join(format!("files/{value}"));
        std::fs::create_dir_all(&folder).expect("folder");
        let path = format!("{}/{value}.conf", folder.display());
        std::fs::write(&path, "x").expect("file");

        let script = crate::remote::state_script(&[path.as_str()], &[value]).expect("state script");
        let expected = if intact {
            vec![path.clone(), value.to_string()]
        } else {
            Vec::new()
        };
        inert(&scratch, &script, None, &expected, "state script");

        let writes = [crate::remote::FileWrite {
            path: &path,
            contents: b"contents",
            mode: 0o600,
            contents_differ: true,
        }];
        let stray = format!(
            "{}/.{value}{}abc",
            folder.display(),
            crate::remote::TEMPORARY_MARKER
        );
        let batch = crate::remote::write_script(
            &writes,
            std::slice::from_ref(&stray),
            "suffix",
            std::env::consts::ARCH,
        )
        .expect("write script");
        let staged = batch.staged[0].0.clone();
        inert(
            &scratch,
            &batch.script,
            Some(&batch.archive),
            &[folder.display().to_string(), staged, stray.clone()],
            "write script",
        );

        let script = crate::remote::receive_script(&path, 0o600, &"0".repeat(64), "suffix")
            .expect("receive");
        inert(&scratch, &script, Some(b"data"), &[], "receive script");

        let bin_dir = scratch.bin_dir(value).unwrap_or_default();
        let script = crate::remote::facts_script(&crate::remote::FactsRequest {
            bin_dir: &bin_dir,
            resolv_conf: &path,
            binaries: &["etcd"],
            packages: &["etcd-server"],
            ports: &[2379, 10250],
        })
        .expect("facts script");
        // The shell reads resolv.conf itself: the planted path must reach
        // it whole, as one redirection.
        let planted = std::fs::write(&path, "nameserver 192.0.2.53\n").is_ok();
        let output = inert(&scratch, &script, None, &[], "facts script");
        if planted {
            assert!(
                String::from_utf8_lossy(&output.stdout).contains("nameserver 192.0.2.53"),
                "facts script: {path:?} was not read: {}",
                String::from_utf8_lossy(&output.stdout)
            );
        }
        // Names in `case` patterns and listings are checked instead.
        assert!(crate::remote::facts_script(&crate::remote::FactsRequest {
            bin_dir: &bin_dir,
            resolv_conf: &path,
            binaries: &[value],
            packages: &[],
            ports: &[2379, 10250],
        })
        .is_err());
    }
}

#[test]
fn the_kubectl_and_departure_scripts_keep_names_and_bin_dir_inert() {
    let scratch = Scratch::new();
    for (value, intact) in values() {
        let mut cluster = cluster();
        cluster.install.bin_dir = scratch
            .bin_dir(value)
            .unwrap_or_else(|| scratch.stubs().display().to_string());
        cluster.masters[0].name = value.to_string();
        let master = cluster.masters[0].clone();
        let expected = if intact {
            vec![value.to_string()]
        } else {
            Vec::new()
        };

        let script =
            super::addons::addons_script(&cluster, &master, b"kubeconfig", &"a".repeat(64));
        inert(&scratch, &script, None, &expected, "addons script");

        for action in [
            super::departure::NodeAction::Probe,
            super::departure::NodeAction::Remove { drain: true },
        ] {
            let script = super::departure::node_object_script(
                &cluster,
                &master,
                b"kubeconfig",
                value,
                action,
            );
            inert(&scratch, &script, None, &expected, "node object script");
        }

        // The departing host's name and the cleaning scripts: their paths
        // are ocfk8s's own; only run with every command stubbed.
        let worker = cluster.workers[0].clone();
        let mut departing = worker.clone();
        departing.name = value.to_string();
        let script = super::departure::leftovers_script(&cluster, &departing).expect("leftovers");
        inert(&scratch, &script, None, &[], "leftovers script");
        let script = super::departure::clean_script(&cluster, &departing, "20260101T000000Z")
            .expect("clean");
        inert(&scratch, &script, None, &[], "clean script");
        assert!(super::departure::clean_script(&cluster, &departing, value).is_err());

        let mut request = crate::install::AptRequest::for_node(&cluster, true);
        request.kubernetes_version = value.to_string();
        let script = crate::install::apt_script(&request);
        parses(&script, "apt script");
        assert!(
            script.contains(&format!("version={}", quote(value))),
            "the version goes in quoted:\n{script}"
        );
    }
}

#[test]
fn the_harness_catches_a_value_left_unquoted() {
    let scratch = Scratch::new();
    for value in [
        "x';touch PWNED;'",
        "x$(touch PWNED)",
        "x`touch PWNED`",
        "x;touch PWNED",
    ] {
        let script = format!("etcdctl --endpoints='{value}'\netcdctl \"{value}\"\netcdctl {value}");
        let _ = scratch.run(&script, None);
        let planted = scratch.pwned().expect("the unquoted value ran");
        std::fs::remove_file(planted).expect("remove the sentinel");
    }
}
