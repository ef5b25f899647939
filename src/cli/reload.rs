//! `pgplatform reload`: the agent reads its config file again, as on SIGHUP, and says
//! which keys it applied live and which wait for a restart; a file it refuses changes
//! nothing and the command fails with the reason.

use super::output;
use crate::api::client::AgentClient;
use crate::config::Config;
use crate::shutdown::Reloaded;

#[derive(Debug, clap::Args)]
pub struct ReloadArgs {
    /// Print the result as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(config: &Config, args: &ReloadArgs) -> anyhow::Result<()> {
    let client = AgentClient::discover(config)?;
    let reloaded: Reloaded = client.post("/reload", &serde_json::json!({})).await?;
    if args.json {
        return output::json(&reloaded);
    }
    for line in render(&reloaded) {
        output::line(&line);
    }
    Ok(())
}

fn render(reloaded: &Reloaded) -> Vec<String> {
    let mut lines = vec![if reloaded.applied_live.is_empty() {
        "configuration reloaded; nothing to apply live changed".to_owned()
    } else {
        format!("applied live: {}", reloaded.applied_live.join(", "))
    }];
    if !reloaded.pending_restart.is_empty() {
        lines.push(format!(
            "pending restart: {} (these take effect when the agent restarts)",
            reloaded.pending_restart.join(", ")
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_live_and_pending_keys() {
        let reloaded = Reloaded {
            applied_live: vec!["backup.schedule".into()],
            pending_restart: vec!["api.listen".into()],
        };
        assert_eq!(
            render(&reloaded),
            [
                "applied live: backup.schedule",
                "pending restart: api.listen (these take effect when the agent restarts)"
            ]
        );
        assert_eq!(
            render(&Reloaded::default()),
            ["configuration reloaded; nothing to apply live changed"]
        );
    }
}
