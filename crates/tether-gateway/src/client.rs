//! A juggler client (hat-juggler 0.7 protocol, or 0.6 with [`ClientBuilder::wire`]):
//! requests with results or [`JugglerError`]s, a stream of `notify` messages, the server's
//! state mirrored with change notifications, and keepalive pings (0.7 only). Talks to
//! Tether's gateway and to hat-juggler servers.
//!
//! Notifications wait in a bounded queue ([`ClientBuilder::notify_queue`]): an application
//! that does not read them never stalls responses or state; what does not fit is dropped
//! and counted ([`JugglerClient::notifies_dropped`]).
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use tether_gateway::client::JugglerClient;
//! let client = JugglerClient::builder("ws://127.0.0.1:8080/ws").connect().await?;
//! let echo = client.send("/echo", serde_json::json!({"a": 1})).await?;
//! client.send("subscribe", serde_json::json!(["/sensors/"])).await?;
//! while let Some((name, data)) = client.next_notify().await {
//!     println!("{name}: {data}");
//! }
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tether_wire::juggler::{self, Message, Package, Parsed, Reassembler};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message as Ws;

use crate::Wire;

/// Why a request did not succeed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum JugglerError {
    /// The server answered `success: false`; its `data` (a reason string from Tether and
    /// hat-juggler servers).
    #[error("request failed: {}", .0.as_str().map(str::to_string).unwrap_or_else(|| .0.to_string()))]
    Failed(Value),
    /// The connection closed before the answer.
    #[error("juggler connection closed: {0}")]
    Closed(String),
}

/// Why a connection could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// Not a usable ws:// URL, or a bad header value.
    #[error("invalid juggler address {0}")]
    Address(String),
    /// TCP or TLS failed before the WebSocket handshake.
    #[error("cannot connect to {url}: {reason}")]
    Transport {
        /// The address.
        url: String,
        /// What happened.
        reason: String,
    },
    /// The TCP connect or the WebSocket handshake failed (a 401 for wrong credentials).
    #[error("cannot connect to {url}: {source}")]
    Handshake {
        /// The address.
        url: String,
        /// What happened.
        #[source]
        source: Box<tokio_tungstenite::tungstenite::Error>,
    },
}

/// How to connect (see [`JugglerClient::builder`]).
#[derive(Debug, Clone)]
pub struct ClientBuilder {
    url: String,
    tls: Option<tether::tls::ClientTls>,
    auth: Option<(String, String)>,
    ping_delay: Option<Duration>,
    ping_timeout: Duration,
    max_segment: usize,
    max_message: usize,
    wire: Wire,
    notify_queue: usize,
}

impl ClientBuilder {
    /// The wire the server speaks (default 0.7; a hat-juggler 0.6 server, or Tether's 0.6
    /// endpoint `/ws06`, needs [`Wire::V0_6`]).
    pub fn wire(mut self, wire: Wire) -> Self {
        self.wire = wire;
        self
    }

    /// Unread `notify` messages kept (default 1 024); more are dropped and counted in
    /// [`JugglerClient::notifies_dropped`]. 0 ignores notifications (all counted).
    pub fn notify_queue(mut self, messages: usize) -> Self {
        self.notify_queue = messages;
        self
    }

    /// The TLS setup for `wss://` URLs (the same type as for VSOA clients: trusted CAs, an
    /// optional client certificate, the name to verify).
    pub fn tls(mut self, tls: tether::tls::ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// HTTP Basic credentials, sent with the upgrade request.
    pub fn basic_auth(mut self, user: &str, password: &str) -> Self {
        self.auth = Some((user.into(), password.into()));
        self
    }

    /// Keepalive: ping after `delay` without traffic (`None`: never), give up `timeout`
    /// after (defaults 30 s and 30 s, as hat-juggler's Python client). The 0.6 wire has no
    /// pings: there this is ignored.
    pub fn ping(mut self, delay: Option<Duration>, timeout: Duration) -> Self {
        self.ping_delay = delay;
        self.ping_timeout = timeout;
        self
    }

    /// Largest segment sent (default 65 536).
    pub fn max_segment(mut self, chars: usize) -> Self {
        self.max_segment = chars.max(1);
        self
    }

    /// Connects.
    pub async fn connect(self) -> Result<JugglerClient, ConnectError> {
        let mut request = self
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| ConnectError::Address(format!("{}: {e}", self.url)))?;
        if let Some((user, pw)) = &self.auth {
            let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"));
            let value = format!("Basic {token}")
                .parse()
                .map_err(|_| ConnectError::Address("credentials are not a valid header".into()))?;
            request.headers_mut().insert("authorization", value);
        }
        let handshake = |source| ConnectError::Handshake {
            url: self.url.clone(),
            source: Box::new(source),
        };
        if !self.url.starts_with("wss://") {
            let (ws, _) = tokio_tungstenite::connect_async(request)
                .await
                .map_err(handshake)?;
            return Ok(JugglerClient::start(ws, self));
        }
        let transport = |reason: String| ConnectError::Transport {
            url: self.url.clone(),
            reason,
        };
        let tls = self
            .tls
            .clone()
            .ok_or_else(|| transport("wss:// needs a TLS setup (ClientBuilder::tls)".into()))?;
        let uri = request.uri();
        let host = uri
            .host()
            .unwrap_or_default()
            .trim_matches(['[', ']'])
            .to_string();
        let port = uri.port_u16().unwrap_or(443);
        let addr = tokio::net::lookup_host((host.as_str(), port))
            .await
            .map_err(|e| transport(e.to_string()))?
            .next()
            .ok_or_else(|| transport(format!("{host} resolves to nothing")))?;
        let tcp = tokio::net::TcpStream::connect(addr)
            .await
            .map_err(|e| transport(e.to_string()))?;
        let stream = tls
            .connect(tcp, addr)
            .await
            .map_err(|e| transport(e.to_string()))?;
        let (ws, _) = tokio_tungstenite::client_async(request, stream)
            .await
            .map_err(handshake)?;
        Ok(JugglerClient::start(ws, self))
    }
}

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Result<Value, JugglerError>>>>>;

/// A connection to a juggler server. Dropping it closes the connection.
pub struct JugglerClient {
    frames: mpsc::UnboundedSender<Outgoing>,
    pending: Pending,
    next_id: AtomicU64,
    max_segment: usize,
    wire: Wire,
    state: watch::Receiver<Arc<Value>>,
    notifies: tokio::sync::Mutex<mpsc::Receiver<(String, Value)>>,
    dropped: Arc<AtomicU64>,
    closed: watch::Receiver<Option<String>>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for JugglerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JugglerClient").finish_non_exhaustive()
    }
}

enum Outgoing {
    Message(Vec<String>),
    Close,
}

impl JugglerClient {
    /// Starts configuring a connection to `url` (`ws://host:port/ws`).
    pub fn builder(url: &str) -> ClientBuilder {
        ClientBuilder {
            url: url.into(),
            tls: None,
            auth: None,
            ping_delay: Some(Duration::from_secs(30)),
            ping_timeout: Duration::from_secs(30),
            max_segment: juggler::DEFAULT_MAX_SEGMENT,
            max_message: usize::MAX,
            wire: Wire::V0_7,
            notify_queue: 1024,
        }
    }

    fn start<S>(ws: tokio_tungstenite::WebSocketStream<S>, cfg: ClientBuilder) -> Self
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (frames, outgoing) = mpsc::unbounded_channel();
        let pending: Pending = Arc::default();
        let (state_tx, state) = watch::channel(Arc::new(Value::Null));
        // A channel of 0 does not exist: with 0 the sender is dropped and every notify counted.
        let (notify_tx, notifies) = mpsc::channel(cfg.notify_queue.max(1));
        let notify_tx = (cfg.notify_queue > 0).then_some(notify_tx);
        let dropped = Arc::new(AtomicU64::new(0));
        let (closed_tx, closed) = watch::channel(None);
        let task = tokio::spawn(run(
            ws,
            cfg.clone(),
            outgoing,
            pending.clone(),
            state_tx,
            Notifies {
                tx: notify_tx,
                dropped: dropped.clone(),
            },
            closed_tx,
        ));
        JugglerClient {
            frames,
            pending,
            next_id: AtomicU64::new(1),
            max_segment: cfg.max_segment,
            wire: cfg.wire,
            state,
            notifies: tokio::sync::Mutex::new(notifies),
            dropped,
            closed,
            task,
        }
    }

    fn closed_reason(&self) -> String {
        self.closed
            .borrow()
            .clone()
            .unwrap_or_else(|| "closed".into())
    }

    /// Sends the request `name` with `data`; its result, or why not.
    pub async fn send(&self, name: &str, data: Value) -> Result<Value, JugglerError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, tx);
        let request = Message::Request {
            id: Value::from(id),
            name: Some(name.to_string()),
            data: Some(data),
        };
        let frames = match self.wire {
            Wire::V0_7 => juggler::segments(&request.to_json(), self.max_segment),
            Wire::V0_6 => vec![request.to_json()],
        };
        if self.frames.send(Outgoing::Message(frames)).is_err() {
            self.pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&id);
            return Err(JugglerError::Closed(self.closed_reason()));
        }
        rx.await
            .unwrap_or_else(|_| Err(JugglerError::Closed(self.closed_reason())))
    }

    /// The next `notify` message (name, data); `None` once the connection is closed (at
    /// once with [`ClientBuilder::notify_queue`] 0).
    pub async fn next_notify(&self) -> Option<(String, Value)> {
        self.notifies.lock().await.recv().await
    }

    /// `notify` messages dropped because the queue was full (or ignored with queue 0).
    pub fn notifies_dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The server's state as last received (`null` until the first `state` message).
    pub fn state(&self) -> Arc<Value> {
        self.state.borrow().clone()
    }

    /// A receiver that sees every new state.
    pub fn state_changes(&self) -> watch::Receiver<Arc<Value>> {
        self.state.clone()
    }

    /// Whether the connection has ended, and why.
    pub fn closed(&self) -> Option<String> {
        self.closed.borrow().clone()
    }

    /// Closes the connection (code 1000).
    pub async fn close(&self) {
        let _ = self.frames.send(Outgoing::Close);
        let mut closed = self.closed.clone();
        let _ =
            tokio::time::timeout(Duration::from_secs(5), closed.wait_for(Option::is_some)).await;
    }
}

impl Drop for JugglerClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Where notifications go: a bounded queue, never waited for.
struct Notifies {
    tx: Option<mpsc::Sender<(String, Value)>>,
    dropped: Arc<AtomicU64>,
}

impl Notifies {
    fn offer(&self, name: String, data: Value) {
        let full = match &self.tx {
            Some(tx) => tx.try_send((name, data)).is_err(),
            None => true,
        };
        if full && self.dropped.fetch_add(1, Ordering::Relaxed) == 0 && self.tx.is_some() {
            tracing::warn!("juggler notifications are not read fast enough: dropping (counted)");
        }
    }
}

#[allow(clippy::too_many_arguments)]
// Long on purpose: the client's one task, a select over the socket, requests to send and
// its own pings; its arms share the connection's state.
async fn run<S>(
    ws: tokio_tungstenite::WebSocketStream<S>,
    cfg: ClientBuilder,
    mut outgoing: mpsc::UnboundedReceiver<Outgoing>,
    pending: Pending,
    state: watch::Sender<Arc<Value>>,
    notify: Notifies,
    closed: watch::Sender<Option<String>>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sink, mut stream) = ws.split();
    let mut joiner = Reassembler::new(cfg.max_message);
    // 0.6 has no juggler pings (a 0.6 server closes on one).
    let ping_delay = cfg.ping_delay.filter(|_| cfg.wire == Wire::V0_7);
    let mut deadline = ping_delay.map(|d| Instant::now() + d);
    let mut pinged = false;
    let reason: String = 'conn: loop {
        let wait = async {
            match deadline {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            out = outgoing.recv() => match out {
                Some(Outgoing::Message(mut frames)) => {
                    // Feed what is queued, flush once.
                    loop {
                        for f in frames {
                            if let Err(e) = sink.feed(Ws::Text(f.into())).await {
                                break 'conn format!("send failed: {e}");
                            }
                        }
                        match outgoing.try_recv() {
                            Ok(Outgoing::Message(more)) => frames = more,
                            Ok(Outgoing::Close) => {
                                let _ = sink.close().await;
                                break 'conn "closed by this side".into();
                            }
                            Err(_) => break,
                        }
                    }
                    if let Err(e) = sink.flush().await {
                        break 'conn format!("send failed: {e}");
                    }
                }
                Some(Outgoing::Close) | None => {
                    let _ = sink.close().await;
                    break 'conn "closed by this side".into();
                }
            },
            () = wait => {
                if pinged {
                    let _ = sink.close().await;
                    break 'conn "ping timeout".into();
                }
                if sink.send(Ws::Text(juggler::PING.into())).await.is_err() {
                    break 'conn "ping failed".into();
                }
                pinged = true;
                deadline = Some(Instant::now() + cfg.ping_timeout);
            },
            frame = stream.next() => {
                pinged = false;
                deadline = ping_delay.map(|d| Instant::now() + d);
                let text = match frame {
                    Some(Ok(Ws::Text(t))) => t,
                    Some(Ok(Ws::Close(f))) => break 'conn format!("server closed: {f:?}"),
                    Some(Ok(Ws::Binary(_))) => break 'conn "binary frame from the server".into(),
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => break 'conn format!("{e}"),
                    None => break 'conn "server went away".into(),
                };
                let parsed = match (cfg.wire, juggler::parse_frame(text.as_str())) {
                    (Wire::V0_6, _) => match serde_json::from_str::<Parsed>(text.as_str()) {
                        Ok(Parsed(m)) => m,
                        Err(e) => break 'conn format!("not a juggler 0.6 message: {e}"),
                    },
                    (_, Ok(Package::Ping(p))) => {
                        let _ = sink.send(Ws::Text(juggler::pong(p).into())).await;
                        continue;
                    }
                    (_, Ok(Package::Pong(_))) => continue,
                    (_, Ok(Package::Segment { last, text })) => match joiner.push_as::<Parsed>(text, last) {
                        Ok(Some(Parsed(m))) => m,
                        Ok(None) => continue,
                        Err(e) => break 'conn e.to_string(),
                    },
                    (_, Err(e)) => break 'conn e.to_string(),
                };
                match parsed {
                    Ok(Message::Response { id, data, success }) => {
                        let waiter = id.as_u64().and_then(|id| {
                            pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&id)
                        });
                        // An unknown or settled id is ignored, as hat-juggler's clients do.
                        if let Some(tx) = waiter {
                            let _ = tx.send(if success { Ok(data) } else { Err(JugglerError::Failed(data)) });
                        }
                    }
                    Ok(Message::Notify { name, data }) => notify.offer(name, data),
                    Ok(Message::State { diff }) => {
                        let current = state.borrow().clone();
                        match juggler::patch(&current, &diff) {
                            Ok(next) => {
                                state.send_replace(Arc::new(next));
                            }
                            Err(e) => break 'conn format!("bad state diff: {e}"),
                        }
                    }
                    Ok(Message::Request { .. }) => break 'conn "a request from the server".into(),
                    Err(e) => break 'conn e.to_string(),
                }
            }
        }
    };
    tracing::debug!("juggler client closed: {reason}");
    closed.send_replace(Some(reason.clone()));
    for (_, tx) in pending.lock().unwrap_or_else(|e| e.into_inner()).drain() {
        let _ = tx.send(Err(JugglerError::Closed(reason.clone())));
    }
}
