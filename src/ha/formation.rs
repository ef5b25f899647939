//! Joining the cluster at `up`, before PostgreSQL starts. Exactly one node bootstraps (it
//! wins the `initialize` key by a transaction and runs initdb); every other new node
//! clones the primary. A node with data starts as a replica: the HA loop promotes it if
//! it should lead, so a restarted former primary never accepts writes on its own.

use std::time::Duration;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use super::keys::ClusterKeys;
use super::{replica, Node};

/// Whether this node may create the cluster secret at `path`: only when the file is
/// missing and etcd says the cluster was never bootstrapped. An etcd that does not
/// answer (down, or refusing this node's credentials) is not a "no": a node that cannot
/// tell must not invent a secret of its own. Waits up to a minute for an answer.
pub async fn may_create_secret(
    etcd: &super::etcd::Etcd,
    keys: &super::keys::Keys,
    path: &std::path::Path,
) -> anyhow::Result<bool> {
    if path.exists() {
        return Ok(false);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        match etcd.get(&keys.initialize()).await {
            Ok(found) => return Ok(found.is_none()),
            Err(e) if tokio::time::Instant::now() >= deadline => {
                return Err(e).context(format!(
                    "the cluster secret {} is missing and etcd does not say whether the \
                     cluster exists, so it is not created",
                    path.display()
                ))
            }
            Err(e) => tracing::warn!("etcd does not answer ({e:#}); retrying"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Prepares the data directory. `Ok(false)` when shutdown came first.
/// `backups`: the backup repository, when configured; a new replica starts from its newest
/// base backup of this cluster if there is one (sparing the primary), else from the
/// primary itself.
pub async fn prepare(
    node: &Node,
    backups: Option<&crate::backup::context::Context>,
    shutdown: &CancellationToken,
) -> anyhow::Result<bool> {
    let me = &node.config.name;
    if node.pgdata.join("PG_VERSION").exists() {
        let upstream = match read(node).await {
            Ok(cluster) => leader_upstream(node, &cluster),
            Err(e) => {
                tracing::warn!("etcd does not answer ({e:#}); starting as a replica of nobody yet");
                None
            }
        };
        if !crate::pg::is_standby(&node.pgdata) {
            tracing::info!(
                "this node's data was a primary; it starts as a replica and the cluster \
                 decides who leads"
            );
            if let Some(upstream) = &upstream {
                // It may have diverged from the new primary: rewind now rather than after
                // a failed attempt to stream.
                if let Err(e) = replica::rewind(node, upstream).await {
                    tracing::warn!("{e:#}; the HA loop retries or clones anew");
                }
            }
        }
        node.write_standby(upstream.as_ref())?;
        return Ok(true);
    }
    let mut waiting_logged = false;
    loop {
        match node
            .etcd
            .create(&node.keys.initialize(), me.as_bytes(), None)
            .await
        {
            Ok(won) => {
                let bootstrapper = match &won {
                    Ok(_) => true,
                    // We won before but did not finish: initdb again.
                    Err(holder) => holder.value == me.as_bytes(),
                };
                if bootstrapper {
                    tracing::info!(
                        cluster = %node.config.cluster,
                        "bootstrapping the cluster on this node"
                    );
                    crate::pg::initdb::initdb(&node.binaries, &node.pgdata, node.run_as.as_ref())
                        .await?;
                    return Ok(true);
                }
                let cluster = read(node).await?;
                if let Some(upstream) = leader_upstream(node, &cluster) {
                    let primary_id = cluster
                        .member(&upstream.name)
                        .map(|m| m.system_identifier.clone())
                        .unwrap_or_default();
                    if let (Some(ctx), false) = (backups, primary_id.is_empty()) {
                        match replica::clone_from_backup(node, ctx, &primary_id).await {
                            Ok(id) => {
                                tracing::info!(backup = %id, "cloned from the backup repository");
                                node.write_standby(Some(&upstream))?;
                                return Ok(true);
                            }
                            Err(e) => tracing::info!("{e:#}; cloning the primary instead"),
                        }
                    }
                    match replica::clone(node, &upstream).await {
                        Ok(()) => {
                            node.write_standby(Some(&upstream))?;
                            return Ok(true);
                        }
                        Err(e) => tracing::warn!("{e:#}; retrying"),
                    }
                } else if !waiting_logged {
                    tracing::info!("waiting for the cluster's primary to clone from");
                    waiting_logged = true;
                }
            }
            Err(e) => tracing::warn!("etcd does not answer ({e:#}); retrying"),
        }
        let pause = tokio::time::sleep(Duration::from_secs(1));
        if shutdown.run_until_cancelled(pause).await.is_none() {
            return Ok(false);
        }
    }
}

/// Replaces this replica's data with a fresh clone of the primary, keeping this node's
/// own configuration files.
pub async fn reclone(node: &Node) -> anyhow::Result<()> {
    let cluster = read(node).await?;
    let upstream =
        leader_upstream(node, &cluster).context("there is no running primary to clone from")?;
    replica::clone(node, &upstream).await?;
    node.write_standby(Some(&upstream))?;
    Ok(())
}

async fn read(node: &Node) -> anyhow::Result<ClusterKeys> {
    node.read_cluster()
        .await
        .context("read the cluster from etcd")
}

/// The primary to stream from: the leader key's holder, when it runs as primary.
fn leader_upstream(node: &Node, cluster: &ClusterKeys) -> Option<replica::Upstream> {
    let leader = cluster.leader_name()?;
    if leader == node.config.name {
        return None;
    }
    let member = cluster.member(&leader)?;
    (member.role == "primary").then(|| node.upstream(member))
}
