//! VSOA's `Timer`, as a small async type: one-shot or periodic, stop, restart,
//! `is_started`. The callback runs as a Tokio task (VSOA runs it on its timer thread).
//!
//! ```no_run
//! # async fn run() -> Result<(), tether::timer::TimerError> {
//! use std::time::Duration;
//! let timer = tether::Timer::new();
//! // Every second, starting in 1.5 s (the seed's `timer.start(1.5, func, interval=1)`).
//! timer.start(Duration::from_millis(1500), Some(Duration::from_secs(1)), || async {
//!     println!("tick");
//! })?;
//! timer.stop();
//! # Ok(()) }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::task::JoinHandle;

type Callback = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// Why a timer cannot start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimerError {
    /// The timeout is zero (VSOA: it must be greater than 0).
    #[error("a timer's timeout must be greater than zero")]
    ZeroTimeout,
    /// A periodic interval of zero would spin.
    #[error("a periodic timer's interval must be greater than zero")]
    ZeroInterval,
    /// [`Timer::restart`] on a timer never started.
    #[error("the timer was never started")]
    NeverStarted,
}

/// The settings of the last start, for [`Timer::restart`].
#[derive(Clone)]
struct Settings {
    timeout: Duration,
    interval: Option<Duration>,
    callback: Callback,
}

#[derive(Default)]
struct Inner {
    running: Option<JoinHandle<()>>,
    last: Option<Settings>,
}

/// A one-shot or periodic timer. Clones share the timer; dropping the last clone stops
/// it. Starting it again replaces what it was doing.
#[derive(Clone, Default)]
pub struct Timer {
    shared: Arc<Shared>,
}

/// The timer's state; stops the task when the last handle goes.
#[derive(Default)]
struct Shared(Mutex<Inner>);

impl Drop for Shared {
    fn drop(&mut self) {
        let inner = self.0.get_mut().unwrap_or_else(|e| e.into_inner());
        if let Some(task) = inner.running.take() {
            task.abort();
        }
    }
}

impl std::fmt::Debug for Timer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timer")
            .field("started", &self.is_started())
            .finish()
    }
}

impl Timer {
    /// A stopped timer.
    pub fn new() -> Self {
        Timer::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `callback` after `timeout`, then every `interval` if one is given (`None`: one
    /// shot). A started timer is restarted with the new settings. Each run is awaited
    /// before the next is due; a run that takes longer than the interval delays the next
    /// (ticks are not bunched up). Needs a Tokio runtime.
    pub fn start<F, Fut>(
        &self,
        timeout: Duration,
        interval: Option<Duration>,
        callback: F,
    ) -> Result<(), TimerError>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let callback: Callback = Arc::new(move || Box::pin(callback()));
        self.start_with(Settings {
            timeout,
            interval,
            callback,
        })
    }

    fn start_with(&self, s: Settings) -> Result<(), TimerError> {
        if s.timeout.is_zero() {
            return Err(TimerError::ZeroTimeout);
        }
        if s.interval.is_some_and(|i| i.is_zero()) {
            return Err(TimerError::ZeroInterval);
        }
        let run = s.clone();
        let task = tokio::spawn(async move {
            tokio::time::sleep(run.timeout).await;
            (run.callback)().await;
            let Some(every) = run.interval else { return };
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                (run.callback)().await;
            }
        });
        let mut inner = self.lock();
        if let Some(old) = inner.running.replace(task) {
            old.abort();
        }
        inner.last = Some(s);
        Ok(())
    }

    /// Stops the timer (a callback running now is cancelled at its next await); `true`
    /// if it was started. A stopped timer can be started again.
    pub fn stop(&self) -> bool {
        match self.lock().running.take() {
            Some(task) => {
                let was = !task.is_finished();
                task.abort();
                was
            }
            None => false,
        }
    }

    /// Starts it again with the settings of its last start (the countdown begins anew).
    pub fn restart(&self) -> Result<(), TimerError> {
        let last = self.lock().last.clone().ok_or(TimerError::NeverStarted)?;
        self.start_with(last)
    }

    /// Whether it is timing: started, not stopped, and (one shot) not yet done.
    pub fn is_started(&self) -> bool {
        self.lock()
            .running
            .as_ref()
            .is_some_and(|t| !t.is_finished())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn counter() -> (
        Arc<AtomicU32>,
        impl Fn() -> std::future::Ready<()> + Send + Sync,
    ) {
        let n = Arc::new(AtomicU32::new(0));
        let m = n.clone();
        (n, move || {
            m.fetch_add(1, Ordering::SeqCst);
            std::future::ready(())
        })
    }

    #[tokio::test(start_paused = true)]
    async fn one_shot_fires_once_then_is_not_started() {
        let t = Timer::new();
        let (n, f) = counter();
        t.start(Duration::from_millis(1500), None, f).unwrap();
        assert!(t.is_started());
        tokio::time::sleep(Duration::from_millis(1499)).await;
        assert_eq!(n.load(Ordering::SeqCst), 0);
        tokio::time::sleep(Duration::from_millis(2)).await;
        tokio::task::yield_now().await;
        assert_eq!(n.load(Ordering::SeqCst), 1);
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(n.load(Ordering::SeqCst), 1);
        assert!(!t.is_started());
        assert!(!t.stop(), "nothing left to stop");
    }

    #[tokio::test(start_paused = true)]
    async fn periodic_ticks_until_stopped_and_restart_begins_anew() {
        let t = Timer::new();
        let (n, f) = counter();
        t.start(Duration::from_secs(1), Some(Duration::from_millis(500)), f)
            .unwrap();
        // Fires at 1.0, 1.5, 2.0, 2.5 s.
        tokio::time::sleep(Duration::from_millis(2600)).await;
        assert_eq!(n.load(Ordering::SeqCst), 4);
        assert!(t.stop());
        assert!(!t.is_started());
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(n.load(Ordering::SeqCst), 4);
        t.restart().unwrap();
        assert!(t.is_started());
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(n.load(Ordering::SeqCst), 5);
        // Starting a started timer replaces it: one countdown, not two.
        t.start(Duration::from_secs(3), None, || std::future::ready(()))
            .unwrap();
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(n.load(Ordering::SeqCst), 5);
    }

    #[tokio::test(start_paused = true)]
    async fn bad_settings_are_refused_and_dropping_stops_it() {
        let t = Timer::new();
        assert_eq!(
            t.start(Duration::ZERO, None, || std::future::ready(())),
            Err(TimerError::ZeroTimeout)
        );
        assert_eq!(
            t.start(Duration::from_secs(1), Some(Duration::ZERO), || {
                std::future::ready(())
            }),
            Err(TimerError::ZeroInterval)
        );
        assert_eq!(t.restart(), Err(TimerError::NeverStarted));
        let (n, f) = counter();
        t.start(Duration::from_secs(1), Some(Duration::from_secs(1)), f)
            .unwrap();
        let clone = t.clone();
        drop(t);
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert_eq!(n.load(Ordering::SeqCst), 1, "a clone keeps it running");
        drop(clone);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(n.load(Ordering::SeqCst), 1, "the last handle stopped it");
    }
}
