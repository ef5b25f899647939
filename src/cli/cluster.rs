//! `pgplatform cluster status|pause|resume`: the HA cluster as this node's agent sees it
//! (Patroni's `patronictl list`), and automatic failover off and on for maintenance.

use serde_json::Value;

use super::output;
use crate::api::client::AgentClient;
use crate::config::Config;

#[derive(Debug, clap::Subcommand)]
pub enum ClusterCommand {
    /// List the members: role, state, timeline, lag, and whether each replica may be
    /// promoted (and why not).
    Status {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Turn automatic failover off (a dead primary is not replaced) for maintenance.
    Pause {
        #[arg(long)]
        json: bool,
    },
    /// Turn automatic failover back on.
    Resume {
        #[arg(long)]
        json: bool,
    },
}

pub async fn run(config: &Config, command: ClusterCommand) -> anyhow::Result<()> {
    let client = AgentClient::discover(config)?;
    match command {
        ClusterCommand::Status { json } => {
            let status: Value = client.get("/cluster").await?;
            if json {
                return output::json(&status);
            }
            for line in render(&status) {
                output::line(&line);
            }
            Ok(())
        }
        ClusterCommand::Pause { json } => {
            let answer: Value = client.post("/cluster/pause", &()).await?;
            report(json, &answer, "automatic failover is paused")
        }
        ClusterCommand::Resume { json } => {
            let answer: Value = client.post("/cluster/resume", &()).await?;
            report(json, &answer, "automatic failover is on")
        }
    }
}

fn report(json: bool, answer: &Value, message: &str) -> anyhow::Result<()> {
    if json {
        output::json(answer)
    } else {
        output::line(message);
        Ok(())
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn render(status: &Value) -> Vec<String> {
    let mut lines = vec![format!(
        "Cluster: {}  leader: {}  failover: {}{}",
        text(&status["cluster"]),
        status["leader"].as_str().unwrap_or("none"),
        if status["paused"] == Value::Bool(true) {
            "paused"
        } else {
            "automatic"
        },
        if status["etcd_reachable"] == Value::Bool(false) {
            "  (etcd does not answer this node)"
        } else {
            ""
        }
    )];
    let rows: Vec<Vec<String>> = status["members"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .map(|m| {
            let lag = m["lag_bytes"]
                .as_u64()
                .map(|b| format!("{:.1}", b as f64 / (1024.0 * 1024.0)))
                .unwrap_or_default();
            let eligible = match (&m["eligible"], &m["ineligible_because"]) {
                (Value::Bool(true), _) => "yes".to_owned(),
                (Value::Bool(false), why) => format!("no: {}", text(why)),
                _ => String::new(),
            };
            vec![
                text(&m["name"]),
                format!("{}:{}", text(&m["host"]), text(&m["port"])),
                text(&m["role"]),
                text(&m["state"]),
                text(&m["timeline"]),
                lag,
                eligible,
            ]
        })
        .collect();
    lines.extend(output::table_lines(
        &[
            "Member",
            "Host",
            "Role",
            "State",
            "TL",
            "Lag in MB",
            "Failover candidate",
        ],
        &rows,
    ));
    lines
}
