//! What preflight learns about a freshly connected host, in one round trip:
//! that it can run the engine's scripts as root, its OS, architecture and
//! clock, whether it runs systemd-resolved, which TCP ports are held and by
//! whom, whether it already runs etcd or kubelet, which of the binaries it
//! needs are in `bin_dir`, and (for `method = "apt"`) which packages it holds.
//!
//! The script and its parser are pure; deciding what is a problem is
//! [`crate::ops::preflight`]'s business, so `status` and `plan` can connect
//! to a host that `bootstrap` would refuse.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};

use super::session::Host;
use super::shell::{check_path, quote};

/// Tools the engine's scripts need on every host.
const TOOLS: &str = "sha256sum stat base64 find mktemp sync mv chmod chown cat";

/// What was found on a host; see the module documentation.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct HostFacts {
    /// `uname -sr`.
    pub(crate) kernel: String,
    /// `PRETTY_NAME` of `/etc/os-release` (empty when it has none).
    pub(crate) os: String,
    /// `uname -m`.
    pub(crate) arch: String,
    /// The host's clock minus this machine's, in seconds (the round trip
    /// halved).
    pub(crate) clock_skew_secs: f64,
    /// `/run/systemd/resolve/resolv.conf` exists: the kubelet should read
    /// that file rather than the stub `/etc/resolv.conf`.
    pub(crate) systemd_resolved: bool,
    /// The nameservers of the resolv.conf kubelet will read; `None` when
    /// that file is missing or unreadable.
    pub(crate) nameservers: Option<Vec<String>>,
    /// `/var/lib/etcd/member` exists: this host already runs (or ran) etcd.
    pub(crate) etcd_data: bool,
    /// `systemctl is-active kubelet.service` said `active`.
    pub(crate) kubelet_active: bool,
    /// Listening TCP sockets (`ss -ltnpH`); `None` when `ss` is missing.
    pub(crate) listeners: Option<Vec<Listener>>,
    /// The binaries asked about, by name.
    pub(crate) binaries: BTreeMap<String, BinaryPresence>,
    /// Installed packages asked about: name to version (`dpkg-query`, only
    /// those fully installed).
    pub(crate) packages: BTreeMap<String, String>,
}

/// A listening TCP socket and the process holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Listener {
    pub(crate) port: u16,
    /// `name (pid N)`, or `None` when `ss` could not tell.
    pub(crate) holder: Option<String>,
    /// The program name alone (`etcd`, `python3`).
    pub(crate) program: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BinaryPresence {
    Executable,
    NotExecutable,
    Missing,
}

/// What to ask a host about besides its basic facts.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct FactsRequest<'a> {
    pub(crate) bin_dir: &'a str,
    /// The resolv.conf kubelet will read: its nameservers are reported.
    pub(crate) resolv_conf: &'a str,
    pub(crate) binaries: &'a [&'a str],
    pub(crate) packages: &'a [&'a str],
    /// The ports preflight checks: which programs hold them is reported.
    pub(crate) ports: &'a [u16],
}

/// The script that prints a host's facts; see [`parse_facts`].
pub(crate) fn facts_script(request: &FactsRequest<'_>) -> anyhow::Result<String> {
    facts_script_with(request, true)
}

/// [`facts_script`]; without `kubelet_check` the report leaves out whether
/// kubelet is active (a state read of kubelet.service in the same round
/// trip says it).
///
/// Every process a host starts costs it a fork and an exec, which on a
/// busy host is most of a no-op run's time: what the shell can do itself
/// (reading /proc, os-release and resolv.conf, testing files) it does.
fn facts_script_with(request: &FactsRequest<'_>, kubelet_check: bool) -> anyhow::Result<String> {
    let mut script = String::from(
        "set -e\nexport LC_ALL=C\n\
         printf 'time %s\\n' \"$(date +%s.%N)\"\n\
         uid=\n\
         if [ -r /proc/self/status ]; then\n  \
           while read -r key value rest; do\n    \
             if [ \"$key\" = Uid: ]; then uid=$value; break; fi\n  \
           done < /proc/self/status\n\
         fi\n\
         [ -n \"$uid\" ] || uid=$(id -u)\n\
         [ \"$uid\" = 0 ] || { echo 'not running as root' >&2; exit 1; }\n",
    );
    let _ = write!(
        script,
        "for tool in {TOOLS}; do\n  \
           command -v \"$tool\" >/dev/null 2>&1 || {{ echo \"$tool is missing\" >&2; exit 1; }}\n\
         done\n\
         k=/proc/sys/kernel\n\
         if [ -r $k/ostype ] && [ -r $k/osrelease ] && [ -r $k/arch ]; then\n  \
           read -r ostype < $k/ostype; read -r release < $k/osrelease; read -r arch < $k/arch\n  \
           u=\"$ostype $release $arch\"\n\
         else\n  \
           u=$(uname -s -r -m)\n\
         fi\n\
         printf 'kernel %s\\n' \"${{u% *}}\"\n\
         printf 'arch %s\\n' \"${{u##* }}\"\n\
         if [ -r /etc/os-release ]; then\n  \
           while IFS= read -r line || [ -n \"$line\" ]; do\n    \
             case $line in PRETTY_NAME=*) line=${{line#PRETTY_NAME=}}; line=${{line#\\\"}}; printf 'os %s\\n' \"${{line%\\\"}}\"; break;; esac\n  \
           done < /etc/os-release\n\
         fi\n\
         if [ -e /run/systemd/resolve/resolv.conf ]; then echo 'resolved yes'; else echo 'resolved no'; fi\n\
         if [ -d /var/lib/etcd/member ]; then echo 'etcd-data yes'; else echo 'etcd-data no'; fi\n"
    );
    if kubelet_check {
        script.push_str(
            "if command -v systemctl >/dev/null 2>&1 && [ \"$(systemctl is-active kubelet.service 2>/dev/null || true)\" = active ]; then\n  \
               echo 'kubelet active'\n\
             fi\n",
        );
    }
    // Which programs hold ports matters only for the ports preflight
    // checks: `ss -p` (which reads every process's descriptors) runs only
    // when one of them is held.
    let held: Vec<String> = request
        .ports
        .iter()
        .map(|port| format!("*:{port}\\ *"))
        .collect();
    if held.is_empty() {
        script.push_str("if command -v ss >/dev/null 2>&1; then\n  echo 'listeners'\nfi\n");
    } else {
        let _ = write!(
            script,
            "if command -v ss >/dev/null 2>&1; then\n  \
               echo 'listeners'\n  \
               held=$(ss -ltnH 2>/dev/null || true)\n  \
               case $held in\n    \
                 {patterns})\n      \
                   held=$(ss -ltnpH 2>/dev/null || true)\n      \
                   while IFS= read -r line; do [ -z \"$line\" ] || printf 'listen %s\\n' \"$line\"; done <<OCFK8S_HELD\n\
$held\n\
OCFK8S_HELD\n\
                 ;;\n  \
               esac\n\
             fi\n",
            patterns = held.join("|")
        );
    }
    check_path(request.resolv_conf)?;
    let _ = writeln!(
        script,
        "if [ -r {path} ]; then\n  echo 'resolv present'\n  \
           while read -r key value rest || [ -n \"$key\" ]; do\n    \
             if [ \"$key\" = nameserver ] && [ -n \"$value\" ]; then printf 'nameserver %s\\n' \"$value\"; fi\n  \
           done < {path}\n\
         fi",
        path = quote(request.resolv_conf)
    );
    if !request.binaries.is_empty() {
        check_path(request.bin_dir)?;
        let bin_dir = request.bin_dir.trim_end_matches('/');
        script.push_str("for b in");
        for binary in request.binaries {
            check_name(binary)?;
            let _ = write!(script, " {}", quote(binary));
        }
        let _ = write!(
            script,
            "; do\n  p={}/\"$b\"\n  \
               if [ -f \"$p\" ] && [ -x \"$p\" ]; then printf 'binary %s executable\\n' \"$b\"\n  \
               elif [ -e \"$p\" ]; then printf 'binary %s not-executable\\n' \"$b\"\n  \
               else printf 'binary %s missing\\n' \"$b\"; fi\n\
             done\n",
            quote(bin_dir)
        );
    }
    if !request.packages.is_empty() {
        script.push_str("if command -v dpkg-query >/dev/null 2>&1; then\n  dpkg-query -W -f='package ${Package} ${Version} ${db:Status-Abbrev}\\n'");
        for package in request.packages {
            check_name(package)?;
            let _ = write!(script, " {}", quote(package));
        }
        script.push_str(" 2>/dev/null || true\nfi\n");
    }
    script.push_str("echo end\n");
    Ok(script)
}

/// Program and package names travel unquoted through `case` patterns and
/// listings: only safe characters.
fn check_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty()
        || !name
            .bytes()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_.+".contains(&byte))
    {
        bail!("refusing the name {name:?}");
    }
    Ok(())
}

/// Parse what [`facts_script`] printed; `local_midpoint` is this machine's
/// clock halfway through the round trip.
pub(crate) fn parse_facts(output: &str, local_midpoint: f64) -> anyhow::Result<HostFacts> {
    let mut facts = HostFacts::default();
    let mut ended = false;
    for line in output.lines() {
        let (key, value) = line.split_once(' ').unwrap_or((line, ""));
        match key {
            "end" => ended = true,
            "time" => {
                let remote: f64 = value
                    .trim()
                    .parse()
                    .with_context(|| format!("unexpected time {value:?}"))?;
                facts.clock_skew_secs = remote - local_midpoint;
            }
            "kernel" => facts.kernel = value.to_string(),
            "arch" => facts.arch = value.trim().to_string(),
            "os" => facts.os = value.trim().to_string(),
            "resolved" => facts.systemd_resolved = value == "yes",
            "resolv" => facts.nameservers = Some(Vec::new()),
            "nameserver" => facts
                .nameservers
                .get_or_insert_with(Vec::new)
                .push(value.trim().to_string()),
            "etcd-data" => facts.etcd_data = value == "yes",
            "kubelet" => facts.kubelet_active = value == "active",
            "listeners" => facts.listeners = Some(Vec::new()),
            "listen" => {
                if let Some(listener) = parse_listener(value) {
                    facts.listeners.get_or_insert_with(Vec::new).push(listener);
                }
            }
            "binary" => {
                let (name, state) = value
                    .split_once(' ')
                    .with_context(|| format!("unexpected line {line:?}"))?;
                let presence = match state {
                    "executable" => BinaryPresence::Executable,
                    "not-executable" => BinaryPresence::NotExecutable,
                    _ => BinaryPresence::Missing,
                };
                facts.binaries.insert(name.to_string(), presence);
            }
            "package" => {
                let mut parts = value.split_whitespace();
                if let (Some(name), Some(version), Some(status)) =
                    (parts.next(), parts.next(), parts.next())
                {
                    if status == "ii" {
                        facts.packages.insert(name.to_string(), version.to_string());
                    }
                }
            }
            _ if line.trim().is_empty() => {}
            _ => bail!("unexpected line in the preflight report: {line:?}"),
        }
    }
    if !ended {
        bail!("the preflight report was cut short");
    }
    Ok(facts)
}

/// One line of `ss -ltnpH`: `LISTEN 0 4096 127.0.0.1:2379 0.0.0.0:*
/// users:(("etcd",pid=812,fd=7))`.
fn parse_listener(line: &str) -> Option<Listener> {
    let local = line.split_whitespace().nth(3)?;
    let port = local.rsplit(':').next()?.parse().ok()?;
    let (program, holder) = match line.split_once("users:((\"") {
        Some((_, users)) => {
            let (program, rest) = users.split_once('"')?;
            let pid = rest
                .split_once("pid=")
                .map(|(_, rest)| rest.split(|c: char| !c.is_ascii_digit()).next())
                .unwrap_or_default()
                .unwrap_or_default();
            let holder = if pid.is_empty() {
                program.to_string()
            } else {
                format!("{program} (pid {pid})")
            };
            (Some(program.to_string()), Some(holder))
        }
        None => (None, None),
    };
    Some(Listener {
        port,
        holder,
        program,
    })
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs_f64()
}

/// Read a host's facts: one round trip.
pub(crate) async fn read_facts(
    host: &Host,
    request: &FactsRequest<'_>,
) -> anyhow::Result<HostFacts> {
    let _timer = crate::timings::step("host facts");
    let script = facts_script(request)?;
    let sent = unix_now();
    let output = host.run_script(&script).await?;
    let received = unix_now();
    parse_facts(&output.stdout, (sent + received) / 2.0)
}

/// Read a host's facts and the state of `paths` and `units` in one round
/// trip: the facts script, a separator line, then the state script.
pub(crate) async fn read_facts_and_state(
    host: &Host,
    request: &FactsRequest<'_>,
    paths: &[&str],
    units: &[&str],
) -> anyhow::Result<(HostFacts, super::HostState)> {
    let _timer = crate::timings::step("host facts+state");
    // Whether kubelet runs matters only with ports to check; the state
    // read says it when it reads kubelet.service.
    let kubelet_in_state = units.contains(&"kubelet.service");
    let mut script = facts_script_with(request, !kubelet_in_state && !request.ports.is_empty())?;
    let _ = writeln!(script, "echo {STATE_FOLLOWS}");
    script.push_str(&super::state::state_script(paths, units)?);
    let sent = unix_now();
    let output = host.run_script(&script).await?;
    let received = unix_now();
    let (facts, state) = output
        .stdout
        .split_once(&format!("\n{STATE_FOLLOWS}\n"))
        .context("the host's report holds no state")?;
    let mut facts = parse_facts(facts, (sent + received) / 2.0)?;
    let state = super::state::parse_state(paths, state)?;
    if kubelet_in_state {
        facts.kubelet_active = state
            .services
            .get("kubelet.service")
            .is_some_and(|active| active == "active");
    }
    Ok((facts, state))
}

/// The line between the facts and the state in [`read_facts_and_state`].
const STATE_FOLLOWS: &str = "state-follows";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ss_lines() {
        let listener = parse_listener(
            "LISTEN 0      4096       127.0.0.1:2379      0.0.0.0:*    users:((\"etcd\",pid=812,fd=7))",
        )
        .expect("listener");
        assert_eq!(listener.port, 2379);
        assert_eq!(listener.holder.as_deref(), Some("etcd (pid 812)"));
        assert_eq!(listener.program.as_deref(), Some("etcd"));
        let anonymous = parse_listener("LISTEN 0 128 [::]:10250 [::]:*").expect("listener");
        assert_eq!((anonymous.port, anonymous.holder), (10250, None));
    }

    #[test]
    fn the_script_runs_under_sh_and_reports_binaries_and_clock() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("temp dir");
        let bin = dir.path().to_str().expect("utf-8");
        std::fs::write(dir.path().join("etcd"), "#!/bin/sh\n").expect("write");
        std::fs::set_permissions(
            dir.path().join("etcd"),
            std::fs::Permissions::from_mode(0o755),
        )
        .expect("chmod");
        std::fs::write(dir.path().join("kubelet"), "x").expect("write");
        let resolv = dir.path().join("resolv.conf");
        std::fs::write(
            &resolv,
            "# stub\nsearch example.org\nnameserver 127.0.0.53\n  nameserver\t10.0.0.2 \n",
        )
        .expect("write");
        let script = facts_script(&FactsRequest {
            bin_dir: bin,
            resolv_conf: resolv.to_str().expect("utf-8"),
            binaries: &["etcd", "kubelet", "kube-proxy"],
            packages: &["coreutils", "surely-not-a-package"],
            ports: &[2379, 10250],
        })
        .expect("script");
        let output = std::process::Command::new("sh")
            .arg("-c")
            // Tests may not run as root: pretend.
            .arg(script.replace("\"$uid\" = 0", "0 = 0"))
            .output()
            .expect("sh");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let facts =
            parse_facts(&String::from_utf8_lossy(&output.stdout), unix_now()).expect("parse");
        assert!(facts.clock_skew_secs.abs() < 2.0, "{facts:?}");
        assert!(!facts.arch.is_empty());
        assert_eq!(facts.binaries["etcd"], BinaryPresence::Executable);
        assert_eq!(facts.binaries["kubelet"], BinaryPresence::NotExecutable);
        assert_eq!(facts.binaries["kube-proxy"], BinaryPresence::Missing);
        assert_eq!(
            facts.nameservers,
            Some(vec!["127.0.0.53".to_string(), "10.0.0.2".to_string()])
        );
        if std::path::Path::new("/usr/bin/dpkg-query").exists() {
            assert!(facts.packages.contains_key("coreutils"), "{facts:?}");
            assert!(!facts.packages.contains_key("surely-not-a-package"));
        }
    }

    #[test]
    fn a_cut_short_report_is_an_error() {
        assert!(parse_facts("time 1.0\narch x86_64\n", 1.0).is_err());
    }
}
