//! Runbook "the load balancer's checks": Patroni's health endpoints answer by role for
//! GET, HEAD and OPTIONS; a stalled PostgreSQL fails them (but not `/liveness`) and makes
//! a scrape say `pg_up 0` within the scrape timeout instead of hanging.

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use reqwest::Method;

use crate::support::metrics::sample;
use crate::support::{wait_for, TestAgent};

/// Resumes a SIGSTOPped postmaster even when an assertion fails first.
struct Resume(i32);

impl Drop for Resume {
    fn drop(&mut self) {
        let _ = kill(Pid::from_raw(self.0), Signal::SIGCONT);
    }
}

fn code(agent: &TestAgent, method: Method, path: &str) -> u16 {
    agent.api(method, path, None, None).0
}

#[test]
fn health_endpoints_follow_patroni_and_a_stalled_postgres_fails_fast() {
    let agent = TestAgent::start_with("[metrics]\nscrape_timeout_seconds = 1\n");
    for (path, expected) in [
        ("/health", 200),
        ("/liveness", 200),
        ("/readiness", 200),
        ("/primary", 200),
        ("/read-write", 200),
        ("/master", 200),
        ("/leader", 200),
        ("/read-only", 200),
        ("/replica", 503),
        ("/replica?lag=10MB", 503),
    ] {
        for method in [Method::GET, Method::HEAD, Method::OPTIONS] {
            assert_eq!(
                code(&agent, method.clone(), path),
                expected,
                "{method} {path}"
            );
        }
    }
    let (code_bad, body) = agent.get("/replica?lag=ten");
    assert_eq!(code_bad, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap_or("").contains("lag"),
        "{body}"
    );
    let (_, primary) = agent.get("/primary");
    assert_eq!(primary["role"], "primary", "{primary}");
    assert_eq!(primary["state"], "running", "{primary}");
    assert!(
        primary["server_version"].as_i64() >= Some(130_000),
        "{primary}"
    );
    assert!(primary["xlog"]["location"].as_i64() > Some(0), "{primary}");

    // A postmaster that stops answering: connections hang, nothing exits.
    let postmaster = agent.postmaster_pid().expect("postmaster pid");
    kill(Pid::from_raw(postmaster), Signal::SIGSTOP).unwrap();
    let resume = Resume(postmaster);

    let started = Instant::now();
    let text = agent.scrape();
    let took = started.elapsed();
    assert_eq!(sample(&text, "pg_up", &[]), Some(0.0), "{text}");
    assert!(took < Duration::from_secs(8), "the scrape took {took:?}");
    assert!(
        text.contains("pgplatform_build_info"),
        "platform metrics still come"
    );
    assert_eq!(code(&agent, Method::GET, "/health"), 503);
    assert_eq!(code(&agent, Method::GET, "/primary"), 503);
    assert_eq!(code(&agent, Method::GET, "/liveness"), 200);

    drop(resume);
    wait_for(Duration::from_secs(30), "pg_up 1 after SIGCONT", || {
        (sample(&agent.scrape(), "pg_up", &[]) == Some(1.0)).then_some(())
    });
    assert_eq!(code(&agent, Method::GET, "/primary"), 200);
}
