//! clever-show messaging (protocols/clever-show.md): actions, requests and responses between
//! a ground server and drones, over the framing of [`tether_wire::clevershow`].
//!
//! One [`Node`] type serves both ends: [`Node::bind`] listens like the ground server,
//! [`Node::connect`] dials like a drone; either side of a link ([`Peer`]) may send actions and
//! requests. Differences from the original, which keep its wire format:
//!
//! * a request nobody handles, or whose handler fails, gets a response whose content is
//!   `{"value": null, "error": "<reason>"}` (Python peers read only `value`), instead of no
//!   response at all; the requester sees [`Error::Remote`];
//! * requests time out on the requesting side (default 10 s) instead of waiting forever;
//! * a response must match both the pending `request_id` and its `requested_value`, as in the
//!   original; anything else is logged and dropped.

mod peer;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use serde_json::{Map, Value};
use tokio::net::TcpListener;

pub use peer::{Peer, RequestBuilder};

use crate::server::BoxFuture;
use crate::Error;

/// What a request handler answers: a JSON value, or a reason it failed.
pub type RequestResult = Result<Value, String>;

type ActionFn = dyn Fn(Peer, Vec<Value>, Map<String, Value>) -> BoxFuture<()> + Send + Sync;
type RequestFn =
    dyn Fn(Peer, Vec<Value>, Map<String, Value>) -> BoxFuture<RequestResult> + Send + Sync;

#[derive(Default)]
pub(crate) struct Handlers {
    pub(crate) actions: HashMap<String, Arc<ActionFn>>,
    pub(crate) requests: HashMap<String, Arc<RequestFn>>,
    pub(crate) on_peer: Option<Arc<dyn Fn(Peer) + Send + Sync>>,
}

/// One end of clever-show messaging: its action and request handlers. Cheap to clone.
#[derive(Clone, Default)]
pub struct Node {
    pub(crate) handlers: Arc<RwLock<Handlers>>,
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

    /// Handles the action `name`: called with the sending peer, `args` and `kwargs`. Actions
    /// are never answered.
    pub fn action<F, Fut>(&self, name: &str, f: F) -> &Self
    where
        F: Fn(Peer, Vec<Value>, Map<String, Value>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let f: Arc<ActionFn> = Arc::new(move |p, a, k| Box::pin(f(p, a, k)));
        self.handlers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .actions
            .insert(name.to_string(), f);
        self
    }

    /// Handles the request `name` (its `requested_value`); what it returns is the response.
    pub fn request<F, Fut>(&self, name: &str, f: F) -> &Self
    where
        F: Fn(Peer, Vec<Value>, Map<String, Value>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = RequestResult> + Send + 'static,
    {
        let f: Arc<RequestFn> = Arc::new(move |p, a, k| Box::pin(f(p, a, k)));
        self.handlers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .requests
            .insert(name.to_string(), f);
        self
    }

    /// Called with every new link, e.g. to ask the drone its `id` (clients are identified by
    /// that, not by IP, so two drones behind one address do not collide).
    pub fn on_peer(&self, f: impl Fn(Peer) + Send + Sync + 'static) -> &Self {
        self.handlers
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .on_peer = Some(Arc::new(f));
        self
    }

    /// Adds the demo contract of `tether serve --clever-show`: `echo` answers
    /// `{"args": [...], "kwargs": {...}}`, `time` answers the Unix time as a float.
    pub fn with_demo(&self) -> &Self {
        self.request("echo", |_p, args, kwargs| async move {
            Ok(serde_json::json!({ "args": args, "kwargs": kwargs }))
        });
        self.request(
            "time",
            |_p, _a, _k| async move { Ok(Value::from(unix_now())) },
        )
    }

    /// Listens for peers on `addr` (the ground server's role).
    pub async fn bind(&self, addr: SocketAddr) -> Result<ShowListener, Error> {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| Error::Bind {
                addr: format!("{addr} (clever-show)"),
                source,
            })?;
        let local_addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: addr.to_string(),
            source,
        })?;
        let node = self.clone();
        let task = tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((socket, from)) => {
                        let _ = socket.set_nodelay(true);
                        Peer::start(node.clone(), socket, from);
                    }
                    Err(e) => {
                        tracing::warn!("clever-show accept failed: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
            }
        });
        tracing::info!("clever-show listener on {local_addr}");
        Ok(ShowListener { local_addr, task })
    }

    /// Connects to a clever-show server (the drone's role).
    pub async fn connect(&self, addr: SocketAddr) -> Result<Peer, Error> {
        let socket = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|source| Error::Unreachable { addr, source })?;
        let _ = socket.set_nodelay(true);
        Ok(Peer::start(self.clone(), socket, addr))
    }
}

/// A running clever-show listener; dropping it stops accepting.
#[derive(Debug)]
pub struct ShowListener {
    local_addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl ShowListener {
    /// The address bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }
}

impl Drop for ShowListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub(crate) fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
