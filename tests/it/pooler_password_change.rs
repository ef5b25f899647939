//! Password changes count from the next login through the pooler, with no delay: made by
//! hand in SQL (`ALTER ROLE … PASSWORD`) or with `tenant rotate`, and a failed login leaves
//! nothing behind that would refuse the right password afterwards.

use crate::support::pooler::{exec, runtime, try_connect_config};
use crate::support::psql::login_error_code;
use crate::support::TestAgent;

#[test]
fn alter_role_password_counts_at_the_next_login() {
    let agent = TestAgent::start_with_shop("[pooler]\ndefault_pool_size = 1\n");
    let old_password = agent.secret("shop", "password");
    let login = |password: &str| {
        let config = agent.pooler_unix_config("shop", password, "shop");
        runtime().block_on(async { try_connect_config(&config).await.map(|_| ()) })
    };
    login(&old_password).expect("login with the tenant's password");
    // A failed login first: it must not leave anything that decides later logins.
    assert!(login("first-new-password").is_err());

    let superuser = agent.superuser_config();
    runtime().block_on(async {
        let client = try_connect_config(&superuser).await.expect("superuser");
        exec(&client, "ALTER ROLE shop PASSWORD 'first-new-password'").await;
    });
    // No pause: the very next logins see the change.
    let refused = login(&old_password).expect_err("the old password still works");
    assert_eq!(
        refused.code().map(|c| c.code()),
        Some("28P01"),
        "{refused:?}"
    );
    login("first-new-password").expect("the new password is refused");

    // Changed twice in a row, with failed logins in between.
    runtime().block_on(async {
        let client = try_connect_config(&superuser).await.expect("superuser");
        exec(&client, "ALTER ROLE shop PASSWORD 'second-new-password'").await;
    });
    assert!(login("first-new-password").is_err());
    login("second-new-password").expect("the second new password is refused");
    assert!(login("first-new-password").is_err());
    login("second-new-password").expect("a failed login left a stale verifier");
}

#[test]
fn rotate_counts_at_the_next_pooler_login() {
    let agent = TestAgent::start_with_shop("[pooler]\ndefault_pool_size = 1\n");
    let old_url = agent.tenant_url("shop");
    assert_eq!(login_error_code(&old_url), None);
    agent.cli_ok(&["tenant", "rotate", "shop"]);
    let new_url = agent.tenant_url("shop");
    assert_ne!(new_url, old_url);
    assert!(
        new_url.contains(&format!(":{}/", agent.pooler_port())),
        "database_url does not point at the pooler: {new_url}"
    );
    assert_eq!(login_error_code(&old_url).as_deref(), Some("28P01"));
    assert_eq!(login_error_code(&new_url), None);
    // And again right away: nothing cached from the refused login.
    assert_eq!(login_error_code(&old_url).as_deref(), Some("28P01"));
    assert_eq!(login_error_code(&new_url), None);
}
