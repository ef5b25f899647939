//! Where the pooler's server connections go: this node's PostgreSQL, another node's, or
//! nowhere yet. In HA the agent's HA loop publishes these; the pooler only follows them.

/// A PostgreSQL the pooler connects to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PgTarget {
    /// This node's own, over its socket.
    Local,
    Remote {
        host: String,
        port: u16,
    },
    /// No primary right now (an election is running): hold new server connections.
    Unknown,
}
