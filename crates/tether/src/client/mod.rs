//! The VSOA client: one TCP connection, many calls in flight, subscriptions as streams.
//!
//! [`Client::connect`] performs the SERVINFO handshake itself, then hands the socket to two
//! tasks: the shared writer of `outbound.rs`, and a reader (`connection.rs`) that routes
//! each incoming packet to the pending call with its seqno, to the subscriptions whose
//! patterns match, or to the datagram stream. When the connection ends, for any reason,
//! every pending call fails at once with [`Error::Closed`] and every stream ends.

mod connection;
mod quick;
mod robot;
mod subscription;

use std::collections::HashMap;
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use serde::Serialize;
use tether_wire::url::check_url;
use tether_wire::vsoa::{Decoder, Flags, Packet, PacketType, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

pub use robot::{fetch, Fetch, Robot, RobotBuilder, RobotCall, RobotEvent, RobotSubscription};
use subscription::Sink;
pub use subscription::{Datagrams, Message, Subscription};

use crate::outbound::Outbound;
use crate::server::{Method, Secret};
use crate::{Error, Payload, VsoaUrl};

/// Default time to connect and complete the handshake.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a call waits for its reply (as VSOA's clients).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Default longest wait for room in a full stream buffer (see [`Connect::stall_timeout`]).
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(1);
/// Default number of messages buffered per subscription (and for datagrams).
pub const DEFAULT_BUFFER: usize = 65_536;

/// A reply to a call: status, payload and tunnel id. A non-zero status is not an error at
/// this level (VSOA servers may answer any status); see [`Response::into_ok`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status byte; 0 is success.
    pub status: Status,
    /// Reply param and data.
    pub payload: Payload,
    /// Stream port the server announced (0: none).
    pub tunid: u16,
}

impl Response {
    /// The payload if the status is success, else [`Error::Refused`].
    pub fn into_ok(self) -> Result<Payload, Error> {
        if self.status.is_success() {
            Ok(self.payload)
        } else {
            Err(Error::Refused {
                what: "the call".into(),
                status: self.status,
            })
        }
    }
}

type Waiter = oneshot::Sender<Packet>;

/// State shared by the client handle and its reader task.
struct Shared {
    addr: SocketAddr,
    outbound: Outbound,
    pending: Mutex<HashMap<u32, Waiter>>,
    subs: Mutex<subscription::Table>,
    datagrams: Mutex<Option<Sink>>,
    buffer: usize,
    stall_timeout: Duration,
    next_seqno: AtomicU32,
    priority: AtomicU8,
    quick: Option<Arc<tokio::net::UdpSocket>>,
}

impl Shared {
    fn closed_error(&self) -> Error {
        Error::Closed {
            reason: self
                .outbound
                .close_reason()
                .unwrap_or_else(|| Arc::from(format!("connection to vsoa://{} closed", self.addr))),
        }
    }
}

struct Inner {
    shared: Arc<Shared>,
    info: serde_json::Value,
    id: u32,
    datagrams_taken: std::sync::atomic::AtomicBool,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Last handle gone: flush, FIN, and let the reader end.
        self.shared.outbound.close();
    }
}

/// A connected VSOA client. Clones share the connection, which closes when the last clone
/// (and the last [`Subscription`]) is dropped, or on [`Client::close`].
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("server", &self.inner.shared.addr)
            .field("id", &self.inner.id)
            .finish()
    }
}

/// Connection options; `.await` it to connect.
///
/// ```no_run
/// # async fn f() -> Result<(), tether::Error> {
/// let client = tether::Client::connect("vsoa://127.0.0.1:3005")
///     .password("secret")
///     .timeout(std::time::Duration::from_secs(3))
///     .await?;
/// # Ok(()) }
/// ```
#[must_use = "a Connect does nothing until awaited"]
pub struct Connect {
    url: String,
    password: Option<Secret>,
    timeout: Duration,
    send_timeout: Duration,
    queue_bytes: usize,
    buffer: usize,
    stall_timeout: Duration,
    quick: bool,
    position_servers: Vec<SocketAddr>,
}

impl std::fmt::Debug for Connect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connect")
            .field("url", &self.url)
            .field("password", &self.password)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Connect {
    /// Log in with this password.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(Secret::new(password));
        self
    }

    /// Time for TCP connect plus handshake (default 10 s).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// How long a send may wait for the outbound queue before the connection is given up
    /// (default 5 s).
    pub fn send_timeout(mut self, t: Duration) -> Self {
        self.send_timeout = t;
        self
    }

    /// Messages buffered per subscription and for the datagram stream (default 65 536, as
    /// async-nats).
    pub fn buffer(mut self, messages: usize) -> Self {
        self.buffer = messages.max(1);
        self
    }

    /// How long the connection waits for a full stream buffer to make room before that
    /// stream starts dropping (and counting) messages until it catches up (default 1 s).
    /// While it waits, nothing else on the connection, RPC replies included, is read.
    pub fn stall_timeout(mut self, t: Duration) -> Self {
        self.stall_timeout = t;
        self
    }

    /// Position servers that resolve a server *name* in the URL (default: VSOA's
    /// `VSOA_POS_SERVER`, then `/etc/vsoa.pos`).
    pub fn position_servers(mut self, servers: Vec<SocketAddr>) -> Self {
        self.position_servers = servers;
        self
    }

    /// Whether to open the quick (UDP) channel (default true): advertise a UDP port so the
    /// server can send quick publishes and datagrams, and allow [`Client::datagram_quick`].
    pub fn quick(mut self, on: bool) -> Self {
        self.quick = on;
        self
    }

    async fn run(self) -> Result<Client, Error> {
        let url: VsoaUrl = self.url.parse()?;
        let entry = url.resolve(&self.position_servers).await?;
        if entry.security {
            return Err(Error::Lookup {
                name: url.to_string(),
                tried: format!(
                    "it resolves to the TLS server {}, and this client does not speak TLS yet",
                    entry.socket_addr()
                ),
            });
        }
        let addr = entry.socket_addr();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let timed_out = || Error::ConnectTimeout {
            addr,
            timeout: self.timeout,
        };
        let mut stream = tokio::time::timeout_at(deadline, TcpStream::connect(addr))
            .await
            .map_err(|_| timed_out())?
            .map_err(|source| Error::Unreachable { addr, source })?;
        let _ = stream.set_nodelay(true);

        let udp = if self.quick {
            let local = stream
                .local_addr()
                .map_err(|source| Error::Unreachable { addr, source })?;
            let udp = quick::open(local.ip(), addr)
                .await
                .map_err(|source| Error::Unreachable { addr, source })?;
            Some(udp)
        } else {
            None
        };
        let tunid = match &udp {
            Some(u) => u.local_addr().map(|a| a.port()).unwrap_or(0),
            None => 0,
        };
        let mut hello = Packet::new(PacketType::ServInfo).with_tunid(tunid);
        if let Some(pw) = &self.password {
            hello.param = serde_json::to_vec(&serde_json::json!({ "passwd": pw.expose() }))?.into();
        }
        let hello = hello.to_bytes()?;
        let mut buf = BytesMut::with_capacity(4096);
        let reply = tokio::time::timeout_at(deadline, async {
            stream.write_all(&hello).await?;
            let mut decoder = Decoder::new();
            loop {
                if let Some(p) = decoder
                    .decode(&mut buf)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?
                {
                    return Ok::<Packet, std::io::Error>(p);
                }
                if stream.read_buf(&mut buf).await? == 0 {
                    return Err(std::io::ErrorKind::UnexpectedEof.into());
                }
            }
        })
        .await
        .map_err(|_| timed_out())?
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::InvalidData => Error::Malformed {
                addr,
                detail: e.to_string(),
            },
            std::io::ErrorKind::UnexpectedEof => Error::Malformed {
                addr,
                detail: "the server closed the connection during the handshake".into(),
            },
            _ => Error::Unreachable { addr, source: e },
        })?;

        if reply.ptype != PacketType::ServInfo || !reply.is_reply() {
            return Err(Error::Malformed {
                addr,
                detail: format!("expected a SERVINFO reply, got {:?}", reply.ptype),
            });
        }
        if reply.status == Status::PASSWORD {
            return Err(Error::WrongPassword { addr });
        }
        if !reply.status.is_success() {
            return Err(Error::Refused {
                what: "the login".into(),
                status: reply.status,
            });
        }
        let id = match reply.data.first_chunk::<4>() {
            Some(b) if reply.data.len() == 4 || reply.data.len() == 6 => u32::from_be_bytes(*b),
            _ => {
                return Err(Error::Malformed {
                    addr,
                    detail: format!(
                        "handshake data of {} bytes, expected 4 or 6",
                        reply.data.len()
                    ),
                })
            }
        };
        // The 6-byte form names the server's quick port when it differs from the TCP port.
        if let (Some(udp), Some(port)) = (&udp, reply.data.get(4..6)) {
            let port = u16::from_be_bytes([port[0], port[1]]);
            udp.connect(SocketAddr::new(addr.ip(), port))
                .await
                .map_err(|source| Error::Unreachable { addr, source })?;
        }
        let info = if reply.param.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&reply.param).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&reply.param).into_owned())
            })
        };

        let (outbound, writer) = Outbound::new(self.queue_bytes, self.send_timeout);
        let shared = Arc::new(Shared {
            addr,
            outbound,
            pending: Mutex::new(HashMap::new()),
            subs: Mutex::new(subscription::Table::default()),
            datagrams: Mutex::new(None),
            buffer: self.buffer,
            stall_timeout: self.stall_timeout,
            next_seqno: AtomicU32::new(1),
            priority: AtomicU8::new(0),
            quick: udp.map(Arc::new),
        });
        let (rd, wr) = stream.into_split();
        tokio::spawn(writer.run(wr));
        // Bytes after the handshake reply are kept: Python loses them (vsoa.md §16.4).
        tokio::spawn(connection::read_loop(shared.clone(), rd, buf));
        if let Some(udp) = &shared.quick {
            tokio::spawn(quick::read_loop(shared.clone(), udp.clone()));
        }
        tracing::debug!(%addr, id, "connected");
        Ok(Client {
            inner: Arc::new(Inner {
                shared,
                info,
                id,
                datagrams_taken: Default::default(),
            }),
        })
    }
}

impl IntoFuture for Connect {
    type Output = Result<Client, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

impl Client {
    /// Starts connecting to `url` (`vsoa://HOST:PORT`, or `vsoa://NAME` resolved through
    /// the position service; a path is ignored). Set options on
    /// the returned [`Connect`], then `.await` it.
    pub fn connect(url: &str) -> Connect {
        Connect {
            url: url.to_string(),
            password: None,
            timeout: DEFAULT_CONNECT_TIMEOUT,
            send_timeout: Duration::from_secs(5),
            queue_bytes: 4 << 20,
            buffer: DEFAULT_BUFFER,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            quick: true,
            position_servers: Vec::new(),
        }
    }

    /// The server's handshake info (JSON; a non-JSON info arrives as a string).
    pub fn server_info(&self) -> &serde_json::Value {
        &self.inner.info
    }

    /// The id the server assigned in the handshake.
    pub fn id(&self) -> u32 {
        self.inner.id
    }

    /// The server's address.
    pub fn server_addr(&self) -> SocketAddr {
        self.inner.shared.addr
    }

    /// The priority the server last announced (QOSSETUP), 0 by default.
    pub fn priority(&self) -> u8 {
        self.inner.shared.priority.load(Ordering::Relaxed)
    }

    /// Whether the connection has ended.
    pub fn is_closed(&self) -> bool {
        self.inner.shared.outbound.is_killed()
    }

    /// Resolves when the connection ends, with the reason.
    pub async fn closed(&self) -> Arc<str> {
        self.inner.shared.outbound.killed().await
    }

    /// Calls (and pings, subscribes) waiting for their reply.
    pub fn pending_requests(&self) -> usize {
        self.inner
            .shared
            .pending
            .lock()
            .map(|p| p.len())
            .unwrap_or(0)
    }

    /// Sends a NOOP packet (never answered): traffic that keeps TCP's retransmission going
    /// while requests are pending (VSOA's turbo ping).
    pub async fn noop(&self) -> Result<(), Error> {
        let bytes = Packet::new(PacketType::Noop).to_bytes()?;
        self.inner
            .shared
            .outbound
            .send(bytes)
            .await
            .map_err(|_| self.inner.shared.closed_error())
    }

    /// Ends the connection now, without flushing; pending calls fail with `reason`.
    pub fn abort(&self, reason: &str) {
        self.inner.shared.outbound.kill(reason);
    }

    /// Starts an RPC to `url`; set method, param, data and timeout on the returned
    /// [`Call`], then `.await` it (or call [`Call::send`]).
    pub fn call(&self, url: &str) -> Call<'_> {
        Call {
            client: self,
            url: url.to_string(),
            method: Method::Get,
            payload: Payload::empty(),
            timeout: DEFAULT_CALL_TIMEOUT,
        }
    }

    /// Sends a PINGECHO and waits for its echo; returns the round-trip time.
    pub async fn ping(&self, timeout: Duration) -> Result<Duration, Error> {
        let start = Instant::now();
        self.request(Packet::new(PacketType::PingEcho), "ping", timeout)
            .await?;
        Ok(start.elapsed())
    }

    /// Sends a datagram over the TCP connection.
    pub async fn datagram(&self, url: &str, payload: Payload) -> Result<(), Error> {
        check_url(url.as_bytes())?;
        let bytes = Packet::new(PacketType::Datagram)
            .with_url(Bytes::copy_from_slice(url.as_bytes()))
            .with_param(payload.param)
            .with_data(payload.data)
            .to_bytes()?;
        self.inner
            .shared
            .outbound
            .send(bytes)
            .await
            .map_err(|_| self.inner.shared.closed_error())
    }

    /// Connects to the stream a reply announced (its `tunid`), within 10 s.
    pub async fn connect_stream(&self, tunid: u16) -> Result<crate::DataStream, Error> {
        self.connect_stream_with_timeout(tunid, crate::stream::DEFAULT_CLIENT_STREAM_TIMEOUT)
            .await
    }

    /// Like [`Client::connect_stream`] with another timeout.
    pub async fn connect_stream_with_timeout(
        &self,
        tunid: u16,
        timeout: Duration,
    ) -> Result<crate::DataStream, Error> {
        crate::stream::connect(self.inner.shared.addr, tunid, timeout).await
    }

    /// Sends a datagram over the quick (UDP) channel: no acknowledgement, no ordering, at
    /// most 65 487 bytes of url + param + data.
    pub async fn datagram_quick(&self, url: &str, payload: Payload) -> Result<(), Error> {
        check_url(url.as_bytes())?;
        let udp = self
            .inner
            .shared
            .quick
            .as_ref()
            .ok_or(Error::NoQuickChannel)?;
        let packet = Packet::new(PacketType::Datagram)
            .with_url(Bytes::copy_from_slice(url.as_bytes()))
            .with_param(payload.param)
            .with_data(payload.data)
            .with_seqno(self.inner.id);
        packet
            .check_len(tether_wire::vsoa::MAX_QUICK_PACKET_LEN - tether_wire::vsoa::HEADER_LEN)?;
        udp.send(&packet.to_bytes()?)
            .await
            .map_err(|e| Error::Closed {
                reason: Arc::from(format!("quick send failed: {e}")),
            })?;
        Ok(())
    }

    /// The stream of datagrams the server sends. The first call takes it; later calls get
    /// `None`. Datagrams that arrive while nobody holds it are dropped and logged.
    pub fn datagrams(&self) -> Option<Datagrams> {
        if self.inner.datagrams_taken.swap(true, Ordering::SeqCst) {
            return None;
        }
        let shared = &self.inner.shared;
        let (tx, rx) = mpsc::channel(shared.buffer);
        let (sink, lost) = Sink::new(tx);
        let mut slot = shared.datagrams.lock().unwrap_or_else(|e| e.into_inner());
        // The reader kills before it clears this slot under the same lock, so checking here
        // guarantees the stream ends with the connection (dropping `sink` ends it at once).
        if !shared.outbound.is_killed() {
            *slot = Some(sink);
        }
        Some(Datagrams::new(rx, lost))
    }

    /// Subscribes to `urls` and returns the stream of matching publishes. One URL is sent
    /// in the URL field, several as a JSON list. The subscription is in place on the
    /// server when this returns; messages published after that are not missed.
    pub async fn subscribe<I, S>(&self, urls: I) -> Result<Subscription, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        subscription::subscribe(self.clone(), urls.into_iter().map(Into::into).collect()).await
    }

    /// Closes the connection after what is queued has been written (waiting at most 1 s).
    /// Pending calls fail with [`Error::Closed`]; streams end.
    pub async fn close(&self) {
        let shared = &self.inner.shared;
        shared.outbound.close();
        let _ = tokio::time::timeout(Duration::from_secs(1), shared.outbound.killed()).await;
    }

    fn next_seqno(&self) -> u32 {
        self.inner.shared.next_seqno.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends `packet` with a fresh seqno and waits for the reply with that seqno.
    async fn request(
        &self,
        mut packet: Packet,
        what: &str,
        timeout: Duration,
    ) -> Result<Packet, Error> {
        let shared = &self.inner.shared;
        let (tx, rx) = oneshot::channel();
        {
            let mut pending = shared.pending.lock().map_err(|_| shared.closed_error())?;
            if shared.outbound.is_killed() {
                return Err(shared.closed_error());
            }
            // Skip seqnos still pending after a wrap-around.
            let mut seqno = self.next_seqno();
            while pending.contains_key(&seqno) {
                seqno = self.next_seqno();
            }
            packet.seqno = seqno;
            pending.insert(seqno, tx);
        }
        let seqno = packet.seqno;
        let forget = || {
            if let Ok(mut p) = shared.pending.lock() {
                p.remove(&seqno);
            }
        };
        let bytes = match packet.to_bytes() {
            Ok(b) => b,
            Err(e) => {
                forget();
                return Err(e.into());
            }
        };
        if shared.outbound.send(bytes).await.is_err() {
            forget();
            return Err(shared.closed_error());
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(shared.closed_error()),
            Err(_) => {
                forget();
                Err(Error::Timeout {
                    addr: shared.addr,
                    what: what.to_string(),
                    timeout,
                })
            }
        }
    }
}

/// An RPC being prepared; `.await` it or call [`Call::send`].
#[must_use = "a Call does nothing until awaited"]
#[derive(Debug)]
pub struct Call<'a> {
    client: &'a Client,
    url: String,
    method: Method,
    payload: Payload,
    timeout: Duration,
}

impl<'a> Call<'a> {
    /// Method SET.
    pub fn set(mut self) -> Self {
        self.method = Method::Set;
        self
    }

    /// Method GET (the default).
    pub fn get(mut self) -> Self {
        self.method = Method::Get;
        self
    }

    /// The method.
    pub fn method(mut self, m: Method) -> Self {
        self.method = m;
        self
    }

    /// JSON param.
    pub fn json<T: Serialize + ?Sized>(mut self, value: &T) -> Result<Self, Error> {
        self.payload.param = serde_json::to_vec(value)?.into();
        Ok(self)
    }

    /// Raw param bytes, sent as they are.
    pub fn param(mut self, param: impl Into<Bytes>) -> Self {
        self.payload.param = param.into();
        self
    }

    /// Binary data.
    pub fn data(mut self, data: impl Into<Bytes>) -> Self {
        self.payload.data = data.into();
        self
    }

    /// Param and data at once.
    pub fn payload(mut self, payload: Payload) -> Self {
        self.payload = payload;
        self
    }

    /// How long to wait for the reply (default 60 s).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Sends the call and waits for its reply.
    pub async fn send(self) -> Result<Response, Error> {
        check_url(self.url.as_bytes())?;
        let mut packet = Packet::new(PacketType::Rpc)
            .with_url(Bytes::from(self.url.clone().into_bytes()))
            .with_param(self.payload.param)
            .with_data(self.payload.data);
        if self.method == Method::Set {
            packet.flags = Flags::SET;
        }
        let what = format!("RPC {}", self.url);
        let reply = self.client.request(packet, &what, self.timeout).await?;
        Ok(Response {
            status: reply.status,
            payload: Payload {
                param: reply.param,
                data: reply.data,
            },
            tunid: if reply.flags.contains(Flags::TUNNEL) {
                reply.tunid
            } else {
                0
            },
        })
    }
}

impl<'a> IntoFuture for Call<'a> {
    type Output = Result<Response, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.send())
    }
}
