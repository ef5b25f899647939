//! Runbooks "rotate a password" and "remove an application": rotation invalidates the old password at
//! once; drop needs --yes and then removes database, roles and secrets; re-creating is refused.

use crate::support::psql::{login_error_code, query, query_fails};
use crate::support::TestAgent;

#[test]
fn rotate_invalidates_the_old_password_at_once() {
    let mut agent = TestAgent::start();
    agent.cli_ok(&["tenant", "create", "shop", "--with-readonly"]);
    let old_url = agent.tenant_url("shop");
    let old_password = agent.secret("shop", "password");
    assert_eq!(login_error_code(&old_url), None);

    agent.cli_ok(&["tenant", "rotate", "shop"]);
    let new_url = agent.tenant_url("shop");
    let new_password = agent.secret("shop", "password");
    assert_ne!(new_password, old_password);
    assert_ne!(new_url, old_url);
    assert_eq!(
        login_error_code(&old_url).as_deref(),
        Some("28P01"),
        "login with the old password"
    );
    assert_eq!(query(&new_url, "select current_user"), "shop");
    for file in ["env", "pgpass", "database_url"] {
        let text = agent.secret("shop", file);
        assert!(
            !text.contains(&old_password),
            "{file} still has the old password"
        );
    }
    assert!(
        !agent.log_contents().contains(&new_password),
        "the new password is in the log"
    );

    // --readonly rotates the reader only.
    let old_reader = agent.readonly_url("shop");
    assert_eq!(login_error_code(&old_reader), None);
    agent.cli_ok(&["tenant", "rotate", "shop", "--readonly"]);
    let new_reader = agent.readonly_url("shop");
    assert_ne!(new_reader, old_reader);
    assert_eq!(
        login_error_code(&old_reader).as_deref(),
        Some("28P01"),
        "login with the old read-only password"
    );
    assert_eq!(query(&new_reader, "select current_user"), "shop_ro");
    assert_eq!(
        agent.tenant_url("shop"),
        new_url,
        "rotating the reader changed the owner's URL"
    );
    assert_eq!(query(&new_url, "select current_user"), "shop");

    // The rotated passwords are the ones that survive a restart of the agent.
    agent.restart();
    assert_eq!(query(&new_url, "select current_user"), "shop");
    assert_eq!(query(&new_reader, "select current_user"), "shop_ro");
    assert_eq!(login_error_code(&old_url).as_deref(), Some("28P01"));
}

#[test]
fn drop_needs_yes_then_removes_everything_and_create_refuses_duplicates() {
    let agent = TestAgent::start();
    agent.cli_ok(&["tenant", "create", "shop", "--with-readonly"]);
    let url = agent.tenant_url("shop");
    query(
        &url,
        "create table orders (id int); insert into orders values (1)",
    );

    // Without --yes nothing is dropped.
    let refused = agent.cli_err(&["tenant", "drop", "shop"]);
    assert!(refused.contains("--yes"), "drop without --yes: {refused}");
    assert_eq!(query(&url, "select count(*) from orders"), "1");
    assert!(agent.secrets_dir("shop").join("password").exists());

    // Creating an existing tenant is refused and changes nothing.
    let before = agent.inventory();
    let password = agent.secret("shop", "password");
    let refused = agent.cli_err(&["tenant", "create", "shop"]);
    assert!(
        refused.contains("exist"),
        "create of an existing tenant: {refused}"
    );
    assert_eq!(agent.secret("shop", "password"), password);
    assert_eq!(agent.inventory(), before);
    assert_eq!(query(&url, "select count(*) from orders"), "1");

    agent.cli_ok(&["tenant", "drop", "shop", "--yes"]);
    let leftovers = "select (select count(*) from pg_database where datname = 'shop') \
                     + (select count(*) from pg_roles where rolname in ('shop', 'shop_ro'))";
    assert_eq!(agent.admin_psql(leftovers), "0");
    assert!(
        !agent.secrets_dir("shop").exists(),
        "secrets dir survived the drop"
    );
    let list = agent.cli_json(&["tenant", "list", "--json"]);
    assert_eq!(
        list.as_array().map(Vec::len),
        Some(0),
        "tenant list after drop: {list}"
    );
    assert_eq!(
        agent.admin_psql("select count(*) from pgplatform.tenants"),
        "0"
    );
    query_fails(&url, "select 1");

    // The name is free again, with a new password.
    agent.cli_ok(&["tenant", "create", "shop"]);
    assert_ne!(agent.secret("shop", "password"), password);
    assert_eq!(
        query(
            &agent.tenant_url("shop"),
            "select count(*) from pg_tables where tablename = 'orders'"
        ),
        "0"
    );
}
