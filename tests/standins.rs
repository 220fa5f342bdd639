//! The stand-ins for the Kubernetes binaries (sandbox/standins) on a
//! sandbox master and worker, fed with exactly what ocfk8s renders and
//! pushes: the real etcd unit, the kubelet and kube-proxy units, the static
//! pod manifests, kubeconfigs and certificates. They must accept what a real
//! cluster accepts and refuse what it refuses, or the service phases tested
//! on them prove nothing.

mod common;
mod sandbox;

use std::path::Path;
use std::time::Instant;

use common::{ocfk8s, Run};
use sandbox::Sandbox;

const SUBNET: u8 = 207;
const MASTER: &str = "10.213.207.11";
const WORKER: &str = "10.213.207.51";
const ADMIN: &str = "kubectl --kubeconfig=/etc/kubernetes/admin.conf";

/// Prints the HTTP status of the apiserver's /readyz for the admin identity
/// (000 when no HTTP answer came), verified against the cluster CA.
const READYZ: &str = "#!/bin/sh
curl -s -o /run/readyz.body -w '%{http_code}' --max-time 3 --cacert /etc/kubernetes/pki/ca.crt \
  --cert /run/admin.crt --key /run/admin.key https://10.213.207.11:6443/readyz
";

const DEMO: &str = "apiVersion: v1
kind: Namespace
metadata:
  name: demo
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: greeting
  namespace: demo
data:
  hello: world
---
apiVersion: apps/v1
kind: DaemonSet
metadata:
  name: echo
  namespace: demo
spec:
  selector:
    matchLabels:
      app: echo
";

fn stdout(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

fn stderr(output: &std::process::Output) -> String {
    String::from_utf8_lossy(&output.stderr).trim().to_string()
}

fn run(sandbox: &Sandbox, inventory: &Path, args: &[&str]) -> Run {
    let run: Run = ocfk8s()
        .current_dir(sandbox.dir.path())
        .arg("-i")
        .arg(inventory)
        .arg("--no-progress")
        .args(args)
        .output()
        .expect("run ocfk8s")
        .into();
    assert_eq!(
        run.status, 0,
        "{args:?}\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
    run
}

/// Poll `condition` (a shell condition) on `host` every 0.1 s for up to
/// `seconds`; on a timeout, fail with `what` and the stand-ins' logs.
fn wait_until(sandbox: &Sandbox, host: &str, what: &str, condition: &str, seconds: u32) {
    let script = format!(
        "tries={tries}; until {condition}; do tries=$((tries - 1)); \
         [ \"$tries\" -gt 0 ] || exit 1; sleep 0.1; done",
        tries = seconds * 10
    );
    let output = sandbox.ssh_output(host, &script);
    if !output.status.success() {
        let logs = sandbox.ssh_output(
            host,
            "tail -n 30 /run/systemctl/*.log; cat /run/standins/*.status /run/standins/pods/*.json",
        );
        panic!(
            "{host}: not within {seconds} s: {what}\n{}\n{}",
            stderr(&output),
            stdout(&logs)
        );
    }
}

#[test]
fn stand_ins_check_the_rendered_certificates_kubeconfigs_and_etcd_for_real() {
    let started = Instant::now();
    let sandbox = Sandbox::up(SUBNET, 1, 1);
    // The harness's inventory with the binaries where the stand-ins go.
    let inventory = sandbox.inventory("inventory.toml", "", "", "");
    let text = std::fs::read_to_string(&inventory).expect("read inventory");
    let text = text.replace(
        "[install]\nmethod = \"none\"\n",
        "[install]\nmethod = \"none\"\nbin_dir = \"/usr/local/bin\"\n",
    );
    assert!(text.contains("bin_dir = \"/usr/local/bin\""), "{text}");
    std::fs::write(&inventory, text).expect("write inventory");
    run(&sandbox, &inventory, &["pki", "generate"]);
    run(
        &sandbox,
        &inventory,
        &[
            "bootstrap",
            "--skip-phases=install,etcd,control-plane,nodes,lb,addons",
        ],
    );
    for host in ["m1", "w1"] {
        sandbox.install_standins(host);
    }

    // The rendered etcd unit (Type=notify) runs real etcd; the rendered
    // kubelet unit runs the stand-in, which runs the static pods.
    sandbox.ssh("m1", "systemctl enable --now etcd kubelet");
    assert_eq!(
        stdout(&sandbox.ssh("m1", "systemctl is-active etcd kubelet")),
        "active\nactive"
    );
    assert_eq!(
        stdout(&sandbox.ssh("m1", "systemctl is-enabled etcd kubelet")),
        "enabled\nenabled"
    );
    sandbox.ssh(
        "m1",
        &format!(
            "grep client-certificate-data /etc/kubernetes/admin.conf | awk '{{print $2}}' | base64 -d > /run/admin.crt \
             && grep client-key-data /etc/kubernetes/admin.conf | awk '{{print $2}}' | base64 -d > /run/admin.key \
             && cat > /run/readyz <<'EOF'\n{READYZ}EOF\nchmod +x /run/readyz"
        ),
    );

    // /readyz with the admin certificate, verified by the cluster CA
    // against the master's address: the apiserver cert's SANs.
    wait_until(
        &sandbox,
        "m1",
        "apiserver ready for the admin identity",
        "[ \"$(/run/readyz)\" = 200 ]",
        20,
    );
    assert_eq!(stdout(&sandbox.ssh("m1", "cat /run/readyz.body")), "ok");
    // keepalived's check of the local apiserver (templates/keepalived.conf):
    // 127.0.0.1 is not among the certificate's SANs, "kubernetes" is.
    let local = "kubectl --kubeconfig=/etc/kubernetes/admin.conf --server=https://127.0.0.1:6443 \
                 --request-timeout=3s get --raw=/readyz";
    assert_eq!(
        stdout(&sandbox.ssh(
            "m1",
            &local.replace("--request", "--tls-server-name=kubernetes --request")
        )),
        "ok"
    );
    let wrong_name = sandbox.ssh_output("m1", local);
    assert_eq!(wrong_name.status.code(), Some(1));
    assert!(
        stderr(&wrong_name).contains("x509: certificate is not valid for 127.0.0.1"),
        "{}",
        stderr(&wrong_name)
    );
    // No client certificate, or one from another CA (etcd's): refused in
    // the TLS handshake, no HTTP answer at all.
    for client in [
        "",
        "--cert /etc/kubernetes/pki/etcd/healthcheck-client.crt --key /etc/kubernetes/pki/etcd/healthcheck-client.key",
    ] {
        let refused = sandbox.ssh_output(
            "m1",
            &format!(
                "curl -sS -o /dev/null -w '%{{http_code}}' --max-time 3 --cacert /etc/kubernetes/pki/ca.crt \
                 {client} https://{MASTER}:6443/readyz"
            ),
        );
        assert!(
            !refused.status.success() && stdout(&refused) == "000",
            "the apiserver answered a client with {client:?}: {} {}",
            stdout(&refused),
            stderr(&refused)
        );
    }
    assert_eq!(
        stdout(&sandbox.ssh("m1", "curl -sS http://127.0.0.1:10248/healthz")),
        "ok",
        "kubelet healthz"
    );
    // Controller-manager and scheduler are healthy once their kubeconfigs
    // reach the apiserver.
    wait_until(
        &sandbox,
        "m1",
        "controller-manager and scheduler healthy",
        "[ \"$(curl -sk https://127.0.0.1:10257/healthz)\" = ok ] \
         && [ \"$(curl -sk https://127.0.0.1:10259/healthz)\" = ok ]",
        10,
    );

    // Readiness follows etcd.
    sandbox.ssh("m1", "systemctl stop etcd");
    wait_until(
        &sandbox,
        "m1",
        "apiserver not ready without etcd",
        "[ \"$(/run/readyz)\" = 500 ]",
        5,
    );
    assert!(
        stdout(&sandbox.ssh("m1", "cat /run/readyz.body")).contains("etcd"),
        "readyz does not name etcd"
    );
    sandbox.ssh("m1", "systemctl start etcd");
    wait_until(
        &sandbox,
        "m1",
        "apiserver ready again with etcd back",
        "[ \"$(/run/readyz)\" = 200 ]",
        15,
    );

    // kubectl with admin.conf: its group has no rights until the addon RBAC
    // binds it, applied by a system:masters identity (super-admin.conf,
    // which stays in the PKI store; the sandbox host sees this machine's
    // /tmp).
    sandbox.ssh("m1", &format!("cat > /run/demo.yaml <<'EOF'\n{DEMO}EOF"));
    let apply = format!("{ADMIN} apply --server-side --field-manager=ocfk8s -f /run/demo.yaml");
    let forbidden = sandbox.ssh_output("m1", &apply);
    assert!(!forbidden.status.success(), "{}", stdout(&forbidden));
    assert!(
        stderr(&forbidden).contains(
            "Error from server (Forbidden): namespaces \"demo\" is forbidden: User \"kubernetes-admin\""
        ),
        "{}",
        stderr(&forbidden)
    );
    let super_admin = sandbox.dir.path().join("pki/super-admin.conf");
    sandbox.ssh(
        "m1",
        &format!(
            "kubectl --kubeconfig={} apply --server-side --force-conflicts -f /etc/kubernetes/addons/rbac.yaml",
            super_admin.display()
        ),
    );
    assert_eq!(
        stdout(&sandbox.ssh("m1", &apply)),
        "namespace/demo serverside-applied\nconfigmap/greeting serverside-applied\n\
         daemonset.apps/echo serverside-applied"
    );
    let got = stdout(&sandbox.ssh(
        "m1",
        &format!("{ADMIN} get configmap greeting -n demo -o json"),
    ));
    let got: serde_json::Value = serde_json::from_str(&got).expect("kubectl get -o json");
    assert_eq!(got["data"]["hello"], "world", "{got}");
    assert_eq!(got["metadata"]["managedFields"][0]["manager"], "ocfk8s");
    let missing = sandbox.ssh_output("m1", &format!("{ADMIN} get configmap greeting -n default"));
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("(NotFound)"),
        "{}",
        stderr(&missing)
    );
    // The objects live in etcd, not in the stand-in.
    let keys = stdout(&sandbox.ssh(
        "m1",
        "etcdctl --endpoints=https://127.0.0.1:2379 --cacert=/etc/kubernetes/pki/etcd/ca.crt \
         --cert=/etc/kubernetes/pki/apiserver-etcd-client.crt --key=/etc/kubernetes/pki/apiserver-etcd-client.key \
         get --prefix --keys-only /registry/",
    ));
    assert!(
        keys.contains("/registry/ocfk8s-standin/configmap/demo/greeting"),
        "{keys}"
    );
    // Every invocation is recorded with its arguments.
    let log = stdout(&sandbox.ssh("m1", "cat /var/log/standins/kubectl.log"));
    let recorded: Vec<serde_json::Value> = log
        .lines()
        .map(|line| serde_json::from_str(line).expect("kubectl.log line"))
        .collect();
    let argv: Vec<&str> = apply.split(' ').skip(1).collect();
    let applies: Vec<i64> = recorded
        .iter()
        .filter(|entry| entry["argv"] == serde_json::json!(argv))
        .map(|entry| entry["exit"].as_i64().expect("exit"))
        .collect();
    assert_eq!(applies, [1, 0], "{log}");

    // A kubeconfig whose CA is not the one that signed the apiserver's
    // certificate (the front-proxy CA) fails like kubectl.
    let wrong_ca = sandbox.ssh_output(
        "m1",
        "sed \"s|certificate-authority-data: .*|certificate-authority-data: $(base64 -w0 /etc/kubernetes/pki/front-proxy-ca.crt)|\" \
           /etc/kubernetes/admin.conf > /run/wrong-ca.conf \
         && kubectl --kubeconfig=/run/wrong-ca.conf get nodes",
    );
    assert_eq!(wrong_ca.status.code(), Some(1), "{}", stdout(&wrong_ca));
    assert!(
        stderr(&wrong_ca).contains("x509: certificate signed by unknown authority"),
        "{}",
        stderr(&wrong_ca)
    );

    // The worker's kubelet and kube-proxy reach the apiserver with their own
    // identities; the kubelet registers its Node.
    sandbox.ssh("w1", "systemctl start kubelet kube-proxy");
    wait_until(
        &sandbox,
        "w1",
        "kube-proxy connected",
        "grep -q '\"connected\": true' /run/standins/kube-proxy.status 2>/dev/null",
        15,
    );
    let status: serde_json::Value = serde_json::from_str(&stdout(
        &sandbox.ssh("w1", "cat /run/standins/kube-proxy.status"),
    ))
    .expect("kube-proxy status");
    assert_eq!(status["user"], "system:kube-proxy", "{status}");
    assert_eq!(
        status["server"],
        format!("https://{MASTER}:6443"),
        "{status}"
    );
    assert_eq!(
        stdout(&sandbox.ssh(
            "w1",
            "curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:10256/healthz"
        )),
        "200"
    );
    wait_until(
        &sandbox,
        "m1",
        "Node w1 registered",
        &format!("{ADMIN} get node w1 >/dev/null 2>&1"),
        10,
    );
    assert_eq!(
        stdout(&sandbox.ssh(
            "m1",
            &format!("{ADMIN} get node w1 -o jsonpath='{{.status.addresses[0].address}}'")
        )),
        WORKER
    );

    // Removing the apiserver's manifest stops it; putting it back starts it.
    sandbox.ssh(
        "m1",
        "mv /etc/kubernetes/manifests/kube-apiserver.yaml /run/",
    );
    wait_until(
        &sandbox,
        "m1",
        "apiserver gone with its manifest",
        "[ \"$(/run/readyz)\" = 000 ]",
        5,
    );
    sandbox.ssh(
        "m1",
        "mv /run/kube-apiserver.yaml /etc/kubernetes/manifests/",
    );
    wait_until(
        &sandbox,
        "m1",
        "apiserver back with its manifest",
        "[ \"$(/run/readyz)\" = 200 ]",
        5,
    );

    // A changed manifest restarts the pod. An etcd client identity etcd
    // does not trust (the kubelet-client pair, from the cluster CA): the
    // apiserver serves but is never ready.
    sandbox.ssh(
        "m1",
        "cp /etc/kubernetes/manifests/kube-apiserver.yaml /run/kube-apiserver.good \
         && sed -i 's|--etcd-certfile=.*|--etcd-certfile=/etc/kubernetes/pki/apiserver-kubelet-client.crt|; \
                    s|--etcd-keyfile=.*|--etcd-keyfile=/etc/kubernetes/pki/apiserver-kubelet-client.key|' \
              /etc/kubernetes/manifests/kube-apiserver.yaml",
    );
    wait_until(
        &sandbox,
        "m1",
        "apiserver not ready with an etcd identity from the wrong CA",
        "[ \"$(/run/readyz)\" = 500 ]",
        5,
    );
    assert!(
        stdout(&sandbox.ssh("m1", "cat /run/readyz.body")).contains("etcd failed"),
        "readyz does not name etcd"
    );
    // A serving certificate that is not there: the pod crashes, nothing
    // serves.
    sandbox.ssh(
        "m1",
        "sed -i 's|--tls-cert-file=.*|--tls-cert-file=/etc/kubernetes/pki/apiserver-missing.crt|' \
           /etc/kubernetes/manifests/kube-apiserver.yaml",
    );
    wait_until(
        &sandbox,
        "m1",
        "apiserver crashed on a missing certificate",
        "grep -q apiserver-missing.crt /run/standins/pods/kube-apiserver.json && [ \"$(/run/readyz)\" = 000 ]",
        5,
    );
    assert!(
        stdout(&sandbox.ssh("m1", "cat /run/standins/pods/kube-apiserver.json"))
            .contains("CrashLoopBackOff"),
        "the pod is not reported crashed"
    );
    sandbox.ssh(
        "m1",
        "cp /run/kube-apiserver.good /etc/kubernetes/manifests/kube-apiserver.yaml",
    );
    wait_until(
        &sandbox,
        "m1",
        "apiserver ready with its rendered manifest again",
        "[ \"$(/run/readyz)\" = 200 ]",
        5,
    );
    eprintln!("stand-ins checked in {:?}", started.elapsed());
}
