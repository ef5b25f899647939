//! Tenants' Redis, dedicated mode: one redis-server per tenant that asks for one, a child
//! of the agent like PostgreSQL. Isolation is by process: each server has its own
//! keyspace, `maxmemory`, port and files, and knows one tenant user only.
//!
//! ```text
//! <data>/redis/                  the agent's (0755)
//! <data>/redis/admin_password    the agent's admin user's password (0600)
//! <data>/redis/NAME/             the server's own (0700, PostgreSQL's OS user when the
//!                                agent is root): redis.conf, appendonlydir, redis.sock
//! <data>/redis/dropped/NAME.T/   a dropped tenant's data, kept aside (unless --purge)
//! ```
//!
//! `access.rs` is how an application reaches its server (URL, `env` lines), `conf.rs`
//! renders redis.conf (pure), `server.rs` supervises one process, `resp.rs` speaks the few
//! commands the agent sends, `info.rs` reads INFO for `/metrics` and `status`, `fleet.rs`
//! is the set of running servers.

mod access;
mod conf;
mod fleet;
mod info;
mod resp;
mod server;

pub use self::access::RedisAccess;
pub use self::conf::password_sha256;
pub use self::fleet::{Fleet, Observed, Reach, TenantServer};

/// The Debian package that ships redis-server (named in errors).
pub const PACKAGE: &str = "redis-server";
