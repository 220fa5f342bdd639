//! Properties of generated inventories, hostile strings included: whatever
//! `validate` accepts renders files that parse as what they claim to be,
//! hold no control character but newlines and tabs, and keep the shape of
//! their units (no value can add or remove a directive). A few generated
//! cases also go through `systemd-analyze verify`.
//!
//! Rendering uses a PKI store of placeholder files: rendering copies store
//! files without reading them, and generating keys for every case would
//! only make the test slow.

mod render_support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::OnceLock;

use ocfk8s::inventory::Cluster;
use ocfk8s::render::{render_cluster, HostFiles, RenderOptions};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde::Deserialize;

/// Characters that end tokens, lines, strings or documents somewhere.
const NASTY: &[char] = &[
    '\n', '\r', '\t', '\0', '\u{7f}', '\u{85}', '\u{2028}', '\u{feff}', '"', '\'', '\\', '$', '%',
    ' ', ';', '{', '}', '#', ':', '=', ',', '/', '.', '-', '_', '*', '@', '[', ']', '&', '!', '|',
    '>', '`', 'é', 'A', 'Z', '0', '9', 'a', 'z',
];

fn nasty() -> impl Strategy<Value = String> {
    proptest::collection::vec(proptest::sample::select(NASTY), 0..10)
        .prop_map(|chars| chars.into_iter().collect())
}

/// Mostly plausible values, sometimes hostile ones.
fn mostly(valid: impl Strategy<Value = String> + 'static) -> BoxedStrategy<String> {
    prop_oneof![40 => valid, 1 => nasty()].boxed()
}

fn label_key() -> BoxedStrategy<String> {
    mostly(prop_oneof![
        "[a-z][a-z0-9]{0,6}",
        "[a-z]{1,5}\\.(org|io)/[a-zA-Z0-9][a-zA-Z0-9._-]{0,5}[a-zA-Z0-9]",
        Just("node-role.kubernetes.io/ingress".to_string()),
        Just("topology.kubernetes.io/zone".to_string()),
        Just("123".to_string()),
        Just("true".to_string()),
    ])
}

fn label_value() -> BoxedStrategy<String> {
    mostly(prop_oneof![
        Just(String::new()),
        "[a-zA-Z0-9]([a-zA-Z0-9._-]{0,6}[a-zA-Z0-9])?",
        Just("null".to_string()),
        Just("0x1F".to_string()),
    ])
}

fn taint() -> BoxedStrategy<String> {
    mostly(
        (
            label_key(),
            proptest::option::of(label_value()),
            proptest::sample::select(&["NoSchedule", "PreferNoSchedule", "NoExecute"][..]),
        )
            .prop_map(|(key, value, effect)| match value {
                Some(value) => format!("{key}={value}:{effect}"),
                None => format!("{key}:{effect}"),
            }),
    )
}

#[derive(Debug, Clone)]
struct Host {
    name: String,
    address: String,
    labels: BTreeMap<String, String>,
    taints: Vec<String>,
}

fn host(index: usize, worker: bool) -> BoxedStrategy<Host> {
    let octet = if worker { 20 + index } else { 10 + index };
    (
        mostly(prop_oneof![
            "[a-z][a-z0-9-]{0,6}",
            Just("123".to_string()),
            Just("true".to_string()),
        ]),
        prop_oneof![
            20 => Just(format!("10.9.0.{octet}")),
            1 => proptest::sample::select(
                &["127.0.0.1", "::ffff:10.9.0.10", "2001:db8::5", "0.0.0.0", "224.0.0.5", "10.9.0.10"][..]
            )
            .prop_map(str::to_string),
        ],
        proptest::collection::btree_map(label_key(), label_value(), 0..3),
        proptest::collection::vec(taint(), 0..3),
    )
        .prop_map(move |(name, address, labels, taints)| Host {
            // Distinct names, whatever was drawn ("123" stays a number).
            name: format!("{name}{}", if worker { index + 5 } else { index }),
            address,
            labels,
            taints,
        })
        .boxed()
}

#[derive(Debug, Clone)]
struct Generated {
    name: String,
    version: String,
    domain: String,
    endpoint: Option<String>,
    bin_dir: String,
    ingress: Option<(String, Vec<String>)>,
    masters: Vec<Host>,
    workers: Vec<Host>,
}

fn generated() -> impl Strategy<Value = Generated> {
    let masters = (1usize..=3).prop_flat_map(|count| {
        (0..count)
            .map(|index| host(index, false))
            .collect::<Vec<_>>()
    });
    let workers = (0usize..=3).prop_flat_map(|count| {
        (0..count)
            .map(|index| host(index, true))
            .collect::<Vec<_>>()
    });
    (
        mostly("[a-z][a-z0-9-]{0,8}[a-z0-9]"),
        mostly(prop_oneof![
            Just("1.31.4".to_string()),
            Just("v1.30.2".to_string()),
            Just("1.29.0".to_string()),
        ]),
        mostly(prop_oneof![
            Just("cluster.local".to_string()),
            "[a-z]{1,6}\\.[a-z]{2,5}",
        ]),
        proptest::option::of(mostly(prop_oneof![
            Just("kube.example.org:6443".to_string()),
            Just("10.9.0.100:6443".to_string()),
            Just("10.9.0.100".to_string()),
        ])),
        mostly(prop_oneof![
            Just("/usr/bin".to_string()),
            "/[a-z0-9._+-]{1,8}(/[a-z0-9]{1,6})?",
        ]),
        proptest::option::of((
            mostly(prop_oneof![Just("eth0".to_string()), "[a-z0-9._-]{1,15}"]),
            proptest::collection::vec(
                mostly(prop_oneof![
                    Just("*.example.org".to_string()),
                    "[a-z]{1,8}\\.org",
                ]),
                1..3,
            ),
        )),
        masters,
        workers,
    )
        .prop_map(
            |(name, version, domain, endpoint, bin_dir, ingress, masters, workers)| Generated {
                name,
                version,
                domain,
                endpoint,
                bin_dir,
                ingress,
                masters,
                workers,
            },
        )
}

/// A TOML basic string.
fn quoted(text: &str) -> String {
    let mut out = String::from("\"");
    for character in text.chars() {
        match character {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn inventory_text(generated: &Generated) -> String {
    let mut text = format!(
        "[cluster]\nname = {}\nkubernetes_version = {}\ncluster_domain = {}\n",
        quoted(&generated.name),
        quoted(&generated.version),
        quoted(&generated.domain)
    );
    if let Some(endpoint) = &generated.endpoint {
        text.push_str(&format!("control_plane_endpoint = {}\n", quoted(endpoint)));
    }
    text.push_str(&format!(
        "\n[install]\nbin_dir = {}\n",
        quoted(&generated.bin_dir)
    ));
    if let Some((interface, server_names)) = &generated.ingress {
        let names: Vec<String> = server_names.iter().map(|name| quoted(name)).collect();
        text.push_str(&format!(
            "\n[ingress]\nvip = \"10.9.0.100\"\ninterface = {}\nserver_names = [{}]\n",
            quoted(interface),
            names.join(", ")
        ));
    }
    for (table, hosts) in [
        ("master", &generated.masters),
        ("worker", &generated.workers),
    ] {
        for host in hosts {
            text.push_str(&format!(
                "\n[[{table}]]\nname = {}\naddress = {}\n",
                quoted(&host.name),
                quoted(&host.address)
            ));
            if !host.labels.is_empty() {
                let labels: Vec<String> = host
                    .labels
                    .iter()
                    .map(|(key, value)| format!("{} = {}", quoted(key), quoted(value)))
                    .collect();
                text.push_str(&format!("labels = {{ {} }}\n", labels.join(", ")));
            }
            if !host.taints.is_empty() {
                let taints: Vec<String> = host.taints.iter().map(|taint| quoted(taint)).collect();
                text.push_str(&format!("taints = [{}]\n", taints.join(", ")));
            }
        }
    }
    text
}

/// Render `cluster` against a store of placeholder files.
fn render_with_placeholders(cluster: &Cluster) -> Vec<HostFiles> {
    let files = ocfk8s::render::required_store_files(cluster)
        .into_iter()
        .map(|relative| (relative, b"placeholder\n".to_vec()))
        .collect();
    let store = ocfk8s::pki::Store::from_files_for_tests(Path::new("/nonexistent/pki"), files);
    render_cluster(cluster, &store, &RenderOptions::for_cluster(cluster)).expect("render")
}

fn is_yaml(path: &str) -> bool {
    path.ends_with(".yaml") || path == "/var/lib/kube-proxy/config.conf"
}

/// The directive lines of a unit, without their values: what a value must
/// never change.
fn skeleton(unit: &str) -> Vec<String> {
    unit.lines()
        .filter(|line| !line.is_empty() && !line.starts_with([' ', '#']))
        .map(|line| line.split('=').next().unwrap_or(line).to_string())
        .collect()
}

/// The units rendered for the test's base inventory, by path.
fn reference_skeletons() -> &'static BTreeMap<String, Vec<String>> {
    static SKELETONS: OnceLock<BTreeMap<String, Vec<String>>> = OnceLock::new();
    SKELETONS.get_or_init(|| {
        let path = Path::new("/nonexistent/inventory.toml");
        let cluster = ocfk8s::inventory::from_str(path, render_support::BASE)
            .expect("base inventory")
            .cluster;
        let mut skeletons = BTreeMap::new();
        for host in render_with_placeholders(&cluster) {
            for file in host.files {
                if file.path.starts_with("/etc/systemd/system/") {
                    let text = String::from_utf8(file.contents).expect("utf-8");
                    skeletons.insert(file.path, skeleton(&text));
                }
            }
        }
        skeletons
    })
}

fn check_rendering(cluster: &Cluster, hosts: &[HostFiles]) -> Result<(), TestCaseError> {
    for host in hosts {
        let node = cluster.node(&host.node).expect("node");
        for file in &host.files {
            let place = format!("{}:{}", host.node, file.path);
            let text = std::str::from_utf8(&file.contents)
                .map_err(|_| TestCaseError::fail(format!("{place} is not UTF-8")))?;
            if let Some(bad) = text
                .chars()
                .find(|character| character.is_control() && !matches!(character, '\n' | '\t'))
            {
                return Err(TestCaseError::fail(format!(
                    "{place} holds U+{:04X}:\n{text}",
                    bad as u32
                )));
            }
            if is_yaml(&file.path) {
                let mut documents = 0;
                for document in serde_norway::Deserializer::from_str(text) {
                    let value = serde_norway::Value::deserialize(document).map_err(|error| {
                        TestCaseError::fail(format!("{place} is not YAML: {error}\n{text}"))
                    })?;
                    if file.path == "/var/lib/kube-proxy/config.conf" {
                        prop_assert_eq!(
                            value["hostnameOverride"].as_str(),
                            Some(node.name.as_str()),
                            "{}",
                            place
                        );
                    }
                    if file.path == "/var/lib/kubelet/config.yaml" {
                        let taints = value["registerWithTaints"]
                            .as_sequence()
                            .map(Vec::len)
                            .unwrap_or(0);
                        prop_assert!(taints >= node.taints.len(), "{}", place);
                    }
                    documents += 1;
                }
                prop_assert!(documents > 0, "{} is empty", place);
            }
            if let Some(reference) = reference_skeletons().get(&file.path) {
                // Argument lines (--node-labels is optional) start with
                // spaces: only directives and sections make the shape.
                prop_assert_eq!(
                    &skeleton(text),
                    reference,
                    "{} changed shape:\n{}",
                    place,
                    text
                );
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 128,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn whatever_validates_renders_clean_files(generated in generated()) {
        let text = inventory_text(&generated);
        let path = Path::new("/nonexistent/inventory.toml");
        if let Ok(resolved) = ocfk8s::inventory::from_str(path, &text) {
            let hosts = render_with_placeholders(&resolved.cluster);
            check_rendering(&resolved.cluster, &hosts)?;
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 3,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// `systemd-analyze verify` is slow: a handful of generated clusters.
    #[test]
    fn generated_units_pass_systemd_analyze_verify(generated in generated()) {
        let text = inventory_text(&generated);
        let path = Path::new("/nonexistent/inventory.toml");
        let Ok(resolved) = ocfk8s::inventory::from_str(path, &text) else {
            return Ok(());
        };
        let hosts = render_with_placeholders(&resolved.cluster);
        let host = &hosts[0];
        let dir = tempfile::tempdir().expect("temp dir");
        let mut units = Vec::new();
        for file in host.files.iter().filter(|file| file.path.starts_with("/etc/systemd/system/")) {
            let name = file.path.rsplit('/').next().expect("unit name");
            let unit = dir.path().join(name);
            std::fs::write(&unit, &file.contents).expect("write unit");
            units.push(unit);
        }
        let output = std::process::Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .args(&units)
            .output()
            .expect("run systemd-analyze");
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        // The binaries are not installed here: only that is tolerated.
        let problems: Vec<&str> = said
            .lines()
            .filter(|line| {
                !line.trim().is_empty()
                    && !line.contains("is not executable: No such file or directory")
            })
            .collect();
        prop_assert!(problems.is_empty(), "systemd-analyze verify:\n{}", said);
    }
}
