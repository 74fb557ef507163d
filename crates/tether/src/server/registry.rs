//! The server's shared view of its clients: who is connected, their priority and flags,
//! and the subscription index. Kept behind one mutex that is never held across `.await`.

use std::collections::HashMap;
use std::net::SocketAddr;

use tether_wire::url::SubscriptionIndex;

use bytes::Bytes;

use super::handler::ClientHandle;
use crate::outbound::Outbound;

pub(crate) struct Entry {
    pub(crate) handle: ClientHandle,
    pub(crate) priority: u8,
    pub(crate) authed: bool,
    pub(crate) logged_in: bool,
}

#[derive(Default)]
pub(crate) struct Registry {
    pub(crate) clients: HashMap<u32, Entry>,
    /// Ids of connections that have not logged in yet; the smallest is the oldest.
    pub(crate) pending: std::collections::BTreeSet<u32>,
    pub(crate) subs: SubscriptionIndex<u32>,
    /// Scratch space for `order`, reused so publishing does not allocate per call.
    scratch: Vec<u32>,
    ordered: Vec<(std::cmp::Reverse<u8>, u32)>,
    /// Subscribers cut off as slow consumers that ended before a publish report saw them:
    /// the next report counts them.
    unreported: super::PublishReport,
}

/// A snapshot of one client, for listings.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ClientSummary {
    /// Id sent in the handshake.
    pub id: u32,
    /// TCP peer address.
    pub addr: SocketAddr,
    /// QoS priority (0 unless set).
    pub priority: u8,
    /// Whether publishes are delivered to it.
    pub authed: bool,
    /// Its subscriptions, sorted.
    pub subscriptions: Vec<String>,
}

impl Registry {
    /// Ids of the logged-in, authed clients subscribed to `url`, highest priority first
    /// (ties by id, i.e. connection order), into `self.ordered`.
    fn order(&mut self, url: &str) {
        let mut ids = std::mem::take(&mut self.scratch);
        ids.clear();
        self.subs.matching(url, &mut ids);
        self.ordered.clear();
        self.ordered.extend(ids.iter().filter_map(|id| {
            let e = self.clients.get(id)?;
            (e.logged_in && e.authed).then_some((std::cmp::Reverse(e.priority), *id))
        }));
        // Stable, and linear when priorities are all equal (one run).
        self.ordered.sort_by_key(|k| k.0);
        self.scratch = ids;
    }

    /// The clients a publish on `url` goes to, in delivery order.
    pub(crate) fn targets(&mut self, url: &str, out: &mut Vec<ClientHandle>) {
        self.order(url);
        out.clear();
        out.extend(
            self.ordered
                .iter()
                .filter_map(|(_, id)| self.clients.get(id).map(|e| e.handle.clone())),
        );
    }

    /// Offers a publish to every client it goes to, in delivery order, without waiting:
    /// counts the queued ones in `delivered` and hands back the full queues in `waiting`.
    /// `encode` runs once, and only if there is a client. Returns the encoded packet.
    ///
    /// `hold(id)` says which clients must not be offered the publish directly (their
    /// earlier publishes still wait: it goes behind them); those go to `full` too.
    pub(crate) fn offer<E>(
        &mut self,
        url: &str,
        encode: impl FnOnce() -> Result<Bytes, E>,
        report: &mut super::PublishReport,
        hold: impl Fn(u32) -> bool,
        mut full: impl FnMut(u32, &Outbound),
    ) -> Result<Option<Bytes>, E> {
        let earlier = std::mem::take(&mut self.unreported);
        report.cut_off += earlier.cut_off;
        report.discarded += earlier.discarded;
        self.order(url);
        if self.ordered.is_empty() {
            return Ok(None);
        }
        let bytes = encode()?;
        for (_, id) in &self.ordered {
            let Some(e) = self.clients.get(id) else {
                continue;
            };
            if hold(*id) {
                full(*id, &e.handle.outbound);
                continue;
            }
            match e.handle.outbound.try_send_publish(&bytes) {
                Ok(true) => report.delivered += 1,
                Ok(false) => full(*id, &e.handle.outbound),
                // Closing: a cut-off not yet in any report is counted in this one.
                Err(_) => {
                    if let Some(discarded) = e.handle.outbound.take_cut() {
                        report.cut(discarded);
                    }
                }
            }
        }
        Ok(Some(bytes))
    }

    /// Takes a new connection in, unless `max` connections exist already. Returns the
    /// oldest not-yet-logged-in connection to evict if more than `max_pending` would wait.
    pub(crate) fn admit(
        &mut self,
        handle: &ClientHandle,
        max: usize,
        max_pending: usize,
    ) -> Result<Option<ClientHandle>, ()> {
        if self.clients.len() >= max {
            return Err(());
        }
        self.clients.insert(
            handle.id,
            Entry {
                handle: handle.clone(),
                priority: 0,
                authed: true,
                logged_in: false,
            },
        );
        self.pending.insert(handle.id);
        if self.pending.len() <= max_pending {
            return Ok(None);
        }
        let oldest = self.pending.pop_first();
        Ok(oldest
            .and_then(|id| self.clients.get(&id))
            .map(|e| e.handle.clone()))
    }

    /// Forgets a connection that ended.
    pub(crate) fn remove(&mut self, id: u32) {
        if let Some(e) = self.clients.remove(&id) {
            if self.subs.count_of(id) > 0 {
                if let Some(discarded) = e.handle.outbound.take_cut() {
                    self.unreported.cut(discarded);
                }
            }
        }
        self.pending.remove(&id);
        self.subs.remove_client(id);
    }

    pub(crate) fn summary(&self, e: &Entry) -> ClientSummary {
        let mut subscriptions: Vec<String> = self
            .subs
            .patterns_of(e.handle.id)
            .map(str::to_string)
            .collect();
        subscriptions.sort();
        ClientSummary {
            id: e.handle.id,
            addr: e.handle.addr,
            priority: e.priority,
            authed: e.authed,
            subscriptions,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbound::Outbound;
    use std::time::Duration;

    fn entry(id: u32, priority: u8, logged_in: bool, authed: bool) -> Entry {
        let (outbound, _rx) = Outbound::new(1024, Duration::from_secs(1));
        Entry {
            handle: ClientHandle {
                id,
                addr: "127.0.0.1:1".parse().unwrap(),
                local: "127.0.0.1:2".parse().unwrap(),
                outbound,
                quick: Default::default(),
                stream_tls: None,
                peer_cert: Default::default(),
                relay_bucket: Default::default(),
            },
            priority,
            authed,
            logged_in,
        }
    }

    #[test]
    fn targets_are_matching_eligible_clients_by_priority_then_id() {
        let mut reg = Registry::default();
        for (id, prio, logged_in, authed) in [
            (1, 0, true, true),
            (2, 5, true, true),
            (3, 5, true, true),
            (4, 7, false, true), // not logged in
            (5, 7, true, false), // not authed
            (6, 1, true, true),
            (7, 9, true, true), // not subscribed
        ] {
            reg.clients.insert(id, entry(id, prio, logged_in, authed));
            if id != 7 {
                reg.subs.subscribe(id, "/a/");
            }
        }
        let mut out = Vec::new();
        reg.targets("/a/b", &mut out);
        let ids: Vec<u32> = out.iter().map(|h| h.id).collect();
        assert_eq!(ids, vec![2, 3, 6, 1]);
    }
}
