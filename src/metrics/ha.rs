//! HA metrics under Patroni's names (its `/metrics`), labelled `scope` (the cluster) and
//! `name` (this node) as Patroni does, so its dashboards and alerts apply, plus member
//! counts of our own.

use super::exposition::Exposition;
use crate::ha::ClusterView;

pub fn cluster(out: &mut Exposition, view: &ClusterView) {
    let labels = [("scope", view.cluster.as_str()), ("name", view.me.as_str())];
    let me = view.members.iter().find(|m| m.name == view.me);
    let leader = view.leader.as_deref() == Some(view.me.as_str());
    let role = me.map_or("down", |m| m.role.as_str());
    let flag = |b: bool| if b { 1.0 } else { 0.0 };
    out.gauge(
        "patroni_primary",
        "Whether this node is the primary (holds the leader key and runs as primary).",
        &labels,
        flag(leader && role == "primary"),
    );
    out.gauge(
        "patroni_replica",
        "Whether this node runs as a replica.",
        &labels,
        flag(role == "replica"),
    );
    out.gauge(
        "patroni_sync_standby",
        "Whether this node is a synchronous standby.",
        &labels,
        flag(view.sync.contains(&view.me)),
    );
    out.gauge(
        "patroni_postgres_running",
        "Whether PostgreSQL runs on this node.",
        &labels,
        flag(role != "down"),
    );
    out.gauge(
        "patroni_postgres_timeline",
        "PostgreSQL's timeline on this node.",
        &labels,
        me.map_or(0.0, |m| f64::from(m.timeline)),
    );
    if let Some(m) = me {
        let (name, help) = if role == "primary" {
            (
                "patroni_xlog_location",
                "Current WAL position of the primary, in bytes.",
            )
        } else {
            (
                "patroni_xlog_received_location",
                "WAL received by this replica, in bytes.",
            )
        };
        out.gauge(name, help, &labels, m.wal_position as f64);
        if role == "replica" {
            out.gauge(
                "patroni_xlog_replayed_location",
                "WAL replayed by this replica, in bytes.",
                &labels,
                m.replay_position as f64,
            );
        }
    }
    out.gauge(
        "patroni_cluster_unlocked",
        "Whether the leader key is free (no primary).",
        &labels,
        flag(view.leader.is_none()),
    );
    out.gauge(
        "patroni_is_paused",
        "Whether automatic failover is paused.",
        &labels,
        flag(view.paused),
    );
    out.gauge(
        "pgplatform_ha_etcd_reachable",
        "Whether this node's last look at etcd succeeded.",
        &labels,
        flag(view.etcd_reachable),
    );
    for state in ["primary", "replica", "down"] {
        let count = view.members.iter().filter(|m| m.role == state).count();
        out.gauge(
            "pgplatform_ha_members",
            "Cluster members by role, as this node sees them.",
            &[("scope", view.cluster.as_str()), ("role", state)],
            count as f64,
        );
    }
}
