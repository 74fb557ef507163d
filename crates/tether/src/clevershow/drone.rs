//! The drone side of clever-show (the original's `client_core`): the drone's id as its
//! configuration names it, answered to the server's `id` request on every link; the time
//! from the system clock or an SNTP server (with the round-trip correction the original
//! lacks); and the address the drone announces.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use tether::clevershow::{drone::{DroneId, TimeSource}, Node};
//! let id = DroneId::Default { store: "drone-id.txt".into() }.resolve()?;   // "copter0042"
//! let node = Node::new();
//! node.answer_id(&id);
//! let _peer = node.dial("127.0.0.1:25000".parse().unwrap()).start();
//! let _now = TimeSource::Ntp { host: "127.0.0.1".into(), port: 123,
//!                              timeout: std::time::Duration::from_secs(2) }.now().await;
//! # Ok(()) }
//! ```

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::Node;

/// What a drone calls itself (the original's `ID` setting).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DroneId {
    /// `/hostname`: the machine's host name.
    Hostname,
    /// `/default`: `copter` and four digits, drawn once and kept in `store` (the original
    /// writes them into its configuration file), so the id survives restarts.
    Default {
        /// Where the id is kept.
        store: PathBuf,
    },
    /// `/ip`: the address of the interface with a route out ([`get_ip_address`]).
    Ip,
    /// Any other string: itself.
    Given(String),
}

impl DroneId {
    /// Reads a configuration value: `/hostname`, `/default` (kept in `store`), `/ip`, or
    /// the id itself.
    pub fn from_setting(setting: &str, store: PathBuf) -> Self {
        match setting {
            "/hostname" => DroneId::Hostname,
            "/default" => DroneId::Default { store },
            "/ip" => DroneId::Ip,
            other => DroneId::Given(other.to_string()),
        }
    }

    /// The id now. `Default` draws and stores one on first use (written to a temporary
    /// file and renamed, so a crash never leaves half an id).
    pub fn resolve(&self) -> std::io::Result<String> {
        match self {
            DroneId::Hostname => hostname(),
            DroneId::Ip => Ok(get_ip_address().to_string()),
            DroneId::Given(s) => Ok(s.clone()),
            DroneId::Default { store } => {
                if let Ok(text) = std::fs::read_to_string(store) {
                    let id = text.trim();
                    if is_default_id(id) {
                        return Ok(id.to_string());
                    }
                    tracing::warn!(
                        "{}: {id:?} is not a copter id; drawing a new one",
                        store.display()
                    );
                }
                let mut n = [0u8; 2];
                getrandom::fill(&mut n).map_err(std::io::Error::other)?;
                let id = format!("copter{:04}", u16::from_le_bytes(n) % 10_000);
                let tmp = store.with_extension("tmp");
                std::fs::write(&tmp, format!("{id}\n"))?;
                std::fs::rename(&tmp, store)?;
                Ok(id)
            }
        }
    }
}

fn is_default_id(id: &str) -> bool {
    id.strip_prefix("copter")
        .is_some_and(|d| d.len() == 4 && d.bytes().all(|b| b.is_ascii_digit()))
}

fn hostname() -> std::io::Result<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(std::io::Error::other("the host has no name"));
    }
    Ok(name.to_string())
}

/// The address of the interface the system would route outwards through, or `127.0.0.1`
/// when there is none (the original's `get_ip_address`). No packet is sent: connecting a
/// UDP socket only asks the routing table.
pub fn get_ip_address() -> IpAddr {
    // A documentation address (TEST-NET-1): never answered, and nothing is sent to it.
    let probe = SocketAddr::from(([192, 0, 2, 1], 9));
    std::net::UdpSocket::bind("0.0.0.0:0")
        .and_then(|s| {
            s.connect(probe)?;
            s.local_addr()
        })
        .map(|a| a.ip())
        .ok()
        .filter(|ip| !ip.is_unspecified())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

impl Node {
    /// Answers the server's `id` request with `id`, on every link (the original drone does
    /// this by itself; a server identifies drones by it, not by address).
    pub fn answer_id(&self, id: &str) -> &Self {
        let id = serde_json::Value::String(id.to_string());
        self.request("id", move |_peer, _args, _kwargs| {
            let id = id.clone();
            async move { Ok(id) }
        })
    }
}

/// Where the drone's clock comes from (the original's `NTP` settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TimeSource {
    /// The system clock.
    System,
    /// An SNTP server, asked each time.
    Ntp {
        /// Its host name or address.
        host: String,
        /// Its UDP port (123 by default on real servers).
        port: u16,
        /// How long to wait for its answer.
        timeout: Duration,
    },
}

impl TimeSource {
    /// The time now (the original's `time_now`).
    pub async fn now(&self) -> Result<SystemTime, NtpError> {
        match self {
            TimeSource::System => Ok(SystemTime::now()),
            TimeSource::Ntp {
                host,
                port,
                timeout,
            } => get_ntp_time(host, *port, *timeout).await,
        }
    }
}

/// Why an SNTP query gave no time.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NtpError {
    /// The host did not resolve or the socket failed.
    #[error("NTP server {host}: {source}")]
    Io {
        /// The server asked.
        host: String,
        /// What failed.
        #[source]
        source: std::io::Error,
    },
    /// No answer in time.
    #[error("NTP server {host} did not answer within {timeout:?}")]
    Timeout {
        /// The server asked.
        host: String,
        /// How long we waited.
        timeout: Duration,
    },
    /// An answer that is not a valid server reply to our query.
    #[error("NTP server {host} answered badly: {why}")]
    BadReply {
        /// The server asked.
        host: String,
        /// What is wrong with it.
        why: &'static str,
    },
}

/// Seconds from 1900 (NTP's era 0) to 1970.
const NTP_TO_UNIX: u64 = 2_208_988_800;

fn to_ntp(t: SystemTime) -> u64 {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() + NTP_TO_UNIX;
    let frac = ((u64::from(d.subsec_nanos())) << 32) / 1_000_000_000;
    (secs << 32) | frac
}

/// Seconds since 1970 of an NTP timestamp, as a float (era 0; fine until 2036).
fn from_ntp(ts: u64) -> f64 {
    let secs = (ts >> 32) as f64 - NTP_TO_UNIX as f64;
    secs + (ts & 0xffff_ffff) as f64 / 4_294_967_296.0
}

fn unix_f64(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Asks the SNTP server `host:port` for the time (the original's `get_ntp_time`): one
/// 48-byte client query (version 4, mode 3, our transmit time in it), one reply within
/// `timeout`, checked (a server reply, not a kiss-o'-death, answering our query), and the
/// clock offset taken over the round trip as RFC 4330 says, so the delay there and back
/// does not make the time late (the original returns the server's transmit time as is).
pub async fn get_ntp_time(
    host: &str,
    port: u16,
    timeout: Duration,
) -> Result<SystemTime, NtpError> {
    let io = |source| NtpError::Io {
        host: host.to_string(),
        source,
    };
    let bad = |why| NtpError::BadReply {
        host: host.to_string(),
        why,
    };
    let addr = tokio::net::lookup_host((host, port))
        .await
        .map_err(io)?
        .next()
        .ok_or_else(|| io(std::io::Error::other("resolves to nothing")))?;
    let local: SocketAddr = match addr {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = tokio::net::UdpSocket::bind(local).await.map_err(io)?;
    socket.connect(addr).await.map_err(io)?;
    let t1 = SystemTime::now();
    let sent = to_ntp(t1);
    let mut query = [0u8; 48];
    query[0] = 0x23; // LI 0, version 4, mode 3 (client)
    query[40..48].copy_from_slice(&sent.to_be_bytes());
    socket.send(&query).await.map_err(io)?;
    let mut reply = [0u8; 68];
    let n = tokio::time::timeout(timeout, socket.recv(&mut reply))
        .await
        .map_err(|_| NtpError::Timeout {
            host: host.to_string(),
            timeout,
        })?
        .map_err(io)?;
    let t4 = SystemTime::now();
    if n < 48 {
        return Err(bad("shorter than 48 bytes"));
    }
    if reply[0] & 0x07 != 4 {
        return Err(bad("not a server reply (mode 4)"));
    }
    if reply[1] == 0 {
        return Err(bad("a kiss-o'-death (stratum 0)"));
    }
    let ts = |at: usize| u64::from_be_bytes(reply[at..at + 8].try_into().expect("8 bytes"));
    if ts(24) != sent {
        return Err(bad("not an answer to our query (origin timestamp)"));
    }
    let (t2, t3) = (from_ntp(ts(32)), from_ntp(ts(40)));
    if ts(40) == 0 {
        return Err(bad("no transmit timestamp"));
    }
    let (t1, t4) = (unix_f64(t1), unix_f64(t4));
    let offset = ((t2 - t1) + (t3 - t4)) / 2.0;
    let now = t4 + offset;
    Ok(if now >= 0.0 {
        UNIX_EPOCH + Duration::from_secs_f64(now)
    } else {
        UNIX_EPOCH
    })
}

/// A drone's configuration file (the original's client configuration and `load_config`):
/// TOML, every key optional, an unknown key an error.
///
/// ```toml
/// id = "/default"              # /hostname, /default, /ip, or the id itself
/// id_store = "drone-id.txt"    # where /default keeps its digits (default: beside this file)
///
/// [server]
/// host = "127.0.0.1"
/// port = 25000
///
/// [broadcast]                  # discovery: listen for server_ip announcements
/// listen = "127.0.0.1:8181"
/// wait_secs = 16
/// after_failures = 3
///
/// [ntp]
/// use = true
/// host = "127.0.0.1"
/// port = 123
/// timeout_secs = 2
/// ```
///
/// Reloading is loading again ([`DroneConfig::load`]); nothing is cached.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DroneConfig {
    /// The id setting (default `/default`).
    #[serde(default = "default_id")]
    pub id: String,
    /// Where `/default` keeps its id (default: the file's path with `.id` added).
    #[serde(default)]
    pub id_store: Option<PathBuf>,
    /// The server to dial.
    #[serde(default)]
    pub server: ServerSection,
    /// Discovery, off when absent.
    #[serde(default)]
    pub broadcast: Option<BroadcastSection>,
    /// Where the time comes from.
    #[serde(default)]
    pub ntp: NtpSection,
    #[serde(skip)]
    path: PathBuf,
}

fn default_id() -> String {
    "/default".into()
}

/// `[server]`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    /// Host (an IP address).
    pub host: String,
    /// Port.
    pub port: u16,
}

impl Default for ServerSection {
    fn default() -> Self {
        ServerSection {
            host: "127.0.0.1".into(),
            port: 25000,
        }
    }
}

/// `[broadcast]`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BroadcastSection {
    /// The UDP address to listen on for announcements.
    pub listen: SocketAddr,
    /// Seconds to listen each time (default 16, as the original).
    #[serde(default = "default_wait")]
    pub wait_secs: f64,
    /// Failed connects before listening (default 3, as the original).
    #[serde(default = "default_failures")]
    pub after_failures: u32,
}

fn default_wait() -> f64 {
    16.0
}

fn default_failures() -> u32 {
    3
}

/// `[ntp]`.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NtpSection {
    /// Use the NTP server instead of the system clock (default false).
    #[serde(default, rename = "use")]
    pub enabled: bool,
    /// Its host.
    #[serde(default = "default_ntp_host")]
    pub host: String,
    /// Its port (default 123).
    #[serde(default = "default_ntp_port")]
    pub port: u16,
    /// Seconds to wait for it (default 2).
    #[serde(default = "default_ntp_timeout")]
    pub timeout_secs: f64,
}

fn default_ntp_host() -> String {
    "127.0.0.1".into()
}

fn default_ntp_port() -> u16 {
    123
}

fn default_ntp_timeout() -> f64 {
    2.0
}

impl Default for NtpSection {
    fn default() -> Self {
        NtpSection {
            enabled: false,
            host: default_ntp_host(),
            port: default_ntp_port(),
            timeout_secs: default_ntp_timeout(),
        }
    }
}

/// Why a configuration file cannot be used.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {why}")]
pub struct ConfigError {
    /// The file.
    pub path: String,
    /// What is wrong.
    pub why: String,
}

fn secs(s: f64, what: &str, path: &std::path::Path) -> Result<Duration, ConfigError> {
    Duration::try_from_secs_f64(s).map_err(|_| ConfigError {
        path: path.display().to_string(),
        why: format!("{what} = {s} is not a number of seconds"),
    })
}

impl DroneConfig {
    /// Reads (or re-reads) the file.
    pub fn load(path: &std::path::Path) -> Result<DroneConfig, ConfigError> {
        let err = |why: String| ConfigError {
            path: path.display().to_string(),
            why,
        };
        let text = std::fs::read_to_string(path).map_err(|e| err(e.to_string()))?;
        let mut cfg: DroneConfig = basic_toml::from_str(&text).map_err(|e| err(e.to_string()))?;
        cfg.path = path.to_path_buf();
        cfg.server_addr()?;
        if let Some(b) = &cfg.broadcast {
            secs(b.wait_secs, "broadcast.wait_secs", path)?;
        }
        secs(cfg.ntp.timeout_secs, "ntp.timeout_secs", path)?;
        Ok(cfg)
    }

    /// The server's address.
    pub fn server_addr(&self) -> Result<SocketAddr, ConfigError> {
        let ip: IpAddr = self.server.host.parse().map_err(|_| ConfigError {
            path: self.path.display().to_string(),
            why: format!("server.host {:?} is not an IP address", self.server.host),
        })?;
        Ok(SocketAddr::new(ip, self.server.port))
    }

    /// The drone's id setting.
    pub fn drone_id(&self) -> DroneId {
        let store = self.id_store.clone().unwrap_or_else(|| {
            let mut p = self.path.clone().into_os_string();
            p.push(".id");
            PathBuf::from(p)
        });
        DroneId::from_setting(&self.id, store)
    }

    /// Where the time comes from.
    pub fn time_source(&self) -> TimeSource {
        if !self.ntp.enabled {
            return TimeSource::System;
        }
        TimeSource::Ntp {
            host: self.ntp.host.clone(),
            port: self.ntp.port,
            timeout: Duration::from_secs_f64(self.ntp.timeout_secs),
        }
    }

    /// A drone on `node` as configured: answering its id, dialing the server, with
    /// discovery when `[broadcast]` is there. Start it with [`super::Dial::start`].
    pub fn dial(&self, node: &Node) -> Result<super::Dial, ConfigError> {
        let id = self.drone_id().resolve().map_err(|e| ConfigError {
            path: self.path.display().to_string(),
            why: format!("the drone id: {e}"),
        })?;
        node.answer_id(&id);
        let mut dial = node.dial(self.server_addr()?);
        if let Some(b) = &self.broadcast {
            dial = dial.discover(
                b.listen,
                Duration::from_secs_f64(b.wait_secs),
                b.after_failures,
            );
        }
        Ok(dial)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ntp_timestamps_round_trip() {
        let t = UNIX_EPOCH + Duration::from_millis(1_764_000_000_123);
        let back = from_ntp(to_ntp(t));
        assert!((back - unix_f64(t)).abs() < 1e-6, "{back}");
    }

    #[test]
    fn the_announced_address_is_one_of_this_hosts() {
        let ip = get_ip_address();
        assert!(!ip.is_unspecified());
        // Binding to it proves it is a local address (nothing is sent anywhere).
        std::net::UdpSocket::bind((ip, 0)).expect("a local address");
    }

    #[test]
    fn default_ids_are_copter_and_four_digits() {
        assert!(is_default_id("copter0042"));
        assert!(!is_default_id("copter42"));
        assert!(!is_default_id("drone0042"));
        assert!(!is_default_id("copter00x2"));
    }
}
