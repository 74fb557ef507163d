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

enum Sink {
    /// A queue a task reads.
    Queue {
        tx: mpsc::Sender<Published>,
        cut_off: Arc<AtomicBool>,
        /// An observer (a monitoring tap): not counted in publish reports; when full, it
        /// skips and counts here instead of being cut off.
        observer: Option<Arc<AtomicU64>>,
    },
    /// A [`PublishLog`]: written in place, nobody to wake.
    Log(Arc<Mutex<LogState>>),
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
            // Made when a queue needs it: a publish log finds its own copy of a URL it knows.
            let mut shared_url: Option<Arc<str>> = None;
            for id in &ids {
                let Some(sink) = self.sinks.get(id) else {
                    continue;
                };
                let (tx, observer) = match sink {
                    Sink::Log(log) => {
                        log.lock()
                            .unwrap_or_else(|e| e.into_inner())
                            .record(url, payload, quick);
                        continue;
                    }
                    Sink::Queue { tx, observer, .. } => (tx, observer),
                };
                let msg = Published {
                    url: shared_url.get_or_insert_with(|| Arc::from(url)).clone(),
                    payload: payload.clone(),
                    quick,
                };
                if let Some(skipped) = observer {
                    if tx.try_send(msg).is_err() {
                        skipped.fetch_add(1, Ordering::Relaxed);
                    }
                    continue;
                }
                match tx.try_send(msg) {
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
        if let Some(Sink::Queue { cut_off: flag, .. }) = self.sinks.remove(&id) {
            flag.store(cut_off, Ordering::Relaxed);
            if cut_off {
                tracing::warn!("local subscriber {id} did not keep up with its publishes; cut off");
            }
        }
        self.subs.remove_client(id);
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.sinks.is_empty()
    }

    /// The patterns of the subscribers that count as interest for federation: not
    /// observers or publish logs (a monitoring tap on `/` must not pull in every node's
    /// publishes).
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn interest(&self, out: &mut Vec<String>) {
        for (id, sink) in &self.sinks {
            if let Sink::Queue { observer: None, .. } = sink {
                out.extend(self.subs.patterns_of(*id).map(str::to_string));
            }
        }
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

/// Adds a sink (subscribed to `pattern`, if given) and tells publishers to look.
fn register(shared: &ServerState, sink: Sink, pattern: Option<&str>) -> u64 {
    let id = NEXT_LOCAL.fetch_add(1, Ordering::Relaxed);
    {
        let mut s = sinks(shared);
        s.sinks.insert(id, sink);
        if let Some(p) = pattern {
            s.subs.subscribe(id, p);
        }
    }
    shared.has_local.store(true, Ordering::Relaxed);
    id
}

/// Removes a sink; publishers stop looking when none is left.
fn unregister(shared: &ServerState, id: u64) {
    let mut s = sinks(shared);
    s.remove(id, false);
    if s.is_empty() {
        shared.has_local.store(false, Ordering::Relaxed);
    }
    drop(s);
    shared.interest_changed();
}

impl LocalSubscriber {
    pub(crate) fn new(shared: Arc<ServerState>, capacity: usize, observer: bool) -> Self {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let cut_off = Arc::new(AtomicBool::new(false));
        let skipped = Arc::new(AtomicU64::new(0));
        let sink = Sink::Queue {
            tx,
            cut_off: cut_off.clone(),
            observer: observer.then(|| skipped.clone()),
        };
        let id = register(&shared, sink, None);
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
        let added = s.subs.subscribe(self.id, pattern);
        drop(s);
        self.shared.interest_changed();
        Ok(added)
    }

    /// Removes a URL pattern; `false` if it was not there.
    pub fn unsubscribe(&self, pattern: &str) -> bool {
        let removed = sinks(&self.shared).subs.unsubscribe(self.id, pattern);
        self.shared.interest_changed();
        removed
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
        unregister(&self.shared, self.id);
    }
}

pub(crate) type LocalLock = Mutex<LocalSinks>;

/// URLs a [`PublishLog`] counts one by one between two takes; the rest are counted together.
const LOG_URLS: usize = 1000;

pub(crate) struct LogState {
    recent: std::collections::VecDeque<(Published, std::time::SystemTime)>,
    keep: usize,
    /// Per URL; a `Cell` so that one lookup both finds the key and counts.
    counts: HashMap<Arc<str>, std::cell::Cell<u64>>,
    others: u64,
    total: u64,
}

impl LogState {
    fn record(&mut self, url: &str, payload: &Payload, quick: bool) {
        self.total += 1;
        // The URL as an Arc: the count's key, else the newest entry's, else a new one.
        let known = self.counts.get_key_value(url).map(|(key, n)| {
            n.set(n.get() + 1);
            key.clone()
        });
        let url: Arc<str> = match known {
            Some(key) => key,
            None => {
                let fresh = match self.recent.front() {
                    Some((p, _)) if &*p.url == url => p.url.clone(),
                    _ => Arc::from(url),
                };
                if self.counts.len() < LOG_URLS {
                    self.counts.insert(fresh.clone(), std::cell::Cell::new(1));
                } else {
                    self.others += 1;
                }
                fresh
            }
        };
        if self.keep == 0 {
            return;
        }
        if self.recent.len() == self.keep {
            self.recent.pop_back();
        }
        let p = Published {
            url,
            payload: payload.clone(),
            quick,
        };
        self.recent.push_front((p, std::time::SystemTime::now()));
    }
}

/// What a [`PublishLog`] saw since the previous [`PublishLog::take`].
#[derive(Debug, Clone, Default)]
pub struct PublishLogEntries {
    /// The newest publishes (at most the log's `recent`), newest first, with when each was
    /// made; kept across takes.
    pub recent: Vec<(Published, std::time::SystemTime)>,
    /// Publishes per URL since the previous take (the first 1 000 URLs one by one).
    pub per_url: Vec<(Arc<str>, u64)>,
    /// Publishes on URLs beyond those.
    pub other_urls: u64,
    /// Publishes since the previous take.
    pub total: u64,
}

/// A record of every publish for monitoring (a dashboard): the newest few and a count per
/// URL, written in place by whoever publishes: no queue to fill, no task to wake, nothing
/// skipped. See [`super::Server::publish_log`]. Dropping it stops the recording.
pub struct PublishLog {
    id: u64,
    shared: Arc<ServerState>,
    log: Arc<Mutex<LogState>>,
}

impl std::fmt::Debug for PublishLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PublishLog").field("id", &self.id).finish()
    }
}

impl PublishLog {
    pub(crate) fn new(shared: Arc<ServerState>, recent: usize) -> Self {
        let log = Arc::new(Mutex::new(LogState {
            recent: std::collections::VecDeque::with_capacity(recent),
            keep: recent,
            counts: HashMap::new(),
            others: 0,
            total: 0,
        }));
        let id = register(&shared, Sink::Log(log.clone()), Some("/"));
        PublishLog { id, shared, log }
    }

    /// The newest publishes, and the counts since the previous take (which start again).
    pub fn take(&self) -> PublishLogEntries {
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        PublishLogEntries {
            recent: log.recent.iter().cloned().collect(),
            per_url: log.counts.drain().map(|(u, n)| (u, n.get())).collect(),
            other_urls: std::mem::take(&mut log.others),
            total: std::mem::take(&mut log.total),
        }
    }
}

impl Drop for PublishLog {
    fn drop(&mut self) {
        unregister(&self.shared, self.id);
    }
}
