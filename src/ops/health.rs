//! Health gates: each a check against the real thing (etcd through
//! etcdctl, the apiserver's `/readyz`, kubelet's healthz, a unit's state, the
//! VIP on an interface), polled until it passes or its timeout ends. A
//! timeout fails naming the host, the phase and what was not healthy; there
//! is never a fixed sleep standing in for a check.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::inventory::{Cluster, Node};
use crate::remote::etcdctl::{EndpointStatus, Etcdctl, Member};
use crate::remote::Host;

use super::status::{client_url, url_host};

/// How far (in raft entries) a member may trail the leader and still count
/// as caught up.
pub(crate) const CAUGHT_UP_GAP: u64 = 50;

/// How often a gate asks again.
const POLL: Duration = Duration::from_millis(500);

/// Poll `check` until it returns `Ok(None)` (healthy) or `timeout` passes;
/// `Ok(Some(why))` is "not yet". The timeout error names `host`, `phase`,
/// `what` and the last reason.
pub(crate) async fn wait<F, Fut>(
    host: &str,
    phase: &str,
    what: &str,
    timeout: Duration,
    mut check: F,
) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<String>>>,
{
    wait_value(host, phase, what, timeout, || {
        let attempt = check();
        async move { Ok(attempt.await?.map_or(Ok(()), Err)) }
    })
    .await
}

/// Like [`wait`], for a check that yields a value once healthy:
/// `Ok(Ok(value))` is healthy, `Ok(Err(why))` is "not yet".
pub(crate) async fn wait_value<T, F, Fut>(
    host: &str,
    phase: &str,
    what: &str,
    timeout: Duration,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Result<T, String>>>,
{
    let _timer = crate::timings::step("health gates");
    let started = Instant::now();
    loop {
        let last = match check().await {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(why)) => why,
            Err(error) => format!("{error:#}"),
        };
        if started.elapsed() >= timeout {
            anyhow::bail!(
                "{host}: {phase}: {what} not healthy within {}s: {last}",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(POLL).await;
    }
}

/// etcd as seen from one master: members and the status of each endpoint.
pub(crate) struct EtcdView {
    pub(crate) members: Vec<Member>,
    pub(crate) statuses: Vec<EndpointStatus>,
    pub(crate) unhealthy: Vec<String>,
}

impl EtcdView {
    /// The leader's member id, if any member reports one.
    pub(crate) fn leader(&self) -> Option<u64> {
        self.statuses
            .iter()
            .map(|status| status.leader)
            .find(|leader| *leader != 0)
    }

    pub(crate) fn member_named(&self, name: &str) -> Option<&Member> {
        self.members.iter().find(|member| member.name == name)
    }

    /// The client URLs of the started members: where requests go.
    pub(crate) fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .filter_map(|member| member.client_urls.first().cloned())
            .collect()
    }

    /// How far `member` trails the leader, when both report a status.
    pub(crate) fn lag(&self, member: &Member) -> Option<u64> {
        let leader = self.leader()?;
        let leader_index = self
            .statuses
            .iter()
            .find(|status| status.member_id == leader)?
            .raft_index;
        Some(leader_index.saturating_sub(self.status_of(member)?.raft_index))
    }

    /// Whether `member` answers a linearizable read (a voting member).
    pub(crate) fn healthy(&self, member: &Member) -> bool {
        member.started()
            && !member.is_learner
            && self.status_of(member).is_some()
            && !member.client_urls.iter().any(|url| {
                self.unhealthy
                    .iter()
                    .any(|line| line.starts_with(url.as_str()))
            })
    }

    fn status_of(&self, member: &Member) -> Option<&EndpointStatus> {
        self.statuses
            .iter()
            .find(|status| status.member_id == member.id)
    }

    /// `None` when every member is started, voting, healthy and within
    /// [`CAUGHT_UP_GAP`] of the leader; else what is wrong.
    pub(crate) fn problem(&self) -> Option<String> {
        self.problem_without(&[])
    }

    /// [`EtcdView::problem`], leaving out the members `skip` (a learner
    /// being added is not yet expected to be healthy).
    pub(crate) fn problem_without(&self, skip: &[u64]) -> Option<String> {
        let Some(leader) = self.leader() else {
            return Some("no member reports a leader".into());
        };
        let leader_index = self
            .statuses
            .iter()
            .find(|status| status.member_id == leader)
            .map(|status| status.raft_index)?;
        let skipped_endpoints: Vec<&String> = self
            .members
            .iter()
            .filter(|member| skip.contains(&member.id))
            .flat_map(|member| &member.client_urls)
            .collect();
        let mut problems: Vec<String> = self
            .unhealthy
            .iter()
            .filter(|line| {
                !skipped_endpoints
                    .iter()
                    .any(|endpoint| line.starts_with(endpoint.as_str()))
            })
            .cloned()
            .collect();
        for member in self
            .members
            .iter()
            .filter(|member| !skip.contains(&member.id))
        {
            let name = if member.started() {
                member.name.clone()
            } else {
                format!("member {}", member.hex_id())
            };
            match self.status_of(member) {
                None => problems.push(format!("{name} does not answer")),
                Some(status) => {
                    if !status.errors.is_empty() {
                        problems.push(format!("{name}: {}", status.errors.join(", ")));
                    }
                    if leader_index.saturating_sub(status.raft_index) > CAUGHT_UP_GAP {
                        problems.push(format!(
                            "{name} is behind the leader (raft index {} of {leader_index})",
                            status.raft_index
                        ));
                    }
                }
            }
            if member.is_learner {
                problems.push(format!("{name} is a learner"));
            }
        }
        problems.sort();
        problems.dedup();
        (!problems.is_empty()).then(|| problems.join("; "))
    }
}

/// Read etcd's view through etcdctl on `host`: the member list (asked of
/// every inventory master's endpoint), then status and health of each
/// member's own endpoint.
pub(crate) async fn etcd_view(cluster: &Cluster, host: &Host) -> anyhow::Result<EtcdView> {
    let etcdctl = Etcdctl {
        host,
        bin_dir: &cluster.install.bin_dir,
    };
    let endpoints: Vec<String> = cluster.masters.iter().map(client_url).collect();
    let members = etcdctl.member_list(&endpoints).await?;
    let member_endpoints: Vec<String> = members
        .iter()
        .filter_map(|member| member.client_urls.first().cloned())
        .collect();
    let (statuses, _) = etcdctl.endpoint_status(&member_endpoints).await?;
    let health = etcdctl.endpoint_health(&member_endpoints).await?;
    let unhealthy = health
        .iter()
        .filter(|entry| !entry.health)
        .map(|entry| {
            format!(
                "{} unhealthy{}",
                entry.endpoint,
                entry
                    .error
                    .as_deref()
                    .map(|error| format!(": {error}"))
                    .unwrap_or_default()
            )
        })
        .collect();
    Ok(EtcdView {
        members,
        statuses,
        unhealthy,
    })
}

/// Wait until etcd, asked on `host`, has every member healthy and caught
/// up, and (when given) `expect` members.
pub(crate) async fn wait_etcd_healthy(
    cluster: &Cluster,
    host: &Host,
    subject: &str,
    phase: &str,
    expect: Option<usize>,
    timeout: Duration,
) -> anyhow::Result<()> {
    wait(subject, phase, "etcd", timeout, || async {
        let view = etcd_view(cluster, host).await?;
        if let Some(expected) = expect {
            if view.members.len() != expected {
                return Ok(Some(format!(
                    "{} member(s), expected {expected}",
                    view.members.len()
                )));
            }
        }
        Ok(view.problem())
    })
    .await
}

/// The script asking the local apiserver's `/readyz` with the admin
/// identity, verified against the cluster CA.
pub(crate) fn readyz_script(node: &Node) -> String {
    super::status::host_script(
        &[],
        None,
        Some(&format!("https://{}:6443/readyz", url_host(node.address))),
    )
}

/// Wait for `node`'s apiserver to answer `/readyz`.
pub(crate) async fn wait_apiserver_ready(
    host: &Host,
    node: &Node,
    phase: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let script = readyz_script(node);
    wait(&node.name, phase, "apiserver /readyz", timeout, || async {
        let output = host.exec(&script).await?;
        let text = String::from_utf8_lossy(&output.stdout);
        let (_, _, apiserver) = super::status::parse_host_output(&text);
        Ok(match apiserver {
            Some(status) if status.ready => None,
            Some(status) => Some(status.detail),
            None => Some("no answer".into()),
        })
    })
    .await
}

/// Wait for kubelet's local healthz on `host`.
pub(crate) async fn wait_kubelet_healthy(
    host: &Host,
    phase: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    let script = "curl -s --max-time 2 http://127.0.0.1:10248/healthz 2>&1 || true";
    wait(&host.name, phase, "kubelet healthz", timeout, || async {
        let output = host.exec(script).await?;
        let text = String::from_utf8_lossy(&output.stdout).trim().to_string();
        Ok((text != "ok").then(|| {
            if text.is_empty() {
                "no answer on 127.0.0.1:10248".to_string()
            } else {
                crate::input_file::excerpt(&text, 120)
            }
        }))
    })
    .await
}

/// Wait for a unit to be active on `host`.
pub(crate) async fn wait_unit_active(
    host: &Host,
    unit: &str,
    phase: &str,
    timeout: Duration,
) -> anyhow::Result<()> {
    wait(&host.name, phase, unit, timeout, || async {
        let state = crate::remote::systemd::is_active(host, unit).await?;
        Ok((state != "active").then(|| format!("{unit} is {state}")))
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: u64, name: &str) -> Member {
        Member {
            id,
            name: name.into(),
            peer_urls: vec![],
            client_urls: vec![format!("https://{name}:2379")],
            is_learner: false,
        }
    }

    fn status(id: u64, leader: u64, raft_index: u64) -> EndpointStatus {
        EndpointStatus {
            endpoint: String::new(),
            member_id: id,
            leader,
            raft_index,
            raft_applied_index: raft_index,
            raft_term: 2,
            db_size: 1,
            version: "3.4.23".into(),
            is_learner: false,
            errors: vec![],
        }
    }

    #[test]
    fn a_member_far_behind_the_leader_or_silent_is_not_healthy() {
        let view = EtcdView {
            members: vec![member(1, "m1"), member(2, "m2"), member(3, "m3")],
            statuses: vec![status(1, 1, 1000), status(2, 1, 990), status(3, 1, 900)],
            unhealthy: vec![],
        };
        assert_eq!(view.leader(), Some(1));
        assert_eq!(
            view.problem().as_deref(),
            Some("m3 is behind the leader (raft index 900 of 1000)")
        );
        let view = EtcdView {
            members: vec![member(1, "m1"), member(2, "m2")],
            statuses: vec![status(1, 1, 10)],
            unhealthy: vec![],
        };
        assert_eq!(view.problem().as_deref(), Some("m2 does not answer"));
        let view = EtcdView {
            members: vec![member(1, "m1")],
            statuses: vec![status(1, 1, 10)],
            unhealthy: vec![],
        };
        assert_eq!(view.problem(), None);
    }

    #[tokio::test]
    async fn a_wait_that_never_passes_names_host_phase_and_reason() {
        let error = wait("m1", "etcd", "etcd", Duration::from_millis(10), || async {
            Ok(Some("m2 does not answer".to_string()))
        })
        .await
        .expect_err("times out");
        assert_eq!(
            error.to_string(),
            "m1: etcd: etcd not healthy within 0s: m2 does not answer"
        );
    }
}
