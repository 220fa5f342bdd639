//! `ocfk8s render --out DIR` on a 3-master/2-worker inventory with
//! `[ingress]`: what each host receives, with which modes, and that every
//! file is what its consumer accepts (YAML, typed component configs,
//! kubeconfigs loaded by kubectl).

mod render_support;

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use render_support::{base_inventory, host_paths, render};
use serde::Deserialize;

const MASTERS: [&str; 3] = ["m1", "m2", "m3"];
const WORKERS: [&str; 2] = ["w1", "w2"];

const EVERY_NODE: &[&str] = &[
    "/etc/kubernetes/kubelet.conf",
    "/etc/containerd/config.toml",
    "/etc/crictl.yaml",
    "/etc/kubernetes/pki/ca.crt",
    "/etc/modules-load.d/k8s.conf",
    "/etc/sysctl.d/99-kubernetes.conf",
    "/etc/systemd/system/kube-proxy.service",
    "/etc/systemd/system/kubelet.service",
    "/var/lib/kube-proxy/config.conf",
    "/var/lib/kube-proxy/kubeconfig.conf",
    "/var/lib/kubelet/config.yaml",
    "/var/lib/kubelet/pki/kubelet.crt",
    "/var/lib/kubelet/pki/kubelet.key",
];

const MASTERS_ALSO: &[&str] = &[
    "/etc/keepalived/keepalived.conf",
    "/etc/kubernetes/addons/coredns.yaml",
    "/etc/kubernetes/addons/flannel.yaml",
    "/etc/kubernetes/addons/ingress-nginx.yaml",
    "/etc/kubernetes/addons/rbac.yaml",
    "/etc/kubernetes/admin.conf",
    "/etc/kubernetes/controller-manager.conf",
    "/etc/kubernetes/etcd-initial-cluster.env",
    "/etc/kubernetes/manifests/kube-apiserver.yaml",
    "/etc/kubernetes/manifests/kube-controller-manager.yaml",
    "/etc/kubernetes/manifests/kube-scheduler.yaml",
    "/etc/kubernetes/pki/apiserver-etcd-client.crt",
    "/etc/kubernetes/pki/apiserver-etcd-client.key",
    "/etc/kubernetes/pki/apiserver-kubelet-client.crt",
    "/etc/kubernetes/pki/apiserver-kubelet-client.key",
    "/etc/kubernetes/pki/apiserver.crt",
    "/etc/kubernetes/pki/apiserver.key",
    "/etc/kubernetes/pki/ca.key",
    "/etc/kubernetes/pki/etcd/ca.crt",
    "/etc/kubernetes/pki/etcd/healthcheck-client.crt",
    "/etc/kubernetes/pki/etcd/healthcheck-client.key",
    "/etc/kubernetes/pki/etcd/peer.crt",
    "/etc/kubernetes/pki/etcd/peer.key",
    "/etc/kubernetes/pki/etcd/server.crt",
    "/etc/kubernetes/pki/etcd/server.key",
    "/etc/kubernetes/pki/front-proxy-ca.crt",
    "/etc/kubernetes/pki/front-proxy-ca.key",
    "/etc/kubernetes/pki/front-proxy-client.crt",
    "/etc/kubernetes/pki/front-proxy-client.key",
    "/etc/kubernetes/pki/sa.key",
    "/etc/kubernetes/pki/sa.pub",
    "/etc/kubernetes/scheduler.conf",
    "/etc/nginx/sites-enabled/ocfk8s-ingress.conf",
    "/etc/nginx/ssl/ingress.crt",
    "/etc/nginx/ssl/ingress.key",
    "/etc/systemd/system/etcd.service",
];

fn sorted(paths: impl IntoIterator<Item = &'static str>) -> Vec<String> {
    let mut paths: Vec<String> = paths.into_iter().map(String::from).collect();
    paths.sort();
    paths
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o7777
}

#[test]
fn render_writes_exactly_each_hosts_files() {
    let rendered = render(&base_inventory());
    assert_eq!(rendered.run.status, 0, "stderr: {}", rendered.run.stderr);
    let lines: Vec<&str> = rendered.run.stdout.lines().collect();
    assert_eq!(lines.len(), 5, "one line per host: {}", rendered.run.stdout);
    for (line, host) in lines.iter().zip(MASTERS.iter().chain(&WORKERS)) {
        assert!(line.starts_with(&format!("{host}: ")), "{line}");
    }
    assert!(lines[0].contains(&format!("{} files", EVERY_NODE.len() + MASTERS_ALSO.len())));
    assert!(lines[3].contains(&format!("{} files", EVERY_NODE.len())));

    let master_files = sorted(EVERY_NODE.iter().chain(MASTERS_ALSO).copied());
    for master in MASTERS {
        assert_eq!(host_paths(&rendered.host(master)), master_files, "{master}");
    }
    for worker in WORKERS {
        assert_eq!(
            host_paths(&rendered.host(worker)),
            sorted(EVERY_NODE.iter().copied()),
            "{worker}"
        );
    }
}

#[test]
fn keys_and_kubeconfigs_are_0600_and_everything_else_0644() {
    let rendered = render(&base_inventory());
    assert_eq!(rendered.run.status, 0, "stderr: {}", rendered.run.stderr);
    for host in MASTERS.iter().chain(&WORKERS) {
        for path in host_paths(&rendered.host(host)) {
            let full = rendered.host(host).join(path.trim_start_matches('/'));
            let secret = path.ends_with(".key")
                || path.ends_with("kubelet.conf")
                || path.ends_with("kubeconfig.conf")
                || path.ends_with("admin.conf")
                || path.ends_with("controller-manager.conf")
                || path.ends_with("scheduler.conf");
            let expected = if secret { 0o600 } else { 0o644 };
            assert_eq!(
                mode(&full),
                expected,
                "{host}:{path} has mode {:o}",
                mode(&full)
            );
        }
    }
}

#[test]
fn workers_never_receive_a_ca_key_sa_key_or_etcd_material() {
    let rendered = render(&base_inventory());
    assert_eq!(rendered.run.status, 0, "stderr: {}", rendered.run.stderr);
    // A worker's only keys are its own: kubelet's serving key (beside its
    // certificate, issued for this node) and, base64-encoded inside the
    // kubeconfigs, its client keys.
    const OWN_KEY: &str = "/var/lib/kubelet/pki/kubelet.key";
    for worker in WORKERS {
        let paths = host_paths(&rendered.host(worker));
        let pki: Vec<&String> = paths.iter().filter(|p| p.contains("/pki/")).collect();
        assert_eq!(
            pki,
            [
                "/etc/kubernetes/pki/ca.crt",
                "/var/lib/kubelet/pki/kubelet.crt",
                OWN_KEY
            ],
            "{worker}"
        );
        for path in &paths {
            assert!(!path.contains("etcd"), "{worker} got {path}");
            assert!(
                !path.ends_with(".key") || path == OWN_KEY,
                "{worker} got {path}"
            );
        }
        let certificate = rendered
            .host(worker)
            .join("var/lib/kubelet/pki/kubelet.crt");
        let subject = std::process::Command::new("openssl")
            .args([
                "x509",
                "-noout",
                "-subject",
                "-ext",
                "subjectAltName",
                "-in",
            ])
            .arg(&certificate)
            .output()
            .expect("openssl");
        let subject = String::from_utf8_lossy(&subject.stdout);
        assert!(
            subject.contains(&format!("CN = system:node:{worker}")),
            "{subject}"
        );
        assert!(subject.contains(&format!("DNS:{worker}")), "{subject}");
        // No private key hides inside another file either.
        for path in paths.iter().filter(|path| path.as_str() != OWN_KEY) {
            let text = rendered.text(worker, path);
            assert!(!text.contains("PRIVATE KEY"), "{worker}:{path} holds a key");
        }
    }
}

#[test]
fn rerendering_replaces_host_trees_and_keeps_other_files() {
    let rendered = render(&base_inventory());
    assert_eq!(rendered.run.status, 0, "stderr: {}", rendered.run.stderr);
    let stray = rendered.host("w1").join("etc/stray.conf");
    std::fs::write(&stray, "left from before").expect("write");
    let unrelated = rendered.out.join("NOTES");
    std::fs::write(&unrelated, "mine").expect("write");
    let again = rendered.again(&["render", "--out", "out"]);
    assert_eq!(again.status, 0, "stderr: {}", again.stderr);
    assert!(!stray.exists(), "a host's tree is written anew");
    assert_eq!(std::fs::read_to_string(&unrelated).expect("read"), "mine");
}

#[test]
fn a_missing_pki_store_asks_for_pki_generate() {
    let (dir, path) = render_support::common::inventory(&base_inventory());
    let run = render_support::run_in(
        dir.path(),
        &[
            "-i",
            path.to_str().expect("utf-8"),
            "render",
            "--out",
            "out",
        ],
    );
    assert_eq!(run.status, 2, "stderr: {}", run.stderr);
    assert!(run.stderr.contains("ocfk8s pki generate"), "{}", run.stderr);
    assert!(!dir.path().join("out").exists(), "nothing written");
}

#[test]
fn an_incomplete_pki_store_names_what_is_missing() {
    let rendered = render(&base_inventory());
    let store = rendered.dir.path().join("pki/test");
    std::fs::remove_file(store.join("nodes/w2/kube-proxy.conf")).expect("remove");
    let run = rendered.again(&["render", "--out", "again"]);
    assert_eq!(run.status, 2, "stderr: {}", run.stderr);
    assert!(
        run.stderr.contains("nodes/w2/kube-proxy.conf"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("ocfk8s pki generate"), "{}", run.stderr);
    assert!(
        !rendered.dir.path().join("again").exists(),
        "nothing written"
    );
}

/// Every YAML file, each document of it.
fn yaml_documents(text: &str) -> Vec<serde_norway::Value> {
    serde_norway::Deserializer::from_str(text)
        .map(|document| serde_norway::Value::deserialize(document).expect("YAML document"))
        .collect()
}

#[test]
fn every_yaml_file_parses_and_manifests_are_kubernetes_objects() {
    let rendered = render(&base_inventory());
    assert_eq!(rendered.run.status, 0, "stderr: {}", rendered.run.stderr);
    for host in MASTERS.iter().chain(&WORKERS) {
        for path in host_paths(&rendered.host(host)) {
            let yaml =
                path.ends_with(".yaml") || (path.ends_with(".conf") && path.contains("/kube"));
            if !yaml {
                continue;
            }
            let documents = yaml_documents(&rendered.text(host, &path));
            assert!(!documents.is_empty(), "{host}:{path}");
            if path == "/etc/crictl.yaml" {
                // crictl's own configuration, not a Kubernetes object.
                assert!(
                    documents[0].get("runtime-endpoint").is_some(),
                    "{host}:{path}"
                );
                continue;
            }
            for document in documents {
                assert!(
                    document.get("apiVersion").is_some(),
                    "{host}:{path}: {document:?}"
                );
                assert!(
                    document.get("kind").is_some(),
                    "{host}:{path}: {document:?}"
                );
            }
        }
    }
}

// The upstream fields ocfk8s emits, by their upstream names; anything else
// is rejected, so a misspelt field fails here instead of on the host. Some
// fields are only there to be accepted, hence `dead_code`.

#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct KubeletConfiguration {
    api_version: String,
    kind: String,
    authentication: KubeletAuthentication,
    authorization: KubeletAuthorization,
    cgroup_driver: String,
    #[serde(rename = "clusterDNS")]
    cluster_dns: Vec<std::net::IpAddr>,
    cluster_domain: String,
    container_runtime_endpoint: String,
    healthz_bind_address: String,
    healthz_port: u16,
    resolv_conf: String,
    rotate_certificates: bool,
    #[serde(rename = "serverTLSBootstrap")]
    server_tls_bootstrap: bool,
    tls_cert_file: String,
    tls_private_key_file: String,
    static_pod_path: String,
    #[serde(default)]
    register_with_taints: Vec<KubeletTaint>,
}

#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct KubeletAuthentication {
    anonymous: Enabled,
    webhook: KubeletWebhookAuthentication,
    x509: KubeletX509,
}

#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Enabled {
    enabled: bool,
}

#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct KubeletWebhookAuthentication {
    enabled: bool,
    #[serde(rename = "cacheTTL")]
    cache_ttl: String,
}

#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct KubeletX509 {
    #[serde(rename = "clientCAFile")]
    client_ca_file: String,
}

#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct KubeletAuthorization {
    mode: String,
    webhook: KubeletWebhookAuthorization,
}

#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct KubeletWebhookAuthorization {
    #[serde(rename = "cacheAuthorizedTTL")]
    cache_authorized_ttl: String,
    #[serde(rename = "cacheUnauthorizedTTL")]
    cache_unauthorized_ttl: String,
}

#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KubeletTaint {
    key: String,
    value: Option<String>,
    effect: String,
}

#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct KubeProxyConfiguration {
    api_version: String,
    kind: String,
    bind_address: String,
    client_connection: KubeProxyClientConnection,
    #[serde(rename = "clusterCIDR")]
    cluster_cidr: String,
    hostname_override: String,
    healthz_bind_address: String,
    metrics_bind_address: String,
    mode: String,
}

#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct KubeProxyClientConnection {
    kubeconfig: String,
}

#[test]
fn component_configs_deserialize_into_the_upstream_types() {
    let rendered = render(&base_inventory());
    assert_eq!(rendered.run.status, 0, "stderr: {}", rendered.run.stderr);
    for host in MASTERS.iter().chain(&WORKERS) {
        let kubelet: KubeletConfiguration =
            serde_norway::from_str(&rendered.text(host, "/var/lib/kubelet/config.yaml"))
                .unwrap_or_else(|error| panic!("{host} kubelet config: {error}"));
        assert_eq!(kubelet.api_version, "kubelet.config.k8s.io/v1beta1");
        assert_eq!(kubelet.kind, "KubeletConfiguration");
        assert_eq!(kubelet.cgroup_driver, "systemd");
        assert_eq!(
            kubelet.cluster_dns,
            ["10.96.0.10".parse::<std::net::IpAddr>().expect("ip")]
        );
        assert_eq!(kubelet.cluster_domain, "cluster.local");
        assert_eq!(
            kubelet.authentication.x509.client_ca_file,
            "/etc/kubernetes/pki/ca.crt"
        );
        assert!(kubelet.authentication.webhook.enabled);
        assert!(!kubelet.authentication.anonymous.enabled);
        assert_eq!(kubelet.authorization.mode, "Webhook");
        // ocfk8s owns kubelet's certificates: kubelet neither rotates its
        // client certificate nor bootstraps a serving one, and serves the
        // pair issued from the cluster CA.
        assert!(!kubelet.rotate_certificates);
        assert!(!kubelet.server_tls_bootstrap);
        assert_eq!(kubelet.tls_cert_file, "/var/lib/kubelet/pki/kubelet.crt");
        assert_eq!(
            kubelet.tls_private_key_file,
            "/var/lib/kubelet/pki/kubelet.key"
        );
        assert_eq!(kubelet.resolv_conf, "/etc/resolv.conf");
        assert_eq!(kubelet.static_pod_path, "/etc/kubernetes/manifests");
        let control_plane_tainted = kubelet.register_with_taints.iter().any(|taint| {
            taint.key == "node-role.kubernetes.io/control-plane" && taint.effect == "NoSchedule"
        });
        assert_eq!(control_plane_tainted, host.starts_with('m'), "{host}");

        let proxy: KubeProxyConfiguration =
            serde_norway::from_str(&rendered.text(host, "/var/lib/kube-proxy/config.conf"))
                .unwrap_or_else(|error| panic!("{host} kube-proxy config: {error}"));
        assert_eq!(proxy.api_version, "kubeproxy.config.k8s.io/v1alpha1");
        assert_eq!(proxy.kind, "KubeProxyConfiguration");
        assert_eq!(proxy.cluster_cidr, "10.244.0.0/16");
        assert_eq!(proxy.mode, "iptables");
        assert_eq!(proxy.hostname_override, *host);
        assert_eq!(
            proxy.client_connection.kubeconfig,
            "/var/lib/kube-proxy/kubeconfig.conf"
        );
    }
}

#[test]
fn kubeconfigs_load_with_kubectl() {
    let rendered = render(&base_inventory());
    assert_eq!(rendered.run.status, 0, "stderr: {}", rendered.run.stderr);
    let kubeconfigs = [
        "/etc/kubernetes/kubelet.conf",
        "/var/lib/kube-proxy/kubeconfig.conf",
        "/etc/kubernetes/admin.conf",
        "/etc/kubernetes/controller-manager.conf",
        "/etc/kubernetes/scheduler.conf",
    ];
    for (host, count) in [("m1", 5), ("w1", 2)] {
        for path in &kubeconfigs[..count] {
            let full = rendered.host(host).join(path.trim_start_matches('/'));
            let output = std::process::Command::new("kubectl")
                .args([
                    "config",
                    "view",
                    "--raw",
                    "-o",
                    "jsonpath={.clusters[0].cluster.server}",
                ])
                .arg(format!("--kubeconfig={}", full.display()))
                .output()
                .expect("run kubectl");
            assert!(
                output.status.success(),
                "{host}:{path}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
            let server = String::from_utf8_lossy(&output.stdout);
            assert!(
                server.starts_with("https://"),
                "{host}:{path}: server {server:?}"
            );
        }
    }
}

#[test]
fn the_apiserver_reaches_every_etcd_member_and_etcd_starts_as_a_new_cluster() {
    let rendered = render(&base_inventory());
    assert_eq!(rendered.run.status, 0, "stderr: {}", rendered.run.stderr);
    let manifest = rendered.text("m2", "/etc/kubernetes/manifests/kube-apiserver.yaml");
    assert!(
        manifest.contains(
            "--etcd-servers=https://192.0.2.11:2379,https://192.0.2.12:2379,https://192.0.2.13:2379"
        ),
        "{manifest}"
    );
    let env = rendered.text("m2", "/etc/kubernetes/etcd-initial-cluster.env");
    assert!(env.contains(
        "ETCD_INITIAL_CLUSTER=m1=https://192.0.2.11:2380,m2=https://192.0.2.12:2380,m3=https://192.0.2.13:2380\n"
    ));
    assert!(env.contains("ETCD_INITIAL_CLUSTER_STATE=new\n"));
    let unit = rendered.text("m2", "/etc/systemd/system/etcd.service");
    for flag in [
        "--name=m2",
        "--listen-client-urls=https://192.0.2.12:2379,https://127.0.0.1:2379",
        "--listen-peer-urls=https://192.0.2.12:2380",
        "--client-cert-auth=true",
        "--peer-client-cert-auth=true",
        "--data-dir=/var/lib/etcd",
    ] {
        assert!(unit.contains(flag), "etcd.service lacks {flag}");
    }
    assert!(unit.contains("ExecStart=/usr/bin/etcd "));
}

#[test]
fn joining_a_member_changes_only_its_environment_files() {
    let rendered = render(&base_inventory());
    assert_eq!(rendered.run.status, 0, "stderr: {}", rendered.run.stderr);
    let cluster = rendered.cluster();
    let store = rendered.store();
    let bootstrap = ocfk8s::render::RenderOptions::for_cluster(&cluster);
    let mut joining = bootstrap.clone();
    joining.etcd = ocfk8s::render::EtcdBootstrap::join(
        cluster
            .masters
            .iter()
            .map(|master| master.name.clone())
            .collect(),
    );
    let before = ocfk8s::render::render_cluster(&cluster, &store, &bootstrap).expect("render");
    let after = ocfk8s::render::render_cluster(&cluster, &store, &joining).expect("render");
    let mut changed = BTreeMap::new();
    for (old, new) in before.iter().zip(&after) {
        assert_eq!(old.node, new.node);
        for (old_file, new_file) in old.files.iter().zip(&new.files) {
            assert_eq!(old_file.path, new_file.path);
            if old_file.contents != new_file.contents {
                changed.insert(
                    format!("{}:{}", old.node, old_file.path),
                    new_file.restarts.clone(),
                );
            }
        }
    }
    let env = "/etc/kubernetes/etcd-initial-cluster.env";
    let expected: BTreeMap<String, Vec<String>> = MASTERS
        .iter()
        .map(|master| (format!("{master}:{env}"), Vec::new()))
        .collect();
    assert_eq!(
        changed, expected,
        "only the environment files change, restarting nothing"
    );
    let m3 = after[2]
        .files
        .iter()
        .find(|file| file.path == env)
        .expect("env file");
    assert!(String::from_utf8_lossy(&m3.contents).contains("ETCD_INITIAL_CLUSTER_STATE=existing\n"));
}

#[test]
fn files_name_the_units_to_restart_when_they_change() {
    let rendered = render(&base_inventory());
    assert_eq!(rendered.run.status, 0, "stderr: {}", rendered.run.stderr);
    let cluster = rendered.cluster();
    let store = rendered.store();
    let hosts = ocfk8s::render::render_cluster(
        &cluster,
        &store,
        &ocfk8s::render::RenderOptions::for_cluster(&cluster),
    )
    .expect("render");
    let names: Vec<&str> = hosts.iter().map(|host| host.node.as_str()).collect();
    assert_eq!(names, ["m1", "m2", "m3", "w1", "w2"], "masters first");
    let m1 = &hosts[0];
    let mut paths: Vec<&str> = m1.files.iter().map(|file| file.path.as_str()).collect();
    let unsorted = paths.clone();
    paths.sort();
    assert_eq!(paths, unsorted, "files sorted by path");
    let expected: &[(&str, &[&str])] = &[
        ("/etc/kubernetes/pki/etcd/peer.crt", &["etcd.service"]),
        ("/etc/systemd/system/etcd.service", &["etcd.service"]),
        ("/var/lib/kubelet/config.yaml", &["kubelet.service"]),
        (
            "/var/lib/kube-proxy/kubeconfig.conf",
            &["kube-proxy.service"],
        ),
        ("/etc/nginx/ssl/ingress.key", &["nginx.service"]),
        ("/etc/keepalived/keepalived.conf", &["keepalived.service"]),
        ("/etc/kubernetes/manifests/kube-apiserver.yaml", &[]),
        ("/etc/kubernetes/addons/flannel.yaml", &[]),
    ];
    for (path, units) in expected {
        let units: std::collections::BTreeSet<String> =
            units.iter().map(|unit| unit.to_string()).collect();
        assert_eq!(m1.units_to_restart([*path]), units, "{path}");
    }
    for file in &m1.files {
        let secret =
            file.path.ends_with(".key") || file.path.ends_with(".conf") && file.mode == 0o600;
        assert_eq!(file.secret, secret, "{}", file.path);
        assert_eq!(
            file.mode,
            if file.secret { 0o600 } else { 0o644 },
            "{}",
            file.path
        );
    }
}

#[test]
fn debug_output_of_rendered_files_never_shows_a_secret() {
    let rendered = render(&base_inventory());
    assert_eq!(rendered.run.status, 0, "stderr: {}", rendered.run.stderr);
    let cluster = rendered.cluster();
    let hosts = ocfk8s::render::render_cluster(
        &cluster,
        &rendered.store(),
        &ocfk8s::render::RenderOptions::for_cluster(&cluster),
    )
    .expect("render");
    let shown = format!("{hosts:?}");
    let mut secrets = 0;
    for file in hosts.iter().flat_map(|host| &host.files) {
        if !file.secret {
            continue;
        }
        secrets += 1;
        let text = String::from_utf8_lossy(&file.contents);
        let first_line = text.lines().nth(1).unwrap_or(&text);
        assert!(!shown.contains(first_line), "{} shown", file.path);
        assert!(
            !shown.contains(&format!("{:?}", file.contents)),
            "{} shown",
            file.path
        );
        assert!(shown.contains(&file.sha256_hex()), "{} hash", file.path);
    }
    assert!(secrets > 20, "{secrets} secrets");
    assert!(!shown.contains("PRIVATE KEY"));
    assert!(!shown.contains("client-key-data"));
}

#[test]
fn a_new_certificate_changes_the_manifest_of_the_component_reading_it() {
    let rendered = render(&base_inventory());
    assert_eq!(rendered.run.status, 0, "stderr: {}", rendered.run.stderr);
    let before = rendered.text("m1", "/etc/kubernetes/manifests/kube-apiserver.yaml");
    let scheduler_before = rendered.text("m1", "/etc/kubernetes/manifests/kube-scheduler.yaml");
    let other_master_before = rendered.text("m2", "/etc/kubernetes/manifests/kube-apiserver.yaml");
    // Renewed the way an operator renews one leaf: its files removed, and
    // `pki generate` issues it anew from the same CA.
    let store = rendered.dir.path().join("pki/test/nodes/m1");
    std::fs::remove_file(store.join("apiserver.crt")).expect("remove");
    std::fs::remove_file(store.join("apiserver.key")).expect("remove");
    let generate = rendered.again(&["pki", "generate"]);
    assert_eq!(generate.status, 0, "stderr: {}", generate.stderr);
    let again = rendered.again(&["render", "--out", "out"]);
    assert_eq!(again.status, 0, "stderr: {}", again.stderr);
    let after = rendered.text("m1", "/etc/kubernetes/manifests/kube-apiserver.yaml");
    assert_ne!(before, after, "kubelet must see a new apiserver manifest");
    assert_eq!(
        scheduler_before,
        rendered.text("m1", "/etc/kubernetes/manifests/kube-scheduler.yaml")
    );
    assert_eq!(
        other_master_before,
        rendered.text("m2", "/etc/kubernetes/manifests/kube-apiserver.yaml"),
        "another master's certificates did not change"
    );
}

#[test]
fn weave_replaces_flannel() {
    let inventory = base_inventory().replace("cni = \"flannel\"", "cni = \"weave\"");
    let rendered = render(&inventory);
    assert_eq!(rendered.run.status, 0, "stderr: {}", rendered.run.stderr);
    let paths = host_paths(&rendered.host("m1"));
    assert!(paths.contains(&"/etc/kubernetes/addons/weave.yaml".to_string()));
    assert!(
        !paths.iter().any(|path| path.contains("flannel")),
        "{paths:?}"
    );
    let weave = rendered.text("m1", "/etc/kubernetes/addons/weave.yaml");
    let documents = yaml_documents(&weave);
    let daemon_set = documents
        .iter()
        .find(|document| document.get("kind").and_then(|kind| kind.as_str()) == Some("DaemonSet"))
        .expect("a DaemonSet");
    let text = serde_norway::to_string(daemon_set).expect("yaml");
    assert!(text.contains("IPALLOC_RANGE"), "{text}");
    assert!(text.contains("10.244.0.0/16"), "{text}");
}

#[test]
fn flannel_coredns_and_ingress_follow_the_inventory() {
    let inventory = base_inventory().replace(
        "server_names = [\"*.example.org\"]",
        "server_names = [\"*.example.org\"]\nnodes = [\"w2\"]",
    );
    let rendered = render(&inventory);
    assert_eq!(rendered.run.status, 0, "stderr: {}", rendered.run.stderr);
    let flannel = rendered.text("m1", "/etc/kubernetes/addons/flannel.yaml");
    assert!(flannel.contains("\"Network\": \"10.244.0.0/16\""));
    assert!(flannel.contains("\"Type\": \"vxlan\""));
    let coredns = rendered.text("m1", "/etc/kubernetes/addons/coredns.yaml");
    assert!(coredns.contains("clusterIP: \"10.96.0.10\"\n"));
    assert!(coredns.contains("kubernetes cluster.local in-addr.arpa ip6.arpa"));
    let ingress = rendered.text("m1", "/etc/kubernetes/addons/ingress-nginx.yaml");
    assert!(ingress.contains("nodePort: 31234\n"));
    assert!(ingress.contains("values: [\"w2\"]\n"), "{ingress}");
    let site = rendered.text("m1", "/etc/nginx/sites-enabled/ocfk8s-ingress.conf");
    assert!(
        site.contains("server 192.0.2.22:31234 max_fails=3"),
        "{site}"
    );
    assert!(!site.contains("192.0.2.21"), "w1 runs no ingress: {site}");
}

#[test]
fn a_broken_override_template_fails_naming_its_file_and_line() {
    let rendered = render(&base_inventory());
    assert_eq!(rendered.run.status, 0, "stderr: {}", rendered.run.stderr);
    let templates = rendered.dir.path().join("templates");
    std::fs::create_dir(&templates).expect("mkdir");
    std::fs::write(
        templates.join("kubelet.service"),
        "[Unit]\nDescription=kubelet\n\n[Service]\nExecStart={{ cluster.bin_dir }/kubelet\n",
    )
    .expect("write");
    let run = rendered.again(&["--templates", "templates", "render", "--out", "broken"]);
    assert_eq!(run.status, 2, "stderr: {}", run.stderr);
    assert!(
        run.stderr.contains("templates/kubelet.service"),
        "{}",
        run.stderr
    );
    assert!(run.stderr.contains("line 5"), "{}", run.stderr);
    assert!(
        !rendered.dir.path().join("broken").exists(),
        "nothing written"
    );

    // An undefined variable is an error too, not an empty string.
    std::fs::write(templates.join("kubelet.service"), "ok\n{{ node.nmae }}\n").expect("write");
    let run = rendered.again(&["--templates", "templates", "render", "--out", "broken"]);
    assert_eq!(run.status, 2, "stderr: {}", run.stderr);
    assert!(
        run.stderr.contains("templates/kubelet.service, line 2"),
        "{}",
        run.stderr
    );
}

#[test]
fn an_override_template_replaces_the_built_in_one() {
    let inventory = base_inventory().replace(
        "ca_validity_days = 3650",
        "ca_validity_days = 3650\ntemplates_dir = \"site-templates\"",
    );
    let rendered = render(&inventory);
    assert_eq!(
        rendered.run.status, 2,
        "no folder yet: {}",
        rendered.run.stderr
    );
    let templates = rendered.dir.path().join("site-templates");
    std::fs::create_dir(&templates).expect("mkdir");
    std::fs::write(
        templates.join("sysctl-kubernetes.conf"),
        "# {{ node.name }}\nvm.swappiness = 0\n",
    )
    .expect("write");
    let run = rendered.again(&["render", "--out", "out"]);
    assert_eq!(run.status, 0, "stderr: {}", run.stderr);
    assert_eq!(
        rendered.text("w2", "/etc/sysctl.d/99-kubernetes.conf"),
        "# w2\nvm.swappiness = 0\n"
    );

    std::fs::write(templates.join("sysctl.conf"), "typo\n").expect("write");
    let run = rendered.again(&["render", "--out", "out"]);
    assert_eq!(run.status, 2, "stderr: {}", run.stderr);
    assert!(
        run.stderr.contains("sysctl.conf is not a template"),
        "{}",
        run.stderr
    );
}

#[test]
fn node_labels_and_taints_reach_kubelet() {
    let inventory = base_inventory().replace(
        "name = \"w2\"\naddress = \"192.0.2.22\"",
        "name = \"w2\"\naddress = \"192.0.2.22\"\nlabels = { \"example.org/disk\" = \"ssd\", zone = \"b\" }\ntaints = [\"dedicated=batch:NoSchedule\", \"gpu:NoExecute\"]",
    );
    let rendered = render(&inventory);
    assert_eq!(rendered.run.status, 0, "stderr: {}", rendered.run.stderr);
    let unit = rendered.text("w2", "/etc/systemd/system/kubelet.service");
    assert!(
        unit.contains("--node-labels=example.org/disk=ssd,zone=b \\\n"),
        "{unit}"
    );
    let config: KubeletConfiguration =
        serde_norway::from_str(&rendered.text("w2", "/var/lib/kubelet/config.yaml"))
            .expect("config");
    let taints: Vec<(String, Option<String>, String)> = config
        .register_with_taints
        .into_iter()
        .map(|taint| (taint.key, taint.value, taint.effect))
        .collect();
    assert_eq!(
        taints,
        [
            (
                "dedicated".to_string(),
                Some("batch".to_string()),
                "NoSchedule".to_string()
            ),
            ("gpu".to_string(), None, "NoExecute".to_string()),
        ]
    );
    let plain = rendered.text("w1", "/etc/systemd/system/kubelet.service");
    assert!(!plain.contains("--node-labels"), "{plain}");
}

#[test]
fn the_operators_tls_certificate_is_served_instead_of_the_stores() {
    let dir = tempfile::tempdir().expect("temp dir");
    let operator =
        rcgen::generate_simple_self_signed(vec!["*.example.org".to_string()]).expect("cert");
    std::fs::create_dir(dir.path().join("certs")).expect("mkdir");
    std::fs::write(dir.path().join("certs/wildcard.crt"), operator.cert.pem()).expect("write");
    std::fs::write(
        dir.path().join("certs/wildcard.key"),
        operator.signing_key.serialize_pem(),
    )
    .expect("write");
    let inventory = base_inventory().replace(
        "server_names = [\"*.example.org\"]",
        "server_names = [\"*.example.org\"]\ntls_cert = \"certs/wildcard.crt\"\ntls_key = \"certs/wildcard.key\"",
    );
    let path = dir.path().join("inventory.toml");
    std::fs::write(&path, inventory).expect("write");
    let rendered = render_support::render_at(dir, path);
    assert_eq!(rendered.run.status, 0, "stderr: {}", rendered.run.stderr);
    let served = rendered.text("m3", "/etc/nginx/ssl/ingress.crt");
    assert_eq!(served, operator.cert.pem());
    let key = rendered.host("m3").join("etc/nginx/ssl/ingress.key");
    assert_eq!(mode(&key), 0o600);

    let dir = rendered.dir.path();
    std::fs::remove_file(dir.join("certs/wildcard.key")).expect("remove");
    let run = rendered.again(&["render", "--out", "again"]);
    assert_eq!(run.status, 2, "stderr: {}", run.stderr);
    assert!(run.stderr.contains("certs/wildcard.key"), "{}", run.stderr);
    assert!(run.stderr.contains("ingress.tls_key"), "{}", run.stderr);
    assert!(!run.stderr.contains("certificate file"), "{}", run.stderr);
    assert!(!dir.join("again").exists(), "nothing written");
}

/// Every file under `dir` with its bytes, to compare before and after.
fn snapshot(dir: &std::path::Path) -> Vec<(String, Vec<u8>)> {
    render_support::common::tree(dir)
        .into_iter()
        .map(|relative| {
            let bytes = std::fs::read(dir.join(&relative)).expect("read");
            (relative, bytes)
        })
        .collect()
}

#[test]
fn render_out_dot_with_a_host_named_pki_never_touches_the_store() {
    let inventory = base_inventory().replace("name = \"w2\"", "name = \"pki\"");
    let rendered = render(&inventory);
    assert_eq!(rendered.run.status, 0, "stderr: {}", rendered.run.stderr);
    let store = rendered.dir.path().join("pki");
    let before = snapshot(&store);
    assert!(before.iter().any(|(name, _)| name == "test/ca.key"));

    let run = rendered.again(&["render", "--out", "."]);
    assert_eq!(run.status, 2, "stderr: {}", run.stderr);
    assert!(run.stderr.contains("contains the"), "{}", run.stderr);
    assert_eq!(snapshot(&store), before, "the PKI store is untouched");
}

#[test]
fn render_refuses_an_output_folder_inside_the_store_or_holding_the_templates() {
    let rendered = render(&base_inventory());
    assert_eq!(rendered.run.status, 0, "stderr: {}", rendered.run.stderr);
    let run = rendered.again(&["render", "--out", "pki/test/out"]);
    assert_eq!(run.status, 2, "stderr: {}", run.stderr);
    assert!(
        run.stderr.contains("lies inside the PKI store"),
        "{}",
        run.stderr
    );
    assert!(!rendered.dir.path().join("pki/test/out").exists());

    let templates = rendered.dir.path().join("site/templates");
    std::fs::create_dir_all(&templates).expect("mkdir");
    let run = rendered.again(&["--templates", "site/templates", "render", "--out", "site"]);
    assert_eq!(run.status, 2, "stderr: {}", run.stderr);
    assert!(
        run.stderr.contains("contains the templates folder"),
        "{}",
        run.stderr
    );
    assert_eq!(
        render_support::common::tree(&rendered.dir.path().join("site")),
        Vec::<String>::new()
    );
}

#[test]
fn render_replaces_only_host_folders_it_wrote_and_writes_nothing_on_refusal() {
    let rendered = render(&base_inventory());
    assert_eq!(rendered.run.status, 0, "stderr: {}", rendered.run.stderr);
    let out = rendered.dir.path().join("mine");
    std::fs::create_dir_all(out.join("w1")).expect("mkdir");
    std::fs::write(out.join("w1/precious"), "keep me").expect("write");
    std::fs::write(out.join("m2"), "a file where a host folder goes").expect("write");

    let run = rendered.again(&["render", "--out", "mine"]);
    assert_eq!(run.status, 2, "stderr: {}", run.stderr);
    assert!(
        run.stderr.contains("mine/w1 exists and was not written by"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("mine/m2 is a regular file"),
        "{}",
        run.stderr
    );
    assert_eq!(
        render_support::common::tree(&out),
        vec!["m2".to_string(), "w1/precious".to_string()],
        "nothing written, nothing removed"
    );

    // Once the operator clears them, render owns its folders and re-renders them.
    std::fs::remove_dir_all(out.join("w1")).expect("rm");
    std::fs::remove_file(out.join("m2")).expect("rm");
    let run = rendered.again(&["render", "--out", "mine"]);
    assert_eq!(run.status, 0, "stderr: {}", run.stderr);
    let run = rendered.again(&["render", "--out", "mine"]);
    assert_eq!(run.status, 0, "stderr: {}", run.stderr);
    assert!(out.join("w1/etc/kubernetes/kubelet.conf").exists());
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .expect("read out")
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with('.') && name != ".ocfk8s-render")
        .collect();
    assert!(
        leftovers.is_empty(),
        "no staging folders left: {leftovers:?}"
    );
}

#[test]
fn quiet_render_and_pki_generate_print_nothing() {
    let rendered = render(&base_inventory());
    assert_eq!(rendered.run.status, 0, "stderr: {}", rendered.run.stderr);
    assert!(
        rendered.run.stdout.contains("m1: "),
        "{}",
        rendered.run.stdout
    );
    let run = rendered.again(&["-q", "render", "--out", "out"]);
    assert_eq!(run.status, 0, "stderr: {}", run.stderr);
    assert_eq!(run.stdout, "");
    assert_eq!(run.stderr, "");
    let run = rendered.again(&["pki", "generate"]);
    assert_eq!(run.stdout.trim(), "PKI store up to date, nothing to do");
    let run = rendered.again(&["-q", "pki", "generate"]);
    assert_eq!(run.status, 0, "stderr: {}", run.stderr);
    assert_eq!(run.stdout, "");
    assert_eq!(run.stderr, "");
}
