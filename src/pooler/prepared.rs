//! Named prepared statements in transaction mode, as PgBouncer's max_prepared_statements
//! does it: a client's statement names map to pooler-wide names, and each server
//! connection remembers which of those it has prepared, so a statement is prepared on
//! whichever server connection serves the client, once.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::protocol::sql_state::SqlState;

/// A statement as the client parsed it.
#[derive(Debug, PartialEq, Eq, Hash, Clone)]
pub struct StatementText {
    pub query: Bytes,
    pub param_types: Vec<u32>,
}

/// One pooler-wide statement: its server-side name and its text.
#[derive(Debug)]
pub struct Statement {
    pub server_name: String,
    pub text: StatementText,
}

/// Interns statement texts pooler-wide: the same text always gets the same server name
/// (exact match, no hashing, so two texts can never share a name). Texts are chosen by
/// clients, so texts no client holds any more are pruned whenever the map has doubled;
/// names come from a counter and are never reused, so a pruned text that comes back gets a
/// new name and a server connection's old one just ages out of its LRU.
#[derive(Debug)]
pub struct Catalog {
    by_text: Mutex<Interned>,
}

#[derive(Debug)]
struct Interned {
    map: HashMap<StatementText, Arc<Statement>>,
    next_name: u64,
    prune_at: usize,
}

/// The catalog is not pruned below this many texts.
const MIN_PRUNE_AT: usize = 1024;

impl Default for Catalog {
    fn default() -> Self {
        Catalog {
            by_text: Mutex::new(Interned {
                map: HashMap::new(),
                next_name: 0,
                prune_at: MIN_PRUNE_AT,
            }),
        }
    }
}

impl Catalog {
    pub fn intern(&self, text: StatementText) -> Arc<Statement> {
        let mut interned = match self.by_text.lock() {
            Ok(map) => map,
            Err(poisoned) => poisoned.into_inner(),
        };
        let Interned {
            map,
            next_name,
            prune_at,
        } = &mut *interned;
        if let Some(statement) = map.get(&text) {
            return statement.clone();
        }
        if map.len() >= *prune_at {
            // Only the catalog holds it: no client has it prepared.
            map.retain(|_, statement| Arc::strong_count(statement) > 1);
            *prune_at = (map.len() * 2).max(MIN_PRUNE_AT);
        }
        let statement = Arc::new(Statement {
            server_name: format!("pgplatform_{next_name}"),
            text: text.clone(),
        });
        *next_name += 1;
        map.insert(text, statement.clone());
        statement
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.by_text.lock().map(|i| i.map.len()).unwrap_or_default()
    }
}

/// A client's named statements. A BTreeMap: half the size of a HashMap in every
/// client's task, and no hashing for the few names a client has.
#[derive(Debug, Default)]
pub struct ClientStatements {
    by_name: BTreeMap<String, Arc<Statement>>,
}

impl ClientStatements {
    /// The client parsed `text` as `client_name`: intern it and remember the name.
    pub fn parse(
        &mut self,
        catalog: &Catalog,
        client_name: &[u8],
        text: StatementText,
    ) -> Arc<Statement> {
        let statement = catalog.intern(text);
        let name = String::from_utf8_lossy(client_name).into_owned();
        self.by_name.insert(name, statement.clone());
        statement
    }

    pub fn contains(&self, client_name: &[u8]) -> bool {
        self.by_name
            .contains_key(String::from_utf8_lossy(client_name).as_ref())
    }

    pub fn get(&self, client_name: &str) -> Option<&Arc<Statement>> {
        self.by_name.get(client_name)
    }

    pub fn remove(&mut self, client_name: &str) -> Option<Arc<Statement>> {
        self.by_name.remove(client_name)
    }
}

/// A client's statement-name error, answered as PostgreSQL words it for the client's own
/// name (the server only ever sees pooler-wide names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatementError {
    /// A named Parse of a name the client has not closed.
    AlreadyExists(String),
    /// Bind or Describe of a name the client never parsed (or closed).
    DoesNotExist(String),
}

impl StatementError {
    pub fn already_exists(client_name: &[u8]) -> StatementError {
        StatementError::AlreadyExists(String::from_utf8_lossy(client_name).into_owned())
    }

    pub fn does_not_exist(client_name: &[u8]) -> StatementError {
        StatementError::DoesNotExist(String::from_utf8_lossy(client_name).into_owned())
    }

    pub fn code(&self) -> SqlState {
        match self {
            StatementError::AlreadyExists(_) => SqlState::DUPLICATE_PREPARED_STATEMENT,
            StatementError::DoesNotExist(_) => SqlState::INVALID_SQL_STATEMENT_NAME,
        }
    }

    pub fn message(&self) -> String {
        match self {
            StatementError::AlreadyExists(name) => {
                format!("prepared statement \"{name}\" already exists")
            }
            StatementError::DoesNotExist(name) => {
                format!("prepared statement \"{name}\" does not exist")
            }
        }
    }
}

/// Named statements a server connection saw while clients held it (SHOW STATS): Parses
/// from clients, Parses the pooler sent, Binds. Plain integers (the connection has one
/// owner), added to the pool's atomics once per release, so the relay pays no atomic for
/// them (`stats::PoolStats::add_statements`).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct StatementCounts {
    pub client_parses: u64,
    pub server_parses: u64,
    pub binds: u64,
}

/// The pooler-wide statements prepared on one server connection, least recently used
/// first, bounded so a long-lived connection does not accumulate plans forever.
#[derive(Debug, Default)]
pub struct ServerStatements {
    order: VecDeque<String>,
    /// For SHOW STATS; `take_counts` hands them over.
    pub counts: StatementCounts,
}

impl ServerStatements {
    /// The counts since the last call, reset to zero.
    pub fn take_counts(&mut self) -> StatementCounts {
        std::mem::take(&mut self.counts)
    }

    #[cfg(test)]
    pub fn contains(&self, server_name: &str) -> bool {
        self.order.iter().any(|n| n == server_name)
    }

    /// Marks `server_name` used; returns true when it must be prepared first.
    pub fn touch(&mut self, server_name: &str) -> bool {
        match self.order.iter().position(|n| n == server_name) {
            Some(i) => {
                if let Some(name) = self.order.remove(i) {
                    self.order.push_back(name);
                }
                false
            }
            None => true,
        }
    }

    /// Records a statement sent for preparation; returns the names to close to stay
    /// within `max`.
    pub fn add(&mut self, server_name: String, max: usize) -> Vec<String> {
        self.counts.server_parses += 1;
        self.order.push_back(server_name);
        let mut evicted = Vec::new();
        while self.order.len() > max.max(1) {
            if let Some(old) = self.order.pop_front() {
                evicted.push(old);
            }
        }
        evicted
    }

    pub fn remove(&mut self, server_name: &str) {
        self.order.retain(|n| n != server_name);
    }

    /// After DISCARD ALL or a reconnect nothing is prepared.
    pub fn clear(&mut self) {
        self.order.clear();
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.order.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(q: &'static str) -> StatementText {
        StatementText {
            query: Bytes::from_static(q.as_bytes()),
            param_types: vec![],
        }
    }

    #[test]
    fn same_text_same_server_name_different_text_different_name() {
        let catalog = Catalog::default();
        let a = catalog.intern(text("select 1"));
        let b = catalog.intern(text("select 1"));
        let c = catalog.intern(text("select 2"));
        assert_eq!(a.server_name, b.server_name);
        assert_ne!(a.server_name, c.server_name);
        let typed = catalog.intern(StatementText {
            param_types: vec![23],
            ..text("select 1")
        });
        assert_ne!(a.server_name, typed.server_name);
    }

    #[test]
    fn texts_no_client_holds_are_pruned_and_names_are_never_reused() {
        let catalog = Catalog::default();
        let held = catalog.intern(text("select 'held'"));
        let mut names = std::collections::HashSet::new();
        names.insert(held.server_name.clone());
        for i in 0..(MIN_PRUNE_AT * 4) {
            let query = Bytes::from(format!("select {i}"));
            let statement = catalog.intern(StatementText {
                query,
                param_types: vec![],
            });
            assert!(names.insert(statement.server_name.clone()), "name reused");
        }
        assert!(catalog.len() <= MIN_PRUNE_AT * 2, "{} texts", catalog.len());
        // A text a client still holds keeps its name.
        assert_eq!(
            catalog.intern(text("select 'held'")).server_name,
            held.server_name
        );
    }

    #[test]
    fn statement_errors_name_the_clients_statement_as_postgresql_does() {
        let dup = StatementError::already_exists(b"s1");
        assert_eq!(dup.code(), SqlState::DUPLICATE_PREPARED_STATEMENT);
        assert_eq!(dup.message(), "prepared statement \"s1\" already exists");
        let missing = StatementError::does_not_exist(b"s2");
        assert_eq!(missing.code(), SqlState::INVALID_SQL_STATEMENT_NAME);
        assert_eq!(
            missing.message(),
            "prepared statement \"s2\" does not exist"
        );
    }

    #[test]
    fn server_statements_are_bounded_lru() {
        let mut s = ServerStatements::default();
        assert!(s.touch("a"));
        assert!(s.add("a".into(), 2).is_empty());
        assert!(s.add("b".into(), 2).is_empty());
        assert!(!s.touch("a"));
        assert_eq!(s.add("c".into(), 2), ["b"]);
        assert!(s.contains("a") && s.contains("c") && !s.contains("b"));
        s.clear();
        assert_eq!(s.len(), 0);
    }
}
