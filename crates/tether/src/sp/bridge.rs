//! socket_protocol peers reaching a VSOA server's routes and publishes
//! (docs/protocols/socket-protocol.md §9), through Tether's own service ids:
//!
//! * **route call**, sid 100 -> 101, any did: data `{"route": "/echo", "param": {...}}` (a
//!   `SET /x` route name is a SET, as on the other JSON transports, see
//!   [`Server::call_json`]); the response carries the reply's JSON param. A route nobody
//!   serves answers status 4, a refusal for permissions status 6, any other failure
//!   status 2; failures carry `{"error": ..., "vsoa_status": n}`;
//! * **subscribe**, sid 110 -> 111: did 0 subscribes, did 1 unsubscribes, data one URL
//!   pattern or a list (VSOA matching); each matching publish then arrives as a sid 112
//!   message, did 0, data `{"url": ..., "param": ..., "quick": bool}` (and `"data_bytes": n`
//!   when the publish carried binary data, which is not forwarded). A peer that falls 256
//!   publishes behind is cut off (counted in the server's publish reports) and closed.

use std::sync::Arc;

use serde_json::{json, Value};
use tether_wire::vsoa::Status;

use super::{status, Endpoint, Message, Peer, SpError};
use crate::{LocalSubscriber, Server};

/// Tether's service ids for the bridge (outside the seed's 0-31).
pub mod tether_sid {
    /// Route call request.
    pub const ROUTE_REQUEST: u32 = 100;
    /// Route call response.
    pub const ROUTE_RESPONSE: u32 = 101;
    /// Subscribe (did 0) or unsubscribe (did 1) request.
    pub const SUBSCRIBE_REQUEST: u32 = 110;
    /// Its response.
    pub const SUBSCRIBE_RESPONSE: u32 = 111;
    /// A publish, pushed to a subscribed peer (did 0).
    pub const PUBLISH: u32 = 112;
}

/// Publishes one bridged peer may have queued before it is cut off.
const QUEUE: usize = 256;

impl Endpoint {
    /// Serves `server`'s routes and publishes to this endpoint's peers (see the module docs
    /// of `bridge`, docs/protocols/socket-protocol.md §9). An error if one of the bridge's
    /// sids is registered already.
    pub fn bridge(&self, server: &Server) -> Result<(), SpError> {
        use tether_sid::*;
        self.add_service(
            ROUTE_REQUEST,
            ROUTE_RESPONSE,
            Some("route call request"),
            Some("route call response"),
        )?;
        self.add_service(
            SUBSCRIBE_REQUEST,
            SUBSCRIBE_RESPONSE,
            Some("subscribe request"),
            Some("subscribe response"),
        )?;
        self.add_data(SUBSCRIBE_REQUEST, 0, "subscribe");
        self.add_data(SUBSCRIBE_REQUEST, 1, "unsubscribe");
        self.add_data(PUBLISH, 0, "publish");
        let s = server.clone();
        self.register_callback(ROUTE_REQUEST, None, move |peer, m| {
            let s = s.clone();
            async move { Some(call(&s, &peer, m).await) }
        });
        let s = server.clone();
        self.register_callback(SUBSCRIBE_REQUEST, None, move |peer, m| {
            let s = s.clone();
            async move { Some(subscribe(&s, &peer, m).await) }
        });
        Ok(())
    }
}

fn failure(st: u32, why: impl Into<String>) -> (u32, Value) {
    (st, json!({ "error": why.into() }))
}

async fn call(server: &Server, peer: &Peer, m: Message) -> (u32, Value) {
    let (name, param) = match &m.data {
        Value::String(route) => (route.as_str(), None),
        Value::Object(o) => match o.get("route").and_then(Value::as_str) {
            Some(route) => (route, o.get("param")),
            None => return failure(status::CALLBACK_ERROR, "data needs a \"route\" string"),
        },
        _ => {
            return failure(
                status::CALLBACK_ERROR,
                "data must be a route name or {\"route\": ..., \"param\": ...}",
            )
        }
    };
    let unspecified = std::net::SocketAddr::from(([0, 0, 0, 0], 0));
    let from = peer.remote_addr().unwrap_or(unspecified);
    let local = peer.local_addr().unwrap_or(unspecified);
    let Some(answer) = server.call_json_status(name, param, from, local).await else {
        return failure(
            status::SERVICE_OR_DATA_UNKNOWN,
            format!("{name:?} names no route (routes start with /)"),
        );
    };
    match answer {
        Ok(value) => (status::OKAY, value),
        Err((vsoa, why)) => {
            let st = match vsoa {
                Some(Status::INVALID_URL) => status::SERVICE_OR_DATA_UNKNOWN,
                Some(Status::NO_PERMISSIONS) => status::OPERATION_NOT_PERMITTED,
                _ => status::CALLBACK_ERROR,
            };
            (
                st,
                json!({ "error": why, "vsoa_status": vsoa.map(|s| s.0) }),
            )
        }
    }
}

fn patterns(data: &Value) -> Result<Vec<&str>, String> {
    match data {
        Value::String(s) => Ok(vec![s]),
        Value::Array(a) => a
            .iter()
            .map(|v| {
                v.as_str()
                    .ok_or_else(|| format!("URL patterns must be strings, not {v}"))
            })
            .collect(),
        other => Err(format!(
            "data must be a URL pattern or a list of them, not {other}"
        )),
    }
}

async fn subscribe(server: &Server, peer: &Peer, m: Message) -> (u32, Value) {
    let urls = match patterns(&m.data) {
        Ok(u) => u,
        Err(why) => return failure(status::CALLBACK_ERROR, why),
    };
    let mut slot = peer.inner_subscriber().lock().await;
    if m.data_id == 1 {
        if let Some(sub) = slot.as_ref() {
            for u in &urls {
                sub.unsubscribe(u);
            }
        }
        return (status::OKAY, Value::Null);
    }
    if m.data_id != 0 {
        return failure(
            status::SERVICE_OR_DATA_UNKNOWN,
            "did 0 subscribes, did 1 unsubscribes",
        );
    }
    let sub = match slot.as_ref() {
        Some(s) => s.clone(),
        None => {
            let sub = Arc::new(server.local_subscriber(QUEUE));
            forward(peer.clone(), sub.clone());
            slot.insert(sub).clone()
        }
    };
    for u in &urls {
        if let Err(e) = sub.subscribe(u) {
            return failure(status::CALLBACK_ERROR, e.to_string());
        }
    }
    (status::OKAY, Value::Null)
}

/// Pushes the subscriber's publishes to the peer until the peer is over; a subscriber cut
/// off for falling behind closes the peer.
fn forward(peer: Peer, sub: Arc<LocalSubscriber>) {
    tokio::spawn(async move {
        loop {
            let published = tokio::select! {
                p = sub.next() => p,
                _ = peer.closed() => break,
            };
            let Some(p) = published else {
                if sub.is_cut_off() {
                    tracing::warn!(
                        "socket_protocol: a bridged peer fell {QUEUE} publishes behind; closed"
                    );
                    peer.reconnect();
                }
                break;
            };
            let mut data = json!({
                "url": &*p.url,
                "param": p.payload.param_value().unwrap_or(Value::Null),
                "quick": p.quick,
            });
            if !p.payload.data.is_empty() {
                data["data_bytes"] = p.payload.data.len().into();
            }
            if let Err(e) = peer.send(tether_sid::PUBLISH, 0, data).await {
                // Not written within the send timeout: cut off, like a slow VSOA subscriber.
                tracing::warn!(
                    "socket_protocol: a publish to a bridged peer was not sent ({e}); closed"
                );
                peer.reconnect();
                break;
            }
        }
        peer.inner_subscriber().lock().await.take();
    });
}
