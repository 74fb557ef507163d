//! RPC across nodes: every node serves its route levels to the others through NATS queue
//! groups, and a caller walks VSOA's lookup order over them (see the module docs above).

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::{HeaderMap, Message};
use bytes::Bytes;
use tether_wire::url::subject::level_subject;
use tether_wire::vsoa::{Decoder, Flags, Packet, PacketType, Status, MAX_PACKET_LEN};
use tokio::sync::{Notify, Semaphore};

use super::{bump, Counters, FederationConfig, Inner};
use crate::server::handler::{run_waiting, BoxFuture, Handler, Mode, Reply, Request, Route};
use crate::server::{Method, Server};
use crate::Payload;

/// Header on a reply from a node that no longer has the route it was asked for.
const NO_ROUTE: &str = "Tether-No-Route";
/// Header on a reply whose route opened a stream: where the caller's node dials it.
const STREAM: &str = "Tether-Stream";
/// The queue group every node's route subscriptions join.
const GROUP: &str = "tether";
/// How long "nobody serves this level" is believed.
const NEGATIVE_TTL: Duration = Duration::from_secs(1);

/// The subjects of route levels and control notices.
#[derive(Clone)]
struct Subjects {
    exact: String,
    prefix: String,
    control: String,
}

impl Subjects {
    fn new(prefix: &str) -> Self {
        Subjects {
            exact: format!("{prefix}.rpcx"),
            prefix: format!("{prefix}.rpcp"),
            control: format!("{prefix}.ctl.route"),
        }
    }

    /// The level subject serving `pattern`, if it fits in a subject.
    fn of_pattern(&self, pattern: &str) -> Option<String> {
        match pattern.strip_suffix('/') {
            Some(stem) => level_subject(&self.prefix, stem).ok(),
            None => level_subject(&self.exact, pattern).ok(),
        }
    }

    /// The levels to ask for `url`, most specific first, stopping before the local best
    /// match (`local_stem`): ties stay local.
    fn walk(&self, url: &str, local_stem: Option<&str>) -> Vec<String> {
        let mut out: Vec<String> = level_subject(&self.exact, url).ok().into_iter().collect();
        for stem in tether_wire::url::stems(url) {
            if Some(stem) == local_stem {
                break;
            }
            if let Ok(s) = level_subject(&self.prefix, stem) {
                out.push(s);
            }
        }
        out
    }
}

struct CallerState {
    client: async_nats::Client,
    subjects: Subjects,
    connected: Arc<AtomicBool>,
    counters: Arc<Counters>,
    timeout: Duration,
    /// The IP streams to and from other nodes use on this node.
    stream_host: std::net::IpAddr,
    /// Level subjects nobody served at the time, with when that was learnt.
    nobody: Mutex<HashMap<String, Instant>>,
}

/// The calling side, shared by the routes it hands out.
#[derive(Clone)]
pub(super) struct Caller(Arc<CallerState>);

impl Caller {
    pub(super) fn new(
        client: async_nats::Client,
        config: &FederationConfig,
        connected: Arc<AtomicBool>,
        counters: Arc<Counters>,
    ) -> Self {
        Caller(Arc::new(CallerState {
            client,
            subjects: Subjects::new(&config.prefix),
            connected,
            counters,
            timeout: config.rpc_timeout,
            stream_host: config.stream_host,
            nobody: Mutex::default(),
        }))
    }

    /// The route for `url` whose local best match is the prefix route `local` (or none).
    pub(super) fn route(&self, url: &str, local: Option<(&str, Route)>) -> Route {
        let levels = self.0.subjects.walk(url, local.as_ref().map(|l| l.0));
        Route {
            handler: Arc::new(RemoteCall {
                caller: self.clone(),
                levels,
                local: local.map(|l| l.1),
            }),
            mode: Mode::Concurrent,
        }
    }

    fn forget_nobody(&self) {
        self.0
            .nobody
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }

    fn nobody_serves(&self, subject: &str) -> bool {
        let mut map = self.0.nobody.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(subject) {
            Some(t) if t.elapsed() < NEGATIVE_TTL => true,
            Some(_) => {
                map.remove(subject);
                false
            }
            None => false,
        }
    }

    fn learn_nobody(&self, subject: String) {
        let mut map = self.0.nobody.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= 10_000 {
            map.clear();
        }
        map.insert(subject, Instant::now());
    }
}

/// One call that may be served by another node.
struct RemoteCall {
    caller: Caller,
    levels: Vec<String>,
    local: Option<Route>,
}

impl Handler for RemoteCall {
    fn call(&self, req: Request) -> BoxFuture<Reply> {
        let (caller, levels, local) =
            (self.caller.clone(), self.levels.clone(), self.local.clone());
        Box::pin(async move { walk(caller, levels, local, req).await })
    }
}

async fn walk(caller: Caller, levels: Vec<String>, local: Option<Route>, req: Request) -> Reply {
    let st = &caller.0;
    let mut body = None;
    for subject in levels {
        if caller.nobody_serves(&subject) {
            continue;
        }
        if !st.connected.load(Relaxed) {
            return unreachable(st, local, req, "no NATS connection").await;
        }
        let body = body
            .get_or_insert_with(|| call_body(st.stream_host, &req))
            .clone();
        let request = async_nats::Request::new()
            .payload(body)
            .timeout(Some(st.timeout));
        match st.client.send_request(subject.clone(), request).await {
            Ok(m) if has_header(&m, NO_ROUTE) => caller.learn_nobody(subject),
            Ok(m) => {
                bump(&st.counters.rpc_remote);
                let stream_at = header(&m, STREAM).and_then(|v| v.parse::<SocketAddr>().ok());
                let Some(p) = decode(m.payload, PacketType::Rpc) else {
                    return Reply::error(Status::PROXY, "a node sent a malformed reply");
                };
                let reply = Reply {
                    status: p.status,
                    payload: Payload {
                        param: p.param,
                        data: p.data,
                    },
                    tunid: 0,
                };
                return match stream_at {
                    Some(at) => proxy_stream(&req, reply, at, st.stream_host).await,
                    None => reply,
                };
            }
            Err(e) => match e.kind() {
                async_nats::RequestErrorKind::NoResponders => caller.learn_nobody(subject),
                async_nats::RequestErrorKind::TimedOut => {
                    bump(&st.counters.rpc_timeout);
                    return Reply::error(
                        Status::NO_RESPONDING,
                        format!(
                            "the node serving this URL did not answer within {:?}",
                            st.timeout
                        ),
                    );
                }
                _ => return unreachable(st, local, req, &e.to_string()).await,
            },
        }
    }
    match local {
        Some(route) => run_waiting(&route, req).await,
        None => Reply::error(
            Status::INVALID_URL,
            format!(
                "no route for {:?} on any node",
                String::from_utf8_lossy(&req.url)
            ),
        ),
    }
}

/// NATS cannot be asked: the local prefix route if there is one, else status 7.
async fn unreachable(st: &CallerState, local: Option<Route>, req: Request, why: &str) -> Reply {
    match local {
        Some(route) => {
            bump(&st.counters.rpc_local_fallback);
            run_waiting(&route, req).await
        }
        None => {
            bump(&st.counters.rpc_unreachable);
            Reply::error(
                Status::PROXY,
                format!("the cluster is unreachable ({why}); no route for this URL here"),
            )
        }
    }
}

/// A call to another node: `C`, version 1, the IP this node dials streams from (family
/// byte 4 or 6, then its bytes), then the VSOA request packet.
fn call_body(caller: std::net::IpAddr, req: &Request) -> Bytes {
    let mut p = Packet::new(PacketType::Rpc)
        .with_url(req.url.clone())
        .with_param(req.payload.param.clone())
        .with_data(req.payload.data.clone());
    if req.method == Method::Set {
        p.flags = p.flags.with(Flags::SET);
    }
    let mut b = bytes::BytesMut::with_capacity(19 + p.encoded_len());
    call_prefix(caller, &mut b);
    if p.encode(&mut b).is_err() {
        return Bytes::new();
    }
    b.freeze()
}

fn call_prefix(caller: std::net::IpAddr, b: &mut bytes::BytesMut) {
    b.extend_from_slice(b"C\x01");
    match caller {
        std::net::IpAddr::V4(ip) => {
            b.extend_from_slice(&[4]);
            b.extend_from_slice(&ip.octets());
        }
        std::net::IpAddr::V6(ip) => {
            b.extend_from_slice(&[6]);
            b.extend_from_slice(&ip.octets());
        }
    }
}

/// The caller's IP and the packet of a [`call_body`].
fn open_call(b: &Bytes) -> Option<(std::net::IpAddr, Bytes)> {
    if b.len() < 3 || &b[..2] != b"C\x01" {
        return None;
    }
    match b[2] {
        4 if b.len() >= 7 => {
            let ip: [u8; 4] = b[3..7].try_into().ok()?;
            Some((ip.into(), b.slice(7..)))
        }
        6 if b.len() >= 19 => {
            let ip: [u8; 16] = b[3..19].try_into().ok()?;
            Some((ip.into(), b.slice(19..)))
        }
        _ => None,
    }
}

fn has_header(m: &Message, name: &str) -> bool {
    header(m, name).is_some()
}

fn header(m: &Message, name: &str) -> Option<String> {
    m.headers
        .as_ref()
        .and_then(|h| h.get(name))
        .map(|v| v.as_str().to_string())
}

/// The stream a route on another node opened, made the caller's: a stream port here, as
/// for a local route (same checks: the caller's IP, the connect timeout, TLS as the caller's
/// connection), spliced to the serving node's port. Both hops are TCP with bounded
/// buffers, so a slow reader slows the writer end to end.
async fn proxy_stream(
    req: &Request,
    reply: Reply,
    remote: SocketAddr,
    stream_host: std::net::IpAddr,
) -> Reply {
    let pending = match req.open_stream().await {
        Ok(p) => p,
        Err(e) => return Reply::error(Status::NO_MEMORY, e.to_string()),
    };
    let tunid = pending.tunid();
    tokio::spawn(async move {
        let mut here = match pending.accept().await {
            Ok(s) => s,
            Err(e) => return tracing::info!("federation: proxied stream: {e}"),
        };
        let there = async {
            let sock = match stream_host {
                std::net::IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
                std::net::IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
            };
            sock.bind(SocketAddr::new(stream_host, 0))?;
            tokio::time::timeout(Duration::from_secs(5), sock.connect(remote))
                .await
                .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))?
        };
        let mut there = match there.await {
            Ok(s) => s,
            Err(e) => {
                return tracing::warn!("federation: cannot reach the stream at {remote}: {e}")
            }
        };
        if let Err(e) = tokio::io::copy_bidirectional(&mut here, &mut there).await {
            tracing::debug!("federation: proxied stream ended: {e}");
        }
    });
    reply.with_tunid(tunid)
}

fn decode(payload: Bytes, ptype: PacketType) -> Option<Packet> {
    Decoder::with_max_packet_len(MAX_PACKET_LEN)
        .decode_datagram(payload)
        .ok()
        .filter(|p| p.ptype == ptype)
}

/// Serves this node's route levels to the other nodes, following routes as they are
/// added, and tells the others when there are new ones (they forget what they learnt
/// about nobody serving a level).
pub(super) async fn serve_routes(inner: Arc<Inner>, server: Server, config: FederationConfig) {
    let subjects = Subjects::new(&config.prefix);
    let permits = Arc::new(Semaphore::new(config.max_remote_calls));
    let mut held: HashSet<String> = HashSet::new();
    loop {
        inner.routes.notified().await;
        let mut added = false;
        for pattern in server.route_patterns() {
            let Some(subject) = subjects.of_pattern(&pattern) else {
                tracing::warn!("federation: route {pattern:?} is too long to serve other nodes");
                continue;
            };
            if held.contains(&subject) {
                continue;
            }
            match inner
                .client
                .queue_subscribe(subject.clone(), GROUP.to_string())
                .await
            {
                Ok(sub) => {
                    held.insert(subject);
                    added = true;
                    tokio::spawn(serve_level(
                        sub,
                        inner.client.clone(),
                        server.clone(),
                        permits.clone(),
                        inner.counters.clone(),
                        config.stream_host,
                    ));
                }
                Err(e) => tracing::warn!("federation: serving route {pattern:?}: {e}"),
            }
        }
        inner.counters.routes.store(held.len(), Relaxed);
        if added {
            let _ = inner
                .client
                .publish(subjects.control.clone(), Bytes::new())
                .await;
        }
    }
}

async fn serve_level(
    mut sub: async_nats::Subscriber,
    client: async_nats::Client,
    server: Server,
    permits: Arc<Semaphore>,
    counters: Arc<Counters>,
    stream_host: std::net::IpAddr,
) {
    while let Some(m) = super::next_message(&mut sub).await {
        let Some(reply_to) = m.reply.clone() else {
            bump(&counters.malformed);
            continue;
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            let busy = answer(
                Status::NO_MEMORY,
                Payload::raw("this node is serving too many calls from other nodes"),
            );
            let _ = client.publish(reply_to, busy).await;
            continue;
        };
        let (client, server, counters) = (client.clone(), server.clone(), counters.clone());
        tokio::spawn(async move {
            let mut h = HeaderMap::new();
            let body = match serve_one(m.payload, stream_host, &server, &counters).await {
                Served::Reply(bytes) => bytes,
                Served::Stream(bytes, at) => {
                    h.insert(STREAM, at.to_string().as_str());
                    bytes
                }
                Served::NoRoute => {
                    h.insert(NO_ROUTE, "1");
                    Bytes::new()
                }
            };
            // Headers only when there is something to say: a plain reply is cheaper on
            // every hop.
            let _ = if h.is_empty() {
                client.publish(reply_to, body).await
            } else {
                client.publish_with_headers(reply_to, h, body).await
            };
            drop(permit);
        });
    }
}

fn answer(status: Status, payload: Payload) -> Bytes {
    let mut p = Packet::new(PacketType::Rpc)
        .with_param(payload.param)
        .with_data(payload.data);
    p.flags = Flags::REPLY;
    p.status = status;
    p.to_bytes().unwrap_or_else(|_| {
        let mut p = Packet::new(PacketType::Rpc);
        p.flags = Flags::REPLY;
        p.status = Status::NO_MEMORY;
        p.to_bytes().unwrap_or_default()
    })
}

/// What this node answers a call from another node.
enum Served {
    Reply(Bytes),
    /// The reply, and where the stream its route opened listens.
    Stream(Bytes, SocketAddr),
    /// No route here serves it any more.
    NoRoute,
}

/// Serves one call from another node. A stream the route opens listens on `stream_host`
/// for the calling node (the IP it dials from comes with the call).
async fn serve_one(
    body: Bytes,
    stream_host: std::net::IpAddr,
    server: &Server,
    counters: &Counters,
) -> Served {
    let Some((caller, p)) =
        open_call(&body).and_then(|(ip, b)| Some((ip, decode(b, PacketType::Rpc)?)))
    else {
        bump(&counters.malformed);
        return Served::Reply(answer(Status::ARGUMENTS, Payload::raw("malformed call")));
    };
    let Ok(url) = tether_wire::url::check_url(&p.url) else {
        return Served::Reply(answer(Status::ARGUMENTS, Payload::raw("invalid URL")));
    };
    let Some(route) = server.shared().route_for(url) else {
        return Served::NoRoute;
    };
    let method = if p.flags.contains(Flags::SET) {
        Method::Set
    } else {
        Method::Get
    };
    let from = SocketAddr::new(caller, 0);
    let local = SocketAddr::new(stream_host, 0);
    let payload = Payload {
        param: p.param,
        data: p.data,
    };
    let reply = server
        .call_route(route, url, method, payload, from, local)
        .await;
    bump(&counters.rpc_served);
    let bytes = answer(reply.status, reply.payload);
    match reply.tunid {
        0 => Served::Reply(bytes),
        port => Served::Stream(bytes, SocketAddr::new(stream_host, port)),
    }
}

/// Forgets "nobody serves" when a node announces new routes and after every reconnect.
pub(super) async fn control(inner: Arc<Inner>, reconnected: Arc<Notify>) {
    let subjects = Subjects::new(&inner.prefix);
    let mut sub = match inner.client.subscribe(subjects.control).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("federation: route notices: {e}; relying on the 1 s expiry");
            return;
        }
    };
    loop {
        tokio::select! {
            m = super::next_message(&mut sub) => {
                if m.is_none() { return; }
            }
            _ = reconnected.notified() => {}
        }
        inner.rpc.forget_nobody();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn calls_carry_the_callers_ip_and_foreign_bodies_are_refused() {
        for ip in ["127.0.0.9", "::1"] {
            let ip: std::net::IpAddr = ip.parse().unwrap();
            let packet = Bytes::from_static(b"packet");
            let mut b = bytes::BytesMut::new();
            call_prefix(ip, &mut b);
            b.extend_from_slice(&packet);
            assert_eq!(open_call(&b.freeze()), Some((ip, packet)));
        }
        for bad in [
            &b""[..],
            b"C",
            b"C\x02\x04abcd",
            b"C\x01\x05abcd",
            b"C\x01\x04ab",
            b"X\x01\x04abcd",
        ] {
            assert_eq!(open_call(&Bytes::copy_from_slice(bad)), None, "{bad:?}");
        }
    }

    #[test]
    fn the_walk_goes_from_exact_to_the_local_match() {
        let s = Subjects::new("t");
        assert_eq!(
            s.walk("/a/b", None),
            ["t.rpcx.a.b", "t.rpcp.a.b", "t.rpcp.a", "t.rpcp"]
        );
        assert_eq!(s.walk("/a/b", Some("/a")), ["t.rpcx.a.b", "t.rpcp.a.b"]);
        assert_eq!(
            s.walk("/a/b", Some("")),
            ["t.rpcx.a.b", "t.rpcp.a.b", "t.rpcp.a"]
        );
        assert_eq!(s.of_pattern("/"), Some("t.rpcp".into()));
        assert_eq!(s.of_pattern("/a/"), Some("t.rpcp.a".into()));
        assert_eq!(s.of_pattern("/a"), Some("t.rpcx.a".into()));
    }
}
