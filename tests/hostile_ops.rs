//! Hostile input on the operations: every command that takes a host name
//! or an address (`add-master`, `add-worker`, `remove-master`,
//! `remove-worker`, `rotate-certs --only`) refuses values outside the
//! inventory's rules before touching anything. The inventory's hosts are
//! unreachable documentation addresses (192.0.2.0/24) with a one-second
//! connect timeout: a refusal that came after trying to connect would be
//! slow and say so; the PKI store stays byte-identical and no `backups/`
//! folder appears.

#[path = "common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{inventory, ocfk8s, Run, BASE};

/// Every file of the store with its contents, but the run lock's record
/// (it names the last holder).
fn store(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut files = Vec::new();
    let mut pending = vec![dir.join("pki")];
    while let Some(folder) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if !path.ends_with(".ocfk8s.lock") {
                let contents = std::fs::read(&path).expect("read");
                files.push((path, contents));
            }
        }
    }
    files.sort();
    files
}

fn run(dir: &Path, args: &[&str]) -> (Run, Duration) {
    let started = Instant::now();
    let run: Run = ocfk8s()
        .current_dir(dir)
        .args(["-i", "inventory.toml", "--no-progress"])
        .args(args)
        .output()
        .expect("run ocfk8s")
        .into();
    (run, started.elapsed())
}

/// What a refusal must name: the value itself, or (for values the message
/// cannot print as they are) a recognisable part of it.
fn named(stderr: &str, value: &str) -> bool {
    if value.is_empty() {
        return stderr.contains("\"\"") || stderr.contains("empty");
    }
    // Control characters are shown escaped (`\n`), once; long values cut.
    let shown: String = value
        .chars()
        .take(20)
        .flat_map(|character| {
            if character.is_control() {
                character.escape_default().collect::<Vec<_>>()
            } else {
                vec![character]
            }
        })
        .collect();
    stderr.contains(value) || stderr.contains(&shown)
}

#[test]
fn hostile_names_and_addresses_are_refused_before_anything_is_touched() {
    let text = BASE.replace(
        "concurrency = 8\n",
        "concurrency = 8\nconnect_timeout_secs = 1\n",
    );
    let (dir, _) = inventory(&text);
    let generate = ocfk8s()
        .current_dir(dir.path())
        .args(["-i", "inventory.toml", "pki", "generate"])
        .output()
        .expect("pki generate");
    assert!(generate.status.success(), "{generate:?}");
    let before = store(dir.path());
    assert!(before.len() > 20, "the store was generated");

    let long = "a".repeat(300);
    let names = [
        "m1;touch /tmp/x",
        "$(id)",
        "`id`",
        "a b",
        "../etc",
        "",
        long.as_str(),
        "mäster",
        "m1\u{202e}",
        "m1\nm2",
        "M1",
        "m1'",
        "*",
        "-rf",
    ];
    let mut failures = Vec::new();
    let mut check = |args: Vec<String>, value: &str| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let (result, took) = run(dir.path(), &args);
        let mut problems = Vec::new();
        if result.status != 2 {
            problems.push(format!("exit {}", result.status));
        }
        if !named(&result.stderr, value) {
            problems.push("the message does not name the value".to_string());
        }
        if took > Duration::from_secs(5) {
            problems.push(format!("took {took:?} (tried to connect?)"));
        }
        if result.stderr.contains("cannot connect") || result.stderr.contains("connect  ") {
            problems.push("it tried to connect".to_string());
        }
        if dir.path().join("backups").exists() {
            problems.push("a backups/ folder appeared".to_string());
        }
        if store(dir.path()) != before {
            problems.push("the store changed".to_string());
        }
        if !problems.is_empty() {
            failures.push(format!(
                "{args:?}: {}\n{}",
                problems.join("; "),
                result.stderr.trim()
            ));
        }
    };

    for name in names {
        for command in ["add-master", "add-worker", "remove-master", "remove-worker"] {
            // `--` so that a name starting with `-` is a name, not a flag.
            check(vec![command.into(), "--".into(), name.into()], name);
        }
        check(vec!["rotate-certs".into(), format!("--only={name}")], name);
        check(
            vec!["rotate-certs".into(), format!("--only=m1,{name}")],
            name,
        );
    }
    // Listed or unknown names where the command wants the other kind.
    for (command, name) in [
        ("add-master", "w1"),
        ("add-master", "m9"),
        ("add-worker", "m1"),
        ("add-worker", "w9"),
        ("remove-master", "m1"),
        ("remove-master", "w1"),
        ("remove-worker", "w1"),
        ("remove-worker", "m1"),
    ] {
        check(vec![command.into(), name.into()], name);
    }
    check(
        vec!["rotate-certs".into(), "--only".into(), "w9".into()],
        "w9",
    );

    let addresses = [
        "127.0.0.1",
        "0.0.0.0",
        "::",
        "::1",
        "224.0.0.1",
        "255.255.255.255",
        "169.254.1.1",
        "nonsense",
        "10.0.0.1; id",
        "$(id)",
        "",
        "192.0.2.100",
        "192.0.2.11",
        "192.0.2.21",
        "::ffff:192.0.2.21",
        "10.244.1.1",
        "10.96.0.1",
        "2001:db8::1",
    ];
    for address in addresses {
        for (command, name) in [("remove-master", "m9"), ("remove-worker", "w9")] {
            check(
                vec![
                    command.into(),
                    name.into(),
                    "--address".into(),
                    address.into(),
                ],
                address.trim_start_matches("::ffff:"),
            );
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
