//! The client's end of the quick channel (docs/protocols/vsoa.md §5): a UDP socket bound to the same local
//! IP as the TCP connection and `connect`ed to the server, so it only hears the server. Its
//! port is advertised in the handshake; quick publishes and datagrams arrive here, and
//! quick datagrams leave from here with the client id in seqno. Receiving never waits: a
//! message for a full stream buffer is dropped and counted like any other loss.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use tether_wire::vsoa::{Decoder, PacketType};
use tokio::net::UdpSocket;

use super::connection::message;
use super::Link;

/// A UDP socket on `local_ip`, connected to the server's address.
pub(super) async fn open(
    local_ip: std::net::IpAddr,
    server: SocketAddr,
) -> std::io::Result<UdpSocket> {
    let socket = UdpSocket::bind(SocketAddr::new(local_ip, 0)).await?;
    socket.connect(server).await?;
    Ok(socket)
}

pub(super) async fn read_loop(shared: Arc<Link>, socket: Arc<UdpSocket>) {
    let mut buf = vec![0u8; 65_536];
    loop {
        tokio::select! {
            res = socket.recv(&mut buf) => match res {
                Ok(n) => receive(&shared, Bytes::copy_from_slice(&buf[..n])),
                // e.g. ICMP port unreachable reported on a connected socket: keep listening.
                Err(e) => tracing::debug!("quick receive failed: {e}"),
            },
            _ = shared.outbound.killed() => return,
        }
    }
}

fn receive(shared: &Link, datagram: Bytes) {
    let packet = match Decoder::new().decode_datagram(datagram) {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!("quick packet from the server dropped: {e}");
            return;
        }
    };
    let ptype = packet.ptype;
    let Some(mut msg) = message(packet) else {
        return;
    };
    msg.quick = true;
    match ptype {
        PacketType::Publish => shared
            .subs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .deliver_now(msg),
        PacketType::Datagram => {
            if let Some(sink) = &mut *shared.datagrams.lock().unwrap_or_else(|e| e.into_inner()) {
                sink.offer_now(msg);
            }
        }
        other => tracing::trace!(?other, "ignored on the quick channel"),
    }
}
