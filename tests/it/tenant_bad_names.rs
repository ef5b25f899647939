//! Runbook "a typo in a tenant name": invalid or reserved names get a clear error and change nothing.

use crate::support::TestAgent;

#[test]
fn bad_tenant_names_are_refused_and_change_nothing() {
    let agent = TestAgent::start();
    let before = agent.inventory();

    let too_long = "a".repeat(64);
    // Each name with the specific reason its error must give.
    let bad_names = [
        (
            "Robert'); DROP",
            // The name is shown escaped, so that no quote or control character reaches a
            // terminal raw.
            "tenant name `Robert\\'); DROP` is invalid: use lowercase letters, digits and `_`, \
             starting with a letter"
                .to_owned(),
        ),
        ("pg_x", "tenant name `pg_x` is reserved".to_owned()),
        (
            too_long.as_str(),
            "tenant name is 64 characters long; the limit is 48".to_owned(),
        ),
        ("", "tenant name must not be empty".to_owned()),
        ("postgres", "tenant name `postgres` is reserved".to_owned()),
        (
            "template1",
            "tenant name `template1` is reserved".to_owned(),
        ),
        (
            "pgplatform",
            "tenant name `pgplatform` is reserved".to_owned(),
        ),
    ];
    for (name, reason) in bad_names {
        let error = agent.cli_err(&["tenant", "create", name]);
        assert!(
            error.contains(&reason),
            "tenant create {name:?}: want an error saying {reason:?}, got: {error}"
        );
        assert_eq!(
            agent.inventory(),
            before,
            "tenant create {name:?} changed something"
        );
    }

    // The inventory is not blind: a good name does change it.
    agent.cli_ok(&["tenant", "create", "good_name_1"]);
    let after = agent.inventory();
    assert_ne!(after.databases, before.databases);
    assert_ne!(after.registry_rows, before.registry_rows);
    assert_eq!(after.secrets_dirs, ["good_name_1"]);
}
