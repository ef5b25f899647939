//! Runbook "give an application a database": `tenant create` yields a least-privilege role, its own
//! database other tenants cannot reach, and secret files an app can use as they are.

use crate::support::psql::{
    expect_success, psql_command, query, query_fails, run_sql, with_database,
};
use crate::support::{mode, TestAgent};

#[test]
fn tenant_create_gives_an_isolated_least_privilege_database() {
    let agent = TestAgent::start();
    agent.cli_ok(&["tenant", "create", "shop"]);
    agent.cli_ok(&["tenant", "create", "crm"]);
    let shop = agent.tenant_url("shop");
    let crm = agent.tenant_url("crm");

    // The app connects with the URL from its secrets and is its own role in its own database.
    assert_eq!(
        query(&shop, "select current_user || '@' || current_database()"),
        "shop@shop"
    );
    assert_eq!(
        query(&crm, "select current_user || '@' || current_database()"),
        "crm@crm"
    );

    secret_files_are_private_and_usable(&agent);
    tenants_are_isolated_from_each_other(&agent, &shop, &crm);
    tenant_role_has_least_privilege(&agent, &shop);

    let list = agent.cli_json(&["tenant", "list", "--json"]);
    let mut names: Vec<&str> = list
        .as_array()
        .expect("a JSON array")
        .iter()
        .filter_map(|t| t["name"].as_str())
        .collect();
    names.sort_unstable();
    assert_eq!(names, ["crm", "shop"], "tenant list: {list}");

    // `show` hides the password unless asked to reveal it.
    let password = agent.secret("shop", "password");
    let shown = agent.cli_ok(&["tenant", "show", "shop"]);
    assert!(
        !shown.contains(&password),
        "tenant show printed the password: {shown}"
    );
    let shown = agent.cli_json(&["tenant", "show", "shop", "--json"]);
    assert_eq!(shown["name"], "shop");
    assert!(
        !shown.to_string().contains(&password),
        "tenant show --json printed the password: {shown}"
    );
    let revealed = agent.cli_ok(&["tenant", "show", "shop", "--reveal"]);
    assert!(
        revealed.contains(&password),
        "tenant show --reveal: {revealed}"
    );
    let revealed = agent.cli_json(&["tenant", "show", "shop", "--reveal", "--json"]);
    let revealed_url = revealed["database_url"].as_str().unwrap_or_default();
    assert_eq!(
        query(revealed_url, "select current_user"),
        "shop",
        "revealed database_url: {revealed}"
    );

    // Secrets never reach the agent's log.
    for tenant in ["shop", "crm"] {
        assert!(
            !agent
                .log_contents()
                .contains(&agent.secret(tenant, "password")),
            "{tenant}'s password is in the log"
        );
    }
}

fn secret_files_are_private_and_usable(agent: &TestAgent) {
    let secrets = agent.secrets_dir("shop");
    assert_eq!(mode(&secrets), 0o700, "{}", secrets.display());
    for file in ["password", "database_url", "env", "pgpass", "jdbc_url"] {
        assert_eq!(
            mode(&secrets.join(file)),
            0o600,
            "{}/{file}",
            secrets.display()
        );
    }

    let password = agent.secret("shop", "password");
    assert!(
        password.len() >= 16,
        "a {}-character password is too short",
        password.len()
    );

    let env = agent.secret("shop", "env");
    let keys: Vec<&str> = env
        .lines()
        .filter_map(|line| line.trim().trim_start_matches("export ").split_once('='))
        .map(|(key, _)| key.trim())
        .collect();
    for key in [
        "PGHOST",
        "PGPORT",
        "PGDATABASE",
        "PGUSER",
        "PGPASSWORD",
        "DATABASE_URL",
    ] {
        assert!(keys.contains(&key), "env file has no {key} line:\n{env}");
    }

    // libpq finds the password in the pgpass file (-w: never prompt).
    let mut psql = psql_command();
    psql.env("PGPASSFILE", secrets.join("pgpass"));
    psql.args([
        "-w",
        "-h",
        "127.0.0.1",
        "-p",
        &agent.pooler_port().to_string(),
        "-U",
        "shop",
        "-d",
        "shop",
    ]);
    assert_eq!(
        expect_success(&run_sql(psql, "select current_user"), "login with pgpass"),
        "shop"
    );

    let jdbc = agent.secret("shop", "jdbc_url");
    assert!(
        jdbc.starts_with("jdbc:postgresql://"),
        "jdbc_url = {jdbc:?}"
    );
}

fn tenants_are_isolated_from_each_other(agent: &TestAgent, shop: &str, crm: &str) {
    query(
        shop,
        "create table orders (id int); insert into orders values (1)",
    );

    // crm's credentials do not open shop's database...
    query_fails(&with_database(crm, "shop"), "select 1");
    // ...and even inside it (as the superuser switching to crm) crm can neither read nor write there.
    let denied = agent.admin_psql_fails("shop", "set role crm; select * from public.orders");
    assert!(
        denied.contains("permission denied"),
        "crm reading shop's table: {denied}"
    );
    let denied = agent.admin_psql_fails(
        "shop",
        "set role crm; create table public.intruder (id int)",
    );
    assert!(
        denied.contains("permission denied"),
        "crm creating a table in shop: {denied}"
    );
    // shop's own credentials do not open crm's database either.
    query_fails(&with_database(shop, "crm"), "select 1");
}

fn tenant_role_has_least_privilege(agent: &TestAgent, shop: &str) {
    let attributes = "select rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls \
                      from pg_roles where rolname = 'shop'";
    assert_eq!(agent.admin_psql(attributes), "f|f|f|f|f");
    let denied = query_fails(shop, "create role intruder");
    assert!(
        denied.contains("permission denied"),
        "create role as shop: {denied}"
    );
    let denied = query_fails(shop, "create database intruder");
    assert!(
        denied.contains("permission denied"),
        "create database as shop: {denied}"
    );
    // The owner can work in its own database.
    assert_eq!(
        query(
            shop,
            "create table items (id int); select count(*) from items"
        ),
        "0"
    );
}
