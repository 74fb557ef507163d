//! What a server tells and lets an application do about its connected clients: counts,
//! traffic, subscriptions, and setting a client's priority or `authed` flag.

use tether_wire::vsoa::{Flags, Packet, PacketType, Status};

use super::{AdmissionStats, ClientHandle, ClientSummary, QuickStats, Server};
use super::{LatencySnapshot, Traffic};

/// Connections a server holds now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionCount {
    /// Every connection, logged in or not.
    pub all: usize,
    /// Those that have not logged in yet.
    pub pending: usize,
}

/// No client with this id is connected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no client {0} is connected")]
pub struct NoSuchClient(pub u32);

impl Server {
    /// Packets and bytes over all TCP connections since the server was built.
    pub fn traffic(&self) -> Traffic {
        self.shared.traffic.snapshot()
    }

    /// How long RPC handlers took (VSOA clients and callers of other transports alike).
    pub fn rpc_latency(&self) -> LatencySnapshot {
        self.shared.traffic.rpc.snapshot()
    }

    /// Bytes queued for sending over all connections now.
    pub fn queued_bytes(&self) -> usize {
        self.shared
            .registry()
            .clients
            .values()
            .map(|e| e.handle.outbound.queued_bytes())
            .sum()
    }

    /// Connections held now.
    pub fn connection_count(&self) -> ConnectionCount {
        let reg = self.shared.registry();
        ConnectionCount {
            all: reg.clients.len(),
            pending: reg.pending.len(),
        }
    }

    /// Admission counters: connections refused or evicted by the limits.
    pub fn admission_stats(&self) -> AdmissionStats {
        self.shared.admission.stats()
    }

    /// Quick-channel counters.
    pub fn quick_stats(&self) -> QuickStats {
        self.shared.quick.snapshot()
    }

    /// Whether any logged-in client is subscribed to `url`.
    pub fn is_subscribed(&self, url: &str) -> bool {
        self.shared.registry().subs.is_subscribed(url)
    }

    /// The logged-in clients, by id.
    pub fn clients(&self) -> Vec<ClientSummary> {
        let reg = self.shared.registry();
        let mut list: Vec<ClientSummary> = reg
            .clients
            .values()
            .filter(|e| e.logged_in)
            .map(|e| reg.summary(e))
            .collect();
        list.sort_by_key(|c| c.id);
        list
    }

    /// Changes the password logins need from now on (VSOA's `server.passwd`); `None`
    /// lets every client in. Clients already logged in stay. Challenge logins
    /// (`ServerBuilder::secret`) are not affected.
    pub fn set_password(&self, password: Option<&str>) {
        *self
            .shared
            .password
            .write()
            .unwrap_or_else(|e| e.into_inner()) = password.map(super::Secret::new);
    }

    /// Whether logins need a password now.
    pub fn requires_password(&self) -> bool {
        self.shared
            .password
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    /// Changes the send timeout of connections made from now on, and with
    /// `sync_to_clients` of every connected client too (VSOA's
    /// `server.sendtimeout(t, sync_to_clis)`). See [`crate::Config::send_timeout`].
    pub fn set_send_timeout(&self, timeout: std::time::Duration, sync_to_clients: bool) {
        let ns = timeout.as_nanos().min(u64::MAX as u128) as u64;
        self.shared
            .send_timeout_ns
            .store(ns, std::sync::atomic::Ordering::Relaxed);
        if sync_to_clients {
            for e in self.shared.registry().clients.values() {
                e.handle.outbound.set_send_timeout(timeout);
            }
        }
    }

    /// The send timeout new connections get.
    pub fn send_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_nanos(
            self.shared
                .send_timeout_ns
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// A handle on client `id`, if it is connected.
    pub fn client(&self, id: u32) -> Option<ClientHandle> {
        self.shared
            .registry()
            .clients
            .get(&id)
            .map(|e| e.handle.clone())
    }

    /// Whether client `id` would receive a publish on `url`.
    pub fn client_is_subscribed(&self, id: u32, url: &str) -> bool {
        self.shared.registry().subs.client_is_subscribed(id, url)
    }

    /// Sets client `id`'s priority (publishes go to higher priorities first) and tells the
    /// client with a QOSSETUP packet (an error if there is no such client, or its
    /// connection closed before the packet could be queued).
    pub async fn set_priority(&self, id: u32, priority: u8) -> Result<(), NoSuchClient> {
        let out = {
            let mut reg = self.shared.registry();
            let Some(e) = reg.clients.get_mut(&id) else {
                return Err(NoSuchClient(id));
            };
            e.priority = priority;
            e.handle.outbound.clone()
        };
        let mut qos = Packet::new(PacketType::QosSetup);
        qos.flags = Flags::REPLY;
        qos.status = Status(priority);
        // A bare QOSSETUP is 20 bytes and always encodes.
        let bytes = qos.to_bytes().map_err(|_| NoSuchClient(id))?;
        out.send(bytes).await.map_err(|_| NoSuchClient(id))
    }

    /// Sets whether client `id` receives publishes (default true after login).
    pub fn set_authed(&self, id: u32, authed: bool) -> Result<(), NoSuchClient> {
        let mut reg = self.shared.registry();
        let e = reg.clients.get_mut(&id).ok_or(NoSuchClient(id))?;
        e.authed = authed;
        Ok(())
    }
}
