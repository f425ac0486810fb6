//! One supervisor for the node's background work (ARCHITECTURE.md §5.4).
//!
//! Every long-lived task (the inbox consumer, one relay per peer, the fetch scheduler, presence
//! and its mDNS browser, retention) is started here by name, with a [`Task`] handle through which
//! it reports its state and its last error; `/v1/peers` (with the token) and `/metrics` show
//! them. Such a task is *critical*: if it ends before shutdown (a bug, a panic), the node stops
//! with an error so that its service manager restarts it, rather than answering HTTP while no
//! longer pulling or relaying (fail-stop). Short-lived work (one pull, one on-demand transfer)
//! is spawned here too, without a name, so that shutdown waits for it (bounded).
//!
//! [`Backoff`] and [`Retry`] are the one retry policy every loop uses: capped exponential delays
//! with jitter, and, for long-lived connections, a failure count that starts over once a
//! connection stayed up.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use docfed_shared::wire::Timestamp;
use rand::Rng;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What a task is doing, and the task table's rows: the bodies of `/v1/peers` `tasks`.
pub use docfed_shared::wire::peers::{TaskState, TaskView};

#[derive(Debug)]
struct Status {
    state: TaskState,
    since: Timestamp,
    last_error: Option<(Timestamp, String)>,
}

#[derive(Debug)]
struct Entry {
    status: Mutex<Status>,
    errors: AtomicU64,
}

/// A long-lived task's handle for reporting what it does.
#[derive(Debug, Clone)]
pub struct Task {
    entry: Arc<Entry>,
}

impl Task {
    fn set(&self, state: TaskState) {
        let mut s = self.entry.status.lock().expect("not poisoned");
        if s.state != state {
            s.state = state;
            s.since = Timestamp::now();
        }
    }

    /// At work.
    pub fn running(&self) {
        self.set(TaskState::Running);
    }

    /// Failed with `error`; will try again.
    pub fn retrying(&self, error: &dyn std::fmt::Display) {
        self.error(error);
        self.set(TaskState::Retrying);
    }

    /// Records an error that did not interrupt the task (one failed round of periodic work).
    pub fn error(&self, error: &dyn std::fmt::Display) {
        self.entry.errors.fetch_add(1, Ordering::Relaxed);
        let mut s = self.entry.status.lock().expect("not poisoned");
        s.last_error = Some((Timestamp::now(), error.to_string()));
    }
}

#[derive(Debug)]
pub struct Supervisor {
    cancel: CancellationToken,
    tracker: TaskTracker,
    tasks: Mutex<BTreeMap<String, Arc<Entry>>>,
    failed: Arc<Mutex<Option<String>>>,
}

impl Supervisor {
    pub fn new(cancel: CancellationToken) -> Self {
        Supervisor {
            cancel,
            tracker: TaskTracker::new(),
            tasks: Mutex::default(),
            failed: Arc::default(),
        }
    }

    /// Starts a critical long-lived task named `name`: `start` gets its [`Task`] handle. If it
    /// ends before shutdown, the node stops.
    pub fn critical<F, Fut>(&self, name: impl Into<String>, start: F)
    where
        F: FnOnce(Task) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.start(name.into(), start, true);
    }

    /// Starts a long-lived task the node can do without (the mDNS browser: presence falls back
    /// to health probes): if it ends before shutdown, that is shown and logged, nothing more.
    pub fn watched<F, Fut>(&self, name: impl Into<String>, start: F)
    where
        F: FnOnce(Task) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.start(name.into(), start, false);
    }

    fn start<F, Fut>(&self, name: String, start: F, critical: bool)
    where
        F: FnOnce(Task) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let entry = Arc::new(Entry {
            status: Mutex::new(Status {
                state: TaskState::Starting,
                since: Timestamp::now(),
                last_error: None,
            }),
            errors: AtomicU64::new(0),
        });
        self.tasks
            .lock()
            .expect("not poisoned")
            .insert(name.clone(), entry.clone());
        let task = Task { entry };
        // Its own tokio task, so that a panic is seen here as a join error.
        let inner = tokio::spawn(start(task.clone()));
        let (cancel, failed) = (self.cancel.clone(), self.failed.clone());
        self.tracker.spawn(async move {
            let outcome = inner.await;
            if cancel.is_cancelled() {
                task.set(TaskState::Stopped);
                return;
            }
            let why = match outcome {
                Ok(()) => format!("background task {name} ended unexpectedly"),
                Err(e) => format!("background task {name} failed: {e}"),
            };
            task.error(&why);
            task.set(TaskState::Failed);
            if !critical {
                tracing::warn!("{why}");
                return;
            }
            tracing::error!("{why}; stopping the node");
            failed.lock().expect("not poisoned").get_or_insert(why);
            cancel.cancel();
        });
    }

    /// Spawns short-lived work that shutdown waits for.
    pub fn spawn<Fut>(&self, work: Fut) -> tokio::task::JoinHandle<()>
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.tracker.spawn(work)
    }

    /// Fires when the node stops: short-lived work that does not watch anything else selects
    /// on it.
    pub fn stopping(&self) -> CancellationToken {
        self.cancel.clone()
    }

    /// The long-lived tasks, by name.
    pub fn tasks(&self) -> Vec<TaskView> {
        self.tasks
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|(name, e)| {
                let s = e.status.lock().expect("not poisoned");
                TaskView {
                    name: name.clone(),
                    state: s.state,
                    since: s.since,
                    errors: e.errors.load(Ordering::Relaxed),
                    last_error: s.last_error.as_ref().map(|(_, m)| m.clone()),
                    last_error_at: s.last_error.as_ref().map(|(t, _)| *t),
                }
            })
            .collect()
    }

    /// After cancellation: waits up to `timeout` for every task to end. False if some did not.
    pub async fn wait(&self, timeout: Duration) -> bool {
        self.tracker.close();
        tokio::time::timeout(timeout, self.tracker.wait())
            .await
            .is_ok()
    }

    /// Why the node is stopping, if a critical task ended before shutdown.
    pub fn failure(&self) -> Option<String> {
        self.failed.lock().expect("not poisoned").clone()
    }
}

/// Capped exponential delays with 50-100 % jitter, so a fleet of nodes does not retry in
/// lockstep after an outage.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub first: Duration,
    pub cap: Duration,
}

impl Backoff {
    /// Reconnecting to a broker: a broker back from a restart is found within ~3 s, and a fleet
    /// retrying every 1.5-3 s is no load for it.
    pub const BROKER: Backoff = Backoff {
        first: Duration::from_millis(100),
        cap: Duration::from_secs(3),
    };
    /// Pulls that failed at every source (a pending fetch is never abandoned).
    pub const PULL: Backoff = Backoff {
        first: Duration::from_millis(250),
        cap: Duration::from_secs(30),
    };

    /// The delay before retry number `attempt` (1 for the first retry).
    pub fn delay(&self, attempt: u32) -> Duration {
        let step = self
            .first
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.cap);
        let ms = step.as_millis().max(1) as u64;
        Duration::from_millis(rand::rng().random_range(ms / 2..=ms))
    }
}

/// A connection that stayed up this long was healthy: the next failure starts the backoff over.
const HEALTHY_SESSION: Duration = Duration::from_secs(30);

/// Delays between reconnections of one long-lived connection (inbox consumer, outbox relay):
/// growing while connections keep failing, back to the shortest once one stayed up.
#[derive(Debug)]
pub struct Retry {
    backoff: Backoff,
    failures: u32,
}

impl Retry {
    pub fn new(backoff: Backoff) -> Self {
        Retry {
            backoff,
            failures: 0,
        }
    }

    /// How long to wait after a connection that lasted `session` failed.
    pub fn after(&mut self, session: Duration) -> Duration {
        if session >= HEALTHY_SESSION {
            self.failures = 0;
        }
        self.failures = self.failures.saturating_add(1);
        self.backoff.delay(self.failures)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_healthy_session_resets_the_backoff() {
        let mut r = Retry::new(Backoff::BROKER);
        for _ in 0..10 {
            r.after(Duration::from_millis(10));
        }
        assert!(r.after(Duration::from_millis(10)) >= Duration::from_millis(1500));
        assert!(r.after(Duration::from_secs(60)) <= Duration::from_millis(200));
    }

    #[test]
    fn delays_are_capped_and_jittered() {
        for a in 0..40 {
            let d = Backoff::PULL.delay(a);
            assert!(d <= Duration::from_secs(30), "{a}: {d:?}");
            assert!(d >= Duration::from_millis(125), "{a}: {d:?}");
        }
        assert!(Backoff::BROKER.delay(30) >= Duration::from_millis(1500));
    }

    #[tokio::test]
    async fn a_task_that_ends_early_stops_the_node_and_says_why() {
        let cancel = CancellationToken::new();
        let sup = Supervisor::new(cancel.clone());
        sup.critical("steady", |task| {
            let cancel = cancel.clone();
            async move {
                task.running();
                task.error(&"one bad round");
                cancel.cancelled().await;
            }
        });
        sup.critical("doomed", |_| async { panic!("boom") });
        tokio::time::timeout(Duration::from_secs(5), cancel.cancelled())
            .await
            .expect("the node was stopped");
        assert!(sup.wait(Duration::from_secs(5)).await);
        let why = sup.failure().expect("a failure");
        assert!(why.contains("doomed") && why.contains("boom"), "{why}");
        let tasks = sup.tasks();
        let doomed = tasks.iter().find(|t| t.name == "doomed").unwrap();
        assert_eq!(doomed.state, TaskState::Failed);
        let steady = tasks.iter().find(|t| t.name == "steady").unwrap();
        assert_eq!(steady.state, TaskState::Stopped);
        assert_eq!(steady.errors, 1);
        assert_eq!(steady.last_error.as_deref(), Some("one bad round"));
    }
}
