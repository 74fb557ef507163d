//! One clever-show link: its outbound queue, its pending requests, and its reader task.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use serde_json::{Map, Value};
use tether_wire::clevershow::{Content, Decoder, Frame};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::Node;
use crate::outbound::Outbound;
use crate::Error;

/// Default time a request waits for its response.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

type Waiter = (String, oneshot::Sender<Content>);

struct Inner {
    addr: SocketAddr,
    outbound: Outbound,
    pending: Mutex<HashMap<String, Waiter>>,
}

/// The other end of a clever-show link. Cheap to clone; the link lives until either side
/// closes it.
#[derive(Clone)]
pub struct Peer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("addr", &self.inner.addr)
            .finish()
    }
}

/// An estimate of how far the peer's clock is ahead of ours.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ClockOffset {
    /// Peer time minus local time, in seconds, taken at the middle of the round trip.
    pub offset: f64,
    /// The round trip; the estimate is off by at most half of it.
    pub rtt: Duration,
}

impl Peer {
    pub(crate) fn start(node: Node, socket: TcpStream, addr: SocketAddr) -> Peer {
        let (rd, wr) = socket.into_split();
        let (outbound, writer) = Outbound::new(4 << 20, Duration::from_secs(5));
        tokio::spawn(writer.run(wr));
        let peer = Peer {
            inner: Arc::new(Inner {
                addr,
                outbound,
                pending: Mutex::new(HashMap::new()),
            }),
        };
        let hook = node
            .handlers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .on_peer
            .clone();
        tokio::spawn(read_loop(node, peer.clone(), rd));
        if let Some(hook) = hook {
            hook(peer.clone());
        }
        peer
    }

    /// The peer's address.
    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    async fn send(&self, frame: &Frame) -> Result<(), Error> {
        let bytes = frame.to_bytes().map_err(|e| Error::Closed {
            reason: e.to_string().into(),
        })?;
        self.inner.outbound.send(bytes).await.map_err(Into::into)
    }

    /// Sends the action `name` (never answered).
    pub async fn action(
        &self,
        name: &str,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
    ) -> Result<(), Error> {
        self.send(&Frame::action(name, args, kwargs)).await
    }

    /// Starts the request `name`; set args, kwargs and timeout, then [`RequestBuilder::send`].
    pub fn request(&self, name: &str) -> RequestBuilder<'_> {
        RequestBuilder {
            peer: self,
            name: name.to_string(),
            args: Vec::new(),
            kwargs: Map::new(),
            timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// Asks the peer's `time` and estimates its clock offset, correcting for the round
    /// trip (the original reads an SNTP timestamp without any correction).
    pub async fn clock_offset(&self) -> Result<ClockOffset, Error> {
        let t0 = super::unix_now();
        let start = Instant::now();
        let value = self.request("time").send().await?;
        let rtt = start.elapsed();
        let theirs = value.as_f64().ok_or_else(|| Error::Remote {
            what: "time".into(),
            reason: format!("answered {value}, not a number"),
        })?;
        Ok(ClockOffset {
            offset: theirs - (t0 + rtt.as_secs_f64() / 2.0),
            rtt,
        })
    }

    /// Closes the link after what is queued has been written.
    pub fn close(&self) {
        self.inner.outbound.close();
    }

    /// Whether the link has ended.
    pub fn is_closed(&self) -> bool {
        self.inner.outbound.is_killed()
    }

    /// A request id (4 decimal digits, as the original) not pending on this link.
    fn register(&self, name: &str, tx: oneshot::Sender<Content>) -> Option<String> {
        use std::hash::{BuildHasher, Hasher};
        let mut pending = self.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
        if pending.len() >= 10_000 {
            return None;
        }
        loop {
            let r = std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish();
            let id = format!("{:04}", r % 10_000);
            if let std::collections::hash_map::Entry::Vacant(slot) = pending.entry(id.clone()) {
                slot.insert((name.to_string(), tx));
                return Some(id);
            }
        }
    }

    fn forget(&self, id: &str) {
        self.inner
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }
}

/// A request being prepared (see [`Peer::request`]).
#[must_use = "a request does nothing until sent"]
#[derive(Debug)]
pub struct RequestBuilder<'a> {
    peer: &'a Peer,
    name: String,
    args: Vec<Value>,
    kwargs: Map<String, Value>,
    timeout: Duration,
}

impl RequestBuilder<'_> {
    /// Positional arguments.
    pub fn args(mut self, args: Vec<Value>) -> Self {
        self.args = args;
        self
    }

    /// Keyword arguments.
    pub fn kwargs(mut self, kwargs: Map<String, Value>) -> Self {
        self.kwargs = kwargs;
        self
    }

    /// How long to wait for the response (default 10 s).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Sends the request and waits for the response's `value`.
    pub async fn send(self) -> Result<Value, Error> {
        let peer = self.peer;
        let what = format!("request {}", self.name);
        let (tx, rx) = oneshot::channel();
        let id = peer.register(&self.name, tx).ok_or_else(|| Error::Remote {
            what: what.clone(),
            reason: "10 000 requests are pending on this link".into(),
        })?;
        let frame = Frame::request(&self.name, &id, self.args, self.kwargs);
        if let Err(e) = peer.send(&frame).await {
            peer.forget(&id);
            return Err(e);
        }
        let content = match tokio::time::timeout(self.timeout, rx).await {
            Ok(Ok(c)) => c,
            Ok(Err(_)) => {
                return Err(Error::Closed {
                    reason: format!("clever-show link to {} closed", peer.addr()).into(),
                })
            }
            Err(_) => {
                peer.forget(&id);
                return Err(Error::Timeout {
                    addr: peer.addr(),
                    what,
                    timeout: self.timeout,
                });
            }
        };
        match content {
            Content::Json(Value::Object(mut m)) => match m.remove("error") {
                Some(reason) => Err(Error::Remote {
                    what,
                    reason: reason
                        .as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| reason.to_string()),
                }),
                None => Ok(m.remove("value").unwrap_or(Value::Null)),
            },
            Content::Json(other) => Err(Error::Remote {
                what,
                reason: format!("a response that is not {{\"value\": ...}}: {other}"),
            }),
            Content::Binary(b) => Ok(Value::from(b.to_vec())),
        }
    }
}

fn args_kwargs(content: &mut Map<String, Value>) -> (Vec<Value>, Map<String, Value>) {
    let args = match content.remove("args") {
        Some(Value::Array(a)) => a,
        _ => Vec::new(),
    };
    let kwargs = match content.remove("kwargs") {
        Some(Value::Object(k)) => k,
        _ => Map::new(),
    };
    (args, kwargs)
}

async fn read_loop(node: Node, peer: Peer, mut rd: tokio::net::tcp::OwnedReadHalf) {
    let mut decoder = Decoder::default();
    let mut buf = BytesMut::with_capacity(8 * 1024);
    let reason = 'link: loop {
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(frame)) => dispatch(&node, &peer, frame).await,
                Ok(None) => break,
                Err(e) => break 'link format!("{e}"),
            }
        }
        tokio::select! {
            res = rd.read_buf(&mut buf) => match res {
                Ok(0) => break 'link "peer closed the link".to_string(),
                Ok(_) => {}
                Err(e) => break 'link format!("read failed: {e}"),
            },
            why = peer.inner.outbound.killed() => break 'link why.to_string(),
        }
    };
    tracing::debug!(peer = %peer.addr(), "clever-show link ended: {reason}");
    peer.inner.outbound.kill(&reason);
    // Waiting requests see their sender dropped: Error::Closed.
    peer.inner
        .pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
}

async fn dispatch(node: &Node, peer: &Peer, frame: Frame) {
    match frame.message_type.as_str() {
        "message" => {
            let name = frame.extra_str("action").unwrap_or_default().to_string();
            let handler = node
                .handlers
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .actions
                .get(&name)
                .cloned();
            let (Some(handler), Content::Json(Value::Object(mut content))) =
                (handler, frame.content)
            else {
                tracing::warn!(peer = %peer.addr(), "no handler for action {name:?}; ignored");
                return;
            };
            let (args, kwargs) = args_kwargs(&mut content);
            // Awaited in place: actions of one link run in the order they were sent.
            handler(peer.clone(), args, kwargs).await;
        }
        "request" => {
            let Content::Json(Value::Object(mut content)) = frame.content else {
                tracing::warn!(peer = %peer.addr(), "request without a JSON object; ignored");
                return;
            };
            let text = |v: Option<Value>| match v {
                Some(Value::String(s)) => s,
                Some(other) => other.to_string(),
                None => String::new(),
            };
            let name = text(content.remove("requested_value"));
            let id = text(content.remove("request_id"));
            let (args, kwargs) = args_kwargs(&mut content);
            let handler = node
                .handlers
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .requests
                .get(&name)
                .cloned();
            let peer = peer.clone();
            tokio::spawn(async move {
                let result = match handler {
                    Some(h) => h(peer.clone(), args, kwargs).await,
                    None => Err(format!("no handler for request {name:?}")),
                };
                let response = match result {
                    Ok(value) => Frame::response(&name, &id, Content::Json(value)),
                    Err(reason) => Frame::error_response(&name, &id, &reason),
                };
                let _ = peer.send(&response).await;
            });
        }
        "response" => {
            let id = frame
                .extra_str("request_id")
                .unwrap_or_default()
                .to_string();
            let name = frame.extra_str("requested_value").unwrap_or_default();
            let waiter = {
                let mut pending = peer.inner.pending.lock().unwrap_or_else(|e| e.into_inner());
                match pending.get(&id) {
                    Some((wanted, _)) if wanted == name => pending.remove(&id),
                    _ => None,
                }
            };
            match waiter {
                Some((_, tx)) => {
                    let _ = tx.send(frame.content);
                }
                None => {
                    tracing::warn!(peer = %peer.addr(), "unexpected response {name:?} #{id}; dropped")
                }
            }
        }
        other => tracing::debug!(peer = %peer.addr(), "message type {other:?} ignored"),
    }
}
