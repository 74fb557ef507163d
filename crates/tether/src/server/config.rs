//! Server settings: every limit and timeout with its documented default, and the builder.

use std::time::Duration;

use super::hooks::Hooks;
use super::{ClientEvent, ClientHandle, DatagramHandler};

/// A password or shared secret. Its `Debug` output never shows the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison with `candidate` (the length is not hidden).
    pub(crate) fn matches(&self, candidate: &[u8]) -> bool {
        let mine = self.0.as_bytes();
        mine.len() == candidate.len()
            && mine
                .iter()
                .zip(candidate)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Server settings. Every field has a documented default; see [`ServerBuilder`].
#[derive(Debug, Clone)]
pub struct Config {
    /// JSON sent to clients in the handshake reply. Default `{"name": "tether"}`.
    pub info: serde_json::Value,
    /// Password clients must present. Default: none.
    pub password: Option<Secret>,
    /// Shared secret for challenge login (docs/protocol-extensions.md). Default: none.
    pub secret: Option<Secret>,
    /// Refuse plain password logins; only challenge logins get in. Default false.
    pub require_secret: bool,
    /// Time a connection has to complete the SERVINFO handshake. Default 5 s (as VSOA).
    pub handshake_timeout: Duration,
    /// How long a send may wait for a client's full outbound queue, and how long a write
    /// may make no progress, before that client is cut off. Default 500 ms.
    pub send_timeout: Duration,
    /// Bytes that may wait in one client's outbound queue. Default 4 MiB.
    pub outbound_queue_bytes: usize,
    /// Subscriptions one client may hold; a subscribe beyond it gets status 6. Default 65 536.
    pub max_subscriptions_per_client: usize,
    /// Open the quick (UDP) channel on each listener's address and port. Default true;
    /// always off under TLS.
    pub quick: bool,
    /// Serve TLS (and TLS streams) instead of plain TCP. Default: none.
    pub tls: Option<crate::tls::ServerTls>,
    /// Connections (logged in or not) a server holds at once; beyond it a new connection is
    /// closed at once, with a log line. Default 10 000.
    pub max_connections: usize,
    /// Connections that have not logged in yet; a new connection beyond it evicts the oldest
    /// of them, so a flood of silent connections cannot lock out real clients. Default 1 024.
    pub max_pending_logins: usize,
    /// RPCs of one client running at once (concurrent and work-queue routes); beyond it the
    /// connection stops reading until one finishes, so a flooding client slows only itself.
    /// Default 1 024.
    pub max_in_flight_per_client: usize,
    /// Longest URL accepted; a longer RPC or subscription URL gets status 2, a longer
    /// datagram URL is dropped. Default 4 096 bytes.
    pub max_url_len: usize,
    /// Close a connection after this long without a packet from it. Default: none (VSOA
    /// clients that do not ping would be cut).
    pub idle_timeout: Option<Duration>,
    /// New connections per second accepted from one IP address (a token bucket with this
    /// rate and a burst of the same size); beyond it a new connection is closed at once.
    /// Default: no limit.
    pub connection_rate_per_ip: Option<u32>,
    /// TCP keepalive on every connection (see [`crate::Keepalive`]); `None` turns it off.
    /// Default: [`crate::Keepalive::default`], a vanished client noticed within 11 s.
    pub keepalive: Option<crate::Keepalive>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            info: serde_json::json!({ "name": "tether" }),
            password: None,
            secret: None,
            require_secret: false,
            handshake_timeout: Duration::from_secs(5),
            send_timeout: Duration::from_millis(500),
            outbound_queue_bytes: 4 << 20,
            max_subscriptions_per_client: 65_536,
            quick: true,
            tls: None,
            max_connections: 10_000,
            max_pending_logins: 1_024,
            max_in_flight_per_client: 1_024,
            max_url_len: 4_096,
            idle_timeout: None,
            connection_rate_per_ip: None,
            keepalive: Some(crate::Keepalive::default()),
        }
    }
}

/// Builds a [`Server`].
///
/// ```
/// use std::time::Duration;
/// let server = tether::Server::builder()
///     .info(serde_json::json!({"name": "demo"}))
///     .password("secret")
///     .send_timeout(Duration::from_secs(1))
///     .build();
/// ```
#[derive(Debug, Default)]
pub struct ServerBuilder {
    pub(super) config: Config,
    pub(super) hooks: Hooks,
}

impl ServerBuilder {
    /// Handshake info JSON (default `{"name": "tether"}`).
    pub fn info(mut self, info: serde_json::Value) -> Self {
        self.config.info = info;
        self
    }

    /// Require this password.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.config.password = Some(Secret::new(password));
        self
    }

    /// Accept challenge logins with this shared secret (side by side with the password,
    /// if one is set; alone, it is the only way in).
    pub fn secret(mut self, secret: impl Into<String>) -> Self {
        self.config.secret = Some(Secret::new(secret));
        self
    }

    /// Refuse plain password logins (default false).
    pub fn require_secret(mut self, on: bool) -> Self {
        self.config.require_secret = on;
        self
    }

    /// Handshake deadline (default 5 s).
    pub fn handshake_timeout(mut self, t: Duration) -> Self {
        self.config.handshake_timeout = t;
        self
    }

    /// Slow-consumer deadline (default 500 ms).
    pub fn send_timeout(mut self, t: Duration) -> Self {
        self.config.send_timeout = t;
        self
    }

    /// Per-client outbound queue bound in bytes (default 4 MiB).
    pub fn outbound_queue_bytes(mut self, n: usize) -> Self {
        self.config.outbound_queue_bytes = n;
        self
    }

    /// Per-client subscription limit (default 65 536).
    pub fn max_subscriptions_per_client(mut self, n: usize) -> Self {
        self.config.max_subscriptions_per_client = n;
        self
    }

    /// See [`Config::max_connections`] (default 10 000).
    pub fn max_connections(mut self, n: usize) -> Self {
        self.config.max_connections = n.max(1);
        self
    }

    /// See [`Config::max_pending_logins`] (default 1 024).
    pub fn max_pending_logins(mut self, n: usize) -> Self {
        self.config.max_pending_logins = n.max(1);
        self
    }

    /// See [`Config::max_in_flight_per_client`] (default 1 024).
    pub fn max_in_flight_per_client(mut self, n: usize) -> Self {
        self.config.max_in_flight_per_client = n.max(1);
        self
    }

    /// See [`Config::max_url_len`] (default 4 096).
    pub fn max_url_len(mut self, n: usize) -> Self {
        self.config.max_url_len = n.max(1);
        self
    }

    /// See [`Config::keepalive`] (default on, [`crate::Keepalive::default`]).
    pub fn keepalive(mut self, k: Option<crate::Keepalive>) -> Self {
        self.config.keepalive = k;
        self
    }

    /// See [`Config::idle_timeout`] (default none).
    pub fn idle_timeout(mut self, t: Duration) -> Self {
        self.config.idle_timeout = Some(t);
        self
    }

    /// See [`Config::connection_rate_per_ip`] (default no limit).
    pub fn connection_rate_per_ip(mut self, per_second: u32) -> Self {
        self.config.connection_rate_per_ip = Some(per_second.max(1));
        self
    }

    /// Serve TLS with this setup (mutual TLS if it has a client CA). Turns the quick channel
    /// off.
    pub fn tls(mut self, tls: crate::tls::ServerTls) -> Self {
        self.config.tls = Some(tls);
        self
    }

    /// Whether listeners open the quick UDP channel (default true).
    pub fn quick(mut self, on: bool) -> Self {
        self.config.quick = on;
        self
    }

    /// Called when a client completes the handshake or disconnects after having done so.
    pub fn on_client(mut self, f: impl Fn(ClientEvent) + Send + Sync + 'static) -> Self {
        self.hooks.on_client = Some(Box::new(f));
        self
    }

    /// Called after a client's SUBSCRIBE (`true`) or UNSUBSCRIBE (`false`) succeeded,
    /// with the URLs it named (for an unsubscribe-all, the URLs it had).
    pub fn on_subscription(
        mut self,
        f: impl Fn(&ClientHandle, &[String], bool) + Send + Sync + 'static,
    ) -> Self {
        self.hooks.on_subscription = Some(Box::new(f));
        self
    }

    /// Handles datagrams from clients (without one they are counted and dropped).
    pub fn on_datagram(mut self, f: impl DatagramHandler) -> Self {
        self.hooks.on_datagram = Some(Box::new(f));
        self
    }
}
