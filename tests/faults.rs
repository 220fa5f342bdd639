//! Faults, through the real binary: sshd killed on a host mid-push, a
//! black-holed host, a host whose target filesystem is full, two runs at
//! once (on sandbox hosts, subnet 218, files-only runs), and the local disk
//! full under the PKI store during `pki generate` (a tmpfs in a private
//! mount namespace). In every case the run fails naming the host and step,
//! leaves every file whole and no temporary behind, and the next run
//! converges. An unreachable (refusing) host and SIGKILLed runs are in
//! `sandbox_e2e`; killed `pki generate` runs in `pki_store`.

mod common;
mod sandbox;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{ocfk8s, Run, BASE};
use sandbox::{Held, Sandbox};

const SUBNET: u8 = 218;
const FILES_ONLY: &str = "--skip-phases=install,etcd,control-plane,nodes,lb,addons";
/// What a host's temporaries carry in their names (src/remote/write.rs).
const TEMPORARY_MARKER: &str = ".ocfk8s-tmp-";

/// What every host should hold, per host, per path.
type Desired = BTreeMap<String, BTreeMap<String, Held>>;

struct Faults {
    sandbox: Sandbox,
}

impl Faults {
    /// The inventory for `domain` (which changes kubelet's config on every
    /// host), with `connect_timeout_secs` instead of the sandbox's 3.
    fn inventory(&self, file: &str, domain: &str, connect_timeout_secs: u32) -> PathBuf {
        let path = self
            .sandbox
            .inventory(file, &format!("cluster_domain = \"{domain}\""), "", "");
        let text = std::fs::read_to_string(&path).expect("inventory");
        let text = text.replace(
            "connect_timeout_secs = 3\n",
            &format!("connect_timeout_secs = {connect_timeout_secs}\n"),
        );
        std::fs::write(&path, text).expect("inventory");
        path
    }

    fn command(&self, inventory: &Path, args: &[&str]) -> Command {
        let mut command = ocfk8s();
        command
            .current_dir(self.sandbox.dir.path())
            .arg("-i")
            .arg(inventory)
            .arg("--no-progress")
            .args(args);
        command
    }

    fn run(&self, inventory: &Path, args: &[&str]) -> (Run, Duration) {
        let started = Instant::now();
        let run: Run = self
            .command(inventory, args)
            .output()
            .expect("run ocfk8s")
            .into();
        let took = started.elapsed();
        eprintln!("{args:?}: exit {} in {took:?}", run.status);
        no_secrets(&run, args);
        (run, took)
    }

    /// The files `render --out` gives every host for `inventory`.
    fn desire(&self, inventory: &Path) -> Desired {
        let out = self.sandbox.dir.path().join("rendered");
        let _ = std::fs::remove_dir_all(&out);
        let (render, _) = self.run(inventory, &["render", "--out", &out.display().to_string()]);
        assert_status(&render, 0, "render");
        let mut desired = Desired::new();
        for host in &self.sandbox.hosts {
            let root = out.join(&host.name);
            let mut files = BTreeMap::new();
            read_tree(&root, &root, &mut files);
            assert!(!files.is_empty(), "nothing rendered for {}", host.name);
            desired.insert(host.name.clone(), files);
        }
        desired
    }

    /// What a host holds in its overlays, minus the test's own fixtures.
    fn held(&self, name: &str) -> BTreeMap<String, Held> {
        let mut files = self.sandbox.files(name);
        files.remove(SLOW_TAR);
        files
    }

    fn assert_holds(&self, name: &str, desired: &Desired) {
        let held = self.held(name);
        let expected = &desired[name];
        assert_eq!(
            held.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "files on {name}"
        );
        for (path, file) in expected {
            assert!(
                held[path] == *file,
                "{name}:{path} is not the rendered file"
            );
        }
    }

    /// The host's temporaries, wherever they are (its overlays and any
    /// filesystem mounted below them), read over ssh.
    fn temporaries_on(&self, name: &str) -> Vec<String> {
        let found = self.sandbox.ssh(
            name,
            &format!("find /etc /var /usr/local /opt -name '*{TEMPORARY_MARKER}*'"),
        );
        String::from_utf8_lossy(&found.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    }

    /// sha256 of each of `paths` on the host over ssh (`None`: absent).
    fn hashes_on(&self, name: &str, paths: &[&String]) -> BTreeMap<String, Option<String>> {
        let mut script = String::new();
        for path in paths {
            script.push_str(&format!(
                "if [ -f '{path}' ]; then sha256sum '{path}'; else echo \"absent {path}\"; fi\n"
            ));
        }
        let output = self.sandbox.ssh(name, &script);
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .map(|line| match line.strip_prefix("absent ") {
                Some(path) => (path.to_string(), None),
                None => {
                    let (hash, path) = line.split_once("  ").expect("sha256sum line");
                    (path.to_string(), Some(hash.to_string()))
                }
            })
            .collect()
    }

    /// The processes in a host's network namespace.
    fn pids(&self, name: &str) -> Vec<u32> {
        let output = Command::new("ip")
            .args(["netns", "pids", &self.sandbox.netns(name)])
            .output()
            .expect("ip netns pids");
        String::from_utf8_lossy(&output.stdout)
            .split_whitespace()
            .filter_map(|pid| pid.parse().ok())
            .collect()
    }

    /// SIGKILL every sshd of a host (the listener and each session's),
    /// found through its network namespace, never by name machine-wide:
    /// sandbox hosts share this machine's PID namespace. What the sessions
    /// started (the shell running a push) is left running, as it would be.
    fn kill_sshd(&self, name: &str) -> usize {
        let mut killed = 0;
        for pid in self.pids(name) {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            if comm.trim().starts_with("sshd") {
                let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
                killed += 1;
            }
        }
        killed
    }

    /// Start a host's sshd again the way `sandbox/sandbox up` does (its
    /// mount namespace died with its last process; the overlays' upper
    /// folders hold what it had): fresh namespaces over the same folders,
    /// same host key. Waits until it listens.
    fn restart_sshd(&self, name: &str) {
        wait_until(&format!("{name}'s last process to end"), 30, || {
            self.pids(name).is_empty()
        });
        let here = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sandbox");
        let dir = self.sandbox.state().join("hosts").join(name);
        let log = std::fs::File::create(dir.join("host-restart.log")).expect("log");
        let status = Command::new("setsid")
            .args(["-f", "ip", "netns", "exec", &self.sandbox.netns(name)])
            .args([
                "unshare",
                "--mount",
                "--uts",
                "--propagation",
                "private",
                "--",
            ])
            .arg(here.join("host-init"))
            .arg(&dir)
            .arg(name)
            .arg(&self.sandbox.host(name).address)
            .arg(self.sandbox.state().join("id_ed25519.pub"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .status()
            .expect("start host-init");
        assert!(status.success(), "host-init for {name}: {status}");
        let address: std::net::SocketAddr = format!("{}:22", self.sandbox.host(name).address)
            .parse()
            .expect("address");
        wait_until(&format!("sshd on {name} to listen"), 20, || {
            std::net::TcpStream::connect_timeout(&address, Duration::from_millis(300)).is_ok()
        });
    }
}

/// A `tar` in a host's own /usr/local/bin (ahead of /usr/bin in root's
/// PATH) that pauses once it has unpacked: the push's write script unpacks
/// every changed file through it into temporaries, so the push stays
/// between its unpacking and its renames long enough to be cut there.
const SLOW_TAR: &str = "/usr/local/bin/tar";

/// Runs built from `Output` are checked by `common`; those read line by
/// line are checked here the same way.
fn no_secrets(run: &Run, args: &[&str]) {
    common::assert_no_key_material(&format!("output of {args:?}"), &run.stdout);
    common::assert_no_key_material(&format!("error output of {args:?}"), &run.stderr);
}

fn assert_status(run: &Run, status: i32, what: &str) {
    assert_eq!(
        run.status, status,
        "{what}\nstdout:\n{}\nstderr:\n{}",
        run.stdout, run.stderr
    );
}

fn wait_until(what: &str, seconds: u64, mut done: impl FnMut() -> bool) {
    let started = Instant::now();
    while !done() {
        assert!(
            started.elapsed() < Duration::from_secs(seconds),
            "waited {seconds}s for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn read_tree(base: &Path, dir: &Path, files: &mut BTreeMap<String, Held>) {
    for entry in std::fs::read_dir(dir).expect("read tree").flatten() {
        let path = entry.path();
        if path.is_dir() {
            read_tree(base, &path, files);
        } else {
            let relative = path.strip_prefix(base).expect("inside");
            let mode = std::fs::metadata(&path).expect("stat").permissions().mode() & 0o7777;
            files.insert(
                format!("/{}", relative.display()),
                Held {
                    contents: std::fs::read(&path).expect("read"),
                    mode,
                    uid: 0,
                },
            );
        }
    }
}

fn sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    format!("{:x}", sha2::Sha256::digest(bytes))
}

/// A run in the background whose error output arrives line by line.
struct Spawned {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    started: Instant,
}

impl Spawned {
    fn start(mut command: Command) -> Spawned {
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn ocfk8s");
        let stderr = child.stderr.take().expect("stderr");
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Spawned {
            child,
            lines,
            seen: Vec::new(),
            started: Instant::now(),
        }
    }

    /// Wait for a line containing `text`.
    fn wait_for(&mut self, text: &str, seconds: u64) -> String {
        let deadline = Instant::now() + Duration::from_secs(seconds);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(text) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line with {text:?} within {seconds}s:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Wait for the end; its output (stderr: every line).
    fn finish(mut self) -> (Run, Duration) {
        let mut stdout = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            use std::io::Read;
            let _ = out.read_to_string(&mut stdout);
        }
        let status = self.child.wait().expect("wait");
        let took = self.started.elapsed();
        self.seen.extend(self.lines.iter());
        let run = Run {
            status: status.code().unwrap_or(-1),
            stdout,
            stderr: self.seen.join("\n"),
        };
        no_secrets(&run, &[]);
        (run, took)
    }
}

#[test]
fn sshd_killed_black_hole_full_disk_and_a_concurrent_run_fail_cleanly_and_converge() {
    let begun = Instant::now();
    let faults = Faults {
        sandbox: Sandbox::up(SUBNET, 1, 3),
    };
    eprintln!("sandbox up: {:?}", begun.elapsed());
    let inventory = faults.inventory("inventory.toml", "cluster.local", 3);
    let (generate, _) = faults.run(&inventory, &["pki", "generate"]);
    assert_status(&generate, 0, "pki generate");
    let first = faults.desire(&inventory);

    // 1. sshd killed on w2 while its first push is being written.
    faults.sandbox.ssh(
        "w2",
        &format!(
            "printf '#!/bin/sh\\n/usr/bin/tar \"$@\" || exit\\nsleep 2\\n' > {SLOW_TAR} \
             && chmod 0755 {SLOW_TAR}"
        ),
    );
    let push = Spawned::start(faults.command(&inventory, &["bootstrap", FILES_ONLY]));
    wait_until("w2's push to write its first temporary", 30, || {
        faults
            .sandbox
            .files("w2")
            .keys()
            .any(|path| path.contains(TEMPORARY_MARKER))
    });
    let cut_at = push.started.elapsed();
    let killed = faults.kill_sshd("w2");
    assert!(killed >= 2, "the listener and the session's sshd: {killed}");
    let (push, took) = push.finish();
    eprintln!("sshd on w2 killed {cut_at:?} into the push; the run ended after {took:?}");
    eprintln!("{}", push.stderr);
    assert_status(&push, 1, "bootstrap with sshd killed on w2");
    assert!(
        push.stderr.contains("step `files` failed on 1 host (w2)")
            && push.stderr.contains("w2: files: ")
            && push.stderr.contains("the SSH connection was lost"),
        "{}",
        push.stderr
    );
    // The other hosts finished the step: a failing host stops no one else.
    for name in ["m1", "w1", "w3"] {
        faults.assert_holds(name, &first);
    }
    // The write script already on w2 ends on its own (the lost connection
    // neither stops it half-way nor leaves its temporaries); each file is
    // whole: absent (before the renames) or the rendered one.
    wait_until("the push's shell on w2 to end", 30, || {
        faults.pids("w2").is_empty()
    });
    let on_w2 = faults.held("w2");
    for (path, held) in &on_w2 {
        assert!(
            !path.contains(TEMPORARY_MARKER),
            "temporary left on w2: {path}"
        );
        assert!(
            first["w2"].get(path) == Some(held),
            "w2:{path} is not whole after sshd was killed"
        );
    }
    eprintln!(
        "w2 after the kill: {} of {} files in place",
        on_w2.len(),
        first["w2"].len()
    );
    std::fs::remove_file(
        faults
            .sandbox
            .state()
            .join("hosts/w2/upper/usr-local/bin/tar"),
    )
    .expect("remove the slow tar");
    let restarted = Instant::now();
    faults.restart_sshd("w2");
    eprintln!("sshd on w2 back in {:?}", restarted.elapsed());
    let (rerun, _) = faults.run(&inventory, &["bootstrap", FILES_ONLY]);
    assert_status(&rerun, 0, "bootstrap once sshd is back");
    for host in &faults.sandbox.hosts {
        faults.assert_holds(&host.name, &first);
    }
    let (plan, _) = faults.run(&inventory, &["plan", FILES_ONLY, "--exit-code"]);
    assert_status(&plan, 0, "plan after the re-run");

    // 3. /etc/kubernetes on w1 is a full filesystem, and every file changes
    // (a new cluster domain changes kubelet's config everywhere; the
    // tmpfs hides what w1 had there, so all of it is to write again).
    let inventory = faults.inventory("inventory.toml", "faults.local", 3);
    let second = faults.desire(&inventory);
    let _ = faults.sandbox.ssh_output(
        "w1",
        "mount -t tmpfs -o size=64k tmpfs /etc/kubernetes \
         && dd if=/dev/zero of=/etc/kubernetes/fill bs=1k count=64",
    );
    let (full, took) = faults.run(&inventory, &["bootstrap", FILES_ONLY]);
    eprintln!("push to a full /etc/kubernetes: {took:?}");
    eprintln!("{}", full.stderr);
    assert_status(&full, 1, "bootstrap onto a full filesystem");
    assert!(
        full.stderr.contains("step `files` failed on 1 host (w1)")
            && full.stderr.contains("w1: files: ")
            && full.stderr.contains("No space left on device")
            && full.stderr.contains("cannot write /etc/kubernetes/")
            && full.stderr.contains("no file was changed"),
        "{}",
        full.stderr
    );
    for name in ["m1", "w2", "w3"] {
        faults.assert_holds(name, &second);
    }
    assert_eq!(faults.temporaries_on("w1"), Vec::<String>::new());
    let paths: Vec<&String> = second["w1"].keys().collect();
    for (path, hash) in faults.hashes_on("w1", &paths) {
        let old = first["w1"].get(&path).map(|held| sha256(&held.contents));
        match hash {
            // Nothing of the failed batch was renamed into place.
            Some(hash) => assert_eq!(Some(hash), old, "w1:{path} changed"),
            None => assert!(path.starts_with("/etc/kubernetes/"), "w1:{path} vanished"),
        }
    }
    faults.sandbox.ssh("w1", "rm /etc/kubernetes/fill");
    let (rerun, _) = faults.run(&inventory, &["bootstrap", FILES_ONLY]);
    assert_status(&rerun, 0, "bootstrap once w1 has room");
    for (path, hash) in faults.hashes_on("w1", &paths) {
        assert_eq!(
            hash,
            Some(sha256(&second["w1"][&path].contents)),
            "w1:{path}"
        );
    }
    assert_eq!(faults.temporaries_on("w1"), Vec::<String>::new());
    let (plan, _) = faults.run(&inventory, &["plan", FILES_ONLY, "--exit-code"]);
    assert_status(&plan, 0, "plan once w1 has room");

    // 2. A black-holed host: w3 drops every packet it is sent (ARP still
    // answers, so the client waits on its SYNs, as for a firewalled host).
    let status = Command::new("ip")
        .args(["netns", "exec", &faults.sandbox.netns("w3")])
        .args(["iptables", "-A", "INPUT", "-j", "DROP"])
        .status()
        .expect("iptables");
    assert!(status.success(), "iptables in w3's namespace");
    let quick = faults.inventory("quick.toml", "faults.local", 2);
    let (plan, took) = faults.run(&quick, &["plan"]);
    eprintln!("{}", plan.stderr);
    assert_status(&plan, 1, "plan with a black-holed host");
    assert!(
        took < Duration::from_secs(15),
        "connect_timeout_secs = 2 not honoured: {took:?}"
    );
    assert!(
        plan.stderr.contains("w3: connect:") && plan.stderr.contains("timed out"),
        "{}",
        plan.stderr
    );

    // 5. Two runs at once: a bootstrap holds the run lock while it waits
    // on the black-holed w3; other writers are refused at once naming it,
    // `pki generate` waits for it, then finds the store up to date.
    let slow = faults.inventory("slow.toml", "faults.local", 6);
    let mut holder = Spawned::start(faults.command(&slow, &["-v", "bootstrap", FILES_ONLY]));
    holder.wait_for("holding the run lock", 10);
    let named = format!("pid {} ", holder.child.id());
    for args in [
        &["bootstrap", FILES_ONLY][..],
        &["add-worker", "w1"][..],
        &["rotate-certs"][..],
    ] {
        let (refused, took) = faults.run(&slow, args);
        eprintln!("{}", refused.stderr);
        assert_status(&refused, 1, &format!("{args:?} while a bootstrap runs"));
        assert!(
            took < Duration::from_secs(2),
            "{args:?} waited {took:?} for the lock"
        );
        assert!(
            refused.stderr.contains("another ocfk8s run holds the lock")
                && refused.stderr.contains(&named)
                && refused.stderr.contains("`ocfk8s bootstrap`"),
            "{args:?}:\n{}",
            refused.stderr
        );
    }
    let mut waiting = Spawned::start(faults.command(&slow, &["pki", "generate"]));
    let told = waiting.wait_for("waiting up to", 5);
    assert!(told.contains(&named), "{told}");
    let (held, holder_took) = holder.finish();
    assert_status(&held, 1, "the bootstrap holding the lock");
    let (generated, generate_took) = waiting.finish();
    eprintln!("{}", generated.stderr);
    assert_status(&generated, 0, "pki generate after waiting");
    assert!(
        generated.stdout.contains("up to date"),
        "{}",
        generated.stdout
    );
    eprintln!(
        "the holder ran {holder_took:?}; pki generate waited and ended after {generate_took:?}"
    );
    eprintln!("faults on sandbox hosts: {:?} in all", begun.elapsed());
}

/// A tmpfs of `size` over `folder`, in a private mount namespace held by a
/// shell that lives as long as the test (it ends when its stdin closes,
/// even if the test is killed): nothing leaks into this machine's mounts.
struct PrivateTmpfs {
    holder: Child,
    folder: PathBuf,
}

impl PrivateTmpfs {
    fn mount(folder: &Path, size: &str) -> PrivateTmpfs {
        std::fs::create_dir_all(folder).expect("mount point");
        let mut holder = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
            .arg(format!(
                "mount -t tmpfs -o size={size},mode=0755 tmpfs '{}' && echo ready && read _",
                folder.display()
            ))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("unshare");
        let mut ready = String::new();
        BufReader::new(holder.stdout.as_mut().expect("stdout"))
            .read_line(&mut ready)
            .expect("ready");
        assert_eq!(ready.trim(), "ready", "the tmpfs was not mounted");
        PrivateTmpfs {
            holder,
            folder: folder.to_path_buf(),
        }
    }

    /// `program` with `args` inside the namespace.
    fn command(&self, program: &Path) -> Command {
        let mut command = Command::new("nsenter");
        command
            .arg("-t")
            .arg(self.holder.id().to_string())
            .arg("-m")
            // Entering a mount namespace moves to its root: stay here.
            .arg(format!(
                "--wd={}",
                std::env::current_dir().expect("cwd").display()
            ))
            .arg("--")
            .arg(program);
        command
    }

    fn resize(&self, size: &str) {
        let status = self
            .command(Path::new("mount"))
            .args(["-o", &format!("remount,size={size}")])
            .arg(&self.folder)
            .status()
            .expect("remount");
        assert!(status.success(), "remount to {size}");
    }

    /// `path` (below the mount) as this test sees it through the namespace.
    fn seen(&self, path: &Path) -> PathBuf {
        PathBuf::from(format!("/proc/{}/root", self.holder.id()))
            .join(path.strip_prefix("/").expect("absolute"))
    }
}

impl Drop for PrivateTmpfs {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.holder.stdin.take() {
            let _ = stdin.write_all(b"\n");
        }
        let _ = self.holder.wait();
    }
}

/// Every entry below `dir` (folders too): path -> (contents, mode).
fn store_tree(dir: &Path) -> BTreeMap<String, (Vec<u8>, u32)> {
    let mut entries = BTreeMap::new();
    fn walk(base: &Path, dir: &Path, entries: &mut BTreeMap<String, (Vec<u8>, u32)>) {
        let Ok(listing) = std::fs::read_dir(dir) else {
            return;
        };
        for entry in listing.flatten() {
            let path = entry.path();
            let metadata = std::fs::symlink_metadata(&path).expect("stat");
            let relative = path
                .strip_prefix(base)
                .expect("inside")
                .display()
                .to_string();
            let mode = metadata.permissions().mode() & 0o7777;
            if metadata.is_dir() {
                entries.insert(format!("{relative}/"), (Vec::new(), mode));
                walk(base, &path, entries);
            } else {
                entries.insert(relative, (std::fs::read(&path).expect("read"), mode));
            }
        }
    }
    walk(dir, dir, &mut entries);
    entries
}

fn inventory_with_workers(workers: u32) -> String {
    let mut text = BASE.replace(
        "ca_validity_days = 3650\n",
        "ca_validity_days = 3650\npki_dir = \"disk/pki\"\n",
    );
    for index in 3..=workers {
        text.push_str(&format!(
            "\n[[worker]]\nname = \"w{index}\"\naddress = \"198.51.100.{index}\"\n"
        ));
    }
    text
}

#[test]
fn a_full_local_disk_during_pki_generate_leaves_the_store_as_it_was() {
    let dir = tempfile::tempdir().expect("temp dir");
    let disk = dir.path().join("disk");
    let store = disk.join("pki");
    // 512 KiB: room for a three-master, two-worker store (some 80 files),
    // not for 60 workers' (575 files; tmpfs gives each file a 4 KiB page).
    let tmpfs = PrivateTmpfs::mount(&disk, "512k");
    let inventory = dir.path().join("inventory.toml");
    let binary = assert_cmd::cargo::cargo_bin("ocfk8s");
    let generate = || {
        let started = Instant::now();
        let run: Run = tmpfs
            .command(&binary)
            .arg("-i")
            .arg(&inventory)
            .args(["pki", "generate"])
            .output()
            .expect("run ocfk8s")
            .into();
        no_secrets(&run, &["pki", "generate"]);
        (run, started.elapsed())
    };
    let full_store_error = |run: &Run| {
        assert_status(run, 1, "pki generate on a full disk");
        assert!(
            run.stderr.contains("No space left on device")
                && run.stderr.contains("into the PKI store")
                && run.stderr.contains("nothing was changed"),
            "{}",
            run.stderr
        );
    };

    // No store yet: none afterwards.
    std::fs::write(&inventory, inventory_with_workers(60)).expect("inventory");
    let (run, took) = generate();
    eprintln!(
        "60 workers into no store on a full disk: {took:?}\n{}",
        run.stderr
    );
    full_store_error(&run);
    assert_eq!(
        store_tree(&tmpfs.seen(&disk)),
        BTreeMap::new(),
        "a failed first generate left something"
    );

    // A complete smaller store stays byte for byte what it was.
    std::fs::write(&inventory, inventory_with_workers(2)).expect("inventory");
    let (run, _) = generate();
    assert_status(&run, 0, "pki generate for 3 masters and 2 workers");
    let before = store_tree(&tmpfs.seen(&store));
    std::fs::write(&inventory, inventory_with_workers(60)).expect("inventory");
    let (run, took) = generate();
    eprintln!("58 more workers into a full disk: {took:?}");
    full_store_error(&run);
    assert_eq!(
        store_tree(&tmpfs.seen(&store)),
        before,
        "a failed generate changed the store"
    );

    // With room, the same command completes and the store checks clean.
    tmpfs.resize("16m");
    let (run, took) = generate();
    assert_status(&run, 0, "pki generate with room");
    eprintln!("60 workers with room: {took:?}");
    assert!(run.stderr.is_empty(), "nothing to recover:\n{}", run.stderr);
    let check: Run = tmpfs
        .command(&binary)
        .arg("-i")
        .arg(&inventory)
        .args(["certs", "check"])
        .output()
        .expect("certs check")
        .into();
    assert_status(&check, 0, "certs check");
}
