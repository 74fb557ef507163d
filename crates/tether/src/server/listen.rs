//! Listening: binding a server's TCP port (and the quick channel's UDP port beside it) and
//! the accept loop that admits connections and starts a [`Session`](super::connection::Session)
//! for each.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use tracing::Instrument;

use super::{connection, quick, Server, ServerState};
use crate::listening::{pause_after_accept_error, Shutdown};
use crate::{BindAddr, Error, Listening};

impl Server {
    /// Listens on `addr` (TCP, and UDP on the same port for the quick channel) and serves
    /// connections. [`Listening::shutdown`] stops accepting, closes every connection of this
    /// listener after flushing what is queued for it, and returns once all of them have
    /// ended and both ports are closed; dropping the handle leaves the server running.
    pub async fn bind(&self, addr: impl BindAddr) -> Result<Listening, Error> {
        let shown = addr.to_string();
        let requested = crate::listening::resolve(addr, "VSOA").await?;
        let quick = self.shared.config.quick && self.shared.config.tls.is_none();
        let (listener, udp) = quick::bind_pair(requested, &shown, quick).await?;
        let local_addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: shown.clone(),
            source,
        })?;
        let (listening, shutdown) = Listening::new(local_addr);
        let shared = self.shared.clone();
        let span = tracing::info_span!("vsoa-server", listen = %local_addr);
        if let Some(udp) = &udp {
            let receive = quick::receive_loop(shared.clone(), udp.clone(), shutdown.clone());
            tokio::spawn(receive.instrument(span.clone()));
        }
        tokio::spawn(accept_loop(shared, listener, udp, shutdown).instrument(span));
        tracing::info!("VSOA server listening on {local_addr}");
        Ok(listening)
    }
}

async fn accept_loop(
    shared: Arc<ServerState>,
    listener: tokio::net::TcpListener,
    udp: Option<Arc<tokio::net::UdpSocket>>,
    mut shutdown: Shutdown,
) {
    loop {
        tokio::select! {
            res = listener.accept() => match res {
                Ok((stream, peer)) => {
                    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
                    let Ok(local) = stream.local_addr() else { continue };
                    let conn = connection::Session::new(
                        shared.clone(), id, peer, local, udp.clone(), shared.config.tls.clone(),
                    );
                    if !shared.admit(&conn) {
                        continue; // dropping the stream closes it
                    }
                    let span = tracing::info_span!("vsoa", client = id, peer = %peer);
                    let mut shutdown = shutdown.clone();
                    tokio::spawn(async move {
                        conn.run(stream, &mut shutdown).await;
                        // Only now, with the connection (and its handle on the quick
                        // socket) gone: the listener's shutdown returns when every copy of
                        // the signal is dropped, and the port must be free by then.
                        drop(shutdown);
                    }.instrument(span));
                }
                Err(e) => pause_after_accept_error("VSOA", &e).await,
            },
            _ = shutdown.requested() => break,
        }
    }
    // Close the port before reporting done: a restart may bind it again at once.
    drop(listener);
    drop(udp);
    tracing::info!("listener closed");
    drop(shutdown);
}
