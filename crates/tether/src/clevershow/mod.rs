//! clever-show messaging (docs/protocols/clever-show.md): actions, requests and responses between
//! a ground server and drones, over the framing of [`tether_wire::clevershow`].
//!
//! One [`Node`] type serves both ends: [`Node::bind`] listens like the ground server,
//! [`Node::connect`] dials like a drone; either side of a link ([`Peer`]) may send actions and
//! requests. Differences from the original, which keep its wire format:
//!
//! * a request nobody handles, or whose handler fails, gets a response whose content is
//!   `{"value": null, "error": "<reason>"}` instead of no response at all, if its header says
//!   `"error-responses": true` (Tether's requests do; the requester sees [`Error::Remote`]).
//!   An original peer's request gets nothing, as from its own server: it would write the
//!   response into its file (docs/protocol-extensions.md);
//! * requests time out on the requesting side (default 10 s) instead of waiting forever;
//! * a response must match both the pending `request_id` and its `requested_value`, as in the
//!   original; anything else is logged and dropped;
//! * a peer dialed with [`Node::dial`] reconnects and re-sends what the link lost (see
//!   [`Peer`]); files move only inside a [`FileRoot`] (see [`Node::files`]); discovery
//!   announcements go only where they are told to ([`discovery`]).

mod bridge;
pub mod discovery;
pub mod drone;
mod files;
mod link;
mod peer;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::net::TcpListener;

pub use files::{FileStat, RefusedPush};
pub use peer::{ClockOffset, Peer, RequestBuilder, DEFAULT_REQUEST_TIMEOUT};
pub use tether_wire::clevershow::{Content, DEFAULT_MAX_CONTENT};

use crate::files::FileRoot;
use crate::listening::pause_after_accept_error;
use crate::server::BoxFuture;
use crate::{Backoff, BindAddr, Error, Listening};

/// clever-show errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShowError {
    /// A message that may not have reached the peer, and will not be retried.
    #[error("{what} was not delivered: {reason}")]
    NotDelivered {
        /// What was sent.
        what: String,
        /// Why it was given up.
        reason: String,
    },
    /// Discovery heard no valid announcement.
    #[error("no clever-show server announced itself on {listen} within {waited:?}")]
    NoAnnouncement {
        /// Where we listened.
        listen: SocketAddr,
        /// How long.
        waited: Duration,
    },
}

/// What a request handler answers: a JSON value, or a reason it failed.
pub type RequestResult = Result<Value, String>;

type ActionFn = dyn Fn(Peer, Vec<Value>, Map<String, Value>) -> BoxFuture<()> + Send + Sync;
type RequestFn =
    dyn Fn(Peer, Vec<Value>, Map<String, Value>) -> BoxFuture<RequestResult> + Send + Sync;

pub(crate) struct Handlers {
    pub(crate) actions: HashMap<String, Arc<ActionFn>>,
    pub(crate) requests: HashMap<String, Arc<RequestFn>>,
    pub(crate) on_peer: Option<Arc<dyn Fn(Peer) + Send + Sync>>,
    pub(crate) files: Option<FileRoot>,
    pub(crate) max_message: usize,
    pub(crate) routes: Option<crate::Server>,
    /// Server side: resume a drone that reconnects within this long (the original's
    /// per-address client).
    pub(crate) resume: Option<(Duration, Resume)>,
}

impl Default for Handlers {
    fn default() -> Self {
        Handlers {
            actions: HashMap::new(),
            requests: HashMap::new(),
            on_peer: None,
            files: None,
            max_message: DEFAULT_MAX_CONTENT,
            routes: None,
            resume: None,
        }
    }
}

/// What of a peer's traffic survives a broken link until the next one (the original's
/// `resume_queue` and `resend_requests` switches, both on by default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    /// Messages queued while no link was up (and those a broken link had not written) are
    /// sent on the next link; off: they are dropped, counted in the log.
    pub queue: bool,
    /// Requests not answered when the link broke are sent again on the next link (once);
    /// off: they fail when the link breaks.
    pub requests: bool,
}

impl Default for Resume {
    fn default() -> Self {
        Resume {
            queue: true,
            requests: true,
        }
    }
}

/// One end of clever-show messaging: its action and request handlers. Cheap to clone.
#[derive(Clone, Default)]
pub struct Node {
    pub(crate) handlers: Arc<RwLock<Handlers>>,
    /// With [`Node::resume_drones`]: the latest peer per drone address, to resume.
    pub(crate) drones: Arc<std::sync::Mutex<HashMap<std::net::IpAddr, Peer>>>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let h = self.handlers.read().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("Node")
            .field("actions", &h.actions.keys().collect::<Vec<_>>())
            .field("requests", &h.requests.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Node {
    /// A node with no handlers.
    pub fn new() -> Self {
        Self::default()
    }

    fn handlers_mut(&self) -> std::sync::RwLockWriteGuard<'_, Handlers> {
        self.handlers.write().unwrap_or_else(|e| e.into_inner())
    }

    /// Serves clever-show file transfer inside `root`: file pushes (`filetransfer` actions)
    /// are written there, `filetransfer` requests read from there, and the `filestat`
    /// request (a Tether extension) answers `{"size", "sha256"}`. Paths that are absolute,
    /// contain `..` or lead out through a symlink are refused. Without a root, pushes are
    /// refused and those requests get error responses.
    pub fn files(&self, root: FileRoot) -> &Self {
        self.handlers_mut().files = Some(root);
        self
    }

    /// Serves requests named like a URL through `server`'s route table, the same handlers
    /// VSOA clients reach: `/path` is a GET, `SET /path` a SET. The request's kwargs are the
    /// JSON param (none when empty); with args, the param is `{"args": [...], "kwargs":
    /// {...}}`. Status 0 answers the reply's JSON param as the value (null when empty); any
    /// other status, or a reply with binary data, answers an error response. Handlers
    /// registered on this node with the same name win.
    pub fn routes(&self, server: &crate::Server) -> &Self {
        self.handlers_mut().routes = Some(server.clone());
        self
    }

    /// The largest frame content accepted and sent, so also the largest file moved over
    /// clever-show (default [`DEFAULT_MAX_CONTENT`], 64 MiB; the original has no limit).
    /// Applies to links started afterwards.
    pub fn max_message(&self, bytes: usize) -> &Self {
        self.handlers_mut().max_message = bytes;
        self
    }

    pub(crate) fn message_limit(&self) -> usize {
        self.handlers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .max_message
    }

    /// Handles the action `name`: called with the sending peer, `args` and `kwargs`. Actions
    /// are never answered.
    pub fn action<F, Fut>(&self, name: &str, f: F) -> &Self
    where
        F: Fn(Peer, Vec<Value>, Map<String, Value>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let f: Arc<ActionFn> = Arc::new(move |p, a, k| Box::pin(f(p, a, k)));
        self.handlers_mut().actions.insert(name.to_string(), f);
        self
    }

    /// Handles the request `name` (its `requested_value`); what it returns is the response.
    pub fn request<F, Fut>(&self, name: &str, f: F) -> &Self
    where
        F: Fn(Peer, Vec<Value>, Map<String, Value>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = RequestResult> + Send + 'static,
    {
        let f: Arc<RequestFn> = Arc::new(move |p, a, k| Box::pin(f(p, a, k)));
        self.handlers_mut().requests.insert(name.to_string(), f);
        self
    }

    /// Server side: a drone that reconnects from the same address within `grace` resumes
    /// its peer (the original server keeps one client per address): messages queued for it
    /// while it was away and requests it had not answered go out on the new link, as
    /// `resume` says, instead of failing. After `grace` without a link the peer closes and
    /// what waits fails. Off by default (each connection is its own peer). Two drones
    /// behind one address would share a peer, as in the original.
    pub fn resume_drones(&self, grace: Duration, resume: Resume) -> &Self {
        self.handlers_mut().resume = Some((grace, resume));
        self
    }

    /// Called with every new link, e.g. to ask the drone its `id` (clients are identified by
    /// that, not by IP, so two drones behind one address do not collide).
    pub fn on_peer(&self, f: impl Fn(Peer) + Send + Sync + 'static) -> &Self {
        self.handlers_mut().on_peer = Some(Arc::new(f));
        self
    }

    /// Listens for peers on `addr` (the ground server's role). [`Listening::shutdown`]
    /// stops accepting and returns once the port is closed; peers already linked stay
    /// linked until they are closed ([`Peer::close`]). Dropping the handle leaves the
    /// listener running.
    pub async fn bind(&self, addr: impl BindAddr) -> Result<Listening, Error> {
        let shown = format!("{addr} (clever-show)");
        let bind_err = |source| Error::Bind {
            addr: shown.clone(),
            source,
        };
        let listener = TcpListener::bind(crate::listening::resolve(addr, "clever-show").await?)
            .await
            .map_err(bind_err)?;
        let local_addr = listener.local_addr().map_err(bind_err)?;
        let (listening, mut shutdown) = Listening::new(local_addr);
        let node = self.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok((socket, from)) => {
                            crate::keepalive::prepare(&socket, Some(crate::Keepalive::default()));
                            Peer::accepted(node.clone(), socket, from);
                        }
                        Err(e) => pause_after_accept_error("clever-show", &e).await,
                    },
                    _ = shutdown.requested() => break,
                }
            }
            drop(listener);
            drop(shutdown);
        });
        tracing::info!("clever-show listener on {local_addr}");
        Ok(listening)
    }

    /// Connects once to a clever-show server (the drone's role); the peer ends with the
    /// link. See [`Node::dial`] for a peer that reconnects.
    pub async fn connect(&self, addr: SocketAddr) -> Result<Peer, Error> {
        let socket = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|source| Error::Unreachable { addr, source })?;
        crate::keepalive::prepare(&socket, Some(crate::Keepalive::default()));
        Ok(Peer::single(self.clone(), socket, addr))
    }

    /// Starts a peer that dials `addr` and keeps a link up until [`Peer::close`],
    /// re-sending what a broken link lost; configure it, then [`Dial::start`].
    pub fn dial(&self, addr: SocketAddr) -> Dial {
        Dial {
            node: self.clone(),
            addr,
            backoff: Backoff::new(Duration::from_millis(100), Duration::from_secs(2)),
            connect_timeout: Duration::from_secs(2),
            hold_limit: DEFAULT_HOLD_LIMIT,
            discover: None,
            on_broadcast_bind: None,
            resume: Resume::default(),
        }
    }
}

/// Default bytes a dialing peer holds while it has no link.
pub const DEFAULT_HOLD_LIMIT: usize = 16 << 20;

/// How a dialing peer connects and reconnects (see [`Node::dial`]).
#[derive(Clone)]
pub struct Dial {
    node: Node,
    addr: SocketAddr,
    pub(crate) backoff: Backoff,
    pub(crate) connect_timeout: Duration,
    pub(crate) hold_limit: usize,
    pub(crate) discover: Option<DiscoverOn>,
    pub(crate) on_broadcast_bind: Option<Arc<BindHook>>,
    pub(crate) resume: Resume,
}

type BindHook = dyn Fn(&discovery::Announcement) + Send + Sync;

#[derive(Clone)]
pub(crate) struct DiscoverOn {
    pub(crate) listen: SocketAddr,
    pub(crate) wait: Duration,
    pub(crate) after_failures: u32,
}

impl std::fmt::Debug for Dial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dial").field("addr", &self.addr).finish()
    }
}

impl Dial {
    /// Retry delays: the n-th consecutive failure waits a random time between half and all
    /// of `initial * 2^n`, at most `max` (default 100 ms to 2 s; the original waits 2 s).
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff = Backoff::new(initial, max);
        self
    }

    /// How long one connect attempt may take (default 2 s, as the original).
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// Bytes of frames held while no link is up (default 16 MiB); a send over it fails
    /// with [`Error::NotDelivered`].
    pub fn hold_limit(mut self, bytes: usize) -> Self {
        self.hold_limit = bytes;
        self
    }

    /// After every `after_failures` failed connects, listen on `listen` for up to `wait`
    /// for a server's `server_ip` announcement and dial what it names (the original does
    /// this after 3 failures, for about 16 s, on UDP port 8181 of every interface).
    pub fn discover(mut self, listen: SocketAddr, wait: Duration, after_failures: u32) -> Self {
        self.discover = Some(DiscoverOn {
            listen,
            wait,
            after_failures,
        });
        self
    }

    /// Whether messages queued while the link is down are sent on the next one (default
    /// on; the original's `resume_queue`).
    pub fn resume_queue(mut self, yes: bool) -> Self {
        self.resume.queue = yes;
        self
    }

    /// Whether requests a broken link left unanswered are sent again on the next (default
    /// on; the original's `resend_requests`).
    pub fn resend_requests(mut self, yes: bool) -> Self {
        self.resume.requests = yes;
        self
    }

    /// Called when discovery binds the peer to a server (the original's
    /// `on_broadcast_bind`), with the announcement heard, before the peer dials it.
    pub fn on_broadcast_bind(
        mut self,
        f: impl Fn(&discovery::Announcement) + Send + Sync + 'static,
    ) -> Self {
        self.on_broadcast_bind = Some(Arc::new(f));
        self
    }

    /// Starts dialing in the background; [`Peer::wait_link`] waits for the first link.
    pub fn start(self) -> Peer {
        let node = self.node.clone();
        let addr = self.addr;
        Peer::dialing(node, addr, self)
    }
}

pub(crate) fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
