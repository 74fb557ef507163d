//! The server's shared view of its clients: who is connected, their priority and flags,
//! and the subscription index. Kept behind one mutex that is never held across `.await`.

use std::collections::HashMap;
use std::net::SocketAddr;

use tether_wire::url::SubscriptionIndex;

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
    pub(crate) subs: SubscriptionIndex<u32>,
    /// Scratch space for `targets`, reused so publishing does not allocate per call.
    scratch: Vec<u32>,
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
    /// The outbound queues of logged-in, authed clients subscribed to `url`, highest
    /// priority first (ties by id, i.e. connection order).
    pub(crate) fn targets(&mut self, url: &str, out: &mut Vec<Outbound>) {
        out.clear();
        let mut ids = std::mem::take(&mut self.scratch);
        self.subs.matching(url, &mut ids);
        let mut ranked: Vec<(u8, u32, &Outbound)> = ids
            .iter()
            .filter_map(|id| self.clients.get(id))
            .filter(|e| e.logged_in && e.authed)
            .map(|e| (e.priority, e.handle.id, &e.handle.outbound))
            .collect();
        if ranked.iter().any(|r| r.0 != 0) {
            ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
        }
        out.extend(ranked.into_iter().map(|(_, _, o)| o.clone()));
        self.scratch = ids;
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
