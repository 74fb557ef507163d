//! socket_protocol (docs/protocols/socket-protocol.md): point-to-point messages with a
//! status, a service id (sid) and a data id (did), services as request/response sid pairs,
//! seed/key authentication with a shared secret, channel names, and callbacks with the
//! seed's priority order, over TCP, TLS or any byte stream.
//!
//! One [`Endpoint`] holds what both ends of a link share: the options (secret, channel
//! name, `auto_auth`, timeouts) and the definitions (services, names, whitelist,
//! callbacks). It [binds](Endpoint::bind) like the seed's server, [connects](Endpoint::connect)
//! like its client (reconnecting), or runs [over](Endpoint::over) any
//! `AsyncRead + AsyncWrite`. Each connection is a [`Peer`]: both sides send, both sides
//! receive and run callbacks.
//!
//! ```no_run
//! use serde_json::json;
//! use tether::sp::{self, Endpoint};
//!
//! # async fn demo() -> Result<(), tether::Error> {
//! let server = Endpoint::new().secret("s3cret");
//! server.register_callback(sp::sid::READ_REQUEST, None, |_peer, msg: sp::Message| async move {
//!     Some((sp::status::OKAY, json!({"did": msg.data_id, "value": 21.5})))
//! });
//! let listening = server.bind("127.0.0.1:0").await?;
//!
//! let client = Endpoint::new().secret("s3cret").auto_auth(true).channel_name("ground");
//! let peer = client.connect(listening.local_addr()).await?;
//! peer.send(sp::sid::READ_REQUEST, 1, json!(null)).await?;
//! let answer = peer.receive(sp::sid::READ_RESPONSE, 1, std::time::Duration::from_secs(2)).await;
//! # Ok(()) }
//! ```

mod auth;
mod bridge;
mod definitions;
mod peer;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;

pub use bridge::tether_sid;
pub use peer::{Peer, Role, SendBuilder, Stats};
pub use tether_wire::sp::{did, sid, status, AuthState, Message, DEFAULT_MAX_BODY};

use crate::listening::pause_after_accept_error;
use crate::server::BoxFuture;
use crate::tls::{ClientTls, ServerTls};
use crate::{Backoff, BindAddr, CloseReason, Error, Listening};
use definitions::Definitions;

/// What a callback answers: `Some((status, data))` is the response of a request of a
/// registered service (sent on its response sid with the request's did); `None` sends
/// nothing (and answers a request with status 2, callback error). For messages that are
/// not requests the answer is ignored.
pub type Answer = Option<(u32, Value)>;

/// A registered callback.
pub type Callback = Arc<dyn Fn(Peer, Message) -> BoxFuture<Answer> + Send + Sync>;

/// Default time [`Peer::send`] waits for a connection (and trust) and for the bytes to be
/// written: the seed's 2 s.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(2);
/// Default time a write may stall before the connection is cut (the peer stopped reading).
pub const DEFAULT_WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time to establish a TCP (and TLS) connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Default time `auto_auth` waits for the verdict.
pub const DEFAULT_AUTH_TIMEOUT: Duration = Duration::from_secs(2);

/// socket_protocol errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpError {
    /// `add_service` with a request sid that is registered already (the seed's
    /// `RequestSidExistsError`).
    #[error("service id {0} is registered already (as a request or response sid)")]
    RequestSidExists(u32),
    /// `add_service` with a response sid that is registered already (the seed's
    /// `ResponseSidExistsError`).
    #[error("response service id {0} is registered already (as a request or response sid)")]
    ResponseSidExists(u32),
    /// The TCP connection failed.
    #[error("cannot reach the socket_protocol peer {addr}: {source}")]
    Unreachable {
        /// Peer address.
        addr: SocketAddr,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// No TCP (or TLS) connection within the connect timeout.
    #[error("no connection to the socket_protocol peer {addr} within {timeout:?}")]
    ConnectTimeout {
        /// Peer address.
        addr: SocketAddr,
        /// The timeout.
        timeout: Duration,
    },
    /// No link to the peer within the send timeout (a client reconnecting, say).
    #[error("no connection to the peer within {waited:?}")]
    NotConnected {
        /// How long it waited.
        waited: Duration,
    },
    /// The connection did not become trusted within the send timeout; only whitelisted
    /// messages go out before.
    #[error("the connection is not trusted within {waited:?}: authenticate first (or whitelist the message)")]
    NotTrusted {
        /// How long it waited.
        waited: Duration,
    },
    /// The message could not be written within the send timeout: the peer is not reading.
    #[error("{what} could not be written within {waited:?}: the peer is not reading")]
    SendTimeout {
        /// The message.
        what: String,
        /// How long it waited.
        waited: Duration,
    },
    /// The connection ended before the message was written.
    #[error("{what} was not sent: {reason}")]
    NotSent {
        /// The message.
        what: String,
        /// Why the connection ended.
        reason: CloseReason,
    },
    /// The authentication failed.
    #[error("authentication failed: {0}")]
    AuthFailed(&'static str),
    /// No verdict within the authentication timeout.
    #[error("no authentication verdict within {0:?}")]
    AuthTimeout(Duration),
    /// The peer was closed by this side.
    #[error("the peer was closed")]
    Closed,
    /// The message is too long to frame.
    #[error(transparent)]
    TooLong(#[from] tether_wire::sp::BodyTooLong),
}

/// One or several service ids (the seed's `service_id (int or list of ints)`).
pub trait Sids {
    /// The sids.
    fn sids(self) -> Vec<u32>;
}
impl Sids for u32 {
    fn sids(self) -> Vec<u32> {
        vec![self]
    }
}
impl<const N: usize> Sids for [u32; N] {
    fn sids(self) -> Vec<u32> {
        self.to_vec()
    }
}
impl Sids for &[u32] {
    fn sids(self) -> Vec<u32> {
        self.to_vec()
    }
}
impl Sids for Vec<u32> {
    fn sids(self) -> Vec<u32> {
        self
    }
}

/// The options of an endpoint (see the setters of [`Endpoint`]).
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) secret: Option<Arc<[u8]>>,
    pub(crate) auto_auth: bool,
    pub(crate) channel_name: Option<Arc<str>>,
    pub(crate) send_timeout: Duration,
    pub(crate) write_timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) auth_timeout: Duration,
    pub(crate) max_body: usize,
    pub(crate) send_queue: usize,
    pub(crate) receive_buffer: usize,
    pub(crate) callbacks_in_flight: usize,
    pub(crate) max_damaged_in_a_row: u32,
    pub(crate) max_auth_failures: u32,
    pub(crate) max_connections: usize,
    pub(crate) server_tls: Option<ServerTls>,
    pub(crate) client_tls: Option<ClientTls>,
    pub(crate) reconnect: Backoff,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            secret: None,
            auto_auth: false,
            channel_name: None,
            send_timeout: DEFAULT_SEND_TIMEOUT,
            write_timeout: DEFAULT_WRITE_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            auth_timeout: DEFAULT_AUTH_TIMEOUT,
            max_body: DEFAULT_MAX_BODY,
            send_queue: 256,
            receive_buffer: 256,
            callbacks_in_flight: 64,
            max_damaged_in_a_row: 8,
            max_auth_failures: 3,
            max_connections: 1024,
            server_tls: None,
            client_tls: None,
            reconnect: Backoff::new(Duration::from_millis(100), Duration::from_secs(5)),
        }
    }
}

type OnConnect = Arc<dyn Fn(Peer) + Send + Sync>;

/// Options and definitions shared by every connection made from it (see the module docs).
/// Cheap to clone; the definitions are shared between clones and may change at any time,
/// the options are set before binding or connecting.
#[derive(Clone, Default)]
pub struct Endpoint {
    pub(crate) config: Arc<Config>,
    pub(crate) defs: Arc<RwLock<Definitions>>,
    pub(crate) on_connect: Arc<RwLock<Option<OnConnect>>>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("secret", &self.config.secret.is_some())
            .field("auto_auth", &self.config.auto_auth)
            .field("channel_name", &self.config.channel_name)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// An endpoint with the seed's services (authentication 0/1, channel name 8/9, read
    /// 10/11, write 20/21, execute 30/31), status names 0-6, no secret and no callbacks.
    pub fn new() -> Self {
        Self::default()
    }

    fn config_mut(&mut self) -> &mut Config {
        Arc::make_mut(&mut self.config)
    }

    fn defs(&self) -> std::sync::RwLockWriteGuard<'_, Definitions> {
        self.defs.write().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn read_defs(&self) -> std::sync::RwLockReadGuard<'_, Definitions> {
        self.defs.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The shared secret (the seed's `secret`): messages that are not whitelisted reach
    /// callbacks only once the connection is trusted, and a client can authenticate.
    #[must_use]
    pub fn secret(mut self, secret: impl AsRef<[u8]>) -> Self {
        self.config_mut().secret = Some(secret.as_ref().into());
        self
    }

    /// Authenticate right after every (re)connect, as a client (the seed's `auto_auth`).
    #[must_use]
    pub fn auto_auth(mut self, on: bool) -> Self {
        self.config_mut().auto_auth = on;
        self
    }

    /// This side's channel name, used in logs and exchanged on connect (the seed's
    /// `channel_name`; when both sides set one and they differ, the client's wins).
    #[must_use]
    pub fn channel_name(mut self, name: impl Into<String>) -> Self {
        self.config_mut().channel_name = Some(name.into().into());
        self
    }

    /// How long [`Peer::send`] waits by default (the seed's `timeout` of `send`).
    #[must_use]
    pub fn send_timeout(mut self, t: Duration) -> Self {
        self.config_mut().send_timeout = t;
        self
    }

    /// How long a write may stall before the connection is cut as a peer that stopped
    /// reading (default [`DEFAULT_WRITE_TIMEOUT`]).
    #[must_use]
    pub fn write_timeout(mut self, t: Duration) -> Self {
        self.config_mut().write_timeout = t;
        self
    }

    /// How long a client waits for the TCP (and TLS) connection.
    #[must_use]
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.config_mut().connect_timeout = t;
        self
    }

    /// How long `auto_auth` waits for the verdict.
    #[must_use]
    pub fn auth_timeout(mut self, t: Duration) -> Self {
        self.config_mut().auth_timeout = t;
        self
    }

    /// The longest message body accepted (default [`DEFAULT_MAX_BODY`]); a longer one
    /// closes the connection.
    #[must_use]
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.config_mut().max_body = bytes;
        self
    }

    /// Messages without a callback kept for [`Peer::receive`] per connection (default 256);
    /// when full the oldest is dropped, logged and counted in [`Stats::dropped`].
    #[must_use]
    pub fn receive_buffer(mut self, messages: usize) -> Self {
        self.config_mut().receive_buffer = messages.max(1);
        self
    }

    /// Connections a bound endpoint holds at once (default 1024); more are closed at once.
    #[must_use]
    pub fn max_connections(mut self, n: usize) -> Self {
        self.config_mut().max_connections = n;
        self
    }

    /// Serve TLS with this setup when bound.
    #[must_use]
    pub fn tls(mut self, tls: ServerTls) -> Self {
        self.config_mut().server_tls = Some(tls);
        self
    }

    /// Connect with TLS with this setup.
    #[must_use]
    pub fn client_tls(mut self, tls: ClientTls) -> Self {
        self.config_mut().client_tls = Some(tls);
        self
    }

    /// Adds a service: requests on `req` are answered on `resp` with the same did (the
    /// seed's `add_service`). Either sid registered already is an error.
    pub fn add_service(
        &self,
        req: u32,
        resp: u32,
        req_name: Option<&str>,
        resp_name: Option<&str>,
    ) -> Result<(), SpError> {
        self.defs().add_service(req, resp, req_name, resp_name)
    }

    /// The response sid of a request sid, if a service has it.
    pub fn response_sid(&self, request_sid: u32) -> Option<u32> {
        self.read_defs().response_sid(request_sid)
    }

    /// Names a message for logs (the seed's `add_data`); a named (sid, did) without a
    /// callback is buffered for [`Peer::receive`] instead of answered status 4.
    pub fn add_data(&self, sids: impl Sids, did: u32, name: &str) {
        let mut d = self.defs();
        for s in sids.sids() {
            d.add_data(s, did, name);
        }
    }

    /// Names a status for logs (the seed's `add_status`).
    pub fn add_status(&self, status: u32, name: &str) {
        self.defs().add_status(status, name);
    }

    /// Lets a message through before the connection is trusted (the seed's
    /// `add_msg_to_auth_whitelist_`).
    pub fn add_msg_to_auth_whitelist(&self, sid: u32, did: u32) {
        self.defs().whitelist(sid, did);
    }

    /// Registers a callback for a sid and a did, `None` meaning all (the seed's
    /// `register_callback`, with its priority: sid and did, sid only, did only, neither).
    /// Replaces a callback registered for exactly the same pair. Callbacks run as tasks,
    /// at most 64 at once per connection (more wait, and the connection stops reading).
    pub fn register_callback<F, Fut>(
        &self,
        sid: impl Into<Option<u32>>,
        did: impl Into<Option<u32>>,
        f: F,
    ) where
        F: Fn(Peer, Message) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Answer> + Send + 'static,
    {
        let (sid, did) = (sid.into(), did.into());
        let f: Callback = Arc::new(move |p, m| Box::pin(f(p, m)));
        if self.defs().register(sid, did, f) {
            tracing::debug!("socket_protocol: callback for sid {sid:?}, did {did:?} replaced");
        }
    }

    /// Called with every new connection of a bound endpoint (and every peer made with
    /// [`Endpoint::over`]).
    pub fn on_connect(&self, f: impl Fn(Peer) + Send + Sync + 'static) {
        *self.on_connect.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(f));
    }

    pub(crate) fn connected(&self, peer: &Peer) {
        let hook = self
            .on_connect
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        if let Some(hook) = hook {
            hook(peer.clone());
        }
    }

    /// Runs a peer over any byte stream (an in-memory duplex, a serial port, a connection
    /// accepted elsewhere), as `role`. It does not reconnect; it ends with the stream.
    pub fn over<S>(&self, io: S, role: Role) -> Peer
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
    {
        let peer = Peer::new(self.clone(), role, None, None);
        self.connected(&peer);
        let p = peer.clone();
        tokio::spawn(async move {
            let reason = p.run_link(io).await;
            p.finish(reason);
        });
        peer
    }

    /// Connects to a server as a client, and keeps reconnecting when the link drops (with
    /// backoff, until [`Peer::close`]). The first connection must succeed.
    pub async fn connect(&self, addr: impl Into<SocketAddr>) -> Result<Peer, Error> {
        let addr = addr.into();
        let io = peer::dial(&self.config, addr).await?;
        let peer = Peer::new(self.clone(), Role::Client, Some(addr), None);
        let p = peer.clone();
        tokio::spawn(async move { p.keep_dialing(addr, io).await });
        Ok(peer)
    }

    /// Listens on `addr`; every connection is a server-side [`Peer`] (see
    /// [`Endpoint::on_connect`]). With [`Endpoint::tls`] the connections are TLS.
    /// [`Listening::shutdown`] closes every connection and waits for them.
    pub async fn bind(&self, addr: impl BindAddr) -> Result<Listening, Error> {
        let addr = crate::listening::resolve(addr, "socket_protocol").await?;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind {
                addr: format!("{addr} (socket_protocol)"),
                source,
            })?;
        let local = listener.local_addr().map_err(|source| Error::Bind {
            addr: addr.to_string(),
            source,
        })?;
        let (listening, shutdown) = Listening::new(local);
        let endpoint = self.clone();
        tokio::spawn(async move {
            let mut stop = shutdown.clone();
            let live = Arc::new(std::sync::atomic::AtomicUsize::new(0));
            loop {
                let (stream, remote) = tokio::select! {
                    () = stop.requested() => break,
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            pause_after_accept_error("socket_protocol", &e).await;
                            continue;
                        }
                    },
                };
                use std::sync::atomic::Ordering;
                if live.fetch_add(1, Ordering::AcqRel) >= endpoint.config.max_connections {
                    live.fetch_sub(1, Ordering::AcqRel);
                    tracing::warn!(
                        "socket_protocol: {remote} refused: {} connections already",
                        endpoint.config.max_connections
                    );
                    continue;
                }
                crate::keepalive::prepare(&stream, Some(crate::Keepalive::default()));
                let (endpoint, live, shutdown) = (endpoint.clone(), live.clone(), shutdown.clone());
                tokio::spawn(async move {
                    peer::serve_connection(endpoint, stream, remote, shutdown).await;
                    live.fetch_sub(1, Ordering::AcqRel);
                });
            }
        });
        Ok(listening)
    }
}
