//! The HA cluster: `GET /cluster` (what `pgplatform cluster status` shows) and, for
//! admins, `POST /cluster/pause` and `/cluster/resume` (automatic failover off and on).

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use crate::api::error::ApiError;
use crate::api::ApiState;

fn not_ha() -> ApiError {
    ApiError::BadRequest("this node is not part of an HA cluster (no [ha] etcd endpoints)".into())
}

pub async fn status(State(state): State<Arc<ApiState>>) -> Result<Json<Value>, ApiError> {
    let view = state.cluster.as_ref().ok_or_else(not_ha)?.borrow().clone();
    let primary_position = view
        .members
        .iter()
        .find(|m| Some(&m.name) == view.leader.as_ref() && m.role == "primary")
        .map_or(view.optime, |m| m.wal_position.max(view.optime));
    let members: Vec<Value> = view
        .members
        .iter()
        .map(|m| {
            let leader = Some(&m.name) == view.leader.as_ref();
            let eligibility = view.eligibility.iter().find(|(n, _)| *n == m.name);
            json!({
                "name": m.name,
                "host": m.host,
                "port": m.postgres_port,
                "api_url": m.api_url,
                "pooler_port": m.pooler_port,
                "role": match m.role.as_str() {
                    "primary" if leader => "leader",
                    "replica" if view.sync.contains(&m.name) => "sync_standby",
                    role => role,
                },
                "state": m.state,
                "timeline": m.timeline,
                "lag_bytes": (m.role == "replica")
                    .then(|| primary_position.saturating_sub(m.wal_position)),
                "following": m.following,
                "nofailover": m.nofailover,
                "eligible": eligibility.map(|(_, why)| why.is_none()),
                "ineligible_because": eligibility.and_then(|(_, why)| why.clone()),
            })
        })
        .collect();
    Ok(Json(json!({
        "cluster": view.cluster,
        "me": view.me,
        "leader": view.leader,
        "paused": view.paused,
        "synchronous": view.sync,
        "etcd_reachable": view.etcd_reachable,
        "last_action": view.last_action,
        "members": members,
    })))
}

pub async fn pause(State(state): State<Arc<ApiState>>) -> Result<Json<Value>, ApiError> {
    let node = state.ha_node.as_ref().ok_or_else(not_ha)?;
    node.etcd
        .put(&node.keys.paused(), b"paused", None)
        .await
        .map_err(|e| ApiError::Unavailable(format!("etcd: {e:#}")))?;
    Ok(Json(json!({ "paused": true })))
}

pub async fn resume(State(state): State<Arc<ApiState>>) -> Result<Json<Value>, ApiError> {
    let node = state.ha_node.as_ref().ok_or_else(not_ha)?;
    node.etcd
        .delete(&node.keys.paused())
        .await
        .map_err(|e| ApiError::Unavailable(format!("etcd: {e:#}")))?;
    Ok(Json(json!({ "paused": false })))
}

#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Target {
    pub to: Option<String>,
}

/// A planned switchover. On a replica it is forwarded to the primary's agent.
pub async fn switchover(
    State(state): State<Arc<ApiState>>,
    Json(target): Json<Target>,
) -> Result<Json<Value>, ApiError> {
    let node = state.ha_node.as_ref().ok_or_else(not_ha)?;
    let view = state.cluster.as_ref().ok_or_else(not_ha)?.borrow().clone();
    let Some(leader) = view.leader.clone() else {
        return Err(ApiError::BadRequest(
            "there is no primary to switch over from; use `pgplatform failover --to NODE`".into(),
        ));
    };
    if leader != node.config.name {
        let member = view
            .members
            .iter()
            .find(|m| m.name == leader)
            .ok_or_else(|| {
                ApiError::Unavailable(format!("the primary {leader} is not reachable"))
            })?;
        return forward(node, member, "/cluster/switchover", &target).await;
    }
    let sender = state.switchover.as_ref().ok_or_else(not_ha)?;
    let (reply, answer) = tokio::sync::oneshot::channel();
    sender
        .send(crate::ha::switchover::Request {
            to: target.to,
            reply,
        })
        .await
        .map_err(|_| ApiError::Unavailable("the HA loop has stopped".into()))?;
    match answer.await {
        Ok(Ok(primary)) => Ok(Json(json!({ "primary": primary }))),
        Ok(Err(why)) => Err(ApiError::BadRequest(why)),
        Err(_) => Err(ApiError::Unavailable("the HA loop has stopped".into())),
    }
}

/// Promotes the named replica when no primary runs (the operator's decision, so the lag
/// rule and `cluster pause` do not stop it).
pub async fn failover(
    State(state): State<Arc<ApiState>>,
    Json(target): Json<Target>,
) -> Result<Json<Value>, ApiError> {
    let node = state.ha_node.as_ref().ok_or_else(not_ha)?;
    let view = state.cluster.as_ref().ok_or_else(not_ha)?.borrow().clone();
    let to = target
        .to
        .ok_or_else(|| ApiError::BadRequest("failover needs --to NODE".into()))?;
    if let Some(leader) = &view.leader {
        return Err(ApiError::BadRequest(format!(
            "{leader} holds the leader key; use `pgplatform switchover --to {to}` for a planned change"
        )));
    }
    let member = view
        .members
        .iter()
        .find(|m| m.name == to)
        .ok_or_else(|| ApiError::BadRequest(format!("there is no member named {to}")))?;
    if member.role != "replica" {
        return Err(ApiError::BadRequest(format!(
            "{to} cannot be promoted: its PostgreSQL is {}",
            member.state
        )));
    }
    node.etcd
        .put(&node.keys.switchover(), to.as_bytes(), None)
        .await
        .map_err(|e| ApiError::Unavailable(format!("etcd: {e:#}")))?;
    if let Err(e) = crate::ha::switchover::wait_for_leader(node, &to)
        .await
        .map(|_| ())
    {
        let _ = node.etcd.delete(&node.keys.switchover()).await;
        return Err(ApiError::Unavailable(format!("{e:#}")));
    }
    Ok(Json(json!({ "primary": to })))
}

/// Sends the request on to the primary's agent (a verified member record), signed.
async fn forward(
    node: &crate::ha::Node,
    primary: &crate::ha::MemberRecord,
    path: &str,
    body: &Target,
) -> Result<Json<Value>, ApiError> {
    let body = serde_json::to_vec(&json!({ "to": body.to }))
        .map_err(|e| ApiError::BadRequest(format!("{e}")))?;
    let answer = crate::ha::peer::call(
        node,
        primary,
        reqwest::Method::POST,
        path,
        body,
        std::time::Duration::from_secs(120),
    )
    .await
    .map_err(|e| ApiError::Unavailable(format!("the primary's agent: {e:#}")))?;
    let status = answer.status();
    let value: Value = answer
        .json()
        .await
        .map_err(|e| ApiError::Unavailable(format!("the primary's agent: {e}")))?;
    if status.is_success() {
        Ok(Json(value))
    } else {
        let message = value["error"].as_str().unwrap_or("failed").to_owned();
        Err(if status.is_client_error() {
            ApiError::BadRequest(message)
        } else {
            ApiError::Unavailable(message)
        })
    }
}

#[derive(serde::Deserialize)]
pub struct FailsafeBody {
    leader: String,
}

/// Failsafe: a primary cut off from etcd asks whether this node still follows it. Yes
/// only if this node is a replica that cannot reach etcd either (so it cannot be
/// promoted) and last saw the caller lead.
pub async fn failsafe(
    State(state): State<Arc<ApiState>>,
    Json(body): Json<FailsafeBody>,
) -> Result<Json<Value>, ApiError> {
    let node = state.ha_node.as_ref().ok_or_else(not_ha)?;
    let view = state.cluster.as_ref().ok_or_else(not_ha)?.borrow().clone();
    let local = crate::ha::local::observe(
        &node.socket_dir,
        node.port,
        std::time::Duration::from_millis(500),
    )
    .await;
    if view.etcd_reachable {
        return Err(ApiError::Conflict("this node reaches etcd".into()));
    }
    if view.leader.as_deref() != Some(body.leader.as_str()) {
        return Err(ApiError::Conflict(format!(
            "this node does not follow {}",
            body.leader
        )));
    }
    if local.role != crate::ha::decide::Role::Replica {
        return Err(ApiError::Conflict(
            "this node is not a running replica".into(),
        ));
    }
    node.note_failsafe_ack();
    Ok(Json(json!({ "follows": body.leader })))
}

/// After a tenant change on the primary: every replica renders pg_hba.conf once it has
/// replayed the change, so the tenant reaches replicas as soon as the command returns.
pub async fn tenants_changed(state: &ApiState) {
    let (Some(node), Some(cluster)) = (&state.ha_node, &state.cluster) else {
        return;
    };
    let lsn = match current_lsn(node).await {
        Ok(lsn) => lsn,
        Err(e) => {
            tracing::warn!("read the WAL position after a tenant change: {e:#}");
            return;
        }
    };
    let replicas = cluster
        .borrow()
        .members
        .iter()
        .filter(|m| m.name != node.config.name && m.role == "replica")
        .cloned()
        .collect();
    let others = crate::ha::keys::ClusterKeys {
        members: replicas,
        ..Default::default()
    };
    if let Err(e) = crate::ha::switchover::call_everyone(
        node,
        &others,
        "/cluster/tenants-changed",
        json!({ "lsn": lsn }),
        std::time::Duration::from_secs(10),
    )
    .await
    {
        tracing::warn!("replicas will pick the tenant change up within seconds: {e:#}");
    }
}

async fn current_lsn(node: &crate::ha::Node) -> anyhow::Result<i64> {
    let client = crate::pg::connect::superuser(&node.socket_dir, node.port, "postgres").await?;
    let row = client
        .query_one("SELECT (pg_current_wal_lsn() - '0/0'::pg_lsn)::bigint", &[])
        .await?;
    Ok(row.try_get(0)?)
}

#[derive(serde::Deserialize)]
pub struct ChangedBody {
    lsn: i64,
}

/// On a replica: wait (up to 5 s) until `lsn` is replayed, then render pg_hba.conf.
pub async fn tenants_changed_here(
    State(state): State<Arc<ApiState>>,
    Json(body): Json<ChangedBody>,
) -> Result<Json<Value>, ApiError> {
    let node = state.ha_node.as_ref().ok_or_else(not_ha)?;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let local = crate::ha::local::observe(
            &node.socket_dir,
            node.port,
            std::time::Duration::from_secs(1),
        )
        .await;
        if local.replay_position as i64 >= body.lsn || tokio::time::Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    state
        .tenants
        .bootstrap_replica()
        .await
        .map_err(|e| ApiError::Unavailable(format!("render pg_hba.conf: {e:#}")))?;
    Ok(Json(json!({ "synced": true })))
}

/// PAUSE this node's pooler (a switchover step, called by the primary's agent).
pub async fn pause_pooler(State(state): State<Arc<ApiState>>) -> Result<Json<Value>, ApiError> {
    if let Some(pooler) = &state.pooler {
        pooler
            .pause_all(crate::ha::switchover::PAUSE_TIMEOUT)
            .await
            .map_err(|e| ApiError::Unavailable(format!("{e:#}")))?;
    }
    Ok(Json(json!({ "paused": true })))
}

#[derive(serde::Deserialize)]
pub struct ResumeBody {
    primary: Option<String>,
}

/// RESUME this node's pooler, once it routes to `primary` (when named).
pub async fn resume_pooler(
    State(state): State<Arc<ApiState>>,
    Json(body): Json<ResumeBody>,
) -> Result<Json<Value>, ApiError> {
    if let (Some(primary), Some(cluster)) = (&body.primary, &state.cluster) {
        let mut cluster = cluster.clone();
        let follows = cluster.wait_for(|v| {
            v.leader.as_ref() == Some(primary)
                && v.primary_target() != crate::pooler::PgTarget::Unknown
        });
        if tokio::time::timeout(std::time::Duration::from_secs(15), follows)
            .await
            .is_err()
        {
            tracing::warn!("resuming the pooler before this node saw {primary} as primary");
        }
    }
    if let Some(pooler) = &state.pooler {
        pooler.resume_all();
    }
    Ok(Json(json!({ "paused": false })))
}
