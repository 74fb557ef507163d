//! `/metrics` in Prometheus' text format: the VSOA side (connections, packets and bytes,
//! queued bytes, slow consumers cut off, RPC latency, quick datagrams, refused connections)
//! and the WebSocket side (connections, frames and bytes, queued messages, protocol errors,
//! request latency).

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use tether::{LatencyHistogram, LatencySnapshot};

/// The gateway's own counters.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) open: AtomicI64,
    pub(crate) accepted: AtomicU64,
    pub(crate) frames_in: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) frames_out: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) queued: AtomicI64,
    pub(crate) protocol_errors: AtomicU64,
    pub(crate) requests: LatencyHistogram,
}

impl Stats {
    pub(crate) fn frame_in(&self, bytes: usize) {
        self.frames_in.fetch_add(1, Ordering::Relaxed);
        self.bytes_in.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn frame_out(&self, bytes: usize) {
        self.frames_out.fetch_add(1, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

/// Appends one metric in Prometheus' text format: its `# HELP` and `# TYPE` lines, then a
/// sample per `(labels, value)` (labels as `k="v"`, or empty). For
/// [`crate::GatewayBuilder::metrics`].
pub fn metric(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(&str, f64)]) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    for (labels, v) in samples {
        if labels.is_empty() {
            let _ = writeln!(out, "{name} {v}");
        } else {
            let _ = writeln!(out, "{name}{{{labels}}} {v}");
        }
    }
}

fn histogram(out: &mut String, name: &str, help: &str, h: &LatencySnapshot) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
    for (le, n) in &h.buckets {
        let le = if le.is_infinite() {
            "+Inf".to_string()
        } else {
            le.to_string()
        };
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {n}");
    }
    let _ = writeln!(
        out,
        "{name}_sum {}\n{name}_count {}",
        h.sum_seconds, h.count
    );
}

/// The page.
// Long on purpose: one block per metric, in the order of the page it writes.
pub(crate) fn render(server: &tether::Server, ws: &Stats) -> String {
    let mut out = String::with_capacity(4096);
    let tether::server::ConnectionCount { all, pending } = server.connection_count();
    let t = server.traffic();
    let q = server.quick_stats();
    let a = server.admission_stats();
    let n = |v: u64| v as f64;
    metric(
        &mut out,
        "tether_vsoa_connections",
        "gauge",
        "VSOA connections held, and of them not yet logged in.",
        &[
            ("state=\"all\"", all as f64),
            ("state=\"logging_in\"", pending as f64),
        ],
    );
    metric(
        &mut out,
        "tether_vsoa_packets_total",
        "counter",
        "VSOA packets over TCP.",
        &[
            ("direction=\"in\"", n(t.packets_in)),
            ("direction=\"out\"", n(t.packets_out)),
        ],
    );
    metric(
        &mut out,
        "tether_vsoa_bytes_total",
        "counter",
        "VSOA bytes over TCP.",
        &[
            ("direction=\"in\"", n(t.bytes_in)),
            ("direction=\"out\"", n(t.bytes_out)),
        ],
    );
    metric(
        &mut out,
        "tether_vsoa_queued_bytes",
        "gauge",
        "Bytes waiting in the outbound queues of all connections.",
        &[("", server.queued_bytes() as f64)],
    );
    metric(
        &mut out,
        "tether_cut_off_total",
        "counter",
        "Connections and subscribers cut off as slow consumers (VSOA and WebSocket), counted when it happens.",
        &[("", n(t.cut_off))],
    );
    histogram(
        &mut out,
        "tether_rpc_duration_seconds",
        "RPC handler time, all transports.",
        &server.rpc_latency(),
    );
    metric(
        &mut out,
        "tether_quick_datagrams_total",
        "counter",
        "Quick (UDP) datagrams, by outcome.",
        &[
            ("result=\"sent\"", n(q.sent)),
            ("result=\"send_dropped\"", n(q.send_dropped)),
            ("result=\"received\"", n(q.received)),
            ("result=\"rejected\"", n(q.rejected)),
        ],
    );
    if let Some(r) = server.relay_stats() {
        metric(
            &mut out,
            "tether_relay_datagrams_total",
            "counter",
            "Client datagrams on the relay, by outcome (throttled ones waited, then were relayed).",
            &[
                ("result=\"relayed\",channel=\"tcp\"", n(r.relayed)),
                ("result=\"relayed\",channel=\"quick\"", n(r.relayed_quick)),
                ("result=\"throttled\"", n(r.throttled)),
                ("result=\"refused_rate\"", n(r.refused_rate)),
                ("result=\"refused_hook\"", n(r.refused_hook)),
                ("result=\"failed\"", n(r.failed)),
            ],
        );
    }
    metric(
        &mut out,
        "tether_vsoa_refused_total",
        "counter",
        "Connections refused or evicted by the admission limits.",
        &[
            ("reason=\"rate\"", n(a.refused_rate)),
            ("reason=\"full\"", n(a.refused_full)),
            ("reason=\"evicted_pending\"", n(a.evicted_pending)),
        ],
    );
    let load = |v: &AtomicU64| v.load(Ordering::Relaxed) as f64;
    metric(
        &mut out,
        "tether_ws_connections",
        "gauge",
        "WebSocket connections open.",
        &[("", ws.open.load(Ordering::Relaxed) as f64)],
    );
    metric(
        &mut out,
        "tether_ws_connections_total",
        "counter",
        "WebSocket connections accepted.",
        &[("", load(&ws.accepted))],
    );
    metric(
        &mut out,
        "tether_ws_frames_total",
        "counter",
        "WebSocket text frames.",
        &[
            ("direction=\"in\"", load(&ws.frames_in)),
            ("direction=\"out\"", load(&ws.frames_out)),
        ],
    );
    metric(
        &mut out,
        "tether_ws_bytes_total",
        "counter",
        "WebSocket text frame bytes.",
        &[
            ("direction=\"in\"", load(&ws.bytes_in)),
            ("direction=\"out\"", load(&ws.bytes_out)),
        ],
    );
    metric(
        &mut out,
        "tether_ws_queued_messages",
        "gauge",
        "Messages waiting to be written to WebSocket clients.",
        &[("", ws.queued.load(Ordering::Relaxed).max(0) as f64)],
    );
    metric(
        &mut out,
        "tether_ws_protocol_errors_total",
        "counter",
        "WebSocket connections closed for bad input.",
        &[("", load(&ws.protocol_errors))],
    );
    histogram(
        &mut out,
        "tether_ws_request_duration_seconds",
        "Juggler request time, from arrival to the response being queued.",
        &ws.requests.snapshot(),
    );
    out
}
