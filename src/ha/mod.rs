//! High availability through etcd. So far the etcd client (`etcd`): the consensus store
//! that leadership (a leader key under a lease), membership and the sync set will live in.
//! Nothing in the agent uses it yet; replicas, failover and switchover build on it.

pub mod etcd;
