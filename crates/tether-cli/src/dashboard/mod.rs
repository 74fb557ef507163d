//! The live dashboard of `tether serve`: a page built into the binary (`index.html`, plain
//! HTML and JS, no build step) served by the gateway, kept current through juggler state
//! sync. The gateway's shared state is this document:
//!
//! `{"server": {name, vsoa, gateway, clever_show, uptime_s}, "clients": [{id, address,
//! transport, priority, subscriptions}] (the newest 100 of each transport), "client_counts":
//! {vsoa, websocket}, "rates": {packets_in_per_s, bytes_in_per_s,
//! packets_out_per_s, bytes_out_per_s, publishes_per_s}, "totals": {...}, "publishes":
//! [{url, param, at}] (the last 20, newest first), "publishes_skipped": N, "relay": {relayed,
//! relayed_quick, throttled, refused_rate, refused_hook, failed} or null without `--relay`}`.
//! `totals.cut_off` counts the subscribers cut off as slow consumers.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tether::Server;
use tether_gateway::{Connection, State};

/// The page, as built into the binary (its WebSocket at `/ws`).
const PAGE: &str = include_str!("index.html");

/// The page, connecting to the gateway's WebSocket at `ws_path`.
pub(crate) fn page(ws_path: &str) -> String {
    let default = "const WS_PATH = \"/ws\";";
    debug_assert!(PAGE.contains(default));
    // A JSON string is a JS string literal; `<` escaped so it cannot end the script.
    let path = serde_json::to_string(ws_path)
        .unwrap_or_else(|_| "\"/ws\"".into())
        .replace('<', "\\u003c");
    PAGE.replace(default, &format!("const WS_PATH = {path};"))
}

/// Most recent publishes shown.
const RECENT: usize = 20;

/// Newest clients shown, per transport. A server holding thousands of connections shows
/// the counts and the newest few: a longer table helps nobody, and the state document
/// (kept twice, for diffs) would cost more memory than the connections themselves.
const CLIENTS_SHOWN: usize = 100;

/// Where the server can be reached, for the page's header.
pub(crate) struct Info {
    pub name: String,
    pub vsoa: String,
    pub gateway: String,
    pub clever_show: Option<String>,
}

/// WebSocket connections, as the gateway reports them.
pub(crate) type WsClients = Arc<Mutex<Vec<Connection>>>;

/// Keeps `state` current, once a second, until the server goes away.
pub(crate) fn start(server: Server, state: State, info: Info, ws: WsClients) {
    let tap = server.observer(4096);
    if let Err(e) = tap.subscribe("/") {
        tracing::warn!("dashboard cannot watch publishes: {e}");
    }
    state.set(
        "/server",
        json!({"name": info.name, "vsoa": info.vsoa, "gateway": info.gateway,
               "clever_show": info.clever_show, "uptime_s": 0}),
    );
    tokio::spawn(async move {
        let started = Instant::now();
        let mut recent: VecDeque<Value> = VecDeque::with_capacity(RECENT);
        let mut last = server.traffic();
        let mut last_at = Instant::now();
        let mut published = 0u64;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tokio::select! {
                p = tap.next() => {
                    let Some(p) = p else { return };
                    published += 1;
                    if recent.len() == RECENT {
                        recent.pop_back();
                    }
                    recent.push_front(json!({
                        "url": &*p.url,
                        "param": p.payload.param_value(),
                        "at": unix_now(),
                    }));
                }
                _ = tick.tick() => {
                    let now = server.traffic();
                    let secs = last_at.elapsed().as_secs_f64().max(1e-3);
                    let per_s = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / secs;
                    let rates = json!({
                        "packets_in_per_s": per_s(now.packets_in, last.packets_in),
                        "bytes_in_per_s": per_s(now.bytes_in, last.bytes_in),
                        "packets_out_per_s": per_s(now.packets_out, last.packets_out),
                        "bytes_out_per_s": per_s(now.bytes_out, last.bytes_out),
                        "publishes_per_s": published as f64 / secs,
                    });
                    (last, last_at, published) = (now, Instant::now(), 0);
                    let vsoa = server.clients();
                    let mut clients: Vec<Value> = newest(&vsoa)
                        .iter()
                        .map(|c| json!({
                            "id": c.id, "address": c.addr.to_string(), "transport": "vsoa",
                            "priority": c.priority, "subscriptions": c.subscriptions,
                        }))
                        .collect();
                    let websocket = {
                        let mut ws = ws.lock().unwrap_or_else(|e| e.into_inner());
                        ws.retain(|c| !c.is_closed());
                        clients.extend(newest(&ws).iter().map(|c| json!({
                            "id": format!("ws {}", c.peer().port()), "address": c.remote(),
                            "transport": "websocket", "priority": null, "subscriptions": [],
                        })));
                        ws.len()
                    };
                    let counts = json!({"vsoa": vsoa.len(), "websocket": websocket});
                    let uptime = started.elapsed().as_secs();
                    let publishes: Vec<Value> = recent.iter().cloned().collect();
                    let skipped = tap.skipped();
                    let relay = server.relay_stats();
                    state.update(|doc| {
                        doc["server"]["uptime_s"] = json!(uptime);
                        doc["rates"] = rates;
                        doc["totals"] = json!(now);
                        doc["clients"] = Value::Array(clients);
                        doc["client_counts"] = counts;
                        doc["publishes"] = Value::Array(publishes);
                        doc["publishes_skipped"] = json!(skipped);
                        doc["relay"] = json!(relay);
                    });
                    // Sent now whatever the autoflush mode (with `manual` nothing else would).
                    state.flush();
                }
            }
        }
    });
}

/// The last [`CLIENTS_SHOWN`] of `list` (connections are listed oldest first).
fn newest<T>(list: &[T]) -> &[T] {
    &list[list.len().saturating_sub(CLIENTS_SHOWN)..]
}

pub(crate) fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}
