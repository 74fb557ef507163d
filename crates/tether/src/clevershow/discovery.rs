//! Server discovery (docs/protocols/clever-show.md §5): a server announces itself with the
//! action `server_ip` (kwargs `host`, `port`, `id`, `start_time`, all strings) in a UDP
//! datagram every few seconds; a drone listening for it learns where to connect.
//!
//! Off by default, and sent only where it is told: [`Announce`] needs an explicit
//! destination. A broadcast destination is refused unless
//! [`Announce::allow_broadcast`] is set (then `SO_BROADCAST` is set, as the original does,
//! also for a subnet's broadcast address); multicast is always refused.
//!
//! The "younger server yields" rule (the original's `BROADCAST.listen`) is
//! [`Announce::yield_to_older`]: the server also listens for announcements, and when it
//! hears one from another server (another id) that started at or before it, it stops
//! announcing and [`Announcer::yielded`] resolves, so the caller can stop serving.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::BytesMut;
use serde_json::{Map, Value};
use tether_wire::clevershow::{Content, Decoder, Frame};
use tokio::net::UdpSocket;
use tokio::sync::watch;

use crate::Error;

/// The largest announcement read (the original reads at most its 1 024-byte buffer).
const MAX_DATAGRAM: usize = 2048;

/// One server's `server_ip` announcement.
#[derive(Debug, Clone, PartialEq)]
pub struct Announcement {
    /// The server's host, as announced (an IP address in practice).
    pub host: String,
    /// Its clever-show TCP port.
    pub port: u16,
    /// Its 4-digit random id.
    pub id: String,
    /// When it started, Unix seconds.
    pub start_time: f64,
}

impl Announcement {
    /// The address to dial; the host must be an IP address.
    pub fn addr(&self) -> Result<SocketAddr, Error> {
        let ip: IpAddr = self.host.parse().map_err(|_| Error::Remote {
            what: "server_ip announcement".into(),
            reason: format!("host {:?} is not an IP address", self.host),
        })?;
        Ok(SocketAddr::new(ip, self.port))
    }

    /// The frame, with every field a string as the original sends it (§8 vector 7).
    pub fn to_frame(&self) -> Frame {
        let mut kwargs = Map::new();
        kwargs.insert("host".into(), self.host.clone().into());
        kwargs.insert("port".into(), self.port.to_string().into());
        kwargs.insert("id".into(), self.id.clone().into());
        kwargs.insert("start_time".into(), python_float(self.start_time).into());
        Frame::action("server_ip", Vec::new(), kwargs)
    }

    /// Reads one datagram: exactly one complete frame, the action `server_ip`, with the
    /// four fields as strings (a number is accepted too) and a valid port.
    pub fn parse(datagram: &[u8]) -> Result<Announcement, String> {
        let mut buf = BytesMut::from(datagram);
        let frame = match Decoder::with_max_content(MAX_DATAGRAM).decode(&mut buf) {
            Ok(Some(f)) if buf.is_empty() => f,
            Ok(Some(_)) => return Err("bytes after the frame".into()),
            Ok(None) => return Err("not a complete clever-show frame".into()),
            Err(e) => return Err(e.to_string()),
        };
        if frame.message_type != "message" || frame.extra_str("action") != Some("server_ip") {
            return Err("not a server_ip action".into());
        }
        let Content::Json(Value::Object(content)) = frame.content else {
            return Err("content is not a JSON object".into());
        };
        let kwargs = content
            .get("kwargs")
            .and_then(Value::as_object)
            .ok_or("no kwargs")?;
        let field = |k: &str| -> Result<String, String> {
            match kwargs.get(k) {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(Value::Number(n)) => Ok(n.to_string()),
                _ => Err(format!("kwargs.{k} is missing")),
            }
        };
        let port = field("port")?;
        let start_time = field("start_time")?;
        Ok(Announcement {
            host: field("host")?,
            port: port
                .parse()
                .map_err(|_| format!("port {port:?} is not a port"))?,
            id: field("id")?,
            start_time: start_time
                .parse()
                .map_err(|_| format!("start_time {start_time:?} is not a number"))?,
        })
    }
}

/// `str(float)` as Python 3 writes it for a Unix time (always with a fraction).
fn python_float(f: f64) -> String {
    let s = format!("{f}");
    if s.contains('.') || s.contains('e') || !f.is_finite() {
        s
    } else {
        format!("{s}.0")
    }
}

/// How often a server announces itself unless told otherwise: 3 s, as the original.
pub const DEFAULT_ANNOUNCE_EVERY: Duration = Duration::from_secs(3);

/// How a server announces itself (see the module docs).
#[derive(Debug, Clone)]
pub struct Announce {
    dest: SocketAddr,
    every: Duration,
    me: Announcement,
    allow_broadcast: bool,
    listen: Option<SocketAddr>,
}

impl Announce {
    /// Announces `host:port` to `dest` every [`DEFAULT_ANNOUNCE_EVERY`] (the original's
    /// default), with a random
    /// id and the current time as start time.
    pub fn new(dest: SocketAddr, host: impl Into<String>, port: u16) -> Self {
        Announce {
            dest,
            every: DEFAULT_ANNOUNCE_EVERY,
            me: Announcement {
                host: host.into(),
                port,
                id: crate::random::four_digits(),
                start_time: super::unix_now(),
            },
            allow_broadcast: false,
            listen: None,
        }
    }

    /// The interval (at least 10 ms).
    pub fn every(mut self, d: Duration) -> Self {
        self.every = d.max(Duration::from_millis(10));
        self
    }

    /// The id announced (default: 4 random digits).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.me.id = id.into();
        self
    }

    /// The start time announced (default: now).
    pub fn start_time(mut self, t: f64) -> Self {
        self.me.start_time = t;
        self
    }

    /// Lets `dest` be a broadcast address (sets `SO_BROADCAST`).
    pub fn allow_broadcast(mut self, yes: bool) -> Self {
        self.allow_broadcast = yes;
        self
    }

    /// Also listens on `listen` for other servers' announcements and yields to an older
    /// one (see the module docs).
    pub fn yield_to_older(mut self, listen: SocketAddr) -> Self {
        self.listen = Some(listen);
        self
    }

    /// What is announced.
    pub fn announcement(&self) -> &Announcement {
        &self.me
    }

    /// Starts announcing (the first datagram goes out at once).
    // Long on purpose: the announcer's two tasks (sending, and listening for older servers)
    // share their setup and are clearer side by side.
    pub async fn start(self) -> Result<Announcer, Error> {
        let ip = self.dest.ip();
        let broadcast = matches!(ip, IpAddr::V4(v4) if v4.is_broadcast());
        if ip.is_multicast() || ip.is_unspecified() || (broadcast && !self.allow_broadcast) {
            return Err(Error::Bind {
                addr: format!("{} (clever-show announcements)", self.dest),
                source: std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "refused destination: broadcast needs allow_broadcast; multicast and \
                     unspecified addresses are never used",
                ),
            });
        }
        let bind: SocketAddr = if self.dest.is_ipv4() {
            "0.0.0.0:0".parse().expect("literal")
        } else {
            "[::]:0".parse().expect("literal")
        };
        let bind_err = |source| Error::Bind {
            addr: format!("{bind} (clever-show announcements)"),
            source,
        };
        let socket = UdpSocket::bind(bind).await.map_err(bind_err)?;
        // A subnet's broadcast address (192.168.1.255) looks like any other address here,
        // but the kernel sends to it only with SO_BROADCAST: allowing broadcast sets it
        // whatever the destination; without, the kernel refuses such a send (logged).
        if broadcast || self.allow_broadcast {
            socket.set_broadcast(true).map_err(bind_err)?;
        }
        let listener = match self.listen {
            Some(l) => Some(UdpSocket::bind(l).await.map_err(|source| Error::Bind {
                addr: format!("{l} (clever-show announcements from other servers)"),
                source,
            })?),
            None => None,
        };
        let datagram = self.me.to_frame().to_bytes().map_err(|e| {
            Error::CleverShow(crate::clevershow::ShowError::NotDelivered {
                what: "server_ip announcement".into(),
                reason: e.to_string(),
            })
        })?;
        let (yield_tx, yielded) = watch::channel(None);
        let me = self.me.clone();
        let (dest, every) = (self.dest, self.every);
        let task = tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            let mut buf = vec![0u8; MAX_DATAGRAM];
            let mut failing = false;
            loop {
                tokio::select! {
                    _ = tick.tick() => match socket.send_to(&datagram, dest).await {
                        Ok(_) => failing = false,
                        Err(e) if !failing => {
                            failing = true;
                            tracing::warn!("clever-show announcement to {dest} failed: {e}");
                        }
                        Err(_) => {}
                    },
                    got = recv(listener.as_ref(), &mut buf) => {
                        let Ok((n, from)) = got else { continue };
                        match Announcement::parse(&buf[..n]) {
                            Ok(other) if other.id != me.id && other.start_time <= me.start_time => {
                                tracing::warn!(
                                    "clever-show server {} at {}:{} (heard from {from}) started \
                                     first; this one ({}) yields and stops announcing",
                                    other.id, other.host, other.port, me.id
                                );
                                let _ = yield_tx.send(Some(other));
                                return;
                            }
                            Ok(_) => {}
                            Err(e) => tracing::debug!("ignored datagram from {from}: {e}"),
                        }
                    }
                }
            }
        });
        Ok(Announcer {
            me: self.me,
            yielded,
            task,
        })
    }
}

async fn recv(socket: Option<&UdpSocket>, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
    match socket {
        Some(s) => s.recv_from(buf).await,
        None => std::future::pending().await,
    }
}

/// A running announcer; dropping it stops the announcements.
#[derive(Debug)]
pub struct Announcer {
    me: Announcement,
    yielded: watch::Receiver<Option<Announcement>>,
    task: tokio::task::JoinHandle<()>,
}

impl Announcer {
    /// What is announced.
    pub fn announcement(&self) -> &Announcement {
        &self.me
    }

    /// Resolves with the older server's announcement once this one yielded to it (never,
    /// without [`Announce::yield_to_older`]).
    pub async fn yielded(&self) -> Announcement {
        let mut rx = self.yielded.clone();
        let heard = rx
            .wait_for(Option::is_some)
            .await
            .ok()
            .and_then(|a| a.clone());
        match heard {
            Some(a) => a,
            None => std::future::pending().await,
        }
    }
}

impl Drop for Announcer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The host to announce for a listener on `listener`: its IP, or for one on every
/// interface (`0.0.0.0`, `::`) the address of the interface with a route out, as the
/// original's `get_ip_address` (drones cannot dial an unspecified address).
pub fn host_to_announce(listener: SocketAddr) -> String {
    let ip = listener.ip();
    if ip.is_unspecified() {
        super::drone::get_ip_address().to_string()
    } else {
        ip.to_string()
    }
}

/// Listens on `listen` for up to `wait` and returns the first valid announcement; other
/// datagrams are logged and skipped.
pub async fn discover(listen: SocketAddr, wait: Duration) -> Result<Announcement, Error> {
    let socket = UdpSocket::bind(listen)
        .await
        .map_err(|source| Error::Bind {
            addr: format!("{listen} (clever-show discovery)"),
            source,
        })?;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let heard = async {
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf).await else {
                continue;
            };
            match Announcement::parse(&buf[..n]) {
                Ok(a) => return a,
                Err(e) => tracing::debug!("ignored datagram from {from}: {e}"),
            }
        }
    };
    tokio::time::timeout(wait, heard).await.map_err(|_| {
        Error::CleverShow(crate::clevershow::ShowError::NoAnnouncement {
            listen,
            waited: wait,
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/protocols/clever-show.md §8 vector 7.
    const VECTOR_7: &str = "00957b22627974656f72646572223a20226c6974746c65222c2022636f6e74656e742d74797065223a20226a736f6e222c2022636f6e74656e742d656e636f64696e67223a20227574662d38222c2022636f6e74656e742d6c656e677468223a203130362c20226d6573736167652d74797065223a20226d657373616765222c2022616374696f6e223a20227365727665725f6970227d7b2261726773223a205b5d2c20226b7761726773223a207b22686f7374223a20223132372e302e302e31222c2022706f7274223a20223235303030222c20226964223a202230303432222c202273746172745f74696d65223a2022313730303030303030302e30227d7d";

    fn unhex(s: &str) -> Vec<u8> {
        crate::auth::from_hex(s).unwrap()
    }

    #[test]
    fn the_captured_announcement_reads_and_writes_byte_for_byte() {
        let a = Announcement::parse(&unhex(VECTOR_7)).unwrap();
        assert_eq!(
            a,
            Announcement {
                host: "127.0.0.1".into(),
                port: 25000,
                id: "0042".into(),
                start_time: 1_700_000_000.0,
            }
        );
        assert_eq!(a.addr().unwrap(), "127.0.0.1:25000".parse().unwrap());
        assert_eq!(a.to_frame().to_bytes().unwrap().to_vec(), unhex(VECTOR_7));
    }

    #[test]
    fn bad_datagrams_are_refused_with_a_reason() {
        let good = unhex(VECTOR_7);
        let mut trailing = good.clone();
        trailing.push(0);
        let other_action = Frame::action("start", Vec::new(), Map::new())
            .to_bytes()
            .unwrap();
        let mut kw = Map::new();
        kw.insert("host".into(), "127.0.0.1".into());
        kw.insert("port".into(), "99999".into());
        kw.insert("id".into(), "1".into());
        kw.insert("start_time".into(), "0".into());
        let bad_port = Frame::action("server_ip", Vec::new(), kw)
            .to_bytes()
            .unwrap();
        for (bytes, why) in [
            (&b"hello"[..], "not a complete"),
            (&good[..good.len() - 1], "not a complete"),
            (&trailing[..], "bytes after"),
            (&other_action[..], "not a server_ip"),
            (&bad_port[..], "not a port"),
            (&[0u8, 3, b'n', b'o', b'!'][..], "not a JSON object"),
        ] {
            let e = Announcement::parse(bytes).unwrap_err();
            assert!(e.contains(why), "{e:?} should say {why:?}");
        }
    }

    #[tokio::test]
    async fn broadcast_and_multicast_destinations_are_refused() {
        for dest in ["255.255.255.255:8181", "224.0.0.1:8181", "0.0.0.0:8181"] {
            let e = Announce::new(dest.parse().unwrap(), "127.0.0.1", 25000)
                .start()
                .await
                .unwrap_err();
            assert!(e.to_string().contains("refused destination"), "{dest}: {e}");
        }
    }

    #[test]
    fn a_listener_on_every_interface_is_announced_by_a_dialable_address() {
        assert_eq!(
            host_to_announce("127.0.0.5:25000".parse().unwrap()),
            "127.0.0.5"
        );
        let any = host_to_announce("0.0.0.0:25000".parse().unwrap());
        assert!(!any.parse::<IpAddr>().unwrap().is_unspecified(), "{any}");
    }

    /// A subnet's broadcast address, tried inside 127.0.0.0/8 only (127.255.255.255 is
    /// loopback's): the kernel refuses it without SO_BROADCAST, so nothing arrives unless
    /// broadcast is allowed; with it, the announcement is heard.
    #[tokio::test]
    async fn a_subnet_broadcast_destination_needs_allow_broadcast() {
        for allowed in [false, true] {
            let listen = UdpSocket::bind("127.255.255.255:0").await.unwrap();
            let addr = listen.local_addr().unwrap();
            drop(listen);
            let heard = tokio::spawn(discover(addr, Duration::from_millis(700)));
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _a = Announce::new(addr, "127.0.0.1", 25000)
                .every(Duration::from_millis(100))
                .allow_broadcast(allowed)
                .start()
                .await
                .unwrap();
            let got = heard.await.unwrap();
            assert_eq!(got.is_ok(), allowed, "allow_broadcast {allowed}: {got:?}");
        }
    }
}
