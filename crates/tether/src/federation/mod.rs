//! Federation over NATS: several servers act as one (docs/federation.md).
//!
//! [`Federation::join`] connects a [`Server`] to a NATS cluster with one connection
//! (`no_echo`, reconnecting forever with jitter). Then:
//!
//! - **Publishes** are delivered locally first, exactly as without federation; then, if
//!   another node's announced subscriptions match, queued for NATS on the subject of their
//!   URL ([`tether_wire::url::subject`]), consecutive ones on one subject in one message.
//!   A reliable publish waits a bounded time for room in the queue, a quick one does not;
//!   what cannot be sent (no connection, the queue full, a URL too long for a subject) is
//!   counted, and the publish report says so. Another node subscribes to the *cover* of its clients' patterns (the
//!   most general ones, so that at most one NATS subscription matches any URL) and
//!   delivers what arrives through its local path only: nothing is forwarded twice, so
//!   loops cannot happen. While the cover changes, both subscriptions are held for a
//!   moment; the old one is drained first and hands its highest sequence number per
//!   origin to the new one, which drops the copies it had delivered already.
//! - **RPC** follows VSOA's lookup order across nodes: a local exact route answers at
//!   once; otherwise the caller asks, from the most specific level down to its own best
//!   match, the nodes that serve that level (one NATS queue group per level). NATS answers
//!   "no responders" at once for a level nobody serves; the first answer wins, ties stay
//!   local. No answer anywhere: the local route, or status 3.
//! - **While NATS is unreachable** everything local works as before; publishes are not
//!   forwarded (counted), remote calls answer status 7 (PROXY) unless a local route can
//!   serve, and subscriptions and routes made meanwhile are sent when it comes back.

mod pubsub;
mod rpc;

use pubsub::{forwarder, interest, Forward, SUBJECT_CACHE};

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::Message;
use bytes::Bytes;
use tether_wire::url::subject::url_subject;
use tokio::sync::{mpsc, Notify};

use crate::server::federate::{Federate, Forwarded};
use crate::server::Server;
use crate::Payload;

/// How to join a federation.
#[derive(Debug, Clone)]
pub struct FederationConfig {
    /// NATS servers, tried in this order (`nats://host:port`, `tls://…`; credentials may
    /// be in the URL as `nats://user:password@host`).
    pub servers: Vec<String>,
    /// This node's name, shown in logs, statistics and `--echo-route` replies.
    pub node: String,
    /// The first token of every subject this federation uses (`tether`).
    pub prefix: String,
    /// A NATS credentials file (JWT and nkey seed).
    pub credentials: Option<PathBuf>,
    /// A PEM file with the CAs that sign the NATS servers' certificates.
    pub tls_ca: Option<PathBuf>,
    /// A client certificate and key (PEM) for NATS servers that ask for one.
    pub tls_client: Option<(PathBuf, PathBuf)>,
    /// Bytes of publishes waiting for NATS (8 MiB). When it is full, a reliable publish
    /// waits up to `forward_wait` for room, a quick one is dropped; both are counted.
    pub forward_queue_bytes: usize,
    /// How long a reliable publish waits for room in the forward queue (500 ms), as for a
    /// slow subscriber; then it is counted as not forwarded.
    pub forward_wait: Duration,
    /// How long a call waits for the node serving it (5 s); then status 4.
    pub rpc_timeout: Duration,
    /// Calls from other nodes served at once; beyond, status 6 (1 024).
    pub max_remote_calls: usize,
    /// The IP this node's streams for other nodes listen on, and that it dials theirs from
    /// (127.0.0.1). Set it to the address the other nodes reach this one at.
    pub stream_host: std::net::IpAddr,
}

impl FederationConfig {
    /// Defaults for joining through `servers` as `node`.
    pub fn new(servers: Vec<String>, node: impl Into<String>) -> Self {
        FederationConfig {
            servers,
            node: node.into(),
            prefix: "tether".into(),
            credentials: None,
            tls_ca: None,
            tls_client: None,
            forward_queue_bytes: 8 << 20,
            forward_wait: Duration::from_millis(500),
            rpc_timeout: Duration::from_secs(5),
            max_remote_calls: 1024,
            stream_host: std::net::Ipv4Addr::LOCALHOST.into(),
        }
    }
}

/// Why joining failed.
#[derive(Debug, thiserror::Error)]
pub enum FederationError {
    /// The server already joined a federation.
    #[error("this server already joined a federation")]
    AlreadyJoined,
    /// A setting is unusable.
    #[error("{0}")]
    Config(String),
    /// The NATS client refused the options.
    #[error("NATS: {0}")]
    Nats(String),
}

/// Counts of what the federation did, since it was joined.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct FederationStats {
    /// This node's name.
    pub node: String,
    /// Whether the NATS connection is up now.
    pub connected: bool,
    /// Times the connection was (re)established.
    pub connects: u64,
    /// Publishes sent to NATS.
    pub forwarded: u64,
    /// Publishes not forwarded: no NATS connection at the time.
    pub dropped_disconnected: u64,
    /// Publishes not forwarded: the forward queue was full.
    pub dropped_queue_full: u64,
    /// Publishes not forwarded: the URL is too long for a NATS subject.
    pub dropped_too_long: u64,
    /// Publishes NATS refused or lost in sending.
    pub dropped_nats_error: u64,
    /// Publishes from other nodes delivered here.
    pub received: u64,
    /// Copies of one publish that arrived twice (while the subscriptions changed), dropped.
    pub duplicates: u64,
    /// Messages the NATS client dropped because this node read too slowly (its
    /// slow-consumer events).
    pub slow_consumer: u64,
    /// Received messages that were not Tether publishes or calls, ignored.
    pub malformed: u64,
    /// NATS subscriptions held for this node's subscribers now.
    pub subscriptions: usize,
    /// Route levels served to other nodes now.
    pub routes: usize,
    /// The other nodes, sorted: those heard from in the last [`PEER_TTL`] of connected
    /// time (each announces itself and its subscriptions every [`HELLO_EVERY`], and at
    /// once when they change).
    pub peers: Vec<String>,
    /// Patterns the other nodes announced: publishes matching none are not sent to NATS.
    pub remote_patterns: usize,
    /// Calls this node sent to the node serving them, answered.
    pub rpc_remote: u64,
    /// Calls that other nodes sent here, served.
    pub rpc_served: u64,
    /// Calls served by the local prefix route because NATS was unreachable.
    pub rpc_local_fallback: u64,
    /// Calls answered status 7: NATS unreachable and no local route.
    pub rpc_unreachable: u64,
    /// Calls the serving node did not answer in time (status 4).
    pub rpc_timeout: u64,
}

#[derive(Default)]
struct Counters {
    connects: AtomicU64,
    forwarded: AtomicU64,
    dropped_disconnected: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_too_long: AtomicU64,
    dropped_nats_error: AtomicU64,
    received: AtomicU64,
    duplicates: AtomicU64,
    slow_consumer: AtomicU64,
    malformed: AtomicU64,
    subscriptions: AtomicUsize,
    routes: AtomicUsize,
    rpc_remote: AtomicU64,
    rpc_served: AtomicU64,
    rpc_local_fallback: AtomicU64,
    rpc_unreachable: AtomicU64,
    rpc_timeout: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Relaxed);
}

/// How often a node announces itself to the others.
pub const HELLO_EVERY: Duration = Duration::from_secs(2);
/// How long a node counts as present after its last announcement.
pub const PEER_TTL: Duration = Duration::from_secs(6);

/// What the server's hooks and the tasks share.
pub(crate) struct Inner {
    node: String,
    prefix: String,
    client: async_nats::Client,
    origin: u64,
    connected: Arc<AtomicBool>,
    counters: Arc<Counters>,
    forward_tx: mpsc::UnboundedSender<Forward>,
    /// The forward queue's bytes: a publish takes its share, the forwarder gives it back.
    budget: Arc<tokio::sync::Semaphore>,
    budget_max: u32,
    /// How long a reliable publish waits for room in the forward queue.
    forward_wait: Duration,
    subjects: Mutex<HashMap<Box<str>, async_nats::Subject>>,
    interest: Notify,
    routes: Notify,
    /// Logs publishes that did not cross, at most once a second.
    dropped_log: Arc<crate::server::Throttled>,
    /// Received publishes waiting for full client queues: a slow client never stalls a
    /// NATS subscription's reader.
    backlogs: crate::server::Backlogs,
    rpc: rpc::Caller,
    /// The other nodes and what they subscribed to, from their announcements: a publish
    /// no other node wants is not sent at all.
    remote: std::sync::RwLock<Remote>,
    /// This node's cover, as last subscribed in NATS (what it announces).
    cover_now: Mutex<Vec<String>>,
    /// Announce now (the cover changed, or the connection came back).
    announce: Notify,
    /// Warned that another node has our name.
    named_twice: AtomicBool,
}

/// The other nodes, by origin, and an index of their covers.
#[derive(Default)]
struct Remote {
    peers: HashMap<u64, Peer>,
    index: tether_wire::url::SubscriptionIndex<u64>,
}

struct Peer {
    name: String,
    seen: std::time::Instant,
}

/// A node's announcement on `P.ctl.node`.
#[derive(serde::Serialize, serde::Deserialize)]
struct Announcement {
    node: String,
    origin: u64,
    cover: Vec<String>,
}

fn drop_counted(log: &crate::server::Throttled, counter: &AtomicU64, why: &str) {
    bump(counter);
    log.warn(&format!(
        "federation: publishes are not reaching other nodes ({why}); counted"
    ));
}

impl Inner {
    fn pub_prefix(&self) -> String {
        format!("{}.pub", self.prefix)
    }

    /// The subject of `url`, from the cache when it is there.
    fn subject(
        &self,
        url: &str,
    ) -> Result<async_nats::Subject, tether_wire::url::subject::SubjectError> {
        let mut cache = self.subjects.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = cache.get(url) {
            return Ok(s.clone());
        }
        let s = async_nats::Subject::from(url_subject(&self.pub_prefix(), url)?);
        if cache.len() >= SUBJECT_CACHE {
            cache.clear();
        }
        cache.insert(url.into(), s.clone());
        Ok(s)
    }
}

impl Federate for Inner {
    fn forward(&self, url: &str, payload: &Payload, quick: bool) -> Forwarded {
        let c = &self.counters;
        let wanted = self
            .remote
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .index
            .is_subscribed(url);
        if !wanted {
            return Forwarded::NotWanted;
        }
        if !self.connected.load(Relaxed) {
            drop_counted(
                &self.dropped_log,
                &c.dropped_disconnected,
                "no NATS connection",
            );
            return Forwarded::Dropped;
        }
        let subject = match self.subject(url) {
            Ok(s) => s,
            Err(e) => {
                bump(&c.dropped_too_long);
                tracing::debug!("publish on {url:?} stays on this node: {e}");
                return Forwarded::Dropped;
            }
        };
        let size = url.len() + payload.param.len() + payload.data.len() + 64;
        let permits = u32::try_from(size).unwrap_or(u32::MAX).min(self.budget_max);
        let fwd = Forward {
            subject,
            url: Bytes::copy_from_slice(url.as_bytes()),
            payload: payload.clone(),
            quick,
            permits,
        };
        match self.budget.try_acquire_many(permits) {
            Ok(p) => {
                p.forget();
                if self.forward_tx.send(fwd).is_ok() {
                    return Forwarded::Queued;
                }
                drop_counted(
                    &self.dropped_log,
                    &c.dropped_nats_error,
                    "the forwarder stopped",
                );
                Forwarded::Dropped
            }
            // A quick publish may be dropped (and is counted); a reliable one waits a
            // little, as for a slow subscriber.
            Err(_) if quick => {
                drop_counted(
                    &self.dropped_log,
                    &c.dropped_queue_full,
                    "the forward queue is full",
                );
                Forwarded::Dropped
            }
            Err(_) => {
                let (budget, tx, wait) = (
                    self.budget.clone(),
                    self.forward_tx.clone(),
                    self.forward_wait,
                );
                let (counters, log) = (self.counters.clone(), self.dropped_log.clone());
                Forwarded::Wait(Box::pin(async move {
                    match tokio::time::timeout(wait, budget.acquire_many(permits)).await {
                        Ok(Ok(p)) => {
                            p.forget();
                            tx.send(fwd).is_ok()
                        }
                        _ => {
                            drop_counted(
                                &log,
                                &counters.dropped_queue_full,
                                "the forward queue stayed full",
                            );
                            false
                        }
                    }
                }))
            }
        }
    }

    fn interest_changed(&self) {
        self.interest.notify_one();
    }

    fn routes_changed(&self) {
        self.routes.notify_one();
    }

    fn resolve(
        &self,
        url: &str,
        local: Option<(&str, crate::server::handler::Route)>,
    ) -> crate::server::handler::Route {
        self.rpc.route(url, local)
    }
}

/// A server's membership in a federation. Dropping it stops the federation's tasks (the
/// server then counts every publish as not forwarded); keep it as long as the server.
pub struct Federation {
    inner: Arc<Inner>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for Federation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Federation")
            .field("node", &self.inner.node)
            .finish()
    }
}

impl Drop for Federation {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Reconnect delays: 0, then doubling from 50 ms up to 2 s, each with ±50 % jitter so
/// that nodes cut off together do not come back together.
fn reconnect_delay(attempts: usize) -> Duration {
    if attempts <= 1 {
        return Duration::ZERO;
    }
    let base = 50u64 << (attempts - 2).min(6);
    let ms = base.min(2000);
    Duration::from_millis(ms / 2 + crate::random::below(ms + 1))
}

impl Federation {
    /// Joins the federation reachable through `config.servers`. Returns at once: the
    /// connection is made (and remade) in the background, and what cannot cross nodes
    /// meanwhile is counted.
    pub async fn join(server: &Server, config: FederationConfig) -> Result<Self, FederationError> {
        if config.servers.is_empty() {
            return Err(FederationError::Config("no NATS server given".into()));
        }
        if config.prefix.is_empty() || !tether_wire::url::subject::is_valid_literal(&config.prefix)
        {
            return Err(FederationError::Config(format!(
                "subject prefix {:?} is not a valid NATS subject",
                config.prefix
            )));
        }
        let connected = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let reconnected = Arc::new(Notify::new());
        let reconnected_presence = Arc::new(Notify::new());
        let mut opts = async_nats::ConnectOptions::new()
            .no_echo()
            .name(format!("tether node {}", config.node))
            .retry_on_initial_connect()
            .max_reconnects(None)
            .retain_servers_order()
            .reconnect_delay_callback(reconnect_delay)
            .ping_interval(Duration::from_secs(10))
            .subscription_capacity(1 << 16)
            .client_capacity(1 << 13)
            .request_timeout(Some(config.rpc_timeout));
        {
            let (connected, counters, reconnected, again) = (
                connected.clone(),
                counters.clone(),
                reconnected.clone(),
                reconnected_presence.clone(),
            );
            let slow_log = Arc::new(crate::server::Throttled::default());
            opts = opts.event_callback(move |ev| {
                let (connected, counters, reconnected, again, slow_log) = (
                    connected.clone(),
                    counters.clone(),
                    reconnected.clone(),
                    again.clone(),
                    slow_log.clone(),
                );
                async move {
                    match ev {
                        async_nats::Event::Connected => {
                            connected.store(true, Relaxed);
                            bump(&counters.connects);
                            reconnected.notify_one();
                            again.notify_one();
                            tracing::info!("federation: connected to NATS");
                        }
                        async_nats::Event::Disconnected => {
                            connected.store(false, Relaxed);
                            tracing::warn!("federation: NATS connection lost; reconnecting");
                        }
                        async_nats::Event::SlowConsumer(_) => drop_counted(
                            &slow_log,
                            &counters.slow_consumer,
                            "this node read NATS too slowly and its client dropped messages",
                        ),
                        other => tracing::info!("federation: NATS {other}"),
                    }
                }
            });
        }
        if let Some(path) = &config.credentials {
            opts = opts.credentials_file(path).await.map_err(|e| {
                FederationError::Config(format!("credentials {}: {e}", path.display()))
            })?;
        }
        if let Some(ca) = &config.tls_ca {
            opts = opts.add_root_certificates(ca.clone()).require_tls(true);
        }
        if let Some((cert, key)) = &config.tls_client {
            opts = opts.add_client_certificate(cert.clone(), key.clone());
        }
        let addrs = config
            .servers
            .iter()
            .map(|s| s.parse::<async_nats::ServerAddr>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| FederationError::Config(format!("NATS server address: {e}")))?;
        let client = opts
            .connect(addrs)
            .await
            .map_err(|e| FederationError::Nats(e.to_string()))?;

        let (forward_tx, forward_rx) = mpsc::unbounded_channel();
        // Random per process: a restarted node is a new origin.
        let origin = crate::random::u64();
        let budget_max = u32::try_from(config.forward_queue_bytes.max(1))
            .unwrap_or(u32::MAX)
            .min(tokio::sync::Semaphore::MAX_PERMITS as u32);
        let inner = Arc::new(Inner {
            node: config.node.clone(),
            prefix: config.prefix.clone(),
            rpc: rpc::Caller::new(client.clone(), &config, connected.clone(), counters.clone()),
            client: client.clone(),
            origin,
            connected,
            counters,
            forward_tx,
            budget: Arc::new(tokio::sync::Semaphore::new(budget_max as usize)),
            budget_max,
            forward_wait: config.forward_wait,
            subjects: Mutex::default(),
            interest: Notify::new(),
            routes: Notify::new(),
            dropped_log: Default::default(),
            backlogs: Default::default(),
            remote: Default::default(),
            cover_now: Mutex::default(),
            announce: Notify::new(),
            named_twice: AtomicBool::new(false),
        });
        server
            .shared()
            .federation
            .set(inner.clone())
            .map_err(|_| FederationError::AlreadyJoined)?;
        let tasks = vec![
            tokio::spawn(forwarder(inner.clone(), forward_rx)),
            tokio::spawn(interest(inner.clone(), server.clone())),
            tokio::spawn(rpc::serve_routes(inner.clone(), server.clone(), config)),
            tokio::spawn(rpc::control(inner.clone(), reconnected)),
            tokio::spawn(presence(inner.clone(), reconnected_presence)),
        ];
        // What exists already.
        inner.interest.notify_one();
        inner.routes.notify_one();
        Ok(Federation { inner, tasks })
    }

    /// This node's name.
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// Whether the NATS connection is up now.
    pub fn is_connected(&self) -> bool {
        self.inner.connected.load(Relaxed)
    }

    /// The counts so far.
    pub fn stats(&self) -> FederationStats {
        let c = &self.inner.counters;
        let l = |a: &AtomicU64| a.load(Relaxed);
        let (peers, remote_patterns) = {
            let remote = self.inner.remote.read().unwrap_or_else(|e| e.into_inner());
            let mut peers: Vec<String> = remote.peers.values().map(|p| p.name.clone()).collect();
            peers.sort();
            (peers, remote.index.len())
        };
        FederationStats {
            node: self.inner.node.clone(),
            connected: self.is_connected(),
            connects: l(&c.connects),
            forwarded: l(&c.forwarded),
            dropped_disconnected: l(&c.dropped_disconnected),
            dropped_queue_full: l(&c.dropped_queue_full),
            dropped_too_long: l(&c.dropped_too_long),
            dropped_nats_error: l(&c.dropped_nats_error),
            received: l(&c.received),
            duplicates: l(&c.duplicates),
            slow_consumer: l(&c.slow_consumer),
            malformed: l(&c.malformed),
            subscriptions: c.subscriptions.load(Relaxed),
            routes: c.routes.load(Relaxed),
            peers,
            remote_patterns,
            rpc_remote: l(&c.rpc_remote),
            rpc_served: l(&c.rpc_served),
            rpc_local_fallback: l(&c.rpc_local_fallback),
            rpc_unreachable: l(&c.rpc_unreachable),
            rpc_timeout: l(&c.rpc_timeout),
        }
    }
}

/// Announces this node and its cover every [`HELLO_EVERY`] and whenever either changes
/// or the connection comes back; keeps the other nodes' announcements. A node is
/// forgotten after [`PEER_TTL`] of connected time without one (while this node has no
/// connection it hears nobody, so nobody is forgotten then: publishes they wanted are
/// counted as not forwarded).
async fn presence(inner: Arc<Inner>, reconnected: Arc<Notify>) {
    let subject = format!("{}.ctl.node", inner.prefix);
    let mut sub = match inner.client.subscribe(subject.clone()).await {
        Ok(s) => s,
        Err(e) => return tracing::warn!("federation: node announcements: {e}"),
    };
    let mut tick = tokio::time::interval(HELLO_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = inner.announce.notified() => {}
            _ = reconnected.notified() => {
                // Everyone gets a fresh TTL to announce again.
                let now = std::time::Instant::now();
                let mut remote = inner.remote.write().unwrap_or_else(|e| e.into_inner());
                remote.peers.values_mut().for_each(|p| p.seen = now);
            }
            m = next_message(&mut sub) => {
                let Some(m) = m else { return };
                heard(&inner, &m.payload);
                continue;
            }
        }
        let me = Announcement {
            node: inner.node.clone(),
            origin: inner.origin,
            cover: inner
                .cover_now
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        };
        if let Ok(body) = serde_json::to_vec(&me) {
            let _ = inner.client.publish(subject.clone(), body.into()).await;
        }
        if inner.connected.load(Relaxed) {
            let mut remote = inner.remote.write().unwrap_or_else(|e| e.into_inner());
            let gone: Vec<u64> = remote
                .peers
                .iter()
                .filter(|(_, p)| p.seen.elapsed() >= PEER_TTL)
                .map(|(o, _)| *o)
                .collect();
            for origin in gone {
                remote.peers.remove(&origin);
                remote.index.remove_client(origin);
            }
        }
    }
}

/// Takes in another node's announcement.
fn heard(inner: &Inner, body: &[u8]) {
    let Ok(a) = serde_json::from_slice::<Announcement>(body) else {
        bump(&inner.counters.malformed);
        return;
    };
    if a.origin == inner.origin {
        return;
    }
    // Our own announcements do not come back (no_echo): this is another process.
    if a.node == inner.node && !inner.named_twice.swap(true, Relaxed) {
        tracing::warn!(
            "federation: another node is also called {:?}; give each its own --node",
            a.node
        );
    }
    let mut remote = inner.remote.write().unwrap_or_else(|e| e.into_inner());
    remote.index.remove_client(a.origin);
    for p in &a.cover {
        if tether_wire::url::check_url(p.as_bytes()).is_ok() {
            remote.index.subscribe(a.origin, p);
        }
    }
    remote.peers.insert(
        a.origin,
        Peer {
            name: a.node,
            seen: std::time::Instant::now(),
        },
    );
}

/// The next message of a subscription (`None` once it ended).
fn next_message(
    sub: &mut async_nats::Subscriber,
) -> impl std::future::Future<Output = Option<Message>> + '_ {
    use futures_core::Stream;
    std::future::poll_fn(move |cx| std::pin::Pin::new(&mut *sub).poll_next(cx))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reconnect_delays_grow_and_stay_bounded() {
        assert_eq!(reconnect_delay(1), Duration::ZERO);
        for n in 2..40 {
            let d = reconnect_delay(n);
            assert!(d <= Duration::from_millis(3000), "{n}: {d:?}");
        }
        assert!(reconnect_delay(2) <= Duration::from_millis(75));
    }
}
