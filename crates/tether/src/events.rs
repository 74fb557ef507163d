//! VSOA's `EventEmitter` (Node's, in Python), typed: events are keys of any hashable type,
//! every listener of an emitter takes the same argument type, and listeners are named by
//! the [`ListenerId`] that adding them returns (Rust closures have no identity to remove
//! them by).
//!
//! | VSOA | Tether |
//! |---|---|
//! | `on(event, f)`, `add_listener(event, f)` | [`EventEmitter::on`] -> [`ListenerId`] |
//! | `once(event, f)` | [`EventEmitter::once`] |
//! | `remove_listener(event, f)` | [`EventEmitter::remove_listener`]`(&event, id)` |
//! | `remove_listener(event)`, `remove_all_listeners(event)` | [`EventEmitter::remove_all_listeners`]`(Some(&event))` |
//! | `remove_all_listeners()` | [`EventEmitter::remove_all_listeners`]`(None)` |
//! | `listener_count(event)`, `listeners(event)` | [`EventEmitter::listener_count`], [`EventEmitter::listeners`] (ids, in order) |
//! | `emit(event, args)` -> bool | [`EventEmitter::emit`]`(&event, &args)` -> bool |
//! | the `new_listener` and `remove_listener` events | [`EventEmitter::on_new_listener`], [`EventEmitter::on_remove_listener`] (hooks: they cannot be emitted by hand, as VSOA requires) |
//!
//! Listeners run in the order they were added, synchronously, on the emitting thread; an
//! async listener spawns its work. A listener may add or remove listeners while it runs
//! (that emit goes on with the list it started with).
//!
//! ```
//! let e: tether::EventEmitter<&str, (i32, i32)> = tether::EventEmitter::new();
//! e.on("test", |(a, b)| println!("{a} {b}"));
//! assert!(e.emit(&"test", &(1, 2)));
//! ```

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// Names one added listener, to remove it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ListenerId(u64);

type Listener<A> = Arc<dyn Fn(&A) + Send + Sync>;
type Meta<E> = Arc<dyn Fn(&E, ListenerId) + Send + Sync>;

struct Entry<A> {
    id: ListenerId,
    once: bool,
    f: Listener<A>,
}

struct Inner<E, A> {
    listeners: HashMap<E, Vec<Entry<A>>>,
    added: Vec<Meta<E>>,
    removed: Vec<Meta<E>>,
}

/// An event emitter. Clones share their listeners.
pub struct EventEmitter<E, A> {
    inner: Arc<Mutex<Inner<E, A>>>,
    next: Arc<AtomicU64>,
}

impl<E, A> Clone for EventEmitter<E, A> {
    fn clone(&self) -> Self {
        EventEmitter {
            inner: self.inner.clone(),
            next: self.next.clone(),
        }
    }
}

impl<E, A> Default for EventEmitter<E, A> {
    fn default() -> Self {
        EventEmitter {
            inner: Arc::new(Mutex::new(Inner {
                listeners: HashMap::new(),
                added: Vec::new(),
                removed: Vec::new(),
            })),
            next: Arc::new(AtomicU64::new(1)),
        }
    }
}

impl<E, A> std::fmt::Debug for EventEmitter<E, A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventEmitter").finish_non_exhaustive()
    }
}

impl<E, A> EventEmitter<E, A>
where
    E: Eq + Hash + Clone,
{
    /// An emitter without listeners.
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner<E, A>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, event: E, once: bool, f: Listener<A>) -> ListenerId {
        let id = ListenerId(self.next.fetch_add(1, Ordering::Relaxed));
        let hooks = {
            let mut inner = self.lock();
            inner
                .listeners
                .entry(event.clone())
                .or_default()
                .push(Entry { id, once, f });
            inner.added.clone()
        };
        for h in hooks {
            h(&event, id);
        }
        id
    }

    /// Adds `listener` for `event`, after those already there.
    pub fn on(&self, event: E, listener: impl Fn(&A) + Send + Sync + 'static) -> ListenerId {
        self.add(event, false, Arc::new(listener))
    }

    /// Adds `listener` for the next `event` only.
    pub fn once(&self, event: E, listener: impl Fn(&A) + Send + Sync + 'static) -> ListenerId {
        self.add(event, true, Arc::new(listener))
    }

    /// Removes one listener; `false` if `event` has no listener `id`.
    pub fn remove_listener(&self, event: &E, id: ListenerId) -> bool {
        let hooks = {
            let mut inner = self.lock();
            let Some(list) = inner.listeners.get_mut(event) else {
                return false;
            };
            let Some(at) = list.iter().position(|e| e.id == id) else {
                return false;
            };
            list.remove(at);
            if list.is_empty() {
                inner.listeners.remove(event);
            }
            inner.removed.clone()
        };
        for h in hooks {
            h(event, id);
        }
        true
    }

    /// Removes every listener of `event`, or of every event with `None`.
    pub fn remove_all_listeners(&self, event: Option<&E>) {
        let (gone, hooks) = {
            let mut inner = self.lock();
            let gone: Vec<(E, ListenerId)> = match event {
                Some(e) => inner
                    .listeners
                    .remove(e)
                    .into_iter()
                    .flatten()
                    .map(|l| (e.clone(), l.id))
                    .collect(),
                None => inner
                    .listeners
                    .drain()
                    .flat_map(|(e, list)| list.into_iter().map(move |l| (e.clone(), l.id)))
                    .collect(),
            };
            (gone, inner.removed.clone())
        };
        for (e, id) in &gone {
            for h in &hooks {
                h(e, *id);
            }
        }
    }

    /// How many listeners `event` has.
    pub fn listener_count(&self, event: &E) -> usize {
        self.lock().listeners.get(event).map_or(0, Vec::len)
    }

    /// The listeners of `event`, in the order they run.
    pub fn listeners(&self, event: &E) -> Vec<ListenerId> {
        self.lock()
            .listeners
            .get(event)
            .map(|l| l.iter().map(|e| e.id).collect())
            .unwrap_or_default()
    }

    /// Runs the listeners of `event` with `args`, in the order they were added (one-time
    /// listeners are removed first); `true` if there were any.
    pub fn emit(&self, event: &E, args: &A) -> bool {
        let (run, once, hooks) = {
            let mut inner = self.lock();
            let Some(list) = inner.listeners.get_mut(event) else {
                return false;
            };
            let run: Vec<Listener<A>> = list.iter().map(|e| e.f.clone()).collect();
            let once: Vec<ListenerId> = list.iter().filter(|e| e.once).map(|e| e.id).collect();
            list.retain(|e| !e.once);
            if list.is_empty() {
                inner.listeners.remove(event);
            }
            (run, once, inner.removed.clone())
        };
        for id in once {
            for h in &hooks {
                h(event, id);
            }
        }
        for f in &run {
            f(args);
        }
        !run.is_empty()
    }

    /// Called with (event, id) after each listener is added (VSOA's `new_listener`).
    pub fn on_new_listener(&self, hook: impl Fn(&E, ListenerId) + Send + Sync + 'static) {
        self.lock().added.push(Arc::new(hook));
    }

    /// Called with (event, id) after each listener is removed, also a one-time listener
    /// about to run (VSOA's `remove_listener` event).
    pub fn on_remove_listener(&self, hook: impl Fn(&E, ListenerId) + Send + Sync + 'static) {
        self.lock().removed.push(Arc::new(hook));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Log = Arc<Mutex<Vec<String>>>;

    fn logger(log: &Log, name: &'static str) -> impl Fn(&i32) + Send + Sync + 'static {
        let log = log.clone();
        move |a| log.lock().unwrap().push(format!("{name}({a})"))
    }

    #[test]
    fn listeners_run_in_order_once_runs_once_and_removal_works() {
        let e: EventEmitter<&'static str, i32> = EventEmitter::new();
        let log: Log = Arc::default();
        let a = e.on("x", logger(&log, "a"));
        let b = e.once("x", logger(&log, "b"));
        let c = e.on("x", logger(&log, "c"));
        e.on("y", logger(&log, "y"));
        assert_eq!(e.listeners(&"x"), vec![a, b, c]);
        assert_eq!(e.listener_count(&"x"), 3);
        assert!(e.emit(&"x", &1));
        assert!(e.emit(&"x", &2));
        assert_eq!(
            *log.lock().unwrap(),
            ["a(1)", "b(1)", "c(1)", "a(2)", "c(2)"]
        );
        assert_eq!(e.listeners(&"x"), vec![a, c]);
        assert!(e.remove_listener(&"x", a));
        assert!(!e.remove_listener(&"x", a), "already gone");
        assert!(
            !e.remove_listener(&"x", b),
            "the one-time listener went when it ran"
        );
        assert!(!e.emit(&"nothing", &0));
        e.remove_all_listeners(Some(&"x"));
        assert_eq!(e.listener_count(&"x"), 0);
        assert_eq!(e.listener_count(&"y"), 1);
        e.remove_all_listeners(None);
        assert!(!e.emit(&"y", &3));
    }

    #[test]
    fn new_and_remove_listener_hooks_see_every_change() {
        let e: EventEmitter<u8, ()> = EventEmitter::new();
        let log: Arc<Mutex<Vec<(char, u8, ListenerId)>>> = Arc::default();
        let (l1, l2) = (log.clone(), log.clone());
        e.on_new_listener(move |ev, id| l1.lock().unwrap().push(('+', *ev, id)));
        e.on_remove_listener(move |ev, id| l2.lock().unwrap().push(('-', *ev, id)));
        let a = e.on(1, |_| {});
        let b = e.once(2, |_| {});
        e.emit(&2, &());
        let c = e.on(3, |_| {});
        e.remove_listener(&1, a);
        e.remove_all_listeners(None);
        assert_eq!(
            *log.lock().unwrap(),
            [
                ('+', 1, a),
                ('+', 2, b),
                ('-', 2, b),
                ('+', 3, c),
                ('-', 1, a),
                ('-', 3, c)
            ]
        );
    }

    #[test]
    fn a_listener_may_change_the_listeners_while_it_runs() {
        let e: EventEmitter<&'static str, i32> = EventEmitter::new();
        let log: Log = Arc::default();
        let inner = e.clone();
        let l = log.clone();
        e.on("x", move |n| {
            l.lock().unwrap().push(format!("first({n})"));
            inner.on("x", logger(&l, "added"));
        });
        e.emit(&"x", &1);
        e.emit(&"x", &2);
        assert_eq!(*log.lock().unwrap(), ["first(1)", "first(2)", "added(2)"]);
    }
}
