//! Where client passwords are checked against: the role's SCRAM verifier in pg_authid,
//! read through the agent's superuser connection at every login, so a rotated password
//! takes effect at once and no userlist exists.

use std::path::PathBuf;

use tokio::sync::Mutex;
use tokio_postgres::Client;

use super::scram::Verifier;

pub struct AuthSource {
    socket_dir: PathBuf,
    port: u16,
    client: Mutex<Option<Client>>,
}

impl AuthSource {
    pub fn new(socket_dir: PathBuf, port: u16) -> AuthSource {
        AuthSource {
            socket_dir,
            port,
            client: Mutex::new(None),
        }
    }

    /// The role's verifier, or `None` for a role that does not exist, cannot log in, has
    /// expired or has no SCRAM secret (all answered like a wrong password).
    pub async fn verifier(&self, role: &str) -> anyhow::Result<Option<Verifier>> {
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
                    return Ok(secret.as_deref().and_then(Verifier::parse));
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
