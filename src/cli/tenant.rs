//! `pgplatform tenant …`: create, list, show, rotate, drop, and `redis enable|resize|disable`.

use anyhow::bail;
use serde_json::Value;

use super::output;
use crate::api::client::AgentClient;
use crate::config::Config;

#[derive(Debug, clap::Subcommand)]
pub enum TenantCommand {
    /// Create a tenant: login role NAME, database NAME owned by it, generated password
    /// (SCRAM-SHA-256), files under <data_dir>/secrets/NAME/, no access to other tenants.
    Create {
        /// Lowercase letters, digits and `_`, starting with a letter, at most 48 characters.
        name: String,
        /// Create this extension in the tenant's database (repeatable), e.g. vector.
        #[arg(long = "extension", value_name = "EXT")]
        extensions: Vec<String>,
        /// Most concurrent connections for the tenant's roles (default: no limit).
        #[arg(long, value_name = "N")]
        connection_limit: Option<i32>,
        /// Also create NAME_ro, which reads everything in the database and writes nothing.
        #[arg(long)]
        with_readonly: bool,
        /// Also give the tenant a redis-server of its own (password-protected, memory-
        /// limited, AOF-persisted); its URL goes to <data_dir>/secrets/NAME/redis_url.
        #[arg(long)]
        redis: bool,
        /// The Redis's memory limit, e.g. 256mb or 1gb (default [redis] default_maxmemory);
        /// over it, the tenant's writes fail with Redis's OOM error.
        #[arg(long, value_name = "SIZE", requires = "redis")]
        redis_maxmemory: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// List tenants with their size, open connections and Redis port.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show a tenant's connection URL (password hidden unless --reveal).
    Show {
        name: String,
        /// Include the password in the URLs.
        #[arg(long)]
        reveal: bool,
        #[arg(long)]
        json: bool,
    },
    /// Give a role a new password; the old one stops working for new logins at once and
    /// the secret files are rewritten atomically. The owner's rotation also renews the
    /// tenant's Redis password (the old one is refused at once).
    Rotate {
        name: String,
        /// Rotate the read-only role NAME_ro instead of the owner.
        #[arg(long)]
        readonly: bool,
        #[arg(long)]
        json: bool,
    },
    /// Drop a tenant: its database (ending its sessions), roles and secret files; its
    /// Redis is stopped and its data moved to <data_dir>/redis/dropped/ (unless --purge).
    Drop {
        name: String,
        /// Confirm: the data is gone for good (backups aside).
        #[arg(long)]
        yes: bool,
        /// Delete the tenant's Redis data too, rather than keep it aside.
        #[arg(long)]
        purge: bool,
    },
    /// Give an existing tenant a redis-server of its own, change its memory limit, or take
    /// it away.
    #[command(subcommand)]
    Redis(RedisCommand),
}

#[derive(Debug, clap::Subcommand)]
pub enum RedisCommand {
    /// Start a redis-server for tenant NAME (its data kept by an earlier disable is
    /// used again) and write redis_url and the REDIS_* lines of env.
    Enable {
        name: String,
        /// Memory limit, e.g. 256mb or 1gb (default [redis] default_maxmemory).
        #[arg(long, value_name = "SIZE")]
        maxmemory: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// Give tenant NAME's Redis a new memory limit, at once (no restart).
    Resize {
        name: String,
        /// The new limit, e.g. 512mb or 2gb.
        #[arg(long, value_name = "SIZE")]
        maxmemory: String,
        #[arg(long)]
        json: bool,
    },
    /// Stop tenant NAME's redis-server and remove its credentials; its data stays in
    /// <data_dir>/redis/NAME for a later enable, unless --purge.
    Disable {
        name: String,
        /// Delete the data too.
        #[arg(long)]
        purge: bool,
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(config: &Config, command: TenantCommand) -> anyhow::Result<()> {
    let client = AgentClient::discover(config)?;
    match command {
        TenantCommand::Create {
            name,
            extensions,
            connection_limit,
            with_readonly,
            redis,
            redis_maxmemory,
            json,
        } => {
            let request = crate::tenants::CreateRequest {
                name: name.clone(),
                extensions,
                connection_limit,
                with_readonly,
                redis,
                redis_maxmemory,
            };
            let created: Value = output::with_spinner(
                &format!("creating tenant {name}"),
                client.post("/tenants", &request),
            )
            .await?;
            if json {
                return output::json(&created);
            }
            print_details(&created);
            output::line(&format!(
                "secrets written to {}",
                text(&created["secrets_dir"])
            ));
            Ok(())
        }
        TenantCommand::List { json } => {
            let tenants: Vec<Value> = client.get("/tenants").await?;
            if json {
                return output::json(&tenants);
            }
            let rows: Vec<Vec<String>> = tenants
                .iter()
                .map(|t| {
                    vec![
                        text(&t["name"]),
                        text(&t["created_at"]),
                        output::size(t["size_bytes"].as_i64().unwrap_or(0)),
                        text(&t["connections"]),
                        list(&t["extensions"]),
                        text(&t["readonly_role"]),
                        text(&t["redis_port"]),
                    ]
                })
                .collect();
            output::table(
                &[
                    "NAME",
                    "CREATED",
                    "SIZE",
                    "CONNECTIONS",
                    "EXTENSIONS",
                    "READONLY",
                    "REDIS",
                ],
                &rows,
            );
            Ok(())
        }
        TenantCommand::Show { name, reveal, json } => {
            let path = format!("/tenants/{}?reveal={reveal}", segment(&name));
            let details: Value = client.get(&path).await?;
            if json {
                return output::json(&details);
            }
            print_details(&details);
            Ok(())
        }
        TenantCommand::Rotate {
            name,
            readonly,
            json,
        } => {
            let path = format!("/tenants/{}/rotate?readonly={readonly}", segment(&name));
            let details: Value = client.post(&path, &serde_json::json!({})).await?;
            if json {
                return output::json(&details);
            }
            let role = if readonly { format!("{name}_ro") } else { name };
            output::line(&format!(
                "new password for {role} written to {}",
                text(&details["secrets_dir"])
            ));
            Ok(())
        }
        TenantCommand::Drop { name, yes, purge } => {
            if !yes {
                bail!("dropping tenant {name} deletes its database, roles and secrets for good; run again with --yes to confirm");
            }
            output::with_spinner(
                &format!("dropping tenant {name}"),
                client.delete(&format!("/tenants/{}?purge={purge}", segment(&name))),
            )
            .await?;
            output::line(&format!("dropped tenant {name}"));
            Ok(())
        }
        TenantCommand::Redis(command) => redis(&client, command).await,
    }
}

async fn redis(client: &AgentClient, command: RedisCommand) -> anyhow::Result<()> {
    let (details, json): (Value, bool) = match command {
        RedisCommand::Enable {
            name,
            maxmemory,
            json,
        } => {
            let path = format!("/tenants/{}/redis", segment(&name));
            let body = crate::tenants::RedisEnableRequest { maxmemory };
            let details = output::with_spinner(
                &format!("starting the Redis of tenant {name}"),
                client.post(&path, &body),
            )
            .await?;
            (details, json)
        }
        RedisCommand::Resize {
            name,
            maxmemory,
            json,
        } => {
            let path = format!("/tenants/{}/redis", segment(&name));
            let body = crate::tenants::RedisEnableRequest {
                maxmemory: Some(maxmemory),
            };
            let details = output::with_spinner(
                &format!("resizing the Redis of tenant {name}"),
                client.patch(&path, &body),
            )
            .await?;
            (details, json)
        }
        RedisCommand::Disable { name, purge, json } => {
            let path = format!("/tenants/{}/redis?purge={purge}", segment(&name));
            let details = output::with_spinner(
                &format!("stopping the Redis of tenant {name}"),
                client.delete_for(&path),
            )
            .await?;
            (details, json)
        }
    };
    if json {
        return output::json(&details);
    }
    match &details["redis_url"] {
        Value::Null => output::line(&format!(
            "tenant {} has no Redis now; redis_url removed from {}",
            text(&details["name"]),
            text(&details["secrets_dir"])
        )),
        url => output::line(&format!(
            "tenant {} Redis: {} (maxmemory {}); redis_url written to {}",
            text(&details["name"]),
            text(url),
            output::size(details["redis_maxmemory"].as_i64().unwrap_or(0)),
            text(&details["secrets_dir"])
        )),
    }
    Ok(())
}

fn print_details(d: &Value) {
    output::table(
        &["FIELD", "VALUE"],
        &[
            vec!["name".into(), text(&d["name"])],
            vec!["database_url".into(), text(&d["database_url"])],
            vec!["direct_url".into(), text(&d["direct_url"])],
            vec!["readonly_role".into(), text(&d["readonly_role"])],
            vec!["readonly_url".into(), text(&d["readonly_database_url"])],
            vec!["extensions".into(), list(&d["extensions"])],
            vec!["redis_url".into(), text(&d["redis_url"])],
            vec!["created_at".into(), text(&d["created_at"])],
            vec!["rotated_at".into(), text(&d["rotated_at"])],
        ],
    );
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

fn list(v: &Value) -> String {
    let items: Vec<String> = v
        .as_array()
        .map(|a| a.iter().map(text).collect())
        .unwrap_or_default();
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(",")
    }
}

/// Names are validated by the agent; encoding keeps odd input from changing the path.
fn segment(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC).to_string()
}
