//! TCP keepalive on the connections Tether makes and accepts, so a peer that vanishes
//! without a reset (power lost, Wi-Fi gone, a host that sends no FIN) is noticed on an idle
//! link too, not only when a write stalls. On by default everywhere: VSOA server and client
//! connections ([`crate::Config::keepalive`], `ConnectOptions::keepalive`), streams,
//! clever-show links and socket_protocol connections use [`Keepalive::default`].

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;

/// The kernel's keepalive probing: after `idle` without traffic, a probe every `interval`;
/// `retries` unanswered probes in a row declare the connection broken (its reads and
/// writes then fail, and Tether closes it with the reason logged).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Quiet time before the first probe.
    pub idle: Duration,
    /// Time between probes.
    pub interval: Duration,
    /// Unanswered probes that mean the peer is gone (the seed's "three missed").
    pub retries: u32,
}

impl Default for Keepalive {
    /// Idle 5 s, a probe every 2 s, 3 missed: a vanished peer is noticed within 11 s (the
    /// clever-show original takes about 16 s, VSOA peers leave it off).
    fn default() -> Self {
        Keepalive {
            idle: Duration::from_secs(5),
            interval: Duration::from_secs(2),
            retries: 3,
        }
    }
}

impl Keepalive {
    /// How long a peer that stopped answering takes to be declared gone, at most.
    pub fn dead_after(&self) -> Duration {
        self.idle + self.interval * self.retries
    }

    /// Turns keepalive on for `stream` with these settings.
    pub fn apply(&self, stream: &TcpStream) -> io::Result<()> {
        let params = socket2::TcpKeepalive::new()
            .with_time(self.idle)
            .with_interval(self.interval)
            .with_retries(self.retries);
        socket2::SockRef::from(stream).set_tcp_keepalive(&params)
    }

    /// The keepalive settings `stream` has, `None` if keepalive is off.
    pub fn of(stream: &TcpStream) -> io::Result<Option<Keepalive>> {
        let s = socket2::SockRef::from(stream);
        if !s.keepalive()? {
            return Ok(None);
        }
        Ok(Some(Keepalive {
            idle: s.tcp_keepalive_time()?,
            interval: s.tcp_keepalive_interval()?,
            retries: s.tcp_keepalive_retries()?,
        }))
    }
}

/// What every TCP connection of Tether gets (the gateway's too): no Nagle delay, and
/// keepalive `k` if given. A failure is logged, not fatal (the link works without either).
pub fn prepare(stream: &TcpStream, k: Option<Keepalive>) {
    let _ = stream.set_nodelay(true);
    if let Some(k) = k {
        if let Err(e) = k.apply(stream) {
            tracing::debug!("cannot turn TCP keepalive on: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn settings_reach_the_socket_and_read_back() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let c = TcpStream::connect(l.local_addr().unwrap()).await.unwrap();
        assert_eq!(Keepalive::of(&c).unwrap(), None, "off until asked for");
        let k = Keepalive {
            idle: Duration::from_secs(7),
            interval: Duration::from_secs(3),
            retries: 4,
        };
        prepare(&c, Some(k));
        assert_eq!(Keepalive::of(&c).unwrap(), Some(k));
        assert_eq!(k.dead_after(), Duration::from_secs(19));
        assert_eq!(Keepalive::default().dead_after(), Duration::from_secs(11));
    }
}
