//! Publishes across nodes: the forward queue and its sender on the publishing side, the
//! subscription cover and its readers on the receiving side (see the module docs above).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::Message;
use bytes::Bytes;
use tether_wire::url::subject::pattern_subject;
use tether_wire::vsoa::{Decoder, PacketRef, PacketType, MAX_PACKET_LEN};
use tokio::sync::{mpsc, oneshot};

use super::{bump, drop_counted, next_message, Inner};
use crate::server::Server;
use crate::Payload;

/// One publish waiting for NATS.
pub(super) struct Forward {
    pub(super) subject: async_nats::Subject,
    pub(super) url: Bytes,
    pub(super) payload: Payload,
    pub(super) quick: bool,
    /// Its share of the forward queue's bytes.
    pub(super) permits: u32,
}

/// Subjects of recent URLs, so that a busy URL is escaped once, not per publish.
pub(super) const SUBJECT_CACHE: usize = 4096;

/// The envelope in front of the VSOA packets of publishes on NATS: magic and version,
/// flags (bit 0: quick), the origin and the sequence number of the first packet
/// (big-endian); the packets that follow have the next numbers.
const ENVELOPE: usize = 19;
const MAGIC: [u8; 2] = [b'T', 1];

fn envelope(origin: u64, seq: u64, quick: bool, packet_len: usize) -> bytes::BytesMut {
    let mut b = bytes::BytesMut::with_capacity(ENVELOPE + packet_len);
    b.extend_from_slice(&MAGIC);
    b.extend_from_slice(&[u8::from(quick)]);
    b.extend_from_slice(&origin.to_be_bytes());
    b.extend_from_slice(&seq.to_be_bytes());
    b
}

/// (origin, first seq, quick, the VSOA packets) of enveloped publishes.
fn open_envelope(b: &Bytes) -> Option<(u64, u64, bool, Bytes)> {
    if b.len() < ENVELOPE || b[..2] != MAGIC {
        return None;
    }
    let origin = u64::from_be_bytes(b[3..11].try_into().ok()?);
    let seq = u64::from_be_bytes(b[11..19].try_into().ok()?);
    Some((origin, seq, b[2] & 1 == 1, b.slice(ENVELOPE..)))
}

/// Sends queued publishes to NATS, in order, each with the origin and a sequence number.
/// Consecutive publishes on one subject that are waiting together go as one NATS message
/// (at most [`BATCH_BYTES`]): under load that saves NATS' per-message work on every hop,
/// idle it changes nothing. Publishes found waiting while the connection is down are
/// dropped and counted, never sent late.
pub(super) async fn forwarder(inner: Arc<Inner>, mut rx: mpsc::UnboundedReceiver<Forward>) {
    let mut seq: u64 = 0;
    let mut waiting = Vec::with_capacity(256);
    let c = &inner.counters;
    while rx.recv_many(&mut waiting, 256).await > 0 {
        let mut batch: Option<(async_nats::Subject, bool, bytes::BytesMut, u64)> = None;
        for f in waiting.drain(..) {
            inner.budget.add_permits(f.permits as usize);
            if !inner.connected.load(Relaxed) {
                drop_counted(
                    &inner.dropped_log,
                    &c.dropped_disconnected,
                    "no NATS connection",
                );
                continue;
            }
            let packet = PacketRef {
                ptype: PacketType::Publish,
                flags: Default::default(),
                status: Default::default(),
                seqno: 0,
                tunid: 0,
                url: &f.url,
                param: &f.payload.param,
                data: &f.payload.data,
            };
            let len = packet.encoded_len();
            let fits = batch.as_ref().is_some_and(|(subject, quick, body, _)| {
                *subject == f.subject && *quick == f.quick && body.len() + len <= BATCH_BYTES
            });
            if !fits {
                if let Some(done) = batch.take() {
                    send(&inner, done).await;
                }
                batch = Some((
                    f.subject.clone(),
                    f.quick,
                    envelope(inner.origin, seq + 1, f.quick, len),
                    0,
                ));
            }
            let Some((_, _, body, n)) = batch.as_mut() else {
                continue;
            };
            if packet.encode(body).is_err() {
                bump(&c.dropped_nats_error);
                continue;
            }
            seq += 1;
            *n += 1;
        }
        if let Some(done) = batch.take() {
            send(&inner, done).await;
        }
    }
}

/// Publishes at most this many bytes in one NATS message (NATS allows 1 MiB by default).
const BATCH_BYTES: usize = 512 << 10;

async fn send(
    inner: &Inner,
    (subject, _, body, n): (async_nats::Subject, bool, bytes::BytesMut, u64),
) {
    if n == 0 {
        return;
    }
    let c = &inner.counters;
    match inner.client.publish(subject, body.freeze()).await {
        Ok(()) => {
            c.forwarded.fetch_add(n, Relaxed);
        }
        Err(e) => {
            c.dropped_nats_error.fetch_add(n, Relaxed);
            tracing::debug!("federation: publish not sent: {e}");
        }
    }
}

/// The most general patterns of `patterns`: those no other one covers. At most one of
/// them matches any URL, so NATS delivers each publish once.
pub(super) fn cover(patterns: impl IntoIterator<Item = String>) -> HashSet<String> {
    let all: HashSet<String> = patterns.into_iter().collect();
    let stems: HashSet<&str> = all.iter().filter_map(|p| p.strip_suffix('/')).collect();
    all.iter()
        .filter(|p| {
            let (path, own) = match p.strip_suffix('/') {
                Some(stem) => (stem, true),
                None => (p.as_str(), false),
            };
            // Covered when a prefix pattern's stem is a segment-prefix of our path (for
            // a prefix pattern, other than its own stem).
            !tether_wire::url::stems(path)
                .skip(usize::from(own))
                .any(|s| stems.contains(s))
        })
        .cloned()
        .collect()
}

/// What a stopped subscription saw: its pattern and, per origin, the highest sequence
/// number. A publish on a URL that pattern covers, from that origin, with a sequence at or
/// below it was delivered by that subscription already (one NATS subscription keeps each
/// publisher's order, and it was subscribed from before its successor to after).
#[derive(Clone, Debug)]
struct Handoff {
    pattern: String,
    high: HashMap<u64, u64>,
}

/// At most this many handoffs are kept by a subscription (the oldest go first); entries
/// also go as soon as their origin's sequence passed them.
const HANDOFFS: usize = 64;

/// One NATS subscription's reader state.
struct Reader {
    pattern: String,
    inherited: Vec<Handoff>,
    high: HashMap<u64, u64>,
}

impl Reader {
    /// Whether a publish is new here (and records it).
    fn first(&mut self, origin: u64, seq: u64, url: &str) -> bool {
        let mut dup = false;
        self.inherited.retain_mut(|h| {
            if let Some(&top) = h.high.get(&origin) {
                if seq <= top {
                    dup |= tether_wire::url::subscription_matches(&h.pattern, url);
                } else {
                    // This origin's later publishes are all above it.
                    h.high.remove(&origin);
                }
            }
            !h.high.is_empty()
        });
        let top = self.high.entry(origin).or_insert(0);
        *top = (*top).max(seq);
        !dup
    }

    /// What the next subscription for these URLs must know.
    fn handoff(self) -> Vec<Handoff> {
        let mut out = self.inherited;
        out.push(Handoff {
            pattern: self.pattern,
            high: self.high,
        });
        let excess = out.len().saturating_sub(HANDOFFS);
        out.drain(..excess);
        out
    }
}

type Stop = oneshot::Sender<oneshot::Sender<Vec<Handoff>>>;

/// Keeps the NATS subscriptions equal to the cover of the local subscribers' patterns.
pub(super) async fn interest(inner: Arc<Inner>, server: Server) {
    let mut held: HashMap<String, Stop> = HashMap::new();
    let prefix = inner.pub_prefix();
    loop {
        inner.interest.notified().await;
        let wanted = cover(server.interest_patterns());
        let mut starts = Vec::new();
        for pattern in &wanted {
            if held.contains_key(pattern) {
                continue;
            }
            let subject = match pattern_subject(&prefix, pattern) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!("federation: {pattern:?} is not subscribed across nodes: {e}");
                    continue;
                }
            };
            match inner.client.subscribe(subject).await {
                Ok(sub) => {
                    let (stop_tx, stop_rx) = oneshot::channel();
                    held.insert(pattern.clone(), stop_tx);
                    starts.push((pattern.clone(), sub, stop_rx));
                }
                Err(e) => tracing::warn!("federation: subscribing {pattern:?}: {e}"),
            }
        }
        // Then stop the ones no longer wanted: subscribing first, and waiting until the
        // NATS server has the new subscriptions, leaves no moment without a subscription
        // for a URL that moves. The new ones start reading once those are drained, so the
        // URL stays in order, and they learn what was delivered already.
        let gone: Vec<String> = held
            .keys()
            .filter(|p| !wanted.contains(*p))
            .cloned()
            .collect();
        if !gone.is_empty() && !starts.is_empty() {
            barrier(&inner).await;
        }
        let mut drained = Vec::new();
        for pattern in gone {
            if let Some(stop) = held.remove(&pattern) {
                let (tx, rx) = oneshot::channel();
                let _ = stop.send(tx);
                drained.push(rx);
            }
        }
        inner.counters.subscriptions.store(held.len(), Relaxed);
        // Announced after the subscriptions were sent: whoever learns of them from the
        // announcement finds them in NATS already (NATS keeps one connection's order).
        *inner.cover_now.lock().unwrap_or_else(|e| e.into_inner()) = held.keys().cloned().collect();
        inner.announce.notify_one();
        // Every new subscription waits for every drained one (and inherits what they saw).
        let handoffs = SharedHandoffs::new(drained);
        for (pattern, sub, stop) in starts {
            let (inner, server, handoffs) = (inner.clone(), server.clone(), handoffs.clone());
            tokio::spawn(async move {
                let reader = Reader {
                    pattern,
                    inherited: handoffs.get().await,
                    high: HashMap::new(),
                };
                read(sub, stop, reader, &inner, &server).await;
            });
        }
    }
}

/// Returns once our NATS server has processed everything this connection sent before: it
/// answers a request nobody serves with "no responders" in order. Messages it routed to a
/// subscription before it had the new one have reached us by then, too.
async fn barrier(inner: &Inner) {
    let subject = format!("{}.ctl.barrier.{:016x}", inner.prefix, inner.origin);
    let req = async_nats::Request::new().timeout(Some(Duration::from_secs(2)));
    match inner.client.send_request(subject, req).await {
        Err(e) if e.kind() == async_nats::RequestErrorKind::NoResponders => {}
        other => tracing::debug!("federation: subscription barrier: {other:?}"),
    }
}

/// The handoffs of drained subscriptions, awaited once and shared by their successors.
#[derive(Clone)]
struct SharedHandoffs(
    Arc<tokio::sync::OnceCell<Vec<Handoff>>>,
    Arc<Mutex<Vec<oneshot::Receiver<Vec<Handoff>>>>>,
);

impl SharedHandoffs {
    fn new(drained: Vec<oneshot::Receiver<Vec<Handoff>>>) -> Self {
        SharedHandoffs(Arc::default(), Arc::new(Mutex::new(drained)))
    }

    async fn get(&self) -> Vec<Handoff> {
        self.0
            .get_or_init(|| async {
                let rxs = std::mem::take(&mut *self.1.lock().unwrap_or_else(|e| e.into_inner()));
                let mut all = Vec::new();
                for rx in rxs {
                    // A reader that ended (NATS closed the subscription) hands nothing over.
                    all.extend(rx.await.unwrap_or_default());
                }
                all
            })
            .await
            .clone()
    }
}

/// Delivers one subscription's messages until it is stopped; then unsubscribes, delivers
/// what was already buffered, and hands over what it saw.
async fn read(
    mut sub: async_nats::Subscriber,
    mut stop: oneshot::Receiver<oneshot::Sender<Vec<Handoff>>>,
    mut reader: Reader,
    inner: &Inner,
    server: &Server,
) {
    let done = loop {
        tokio::select! {
            msg = next_message(&mut sub) => match msg {
                Some(m) => receive(m, &mut reader, inner, server).await,
                None => return,
            },
            done = &mut stop => {
                let _ = sub.unsubscribe().await;
                break done.ok();
            }
        }
    };
    while let Some(m) = next_message(&mut sub).await {
        receive(m, &mut reader, inner, server).await;
    }
    if let Some(done) = done {
        let _ = done.send(reader.handoff());
    }
}

/// Delivers the publishes of one NATS message from another node here, and only here.
async fn receive(m: Message, reader: &mut Reader, inner: &Inner, server: &Server) {
    let c = &inner.counters;
    let Some((origin, first, quick, packets)) = open_envelope(&m.payload) else {
        bump(&c.malformed);
        return;
    };
    if origin == inner.origin {
        return; // our own (no_echo makes this rare)
    }
    let mut buf = bytes::BytesMut::from(&packets[..]);
    let mut decoder = Decoder::with_max_packet_len(MAX_PACKET_LEN);
    let mut seq = first;
    loop {
        let packet = match decoder.decode(&mut buf) {
            Ok(Some(p)) if p.ptype == PacketType::Publish => p,
            Ok(None) if buf.is_empty() => return,
            _ => {
                bump(&c.malformed);
                return;
            }
        };
        deliver(packet, origin, seq, quick, reader, inner, server);
        seq += 1;
    }
}

fn deliver(
    packet: tether_wire::vsoa::Packet,
    origin: u64,
    seq: u64,
    quick: bool,
    reader: &mut Reader,
    inner: &Inner,
    server: &Server,
) {
    let c = &inner.counters;
    let Ok(url) = tether_wire::url::check_url(&packet.url) else {
        bump(&c.malformed);
        return;
    };
    if !reader.first(origin, seq, url) {
        bump(&c.duplicates);
        return;
    }
    let payload = Payload {
        param: packet.param.clone(),
        data: packet.data.clone(),
    };
    bump(&c.received);
    let delivered = if quick {
        server.publish_quick_here(url, &payload).map(drop)
    } else {
        server
            .publish_here_nowait(url, &payload, &inner.backlogs)
            .map(drop)
    };
    if let Err(e) = delivered {
        tracing::debug!("federation: publish on {url:?} not delivered here: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sorted(s: HashSet<String>) -> Vec<String> {
        let mut v: Vec<_> = s.into_iter().collect();
        v.sort();
        v
    }

    #[test]
    fn the_cover_keeps_the_most_general_patterns() {
        let c = |ps: &[&str]| sorted(cover(ps.iter().map(|s| s.to_string())));
        assert_eq!(c(&["/a/", "/a/b/", "/a/b", "/a", "/ab"]), ["/a/", "/ab"]);
        assert_eq!(c(&["/", "/a/", "/x"]), ["/"]);
        assert_eq!(c(&["/a//", "/a/"]), ["/a/"]);
        assert_eq!(c(&["/a//", "/a/b"]), ["/a//", "/a/b"]);
        assert_eq!(c(&["//", "/"]), ["/"]);
        assert_eq!(c(&["/a", "/a/b"]), ["/a", "/a/b"]);
        assert_eq!(c(&[]), Vec::<String>::new());
    }

    proptest::proptest! {
        #[test]
        fn the_cover_matches_what_the_patterns_match_once(
            ps in proptest::collection::vec("(/[ab]{0,2}){1,3}/?", 0..6),
            urls in proptest::collection::vec("(/[ab]{0,2}){1,4}", 1..8),
        ) {
            let c = cover(ps.iter().cloned());
            for u in &urls {
                let any = ps.iter().any(|p| tether_wire::url::subscription_matches(p, u));
                let n = c.iter().filter(|p| tether_wire::url::subscription_matches(p, u)).count();
                proptest::prop_assert_eq!(n, usize::from(any), "{:?} {:?} {}", ps, c, u);
            }
        }
    }

    #[test]
    fn envelopes_round_trip_and_foreign_messages_are_refused() {
        let mut b = envelope(7, 42, true, 3);
        b.extend_from_slice(b"abc");
        let (origin, seq, quick, rest) = open_envelope(&b.freeze()).unwrap();
        assert_eq!((origin, seq, quick, &rest[..]), (7, 42, true, &b"abc"[..]));
        assert!(open_envelope(&Bytes::from_static(b"T")).is_none());
        assert!(open_envelope(&Bytes::from(vec![b'X'; 40])).is_none());
        let mut v2 = envelope(1, 1, false, 0).to_vec();
        v2[1] = 2;
        assert!(open_envelope(&Bytes::from(v2)).is_none(), "another version");
    }

    #[test]
    fn a_handoff_drops_what_the_old_subscription_delivered_and_only_that() {
        let mut old = Reader {
            pattern: "/a/".into(),
            inherited: vec![],
            high: HashMap::new(),
        };
        for seq in [1, 2, 5] {
            assert!(old.first(9, seq, "/a/x"));
        }
        let mut new = Reader {
            pattern: "/".into(),
            inherited: old.handoff(),
            high: HashMap::new(),
        };
        assert!(!new.first(9, 5, "/a/x"), "delivered by the old one");
        assert!(new.first(9, 4, "/b/x"), "the old one never covered /b/");
        assert!(new.first(8, 3, "/a/x"), "another origin");
        assert!(new.first(9, 6, "/a/x"));
        assert!(
            new.inherited.iter().all(|h| !h.high.contains_key(&9)),
            "passed: forgotten"
        );
    }
}
