//! High availability through etcd, being built: the etcd client (`etcd`) and the pure
//! failover rules (`decide`: observation → renew / take leadership / demote / follow /
//! wait). Nothing in the agent uses them yet; the HA loop, replicas, switchover and the
//! pooler following the primary build on these two.

pub mod decide;
pub mod etcd;
