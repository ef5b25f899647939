//! Runbook "give analysts read access": `--with-readonly` makes NAME_ro, which reads every table the
//! owner has made or will make, in any schema, and can change nothing.

use crate::support::psql::{query, query_fails};
use crate::support::{mode, TestAgent};

#[test]
fn readonly_role_reads_current_and_future_tables_and_writes_nothing() {
    let agent = TestAgent::start();
    agent.cli_ok(&["tenant", "create", "shop", "--with-readonly"]);
    let owner = agent.tenant_url("shop");
    let reader = agent.readonly_url("shop");

    let readonly_secrets = agent.secrets_dir("shop").join("readonly");
    for file in ["password", "database_url", "env", "pgpass", "jdbc_url"] {
        assert_eq!(
            mode(&readonly_secrets.join(file)),
            0o600,
            "{}/{file}",
            readonly_secrets.display()
        );
    }
    assert_eq!(
        query(&reader, "select current_user || '@' || current_database()"),
        "shop_ro@shop"
    );
    let attributes = "select rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls \
                      from pg_roles where rolname = 'shop_ro'";
    assert_eq!(agent.admin_psql(attributes), "f|f|f|f|f");

    // A table the owner creates first, read right away.
    query(
        &owner,
        "create table early (id int); insert into early values (1)",
    );
    assert_eq!(query(&reader, "select count(*) from early"), "1");

    // Tables and views created after the reader has been in use: default privileges cover them.
    query(
        &owner,
        "create table later (id int); insert into later values (1), (2)",
    );
    query(&owner, "create view later_view as select id from later");
    assert_eq!(query(&reader, "select count(*) from later"), "2");
    assert_eq!(query(&reader, "select count(*) from later_view"), "2");

    // A schema the owner creates later, with a table in it.
    query(&owner, "create schema app; create table app.items (id int); insert into app.items values (1), (2), (3)");
    assert_eq!(query(&reader, "select count(*) from app.items"), "3");

    // Nothing the reader tries to change is allowed: not by its read-only default (if it has one)...
    let writes = [
        "insert into early values (2)",
        "update early set id = 3",
        "delete from early",
        "truncate early",
        "insert into app.items values (4)",
        "delete from app.items",
        "create table intruder (id int)",
        "create table app.intruder (id int)",
        "create schema intruder",
    ];
    for sql in writes {
        query_fails(&reader, sql);
    }
    // ...and not by its privileges either, which hold when a client turns read-only mode off.
    let separator = if reader.contains('?') { '&' } else { '?' };
    let read_write = format!("{reader}{separator}options=-c%20default_transaction_read_only%3Doff");
    assert_eq!(
        query(&read_write, "show default_transaction_read_only"),
        "off"
    );
    for sql in writes {
        let denied = query_fails(&read_write, sql);
        assert!(
            denied.contains("permission denied"),
            "shop_ro: {sql}: {denied}"
        );
    }
    assert_eq!(query(&owner, "select count(*) from early"), "1");
    assert_eq!(query(&owner, "select count(*) from app.items"), "3");
}
