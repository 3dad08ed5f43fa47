//! The daemon's tasks, tracked: every task is joined at shutdown, and a core task that ends
//! or panics before shutdown is reported, so the node stops (and its pod restarts) instead of
//! staying up deaf.

use std::future::Future;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A core task ended before shutdown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {task} task {how}; the node stops so that it can be restarted (a pod restarts by its restart policy)")]
pub struct TaskDied {
    /// Which task.
    pub task: &'static str,
    /// "ended" or "panicked: MESSAGE".
    pub how: String,
}

/// Spawns and tracks the daemon's tasks.
pub struct Tasks {
    tracker: TaskTracker,
    /// Cancelled when shutdown begins: from then on a task that ends is no failure.
    stopping: CancellationToken,
    died_tx: mpsc::UnboundedSender<TaskDied>,
    died_rx: mpsc::UnboundedReceiver<TaskDied>,
}

impl Default for Tasks {
    fn default() -> Self {
        let (died_tx, died_rx) = mpsc::unbounded_channel();
        Tasks {
            tracker: TaskTracker::new(),
            stopping: CancellationToken::new(),
            died_tx,
            died_rx,
        }
    }
}

impl Tasks {
    /// The token cancelled when shutdown begins.
    pub fn stopping(&self) -> CancellationToken {
        self.stopping.clone()
    }

    /// Spawns a task the node cannot live without: its end before shutdown is a failure.
    pub fn core<F>(&self, task: &'static str, fut: F) -> tokio::task::JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.spawn(task, fut, true)
    }

    /// Spawns a task the node cannot live without that runs until shutdown begins (it is
    /// cancelled then).
    pub fn service<F>(&self, task: &'static str, fut: F) -> tokio::task::JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.spawn(task, self.until_stopping(fut), true)
    }

    /// Spawns a task that may end on its own (its end is logged); it is cancelled when
    /// shutdown begins.
    pub fn background<F>(&self, task: &'static str, fut: F) -> tokio::task::JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        self.spawn(task, self.until_stopping(fut), false)
    }

    fn until_stopping<F>(&self, fut: F) -> impl Future<Output = ()> + Send + 'static
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stopping = self.stopping.clone();
        async move {
            stopping.run_until_cancelled(fut).await;
        }
    }

    fn spawn<F>(&self, task: &'static str, fut: F, core: bool) -> tokio::task::JoinHandle<()>
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let stopping = self.stopping.clone();
        let died = self.died_tx.clone();
        // The inner task runs the work so that its panic is caught here, as a JoinError.
        let inner = tokio::spawn(fut);
        self.tracker.spawn(async move {
            let how = match inner.await {
                Ok(()) => "ended".to_string(),
                Err(e) if e.is_panic() => {
                    let p = e.into_panic();
                    let msg = p
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    format!("panicked: {msg}")
                }
                Err(_) => "was cancelled".to_string(),
            };
            if stopping.is_cancelled() {
                return;
            }
            if core || how.starts_with("panicked") {
                tracing::error!(task, %how, "a task of the node stopped");
            } else {
                tracing::info!(task, %how, "task finished");
            }
            if core {
                let _ = died.send(TaskDied { task, how });
            }
        })
    }

    /// Waits until a core task dies (forever if none does).
    pub async fn died(&mut self) -> TaskDied {
        match self.died_rx.recv().await {
            Some(d) => d,
            // We hold a sender ourselves, so the channel cannot close.
            None => std::future::pending().await,
        }
    }

    /// Begins shutdown: background tasks are cancelled and no end is a failure any more.
    pub fn begin_shutdown(&self) {
        self.stopping.cancel();
    }

    /// Waits for every task to finish.
    pub async fn join(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_core_task_that_panics_or_ends_is_reported() {
        let mut tasks = Tasks::default();
        tasks.core("sync", async { panic!("boom") });
        let died = tokio::time::timeout(Duration::from_secs(5), tasks.died())
            .await
            .expect("reported");
        assert_eq!(died.task, "sync");
        assert_eq!(died.how, "panicked: boom");
        assert!(died.to_string().contains("restarted"), "{died}");
        tasks.core("swarm", async {});
        let died = tokio::time::timeout(Duration::from_secs(5), tasks.died())
            .await
            .expect("reported");
        assert_eq!((died.task, died.how.as_str()), ("swarm", "ended"));
    }

    #[tokio::test]
    async fn background_tasks_may_end_and_shutdown_joins_everything() {
        let mut tasks = Tasks::default();
        tasks.background("discovery", async {});
        tasks.background("housekeeping", std::future::pending());
        tasks.service("retention", std::future::pending());
        let stopping = tasks.stopping();
        tasks.core("api", async move { stopping.cancelled().await });
        // Nothing died: the finished background task is no failure.
        assert!(
            tokio::time::timeout(Duration::from_millis(200), tasks.died())
                .await
                .is_err()
        );
        tasks.begin_shutdown();
        tokio::time::timeout(Duration::from_secs(5), tasks.join())
            .await
            .expect("every task joined");
        assert!(
            tokio::time::timeout(Duration::from_millis(100), tasks.died())
                .await
                .is_err(),
            "ends during shutdown are no failure"
        );
    }
}
