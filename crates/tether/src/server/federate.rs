//! What the server asks of a federation (see `crate::federation`), kept free of NATS: with
//! none attached, each hook is one check of an empty `OnceLock`.

use std::sync::Arc;

use super::handler::Route;
use crate::Payload;

/// A federation a server is part of.
pub(crate) trait Federate: Send + Sync + 'static {
    /// A publish delivered locally, to send to the other nodes.
    fn forward(&self, url: &str, payload: &Payload, quick: bool) -> Forwarded;
    /// The set of subscribed patterns may have changed.
    fn interest_changed(&self);
    /// A route was added.
    fn routes_changed(&self);
    /// The route to run for `url` when the local lookup found the prefix route with stem
    /// `local.0` (`None`: no route at all): a more specific route may be served by another
    /// node.
    fn resolve(&self, url: &str, local: Option<(&str, Route)>) -> Route;
}

/// What became of a publish offered to the federation.
pub(crate) enum Forwarded {
    /// On its way.
    Queued,
    /// Not forwarded (counted by the federation).
    Dropped,
    /// No other node subscribed to it: nothing to send.
    NotWanted,
    /// The forward queue is full: this resolves once it took the publish (`true`) or gave
    /// up (`false`, counted), within a bounded wait.
    Wait(crate::server::BoxFuture<bool>),
}

pub(crate) type Slot = std::sync::OnceLock<Arc<dyn Federate>>;
