//! Streams (vsoa.md §10): raw byte tunnels beside a VSOA connection.
//!
//! An RPC handler opens a [`PendingStream`]: a fresh TCP listener on the address the client
//! reached the server on, port chosen by the OS. The handler replies with that port as
//! `tunid` (see [`crate::Reply::with_tunid`]); the client connects to it with
//! [`crate::Client::connect_stream`]. No framing, no hello: both ends get a [`DataStream`]
//! of raw bytes, with TCP's own backpressure. Unlike VSOA's servers, which hand the stream
//! to whoever connects first, Tether accepts only a connection from the requesting client's
//! IP (others are closed and logged) and stops listening on accept or at the timeout.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};

use crate::Error;

/// How long a server stream waits for its client by default (as VSOA servers).
pub const DEFAULT_SERVER_STREAM_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client tries to connect to a stream by default (as VSOA clients).
pub const DEFAULT_CLIENT_STREAM_TIMEOUT: Duration = Duration::from_secs(10);

/// One end of a stream: raw bytes both ways. Shut down the write half to tell the peer
/// you are done; a read of 0 bytes means the peer did.
#[derive(Debug)]
pub struct DataStream {
    inner: TcpStream,
}

impl DataStream {
    fn new(inner: TcpStream) -> Self {
        let _ = inner.set_nodelay(true);
        DataStream { inner }
    }

    /// The other end's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        self.inner.peer_addr()
    }
}

impl AsyncRead for DataStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for DataStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A server stream waiting for its client. Reply with [`PendingStream::tunid`], then
/// [`PendingStream::accept`] (typically in a spawned task, after the reply is sent).
#[derive(Debug)]
pub struct PendingStream {
    listener: TcpListener,
    tunid: u16,
    client_ip: IpAddr,
    timeout: Duration,
}

impl PendingStream {
    pub(crate) async fn open(
        local_ip: IpAddr,
        client_ip: IpAddr,
        timeout: Duration,
    ) -> Result<Self, Error> {
        let bind = SocketAddr::new(local_ip, 0);
        let listener = TcpListener::bind(bind)
            .await
            .map_err(|source| Error::Bind {
                addr: format!("{bind} (stream)"),
                source,
            })?;
        let tunid = listener
            .local_addr()
            .map_err(|source| Error::Bind {
                addr: format!("{bind} (stream)"),
                source,
            })?
            .port();
        Ok(PendingStream {
            listener,
            tunid,
            client_ip,
            timeout,
        })
    }

    /// The port to send to the client as `tunid`.
    pub fn tunid(&self) -> u16 {
        self.tunid
    }

    /// Waits for the requesting client to connect (connections from other IPs are closed
    /// and logged), then stops listening. Fails with [`Error::StreamTimeout`] if it does not
    /// connect in time.
    pub async fn accept(self) -> Result<DataStream, Error> {
        let deadline = tokio::time::Instant::now() + self.timeout;
        let timed_out = || Error::StreamTimeout {
            port: self.tunid,
            timeout: self.timeout,
        };
        loop {
            let (socket, peer) = tokio::time::timeout_at(deadline, self.listener.accept())
                .await
                .map_err(|_| timed_out())?
                .map_err(|e| Error::Closed {
                    reason: format!("stream port {} failed: {e}", self.tunid).into(),
                })?;
            if peer.ip() == self.client_ip {
                return Ok(DataStream::new(socket));
            }
            tracing::warn!(
                port = self.tunid,
                "stream connection from {peer} refused: it belongs to {}",
                self.client_ip
            );
        }
    }
}

/// Connects to the stream port `tunid` of `server`.
pub(crate) async fn connect(
    server: SocketAddr,
    tunid: u16,
    timeout: Duration,
) -> Result<DataStream, Error> {
    let addr = SocketAddr::new(server.ip(), tunid);
    let socket = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| Error::ConnectTimeout { addr, timeout })?
        .map_err(|source| Error::Unreachable { addr, source })?;
    Ok(DataStream::new(socket))
}
