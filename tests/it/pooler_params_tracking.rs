//! Tracked session parameters in transaction mode: IntervalStyle, tracked by default as
//! PgBouncer 1.20+ does, follows the client that SET it across server connections and
//! stays that client's own, on a pool of one server connection shared by two clients.

use crate::support::pooler::{connect, exec, one, runtime};
use crate::support::TestAgent;

#[test]
fn interval_style_follows_its_client_and_no_other() {
    let agent = TestAgent::start_with_shop("[pooler]\ndefault_pool_size = 1\n");
    let url = agent.tenant_url("shop");
    runtime().block_on(async {
        let setter = connect(&url).await;
        let other = connect(&url).await;
        let style = "select current_setting('IntervalStyle')";
        assert_eq!(one(&other, style).await, "postgres");
        exec(&setter, "SET IntervalStyle = 'iso_8601'").await;
        // One server connection serves both clients in turn.
        for _ in 0..3 {
            assert_eq!(one(&other, style).await, "postgres");
            assert_eq!(
                one(&other, "select interval '1 day 2 hours'::text").await,
                "1 day 02:00:00"
            );
            assert_eq!(one(&setter, style).await, "iso_8601");
            assert_eq!(
                one(&setter, "select interval '1 day 2 hours'::text").await,
                "P1DT2H"
            );
        }
        let pids = |c| async move { one(c, "select pg_backend_pid()").await };
        assert_eq!(pids(&setter).await, pids(&other).await, "not one server");
        // RESET goes back to the server's default for that client only.
        exec(&setter, "RESET IntervalStyle").await;
        assert_eq!(one(&setter, style).await, "postgres");
    });
}

#[test]
fn track_extra_parameters_adds_a_reported_parameter() {
    let agent = TestAgent::start_with_shop(
        "[pooler]\ndefault_pool_size = 1\ntrack_extra_parameters = [\"default_transaction_read_only\"]\n",
    );
    let url = agent.tenant_url("shop");
    runtime().block_on(async {
        let setter = connect(&url).await;
        let other = connect(&url).await;
        let read_only = "select current_setting('default_transaction_read_only')";
        exec(&setter, "SET default_transaction_read_only = on").await;
        for _ in 0..3 {
            assert_eq!(one(&other, read_only).await, "off");
            exec(&other, "create table if not exists t (id int)").await;
            assert_eq!(one(&setter, read_only).await, "on");
        }
        let pids = |c| async move { one(c, "select pg_backend_pid()").await };
        assert_eq!(pids(&setter).await, pids(&other).await, "not one server");
    });
}
