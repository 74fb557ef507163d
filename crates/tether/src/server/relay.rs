//! The relay: datagrams that clients send to chosen URLs are republished to every matching
//! subscriber, so a VSOA client publishes with one frame, as an MQTT or NATS client does,
//! instead of calling an RPC route. Off unless [`ServerBuilder::relay`] configures it.
//!
//! A reliable (TCP) datagram becomes a reliable publish ([`Server::publish`], which waits for
//! full queues and cuts off slow consumers as any publish does), a quick (UDP) one a quick
//! publish. Per client, a token bucket limits the rate: over it, a TCP sender is slowed
//! (its connection is not read until a token is free, so nothing is lost and its own
//! socket pushes back), and a quick datagram is refused. Every outcome is counted
//! ([`RelayStats`]); refusals are also logged, at most once a second.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tether_wire::url::subscription_matches;

use super::admission::{Throttled, TokenBucket};
use super::{Datagram, Server, ServerBuilder};
use crate::Payload;

type Hook = Box<dyn Fn(&Datagram) -> RelayVerdict + Send + Sync>;

/// Which client datagrams a server republishes, how fast, and who decides.
///
/// ```
/// use tether::server::{Relay, RelayVerdict};
/// let server = tether::Server::builder()
///     .relay(
///         Relay::new(["/sensors/"])
///             .rate_per_client(1_000)
///             .hook(|dg| match dg.url.as_str() {
///                 "/sensors/secret" => RelayVerdict::Refuse,
///                 _ => RelayVerdict::Publish,
///             }),
///     )
///     .build();
/// ```
pub struct Relay {
    patterns: Vec<String>,
    rate: Option<u32>,
    hook: Option<Hook>,
    counters: Counters,
}

impl std::fmt::Debug for Relay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relay")
            .field("patterns", &self.patterns)
            .field("rate", &self.rate)
            .field("hook", &self.hook.is_some())
            .finish()
    }
}

/// What a relay hook decides for one datagram.
#[derive(Debug, Clone)]
pub enum RelayVerdict {
    /// Publish it as it came.
    Publish,
    /// Publish this instead (another URL, another payload).
    Rewrite {
        /// The URL to publish on.
        url: String,
        /// The payload to publish.
        payload: Payload,
    },
    /// Drop it (counted in [`RelayStats::refused_hook`]).
    Refuse,
}

/// What the relay did, since the server was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct RelayStats {
    /// Reliable datagrams republished as reliable publishes.
    pub relayed: u64,
    /// Quick datagrams republished as quick publishes.
    pub relayed_quick: u64,
    /// Reliable datagrams that waited for the client's rate (then relayed: not lost).
    pub throttled: u64,
    /// Quick datagrams dropped: over the client's rate.
    pub refused_rate: u64,
    /// Datagrams the hook refused.
    pub refused_hook: u64,
    /// Datagrams whose publish failed (a rewrite too large for its channel).
    pub failed: u64,
}

#[derive(Default)]
struct Counters {
    relayed: AtomicU64,
    relayed_quick: AtomicU64,
    throttled: AtomicU64,
    refused_rate: AtomicU64,
    refused_hook: AtomicU64,
    failed: AtomicU64,
    log_refused: Throttled,
}

fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

impl Relay {
    /// Relays datagrams to URLs matching any of `patterns`, under the rule subscriptions
    /// use (`/a/` covers `/a`, `/a/` and everything under it; `/a` only itself; `/` all).
    /// Other datagrams go to the datagram handler as before. No rate limit until
    /// [`Relay::rate_per_client`].
    pub fn new<I, S>(patterns: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Relay {
            patterns: patterns.into_iter().map(Into::into).collect(),
            rate: None,
            hook: None,
            counters: Counters::default(),
        }
    }

    /// At most `per_second` relayed datagrams per client, with bursts of as many (a token
    /// bucket); 0: no limit.
    pub fn rate_per_client(mut self, per_second: u32) -> Self {
        self.rate = (per_second > 0).then_some(per_second);
        self
    }

    /// Decides each datagram before it is published: publish, rewrite or refuse. Runs on
    /// the sender's connection, so it should be quick.
    pub fn hook(mut self, f: impl Fn(&Datagram) -> RelayVerdict + Send + Sync + 'static) -> Self {
        self.hook = Some(Box::new(f));
        self
    }

    /// The patterns relayed.
    pub fn patterns(&self) -> &[String] {
        &self.patterns
    }

    pub(crate) fn covers(&self, url: &str) -> bool {
        self.patterns.iter().any(|p| subscription_matches(p, url))
    }

    pub(crate) fn stats(&self) -> RelayStats {
        let c = &self.counters;
        let n = |a: &AtomicU64| a.load(Ordering::Relaxed);
        RelayStats {
            relayed: n(&c.relayed),
            relayed_quick: n(&c.relayed_quick),
            throttled: n(&c.throttled),
            refused_rate: n(&c.refused_rate),
            refused_hook: n(&c.refused_hook),
            failed: n(&c.failed),
        }
    }

    /// Republishes `dgram` (which [`Relay::covers`]).
    pub(crate) async fn relay(&self, server: &Server, dgram: Datagram) {
        let c = &self.counters;
        if let Some(rate) = self.rate {
            let bucket = &dgram.client.relay_bucket;
            if dgram.quick {
                if bucket.take(rate).is_err() {
                    bump(&c.refused_rate);
                    return c.log_refused.warn(&format!(
                        "quick datagram of client {} to {} not relayed: over {rate} per second",
                        dgram.client.id, dgram.url
                    ));
                }
            } else if let Err(wait) = bucket.take(rate) {
                bump(&c.throttled);
                // Boxed, as the rare path: the relay's future, made once per datagram, stays
                // small (docs/benchmarks.md).
                Box::pin(async move {
                    tokio::time::sleep(wait).await;
                    while let Err(wait) = bucket.take(rate) {
                        tokio::time::sleep(wait).await;
                    }
                })
                .await;
            }
        }
        let (url, payload) = match self.hook.as_ref().map(|h| h(&dgram)) {
            None | Some(RelayVerdict::Publish) => (dgram.url, dgram.payload),
            Some(RelayVerdict::Rewrite { url, payload }) => (url, payload),
            Some(RelayVerdict::Refuse) => {
                bump(&c.refused_hook);
                return tracing::debug!(
                    url = dgram.url,
                    "datagram not relayed: the hook refused it"
                );
            }
        };
        let published = if dgram.quick {
            server
                .publish_quick(&url, payload)
                .map(|_| &c.relayed_quick)
        } else {
            server.publish(&url, payload).await.map(|_| &c.relayed)
        };
        match published {
            Ok(counter) => bump(counter),
            Err(e) => {
                bump(&c.failed);
                c.log_refused
                    .warn(&format!("datagram to {url} not relayed: {e}"));
            }
        }
    }
}

/// One client's token bucket for the relay (none until its first relayed datagram).
#[derive(Debug, Default)]
pub(crate) struct Bucket(Mutex<Option<TokenBucket>>);

impl Bucket {
    /// Takes a token at `rate` per second (burst `rate`), or says how long until one is free.
    fn take(&self, rate: u32) -> Result<(), Duration> {
        let now = Instant::now();
        let mut b = self.0.lock().unwrap_or_else(|e| e.into_inner());
        b.get_or_insert_with(|| TokenBucket::full(rate, now))
            .take(rate, now)
    }
}

impl ServerBuilder {
    /// Republishes the datagrams clients send to the relay's URLs (see [`Relay`]).
    pub fn relay(mut self, relay: Relay) -> Self {
        self.hooks.relay = Some(relay);
        self
    }
}

impl Server {
    /// What the relay did; `None` without one.
    pub fn relay_stats(&self) -> Option<RelayStats> {
        self.shared.hooks.relay.as_ref().map(Relay::stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_gives_its_burst_then_says_how_long_to_wait() {
        let b = Bucket::default();
        for _ in 0..10 {
            assert_eq!(b.take(10), Ok(()));
        }
        let wait = b.take(10).unwrap_err();
        assert!(
            wait > Duration::ZERO && wait <= Duration::from_millis(100),
            "{wait:?}"
        );
    }

    #[test]
    fn the_relay_covers_urls_as_subscriptions_match_them() {
        let r = Relay::new(["/a/", "/b"]);
        for (url, yes) in [
            ("/a", true),
            ("/a/", true),
            ("/a/x/y", true),
            ("/ab", false),
            ("/b", true),
            ("/b/x", false),
            ("/", false),
        ] {
            assert_eq!(r.covers(url), yes, "{url}");
        }
        assert!(Relay::new(["/"]).covers("/anything"));
    }
}
