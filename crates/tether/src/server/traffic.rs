//! Traffic totals of a server's VSOA connections, for dashboards and metrics. Counted once
//! per read and once per vectored write, not per packet, so the hot paths stay cheap.

use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) packets_in: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) packets_out: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    /// Connections cut off as slow consumers (by a producer or by their writer) and local
    /// subscribers that fell too far behind, counted when it happens.
    pub(crate) cut_off: AtomicU64,
    /// RPC handler time.
    pub(crate) rpc: LatencyHistogram,
}

impl Counters {
    pub(crate) fn add_in(&self, packets: u64, bytes: u64) {
        if packets > 0 {
            self.packets_in.fetch_add(packets, Ordering::Relaxed);
        }
        if bytes > 0 {
            self.bytes_in.fetch_add(bytes, Ordering::Relaxed);
        }
    }

    pub(crate) fn count_cut_off(&self, n: usize) {
        if n > 0 {
            self.cut_off.fetch_add(n as u64, Ordering::Relaxed);
        }
    }

    pub(crate) fn add_out(&self, packets: u64, bytes: u64) {
        self.packets_out.fetch_add(packets, Ordering::Relaxed);
        self.bytes_out.fetch_add(bytes, Ordering::Relaxed);
    }

    pub(crate) fn snapshot(&self) -> Traffic {
        Traffic {
            packets_in: self.packets_in.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            packets_out: self.packets_out.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            cut_off: self.cut_off.load(Ordering::Relaxed),
        }
    }
}

/// Totals since the server was built, over all its TCP connections (the quick channel
/// has its own counts in [`super::QuickStats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Traffic {
    /// Packets received.
    pub packets_in: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Packets sent.
    pub packets_out: u64,
    /// Bytes sent.
    pub bytes_out: u64,
    /// Connections and local subscribers cut off as slow consumers, counted when it
    /// happens (whatever cut them: a publish, a reply, the writer finding the socket stuck).
    pub cut_off: u64,
}

/// Upper bounds of the latency buckets, in seconds (Prometheus-style, cumulative).
pub const LATENCY_BUCKETS: [f64; 16] = [
    50e-6, 100e-6, 250e-6, 500e-6, 1e-3, 2.5e-3, 5e-3, 10e-3, 25e-3, 50e-3, 100e-3, 250e-3, 500e-3,
    1.0, 2.5, 5.0,
];

/// A latency histogram with fixed buckets ([`LATENCY_BUCKETS`], plus one for anything
/// slower), updated with three relaxed atomic adds per observation.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_ns: AtomicU64,
    count: AtomicU64,
}

/// A [`LatencyHistogram`] read out.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LatencySnapshot {
    /// (upper bound in seconds, observations at or below it), cumulative, ending with
    /// `f64::INFINITY`.
    pub buckets: Vec<(f64, u64)>,
    /// Sum of all observations, in seconds.
    pub sum_seconds: f64,
    /// Observations.
    pub count: u64,
}

impl LatencyHistogram {
    /// Records one observation.
    pub fn observe(&self, d: std::time::Duration) {
        let secs = d.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&b| secs <= b)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_ns
            .fetch_add(d.as_nanos().min(u64::MAX as u128) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> LatencySnapshot {
        let mut total = 0;
        let bounds = LATENCY_BUCKETS.iter().copied().chain([f64::INFINITY]);
        let buckets = bounds
            .zip(&self.buckets)
            .map(|(b, n)| {
                total += n.load(Ordering::Relaxed);
                (b, total)
            })
            .collect();
        LatencySnapshot {
            buckets,
            sum_seconds: self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9,
            count: self.count.load(Ordering::Relaxed),
        }
    }
}
