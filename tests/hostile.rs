//! Hostile input: every inventory in `tests/hostile/` is refused by
//! `validate`, `render` and `pki generate` alike, with exit status 2, a
//! message naming the place (file, line and column, or field) and nothing
//! written anywhere. Each file says what it expects in `# expect:` lines.
//!
//! Beside the corpus: files that are not inventories at all (a FIFO, a
//! device, a symlink loop, UTF-16), which must neither hang nor exhaust
//! memory, and values that must be normalised rather than refused.

mod render_support;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use render_support::common::{inventory, ocfk8s, repo_root, run_in, tree, Run};

/// Every error message stays short, whatever the inventory holds.
const MAX_STDERR: usize = 8 * 1024;

fn corpus() -> Vec<PathBuf> {
    let dir = repo_root().join("tests/hostile");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("tests/hostile")
        .map(|entry| entry.expect("entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "toml"))
        .collect();
    files.sort();
    files
}

fn expectations(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# expect: "))
        .map(str::to_string)
        .collect()
}

#[test]
fn every_hostile_inventory_is_refused_by_every_command_and_nothing_is_written() {
    let files = corpus();
    assert!(
        files.len() >= 60,
        "only {} hostile inventories",
        files.len()
    );
    let mut failures = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).expect("read hostile inventory");
        let expected = expectations(&text);
        assert!(
            expected
                .first()
                .is_some_and(|place| place.starts_with("inventory.toml:")),
            "{}: the first `# expect:` must name the place",
            file.display()
        );
        let (dir, _) = inventory(&text);
        for command in [
            &["validate"][..],
            &["render", "--out", "out"][..],
            &["pki", "generate"][..],
        ] {
            let mut args = vec!["-i", "inventory.toml"];
            args.extend_from_slice(command);
            let run = run_in(dir.path(), &args);
            let name = file.file_name().unwrap_or_default().to_string_lossy();
            let mut problems = Vec::new();
            if run.status != 2 {
                problems.push(format!("exit status {}", run.status));
            }
            for needle in &expected {
                if !run.stderr.contains(needle.as_str()) {
                    problems.push(format!("no {needle:?}"));
                }
            }
            if run.stderr.len() > MAX_STDERR {
                problems.push(format!("{} bytes of stderr", run.stderr.len()));
            }
            if !run.stdout.is_empty() {
                problems.push(format!("stdout: {}", run.stdout));
            }
            let written = tree(dir.path());
            if written != ["inventory.toml"] {
                problems.push(format!("wrote {written:?}"));
            }
            if !problems.is_empty() {
                failures.push(format!(
                    "{name} ({}): {}\n{}",
                    command.join(" "),
                    problems.join("; "),
                    &run.stderr[..run.stderr.len().min(2000)]
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Run with a deadline: a hang is a failure, not a stuck test run.
fn run_with_timeout(dir: &Path, args: &[&str], timeout: Duration) -> Run {
    let mut child = ocfk8s()
        .current_dir(dir)
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn ocfk8s");
    let start = Instant::now();
    loop {
        if child.try_wait().expect("wait").is_some() {
            return child.wait_with_output().expect("output").into();
        }
        if start.elapsed() > timeout {
            let _ = child.kill();
            panic!("ocfk8s {args:?} still running after {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn refused_quickly(dir: &Path, inventory: &str, needle: &str) {
    let run = run_with_timeout(dir, &["-i", inventory, "validate"], Duration::from_secs(10));
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(run.stderr.contains(inventory), "{}", run.stderr);
    assert!(run.stderr.contains(needle), "{}", run.stderr);
}

#[test]
fn a_fifo_as_inventory_is_refused_without_hanging() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fifo = dir.path().join("inventory.toml");
    let status = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .expect("mkfifo");
    assert!(status.success());
    refused_quickly(dir.path(), "inventory.toml", "a FIFO, not a regular file");
}

#[test]
fn dev_zero_as_inventory_is_refused_without_reading_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    refused_quickly(dir.path(), "/dev/zero", "a character device");
}

#[test]
fn an_inventory_larger_than_the_limit_is_refused() {
    let (dir, path) = inventory("");
    let file = std::fs::File::create(&path).expect("create");
    file.set_len(64 * 1024 * 1024).expect("sparse 64 MiB");
    refused_quickly(dir.path(), "inventory.toml", "larger than the");
}

#[test]
fn a_symlink_loop_as_inventory_is_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    std::os::unix::fs::symlink("inventory.toml", dir.path().join("inventory.toml"))
        .expect("symlink");
    refused_quickly(dir.path(), "inventory.toml", "symlink loop");
}

#[test]
fn a_utf16_inventory_is_named_and_asked_for_in_utf8() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut bytes = vec![0xff, 0xfe];
    for unit in "[cluster]\nname = \"k8s\"\n".encode_utf16() {
        bytes.extend_from_slice(&unit.to_le_bytes());
    }
    std::fs::write(dir.path().join("inventory.toml"), bytes).expect("write");
    refused_quickly(dir.path(), "inventory.toml", "must be UTF-8");
}

#[test]
fn a_fifo_as_template_override_or_tls_file_is_refused_without_hanging() {
    let text = render_support::base_inventory()
        .replace(
            "ca_validity_days = 3650",
            "ca_validity_days = 3650\ntemplates_dir = \"site\"",
        )
        .replace(
            "node_port = 31234",
            "node_port = 31234\ntls_cert = \"tls.crt\"\ntls_key = \"tls.key\"",
        );
    let (dir, path) = inventory(&text);
    render_support::generate_store(dir.path(), &path);
    std::fs::create_dir(dir.path().join("site")).expect("mkdir");
    for fifo in ["site/kubelet.service", "tls.crt"] {
        let status = std::process::Command::new("mkfifo")
            .arg(dir.path().join(fifo))
            .status()
            .expect("mkfifo");
        assert!(status.success());
    }
    std::fs::write(dir.path().join("tls.key"), "key").expect("write");
    // The operator's TLS files are checked first, then the templates: each
    // FIFO is named in turn, and none hangs the run.
    let args = ["-i", "inventory.toml", "render", "--out", "out"];
    let run = run_with_timeout(dir.path(), &args, Duration::from_secs(20));
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("tls.crt")
            && run.stderr.contains("ingress.tls_cert")
            && run.stderr.contains("a FIFO"),
        "{}",
        run.stderr
    );
    std::fs::remove_file(dir.path().join("tls.crt")).expect("remove");
    std::fs::remove_file(dir.path().join("tls.key")).expect("remove");
    let text = text.replace("tls_cert = \"tls.crt\"\ntls_key = \"tls.key\"", "");
    std::fs::write(&path, text).expect("write inventory");
    render_support::generate_store(dir.path(), &path);
    let run = run_with_timeout(dir.path(), &args, Duration::from_secs(20));
    assert_eq!(run.status, 2, "{}", run.stderr);
    assert!(
        run.stderr.contains("site/kubelet.service") && run.stderr.contains("a FIFO"),
        "{}",
        run.stderr
    );
    assert!(!dir.path().join("out").exists());
}

#[test]
fn a_leading_v_in_kubernetes_version_is_dropped_not_doubled() {
    let text = render_support::base_inventory().replace(
        "kubernetes_version = \"1.31.4\"",
        "kubernetes_version = \"v1.31.4\"",
    );
    let rendered = render_support::render(&text);
    assert_eq!(rendered.run.status, 0, "{}", rendered.run.stderr);
    let manifest = rendered.text("m1", "/etc/kubernetes/manifests/kube-apiserver.yaml");
    assert!(
        manifest.contains("registry.k8s.io/kube-apiserver:v1.31.4\""),
        "{manifest}"
    );
    assert!(!manifest.contains("vv1"), "{manifest}");
    let summary = rendered.again(&["validate"]);
    assert!(
        summary.stdout.contains("Kubernetes 1.31.4\n"),
        "{}",
        summary.stdout
    );
}

#[test]
fn ipv6_clusters_stay_valid_in_one_family() {
    let text = render_support::base_inventory()
        .replace("10.244.0.0/16", "fd00:10:244::/56")
        .replace("10.96.0.0/12", "fd00:10:96::/112")
        .replace("192.0.2.", "2001:db8::");
    let (dir, _) = inventory(&text);
    let run = run_in(dir.path(), &["-i", "inventory.toml", "validate"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
}
