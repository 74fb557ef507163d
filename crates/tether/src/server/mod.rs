//! The VSOA server: configuration, route table, publishing, and the accept loop.
//!
//! A [`Server`] is a cheap handle (an `Arc`) on shared state: the routes, the registry of
//! connected clients with their subscriptions, and the hooks. Routes can be added before
//! or after [`Server::bind`]; one server can listen on several addresses. Each accepted
//! connection is served by the task in `connection.rs`.

mod admission;
mod bridge;
mod config;
mod connection;
mod handler;
mod local;
pub(crate) mod login;
mod quick;
mod registry;
pub(crate) mod traffic;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tether_wire::url::RouteTable;
use tether_wire::vsoa::{Flags, Packet, PacketType, Status, MAX_BODY_LEN, MAX_QUICK_BODY_LEN};
use tracing::Instrument;

pub use admission::AdmissionStats;
pub use config::{Config, Secret, ServerBuilder};
pub use handler::{
    BoxFuture, ClientHandle, Datagram, DatagramHandler, Handler, Method, Mode, Reply, Request,
    WorkQueue,
};
pub use local::{LocalSubscriber, Published};
pub use quick::QuickStats;
pub use registry::ClientSummary;
pub use traffic::{LatencyHistogram, LatencySnapshot, Traffic, LATENCY_BUCKETS};

use crate::listening::{pause_after_accept_error, Shutdown};
use crate::outbound::Outbound;
use crate::{BindAddr, CloseReason, Error, Listening, Payload};
use handler::Route;
use registry::Registry;

impl ServerBuilder {
    /// The server.
    pub fn build(self) -> Server {
        let info_json = serde_json::to_vec(&self.config.info).unwrap_or_else(|_| b"{}".to_vec());
        Server {
            shared: Arc::new(Shared {
                info_json: info_json.into(),
                config: self.config,
                hooks: self.hooks,
                routes: RwLock::new(RouteTable::new()),
                registry: Mutex::new(Registry::default()),
                next_id: AtomicU32::new(1),
                quick: Arc::default(),
                admission: Default::default(),
                local: Default::default(),
                has_local: Default::default(),
                traffic: Default::default(),
            }),
        }
    }
}

/// A client entering or leaving.
#[derive(Debug, Clone)]
pub enum ClientEvent {
    /// Handshake completed.
    Connected(ClientHandle),
    /// Connection ended, with the reason.
    Disconnected(ClientHandle, CloseReason),
}

type ClientHook = Box<dyn Fn(ClientEvent) + Send + Sync>;
type SubscriptionHook = Box<dyn Fn(&ClientHandle, &[String], bool) + Send + Sync>;

#[derive(Default)]
struct Hooks {
    on_client: Option<ClientHook>,
    on_subscription: Option<SubscriptionHook>,
    on_datagram: Option<Box<dyn DatagramHandler>>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("on_client", &self.on_client.is_some())
            .field("on_subscription", &self.on_subscription.is_some())
            .field("on_datagram", &self.on_datagram.is_some())
            .finish()
    }
}

pub(crate) struct Shared {
    config: Config,
    info_json: Bytes,
    hooks: Hooks,
    routes: RwLock<RouteTable<Route>>,
    registry: Mutex<Registry>,
    next_id: AtomicU32,
    quick: Arc<quick::Counters>,
    admission: admission::Admission,
    /// Subscribers on other transports, and whether there are any (checked first, so a
    /// publish costs nothing extra without them).
    local: local::LocalLock,
    has_local: std::sync::atomic::AtomicBool,
    traffic: Arc<traffic::Counters>,
}

impl Shared {
    /// The route serving `url`: exact, else the longest prefix, else `/`.
    pub(crate) fn route_for(&self, url: &str) -> Option<Route> {
        self.routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .lookup(url)
            .cloned()
    }

    /// Applies the admission rules of `admission.rs` to a new connection; registers it when
    /// it is taken.
    fn admit(&self, conn: &connection::Connection) -> bool {
        let cfg = &self.config;
        let client = conn.client();
        let ip = client.addr.ip();
        let adm = &self.admission;
        if let Some(rate) = cfg.connection_rate_per_ip {
            if !adm.rate.allow(ip, rate) {
                adm.refused_rate.fetch_add(1, Ordering::Relaxed);
                adm.log_rate.warn(&format!(
                    "connection from {ip} refused: more than {rate} new connections per second"
                ));
                return false;
            }
        }
        let admitted = self
            .registry()
            .admit(client, cfg.max_connections, cfg.max_pending_logins);
        match admitted {
            Err(()) => {
                adm.refused_full.fetch_add(1, Ordering::Relaxed);
                adm.log_full.warn(&format!(
                    "connection from {ip} refused: {} connections already (max_connections)",
                    cfg.max_connections
                ));
                false
            }
            Ok(evicted) => {
                if let Some(old) = evicted {
                    adm.evicted_pending.fetch_add(1, Ordering::Relaxed);
                    adm.log_evicted.warn(&format!(
                        "closed the connection of {} that had not logged in: more than {} waiting (max_pending_logins)",
                        old.addr, cfg.max_pending_logins
                    ));
                    old.outbound.kill(CloseReason::local(
                        "evicted: too many connections waiting to log in",
                    ));
                }
                true
            }
        }
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        // A panic while holding the lock cannot leave the registry half-updated in a way
        // that matters more than stopping the server would, so keep serving.
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A VSOA server: routes, clients, publishing. Clone it freely; clones share everything.
#[derive(Clone)]
pub struct Server {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.shared.config)
            .finish()
    }
}

/// What a publish did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishReport {
    /// Clients the message was queued for.
    pub delivered: usize,
    /// Matching clients that were cut off as slow consumers instead.
    pub cut_off: usize,
}

impl Server {
    /// Starts configuring a server.
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// Serves RPCs on `pattern` with `handler`, run [`Mode::Concurrent`]. A pattern ending
    /// in `/` also serves everything below it; `/` is the default route.
    pub fn route(&self, pattern: &str, handler: impl Handler) -> &Self {
        self.route_with(pattern, Mode::default(), handler)
    }

    /// Like [`Server::route`], with an explicit execution mode.
    pub fn route_with(&self, pattern: &str, mode: Mode, handler: impl Handler) -> &Self {
        let route = Route {
            handler: Arc::new(handler),
            mode,
        };
        self.shared
            .routes
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(pattern, route);
        self
    }

    /// Serves one RPC from a caller on another transport (clever-show, and later the
    /// WebSocket gateway) through the same route table and execution modes as VSOA
    /// clients. The handler sees a [`ClientHandle`] with id 0 and the caller's address;
    /// it has no VSOA connection, so datagrams sent to it fail with an error (never
    /// silently). Checks and statuses are the VSOA ones: a bad or too long URL gets
    /// status 2, no route status 3.
    pub async fn call_local(
        &self,
        url: &str,
        method: Method,
        payload: Payload,
        from: SocketAddr,
        local: SocketAddr,
    ) -> Reply {
        if tether_wire::url::check_url(url.as_bytes()).is_err()
            || url.len() > self.shared.config.max_url_len
        {
            return Reply::error(Status::ARGUMENTS, format!("invalid URL {url:?}"));
        }
        let Some(route) = self.shared.route_for(url) else {
            return Reply::error(Status::INVALID_URL, format!("no route for {url:?}"));
        };
        let (outbound, _writer) = Outbound::new(1, Duration::ZERO);
        outbound.kill(CloseReason::local("this caller has no VSOA connection"));
        let req = Request {
            method,
            seqno: 0,
            url: Bytes::copy_from_slice(url.as_bytes()),
            payload,
            client: ClientHandle {
                id: 0,
                addr: from,
                local,
                outbound,
                quick: Arc::default(),
                stream_tls: None,
                peer_cert: Arc::default(),
            },
        };
        match route.mode {
            Mode::Queue(q) => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                let traffic = self.shared.traffic.clone();
                q.submit(Box::pin(async move {
                    let t = std::time::Instant::now();
                    let reply = handler::call_guarded(&*route.handler, req).await;
                    traffic.rpc.observe(t.elapsed());
                    let _ = tx.send(reply);
                }))
                .await;
                rx.await.unwrap_or_else(|_| {
                    Reply::error(Status::NO_RESPONDING, "the work queue stopped")
                })
            }
            _ => {
                let t = std::time::Instant::now();
                let reply = handler::call_guarded(&*route.handler, req).await;
                self.shared.traffic.rpc.observe(t.elapsed());
                reply
            }
        }
    }

    /// Listens on `addr` (TCP, and UDP on the same port for the quick channel) and serves
    /// connections. [`Listening::shutdown`] stops accepting, closes every connection of this
    /// listener after flushing what is queued for it, and returns once all of them have
    /// ended and both ports are closed; dropping the handle leaves the server running.
    pub async fn bind(&self, addr: impl BindAddr) -> Result<Listening, Error> {
        let shown = addr.to_string();
        let requested = crate::listening::resolve(addr, "VSOA").await?;
        let quick = self.shared.config.quick && self.shared.config.tls.is_none();
        let (listener, udp) = quick::bind_pair(requested, &shown, quick).await?;
        let local_addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: shown.clone(),
            source,
        })?;
        let (listening, shutdown) = Listening::new(local_addr);
        let shared = self.shared.clone();
        let span = tracing::info_span!("vsoa-server", listen = %local_addr);
        if let Some(udp) = &udp {
            let receive = quick::receive_loop(shared.clone(), udp.clone(), shutdown.clone());
            tokio::spawn(receive.instrument(span.clone()));
        }
        tokio::spawn(accept_loop(shared, listener, udp, shutdown).instrument(span));
        tracing::info!("VSOA server listening on {local_addr}");
        Ok(listening)
    }

    /// Publishes `payload` on `url` to every logged-in, authed client subscribed to it,
    /// highest priority first. The packet is encoded once. A client whose queue stays full
    /// for the send timeout is cut off (counted in the report), never silently skipped.
    pub async fn publish(&self, url: &str, payload: Payload) -> Result<PublishReport, Error> {
        let mut report = PublishReport::default();
        self.deliver_local(url, &payload, false, &mut report);
        let packet = payload.packet(PacketType::Publish, url, MAX_BODY_LEN)?;
        let mut waiting = Vec::new();
        let offered = self.shared.registry().offer(
            url,
            || packet.to_bytes(),
            &mut report.delivered,
            &mut waiting,
        )?;
        let Some(bytes) = offered else {
            return Ok(report);
        };
        // Full queues wait together, so one slow client costs at most one send timeout.
        let sends = waiting.iter().map(|out| out.send(bytes.clone()));
        for res in join_all(sends).await {
            match res {
                Ok(()) => report.delivered += 1,
                Err(crate::outbound::SendError::CutOff(_)) => {
                    report.cut_off += 1;
                    self.shared.traffic.count_cut_off(1);
                }
                Err(crate::outbound::SendError::Closed(_)) => {}
            }
        }
        Ok(report)
    }

    /// Publishes over the quick (UDP) channel to every matching client that advertised a
    /// UDP port: one datagram each, encoded once, never waiting. What the socket cannot take
    /// now is dropped and counted (in the report and [`Server::quick_stats`]).
    pub fn publish_quick(&self, url: &str, payload: Payload) -> Result<QuickReport, Error> {
        let mut report = QuickReport::default();
        let mut local = PublishReport::default();
        self.deliver_local(url, &payload, true, &mut local);
        report.sent += local.delivered;
        report.dropped += local.cut_off;
        let packet = payload.packet(PacketType::Publish, url, MAX_QUICK_BODY_LEN)?;
        let mut targets = Vec::new();
        self.shared.registry().targets(url, &mut targets);
        let mut bytes = None;
        for client in &targets {
            if let Some(path) = quick::path_of(client) {
                let bytes = match &bytes {
                    Some(b) => b,
                    None => bytes.insert(packet.to_bytes()?),
                };
                if path.send(bytes) {
                    report.sent += 1;
                } else {
                    report.dropped += 1;
                }
            }
        }
        Ok(report)
    }

    /// A subscriber for a caller on another transport (the WebSocket gateway): publishes
    /// matching its patterns queue up for it, at most `capacity`; if it falls that far
    /// behind it is cut off (counted in [`PublishReport::cut_off`]).
    pub fn local_subscriber(&self, capacity: usize) -> LocalSubscriber {
        LocalSubscriber::new(self.shared.clone(), capacity, false)
    }

    /// A monitoring tap (a dashboard's list of recent publishes): like
    /// [`Server::local_subscriber`], but not counted in publish reports, and when it falls
    /// behind it skips publishes and counts them ([`LocalSubscriber::skipped`]) instead of
    /// being cut off.
    pub fn observer(&self, capacity: usize) -> LocalSubscriber {
        LocalSubscriber::new(self.shared.clone(), capacity, true)
    }

    fn deliver_local(&self, url: &str, payload: &Payload, quick: bool, report: &mut PublishReport) {
        if self
            .shared
            .has_local
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            self.shared
                .local
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .deliver(url, payload, quick, report);
        }
    }

    /// Packets and bytes over all TCP connections since the server was built.
    pub fn traffic(&self) -> Traffic {
        self.shared.traffic.snapshot()
    }

    /// How long RPC handlers took (VSOA clients and callers of other transports alike).
    pub fn rpc_latency(&self) -> LatencySnapshot {
        self.shared.traffic.rpc.snapshot()
    }

    /// Bytes queued for sending over all connections now.
    pub fn queued_bytes(&self) -> usize {
        self.shared
            .registry()
            .clients
            .values()
            .map(|e| e.handle.outbound.queued_bytes())
            .sum()
    }

    /// Connections held now: (all, of which not yet logged in).
    pub fn connection_count(&self) -> (usize, usize) {
        let reg = self.shared.registry();
        (reg.clients.len(), reg.pending.len())
    }

    /// Admission counters: connections refused or evicted by the limits.
    pub fn admission_stats(&self) -> AdmissionStats {
        self.shared.admission.stats()
    }

    /// Quick-channel counters.
    pub fn quick_stats(&self) -> QuickStats {
        self.shared.quick.snapshot()
    }

    /// Whether any logged-in client is subscribed to `url`.
    pub fn is_subscribed(&self, url: &str) -> bool {
        self.shared.registry().subs.is_subscribed(url)
    }

    /// The logged-in clients, by id.
    pub fn clients(&self) -> Vec<ClientSummary> {
        let reg = self.shared.registry();
        let mut list: Vec<ClientSummary> = reg
            .clients
            .values()
            .filter(|e| e.logged_in)
            .map(|e| reg.summary(e))
            .collect();
        list.sort_by_key(|c| c.id);
        list
    }

    /// A handle on client `id`, if it is connected.
    pub fn client(&self, id: u32) -> Option<ClientHandle> {
        self.shared
            .registry()
            .clients
            .get(&id)
            .map(|e| e.handle.clone())
    }

    /// Whether client `id` would receive a publish on `url`.
    pub fn client_is_subscribed(&self, id: u32, url: &str) -> bool {
        self.shared.registry().subs.client_is_subscribed(id, url)
    }

    /// Sets client `id`'s priority (publishes go to higher priorities first) and tells the
    /// client with a QOSSETUP packet. Returns false if there is no such client.
    pub async fn set_priority(&self, id: u32, priority: u8) -> bool {
        let out = {
            let mut reg = self.shared.registry();
            let Some(e) = reg.clients.get_mut(&id) else {
                return false;
            };
            e.priority = priority;
            e.handle.outbound.clone()
        };
        let mut qos = Packet::new(PacketType::QosSetup);
        qos.flags = Flags::REPLY;
        qos.status = Status(priority);
        match qos.to_bytes() {
            Ok(bytes) => out.send(bytes).await.is_ok(),
            Err(_) => false,
        }
    }

    /// Sets whether client `id` receives publishes (default true after login).
    pub fn set_authed(&self, id: u32, authed: bool) -> bool {
        match self.shared.registry().clients.get_mut(&id) {
            Some(e) => {
                e.authed = authed;
                true
            }
            None => false,
        }
    }
}

/// What a quick publish did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuickReport {
    /// Datagrams handed to the socket.
    pub sent: usize,
    /// Matching quick clients whose datagram the socket could not take now.
    pub dropped: usize,
}

/// Awaits every future, concurrently, without spawning.
async fn join_all<F: Future>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut futs: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in futs.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

async fn accept_loop(
    shared: Arc<Shared>,
    listener: tokio::net::TcpListener,
    udp: Option<Arc<tokio::net::UdpSocket>>,
    mut shutdown: Shutdown,
) {
    loop {
        tokio::select! {
            res = listener.accept() => match res {
                Ok((stream, peer)) => {
                    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
                    let Ok(local) = stream.local_addr() else { continue };
                    let conn = connection::Connection::new(
                        shared.clone(), id, peer, local, udp.clone(), shared.config.tls.clone(),
                    );
                    if !shared.admit(&conn) {
                        continue; // dropping the stream closes it
                    }
                    let span = tracing::info_span!("vsoa", client = id, peer = %peer);
                    let mut shutdown = shutdown.clone();
                    tokio::spawn(async move {
                        conn.run(stream, &mut shutdown).await;
                        // Only now, with the connection (and its handle on the quick
                        // socket) gone: the listener's shutdown returns when every copy of
                        // the signal is dropped, and the port must be free by then.
                        drop(shutdown);
                    }.instrument(span));
                }
                Err(e) => pause_after_accept_error("VSOA", &e).await,
            },
            _ = shutdown.requested() => break,
        }
    }
    // Close the port before reporting done: a restart may bind it again at once.
    drop(listener);
    drop(udp);
    tracing::info!("listener closed");
    drop(shutdown);
}

/// Encodes `packet` for a connection's queue; a reply too large for VSOA becomes a status
/// 6 reply so the caller is told instead of left waiting.
pub(crate) fn encode_reply(packet: Packet) -> Bytes {
    match packet.to_bytes() {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(
                seqno = packet.seqno,
                "reply not sent: {e}; answering status 6"
            );
            // A bare status reply is 20 bytes and always encodes.
            Packet::reply_to(&packet, Status::NO_MEMORY)
                .to_bytes()
                .unwrap_or_default()
        }
    }
}

pub(crate) fn outbound_for(config: &Config) -> (Outbound, crate::outbound::OutboundRx) {
    Outbound::new(config.outbound_queue_bytes, config.send_timeout)
}
