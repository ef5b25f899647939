//! The local PostgreSQL as the HA loop sees it, through the agent's own socket connection:
//! primary or replica, WAL positions, timeline, whether it streams. Also the two things
//! the loop does in SQL: promote, and keep the replication role's password current.

use std::path::Path;
use std::time::Duration;

use anyhow::Context;

use super::decide::Role;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalState {
    pub role: Role,
    pub wal_position: u64,
    pub replay_position: u64,
    pub timeline: u32,
    /// The WAL receiver's status (`streaming`, …); `None` when it is not running.
    pub receiver: Option<String>,
    /// Primary: the replicas streaming from it, by application_name (their member name).
    pub streaming_standbys: Vec<String>,
    /// The synchronous_standby_names PostgreSQL runs with now.
    pub synchronous_standby_names: String,
    /// pg_control's system identifier: which cluster's data this is.
    pub system_identifier: String,
}

impl LocalState {
    pub fn down() -> LocalState {
        LocalState {
            role: Role::Down,
            wal_position: 0,
            replay_position: 0,
            timeline: 0,
            receiver: None,
            streaming_standbys: Vec::new(),
            synchronous_standby_names: String::new(),
            system_identifier: String::new(),
        }
    }

    pub fn streaming(&self) -> bool {
        self.receiver.as_deref() == Some("streaming")
    }
}

const OBSERVE: &str = "\
SELECT pg_is_in_recovery() AS recovery,
       (CASE WHEN pg_is_in_recovery()
             -- A fresh replica reports its first segment's start as received until WAL
             -- arrives, behind what it has replayed.
             THEN GREATEST(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())
             ELSE pg_current_wal_lsn() END - '0/0'::pg_lsn)::bigint AS wal,
       (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
             ELSE pg_current_wal_lsn() END - '0/0'::pg_lsn)::bigint AS replay,
       CASE WHEN pg_is_in_recovery()
            THEN COALESCE((SELECT received_tli FROM pg_stat_wal_receiver),
                          (SELECT timeline_id FROM pg_control_checkpoint()))
            ELSE ('x' || substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8))::bit(32)::int
       END AS timeline,
       (SELECT status FROM pg_stat_wal_receiver) AS receiver,
       ARRAY(SELECT application_name FROM pg_stat_replication
             WHERE state = 'streaming' ORDER BY 1) AS standbys,
       current_setting('synchronous_standby_names') AS sync_names,
       (SELECT system_identifier::text FROM pg_control_system()) AS system_identifier";

/// Looks at the local PostgreSQL once; `Down` when it does not answer within `timeout`.
pub async fn observe(socket_dir: &Path, port: u16, timeout: Duration) -> LocalState {
    observe_with(&mut None, socket_dir, port, timeout).await
}

/// Like `observe`, over `client`, which it opens when needed and keeps for the next call
/// (the HA loop looks four times a second; a new connection each time would start a
/// backend each time). A failure drops it.
pub async fn observe_with(
    client: &mut Option<tokio_postgres::Client>,
    socket_dir: &Path,
    port: u16,
    timeout: Duration,
) -> LocalState {
    let looked = tokio::time::timeout(timeout, async {
        let open = match client.take() {
            Some(c) if !c.is_closed() => c,
            _ => crate::pg::connect::superuser(socket_dir, port, "postgres").await?,
        };
        let state = query(&open).await?;
        *client = Some(open);
        anyhow::Ok(state)
    })
    .await;
    match looked {
        Ok(Ok(state)) => state,
        _ => LocalState::down(),
    }
}

async fn query(client: &tokio_postgres::Client) -> anyhow::Result<LocalState> {
    let row = client.query_one(OBSERVE, &[]).await?;
    let recovery: bool = row.try_get("recovery")?;
    let wal: Option<i64> = row.try_get("wal")?;
    let replay: Option<i64> = row.try_get("replay")?;
    let timeline: Option<i32> = row.try_get("timeline")?;
    Ok(LocalState {
        role: if recovery {
            Role::Replica
        } else {
            Role::Primary
        },
        wal_position: wal.unwrap_or(0).max(0) as u64,
        replay_position: replay.unwrap_or(0).max(0) as u64,
        timeline: timeline.unwrap_or(0).max(0) as u32,
        receiver: row.try_get("receiver")?,
        streaming_standbys: row.try_get("standbys")?,
        synchronous_standby_names: row.try_get("sync_names")?,
        system_identifier: row.try_get("system_identifier")?,
    })
}

/// Promotes the local replica and waits until it accepts writes.
pub async fn promote(socket_dir: &Path, port: u16) -> anyhow::Result<()> {
    let client = crate::pg::connect::superuser(socket_dir, port, "postgres").await?;
    let row = client
        .query_one("SELECT pg_promote(true, 60)", &[])
        .await
        .context("pg_promote")?;
    let done: bool = row.try_get(0)?;
    anyhow::ensure!(done, "PostgreSQL did not finish promotion within 60 s");
    // pg_rewind reads the new timeline from the control file, which only a checkpoint
    // updates: without it, a former primary would wrongly see "no rewind required". In
    // the background, so that writes need not wait for it.
    tokio::spawn(async move {
        if let Err(e) = client.batch_execute("CHECKPOINT").await {
            tracing::warn!("checkpoint after promotion: {e}");
        }
    });
    Ok(())
}

/// Creates or updates the replication role on the primary: LOGIN REPLICATION, the
/// password derived from the cluster secret, and the functions pg_rewind reads with.
pub async fn ensure_replication_role(
    socket_dir: &Path,
    port: u16,
    password: &str,
) -> anyhow::Result<()> {
    use crate::pg::sql::{quote_ident, quote_literal, scram_verifier};
    let client = crate::pg::connect::superuser(socket_dir, port, "postgres").await?;
    let role = quote_ident(crate::pg::REPLICATION_ROLE);
    let verifier = quote_literal(&scram_verifier(password));
    let exists = client
        .query_opt(
            "SELECT 1 FROM pg_roles WHERE rolname = $1",
            &[&crate::pg::REPLICATION_ROLE],
        )
        .await?
        .is_some();
    let verb = if exists { "ALTER" } else { "CREATE" };
    client
        .batch_execute(&format!(
            "{verb} ROLE {role} WITH LOGIN REPLICATION PASSWORD {verifier};
             GRANT EXECUTE ON FUNCTION pg_catalog.pg_ls_dir(text, boolean, boolean) TO {role};
             GRANT EXECUTE ON FUNCTION pg_catalog.pg_stat_file(text, boolean) TO {role};
             GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text) TO {role};
             GRANT EXECUTE ON FUNCTION pg_catalog.pg_read_binary_file(text, bigint, bigint, boolean) TO {role};"
        ))
        .await
        .context("create the replication role")?;
    Ok(())
}
