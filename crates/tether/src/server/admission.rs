//! Admission: which new connections a server takes, decided at accept time.
//!
//! In order: the per-IP connection rate (a token bucket per address, if configured), the
//! total connection limit, then the pending-login limit, which evicts the oldest connection
//! that has not logged in yet rather than refusing the newcomer. Refusals and evictions are
//! logged at most once a second each (with how many happened), so a flood cannot flood the
//! log too.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

/// A token bucket refilling at `rate` per second, holding at most `rate` (one second's
/// burst); made full. The rate is passed to each call, so a bucket costs two words.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TokenBucket {
    tokens: f64,
    at: Instant,
}

impl TokenBucket {
    pub(crate) fn full(rate: u32, now: Instant) -> Self {
        TokenBucket {
            tokens: f64::from(rate),
            at: now,
        }
    }

    fn tokens_at(&self, rate: f64, now: Instant) -> f64 {
        (self.tokens + now.duration_since(self.at).as_secs_f64() * rate).min(rate)
    }

    /// Whether it has refilled completely by `now` (it then carries no information).
    pub(crate) fn is_full(&self, rate: u32, now: Instant) -> bool {
        self.tokens_at(f64::from(rate), now) >= f64::from(rate)
    }

    /// Takes a token, or says how long until one is free.
    pub(crate) fn take(&mut self, rate: u32, now: Instant) -> Result<(), std::time::Duration> {
        let rate = f64::from(rate);
        self.tokens = self.tokens_at(rate, now);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(std::time::Duration::from_secs_f64(
                (1.0 - self.tokens) / rate,
            ))
        }
    }
}

/// Token buckets per IP address.
#[derive(Default)]
pub(crate) struct RateLimiter {
    buckets: Mutex<HashMap<IpAddr, TokenBucket>>,
}

/// Buckets kept before idle (full) ones are forgotten.
const MAX_BUCKETS: usize = 4_096;

impl RateLimiter {
    /// Takes a token for `ip` at `rate` per second (burst `rate`); false when none is left.
    pub(crate) fn allow(&self, ip: IpAddr, rate: u32) -> bool {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_BUCKETS {
            buckets.retain(|_, b| !b.is_full(rate, now));
        }
        buckets
            .entry(ip)
            .or_insert_with(|| TokenBucket::full(rate, now))
            .take(rate, now)
            .is_ok()
    }
}

/// Logs an event at most once a second, with the count since the last line.
#[derive(Default)]
pub(crate) struct Throttled {
    count: AtomicU64,
    last: Mutex<Option<Instant>>,
}

impl Throttled {
    pub(crate) fn warn(&self, what: &str) {
        let n = self.count.fetch_add(1, Ordering::Relaxed) + 1;
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        if last.is_none_or(|t| t.elapsed().as_secs() >= 1) {
            *last = Some(Instant::now());
            self.count.store(0, Ordering::Relaxed);
            tracing::warn!("{what} ({n} since the last report)");
        }
    }
}

/// Counters of admission decisions, since the server was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdmissionStats {
    /// Connections closed at accept: per-IP rate exceeded.
    pub refused_rate: u64,
    /// Connections closed at accept: `max_connections` reached.
    pub refused_full: u64,
    /// Connections that had not logged in, closed to make room for a newer one.
    pub evicted_pending: u64,
}

#[derive(Default)]
pub(crate) struct Admission {
    pub(crate) rate: RateLimiter,
    pub(crate) refused_rate: AtomicU64,
    pub(crate) refused_full: AtomicU64,
    pub(crate) evicted_pending: AtomicU64,
    pub(crate) log_rate: Throttled,
    pub(crate) log_full: Throttled,
    pub(crate) log_evicted: Throttled,
}

impl Admission {
    pub(crate) fn stats(&self) -> AdmissionStats {
        AdmissionStats {
            refused_rate: self.refused_rate.load(Ordering::Relaxed),
            refused_full: self.refused_full.load(Ordering::Relaxed),
            evicted_pending: self.evicted_pending.load(Ordering::Relaxed),
        }
    }
}
