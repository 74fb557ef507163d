//! Subscriptions and datagrams as streams, and the client-side table that routes each
//! incoming publish to the subscriptions whose patterns match it.
//!
//! The server sends a publish once per client even when several of the client's patterns
//! match; the table fans it out locally to every [`Subscription`] that asked for it.
//! Patterns are reference-counted so that dropping one subscription does not unsubscribe a
//! pattern another subscription still uses.
//!
//! The reader task never waits for a consumer: RPC replies travel on the same TCP stream as
//! publishes, so a blocked reader would starve every call. Each subscription therefore
//! has a bounded buffer; a message that finds it full is dropped and counted, and the next
//! message delivered carries the count in [`Message::lost_before`] (like the `Lagged`
//! error of a tokio broadcast channel). Nothing is lost without the consumer being told.

use std::collections::HashMap;
use std::pin::Pin;
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
    lost: u64,
    total_lost: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Sink {
    pub(super) fn new(
        tx: mpsc::Sender<Message>,
    ) -> (Sink, std::sync::Arc<std::sync::atomic::AtomicU64>) {
        let total_lost = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        (
            Sink {
                tx,
                lost: 0,
                total_lost: total_lost.clone(),
            },
            total_lost,
        )
    }

    /// Queues `msg` without waiting. Returns false when the receiver is gone.
    pub(super) fn offer(&mut self, mut msg: Message, what: &str) -> bool {
        msg.lost_before = self.lost;
        match self.tx.try_send(msg) {
            Ok(()) => {
                self.lost = 0;
                true
            }
            Err(mpsc::error::TrySendError::Full(_)) => {
                if self.lost == 0 {
                    tracing::warn!("{what} buffer full: dropping messages until it is read");
                }
                self.lost += 1;
                self.total_lost
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                true
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
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

    /// Offers `msg` to every subscription that wants a publish on its URL.
    pub(super) fn deliver(&mut self, msg: Message) {
        for slot in &mut self.slots {
            if slot
                .patterns
                .iter()
                .any(|p| subscription_matches(p, &msg.url))
            {
                slot.sink.offer(msg.clone(), "subscription");
            }
        }
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
    let result = client
        .request(packet, &what, super::DEFAULT_CALL_TIMEOUT)
        .await;
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
/// [`super::Connect::buffer`]). If the consumer falls so far behind that it fills up, further
/// messages are dropped and counted: [`Message::lost_before`] on the next message and
/// [`Subscription::lost`] say how many.
pub struct Subscription {
    client: Client,
    id: u64,
    patterns: Vec<String>,
    rx: mpsc::Receiver<Message>,
    lost: std::sync::Arc<std::sync::atomic::AtomicU64>,
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
        self.lost.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Unsubscribes the patterns no other subscription of this client uses, and waits for
    /// the server to confirm.
    pub async fn unsubscribe(mut self) -> Result<(), Error> {
        self.active = false;
        let gone = lock(&self.client.inner.shared.subs).remove(self.id);
        if gone.is_empty() {
            return Ok(());
        }
        let what = format!("unsubscribe {gone:?}");
        let packet = patterns_packet(PacketType::Unsubscribe, &gone)?;
        let reply = self
            .client
            .request(packet, &what, Duration::from_secs(10))
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
    lost: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl Datagrams {
    pub(super) fn new(
        rx: mpsc::Receiver<Message>,
        lost: std::sync::Arc<std::sync::atomic::AtomicU64>,
    ) -> Self {
        Datagrams { rx, lost }
    }

    /// The next datagram; `None` once the connection has ended.
    pub async fn next(&mut self) -> Option<Message> {
        self.rx.recv().await
    }

    /// Datagrams dropped so far because the buffer was full.
    pub fn lost(&self) -> u64 {
        self.lost.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl futures_core::Stream for Datagrams {
    type Item = Message;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Message>> {
        self.rx.poll_recv(cx)
    }
}
