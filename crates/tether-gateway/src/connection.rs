//! One juggler connection: a reader that answers pings at once and keeps the peer alive, a
//! writer that sends whole messages (pings and pongs may slip between segments), request
//! handling in order or concurrently, and the forwarding of subscribed publishes. On the 0.6
//! wire ([`Wire::V0_6`]) a frame is one bare JSON message and there are no juggler pings;
//! everything else is the same.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message as WsMessage, WebSocket};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tether_wire::juggler::{self, Message, Package, Parsed, Reassembler};
use tokio::sync::{mpsc, Mutex};
use tokio::time::Instant;

use crate::{GatewayState, Wire};

/// WebSocket close codes we use.
const NORMAL: u16 = 1000;
const GOING_AWAY: u16 = 1001;
const TOO_BIG: u16 = 1009;

/// How long a connection we closed waits for the peer's close frame before it drops the
/// socket.
const CLOSE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// What the writer takes from the message queue.
pub(crate) enum Queued {
    /// One message's frames.
    Frames(Vec<String>),
    /// Answered once everything queued before it is written and flushed.
    Written(tokio::sync::oneshot::Sender<()>),
}

/// What the writer sends.
enum Control {
    /// A pong or our ping: goes out before queued messages.
    Frame(String),
    /// Send a close frame and stop.
    Close(u16, String),
}

/// The sending side, shared by the reader, the request workers and the notifier.
#[derive(Clone)]
pub(crate) struct Outgoing {
    pub(crate) messages: mpsc::Sender<Queued>,
    control: mpsc::UnboundedSender<Control>,
    max_segment: usize,
    wire: Wire,
    ctx: Arc<GatewayState>,
}

impl Outgoing {
    /// Queues a message, cut into segments; waits while the queue is full. `false` once the
    /// connection is closing.
    pub(crate) async fn send(&self, msg: &Message) -> bool {
        let frames = match self.wire {
            Wire::V0_7 => juggler::segments(&msg.to_json(), self.max_segment),
            Wire::V0_6 => vec![msg.to_json()],
        };
        let queued = self.messages.send(Queued::Frames(frames)).await.is_ok();
        if queued {
            self.ctx.stats.queued.fetch_add(1, Ordering::Relaxed);
        }
        queued
    }

    /// Waits until everything queued so far is written to the socket; `false` if the
    /// connection closed first.
    pub(crate) async fn written(&self) -> bool {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.messages.send(Queued::Written(tx)).await.is_ok() && rx.await.is_ok()
    }

    fn control(&self, c: Control) {
        let _ = self.control.send(c);
    }

    fn close(&self, code: u16, reason: impl Into<String>) {
        self.control(Control::Close(code, reason.into()));
    }
}

/// A WebSocket connection's hold on its listener: [`tether::Listening::shutdown`] waits
/// for it, and when it is asked for the connection sends a close (1001) and ends within
/// `timeout`.
pub(crate) struct Closing {
    pub(crate) shutdown: tether::listening::Shutdown,
    pub(crate) timeout: std::time::Duration,
}

impl Closing {
    async fn wait(&mut self, out: &Outgoing) {
        self.shutdown.requested().await;
        out.close(GOING_AWAY, "the server is shutting down");
        tokio::time::sleep(self.timeout).await;
    }
}

pub(crate) async fn serve(
    socket: WebSocket,
    ctx: Arc<GatewayState>,
    addrs: crate::Addrs,
    remote: String,
    wire: Wire,
    mut listener: Option<Closing>,
) {
    let peer = addrs.remote;
    let (sink, stream) = socket.split();
    let (msg_tx, msg_rx) = mpsc::channel(ctx.config.send_queue.max(1));
    let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
    let out = Outgoing {
        messages: msg_tx,
        control: ctl_tx,
        max_segment: ctx.config.max_segment,
        wire,
        ctx: ctx.clone(),
    };
    ctx.stats.open.fetch_add(1, Ordering::Relaxed);
    ctx.stats.accepted.fetch_add(1, Ordering::Relaxed);
    let writer = tokio::spawn(write_loop(sink, msg_rx, ctl_rx, ctx.clone()));
    tracing::debug!(%peer, wire = wire.name(), "juggler connection open");
    let state = ctx.state.clone().unwrap_or_default();
    let (flush_tx, flush_rx) = mpsc::channel(16);
    let _sync = AbortOnDrop(tokio::spawn(crate::state::sync(
        state.clone(),
        ctx.config.autoflush,
        out.clone(),
        flush_rx,
    )));
    let conn = Connection {
        peer,
        local: addrs.local,
        remote,
        state,
        out: out.clone(),
        flushes: flush_tx,
    };
    if let Some(hook) = &ctx.on_connection {
        hook(conn.clone());
    }
    // The reader ends the connection; so do the writer stopping (we sent a close: the
    // peer has CLOSE_GRACE to answer it) and the listener shutting down (a close 1001,
    // then the socket dropped once the shutdown timeout is over).
    let writer_done = async {
        out.messages.closed().await;
        tokio::time::sleep(CLOSE_GRACE).await;
    };
    let shutdown = async {
        match listener.as_mut() {
            Some(l) => l.wait(&out).await,
            None => std::future::pending().await,
        }
    };
    let reason = tokio::select! {
        Err(reason) = read_loop(stream, &ctx, conn, &out) => reason,
        () = writer_done => "closed by this side; the peer did not answer the close".into(),
        () = shutdown => "the gateway shut down".into(),
    };
    tracing::debug!(%peer, "juggler connection closed: {reason}");
    out.close(NORMAL, "");
    drop(out);
    let _ = writer.await;
    ctx.stats.open.fetch_sub(1, Ordering::Relaxed);
}

async fn write_loop(
    mut sink: SplitSink<WebSocket, WsMessage>,
    mut messages: mpsc::Receiver<Queued>,
    control: mpsc::UnboundedReceiver<Control>,
    ctx: Arc<GatewayState>,
) {
    let stats = &ctx.stats;
    write_frames(&mut sink, &mut messages, control, stats).await;
    // What was queued and will never be written no longer counts as queued.
    messages.close();
    let left = std::iter::from_fn(|| messages.try_recv().ok())
        .filter(|q| matches!(q, Queued::Frames(_)))
        .count();
    stats.queued.fetch_sub(left as i64, Ordering::Relaxed);
}

async fn write_frames(
    sink: &mut SplitSink<WebSocket, WsMessage>,
    messages: &mut mpsc::Receiver<Queued>,
    mut control: mpsc::UnboundedReceiver<Control>,
    stats: &crate::metrics::Stats,
) {
    let send_control = async |sink: &mut SplitSink<WebSocket, WsMessage>, c: Control| -> bool {
        match c {
            Control::Frame(f) => {
                stats.frame_out(f.len());
                sink.send(WsMessage::Text(f.into())).await.is_ok()
            }
            Control::Close(code, reason) => {
                let frame = CloseFrame {
                    code,
                    reason: reason.into(),
                };
                let _ = sink.send(WsMessage::Close(Some(frame))).await;
                false
            }
        }
    };
    loop {
        tokio::select! {
            biased;
            c = control.recv() => match c {
                Some(c) => if !send_control(sink, c).await { return },
                None => return,
            },
            m = messages.recv() => {
                let Some(mut next) = m else { return };
                // Feed whatever is queued, then flush once: a burst of answers costs one
                // write, not one per frame.
                let mut written = Vec::new();
                loop {
                    match next {
                        Queued::Frames(frames) => {
                            stats.queued.fetch_sub(1, Ordering::Relaxed);
                            for frame in frames {
                                while let Ok(c) = control.try_recv() {
                                    if !send_control(sink, c).await {
                                        return;
                                    }
                                }
                                stats.frame_out(frame.len());
                                if sink.feed(WsMessage::Text(frame.into())).await.is_err() {
                                    return;
                                }
                            }
                        }
                        Queued::Written(tx) => written.push(tx),
                    }
                    match messages.try_recv() {
                        Ok(more) => next = more,
                        Err(_) => break,
                    }
                }
                if sink.flush().await.is_err() {
                    return;
                }
                for tx in written {
                    let _ = tx.send(());
                }
            }
        }
    }
}

/// Per-connection request state: the subscriber (created on the first `subscribe`).
struct Session {
    ctx: Arc<GatewayState>,
    conn: Connection,
    out: Outgoing,
    subscriber: Mutex<Option<Arc<tether::LocalSubscriber>>>,
}

async fn read_loop(
    mut stream: SplitStream<WebSocket>,
    ctx: &Arc<GatewayState>,
    conn: Connection,
    out: &Outgoing,
) -> Result<std::convert::Infallible, String> {
    let session = Arc::new(Session {
        ctx: ctx.clone(),
        conn,
        out: out.clone(),
        subscriber: Mutex::new(None),
    });
    // In order: one worker takes the requests as they come; the reader stays free for pings
    // until QUEUED_REQUESTS wait, then it stops reading (TCP pushes back on the client).
    let (ordered, mut queue) = mpsc::channel::<Waiting>(QUEUED_REQUESTS);
    let worker = {
        let session = session.clone();
        tokio::spawn(async move {
            while let Some((id, name, data)) = queue.recv().await {
                session.answer(id, name, data).await;
            }
        })
    };
    let _worker = AbortOnDrop(worker);
    let mut joiner = Reassembler::new(ctx.config.max_message);
    // 0.6 has no juggler ping (its peers would close on one); TCP keepalive still applies.
    let delay = ctx.config.ping_delay.filter(|_| out.wire == Wire::V0_7);
    let mut deadline = delay.map(|d| Instant::now() + d);
    let mut pinged = false;
    loop {
        let wait = async {
            match deadline {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let frame = tokio::select! {
            f = stream.next() => f,
            () = wait => {
                if pinged {
                    out.close(NORMAL, "ping timeout");
                    return Err("no traffic after our ping".into());
                }
                out.control(Control::Frame(juggler::PING.into()));
                pinged = true;
                deadline = Some(Instant::now() + ctx.config.ping_timeout);
                continue;
            }
        };
        // Any frame counts as traffic.
        pinged = false;
        deadline = delay.map(|d| Instant::now() + d);
        let Some(text) = text_of(frame, ctx, out)? else {
            continue;
        };
        let request = match out.wire {
            Wire::V0_7 => request_of(&text, &mut joiner, ctx, out)?,
            Wire::V0_6 => Some(request_of_06(&text, ctx, out)?),
        };
        let Some((id, name, data)) = request else {
            continue;
        };
        if ctx.config.parallel_requests {
            let session = session.clone();
            tokio::spawn(async move { session.answer(id, name, data).await });
        } else if ordered.send((id, name, data)).await.is_err() {
            return Err("request worker stopped".into());
        }
    }
}

/// Requests of one connection waiting for the in-order worker before its reader stops.
const QUEUED_REQUESTS: usize = 1024;

/// A request as it waits for its answer: id, name, data.
type Waiting = (Value, Option<String>, Option<Value>);

/// Counts a protocol error, closes the connection with `code` (the peer sees `close`),
/// and gives the reason to log.
fn refuse(ctx: &GatewayState, out: &Outgoing, code: u16, close: &str, why: String) -> String {
    ctx.stats.protocol_errors.fetch_add(1, Ordering::Relaxed);
    out.close(code, close.to_string());
    why
}

/// The text of one WebSocket frame; `None` for WebSocket-level pings and pongs; an error
/// (the connection ends) for everything that is not juggler's text.
fn text_of(
    frame: Option<Result<WsMessage, axum::Error>>,
    ctx: &GatewayState,
    out: &Outgoing,
) -> Result<Option<axum::extract::ws::Utf8Bytes>, String> {
    match frame {
        None => Err("peer went away".into()),
        Some(Err(e)) => {
            let why = format!("WebSocket error: {e}");
            if is_too_big(e) {
                out.close(TOO_BIG, "message too big");
            }
            Err(why)
        }
        Some(Ok(WsMessage::Text(t))) => {
            ctx.stats.frame_in(t.len());
            Ok(Some(t))
        }
        Some(Ok(WsMessage::Binary(_))) => Err(refuse(
            ctx,
            out,
            NORMAL,
            "binary frames are not juggler",
            "binary frame".into(),
        )),
        Some(Ok(WsMessage::Close(_))) => Err("peer closed".into()),
        Some(Ok(_)) => Ok(None),
    }
}

/// The request a text frame completes, if it completes one. Juggler pings are answered
/// here, at once; a segment waits for the rest of its message; anything but a well-formed
/// request ends the connection.
fn request_of(
    text: &str,
    joiner: &mut Reassembler,
    ctx: &GatewayState,
    out: &Outgoing,
) -> Result<Option<Waiting>, String> {
    let package = juggler::parse_frame(text)
        .map_err(|e| refuse(ctx, out, NORMAL, &e.to_string(), e.to_string()))?;
    let parsed = match package {
        Package::Ping(payload) => {
            out.control(Control::Frame(juggler::pong(payload)));
            return Ok(None);
        }
        Package::Pong(_) => return Ok(None),
        Package::Segment { last, text } => match joiner.push_as::<Parsed>(text, last) {
            Ok(Some(Parsed(m))) => m,
            Ok(None) => return Ok(None),
            Err(e) => {
                let code = if matches!(e, juggler::FrameError::TooLarge { .. }) {
                    TOO_BIG
                } else {
                    NORMAL
                };
                return Err(refuse(ctx, out, code, &e.to_string(), e.to_string()));
            }
        },
    };
    only_requests(parsed, ctx, out).map(Some)
}

/// The request a 0.6 frame holds: the frame is the message's whole JSON text. Invalid JSON,
/// or anything but a request, ends the connection (as hat-juggler 0.6 does).
fn request_of_06(text: &str, ctx: &GatewayState, out: &Outgoing) -> Result<Waiting, String> {
    match serde_json::from_str::<Parsed>(text) {
        Ok(Parsed(m)) => only_requests(m, ctx, out),
        Err(e) => {
            // A 0.7 frame is a header character and JSON: say so.
            let close = match juggler::parse_frame(text) {
                Ok(Package::Segment { .. }) => "a 0.7 frame on the 0.6 endpoint",
                _ => "juggler message is not valid JSON",
            };
            Err(refuse(ctx, out, NORMAL, close, format!("{close}: {e}")))
        }
    }
}

/// A client may only send requests: anything else ends the connection.
fn only_requests(
    parsed: Result<Message, juggler::MessageError>,
    ctx: &GatewayState,
    out: &Outgoing,
) -> Result<Waiting, String> {
    match parsed {
        Ok(Message::Request { id, name, data }) => Ok((id, name, data)),
        Ok(other) => Err(refuse(
            ctx,
            out,
            NORMAL,
            "unexpected message type",
            format!("a client may only send requests, not {other:?}"),
        )),
        Err(e) => Err(refuse(ctx, out, NORMAL, &e.to_string(), e.to_string())),
    }
}

/// A juggler connection, as [`crate::GatewayBuilder::on_connection`] and
/// [`crate::GatewayBuilder::on_request`] see it (hat-juggler's `Connection`). Cheap to
/// clone; every clone is the same connection.
#[derive(Clone)]
pub struct Connection {
    peer: SocketAddr,
    local: SocketAddr,
    remote: String,
    state: crate::State,
    out: Outgoing,
    flushes: mpsc::Sender<tokio::sync::oneshot::Sender<()>>,
}

/// The connection is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the juggler connection is closed")]
pub struct ConnectionClosed;

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("peer", &self.peer)
            .finish()
    }
}

impl Connection {
    /// The peer's socket address.
    pub fn peer(&self) -> SocketAddr {
        self.peer
    }

    /// This side's address of the connection.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// The client's address: the socket's IP, or with
    /// [`crate::GatewayBuilder::trust_forwarded`] what `Forwarded` / `X-Forwarded-For`
    /// say (hat-juggler's `remote`).
    pub fn remote(&self) -> &str {
        &self.remote
    }

    /// The state this connection syncs: the gateway's shared one, or its own (which the
    /// application may change: `conn.state().set(..)`).
    pub fn state(&self) -> &crate::State {
        &self.state
    }

    /// Sends a `notify` message; `false` once the connection is closed.
    pub async fn notify(&self, name: &str, data: Value) -> bool {
        self.out
            .send(&Message::Notify {
                name: name.into(),
                data,
            })
            .await
    }

    /// Sends this connection's pending state diff now, whatever the autoflush mode, and
    /// returns once it is written to the socket (other connections are not flushed).
    pub async fn flush(&self) -> Result<(), ConnectionClosed> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.flushes.send(tx).await.map_err(|_| ConnectionClosed)?;
        rx.await.map_err(|_| ConnectionClosed)?;
        if self.out.written().await {
            Ok(())
        } else {
            Err(ConnectionClosed)
        }
    }

    /// Closes the connection from this side with code 1000 and `reason` (cut to the 123
    /// bytes a close frame holds). What was queued before goes out first, for at most a
    /// second (a peer that does not read gets the close without it).
    pub fn close(&self, reason: &str) {
        let mut end = reason.len().min(123);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let (out, reason) = (self.out.clone(), reason[..end].to_string());
        tokio::spawn(async move {
            let _ = tokio::time::timeout(CLOSE_GRACE, out.written()).await;
            out.close(NORMAL, reason);
        });
    }

    /// The wire it speaks.
    pub fn wire(&self) -> Wire {
        self.out.wire
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.out.messages.is_closed()
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Session {
    async fn answer(self: &Arc<Self>, id: Value, name: Option<String>, data: Option<Value>) {
        let started = std::time::Instant::now();
        let result = match (name.as_deref(), data) {
            // hat-juggler's echo for an empty or null name.
            (None, data) => Ok(data.unwrap_or(Value::Null)),
            (Some(name), None) => Err(format!("request {name:?} has no \"data\"")),
            (Some(name @ ("subscribe" | "unsubscribe")), Some(data)) => {
                self.subscription(name == "subscribe", data).await
            }
            (Some(name), Some(data)) => {
                let (server, c) = (&self.ctx.server, &self.conn);
                match server.call_json(name, Some(&data), c.peer, c.local).await {
                    Some(answer) => answer,
                    None => match &self.ctx.on_request {
                        Some(handler) => handler(c.clone(), name.to_string(), data).await,
                        None => Err(format!(
                            "no request {name:?}: name a route (\"/path\", \"SET /path\"), or \
                             \"subscribe\"/\"unsubscribe\" with a list of URLs"
                        )),
                    },
                }
            }
        };
        let response = match result {
            Ok(data) => Message::Response {
                id,
                data,
                success: true,
            },
            Err(reason) => Message::Response {
                id,
                data: Value::String(reason),
                success: false,
            },
        };
        self.out.send(&response).await;
        self.ctx.stats.requests.observe(started.elapsed());
    }

    /// `subscribe`/`unsubscribe` with a list of URL patterns (or one string).
    async fn subscription(self: &Arc<Self>, add: bool, data: Value) -> Result<Value, String> {
        let urls: Vec<String> = match data {
            Value::String(s) => vec![s],
            Value::Array(items) => items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    other => Err(format!("URLs must be strings, not {other}")),
                })
                .collect::<Result<_, _>>()?,
            other => return Err(format!("data must be a list of URLs, not {other}")),
        };
        let mut slot = self.subscriber.lock().await;
        if !add {
            if let Some(sub) = slot.as_ref() {
                for u in &urls {
                    sub.unsubscribe(u);
                }
            }
            return Ok(Value::Null);
        }
        let sub = match slot.as_ref() {
            Some(s) => s.clone(),
            None => {
                let sub = Arc::new(
                    self.ctx
                        .server
                        .local_subscriber(self.ctx.config.send_queue.max(1)),
                );
                self.forward(sub.clone());
                slot.insert(sub).clone()
            }
        };
        for u in &urls {
            sub.subscribe(u).map_err(|e| e.to_string())?;
        }
        Ok(Value::Null)
    }

    /// Sends subscribed publishes as `notify` messages until the connection ends; a
    /// subscriber cut off for falling behind closes the connection.
    fn forward(self: &Arc<Self>, sub: Arc<tether::LocalSubscriber>) {
        let out = self.out.clone();
        tokio::spawn(async move {
            loop {
                let published = tokio::select! {
                    p = sub.next() => p,
                    () = out.messages.closed() => return,
                };
                let Some(p) = published else { break };
                let notify = Message::Notify {
                    name: p.url.to_string(),
                    data: p.payload.param_value().unwrap_or(Value::Null),
                };
                if !out.send(&notify).await {
                    return;
                }
            }
            if sub.is_cut_off() {
                out.close(NORMAL, "did not keep up with its publishes");
            }
        });
    }
}

/// Whether a WebSocket read failed because a message or control frame was over its limit
/// (answered with close code 1009), decided by tungstenite's error variant.
fn is_too_big(e: axum::Error) -> bool {
    use tokio_tungstenite::tungstenite::error::{Error, ProtocolError};
    matches!(
        e.into_inner().downcast_ref::<Error>(),
        Some(Error::Capacity(_) | Error::Protocol(ProtocolError::ControlFrameTooBig))
    )
}
