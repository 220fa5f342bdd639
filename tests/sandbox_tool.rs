//! `sandbox/sandbox` removes only what it created: `down` refuses a folder
//! that `up` did not mark, and a failed look-up never turns into removing
//! the current folder.

use std::path::{Path, PathBuf};
use std::process::Command;

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sandbox/sandbox")
}

fn sandbox(dir: &Path, args: &[&str]) -> (i32, String) {
    let output = Command::new(script())
        .current_dir(dir)
        .args(args)
        .output()
        .expect("run sandbox");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn down_inventory_without_known_hosts_removes_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    let canary = dir.path().join("canary");
    std::fs::write(&canary, "still here").expect("write");
    let lab = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/lab.toml");
    let (status, stderr) = sandbox(
        dir.path(),
        &["down-inventory", lab.to_str().expect("utf-8")],
    );
    assert_ne!(status, 0, "{stderr}");
    assert!(stderr.contains("has no [ssh] known_hosts"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(&canary).expect("canary"),
        "still here"
    );
}

#[test]
fn down_refuses_a_folder_up_did_not_create_and_up_refuses_a_full_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let home = dir.path().join("home");
    std::fs::create_dir(&home).expect("mkdir");
    std::fs::write(home.join("notes"), "mine").expect("write");
    std::fs::write(home.join("bridge"), "ocfsbX").expect("write");

    let (status, stderr) = sandbox(dir.path(), &["down", "home"]);
    assert_ne!(status, 0, "{stderr}");
    assert!(stderr.contains("not a sandbox state folder"), "{stderr}");
    assert_eq!(
        std::fs::read_to_string(home.join("notes")).expect("notes"),
        "mine"
    );

    std::fs::remove_file(home.join("bridge")).expect("rm");
    let (status, stderr) = sandbox(
        dir.path(),
        &["up", "home", "ocfsbX", "10.250.0.1/24", "a=10.250.0.2"],
    );
    assert_ne!(status, 0, "{stderr}");
    assert!(
        stderr.contains("is not empty and is not a sandbox state folder"),
        "{stderr}"
    );
    assert_eq!(
        std::fs::read_to_string(home.join("notes")).expect("notes"),
        "mine"
    );

    let (status, stderr) = sandbox(dir.path(), &["down", ""]);
    assert_ne!(status, 0, "{stderr}");
    assert!(dir.path().join("home/notes").exists());
}
