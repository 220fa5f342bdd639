//! The rendered files pass the real tools that will read them on a host:
//! `systemd-analyze verify` for every unit, `nginx -t` and `keepalived -t`
//! with the rendered `/etc` laid over this machine's `/etc` (an overlay
//! mount in a private mount namespace, so the machine is not touched).

mod render_support;

use std::path::Path;
use std::process::Command;

use render_support::{base_inventory, host_paths, render};

/// The base inventory with the control-plane endpoint on the VIP, so
/// keepalived also tracks the local apiserver.
fn vip_endpoint_inventory() -> String {
    base_inventory().replace(
        "control_plane_endpoint = \"kube.example.org:6443\"",
        "control_plane_endpoint = \"192.0.2.100:6443\"",
    )
}

fn output_text(output: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn every_unit_passes_systemd_analyze_verify() {
    let rendered = render(&base_inventory());
    assert_eq!(rendered.run.status, 0, "stderr: {}", rendered.run.stderr);
    let mut verified = 0;
    for host in ["m1", "m2", "m3", "w1", "w2"] {
        let units: Vec<String> = host_paths(&rendered.host(host))
            .into_iter()
            .filter(|path| path.starts_with("/etc/systemd/system/"))
            .collect();
        let expected = if host.starts_with('m') { 3 } else { 2 };
        assert_eq!(units.len(), expected, "{host}: {units:?}");
        let dir = tempfile::tempdir().expect("temp dir");
        let mut arguments = Vec::new();
        for unit in &units {
            let name = Path::new(unit).file_name().expect("file name");
            let copy = dir.path().join(name);
            std::fs::copy(
                rendered.host(host).join(unit.trim_start_matches('/')),
                &copy,
            )
            .expect("copy unit");
            arguments.push(copy);
        }
        let output = Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .args(&arguments)
            .output()
            .expect("run systemd-analyze");
        let text = output_text(&output);
        // kubelet and kube-proxy are not installed on the test machine:
        // only their "not executable" lines are tolerated.
        let problems: Vec<&str> = text
            .lines()
            .filter(|line| {
                let missing_binary = (line.contains("/usr/bin/kubelet ")
                    || line.contains("/usr/bin/kube-proxy "))
                    && line.contains("is not executable: No such file or directory");
                !line.trim().is_empty() && !missing_binary
            })
            .collect();
        assert!(
            output.status.success() || problems.is_empty(),
            "{host}: {text}"
        );
        assert!(
            problems.is_empty(),
            "{host}: systemd-analyze verify says:\n{}",
            problems.join("\n")
        );
        verified += units.len();
    }
    assert_eq!(verified, 3 * 3 + 2 * 2);
}

/// Run `script` in a private mount namespace where `<host tree>/etc` lies
/// over `/etc`.
fn with_rendered_etc(host_tree: &Path, script: &str) -> std::process::Output {
    let lower = format!("lowerdir={}:/etc", host_tree.join("etc").display());
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-ec"])
        .arg(format!(
            "mount -t overlay overlay -o {lower} /etc\n{script}"
        ))
        .output()
        .expect("run unshare")
}

#[test]
fn nginx_accepts_the_rendered_site_on_every_master() {
    let rendered = render(&vip_endpoint_inventory());
    assert_eq!(rendered.run.status, 0, "stderr: {}", rendered.run.stderr);
    for master in ["m1", "m2", "m3"] {
        let output = with_rendered_etc(
            &rendered.host(master),
            "test -f /etc/nginx/sites-enabled/ocfk8s-ingress.conf\nnginx -t",
        );
        let text = output_text(&output);
        assert!(
            output.status.success(),
            "{master}: nginx -t failed:\n{text}"
        );
        assert!(text.contains("test is successful"), "{master}: {text}");
        assert!(!text.contains("[warn]"), "{master}: {text}");
    }
}

#[test]
fn nginx_rejects_a_site_whose_key_does_not_match_its_certificate() {
    // The check above would be worthless if nginx never read the site.
    let rendered = render(&base_inventory());
    assert_eq!(rendered.run.status, 0, "stderr: {}", rendered.run.stderr);
    let ssl = rendered.host("m1").join("etc/nginx/ssl");
    std::fs::copy(
        rendered.host("m1").join("etc/kubernetes/pki/sa.key"),
        ssl.join("ingress.key"),
    )
    .expect("copy");
    let output = with_rendered_etc(&rendered.host("m1"), "nginx -t");
    assert!(!output.status.success(), "{}", output_text(&output));
}

#[test]
fn keepalived_accepts_the_rendered_configuration_on_every_master() {
    let rendered = render(&vip_endpoint_inventory());
    assert_eq!(rendered.run.status, 0, "stderr: {}", rendered.run.stderr);
    let mut priorities = Vec::new();
    for master in ["m1", "m2", "m3"] {
        let conf = rendered.text(master, "/etc/keepalived/keepalived.conf");
        assert!(conf.contains("track_script"), "{conf}");
        assert!(
            conf.contains("ocfk8s_apiserver"),
            "the endpoint is the VIP: {conf}"
        );
        priorities.push(
            conf.lines()
                .find_map(|line| line.trim().strip_prefix("priority "))
                .expect("priority")
                .to_string(),
        );
        let output = with_rendered_etc(
            &rendered.host(master),
            "keepalived -t -f /etc/keepalived/keepalived.conf",
        );
        let text = output_text(&output);
        assert!(
            output.status.success(),
            "{master}: keepalived -t failed:\n{text}"
        );
        assert!(
            text.trim().is_empty(),
            "{master}: keepalived -t warns:\n{text}"
        );
    }
    priorities.sort();
    priorities.dedup();
    assert_eq!(priorities.len(), 3, "distinct priorities: {priorities:?}");
}

#[test]
fn keepalived_rejects_a_broken_configuration() {
    let rendered = render(&base_inventory());
    assert_eq!(rendered.run.status, 0, "stderr: {}", rendered.run.stderr);
    let conf = rendered.host("m1").join("etc/keepalived/keepalived.conf");
    let text = std::fs::read_to_string(&conf).expect("read");
    std::fs::write(
        &conf,
        text.replace("virtual_router_id 51", "virtual_router_id 999"),
    )
    .expect("write");
    let output = with_rendered_etc(
        &rendered.host("m1"),
        "keepalived -t -f /etc/keepalived/keepalived.conf",
    );
    assert!(!output.status.success(), "{}", output_text(&output));
}

/// The command line of a unit's `ExecStart=`, continuation lines joined.
fn exec_start(unit: &str) -> String {
    let joined = unit.replace("\\\n", " ");
    joined
        .lines()
        .find_map(|line| line.strip_prefix("ExecStart="))
        .expect("ExecStart")
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

#[test]
fn etcd_starts_from_the_rendered_unit_and_demands_client_certificates() {
    // One master, so its etcd is a whole cluster. It runs in a private
    // network namespace holding the master's address, with the rendered
    // /etc laid over /etc and a fresh /var/lib/etcd: nothing on this
    // machine is touched and no port is shared with anything else.
    let inventory = base_inventory()
        .replace("[[master]]\nname = \"m2\"\naddress = \"192.0.2.12\"\n", "")
        .replace("[[master]]\nname = \"m3\"\naddress = \"192.0.2.13\"\n", "");
    let rendered = render(&inventory);
    assert_eq!(rendered.run.status, 0, "stderr: {}", rendered.run.stderr);
    let unit = rendered.text("m1", "/etc/systemd/system/etcd.service");
    assert!(unit.contains("EnvironmentFile=/etc/kubernetes/etcd-initial-cluster.env\n"));
    let command = exec_start(&unit);
    let pki = "/etc/kubernetes/pki/etcd";
    let etcdctl = format!(
        "etcdctl --endpoints=https://127.0.0.1:2379,https://192.0.2.11:2379 --cacert={pki}/ca.crt --command-timeout=2s"
    );
    let script = format!(
        r#"mount -t tmpfs tmpfs /var/lib/etcd
ip link set lo up
ip addr add 192.0.2.11/32 dev lo
set -a; . /etc/kubernetes/etcd-initial-cluster.env; set +a
{command} >/tmp/etcd.log 2>&1 &
etcd=$!
trap 'kill $etcd; wait $etcd' EXIT
healthy=no
for attempt in $(seq 1 50); do
  if {etcdctl} --cert={pki}/healthcheck-client.crt --key={pki}/healthcheck-client.key endpoint health >/dev/null 2>&1; then
    healthy=yes; break
  fi
  sleep 0.2
done
echo "healthy=$healthy"
[ "$healthy" = yes ] || cat /tmp/etcd.log
{etcdctl} --cert={pki}/healthcheck-client.crt --key={pki}/healthcheck-client.key member list
if {etcdctl} endpoint health >/dev/null 2>&1; then echo "anonymous=accepted"; else echo "anonymous=refused"; fi
"#
    );
    let output = with_rendered_etc_and_network(&rendered.host("m1"), None, &script);
    let text = output_text(&output);
    assert!(
        text.contains("healthy=yes"),
        "etcd did not become healthy:\n{text}"
    );
    assert!(
        text.contains("m1, https://192.0.2.11:2380, https://192.0.2.11:2379"),
        "{text}"
    );
    assert!(text.contains("anonymous=refused"), "{text}");
}

/// Like [`with_rendered_etc`], in a private network namespace too, with
/// `extra_etc` (when given) laid over the rendered `/etc`.
fn with_rendered_etc_and_network(
    host_tree: &Path,
    extra_etc: Option<&Path>,
    script: &str,
) -> std::process::Output {
    let mut layers = Vec::new();
    if let Some(extra) = extra_etc {
        layers.push(extra.display().to_string());
    }
    layers.push(host_tree.join("etc").display().to_string());
    layers.push("/etc".to_string());
    let lower = format!("lowerdir={}", layers.join(":"));
    Command::new("unshare")
        // A private PID namespace too: keepalived's `pgrep -x nginx` must
        // see this namespace's nginx only, not one running on the machine.
        .args([
            "--mount",
            "--net",
            "--pid",
            "--fork",
            "--mount-proc",
            "--propagation",
            "private",
            "sh",
            "-ec",
        ])
        .arg(format!(
            "mount -t overlay overlay -o {lower} /etc\nmount -t tmpfs tmpfs /tmp\n{script}"
        ))
        .output()
        .expect("run unshare")
}

#[test]
fn nginx_terminates_tls_and_forwards_host_and_client_to_a_live_ingress_node() {
    // nginx runs from the rendered site in a private network namespace that
    // holds w2's address, where a stand-in for ingress-nginx answers on the
    // NodePort with the headers it received; w1 is unreachable, so every
    // request also proves a failing upstream is skipped.
    let rendered = render(&base_inventory());
    assert_eq!(rendered.run.status, 0, "stderr: {}", rendered.run.stderr);
    let extra = tempfile::tempdir().expect("temp dir");
    let conf_d = extra.path().join("nginx/conf.d");
    std::fs::create_dir_all(&conf_d).expect("mkdir");
    std::fs::write(
        conf_d.join("zz-ingress-node.conf"),
        "server {\n    listen 192.0.2.22:31234;\n    location / {\n        default_type text/plain;\n        \
         return 200 \"host=$host xff=$http_x_forwarded_for proto=$http_x_forwarded_proto uri=$request_uri\\n\";\n    }\n}\n",
    )
    .expect("write");
    let script = r#"for dir in /run /var/log/nginx /var/lib/nginx; do mount -t tmpfs tmpfs $dir; done
ip link set lo up
ip addr add 192.0.2.22/32 dev lo
nginx
trap 'nginx -s stop' EXIT
for attempt in 1 2 3 4; do
  curl -sS --cacert /etc/nginx/ssl/ingress.crt --resolve app.example.org:443:127.0.0.1 https://app.example.org/hello?n=$attempt
done
curl -sS -o /dev/null -w 'redirect=%{http_code} %{redirect_url}\n' --resolve app.example.org:80:127.0.0.1 http://app.example.org/x
"#;
    let output = with_rendered_etc_and_network(&rendered.host("m1"), Some(extra.path()), script);
    let text = output_text(&output);
    assert!(output.status.success(), "{text}");
    for attempt in 1..=4 {
        assert!(
            text.contains(&format!(
                "host=app.example.org xff=127.0.0.1 proto=https uri=/hello?n={attempt}\n"
            )),
            "request {attempt}:\n{text}"
        );
    }
    assert!(
        text.contains("redirect=301 https://app.example.org/x"),
        "{text}"
    );
}

#[test]
fn keepalived_takes_the_vip_with_nginx_and_drops_it_without() {
    // m1 alone in a private network namespace, its eth0 one end of a veth
    // pair: keepalived from the rendered configuration takes the VIP while
    // nginx runs, and gives it up when nginx stops.
    let rendered = render(&base_inventory());
    assert_eq!(rendered.run.status, 0, "stderr: {}", rendered.run.stderr);
    let script = r#"for dir in /run /var/log/nginx /var/lib/nginx; do mount -t tmpfs tmpfs $dir; done
ip link set lo up
ip link add eth0 type veth peer name peer0
ip link set peer0 up
ip link set eth0 up
ip addr add 192.0.2.11/24 dev eth0
nginx
keepalived --dont-fork --log-console --vrrp -f /etc/keepalived/keepalived.conf >/tmp/keepalived.log 2>&1 &
keepalived=$!
trap 'kill $keepalived; wait $keepalived; nginx -s stop 2>/dev/null || true' EXIT
has_vip() { ip -br addr show dev eth0 | grep -q ' 192.0.2.100/'; }
for attempt in $(seq 1 80); do has_vip && break; sleep 0.1; done
if has_vip; then echo "with nginx: vip"; else echo "with nginx: no vip"; fi
nginx -s stop
for attempt in $(seq 1 60); do has_vip || break; sleep 0.1; done
if has_vip; then echo "without nginx: vip"; else echo "without nginx: no vip"; fi
cat /tmp/keepalived.log
"#;
    let output = with_rendered_etc_and_network(&rendered.host("m1"), None, script);
    let text = output_text(&output);
    assert!(text.contains("with nginx: vip\n"), "{text}");
    assert!(text.contains("without nginx: no vip\n"), "{text}");
    assert!(
        text.contains("VRRP_Script(ocfk8s_nginx) succeeded"),
        "{text}"
    );
}

#[test]
fn keepalived_apiserver_check_passes_only_when_the_local_apiserver_is_ready() {
    // The check keepalived runs when the endpoint is the VIP, run as is
    // against a stand-in apiserver on 127.0.0.1:6443 serving the master's
    // own apiserver certificate: the check must trust it (CA from
    // admin.conf, name "kubernetes") and follow /readyz.
    let rendered = render(&vip_endpoint_inventory());
    assert_eq!(rendered.run.status, 0, "stderr: {}", rendered.run.stderr);
    let conf = rendered.text("m1", "/etc/keepalived/keepalived.conf");
    let check = conf
        .split("vrrp_script ocfk8s_apiserver {")
        .nth(1)
        .and_then(|block| {
            block
                .lines()
                .find_map(|line| line.trim().strip_prefix("script \""))
        })
        .and_then(|script| script.strip_suffix('"'))
        .expect("apiserver check")
        .to_string();
    let extra = tempfile::tempdir().expect("temp dir");
    let conf_d = extra.path().join("nginx/conf.d");
    std::fs::create_dir_all(&conf_d).expect("mkdir");
    std::fs::write(
        conf_d.join("zz-apiserver.conf"),
        "server {\n    listen 127.0.0.1:6443 ssl;\n    ssl_certificate /etc/kubernetes/pki/apiserver.crt;\n    \
         ssl_certificate_key /etc/kubernetes/pki/apiserver.key;\n    \
         location = /readyz { if (-f /run/apiserver-ready) { return 200 \"ok\"; } return 500 \"not ready\"; }\n}\n",
    )
    .expect("write");
    let script = format!(
        r#"for dir in /run /var/log/nginx /var/lib/nginx; do mount -t tmpfs tmpfs $dir; done
export HOME=/tmp
ip link set lo up
nginx
trap 'nginx -s stop' EXIT
touch /run/apiserver-ready
if {check} >/tmp/check.log 2>&1; then echo "ready: pass"; else echo "ready: fail"; cat /tmp/check.log; fi
rm /run/apiserver-ready
if {check} >/tmp/check.log 2>&1; then echo "not ready: pass"; else echo "not ready: fail"; fi
"#
    );
    let output = with_rendered_etc_and_network(&rendered.host("m1"), Some(extra.path()), &script);
    let text = output_text(&output);
    assert!(text.contains("ready: pass\n"), "{check}\n{text}");
    assert!(text.contains("not ready: fail\n"), "{check}\n{text}");
}

#[test]
fn containerd_accepts_the_rendered_config_and_rejects_a_broken_one() {
    let rendered = render(&base_inventory());
    assert_eq!(rendered.run.status, 0, "stderr: {}", rendered.run.stderr);
    for host in ["m1", "w1"] {
        let config = rendered.host(host).join("etc/containerd/config.toml");
        let output = Command::new("containerd")
            .arg("--config")
            .arg(&config)
            .args(["config", "dump"])
            .output()
            .expect("containerd");
        let text = output_text(&output);
        assert!(output.status.success(), "{host}: {text}");
        // What containerd read back is what was rendered.
        assert!(text.contains("SystemdCgroup = true"), "{host}: {text}");
        assert!(
            text.contains("sandbox_image = \"registry.k8s.io/pause:3.10\""),
            "{host}: {text}"
        );
        assert!(
            text.contains("bin_dir = \"/opt/cni/bin\""),
            "{host}: {text}"
        );
    }
    let broken = rendered.host("w1").join("etc/containerd/config.toml");
    let mut text = std::fs::read_to_string(&broken).expect("read");
    text.push_str("\n[plugins.\"io.containerd.grpc.v1.cri\"\n");
    std::fs::write(&broken, text).expect("write");
    let output = Command::new("containerd")
        .arg("--config")
        .arg(&broken)
        .args(["config", "dump"])
        .output()
        .expect("containerd");
    assert!(!output.status.success(), "{}", output_text(&output));
}
