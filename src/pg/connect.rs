//! Connections to our PostgreSQL: as the agent's superuser over the unix socket, or as a
//! tenant over TCP (to prove its credentials work).

use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use tokio_postgres::{Client, NoTls};

/// Connects as the agent's superuser through the socket in `socket_dir`.
pub async fn superuser(socket_dir: &Path, port: u16, dbname: &str) -> anyhow::Result<Client> {
    let mut config = tokio_postgres::Config::new();
    config
        .host_path(socket_dir)
        .port(port)
        .user(super::SUPERUSER)
        .dbname(dbname)
        .application_name("pgplatform-agent")
        .connect_timeout(Duration::from_secs(5));
    connect(config)
        .await
        .with_context(|| format!("connect to database {dbname} as {}", super::SUPERUSER))
}

/// Connects over TCP with a password, as an application would.
pub async fn with_password(
    host: &str,
    port: u16,
    user: &str,
    password: &str,
    dbname: &str,
) -> Result<Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(host)
        .port(port)
        .user(user)
        .password(password)
        .dbname(dbname)
        .application_name("pgplatform-agent")
        .connect_timeout(Duration::from_secs(5));
    connect(config).await
}

async fn connect(config: tokio_postgres::Config) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!("agent connection to PostgreSQL ended: {e}");
        }
    });
    Ok(client)
}
