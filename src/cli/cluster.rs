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

#[derive(Debug, clap::Args)]
pub struct SwitchoverArgs {
    /// The replica to promote; default: the most advanced streaming replica.
    #[arg(long, value_name = "NODE")]
    to: Option<String>,
    #[arg(long)]
    json: bool,
}

/// `pgplatform switchover`: the primary hands over to a replica; clients of every node's
/// pooler wait instead of failing.
pub async fn switchover(config: &Config, args: SwitchoverArgs) -> anyhow::Result<()> {
    let client = AgentClient::discover(config)?;
    let body = serde_json::json!({ "to": args.to });
    let answer: Value = output::with_spinner(
        "switching over (poolers paused, clients wait)",
        client.post("/cluster/switchover", &body),
    )
    .await?;
    report(
        args.json,
        &answer,
        &format!("switched over: {} is the primary", text(&answer["primary"])),
    )
}

#[derive(Debug, clap::Args)]
pub struct FailoverArgs {
    /// The replica to promote.
    #[arg(long, value_name = "NODE")]
    to: String,
    #[arg(long)]
    json: bool,
}

/// `pgplatform failover --to NODE`: promote a replica when no primary runs.
pub async fn failover(config: &Config, args: FailoverArgs) -> anyhow::Result<()> {
    let client = AgentClient::discover(config)?;
    let answer: Value = client
        .post("/cluster/failover", &serde_json::json!({ "to": args.to }))
        .await?;
    report(
        args.json,
        &answer,
        &format!("failed over: {} is the primary", text(&answer["primary"])),
    )
}
