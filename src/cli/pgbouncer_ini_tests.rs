//! Unit tests of the pgbouncer.ini translator.

use super::*;

/// A pgbouncer.ini as operators write them, with settings of every fate.
const INI: &str = r#"
; a comment
[databases]
shop = host=10.0.0.5 port=5432 dbname=shop pool_size=10 pool_mode=session
crm = host=/var/run/postgresql user=crm_app password=secret pool_size=3
"odd name" = dbname='my db' pool_size=1
* = host=10.0.0.5 port=5432 pool_size=5

[pgbouncer]
logfile = /var/log/pgbouncer/pgbouncer.log
pidfile = /run/pgbouncer/pgbouncer.pid
listen_addr = *
listen_port = 6432
auth_type = scram-sha-256
auth_file = /etc/pgbouncer/userlist.txt
admin_users = postgres, ops
stats_users = monitor
pool_mode = transaction
max_client_conn = 500
default_pool_size = 25
reserve_pool_timeout = 2.5
server_reset_query = DISCARD ALL
server_reset_query_always = 1
query_wait_timeout = 60
client_tls_sslmode = prefer
tcp_keepalive = 1
max_prepared_statements = 100
track_extra_parameters = IntervalStyle, search_path

[users]
app = pool_mode=session
"#;

#[test]
fn settings_that_apply_become_toml_that_the_config_accepts() {
    let toml = translate(INI);
    let file: crate::config::ConfigFile =
        toml::from_str(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    let config = crate::config::Config::from_file(file, std::path::Path::new("/"), None)
        .unwrap_or_else(|e| panic!("{e}\n{toml}"));
    let pooler = config.pooler;
    assert_eq!(pooler.listen_addr, "0.0.0.0");
    assert_eq!(pooler.listen_port, 6432);
    assert_eq!(pooler.max_client_conn, 500);
    assert_eq!(pooler.default_pool_size, 25);
    assert_eq!(pooler.admin_users, ["postgres", "ops"]);
    assert_eq!(pooler.stats_users, ["monitor"]);
    assert!(pooler.server_reset_query_always);
    assert_eq!(pooler.max_prepared_statements, 100);
    assert_eq!(
        pooler.reserve_pool_timeout,
        std::time::Duration::from_millis(2500)
    );
    assert_eq!(pooler.for_database("shop").1, 10);
    assert_eq!(pooler.for_database("shop").0.as_str(), "session");
    assert_eq!(pooler.client_tls, crate::config::ClientTls::Allow);
}

#[test]
fn every_line_that_does_not_apply_is_a_comment_that_says_why() {
    let toml = translate(INI);
    for (needle, why) in [
        ("# logfile = ", "not applicable: the agent logs to stderr"),
        ("# auth_file = ", "no password list or query is needed"),
        ("# auth_type = ", "SCRAM-SHA-256 always"),
        ("# tcp_keepalive = 1", "the operating system's defaults"),
        ("# host = 10.0.0.5", "the platform's own PostgreSQL"),
        ("# dbname = shop", "the entry's own name"),
        ("# user = crm_app", "no forced user"),
        ("# password = secret", "no password list"),
        ("# dbname = my db", "no aliases"),
        ("# [databases] * = ", "every database of the platform"),
        ("# [users] app = ", "no per-user settings"),
    ] {
        let line = toml
            .lines()
            .find(|l| l.starts_with(needle))
            .unwrap_or_else(|| panic!("no line {needle:?} in\n{toml}"));
        assert!(line.contains(why), "{line}");
    }
    // Only comments, section headers and settings: nothing of the ini slips through raw.
    let parsed: toml::Table = toml::from_str(&toml).unwrap();
    let pooler = parsed["pooler"].as_table().unwrap();
    for key in pooler.keys() {
        let known = PGBOUNCER.iter().any(|(k, _)| k == key) || key == "client_tls";
        assert!(known || key == "databases", "unexpected key {key}");
    }
    let odd = &pooler["databases"]["odd name"];
    assert_eq!(odd["pool_size"].as_integer(), Some(1));
}

#[test]
fn defaults_that_differ_are_written_out_and_odd_values_are_explained() {
    let toml = translate("[pgbouncer]\nlisten_port = 6432\n");
    assert!(toml.contains("\npool_mode = \"session\""), "{toml}");
    assert!(toml.contains("\nmax_client_conn = 100"), "{toml}");
    let toml = translate(
        "[pgbouncer]\npool_mode = statement\nclient_tls_sslmode = verify-full\n\
         query_timeout = soon\nno_such_thing = 1\nlisten_addr = 10.0.0.1,10.0.0.2\n",
    );
    for (needle, why) in [
        ("# pool_mode = statement", "no statement pooling"),
        ("# client_tls_sslmode = verify-full", "client certificates"),
        ("# query_timeout = soon", "not a number of seconds"),
        ("# no_such_thing = 1", "not a PgBouncer 1.25 setting"),
        ("# listen_addr = 10.0.0.1,10.0.0.2", "one address"),
    ] {
        let line = toml.lines().find(|l| l.starts_with(needle));
        assert!(line.is_some_and(|l| l.contains(why)), "{needle}: {toml}");
    }
    // An explicit statement mode is not silently replaced by the default either.
    assert!(!toml.contains("\npool_mode = \"session\""), "{toml}");
}

#[test]
fn the_timeouts_and_limits_keep_pgbouncers_names() {
    let toml = translate(
        "[pgbouncer]\nquery_timeout = 30\ntransaction_timeout = 60\nserver_fast_close = 1\n\
         ignore_startup_parameters = extra_float_digits,search_path\n\
         max_db_client_connections = 40\n\
         [databases]\nshop = connect_query='SET x = 1' max_db_client_connections=5 server_lifetime=90\n",
    );
    let parsed: toml::Table = toml::from_str(&toml).unwrap_or_else(|e| panic!("{e}\n{toml}"));
    let pooler = parsed["pooler"].as_table().unwrap();
    assert_eq!(pooler["query_timeout"].as_float(), Some(30.0));
    assert_eq!(pooler["transaction_timeout"].as_float(), Some(60.0));
    assert_eq!(pooler["server_fast_close"].as_bool(), Some(true));
    assert_eq!(
        pooler["ignore_startup_parameters"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_eq!(pooler["max_db_client_connections"].as_integer(), Some(40));
    let shop = &pooler["databases"]["shop"];
    assert_eq!(shop["connect_query"].as_str(), Some("SET x = 1"));
    assert_eq!(shop["max_db_client_connections"].as_integer(), Some(5));
    assert_eq!(shop["server_lifetime"].as_float(), Some(90.0));
}

#[test]
fn connection_strings_keep_quoted_values_whole() {
    let pairs = connection_pairs("host=a  dbname='my ''big'' db' user = x password='a\\'b'");
    assert_eq!(
        pairs,
        [
            ("host".to_owned(), "a".to_owned()),
            ("dbname".to_owned(), "my 'big' db".to_owned()),
            ("user".to_owned(), "x".to_owned()),
            ("password".to_owned(), "a'b".to_owned()),
        ]
    );
    assert_eq!(unquote_identifier("\"a\"\"b\""), "a\"b");
}

#[test]
fn the_readme_table_lists_every_setting_with_its_fate() {
    let readme = include_str!("../../README.md");
    for (table, section) in [(PGBOUNCER, ""), (DATABASE, "[databases] ")] {
        for (key, fate) in table {
            let cell = format!("| {section}`{key}` |");
            let row = readme
                .lines()
                .find(|l| l.starts_with(&cell))
                .unwrap_or_else(|| panic!("README has no row {cell}"));
            let word = match fate {
                Fate::Same(_) => "| same |",
                Fate::Different(..) => "| different: ",
                Fate::NotApplicable(_) => "| not applicable: ",
            };
            assert!(
                row.contains(word),
                "README row for {key} should say {word}: {row}"
            );
        }
    }
}
