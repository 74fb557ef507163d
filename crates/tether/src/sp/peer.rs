//! One end of a socket_protocol connection: the link task (a reader and a writer), dispatch
//! of what arrives, the receive buffer, sends that say whether they were written, and the
//! client's reconnect loop (docs/protocols/socket-protocol.md §6-§8).

use std::collections::VecDeque;
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use serde_json::Value;
use tether_wire::sp::{did, sid, status, AuthState, Decoder, Ids, Item, Message};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot, watch, Notify, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::auth::{client_step, seed_request, ClientStep, ServerAuth};
use super::definitions::{brief, Route};
use super::{Config, Endpoint, SpError};
use crate::framed::{Decode, Framed};
use crate::listening::Shutdown;
use crate::{CloseReason, Error};

impl Decode for Decoder {
    type Item = Item;
    type Error = tether_wire::sp::DecodeError;
    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Item>, Self::Error> {
        Decoder::decode(self, buf)
    }
}

/// Which end of the link this is: the client starts the channel name exchange and the
/// authentication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The side that connected.
    Client,
    /// The side that accepted.
    Server,
}

/// What a peer counted since it was made.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Intact messages received.
    pub received: u64,
    /// Frames written (messages, answers and the built-in exchanges).
    pub sent: u64,
    /// Damaged frames received (answered status 5 where they name their ids).
    pub checksum_errors: u64,
    /// Messages refused because the connection was not trusted (answered status 3).
    pub refused_untrusted: u64,
    /// Messages nothing knew (answered status 4).
    pub unknown: u64,
    /// Buffered messages dropped, oldest first, because the receive buffer was full.
    pub dropped: u64,
    /// Keys refused (server side) or authentications that failed (client side).
    pub auth_failures: u64,
}

#[derive(Default)]
struct Counters {
    received: AtomicU64,
    sent: AtomicU64,
    checksum_errors: AtomicU64,
    refused_untrusted: AtomicU64,
    unknown: AtomicU64,
    dropped: AtomicU64,
    auth_failures: AtomicU64,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// A frame for the writer; `done` hears once it is written.
struct Out {
    frame: Bytes,
    done: Option<oneshot::Sender<()>>,
}

/// The current connection of a peer.
#[derive(Clone)]
struct Link {
    tx: mpsc::Sender<Out>,
    kill: Arc<Notify>,
}

impl Link {
    async fn send(&self, m: &Message) -> Result<(), CloseReason> {
        let frame = m
            .to_bytes()
            .map_err(|e| CloseReason::local(e.to_string()))?;
        self.tx
            .send(Out { frame, done: None })
            .await
            .map_err(|_| CloseReason::Closed)
    }
}

struct Inner {
    endpoint: Endpoint,
    role: Role,
    addr: Option<SocketAddr>,
    local: Option<SocketAddr>,
    /// The bridge's subscriber for this peer (see `bridge`).
    subscriber: tokio::sync::Mutex<Option<Arc<crate::LocalSubscriber>>>,
    link: watch::Sender<Option<Link>>,
    auth: watch::Sender<AuthState>,
    server_auth: Mutex<ServerAuth>,
    auth_failure: Mutex<Option<&'static str>>,
    channel: Mutex<Option<Arc<str>>>,
    buffer: Mutex<VecDeque<Message>>,
    arrived: Notify,
    closing: watch::Sender<bool>,
    kill_reason: Mutex<Option<CloseReason>>,
    ended: watch::Sender<Option<CloseReason>>,
    counters: Arc<Counters>,
}

/// One end of a connection (see the module docs of [`super`]). Cheap to clone.
#[derive(Clone)]
pub struct Peer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("role", &self.inner.role)
            .field("addr", &self.inner.addr)
            .field("channel", &self.channel_name())
            .field("auth", &self.auth_state())
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The ids the built-in exchanges use; they need no trust.
fn is_builtin(service_id: u32) -> bool {
    matches!(
        service_id,
        sid::AUTH_REQUEST
            | sid::AUTH_RESPONSE
            | sid::CHANNEL_NAME_REQUEST
            | sid::CHANNEL_NAME_RESPONSE
    )
}

impl Peer {
    pub(crate) fn new(
        endpoint: Endpoint,
        role: Role,
        addr: Option<SocketAddr>,
        local: Option<SocketAddr>,
    ) -> Self {
        let channel = endpoint.config.channel_name.clone();
        Peer {
            inner: Arc::new(Inner {
                endpoint,
                role,
                addr,
                local,
                subscriber: tokio::sync::Mutex::new(None),
                link: watch::Sender::new(None),
                auth: watch::Sender::new(AuthState::Untrusted),
                server_auth: Mutex::default(),
                auth_failure: Mutex::new(None),
                channel: Mutex::new(channel),
                buffer: Mutex::default(),
                arrived: Notify::new(),
                closing: watch::Sender::new(false),
                kill_reason: Mutex::new(None),
                ended: watch::Sender::new(None),
                counters: Arc::default(),
            }),
        }
    }

    fn config(&self) -> &Config {
        &self.inner.endpoint.config
    }

    /// Client or server.
    pub fn role(&self) -> Role {
        self.inner.role
    }

    /// The other side's address, when the transport has one.
    pub fn remote_addr(&self) -> Option<SocketAddr> {
        self.inner.addr
    }

    /// This side's address of the connection (server-side peers).
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.inner.local
    }

    pub(crate) fn inner_subscriber(
        &self,
    ) -> &tokio::sync::Mutex<Option<Arc<crate::LocalSubscriber>>> {
        &self.inner.subscriber
    }

    /// The channel name both sides agreed on (or this side's own, before the exchange).
    pub fn channel_name(&self) -> Option<String> {
        lock(&self.inner.channel).as_deref().map(str::to_owned)
    }

    /// The authentication state (0-4 as the seed numbers them).
    pub fn auth_state(&self) -> AuthState {
        *self.inner.auth.borrow()
    }

    /// Whether the connection is trusted (the seed's `check_authentification_state`).
    pub fn is_trusted(&self) -> bool {
        self.auth_state() == AuthState::Trusted
    }

    /// Whether there is a link now (the seed's `is_connected`).
    pub fn is_connected(&self) -> bool {
        self.inner.link.borrow().is_some()
    }

    /// Connected and, if this side has a secret, trusted (the seed's
    /// `connection_established`).
    pub fn connection_established(&self) -> bool {
        self.is_connected() && (self.config().secret.is_none() || self.is_trusted())
    }

    /// What this peer counted.
    pub fn stats(&self) -> Stats {
        let c = &self.inner.counters;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Stats {
            received: n(&c.received),
            sent: n(&c.sent),
            checksum_errors: n(&c.checksum_errors),
            refused_untrusted: n(&c.refused_untrusted),
            unknown: n(&c.unknown),
            dropped: n(&c.dropped),
            auth_failures: n(&c.auth_failures),
        }
    }

    /// Messages waiting in the receive buffer.
    pub fn buffered(&self) -> usize {
        lock(&self.inner.buffer).len()
    }

    /// Sends a message with status okay; `.status(s)` and `.timeout(t)` change that. It
    /// resolves `Ok` once the frame is written to the connection (the seed's `send`
    /// returning `True`), after waiting, within the timeout (default 2 s), for a link
    /// (a client reconnecting) and, if this side has a secret and the message is not
    /// whitelisted, for trust. An error says why it was not written (a frame whose
    /// timeout ran out is not written later).
    pub fn send(&self, service_id: u32, data_id: u32, data: Value) -> SendBuilder<'_> {
        SendBuilder {
            peer: self,
            message: Message::new(service_id, data_id, data),
            timeout: None,
        }
    }

    /// The next message with this sid and did that no callback took, waiting up to
    /// `timeout` (the seed's `receive`); `None` if none came.
    pub async fn receive(
        &self,
        service_id: u32,
        data_id: u32,
        timeout: Duration,
    ) -> Option<Message> {
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.inner.arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut buf = lock(&self.inner.buffer);
                if let Some(i) = buf
                    .iter()
                    .position(|m| m.service_id == service_id && m.data_id == data_id)
                {
                    return buf.remove(i);
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return None;
            }
        }
    }

    /// Authenticates this client at the server within `timeout` (the seed's
    /// `authentificate`; `Ok` is its `True`). Needs a secret on this side.
    pub async fn authenticate(&self, timeout: Duration) -> Result<(), Error> {
        if self.inner.role != Role::Client {
            return Err(SpError::AuthFailed("only the client side authenticates").into());
        }
        if self.config().secret.is_none() {
            return Err(SpError::AuthFailed("this side has no secret").into());
        }
        let deadline = Instant::now() + timeout;
        let link = self.wait_ready(false, deadline, timeout).await?;
        *lock(&self.inner.auth_failure) = None;
        self.set_auth(AuthState::SeedRequested);
        link.send(&seed_request())
            .await
            .map_err(|reason| SpError::NotSent {
                what: "the seed request".into(),
                reason,
            })?;
        let mut rx = self.inner.auth.subscribe();
        let verdict = tokio::time::timeout_at(
            deadline,
            rx.wait_for(|s| matches!(s, AuthState::Trusted | AuthState::Untrusted)),
        )
        .await;
        match verdict {
            Ok(Ok(s)) if *s == AuthState::Trusted => Ok(()),
            Ok(_) => {
                bump(&self.inner.counters.auth_failures);
                let why = lock(&self.inner.auth_failure)
                    .take()
                    .unwrap_or("the connection ended during the exchange");
                Err(SpError::AuthFailed(why).into())
            }
            Err(_) => {
                bump(&self.inner.counters.auth_failures);
                Err(SpError::AuthTimeout(timeout).into())
            }
        }
    }

    /// Drops the current link (the seed's `reconnect`): a client made by
    /// [`Endpoint::connect`](super::Endpoint::connect) connects again, any other peer ends.
    pub fn reconnect(&self) {
        self.kill(CloseReason::local("reconnect asked for"));
    }

    /// Closes the peer for good, after writing what is queued; a client stops reconnecting.
    pub fn close(&self) {
        self.inner.closing.send_replace(true);
        self.kill(CloseReason::Closed);
    }

    /// Resolves when the peer is over for good (its stream ended, or it was closed), with
    /// the reason.
    pub async fn closed(&self) -> CloseReason {
        let mut rx = self.inner.ended.subscribe();
        let r = rx.wait_for(Option::is_some).await;
        match r {
            Ok(r) => r.clone().unwrap_or(CloseReason::Closed),
            Err(_) => CloseReason::Closed,
        }
    }

    fn kill(&self, reason: CloseReason) {
        if let Some(link) = self.inner.link.borrow().as_ref() {
            *lock(&self.inner.kill_reason) = Some(reason);
            link.kill.notify_one();
        }
    }

    fn is_closing(&self) -> bool {
        *self.inner.closing.borrow()
    }

    pub(crate) fn finish(&self, reason: CloseReason) {
        tracing::debug!("socket_protocol: {} over: {reason}", self.label());
        self.inner.ended.send_replace(Some(reason));
    }

    fn set_auth(&self, state: AuthState) {
        let old = self.inner.auth.send_replace(state);
        if old != state {
            tracing::debug!("socket_protocol: {}: {old} -> {state}", self.label());
        }
    }

    /// The name logs give this connection: its channel name and its address.
    fn label(&self) -> String {
        match (self.channel_name(), self.inner.addr) {
            (Some(c), Some(a)) => format!("{c} ({a})"),
            (Some(c), None) => c,
            (None, Some(a)) => a.to_string(),
            (None, None) => "peer".into(),
        }
    }

    fn describe(&self, m: &Ids) -> String {
        self.inner
            .endpoint
            .read_defs()
            .describe(m.service_id, m.data_id, m.status)
    }

    /// Waits for a link (and trust, if `needs_trust`) until `deadline`.
    async fn wait_ready(
        &self,
        needs_trust: bool,
        deadline: Instant,
        timeout: Duration,
    ) -> Result<Link, SpError> {
        let mut link_rx = self.inner.link.subscribe();
        let mut auth_rx = self.inner.auth.subscribe();
        let mut ended_rx = self.inner.ended.subscribe();
        loop {
            if self.is_closing() {
                return Err(SpError::Closed);
            }
            if let Some(reason) = ended_rx.borrow_and_update().clone() {
                return Err(SpError::NotSent {
                    what: "the message".into(),
                    reason,
                });
            }
            let link = link_rx.borrow_and_update().clone();
            let trusted = *auth_rx.borrow_and_update() == AuthState::Trusted;
            if let Some(l) = &link {
                if !needs_trust || trusted {
                    return Ok(l.clone());
                }
            }
            let changed = tokio::select! {
                r = link_rx.changed() => r.is_ok(),
                r = auth_rx.changed() => r.is_ok(),
                r = ended_rx.changed() => r.is_ok(),
                () = tokio::time::sleep_until(deadline) => false,
            };
            if !changed {
                return Err(match link {
                    None => SpError::NotConnected { waited: timeout },
                    Some(_) => SpError::NotTrusted { waited: timeout },
                });
            }
        }
    }

    async fn send_message(&self, m: Message, timeout: Duration) -> Result<(), Error> {
        let deadline = Instant::now() + timeout;
        let ids = Ids::from(&m);
        let what = || self.describe(&ids);
        let frame = m.to_bytes().map_err(SpError::from)?;
        let needs_trust = self.config().secret.is_some()
            && !is_builtin(m.service_id)
            && !self
                .inner
                .endpoint
                .read_defs()
                .is_whitelisted(m.service_id, m.data_id);
        let link = self.wait_ready(needs_trust, deadline, timeout).await?;
        let (done, written) = oneshot::channel();
        let out = Out {
            frame,
            done: Some(done),
        };
        let not_sent = |reason| SpError::NotSent {
            what: what(),
            reason,
        };
        match tokio::time::timeout_at(deadline, link.tx.send(out)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => return Err(not_sent(self.end_reason()).into()),
            Err(_) => {
                return Err(SpError::SendTimeout {
                    what: what(),
                    waited: timeout,
                }
                .into())
            }
        }
        match tokio::time::timeout_at(deadline, written).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(_)) => Err(not_sent(self.end_reason()).into()),
            Err(_) => Err(SpError::SendTimeout {
                what: what(),
                waited: timeout,
            }
            .into()),
        }
    }

    fn end_reason(&self) -> CloseReason {
        self.inner
            .ended
            .borrow()
            .clone()
            .unwrap_or_else(|| CloseReason::local("the connection ended before it was written"))
    }

    /// The client's loop: run the link, and when it drops connect again with backoff,
    /// until closed.
    pub(crate) async fn keep_dialing(self, addr: SocketAddr, first: Box<dyn Io>) {
        let mut io = Some(first);
        let mut backoff = self.config().reconnect;
        let mut closing = self.inner.closing.subscribe();
        loop {
            if let Some(s) = io.take() {
                let reason = self.run_link(s).await;
                if self.is_closing() {
                    self.finish(reason);
                    return;
                }
                tracing::info!("socket_protocol: lost {addr} ({reason}); reconnecting");
            }
            tokio::select! {
                () = tokio::time::sleep(backoff.next_delay()) => {}
                _ = closing.wait_for(|c| *c) => {
                    self.finish(CloseReason::Closed);
                    return;
                }
            }
            match dial(self.config(), addr).await {
                Ok(s) => {
                    backoff.reset();
                    io = Some(s);
                }
                Err(e) => tracing::debug!("socket_protocol: reconnect: {e}"),
            }
        }
    }

    /// Runs one link until it ends; the reason it ended.
    pub(crate) async fn run_link<S>(&self, io: S) -> CloseReason
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let cfg = self.config().clone();
        let (rd, wr) = tokio::io::split(io);
        let (tx, rx) = mpsc::channel(cfg.send_queue.max(1));
        let finish = Arc::new(Notify::new());
        let mut writer = Some(tokio::spawn(write_loop(
            wr,
            rx,
            cfg.write_timeout,
            finish.clone(),
            self.inner.counters.clone(),
        )));
        let link = Link {
            tx,
            kill: Arc::new(Notify::new()),
        };
        *lock(&self.inner.server_auth) = ServerAuth::default();
        self.set_auth(AuthState::Untrusted);
        self.inner.link.send_replace(Some(link.clone()));
        let reason = if self.is_closing() {
            CloseReason::Closed
        } else {
            self.link_up(&link).await;
            self.read_loop(rd, &link, &mut writer).await
        };
        self.inner.link.send_replace(None);
        self.set_auth(AuthState::Untrusted);
        drop(link);
        // Write what is queued (the last answers before a close), within the write timeout.
        finish.notify_one();
        if let Some(mut w) = writer {
            if tokio::time::timeout(cfg.write_timeout, &mut w)
                .await
                .is_err()
            {
                w.abort();
            }
        }
        reason
    }

    /// What a client does on every new link: the channel name exchange, then `auto_auth`.
    async fn link_up(&self, link: &Link) {
        if self.inner.role != Role::Client {
            return;
        }
        let name = self
            .config()
            .channel_name
            .as_deref()
            .map_or(Value::Null, Value::from);
        let _ = link
            .send(&Message::new(
                sid::CHANNEL_NAME_REQUEST,
                did::CHANNEL_NAME,
                name,
            ))
            .await;
        if self.config().secret.is_some() && self.config().auto_auth {
            let p = self.clone();
            let timeout = self.config().auth_timeout;
            tokio::spawn(async move {
                if let Err(e) = p.authenticate(timeout).await {
                    tracing::warn!("socket_protocol: {}: auto_auth: {e}", p.label());
                }
            });
        }
    }

    async fn read_loop<R: AsyncRead + Unpin>(
        &self,
        rd: R,
        link: &Link,
        writer: &mut Option<JoinHandle<Result<(), CloseReason>>>,
    ) -> CloseReason {
        let cfg = self.config();
        let mut framed = Framed::new(
            rd,
            BytesMut::new(),
            Decoder::with_max_body(cfg.max_body),
            8 << 10,
        );
        let permits = Arc::new(Semaphore::new(cfg.callbacks_in_flight.max(1)));
        let mut damaged = 0u32;
        loop {
            loop {
                let item = match framed.try_next() {
                    Ok(Some(item)) => item,
                    Ok(None) => break,
                    Err(reason) => return reason,
                };
                if let Err(reason) = self.handle(item, link, &mut damaged, &permits).await {
                    return reason;
                }
            }
            let Some(w) = writer.as_mut() else {
                return CloseReason::Closed;
            };
            tokio::select! {
                filled = framed.fill() => if let Err(reason) = filled {
                    return reason;
                },
                () = link.kill.notified() => {
                    return lock(&self.inner.kill_reason).take().unwrap_or(CloseReason::Closed);
                }
                written = w => {
                    *writer = None;
                    return match written {
                        Ok(Err(reason)) => reason,
                        _ => CloseReason::local("the writer ended"),
                    };
                }
            }
        }
    }

    async fn handle(
        &self,
        item: Item,
        link: &Link,
        damaged: &mut u32,
        permits: &Arc<Semaphore>,
    ) -> Result<(), CloseReason> {
        match item {
            Item::Damaged { ids } => {
                bump(&self.inner.counters.checksum_errors);
                *damaged += 1;
                let named = ids.map_or_else(|| "ids unreadable".into(), |i| self.describe(&i));
                tracing::warn!(
                    "socket_protocol: {}: a frame with a wrong checksum ({named}) was dropped",
                    self.label()
                );
                if *damaged > self.config().max_damaged_in_a_row {
                    return Err(CloseReason::Protocol(
                        format!("{damaged} frames in a row with a wrong checksum").into(),
                    ));
                }
                if let Some(ids) = ids {
                    self.answer_error(link, ids, status::CHECKSUM_ERROR).await?;
                }
                Ok(())
            }
            Item::Message(m) => {
                *damaged = 0;
                bump(&self.inner.counters.received);
                self.dispatch(m, link, permits).await
            }
        }
    }

    /// Answers `ids` with an error status, on the response sid if it is a request; never
    /// answers a message that is itself not okay (so two peers cannot answer each other
    /// forever).
    async fn answer_error(&self, link: &Link, ids: Ids, st: u32) -> Result<(), CloseReason> {
        if ids.status != status::OKAY {
            return Ok(());
        }
        let to = self
            .inner
            .endpoint
            .read_defs()
            .response_sid(ids.service_id)
            .unwrap_or(ids.service_id);
        link.send(&Message::new(to, ids.data_id, Value::Null).with_status(st))
            .await
    }

    async fn dispatch(
        &self,
        m: Message,
        link: &Link,
        permits: &Arc<Semaphore>,
    ) -> Result<(), CloseReason> {
        let ids = Ids::from(&m);
        if tracing::enabled!(tracing::Level::DEBUG) {
            tracing::debug!(
                "socket_protocol: {} <- {}: {}",
                self.label(),
                self.describe(&ids),
                brief(&m.data)
            );
        }
        match (m.service_id, self.inner.role) {
            (sid::AUTH_REQUEST, Role::Server) => return self.on_auth_request(&m, link).await,
            (sid::AUTH_RESPONSE, Role::Client) => {
                self.on_auth_response(&m, link).await;
                return Ok(());
            }
            (sid::CHANNEL_NAME_REQUEST, Role::Server) => {
                return self.on_channel_name_request(&m, link).await
            }
            (sid::CHANNEL_NAME_RESPONSE, Role::Client) => {
                self.on_channel_name_response(&m);
                return Ok(());
            }
            (s, _) if is_builtin(s) => {
                return self
                    .answer_error(link, ids, status::OPERATION_NOT_PERMITTED)
                    .await
            }
            _ => {}
        }
        let route = {
            let defs = self.inner.endpoint.read_defs();
            let gated = self.config().secret.is_some()
                && !self.is_trusted()
                && !defs.is_whitelisted(m.service_id, m.data_id);
            (!gated).then(|| defs.route(&m))
        };
        let Some(route) = route else {
            bump(&self.inner.counters.refused_untrusted);
            tracing::warn!(
                "socket_protocol: {}: {} refused: the connection is not trusted",
                self.label(),
                self.describe(&ids)
            );
            return self.answer_error(link, ids, status::AUTH_REQUIRED).await;
        };
        match route {
            Route::Callback { callback, response } => {
                let permit = permits
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| CloseReason::Closed)?;
                let (peer, link) = (self.clone(), link.clone());
                tokio::spawn(async move {
                    let job = tokio::spawn(callback(peer.clone(), m));
                    let answer = job.await;
                    drop(permit);
                    let failed = |why: &str| {
                        tracing::warn!(
                            "socket_protocol: {}: the callback for {} {why}",
                            peer.label(),
                            peer.describe(&ids)
                        );
                    };
                    let (st, data) = match answer {
                        Ok(Some(a)) => a,
                        Ok(None) => {
                            if response.is_some() {
                                failed("gave no response");
                            }
                            (
                                status::CALLBACK_ERROR,
                                "the callback gave no response".into(),
                            )
                        }
                        Err(_) => {
                            failed("panicked");
                            (status::CALLBACK_ERROR, "the callback failed".into())
                        }
                    };
                    if let Some(to) = response {
                        let reply = Message {
                            status: st,
                            service_id: to,
                            data_id: ids.data_id,
                            data,
                        };
                        let _ = link.send(&reply).await;
                    }
                });
                Ok(())
            }
            Route::Buffer { response } => {
                self.push_buffer(m);
                match response {
                    Some(to) if ids.status == status::OKAY => {
                        let m = Message::new(to, ids.data_id, Value::Null)
                            .with_status(status::BUFFERING_UNHANDLED_REQUEST);
                        link.send(&m).await
                    }
                    _ => Ok(()),
                }
            }
            Route::Unknown => {
                bump(&self.inner.counters.unknown);
                tracing::warn!(
                    "socket_protocol: {}: {} is unknown here",
                    self.label(),
                    self.describe(&ids)
                );
                self.answer_error(link, ids, status::SERVICE_OR_DATA_UNKNOWN)
                    .await
            }
        }
    }

    fn push_buffer(&self, m: Message) {
        let mut buf = lock(&self.inner.buffer);
        if buf.len() >= self.config().receive_buffer {
            if let Some(old) = buf.pop_front() {
                bump(&self.inner.counters.dropped);
                tracing::warn!(
                    "socket_protocol: {}: receive buffer full ({}): dropped the oldest, {}",
                    self.label(),
                    self.config().receive_buffer,
                    self.describe(&Ids::from(&old))
                );
            }
        }
        buf.push_back(m);
        drop(buf);
        self.inner.arrived.notify_waiters();
    }

    async fn on_auth_request(&self, m: &Message, link: &Link) -> Result<(), CloseReason> {
        let secret = self.config().secret.clone();
        if m.data_id == did::AUTH_SEED && secret.is_some() {
            self.set_auth(AuthState::SeedRequested);
        }
        let step =
            lock(&self.inner.server_auth).on_request(m, secret.as_deref(), self.auth_state());
        self.set_auth(step.state);
        if let Some(reply) = &step.reply {
            link.send(reply).await?;
        }
        if step.refused {
            let failures = self
                .inner
                .counters
                .auth_failures
                .fetch_add(1, Ordering::Relaxed)
                + 1;
            let max = self.config().max_auth_failures;
            tracing::warn!(
                "socket_protocol: {}: a key was refused ({failures} of at most {max})",
                self.label()
            );
            if failures >= u64::from(max) {
                return Err(CloseReason::LoginRefused(
                    format!("{failures} keys refused").into(),
                ));
            }
        }
        Ok(())
    }

    async fn on_auth_response(&self, m: &Message, link: &Link) {
        let secret = self.config().secret.clone();
        match client_step(m, secret.as_deref(), self.auth_state()) {
            ClientStep::SendKey(key) => {
                self.set_auth(AuthState::KeyTransferred);
                if link.send(&key).await.is_err() {
                    self.set_auth(AuthState::Untrusted);
                }
            }
            ClientStep::Verdict(true) => self.set_auth(AuthState::Trusted),
            ClientStep::Verdict(false) => {
                *lock(&self.inner.auth_failure) = Some("the peer refused the key (wrong secret)");
                self.set_auth(AuthState::Untrusted);
            }
            ClientStep::Impossible(st) => {
                *lock(&self.inner.auth_failure) = Some(if st == status::OPERATION_NOT_PERMITTED {
                    "the peer has no secret (status 6, operation not permitted)"
                } else {
                    "the peer could not take part (no seed)"
                });
                self.set_auth(AuthState::Untrusted);
            }
            ClientStep::Ignore => tracing::debug!(
                "socket_protocol: {}: an authentication answer outside an exchange, ignored",
                self.label()
            ),
        }
    }

    async fn on_channel_name_request(&self, m: &Message, link: &Link) -> Result<(), CloseReason> {
        let theirs: Option<Arc<str>> = m.data.as_str().map(Arc::from);
        let ours = self.config().channel_name.clone();
        let agreed = match (theirs, ours) {
            (Some(t), Some(o)) if t != o => {
                tracing::warn!(
                    "socket_protocol: the client calls this channel {t:?}, this side {o:?}: the client's name is taken"
                );
                Some(t)
            }
            (Some(t), _) => Some(t),
            (None, o) => o,
        };
        *lock(&self.inner.channel) = agreed.clone();
        let data = agreed.as_deref().map_or(Value::Null, Value::from);
        link.send(&Message::new(
            sid::CHANNEL_NAME_RESPONSE,
            did::CHANNEL_NAME,
            data,
        ))
        .await
    }

    fn on_channel_name_response(&self, m: &Message) {
        if let Some(name) = m.data.as_str() {
            let mut ours = lock(&self.inner.channel);
            if ours.is_none() {
                *ours = Some(name.into());
            }
        }
    }
}

/// What [`Peer::send`] returns: set the status or the timeout, then `.await` it.
#[must_use = "a send does nothing until awaited"]
pub struct SendBuilder<'a> {
    peer: &'a Peer,
    message: Message,
    timeout: Option<Duration>,
}

impl SendBuilder<'_> {
    /// The message's status (requests should stay okay).
    pub fn status(mut self, status: u32) -> Self {
        self.message.status = status;
        self
    }

    /// How long to wait for the link, trust and the write (default: the endpoint's send
    /// timeout).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = Some(t);
        self
    }
}

impl<'a> IntoFuture for SendBuilder<'a> {
    type Output = Result<(), Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'a>>;

    fn into_future(self) -> Self::IntoFuture {
        let timeout = self.timeout.unwrap_or(self.peer.config().send_timeout);
        Box::pin(self.peer.send_message(self.message, timeout))
    }
}

/// A connection's byte stream: TCP, TLS, or anything else.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Connects to `addr` (TCP, then TLS if configured) within the connect timeout.
pub(crate) async fn dial(cfg: &Config, addr: SocketAddr) -> Result<Box<dyn Io>, Error> {
    let timeout = cfg.connect_timeout;
    let too_slow = |_| SpError::ConnectTimeout { addr, timeout };
    let tcp = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(too_slow)?
        .map_err(|source| SpError::Unreachable { addr, source })?;
    crate::keepalive::prepare(&tcp, Some(crate::Keepalive::default()));
    Ok(match &cfg.client_tls {
        Some(tls) => Box::new(
            tokio::time::timeout(timeout, tls.connect(tcp, addr))
                .await
                .map_err(too_slow)??,
        ),
        None => Box::new(tcp),
    })
}

/// One accepted connection of a bound endpoint, until it ends or the listener shuts down.
pub(crate) async fn serve_connection(
    endpoint: Endpoint,
    stream: TcpStream,
    remote: SocketAddr,
    mut shutdown: Shutdown,
) {
    let local = stream.local_addr().ok();
    let io: Box<dyn Io> = match &endpoint.config.server_tls {
        Some(tls) => {
            let handshake =
                tokio::time::timeout(endpoint.config.connect_timeout, tls.accept(stream));
            match handshake.await {
                Ok(Ok(s)) => Box::new(s),
                Ok(Err(e)) => {
                    tracing::info!("socket_protocol: {remote}: TLS handshake failed: {e}");
                    return;
                }
                Err(_) => {
                    tracing::info!("socket_protocol: {remote}: no TLS handshake in time");
                    return;
                }
            }
        }
        None => Box::new(stream),
    };
    let peer = Peer::new(endpoint.clone(), Role::Server, Some(remote), local);
    endpoint.connected(&peer);
    tracing::debug!("socket_protocol: {remote} connected");
    let run = peer.run_link(io);
    tokio::pin!(run);
    let reason = tokio::select! {
        r = &mut run => r,
        () = shutdown.requested() => {
            peer.inner.closing.send_replace(true);
            peer.kill(CloseReason::Shutdown);
            run.await
        }
    };
    tracing::info!("socket_protocol: {} disconnected: {reason}", peer.label());
    peer.finish(reason);
}

/// Writes queued frames, a batch per flush, each write bounded by `timeout` (a peer that
/// stops reading is cut). On `finish` it writes what is queued and ends.
async fn write_loop<W: AsyncWrite + Unpin>(
    wr: W,
    mut rx: mpsc::Receiver<Out>,
    timeout: Duration,
    finish: Arc<Notify>,
    counters: Arc<Counters>,
) -> Result<(), CloseReason> {
    let mut wr = tokio::io::BufWriter::with_capacity(16 << 10, wr);
    let mut acks = Vec::new();
    let mut finishing = false;
    loop {
        let first = if finishing {
            match rx.try_recv() {
                Ok(out) => out,
                Err(_) => break,
            }
        } else {
            tokio::select! {
                biased;
                out = rx.recv() => match out {
                    Some(out) => out,
                    None => break,
                },
                () = finish.notified() => {
                    finishing = true;
                    continue;
                }
            }
        };
        let mut batch = vec![first];
        while batch.len() < 64 {
            match rx.try_recv() {
                Ok(out) => batch.push(out),
                Err(_) => break,
            }
        }
        let write = async {
            for out in batch {
                // A sender whose timeout ran out has gone: its frame is not written late.
                if out.done.as_ref().is_some_and(oneshot::Sender::is_closed) {
                    continue;
                }
                wr.write_all(&out.frame).await?;
                bump(&counters.sent);
                acks.extend(out.done);
            }
            wr.flush().await
        };
        match tokio::time::timeout(timeout, write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(CloseReason::WriteFailed(e.to_string().into())),
            Err(_) => {
                tracing::warn!("socket_protocol: the peer read nothing for {timeout:?}; cut off");
                return Err(CloseReason::SlowConsumer { timeout });
            }
        }
        for ack in acks.drain(..) {
            let _ = ack.send(());
        }
    }
    let _ = tokio::time::timeout(timeout, wr.shutdown()).await;
    Ok(())
}
