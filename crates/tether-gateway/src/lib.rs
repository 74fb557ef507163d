//! Tether's WebSocket gateway: browsers and hat-juggler peers use the **same** routes and
//! publishes as VSOA clients, over hat-juggler 0.7's protocol (docs/protocols/juggler.md) and
//! over 0.6's (one bare JSON message per text frame, no juggler pings: [`Wire`]).
//!
//! One port serves HTTP and the WebSocket (`/ws` for 0.7 and `/ws06` for 0.6 by default).
//! On either:
//!
//! * a juggler request whose `name` is a route URL (`/echo`, or `SET /publish` for a SET) is
//!   served by the server's route table, `data` as the JSON param; status 0 answers
//!   `success: true` with the reply's JSON param, anything else `success: false` with a
//!   readable reason (see [`tether::Server::call_json`]);
//! * the built-in requests `subscribe` and `unsubscribe` take a list of URL patterns (VSOA
//!   matching); matching publishes then arrive as `notify` messages, `name` the URL and
//!   `data` the JSON param (a connection that cannot keep up is closed, never silently
//!   skipped);
//! * a request with an empty or null name is echoed, as hat-juggler does;
//! * pings (`2`) are answered at once, whatever requests are running, and the gateway pings
//!   an idle peer itself (`ping_delay`, `ping_timeout`);
//! * state sync ([`State`], [`Autoflush`]), static files, an index redirect, Basic auth
//!   ([`Htpasswd`]), `Cache-Control: no-cache`, and `/metrics` in Prometheus' format.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let server = tether::Server::builder().build();
//! let gateway = tether_gateway::Gateway::builder(server).build();
//! let listening = gateway.bind("127.0.0.1:8080").await?;
//! println!("juggler on ws://{}/ws", listening.local_addr());
//! # Ok(()) }
//! ```

mod auth;
pub mod client;
mod connection;
mod metrics;
pub use metrics::metric;
mod remote;
mod state;

pub use auth::{apr1, Htpasswd, HtpasswdError};
pub use connection::{Connection, ConnectionClosed};
pub use state::{Autoflush, State};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::{ConnectInfo, State as AxumState};
use axum::response::IntoResponse as _;
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use std::future::IntoFuture;
use tether::listening::{pause_after_accept_error, Shutdown};
/// What [`Gateway::bind`] returns: the same handle as every Tether listener.
pub use tether::Listening;

pub use tether_wire::juggler::DEFAULT_MAX_SEGMENT;

/// Which hat-juggler wire a WebSocket speaks (docs/protocols/juggler.md §7).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Wire {
    /// hat-juggler 0.7 and later: every text frame is a header character (`0` last segment,
    /// `1` more to follow, `2` ping, `3` pong) and a payload; messages are cut into segments.
    #[default]
    V0_7,
    /// hat-juggler 0.6 (PyPI 0.6.x, `@hat-open/juggler` 0.6.x): every text frame is one
    /// whole JSON message; no segments, no juggler pings (0.6 browsers ping with an empty
    /// request, which is echoed).
    V0_6,
}

impl Wire {
    /// `"0.7"` or `"0.6"`.
    pub fn name(self) -> &'static str {
        match self {
            Wire::V0_7 => "0.7",
            Wire::V0_6 => "0.6",
        }
    }
}

/// Gateway settings; the defaults are hat-juggler's.
#[derive(Debug, Clone)]
pub struct Config {
    /// Path of the WebSocket endpoint that speaks 0.7 (default `/ws`).
    pub ws_path: String,
    /// Path of the WebSocket endpoint that speaks 0.6 (default `/ws06`); `None`: none.
    pub ws06_path: Option<String>,
    /// Largest segment we send, in characters (default 65 536).
    pub max_segment: usize,
    /// Largest message we accept, after joining its segments, and largest WebSocket
    /// frame (default 4 MiB, aiohttp's limit). Over it the connection closes with 1009.
    pub max_message: usize,
    /// Ping an idle peer after this long (default 30 s); `None`: never.
    pub ping_delay: Option<Duration>,
    /// Close the connection when a ping got no traffic back within this (default 30 s).
    pub ping_timeout: Duration,
    /// Serve a connection's requests concurrently (answers may come out of order); by
    /// default one after another, in order.
    pub parallel_requests: bool,
    /// Messages queued for one connection (default 1 024); a connection whose queue stays
    /// full is closed when publishes cannot reach it.
    pub send_queue: usize,
    /// When state changes go out (default: within 200 ms of the first change).
    pub autoflush: Autoflush,
    /// Files served under `/` (none by default); paths cannot leave the folder.
    pub static_dir: Option<std::path::PathBuf>,
    /// Where `GET /` redirects (302), default `/index.html`; `None`: no redirect.
    pub index_path: Option<String>,
    /// `Cache-Control: no-cache` on every response (default on, as hat-juggler).
    pub no_cache: bool,
    /// Take the client's address from `Forwarded`, then a single `X-Forwarded-For`
    /// (docs/protocols/juggler.md §1.8), for [`Connection::remote`]; only behind a proxy you
    /// trust (default off: the socket's address).
    pub trust_forwarded: bool,
    /// How long [`Listening::shutdown`] gives WebSocket connections to answer its close
    /// (1001) before it drops them (default 100 ms, hat-juggler's `shutdown_timeout`).
    pub shutdown_timeout: Duration,
    /// TCP keepalive on every accepted connection (default [`tether::Keepalive::default`]:
    /// a peer that vanished without a reset is noticed within 11 s, also on an idle
    /// link); `None`: off. Every connection also gets `TCP_NODELAY`.
    pub keepalive: Option<tether::Keepalive>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            ws_path: "/ws".into(),
            ws06_path: Some("/ws06".into()),
            max_segment: DEFAULT_MAX_SEGMENT,
            max_message: 4 << 20,
            ping_delay: Some(Duration::from_secs(30)),
            ping_timeout: Duration::from_secs(30),
            parallel_requests: false,
            keepalive: Some(tether::Keepalive::default()),
            shutdown_timeout: Duration::from_millis(100),
            send_queue: 1024,
            autoflush: Autoflush::Within(Duration::from_millis(200)),
            static_dir: None,
            index_path: Some("/index.html".into()),
            no_cache: true,
            trust_forwarded: false,
        }
    }
}

/// Builds a [`Gateway`].
pub struct GatewayBuilder {
    server: tether::Server,
    config: Config,
    state: Option<State>,
    on_connection: Option<ConnectionHook>,
    on_request: Option<RequestHandler>,
    htpasswd: Option<Htpasswd>,
    extra: Vec<Router>,
    tls: Option<tether::tls::ServerTls>,
    metrics: Option<MetricsHook>,
}

type ConnectionHook = Box<dyn Fn(Connection) + Send + Sync>;
type MetricsHook = Box<dyn Fn(&mut String) + Send + Sync>;

/// hat-juggler's `request_cb`: the connection, the request's name and data; the answer's
/// data, or a failure's reason.
type RequestHandler = Box<
    dyn Fn(
            Connection,
            String,
            serde_json::Value,
        ) -> futures_util::future::BoxFuture<'static, Result<serde_json::Value, String>>
        + Send
        + Sync,
>;

impl std::fmt::Debug for GatewayBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayBuilder")
            .field("config", &self.config)
            .finish()
    }
}

impl GatewayBuilder {
    /// Replaces every setting.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The WebSocket path of the 0.7 wire.
    pub fn ws_path(mut self, path: impl Into<String>) -> Self {
        self.config.ws_path = path.into();
        self
    }

    /// The WebSocket path of the 0.6 wire; `None`: no 0.6 endpoint.
    pub fn ws06_path(mut self, path: Option<&str>) -> Self {
        self.config.ws06_path = path.map(String::from);
        self
    }

    /// Keepalive: ping after `delay` without traffic (`None`: never), give up `timeout`
    /// after the ping.
    pub fn ping(mut self, delay: Option<Duration>, timeout: Duration) -> Self {
        self.config.ping_delay = delay;
        self.config.ping_timeout = timeout;
        self
    }

    /// Largest segment sent.
    pub fn max_segment(mut self, chars: usize) -> Self {
        self.config.max_segment = chars.max(1);
        self
    }

    /// Largest message accepted.
    pub fn max_message(mut self, bytes: usize) -> Self {
        self.config.max_message = bytes;
        self
    }

    /// Requests of one connection run concurrently instead of in order.
    pub fn parallel_requests(mut self, yes: bool) -> Self {
        self.config.parallel_requests = yes;
        self
    }

    /// Every connection syncs this one document (by default each gets its own, starting
    /// at `null`, reachable through [`GatewayBuilder::on_connection`]).
    pub fn shared_state(mut self, state: State) -> Self {
        self.state = Some(state);
        self
    }

    /// When state changes go out.
    pub fn autoflush(mut self, mode: Autoflush) -> Self {
        self.config.autoflush = mode;
        self
    }

    /// Serves the files of `dir` under `/`.
    pub fn static_dir(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.config.static_dir = Some(dir.into());
        self
    }

    /// Where `GET /` redirects; `None` for no redirect.
    pub fn index_path(mut self, path: Option<&str>) -> Self {
        self.config.index_path = path.map(String::from);
        self
    }

    /// Requires HTTP Basic credentials from these users on every route.
    pub fn htpasswd(mut self, users: Htpasswd) -> Self {
        self.htpasswd = Some(users);
        self
    }

    /// Trusts `Forwarded` / `X-Forwarded-For` for the client's address.
    pub fn trust_forwarded(mut self, yes: bool) -> Self {
        self.config.trust_forwarded = yes;
        self
    }

    /// TCP keepalive on accepted connections ([`Config::keepalive`]); `None`: off.
    pub fn keepalive(mut self, k: Option<tether::Keepalive>) -> Self {
        self.config.keepalive = k;
        self
    }

    /// Serves HTTPS and `wss://` with this TLS setup (the same type, and so the same
    /// certificates, as the VSOA listener's).
    pub fn tls(mut self, tls: tether::tls::ServerTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Adds routes of your own (pages, APIs), behind the same authentication and headers.
    pub fn routes(mut self, router: Router) -> Self {
        self.extra.push(router);
        self
    }

    /// Serves `body` at `path` with `content_type` (e.g. a page built into the binary).
    pub fn page(self, path: &str, content_type: &'static str, body: &'static str) -> Self {
        let route = Router::new().route(
            path,
            get(move || async move { ([(axum::http::header::CONTENT_TYPE, content_type)], body) }),
        );
        self.routes(route)
    }

    /// Appends more metrics to `/metrics` (Prometheus text, `# HELP`/`# TYPE` lines
    /// included): what the application measures beside the server and the gateway.
    pub fn metrics(mut self, f: impl Fn(&mut String) + Send + Sync + 'static) -> Self {
        self.metrics = Some(Box::new(f));
        self
    }

    /// Called with every new connection (its peer, its state, a way to notify it).
    pub fn on_connection(mut self, f: impl Fn(Connection) + Send + Sync + 'static) -> Self {
        self.on_connection = Some(Box::new(f));
        self
    }

    /// Answers the requests that name no route (hat-juggler's `request_cb`): called with
    /// the connection, the name and the data; `Ok` answers `success: true` with its value,
    /// `Err` `success: false` with the reason. Names that are routes (`/path`,
    /// `SET /path`), `subscribe`/`unsubscribe` and the empty-name echo keep their meaning.
    /// Without a handler such requests fail with a reason naming the choices.
    pub fn on_request<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(Connection, String, serde_json::Value) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = Result<serde_json::Value, String>> + Send + 'static,
    {
        self.on_request = Some(Box::new(move |c, n, d| Box::pin(f(c, n, d))));
        self
    }

    /// How long [`Listening::shutdown`] waits for WebSocket connections to close.
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.config.shutdown_timeout = timeout;
        self
    }

    /// The gateway.
    pub fn build(self) -> Gateway {
        Gateway {
            ctx: Arc::new(GatewayState {
                server: self.server,
                config: self.config,
                state: self.state,
                on_connection: self.on_connection,
                on_request: self.on_request,
                htpasswd: self.htpasswd,
                extra: self.extra,
                tls: self.tls,
                metrics: self.metrics,
                stats: Default::default(),
            }),
        }
    }
}

/// What every route and WebSocket connection of one gateway shares.
struct GatewayState {
    server: tether::Server,
    config: Config,
    state: Option<State>,
    on_connection: Option<ConnectionHook>,
    on_request: Option<RequestHandler>,
    htpasswd: Option<Htpasswd>,
    extra: Vec<Router>,
    tls: Option<tether::tls::ServerTls>,
    metrics: Option<MetricsHook>,
    stats: metrics::Stats,
}

/// The listener a request came in on, for WebSocket connections to hold (so that
/// [`Listening::shutdown`] closes them); empty once its shutdown began.
#[derive(Clone)]
struct OnListener(Arc<std::sync::Mutex<Option<Shutdown>>>);

impl OnListener {
    fn new(shutdown: &Shutdown) -> Self {
        OnListener(Arc::new(std::sync::Mutex::new(Some(shutdown.clone()))))
    }

    /// Lets go of the listener: new upgrades are refused, open connections close.
    fn release(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    fn hold(&self) -> Option<Shutdown> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// The WebSocket gateway of one [`tether::Server`]. Cheap to clone.
#[derive(Clone)]
pub struct Gateway {
    ctx: Arc<GatewayState>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("config", &self.ctx.config)
            .finish()
    }
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    addr: String,
    #[source]
    source: std::io::Error,
}

impl Gateway {
    /// Starts configuring a gateway for `server`.
    pub fn builder(server: tether::Server) -> GatewayBuilder {
        GatewayBuilder {
            server,
            config: Config::default(),
            state: None,
            on_connection: None,
            on_request: None,
            htpasswd: None,
            extra: Vec::new(),
            tls: None,
            metrics: None,
        }
    }

    /// The routes (the WebSocket endpoint), to serve or to merge into a larger router;
    /// serve it with connect info (`into_make_service_with_connect_info::<SocketAddr>`).
    pub fn router(&self) -> Router {
        let cfg = &self.ctx.config;
        let mut router = Router::new().route(&cfg.ws_path, get(upgrade::<false>));
        if let Some(path) = &cfg.ws06_path {
            router = router.route(path, get(upgrade::<true>));
        }
        let mut router = router
            .route("/metrics", get(prometheus))
            .with_state(self.ctx.clone());
        if let Some(index) = cfg.index_path.clone() {
            router = router.route(
                "/",
                get(move || async move {
                    (
                        axum::http::StatusCode::FOUND,
                        [(axum::http::header::LOCATION, index)],
                        "302: Found",
                    )
                }),
            );
        }
        for extra in &self.ctx.extra {
            router = router.merge(extra.clone());
        }
        if let Some(dir) = &cfg.static_dir {
            router = router.fallback_service(tower_http::services::ServeDir::new(dir));
        }
        if let Some(users) = self.ctx.htpasswd.clone() {
            router = router.layer(axum::middleware::from_fn(move |req, next| {
                auth::require(users.clone(), req, next)
            }));
        }
        if cfg.no_cache {
            router = router.layer(tower_http::set_header::SetResponseHeaderLayer::overriding(
                axum::http::header::CACHE_CONTROL,
                axum::http::HeaderValue::from_static("no-cache"),
            ));
        }
        router
    }

    /// Listens on `addr` (HTTP and WebSocket on one port). [`Listening::shutdown`] stops
    /// accepting, sends every WebSocket connection of this listener a close (1001), and
    /// returns once the port is closed and each of them ended (within
    /// [`Config::shutdown_timeout`]). Dropping the handle leaves the gateway running.
    pub async fn bind(&self, addr: impl tether::BindAddr) -> Result<Listening, BindError> {
        let shown = addr.to_string();
        let err = |source| BindError {
            addr: shown.clone(),
            source,
        };
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(err)?;
        let local_addr = listener.local_addr().map_err(err)?;
        let (listening, mut shutdown) = Listening::new(local_addr);
        let on = OnListener::new(&shutdown);
        let router = self.router().layer(axum::Extension(on.clone()));
        match self.ctx.tls.clone() {
            None => {
                let app = router.into_make_service_with_connect_info::<Addrs>();
                let listener = Prepared {
                    inner: listener,
                    keepalive: self.ctx.config.keepalive,
                };
                tokio::spawn(async move {
                    // Dropping the serve future closes the port (axum handles accept errors).
                    tokio::select! {
                        served = axum::serve(listener, app).into_future() => {
                            if let Err(e) = served {
                                tracing::warn!("gateway stopped: {e}");
                            }
                        }
                        _ = shutdown.requested() => {}
                    }
                    on.release();
                    drop(shutdown);
                });
            }
            Some(tls) => {
                let keepalive = self.ctx.config.keepalive;
                tokio::spawn(async move {
                    serve_tls(listener, tls, router, keepalive, shutdown).await;
                    on.release();
                });
            }
        }
        let cfg = &self.ctx.config;
        match &cfg.ws06_path {
            Some(ws06) => tracing::info!(
                "juggler gateway on ws://{local_addr}{} (0.6 on {ws06})",
                cfg.ws_path
            ),
            None => tracing::info!("juggler gateway on ws://{local_addr}{}", cfg.ws_path),
        }
        Ok(listening)
    }
}

/// The plain-HTTP listener: axum's accept loop (which rides out accept errors), with
/// [`tether::keepalive::prepare`] applied to each connection, as Tether's other listeners do.
pub(crate) struct Prepared {
    inner: tokio::net::TcpListener,
    keepalive: Option<tether::Keepalive>,
}

impl axum::serve::Listener for Prepared {
    type Io = tokio::net::TcpStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (tcp, addr) = axum::serve::Listener::accept(&mut self.inner).await;
        tether::keepalive::prepare(&tcp, self.keepalive);
        (tcp, addr)
    }

    fn local_addr(&self) -> std::io::Result<Self::Addr> {
        self.inner.local_addr()
    }
}

/// Both ends of a gateway connection: routes reached through it see the peer as the
/// caller and this side's address as the local one (a stream listens on its IP).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Addrs {
    pub(crate) remote: SocketAddr,
    pub(crate) local: SocketAddr,
}

impl axum::extract::connect_info::Connected<axum::serve::IncomingStream<'_, Prepared>> for Addrs {
    fn connect_info(s: axum::serve::IncomingStream<'_, Prepared>) -> Self {
        let remote = *s.remote_addr();
        Addrs {
            remote,
            local: s.io().local_addr().unwrap_or(remote),
        }
    }
}

/// The WebSocket endpoint of one wire (`V06`: 0.6, else 0.7).
async fn upgrade<const V06: bool>(
    ws: WebSocketUpgrade,
    addrs: Option<axum::Extension<ConnectInfo<Addrs>>>,
    peer: Option<axum::Extension<ConnectInfo<SocketAddr>>>,
    headers: axum::http::HeaderMap,
    on: Option<axum::Extension<OnListener>>,
    AxumState(ctx): AxumState<Arc<GatewayState>>,
) -> Response {
    let wire = if V06 { Wire::V0_6 } else { Wire::V0_7 };
    // Bound by `bind`: the connection holds its listener (a router served elsewhere has
    // none, and its connections end with the server that serves it).
    let closing = match on {
        Some(axum::Extension(on)) => match on.hold() {
            Some(shutdown) => Some(connection::Closing {
                shutdown,
                timeout: ctx.config.shutdown_timeout,
            }),
            None => {
                return (
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    "the gateway is shutting down",
                )
                    .into_response()
            }
        },
        None => None,
    };
    // Bound by `bind`, both ends are known; a router served elsewhere with SocketAddr
    // connect info gives the peer only, and its IP stands in for the local one.
    let addrs = match (addrs, peer) {
        (Some(axum::Extension(ConnectInfo(a))), _) => a,
        (None, Some(axum::Extension(ConnectInfo(p)))) => Addrs {
            remote: p,
            local: p,
        },
        (None, None) => {
            return (
                axum::http::StatusCode::INTERNAL_SERVER_ERROR,
                "serve the gateway's router with connect info (SocketAddr)",
            )
                .into_response()
        }
    };
    let peer = addrs.remote;
    let max = ctx.config.max_message;
    let remote = if ctx.config.trust_forwarded {
        remote::forwarded(&headers)
    } else {
        None
    }
    .unwrap_or_else(|| peer.ip().to_string());
    ws.max_message_size(max)
        .max_frame_size(max)
        .on_upgrade(move |socket| connection::serve(socket, ctx, addrs, remote, wire, closing))
}

async fn prometheus(
    AxumState(ctx): AxumState<Arc<GatewayState>>,
) -> impl axum::response::IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        {
            let mut out = metrics::render(&ctx.server, &ctx.stats);
            if let Some(more) = &ctx.metrics {
                more(&mut out);
            }
            out
        },
    )
}

/// The accept loop for HTTPS and `wss://`: a TLS handshake (10 s at most), then HTTP/1.1
/// with upgrades on the router.
async fn serve_tls(
    listener: tokio::net::TcpListener,
    tls: tether::tls::ServerTls,
    router: Router,
    keepalive: Option<tether::Keepalive>,
    mut shutdown: Shutdown,
) {
    loop {
        let (tcp, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    pause_after_accept_error("gateway", &e).await;
                    continue;
                }
            },
            () = shutdown.requested() => break,
        };
        tether::keepalive::prepare(&tcp, keepalive);
        let (tls, router) = (tls.clone(), router.clone());
        let tcp_local = tcp.local_addr().ok();
        tokio::spawn(async move {
            let stream = match tokio::time::timeout(Duration::from_secs(10), tls.accept(tcp)).await
            {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => return tracing::debug!(%peer, "TLS handshake failed: {e}"),
                Err(_) => return tracing::debug!(%peer, "no TLS handshake within 10 s"),
            };
            let local = tcp_local.unwrap_or(peer);
            let addrs = Addrs {
                remote: peer,
                local,
            };
            let app = router
                .layer(axum::Extension(ConnectInfo(peer)))
                .layer(axum::Extension(ConnectInfo(addrs)));
            let service = hyper_util::service::TowerToHyperService::new(app);
            let served = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .with_upgrades()
                .await;
            if let Err(e) = served {
                tracing::debug!(%peer, "gateway connection ended: {e}");
            }
        });
    }
    // The port closes before the signal is dropped: shutdown returns with the port free.
    drop(listener);
    drop(shutdown);
}
