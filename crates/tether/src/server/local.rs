//! Subscribers on other transports (the WebSocket gateway): publishes reach them through
//! the same matching as VSOA clients, into a bounded queue each. A subscriber whose queue
//! is full when a publish arrives is cut off, as a VSOA client that stops reading is: its
//! stream ends and [`LocalSubscriber::is_cut_off`] says why; nothing is dropped silently.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tether_wire::url::{check_url, SubscriptionIndex};
use tokio::sync::mpsc;

use super::{PublishReport, ServerState};
use crate::{Error, Payload};

/// One publish, as a local subscriber receives it.
#[derive(Debug, Clone)]
pub struct Published {
    /// The URL it was published on.
    pub url: Arc<str>,
    /// Param and data.
    pub payload: Payload,
    /// Whether it was published on the quick channel.
    pub quick: bool,
}

struct Sink {
    tx: mpsc::Sender<Published>,
    cut_off: Arc<AtomicBool>,
    /// An observer (a monitoring tap): not counted in publish reports; when full, it skips
    /// and counts here instead of being cut off.
    observer: Option<Arc<AtomicU64>>,
}

#[derive(Default)]
pub(crate) struct LocalSinks {
    subs: SubscriptionIndex<u64>,
    sinks: HashMap<u64, Sink>,
    scratch: Vec<u64>,
}

impl LocalSinks {
    /// Offers a publish to every matching subscriber: a full one is cut off, or for a quick
    /// publish skipped; both are counted in `report.cut_off`.
    pub(crate) fn deliver(
        &mut self,
        url: &str,
        payload: &Payload,
        quick: bool,
        report: &mut PublishReport,
    ) {
        let mut ids = std::mem::take(&mut self.scratch);
        ids.clear();
        self.subs.matching(url, &mut ids);
        if !ids.is_empty() {
            let url: Arc<str> = Arc::from(url);
            for id in &ids {
                let Some(sink) = self.sinks.get(id) else {
                    continue;
                };
                let msg = Published {
                    url: url.clone(),
                    payload: payload.clone(),
                    quick,
                };
                if let Some(skipped) = &sink.observer {
                    if sink.tx.try_send(msg).is_err() {
                        skipped.fetch_add(1, Ordering::Relaxed);
                    }
                    continue;
                }
                match sink.tx.try_send(msg) {
                    Ok(()) => report.delivered += 1,
                    // Quick publishes may be dropped (and are counted); reliable ones may not.
                    Err(mpsc::error::TrySendError::Full(_)) if quick => report.cut_off += 1,
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        report.cut_off += 1;
                        self.remove(*id, true);
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => self.remove(*id, false),
                }
            }
        }
        self.scratch = ids;
    }

    fn remove(&mut self, id: u64, cut_off: bool) {
        if let Some(sink) = self.sinks.remove(&id) {
            sink.cut_off.store(cut_off, Ordering::Relaxed);
            if cut_off {
                tracing::warn!("local subscriber {id} did not keep up with its publishes; cut off");
            }
        }
        self.subs.remove_client(id);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }
}

/// A subscriber on another transport (see the module docs). Share it in an `Arc` to read
/// and (un)subscribe from different tasks. Dropping it unsubscribes.
pub struct LocalSubscriber {
    id: u64,
    shared: Arc<ServerState>,
    rx: tokio::sync::Mutex<mpsc::Receiver<Published>>,
    cut_off: Arc<AtomicBool>,
    skipped: Arc<AtomicU64>,
}

impl std::fmt::Debug for LocalSubscriber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSubscriber")
            .field("id", &self.id)
            .finish()
    }
}

static NEXT_LOCAL: AtomicU64 = AtomicU64::new(1);

fn sinks(shared: &ServerState) -> MutexGuard<'_, LocalSinks> {
    shared.local.lock().unwrap_or_else(|e| e.into_inner())
}

impl LocalSubscriber {
    pub(crate) fn new(shared: Arc<ServerState>, capacity: usize, observer: bool) -> Self {
        let id = NEXT_LOCAL.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let cut_off = Arc::new(AtomicBool::new(false));
        let skipped = Arc::new(AtomicU64::new(0));
        sinks(&shared).sinks.insert(
            id,
            Sink {
                tx,
                cut_off: cut_off.clone(),
                observer: observer.then(|| skipped.clone()),
            },
        );
        shared.has_local.store(true, Ordering::Relaxed);
        LocalSubscriber {
            id,
            shared,
            rx: tokio::sync::Mutex::new(rx),
            cut_off,
            skipped,
        }
    }

    /// Adds a URL pattern (VSOA matching: a trailing `/` takes everything below). `false`
    /// if it was there already; an error for an invalid URL or past the server's
    /// subscription limit per client.
    pub fn subscribe(&self, pattern: &str) -> Result<bool, Error> {
        check_url(pattern.as_bytes())?;
        let limit = self.shared.config.max_subscriptions_per_client;
        let mut s = sinks(&self.shared);
        if !s.sinks.contains_key(&self.id) {
            return Err(Error::Closed {
                reason: crate::CloseReason::local("this subscriber was cut off"),
            });
        }
        if !s.subs.client_has_pattern(self.id, pattern) && s.subs.count_of(self.id) >= limit {
            return Err(Error::Refused {
                what: format!("subscribing to {pattern} (limit {limit} per client)"),
                status: tether_wire::vsoa::Status::NO_MEMORY,
            });
        }
        Ok(s.subs.subscribe(self.id, pattern))
    }

    /// Removes a URL pattern; `false` if it was not there.
    pub fn unsubscribe(&self, pattern: &str) -> bool {
        sinks(&self.shared).subs.unsubscribe(self.id, pattern)
    }

    /// The next publish; `None` once cut off (see [`LocalSubscriber::is_cut_off`]). One
    /// task should read; (un)subscribing from others meanwhile is fine.
    pub async fn next(&self) -> Option<Published> {
        self.rx.lock().await.recv().await
    }

    /// For an observer: publishes skipped because its queue was full.
    pub fn skipped(&self) -> u64 {
        self.skipped.load(Ordering::Relaxed)
    }

    /// Whether the stream ended because this subscriber did not keep up.
    pub fn is_cut_off(&self) -> bool {
        self.cut_off.load(Ordering::Relaxed)
    }
}

impl Drop for LocalSubscriber {
    fn drop(&mut self) {
        let mut s = sinks(&self.shared);
        s.remove(self.id, false);
        if s.is_empty() {
            self.shared.has_local.store(false, Ordering::Relaxed);
        }
    }
}

pub(crate) type LocalLock = Mutex<LocalSinks>;
