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
    let rendered = render(&base_inventory(), &[]);
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
    let rendered = render(&vip_endpoint_inventory(), &[]);
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
    let rendered = render(&base_inventory(), &[]);
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
    let rendered = render(&vip_endpoint_inventory(), &[]);
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
    let rendered = render(&base_inventory(), &[]);
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
