//! Runbook "backups off the machine": the same backup, point-in-time restore and drill
//! against an S3-compatible server (moto) configured in the TOML file; WAL archiving rides
//! out the server being unreachable (nothing lost once it answers again); a repository
//! that cannot be reached is an error naming its endpoint.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use crate::support::backup::{Moto, RestoredPg};
use crate::support::psql::query;
use crate::support::{pgplatform, run, stderr_of, wait_for, TestAgent, COMMAND_TIMEOUT};

#[test]
fn s3_backup_pitr_drill_and_outage() {
    let Some(moto) = Moto::start() else {
        return;
    };
    moto.create_bucket("pgbk");
    let secrets = tempfile::tempdir().unwrap();
    fs_mode(secrets.path(), 0o755);
    let credentials = secrets.path().join("s3.credentials");
    std::fs::write(
        &credentials,
        "aws_access_key_id = test\naws_secret_access_key = test\n",
    )
    .unwrap();
    fs_mode(&credentials, 0o600);
    if let Ok(Some(pg)) = nix::unistd::User::from_name("postgres") {
        // PostgreSQL's archiver runs `wal push` as this user: it must read the file.
        nix::unistd::chown(&credentials, Some(pg.uid), Some(pg.gid)).unwrap();
    }
    let s3 = format!(
        "[backup]\nrepository = \"s3\"\nschedule = \"\"\ndrill_schedule = \"\"\n\
         [backup.s3]\nendpoint = \"{}\"\nbucket = \"pgbk\"\nprefix = \"it/node1\"\npath_style = true\n\
         credentials_file = \"{}\"\ntimeout_seconds = 3\n",
        moto.endpoint(),
        credentials.display()
    );
    let agent = TestAgent::start_with_shop(&s3);
    let url = agent.tenant_url("shop");
    query(&url, "CREATE TABLE events (n int PRIMARY KEY)");
    agent.cli_ok(&["backup", "run"]);
    agent.pitr_round_trip(&url);
    let drill = agent.cli_json(&["backup", "drill", "--json"]);
    assert_eq!(drill["ok"], true, "{drill}");
    let id = drill["backup_id"].as_str().unwrap().to_owned();
    let verified = agent.cli_json(&["backup", "verify", &id, "--json"]);
    assert_eq!(verified["failures"], serde_json::json!([]), "{verified}");
    agent.cli_ok(&["backup", "dump", "shop"]);
    agent.cli_ok(&["restore", "dump", "shop", "--as", "shop_from_s3"]);
    assert_eq!(
        agent.admin_psql_in("shop_from_s3", "SELECT count(*) FROM events"),
        "3"
    );
    let listed = agent.cli_json(&["backup", "list", "--json"]);
    assert_eq!(
        listed.as_array().map(Vec::len),
        Some(2),
        "a base backup and a dump: {listed}"
    );
    let expired = agent.cli_json(&["backup", "expire", "--json"]);
    assert_eq!(
        expired["backups"],
        serde_json::json!([]),
        "one backup is the newest: {expired}"
    );

    // The repository stops answering: archiving fails, PostgreSQL keeps the WAL.
    let failed_before: i64 = agent
        .admin_psql("SELECT failed_count FROM pg_stat_archiver")
        .parse()
        .unwrap();
    moto.pause();
    query(&url, "INSERT INTO events VALUES (4)");
    agent.admin_psql("SELECT pg_switch_wal()");
    wait_for(
        Duration::from_secs(90),
        "archiving to fail while S3 is down",
        || {
            let failed: i64 = agent
                .admin_psql("SELECT failed_count FROM pg_stat_archiver")
                .parse()
                .ok()?;
            (failed > failed_before).then_some(())
        },
    );
    let waiting = agent
        .admin_psql("SELECT count(*) FROM pg_ls_archive_statusdir() WHERE name LIKE '%.ready'");
    assert_ne!(waiting, "0", "the unarchived segment is kept");
    moto.resume();
    agent.switch_and_archive();

    let latest = agent.restore_dir("latest");
    agent.cli_ok(&[
        "restore",
        "--target-dir",
        latest.to_str().unwrap(),
        "--latest",
    ]);
    let restored = RestoredPg::start(&latest);
    assert_eq!(
        restored.query(
            "shop",
            "SELECT string_agg(n::text, ',' ORDER BY n) FROM events"
        ),
        "1,2,3,4",
        "nothing written during the outage was lost"
    );

    // A repository nobody answers at: the error names the endpoint.
    let unreachable = secrets.path().join("unreachable.toml");
    std::fs::write(
        &unreachable,
        format!(
            "data_dir = \"{}\"\n[backup]\nrepository = \"s3\"\n[backup.s3]\nendpoint = \"http://127.0.0.1:9\"\n\
             bucket = \"pgbk\"\npath_style = true\ncredentials_file = \"{}\"\ntimeout_seconds = 2\n",
            agent.data_dir().display(),
            credentials.display()
        ),
    )
    .unwrap();
    let out = run(
        pgplatform()
            .arg("--config")
            .arg(&unreachable)
            .args(["backup", "list"]),
        COMMAND_TIMEOUT,
    );
    assert!(!out.status.success());
    assert!(
        stderr_of(&out).contains("http://127.0.0.1:9"),
        "{}",
        stderr_of(&out)
    );
}

fn fs_mode(path: &std::path::Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}
