//! The etcd client HA builds on, against a real etcd: one winner when nodes race for a
//! key, keys that vanish with their lease and stay while it is renewed, deletes that only
//! touch an unchanged key, and a dead endpoint skipped for a live one.

use std::time::{Duration, Instant};

use pgplatform::testing::Etcd;

use crate::support::etcd::EtcdServer;
use crate::support::pooler::runtime;

#[test]
fn election_leases_and_endpoint_failover_against_real_etcd() {
    let Some(server) = EtcdServer::start() else {
        return;
    };
    // A dead endpoint first: calls go on to the live one.
    let endpoints = vec!["http://127.0.0.1:9".to_owned(), server.endpoint.clone()];
    let etcd = Etcd::new(&endpoints, Duration::from_secs(3)).unwrap();
    runtime().block_on(async {
        // Ready once it serves reads.
        let deadline = Instant::now() + Duration::from_secs(30);
        while etcd.get("/ready").await.is_err() {
            assert!(Instant::now() < deadline, "etcd did not become ready");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }

        let lease = etcd.grant(Duration::from_secs(2)).await.unwrap();
        let won = etcd
            .create("/pgp/leader", b"node1", Some(lease.id))
            .await
            .unwrap();
        assert!(won.is_ok(), "the first node wins");
        let lost = etcd.create("/pgp/leader", b"node2", None).await.unwrap();
        let holder = lost.expect_err("the second node loses");
        assert_eq!(holder.value, b"node1");
        assert_eq!(holder.lease, lease.id);

        // Renewed, the key outlives its TTL; left alone, it goes with the lease.
        for _ in 0..4 {
            // The passage of time is under test: 4 s of renewals outlast the 2 s TTL.
            tokio::time::sleep(Duration::from_millis(1000)).await;
            assert!(etcd.keep_alive(lease.id).await.unwrap() > Duration::ZERO);
        }
        assert!(
            etcd.get("/pgp/leader").await.unwrap().is_some(),
            "renewed lease kept the key"
        );
        let deadline = Instant::now() + Duration::from_secs(10);
        while etcd.get("/pgp/leader").await.unwrap().is_some() {
            assert!(Instant::now() < deadline, "the key outlived its lease");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // An expired lease is not renewed: etcd answers, with a TTL of zero.
        let renewed = etcd
            .keep_alive(lease.id)
            .await
            .expect("keep-alive of an expired lease is answered, not an error");
        assert_eq!(renewed, Duration::ZERO);

        // A delete only of the key as we last saw it.
        etcd.put("/pgp/members/a", b"1", None).await.unwrap();
        etcd.put("/pgp/members/b", b"2", None).await.unwrap();
        let a = etcd.get("/pgp/members/a").await.unwrap().unwrap();
        etcd.put("/pgp/members/a", b"changed", None).await.unwrap();
        assert!(!etcd
            .delete_if_unchanged("/pgp/members/a", a.mod_revision)
            .await
            .unwrap());
        let a = etcd.get("/pgp/members/a").await.unwrap().unwrap();
        assert!(etcd
            .delete_if_unchanged("/pgp/members/a", a.mod_revision)
            .await
            .unwrap());
        let members = etcd.get_prefix("/pgp/members/").await.unwrap();
        assert_eq!(
            members.iter().map(|m| m.key.as_str()).collect::<Vec<_>>(),
            ["/pgp/members/b"]
        );

        // Revoking a lease removes its keys at once.
        let lease = etcd.grant(Duration::from_secs(60)).await.unwrap();
        etcd.put("/pgp/leader", b"node3", Some(lease.id))
            .await
            .unwrap();
        etcd.revoke(lease.id).await.unwrap();
        assert!(etcd.get("/pgp/leader").await.unwrap().is_none());
    });

    // Nobody answering: the error names every endpoint.
    let dead = Etcd::new(&["http://127.0.0.1:9".to_owned()], Duration::from_secs(1)).unwrap();
    let err = runtime().block_on(dead.get("/x")).unwrap_err().to_string();
    assert!(err.contains("127.0.0.1:9"), "{err}");
}
