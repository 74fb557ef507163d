//! A JSON document synchronised into juggler clients (docs/protocols/juggler.md §3): the server
//! changes it by path, every connection sends its client RFC 6902 diffs (only `add`,
//! `remove` and `replace`) from what that client last received, on the `autoflush`
//! schedule.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::{broadcast, mpsc, oneshot};

/// When a connection sends state changes (hat-juggler's `autoflush_delay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Autoflush {
    /// Every change, as its own message.
    Each,
    /// The first change opens a window of this length (not a debounce: later changes do not
    /// extend it); then one folded diff goes out. hat-juggler's default is 200 ms.
    Within(Duration),
    /// Only on [`State::flush`].
    Manual,
}

impl Autoflush {
    /// hat-juggler's numbers: `Some(0.0)` each change, `Some(s)` a window, `None` manual.
    pub fn from_secs(secs: Option<f64>) -> Self {
        match secs {
            None => Autoflush::Manual,
            Some(s) if s <= 0.0 => Autoflush::Each,
            Some(s) => Autoflush::Within(Duration::from_secs_f64(s)),
        }
    }
}

/// What a sync loop hears.
#[derive(Debug, Clone)]
pub(crate) enum Change {
    /// The document after a change.
    Value(Arc<Value>),
    /// Send what is pending now.
    Flush,
}

struct Inner {
    value: Mutex<Arc<Value>>,
    changes: broadcast::Sender<Change>,
}

/// A JSON document shared by the connections that sync it. Cheap to clone.
///
/// Paths are JSON Pointers (`/list/0`, `""` for the whole document). [`State::set`] fills
/// in missing parents (objects) and pads arrays with `null`, as hat's Storage does;
/// [`State::remove`] of a missing path does nothing.
#[derive(Clone)]
pub struct State {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("State").field(&*self.get()).finish()
    }
}

impl Default for State {
    fn default() -> Self {
        State::new(Value::Null)
    }
}

fn parts(path: &str) -> Vec<String> {
    if path.is_empty() {
        return Vec::new();
    }
    path.trim_start_matches('/')
        .split('/')
        .map(|p| p.replace("~1", "/").replace("~0", "~"))
        .collect()
}

/// The child `key` of `v`, made to exist: an object is created where there is none, an
/// array index past the end pads with `null`.
fn child<'v>(v: &'v mut Value, key: &str) -> &'v mut Value {
    let index = match v {
        Value::Array(_) => key.parse::<usize>().ok(),
        _ => None,
    };
    if !v.is_object() && index.is_none() {
        *v = Value::Object(Map::new());
    }
    match (v, index) {
        (Value::Array(a), Some(i)) => {
            if a.len() <= i {
                a.resize(i + 1, Value::Null);
            }
            &mut a[i]
        }
        (Value::Object(m), _) => m.entry(key.to_string()).or_insert(Value::Null),
        _ => unreachable!("an array with an index, or an object"),
    }
}

impl State {
    /// A document with this initial value (`null` for hat-juggler's default).
    pub fn new(initial: Value) -> Self {
        State {
            inner: Arc::new(Inner {
                value: Mutex::new(Arc::new(initial)),
                changes: broadcast::channel(1024).0,
            }),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Arc<Value>> {
        self.inner.value.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The document now.
    pub fn get(&self) -> Arc<Value> {
        self.lock().clone()
    }

    /// Changes the document with `f`; connections are told if it changed.
    pub fn update(&self, f: impl FnOnce(&mut Value)) {
        let mut current = self.lock();
        let mut next = (**current).clone();
        f(&mut next);
        if next != **current {
            let next = Arc::new(next);
            *current = next.clone();
            let _ = self.inner.changes.send(Change::Value(next));
        }
    }

    /// Sets the value at `path`.
    pub fn set(&self, path: &str, value: Value) {
        let parts = parts(path);
        self.update(|doc| {
            let mut at = doc;
            for p in &parts {
                at = child(at, p);
            }
            *at = value;
        });
    }

    /// Removes the value at `path` (the whole document becomes `null`).
    pub fn remove(&self, path: &str) {
        let parts = parts(path);
        self.update(|doc| {
            let Some((last, parents)) = parts.split_last() else {
                *doc = Value::Null;
                return;
            };
            let mut at = doc;
            for p in parents {
                at = match at {
                    Value::Object(m) => match m.get_mut(p) {
                        Some(v) => v,
                        None => return,
                    },
                    Value::Array(a) => match p.parse::<usize>().ok().and_then(|i| a.get_mut(i)) {
                        Some(v) => v,
                        None => return,
                    },
                    _ => return,
                };
            }
            match at {
                Value::Object(m) => {
                    m.shift_remove(last);
                }
                Value::Array(a) => {
                    if let Some(i) = last.parse::<usize>().ok().filter(|i| *i < a.len()) {
                        a.remove(i);
                    }
                }
                _ => {}
            }
        });
    }

    /// Makes every connection send what is pending now (the only trigger with
    /// [`Autoflush::Manual`]).
    pub fn flush(&self) {
        let _ = self.inner.changes.send(Change::Flush);
    }

    pub(crate) fn listen(&self) -> broadcast::Receiver<Change> {
        self.inner.changes.subscribe()
    }
}

/// What a connection's sync loop acts on.
enum Event {
    /// The document after a change.
    Value(Arc<Value>),
    /// Send what is pending now; answer `Some` once it is queued (a [`crate::Connection`]
    /// flush; `None` is [`State::flush`], for every connection).
    Flush(Option<oneshot::Sender<()>>),
}

/// Keeps one client's copy of `state` in step, on `mode`'s schedule, until the connection
/// ends. The client starts at `null`, so a non-null document goes out whole first.
/// `flushes` are this connection's own flush requests.
pub(crate) async fn sync(
    state: State,
    mode: Autoflush,
    out: crate::connection::Outgoing,
    mut flushes: mpsc::Receiver<oneshot::Sender<()>>,
) {
    use broadcast::error::RecvError;
    use tether_wire::juggler::{diff, Message};

    let mut changes = state.listen();
    let mut sent = Arc::new(Value::Null);
    let mut latest = state.get();
    let send = async |sent: &mut Arc<Value>, latest: &Arc<Value>| -> bool {
        let ops = diff(sent, latest);
        *sent = latest.clone();
        ops.is_empty()
            || out
                .send(&Message::State {
                    diff: Value::Array(ops),
                })
                .await
    };
    // The next event, or `None` once the connection or the state is gone.
    let next = async |changes: &mut broadcast::Receiver<Change>,
                      flushes: &mut mpsc::Receiver<oneshot::Sender<()>>|
           -> Option<Event> {
        tokio::select! {
            c = changes.recv() => match c {
                Ok(Change::Value(v)) => Some(Event::Value(v)),
                Ok(Change::Flush) => Some(Event::Flush(None)),
                // Fell behind: the newest value folds what was missed.
                Err(RecvError::Lagged(_)) => Some(Event::Value(state.get())),
                Err(RecvError::Closed) => None,
            },
            Some(ack) = flushes.recv() => Some(Event::Flush(Some(ack))),
            () = out.messages.closed() => None,
        }
    };
    // A flush sends the document as it is now, even if its change is still in the channel
    // (the two channels race: the flush may be read first).
    // Flushes waiting for the pending diff to be queued.
    let mut acks = Vec::new();
    // A flush asked for while nothing was pending found a change: send it at once.
    let mut flush_now = false;
    loop {
        if latest != sent {
            match mode {
                _ if flush_now => flush_now = false,
                Autoflush::Each => {}
                Autoflush::Within(window) => {
                    let deadline = tokio::time::Instant::now() + window;
                    loop {
                        tokio::select! {
                            () = tokio::time::sleep_until(deadline) => break,
                            e = next(&mut changes, &mut flushes) => match e {
                                Some(Event::Value(v)) => latest = v,
                                Some(Event::Flush(ack)) => {
                                    latest = state.get();
                                    acks.extend(ack);
                                    break;
                                }
                                None => return,
                            },
                        }
                    }
                }
                Autoflush::Manual => loop {
                    match next(&mut changes, &mut flushes).await {
                        // The flush reads the document itself.
                        Some(Event::Value(_)) => {}
                        Some(Event::Flush(ack)) => {
                            latest = state.get();
                            acks.extend(ack);
                            break;
                        }
                        None => return,
                    }
                },
            }
            if !send(&mut sent, &latest).await {
                return;
            }
            for ack in acks.drain(..) {
                let _ = ack.send(());
            }
            continue;
        }
        match next(&mut changes, &mut flushes).await {
            Some(Event::Value(v)) => latest = v,
            Some(Event::Flush(ack)) => {
                latest = state.get();
                acks.extend(ack);
                if latest == sent {
                    for ack in acks.drain(..) {
                        let _ = ack.send(());
                    }
                } else {
                    flush_now = true;
                }
            }
            None => return,
        }
    }
}
