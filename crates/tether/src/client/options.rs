//! Connection options: one value for everything that logs in to a VSOA server, so that a
//! plain [`Client`](super::Client), a reconnecting [`Robot`](super::Robot) and a one-shot
//! [`fetch`](super::fetch) take exactly the same options (like nats.rs's `ConnectOptions`
//! or rumqtt's `MqttOptions`).
//!
//! [`Connect`](super::Connect), [`RobotBuilder`](super::RobotBuilder) and
//! [`Fetch`](super::Fetch) each hold a `ConnectOptions` and offer the same builder methods
//! for it (written once, by the `connect_options!` macro below); `.options(o)` replaces them
//! all at once.

use std::net::SocketAddr;
use std::time::Duration;

use super::{DEFAULT_BUFFER, DEFAULT_CONNECT_TIMEOUT, DEFAULT_STALL_TIMEOUT};
use crate::server::Secret;
use crate::tls::ClientTls;

/// Default time a send may wait for room in the outbound queue.
pub const DEFAULT_SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Default size of the outbound queue, in bytes.
pub const DEFAULT_QUEUE_BYTES: usize = 4 << 20;

/// How to connect and log in (see the module docs). Every field has a default; `Debug`
/// never shows the password or secret.
///
/// ```no_run
/// # async fn f() -> Result<(), tether::Error> {
/// use tether::client::ConnectOptions;
/// let options = ConnectOptions::default().secret("s3cret").connect_timeout(std::time::Duration::from_secs(2));
/// let client = tether::Client::connect("vsoa://127.0.0.1:3005").options(options.clone()).await?;
/// let robot = tether::Robot::builder("vsoa://127.0.0.1:3005").options(options).start()?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct ConnectOptions {
    pub(crate) password: Option<Secret>,
    pub(crate) secret: Option<Secret>,
    pub(crate) connect_timeout: Duration,
    pub(crate) send_timeout: Duration,
    pub(crate) queue_bytes: usize,
    pub(crate) buffer: usize,
    pub(crate) stall_timeout: Duration,
    pub(crate) quick: bool,
    pub(crate) position_servers: Vec<SocketAddr>,
    pub(crate) tls: Option<ClientTls>,
    pub(crate) keepalive: Option<crate::Keepalive>,
    pub(crate) linger: Option<std::time::Duration>,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        ConnectOptions {
            password: None,
            secret: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            send_timeout: DEFAULT_SEND_TIMEOUT,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            buffer: DEFAULT_BUFFER,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            quick: true,
            position_servers: Vec::new(),
            tls: None,
            keepalive: Some(crate::Keepalive::default()),
            linger: None,
        }
    }
}

impl std::fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("password", &self.password)
            .field("secret", &self.secret)
            .field("connect_timeout", &self.connect_timeout)
            .field("send_timeout", &self.send_timeout)
            .field("queue_bytes", &self.queue_bytes)
            .field("buffer", &self.buffer)
            .field("stall_timeout", &self.stall_timeout)
            .field("quick", &self.quick)
            .field("position_servers", &self.position_servers)
            .field("tls", &self.tls.is_some())
            .field("keepalive", &self.keepalive)
            .field("linger", &self.linger)
            .finish()
    }
}

/// The builder methods of [`ConnectOptions`], for any type with an
/// `options_mut(&mut self) -> &mut ConnectOptions`.
macro_rules! connect_options {
    () => {
        /// Replaces every connection option at once.
        pub fn options(mut self, options: $crate::client::ConnectOptions) -> Self {
            *self.options_mut() = options;
            self
        }

        /// Log in with this password.
        pub fn password(mut self, password: impl Into<String>) -> Self {
            self.options_mut().password = Some($crate::server::Secret::new(password));
            self
        }

        /// Log in with challenge login and this shared secret: the secret never crosses
        /// the wire (docs/protocol-extensions.md). Takes precedence over a password.
        pub fn secret(mut self, secret: impl Into<String>) -> Self {
            self.options_mut().secret = Some($crate::server::Secret::new(secret));
            self
        }

        /// TCP keepalive on the connection (default on, [`Keepalive::default`](crate::Keepalive));
        /// `None` turns it off.
        pub fn keepalive(mut self, k: Option<$crate::Keepalive>) -> Self {
            self.options_mut().keepalive = k;
            self
        }

        /// What closing does with unsent data (VSOA's `cli.linger`): `Some(t)` makes
        /// [`Client::close`](crate::Client::close) wait up to `t` for the queue to be
        /// written; `Some(ZERO)` discards it and resets the connection (SO_LINGER 0: no
        /// TIME_WAIT); `None` (the default) waits up to 1 s. The kernel sends what it holds
        /// after that as usual (a longer SO_LINGER would block a runtime thread in close).
        pub fn linger(mut self, t: Option<std::time::Duration>) -> Self {
            self.options_mut().linger = t;
            self
        }

        /// Time for the TCP connect, TLS and the login together (default 10 s).
        pub fn connect_timeout(mut self, t: std::time::Duration) -> Self {
            self.options_mut().connect_timeout = t;
            self
        }

        /// How long a send may wait for room in the outbound queue before the connection
        /// is given up (default 5 s).
        pub fn send_timeout(mut self, t: std::time::Duration) -> Self {
            self.options_mut().send_timeout = t;
            self
        }

        /// Messages buffered per subscription and for the datagram stream (default 65 536,
        /// as async-nats).
        pub fn buffer(mut self, messages: usize) -> Self {
            self.options_mut().buffer = messages.max(1);
            self
        }

        /// How long the connection waits for a full stream buffer to make room before that
        /// stream starts dropping (and counting) messages until it catches up (default
        /// 1 s). While it waits, nothing else on the connection, RPC replies included, is
        /// read.
        pub fn stall_timeout(mut self, t: std::time::Duration) -> Self {
            self.options_mut().stall_timeout = t;
            self
        }

        /// Connect over TLS with this setup (and open streams over TLS). Turns the quick
        /// channel off, as VSOA does.
        pub fn tls(mut self, tls: $crate::tls::ClientTls) -> Self {
            self.options_mut().tls = Some(tls);
            self
        }

        /// Position servers that resolve a server *name* in the URL (default: VSOA's
        /// `VSOA_POS_SERVER`, then `/etc/vsoa.pos`).
        pub fn position_servers(mut self, servers: Vec<std::net::SocketAddr>) -> Self {
            self.options_mut().position_servers = servers;
            self
        }

        /// Whether to open the quick (UDP) channel (default true; false for a one-shot
        /// fetch): advertise a UDP port so the server can send quick publishes and
        /// datagrams, and allow [`Client::datagram_quick`](crate::Client::datagram_quick).
        pub fn quick(mut self, on: bool) -> Self {
            self.options_mut().quick = on;
            self
        }
    };
}
pub(crate) use connect_options;

impl ConnectOptions {
    fn options_mut(&mut self) -> &mut ConnectOptions {
        self
    }

    connect_options!();
}

#[cfg(test)]
mod tests {
    use super::ConnectOptions;
    use std::time::Duration;

    #[test]
    fn builder_methods_set_fields_and_debug_hides_secrets() {
        let o = ConnectOptions::default()
            .password("pw-123")
            .secret("sec-456")
            .connect_timeout(Duration::from_secs(2))
            .buffer(0)
            .quick(false);
        assert_eq!(o.connect_timeout, Duration::from_secs(2));
        assert_eq!(o.buffer, 1, "at least one message");
        assert!(!o.quick);
        let shown = format!("{o:?}");
        assert!(
            !shown.contains("pw-123") && !shown.contains("sec-456"),
            "{shown}"
        );
    }
}
