//! The sandbox itself: hosts are isolated copies of this machine with their
//! own name, /run, overlays and sshd, and the systemctl stand-in runs the
//! real units of Debian's nginx and etcd.

mod sandbox;

use std::process::Command;

use sandbox::Sandbox;

fn stdout(output: std::process::Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

#[test]
fn sandbox_hosts_are_isolated_and_run_real_units_through_the_systemctl_stand_in() {
    let sandbox = Sandbox::up(202, 2, 0);

    // Own hostname, a fresh /run, copy-on-write /etc.
    assert_eq!(stdout(sandbox.ssh("m1", "hostname")), "m1");
    assert_eq!(stdout(sandbox.ssh("m2", "hostname")), "m2");
    assert_eq!(stdout(sandbox.ssh("m1", "stat -f -c %T /run")), "tmpfs");
    sandbox.ssh("m1", "echo only-on-m1 > /etc/ocfk8s-sandbox-probe");
    assert!(
        !std::path::Path::new("/etc/ocfk8s-sandbox-probe").exists(),
        "a host wrote through to the machine"
    );
    assert_eq!(
        stdout(sandbox.ssh(
            "m2",
            "cat /etc/ocfk8s-sandbox-probe 2>/dev/null || echo absent"
        )),
        "absent"
    );
    // No route off the bridge.
    assert_eq!(
        stdout(sandbox.ssh("m1", "ip route | grep -c default || true")),
        "0"
    );

    // nginx: Type=forking with PIDFile, ExecStartPre, ExecReload.
    let http =
        "exec 3<>/dev/tcp/127.0.0.1/80; printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3; head -n 1 <&3";
    sandbox.ssh("m1", "systemctl start nginx");
    assert_eq!(
        stdout(sandbox.ssh("m1", "systemctl is-active nginx")),
        "active"
    );
    assert_eq!(
        stdout(sandbox.ssh("m1", "systemctl show -p ActiveState nginx")),
        "ActiveState=active"
    );
    assert!(stdout(sandbox.ssh("m1", &format!("bash -c \"{http}\""))).starts_with("HTTP/1.1 200"));
    let pid = stdout(sandbox.ssh("m1", "cat /run/nginx.pid"));
    sandbox.ssh("m1", "systemctl reload nginx");
    assert_eq!(
        stdout(sandbox.ssh("m1", "cat /run/nginx.pid")),
        pid,
        "reload replaced the master"
    );
    sandbox.ssh("m1", "systemctl restart nginx");
    assert_ne!(
        stdout(sandbox.ssh("m1", "cat /run/nginx.pid")),
        pid,
        "restart kept the master"
    );
    assert_eq!(
        stdout(sandbox.ssh("m2", "systemctl is-active nginx || true")),
        "inactive"
    );
    sandbox.ssh("m1", "systemctl stop nginx");
    assert_eq!(
        stdout(sandbox.ssh("m1", "systemctl is-active nginx; echo status=$?")),
        "inactive\nstatus=3"
    );

    // etcd: User=, Environment= with %H, an optional EnvironmentFile.
    sandbox.ssh("m2", "systemctl start etcd");
    let health = stdout(sandbox.ssh(
        "m2",
        "for i in $(seq 50); do etcdctl --endpoints=http://127.0.0.1:2379 member list 2>/dev/null && break; sleep 0.2; done",
    ));
    assert!(
        health.contains(", m2, "),
        "etcd's name is not the hostname: {health}"
    );
    // The unit's own process: hosts share this machine's process table,
    // where other sandboxes' etcd may run too.
    assert_eq!(
        stdout(sandbox.ssh(
            "m2",
            "ps -o user= -p $(systemctl show -p MainPID --value etcd)"
        )),
        "etcd"
    );

    // A unit with an EnvironmentFile and specifiers.
    sandbox.ssh(
        "m1",
        "printf 'GREETING=hello\\n' > /etc/default/greeter && \
         printf '[Service]\\nEnvironmentFile=/etc/default/greeter\\nExecStart=/bin/sh -c \"echo $GREETING from %%n > /run/greeter.out; exec sleep 600\"\\n' \
           > /etc/systemd/system/greeter.service && systemctl daemon-reload",
    );
    assert_eq!(
        stdout(sandbox.ssh("m1", "systemctl is-enabled greeter; echo status=$?")),
        "disabled\nstatus=1"
    );
    sandbox.ssh("m1", "systemctl enable --now greeter");
    assert_eq!(
        stdout(sandbox.ssh(
            "m1",
            "systemctl is-enabled greeter && systemctl is-active greeter"
        )),
        "enabled\nactive"
    );
    assert_eq!(
        stdout(sandbox.ssh("m1", "sleep 0.2; cat /run/greeter.out")),
        "hello from greeter.service"
    );
    sandbox.ssh("m1", "systemctl disable --now greeter");
    assert_eq!(
        stdout(sandbox.ssh(
            "m1",
            "systemctl is-enabled greeter; systemctl is-active greeter; echo status=$?"
        )),
        "disabled\ninactive\nstatus=3"
    );

    // Type=notify runs as a simple service; one whose process dies
    // unasked is failed, as systemd reports it.
    sandbox.ssh(
        "m1",
        "printf '[Service]\\nType=notify\\nExecStart=/bin/sh -c \"sleep 0.5; exit 3\"\\n' \
           > /etc/systemd/system/brief.service && systemctl start brief && systemctl is-active brief",
    );
    assert_eq!(
        stdout(sandbox.ssh(
            "m1",
            "for i in $(seq 30); do systemctl is-active -q brief || break; sleep 0.1; done; \
             systemctl is-active brief; echo status=$?"
        )),
        "failed\nstatus=3"
    );

    // Down removes the bridge and the namespaces.
    let bridge = sandbox.bridge.clone();
    let netns = sandbox.netns("m1");
    drop(sandbox);
    let link = Command::new("ip")
        .args(["link", "show", &bridge])
        .output()
        .expect("ip");
    assert!(!link.status.success(), "the bridge {bridge} survived");
    let namespaces = stdout(
        Command::new("ip")
            .args(["netns", "list"])
            .output()
            .expect("ip"),
    );
    assert!(!namespaces.contains(&netns), "{namespaces}");
}
