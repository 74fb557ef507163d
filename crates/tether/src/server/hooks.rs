//! Hooks a server calls as clients come and go: the events and the stored callbacks.

use super::{ClientHandle, DatagramHandler};
use crate::CloseReason;

/// A client entering or leaving.
#[derive(Debug, Clone)]
pub enum ClientEvent {
    /// Handshake completed.
    Connected(ClientHandle),
    /// Connection ended, with the reason.
    Disconnected(ClientHandle, CloseReason),
}

type ClientHook = Box<dyn Fn(ClientEvent) + Send + Sync>;
type SubscriptionHook = Box<dyn Fn(&ClientHandle, &[String], bool) + Send + Sync>;

/// The callbacks set on the builder.
#[derive(Default)]
pub(crate) struct Hooks {
    pub(crate) on_client: Option<ClientHook>,
    pub(crate) on_subscription: Option<SubscriptionHook>,
    pub(crate) on_datagram: Option<Box<dyn DatagramHandler>>,
    pub(crate) relay: Option<super::Relay>,
}

impl std::fmt::Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("on_client", &self.on_client.is_some())
            .field("on_subscription", &self.on_subscription.is_some())
            .field("on_datagram", &self.on_datagram.is_some())
            .field("relay", &self.relay)
            .finish()
    }
}
