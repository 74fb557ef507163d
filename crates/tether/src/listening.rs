//! One shape for every listener Tether runs: the VSOA server, clever-show, the position
//! service and the WebSocket gateway all return a [`Listening`] from their `bind`.
//!
//! * `bind(addr)` takes anything that names a socket address (`"127.0.0.1:0"`, a
//!   `SocketAddr`, a `String`), see [`BindAddr`].
//! * Dropping a `Listening` **detaches** it: the listener keeps serving for the life of the
//!   process, like a dropped tokio `JoinHandle`.
//! * [`Listening::shutdown`] is graceful: it asks every task of the listener to stop and
//!   returns once all of them have ended and the port is closed, so the address can be bound
//!   again at once. What "stop" means for a listener's connections is that listener's
//!   documented choice (the VSOA server flushes and closes them; see each `bind`).
//! * Every task of a listener holds a clone of its [`Shutdown`]; accept errors (out of file
//!   descriptors and the like) pause the accept loop briefly instead of spinning
//!   ([`pause_after_accept_error`]).

use std::fmt::Display;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::ToSocketAddrs;
use tokio::sync::{mpsc, watch};

/// An address a listener can bind: anything tokio resolves that can also be shown in an
/// error message (`&str`, `String`, `SocketAddr`).
pub trait BindAddr: ToSocketAddrs + Display + Send {}
impl<T: ToSocketAddrs + Display + Send> BindAddr for T {}

/// How long an accept loop waits after a failed `accept` before trying again.
pub const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// A running listener (see the module docs).
#[derive(Debug)]
pub struct Listening {
    local_addr: SocketAddr,
    stop: watch::Sender<bool>,
    done: mpsc::Receiver<()>,
}

/// The stop signal every task of a listener holds. [`Listening::shutdown`] returns once
/// every clone has been dropped.
#[derive(Debug, Clone)]
pub struct Shutdown {
    stop: watch::Receiver<bool>,
    _done: mpsc::Sender<()>,
}

impl Listening {
    /// A listener bound to `local_addr`, and the stop signal for its tasks.
    pub fn new(local_addr: SocketAddr) -> (Listening, Shutdown) {
        let (stop, stop_rx) = watch::channel(false);
        let (done_tx, done) = mpsc::channel(1);
        let listening = Listening {
            local_addr,
            stop,
            done,
        };
        let shutdown = Shutdown {
            stop: stop_rx,
            _done: done_tx,
        };
        (listening, shutdown)
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops the listener and waits until every one of its tasks has ended.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        // Every task holds a sender; recv returns None when all are gone.
        while self.done.recv().await.is_some() {}
    }
}

impl Shutdown {
    /// Resolves when [`Listening::shutdown`] asks to stop; never when the `Listening` was
    /// merely dropped (which detaches the listener).
    pub async fn requested(&mut self) {
        if self.stop.wait_for(|stop| *stop).await.is_err() {
            std::future::pending::<()>().await;
        }
    }

    /// Whether a stop has been asked for.
    pub fn is_requested(&self) -> bool {
        *self.stop.borrow()
    }
}

/// What an accept loop does when `accept` fails: log it and pause for
/// [`ACCEPT_ERROR_PAUSE`] instead of spinning (the usual cause, running out of file
/// descriptors, passes when connections close).
pub async fn pause_after_accept_error(what: &str, error: &std::io::Error) {
    tracing::warn!("{what}: accept failed: {error}");
    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
}

/// Resolves `addr` to the first address it names, for a listener called `what`.
pub(crate) async fn resolve(addr: impl BindAddr, what: &str) -> Result<SocketAddr, crate::Error> {
    let shown = format!("{addr} ({what})");
    let bind_err = |source| crate::Error::Bind {
        addr: shown.clone(),
        source,
    };
    tokio::net::lookup_host(addr)
        .await
        .map_err(bind_err)?
        .next()
        .ok_or_else(|| bind_err(std::io::ErrorKind::AddrNotAvailable.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_waits_for_every_task_and_a_dropped_handle_never_stops_them() {
        let (listening, shutdown) = Listening::new("127.0.0.1:1".parse().unwrap());
        let (ended_tx, mut ended) = mpsc::unbounded_channel();
        for i in 0..3 {
            let mut s = shutdown.clone();
            let ended_tx = ended_tx.clone();
            tokio::spawn(async move {
                s.requested().await;
                assert!(s.is_requested());
                tokio::time::sleep(Duration::from_millis(10 * i)).await;
                let _ = ended_tx.send(i);
            });
        }
        drop(shutdown);
        listening.shutdown().await;
        let mut got: Vec<u64> = (0..3).map(|_| ended.try_recv().unwrap()).collect();
        got.sort();
        assert_eq!(got, [0, 1, 2], "every task ended before shutdown returned");

        let (listening, mut shutdown) = Listening::new("127.0.0.1:1".parse().unwrap());
        drop(listening);
        let waited = tokio::time::timeout(Duration::from_millis(50), shutdown.requested()).await;
        assert!(waited.is_err(), "dropping the handle is not a stop");
        assert!(!shutdown.is_requested());
    }
}
