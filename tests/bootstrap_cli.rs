//! `bootstrap` refuses what it cannot do before touching anything: bad or
//! unskippable phases (exit 2) and install methods not built yet (exit 1).

mod common;

use common::{inventory, run_in, BASE};

#[test]
fn install_by_apt_is_not_built_yet_and_says_so() {
    let (dir, path) = inventory(BASE);
    let run = run_in(
        dir.path(),
        &[
            "-i",
            path.to_str().expect("utf-8"),
            "bootstrap",
            "--skip-phases",
            "etcd,control-plane,nodes,lb,addons",
        ],
    );
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains("the install phase cannot run yet"),
        "{}",
        run.stderr
    );
    // Refused before anything happened: no PKI store, no lock.
    assert_eq!(common::tree(dir.path()), ["inventory.toml"]);
}

#[test]
fn unknown_or_required_phases_are_bad_usage() {
    let (dir, path) = inventory(BASE);
    let path = path.to_str().expect("utf-8");
    for (skip, message) in [
        ("preflight", "the preflight phase cannot be skipped"),
        ("pki", "the pki phase cannot be skipped"),
        ("etcd,bogus", "unknown phase \"bogus\""),
    ] {
        let run = run_in(
            dir.path(),
            &["-i", path, "bootstrap", "--skip-phases", skip],
        );
        assert_eq!(run.status, 2, "{skip}: {}", run.stderr);
        assert!(run.stderr.contains(message), "{skip}: {}", run.stderr);
    }
    assert_eq!(common::tree(dir.path()), ["inventory.toml"]);
}
