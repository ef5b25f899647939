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
                "role": if leader && m.role == "primary" { "leader" } else { m.role.as_str() },
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
