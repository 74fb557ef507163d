//! VSOA's `WorkQueue`: jobs run one at a time, first in, first out, on a task of their own;
//! usable alone (`add`, `add_if_not_queued`, `delete`, `is_queued`) or as the run mode of
//! routes ([`crate::Mode::Queue`]) that must not overlap.
//!
//! Python names a job by its function; a Rust closure has no identity, so a job that must
//! be found again is added under a key ([`WorkQueue::add_as`]).
//!
//! ```no_run
//! # async fn run() {
//! let wq = tether::WorkQueue::new("jobs");
//! for count in 1..=3 {
//!     wq.add(async move { println!("Hello count: {count}") }).await;
//! }
//! // Coalesce: at most one "save" waiting at any time.
//! let _ = wq.add_if_not_queued("save", async { /* write the file */ });
//! # }
//! ```

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What [`WorkQueue::add_if_not_queued`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    /// Queued.
    Queued,
    /// A job with that key is already waiting: not queued again.
    AlreadyQueued,
    /// The queue holds [`WorkQueue::CAPACITY`] jobs: not queued.
    Full,
}

/// The queue is full ([`WorkQueue::try_add`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the work queue is full ({} jobs waiting)", WorkQueue::CAPACITY)]
pub struct QueueFull;

#[derive(Default)]
struct Jobs {
    waiting: VecDeque<(Option<Arc<str>>, Job)>,
    worker: bool,
    closed: bool,
}

struct Shared {
    name: Arc<str>,
    jobs: Mutex<Jobs>,
    /// A job was added (or the queue closed).
    added: Notify,
    /// A job was taken: room for one more.
    taken: Notify,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Jobs> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Closes the queue when the last handle goes: the worker finishes what is queued, then
/// ends.
struct Owner(Arc<Shared>);

impl Drop for Owner {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.added.notify_one();
    }
}

/// A serial work queue: jobs run one at a time, first in, first out. Clones share the
/// queue. Its worker task starts with the first job, on the current Tokio runtime.
///
/// ```no_run
/// # use tether::{Server, Mode, WorkQueue, Reply};
/// let db = WorkQueue::new("database");
/// let server = Server::builder().build();
/// server.route_with("/db/read", Mode::Queue(db.clone()), |_req| async { Reply::empty() });
/// server.route_with("/db/write", Mode::Queue(db), |_req| async { Reply::empty() });
/// ```
#[derive(Clone)]
pub struct WorkQueue {
    shared: Arc<Shared>,
    _owner: Arc<Owner>,
}

impl std::fmt::Debug for WorkQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkQueue")
            .field("name", &self.shared.name)
            .field("waiting", &self.len())
            .finish()
    }
}

impl WorkQueue {
    /// Jobs that may wait in a queue; [`WorkQueue::add`] then waits for room, the other
    /// ways of adding refuse.
    pub const CAPACITY: usize = 1024;

    /// A new, empty queue.
    pub fn new(name: impl Into<Arc<str>>) -> Self {
        let shared = Arc::new(Shared {
            name: name.into(),
            jobs: Mutex::default(),
            added: Notify::new(),
            taken: Notify::new(),
        });
        WorkQueue {
            _owner: Arc::new(Owner(shared.clone())),
            shared,
        }
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// Jobs waiting (not counting the one running).
    pub fn len(&self) -> usize {
        self.shared.lock().waiting.len()
    }

    /// Whether no job is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Queues `job`, waiting while the queue is full.
    pub async fn add(&self, job: impl Future<Output = ()> + Send + 'static) {
        self.add_with(None, Box::pin(job)).await;
    }

    /// Queues `job` under `key` (for [`WorkQueue::is_queued`] and [`WorkQueue::delete`]),
    /// waiting while the queue is full.
    pub async fn add_as(&self, key: &str, job: impl Future<Output = ()> + Send + 'static) {
        self.add_with(Some(key.into()), Box::pin(job)).await;
    }

    async fn add_with(&self, key: Option<Arc<str>>, job: Job) {
        let mut job = Some((key, job));
        loop {
            let room = self.shared.taken.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            if let Err(back) = self.push(job.take().expect("kept until queued"), false) {
                job = Some(back);
                room.await;
                continue;
            }
            return;
        }
    }

    /// Queues `job` now, or says the queue is full.
    pub fn try_add(&self, job: impl Future<Output = ()> + Send + 'static) -> Result<(), QueueFull> {
        self.push((None, Box::pin(job)), false)
            .map(|_| ())
            .map_err(|_| QueueFull)
    }

    /// Queues `job` under `key` unless a job with that key is waiting (VSOA's
    /// `add_if_not_queued`: one pending "save" however often it is asked for).
    pub fn add_if_not_queued(
        &self,
        key: &str,
        job: impl Future<Output = ()> + Send + 'static,
    ) -> Added {
        match self.push((Some(key.into()), Box::pin(job)), true) {
            Ok(true) => Added::Queued,
            Ok(false) => Added::AlreadyQueued,
            Err(_) => Added::Full,
        }
    }

    /// Adds the job unless full (gives it back); with `unique`, not if its key waits
    /// (`Ok(false)`).
    #[allow(clippy::type_complexity)]
    fn push(
        &self,
        (key, job): (Option<Arc<str>>, Job),
        unique: bool,
    ) -> Result<bool, (Option<Arc<str>>, Job)> {
        let start = {
            let mut jobs = self.shared.lock();
            if unique && key.is_some() && jobs.waiting.iter().any(|(k, _)| *k == key) {
                return Ok(false);
            }
            if jobs.waiting.len() >= Self::CAPACITY {
                return Err((key, job));
            }
            jobs.waiting.push_back((key, job));
            !std::mem::replace(&mut jobs.worker, true)
        };
        if start {
            tokio::spawn(work(self.shared.clone()));
        }
        self.shared.added.notify_one();
        Ok(true)
    }

    /// Removes the waiting jobs added under `key` (not one already running); whether
    /// there were any.
    pub fn delete(&self, key: &str) -> bool {
        let removed = {
            let mut jobs = self.shared.lock();
            let before = jobs.waiting.len();
            jobs.waiting.retain(|(k, _)| k.as_deref() != Some(key));
            before - jobs.waiting.len()
        };
        for _ in 0..removed {
            self.shared.taken.notify_one();
        }
        removed > 0
    }

    /// Whether a job added under `key` is waiting.
    pub fn is_queued(&self, key: &str) -> bool {
        self.shared
            .lock()
            .waiting
            .iter()
            .any(|(k, _)| k.as_deref() == Some(key))
    }

    /// Queues a route's job (the [`crate::Mode::Queue`] run mode).
    pub(crate) async fn submit(&self, job: Job) {
        self.add_with(None, job).await;
    }
}

/// The worker: runs jobs one at a time until the queue is closed and empty.
async fn work(shared: Arc<Shared>) {
    tracing::debug!(queue = %shared.name, "work queue started");
    loop {
        let added = shared.added.notified();
        tokio::pin!(added);
        added.as_mut().enable();
        let next = {
            let mut jobs = shared.lock();
            match jobs.waiting.pop_front() {
                Some((_, job)) => Some(job),
                None if jobs.closed => return,
                None => None,
            }
        };
        match next {
            Some(job) => {
                shared.taken.notify_one();
                job.await;
            }
            None => added.await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    type Log = Arc<Mutex<Vec<String>>>;

    fn job(log: &Log, what: String) -> impl Future<Output = ()> + Send + 'static {
        let log = log.clone();
        async move {
            log.lock().unwrap().push(what);
            tokio::task::yield_now().await;
        }
    }

    /// Until the worker took the only queued job (it runs, holding the queue).
    async fn running(wq: &WorkQueue) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while !wq.is_empty() {
                tokio::task::yield_now().await;
            }
        })
        .await
        .expect("the worker took the job");
    }

    async fn drained(wq: &WorkQueue, log: &Log, n: usize) {
        tokio::time::timeout(Duration::from_secs(10), async {
            while log.lock().unwrap().len() < n || !wq.is_empty() {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
        .await
        .expect("the queue ran its jobs");
    }

    #[tokio::test]
    async fn jobs_run_one_at_a_time_in_order() {
        let wq = WorkQueue::new("t");
        let log: Log = Arc::default();
        let running = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for i in 0..50 {
            let (log, running) = (log.clone(), running.clone());
            wq.add(async move {
                assert_eq!(
                    running.fetch_add(1, std::sync::atomic::Ordering::SeqCst),
                    0,
                    "overlap"
                );
                tokio::time::sleep(Duration::from_micros(100)).await;
                log.lock().unwrap().push(i.to_string());
                running.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
            })
            .await;
        }
        drained(&wq, &log, 50).await;
        let want: Vec<String> = (0..50).map(|i| i.to_string()).collect();
        assert_eq!(*log.lock().unwrap(), want);
    }

    #[tokio::test]
    async fn keyed_jobs_can_be_coalesced_found_and_deleted() {
        let wq = WorkQueue::new("t");
        let log: Log = Arc::default();
        // A job that holds the worker until told to go on, so the rest waits.
        let gate = Arc::new(Notify::new());
        let g = gate.clone();
        wq.add(async move { g.notified().await }).await;
        running(&wq).await;
        assert_eq!(
            wq.add_if_not_queued("save", job(&log, "save 1".into())),
            Added::Queued
        );
        assert_eq!(
            wq.add_if_not_queued("save", job(&log, "save 2".into())),
            Added::AlreadyQueued
        );
        wq.add_as("drop-me", job(&log, "dropped".into())).await;
        wq.add(job(&log, "plain".into())).await;
        assert!(wq.is_queued("save"));
        assert!(wq.is_queued("drop-me"));
        assert!(wq.delete("drop-me"));
        assert!(!wq.delete("drop-me"));
        assert!(!wq.is_queued("drop-me"));
        assert_eq!(wq.len(), 2);
        gate.notify_one();
        drained(&wq, &log, 2).await;
        assert_eq!(*log.lock().unwrap(), ["save 1", "plain"]);
        assert!(!wq.is_queued("save"), "ran, so no longer queued");
    }

    #[tokio::test]
    async fn a_full_queue_refuses_or_makes_add_wait() {
        let wq = WorkQueue::new("t");
        let gate = Arc::new(Notify::new());
        let g = gate.clone();
        wq.add(async move { g.notified().await }).await;
        // Fill up to exactly CAPACITY waiting behind the running gate job.
        running(&wq).await;
        for _ in 0..WorkQueue::CAPACITY {
            wq.try_add(async {}).unwrap();
        }
        assert_eq!(wq.try_add(async {}), Err(QueueFull));
        assert_eq!(wq.add_if_not_queued("k", async {}), Added::Full);
        let waiting = tokio::spawn({
            let wq = wq.clone();
            async move { wq.add(async {}).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiting.is_finished(), "add waits for room");
        gate.notify_one();
        tokio::time::timeout(Duration::from_secs(10), waiting)
            .await
            .unwrap()
            .unwrap();
    }
}
