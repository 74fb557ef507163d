//! What route handlers see and return, and how they are run.

use std::future::Future;
use std::net::SocketAddr;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use serde::Serialize;
use tether_wire::vsoa::{PacketType, Status, MAX_BODY_LEN, MAX_QUICK_BODY_LEN};

use super::quick::QuickPath;
use crate::outbound::{Outbound, SendError};
use crate::Payload;

/// A boxed, sendable future: what every handler call returns.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// RPC method (the SET flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Method {
    /// Read (no SET flag).
    Get,
    /// Write (SET flag).
    Set,
}

/// One connected client as handlers and hooks see it: its id and address, and a way to
/// send it datagrams or close it. Cheap to clone.
#[derive(Clone, Debug)]
pub struct ClientHandle {
    pub(crate) id: u32,
    pub(crate) addr: SocketAddr,
    /// Our end of the TCP connection: streams listen on this IP.
    pub(crate) local: SocketAddr,
    pub(crate) outbound: Outbound,
    /// Set once, when the handshake advertises a UDP port on a listener with a quick channel.
    pub(crate) quick: Arc<std::sync::OnceLock<QuickPath>>,
    /// The server's TLS setup, for this connection and the streams it opens.
    pub(crate) stream_tls: Option<crate::tls::ServerTls>,
    /// The client's certificate, once a TLS handshake presented one.
    pub(crate) peer_cert: Arc<std::sync::OnceLock<Arc<crate::tls::PeerCertificate>>>,
    /// Its rate on the relay.
    pub(crate) relay_bucket: Arc<super::relay::Bucket>,
}

impl ClientHandle {
    /// The id the server gave this client in the handshake.
    pub fn id(&self) -> u32 {
        self.id
    }

    /// The client's TCP address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// This side's address of the connection (streams the client opens listen on its IP).
    /// For a caller on another transport, that transport's local address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// How long a send to this client may wait for room in its queue, and a write to
    /// it make no progress, before it is cut off as a slow consumer.
    pub fn send_timeout(&self) -> std::time::Duration {
        self.outbound.send_timeout()
    }

    /// Changes it for this client (VSOA's `cli.sendtimeout(t)`), for the sends and writes
    /// that start from now on.
    pub fn set_send_timeout(&self, timeout: std::time::Duration) {
        self.outbound.set_send_timeout(timeout);
    }

    /// Sends a datagram to this client over its TCP connection.
    pub async fn datagram(&self, url: &str, payload: Payload) -> Result<(), crate::Error> {
        let bytes = payload
            .packet(PacketType::Datagram, url, MAX_BODY_LEN)?
            .to_bytes()?;
        self.outbound.send(bytes).await.map_err(Into::into)
    }

    /// Sends a datagram to this client over the quick (UDP) channel. `Ok(false)`: the
    /// socket could not take it now, so it was dropped (and counted in
    /// [`crate::server::QuickStats`]).
    pub fn datagram_quick(&self, url: &str, payload: Payload) -> Result<bool, crate::Error> {
        let path = self.quick.get().ok_or(crate::Error::NoQuickChannel)?;
        let packet = payload.packet(PacketType::Datagram, url, MAX_QUICK_BODY_LEN)?;
        Ok(path.send(&packet.to_bytes()?))
    }

    /// The client's TLS certificate (mutual TLS), if it presented one.
    pub fn peer_certificate(&self) -> Option<&crate::tls::PeerCertificate> {
        self.peer_cert.get().map(|c| &**c)
    }

    /// The client's quick-channel address, if it advertised one.
    pub fn quick_addr(&self) -> Option<SocketAddr> {
        self.quick.get().map(|p| p.addr)
    }

    /// Closes the connection after what is already queued has been written.
    pub fn close(&self) {
        self.outbound.close();
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.outbound.is_killed()
    }
}

/// An RPC request as a handler receives it.
#[derive(Debug, Clone)]
pub struct Request {
    pub(crate) url: Bytes,
    /// GET or SET.
    pub method: Method,
    /// Param and data, slices of the connection's read buffer.
    pub payload: Payload,
    /// The client's sequence number (echoed in the reply by the server).
    pub seqno: u32,
    /// Who sent it.
    pub client: ClientHandle,
}

impl Request {
    /// The request URL (always UTF-8 starting with `/`: other URLs never reach a handler).
    pub fn url(&self) -> &str {
        std::str::from_utf8(&self.url).unwrap_or("/")
    }

    /// Opens a stream for this request's client, which must connect within 5 s. Reply with
    /// its [`crate::PendingStream::tunid`], then [`crate::PendingStream::accept`] it.
    ///
    /// ```no_run
    /// # use tether::{Request, Reply};
    /// # use tokio::io::AsyncWriteExt;
    /// async fn hello(req: Request) -> Reply {
    ///     let pending = match req.open_stream().await {
    ///         Ok(p) => p,
    ///         Err(e) => return Reply::error(tether::Status::NO_MEMORY, e.to_string()),
    ///     };
    ///     let tunid = pending.tunid();
    ///     tokio::spawn(async move {
    ///         if let Ok(mut s) = pending.accept().await {
    ///             let _ = s.write_all(b"HELLO-FROM-SERVER").await;
    ///         }
    ///     });
    ///     Reply::empty().with_tunid(tunid)
    /// }
    /// ```
    pub async fn open_stream(&self) -> Result<crate::PendingStream, crate::Error> {
        self.open_stream_with_timeout(crate::stream::DEFAULT_SERVER_STREAM_TIMEOUT)
            .await
    }

    /// Opens a stream, serves it with `serve` once the client connects (on its own task),
    /// and returns `reply` announcing it. If the stream cannot be opened the reply is
    /// status 6 with the reason; if the client never connects, it is logged.
    pub async fn with_stream<F, Fut>(&self, reply: Reply, serve: F) -> Reply
    where
        F: FnOnce(crate::DataStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let pending = match self.open_stream().await {
            Ok(p) => p,
            Err(e) => return Reply::error(Status::NO_MEMORY, e.to_string()),
        };
        let tunid = pending.tunid();
        tokio::spawn(async move {
            match pending.accept().await {
                Ok(stream) => serve(stream).await,
                Err(e) => tracing::info!("{e}"),
            }
        });
        reply.with_tunid(tunid)
    }

    /// Like [`Request::open_stream`] with another connect timeout.
    pub async fn open_stream_with_timeout(
        &self,
        timeout: std::time::Duration,
    ) -> Result<crate::PendingStream, crate::Error> {
        crate::PendingStream::open(
            self.client.local.ip(),
            self.client.addr.ip(),
            timeout,
            self.client.stream_tls.clone(),
        )
        .await
    }
}

/// What a handler answers: a status, a payload and, for streams, a tunnel id.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Reply {
    /// Status code; 0 is success.
    pub status: Status,
    /// Reply param and data.
    pub payload: Payload,
    /// Stream port announced to the client (0: none).
    pub tunid: u16,
}

impl Reply {
    /// Success with `payload`.
    pub fn ok(payload: Payload) -> Self {
        Reply {
            payload,
            ..Reply::default()
        }
    }

    /// Success with no payload.
    pub fn empty() -> Self {
        Reply::default()
    }

    /// Success with `value` as JSON param.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Self, serde_json::Error> {
        Ok(Reply::ok(Payload::json(value)?))
    }

    /// A bare status.
    pub fn status(status: Status) -> Self {
        Reply {
            status,
            ..Reply::default()
        }
    }

    /// The same reply announcing stream port `tunid` (0: none).
    #[must_use]
    pub fn with_tunid(mut self, tunid: u16) -> Self {
        self.tunid = tunid;
        self
    }

    /// A failure status with `{"error": message}` as param, so peers see a reason.
    pub fn error(status: Status, message: impl AsRef<str>) -> Self {
        Reply {
            status,
            payload: Payload::json(&serde_json::json!({ "error": message.as_ref() }))
                .unwrap_or_default(),
            tunid: 0,
        }
    }
}

/// An async RPC handler. Any `Fn(Request) -> impl Future<Output = Reply>` is one.
pub trait Handler: Send + Sync + 'static {
    /// Serves one request.
    fn call(&self, req: Request) -> BoxFuture<Reply>;
}

impl<F, Fut> Handler for F
where
    F: Fn(Request) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Reply> + Send + 'static,
{
    fn call(&self, req: Request) -> BoxFuture<Reply> {
        Box::pin(self(req))
    }
}

/// Runs `route` for `req` in its mode and waits for the reply: a [`Mode::Queue`] route on
/// its queue, the others here (for callers without a session to keep in order).
pub(crate) async fn run_waiting(route: &Route, req: Request) -> Reply {
    match &route.mode {
        Mode::Queue(q) => {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let handler = route.handler.clone();
            q.submit(Box::pin(async move {
                let _ = tx.send(call_guarded(&*handler, req).await);
            }))
            .await;
            rx.await
                .unwrap_or_else(|_| Reply::error(Status::NO_RESPONDING, "the work queue stopped"))
        }
        _ => call_guarded(&*route.handler, req).await,
    }
}

/// Calls `handler` so that a panic, in the call or in the future, becomes a status-4 reply
/// instead of a lost request.
pub(crate) async fn call_guarded(handler: &dyn Handler, req: Request) -> Reply {
    let url = req.url().to_string();
    let fut = match catch_unwind(AssertUnwindSafe(|| handler.call(req))) {
        Ok(fut) => fut,
        Err(_) => return panicked(&url),
    };
    match (CatchUnwind(fut)).await {
        Ok(reply) => reply,
        Err(()) => panicked(&url),
    }
}

fn panicked(url: &str) -> Reply {
    tracing::error!(url, "RPC handler panicked; replying status 4");
    Reply::error(Status::NO_RESPONDING, "the handler failed")
}

struct CatchUnwind(BoxFuture<Reply>);

impl Future for CatchUnwind {
    type Output = Result<Reply, ()>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match catch_unwind(AssertUnwindSafe(|| self.0.as_mut().poll(cx))) {
            Ok(Poll::Ready(r)) => Poll::Ready(Ok(r)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(Err(())),
        }
    }
}

/// How a route's handler is run.
#[derive(Clone, Debug, Default)]
pub enum Mode {
    /// On its own task: many requests of one client run at once and replies go out in
    /// completion order. The default.
    #[default]
    Concurrent,
    /// Awaited by the connection itself: requests of one client run one after another, in
    /// order, and the connection reads nothing else meanwhile. Cheapest for quick handlers.
    Inline,
    /// On a named serial queue: one request at a time across every route and client that
    /// shares the queue (VSOA's work queue).
    Queue(WorkQueue),
}

pub use crate::workqueue::WorkQueue;

/// A route: its handler and how to run it.
#[derive(Clone)]
pub(crate) struct Route {
    pub(crate) handler: Arc<dyn Handler>,
    pub(crate) mode: Mode,
}

/// A datagram received from a client.
#[derive(Debug, Clone)]
pub struct Datagram {
    /// URL it was sent to.
    pub url: String,
    /// Its param and data.
    pub payload: Payload,
    /// Whether it came over the quick (UDP) channel.
    pub quick: bool,
    /// Who sent it.
    pub client: ClientHandle,
}

impl Datagram {
    /// Sends a datagram back to its sender over the channel this one came on: TCP, or the
    /// quick channel (where a datagram the socket cannot take now is dropped and counted).
    pub async fn reply(&self, url: &str, payload: Payload) -> Result<(), crate::Error> {
        if self.quick {
            self.client.datagram_quick(url, payload).map(|_sent| ())
        } else {
            self.client.datagram(url, payload).await
        }
    }
}

/// An async datagram handler. Any `Fn(Datagram) -> impl Future<Output = ()>` is one.
/// Datagrams of one client are handled in order.
pub trait DatagramHandler: Send + Sync + 'static {
    /// Handles one datagram.
    fn call(&self, dgram: Datagram) -> BoxFuture<()>;
}

impl<F, Fut> DatagramHandler for F
where
    F: Fn(Datagram) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    fn call(&self, dgram: Datagram) -> BoxFuture<()> {
        Box::pin(self(dgram))
    }
}

impl From<SendError> for crate::Error {
    fn from(e: SendError) -> Self {
        match e {
            SendError::Closed(reason) => crate::Error::Closed { reason },
            SendError::CutOff(t) => crate::Error::SlowConsumer { timeout: t },
        }
    }
}
