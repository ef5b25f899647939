//! The agent's task restarts, by task: the agent's keeper counts them, `/metrics`
//! (`pgplatform_agent_task_restarts_total`) and `/status` read them.

use std::collections::BTreeMap;
use std::sync::Mutex;

/// Restarts per task since the agent started; every task is listed from its spawn, at 0.
#[derive(Debug, Default)]
pub struct Restarts(Mutex<BTreeMap<&'static str, u64>>);

impl Restarts {
    /// Every task's name and count, by name.
    pub fn snapshot(&self) -> Vec<(&'static str, u64)> {
        self.counts().iter().map(|(k, v)| (*k, *v)).collect()
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, BTreeMap<&'static str, u64>> {
        // A count is a plain number: a panic elsewhere cannot leave it half-written.
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn register(&self, task: &'static str) {
        self.counts().entry(task).or_insert(0);
    }

    pub fn count(&self, task: &'static str) {
        *self.counts().entry(task).or_insert(0) += 1;
    }
}
