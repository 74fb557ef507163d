//! Publishing: encode once, offer to every matching client's queue in priority order
//! (full queues wait together, at most one send timeout), deliver to local subscribers, and
//! report what happened; quick publishes go out over UDP and count what the socket refused.

use std::future::Future;

use tether_wire::vsoa::{PacketType, MAX_BODY_LEN, MAX_QUICK_BODY_LEN};

use super::{quick, LocalSubscriber, Server};
use crate::{Error, Payload};

/// What a publish did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishReport {
    /// Clients the message was queued for (on a live connection).
    pub delivered: usize,
    /// Matching clients found cut off as slow consumers: by this publish, or since the
    /// previous report that saw them (each cut-off is counted in one report, and in
    /// [`crate::Traffic::cut_off`] when it happens).
    pub cut_off: usize,
    /// Publishes that earlier reports counted as delivered to the clients in `cut_off`,
    /// thrown away with their queues. A caller summing reports over a run of publishes
    /// gets what reached live queues as `delivered - discarded`.
    pub discarded: usize,
    /// On a federated server: 1 when the publish was queued for the other nodes (0 when
    /// no other node subscribed to its URL).
    pub forwarded: usize,
    /// On a federated server: 1 when another node wanted it and it could not be sent (no
    /// NATS connection, forward queue full, URL too long for a subject); counted in the
    /// federation's statistics too.
    pub not_forwarded: usize,
}

impl PublishReport {
    /// Counts a connection found cut off, with what its queue threw away.
    pub(crate) fn cut(&mut self, discarded: usize) {
        self.cut_off += 1;
        self.discarded += discarded;
    }
}

/// What a quick publish did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuickReport {
    /// Datagrams handed to the socket.
    pub sent: usize,
    /// Matching quick clients whose datagram the socket could not take now.
    pub dropped: usize,
    /// As [`PublishReport::forwarded`].
    pub forwarded: usize,
    /// As [`PublishReport::not_forwarded`].
    pub not_forwarded: usize,
}

/// Waits for the queues that were full when the publish was offered (together, so one
/// slow client costs at most one send timeout) and completes the report.
async fn wait_for_full_queues(
    bytes: bytes::Bytes,
    waiting: Vec<crate::outbound::Outbound>,
    mut report: PublishReport,
) -> PublishReport {
    let sends = waiting.iter().map(|out| out.send_publish(bytes.clone()));
    for (res, out) in join_all(sends).await.into_iter().zip(&waiting) {
        match res {
            Ok(()) => report.delivered += 1,
            // Cut off by this send or meanwhile (the writer): counted once, here.
            Err(_) => {
                if let Some(discarded) = out.take_cut() {
                    report.cut(discarded);
                }
            }
        }
    }
    report
}

impl Server {
    /// Publishes `payload` on `url` to every logged-in, authed client subscribed to it,
    /// highest priority first. The packet is encoded once. A client whose queue stays full
    /// for the send timeout is cut off (counted in the report), never silently skipped.
    pub async fn publish(&self, url: &str, payload: Payload) -> Result<PublishReport, Error> {
        let mut report = self.publish_here(url, &payload).await?;
        if let Some(fed) = self.shared.federation.get() {
            use super::federate::Forwarded;
            let forwarded = match fed.forward(url, &payload, false) {
                Forwarded::Queued => Some(true),
                Forwarded::Dropped => Some(false),
                Forwarded::NotWanted => None,
                Forwarded::Wait(room) => Some(room.await),
            };
            if let Some(f) = forwarded {
                report.forwarded = usize::from(f);
                report.not_forwarded = usize::from(!f);
            }
        }
        Ok(report)
    }

    /// [`Server::publish`] on this node alone (what a federation delivers).
    pub(crate) async fn publish_here(
        &self,
        url: &str,
        payload: &Payload,
    ) -> Result<PublishReport, Error> {
        let mut report = PublishReport::default();
        let mut waiting = Vec::new();
        let offered = self.offer_here(
            url,
            payload,
            &mut report,
            |_| false,
            |_, out| waiting.push(out.clone()),
        )?;
        match offered {
            // Boxed: when every queue took it (the common case) the publish future stays
            // small, which the relay, one publish per datagram, measurably gains from.
            Some(bytes) if !waiting.is_empty() => {
                Ok(Box::pin(wait_for_full_queues(bytes, waiting, report)).await)
            }
            _ => Ok(report),
        }
    }

    /// [`Server::publish_here`] that never waits, for a reader that must not stall (a
    /// federation's): a client whose queue is full gets the publish through `backlogs`, in
    /// order behind its earlier ones, and is cut off after the send timeout as usual. The
    /// report counts what was queued at once.
    #[cfg_attr(not(feature = "nats"), allow(dead_code))]
    pub(crate) fn publish_here_nowait(
        &self,
        url: &str,
        payload: &Payload,
        backlogs: &Backlogs,
    ) -> Result<PublishReport, Error> {
        let mut report = PublishReport::default();
        let mut full = Vec::new();
        let held = backlogs.held();
        let offered = self.offer_here(
            url,
            payload,
            &mut report,
            |id| held.contains(&id),
            |id, out| full.push((id, out.clone())),
        )?;
        if let Some(bytes) = offered {
            for (id, out) in full {
                backlogs.push(id, out, bytes.clone());
            }
        }
        Ok(report)
    }

    /// Delivers a publish to the local subscribers and offers it to every matching client
    /// without waiting (`Registry::offer` says what `hold` and `full` do); the encoded
    /// packet, if any client was offered it.
    fn offer_here(
        &self,
        url: &str,
        payload: &Payload,
        report: &mut PublishReport,
        hold: impl Fn(u32) -> bool,
        full: impl FnMut(u32, &crate::outbound::Outbound),
    ) -> Result<Option<bytes::Bytes>, Error> {
        self.deliver_local(url, payload, false, report);
        let packet = payload.packet(PacketType::Publish, url, MAX_BODY_LEN)?;
        Ok(self
            .shared
            .registry()
            .offer(url, || packet.to_bytes(), report, hold, full)?)
    }

    /// Publishes over the quick (UDP) channel to every matching client that advertised a
    /// UDP port: one datagram each, encoded once, never waiting. What the socket cannot take
    /// now is dropped and counted (in the report and [`Server::quick_stats`]).
    pub fn publish_quick(&self, url: &str, payload: Payload) -> Result<QuickReport, Error> {
        let mut report = self.publish_quick_here(url, &payload)?;
        if let Some(fed) = self.shared.federation.get() {
            // Quick publishes never wait.
            use super::federate::Forwarded;
            match fed.forward(url, &payload, true) {
                Forwarded::Queued => report.forwarded = 1,
                Forwarded::NotWanted => {}
                Forwarded::Dropped | Forwarded::Wait(_) => report.not_forwarded = 1,
            }
        }
        Ok(report)
    }

    /// [`Server::publish_quick`] on this node alone.
    pub(crate) fn publish_quick_here(
        &self,
        url: &str,
        payload: &Payload,
    ) -> Result<QuickReport, Error> {
        let mut report = QuickReport::default();
        let mut local = PublishReport::default();
        self.deliver_local(url, payload, true, &mut local);
        report.sent += local.delivered;
        report.dropped += local.cut_off;
        let packet = payload.packet(PacketType::Publish, url, MAX_QUICK_BODY_LEN)?;
        let mut targets = Vec::new();
        self.shared.registry().targets(url, &mut targets);
        let mut bytes = None;
        for client in &targets {
            if let Some(path) = quick::path_of(client) {
                let bytes = match &bytes {
                    Some(b) => b,
                    None => bytes.insert(packet.to_bytes()?),
                };
                if path.send(bytes) {
                    report.sent += 1;
                } else {
                    report.dropped += 1;
                }
            }
        }
        Ok(report)
    }

    /// A subscriber for a caller on another transport (the WebSocket gateway): publishes
    /// matching its patterns queue up for it, at most `capacity`; if it falls that far
    /// behind it is cut off (counted in [`PublishReport::cut_off`]).
    pub fn local_subscriber(&self, capacity: usize) -> LocalSubscriber {
        LocalSubscriber::new(self.shared.clone(), capacity, false)
    }

    /// A monitoring tap (a dashboard's list of recent publishes): like
    /// [`Server::local_subscriber`], but not counted in publish reports, and when it falls
    /// behind it skips publishes and counts them ([`LocalSubscriber::skipped`]) instead of
    /// being cut off.
    pub fn observer(&self, capacity: usize) -> LocalSubscriber {
        LocalSubscriber::new(self.shared.clone(), capacity, true)
    }

    /// A record of every publish for monitoring: the newest `recent` and a count per URL,
    /// taken when wanted ([`super::PublishLog::take`]). Cheaper than an
    /// [`Server::observer`] on a busy server: the publisher writes it in place, nothing
    /// is queued or woken, nothing skipped. Not counted in publish reports.
    pub fn publish_log(&self, recent: usize) -> super::PublishLog {
        super::PublishLog::new(self.shared.clone(), recent)
    }

    fn deliver_local(&self, url: &str, payload: &Payload, quick: bool, report: &mut PublishReport) {
        let cut_before = report.cut_off;
        if self
            .shared
            .has_local
            .load(std::sync::atomic::Ordering::Relaxed)
        {
            self.shared
                .local
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .deliver(url, payload, quick, report);
        }
        if !quick && report.cut_off > cut_before {
            // Local subscribers are cut here and nowhere else.
            self.shared
                .traffic
                .count_cut_off(report.cut_off - cut_before);
            self.shared.interest_changed();
        }
    }
}

/// Awaits every future, concurrently, without spawning.
async fn join_all<F: Future>(futs: impl IntoIterator<Item = F>) -> Vec<F::Output> {
    let mut futs: Vec<_> = futs.into_iter().map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, slot) in futs.iter_mut().zip(out.iter_mut()) {
            if slot.is_none() {
                match f.as_mut().poll(cx) {
                    std::task::Poll::Ready(v) => *slot = Some(v),
                    std::task::Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

/// Publishes waiting for room in full client queues, one ordered line per client, each
/// written by a task of its own, so that whoever delivers them never waits.
#[derive(Default)]
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
pub(crate) struct Backlogs {
    lines: std::sync::Arc<std::sync::Mutex<Lines>>,
}

type Lines = std::collections::HashMap<u32, tokio::sync::mpsc::Sender<bytes::Bytes>>;

/// Publishes one client may have waiting; beyond, it is cut off as a slow consumer.
#[cfg_attr(not(feature = "nats"), allow(dead_code))]
const BACKLOG: usize = 4096;

#[cfg_attr(not(feature = "nats"), allow(dead_code))]
fn lock(lines: &std::sync::Mutex<Lines>) -> std::sync::MutexGuard<'_, Lines> {
    lines.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg_attr(not(feature = "nats"), allow(dead_code))]
impl Backlogs {
    /// The clients with publishes waiting now.
    fn held(&self) -> std::collections::HashSet<u32> {
        lock(&self.lines).keys().copied().collect()
    }

    /// Puts `bytes` at the end of client `id`'s line, starting one if it has none.
    fn push(&self, id: u32, out: crate::outbound::Outbound, bytes: bytes::Bytes) {
        let mut lines = lock(&self.lines);
        let tx = lines.entry(id).or_insert_with(|| {
            let (tx, mut rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(BACKLOG);
            let (out, all) = (out.clone(), self.lines.clone());
            tokio::spawn(async move {
                while let Some(b) = rx.recv().await {
                    // Cut off by the send (and counted there), or gone: the line ends.
                    let sent = out.send_publish(b).await.is_ok();
                    let mut lines = lock(&all);
                    // Under the lock nothing is added: an empty line can end.
                    if !sent || rx.is_empty() {
                        lines.remove(&id);
                        return;
                    }
                }
            });
            tx
        });
        if tx.try_send(bytes).is_err() {
            lines.remove(&id);
            out.kill(crate::CloseReason::SlowConsumer {
                timeout: out.send_timeout(),
            });
        }
    }
}
