//! An unknown database is refused only after the password, and then exactly like another
//! tenant's existing database: a network client learns no database (tenant) name. This is
//! where the pooler deliberately differs from PgBouncer without an auto-database, which
//! answers `no such database` before authentication (README, "PgBouncer compatibility").

use crate::support::pooler::{message, runtime, sqlstate, try_connect};
use crate::support::TestAgent;

#[test]
fn an_unknown_database_is_refused_after_the_password_like_another_tenants() {
    let agent = TestAgent::start_with_shop("");
    agent.cli_ok(&["tenant", "create", "crm"]);
    let password = agent.secret("shop", "password");
    let rt = runtime();
    let refusal = |password: &str, database: &str| {
        let url = agent.pooler_url("shop", password, database, "disable");
        let error = rt
            .block_on(try_connect(&url))
            .err()
            .unwrap_or_else(|| panic!("shop logged in to {database}"));
        (sqlstate(&error), message(&error))
    };

    // A wrong password: the same 28P01 whether the database exists, is another tenant's,
    // or does not exist — the password is checked first.
    let wrong = refusal("wrong", "shop");
    assert_eq!(wrong.0, "28P01", "{wrong:?}");
    assert_eq!(refusal("wrong", "crm"), wrong);
    assert_eq!(refusal("wrong", "nosuch"), wrong);

    // The right password: another tenant's database and a database that does not exist
    // get the same refusal, with only the name the client gave changed.
    let other = refusal(&password, "crm");
    let missing = refusal(&password, "nosuch");
    assert_eq!(other.0, missing.0, "{other:?} vs {missing:?}");
    assert_ne!(other.0, "28P01", "{other:?}");
    assert_eq!(other.1.replace("crm", "nosuch"), missing.1);
    assert!(!missing.1.contains("no such database"), "{missing:?}");

    // And the database that is shop's own lets it in.
    let url = agent.pooler_url("shop", &password, "shop", "disable");
    assert!(rt.block_on(try_connect(&url)).is_ok());
}
