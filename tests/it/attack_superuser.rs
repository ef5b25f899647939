//! Attack: a tenant plants functions and operators that shadow the catalog's, tables whose
//! loading calls its functions, and an index whose check does, then waits for the agent's
//! routine work (base backup with row counts, drill, dump, restore dump, status, metrics,
//! tenant commands) to run them with superuser rights. Every payload only does harm when
//! it runs as a superuser: it makes the tenant a superuser and runs a shell command.
//! Nothing may change; at the end the same trap, called the way the agent used to call
//! it, does fire, so the test would notice the hole coming back.

use std::path::PathBuf;

use crate::support::psql::query;
use crate::support::TestAgent;

/// Does harm only with superuser rights: the tenant becomes superuser and a file appears.
fn payload(marker: &str) -> String {
    format!(
        "CREATE FUNCTION public.escalate() RETURNS boolean LANGUAGE plpgsql AS $f$
         BEGIN
           BEGIN EXECUTE 'ALTER ROLE shop SUPERUSER'; EXCEPTION WHEN OTHERS THEN NULL; END;
           BEGIN EXECUTE 'COPY (SELECT 1) TO PROGRAM ''touch {marker}''';
           EXCEPTION WHEN OTHERS THEN NULL; END;
           RETURN true;
         END $f$;
         -- Generated columns and index expressions want IMMUTABLE: the tenant may lie.
         CREATE FUNCTION public.escalate_imm(int) RETURNS int LANGUAGE plpgsql IMMUTABLE AS
           $f$ BEGIN PERFORM public.escalate(); RETURN $1; END $f$;"
    )
}

/// Shadows of what the agent calls: `public` and a schema named like the agent's
/// superuser (`\"$user\"` comes first in the default search_path).
const SHADOWS: &str = "
    CREATE SCHEMA pgplatform;
    CREATE FUNCTION public.format(text, name, name) RETURNS text LANGUAGE plpgsql AS
      $f$ BEGIN PERFORM public.escalate(); RETURN pg_catalog.format($1, $2, $3); END $f$;
    CREATE FUNCTION pgplatform.format(text, name, name) RETURNS text LANGUAGE plpgsql AS
      $f$ BEGIN PERFORM public.escalate(); RETURN pg_catalog.format($1, $2, $3); END $f$;
    CREATE FUNCTION public.pg_export_snapshot() RETURNS text LANGUAGE plpgsql AS
      $f$ BEGIN PERFORM public.escalate(); RETURN pg_catalog.pg_export_snapshot(); END $f$;
    CREATE FUNCTION public.current_database() RETURNS name LANGUAGE plpgsql AS
      $f$ BEGIN PERFORM public.escalate(); RETURN pg_catalog.current_database(); END $f$;
    CREATE FUNCTION public.pg_database_size(name) RETURNS bigint LANGUAGE plpgsql AS
      $f$ BEGIN PERFORM public.escalate(); RETURN pg_catalog.pg_database_size($1); END $f$;
    CREATE FUNCTION public.to_regclass(text) RETURNS regclass LANGUAGE plpgsql AS
      $f$ BEGIN PERFORM public.escalate(); RETURN pg_catalog.to_regclass($1); END $f$;
    CREATE FUNCTION public.bt_index_check(regclass, boolean) RETURNS void LANGUAGE plpgsql AS
      $f$ BEGIN PERFORM public.escalate(); END $f$;
    CREATE FUNCTION public.count_step(bigint) RETURNS bigint LANGUAGE plpgsql AS
      $f$ BEGIN PERFORM public.escalate(); RETURN $1 + 1; END $f$;
    CREATE AGGREGATE public.count(*) (SFUNC = public.count_step, STYPE = bigint, INITCOND = '0');
    CREATE FUNCTION public.name_eq(name, name) RETURNS boolean LANGUAGE plpgsql AS
      $f$ BEGIN PERFORM public.escalate(); RETURN $1::text OPERATOR(pg_catalog.=) $2::text; END $f$;
    CREATE OPERATOR public.= (LEFTARG = name, RIGHTARG = name, FUNCTION = public.name_eq);
    CREATE FUNCTION public.oid_eq(oid, oid) RETURNS boolean LANGUAGE plpgsql AS
      $f$ BEGIN PERFORM public.escalate(); RETURN $1 OPERATOR(pg_catalog.=) $2; END $f$;
    CREATE OPERATOR public.= (LEFTARG = oid, RIGHTARG = oid, FUNCTION = public.oid_eq);
    CREATE FUNCTION public.char_eq(\"char\", \"char\") RETURNS boolean LANGUAGE plpgsql AS
      $f$ BEGIN PERFORM public.escalate(); RETURN $1 OPERATOR(pg_catalog.=) $2; END $f$;
    CREATE OPERATOR public.= (LEFTARG = \"char\", RIGHTARG = \"char\", FUNCTION = public.char_eq);
    CREATE FUNCTION public.text_eq(text, text) RETURNS boolean LANGUAGE plpgsql AS
      $f$ BEGIN PERFORM public.escalate(); RETURN $1 OPERATOR(pg_catalog.=) $2; END $f$;
    CREATE OPERATOR public.= (LEFTARG = text, RIGHTARG = text, FUNCTION = public.text_eq);
";

/// Data whose loading (restore dump) and checking (drill's amcheck) calls the tenant.
const TRAPPED_DATA: &str = "
    CREATE TABLE items (id int PRIMARY KEY, note text);
    INSERT INTO items SELECT g, 'note ' || g FROM generate_series(1, 50) g;
    CREATE INDEX items_trap ON items (public.escalate_imm(id));
    CREATE TABLE trapped (
      x int CHECK (public.escalate()),
      y int GENERATED ALWAYS AS (public.escalate_imm(x)) STORED
    );
    INSERT INTO trapped (x) SELECT g FROM generate_series(1, 5) g;
";

struct Marker(PathBuf);

impl Drop for Marker {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn is_superuser(agent: &TestAgent, role: &str) -> String {
    agent.admin_psql(&format!(
        "SELECT rolsuper FROM pg_catalog.pg_roles WHERE rolname = '{role}'"
    ))
}

#[test]
fn a_tenant_never_gets_its_code_run_by_the_superuser() {
    let marker = Marker(std::env::temp_dir().join(format!(
        "pgplatform-attack-{}-{}",
        std::process::id(),
        rand_suffix()
    )));
    let agent = TestAgent::start_with_shop("[backup]\nschedule = \"\"\ndrill_schedule = \"\"\n");
    let url = agent.tenant_url("shop");
    // The whole payload is created by the tenant itself, through the pooler.
    query(&url, &payload(&marker.0.display().to_string()));
    query(&url, SHADOWS);
    query(&url, TRAPPED_DATA);
    assert_eq!(is_superuser(&agent, "shop"), "f");

    // Routine work, each as an operator or the scheduler would run it.
    agent.switch_and_archive();
    let backup = agent.cli_json(&["backup", "run", "--json"]);
    let id = backup["id"].as_str().unwrap();
    let manifest =
        std::fs::read_to_string(agent.data_dir().join(format!("backups/base/{id}/manifest")))
            .unwrap();
    assert!(
        manifest.contains("\"public.items\": 50"),
        "the backup counted shop's rows as shop: {manifest}\n{}",
        agent.log_tail(20)
    );
    let drill = agent.cli_json(&["backup", "drill", "--json"]);
    assert_eq!(drill["ok"], true, "{drill}");
    assert!(drill["tables_compared"].as_u64() >= Some(2), "{drill}");
    agent.cli_ok(&["backup", "dump", "shop"]);
    agent.cli_ok(&["restore", "dump", "shop", "--as", "shop_copy"]);
    assert_eq!(
        agent.admin_psql_in("shop_copy", "SELECT count(*) FROM public.trapped"),
        "5",
        "the dump was restored, traps and all"
    );
    assert_eq!(
        agent.admin_psql_in(
            "shop_copy",
            "SELECT pg_catalog.pg_get_userbyid(relowner) FROM pg_catalog.pg_class WHERE relname = 'trapped'"
        ),
        "shop",
        "restored objects belong to the tenant"
    );
    agent.cli_ok(&["status"]);
    agent.cli_ok(&["tenant", "list"]);
    agent.cli_ok(&["tenant", "show", "shop"]);
    assert!(agent.scrape().contains("pg_up"), "metrics were read");

    assert_eq!(is_superuser(&agent, "shop"), "f", "{}", agent.log_tail(30));
    assert_eq!(
        is_superuser(&agent, "pgplatform_as_shop"),
        "f",
        "the tenant's agent role is no superuser"
    );
    assert!(
        !marker.0.exists(),
        "a tenant's function ran a shell command as the superuser"
    );

    // The trap is real: the query the base backup used to send, run as the superuser with
    // the default search_path, makes the tenant a superuser and runs the command.
    agent.admin_psql_in(
        "shop",
        "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
           JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.relname = 'items'",
    );
    assert_eq!(
        is_superuser(&agent, "shop"),
        "t",
        "the control did not fire"
    );
    assert!(marker.0.exists(), "the control's command did not run");
}

#[test]
fn the_agent_role_cannot_be_reached_with_a_password_or_from_another_database_owner() {
    let agent = TestAgent::start_with_shop("");
    agent.cli_ok(&["tenant", "create", "other"]);
    let hba = std::fs::read_to_string(agent.pgdata().join("pg_hba.conf")).unwrap();
    for line in hba.lines().filter(|l| l.contains("pgplatform_as_")) {
        assert!(
            line.starts_with("local") && line.ends_with("peer map=pgplatform"),
            "the agent role is peer-only: {line}"
        );
    }
    // Over TCP it is rejected whatever the password.
    let url = format!(
        "postgresql://pgplatform_as_shop:guess@127.0.0.1:{}/shop?sslmode=disable",
        agent.pg_port()
    );
    let err = crate::support::psql::query_fails(&url, "SELECT 1");
    assert!(err.contains("pgplatform_as_shop"), "{err}");
    // It holds the tenant's rights and no one else's: not even CONNECT to another tenant.
    assert_eq!(
        agent.admin_psql(
            "SELECT pg_catalog.has_database_privilege('pgplatform_as_shop', 'other', 'CONNECT')"
        ),
        "f"
    );
    agent.cli_ok(&["tenant", "drop", "shop", "--yes"]);
    assert_eq!(
        agent.admin_psql("SELECT count(*) FROM pg_roles WHERE rolname = 'pgplatform_as_shop'"),
        "0",
        "dropping the tenant drops its agent role"
    );
}

fn rand_suffix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or_default()
}

#[test]
fn a_dump_restores_as_the_tenant_with_the_extensions_the_superuser_gave_it() {
    // pg_stat_statements is untrusted: only the superuser can create it, so the restore
    // (as the tenant) relies on the agent creating it first and skipping the dump's entry.
    let agent = TestAgent::start_with("[backup]\nschedule = \"\"\ndrill_schedule = \"\"\n");
    agent.cli_ok(&[
        "tenant",
        "create",
        "stats",
        "--extension",
        "pg_stat_statements",
    ]);
    let url = agent.tenant_url("stats");
    query(
        &url,
        "CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2)",
    );
    agent.cli_ok(&["backup", "dump", "stats"]);
    agent.cli_ok(&["restore", "dump", "stats", "--as", "stats_copy"]);
    assert_eq!(
        agent.admin_psql_in("stats_copy", "SELECT count(*) FROM public.t"),
        "2"
    );
    assert_eq!(
        agent.admin_psql_in(
            "stats_copy",
            "SELECT count(*) FROM pg_catalog.pg_extension WHERE extname = 'pg_stat_statements'"
        ),
        "1"
    );
}
