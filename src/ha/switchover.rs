//! Planned switchover, run by the primary's HA loop: pause every node's pooler (running
//! transactions finish, new queries wait), stop PostgreSQL cleanly (its last WAL reaches
//! the replicas), let the target take the leader key and promote, start this node as its
//! replica, and resume the poolers once each follows the new primary. Clients see a wait,
//! not an error. And `failover --to`: name the replica to promote when no primary runs.

use std::time::Duration;

use anyhow::{bail, Context};
use serde_json::json;

use super::keys::ClusterKeys;
use super::Node;

/// How long running transactions may take to finish before a switchover gives up.
pub const PAUSE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the target may take to promote.
const TAKEOVER_TIMEOUT: Duration = Duration::from_secs(30);

/// A request to the HA loop, answered with the new primary's name or why not.
pub struct Request {
    pub to: Option<String>,
    pub reply: tokio::sync::oneshot::Sender<Result<String, String>>,
}

/// The replica a switchover goes to: the one named, or the most advanced streaming one.
pub fn choose_target(
    node: &Node,
    cluster: &ClusterKeys,
    to: Option<&str>,
) -> anyhow::Result<String> {
    let me = &node.config.name;
    if cluster.leader_name().as_deref() != Some(me.as_str()) {
        bail!("this node does not hold the leader key");
    }
    let candidates: Vec<_> = cluster
        .members
        .iter()
        .filter(|m| m.name != *me && m.role == "replica" && m.state == "streaming")
        .collect();
    match to {
        Some(name) => {
            let Some(m) = cluster.member(name) else {
                bail!("there is no member named {name}");
            };
            if m.name == *me {
                bail!("{name} is already the primary");
            }
            if !candidates.iter().any(|c| c.name == m.name) {
                bail!(
                    "{name} is not a streaming replica (it is {} / {})",
                    m.role,
                    m.state
                );
            }
            Ok(m.name.clone())
        }
        None => candidates
            .iter()
            .filter(|m| !m.nofailover)
            .max_by(|a, b| {
                a.wal_position
                    .cmp(&b.wal_position)
                    .then(b.name.cmp(&a.name))
            })
            .map(|m| m.name.clone())
            .context("there is no streaming replica to switch over to"),
    }
}

/// POSTs `body` to `path` on every member's agent, signed with the cluster secret. The
/// members are verified records (`ClusterKeys` holds no other).
pub async fn call_everyone(
    node: &Node,
    cluster: &ClusterKeys,
    path: &str,
    body: serde_json::Value,
    timeout: Duration,
) -> anyhow::Result<()> {
    let body = serde_json::to_vec(&body)?;
    let calls = cluster.members.iter().map(|m| {
        let body = body.clone();
        async move {
            let answer =
                super::peer::call(node, m, reqwest::Method::POST, path, body, timeout).await?;
            let status = answer.status();
            if !status.is_success() {
                let text = answer.text().await.unwrap_or_default();
                bail!("{}: {path}: {status}: {text}", m.name);
            }
            Ok(())
        }
    });
    for result in futures::future::join_all(calls).await {
        result?;
    }
    Ok(())
}

/// Waits until `target` holds the leader key and runs as primary; the cluster then.
pub async fn wait_for_leader(node: &Node, target: &str) -> anyhow::Result<ClusterKeys> {
    let deadline = tokio::time::Instant::now() + TAKEOVER_TIMEOUT;
    loop {
        if let Ok(cluster) = node.read_cluster().await {
            let primary = cluster.member(target).is_some_and(|m| m.role == "primary");
            if cluster.leader_name().as_deref() == Some(target) && primary {
                return Ok(cluster);
            }
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("{target} did not take over within {TAKEOVER_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The standby files that make this node follow `target` once it leads.
pub fn follow(node: &Node, cluster: &ClusterKeys, target: &str) -> anyhow::Result<()> {
    let upstream = cluster.member(target).map(|m| node.upstream(m));
    node.write_standby(upstream.as_ref())?;
    Ok(())
}

pub fn resume_body(primary: Option<&str>) -> serde_json::Value {
    json!({ "primary": primary })
}
