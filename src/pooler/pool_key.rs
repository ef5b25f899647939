//! Which pool a connection belongs to (`PoolKey`: database and role) and how the pooler
//! logs in as that role (`Credentials`). Below `pool`, `server` and `login`, which all
//! speak of them.

use super::scram::ClientKey;

/// Which pool: PostgreSQL database and role.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PoolKey {
    pub database: String,
    pub user: String,
}

/// What the pooler needs to log in to PostgreSQL as the pool's user by SCRAM
/// passthrough: the client key recovered from a client's proof, and the server key.
#[derive(Clone)]
pub struct Credentials {
    pub client_key: ClientKey,
    pub server_key: [u8; 32],
}
