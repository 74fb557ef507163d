//! Subscriptions and datagrams as streams, and the client-side table that routes each
//! incoming publish to the subscriptions whose patterns match it.
//!
//! The server sends a publish once per client even when several of the client's patterns
//! match; the table fans it out locally to every [`Subscription`] that asked for it.
//! Patterns are reference-counted so that dropping one subscription does not unsubscribe a
//! pattern another subscription still uses.
//!
//! Buffering is a decision (docs/architecture.md, "Backpressure"). Each subscription has a bounded buffer. When it
//! is full the reader waits for room, which is backpressure all the way to the server, so a
//! consumer that is merely slower loses nothing. But RPC replies travel on the same TCP
//! stream as publishes, so the reader waits at most the *stall timeout*: a consumer that
//! made no room by then puts its subscription into overflow, and messages for it are
//! dropped and counted until it has drained its buffer. The next message it receives
//! carries the count in [`Message::lost_before`] (like the `Lagged` error of a tokio
//! broadcast channel). Nothing is lost without the consumer being told, and a stream nobody
//! reads delays calls by one stall timeout at most, never forever.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tether_wire::url::{check_url, subscription_matches};
use tether_wire::vsoa::{Packet, PacketType};
use tokio::sync::mpsc;

use super::Client;
use crate::{Error, Payload};

/// A publish (or datagram) received from the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// The URL it was published on.
    pub url: String,
    /// Param and data.
    pub payload: Payload,
    /// Whether it came over the quick (UDP) channel.
    pub quick: bool,
    /// Messages for this stream dropped just before this one because its buffer was full.
    pub lost_before: u64,
}

/// Sending end of a bounded message stream that counts what it had to drop.
pub(super) struct Sink {
    tx: mpsc::Sender<Message>,
    /// Dropped since the last delivered message.
    lost: u64,
    /// The consumer let a stall timeout pass: drop without waiting until it drains.
    overflowing: bool,
    total_lost: Arc<AtomicU64>,
}

/// What [`Sink::offer`] did.
pub(super) enum Offer {
    /// Queued, or dropped and counted, or the receiver is gone: nothing more to do.
    Done,
    /// The buffer is full: wait for room with [`Wait::run`].
    Wait(Wait),
}

/// A message waiting for room in a full buffer.
pub(super) struct Wait {
    tx: mpsc::Sender<Message>,
    msg: Message,
}

impl Sink {
    pub(super) fn new(tx: mpsc::Sender<Message>) -> (Sink, Arc<AtomicU64>) {
        let total_lost = Arc::new(AtomicU64::new(0));
        let sink = Sink {
            tx,
            lost: 0,
            overflowing: false,
            total_lost: total_lost.clone(),
        };
        (sink, total_lost)
    }

    /// Queues `msg` if there is room, without waiting.
    pub(super) fn offer(&mut self, mut msg: Message) -> Offer {
        msg.lost_before = self.lost;
        match self.tx.try_send(msg) {
            Ok(()) => {
                self.lost = 0;
                // Leave overflow once half the buffer is free again, not at the first free
                // slot, so a trickling consumer does not cost a stall per message.
                if self.overflowing && self.tx.capacity() * 2 >= self.tx.max_capacity() {
                    self.overflowing = false;
                }
                Offer::Done
            }
            Err(mpsc::error::TrySendError::Full(msg)) if !self.overflowing => Offer::Wait(Wait {
                tx: self.tx.clone(),
                msg,
            }),
            Err(mpsc::error::TrySendError::Full(_)) => {
                self.count_loss();
                Offer::Done
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Offer::Done,
        }
    }

    /// Queues `msg` if there is room; otherwise drops and counts it (quick traffic).
    pub(super) fn offer_now(&mut self, msg: Message) {
        if let Offer::Wait(_) = self.offer(msg) {
            self.count_loss();
        }
    }

    /// A waited-for message went through (it carried the pending loss count).
    fn delivered_after_wait(&mut self, carried: u64) {
        self.lost = self.lost.saturating_sub(carried);
    }

    /// A waited-for message did not go through in time: overflow until drained.
    fn stalled(&mut self, what: &str, stall: Duration) {
        if !self.overflowing {
            tracing::warn!(
                "{what} not read for {stall:?} with a full buffer: dropping its messages until it catches up"
            );
        }
        self.overflowing = true;
        self.count_loss();
    }

    fn count_loss(&mut self) {
        self.lost += 1;
        self.total_lost.fetch_add(1, Ordering::Relaxed);
    }
}

impl Wait {
    /// Waits until `deadline` for room. `Ok(lost_before)` when delivered; `Err(())` when the
    /// deadline passed (the message is dropped). A closed receiver counts as delivered.
    pub(super) async fn run(self, deadline: tokio::time::Instant) -> Result<u64, ()> {
        let carried = self.msg.lost_before;
        match tokio::time::timeout_at(deadline, self.tx.send(self.msg)).await {
            Ok(_) => Ok(carried),
            Err(_) => Err(()),
        }
    }
}

/// Applies the outcome of a [`Wait`] to the sink it came from.
pub(super) fn settle(sink: &mut Sink, outcome: Result<u64, ()>, what: &str, stall: Duration) {
    match outcome {
        Ok(carried) => sink.delivered_after_wait(carried),
        Err(()) => sink.stalled(what, stall),
    }
}

struct Slot {
    id: u64,
    patterns: Vec<String>,
    sink: Sink,
}

#[derive(Default)]
pub(super) struct Table {
    slots: Vec<Slot>,
    next_id: u64,
    refs: HashMap<String, usize>,
}

impl Table {
    fn add(&mut self, patterns: Vec<String>, sink: Sink) -> u64 {
        self.next_id += 1;
        for p in &patterns {
            *self.refs.entry(p.clone()).or_default() += 1;
        }
        self.slots.push(Slot {
            id: self.next_id,
            patterns,
            sink,
        });
        self.next_id
    }

    /// Removes a slot; returns the patterns no other slot uses any more.
    fn remove(&mut self, id: u64) -> Vec<String> {
        let Some(i) = self.slots.iter().position(|s| s.id == id) else {
            return Vec::new();
        };
        let slot = self.slots.swap_remove(i);
        slot.patterns
            .into_iter()
            .filter(|p| match self.refs.get_mut(p) {
                Some(n) if *n > 1 => {
                    *n -= 1;
                    false
                }
                _ => {
                    self.refs.remove(p);
                    true
                }
            })
            .collect()
    }

    /// Offers `msg` to every subscription that wants a publish on its URL; returns the
    /// waits for subscriptions whose buffer is full, by slot id.
    pub(super) fn deliver(&mut self, msg: Message) -> Vec<(u64, Wait)> {
        let mut waits = Vec::new();
        self.each_match(msg, |slot, msg| {
            if let Offer::Wait(w) = slot.sink.offer(msg) {
                waits.push((slot.id, w));
            }
        });
        waits
    }

    /// Like [`Table::deliver`], but never waits: full buffers drop and count (quick traffic).
    pub(super) fn deliver_now(&mut self, msg: Message) {
        self.each_match(msg, |slot, msg| slot.sink.offer_now(msg));
    }

    /// Calls `f` with every slot that wants `msg` and a copy of it; the last one gets `msg`
    /// itself (one subscription, the common case, costs no copy).
    fn each_match(&mut self, msg: Message, mut f: impl FnMut(&mut Slot, Message)) {
        let wants =
            |slot: &Slot, url: &str| slot.patterns.iter().any(|p| subscription_matches(p, url));
        let Some(last) = self.slots.iter().rposition(|s| wants(s, &msg.url)) else {
            return;
        };
        for slot in &mut self.slots[..last] {
            if wants(slot, &msg.url) {
                f(slot, msg.clone());
            }
        }
        f(&mut self.slots[last], msg);
    }

    /// The sink of slot `id`, if it still exists.
    pub(super) fn sink(&mut self, id: u64) -> Option<&mut Sink> {
        self.slots
            .iter_mut()
            .find(|s| s.id == id)
            .map(|s| &mut s.sink)
    }

    /// Ends every stream (the connection is gone).
    pub(super) fn clear(&mut self) {
        self.slots.clear();
        self.refs.clear();
    }
}

fn patterns_packet(ptype: PacketType, patterns: &[String]) -> Result<Packet, Error> {
    let packet = Packet::new(ptype);
    Ok(match patterns {
        [one] => packet.with_url(Bytes::from(one.clone().into_bytes())),
        many => packet.with_param(serde_json::to_vec(many)?),
    })
}

pub(super) async fn subscribe(
    client: Client,
    patterns: Vec<String>,
    timeout: Duration,
) -> Result<Subscription, Error> {
    if patterns.is_empty() {
        return Err(Error::Url(tether_wire::url::UrlError::Empty));
    }
    for p in &patterns {
        check_url(p.as_bytes())?;
    }
    let packet = patterns_packet(PacketType::Subscribe, &patterns)?;
    let (tx, rx) = mpsc::channel(client.inner.shared.buffer);
    let (sink, lost) = Sink::new(tx);
    // Registered before asking, so nothing published right after the server's reply is missed.
    let id = lock(&client.inner.shared.subs).add(patterns.clone(), sink);
    let what = format!("subscribe {patterns:?}");
    let result = client.request(packet, |_| what.clone(), timeout).await;
    match result {
        Ok(reply) if reply.status.is_success() => Ok(Subscription {
            client,
            id,
            patterns,
            rx,
            lost,
            active: true,
        }),
        other => {
            lock(&client.inner.shared.subs).remove(id);
            match other {
                Ok(reply) => Err(Error::Refused {
                    what,
                    status: reply.status,
                }),
                Err(e) => Err(e),
            }
        }
    }
}

fn lock(m: &std::sync::Mutex<Table>) -> std::sync::MutexGuard<'_, Table> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A stream of publishes matching a set of patterns. It ends when the connection does.
/// Dropping it unsubscribes (without waiting for the server's answer);
/// [`Subscription::unsubscribe`] does so and waits.
///
/// Messages wait in a buffer (default [`super::DEFAULT_BUFFER`] messages, see
/// [`super::Connect::buffer`]). A full buffer slows the connection down; one left full for
/// the stall timeout ([`super::Connect::stall_timeout`]) makes further messages drop until
/// it is drained, counted in [`Message::lost_before`] and [`Subscription::lost`].
pub struct Subscription {
    client: Client,
    id: u64,
    patterns: Vec<String>,
    rx: mpsc::Receiver<Message>,
    lost: Arc<AtomicU64>,
    active: bool,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription")
            .field("patterns", &self.patterns)
            .finish()
    }
}

impl Subscription {
    /// The patterns this subscription covers.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    /// The next message; `None` once the connection has ended.
    pub async fn next(&mut self) -> Option<Message> {
        self.rx.recv().await
    }

    /// Messages dropped so far because the buffer was full.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    /// Unsubscribes the patterns no other subscription of this client uses, and waits for
    /// the server to confirm.
    pub async fn unsubscribe(self) -> Result<(), Error> {
        self.unsubscribe_with_timeout(Duration::from_secs(10)).await
    }

    /// [`Subscription::unsubscribe`], waiting at most `timeout` for the server's answer
    /// (`Error::Timeout` after it; this side has unsubscribed either way).
    pub async fn unsubscribe_with_timeout(mut self, timeout: Duration) -> Result<(), Error> {
        self.active = false;
        let gone = lock(&self.client.inner.shared.subs).remove(self.id);
        if gone.is_empty() {
            return Ok(());
        }
        let what = format!("unsubscribe {gone:?}");
        let packet = patterns_packet(PacketType::Unsubscribe, &gone)?;
        let reply = self
            .client
            .request(packet, |_| what.clone(), timeout)
            .await?;
        if reply.status.is_success() {
            Ok(())
        } else {
            Err(Error::Refused {
                what,
                status: reply.status,
            })
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        if !self.active {
            return;
        }
        let gone = lock(&self.client.inner.shared.subs).remove(self.id);
        if gone.is_empty() || self.client.is_closed() {
            return;
        }
        // Fire and forget: the reply's seqno matches no pending call and is ignored.
        let seqno = self.client.next_seqno();
        if let Ok(packet) = patterns_packet(PacketType::Unsubscribe, &gone) {
            if let Ok(bytes) = packet.with_seqno(seqno).to_bytes() {
                let _ = self.client.inner.shared.outbound.try_send(&bytes);
            }
        }
    }
}

impl futures_core::Stream for Subscription {
    type Item = Message;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.rx.poll_recv(cx)
    }
}

/// The stream of datagrams the server sends to this client (see [`Client::datagrams`]).
/// Buffered and counted like a [`Subscription`].
#[derive(Debug)]
pub struct Datagrams {
    rx: mpsc::Receiver<Message>,
    lost: Arc<AtomicU64>,
}

impl Datagrams {
    pub(super) fn new(rx: mpsc::Receiver<Message>, lost: Arc<AtomicU64>) -> Self {
        Datagrams { rx, lost }
    }

    /// The next datagram; `None` once the connection has ended.
    pub async fn next(&mut self) -> Option<Message> {
        self.rx.recv().await
    }

    /// Datagrams dropped so far because the buffer was full.
    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }
}

impl futures_core::Stream for Datagrams {
    type Item = Message;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.rx.poll_recv(cx)
    }
}
