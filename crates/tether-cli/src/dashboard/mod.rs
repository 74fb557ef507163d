//! The live dashboard of `tether serve`: a page built into the binary (`index.html`, plain
//! HTML and JS, no build step) served by the gateway, kept current through juggler state
//! sync. The gateway's shared state is this document:
//!
//! `{"server": {name, vsoa, gateway, clever_show, uptime_s}, "clients": [{id, address,
//! transport, priority, subscriptions}] (the newest 100 of each transport), "client_counts":
//! {vsoa, websocket}, "rates": {packets_in_per_s, bytes_in_per_s,
//! packets_out_per_s, bytes_out_per_s, publishes_per_s}, "totals": {...}, "publishes":
//! [{url, param, at}] (the last 20, newest first), "relay": {relayed,
//! relayed_quick, throttled, refused_rate, refused_hook, failed} or null without `--relay`,
//! "federation": [`tether::federation::FederationStats`] or null without `--nats`,
//! "history": {"next": I, "samples": [[unix_s, msgs_in/s, msgs_out/s, bytes_in/s,
//! bytes_out/s, clients, publishes/s, rpc_p50_us, rpc_p99_us], ...]} (one a second, the
//! last [`HISTORY`], a ring: the oldest at `next` once full, so each second changes one
//! element), "latency": {calls, p50_us, p90_us, p99_us} (VSOA RPCs over the last
//! [`WINDOW`] seconds), "publish_rates": [{url, per_s}] (the busiest URLs over the last
//! [`WINDOW`] seconds)}`. `totals.cut_off` counts the subscribers cut off as slow consumers.

use std::collections::{HashMap, VecDeque};
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

/// Seconds of history the charts show.
const HISTORY: usize = 300;

/// Seconds the latency percentiles and per-URL rates are taken over.
const WINDOW: usize = 10;

/// URLs shown in the per-URL publish rates.
const BUSIEST: usize = 10;

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
pub(crate) fn start(
    server: Server,
    state: State,
    info: Info,
    ws: WsClients,
    federation: Option<Arc<tether::federation::Federation>>,
) {
    // Written in place by every publish (no queue, no wake-up), read once a second.
    let log = server.publish_log(RECENT);
    state.set(
        "/server",
        json!({"name": info.name, "vsoa": info.vsoa, "gateway": info.gateway,
               "clever_show": info.clever_show, "uptime_s": 0}),
    );
    tokio::spawn(async move {
        let started = Instant::now();
        let mut last = server.traffic();
        let mut last_at = Instant::now();
        let mut history = History::default();
        let mut latencies = VecDeque::from([server.rpc_latency()]);
        let mut urls: VecDeque<HashMap<Arc<str>, u64>> = VecDeque::new();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        loop {
            tick.tick().await;
            let seen = log.take();
            let published = seen.total;
            let mut second: HashMap<Arc<str>, u64> = seen.per_url.into_iter().collect();
            if seen.other_urls > 0 {
                second.insert(Arc::from("(other URLs)"), seen.other_urls);
            }
            urls.push_back(second);
            if urls.len() > WINDOW {
                urls.pop_front();
            }
            let now = server.traffic();
            let secs = last_at.elapsed().as_secs_f64().max(1e-3);
            let per_s = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / secs;
            let publishes_per_s = published as f64 / secs;
            let rates = json!({
                "packets_in_per_s": per_s(now.packets_in, last.packets_in),
                "bytes_in_per_s": per_s(now.bytes_in, last.bytes_in),
                "packets_out_per_s": per_s(now.packets_out, last.packets_out),
                "bytes_out_per_s": per_s(now.bytes_out, last.bytes_out),
                "publishes_per_s": publishes_per_s,
            });
            (last, last_at) = (now, Instant::now());
            let lat_now = server.rpc_latency();
            let second = latencies
                .back()
                .and_then(|prev| percentiles(prev, &lat_now));
            latencies.push_back(lat_now);
            if latencies.len() > WINDOW + 1 {
                latencies.pop_front();
            }
            let window = percentiles(&latencies[0], latencies.back().expect("pushed"));
            let busiest = busiest(&urls);
            let vsoa = server.clients();
            let mut clients: Vec<Value> = newest(&vsoa)
                .iter()
                .map(|c| {
                    json!({
                        "id": c.id, "address": c.addr.to_string(), "transport": "vsoa",
                        "priority": c.priority, "subscriptions": c.subscriptions,
                    })
                })
                .collect();
            let websocket = {
                let mut ws = ws.lock().unwrap_or_else(|e| e.into_inner());
                ws.retain(|c| !c.is_closed());
                clients.extend(newest(&ws).iter().map(|c| {
                    json!({
                        "id": format!("ws {}", c.peer().port()), "address": c.remote(),
                        "transport": "websocket", "priority": null, "subscriptions": [],
                    })
                }));
                ws.len()
            };
            let counts = json!({"vsoa": vsoa.len(), "websocket": websocket});
            let uptime = started.elapsed().as_secs();
            let (p50, p99) = match &second {
                Some(p) => (json!(p.p50_us), json!(p.p99_us)),
                None => (Value::Null, Value::Null),
            };
            history.push(json!([
                unix_now().round(),
                rates["packets_in_per_s"],
                rates["packets_out_per_s"],
                rates["bytes_in_per_s"],
                rates["bytes_out_per_s"],
                counts["vsoa"].as_u64().unwrap_or(0) + counts["websocket"].as_u64().unwrap_or(0),
                publishes_per_s,
                p50,
                p99,
            ]));
            let publishes: Vec<Value> = seen
                .recent
                .iter()
                .map(|(p, at)| {
                    let at = at
                        .duration_since(std::time::UNIX_EPOCH)
                        .map_or(0.0, |d| d.as_secs_f64());
                    json!({"url": &*p.url, "param": p.payload.param_value(), "at": at})
                })
                .collect();
            let relay = server.relay_stats();
            state.update(|doc| {
                doc["server"]["uptime_s"] = json!(uptime);
                doc["rates"] = rates;
                doc["totals"] = json!(now);
                doc["clients"] = Value::Array(clients);
                doc["client_counts"] = counts;
                doc["publishes"] = Value::Array(publishes);
                doc["relay"] = json!(relay);
                doc["federation"] = json!(federation.as_ref().map(|f| f.stats()));
                history.write(&mut doc["history"]);
                doc["latency"] = match &window {
                    Some(p) => json!({"calls": p.calls, "p50_us": p.p50_us,
                                      "p90_us": p.p90_us, "p99_us": p.p99_us}),
                    None => json!({"calls": 0}),
                };
                doc["publish_rates"] = busiest;
            });
            // Sent now whatever the autoflush mode (with `manual` nothing else would).
            state.flush();
        }
    });
}

/// The charts' samples: a ring of [`HISTORY`], one element changing a second.
#[derive(Default)]
struct History {
    samples: Vec<Value>,
    next: usize,
    /// The element changed since the last write.
    changed: Option<usize>,
}

impl History {
    fn push(&mut self, sample: Value) {
        if self.samples.len() < HISTORY {
            self.samples.push(sample);
            self.changed = Some(self.samples.len() - 1);
        } else {
            self.samples[self.next] = sample;
            self.changed = Some(self.next);
        }
        self.next = (self.next + 1) % HISTORY;
    }

    /// Updates `doc` (the state's `history`) in place: only the changed element and `next`
    /// are touched, so that is all the diff to clients carries.
    fn write(&mut self, doc: &mut Value) {
        let Some(list) = doc["samples"].as_array_mut() else {
            *doc = json!({"next": self.next, "samples": self.samples});
            return;
        };
        if let Some(i) = self.changed.take() {
            match list.get_mut(i) {
                Some(slot) => *slot = self.samples[i].clone(),
                None => list.push(self.samples[i].clone()),
            }
        }
        doc["next"] = json!(self.next);
    }
}

/// Percentiles of the observations between two snapshots of one histogram.
struct Percentiles {
    calls: u64,
    p50_us: f64,
    p90_us: f64,
    p99_us: f64,
}

/// `None` when nothing was observed in between. Each percentile is interpolated inside
/// its bucket, as Prometheus' `histogram_quantile` does (in the open last bucket: its
/// lower bound).
fn percentiles(
    before: &tether::LatencySnapshot,
    now: &tether::LatencySnapshot,
) -> Option<Percentiles> {
    let counts: Vec<(f64, u64)> = now
        .buckets
        .iter()
        .zip(&before.buckets)
        .map(|(&(bound, n), &(_, m))| (bound, n.saturating_sub(m)))
        .collect();
    let total = counts.last()?.1;
    if total == 0 {
        return None;
    }
    let q = |q: f64| -> f64 {
        let rank = q * total as f64;
        let mut lower = (0.0, 0u64);
        for &(bound, cum) in &counts {
            if cum as f64 >= rank && cum > lower.1 {
                if bound.is_infinite() {
                    return lower.0 * 1e6;
                }
                let inside = (cum - lower.1) as f64;
                return (lower.0 + (bound - lower.0) * ((rank - lower.1 as f64) / inside)) * 1e6;
            }
            lower = (bound, cum);
        }
        lower.0 * 1e6
    };
    Some(Percentiles {
        calls: total,
        p50_us: q(0.50),
        p90_us: q(0.90),
        p99_us: q(0.99),
    })
}

/// The [`BUSIEST`] URLs over the seconds in `urls`, with their publishes per second (the
/// server's publish log counts the first 1 000 URLs of a second one by one, the rest as
/// `(other URLs)`, so a publisher inventing URLs cannot grow this).
fn busiest(urls: &VecDeque<HashMap<Arc<str>, u64>>) -> Value {
    let mut total: HashMap<&str, u64> = HashMap::new();
    for second in urls {
        for (url, n) in second {
            *total.entry(url).or_default() += n;
        }
    }
    let mut list: Vec<(&str, u64)> = total.into_iter().collect();
    list.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    list.truncate(BUSIEST);
    let secs = urls.len().max(1) as f64;
    list.into_iter()
        .map(|(url, n)| json!({"url": url, "per_s": n as f64 / secs}))
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(per_bucket: &[u64]) -> tether::LatencySnapshot {
        let mut total = 0;
        let bounds = tether::server::LATENCY_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY]);
        let buckets = bounds
            .zip(per_bucket.iter().chain(std::iter::repeat(&0)))
            .map(|(b, n)| {
                total += n;
                (b, total)
            })
            .collect();
        tether::LatencySnapshot {
            buckets,
            sum_seconds: 0.0,
            count: total,
        }
    }

    #[test]
    fn percentiles_interpolate_inside_buckets_between_two_snapshots() {
        let before = snapshot(&[5]);
        // Since then: 100 calls, all in (50 us, 100 us].
        let now = snapshot(&[5, 100]);
        let p = percentiles(&before, &now).unwrap();
        assert_eq!(p.calls, 100);
        assert!((p.p50_us - 75.0).abs() < 1e-9, "{}", p.p50_us);
        assert!((p.p99_us - 99.5).abs() < 1e-9, "{}", p.p99_us);
        assert!(percentiles(&now, &now).is_none(), "nothing observed");
        // Everything over the last bound: its lower bound (5 s), not infinity.
        let mut slow = vec![0; tether::server::LATENCY_BUCKETS.len()];
        slow.push(3);
        let p = percentiles(&snapshot(&[]), &snapshot(&slow)).unwrap();
        assert_eq!(p.p99_us, 5e6);
    }

    #[test]
    fn history_is_a_ring_and_writes_only_what_changed() {
        let mut h = History::default();
        let mut doc = Value::Null;
        h.push(json!(0));
        h.write(&mut doc);
        assert_eq!(doc, json!({"next": 1, "samples": [0]}));
        for i in 1..=HISTORY as i64 {
            h.push(json!(i));
            h.write(&mut doc);
        }
        // Full, and the oldest (0) overwritten by HISTORY at index 0.
        assert_eq!(doc["next"], 1);
        assert_eq!(doc["samples"][0], json!(HISTORY));
        assert_eq!(doc["samples"][1], json!(1));
        assert_eq!(doc["samples"].as_array().unwrap().len(), HISTORY);
    }

    #[test]
    fn busiest_urls_are_ranked_and_bounded() {
        let mut urls = VecDeque::new();
        let mut second = HashMap::new();
        for i in 0..20u64 {
            second.insert(Arc::from(format!("/u/{i:02}")), i);
        }
        urls.push_back(second);
        urls.push_back(HashMap::from([(Arc::from("/u/00"), 100)]));
        let top = busiest(&urls);
        let top = top.as_array().unwrap();
        assert_eq!(top.len(), BUSIEST);
        assert_eq!(top[0], json!({"url": "/u/00", "per_s": 50.0}));
        assert_eq!(top[1], json!({"url": "/u/19", "per_s": 9.5}));
    }
}
