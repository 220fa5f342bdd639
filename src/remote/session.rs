//! One multiplexed SSH connection per host.
//!
//! The control sockets live in a private folder under `/tmp` (0700, short
//! enough for the socket path limit) that is removed when the run ends; the
//! masters are started with a short `ControlPersist` idle timeout, so even a
//! crashed run leaves no master behind for long.
//!
//! The inventory's `[ssh]` settings are written into a per-run ssh config
//! file that then includes the operator's own `~/.ssh/config` and the system
//! one. Passing it with `-F` (rather than `-o` options) matters for
//! `jump_host`: ssh hands the `-F` file to the ProxyJump connection too, so
//! the jump host is checked against the same `known_hosts` and reached with
//! the same identity.

use std::fmt::Write as _;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use openssh::{ControlPersist, KnownHosts, Session, SessionBuilder};
use tokio::io::AsyncWriteExt;

use crate::inventory::{Cluster, Node};

/// Control folders are `/tmp/ocfk8s-ssh-<pid>-<random>`.
const CONTROL_DIR_PREFIX: &str = "ocfk8s-ssh-";

/// How long an idle master connection outlives its last use.
const CONTROL_PERSIST_SECS: usize = 60;

/// Opens sessions to the cluster's hosts with the inventory's settings.
pub(crate) struct Connector {
    control_dir: tempfile::TempDir,
    config_file: PathBuf,
    known_hosts: KnownHosts,
    connect_timeout: Duration,
    jump_host: Option<String>,
}

/// A connected host. Scripts run as root: directly for `root`, through
/// `sudo -n` otherwise.
pub(crate) struct Host {
    pub(crate) name: String,
    /// What preflight found on the host (filled in once connected).
    pub(crate) facts: super::facts::HostFacts,
    session: Session,
    user: String,
    sudo: bool,
    /// State read with the facts; forgotten as soon as any script runs.
    prefetched: std::sync::Mutex<Option<super::state::Prefetched>>,
}

/// What a remote script printed, once it exited with status 0.
pub(crate) struct ScriptOutput {
    pub(crate) stdout: String,
}

/// How a remote script ended: its exit status (`None` when killed by a
/// signal), its output as bytes, and its error output as text.
pub(crate) struct ExecOutput {
    pub(crate) status: Option<i32>,
    pub(crate) stdout: Vec<u8>,
    pub(crate) stderr: String,
}

impl Connector {
    pub(crate) fn new(cluster: &Cluster, accept_new_host_keys: bool) -> anyhow::Result<Self> {
        remove_abandoned_control_dirs();
        let control_dir = tempfile::Builder::new()
            .prefix(&format!("{CONTROL_DIR_PREFIX}{}-", std::process::id()))
            .tempdir_in("/tmp")
            .context("creating the folder for SSH control sockets under /tmp")?;
        let config_file = control_dir.path().join("ssh_config");
        std::fs::write(&config_file, ssh_config(cluster, control_dir.path()))
            .with_context(|| format!("writing {}", config_file.display()))?;
        Ok(Connector {
            control_dir,
            config_file,
            known_hosts: if accept_new_host_keys {
                KnownHosts::Add
            } else {
                KnownHosts::Strict
            },
            connect_timeout: Duration::from_secs(u64::from(
                cluster.ssh.connect_timeout_secs.max(1),
            )),
            jump_host: cluster.ssh.jump_host.clone(),
        })
    }

    /// Open the jump host's master connection (if there is a jump host), so
    /// the hosts behind it share it instead of racing to create it.
    pub(crate) async fn connect_jump_host(&self) -> anyhow::Result<()> {
        let Some(jump_host) = &self.jump_host else {
            return Ok(());
        };
        let output = tokio::process::Command::new("ssh")
            .arg("-F")
            .arg(&self.config_file)
            .arg("-o")
            .arg(self.known_hosts_option())
            .args(["-T", jump_host, "true"])
            .stdin(std::process::Stdio::null())
            .output()
            .await
            .context("running ssh")?;
        if !output.status.success() {
            bail!(
                "cannot connect to the jump host {jump_host}: {}",
                String::from_utf8_lossy(&output.stderr).trim()
            );
        }
        Ok(())
    }

    fn known_hosts_option(&self) -> &'static str {
        match self.known_hosts {
            KnownHosts::Add => "StrictHostKeyChecking=accept-new",
            _ => "StrictHostKeyChecking=yes",
        }
    }

    /// Connect to `node`; the error says why (host key, refused, timeout).
    pub(crate) async fn connect(&self, node: &Node) -> anyhow::Result<Host> {
        let _timer = crate::timings::step("ssh connect");
        let mut builder = SessionBuilder::default();
        builder
            .user(node.ssh_user.clone())
            .port(node.ssh_port)
            .config_file(&self.config_file)
            .control_directory(self.control_dir.path())
            .control_persist(ControlPersist::IdleFor(
                NonZeroUsize::new(CONTROL_PERSIST_SECS).unwrap_or(NonZeroUsize::MIN),
            ))
            .known_hosts_check(self.known_hosts.clone())
            .connect_timeout(self.connect_timeout)
            .server_alive_interval(Duration::from_secs(15));
        if let Some(jump_host) = &self.jump_host {
            // The jump host may itself be one of the cluster's hosts: reach
            // that one directly (ssh refuses a jump through itself).
            if !is_host(jump_host, node) {
                builder.jump_hosts([jump_host]);
            }
        }
        let session = builder
            .connect_mux(node.address.to_string())
            .await
            .map_err(|error| anyhow::anyhow!("{}", connect_error(&error)))
            .with_context(|| {
                format!(
                    "cannot connect to {}@{}:{}",
                    node.ssh_user, node.address, node.ssh_port
                )
            })?;
        Ok(Host {
            name: node.name.clone(),
            facts: Default::default(),
            session,
            user: node.ssh_user.clone(),
            sudo: node.ssh_user != "root",
            prefetched: std::sync::Mutex::new(None),
        })
    }
}

/// Remove the control folders of runs that were killed (their process is
/// gone); their masters have exited or will after the idle timeout.
fn remove_abandoned_control_dirs() {
    let Ok(entries) = std::fs::read_dir("/tmp") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|name| name.strip_prefix(CONTROL_DIR_PREFIX))
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if !pid.is_empty()
            && pid.bytes().all(|byte| byte.is_ascii_digit())
            && !Path::new("/proc").join(pid).exists()
        {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Whether `jump_host` (`[user@]host[:port]`) names `node`.
fn is_host(jump_host: &str, node: &Node) -> bool {
    let host = host_part(jump_host);
    host == node.name || host == node.address.to_string()
}

/// The host of `[user@]host[:port]`.
fn host_part(destination: &str) -> &str {
    let host = destination.rsplit('@').next().unwrap_or(destination);
    match host.strip_prefix('[') {
        Some(bracketed) => bracketed.split(']').next().unwrap_or(bracketed),
        None => host.split(':').next().unwrap_or(host),
    }
}

/// openssh's error plus the master's log lines, on one line.
fn connect_error(error: &openssh::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let message = cause.to_string();
        let message = message.trim();
        if !message.is_empty() && !text.contains(message) {
            let _ = write!(text, ": {}", message.replace('\n', "; "));
        }
        source = cause.source();
    }
    text
}

/// The per-run ssh config: the inventory's settings first (ssh keeps the
/// first value it reads), then the operator's and the system's files. The
/// jump host gets a multiplexed master of its own, so hosts behind it cost
/// one channel each rather than one more SSH handshake with the jump host.
fn ssh_config(cluster: &Cluster, control_dir: &Path) -> String {
    let mut text = String::from("# Written by ocfk8s for one run.\n");
    if let Some(jump_host) = &cluster.ssh.jump_host {
        let _ = writeln!(
            text,
            "Host {}\n  ControlMaster auto\n  ControlPath \"{}/jump-%C\"\n  ControlPersist {CONTROL_PERSIST_SECS}",
            host_part(jump_host),
            control_dir.display()
        );
    }
    text.push_str("Host *\n  BatchMode yes\n");
    if let Some(known_hosts) = &cluster.ssh.known_hosts {
        let _ = writeln!(text, "  UserKnownHostsFile \"{}\"", known_hosts.display());
    }
    if let Some(identity) = &cluster.ssh.identity_file {
        let _ = writeln!(text, "  IdentityFile \"{}\"", identity.display());
    }
    let _ = writeln!(
        text,
        "  ConnectTimeout {}",
        cluster.ssh.connect_timeout_secs.max(1)
    );
    if let Some(home) = std::env::var_os("HOME") {
        let user_config = Path::new(&home).join(".ssh/config");
        if user_config.is_file() {
            let _ = writeln!(text, "Include \"{}\"", user_config.display());
        }
    }
    if Path::new("/etc/ssh/ssh_config").is_file() {
        text.push_str("Include /etc/ssh/ssh_config\n");
    }
    text
}

impl Host {
    /// Run a POSIX shell script as root, feeding it on stdin; fail unless it
    /// exits 0, with its stderr in the message.
    pub(crate) async fn run_script(&self, script: &str) -> anyhow::Result<ScriptOutput> {
        let output = self.exec(script).await?;
        match output.status {
            Some(0) => Ok(ScriptOutput {
                stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            }),
            Some(code) => bail!("remote script exited with status {code}: {}", output.stderr),
            None => bail!("remote script was killed: {}", output.stderr),
        }
    }

    /// Run a POSIX shell script as root and return how it ended, whatever
    /// its exit status: probes read exit codes, snapshots read bytes. Only
    /// a failed connection (ssh's status 255) or a refused `sudo -n` is an
    /// error here.
    pub(crate) async fn exec(&self, script: &str) -> anyhow::Result<ExecOutput> {
        self.forget_prefetched();
        self.exec_reading(script).await
    }

    /// [`Host::exec`] for a script that changes nothing on the host (it
    /// only asks a service): the state read with the facts stays good.
    pub(crate) async fn exec_reading(&self, script: &str) -> anyhow::Result<ExecOutput> {
        self.shell(
            &["-s"],
            script.as_bytes(),
            "sending the script to the remote shell",
        )
        .await
    }

    fn forget_prefetched(&self) {
        if let Ok(mut slot) = self.prefetched.lock() {
            *slot = None;
        }
    }

    /// Run `script` with `sh -c` as root, streaming `input` to its stdin
    /// (a file of any size: it is copied in small buffers, never held
    /// whole), and return how it ended; like [`Host::exec`], only a failed
    /// connection or a refused `sudo -n` is an error.
    pub(crate) async fn exec_streaming(
        &self,
        script: &str,
        input: impl tokio::io::AsyncRead + Unpin,
    ) -> anyhow::Result<ExecOutput> {
        self.forget_prefetched();
        self.shell(&["-c", script], input, "streaming to the remote shell")
            .await
    }

    /// Keep `prefetched` to answer reads of the host's state until the next
    /// script runs on it.
    pub(crate) fn set_prefetched(&self, prefetched: super::state::Prefetched) {
        if let Ok(mut slot) = self.prefetched.lock() {
            *slot = Some(prefetched);
        }
    }

    /// The state of `paths` and `units` as read with the host's facts, when
    /// every one of them was read then and no script has run on the host
    /// since (any script may change what it reports: every one forgets it).
    pub(crate) fn prefetched_state(
        &self,
        paths: &[&str],
        units: &[&str],
    ) -> Option<super::HostState> {
        let slot = self.prefetched.lock().ok()?;
        slot.as_ref()?.answer(paths, units)
    }

    /// `sh ARGS` as root (through `sudo -n` for other users) with `input`
    /// copied to its stdin.
    async fn shell(
        &self,
        args: &[&str],
        mut input: impl tokio::io::AsyncRead + Unpin,
        feeding: &'static str,
    ) -> anyhow::Result<ExecOutput> {
        let mut command = if self.sudo {
            let mut command = self.session.command("sudo");
            command.arg("-n").arg("sh");
            command
        } else {
            self.session.command("sh")
        };
        command
            .args(args)
            .stdin(openssh::Stdio::piped())
            .stdout(openssh::Stdio::piped())
            .stderr(openssh::Stdio::piped());
        let mut child = command.spawn().await.context("starting a remote shell")?;
        let mut stdin = child
            .stdin()
            .take()
            .context("the remote shell has no stdin")?;
        let feed = async move {
            tokio::io::copy(&mut input, &mut stdin).await?;
            stdin.shutdown().await
        };
        let (fed, output) = tokio::join!(feed, child.wait_with_output());
        let output = output.map_err(|error| match error {
            // The mux protocol cannot tell a killed shell from a lost
            // connection; either way the host's side may be partly done.
            openssh::Error::RemoteProcessTerminated => anyhow::anyhow!(
                "the remote shell ended without an exit status: it was killed, or the SSH \
                 connection was lost (sshd stopped or the host went away); re-run once the host answers"
            ),
            other => anyhow::Error::new(other).context("waiting for the remote shell"),
        })?;
        let stderr = String::from_utf8_lossy(&output.stderr).trim().to_string();
        if self.sudo && !output.status.success() && stderr.contains("password is required") {
            bail!(
                "user {} cannot become root without a password (`sudo -n` refused): allow it passwordless sudo, or connect as root",
                self.user
            );
        }
        // sudo's own refusals (`requiretty`, a user sudo does not know):
        // status 1, nothing printed, stderr from sudo itself. No script
        // ocfk8s sends calls sudo, so the message is sudo's.
        if self.sudo
            && output.status.code() == Some(1)
            && output.stdout.is_empty()
            && stderr.starts_with("sudo: ")
        {
            bail!(
                "user {} cannot become root through `sudo -n`: {stderr}; allow it sudo without a password and without a terminal, or connect as root",
                self.user
            );
        }
        if self.sudo
            && output.status.code() == Some(127)
            && (stderr.contains("sudo: not found") || stderr.contains("sudo: command not found"))
        {
            bail!(
                "user {} is not root and sudo is not installed on the host: install sudo (and allow {} passwordless sudo), or connect as root",
                self.user,
                self.user
            );
        }
        if output.status.code() == Some(255) {
            bail!("the SSH connection failed: {stderr}");
        }
        if output.status.success() {
            fed.context(feeding)?;
        }
        Ok(ExecOutput {
            status: output.status.code(),
            stdout: output.stdout,
            stderr,
        })
    }

    /// Tell the host's master connection that the run still needs it: a
    /// mux client counts as activity, so its `ControlPersist` idle timer
    /// (short, for a crashed run's sake) starts again. A dead connection
    /// is left for the next real command to report.
    pub(crate) async fn keep_alive(&self) {
        let _ = self.session.check().await;
    }

    /// Close the master connection.
    pub(crate) async fn close(self) {
        let _timer = crate::timings::step("close");
        let _ = self.session.close().await;
    }
}

impl Drop for Connector {
    /// Ask the jump host's master (if any) to exit with the run.
    fn drop(&mut self) {
        if let Some(jump_host) = &self.jump_host {
            let _ = std::process::Command::new("ssh")
                .arg("-F")
                .arg(&self.config_file)
                .args(["-O", "exit", jump_host])
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, address: &str) -> Node {
        Node {
            name: name.into(),
            address: address.parse().expect("address"),
            role: crate::inventory::Role::Master,
            ssh_user: "root".into(),
            ssh_port: 22,
            labels: Default::default(),
            taints: Vec::new(),
        }
    }

    #[test]
    fn the_jump_host_itself_is_reached_directly() {
        let bastion = node("bastion", "10.0.0.5");
        assert!(is_host("admin@10.0.0.5", &bastion));
        assert!(is_host("bastion:2222", &bastion));
        assert!(is_host("admin@[10.0.0.5]:22", &bastion));
        assert!(!is_host("admin@10.0.0.50", &bastion));
        assert!(!is_host("other", &bastion));
    }
}
