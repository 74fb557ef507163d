//! The client's reader task: routes every packet from the server, and tears everything
//! down when the connection ends so that nothing waits forever.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::BytesMut;
use tether_wire::vsoa::{Decoder, Packet, PacketType};
use tokio::io::AsyncRead;

use super::subscription::{settle, Offer};
use super::{Link, Message};
use crate::framed::Framed;
use crate::{CloseReason, Payload};

/// Read room: a client has one connection, so it reads in larger pieces than the server.
const READ_RESERVE: usize = 16 * 1024;

pub(super) async fn read_loop<R: AsyncRead + Unpin>(shared: Arc<Link>, rd: R, buf: BytesMut) {
    let mut framed = Framed::new(rd, buf, Decoder::new(), READ_RESERVE);
    let killed = shared.outbound.killed();
    tokio::pin!(killed);
    let reason: CloseReason = 'conn: loop {
        loop {
            match framed.try_next() {
                Ok(Some(packet)) => dispatch(&shared, packet).await,
                Ok(None) => break,
                Err(why) => break 'conn why,
            }
        }
        tokio::select! {
            res = framed.fill() => if let Err(why) = res {
                break 'conn why;
            },
            why = &mut killed => break 'conn why,
        }
    };
    tracing::debug!(addr = %shared.addr, "client connection ended: {reason}");
    // Kill first, so the failures below carry this reason.
    shared.outbound.kill(reason);
    let pending = std::mem::take(&mut *shared.pending.lock().unwrap_or_else(|e| e.into_inner()));
    drop(pending); // every waiting call sees its sender gone and reports Error::Closed
    shared
        .subs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
    *shared.datagrams.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// Routes one packet. Waits only for full stream buffers, at most the stall timeout (see
/// `subscription.rs`).
async fn dispatch(shared: &Link, packet: Packet) {
    match packet.ptype {
        PacketType::Rpc
        | PacketType::Subscribe
        | PacketType::Unsubscribe
        | PacketType::PingEcho
        | PacketType::ServInfo
            if packet.is_reply() =>
        {
            let waiter = shared
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .remove(&packet.seqno);
            match waiter {
                Some(w) => {
                    let _ = w.send(packet);
                }
                None => tracing::trace!(
                    seqno = packet.seqno,
                    "reply to nothing pending (late or fire-and-forget)"
                ),
            }
        }
        PacketType::QosSetup => shared.priority.store(packet.status.0, Ordering::Relaxed),
        PacketType::Publish => {
            let Some(msg) = message(packet) else { return };
            let waits = shared
                .subs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .deliver(msg);
            if waits.is_empty() {
                return;
            }
            let deadline = tokio::time::Instant::now() + shared.stall_timeout;
            for (id, wait) in waits {
                let outcome = wait.run(deadline).await;
                let mut subs = shared.subs.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(sink) = subs.sink(id) {
                    settle(sink, outcome, "a subscription", shared.stall_timeout);
                }
            }
        }
        PacketType::Datagram => {
            let Some(msg) = message(packet) else { return };
            let offer = match &mut *shared.datagrams.lock().unwrap_or_else(|e| e.into_inner()) {
                Some(sink) => sink.offer(msg),
                None => {
                    tracing::debug!(
                        url = msg.url,
                        "datagram dropped: nobody took Client::datagrams()"
                    );
                    return;
                }
            };
            if let Offer::Wait(wait) = offer {
                let outcome = wait
                    .run(tokio::time::Instant::now() + shared.stall_timeout)
                    .await;
                if let Some(sink) = &mut *shared.datagrams.lock().unwrap_or_else(|e| e.into_inner())
                {
                    settle(sink, outcome, "the datagram stream", shared.stall_timeout);
                }
            }
        }
        other => tracing::trace!(?other, "ignored packet from server"),
    }
}

pub(super) fn message(packet: Packet) -> Option<Message> {
    let url = match String::from_utf8(packet.url.to_vec()) {
        Ok(u) => u,
        Err(_) => {
            tracing::debug!("message with a non-UTF-8 URL dropped");
            return None;
        }
    };
    Some(Message {
        url,
        payload: Payload {
            param: packet.param,
            data: packet.data,
        },
        quick: false,
        lost_before: 0,
    })
}
