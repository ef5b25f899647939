//! Where client passwords are checked against: the role's SCRAM verifier in pg_authid,
//! read through the agent's superuser connection — no userlist. Verifiers are cached for a
//! few seconds so connection-per-transaction clients do not each cost a catalog query;
//! `tenant rotate` and `tenant drop` evict the role at once (`VerifierCache::forget`), and
//! a change made behind the agent's back (ALTER ROLE by hand) shows within `TTL`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio_postgres::Client;

use super::scram::Verifier;

/// How long a looked-up verifier is trusted.
const TTL: Duration = Duration::from_secs(5);

/// Recently read verifiers, shared by the pooler and the tenant service.
#[derive(Default)]
pub struct VerifierCache {
    entries: Mutex<HashMap<String, (Verifier, Instant)>>,
}

impl VerifierCache {
    fn get(&self, role: &str) -> Option<Verifier> {
        let entries = self.entries.lock().ok()?;
        let (verifier, at) = entries.get(role)?;
        (at.elapsed() < TTL).then(|| verifier.clone())
    }

    fn put(&self, role: &str, verifier: Verifier) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.retain(|_, (_, at)| at.elapsed() < TTL);
            entries.insert(role.to_owned(), (verifier, Instant::now()));
        }
    }

    /// HA replica: roles changed on the primary; every next login reads its verifier again.
    pub fn forget_all(&self) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.clear();
        }
    }

    /// The role's password changed or the role is gone: the next login reads it again.
    pub fn forget(&self, role: &str) {
        if let Ok(mut entries) = self.entries.lock() {
            entries.remove(role);
        }
    }
}

pub struct AuthSource {
    socket_dir: PathBuf,
    port: u16,
    client: tokio::sync::Mutex<Option<Client>>,
    cache: std::sync::Arc<VerifierCache>,
}

impl AuthSource {
    pub fn new(socket_dir: PathBuf, port: u16, cache: std::sync::Arc<VerifierCache>) -> AuthSource {
        AuthSource {
            socket_dir,
            port,
            client: tokio::sync::Mutex::new(None),
            cache,
        }
    }

    /// The role's verifier, or `None` for a role that does not exist, cannot log in, has
    /// expired or has no SCRAM secret (all answered like a wrong password; not cached, so
    /// a role created a moment ago can log in at once).
    pub async fn verifier(&self, role: &str) -> anyhow::Result<Option<Verifier>> {
        if let Some(verifier) = self.cache.get(role) {
            return Ok(Some(verifier));
        }
        let mut slot = self.client.lock().await;
        for attempt in 0..2 {
            if slot.as_ref().is_none_or(|c| c.is_closed()) {
                *slot = Some(
                    crate::pg::connect::superuser(&self.socket_dir, self.port, "postgres").await?,
                );
            }
            let Some(client) = slot.as_ref() else {
                continue;
            };
            let result = client
                .query_opt(
                    "SELECT rolpassword FROM pg_catalog.pg_authid WHERE rolname = $1 AND rolcanlogin \
                     AND NOT rolsuper AND (rolvaliduntil IS NULL OR rolvaliduntil > now())",
                    &[&role],
                )
                .await;
            match result {
                Ok(row) => {
                    let secret: Option<String> = row.and_then(|r| r.try_get(0).ok()).flatten();
                    let verifier = secret.as_deref().and_then(Verifier::parse);
                    if let Some(v) = &verifier {
                        self.cache.put(role, v.clone());
                    }
                    return Ok(verifier);
                }
                Err(e) if attempt == 0 => {
                    tracing::debug!("verifier lookup failed, reconnecting: {e}");
                    *slot = None;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(None)
    }
}
