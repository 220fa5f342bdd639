//! `ocfk8s status` on sandbox hosts with real etcd: it reads etcd's members
//! through etcdctl on a master over SSH, compares them with the inventory,
//! names what is unhealthy, and exits 1 until everything is healthy.

mod sandbox;

use std::time::{Duration, Instant};

use sandbox::Sandbox;

#[path = "common/mod.rs"]
mod common;

use common::{ocfk8s, Run};

fn status(sandbox: &Sandbox, inventory: &std::path::Path) -> (Run, serde_json::Value) {
    let run: Run = ocfk8s()
        .current_dir(sandbox.dir.path())
        .args([
            "-i",
            inventory.to_str().expect("utf-8"),
            "status",
            "-o",
            "json",
        ])
        .output()
        .expect("run ocfk8s")
        .into();
    let json = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|error| panic!("{error}: {}\n{}", run.stdout, run.stderr));
    (run, json)
}

/// Poll `status` until `done` holds for its JSON, or fail after `limit`.
fn wait_for(
    sandbox: &Sandbox,
    inventory: &std::path::Path,
    what: &str,
    limit: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> (Run, serde_json::Value) {
    let started = Instant::now();
    loop {
        let (run, json) = status(sandbox, inventory);
        if done(&json) {
            return (run, json);
        }
        assert!(
            started.elapsed() < limit,
            "{what}: not within {limit:?}:\n{}",
            serde_json::to_string_pretty(&json).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn members(json: &serde_json::Value) -> Vec<serde_json::Value> {
    json["report"]["etcd"]["Ok"]["members"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn healthy_members(json: &serde_json::Value) -> usize {
    members(json)
        .iter()
        .filter(|member| member["healthy"] == true)
        .count()
}

#[test]
fn status_reports_hosts_etcd_members_and_what_is_unhealthy() {
    let sandbox = Sandbox::up(203, 3, 1);
    let inventory = sandbox.inventory("inventory.toml", "", "", "");
    let path = inventory.to_str().expect("utf-8");
    for args in [
        vec!["-i", path, "--accept-new-host-keys", "pki", "generate"],
        vec![
            "-i",
            path,
            "--no-progress",
            "bootstrap",
            "--skip-phases",
            "etcd,control-plane,nodes,lb,addons",
        ],
    ] {
        let run: Run = ocfk8s()
            .current_dir(sandbox.dir.path())
            .args(&args)
            .output()
            .expect("run")
            .into();
        assert_eq!(run.status, 0, "{args:?}: {}", run.stderr);
    }

    // Files only: etcd is not running, so status cannot ask it and says so.
    let (run, json) = status(&sandbox, &inventory);
    assert_eq!(run.status, 1, "{}", run.stderr);
    assert_eq!(json["healthy"], false);
    assert!(json["report"]["etcd"]["Err"].is_string(), "{json}");
    assert!(
        run.stderr.contains("m1: kubelet.service is inactive"),
        "{}",
        run.stderr
    );
    for host in json["report"]["hosts"].as_array().expect("hosts") {
        assert!(host["unreachable"].is_null(), "{host}");
    }

    // Real etcd on the three masters, from the rendered unit.
    let starts: Vec<_> = ["m1", "m2", "m3"]
        .into_iter()
        .map(|name| {
            let address = sandbox.host(name).address.clone();
            let state = sandbox.state();
            std::thread::spawn(move || {
                std::process::Command::new("ssh")
                    .arg("-F")
                    .arg("/dev/null")
                    .arg("-i")
                    .arg(state.join("id_ed25519"))
                    .arg("-o")
                    .arg(format!(
                        "UserKnownHostsFile={}",
                        state.join("known_hosts").display()
                    ))
                    .args(["-o", "BatchMode=yes", &format!("root@{address}")])
                    .arg("systemctl start etcd")
                    .output()
                    .expect("ssh")
            })
        })
        .collect();
    for start in starts {
        let output = start.join().expect("thread");
        assert!(output.status.success(), "{output:?}");
    }
    let (run, json) = wait_for(
        &sandbox,
        &inventory,
        "3 healthy members",
        Duration::from_secs(60),
        |json| healthy_members(json) == 3,
    );
    let members = members(&json);
    let mut names: Vec<&str> = members
        .iter()
        .map(|member| member["name"].as_str().expect("name"))
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["m1", "m2", "m3"]);
    assert_eq!(
        members
            .iter()
            .filter(|member| member["leader"] == true)
            .count(),
        1,
        "exactly one leader: {json}"
    );
    for member in &members {
        assert!(member["raft_index"].as_u64().expect("raft index") > 0);
        assert!(member["db_size"].as_u64().expect("db size") > 0);
        assert_eq!(member["in_inventory"], true);
    }
    assert_eq!(
        json["report"]["etcd"]["Ok"]["missing"],
        serde_json::json!([])
    );
    // etcd is fine, the rest of the cluster is not started: still exit 1.
    assert_eq!(run.status, 1);
    assert!(!run.stderr.contains("etcd:"), "{}", run.stderr);

    // The text form names the members and the leader.
    let text: Run = ocfk8s()
        .current_dir(sandbox.dir.path())
        .args(["-i", path, "status"])
        .output()
        .expect("run")
        .into();
    assert!(text.stdout.contains("etcd: 3 member(s)"), "{}", text.stdout);
    assert!(text.stdout.contains("leader"), "{}", text.stdout);
    assert!(text.stdout.contains("NOT HEALTHY"), "{}", text.stdout);

    // A stopped member is named.
    sandbox.ssh("m2", "systemctl stop etcd");
    let (run, _) = wait_for(
        &sandbox,
        &inventory,
        "m2 unhealthy",
        Duration::from_secs(30),
        |json| healthy_members(json) == 2,
    );
    assert!(
        run.stderr.contains("etcd: member m2 is not healthy"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("m2: etcd.service is inactive"),
        "{}",
        run.stderr
    );

    // An inventory listing a master that is not a member is flagged, and an
    // unreachable host is reported rather than fatal.
    let grown = sandbox.inventory(
        "grown.toml",
        "",
        "",
        "\n[[master]]\nname = \"m9\"\naddress = \"10.213.203.99\"\n",
    );
    let (run, json) = status(&sandbox, &grown);
    assert_eq!(run.status, 1);
    assert!(
        run.stderr
            .contains("etcd: m9 is a master in the inventory but not an etcd member"),
        "{}",
        run.stderr
    );
    let m9 = json["report"]["hosts"]
        .as_array()
        .expect("hosts")
        .iter()
        .find(|host| host["name"] == "m9")
        .cloned()
        .expect("m9");
    assert!(m9["unreachable"].is_string(), "{m9}");
}
