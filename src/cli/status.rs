//! `pgplatform status`: the agent's and PostgreSQL's state.

use serde_json::Value;

use super::output;
use crate::api::client::AgentClient;
use crate::config::Config;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Print the status as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(config: &Config, args: &StatusArgs) -> anyhow::Result<()> {
    let client = AgentClient::discover(config)?;
    let status: Value = client.get("/status").await?;
    if args.json {
        return output::json(&status);
    }
    let pg = &status["postgres"];
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    };
    let pending: Vec<String> = pg["pending_restart"]
        .as_array()
        .map(|a| a.iter().map(text).collect())
        .unwrap_or_default();
    output::table(
        &["ITEM", "VALUE"],
        &[
            vec![
                "agent".into(),
                format!(
                    "pgplatform {} (up {}s)",
                    text(&status["version"]),
                    text(&status["uptime_seconds"])
                ),
            ],
            vec!["data_dir".into(), text(&status["data_dir"])],
            vec![
                "postgres".into(),
                format!(
                    "{} (PostgreSQL {}, pid {}, port {})",
                    text(&pg["state"]),
                    text(&pg["version"]),
                    text(&pg["pid"]),
                    text(&pg["port"])
                ),
            ],
            vec!["restarts".into(), text(&pg["restarts"])],
            vec![
                "pending_restart".into(),
                if pending.is_empty() {
                    "none".into()
                } else {
                    pending.join(", ")
                },
            ],
            vec!["tenants".into(), text(&status["tenants"])],
        ],
    );
    Ok(())
}
