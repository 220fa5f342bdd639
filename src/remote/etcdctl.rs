//! etcd membership and health through `etcdctl` on a master, over the
//! run's SSH connection: the machine running ocfk8s may reach the hosts only
//! by SSH (perhaps through a jump host), never etcd's ports directly.
//!
//! Like the other remote steps: a pure script builder, a pure parser of
//! what etcdctl printed (`-w json`), and a thin async wrapper. Reads use the
//! healthcheck-client identity from the etcd CA, at kubeadm's path.

use anyhow::Context;
use serde::Deserialize;

use super::session::Host;
use super::shell::quote;

/// The etcd CA on masters.
pub(crate) const ETCD_CA: &str = "/etc/kubernetes/pki/etcd/ca.crt";

/// The client identity etcdctl presents for reads: the healthcheck client,
/// as kubeadm's probes do.
const CLIENT_CERT: &str = "/etc/kubernetes/pki/etcd/healthcheck-client.crt";
const CLIENT_KEY: &str = "/etc/kubernetes/pki/etcd/healthcheck-client.key";

/// The shell command running `etcdctl ARGS` against `endpoints` from
/// `bin_dir`. Every value is quoted; `bin_dir` and the endpoints come from
/// the validated inventory.
pub(crate) fn command(bin_dir: &str, endpoints: &[String], args: &[&str]) -> String {
    let (cert, key) = (CLIENT_CERT, CLIENT_KEY);
    let mut words = vec![
        "ETCDCTL_API=3".to_string(),
        quote(&format!("{}/etcdctl", bin_dir.trim_end_matches('/'))),
        quote(&format!("--endpoints={}", endpoints.join(","))),
        quote(&format!("--cacert={ETCD_CA}")),
        quote(&format!("--cert={cert}")),
        quote(&format!("--key={key}")),
        "--dial-timeout=2s".to_string(),
        "--command-timeout=5s".to_string(),
    ];
    words.extend(args.iter().map(|arg| quote(arg)));
    words.join(" ")
}

/// One etcd member as `member list` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Member {
    pub(crate) id: u64,
    /// Empty for a member added but never started.
    pub(crate) name: String,
    pub(crate) peer_urls: Vec<String>,
    pub(crate) client_urls: Vec<String>,
    pub(crate) is_learner: bool,
}

impl Member {
    /// The id as etcdctl prints and takes it (hex).
    pub(crate) fn hex_id(&self) -> String {
        format!("{:x}", self.id)
    }

    /// Whether the member has started at least once (it then has a name
    /// and client URLs).
    pub(crate) fn started(&self) -> bool {
        !self.name.is_empty()
    }
}

#[derive(Deserialize)]
struct MemberListJson {
    #[serde(default)]
    members: Vec<MemberJson>,
}

#[derive(Deserialize)]
struct MemberJson {
    #[serde(rename = "ID")]
    id: u64,
    #[serde(default)]
    name: String,
    #[serde(rename = "peerURLs", default)]
    peer_urls: Vec<String>,
    #[serde(rename = "clientURLs", default)]
    client_urls: Vec<String>,
    #[serde(rename = "isLearner", default)]
    is_learner: bool,
}

/// Parse `etcdctl member list -w json`.
pub(crate) fn parse_member_list(json: &[u8]) -> anyhow::Result<Vec<Member>> {
    let list: MemberListJson =
        serde_json::from_slice(json).context("reading etcdctl member list output")?;
    Ok(list
        .members
        .into_iter()
        .map(|member| Member {
            id: member.id,
            name: member.name,
            peer_urls: member.peer_urls,
            client_urls: member.client_urls,
            is_learner: member.is_learner,
        })
        .collect())
}

/// One endpoint's `endpoint status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(crate) struct EndpointStatus {
    pub(crate) endpoint: String,
    pub(crate) member_id: u64,
    pub(crate) leader: u64,
    pub(crate) raft_index: u64,
    pub(crate) raft_applied_index: u64,
    pub(crate) raft_term: u64,
    pub(crate) db_size: u64,
    pub(crate) version: String,
    pub(crate) is_learner: bool,
    /// Alarms and errors the member reports (`NOSPACE`, ...).
    pub(crate) errors: Vec<String>,
}

#[derive(Deserialize)]
struct EndpointStatusJson {
    #[serde(rename = "Endpoint")]
    endpoint: String,
    #[serde(rename = "Status")]
    status: StatusJson,
}

#[derive(Deserialize)]
struct StatusJson {
    header: HeaderJson,
    #[serde(default)]
    version: String,
    #[serde(rename = "dbSize", default)]
    db_size: u64,
    #[serde(default)]
    leader: u64,
    #[serde(rename = "raftIndex", default)]
    raft_index: u64,
    #[serde(rename = "raftTerm", default)]
    raft_term: u64,
    #[serde(rename = "raftAppliedIndex", default)]
    raft_applied_index: u64,
    #[serde(rename = "isLearner", default)]
    is_learner: bool,
    #[serde(default)]
    errors: Vec<String>,
}

#[derive(Deserialize)]
struct HeaderJson {
    member_id: u64,
}

/// Parse `etcdctl endpoint status -w json` (the endpoints that answered;
/// the others are reported on stderr).
pub(crate) fn parse_endpoint_status(json: &[u8]) -> anyhow::Result<Vec<EndpointStatus>> {
    if json.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    let list: Vec<EndpointStatusJson> =
        serde_json::from_slice(json).context("reading etcdctl endpoint status output")?;
    Ok(list
        .into_iter()
        .map(|entry| EndpointStatus {
            endpoint: entry.endpoint,
            member_id: entry.status.header.member_id,
            leader: entry.status.leader,
            raft_index: entry.status.raft_index,
            raft_applied_index: entry.status.raft_applied_index,
            raft_term: entry.status.raft_term,
            db_size: entry.status.db_size,
            version: entry.status.version,
            is_learner: entry.status.is_learner,
            errors: entry.status.errors,
        })
        .collect())
}

/// One endpoint's `endpoint health`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub(crate) struct EndpointHealth {
    pub(crate) endpoint: String,
    pub(crate) health: bool,
    #[serde(default)]
    pub(crate) error: Option<String>,
}

/// Parse `etcdctl endpoint health -w json`.
pub(crate) fn parse_endpoint_health(json: &[u8]) -> anyhow::Result<Vec<EndpointHealth>> {
    if json.iter().all(u8::is_ascii_whitespace) {
        return Ok(Vec::new());
    }
    serde_json::from_slice(json).context("reading etcdctl endpoint health output")
}

/// etcdctl run on one master.
pub(crate) struct Etcdctl<'a> {
    pub(crate) host: &'a Host,
    pub(crate) bin_dir: &'a str,
}

impl Etcdctl<'_> {
    /// Run etcdctl; its stdout whatever its status, and its stderr.
    async fn run(
        &self,
        endpoints: &[String],
        args: &[&str],
    ) -> anyhow::Result<(Option<i32>, Vec<u8>, String)> {
        let script = command(self.bin_dir, endpoints, args);
        // Asking etcd changes nothing on the host: the host's state read
        // with its facts stays good.
        let reads_only = matches!(
            args,
            ["member", "list", ..] | ["endpoint", "status" | "health", ..]
        );
        let output = if reads_only {
            self.host.exec_reading(&script).await
        } else {
            self.host.exec(&script).await
        }
        .with_context(|| format!("running etcdctl {} on {}", args.join(" "), self.host.name))?;
        Ok((output.status, output.stdout, output.stderr))
    }

    /// Run etcdctl and require exit status 0.
    async fn run_ok(&self, endpoints: &[String], args: &[&str]) -> anyhow::Result<Vec<u8>> {
        let (status, stdout, stderr) = self.run(endpoints, args).await?;
        if status != Some(0) {
            anyhow::bail!(
                "etcdctl {} on {} failed: {}",
                args.join(" "),
                self.host.name,
                error_of(&stderr)
            );
        }
        Ok(stdout)
    }

    /// The cluster's members, asked through `endpoints`.
    pub(crate) async fn member_list(&self, endpoints: &[String]) -> anyhow::Result<Vec<Member>> {
        let stdout = self
            .run_ok(endpoints, &["member", "list", "-w", "json"])
            .await?;
        parse_member_list(&stdout)
    }

    /// The status of every endpoint that answered, and the error text for
    /// those that did not (empty when all answered).
    pub(crate) async fn endpoint_status(
        &self,
        endpoints: &[String],
    ) -> anyhow::Result<(Vec<EndpointStatus>, String)> {
        let (status, stdout, stderr) = self
            .run(endpoints, &["endpoint", "status", "-w", "json"])
            .await?;
        let statuses = parse_endpoint_status(&stdout)?;
        Ok((
            statuses,
            if status == Some(0) {
                String::new()
            } else {
                stderr
            },
        ))
    }

    /// The health of each of `endpoints` (a linearizable read on each).
    pub(crate) async fn endpoint_health(
        &self,
        endpoints: &[String],
    ) -> anyhow::Result<Vec<EndpointHealth>> {
        let (_, stdout, stderr) = self
            .run(endpoints, &["endpoint", "health", "-w", "json"])
            .await?;
        let mut health = parse_endpoint_health(&stdout)?;
        // Endpoints that did not answer at all are missing from the JSON.
        for endpoint in endpoints {
            if !health.iter().any(|entry| &entry.endpoint == endpoint) {
                health.push(EndpointHealth {
                    endpoint: endpoint.clone(),
                    health: false,
                    error: Some(first_line(&stderr).to_string()),
                });
            }
        }
        Ok(health)
    }
}

impl Etcdctl<'_> {
    /// Add a member named `name` with `peer_url` as a learner (it does not
    /// vote until promoted), through `endpoints`. `Ok(Err(why))` when etcd
    /// refuses for now: a member was unreachable in the last seconds.
    pub(crate) async fn member_add_learner(
        &self,
        endpoints: &[String],
        name: &str,
        peer_url: &str,
    ) -> anyhow::Result<Result<(), String>> {
        let peer_urls = format!("--peer-urls={peer_url}");
        self.reconfigure(
            endpoints,
            &["member", "add", name, &peer_urls, "--learner"],
            &[UNHEALTHY_CLUSTER],
        )
        .await
    }

    /// Promote the learner `id` to a voting member. `Ok(Err(why))` when
    /// etcd refuses for now: the learner has not caught up yet, or a
    /// member was unreachable in the last seconds.
    pub(crate) async fn member_promote(
        &self,
        endpoints: &[String],
        id: u64,
    ) -> anyhow::Result<Result<(), String>> {
        self.reconfigure(
            endpoints,
            &["member", "promote", &format!("{id:x}")],
            &["not in sync", "not ready", UNHEALTHY_CLUSTER],
        )
        .await
    }

    /// Remove member `id` from the cluster. `Ok(Err(why))` when etcd
    /// refuses for now: a member was unreachable in the last seconds.
    pub(crate) async fn member_remove(
        &self,
        endpoints: &[String],
        id: u64,
    ) -> anyhow::Result<Result<(), String>> {
        self.reconfigure(
            endpoints,
            &["member", "remove", &format!("{id:x}")],
            &[UNHEALTHY_CLUSTER],
        )
        .await
    }

    /// Run a membership change: `Ok(Err(why))` when etcd's refusal names
    /// one of `for_now` (try again later), an error for any other failure.
    async fn reconfigure(
        &self,
        endpoints: &[String],
        args: &[&str],
        for_now: &[&str],
    ) -> anyhow::Result<Result<(), String>> {
        let (status, _, stderr) = self.run(endpoints, args).await?;
        if status == Some(0) {
            return Ok(Ok(()));
        }
        let why = error_of(&stderr);
        if for_now.iter().any(|marker| why.contains(marker)) {
            return Ok(Err(why));
        }
        anyhow::bail!(
            "etcdctl {} on {} failed: {why}",
            args[..2.min(args.len())].join(" "),
            self.host.name
        )
    }

    /// Move leadership to `target`, asked of the current leader's endpoint.
    pub(crate) async fn move_leader(
        &self,
        leader_endpoint: &str,
        target: &Member,
    ) -> anyhow::Result<()> {
        self.run_ok(
            &[leader_endpoint.to_string()],
            &["move-leader", &target.hex_id()],
        )
        .await
        .map(drop)
    }
}

/// What etcdctl said went wrong: its last non-empty line (earlier lines
/// are the client's retry warnings, in JSON).
fn error_of(text: &str) -> String {
    text.lines()
        .rev()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("no error output")
        .trim()
        .to_string()
}

/// etcd's refusal of a membership change while a member was unreachable
/// in the last seconds (its strict reconfiguration check).
const UNHEALTHY_CLUSTER: &str = "unhealthy cluster";

fn first_line(text: &str) -> &str {
    text.lines()
        .find(|line| !line.trim().is_empty())
        .unwrap_or("no error output")
        .trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Output of etcd 3.4's etcdctl, as printed.
    const MEMBER_LIST: &str = r#"{"header":{"cluster_id":324952591200643719,"member_id":3319814642761637952,"raft_term":2},"members":[{"ID":3319814642761637952,"name":"a","peerURLs":["http://127.0.0.1:23800"],"clientURLs":["http://127.0.0.1:23790"]},{"ID":8660761990288851623,"peerURLs":["http://127.0.0.1:23801"],"isLearner":true}]}"#;
    const STATUS: &str = r#"[{"Endpoint":"http://127.0.0.1:23790","Status":{"header":{"cluster_id":324952591200643719,"member_id":3319814642761637952,"revision":2,"raft_term":2},"version":"3.4.23","dbSize":20480,"leader":3319814642761637952,"raftIndex":5,"raftTerm":2,"raftAppliedIndex":5,"dbSizeInUse":16384}}]"#;
    const HEALTH: &str =
        r#"[{"endpoint":"http://127.0.0.1:23790","health":true,"took":"1.67846ms"}]"#;

    #[test]
    fn parses_members_including_an_unstarted_learner() {
        let members = parse_member_list(MEMBER_LIST.as_bytes()).expect("parse");
        assert_eq!(members.len(), 2);
        assert_eq!(members[0].name, "a");
        assert_eq!(members[0].hex_id(), "2e1259d415f2a040");
        assert!(members[0].started() && !members[0].is_learner);
        assert!(!members[1].started() && members[1].is_learner);
        assert_eq!(members[1].peer_urls, ["http://127.0.0.1:23801"]);
    }

    #[test]
    fn parses_status_and_health() {
        let status = parse_endpoint_status(STATUS.as_bytes()).expect("parse");
        assert_eq!(status[0].member_id, status[0].leader);
        assert_eq!(status[0].raft_index, 5);
        assert_eq!(status[0].db_size, 20480);
        assert!(parse_endpoint_status(b"\n").expect("empty").is_empty());
        let health = parse_endpoint_health(HEALTH.as_bytes()).expect("parse");
        assert!(health[0].health);
    }

    #[test]
    fn the_command_quotes_every_word() {
        let script = command(
            "/usr/bin",
            &[
                "https://10.0.0.1:2379".into(),
                "https://10.0.0.2:2379".into(),
            ],
            &["member", "list", "-w", "json"],
        );
        assert_eq!(
            script,
            "ETCDCTL_API=3 '/usr/bin/etcdctl' '--endpoints=https://10.0.0.1:2379,https://10.0.0.2:2379' \
             '--cacert=/etc/kubernetes/pki/etcd/ca.crt' '--cert=/etc/kubernetes/pki/etcd/healthcheck-client.crt' \
             '--key=/etc/kubernetes/pki/etcd/healthcheck-client.key' --dial-timeout=2s --command-timeout=5s \
             'member' 'list' '-w' 'json'"
        );
        // A planted metacharacter stays one quoted word.
        let hostile = command("/opt/x'; touch /tmp/p; '", &[], &[]);
        assert!(
            hostile.contains(r"'/opt/x'\''; touch /tmp/p; '\''/etcdctl'"),
            "{hostile}"
        );
    }
}
