//! One clever-show peer: its pending requests, its current link and, for a peer dialed with
//! [`Node::dial`], the loop that keeps a link up.
//!
//! Reconnect without loss (the original discards its queues on every reconnect and re-sends
//! requests with their arguments replaced by `null`, docs/protocols/clever-show.md §4):
//!
//! * a frame that was still queued, or only partly written, when a link dropped is sent
//!   again **whole** on the next link, before anything newer; frames sent while no link is
//!   up wait, in order, up to a byte limit (over it, the send fails with an error);
//! * a request not answered when its link dropped is sent again, with its original id,
//!   args and kwargs, on the next link, once; if that link drops too before the answer, the
//!   caller gets [`Error::NotDelivered`];
//! * a frame the kernel had accepted before the link dropped may still have been lost on
//!   the way (clever-show has no acknowledgements); requests are covered by the re-send,
//!   actions are not. [`Peer::push_file_verified`] checks a file push end to end.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use serde_json::{Map, Value};
use tether_wire::clevershow::{Content, Decoder, Frame};
use tokio::net::TcpStream;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use super::link::{LinkState, NewLink, MAX_PENDING};
use super::{Dial, Node};
use crate::framed::Framed;
use crate::outbound::Outbound;
use crate::{CloseReason, Error};

/// Read room per link (drones send small frames; files arrive as one large one).
const READ_RESERVE: usize = 8 * 1024;

/// Default time a request waits for its response.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Bytes one link queues for writing before senders wait.
const LINK_QUEUE: usize = 4 << 20;
/// A link whose socket takes no byte for this long is cut.
const SEND_STALL: Duration = Duration::from_secs(10);

/// Who waits for a request's answer.
type Waiter = oneshot::Sender<Result<Content, Error>>;

struct State {
    /// The current link's outbound queue, if a link is up.
    link: Option<Outbound>,
    /// Set once the peer is closed for good.
    closed: Option<CloseReason>,
    /// Held frames and pending requests (`link.rs`).
    kept: LinkState<Waiter>,
}

struct Inner {
    node: Node,
    addr: Mutex<SocketAddr>,
    /// Our end of the latest link.
    local: Mutex<Option<SocketAddr>>,
    /// How to redial; `None` for a peer that accepted us or that we connected to once.
    dial: Option<Dial>,
    state: Mutex<State>,
    /// Bumped on every change of `state` (link up or down, closed).
    changed: watch::Sender<u64>,
    links: std::sync::atomic::AtomicU64,
    /// Pushes this peer refused and told us about (a Tether peer does), oldest first.
    refused_pushes: Mutex<std::collections::VecDeque<super::files::RefusedPush>>,
    /// For a peer that outlives its links (dialed, or a resumed drone): what survives one.
    resume: Option<super::Resume>,
    /// A resumed drone's: how long it may stay without a link.
    grace: Option<Duration>,
}

/// The other end of a clever-show link. Cheap to clone.
///
/// A peer that connected to us, or that we reached with [`Node::connect`], lives as long as
/// its one link. A peer from [`Node::dial`] reconnects until [`Peer::close`].
#[derive(Clone)]
pub struct Peer {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("addr", &self.addr())
            .field("redials", &self.inner.dial.is_some())
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

/// A link's two tasks.
struct Running {
    number: u64,
    outbound: Outbound,
    reader: JoinHandle<CloseReason>,
    writer: JoinHandle<Vec<Bytes>>,
}

impl Running {
    /// Waits for the link to end: why, and the frames it had not written.
    async fn ended(self) -> (CloseReason, Vec<Bytes>) {
        let reason = self
            .reader
            .await
            .unwrap_or_else(|e| CloseReason::local(format!("reader failed: {e}")));
        self.outbound.kill(reason.clone());
        (reason, self.writer.await.unwrap_or_default())
    }
}

fn encode(frame: &Frame) -> Result<Bytes, Error> {
    frame.to_bytes().map_err(|e| {
        Error::CleverShow(crate::clevershow::ShowError::NotDelivered {
            what: "a clever-show frame".into(),
            reason: e.to_string(),
        })
    })
}

impl Peer {
    fn new(node: Node, addr: SocketAddr, dial: Option<Dial>) -> Peer {
        let resume = dial.as_ref().map(|d| d.resume);
        Self::with(node, addr, dial, resume, None)
    }

    fn with(
        node: Node,
        addr: SocketAddr,
        dial: Option<Dial>,
        resume: Option<super::Resume>,
        grace: Option<Duration>,
    ) -> Peer {
        // Only a peer that outlives its links keeps frames for the next one.
        let hold_limit = match (&dial, resume) {
            (Some(d), _) => d.hold_limit,
            (None, Some(_)) => super::DEFAULT_HOLD_LIMIT,
            (None, None) => 0,
        };
        Peer {
            inner: Arc::new(Inner {
                node,
                addr: Mutex::new(addr),
                local: Mutex::new(None),
                dial,
                resume,
                grace,
                state: Mutex::new(State {
                    link: None,
                    closed: None,
                    kept: LinkState::new(hold_limit),
                }),
                changed: watch::channel(0).0,
                links: Default::default(),
                refused_pushes: Default::default(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn bump(&self) {
        self.inner.changed.send_modify(|n| *n += 1);
    }

    /// A peer on one accepted (or once-connected) socket: it ends with the link.
    pub(crate) fn single(node: Node, socket: TcpStream, addr: SocketAddr) -> Peer {
        let peer = Peer::new(node, addr, None);
        let running = peer.start_link(socket);
        {
            let mut st = peer.state();
            // Nothing is held or pending yet: the link is up at once, with nothing to send.
            let up = st.kept.new_link(running.number);
            debug_assert_eq!(up, NewLink::Up { requests: vec![] });
            st.link = Some(running.outbound.clone());
        }
        peer.call_hook();
        let p = peer.clone();
        tokio::spawn(async move {
            let (reason, _) = running.ended().await;
            tracing::debug!(peer = %p.addr(), "clever-show link ended: {reason}");
            p.shut(reason);
        });
        peer
    }

    /// A connection the server accepted: its own peer, or with [`Node::resume_drones`] the
    /// peer of the drone at that address if its link is down (resumed).
    pub(crate) fn accepted(node: Node, socket: TcpStream, from: SocketAddr) {
        let resume = node
            .handlers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .resume;
        let Some((grace, resume)) = resume else {
            Peer::single(node, socket, from);
            return;
        };
        let peer = {
            let mut drones = node.drones.lock().unwrap_or_else(|e| e.into_inner());
            match drones.get(&from.ip()) {
                Some(p) if !p.is_closed() && !p.is_linked() => {
                    tracing::info!(peer = %from, "clever-show drone back: its peer resumes");
                    *p.inner.addr.lock().unwrap_or_else(|e| e.into_inner()) = from;
                    p.clone()
                }
                _ => {
                    let p = Peer::with(node.clone(), from, None, Some(resume), Some(grace));
                    drones.insert(from.ip(), p.clone());
                    p
                }
            }
        };
        tokio::spawn(peer.serve_accepted(socket));
    }

    /// Runs one link of a resumable drone's peer; closes the peer if no other link comes
    /// within its grace.
    async fn serve_accepted(self, socket: TcpStream) {
        let running = self.start_link(socket);
        let number = running.number;
        if self.link_up(number, &running.outbound).await {
            self.call_hook();
        }
        let (reason, unsent) = running.ended().await;
        tracing::debug!(peer = %self.addr(), "clever-show link {number} ended: {reason}");
        self.link_down(number, unsent);
        tokio::time::sleep(self.inner.grace.unwrap_or_default()).await;
        let relinked = self.inner.links.load(std::sync::atomic::Ordering::Relaxed) != number;
        if !relinked && !self.is_closed() {
            self.shut(reason);
            let mut drones = self
                .inner
                .node
                .drones
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let addr = self.addr().ip();
            if drones
                .get(&addr)
                .is_some_and(|p| Arc::ptr_eq(&p.inner, &self.inner))
            {
                drones.remove(&addr);
            }
        }
    }

    /// Whether this peer outlives its links (dialed, or a resumed drone).
    fn relinks(&self) -> bool {
        self.inner.resume.is_some()
    }

    /// A peer that dials `addr` and keeps a link up until closed.
    pub(crate) fn dialing(node: Node, addr: SocketAddr, dial: Dial) -> Peer {
        let peer = Peer::new(node, addr, Some(dial));
        tokio::spawn(redial(peer.clone()));
        peer
    }

    fn call_hook(&self) {
        let hook = self
            .inner
            .node
            .handlers
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .on_peer
            .clone();
        if let Some(hook) = hook {
            hook(self.clone());
        }
    }

    fn start_link(&self, socket: TcpStream) -> Running {
        let number = self
            .inner
            .links
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            + 1;
        *self.inner.local.lock().unwrap_or_else(|e| e.into_inner()) = socket.local_addr().ok();
        let (rd, wr) = socket.into_split();
        let (outbound, writer) = Outbound::new(LINK_QUEUE, SEND_STALL);
        let writer = if self.relinks() {
            writer.keep_unsent()
        } else {
            writer
        };
        let max = self.inner.node.message_limit();
        Running {
            number,
            writer: tokio::spawn(writer.run(wr)),
            reader: tokio::spawn(read_loop(self.clone(), rd, outbound.clone(), max)),
            outbound,
        }
    }

    /// Closed for good: fails every waiting request with `reason`.
    fn shut(&self, reason: CloseReason) {
        let failed = {
            let mut st = self.state();
            st.link = None;
            if st.closed.is_none() {
                st.closed = Some(reason.clone());
            }
            st.kept.close()
        };
        for waiter in failed {
            let _ = waiter.send(Err(Error::Closed {
                reason: reason.clone(),
            }));
        }
        self.bump();
    }

    /// The peer's address (for a dialed peer: the server it dials, which discovery may
    /// change).
    pub fn addr(&self) -> SocketAddr {
        *self.inner.addr.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Our end of the current link, if one is up.
    pub(crate) fn local_addr(&self) -> Option<SocketAddr> {
        *self.inner.local.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn node(&self) -> &Node {
        &self.inner.node
    }

    /// Links established so far (1 after the first connect; more after reconnects).
    pub fn links(&self) -> u64 {
        self.inner.links.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Whether a link is up now.
    pub fn is_linked(&self) -> bool {
        self.state().link.is_some()
    }

    /// Waits until a link is up, at most `timeout`.
    pub async fn wait_link(&self, timeout: Duration) -> Result<(), Error> {
        let mut changed = self.inner.changed.subscribe();
        let wait = async {
            loop {
                changed.borrow_and_update();
                {
                    let st = self.state();
                    if st.link.is_some() {
                        return Ok(());
                    }
                    if let Some(reason) = &st.closed {
                        return Err(Error::Closed {
                            reason: reason.clone(),
                        });
                    }
                }
                if changed.changed().await.is_err() {
                    return Err(Error::Closed {
                        reason: CloseReason::local("peer dropped"),
                    });
                }
            }
        };
        tokio::time::timeout(timeout, wait)
            .await
            .map_err(|_| Error::NoLink { waited: timeout })?
    }

    /// Hands `bytes` to the current link, or (dialed peers) holds them for the next one.
    async fn send(&self, bytes: Bytes) -> Result<(), Error> {
        let mut changed = self.inner.changed.subscribe();
        loop {
            changed.borrow_and_update();
            let out = {
                let mut st = self.state();
                if let Some(reason) = &st.closed {
                    return Err(Error::Closed {
                        reason: reason.clone(),
                    });
                }
                let keeps = self.inner.resume.is_some_and(|r| r.queue);
                match (&st.link, self.relinks()) {
                    (Some(outbound), _) => outbound.clone(),
                    (None, true) if !keeps => {
                        return Err(Error::CleverShow(
                            crate::clevershow::ShowError::NotDelivered {
                                what: "a clever-show message".into(),
                                reason: format!(
                                    "no link to {} and resume_queue is off",
                                    self.addr()
                                ),
                            },
                        ));
                    }
                    (None, true) => {
                        return st.kept.hold(bytes).map_err(|full| {
                            Error::CleverShow(crate::clevershow::ShowError::NotDelivered {
                                what: "a clever-show message".into(),
                                reason: format!(
                                    "no link to {} and {} bytes already wait for one (limit {})",
                                    self.addr(),
                                    full.held,
                                    full.limit
                                ),
                            })
                        });
                    }
                    (None, false) => {
                        return Err(Error::Closed {
                            reason: CloseReason::Closed,
                        })
                    }
                }
            };
            match out.send(bytes.clone()).await {
                Ok(()) => return Ok(()),
                Err(e) if !self.relinks() => return Err(e.into()),
                // The link is going down; once it is, the frame goes to the next one.
                Err(_) => {
                    if changed.changed().await.is_err() {
                        return Err(Error::Closed {
                            reason: CloseReason::local("peer dropped"),
                        });
                    }
                }
            }
        }
    }

    /// Sends the action `name` (never answered).
    pub async fn action(
        &self,
        name: &str,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
    ) -> Result<(), Error> {
        self.send(encode(&Frame::action(name, args, kwargs))?).await
    }

    /// The pushes this peer refused and told us about since the last call (a Tether peer
    /// does; an original one cannot), oldest first; at most the last 64 are kept.
    pub fn refused_pushes(&self) -> Vec<super::files::RefusedPush> {
        self.inner
            .refused_pushes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
            .collect()
    }

    pub(crate) fn remember_refused(&self, r: super::files::RefusedPush, keep: usize) {
        let mut list = self
            .inner
            .refused_pushes
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if list.len() == keep {
            list.pop_front();
        }
        list.push_back(r);
    }

    /// Sends a raw frame (e.g. a file push).
    pub(crate) async fn send_frame(&self, frame: &Frame) -> Result<(), Error> {
        self.send(encode(frame)?).await
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

    /// Closes the peer: the link is closed after what it has queued is written; frames
    /// waiting for a link are dropped and waiting requests fail.
    pub fn close(&self) {
        if let Some(outbound) = &self.state().link {
            outbound.close();
        }
        self.shut(CloseReason::local("closed by this side"));
    }

    /// Whether the peer is closed for good.
    pub fn is_closed(&self) -> bool {
        self.state().closed.is_some()
    }

    /// Registers a request made at `now` with its timeout, under a fresh id (4 decimal
    /// digits, as the original).
    fn register(
        &self,
        name: &str,
        args: Vec<Value>,
        kwargs: Map<String, Value>,
        tx: Waiter,
        now: tokio::time::Instant,
        timeout: Duration,
    ) -> Result<String, Error> {
        let now = now.into_std();
        let mut st = self.state();
        if let Some(reason) = &st.closed {
            return Err(Error::Closed {
                reason: reason.clone(),
            });
        }
        st.kept
            .register(
                name,
                args,
                kwargs,
                tx,
                now,
                timeout,
                crate::random::four_digits,
            )
            .ok_or_else(|| {
                Error::CleverShow(crate::clevershow::ShowError::NotDelivered {
                    what: format!("request {name}"),
                    reason: format!("{MAX_PENDING} requests are pending on this link"),
                })
            })
    }

    /// Hands a registered, never-sent request to the current link, if there is one (else
    /// the next link sends it).
    async fn send_request(&self, id: &str) -> Result<(), Error> {
        let (number, outbound, frame) = {
            let mut st = self.state();
            let Some(outbound) = st.link.clone() else {
                return Ok(());
            };
            let sent = st.kept.first_send(id).map_err(|e| {
                Error::CleverShow(crate::clevershow::ShowError::NotDelivered {
                    what: "a clever-show frame".into(),
                    reason: e.to_string(),
                })
            })?;
            let Some((number, frame)) = sent else {
                return Ok(());
            };
            (number, outbound, frame)
        };
        if let Err(e) = outbound.send(frame).await {
            self.state().kept.first_send_failed(id, number);
            if self.inner.dial.is_none() {
                return Err(e.into());
            }
        }
        Ok(())
    }

    fn forget(&self, id: &str) {
        self.state().kept.forget(id);
    }

    /// Fails every request whose deadline has passed (the state decides which).
    fn expire_requests(&self) {
        let now = tokio::time::Instant::now().into_std();
        let gone = self.state().kept.expire(now);
        let addr = self.addr();
        for (_, p) in gone {
            let _ = p.waiter.send(Err(Error::Timeout {
                addr,
                what: format!("request {}", p.name),
                timeout: p.timeout,
            }));
        }
    }

    /// A new link is up: what waited goes first, in order, then the link is published
    /// and the requests not answered on an earlier link are sent on it. `false`: the link
    /// broke first.
    async fn link_up(&self, number: u64, outbound: &Outbound) -> bool {
        let requests = loop {
            let step = {
                let mut st = self.state();
                if st.closed.is_some() {
                    return false;
                }
                let step = st.kept.new_link(number);
                if matches!(step, NewLink::Up { .. }) {
                    st.link = Some(outbound.clone());
                }
                step
            };
            match step {
                NewLink::Up { requests } => break requests,
                NewLink::SendHeld(batch) => {
                    let mut frames = batch.into_iter();
                    while let Some(b) = frames.next() {
                        if outbound.send(b.clone()).await.is_err() {
                            // Broken already: this frame and the rest wait again, in front.
                            let again = std::iter::once(b).chain(frames).collect();
                            self.state().kept.hold_front(again);
                            return false;
                        }
                    }
                }
            }
        };
        self.bump();
        for frame in requests {
            if outbound.send(frame).await.is_err() {
                break;
            }
        }
        true
    }

    /// A link ended: its unwritten frames wait for the next one (requests among them do
    /// not count as sent); requests already re-sent once on it fail.
    fn link_down(&self, number: u64, unsent: Vec<Bytes>) {
        let resume = self.inner.resume.unwrap_or_default();
        let (failed, dropped, cut) = {
            let mut st = self.state();
            if st.kept.current() == Some(number) {
                st.link = None;
            }
            let failed = st.kept.link_down(number, unsent);
            let dropped = if resume.queue { 0 } else { st.kept.drop_held() };
            let cut = if resume.requests {
                Vec::new()
            } else {
                st.kept.take_pending()
            };
            (failed, dropped, cut)
        };
        let addr = self.addr();
        if dropped > 0 {
            tracing::warn!(peer = %addr, "{dropped} queued messages dropped with the link (resume_queue is off)");
        }
        for (id, p) in cut {
            let what = format!("request {} #{id}", p.name);
            let _ = p.waiter.send(Err(Error::CleverShow(
                crate::clevershow::ShowError::NotDelivered {
                    what,
                    reason: format!(
                        "the link to {addr} dropped before the answer (resend_requests is off)"
                    ),
                },
            )));
        }
        for (id, p) in failed {
            let what = format!("request {} #{id}", p.name);
            let _ = p.waiter.send(Err(Error::CleverShow(
                crate::clevershow::ShowError::NotDelivered {
                    what,
                    reason: format!(
                        "the link to {addr} dropped before the answer, after the request was sent \
                     and again after it was re-sent"
                    ),
                },
            )));
        }
        self.bump();
    }
}

/// Keeps a dialed peer linked: connect with backoff (and discovery, if set up), run the
/// link, and again, until the peer is closed.
async fn redial(peer: Peer) {
    let Some(dial) = peer.inner.dial.clone() else {
        return;
    };
    let mut changed = peer.inner.changed.subscribe();
    let mut backoff = dial.backoff;
    let mut failures = 0u32;
    while !peer.is_closed() {
        let addr = peer.addr();
        let attempt = tokio::time::timeout(dial.connect_timeout, TcpStream::connect(addr));
        let socket = match attempt.await {
            Ok(Ok(s)) => s,
            outcome => {
                failures += 1;
                let why = match outcome {
                    Ok(Err(e)) => e.to_string(),
                    _ => format!("no answer within {:?}", dial.connect_timeout),
                };
                tracing::debug!("clever-show connect to {addr} failed ({failures}): {why}");
                if let Some(d) = &dial.discover {
                    if failures.is_multiple_of(d.after_failures.max(1)) {
                        match super::discovery::discover(d.listen, d.wait).await {
                            Ok(found) => match found.addr() {
                                Ok(a) => {
                                    tracing::info!("clever-show server found at {a}");
                                    if let Some(hook) = &dial.on_broadcast_bind {
                                        hook(&found);
                                    }
                                    *peer.inner.addr.lock().unwrap_or_else(|e| e.into_inner()) = a;
                                    continue;
                                }
                                Err(e) => tracing::warn!("{e}"),
                            },
                            Err(e) => tracing::debug!("{e}"),
                        }
                    }
                }
                let sleep = tokio::time::sleep(backoff.next_delay());
                tokio::select! {
                    _ = sleep => {}
                    _ = changed.wait_for(|_| peer.is_closed()) => {}
                }
                continue;
            }
        };
        failures = 0;
        backoff.reset();
        crate::keepalive::prepare(&socket, Some(crate::Keepalive::default()));
        let running = peer.start_link(socket);
        let number = running.number;
        if peer.link_up(number, &running.outbound).await {
            tracing::debug!("clever-show link {number} to {addr} up");
            peer.call_hook();
        }
        let (reason, unsent) = running.ended().await;
        tracing::info!("clever-show link to {addr} ended: {reason}");
        peer.link_down(number, unsent);
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

    /// How long to wait for the response (default 10 s), counted from the first send and
    /// across reconnects.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Sends the request and waits for the response's content, raw.
    pub async fn send_raw(self) -> Result<Content, Error> {
        let peer = self.peer;
        let what = format!("request {}", self.name);
        let (tx, rx) = oneshot::channel();
        // One instant for the state's deadline and for the wake-up below, so the state
        // counts the request as expired when the caller wakes.
        let now = tokio::time::Instant::now();
        let deadline = now + self.timeout;
        let id = peer.register(&self.name, self.args, self.kwargs, tx, now, self.timeout)?;
        if let Err(e) = peer.send_request(&id).await {
            peer.forget(&id);
            return Err(e);
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(res)) => res,
            Ok(Err(_)) => Err(Error::Closed {
                reason: CloseReason::local(format!("clever-show link to {} closed", peer.addr())),
            }),
            Err(_) => {
                // Woken at the deadline: the state gives up this request (and any other
                // whose deadline has passed; their callers get the same answer).
                peer.expire_requests();
                peer.forget(&id); // already gone; never left behind, whatever the clocks say
                Err(Error::Timeout {
                    addr: peer.addr(),
                    what,
                    timeout: self.timeout,
                })
            }
        }
    }

    /// Sends the request and waits for the response's `value`.
    pub async fn send(self) -> Result<Value, Error> {
        let what = format!("request {}", self.name);
        match self.send_raw().await? {
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

async fn read_loop(
    peer: Peer,
    rd: tokio::net::tcp::OwnedReadHalf,
    outbound: Outbound,
    max_message: usize,
) -> CloseReason {
    let decoder = Decoder::with_max_content(max_message);
    let mut framed = Framed::new(rd, BytesMut::new(), decoder, READ_RESERVE);
    let killed = outbound.killed();
    tokio::pin!(killed);
    loop {
        loop {
            match framed.try_next() {
                Ok(Some(frame)) => dispatch(&peer, frame).await,
                Ok(None) => break,
                Err(why) => return why,
            }
        }
        tokio::select! {
            res = framed.fill() => if let Err(why) = res {
                return why;
            },
            why = &mut killed => return why,
        }
    }
}

/// Hands one frame of a link to what handles its kind.
async fn dispatch(peer: &Peer, frame: Frame) {
    match frame.message_type.as_str() {
        "message" => dispatch_action(peer, frame).await,
        "request" => dispatch_request(peer, frame),
        "response" => dispatch_response(peer, frame),
        other => tracing::debug!(peer = %peer.addr(), "message type {other:?} ignored"),
    }
}

/// An action (or a file push): run its handler in place, so that the actions of one link
/// run in the order they were sent. Never answered.
async fn dispatch_action(peer: &Peer, frame: Frame) {
    let node = &peer.inner.node;
    let name = frame.extra_str("action").unwrap_or_default().to_string();
    if name == "filetransfer" {
        if let Content::Binary(bytes) = &frame.content {
            let path = frame.extra_str("filepath").unwrap_or_default();
            // Awaited in place, like every action: a later request sees the file.
            let tell = frame.accepts_error_responses();
            super::files::receive_push(node, peer, path, bytes.clone(), tell).await;
            return;
        }
    }
    if name == super::files::REFUSED_ACTION {
        super::files::refused_by_peer(peer, &frame);
        return;
    }
    let handler = node
        .handlers
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .actions
        .get(&name)
        .cloned();
    let (Some(handler), Content::Json(Value::Object(mut content))) = (handler, frame.content)
    else {
        tracing::warn!(peer = %peer.addr(), "no handler for action {name:?}; ignored");
        return;
    };
    let (args, kwargs) = args_kwargs(&mut content);
    // Awaited in place: actions of one link run in the order they were sent.
    handler(peer.clone(), args, kwargs).await;
}

/// A request: answered from its own task (a slow handler holds up nothing else) by the
/// node's handler, a built-in (files), a VSOA route, or an error response.
fn dispatch_request(peer: &Peer, frame: Frame) {
    let node = &peer.inner.node;
    let understands_errors = frame.accepts_error_responses();
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
    let node = node.clone();
    tokio::spawn(async move {
        let answer = match handler {
            Some(h) => h(peer.clone(), args, kwargs).await.map(Content::Json),
            None => match super::files::builtin_request(&node, &name, &kwargs).await {
                Some(answer) => answer,
                None => super::bridge::route(&node, &peer, &name, args, kwargs)
                    .await
                    .unwrap_or_else(|| Err(format!("no handler for request {name:?}"))),
            },
        };
        let response = match answer {
            Ok(content) => Frame::response(&name, &id, content),
            Err(reason) if understands_errors => Frame::error_response(&name, &id, &reason),
            Err(reason) => {
                // An original peer writes any response to a file pull into its target file,
                // and fails on one it does not expect: it gets what its own server sends, nothing.
                tracing::warn!(
                    peer = %peer.addr(),
                    "request {name:?} #{id} failed ({reason}); not answered: the requester did not say it understands error responses"
                );
                return;
            }
        };
        if let Err(e) = peer.send_frame(&response).await {
            tracing::debug!(peer = %peer.addr(), "response {name:?} #{id} not sent: {e}");
        }
    });
}

/// A response: wakes the request it answers, if both its id and its name match.
fn dispatch_response(peer: &Peer, frame: Frame) {
    let id = frame
        .extra_str("request_id")
        .unwrap_or_default()
        .to_string();
    let name = frame.extra_str("requested_value").unwrap_or_default();
    let waiter = peer.state().kept.answer(&id, name);
    match waiter {
        Some(waiter) => {
            let _ = waiter.send(Ok(frame.content));
        }
        None => {
            tracing::warn!(peer = %peer.addr(), "unexpected response {name:?} #{id}; dropped")
        }
    }
}
