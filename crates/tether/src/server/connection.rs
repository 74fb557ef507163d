//! One client's session on the server, from accept to close (a [`Session`]), and the
//! encoding of what it sends.
//!
//! The connection task owns the read half and the per-connection state (login progress,
//! the decoder and its buffer); a writer task owns the write half (see `outbound.rs`).
//! Other tasks reach the client only through its outbound queue and the registry.
//!
//! Reactions to bad input, each covered by a test in `crates/tether/tests/it/server_protocol.rs`:
//! * bad magic, oversize declared length, truncated packet at EOF: close (logged);
//! * wrong or missing password on the first packet: reply of the same type with status 1,
//!   then close;
//! * no completed SERVINFO within the handshake timeout: close;
//! * packets with REPLY set, unknown types, NOOP, PUBLISH/QOSSETUP from a client: ignored;
//! * RPC URL empty, not UTF-8 or not starting with `/`: status 2; no route: status 3;
//! * SUBSCRIBE/UNSUBSCRIBE with a bad URL, a param that is not a JSON list of `/`-URLs, or
//!   neither URL nor list (SUBSCRIBE only): status 2, nothing changes; too many: status 6.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use tether_wire::url::check_url;
use tether_wire::vsoa::{Decoder, Flags, Packet, PacketType, Status};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::Instant;

use super::handler::{call_guarded, ClientHandle, Datagram, Method, Mode, Request};
use super::login::{Credentials, Login, Step};
use super::quick::QuickPath;
use super::{ClientEvent, ServerState};
use crate::framed::Framed;
use crate::listening::Shutdown;
use crate::outbound::Outbound;
use crate::outbound::OutboundRx;
use crate::tls::PeerCertificate;
use crate::{CloseReason, Payload};

/// Read buffer space kept free before each read. Small, so that idle connections are cheap;
/// the buffer grows to whatever a large packet needs.
/// Read room per connection: small, because the server holds many idle connections (each
/// costs at most ~16 KiB in all, measured in docs/benchmarks.md).
const READ_RESERVE: usize = 8 * 1024;

pub(crate) struct Session {
    shared: Arc<ServerState>,
    client: ClientHandle,
    writer: Option<OutboundRx>,
    quick_socket: Option<Arc<UdpSocket>>,
    /// Login progress: password or challenge.
    login: Login,
    /// A SERVINFO exchange completed.
    logged_in: bool,
    /// Permits for concurrent and work-queue RPCs of this client.
    in_flight: Arc<tokio::sync::Semaphore>,
}

/// How a packet's handling ends: go on, or close the connection for this reason.
type Flow = std::ops::ControlFlow<CloseReason>;

impl Session {
    pub(crate) fn new(
        shared: Arc<ServerState>,
        id: u32,
        addr: SocketAddr,
        local: SocketAddr,
        quick_socket: Option<Arc<UdpSocket>>,
        tls: Option<crate::tls::ServerTls>,
    ) -> Self {
        let (outbound, writer) = outbound_for(&shared);
        let client = ClientHandle {
            id,
            addr,
            local,
            outbound,
            quick: Default::default(),
            stream_tls: tls,
            peer_cert: Default::default(),
            relay_bucket: Default::default(),
        };
        let in_flight = Arc::new(tokio::sync::Semaphore::new(
            shared.config.max_in_flight_per_client,
        ));
        Session {
            shared,
            client,
            writer: Some(writer),
            quick_socket,
            login: Login::default(),
            logged_in: false,
            in_flight,
        }
    }

    pub(crate) fn client(&self) -> &ClientHandle {
        &self.client
    }

    /// Serves the connection: plain TCP, or TLS after a handshake that must finish within
    /// the handshake timeout.
    pub(crate) async fn run(self, stream: TcpStream, shutdown: &mut Shutdown) {
        crate::keepalive::prepare(&stream, self.shared.config.keepalive);
        let Some(tls) = self.client.stream_tls.clone() else {
            let (rd, wr) = stream.into_split();
            return self.serve(rd, wr, shutdown).await;
        };
        let timeout = self.shared.config.handshake_timeout;
        match tokio::time::timeout(timeout, tls.acceptor.accept(stream)).await {
            Ok(Ok(tls)) => {
                let peer = PeerCertificate::first_of(tls.get_ref().1.peer_certificates());
                if let Some(cert) = peer {
                    let _ = self.client.peer_cert.set(cert);
                }
                let (rd, wr) = tokio::io::split(tls);
                self.serve(rd, wr, shutdown).await
            }
            Ok(Err(e)) => {
                tracing::info!("TLS handshake failed: {e}");
                self.shared.registry().remove(self.client.id);
            }
            Err(_) => {
                tracing::info!("TLS handshake not finished within {timeout:?}");
                self.shared.registry().remove(self.client.id);
            }
        }
    }

    async fn serve<R, W>(mut self, rd: R, wr: W, shutdown: &mut Shutdown)
    where
        R: tokio::io::AsyncRead + Unpin,
        W: tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let writer = match self.writer.take() {
            Some(w) => tokio::spawn(w.count_into(self.shared.traffic.clone()).run(wr)),
            None => return,
        };
        // Admission registered this connection already (see `ServerState::admit`).
        tracing::debug!("connected");

        let deadline = Instant::now() + self.shared.config.handshake_timeout;
        let idle_timeout = self.shared.config.idle_timeout;
        let mut last_heard = Instant::now();
        let mut framed = Framed::new(rd, BytesMut::new(), Decoder::new(), READ_RESERVE);
        let traffic = self.shared.traffic.clone();
        // Made once, not per read: each registers a waiter.
        let outbound = self.client.outbound.clone();
        let killed = outbound.killed();
        let stop = shutdown.requested();
        tokio::pin!(killed, stop);
        let reason: CloseReason = 'conn: loop {
            let mut packets = 0;
            loop {
                match framed.try_next() {
                    Ok(Some(packet)) => {
                        packets += 1;
                        if let Flow::Break(why) = self.handle(packet).await {
                            break 'conn why;
                        }
                    }
                    Ok(None) => break,
                    Err(why) => break 'conn why,
                }
            }
            traffic.add_in(packets, 0);
            tokio::select! {
                res = framed.fill() => match res {
                    Ok(n) => {
                        traffic.add_in(0, n as u64);
                        last_heard = Instant::now();
                    }
                    Err(why) => break 'conn why,
                },
                _ = tokio::time::sleep_until(last_heard + idle_timeout.unwrap_or_default()), if idle_timeout.is_some() => {
                    break 'conn CloseReason::IdleTimeout(idle_timeout.unwrap_or_default());
                }
                _ = tokio::time::sleep_until(deadline), if !self.logged_in => {
                    break 'conn CloseReason::HandshakeTimeout(self.shared.config.handshake_timeout);
                }
                why = &mut killed => break 'conn why,
                _ = &mut stop => break 'conn CloseReason::Shutdown,
            }
        };

        let killed = outbound.is_killed();
        self.shared.registry().remove(self.client.id);
        self.shared.interest_changed();
        if killed {
            tracing::info!("disconnected: {reason}");
            writer.abort();
        } else {
            tracing::debug!("closing: {reason}");
            // Flush what is queued (e.g. the status-1 reply), then FIN; the writer's own
            // send timeout bounds how long a peer that does not read can hold this.
            outbound.close();
            let _ = writer.await;
        }
        if self.logged_in {
            if let Some(hook) = &self.shared.hooks.on_client {
                let why = outbound.close_reason().unwrap_or(reason);
                hook(ClientEvent::Disconnected(self.client.clone(), why));
            }
        }
    }

    async fn send(&self, packet: Packet) -> Flow {
        match self.client.outbound.send(encode_reply(packet)).await {
            Ok(()) => Flow::Continue(()),
            Err(e) => Flow::Break(e.reason()),
        }
    }

    async fn handle(&mut self, packet: Packet) -> Flow {
        if packet.is_reply() {
            tracing::trace!(ptype = ?packet.ptype, "ignoring packet with REPLY set");
            return Flow::Continue(());
        }
        if !self.login.is_done() {
            let cfg = &self.shared.config;
            // The password of now: Server::set_password may have changed it.
            let password = self
                .shared
                .password
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .clone();
            let creds = Credentials {
                password: password.as_ref(),
                secret: cfg.secret.as_ref(),
                require_secret: cfg.require_secret,
            };
            match self
                .login
                .step(creds, &packet, || crate::auth::new_seed().ok())
            {
                Step::Pass => {}
                Step::Reply(challenge) => return self.send(challenge).await,
                Step::Refuse(why) => {
                    let _ = self.send(Packet::reply_to(&packet, Status::PASSWORD)).await;
                    return Flow::Break(CloseReason::LoginRefused(why.into()));
                }
            }
        }
        match packet.ptype {
            PacketType::ServInfo => self.servinfo(packet).await,
            PacketType::Rpc => self.rpc(packet).await,
            PacketType::Subscribe | PacketType::Unsubscribe => self.subscription(packet).await,
            PacketType::Datagram => self.datagram(packet).await,
            PacketType::PingEcho => self.send(Packet::reply_to(&packet, Status::SUCCESS)).await,
            PacketType::Noop => Flow::Continue(()),
            other => {
                tracing::debug!(?other, "ignoring packet type a client should not send");
                Flow::Continue(())
            }
        }
    }

    async fn servinfo(&mut self, packet: Packet) -> Flow {
        let reply = Packet::reply_to(&packet, Status::SUCCESS)
            .with_param(self.shared.info_json.clone())
            .with_data(Bytes::copy_from_slice(&self.client.id.to_be_bytes()));
        if let Err(e) = self.client.outbound.send_alone(encode_reply(reply)).await {
            return Flow::Break(e.reason());
        }
        if packet.flags.contains(Flags::TUNNEL) && packet.tunid != 0 {
            if let Some(socket) = &self.quick_socket {
                let path = QuickPath {
                    socket: Arc::downgrade(socket),
                    addr: SocketAddr::new(self.client.addr.ip(), packet.tunid),
                    counters: self.shared.quick.clone(),
                };
                // A later SERVINFO cannot move an established quick address.
                let _ = self.client.quick.set(path);
            }
        }
        if !self.logged_in {
            self.logged_in = true;
            let mut reg = self.shared.registry();
            reg.pending.remove(&self.client.id);
            if let Some(e) = reg.clients.get_mut(&self.client.id) {
                e.logged_in = true;
            }
            drop(reg);
            tracing::info!("client logged in");
            if let Some(hook) = &self.shared.hooks.on_client {
                hook(ClientEvent::Connected(self.client.clone()));
            }
        }
        Flow::Continue(())
    }

    async fn rpc(&mut self, packet: Packet) -> Flow {
        let max = self.shared.config.max_url_len;
        let url = match check_url(&packet.url) {
            Ok(_) if packet.url.len() > max => {
                tracing::debug!(
                    "RPC refused: URL of {} bytes, over max_url_len {max}",
                    packet.url.len()
                );
                return self
                    .send(Packet::reply_to(&packet, Status::ARGUMENTS))
                    .await;
            }
            Ok(u) => u,
            Err(e) => {
                tracing::debug!("RPC refused: {e}");
                return self
                    .send(Packet::reply_to(&packet, Status::ARGUMENTS))
                    .await;
            }
        };
        let Some(route) = self.shared.resolve_route(url) else {
            return self
                .send(Packet::reply_to(&packet, Status::INVALID_URL))
                .await;
        };
        let skeleton = Packet::reply_to(&packet, Status::SUCCESS);
        let req = Request {
            method: if packet.flags.contains(Flags::SET) {
                Method::Set
            } else {
                Method::Get
            },
            seqno: packet.seqno,
            url: packet.url,
            payload: Payload {
                param: packet.param,
                data: packet.data,
            },
            client: self.client.clone(),
        };
        let out = self.client.outbound.clone();
        let traffic = self.shared.traffic.clone();
        let job = async move {
            let started = std::time::Instant::now();
            let reply = call_guarded(&*route.handler, req).await;
            traffic.rpc.observe(started.elapsed());
            let packet = Packet {
                status: reply.status,
                param: reply.payload.param,
                data: reply.payload.data,
                ..skeleton
            }
            .with_tunid(reply.tunid);
            // A failed send has already killed the connection; nothing more to do here.
            let _ = out.send(encode_reply(packet)).await;
        };
        if let Mode::Inline = route.mode {
            job.await;
            return Flow::Continue(());
        }
        // At the in-flight limit this waits, and so stops reading: the flooding client
        // slows down, nobody else does.
        let Ok(permit) = self.in_flight.clone().acquire_owned().await else {
            return Flow::Continue(()); // never closed
        };
        let job = async move {
            job.await;
            drop(permit);
        };
        match route.mode {
            Mode::Queue(q) => q.submit(Box::pin(job)).await,
            _ => {
                tokio::spawn(job);
            }
        }
        Flow::Continue(())
    }

    async fn subscription(&mut self, packet: Packet) -> Flow {
        let subscribe = packet.ptype == PacketType::Subscribe;
        let urls = match parse_urls(&packet, self.shared.config.max_url_len) {
            Ok(urls) => urls,
            Err(why) => {
                tracing::debug!("{:?} refused: {why}", packet.ptype);
                return self
                    .send(Packet::reply_to(&packet, Status::ARGUMENTS))
                    .await;
            }
        };
        let id = self.client.id;
        let (status, changed) = {
            let mut reg = self.shared.registry();
            match (subscribe, urls) {
                (true, Some(urls)) => {
                    let new = urls
                        .iter()
                        .filter(|u| !reg.subs.client_has_pattern(id, u))
                        .count();
                    if reg.subs.count_of(id) + new > self.shared.config.max_subscriptions_per_client
                    {
                        tracing::warn!(
                            "subscription limit of {} reached; refusing {} URLs",
                            self.shared.config.max_subscriptions_per_client,
                            urls.len()
                        );
                        (Status::NO_MEMORY, Vec::new())
                    } else {
                        for u in &urls {
                            reg.subs.subscribe(id, u);
                        }
                        (Status::SUCCESS, urls)
                    }
                }
                (false, Some(urls)) => {
                    for u in &urls {
                        reg.subs.unsubscribe(id, u);
                    }
                    (Status::SUCCESS, urls)
                }
                (false, None) => {
                    let all: Vec<String> = reg.subs.patterns_of(id).map(str::to_string).collect();
                    reg.subs.remove_client(id);
                    (Status::SUCCESS, all)
                }
                (true, None) => (Status::ARGUMENTS, Vec::new()),
            }
        };
        if status.is_success() {
            self.shared.interest_changed();
            if let Some(hook) = &self.shared.hooks.on_subscription {
                hook(&self.client, &changed, subscribe);
            }
        }
        self.send(Packet::reply_to(&packet, status)).await
    }

    async fn datagram(&mut self, packet: Packet) -> Flow {
        let url = match check_url(&packet.url) {
            Ok(u) if u.len() > self.shared.config.max_url_len => {
                tracing::debug!("datagram dropped: URL over max_url_len");
                return Flow::Continue(());
            }
            Ok(u) => u.to_string(),
            Err(e) => {
                tracing::debug!("datagram dropped: {e}");
                return Flow::Continue(());
            }
        };
        let dgram = Datagram {
            url,
            payload: Payload {
                param: packet.param,
                data: packet.data,
            },
            quick: false,
            client: self.client.clone(),
        };
        self.shared.datagram(dgram).await;
        Flow::Continue(())
    }
}

/// The URLs a SUBSCRIBE/UNSUBSCRIBE names: `Some(urls)`, or `None` when it names none at
/// all (only meaningful for UNSUBSCRIBE: everything). A URL wins over a list (as Python).
fn parse_urls(packet: &Packet, max_len: usize) -> Result<Option<Vec<String>>, String> {
    let too_long = |len: usize| format!("a URL of {len} bytes is over max_url_len {max_len}");
    if !packet.url.is_empty() {
        let url = check_url(&packet.url).map_err(|e| e.to_string())?;
        if url.len() > max_len {
            return Err(too_long(url.len()));
        }
        return Ok(Some(vec![url.to_string()]));
    }
    if packet.param.is_empty() {
        return if packet.ptype == PacketType::Unsubscribe {
            Ok(None)
        } else {
            Err("neither a URL nor a list of URLs".into())
        };
    }
    let list: Vec<serde_json::Value> = serde_json::from_slice(&packet.param)
        .map_err(|e| format!("param is not a JSON list of URLs: {e}"))?;
    list.into_iter()
        .map(|v| match v {
            serde_json::Value::String(s) if s.len() > max_len => Err(too_long(s.len())),
            serde_json::Value::String(s) if s.starts_with('/') => Ok(s),
            other => Err(format!(
                "list member {other} is not a URL starting with '/'"
            )),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}
/// Encodes `packet` for a connection's queue; a reply too large for VSOA becomes a status
/// 6 reply so the caller is told instead of left waiting.
pub(crate) fn encode_reply(packet: Packet) -> Bytes {
    match packet.to_bytes() {
        Ok(b) => b,
        Err(e) => {
            tracing::error!(
                seqno = packet.seqno,
                "reply not sent: {e}; answering status 6"
            );
            // A bare status reply is 20 bytes and always encodes.
            Packet::reply_to(&packet, Status::NO_MEMORY)
                .to_bytes()
                .unwrap_or_default()
        }
    }
}

/// A new connection's queue, with the server's send timeout of now.
pub(crate) fn outbound_for(shared: &ServerState) -> (Outbound, crate::outbound::OutboundRx) {
    let timeout = std::time::Duration::from_nanos(
        shared
            .send_timeout_ns
            .load(std::sync::atomic::Ordering::Relaxed),
    );
    Outbound::new(shared.config.outbound_queue_bytes, timeout)
}
