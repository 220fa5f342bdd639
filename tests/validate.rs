//! `ocfk8s validate` on good and bad inventories: every rule of the inventory
//! contract is refused with exit status 2 and a message that points at the
//! problem; warnings keep exit status 0.

mod common;

use common::*;

/// Validate `text` and return the run.
fn validate(text: &str) -> Run {
    let (dir, _) = inventory(text);
    run_in(dir.path(), &["-i", "inventory.toml", "validate"])
}

/// Assert that `text` is refused with exit 2, that the message names the
/// file and `location` (a "line:column" or field path) and contains `needle`.
fn refused(text: &str, location: &str, needle: &str) -> String {
    let run = validate(text);
    assert_eq!(run.status, 2, "expected exit 2, stderr:\n{}", run.stderr);
    assert!(
        run.stderr.contains("inventory.toml"),
        "error does not name the file:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(location),
        "error does not point at {location}:\n{}",
        run.stderr
    );
    assert!(
        run.stderr.contains(needle),
        "error does not mention {needle:?}:\n{}",
        run.stderr
    );
    assert!(run.stdout.is_empty(), "no summary on error: {}", run.stdout);
    run.stderr
}

fn line_of(text: &str, needle: &str) -> usize {
    text.lines()
        .position(|line| line.contains(needle))
        .map(|index| index + 1)
        .expect("needle in text")
}

#[test]
fn base_inventory_is_valid_with_quorum_summary() {
    let run = validate(BASE);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(run
        .stdout
        .contains("3 masters: quorum 2, tolerates 1 failure"));
    assert!(run.stdout.contains("2 workers"));
    assert!(run.stdout.contains("DNS 10.96.0.10"));
    assert!(!run.stderr.contains("warning"), "{}", run.stderr);
}

#[test]
fn syntax_error_points_at_line_and_column() {
    let text = BASE.replace("cni = \"flannel\"", "cni = flannel");
    let line = line_of(&text, "cni = flannel");
    refused(&text, &format!("inventory.toml:{line}:"), "");
}

#[test]
fn unknown_key_is_refused() {
    let text = BASE.replace(
        "cni = \"flannel\"",
        "cni = \"flannel\"\npod_cird = \"10.0.0.0/8\"",
    );
    let line = line_of(&text, "pod_cird");
    refused(
        &text,
        &format!("inventory.toml:{line}:1"),
        "unknown field `pod_cird`",
    );
}

#[test]
fn unknown_key_in_host_is_refused() {
    let text = BASE.replace(
        "address = \"192.0.2.21\"",
        "address = \"192.0.2.21\"\nadress = \"x\"",
    );
    let line = line_of(&text, "adress = ");
    refused(
        &text,
        &format!("inventory.toml:{line}:1"),
        "unknown field `adress`",
    );
}

#[test]
fn unknown_table_is_refused() {
    let text = format!("{BASE}\n[extras]\nfoo = 1\n");
    refused(&text, "inventory.toml:", "unknown field `extras`");
}

#[test]
fn missing_required_key_is_refused() {
    let text = BASE.replace("kubernetes_version = \"1.31.4\"\n", "");
    refused(
        &text,
        "inventory.toml:1:1",
        "missing field `kubernetes_version`",
    );
}

#[test]
fn missing_host_address_is_refused() {
    let text = BASE.replace("address = \"192.0.2.22\"\n", "");
    refused(&text, "inventory.toml:", "missing field `address`");
}

#[test]
fn wrong_type_is_refused() {
    let text = BASE.replace("cert_validity_days = 365", "cert_validity_days = \"365\"");
    let line = line_of(&text, "cert_validity_days");
    refused(&text, &format!("inventory.toml:{line}:"), "invalid type");
}

#[test]
fn host_name_not_a_dns_label() {
    let text = BASE.replace("name = \"w2\"", "name = \"Worker_2\"");
    let line = line_of(&text, "Worker_2");
    refused(
        &text,
        &format!("inventory.toml:{line}:8: worker[1].name"),
        "not a DNS label",
    );
}

#[test]
fn cluster_name_not_a_dns_label() {
    let text = BASE.replace("name = \"test\"", "name = \"-test\"");
    refused(&text, "inventory.toml:2:8: cluster.name", "not a DNS label");
}

#[test]
fn repeated_host_name() {
    let text = BASE.replace("name = \"w2\"", "name = \"m1\"");
    let line = line_of(&text, "address = \"192.0.2.22\"") - 1;
    refused(
        &text,
        &format!("inventory.toml:{line}:8: worker[1].name"),
        "already used by master[0]",
    );
}

#[test]
fn repeated_address() {
    let text = BASE.replace("address = \"192.0.2.22\"", "address = \"192.0.2.12\"");
    let line = line_of(&text, "name = \"w2\"") + 1;
    refused(
        &text,
        &format!("inventory.toml:{line}:11: worker[1].address"),
        "192.0.2.12 is already used by master[1] (m2)",
    );
}

#[test]
fn address_not_an_ip() {
    let text = BASE.replace("address = \"192.0.2.22\"", "address = \"w2.example.org\"");
    refused(&text, "worker[1].address", "not an IP address");
}

#[test]
fn invalid_pod_cidr() {
    let text = BASE.replace(
        "pod_cidr = \"10.244.0.0/16\"",
        "pod_cidr = \"10.244.0.0/33\"",
    );
    refused(&text, "inventory.toml:5:12: cluster.pod_cidr", "not a CIDR");
}

#[test]
fn cidr_with_host_bits() {
    let text = BASE.replace(
        "pod_cidr = \"10.244.0.0/16\"",
        "pod_cidr = \"10.244.1.0/16\"",
    );
    refused(&text, "cluster.pod_cidr", "did you mean 10.244.0.0/16");
}

#[test]
fn overlapping_cidrs() {
    let text = BASE.replace(
        "service_cidr = \"10.96.0.0/12\"",
        "service_cidr = \"10.244.128.0/20\"",
    );
    refused(
        &text,
        "inventory.toml:6:16: cluster.service_cidr",
        "overlaps pod_cidr 10.244.0.0/16",
    );
}

#[test]
fn host_address_inside_pod_cidr() {
    let text = BASE.replace("address = \"192.0.2.21\"", "address = \"10.244.3.7\"");
    refused(&text, "worker[0].address", "inside pod_cidr 10.244.0.0/16");
}

#[test]
fn host_address_inside_service_cidr() {
    let text = BASE.replace("address = \"192.0.2.11\"", "address = \"10.100.0.5\"");
    refused(
        &text,
        "master[0].address",
        "inside service_cidr 10.96.0.0/12",
    );
}

#[test]
fn vip_inside_pod_cidr() {
    let text = BASE.replace("vip = \"192.0.2.100\"", "vip = \"10.244.9.9\"");
    let line = line_of(&text, "vip =");
    refused(
        &text,
        &format!("inventory.toml:{line}:7: ingress.vip"),
        "inside pod_cidr",
    );
}

#[test]
fn vip_inside_service_cidr() {
    let text = BASE.replace("vip = \"192.0.2.100\"", "vip = \"10.96.0.10\"");
    refused(&text, "ingress.vip", "inside service_cidr");
}

#[test]
fn vip_equal_to_host_address() {
    let text = BASE.replace("vip = \"192.0.2.100\"", "vip = \"192.0.2.13\"");
    refused(&text, "ingress.vip", "is the address of master[2] (m3)");
}

#[test]
fn no_master() {
    let mut text = BASE.to_string();
    for index in 1..=3 {
        text = text.replace(
            &format!("[[master]]\nname = \"m{index}\"\naddress = \"192.0.2.1{index}\"\n"),
            "",
        );
    }
    assert!(!text.contains("[[master]]"));
    refused(&text, "inventory.toml: master", "no master");
}

#[test]
fn unknown_cni() {
    let text = BASE.replace("cni = \"flannel\"", "cni = \"calico\"");
    refused(&text, "cluster.cni", "unknown CNI \"calico\"");
}

#[test]
fn unknown_key_algorithm() {
    let text = BASE.replace(
        "key_algorithm = \"ecdsa-p256\"",
        "key_algorithm = \"ed448\"",
    );
    refused(&text, "cluster.key_algorithm", "unknown key algorithm");
}

#[test]
fn node_port_outside_range() {
    let text = BASE.replace("node_port = 31234", "node_port = 8080");
    refused(&text, "ingress.node_port", "outside the NodePort range");
}

#[test]
fn ingress_node_not_a_worker() {
    let text = BASE.replace(
        "node_port = 31234",
        "node_port = 31234\nnodes = [\"w1\", \"w9\"]",
    );
    refused(&text, "ingress.nodes[1]", "\"w9\" is not a worker");
}

#[test]
fn tls_cert_without_key() {
    let text = BASE.replace(
        "node_port = 31234",
        "node_port = 31234\ntls_cert = \"a.crt\"",
    );
    refused(&text, "ingress.tls_key", "tls_key is missing");
}

#[test]
fn bad_control_plane_endpoint() {
    let text = BASE.replace("kube.example.org:6443", "kube.example.org:http");
    refused(&text, "cluster.control_plane_endpoint", "not host[:port]");
}

#[test]
fn upload_without_folder() {
    let text = BASE.replace("method = \"apt\"", "method = \"upload\"");
    refused(&text, "install.upload_from", "needs upload_from");
}

#[test]
fn zero_concurrency() {
    let text = BASE.replace("concurrency = 8", "concurrency = 0");
    refused(&text, "ssh.concurrency", "at least 1");
}

#[test]
fn certificates_outliving_ca() {
    let text = BASE.replace("cert_validity_days = 365", "cert_validity_days = 5000");
    refused(
        &text,
        "cluster.cert_validity_days",
        "cannot outlive their CA",
    );
}

#[test]
fn all_errors_are_reported_at_once() {
    let text = BASE
        .replace("name = \"w2\"", "name = \"W2\"")
        .replace("vip = \"192.0.2.100\"", "vip = \"192.0.2.11\"");
    let stderr = refused(&text, "worker[1].name", "not a DNS label");
    assert!(stderr.contains("ingress.vip"), "{stderr}");
    assert!(stderr.contains("2 errors"), "{stderr}");
}

#[test]
fn missing_inventory_file_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_in(dir.path(), &["-i", "nope.toml", "validate"]);
    assert_eq!(run.status, 2);
    assert!(run.stderr.contains("nope.toml"), "{}", run.stderr);
}

#[test]
fn inventory_from_environment() {
    let (dir, path) = inventory(BASE);
    let output = ocfk8s()
        .current_dir(dir.path())
        .env("OCFK8S_INVENTORY", &path)
        .arg("validate")
        .output()
        .unwrap();
    assert!(output.status.success());
}

fn masters(count: usize) -> String {
    let mut text = BASE.to_string();
    for index in 1..=3 {
        text = text.replace(
            &format!("[[master]]\nname = \"m{index}\"\naddress = \"192.0.2.1{index}\"\n"),
            "",
        );
    }
    for index in 1..=count {
        text.push_str(&format!(
            "\n[[master]]\nname = \"m{index}\"\naddress = \"192.0.2.{}\"\n",
            30 + index
        ));
    }
    text
}

#[test]
fn even_master_count_warns_with_quorum_arithmetic() {
    let run = validate(&masters(4));
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(
        run.stdout
            .contains("4 masters: quorum 3, tolerates 1 failure"),
        "{}",
        run.stdout
    );
    assert!(run.stderr.contains("warning:"), "{}", run.stderr);
    assert!(
        run.stderr.contains("a 4th master adds no fault tolerance"),
        "{}",
        run.stderr
    );
}

#[test]
fn single_master_warns() {
    let run = validate(&masters(1));
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(run
        .stdout
        .contains("1 master: quorum 1, tolerates 0 failures"));
    assert!(
        run.stderr.contains("warning:") && run.stderr.contains("no redundancy"),
        "{}",
        run.stderr
    );
}

#[test]
fn more_than_seven_masters_warns() {
    let run = validate(&masters(9));
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(run
        .stdout
        .contains("9 masters: quorum 5, tolerates 4 failures"));
    assert!(run.stderr.contains("at most 7 members"), "{}", run.stderr);
}

#[test]
fn five_masters_do_not_warn() {
    let run = validate(&masters(5));
    assert_eq!(run.status, 0);
    assert!(run
        .stdout
        .contains("5 masters: quorum 3, tolerates 2 failures"));
    assert!(!run.stderr.contains("warning"), "{}", run.stderr);
}

#[test]
fn every_shipped_inventory_validates() {
    let root = repo_root();
    let mut files = vec![root.join("inventory/ocf.toml")];
    for entry in std::fs::read_dir(root.join("examples")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|ext| ext == "toml") {
            files.push(path);
        }
    }
    assert!(files.len() >= 4, "{files:?}");
    for file in files {
        let run = run_in(&root, &["-i", file.to_str().unwrap(), "validate"]);
        assert_eq!(run.status, 0, "{}: {}", file.display(), run.stderr);
    }
}

#[test]
fn ocf_inventory_is_the_seed_cluster() {
    let root = repo_root();
    let run = run_in(&root, &["validate"]);
    assert_eq!(run.status, 0, "{}", run.stderr);
    assert!(run
        .stdout
        .contains("3 masters: quorum 2, tolerates 1 failure"));
    for name in ["deadlock", "coup", "autocrat"] {
        assert!(run.stdout.contains(name), "{}", run.stdout);
    }
    assert!(run.stdout.contains("NodePort 31234"));
}

#[test]
fn init_output_validates() {
    for args in [
        vec!["init"],
        vec![
            "init",
            "--master",
            "10.1.0.1",
            "--master",
            "10.1.0.2",
            "--master",
            "10.1.0.3",
            "--worker",
            "10.1.0.20",
        ],
        vec!["init", "--master", "10.1.0.1"],
    ] {
        let dir = tempfile::tempdir().unwrap();
        let run = run_in(dir.path(), &args);
        assert_eq!(run.status, 0, "{}", run.stderr);
        std::fs::write(dir.path().join("inventory.toml"), &run.stdout).unwrap();
        let check = run_in(dir.path(), &["-i", "inventory.toml", "validate"]);
        assert_eq!(check.status, 0, "{args:?}: {}", check.stderr);
    }
}

#[test]
fn init_fills_host_lists() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_in(
        dir.path(),
        &[
            "init",
            "--master",
            "10.1.0.1",
            "--worker",
            "10.1.0.20",
            "--worker",
            "10.1.0.21",
        ],
    );
    assert_eq!(run.status, 0);
    assert_eq!(run.stdout.matches("[[master]]").count(), 1);
    assert_eq!(run.stdout.matches("[[worker]]").count(), 2);
    assert!(run.stdout.contains("address = \"10.1.0.21\""));
}

#[test]
fn init_refuses_bad_address() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_in(dir.path(), &["init", "--master", "not-an-ip"]);
    assert_eq!(run.status, 2);
    assert!(
        run.stderr.contains("--master \"not-an-ip\""),
        "{}",
        run.stderr
    );
}

#[test]
fn init_refuses_an_address_no_host_can_have_and_prints_only_what_validates() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_in(dir.path(), &["init", "--master", "127.0.0.1"]);
    assert_eq!(run.status, 2);
    assert!(
        run.stderr.contains("--master \"127.0.0.1\""),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("loopback"), "{}", run.stderr);
    assert!(run.stdout.is_empty());
    let run = run_in(
        dir.path(),
        &[
            "init",
            "--master",
            "10.1.0.1",
            "--worker",
            "::ffff:10.1.0.1",
        ],
    );
    assert_eq!(run.status, 2);
    assert!(run.stderr.contains("IPv4-mapped"), "{}", run.stderr);
    let run = run_in(
        dir.path(),
        &["init", "--master", "10.1.0.1", "--worker", "10.1.0.1"],
    );
    assert_eq!(run.status, 2);
    assert!(
        run.stderr.contains("already used by master[0]"),
        "{}",
        run.stderr
    );
}

#[test]
fn init_gives_ipv6_hosts_ipv6_networks() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_in(
        dir.path(),
        &[
            "init",
            "--master",
            "2001:db8::11",
            "--worker",
            "2001:db8::21",
        ],
    );
    assert_eq!(run.status, 0, "{}", run.stderr);
    std::fs::write(dir.path().join("inventory.toml"), &run.stdout).unwrap();
    let check = run_in(dir.path(), &["-i", "inventory.toml", "validate"]);
    assert_eq!(check.status, 0, "{}", check.stderr);
    assert!(
        check.stdout.contains("pods fd00:10:244::/56"),
        "{}",
        check.stdout
    );
}

#[test]
fn bad_usage_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let run = run_in(dir.path(), &["frobnicate"]);
    assert_eq!(run.status, 2);
}
