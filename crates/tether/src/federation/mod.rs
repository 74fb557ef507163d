//! Federation over NATS: several servers act as one (docs/federation.md).
//!
//! [`Federation::join`] connects a [`Server`] to a NATS cluster with one connection
//! (`no_echo`, reconnecting forever with jitter). Then:
//!
//! - **Publishes** are delivered locally first, exactly as without federation, and then
//!   queued (never awaited) for NATS, on the subject of their URL
//!   ([`tether_wire::url::subject`]). What cannot be queued or sent (no connection, the
//!   byte-bounded queue full, a URL too long for a subject) is counted, and the publish
//!   report says so. Another node subscribes to the *cover* of its clients' patterns (the
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

mod rpc;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::{HeaderMap, Message};
use bytes::Bytes;
use tether_wire::url::subject::{pattern_subject, url_subject};
use tether_wire::vsoa::{Decoder, Packet, PacketType, MAX_PACKET_LEN};
use tokio::sync::{mpsc, oneshot, Notify};

use crate::server::federate::Federate;
use crate::server::Server;
use crate::Payload;

/// Header naming the node process a message came from (random per process).
const ORIGIN: &str = "Tether-Origin";
/// Header with the origin's sequence number of a publish.
const SEQ: &str = "Tether-Seq";
/// Header marking a quick publish.
const QUICK: &str = "Tether-Quick";

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
    /// Bytes of publishes waiting for NATS before new ones are dropped and counted (8 MiB).
    pub forward_queue_bytes: usize,
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
    /// The other nodes heard from in the last [`PEER_TTL`] (they announce themselves every
    /// [`HELLO_EVERY`]), sorted.
    pub peers: Vec<String>,
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

/// One publish waiting for NATS.
struct Forward {
    subject: String,
    url: Bytes,
    payload: Payload,
    quick: bool,
    size: usize,
}

/// What the server's hooks and the tasks share.
pub(crate) struct Inner {
    node: String,
    prefix: String,
    client: async_nats::Client,
    origin: String,
    connected: Arc<AtomicBool>,
    counters: Arc<Counters>,
    forward_tx: mpsc::Sender<Forward>,
    queued: AtomicUsize,
    queue_cap: usize,
    interest: Notify,
    routes: Notify,
    /// Warned about dropping while disconnected since the last connect.
    warned: AtomicBool,
    /// Received publishes waiting for full client queues: a slow client never stalls a
    /// NATS subscription's reader.
    backlogs: crate::server::Backlogs,
    rpc: rpc::Caller,
    /// Other nodes by name, with when each was last heard from.
    peers: Mutex<HashMap<String, std::time::Instant>>,
    /// Warned that another node has our name.
    named_twice: AtomicBool,
}

impl Inner {
    fn pub_prefix(&self) -> String {
        format!("{}.pub", self.prefix)
    }

    fn drop_counted(&self, counter: &AtomicU64, why: &str) {
        bump(counter);
        if !self.warned.swap(true, Relaxed) {
            tracing::warn!(
                "federation: publishes are not reaching other nodes ({why}); counting them"
            );
        }
    }
}

impl Federate for Inner {
    fn forward(&self, url: &str, payload: &Payload, quick: bool) -> bool {
        let c = &self.counters;
        if !self.connected.load(Relaxed) {
            self.drop_counted(&c.dropped_disconnected, "no NATS connection");
            return false;
        }
        let subject = match url_subject(&self.pub_prefix(), url) {
            Ok(s) => s,
            Err(e) => {
                bump(&c.dropped_too_long);
                tracing::debug!("publish on {url:?} stays on this node: {e}");
                return false;
            }
        };
        let size = subject.len() + url.len() + payload.param.len() + payload.data.len();
        if self.queued.fetch_add(size, Relaxed) + size > self.queue_cap {
            self.queued.fetch_sub(size, Relaxed);
            self.drop_counted(&c.dropped_queue_full, "the forward queue is full");
            return false;
        }
        let fwd = Forward {
            subject,
            url: Bytes::copy_from_slice(url.as_bytes()),
            payload: payload.clone(),
            quick,
            size,
        };
        if self.forward_tx.try_send(fwd).is_err() {
            self.queued.fetch_sub(size, Relaxed);
            self.drop_counted(&c.dropped_queue_full, "the forward queue is full");
            return false;
        }
        true
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
            let (connected, counters, reconnected) =
                (connected.clone(), counters.clone(), reconnected.clone());
            opts = opts.event_callback(move |ev| {
                let (connected, counters, reconnected) =
                    (connected.clone(), counters.clone(), reconnected.clone());
                async move {
                    match ev {
                        async_nats::Event::Connected => {
                            connected.store(true, Relaxed);
                            bump(&counters.connects);
                            reconnected.notify_one();
                            tracing::info!("federation: connected to NATS");
                        }
                        async_nats::Event::Disconnected => {
                            connected.store(false, Relaxed);
                            tracing::warn!("federation: NATS connection lost; reconnecting");
                        }
                        async_nats::Event::SlowConsumer(_) => bump(&counters.slow_consumer),
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

        let (forward_tx, forward_rx) = mpsc::channel(1 << 16);
        let origin = format!("{:016x}", crate::random::u64());
        let inner = Arc::new(Inner {
            node: config.node.clone(),
            prefix: config.prefix.clone(),
            rpc: rpc::Caller::new(client.clone(), &config, connected.clone(), counters.clone()),
            client: client.clone(),
            origin,
            connected,
            counters,
            forward_tx,
            queued: AtomicUsize::new(0),
            queue_cap: config.forward_queue_bytes,
            interest: Notify::new(),
            routes: Notify::new(),
            warned: AtomicBool::new(false),
            backlogs: Default::default(),
            peers: Default::default(),
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
            tokio::spawn(presence(inner.clone())),
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
            peers: {
                let peers = self.inner.peers.lock().unwrap_or_else(|e| e.into_inner());
                let mut v: Vec<String> = peers
                    .iter()
                    .filter(|(_, at)| at.elapsed() < PEER_TTL)
                    .map(|(n, _)| n.clone())
                    .collect();
                v.sort();
                v
            },
            rpc_remote: l(&c.rpc_remote),
            rpc_served: l(&c.rpc_served),
            rpc_local_fallback: l(&c.rpc_local_fallback),
            rpc_unreachable: l(&c.rpc_unreachable),
            rpc_timeout: l(&c.rpc_timeout),
        }
    }
}

/// Sends queued publishes to NATS, in order, each with the origin and a sequence number.
/// Publishes found waiting while the connection is down are dropped and counted, never
/// sent late.
async fn forwarder(inner: Arc<Inner>, mut rx: mpsc::Receiver<Forward>) {
    let mut seq: u64 = 0;
    while let Some(f) = rx.recv().await {
        inner.queued.fetch_sub(f.size, Relaxed);
        let c = &inner.counters;
        if !inner.connected.load(Relaxed) {
            inner.drop_counted(&c.dropped_disconnected, "no NATS connection");
            continue;
        }
        inner.warned.store(false, Relaxed);
        seq += 1;
        let body = Packet::new(PacketType::Publish)
            .with_url(f.url)
            .with_param(f.payload.param)
            .with_data(f.payload.data)
            .to_bytes();
        let Ok(body) = body else {
            bump(&c.dropped_nats_error);
            continue;
        };
        let mut headers = HeaderMap::new();
        headers.insert(ORIGIN, inner.origin.as_str());
        headers.insert(SEQ, seq.to_string().as_str());
        if f.quick {
            headers.insert(QUICK, "1");
        }
        match inner
            .client
            .publish_with_headers(f.subject, headers, body)
            .await
        {
            Ok(()) => bump(&c.forwarded),
            Err(e) => {
                bump(&c.dropped_nats_error);
                tracing::debug!("federation: publish not sent: {e}");
            }
        }
    }
}

/// Announces this node every [`HELLO_EVERY`] and notes the others' announcements.
async fn presence(inner: Arc<Inner>) {
    let subject = format!("{}.ctl.node", inner.prefix);
    let mut sub = match inner.client.subscribe(subject.clone()).await {
        Ok(s) => s,
        Err(e) => return tracing::warn!("federation: node announcements: {e}"),
    };
    let mut tick = tokio::time::interval(HELLO_EVERY);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let _ = inner.client.publish(subject.clone(), Bytes::from(inner.node.clone())).await;
                let mut peers = inner.peers.lock().unwrap_or_else(|e| e.into_inner());
                peers.retain(|_, at| at.elapsed() < PEER_TTL * 10);
            }
            m = next_message(&mut sub) => {
                let Some(m) = m else { return };
                if let Ok(name) = std::str::from_utf8(&m.payload) {
                    // Our own announcements do not come back (no_echo): this is another.
                    if name == inner.node && !inner.named_twice.swap(true, Relaxed) {
                        tracing::warn!("federation: another node is also called {name:?}; give each its own --node");
                    }
                    if name != inner.node && !name.is_empty() && name.len() <= 256 {
                        inner.peers.lock().unwrap_or_else(|e| e.into_inner())
                            .insert(name.to_string(), std::time::Instant::now());
                    }
                }
            }
        }
    }
}

/// The most general patterns of `patterns`: those no other one covers. At most one of
/// them matches any URL, so NATS delivers each publish once.
pub(crate) fn cover(patterns: impl IntoIterator<Item = String>) -> HashSet<String> {
    let all: HashSet<String> = patterns.into_iter().collect();
    let stems: HashSet<&str> = all.iter().filter_map(|p| p.strip_suffix('/')).collect();
    all.iter()
        .filter(|p| {
            let (path, own) = match p.strip_suffix('/') {
                Some(stem) => (stem, true),
                None => (p.as_str(), false),
            };
            // Covered when a prefix pattern's stem is a segment-prefix of our path (for
            // a prefix pattern, other than its own stem).
            !tether_wire::url::stems(path)
                .skip(usize::from(own))
                .any(|s| stems.contains(s))
        })
        .cloned()
        .collect()
}

/// What a stopped subscription saw: its pattern and, per origin, the highest sequence
/// number. A publish on a URL that pattern covers, from that origin, with a sequence at or
/// below it was delivered by that subscription already (one NATS subscription keeps each
/// publisher's order, and it was subscribed from before its successor to after).
#[derive(Clone, Debug)]
struct Handoff {
    pattern: String,
    high: HashMap<String, u64>,
}

/// At most this many handoffs are kept by a subscription (the oldest go first); entries
/// also go as soon as their origin's sequence passed them.
const HANDOFFS: usize = 64;

/// One NATS subscription's reader state.
struct Reader {
    pattern: String,
    inherited: Vec<Handoff>,
    high: HashMap<String, u64>,
}

impl Reader {
    /// Whether a publish is new here (and records it).
    fn first(&mut self, origin: &str, seq: u64, url: &str) -> bool {
        let mut dup = false;
        self.inherited.retain_mut(|h| {
            if let Some(&top) = h.high.get(origin) {
                if seq <= top {
                    dup |= tether_wire::url::subscription_matches(&h.pattern, url);
                } else {
                    // This origin's later publishes are all above it.
                    h.high.remove(origin);
                }
            }
            !h.high.is_empty()
        });
        let top = self.high.entry(origin.to_string()).or_insert(0);
        *top = (*top).max(seq);
        !dup
    }

    /// What the next subscription for these URLs must know.
    fn handoff(self) -> Vec<Handoff> {
        let mut out = self.inherited;
        out.push(Handoff {
            pattern: self.pattern,
            high: self.high,
        });
        let excess = out.len().saturating_sub(HANDOFFS);
        out.drain(..excess);
        out
    }
}

type Stop = oneshot::Sender<oneshot::Sender<Vec<Handoff>>>;

/// Keeps the NATS subscriptions equal to the cover of the local subscribers' patterns.
async fn interest(inner: Arc<Inner>, server: Server) {
    let mut held: HashMap<String, Stop> = HashMap::new();
    let prefix = inner.pub_prefix();
    loop {
        inner.interest.notified().await;
        let wanted = cover(server.interest_patterns());
        let mut starts = Vec::new();
        for pattern in &wanted {
            if held.contains_key(pattern) {
                continue;
            }
            let subject = match pattern_subject(&prefix, pattern) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("federation: {pattern:?} is not subscribed across nodes: {e}");
                    continue;
                }
            };
            match inner.client.subscribe(subject).await {
                Ok(sub) => {
                    let (stop_tx, stop_rx) = oneshot::channel();
                    held.insert(pattern.clone(), stop_tx);
                    starts.push((pattern.clone(), sub, stop_rx));
                }
                Err(e) => tracing::warn!("federation: subscribing {pattern:?}: {e}"),
            }
        }
        // Then stop the ones no longer wanted: subscribing first, and waiting until the
        // NATS server has the new subscriptions, leaves no moment without a subscription
        // for a URL that moves. The new ones start reading once those are drained, so the
        // URL stays in order, and they learn what was delivered already.
        let gone: Vec<String> = held
            .keys()
            .filter(|p| !wanted.contains(*p))
            .cloned()
            .collect();
        if !gone.is_empty() && !starts.is_empty() {
            barrier(&inner).await;
        }
        let mut drained = Vec::new();
        for pattern in gone {
            if let Some(stop) = held.remove(&pattern) {
                let (tx, rx) = oneshot::channel();
                let _ = stop.send(tx);
                drained.push(rx);
            }
        }
        inner.counters.subscriptions.store(held.len(), Relaxed);
        // Every new subscription waits for every drained one (and inherits what they saw).
        let handoffs = SharedHandoffs::new(drained);
        for (pattern, sub, stop) in starts {
            let (inner, server, handoffs) = (inner.clone(), server.clone(), handoffs.clone());
            tokio::spawn(async move {
                let reader = Reader {
                    pattern,
                    inherited: handoffs.get().await,
                    high: HashMap::new(),
                };
                read(sub, stop, reader, &inner, &server).await;
            });
        }
    }
}

/// Returns once our NATS server has processed everything this connection sent before: it
/// answers a request nobody serves with "no responders" in order. Messages it routed to a
/// subscription before it had the new one have reached us by then, too.
async fn barrier(inner: &Inner) {
    let subject = format!("{}.ctl.barrier.{}", inner.prefix, inner.origin);
    let req = async_nats::Request::new().timeout(Some(Duration::from_secs(2)));
    match inner.client.send_request(subject, req).await {
        Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {}
        other => tracing::debug!("federation: subscription barrier: {other:?}"),
    }
}

/// The handoffs of drained subscriptions, awaited once and shared by their successors.
#[derive(Clone)]
struct SharedHandoffs(
    Arc<tokio::sync::OnceCell<Vec<Handoff>>>,
    Arc<Mutex<Vec<oneshot::Receiver<Vec<Handoff>>>>>,
);

impl SharedHandoffs {
    fn new(drained: Vec<oneshot::Receiver<Vec<Handoff>>>) -> Self {
        SharedHandoffs(Arc::default(), Arc::new(Mutex::new(drained)))
    }

    async fn get(&self) -> Vec<Handoff> {
        self.0
            .get_or_init(|| async {
                let rxs = std::mem::take(&mut *self.1.lock().unwrap_or_else(|e| e.into_inner()));
                let mut all = Vec::new();
                for rx in rxs {
                    // A reader that ended (NATS closed the subscription) hands nothing over.
                    all.extend(rx.await.unwrap_or_default());
                }
                all
            })
            .await
            .clone()
    }
}

/// The next message of a subscription (`None` once it ended).
fn next_message(
    sub: &mut async_nats::Subscriber,
) -> impl std::future::Future<Output = Option<Message>> + '_ {
    use futures_core::Stream;
    std::future::poll_fn(move |cx| std::pin::Pin::new(&mut *sub).poll_next(cx))
}

/// Delivers one subscription's messages until it is stopped; then unsubscribes, delivers
/// what was already buffered, and hands over what it saw.
async fn read(
    mut sub: async_nats::Subscriber,
    mut stop: oneshot::Receiver<oneshot::Sender<Vec<Handoff>>>,
    mut reader: Reader,
    inner: &Inner,
    server: &Server,
) {
    let done = loop {
        tokio::select! {
            msg = next_message(&mut sub) => match msg {
                Some(m) => receive(m, &mut reader, inner, server).await,
                None => return,
            },
            done = &mut stop => {
                let _ = sub.unsubscribe().await;
                break done.ok();
            }
        }
    };
    while let Some(m) = next_message(&mut sub).await {
        receive(m, &mut reader, inner, server).await;
    }
    if let Some(done) = done {
        let _ = done.send(reader.handoff());
    }
}

/// Delivers a publish from another node here, and only here.
async fn receive(m: Message, reader: &mut Reader, inner: &Inner, server: &Server) {
    let c = &inner.counters;
    let header = |name: &str| {
        m.headers
            .as_ref()
            .and_then(|h| h.get(name))
            .map(|v| v.as_str().to_string())
    };
    let (Some(origin), Some(seq)) = (header(ORIGIN), header(SEQ).and_then(|s| s.parse().ok()))
    else {
        bump(&c.malformed);
        return;
    };
    if origin == inner.origin {
        return; // our own (no_echo makes this rare)
    }
    let quick = header(QUICK).is_some();
    let packet = match Decoder::with_max_packet_len(MAX_PACKET_LEN).decode_datagram(m.payload) {
        Ok(p) if p.ptype == PacketType::Publish => p,
        _ => {
            bump(&c.malformed);
            return;
        }
    };
    let Ok(url) = tether_wire::url::check_url(&packet.url) else {
        bump(&c.malformed);
        return;
    };
    if !reader.first(&origin, seq, url) {
        bump(&c.duplicates);
        return;
    }
    let payload = Payload {
        param: packet.param.clone(),
        data: packet.data.clone(),
    };
    bump(&c.received);
    let delivered = if quick {
        server.publish_quick_here(url, &payload).map(drop)
    } else {
        server
            .publish_here_nowait(url, &payload, &inner.backlogs)
            .map(drop)
    };
    if let Err(e) = delivered {
        tracing::debug!("federation: publish on {url:?} not delivered here: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(s: HashSet<String>) -> Vec<String> {
        let mut v: Vec<_> = s.into_iter().collect();
        v.sort();
        v
    }

    #[test]
    fn the_cover_keeps_the_most_general_patterns() {
        let c = |ps: &[&str]| sorted(cover(ps.iter().map(|s| s.to_string())));
        assert_eq!(c(&["/a/", "/a/b/", "/a/b", "/a", "/ab"]), ["/a/", "/ab"]);
        assert_eq!(c(&["/", "/a/", "/x"]), ["/"]);
        assert_eq!(c(&["/a//", "/a/"]), ["/a/"]);
        assert_eq!(c(&["/a//", "/a/b"]), ["/a//", "/a/b"]);
        assert_eq!(c(&["//", "/"]), ["/"]);
        assert_eq!(c(&["/a", "/a/b"]), ["/a", "/a/b"]);
        assert_eq!(c(&[]), Vec::<String>::new());
    }

    proptest::proptest! {
        #[test]
        fn the_cover_matches_what_the_patterns_match_once(
            ps in proptest::collection::vec("(/[ab]{0,2}){1,3}/?", 0..6),
            urls in proptest::collection::vec("(/[ab]{0,2}){1,4}", 1..8),
        ) {
            let c = cover(ps.iter().cloned());
            for u in &urls {
                let any = ps.iter().any(|p| tether_wire::url::subscription_matches(p, u));
                let n = c.iter().filter(|p| tether_wire::url::subscription_matches(p, u)).count();
                proptest::prop_assert_eq!(n, usize::from(any), "{:?} {:?} {}", ps, c, u);
            }
        }
    }

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
