//! The HA loop: every `loop_wait`, look at the local PostgreSQL and at etcd, decide, act.
//!
//! Timing (ttl 3 s, loop_wait 0.25 s): the primary renews its lease every loop; if it has
//! not renewed for `ttl - fence_margin` it stops PostgreSQL at once, before the lease can
//! expire for the others. Replicas see the leader key vanish within a loop of its expiry
//! and the most advanced eligible one takes it and promotes.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::decide::{self, Action, Member, Observation, Policy, Role};
use super::keys::{self, ClusterKeys, MemberRecord};
use super::local::{self, LocalState};
use super::switchover::{self, PAUSE_TIMEOUT};
use super::{replica, ClusterView, Node};
use crate::supervisor::{Maintenance, PostgresState, PostgresStatus};

/// A replica that has not streamed for this long is rewound (or cloned anew). Longer
/// than PostgreSQL's wal_retrieve_retry_interval (5 s), so one failed attempt to stream
/// (a primary still starting) does not cost a restart.
const REJOIN_AFTER: Duration = Duration::from_secs(12);

#[derive(Clone)]
pub struct Loop {
    pub node: Arc<Node>,
    pub supervisor: mpsc::Sender<Maintenance>,
    pub postgres: watch::Receiver<PostgresStatus>,
    pub view: watch::Sender<ClusterView>,
    /// Where this node's pooler sends tenant connections.
    pub primary: watch::Sender<Vec<crate::pooler::PgTarget>>,
    /// Where the read-only listener sends them.
    pub replicas: watch::Sender<Vec<crate::pooler::PgTarget>>,
    /// pg_hba.conf follows the replicated tenant registry on every node.
    pub tenants: Arc<crate::tenants::Tenants>,
}

/// How often a replica renders pg_hba.conf from the replicated registry, in loops.
const HBA_SYNC_EVERY: u32 = 20;

/// This node's hold on its etcd lease.
struct LeaseState {
    id: Option<i64>,
    /// When the last successful renewal was sent: the lease lasts `ttl` from before then.
    renewed_at: Option<Instant>,
}

#[derive(Default)]
struct Memory {
    down_since: Option<Instant>,
    not_streaming_since: Option<Instant>,
    /// The leader key's revision when this node holds it.
    leader_revision: Option<i64>,
    last_action: String,
    rounds: u32,
    /// The cluster as etcd last showed it (a switchover chooses its target from it).
    last_cluster: Option<ClusterKeys>,
    /// The loop's own connection to the local PostgreSQL, kept across rounds.
    postgres: Option<tokio_postgres::Client>,
}

/// Test-only fault injection: when this variable names a file, the loop panics at the
/// first round that finds the file there (removing it first, so the restarted loop runs).
/// The integration tests use it to check that a dead loop fences the node.
const PANIC_FILE_VAR: &str = "PGPLATFORM_TEST_HA_LOOP_PANIC_FILE";

pub async fn task_main(
    ha: Loop,
    requests: &mut mpsc::Receiver<switchover::Request>,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let panic_file = std::env::var_os(PANIC_FILE_VAR).map(std::path::PathBuf::from);
    let node = ha.node.clone();
    let policy = Policy {
        maximum_lag_on_failover: node.config.maximum_lag_on_failover,
        sync: node.config.synchronous,
        fence_margin: node.config.ttl / 3,
        restart_grace: node.config.ttl / 2,
    };
    let mut lease = LeaseState {
        id: None,
        renewed_at: None,
    };
    let mut memory = Memory::default();
    let mut tick = tokio::time::interval(node.config.loop_wait);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            Some(request) = requests.recv() => {
                let result = ha.switchover(request.to, &policy, &mut lease, &mut memory).await;
                if let Err(e) = &result {
                    tracing::error!("switchover: {e:#}");
                }
                let _ = request.reply.send(result.map_err(|e| format!("{e:#}")));
                continue;
            }
            () = shutdown.cancelled() => break,
        }
        if let Some(file) = &panic_file {
            if std::fs::remove_file(file).is_ok() {
                panic!("test-only fault injection ({PANIC_FILE_VAR})");
            }
        }
        if let Err(e) = ha.round(&policy, &mut lease, &mut memory).await {
            tracing::error!("HA loop: {e:#}");
        }
    }
    ha.hand_over(&lease, &memory).await;
    Ok(())
}

/// When the loop itself died (it renews the lease, and fences in `Demote`): stop writes
/// at once, exactly as a leader that cannot reach etcd does, and come back as a standby;
/// the restarted loop then finds its own leader key and takes it again (or follows).
pub async fn fence_without_loop(node: &Node, supervisor: &mpsc::Sender<Maintenance>) {
    if crate::pg::is_standby(&node.pgdata) {
        return;
    }
    tracing::warn!("stepping down: the HA loop is not running, so the leader lease is not renewed");
    let (stopped_tx, stopped_rx) = oneshot::channel();
    let (resume_tx, resume_rx) = oneshot::channel();
    let request = Maintenance {
        stopped: stopped_tx,
        resume: resume_rx,
        immediate: true,
    };
    // Bounded, so that a stuck supervisor cannot keep the loop from restarting.
    let stopped = tokio::time::timeout(node.config.ttl, async {
        supervisor.send(request).await.is_ok() && stopped_rx.await.is_ok()
    });
    let failed = match stopped.await {
        Ok(true) => None,
        Ok(false) => Some("the PostgreSQL supervisor is gone"),
        Err(_) => Some("PostgreSQL did not stop within ha.ttl"),
    };
    if let Some(why) = failed {
        tracing::error!("fencing: {why}");
        return;
    }
    if let Err(e) = node.write_standby(None) {
        tracing::error!("fencing: make PostgreSQL a standby: {e:#}");
    }
    drop(resume_tx);
}

impl Loop {
    async fn round(
        &self,
        policy: &Policy,
        lease: &mut LeaseState,
        memory: &mut Memory,
    ) -> anyhow::Result<()> {
        let node = &self.node;
        let me = node.config.name.clone();
        let local = local::observe_with(
            &mut memory.postgres,
            &node.socket_dir,
            node.port,
            Duration::from_secs(1),
        )
        .await;
        memory.rounds = memory.rounds.wrapping_add(1);
        if local.role == Role::Replica && memory.rounds % HBA_SYNC_EVERY == 0 {
            if let Err(e) = self.tenants.bootstrap_replica().await {
                tracing::warn!("render pg_hba.conf from the registry: {e:#}");
            }
        }
        let now = Instant::now();
        if local.role == Role::Down {
            memory.down_since.get_or_insert(now);
        } else {
            memory.down_since = None;
        }
        let leading = memory.leader_revision.is_some();
        // A leader's etcd round may not outlast its lease: past the fence deadline it
        // stops writes whatever etcd does.
        let renewed_at = lease.renewed_at;
        let etcd_round = self.etcd_round(lease, &local);
        let cluster = match (leading, renewed_at) {
            (true, Some(renewed)) => {
                let deadline = renewed + node.config.ttl - policy.fence_margin;
                tokio::time::timeout_at(deadline, etcd_round)
                    .await
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("etcd did not answer in time")))
            }
            _ => etcd_round.await,
        };
        let failsafe_confirmed = cluster.is_err()
            && leading
            && node.config.failsafe
            && local.role == Role::Primary
            && self.failsafe_confirmed(memory).await;
        let lease_left = lease
            .renewed_at
            .map(|at| (at + node.config.ttl).saturating_duration_since(Instant::now()))
            .unwrap_or_default();
        let mut observation = observe(node, &local, cluster.as_ref().ok(), lease_left, memory);
        observation.failsafe_confirmed = failsafe_confirmed;
        let action = decide::decide(&observation, policy);
        if let Err(e) = &cluster {
            tracing::debug!("etcd: {e:#}");
        }
        let described = format!("{action:?}");
        if described != memory.last_action {
            tracing::info!(role = ?local.role, "HA: {described}");
            memory.last_action = described;
        }
        self.publish(&observation, cluster.as_ref().ok(), memory, policy);
        match cluster {
            Ok(cluster) => {
                memory.last_cluster = Some(cluster.clone());
                memory.leader_revision = cluster
                    .leader
                    .as_ref()
                    .filter(|kv| kv.value == me.as_bytes())
                    .map(|kv| kv.mod_revision);
                self.act(action, &local, &cluster, lease, memory).await
            }
            Err(_) => {
                self.act(action, &local, &ClusterKeys::default(), lease, memory)
                    .await
            }
        }
    }

    /// Renews (or gets) the lease, publishes this member, reads the cluster.
    async fn etcd_round(
        &self,
        lease: &mut LeaseState,
        local: &LocalState,
    ) -> anyhow::Result<ClusterKeys> {
        let node = &self.node;
        let sent = Instant::now();
        let id = match lease.id {
            Some(id) if !node.etcd.keep_alive(id).await?.is_zero() => id,
            _ => {
                let granted = node.etcd.grant(node.config.ttl).await?;
                lease.id = Some(granted.id);
                granted.id
            }
        };
        lease.renewed_at = Some(sent);
        let record = self.record(local);
        let key = node.keys.member(&node.config.name);
        node.etcd
            .put(&key, &keys::seal(&node.secret, &key, &record)?, Some(id))
            .await?;
        node.read_cluster().await
    }

    fn record(&self, local: &LocalState) -> MemberRecord {
        let node = &self.node;
        let (role, state) = match local.role {
            Role::Primary => ("primary", "running".to_owned()),
            Role::Replica => (
                "replica",
                local
                    .receiver
                    .clone()
                    .unwrap_or_else(|| "not streaming".into()),
            ),
            Role::Down => ("down", postgres_state(&self.postgres.borrow())),
        };
        MemberRecord {
            name: node.config.name.clone(),
            role: role.into(),
            state,
            host: node.config.advertise_host.clone(),
            postgres_port: node.port,
            api_url: node.api_url.clone(),
            pooler_port: node.pooler_port,
            timeline: local.timeline,
            wal_position: local.wal_position,
            replay_position: local.replay_position,
            nofailover: node.config.nofailover,
            system_identifier: local.system_identifier.clone(),
            api_cert_sha256: node.peers.api_cert_sha256(),
            published_at: keys::unix_now(),
            following: (local.role == Role::Replica)
                .then(|| self.view.borrow().leader.clone())
                .flatten(),
        }
    }

    async fn act(
        &self,
        action: Action,
        local: &LocalState,
        cluster: &ClusterKeys,
        lease: &mut LeaseState,
        memory: &mut Memory,
    ) -> anyhow::Result<()> {
        let node = &self.node;
        let me = &node.config.name;
        let password = node.secret.replication_password();
        match action {
            Action::Renew => {
                if local.role == Role::Primary {
                    self.synchronous_set(local, cluster).await?;
                }
                if local.role == Role::Primary && local.wal_position > cluster.optime {
                    node.etcd
                        .put(
                            &node.keys.optime(),
                            local.wal_position.to_string().as_bytes(),
                            None,
                        )
                        .await?;
                }
                Ok(())
            }
            Action::TakeLeadership => {
                let Some(id) = lease.id else {
                    return Ok(());
                };
                if local.role == Role::Primary {
                    // Before the key: replicas clone as soon as they see a leader.
                    local::ensure_replication_role(&node.socket_dir, node.port, &password).await?;
                }
                match node
                    .etcd
                    .create(&node.keys.leader(), me.as_bytes(), Some(id))
                    .await?
                {
                    Ok(revision) => memory.leader_revision = Some(revision),
                    Err(holder) => {
                        tracing::info!(
                            "{} took the leader key first",
                            String::from_utf8_lossy(&holder.value)
                        );
                        return Ok(());
                    }
                }
                if local.role == Role::Replica {
                    tracing::warn!("promoting this node to primary");
                    if let Err(e) = local::promote(&node.socket_dir, node.port).await {
                        self.release(memory).await;
                        return Err(e);
                    }
                }
                self.synchronous_set(local, cluster).await?;
                // Tenants created since this node's last look at the registry get in.
                if let Err(e) = self.tenants.bootstrap().await {
                    tracing::error!("tenant registry on the new primary: {e:#}");
                }
                let _ = node.etcd.delete(&node.keys.switchover()).await;
                tracing::info!("this node is the primary");
                Ok(())
            }
            Action::Demote(reason) => {
                tracing::warn!("stepping down: {reason}");
                let upstream = cluster
                    .leader_name()
                    .filter(|l| l != me)
                    .and_then(|l| cluster.member(&l).map(|m| node.upstream(m)));
                // Writes end first (a replica has none); only then may the key go. A
                // PostgreSQL being restarted is held too, so it comes back a standby.
                let resume = match local.role {
                    Role::Replica => None,
                    role => Some(self.hold(role == Role::Primary).await?),
                };
                node.write_standby(upstream.as_ref())?;
                self.release(memory).await;
                drop(resume);
                Ok(())
            }
            Action::Follow(leader) => {
                let Some(member) = cluster.member(&leader) else {
                    return Ok(());
                };
                let upstream = node.upstream(member);
                let changed = node.write_standby(Some(&upstream))?;
                if changed && local.role == Role::Replica {
                    tracing::info!(leader = %leader, "streaming from the new primary");
                    reload(node).await?;
                }
                // A replica that does not stream, or a PostgreSQL that does not even start
                // (its history forked off the primary's), needs a rewind or a new clone.
                let stuck = match local.role {
                    Role::Replica => !local.streaming(),
                    Role::Down => true,
                    Role::Primary => false,
                };
                if stuck && member.role == "primary" {
                    let since = *memory.not_streaming_since.get_or_insert(Instant::now());
                    if since.elapsed() >= REJOIN_AFTER {
                        memory.not_streaming_since = None;
                        self.rejoin(&upstream).await?;
                    }
                } else {
                    memory.not_streaming_since = None;
                }
                Ok(())
            }
            Action::Wait(_) => Ok(()),
        }
    }

    /// Failsafe: whether every other member answers that it follows this primary and
    /// cannot reach etcd either (so none of them can be promoted meanwhile).
    async fn failsafe_confirmed(&self, memory: &Memory) -> bool {
        let node = &self.node;
        let Some(mut others) = memory.last_cluster.clone() else {
            return false;
        };
        others.members.retain(|m| m.name != node.config.name);
        let asked = switchover::call_everyone(
            node,
            &others,
            "/cluster/failsafe",
            serde_json::json!({ "leader": node.config.name }),
            node.config.loop_wait * 2,
        )
        .await;
        if let Err(e) = &asked {
            tracing::warn!("failsafe: not every member confirms: {e:#}");
        }
        asked.is_ok()
    }

    /// Keeps PostgreSQL's synchronous standbys and the set published in etcd in step:
    /// a wider set is published before PostgreSQL uses it, a narrower one only after, so
    /// every standby that confirms commits is always in the published set.
    async fn synchronous_set(
        &self,
        local: &LocalState,
        cluster: &ClusterKeys,
    ) -> anyhow::Result<()> {
        let node = &self.node;
        // After a failover the set may still name this node, the old sync standby.
        let previous: Vec<String> = cluster
            .sync
            .iter()
            .filter(|n| **n != node.config.name)
            .cloned()
            .collect();
        let desired = decide::choose_sync(
            node.config.synchronous,
            node.config.synchronous_node_count,
            &local.streaming_standbys,
            &previous,
        );
        let setting = replica::synchronous_standby_names(&desired);
        let published: Vec<String> = desired
            .iter()
            .filter(|n| *n != decide::NO_STANDBY)
            .cloned()
            .collect();
        if local.synchronous_standby_names != setting {
            let mut wider = cluster.sync.clone();
            wider.extend(
                published
                    .iter()
                    .filter(|n| !cluster.sync.contains(n))
                    .cloned(),
            );
            if wider != cluster.sync {
                node.etcd
                    .put(&node.keys.sync(), &serde_json::to_vec(&wider)?, None)
                    .await?;
            }
            if replica::write_primary(&node.pgdata, &setting, node.run_as.as_ref())? {
                tracing::info!(standbys = %setting, "synchronous standbys changed");
                reload(node).await?;
            }
        } else if cluster.sync != published {
            node.etcd
                .put(&node.keys.sync(), &serde_json::to_vec(&published)?, None)
                .await?;
        }
        Ok(())
    }

    /// A planned switchover from this primary (see `switchover.rs`).
    async fn switchover(
        &self,
        to: Option<String>,
        policy: &Policy,
        lease: &mut LeaseState,
        memory: &mut Memory,
    ) -> anyhow::Result<String> {
        let node = &self.node;
        let cluster = memory
            .last_cluster
            .clone()
            .context("etcd has not answered this node yet")?;
        let target = switchover::choose_target(node, &cluster, to.as_deref())?;
        tracing::warn!(to = %target, "switchover: pausing every node's pooler");
        let pause = switchover::call_everyone(
            node,
            &cluster,
            "/pooler/pause",
            serde_json::json!({}),
            PAUSE_TIMEOUT + Duration::from_secs(5),
        );
        // The lease is renewed while transactions finish; if it cannot be, writes stop.
        let paused = tokio::select! {
            paused = pause => paused,
            lost = self.keep_lease(lease, policy) => Err(lost),
        };
        let result = match paused {
            Ok(()) => self.hand_to(&target, &cluster, memory).await,
            Err(e) => Err(e.context("pause the poolers")),
        };
        let primary = result.is_ok().then_some(target.as_str());
        if let Err(e) = switchover::call_everyone(
            node,
            &cluster,
            "/pooler/resume",
            switchover::resume_body(primary),
            Duration::from_secs(30),
        )
        .await
        {
            tracing::error!("switchover: resume the poolers: {e:#}");
        }
        result.map(|()| target)
    }

    /// Stops PostgreSQL cleanly (its last WAL reaches the replicas), gives the key up
    /// to `target` and starts again as its replica.
    async fn hand_to(
        &self,
        target: &str,
        cluster: &ClusterKeys,
        memory: &mut Memory,
    ) -> anyhow::Result<()> {
        let node = &self.node;
        node.etcd
            .put(&node.keys.switchover(), target.as_bytes(), None)
            .await?;
        tracing::warn!(to = %target, "switchover: stopping PostgreSQL cleanly");
        let resume = self.hold(false).await?;
        switchover::follow(node, cluster, target)?;
        self.release(memory).await;
        let taken = switchover::wait_for_leader(node, target).await;
        match &taken {
            // This node's pooler must route to the new primary before it resumes, and
            // the loop (busy here) would show it only after the switchover.
            Ok(cluster) => self.show(cluster),
            // Anyone eligible may lead now.
            Err(_) => {
                let _ = node.etcd.delete(&node.keys.switchover()).await;
            }
        }
        drop(resume);
        taken.map(|_| ())
    }

    /// Publishes the leader and members of `cluster`, keeping the rest of the view.
    fn show(&self, cluster: &ClusterKeys) {
        let mut view = self.view.borrow().clone();
        view.leader = cluster.leader_name();
        view.members = cluster.members.clone();
        self.route(&view);
        self.view.send_replace(view);
    }

    /// Tells the poolers where the primary and the replicas are now.
    fn route(&self, view: &ClusterView) {
        let set = |sender: &watch::Sender<Vec<crate::pooler::PgTarget>>,
                   targets: Vec<crate::pooler::PgTarget>| {
            sender.send_if_modified(|current| {
                let changed = *current != targets;
                *current = targets;
                changed
            });
        };
        set(&self.primary, vec![view.primary_target()]);
        set(
            &self.replicas,
            view.replica_targets(self.node.config.read_only_max_lag),
        );
    }

    /// Renews the lease every loop until it cannot be renewed in time (returned as the
    /// error): for waits in which the loop does not run.
    async fn keep_lease(&self, lease: &mut LeaseState, policy: &Policy) -> anyhow::Error {
        let node = &self.node;
        loop {
            tokio::time::sleep(node.config.loop_wait).await;
            let Some(id) = lease.id else {
                return anyhow::anyhow!("this node holds no lease");
            };
            let sent = Instant::now();
            match node.etcd.keep_alive(id).await {
                Ok(ttl) if !ttl.is_zero() => lease.renewed_at = Some(sent),
                _ => {
                    let deadline = lease
                        .renewed_at
                        .map(|at| at + node.config.ttl - policy.fence_margin);
                    if deadline.is_none_or(|d| d <= Instant::now()) {
                        return anyhow::anyhow!("the leader lease could not be renewed");
                    }
                }
            }
        }
    }

    /// Deletes the leader key if this node still holds it.
    async fn release(&self, memory: &mut Memory) {
        if let Some(revision) = memory.leader_revision.take() {
            match self
                .node
                .etcd
                .delete_if_unchanged(&self.node.keys.leader(), revision)
                .await
            {
                Ok(true) => tracing::info!("released the leader key"),
                Ok(false) => {}
                Err(e) => tracing::warn!("release the leader key: {e:#} (its lease will expire)"),
            }
        }
    }

    /// Stops PostgreSQL and keeps it stopped until the returned sender is dropped.
    async fn hold(&self, immediate: bool) -> anyhow::Result<oneshot::Sender<()>> {
        let (stopped_tx, stopped_rx) = oneshot::channel();
        let (resume_tx, resume_rx) = oneshot::channel();
        self.supervisor
            .send(Maintenance {
                stopped: stopped_tx,
                resume: resume_rx,
                immediate,
            })
            .await
            .context("the supervisor is gone")?;
        stopped_rx.await.context("the supervisor is gone")?;
        Ok(resume_tx)
    }

    /// A replica that cannot stream from the primary: rewind it, or clone it anew.
    async fn rejoin(&self, upstream: &replica::Upstream) -> anyhow::Result<()> {
        let node = &self.node;
        tracing::warn!(leader = %upstream.name, "this replica does not stream; rejoining");
        let _resume = self.hold(false).await?;
        if let Err(e) = replica::rewind(node, upstream).await {
            tracing::warn!("{e:#}; cloning the primary anew");
            replica::clone(node, upstream).await?;
        }
        node.write_standby(Some(upstream))?;
        Ok(())
    }

    fn publish(
        &self,
        o: &Observation,
        cluster: Option<&ClusterKeys>,
        memory: &Memory,
        policy: &Policy,
    ) {
        let node = &self.node;
        let mut view = ClusterView {
            cluster: node.config.cluster.clone(),
            me: node.config.name.clone(),
            etcd_reachable: cluster.is_some(),
            last_action: memory.last_action.clone(),
            ..ClusterView::default()
        };
        if let Some(cluster) = cluster {
            view.leader = cluster.leader_name();
            view.members = cluster.members.clone();
            view.optime = cluster.optime;
            view.paused = cluster.paused;
            view.sync = cluster.sync.clone();
            view.eligibility = cluster
                .members
                .iter()
                .filter(|m| m.role != "primary")
                .map(|m| (m.name.clone(), eligibility_of(m, o, policy)))
                .collect();
        } else {
            // Without etcd, keep the last known members and leader for the pooler.
            let last = self.view.borrow();
            view.leader = last.leader.clone();
            view.members = last.members.clone();
        }
        self.route(&view);
        self.view.send_replace(view);
    }

    /// A graceful stop: once PostgreSQL is down (cleanly), give the key up at once so a
    /// replica takes over without waiting for the lease.
    async fn hand_over(&self, lease: &LeaseState, memory: &Memory) {
        let mut postgres = self.postgres.clone();
        let stopped = postgres.wait_for(|s| s.state == PostgresState::Stopped);
        let _ = tokio::time::timeout(Duration::from_secs(120), stopped).await;
        if let Some(revision) = memory.leader_revision {
            if let Ok(true) = self
                .node
                .etcd
                .delete_if_unchanged(&self.node.keys.leader(), revision)
                .await
            {
                tracing::info!("handed the leader key over");
            }
        }
        if let Some(id) = lease.id {
            let _ = self.node.etcd.revoke(id).await;
        }
    }
}

/// Why a replica (as published) may not be promoted, judged from this node's view.
fn eligibility_of(m: &MemberRecord, o: &Observation, policy: &Policy) -> Option<String> {
    if m.role != "replica" {
        return Some(format!("PostgreSQL is {}", m.state));
    }
    let as_if = Observation {
        me: m.name.clone(),
        role: Role::Replica,
        my_wal_position: m.wal_position,
        nofailover: m.nofailover,
        members: o
            .members
            .iter()
            .filter(|other| other.name != m.name)
            .cloned()
            .chain((o.me != m.name && o.role == Role::Replica).then(|| Member {
                name: o.me.clone(),
                healthy: true,
                wal_position: o.my_wal_position,
                nofailover: o.nofailover,
            }))
            .collect(),
        ..o.clone()
    };
    decide::ineligible(&as_if, policy)
}

fn observe(
    node: &Node,
    local: &LocalState,
    cluster: Option<&ClusterKeys>,
    lease_left: Duration,
    memory: &Memory,
) -> Observation {
    let me = &node.config.name;
    Observation {
        me: me.clone(),
        role: local.role,
        my_wal_position: local.wal_position,
        nofailover: node.config.nofailover,
        leader: cluster.map(ClusterKeys::leader_name),
        lease_left,
        members: cluster
            .map(|c| {
                c.members
                    .iter()
                    .filter(|m| m.name != *me)
                    .map(|m| Member {
                        name: m.name.clone(),
                        healthy: m.role == "replica",
                        wal_position: m.wal_position,
                        nofailover: m.nofailover,
                    })
                    .collect()
            })
            .unwrap_or_default(),
        primary_wal_position: cluster.map_or(0, |c| c.optime),
        sync_set: cluster.map(|c| c.sync.clone()).unwrap_or_default(),
        paused: cluster.is_some_and(|c| c.paused),
        down_for: memory
            .down_since
            .map(|since| since.elapsed())
            .unwrap_or_default(),
        switchover_to: cluster.and_then(|c| c.switchover.clone()),
        failsafe_confirmed: false,
        failsafe_recent: node.failsafe_recent(),
        running_primary: cluster.and_then(|c| {
            c.members
                .iter()
                .find(|m| m.name != *me && m.role == "primary")
                .map(|m| m.name.clone())
        }),
    }
}

fn postgres_state(status: &PostgresStatus) -> String {
    format!("{:?}", status.state).to_lowercase()
}

async fn reload(node: &Node) -> anyhow::Result<()> {
    let client = crate::pg::connect::superuser(&node.socket_dir, node.port, "postgres").await?;
    client
        .execute("SELECT pg_reload_conf()", &[])
        .await
        .context("reload PostgreSQL")?;
    Ok(())
}
