//! Runbook "vector search for a tenant": with `bin_dir` pointing at PostgreSQL 16 + pgvector (from the
//! `pgserver` Python wheel), `--extension vector` works end to end.

use std::path::Path;

use crate::support::psql::query;
use crate::support::{skip, TestAgent};

/// Installed by the test script with `pip install --target /opt/pgplatform-test/pgserver pgserver`.
const PGSERVER_BIN_DIR: &str = "/opt/pgplatform-test/pgserver/pgserver/pginstall/bin";

#[test]
fn tenant_with_pgvector_on_postgres_16() {
    if !Path::new(PGSERVER_BIN_DIR).join("postgres").exists() {
        let reason = format!(
            "{PGSERVER_BIN_DIR} not found (pip install --target /opt/pgplatform-test/pgserver pgserver)"
        );
        skip(&reason);
        return;
    }
    let agent = TestAgent::start_with(&format!("[postgres]\nbin_dir = \"{PGSERVER_BIN_DIR}\"\n"));
    let version: u32 = agent.admin_psql("show server_version_num").parse().unwrap();
    assert!(
        version >= 160_000,
        "bin_dir was not used: server_version_num = {version}"
    );

    agent.cli_ok(&["tenant", "create", "vec", "--extension", "vector"]);
    let url = agent.tenant_url("vec");
    assert_eq!(query(&url, "select '[1,2,3]'::vector"), "[1,2,3]");
    query(&url, "create table items (id int, embedding vector(3))");
    query(
        &url,
        "insert into items values (1, '[1,1,1]'), (2, '[5,5,5]'), (3, '[9,9,9]')",
    );
    assert_eq!(
        query(
            &url,
            "select id from items order by embedding <-> '[4,4,4]' limit 1"
        ),
        "2"
    );
}
