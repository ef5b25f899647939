//! `pgplatform status`: one screen for the operator — role, PostgreSQL, connections,
//! tenants and their pools, WAL archiving, disk, and warnings. `--json`, `--watch`.

use std::time::Duration;

use serde_json::Value;

use super::output;
use crate::api::client::AgentClient;
use crate::config::Config;

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Print the status as JSON (with --watch, one compact JSON document per line).
    #[arg(long)]
    json: bool,
    /// Refresh every SECONDS (default 2) until interrupted.
    #[arg(long, value_name = "SECONDS", num_args = 0..=1, default_missing_value = "2")]
    watch: Option<f64>,
}

pub async fn run(config: &Config, args: &StatusArgs) -> anyhow::Result<()> {
    let client = AgentClient::discover(config)?;
    let Some(every) = args.watch else {
        let status: Value = client.get("/status").await?;
        return show(&status, args.json, false);
    };
    if !(every.is_finite() && every >= 0.2) {
        anyhow::bail!("--watch: the interval must be at least 0.2 seconds");
    }
    loop {
        let status: Value = client.get("/status").await?;
        show(&status, args.json, true)?;
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs_f64(every)) => {}
            _ = tokio::signal::ctrl_c() => return Ok(()),
        }
    }
}

fn show(status: &Value, json: bool, watching: bool) -> anyhow::Result<()> {
    if json && watching {
        output::line(&serde_json::to_string(status)?);
    } else if json {
        output::json(status)?;
    } else {
        if watching {
            output::clear_screen();
        }
        for line in render(status) {
            output::line(&line);
        }
    }
    Ok(())
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".to_owned(),
        other => other.to_string(),
    }
}

fn seconds(v: &Value) -> String {
    v.as_f64()
        .map(|s| crate::status::warnings::human(Duration::from_secs_f64(s.max(0.0))))
        .unwrap_or_else(|| "-".to_owned())
}

/// The screen, as lines.
fn render(status: &Value) -> Vec<String> {
    let pg = &status["postgres"];
    let mut lines = vec![
        format!(
            "pgplatform {}  up {}  data {}",
            text(&status["version"]),
            seconds(&status["uptime_seconds"]),
            text(&status["data_dir"])
        ),
        format!(
            "role        {}",
            status["role"].as_str().unwrap_or("unknown")
        ),
        format!(
            "postgres    {}  PostgreSQL {}  pid {}  port {}  up {}  restarts {}",
            text(&pg["state"]),
            text(&pg["version"]),
            text(&pg["pid"]),
            text(&pg["port"]),
            seconds(&pg["uptime_seconds"]),
            text(&pg["restarts"])
        ),
    ];
    let pending: Vec<String> = status["pending_restart"]
        .as_array()
        .map(|keys| keys.iter().map(text).collect())
        .unwrap_or_default();
    if !pending.is_empty() {
        lines.push(format!(
            "agent       pending restart: {}",
            pending.join(", ")
        ));
    }
    let died: Vec<String> = status["task_restarts"]
        .as_object()
        .map(|tasks| {
            tasks
                .iter()
                .filter(|(_, n)| n.as_u64().is_some_and(|n| n > 0))
                .map(|(task, n)| format!("{task} {n}"))
                .collect()
        })
        .unwrap_or_default();
    if !died.is_empty() {
        lines.push(format!("agent       task restarts: {}", died.join(", ")));
    }
    let c = &status["connections"];
    if !c.is_null() {
        lines.push(format!(
            "connections {} of {} ({}%)",
            text(&c["used"]),
            text(&c["max"]),
            text(&c["percent"])
        ));
    }
    let w = &status["wal_archive"];
    if !w.is_null() {
        let archive = if w["archive_mode"] == Value::Bool(false) {
            "off (archive_mode)".to_owned()
        } else {
            format!(
                "last {} {} ago, {} archived, {} failed, {} waiting{}",
                text(&w["last_archived_wal"]),
                seconds(&w["last_archived_age_seconds"]),
                text(&w["archived_count"]),
                text(&w["failed_count"]),
                text(&w["pending_segments"]),
                if w["failing"] == Value::Bool(true) {
                    ", FAILING"
                } else {
                    ""
                }
            )
        };
        lines.push(format!("wal archive {archive}"));
    }
    let b = &status["backup"];
    if !b.is_null() {
        let last = &b["last_success"];
        lines.push(if last.is_null() {
            "backup      none yet".to_owned()
        } else {
            format!(
                "backup      {} {} ago, {} stored",
                text(&last["id"]),
                seconds(&b["last_success_age_seconds"]),
                output::size(last["stored_bytes"].as_i64().unwrap_or(0))
            )
        });
    }
    if let Some(next) = b.get("next_job").filter(|n| !n.is_null()) {
        lines.push(format!(
            "next job    {} at {}",
            text(&next["job"]),
            text(&next["at"])
        ));
    }
    let drill = &status["drill"];
    if !drill.is_null() {
        lines.push(format!(
            "drill       {} of {} at {}",
            if drill["ok"] == Value::Bool(true) {
                "passed"
            } else {
                "FAILED"
            },
            text(&drill["backup_id"]),
            text(&drill["finished_at"])
        ));
    }
    let d = &status["disk"];
    if !d.is_null() {
        lines.push(format!(
            "disk        {}% free ({} of {})",
            text(&d["free_percent"]),
            output::size(d["avail_bytes"].as_i64().unwrap_or(0)),
            output::size(d["size_bytes"].as_i64().unwrap_or(0))
        ));
    }
    let tenants = status["tenants"]["list"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    lines.push(String::new());
    lines.push(format!("tenants ({})", text(&status["tenants"]["count"])));
    if !tenants.is_empty() {
        let rows: Vec<Vec<String>> = tenants
            .iter()
            .map(|t| {
                let pool = &t["pool"];
                vec![
                    text(&t["name"]),
                    output::size(t["size_bytes"].as_i64().unwrap_or(0)),
                    text(&t["connections"]),
                    text(&pool["clients_active"]),
                    text(&pool["clients_waiting"]),
                    text(&pool["servers_active"]),
                    text(&pool["servers_idle"]),
                ]
            })
            .collect();
        lines.extend(output::table_lines(
            &[
                "NAME",
                "SIZE",
                "PG CONNS",
                "CL ACTIVE",
                "CL WAITING",
                "SV ACTIVE",
                "SV IDLE",
            ],
            &rows,
        ));
    }
    let redis = status["redis"].as_array().cloned().unwrap_or_default();
    if !redis.is_empty() {
        lines.push(String::new());
        lines.push(format!("redis ({})", redis.len()));
        let rows: Vec<Vec<String>> = redis
            .iter()
            .map(|r| {
                let memory = match r["used_memory_bytes"].as_i64() {
                    Some(used) => format!(
                        "{} / {}",
                        output::size(used),
                        output::size(r["maxmemory_bytes"].as_i64().unwrap_or(0))
                    ),
                    None => "-".to_owned(),
                };
                vec![
                    text(&r["tenant"]),
                    text(&r["state"]),
                    text(&r["port"]),
                    memory,
                    text(&r["connected_clients"]),
                    text(&r["restarts"]),
                ]
            })
            .collect();
        lines.extend(output::table_lines(
            &["TENANT", "STATE", "PORT", "MEMORY", "CLIENTS", "RESTARTS"],
            &rows,
        ));
    }
    let warnings = status["warnings"].as_array().cloned().unwrap_or_default();
    lines.push(String::new());
    if warnings.is_empty() {
        lines.push("no warnings".to_owned());
    } else {
        lines.push(format!("warnings ({})", warnings.len()));
        lines.extend(warnings.iter().map(|w| format!("  ! {}", text(w))));
    }
    lines
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn the_screen_shows_tenants_and_warnings() {
        let status = json!({
            "version": "0.1.0", "uptime_seconds": 300, "data_dir": "/d", "role": "primary",
            "pending_restart": ["api.listen", "postgres.port"],
            "task_restarts": {"api": 0, "ha_loop": 2},
            "postgres": {"state": "running", "version": "15.4", "pid": 7, "port": 5432,
                         "uptime_seconds": 290, "restarts": 0},
            "connections": {"used": 90, "max": 100, "percent": 90},
            "wal_archive": {"archive_mode": false},
            "backup": {"last_success": null, "next_job": {"job": "base backup", "at": "2026-11-24T03:05:00Z"}},
            "disk": null,
            "tenants": {"count": 1, "list": [{"name": "shop", "size_bytes": 8000, "connections": 2,
                        "pool": {"clients_active": 1, "clients_waiting": 0, "servers_active": 1, "servers_idle": 1}}]},
            "redis": [{"tenant": "shop", "state": "running", "port": 6380, "used_memory_bytes": 1048576,
                       "maxmemory_bytes": 268435456, "connected_clients": 1, "restarts": 0}],
            "warnings": ["connections at 90% of max (90 of 100)"],
        });
        let screen = super::render(&status).join("\n");
        assert!(screen.contains("role        primary"), "{screen}");
        assert!(
            screen.contains("next job    base backup at 2026-11-24T03:05:00Z"),
            "{screen}"
        );
        assert!(
            screen.contains("agent       pending restart: api.listen, postgres.port"),
            "{screen}"
        );
        assert!(
            screen.contains("agent       task restarts: ha_loop 2\n"),
            "{screen}"
        );
        assert!(screen.contains("connections 90 of 100 (90%)"), "{screen}");
        assert!(
            screen.contains("wal archive off (archive_mode)"),
            "{screen}"
        );
        assert!(screen.contains("shop  8000 bytes"), "{screen}");
        assert!(screen.contains("redis (1)"), "{screen}");
        assert!(
            screen.contains("shop    running  6380  1024 kB / 256 MB  1        0"),
            "{screen}"
        );
        assert!(
            screen.contains("  ! connections at 90% of max (90 of 100)"),
            "{screen}"
        );
    }
}
