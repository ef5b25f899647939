//! What a node should do next, from what it observes: the pure core of failover. The
//! agent's HA loop gathers an `Observation` (its PostgreSQL, the leader key in etcd, the
//! other members) and carries out the `Action`; every rule lives here, apart from etcd
//! and process I/O, so it can be tested for every state.
//!
//! Fencing: a primary that cannot renew its leader lease stops accepting writes
//! `fence_margin` before the lease can expire for the others, so two writable primaries
//! never overlap.

use std::time::Duration;

use crate::config::SyncMode;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Primary,
    Replica,
    /// PostgreSQL is not running (starting, crashed, stopped).
    Down,
}

/// Another member, as it last reported itself in etcd.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub name: String,
    pub healthy: bool,
    /// WAL received (replicas) or written (primary), in bytes.
    pub wal_position: u64,
    pub nofailover: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observation {
    pub me: String,
    pub role: Role,
    pub my_wal_position: u64,
    pub nofailover: bool,
    /// `None`: etcd did not answer this round.
    pub leader: Option<Option<String>>,
    /// Time left on this node's leader lease as last renewed (primary only).
    pub lease_left: Duration,
    /// Other members that reported recently.
    pub members: Vec<Member>,
    /// The newest WAL position the primary published, for the lag rule.
    pub primary_wal_position: u64,
    /// Members currently in the synchronous set (published by the primary).
    pub sync_set: Vec<String>,
    /// Automatic failover turned off (`cluster pause`).
    pub paused: bool,
    /// How long the local PostgreSQL has not been running (zero while it runs).
    pub down_for: Duration,
    /// The node a planned switchover hands over to, while one runs.
    pub switchover_to: Option<String>,
    /// etcd is unreachable, failsafe is on, and every other member confirmed just now
    /// that it follows this primary and cannot reach etcd either.
    pub failsafe_confirmed: bool,
    /// Another member that still publishes itself as a running primary (its lease holds).
    pub running_primary: Option<String>,
    /// This replica confirmed a primary's failsafe recently: that primary kept writing
    /// without etcd and takes its key back; nobody else may.
    pub failsafe_recent: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub maximum_lag_on_failover: u64,
    pub sync: SyncMode,
    /// Stop writes this long before the lease could expire elsewhere.
    pub fence_margin: Duration,
    /// A leader whose PostgreSQL is down keeps the key this long while the supervisor
    /// restarts it, then hands over.
    pub restart_grace: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// Primary holding the key: renew the lease.
    Renew,
    /// Leader key free and this node should lead: try to create it (then promote).
    TakeLeadership,
    /// Stop accepting writes at once (fence), then follow whoever leads.
    Demote(String),
    /// Stream from this leader.
    Follow(String),
    /// Nothing to change now, and why.
    Wait(String),
}

pub fn decide(o: &Observation, p: &Policy) -> Action {
    let Some(leader) = &o.leader else {
        return etcd_unreachable(o, p);
    };
    match (o.role, leader.as_deref()) {
        (Role::Primary, Some(holder)) if holder == o.me => Action::Renew,
        (Role::Primary, Some(holder)) => Action::Demote(format!("{holder} holds the leader key")),
        (Role::Primary, None) if o.paused => Action::Wait("failover is paused".into()),
        (Role::Primary, None) => Action::TakeLeadership,
        (Role::Down, Some(holder)) if holder == o.me && o.down_for < p.restart_grace => {
            Action::Renew
        }
        (Role::Replica | Role::Down, Some(holder)) if holder == o.me => {
            // Our key, but PostgreSQL is not a running primary: let another node lead.
            Action::Demote("this node leads but its PostgreSQL is not a running primary".into())
        }
        (Role::Replica | Role::Down, Some(holder)) => Action::Follow(holder.to_owned()),
        // An operator's switchover or failover names its target, paused or not.
        (_, None) if o.paused && o.switchover_to.as_deref() != Some(o.me.as_str()) => {
            Action::Wait("the leader key is free, but failover is paused".into())
        }
        (Role::Down, None) => Action::Wait("PostgreSQL is not running here".into()),
        // A primary whose key lapsed (e.g. it kept writing in failsafe) takes it back;
        // promoting another would lose what it acknowledged.
        (Role::Replica, None) if o.running_primary.is_some() && !switchover_target(o) => {
            Action::Wait(format!(
                "{} still runs as primary",
                o.running_primary.as_deref().unwrap_or_default()
            ))
        }
        (Role::Replica, None) if o.failsafe_recent => Action::Wait(
            "the primary kept writing in failsafe during the etcd outage; it takes the key back"
                .into(),
        ),
        (Role::Replica, None) if o.switchover_to.as_ref().is_some_and(|to| *to != o.me) => {
            Action::Wait("a switchover to another node is running".into())
        }
        (Role::Replica, None) => match ineligible(o, p) {
            Some(reason) => Action::Wait(reason),
            None => Action::TakeLeadership,
        },
    }
}

/// The node a switchover or `failover --to` names: the old primary stopped (or is gone)
/// and handed over, whatever its member record still says.
fn switchover_target(o: &Observation) -> bool {
    o.switchover_to.as_deref() == Some(o.me.as_str())
}

/// Without etcd a primary keeps writing only while its lease surely still holds.
fn etcd_unreachable(o: &Observation, p: &Policy) -> Action {
    match o.role {
        Role::Primary if o.lease_left > p.fence_margin => {
            Action::Wait("etcd does not answer; the lease still holds".into())
        }
        Role::Primary if o.failsafe_confirmed => Action::Wait(
            "etcd does not answer; failsafe: every other member still follows this primary".into(),
        ),
        Role::Primary => {
            Action::Demote("etcd does not answer and the leader lease is about to expire".into())
        }
        _ => Action::Wait("etcd does not answer".into()),
    }
}

/// Stands for "no standby may confirm": under `strict`, commits wait for a standby that
/// does not exist until a real one streams.
pub const NO_STANDBY: &str = "pgplatform_no_standby";

/// The standbys that must confirm commits: up to `count` streaming ones, those already
/// synchronous first (a stable set), then by name. Under `strict`, never fewer than
/// `count`: missing places keep earlier names (or `NO_STANDBY`), so commits wait.
pub fn choose_sync(
    mode: SyncMode,
    count: u32,
    streaming: &[String],
    previous: &[String],
) -> Vec<String> {
    let count = count as usize;
    if mode == SyncMode::Off {
        return Vec::new();
    }
    let mut chosen: Vec<String> = previous
        .iter()
        .filter(|n| streaming.contains(n))
        .take(count)
        .cloned()
        .collect();
    let mut others: Vec<&String> = streaming.iter().filter(|n| !chosen.contains(n)).collect();
    others.sort();
    for name in others {
        if chosen.len() == count {
            break;
        }
        chosen.push(name.clone());
    }
    if mode == SyncMode::Strict {
        for name in previous.iter().filter(|n| *n != NO_STANDBY) {
            if chosen.len() < count && !chosen.contains(name) {
                chosen.push(name.clone());
            }
        }
        if chosen.is_empty() {
            chosen.push(NO_STANDBY.to_owned());
        }
    }
    chosen
}

/// Why this replica must not take over, if it must not.
pub fn ineligible(o: &Observation, p: &Policy) -> Option<String> {
    if o.switchover_to.as_deref() == Some(o.me.as_str()) {
        // The switchover's target: the old primary stopped cleanly and it caught up.
        return None;
    }
    if o.nofailover {
        return Some("this node is tagged nofailover".into());
    }
    if p.sync != SyncMode::Off && !o.sync_set.is_empty() && !o.sync_set.contains(&o.me) {
        return Some("synchronous mode: only a synchronous standby may be promoted".into());
    }
    let lag = o.primary_wal_position.saturating_sub(o.my_wal_position);
    if lag > p.maximum_lag_on_failover {
        return Some(format!(
            "{lag} bytes behind the last primary position, over maximum_lag_on_failover ({})",
            p.maximum_lag_on_failover
        ));
    }
    // The most advanced healthy eligible member leads; ties go to the smallest name.
    let better = o.members.iter().find(|m| {
        m.healthy
            && !m.nofailover
            && (p.sync == SyncMode::Off || o.sync_set.is_empty() || o.sync_set.contains(&m.name))
            && (m.wal_position > o.my_wal_position
                || (m.wal_position == o.my_wal_position && m.name < o.me))
    });
    better.map(|m| format!("{} is further ahead or first among equals", m.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            maximum_lag_on_failover: 1 << 20,
            sync: SyncMode::Off,
            fence_margin: Duration::from_secs(2),
            restart_grace: Duration::from_millis(1500),
        }
    }

    fn replica(me: &str, pos: u64) -> Observation {
        Observation {
            me: me.into(),
            role: Role::Replica,
            my_wal_position: pos,
            nofailover: false,
            leader: Some(None),
            lease_left: Duration::ZERO,
            members: Vec::new(),
            primary_wal_position: pos,
            sync_set: Vec::new(),
            paused: false,
            down_for: Duration::ZERO,
            switchover_to: None,
            failsafe_confirmed: false,
            running_primary: None,
            failsafe_recent: false,
        }
    }

    fn member(name: &str, pos: u64) -> Member {
        Member {
            name: name.into(),
            healthy: true,
            wal_position: pos,
            nofailover: false,
        }
    }

    #[test]
    fn a_primary_renews_its_own_key_and_yields_to_another() {
        let mut o = replica("a", 100);
        o.role = Role::Primary;
        o.leader = Some(Some("a".into()));
        assert_eq!(decide(&o, &policy()), Action::Renew);
        o.leader = Some(Some("b".into()));
        assert!(matches!(decide(&o, &policy()), Action::Demote(r) if r.contains("b holds")));
        o.leader = Some(None);
        assert_eq!(decide(&o, &policy()), Action::TakeLeadership);
    }

    #[test]
    fn a_primary_cut_off_from_etcd_fences_before_its_lease_can_expire() {
        let mut o = replica("a", 100);
        o.role = Role::Primary;
        o.leader = None;
        o.lease_left = Duration::from_secs(5);
        assert!(matches!(decide(&o, &policy()), Action::Wait(_)));
        o.lease_left = Duration::from_secs(2);
        assert!(
            matches!(decide(&o, &policy()), Action::Demote(_)),
            "at the margin it fences"
        );
        o.lease_left = Duration::ZERO;
        assert!(matches!(decide(&o, &policy()), Action::Demote(_)));
        let mut r = replica("b", 100);
        r.leader = None;
        assert!(
            matches!(decide(&r, &policy()), Action::Wait(_)),
            "a replica never promotes blind"
        );
    }

    #[test]
    fn replicas_follow_a_leader() {
        let mut o = replica("b", 100);
        o.leader = Some(Some("a".into()));
        assert_eq!(decide(&o, &policy()), Action::Follow("a".into()));
        o.role = Role::Down;
        assert_eq!(decide(&o, &policy()), Action::Follow("a".into()));
    }

    #[test]
    fn the_most_advanced_healthy_replica_takes_over() {
        let mut b = replica("b", 100);
        b.members = vec![member("c", 90)];
        assert_eq!(decide(&b, &policy()), Action::TakeLeadership);
        let mut c = replica("c", 90);
        c.primary_wal_position = 100;
        c.members = vec![member("b", 100)];
        assert!(matches!(decide(&c, &policy()), Action::Wait(r) if r.contains("b is further")));
        // An unhealthy or nofailover member does not count as better.
        c.members[0].healthy = false;
        assert_eq!(decide(&c, &policy()), Action::TakeLeadership);
        c.members[0].healthy = true;
        c.members[0].nofailover = true;
        assert_eq!(decide(&c, &policy()), Action::TakeLeadership);
    }

    #[test]
    fn equals_are_decided_by_name_so_exactly_one_tries() {
        let mut a = replica("a", 100);
        a.members = vec![member("b", 100)];
        let mut b = replica("b", 100);
        b.members = vec![member("a", 100)];
        assert_eq!(decide(&a, &policy()), Action::TakeLeadership);
        assert!(matches!(decide(&b, &policy()), Action::Wait(_)));
    }

    #[test]
    fn lagging_or_nofailover_replicas_never_take_over() {
        let mut o = replica("b", 0);
        o.primary_wal_position = 2 << 20;
        assert!(
            matches!(decide(&o, &policy()), Action::Wait(r) if r.contains("maximum_lag_on_failover"))
        );
        let mut o = replica("b", 100);
        o.nofailover = true;
        assert!(matches!(decide(&o, &policy()), Action::Wait(r) if r.contains("nofailover")));
    }

    #[test]
    fn in_synchronous_mode_only_a_sync_standby_takes_over() {
        let p = Policy {
            sync: SyncMode::On,
            ..policy()
        };
        let mut async_survivor = replica("c", 100);
        async_survivor.sync_set = vec!["b".into()];
        assert!(
            matches!(decide(&async_survivor, &p), Action::Wait(r) if r.contains("synchronous"))
        );
        let mut sync_standby = replica("b", 90);
        sync_standby.primary_wal_position = 90;
        sync_standby.sync_set = vec!["b".into()];
        sync_standby.members = vec![member("c", 100)];
        assert_eq!(
            decide(&sync_standby, &p),
            Action::TakeLeadership,
            "c is ahead but not sync"
        );
        // Off: the more advanced async member would win.
        assert!(matches!(decide(&sync_standby, &policy()), Action::Wait(_)));
    }

    #[test]
    fn pause_stops_takeovers_but_not_renewal() {
        let mut o = replica("b", 100);
        o.paused = true;
        assert!(matches!(decide(&o, &policy()), Action::Wait(r) if r.contains("paused")));
        o.role = Role::Primary;
        o.leader = Some(Some("b".into()));
        assert_eq!(decide(&o, &policy()), Action::Renew);
    }

    #[test]
    fn a_leader_whose_postgres_is_down_lets_go_after_the_restart_grace() {
        let mut o = replica("a", 100);
        o.role = Role::Down;
        o.leader = Some(Some("a".into()));
        o.down_for = Duration::from_millis(500);
        assert_eq!(
            decide(&o, &policy()),
            Action::Renew,
            "the supervisor restarts it"
        );
        o.down_for = Duration::from_secs(2);
        assert!(matches!(decide(&o, &policy()), Action::Demote(_)));
        o.leader = Some(None);
        assert!(matches!(decide(&o, &policy()), Action::Wait(r) if r.contains("not running")));
    }

    #[test]
    fn the_synchronous_set_is_stable_and_strict_never_shrinks_below_the_count() {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert!(choose_sync(SyncMode::Off, 1, &s(&["b"]), &[]).is_empty());
        assert_eq!(
            choose_sync(SyncMode::On, 1, &s(&["c", "b"]), &[]),
            s(&["b"])
        );
        // The current sync standby keeps its place while it streams.
        assert_eq!(
            choose_sync(SyncMode::On, 1, &s(&["b", "c"]), &s(&["c"])),
            s(&["c"])
        );
        // It stopped streaming: on moves to another, or to none.
        assert_eq!(
            choose_sync(SyncMode::On, 1, &s(&["b"]), &s(&["c"])),
            s(&["b"])
        );
        assert!(choose_sync(SyncMode::On, 1, &[], &s(&["c"])).is_empty());
        // strict keeps waiting for it rather than confirm nothing.
        assert_eq!(choose_sync(SyncMode::Strict, 1, &[], &s(&["c"])), s(&["c"]));
        assert_eq!(choose_sync(SyncMode::Strict, 1, &[], &[]), s(&[NO_STANDBY]));
        assert_eq!(
            choose_sync(SyncMode::Strict, 2, &s(&["b"]), &s(&["c"])),
            s(&["b", "c"])
        );
    }

    #[test]
    fn failsafe_keeps_a_confirmed_primary_writable_without_etcd() {
        let mut o = replica("a", 100);
        o.role = Role::Primary;
        o.leader = None;
        o.lease_left = Duration::ZERO;
        assert!(matches!(decide(&o, &policy()), Action::Demote(_)));
        o.failsafe_confirmed = true;
        assert!(matches!(decide(&o, &policy()), Action::Wait(r) if r.contains("failsafe")));
        // Back with etcd and the key lapsed: replicas leave it to the running primary.
        let mut b = replica("b", 100);
        b.running_primary = Some("a".into());
        assert!(matches!(decide(&b, &policy()), Action::Wait(r) if r.contains("a still runs")));
        b.running_primary = None;
        b.failsafe_recent = true;
        assert!(matches!(decide(&b, &policy()), Action::Wait(r) if r.contains("failsafe")));
    }

    #[test]
    fn a_switchover_lets_only_its_target_take_over() {
        let mut target = replica("c", 90);
        target.members = vec![member("b", 100)];
        target.switchover_to = Some("c".into());
        assert_eq!(decide(&target, &policy()), Action::TakeLeadership);
        target.paused = true;
        assert_eq!(
            decide(&target, &policy()),
            Action::TakeLeadership,
            "failover --to, paused"
        );
        let mut other = replica("b", 100);
        other.switchover_to = Some("c".into());
        assert!(matches!(decide(&other, &policy()), Action::Wait(r) if r.contains("switchover")));
    }

    /// Every combination of what a node can observe, against the rules that keep the
    /// cluster safe: who may take the key, who must stop writing, whom to follow.
    #[test]
    fn every_observation_keeps_the_safety_rules() {
        let p = Policy {
            sync: SyncMode::On,
            ..policy()
        };
        let names = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let mut checked = 0;
        for role in [Role::Primary, Role::Replica, Role::Down] {
            for leader in [None, Some(None), Some(Some("a")), Some(Some("b"))] {
                for paused in [false, true] {
                    for lease_left in [0, 2, 5].map(Duration::from_secs) {
                        for down_for in [0, 5].map(Duration::from_secs) {
                            for failsafe_confirmed in [false, true] {
                                for running_primary in [None, Some("b")] {
                                    for failsafe_recent in [false, true] {
                                        for switchover_to in [None, Some("a"), Some("b")] {
                                            for nofailover in [false, true] {
                                                for primary_position in [100, 100 + (2 << 20)] {
                                                    for sync_set in
                                                        [names(&[]), names(&["a"]), names(&["b"])]
                                                    {
                                                        for members in
                                                            [vec![], vec![member("b", 150)]]
                                                        {
                                                            let o = Observation {
                                                                me: "a".into(),
                                                                role,
                                                                my_wal_position: 100,
                                                                nofailover,
                                                                leader: leader
                                                                    .map(|l| l.map(str::to_owned)),
                                                                lease_left,
                                                                members,
                                                                primary_wal_position:
                                                                    primary_position,
                                                                sync_set: sync_set.clone(),
                                                                paused,
                                                                down_for,
                                                                switchover_to: switchover_to
                                                                    .map(str::to_owned),
                                                                failsafe_confirmed,
                                                                running_primary: running_primary
                                                                    .map(str::to_owned),
                                                                failsafe_recent,
                                                            };
                                                            check(&o, &p);
                                                            checked += 1;
                                                        }
                                                    }
                                                }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
        assert!(checked > 50_000, "{checked}");
    }

    fn check(o: &Observation, p: &Policy) {
        let action = decide(o, p);
        let leader = o.leader.as_ref().map(|l| l.as_deref());
        let why = || format!("{action:?} for {o:?}");
        match &action {
            Action::TakeLeadership => {
                // Only when etcd shows the key free, never while PostgreSQL is down.
                assert_eq!(leader, Some(None), "{}", why());
                assert_ne!(o.role, Role::Down, "{}", why());
                if o.role == Role::Replica {
                    let target = o.switchover_to.as_deref() == Some("a");
                    assert!(!o.paused || target, "{}", why());
                    assert!(o.switchover_to.is_none() || target, "{}", why());
                    assert!(
                        (o.running_primary.is_none() || target) && !o.failsafe_recent,
                        "{}",
                        why()
                    );
                    if !target {
                        assert!(!o.nofailover, "{}", why());
                        assert!(
                            o.primary_wal_position - o.my_wal_position <= p.maximum_lag_on_failover,
                            "{}",
                            why()
                        );
                        assert!(
                            o.sync_set.is_empty() || o.sync_set.contains(&o.me),
                            "{}",
                            why()
                        );
                        let better_eligible = o.members.iter().any(|m| {
                            m.wal_position > o.my_wal_position
                                && (o.sync_set.is_empty() || o.sync_set.contains(&m.name))
                        });
                        assert!(!better_eligible, "a better member exists: {}", why());
                    }
                }
            }
            Action::Renew => {
                assert_eq!(leader, Some(Some("a")), "{}", why());
                assert_ne!(o.role, Role::Replica, "{}", why());
            }
            Action::Follow(x) => {
                assert_eq!(leader, Some(Some(x.as_str())), "{}", why());
                assert_ne!(x, "a", "{}", why());
                assert_ne!(
                    o.role,
                    Role::Primary,
                    "a primary never just follows: {}",
                    why()
                );
            }
            Action::Demote(_) | Action::Wait(_) => {}
        }
        // A primary must stop writing when another leads, or when etcd is gone and its
        // lease is about to lapse without failsafe's confirmation.
        if o.role == Role::Primary {
            if matches!(leader, Some(Some("b"))) {
                assert!(matches!(action, Action::Demote(_)), "{}", why());
            }
            if leader.is_none() && o.lease_left <= p.fence_margin && !o.failsafe_confirmed {
                assert!(matches!(action, Action::Demote(_)), "{}", why());
            }
        }
    }
}
