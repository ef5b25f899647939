//! Runbook "a typo in a tenant name": invalid or reserved names get a clear error and change nothing.

use crate::support::TestAgent;

#[test]
fn bad_tenant_names_are_refused_and_change_nothing() {
    let agent = TestAgent::start();
    let before = agent.inventory();

    let too_long = "a".repeat(64);
    let bad_names = [
        "Robert'); DROP",
        "pg_x",
        &too_long,
        "",
        "postgres",
        "template1",
        "pgplatform",
    ];
    for name in bad_names {
        let error = agent.cli_err(&["tenant", "create", name]);
        // A clear error says which name, or what a name must look like.
        let clear =
            (!name.is_empty() && error.contains(name)) || error.to_lowercase().contains("name");
        assert!(clear, "tenant create {name:?}: unclear error: {error}");
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
