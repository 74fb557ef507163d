//! The VSOA server: the [`Server`] handle, its state, and its route table.
//!
//! A [`Server`] is a cheap handle (an `Arc`) on [`ServerState`]: the routes, the registry of
//! connected clients with their subscriptions, and the hooks. Routes can be added before
//! or after [`Server::bind`]; one server can listen on several addresses. The rest lives
//! beside this file, one concern each: `config.rs` (settings and the builder),
//! `listen.rs` (bind, accept), `connection.rs` (one client's session), `login.rs`,
//! `handler.rs` (what handlers see), `publish.rs`, `relay.rs`, `clients.rs` (inspecting and steering
//! connected clients), `hooks.rs`, `registry.rs`, `admission.rs`, `quick.rs`, `local.rs`,
//! `bridge.rs` and `traffic.rs`.

mod admission;
mod bridge;
mod clients;
mod config;
mod connection;
pub(crate) mod federate;
pub(crate) mod handler;
mod hooks;
mod listen;
mod local;
pub(crate) mod login;
mod publish;
mod quick;
mod registry;
mod relay;
pub(crate) mod traffic;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tether_wire::url::RouteTable;
use tether_wire::vsoa::Status;

pub use admission::AdmissionStats;
#[cfg_attr(not(feature = "nats"), allow(unused_imports))]
pub(crate) use admission::Throttled;
pub use clients::{ConnectionCount, NoSuchClient};
pub use config::{Config, Secret, ServerBuilder};
pub use handler::{
    BoxFuture, ClientHandle, Datagram, DatagramHandler, Handler, Method, Mode, Reply, Request,
    WorkQueue,
};
pub use hooks::ClientEvent;
pub use local::{LocalSubscriber, PublishLog, PublishLogEntries, Published};
#[cfg_attr(not(feature = "nats"), allow(unused_imports))]
pub(crate) use publish::Backlogs;
pub use publish::{PublishReport, QuickReport};
pub use quick::QuickStats;
pub use registry::ClientSummary;
pub use relay::{Relay, RelayStats, RelayVerdict};
pub use traffic::{LatencyHistogram, LatencySnapshot, Traffic, LATENCY_BUCKETS};

use crate::outbound::Outbound;
use crate::{CloseReason, Payload};
use handler::Route;
use hooks::Hooks;
use registry::Registry;

impl ServerBuilder {
    /// The server.
    pub fn build(self) -> Server {
        let info_json = serde_json::to_vec(&self.config.info).unwrap_or_else(|_| b"{}".to_vec());
        Server {
            shared: Arc::new(ServerState {
                info_json: info_json.into(),
                password: RwLock::new(self.config.password.clone()),
                send_timeout_ns: std::sync::atomic::AtomicU64::new(
                    self.config.send_timeout.as_nanos().min(u64::MAX as u128) as u64,
                ),
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
                federation: Default::default(),
            }),
        }
    }
}

/// Everything a server's handles, sessions and listeners share.
pub(crate) struct ServerState {
    config: Config,
    info_json: Bytes,
    /// The password logins need now ([`Server::set_password`]); starts as the config's.
    password: RwLock<Option<config::Secret>>,
    /// The send timeout new connections get ([`Server::set_send_timeout`]), in ns.
    send_timeout_ns: std::sync::atomic::AtomicU64,
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
    /// The federation this server joined, if any (`crate::federation`).
    pub(crate) federation: federate::Slot,
}

impl ServerState {
    /// The route serving `url`: exact, else the longest prefix, else `/`.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn route_for(&self, url: &str) -> Option<Route> {
        self.routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .lookup(url)
            .cloned()
    }

    /// The route to run for `url`: [`ServerState::route_for`], unless the server is
    /// federated and has no exact route for it, when the federation decides (a more
    /// specific route may live on another node).
    pub(crate) fn resolve_route(&self, url: &str) -> Option<Route> {
        let routes = self.routes.read().unwrap_or_else(|e| e.into_inner());
        let found = routes.lookup_level(url);
        let Some(fed) = self.federation.get() else {
            return found.map(|(_, r)| r.clone());
        };
        let local = match found {
            Some((tether_wire::url::RouteLevel::Exact, r)) => return Some(r.clone()),
            Some((tether_wire::url::RouteLevel::Prefix(stem), r)) => Some((stem, r.clone())),
            None => None,
        };
        drop(routes);
        Some(fed.resolve(url, local))
    }

    /// Tells the federation, if any, that the subscribed patterns may have changed.
    pub(crate) fn interest_changed(&self) {
        if let Some(fed) = self.federation.get() {
            fed.interest_changed();
        }
    }

    /// Applies the admission rules of `admission.rs` to a new connection; registers it when
    /// it is taken.
    fn admit(&self, conn: &connection::Session) -> bool {
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

    /// A datagram from a client (TCP or quick): to the relay if it covers the URL, else to
    /// the datagram handler; without one it is dropped (logged at debug).
    pub(crate) async fn datagram(self: &Arc<Self>, dgram: Datagram) {
        if let Some(relay) = self.hooks.relay.as_ref().filter(|r| r.covers(&dgram.url)) {
            let server = Server {
                shared: self.clone(),
            };
            return relay.relay(&server, dgram).await;
        }
        match &self.hooks.on_datagram {
            Some(handler) => handler.call(dgram).await,
            None => tracing::debug!(
                url = dgram.url,
                quick = dgram.quick,
                "datagram dropped: the server has no datagram handler"
            ),
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
    shared: Arc<ServerState>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("config", &self.shared.config)
            .finish()
    }
}

impl Server {
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn shared(&self) -> &Arc<ServerState> {
        &self.shared
    }

    /// Every pattern some subscriber holds that counts as interest for federation: VSOA
    /// clients' and local subscribers' (not observers' or publish logs').
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn interest_patterns(&self) -> Vec<String> {
        let mut out: Vec<String> = self.shared.registry().subs.patterns().collect();
        self.shared
            .local
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .interest(&mut out);
        out
    }

    /// Every route pattern.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn route_patterns(&self) -> Vec<String> {
        self.shared
            .routes
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .patterns()
            .collect()
    }

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
        if let Some(fed) = self.shared.federation.get() {
            fed.routes_changed();
        }
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
        let Some(route) = self.shared.resolve_route(url) else {
            return Reply::error(Status::INVALID_URL, format!("no route for {url:?}"));
        };
        self.call_route(route, url, method, payload, from, local)
            .await
    }

    /// Runs `route` for one call from a caller without a VSOA connection (see
    /// [`Server::call_local`]), in the route's mode.
    pub(crate) async fn call_route(
        &self,
        route: Route,
        url: &str,
        method: Method,
        payload: Payload,
        from: SocketAddr,
        local: SocketAddr,
    ) -> Reply {
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
                relay_bucket: Default::default(),
            },
        };
        let t = std::time::Instant::now();
        let reply = handler::run_waiting(&route, req).await;
        self.shared.traffic.rpc.observe(t.elapsed());
        reply
    }
}
