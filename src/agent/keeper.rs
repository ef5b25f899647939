//! The supervisor of the agent's long-lived tasks (the list is in `tasks.rs`). Each runs
//! under a keeper: a task that panics or returns an error is logged,
//! counted (`pgplatform_agent_task_restarts_total{task}`), handed to its failure hook
//! (the HA loop's fences the node) and started again after a backoff. A task that ends
//! normally is logged and left ended: only shutdown stops the agent.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Instant;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::metrics::Restarts;
use crate::supervisor::Backoff;

type Run = Pin<Box<dyn Future<Output = anyhow::Result<()>> + Send>>;
type Hook = Box<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// One group of supervised tasks that stop on the same token.
pub struct Tasks {
    set: JoinSet<()>,
    shutdown: CancellationToken,
    restarts: Arc<Restarts>,
}

impl Tasks {
    pub fn new(shutdown: CancellationToken, restarts: Arc<Restarts>) -> Tasks {
        Tasks {
            set: JoinSet::new(),
            shutdown,
            restarts,
        }
    }

    /// Runs `make()`'s task until shutdown, restarting it whenever it dies.
    pub fn spawn<F, Fut>(&mut self, task: &'static str, make: F)
    where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.spawn_with_hook(task, make, None);
    }

    /// As `spawn`; `on_failure` runs (and is awaited) each time the task dies, before
    /// the backoff.
    pub fn spawn_with_hook<F, Fut>(
        &mut self,
        task: &'static str,
        mut make: F,
        on_failure: Option<Hook>,
    ) where
        F: FnMut() -> Fut + Send + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.restarts.register(task);
        let keeper = Keeper {
            task,
            shutdown: self.shutdown.clone(),
            restarts: self.restarts.clone(),
            on_failure,
        };
        self.set
            .spawn(keeper.run(move || -> Run { Box::pin(make()) }));
    }

    /// Waits until every task of the group has ended (after the group's shutdown).
    pub async fn join(mut self) {
        while self.set.join_next().await.is_some() {}
    }
}

/// A hook for `spawn_with_hook`.
pub fn hook<F, Fut>(f: F) -> Option<Hook>
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    Some(Box::new(move || Box::pin(f())))
}

struct Keeper {
    task: &'static str,
    shutdown: CancellationToken,
    restarts: Arc<Restarts>,
    on_failure: Option<Hook>,
}

impl Keeper {
    async fn run(self, mut make: impl FnMut() -> Run) {
        let mut backoff = Backoff::default();
        loop {
            let started = Instant::now();
            // Its own tokio task, so that a panic ends only this run.
            let ended = tokio::spawn(make()).await;
            let error = match ended {
                Ok(Ok(())) => {
                    if !self.shutdown.is_cancelled() {
                        tracing::info!(task = self.task, "agent task finished; the agent goes on");
                    }
                    return;
                }
                Ok(Err(e)) => format!("{e:#}"),
                Err(e) if e.is_panic() => format!("panicked: {}", panic_text(e.into_panic())),
                Err(e) => format!("{e}"),
            };
            if self.shutdown.is_cancelled() {
                tracing::error!(
                    task = self.task,
                    "agent task failed while stopping: {error}"
                );
                return;
            }
            self.restarts.count(self.task);
            backoff.ran_for(started.elapsed());
            let delay = backoff.next_delay();
            tracing::error!(
                task = self.task,
                "agent task died: {error}; restarting it in {delay:?}"
            );
            if let Some(hook) = &self.on_failure {
                hook().await;
            }
            if self
                .shutdown
                .run_until_cancelled(tokio::time::sleep(delay))
                .await
                .is_none()
            {
                return;
            }
        }
    }
}

fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(no message)".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_dead_task_is_counted_hooked_and_restarted_and_a_finished_one_stops_nothing() {
        let shutdown = CancellationToken::new();
        let restarts = Arc::new(Restarts::default());
        let mut tasks = Tasks::new(shutdown.clone(), restarts.clone());
        let runs = Arc::new(AtomicU32::new(0));
        let hooked = Arc::new(AtomicU32::new(0));
        let (r, h, stop) = (runs.clone(), hooked.clone(), shutdown.clone());
        tasks.spawn_with_hook(
            "flaky",
            move || {
                let n = r.fetch_add(1, Ordering::SeqCst);
                let stop = stop.clone();
                async move {
                    match n {
                        0 => panic!("first run panics"),
                        1 => anyhow::bail!("second run fails"),
                        _ => {
                            stop.cancelled().await;
                            Ok(())
                        }
                    }
                }
            },
            hook(move || {
                h.fetch_add(1, Ordering::SeqCst);
                async {}
            }),
        );
        tasks.spawn("done", || async { Ok(()) });
        let third_run = async {
            while runs.load(Ordering::SeqCst) < 3 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let soon = Duration::from_secs(5);
        tokio::time::timeout(soon, third_run).await.unwrap();
        assert_eq!(restarts.snapshot(), [("done", 0), ("flaky", 2)]);
        assert_eq!(hooked.load(Ordering::SeqCst), 2);
        shutdown.cancel();
        tokio::time::timeout(soon, tasks.join()).await.unwrap();
        assert_eq!(runs.load(Ordering::SeqCst), 3);
    }
}
