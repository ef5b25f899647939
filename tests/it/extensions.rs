//! Runbook "a tenant needs an extension": available extensions are created in the tenant's database;
//! a missing one fails with the list of what is available and leaves nothing behind.

use crate::support::psql::query;
use crate::support::TestAgent;

#[test]
fn available_extension_is_installed_and_missing_one_changes_nothing() {
    // The default PostgreSQL (Debian's 15) ships pg_stat_statements but not pgvector.
    let agent = TestAgent::start();

    agent.cli_ok(&[
        "tenant",
        "create",
        "stats",
        "--extension",
        "pg_stat_statements",
    ]);
    let installed = "select count(*) from pg_extension where extname = 'pg_stat_statements'";
    assert_eq!(agent.admin_psql_in("stats", installed), "1");
    let url = agent.tenant_url("stats");
    // The extension works, not just exists: it recorded the tenant's own statement.
    query(&url, "select 1 as pgp_marker_column");
    assert_eq!(
        query(
            &url,
            "select count(*) from pg_stat_statements \
             where query like '%pgp_marker_column%' and query not like '%pg_stat_statements%'"
        ),
        "1"
    );
    let list = agent.cli_json(&["tenant", "list", "--json"]);
    let stats = list
        .as_array()
        .and_then(|t| t.iter().find(|t| t["name"] == "stats"));
    let extensions = stats
        .map(|t| t["extensions"].to_string())
        .unwrap_or_default();
    assert!(
        extensions.contains("pg_stat_statements"),
        "tenant list: {list}"
    );

    let before = agent.inventory();
    let error = agent.cli_err(&["tenant", "create", "vec", "--extension", "vector"]);
    assert!(error.contains("vector"), "missing extension error: {error}");
    // It names the OS package that provides it (Debian's postgresql-<major>-pgvector).
    assert!(
        error.contains("install the package postgresql-") && error.contains("-pgvector"),
        "missing extension error names no package: {error}"
    );
    assert!(
        error.to_lowercase().contains("available"),
        "error does not list available extensions: {error}"
    );
    let known = [
        "pg_stat_statements",
        "pgcrypto",
        "hstore",
        "citext",
        "pg_trgm",
        "amcheck",
        "btree_gin",
    ];
    assert!(
        known.iter().any(|ext| error.contains(ext)),
        "error lists no known extension: {error}"
    );

    assert_eq!(
        agent.inventory(),
        before,
        "the failed create left something behind"
    );
    assert!(!agent.secrets_dir("vec").exists());
    let leftovers = "select (select count(*) from pg_database where datname = 'vec') \
                     + (select count(*) from pg_roles where rolname in ('vec', 'vec_ro'))";
    assert_eq!(agent.admin_psql(leftovers), "0");
}
