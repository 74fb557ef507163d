//! The quick channel: VSOA packets over UDP, one per datagram, on the same address and
//! port as the TCP listener (docs/protocols/vsoa.md §5).
//!
//! A client advertises its UDP port in the handshake (TUNNEL flag, tunid). The server then
//! sends quick publishes and quick datagrams to (the client's TCP peer IP, that port), and
//! accepts a quick datagram only when its seqno carries a logged-in client's id **and** it
//! comes from that client's advertised address: stricter than the Python server (which
//! trusts the id alone, §16.7), compatible with every real client. Quick traffic never
//! waits: a send the socket cannot take now is dropped and counted, as is every datagram
//! refused on receipt. [`QuickStats`] makes both visible.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use tether_wire::url::check_url;
use tether_wire::vsoa::{Decoder, PacketType, MAX_QUICK_PACKET_LEN};
use tokio::net::{TcpListener, UdpSocket};

use super::handler::{ClientHandle, Datagram};
use super::ServerState;
use crate::listening::Shutdown;
use crate::{Error, Payload};

/// Counters of the quick channel, since the server was built.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QuickStats {
    /// Datagrams handed to the socket.
    pub sent: u64,
    /// Datagrams not sent: socket buffer full, send error, or too large for UDP.
    pub send_dropped: u64,
    /// Quick datagrams accepted from clients.
    pub received: u64,
    /// Datagrams refused: malformed, not a DATAGRAM, unknown id, or a source address that
    /// is not the client's advertised one.
    pub rejected: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    sent: AtomicU64,
    send_dropped: AtomicU64,
    received: AtomicU64,
    rejected: AtomicU64,
}

impl Counters {
    pub(crate) fn snapshot(&self) -> QuickStats {
        QuickStats {
            sent: self.sent.load(Ordering::Relaxed),
            send_dropped: self.send_dropped.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }
}

/// Where a client's quick packets go: the listener's UDP socket and the client's address.
#[derive(Debug, Clone)]
pub(crate) struct QuickPath {
    /// Weak: the socket lives exactly as long as its listener, whoever keeps a handle.
    pub(crate) socket: std::sync::Weak<UdpSocket>,
    pub(crate) addr: SocketAddr,
    pub(crate) counters: Arc<Counters>,
}

impl QuickPath {
    /// Sends one encoded packet now or drops it (counted). Returns whether it was sent.
    pub(crate) fn send(&self, bytes: &Bytes) -> bool {
        let sent = bytes.len() <= MAX_QUICK_PACKET_LEN
            && match self
                .socket
                .upgrade()
                .map(|s| s.try_send_to(bytes, self.addr))
            {
                Some(Ok(_)) => true,
                Some(Err(e)) => {
                    tracing::debug!(to = %self.addr, "quick send dropped: {e}");
                    false
                }
                None => false, // the listener is shut down
            };
        let counter = if sent {
            &self.counters.sent
        } else {
            &self.counters.send_dropped
        };
        counter.fetch_add(1, Ordering::Relaxed);
        sent
    }
}

/// Binds TCP and UDP on the same address and port. With port 0 the UDP port is whatever
/// TCP got; if that UDP port is taken, it tries another pair.
pub(crate) async fn bind_pair(
    addr: SocketAddr,
    shown: &str,
    quick: bool,
) -> Result<(TcpListener, Option<Arc<UdpSocket>>), Error> {
    let bind_err = |source| Error::Bind {
        addr: shown.to_string(),
        source,
    };
    let mut attempts = 0;
    loop {
        attempts += 1;
        let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
        if !quick {
            return Ok((listener, None));
        }
        let local = listener.local_addr().map_err(bind_err)?;
        match UdpSocket::bind(local).await {
            Ok(udp) => return Ok((listener, Some(Arc::new(udp)))),
            Err(_) if addr.port() == 0 && attempts < 16 => continue,
            Err(source) => {
                return Err(Error::Bind {
                    addr: format!("{shown} (quick UDP channel on {local})"),
                    source,
                })
            }
        }
    }
}

/// Receives quick datagrams until shutdown. The signal is dropped only after the socket
/// is, so the port is free when the listener's shutdown returns.
pub(crate) async fn receive_loop(
    shared: Arc<ServerState>,
    socket: Arc<UdpSocket>,
    mut shutdown: Shutdown,
) {
    let mut buf = vec![0u8; 65_536];
    loop {
        tokio::select! {
            res = socket.recv_from(&mut buf) => match res {
                Ok((n, src)) => receive(&shared, Bytes::copy_from_slice(&buf[..n]), src).await,
                Err(e) => tracing::debug!("quick receive failed: {e}"),
            },
            _ = shutdown.requested() => break,
        }
    }
    drop(socket);
    drop(shutdown);
}

async fn receive(shared: &Arc<ServerState>, datagram: Bytes, src: SocketAddr) {
    let reject = |why: &str| {
        shared.quick.rejected.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%src, "quick datagram refused: {why}");
    };
    let packet = match Decoder::new().decode_datagram(datagram) {
        Ok(p) => p,
        Err(e) => return reject(&e.to_string()),
    };
    if packet.ptype != PacketType::Datagram || packet.is_reply() {
        return reject(&format!(
            "{:?} is not accepted on the quick channel",
            packet.ptype
        ));
    }
    let client = {
        let reg = shared.registry();
        match reg.clients.get(&packet.seqno) {
            Some(e) if e.logged_in && e.handle.quick_addr() == Some(src) => e.handle.clone(),
            Some(_) => {
                return reject(&format!(
                    "client {} did not advertise this address",
                    packet.seqno
                ))
            }
            None => return reject(&format!("no client with id {}", packet.seqno)),
        }
    };
    let url = match check_url(&packet.url) {
        Ok(u) if u.len() > shared.config.max_url_len => return reject("URL over max_url_len"),
        Ok(u) => u.to_string(),
        Err(e) => return reject(&e.to_string()),
    };
    shared.quick.received.fetch_add(1, Ordering::Relaxed);
    let dgram = Datagram {
        url,
        payload: Payload {
            param: packet.param,
            data: packet.data,
        },
        quick: true,
        client,
    };
    shared.datagram(dgram).await;
}

/// The quick path of `client`, if it advertised one on a listener with a quick channel.
pub(crate) fn path_of(client: &ClientHandle) -> Option<&QuickPath> {
    client.quick.get()
}
