//! `pgplatform pooler import-ini`: a pgbouncer.ini becomes `[pooler]` TOML that a real
//! agent runs with (SHOW CONFIG and SHOW DATABASES show its values), every line that does
//! not apply commented with the reason; it needs no config file and no agent.

use std::fs;
use std::time::Duration;

use crate::support::pooler::{console, runtime, table};
use crate::support::{pgplatform, run, stderr_of, stdout_of, TestAgent};

const INI: &str = "\
[databases]
shop = host=10.1.2.3 port=5432 dbname=shop pool_size=3 pool_mode=session
* = host=10.1.2.3

[pgbouncer]
logfile = /var/log/pgbouncer/pgbouncer.log
auth_type = scram-sha-256
auth_file = /etc/pgbouncer/userlist.txt
auth_query = SELECT usename, passwd FROM pg_shadow WHERE usename=$1
default_pool_size = 7
max_client_conn = 250
query_wait_timeout = 45
server_reset_query_always = 1
stats_users = monitor, grafana
";

#[test]
fn a_pgbouncer_ini_translates_into_settings_an_agent_runs_with() {
    let dir = tempfile::tempdir().unwrap();
    let ini = dir.path().join("pgbouncer.ini");
    fs::write(&ini, INI).unwrap();
    // No config file, no agent: run from an empty directory.
    let out = run(
        pgplatform()
            .current_dir(dir.path())
            .env_remove("PGPLATFORM_CONFIG")
            .args(["pooler", "import-ini"])
            .arg(&ini),
        Duration::from_secs(30),
    );
    assert!(out.status.success(), "{}", stderr_of(&out));
    let toml = stdout_of(&out);
    for (line, why) in [
        ("# logfile = ", "not applicable"),
        ("# auth_file = ", "no password list or query is needed"),
        ("# auth_query = ", "no password list or query is needed"),
        ("# host = 10.1.2.3", "the platform's own PostgreSQL"),
        ("# [databases] * = host=10.1.2.3", "every database"),
    ] {
        assert!(
            toml.lines().any(|l| l.starts_with(line) && l.contains(why)),
            "no {line:?} … {why:?} in\n{toml}"
        );
    }

    let agent = TestAgent::start_with_shop(&toml);
    let rt = runtime();
    rt.block_on(async {
        let console = console(&agent).await;
        let config = table(&console, "SHOW CONFIG").await.unwrap();
        for (key, value) in [
            ("default_pool_size", "7"),
            ("max_client_conn", "250"),
            ("query_wait_timeout", "45"),
            ("server_reset_query_always", "1"),
            ("stats_users", "monitor,grafana"),
            // Not in the ini: PgBouncer's default, written out.
            ("pool_mode", "session"),
        ] {
            let row = config.rows_where("key", key)[0].clone();
            assert_eq!(config.get(&row, "value"), value, "{key}");
        }
    });
    // The per-database pool size applies: SHOW DATABASES once shop has a pool.
    let url = agent.tenant_url("shop");
    assert_eq!(crate::support::psql::query(&url, "select 1"), "1");
    rt.block_on(async {
        let console = console(&agent).await;
        let databases = table(&console, "SHOW DATABASES").await.unwrap();
        let row = databases.rows_where("name", "shop")[0].clone();
        assert_eq!(databases.get(&row, "pool_size"), "3");
        assert_eq!(databases.get(&row, "pool_mode"), "session");
    });

    let help = run(
        pgplatform().args(["pooler", "import-ini", "--help"]),
        Duration::from_secs(30),
    );
    let help = stdout_of(&help);
    assert!(
        help.contains("no --json") && help.contains("not apply"),
        "{help}"
    );
}
