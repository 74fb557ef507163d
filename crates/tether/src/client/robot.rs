//! The client robot (docs/protocols/vsoa.md §12) and the one-shot [`fetch`].
//!
//! A [`Robot`] owns a supervisor task that connects, keeps the link checked with pings,
//! and reconnects forever with jittered exponential backoff. Unlike VSOA's robots it
//! re-subscribes every [`RobotSubscription`] after each reconnect, so a subscription
//! outlives any number of connections. Calls made through the robot wait for a link (up to
//! their own timeout); calls in flight when a link drops fail at once with
//! [`Error::Closed`]. Connection changes are announced as [`RobotEvent`]s.
//!
//! Each connection gets a generation number; a subscription records the generation it is
//! subscribed on, under the registry lock, so registering a subscription while the
//! supervisor re-subscribes never subscribes it twice or not at all.

use std::future::{Future, IntoFuture};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};

use super::call::call_options;
use super::options::{connect_options, ConnectOptions};
use super::{Client, Message, Response, Subscription, DEFAULT_BUFFER, DEFAULT_CALL_TIMEOUT};
use crate::server::Method;
use crate::{Backoff, Error, Payload, VsoaUrl};

/// What happened to a robot's link.
#[derive(Debug, Clone, PartialEq)]
pub enum RobotEvent {
    /// Connected (and every subscription re-subscribed).
    Connected {
        /// The server's handshake info.
        info: serde_json::Value,
        /// The id the server gave this connection.
        id: u32,
    },
    /// The link was lost (or could not be established); the robot will retry.
    Disconnected {
        /// Why.
        reason: String,
    },
}

/// Configures a [`Robot`].
#[derive(Debug, Clone)]
pub struct RobotBuilder {
    url: String,
    options: ConnectOptions,
    ping_interval: Duration,
    ping_lost: u32,
    backoff: Backoff,
    turbo: Option<Duration>,
}

impl RobotBuilder {
    fn options_mut(&mut self) -> &mut ConnectOptions {
        &mut self.options
    }

    // Every connection option, for every (re)connect; the connect timeout bounds one attempt.
    connect_options!();

    /// A ping is sent every `interval` and must be answered within it (default 3 s, as
    /// VSOA's keepalive).
    pub fn ping_interval(mut self, interval: Duration) -> Self {
        self.ping_interval = interval.max(Duration::from_millis(10));
        self
    }

    /// The link is dropped when more than this many consecutive pings go unanswered
    /// (default 3, as VSOA).
    pub fn ping_lost(mut self, n: u32) -> Self {
        self.ping_lost = n;
        self
    }

    /// Reconnect backoff: the n-th consecutive retry waits a random time between half and
    /// all of `min(initial * 2^n, max)` (defaults 250 ms and 10 s).
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff = Backoff::new(initial, max);
        self
    }

    /// Turbo ping: while requests are pending, send a NOOP every `interval` so TCP keeps
    /// retransmitting promptly on a lossy link (VSOA's `robot_ping_turbo`, which is broken
    /// in Python 1.0.4). Off by default.
    pub fn turbo(mut self, interval: Duration) -> Self {
        self.turbo = Some(interval.max(Duration::from_millis(1)));
        self
    }

    /// Starts the robot (on the current Tokio runtime).
    pub fn start(self) -> Result<Robot, Error> {
        let _: VsoaUrl = self.url.parse()?;
        let (events, _) = broadcast::channel(64);
        let inner = Arc::new(RobotInner {
            current: watch::channel(None).0,
            subs: Mutex::new(RobotSubscriptions::default()),
            events,
        });
        let (stop, stop_rx) = watch::channel(false);
        tokio::spawn(supervise(inner.clone(), self, stop_rx));
        Ok(Robot {
            inner,
            stop: Arc::new(StopOnDrop(stop)),
        })
    }
}

struct RobotSub {
    id: u64,
    patterns: Vec<String>,
    tx: mpsc::Sender<Message>,
    /// Connection generation this subscription is subscribed on (0: none).
    generation: u64,
}

/// The subscriptions a robot makes again on every new link.
#[derive(Default)]
struct RobotSubscriptions {
    subs: Vec<RobotSub>,
    next_id: u64,
}

struct RobotInner {
    /// The live connection and its generation.
    current: watch::Sender<Option<(u64, Client)>>,
    subs: Mutex<RobotSubscriptions>,
    events: broadcast::Sender<RobotEvent>,
}

/// Stops the supervisor when the last user-facing handle is gone (the supervisor itself
/// holds `RobotInner`, so that cannot be the signal).
struct StopOnDrop(watch::Sender<bool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = self.0.send(true);
    }
}

impl RobotInner {
    fn registry(&self) -> std::sync::MutexGuard<'_, RobotSubscriptions> {
        self.subs.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A self-healing client: see the module docs. Clones share the robot; it stops when the
/// last clone is dropped or on [`Robot::close`].
#[derive(Clone)]
pub struct Robot {
    inner: Arc<RobotInner>,
    stop: Arc<StopOnDrop>,
}

impl std::fmt::Debug for Robot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Robot")
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl Robot {
    /// Configures a robot for `url` (`vsoa://HOST:PORT`).
    pub fn builder(url: &str) -> RobotBuilder {
        RobotBuilder {
            url: url.to_string(),
            options: ConnectOptions::default(),
            ping_interval: Duration::from_secs(3),
            ping_lost: 3,
            backoff: Backoff::new(Duration::from_millis(250), Duration::from_secs(10)),
            turbo: None,
        }
    }

    /// Connection events from now on.
    pub fn events(&self) -> broadcast::Receiver<RobotEvent> {
        self.inner.events.subscribe()
    }

    /// Whether a link is up right now.
    pub fn is_connected(&self) -> bool {
        self.inner.current.borrow().is_some()
    }

    /// The current connection, waiting up to `timeout` for one.
    pub async fn client(&self, timeout: Duration) -> Result<Client, Error> {
        let mut rx = self.inner.current.subscribe();
        let waited = tokio::time::timeout(timeout, rx.wait_for(Option::is_some)).await;
        match waited {
            Ok(Ok(current)) => match &*current {
                Some((_, client)) => Ok(client.clone()),
                None => Err(Error::NoLink { waited: timeout }),
            },
            Ok(Err(_)) => Err(Error::Closed {
                reason: crate::CloseReason::local("the robot was closed"),
            }),
            Err(_) => Err(Error::NoLink { waited: timeout }),
        }
    }

    /// Starts an RPC through the robot; `.await` it. It waits for a link up to its timeout.
    pub fn call(&self, url: &str) -> RobotCall {
        RobotCall {
            robot: self.clone(),
            url: url.to_string(),
            method: Method::Get,
            payload: Payload::empty(),
            timeout: DEFAULT_CALL_TIMEOUT,
        }
    }

    /// Subscribes to `patterns` for the robot's lifetime: re-subscribed after every
    /// reconnect. If a link is up, returns once the server confirmed; otherwise at once.
    pub async fn subscribe<I, S>(&self, patterns: I) -> Result<RobotSubscription, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let patterns: Vec<String> = patterns.into_iter().map(Into::into).collect();
        if patterns.is_empty() {
            return Err(Error::Url(tether_wire::url::UrlError::Empty));
        }
        for p in &patterns {
            tether_wire::url::check_url(p.as_bytes())?;
        }
        let (tx, rx) = mpsc::channel(DEFAULT_BUFFER);
        let current = self.inner.current.borrow().clone();
        let (id, now_on) = {
            let mut reg = self.inner.registry();
            reg.next_id += 1;
            let id = reg.next_id;
            let generation = current.as_ref().map_or(0, |(g, _)| *g);
            reg.subs.push(RobotSub {
                id,
                patterns: patterns.clone(),
                tx: tx.clone(),
                generation,
            });
            (id, current)
        };
        let sub = RobotSubscription {
            robot: self.clone(),
            id,
            rx,
        };
        if let Some((_, client)) = now_on {
            // Refusal by the server is the caller's error; a link lost meanwhile is not:
            // the next connection subscribes it.
            match client.subscribe(patterns).await {
                Ok(s) => {
                    tokio::spawn(forward(s, tx));
                }
                Err(e @ Error::Refused { .. }) | Err(e @ Error::Url(_)) => return Err(e),
                Err(e) => tracing::debug!("subscription deferred to the next connection: {e}"),
            }
        }
        Ok(sub)
    }

    /// Stops the robot: the link is closed and no reconnect follows.
    pub async fn close(&self) {
        let _ = self.stop.0.send(true);
        let current = self.inner.current.borrow().clone();
        if let Some((_, client)) = current {
            client.close().await;
        }
    }
}

/// Copies one connection's subscription into the robot-level stream.
async fn forward(mut sub: Subscription, tx: mpsc::Sender<Message>) {
    while let Some(m) = sub.next().await {
        if tx.send(m).await.is_err() {
            return; // the RobotSubscription was dropped; dropping `sub` unsubscribes
        }
    }
}

/// Resolves once a stop is requested (or every handle is gone).
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn supervise(inner: Arc<RobotInner>, cfg: RobotBuilder, mut stop: watch::Receiver<bool>) {
    let stop = &mut stop;
    let mut backoff = cfg.backoff;
    let mut generation = 0u64;
    loop {
        if *stop.borrow() {
            return;
        }
        let connect = Client::connect(&cfg.url).options(cfg.options.clone());
        let reason = match connect.await {
            Ok(client) => {
                generation += 1;
                backoff.reset();
                let reason = run_link(&inner, &cfg, client, generation, stop).await;
                inner.current.send_replace(None);
                reason
            }
            Err(e) => e.to_string(),
        };
        tracing::info!("robot link down: {reason}");
        let _ = inner.events.send(RobotEvent::Disconnected { reason });
        let wait = backoff.next_delay();
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = stopped(stop) => return,
        }
    }
}

/// Serves one connection until it is lost; returns why.
async fn run_link(
    inner: &RobotInner,
    cfg: &RobotBuilder,
    client: Client,
    generation: u64,
    stop: &mut watch::Receiver<bool>,
) -> String {
    inner
        .current
        .send_replace(Some((generation, client.clone())));
    // Re-subscribe everything not yet on this generation, marking under the lock.
    let todo: Vec<(Vec<String>, mpsc::Sender<Message>)> = {
        let mut reg = inner.registry();
        reg.subs.retain(|s| !s.tx.is_closed());
        reg.subs
            .iter_mut()
            .filter(|s| s.generation != generation)
            .map(|s| {
                s.generation = generation;
                (s.patterns.clone(), s.tx.clone())
            })
            .collect()
    };
    for (patterns, tx) in todo {
        match client.subscribe(patterns.clone()).await {
            Ok(s) => {
                tokio::spawn(forward(s, tx));
            }
            Err(e) => {
                client.abort("re-subscribing failed");
                return format!("re-subscribing {patterns:?} failed: {e}");
            }
        }
    }
    let _ = inner.events.send(RobotEvent::Connected {
        info: client.server_info().clone(),
        id: client.id(),
    });
    tracing::info!(id = client.id(), "robot connected");

    let mut lost = 0u32;
    let mut ping = tokio::time::interval(cfg.ping_interval);
    ping.tick().await; // the first tick is immediate
    let mut turbo = cfg.turbo.map(tokio::time::interval);
    loop {
        let turbo_tick = async {
            match &mut turbo {
                Some(t) => t.tick().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = ping.tick() => match client.ping(cfg.ping_interval).await {
                Ok(_) => lost = 0,
                Err(Error::Timeout { .. }) => {
                    lost += 1;
                    if lost > cfg.ping_lost {
                        let why = format!("{lost} consecutive pings unanswered");
                        client.abort(&why);
                        return why;
                    }
                }
                Err(e) => return e.to_string(),
            },
            _ = turbo_tick => {
                if client.pending_requests() > 0 {
                    let _ = client.noop().await;
                }
            }
            why = client.closed() => return why.to_string(),
            _ = stopped(stop) => {
                client.close().await;
                return "robot closed".into();
            }
        }
    }
}

/// An RPC through a [`Robot`]; `.await` it.
#[must_use = "a RobotCall does nothing until awaited"]
#[derive(Debug)]
pub struct RobotCall {
    robot: Robot,
    url: String,
    method: Method,
    payload: Payload,
    timeout: Duration,
}

impl RobotCall {
    call_options!("Total time for waiting for a link and for the reply (default 60 s).");

    /// Sends the call once a link is up and waits for the reply.
    pub async fn send(self) -> Result<Response, Error> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let client = self.robot.client(self.timeout).await?;
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        client
            .call(&self.url)
            .method(self.method)
            .payload(self.payload)
            .timeout(left)
            .await
    }
}

impl IntoFuture for RobotCall {
    type Output = Result<Response, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}

/// A subscription that survives reconnects. Dropping it unsubscribes.
#[derive(Debug)]
pub struct RobotSubscription {
    robot: Robot,
    id: u64,
    rx: mpsc::Receiver<Message>,
}

impl RobotSubscription {
    /// The next message; `None` once the robot is gone.
    pub async fn next(&mut self) -> Option<Message> {
        self.rx.recv().await
    }
}

impl Drop for RobotSubscription {
    fn drop(&mut self) {
        self.robot.inner.registry().subs.retain(|s| s.id != self.id);
    }
}

impl futures_core::Stream for RobotSubscription {
    type Item = Message;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.rx.poll_recv(cx)
    }
}

/// A one-shot RPC: connect, call, close. `.await` it.
///
/// ```no_run
/// # async fn f() -> Result<(), tether::Error> {
/// let reply = tether::fetch("vsoa://127.0.0.1:3005/echo").password("pw").json(&1)?.await?;
/// # Ok(()) }
/// ```
pub fn fetch(url: &str) -> Fetch {
    Fetch {
        url: url.to_string(),
        options: ConnectOptions::default().quick(false),
        method: Method::Get,
        payload: Payload::empty(),
        timeout: Duration::from_secs(10),
    }
}

/// A one-shot RPC being prepared (see [`fetch`]).
#[must_use = "a Fetch does nothing until awaited"]
#[derive(Debug)]
pub struct Fetch {
    url: String,
    options: ConnectOptions,
    method: Method,
    payload: Payload,
    timeout: Duration,
}

impl Fetch {
    fn options_mut(&mut self) -> &mut ConnectOptions {
        &mut self.options
    }

    // The connection options (the quick channel is off by default for a fetch).
    connect_options!();

    call_options!(
        "Time for connecting and for the reply, each (default 10 s); a shorter `connect_timeout` still applies."
    );

    async fn run(self) -> Result<Response, Error> {
        let url: VsoaUrl = self.url.parse()?;
        let mut options = self.options;
        options.connect_timeout = options.connect_timeout.min(self.timeout);
        let client = Client::connect(&self.url).options(options).await?;
        let reply = client
            .call(&url.path)
            .method(self.method)
            .payload(self.payload)
            .timeout(self.timeout)
            .await;
        client.close().await;
        reply
    }
}

impl IntoFuture for Fetch {
    type Output = Result<Response, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}
