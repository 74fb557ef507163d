//! The VSOA client: one TCP connection, many calls in flight, subscriptions as streams.
//!
//! [`Client::connect`] performs the SERVINFO handshake itself, then hands the socket to two
//! tasks: the shared writer of `outbound.rs`, and a reader (`connection.rs`) that routes
//! each incoming packet to the pending call with its seqno, to the subscriptions whose
//! patterns match, or to the datagram stream. When the connection ends, for any reason,
//! every pending call fails at once with [`Error::Closed`] and every stream ends.

mod call;
mod connect;
mod connection;
mod login;
mod options;
mod quick;
mod robot;
mod subscription;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tether_wire::vsoa::{Packet, PacketType, MAX_BODY_LEN, MAX_QUICK_BODY_LEN};
use tokio::sync::{mpsc, oneshot};

pub use call::{Call, Response};
pub use connect::Connect;
pub use options::{ConnectOptions, DEFAULT_QUEUE_BYTES, DEFAULT_SEND_TIMEOUT};
pub use robot::{fetch, Fetch, Robot, RobotBuilder, RobotCall, RobotEvent, RobotSubscription};
use subscription::Sink;
pub use subscription::{Datagrams, Message, Subscription};

use crate::outbound::Outbound;
use crate::{CloseReason, Error, Payload};

/// Default time to connect and complete the handshake.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default time a call waits for its reply (as VSOA's clients).
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Default longest wait for room in a full stream buffer (see [`Connect::stall_timeout`]).
pub const DEFAULT_STALL_TIMEOUT: Duration = Duration::from_secs(1);
/// Default number of messages buffered per subscription (and for datagrams).
pub const DEFAULT_BUFFER: usize = 65_536;

type Waiter = oneshot::Sender<Packet>;

/// One logged-in link to a server: what the client handles and the link's reader task
/// share.
struct Link {
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
    /// The TLS setup of the link, reused for streams.
    tls: Option<crate::tls::ClientTls>,
    /// How long `close` waits for the queue (`None`: 1 s).
    linger: Option<Duration>,
}

impl Link {
    /// Queues encoded bytes; a closed connection is reported with its reason.
    async fn send(&self, bytes: Bytes) -> Result<(), Error> {
        self.outbound
            .send(bytes)
            .await
            .map_err(|_| self.closed_error())
    }

    fn closed_error(&self) -> Error {
        Error::Closed {
            reason: self.outbound.close_reason().unwrap_or(CloseReason::Closed),
        }
    }
}

struct Inner {
    shared: Arc<Link>,
    info: serde_json::Value,
    id: u32,
    datagrams_taken: std::sync::atomic::AtomicBool,
    server_cert: Option<Arc<crate::tls::PeerCertificate>>,
    /// How this connection was made, for [`Client::reconnect`].
    origin: Connect,
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

impl Client {
    /// Starts connecting to `url` (`vsoa://HOST:PORT`, or `vsoa://NAME` resolved through
    /// the position service; a path is ignored). Set options on
    /// the returned [`Connect`], then `.await` it.
    pub fn connect(url: &str) -> Connect {
        Connect::new(url)
    }

    /// The server's handshake info (JSON; a non-JSON info arrives as a string).
    pub fn server_info(&self) -> &serde_json::Value {
        &self.inner.info
    }

    /// The certificate the server presented, on a TLS connection.
    pub fn peer_certificate(&self) -> Option<&crate::tls::PeerCertificate> {
        self.inner.server_cert.as_deref()
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
    pub async fn closed(&self) -> CloseReason {
        self.inner.shared.outbound.killed().await
    }

    /// Connects again with the same URL and options (VSOA's `connect` on a client that lost
    /// its server), as a new [`Client`]: `client.reconnect().await`. The URL is resolved
    /// again (a position-service name may now point elsewhere). Subscriptions are this
    /// connection's; the [`crate::Robot`] re-subscribes and reconnects by itself.
    pub fn reconnect(&self) -> Connect {
        self.inner.origin.clone()
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
        self.inner
            .shared
            .send(Packet::new(PacketType::Noop).to_bytes()?)
            .await
    }

    /// Ends the connection now, without flushing; pending calls fail with `reason`.
    pub fn abort(&self, reason: &str) {
        self.inner.shared.outbound.kill(CloseReason::local(reason));
    }

    /// Starts an RPC to `url`; set method, param, data and timeout on the returned
    /// [`Call`], then `.await` it (or call [`Call::send`]).
    pub fn call(&self, url: &str) -> Call<'_> {
        Call::new(self, url)
    }

    /// Sends a PINGECHO and waits for its echo; returns the round-trip time.
    pub async fn ping(&self, timeout: Duration) -> Result<Duration, Error> {
        let start = Instant::now();
        self.request(
            Packet::new(PacketType::PingEcho),
            |_| "ping".into(),
            timeout,
        )
        .await?;
        Ok(start.elapsed())
    }

    /// Sends a datagram over the TCP connection.
    pub async fn datagram(&self, url: &str, payload: Payload) -> Result<(), Error> {
        let bytes = payload
            .packet(PacketType::Datagram, url, MAX_BODY_LEN)?
            .to_bytes()?;
        self.inner.shared.send(bytes).await
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
        let shared = &self.inner.shared;
        crate::stream::connect(shared.addr, tunid, timeout, shared.tls.as_ref()).await
    }

    /// Sends a datagram over the quick (UDP) channel: no acknowledgement, no ordering, at
    /// most 65 487 bytes of url + param + data.
    pub async fn datagram_quick(&self, url: &str, payload: Payload) -> Result<(), Error> {
        let udp = self
            .inner
            .shared
            .quick
            .as_ref()
            .ok_or(Error::NoQuickChannel)?;
        let mut packet = payload.packet(PacketType::Datagram, url, MAX_QUICK_BODY_LEN)?;
        packet.seqno = self.inner.id;
        udp.send(&packet.to_bytes()?)
            .await
            .map_err(|e| Error::Closed {
                reason: CloseReason::WriteFailed(format!("quick send: {e}").into()),
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
        self.subscribe_with_timeout(urls, DEFAULT_CALL_TIMEOUT)
            .await
    }

    /// [`Client::subscribe`], waiting at most `timeout` for the server's answer
    /// (`Error::Timeout` after it; nothing stays subscribed on this side).
    pub async fn subscribe_with_timeout<I, S>(
        &self,
        urls: I,
        timeout: Duration,
    ) -> Result<Subscription, Error>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let urls = urls.into_iter().map(Into::into).collect();
        subscription::subscribe(self.clone(), urls, timeout).await
    }

    /// Closes the connection after what is queued has been written (waiting at most the
    /// linger time, 1 s by default; with a zero linger at once, and the connection resets).
    /// Pending calls fail with [`Error::Closed`]; streams end.
    pub async fn close(&self) {
        let shared = &self.inner.shared;
        shared.outbound.close();
        let wait = shared.linger.unwrap_or(Duration::from_secs(1));
        let _ = tokio::time::timeout(wait, shared.outbound.killed()).await;
    }

    fn next_seqno(&self) -> u32 {
        self.inner.shared.next_seqno.fetch_add(1, Ordering::Relaxed)
    }

    /// Sends `packet` with a fresh seqno and waits up to `timeout` for its reply. `what`
    /// names the request in a timeout error; it is only called then.
    async fn request(
        &self,
        mut packet: Packet,
        what: impl FnOnce(&Packet) -> String,
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
        if let Err(e) = shared.send(bytes).await {
            forget();
            return Err(e);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(reply)) => Ok(reply),
            Ok(Err(_)) => Err(shared.closed_error()),
            Err(_) => {
                forget();
                Err(Error::Timeout {
                    addr: shared.addr,
                    what: what(&packet),
                    timeout,
                })
            }
        }
    }
}
