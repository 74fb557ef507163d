//! The position service (docs/protocols/vsoa.md §11): resolves a server name to an address over UDP, one
//! JSON object per datagram.
//!
//! * Query `{"name": "myserv", "domain": 2}`; answer `{"addr": "127.0.0.1", "port": 3005,
//!   "domain": 2, "name": "myserv"}` (plus `"security": true` for TLS servers), or `{}` when
//!   the name is unknown. Names match case-insensitively (as npm).
//! * [`lookup`] asks, in order: the servers given explicitly, else each entry of
//!   `VSOA_POS_SERVER` (comma-separated `ip:port`, `[v6]:port`, or a bare address meaning
//!   port 54), then each line of `/etc/vsoa.pos` (`ip port`); a miss or silence moves on
//!   to the next server; only an answer from the queried address counts.
//! * Extension (docs/position.md): a server registers itself with
//!   `{"register": {"name": ..., "port": ..., "security": false, "ttl": 30}}`. The address
//!   recorded is the datagram's source IP, so a host can only register itself; the entry
//!   expires after its TTL unless renewed, so lookups follow servers that move. Plain VSOA
//!   clients never see the difference.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::UdpSocket;

use crate::{BindAddr, Error, Listening};

/// A name that could not be resolved.
#[derive(Debug, thiserror::Error)]
#[error("cannot resolve {name:?}: {tried}")]
pub struct LookupError {
    /// The name.
    pub name: String,
    /// What each position server said.
    pub tried: String,
}

/// The port position servers use when an entry names none.
pub const DEFAULT_PORT: u16 = 54;
/// How long [`lookup`] waits for each position server (as VSOA).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest registration TTL a position server accepts.
pub const MAX_TTL: Duration = Duration::from_secs(3600);
/// Datagrams longer than this are refused (VSOA servers read at most 4096 bytes).
pub const MAX_DATAGRAM: usize = 4096;

/// Where a name points.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// Server address.
    pub addr: IpAddr,
    /// Server port.
    pub port: u16,
    /// Whether the server uses TLS.
    pub security: bool,
}

impl Entry {
    /// The socket address.
    pub fn socket_addr(&self) -> SocketAddr {
        SocketAddr::new(self.addr, self.port)
    }
}

fn domain_of(ip: &IpAddr) -> i32 {
    if ip.is_ipv4() {
        2
    } else {
        10
    }
}

/// Parses a hosts file: one `NAME ADDR PORT [tls]` per line; `#` starts a comment.
pub fn parse_hosts(text: &str) -> Result<HashMap<String, Entry>, String> {
    let mut hosts = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let bad = |why: &str| {
            format!(
                "line {}: {why}: {line:?} (expected NAME ADDR PORT [tls])",
                n + 1
            )
        };
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (name, addr, port, tls) = match fields.as_slice() {
            [name, addr, port] => (name, addr, port, false),
            [name, addr, port, flag] if flag.eq_ignore_ascii_case("tls") => {
                (name, addr, port, true)
            }
            _ => return Err(bad("wrong number of fields")),
        };
        let addr: IpAddr = addr
            .trim_matches(['[', ']'])
            .parse()
            .map_err(|_| bad("not an IP address"))?;
        let port: u16 = port.parse().map_err(|_| bad("not a port"))?;
        hosts.insert(
            name.to_ascii_lowercase(),
            Entry {
                addr,
                port,
                security: tls,
            },
        );
    }
    Ok(hosts)
}

/// Parses one position-server entry: `ip:port`, `[v6]:port`, `[v6]`, or a bare address
/// (port 54). Bare IPv6 addresses work (Python's parser splits them wrongly, §16.15).
pub fn parse_server(entry: &str) -> Option<SocketAddr> {
    let entry = entry.trim();
    if let Ok(ip) = entry.trim_matches(['[', ']']).parse::<IpAddr>() {
        return Some(SocketAddr::new(ip, DEFAULT_PORT));
    }
    if let Ok(sa) = entry.parse::<SocketAddr>() {
        return Some(sa);
    }
    // `/etc/vsoa.pos` style: address, one space, port.
    let (ip, port) = entry.rsplit_once(' ')?;
    Some(SocketAddr::new(
        ip.trim().trim_matches(['[', ']']).parse().ok()?,
        port.trim().parse().ok()?,
    ))
}

/// The position servers VSOA would ask: `VSOA_POS_SERVER`, then `/etc/vsoa.pos`.
pub fn configured_servers() -> Vec<SocketAddr> {
    let mut servers: Vec<SocketAddr> = std::env::var("VSOA_POS_SERVER")
        .map(|v| v.split(',').filter_map(parse_server).collect())
        .unwrap_or_default();
    if let Ok(text) = std::fs::read_to_string("/etc/vsoa.pos") {
        servers.extend(text.lines().filter_map(parse_server));
    }
    servers
}

/// Resolves `name` through the position servers of [`configured_servers`].
pub async fn lookup(name: &str) -> Result<Entry, Error> {
    lookup_with(name, &configured_servers(), DEFAULT_TIMEOUT).await
}

/// The address family a lookup asks for (VSOA's `lookup(name, domain)`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Domain {
    /// Either (VSOA's -1).
    #[default]
    Any,
    /// IPv4 only (`AF_INET`).
    Ipv4,
    /// IPv6 only (`AF_INET6`).
    Ipv6,
}

impl Domain {
    fn admits(self, ip: &IpAddr) -> bool {
        match self {
            Domain::Any => true,
            Domain::Ipv4 => ip.is_ipv4(),
            Domain::Ipv6 => ip.is_ipv6(),
        }
    }
}

/// Resolves `name` by asking `servers` in order, each for at most `timeout`.
pub async fn lookup_with(
    name: &str,
    servers: &[SocketAddr],
    timeout: Duration,
) -> Result<Entry, Error> {
    lookup_with_domain(name, servers, timeout, Domain::Any).await
}

/// [`lookup_with`] for one address family: the query says which (`domain` 2 or 10; for
/// [`Domain::Any`] the position server's own, as VSOA clients send), and an answer of the
/// other family counts as not knowing the name (the next server is asked). The Python
/// client sends the position server's family whatever it was asked.
pub async fn lookup_with_domain(
    name: &str,
    servers: &[SocketAddr],
    timeout: Duration,
    domain: Domain,
) -> Result<Entry, Error> {
    let mut tried = Vec::new();
    for server in servers {
        match query(name, *server, timeout, domain).await {
            Ok(Some(entry)) if domain.admits(&entry.addr) => return Ok(entry),
            Ok(Some(entry)) => tried.push(format!(
                "{server} knows it only at {} ({domain:?} was asked for)",
                entry.addr
            )),
            Ok(None) => tried.push(format!("{server} does not know it")),
            Err(why) => tried.push(format!("{server} {why}")),
        }
    }
    if tried.is_empty() {
        tried.push("no position server configured (set VSOA_POS_SERVER or /etc/vsoa.pos)".into());
    }
    Err(Error::Lookup(crate::position::LookupError {
        name: name.to_string(),
        tried: tried.join("; "),
    }))
}

/// A UDP socket for talking to `server`: on loopback when the server is, else unspecified.
async fn socket_for(server: SocketAddr) -> std::io::Result<UdpSocket> {
    let local: IpAddr = match server.ip() {
        ip if ip.is_loopback() => ip,
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.into(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED.into(),
    };
    let socket = UdpSocket::bind(SocketAddr::new(local, 0)).await?;
    socket.connect(server).await?;
    Ok(socket)
}

/// Sends `request` to `server` and waits for one JSON answer from it.
async fn exchange(
    server: SocketAddr,
    request: &serde_json::Value,
    timeout: Duration,
) -> Result<serde_json::Value, String> {
    let socket = socket_for(server)
        .await
        .map_err(|e| format!("cannot be reached: {e}"))?;
    let bytes = serde_json::to_vec(request).map_err(|e| e.to_string())?;
    socket
        .send(&bytes)
        .await
        .map_err(|e| format!("cannot be reached: {e}"))?;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    // The socket is connected: only the queried address can answer.
    let n = tokio::time::timeout(timeout, socket.recv(&mut buf))
        .await
        .map_err(|_| format!("did not answer within {timeout:?}"))?
        .map_err(|e| format!("cannot be reached: {e}"))?;
    serde_json::from_slice(&buf[..n]).map_err(|_| "answered something that is not JSON".to_string())
}

async fn query(
    name: &str,
    server: SocketAddr,
    timeout: Duration,
    domain: Domain,
) -> Result<Option<Entry>, String> {
    let family = match domain {
        Domain::Any => domain_of(&server.ip()),
        Domain::Ipv4 => 2,
        Domain::Ipv6 => 10,
    };
    let request = json!({ "name": name, "domain": family });
    let answer = exchange(server, &request, timeout).await?;
    if answer.as_object().is_some_and(|o| o.is_empty()) {
        return Ok(None);
    }
    #[derive(Deserialize)]
    struct Answer {
        addr: String,
        port: u16,
        #[serde(default)]
        security: bool,
    }
    let a: Answer =
        serde_json::from_value(answer).map_err(|e| format!("gave a malformed answer: {e}"))?;
    let addr = a
        .addr
        .parse()
        .map_err(|_| format!("answered a bad address {:?}", a.addr))?;
    Ok(Some(Entry {
        addr,
        port: a.port,
        security: a.security,
    }))
}

/// Registers this host's server `name` on `port` with the position server `pos` for `ttl`.
pub async fn register(
    pos: SocketAddr,
    name: &str,
    port: u16,
    security: bool,
    ttl: Duration,
) -> Result<(), Error> {
    let request = json!({ "register": {
        "name": name, "port": port, "security": security, "ttl": ttl.as_secs().max(1),
    }});
    let fail = |why: String| {
        Error::Lookup(crate::position::LookupError {
            name: name.to_string(),
            tried: format!("registering with {pos}: {why}"),
        })
    };
    let answer = exchange(pos, &request, DEFAULT_TIMEOUT)
        .await
        .map_err(|why| fail(format!("{pos} {why}")))?;
    match answer.get("registered") {
        Some(_) => Ok(()),
        None => Err(fail(
            answer
                .get("error")
                .and_then(|e| e.as_str())
                .unwrap_or("refused")
                .to_string(),
        )),
    }
}

/// Keeps a registration alive: registers now and every `ttl / 3` until dropped.
#[derive(Debug)]
pub struct Registration {
    task: tokio::task::JoinHandle<()>,
}

impl Registration {
    /// Registers (failing if the first attempt fails), then renews in the background;
    /// renewal failures are logged and retried.
    pub async fn start(
        pos: SocketAddr,
        name: &str,
        port: u16,
        security: bool,
        ttl: Duration,
    ) -> Result<Self, Error> {
        register(pos, name, port, security, ttl).await?;
        let name = name.to_string();
        let task = tokio::spawn(async move {
            let mut every = tokio::time::interval((ttl / 3).max(Duration::from_millis(100)));
            every.tick().await;
            loop {
                every.tick().await;
                if let Err(e) = register(pos, &name, port, security, ttl).await {
                    tracing::warn!("{e}");
                }
            }
        });
        Ok(Registration { task })
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Counters of a position server.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct PositionStats {
    /// Queries answered with an address.
    pub answered: u64,
    /// Queries answered `{}`.
    pub unknown: u64,
    /// Registrations accepted.
    pub registered: u64,
    /// Datagrams refused: not JSON, too long, or neither a query nor a registration.
    pub refused: u64,
}

#[derive(Default)]
struct Counters {
    answered: AtomicU64,
    unknown: AtomicU64,
    registered: AtomicU64,
    refused: AtomicU64,
}

#[derive(Default)]
struct Table {
    fixed: HashMap<String, Entry>,
    registered: HashMap<String, (Entry, Instant)>,
}

/// One query, as [`PositionServer::on_query`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PositionQuery {
    /// The name asked for.
    pub name: String,
    /// The address family the client asked for (`2` IPv4, `10` IPv6 on Linux), if it said.
    pub domain: Option<i64>,
    /// Who asked.
    pub from: SocketAddr,
}

/// The application's answer to a query (VSOA's `onquery` calling `reply`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryAnswer {
    /// Answer with this entry.
    Found(Entry),
    /// Answer that the name is unknown (`{}`), whatever the table says.
    NotFound,
    /// Answer from the table and the registrations, as without a callback.
    FromTable,
}

type QueryHook = Arc<dyn Fn(&PositionQuery) -> QueryAnswer + Send + Sync>;

/// A position server: answers from a fixed table and from servers that register, or as
/// the application decides ([`PositionServer::on_query`]).
#[derive(Clone, Default)]
pub struct PositionServer {
    table: Arc<Mutex<Table>>,
    counters: Arc<Counters>,
    query: Option<QueryHook>,
}

impl std::fmt::Debug for PositionServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PositionServer")
            .field("stats", &self.stats())
            .finish()
    }
}

impl PositionServer {
    /// A server that knows `hosts` (names as keys).
    pub fn new(hosts: HashMap<String, Entry>) -> Self {
        let fixed = hosts
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        PositionServer {
            table: Arc::new(Mutex::new(Table {
                fixed,
                registered: HashMap::new(),
            })),
            counters: Arc::default(),
            query: None,
        }
    }

    /// Lets `decide` answer every query (VSOA's `Position(onquery)`): it sees the name, the
    /// family asked for and the asker, and answers with an entry, "unknown", or "look in
    /// the table". It runs on the service's task for each datagram, so it should be quick.
    pub fn on_query(
        mut self,
        decide: impl Fn(&PositionQuery) -> QueryAnswer + Send + Sync + 'static,
    ) -> Self {
        self.query = Some(Arc::new(decide));
        self
    }

    /// A server that knows the entries of a hosts file (see [`parse_hosts`]).
    pub fn from_hosts_file(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        parse_hosts(&text)
            .map(Self::new)
            .map_err(|e| format!("{}: {e}", path.display()))
    }

    /// What `name` resolves to now: a live registration first (it is the fresher), then the
    /// fixed table.
    pub fn resolve(&self, name: &str) -> Option<Entry> {
        let key = name.to_ascii_lowercase();
        let mut table = self.table.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        table.registered.retain(|_, (_, expires)| *expires > now);
        table
            .registered
            .get(&key)
            .map(|(e, _)| *e)
            .or_else(|| table.fixed.get(&key).copied())
    }

    /// The counters.
    pub fn stats(&self) -> PositionStats {
        let c = &self.counters;
        PositionStats {
            answered: c.answered.load(Ordering::Relaxed),
            unknown: c.unknown.load(Ordering::Relaxed),
            registered: c.registered.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
        }
    }

    /// Answers queries on `addr` (UDP). [`Listening::shutdown`] stops the service and
    /// returns once the port is closed; dropping the handle leaves it running.
    pub async fn bind(&self, addr: impl BindAddr) -> Result<Listening, Error> {
        let shown = format!("{addr} (position service)");
        let bind_err = |source| Error::Bind {
            addr: shown.clone(),
            source,
        };
        let socket = UdpSocket::bind(crate::listening::resolve(addr, "position service").await?)
            .await
            .map_err(bind_err)?;
        let local_addr = socket.local_addr().map_err(bind_err)?;
        let (listening, mut shutdown) = Listening::new(local_addr);
        let server = self.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 65_536];
            loop {
                tokio::select! {
                    res = socket.recv_from(&mut buf) => match res {
                        Ok((n, from)) => {
                            if let Some(reply) = server.answer(&buf[..n], from) {
                                let _ = socket.send_to(&reply, from).await;
                            }
                        }
                        Err(e) => tracing::debug!("position receive failed: {e}"),
                    },
                    _ = shutdown.requested() => break,
                }
            }
            drop(socket);
            drop(shutdown);
        });
        tracing::info!("position service on {local_addr}");
        Ok(listening)
    }

    /// The answer to one datagram from `from`, if it deserves one: the whole protocol
    /// without the socket (for other transports, tests and fuzzing).
    pub fn answer(&self, datagram: &[u8], from: SocketAddr) -> Option<Vec<u8>> {
        let refuse = |why: &str| {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
            tracing::debug!(%from, "position datagram refused: {why}");
            None
        };
        if datagram.len() > MAX_DATAGRAM {
            return refuse("longer than 4096 bytes");
        }
        let Ok(msg) = serde_json::from_slice::<serde_json::Value>(datagram) else {
            return refuse("not JSON");
        };
        if let Some(reg) = msg.get("register") {
            return Some(self.register(reg, from));
        }
        let Some(name) = msg
            .get("name")
            .and_then(|n| n.as_str())
            .filter(|n| !n.is_empty())
        else {
            return refuse("no name");
        };
        let found = match &self.query {
            None => self.resolve(name),
            Some(decide) => {
                let query = PositionQuery {
                    name: name.to_string(),
                    domain: msg.get("domain").and_then(|d| d.as_i64()),
                    from,
                };
                match decide(&query) {
                    QueryAnswer::Found(e) => Some(e),
                    QueryAnswer::NotFound => None,
                    QueryAnswer::FromTable => self.resolve(name),
                }
            }
        };
        let answer = match found {
            Some(e) => {
                self.counters.answered.fetch_add(1, Ordering::Relaxed);
                let mut a = json!({
                    "name": name, "addr": e.addr.to_string(), "port": e.port, "domain": domain_of(&e.addr),
                });
                if e.security {
                    a["security"] = json!(true);
                }
                a
            }
            None => {
                self.counters.unknown.fetch_add(1, Ordering::Relaxed);
                json!({})
            }
        };
        serde_json::to_vec(&answer).ok()
    }

    fn register(&self, reg: &serde_json::Value, from: SocketAddr) -> Vec<u8> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Register {
            name: String,
            port: u16,
            #[serde(default)]
            security: bool,
            ttl: u64,
        }
        let answer = match serde_json::from_value::<Register>(reg.clone()) {
            Ok(r) if !r.name.is_empty() && r.port != 0 && r.ttl > 0 => {
                let ttl = Duration::from_secs(r.ttl).min(MAX_TTL);
                let entry = Entry {
                    addr: from.ip(),
                    port: r.port,
                    security: r.security,
                };
                self.table
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .registered
                    .insert(r.name.to_ascii_lowercase(), (entry, Instant::now() + ttl));
                self.counters.registered.fetch_add(1, Ordering::Relaxed);
                tracing::info!(name = r.name, %from, port = r.port, "registered for {ttl:?}");
                json!({ "registered": r.name, "addr": from.ip().to_string(), "port": r.port, "ttl": ttl.as_secs() })
            }
            Ok(_) => json!({ "error": "name, port and ttl must be non-empty and non-zero" }),
            Err(e) => json!({ "error": format!("bad registration: {e}") }),
        };
        if answer.get("error").is_some() {
            self.counters.refused.fetch_add(1, Ordering::Relaxed);
        }
        serde_json::to_vec(&answer).unwrap_or_default()
    }
}
