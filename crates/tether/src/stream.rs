//! Streams (docs/protocols/vsoa.md §10): raw byte tunnels beside a VSOA connection.
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

use crate::tls::{ClientTls, ServerTls};
use crate::Error;

/// How long a server stream waits for its client by default (as VSOA servers).
pub const DEFAULT_SERVER_STREAM_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a client tries to connect to a stream by default (as VSOA clients).
pub const DEFAULT_CLIENT_STREAM_TIMEOUT: Duration = Duration::from_secs(10);

/// One end of a stream: raw bytes both ways, over TLS when the VSOA connection uses TLS.
/// Shut down the write half to tell the peer you are done; a read of 0 bytes means the
/// peer did.
///
/// Over TLS, a peer that closes its socket without a TLS `close_notify` alert (the Python
/// vsoa peers always do) also reads as the end of the stream, not as an error: a VSOA
/// stream has no framing of its own, so the end is the peer's closing, as on plain TCP.
/// [`DataStream::ended_without_close_notify`] says when it happened; what needs proof that
/// nothing was cut off checks its content (the file service sends a SHA-256).
#[derive(Debug)]
pub struct DataStream {
    inner: Transport,
    no_close_notify: bool,
    /// A write that makes no progress for this long fails ([`DataStream::set_send_timeout`]).
    send_timeout: Option<Duration>,
    stalled: Option<Pin<Box<tokio::time::Sleep>>>,
}

#[derive(Debug)]
enum Transport {
    Plain(TcpStream),
    ServerTls(Box<tokio_rustls::server::TlsStream<TcpStream>>),
    ClientTls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

/// Forwards a method call to whichever transport is inside.
macro_rules! each {
    ($self:expr, $s:ident => $e:expr) => {
        match &mut $self.inner {
            Transport::Plain($s) => $e,
            Transport::ServerTls($s) => $e,
            Transport::ClientTls($s) => $e,
        }
    };
}

impl DataStream {
    fn new(inner: Transport) -> Self {
        let stream = Self::from_parts(inner);
        crate::keepalive::prepare(stream.tcp(), Some(crate::Keepalive::default()));
        stream
    }

    fn from_parts(inner: Transport) -> Self {
        DataStream {
            inner,
            no_close_notify: false,
            send_timeout: None,
            stalled: None,
        }
    }

    fn tcp(&self) -> &TcpStream {
        match &self.inner {
            Transport::Plain(s) => s,
            Transport::ServerTls(s) => s.get_ref().0,
            Transport::ClientTls(s) => s.get_ref().0,
        }
    }

    /// TCP keepalive on this stream (VSOA's `stream.keepalive`); on by default with
    /// [`crate::Keepalive::default`] (idle 5 s, a probe every 2 s, 3 missed); `None` turns
    /// it off.
    pub fn set_keepalive(&self, keepalive: Option<crate::Keepalive>) -> io::Result<()> {
        match keepalive {
            Some(k) => k.apply(self.tcp()),
            None => socket2::SockRef::from(self.tcp()).set_keepalive(false),
        }
    }

    /// Makes a write that cannot make progress for `timeout` fail with
    /// `io::ErrorKind::TimedOut` (VSOA's `stream.sendtimeout`); `None` (the default) waits as
    /// long as TCP does. A reader that stops is then noticed by the writer.
    pub fn set_send_timeout(&mut self, timeout: Option<Duration>) {
        self.send_timeout = timeout;
        self.stalled = None;
    }

    /// Runs a write step under the send timeout: progress clears it, a stall arms it.
    fn timed<T>(&mut self, cx: &mut Context<'_>, step: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        let Some(timeout) = self.send_timeout else {
            return step;
        };
        if step.is_ready() {
            self.stalled = None;
            return step;
        }
        let stalled = self
            .stalled
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
        match std::future::Future::poll(stalled.as_mut(), cx) {
            Poll::Ready(()) => {
                self.stalled = None;
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the stream took no bytes for {timeout:?} (send timeout)"),
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    /// Whether the TLS peer ended the stream by closing its socket without `close_notify`
    /// (read as the end of the stream, see the type's docs).
    pub fn ended_without_close_notify(&self) -> bool {
        self.no_close_notify
    }

    /// The other end's address.
    pub fn peer_addr(&self) -> io::Result<SocketAddr> {
        match &self.inner {
            Transport::Plain(s) => s.peer_addr(),
            Transport::ServerTls(s) => s.get_ref().0.peer_addr(),
            Transport::ClientTls(s) => s.get_ref().0.peer_addr(),
        }
    }

    /// Connects the main VSOA link: plain, or TLS to `server` when `tls` is given.
    pub(crate) async fn connect_link(
        socket: TcpStream,
        server: SocketAddr,
        tls: Option<&ClientTls>,
    ) -> Result<Self, Error> {
        let Some(tls) = tls else {
            return Ok(DataStream::new(Transport::Plain(socket)));
        };
        let name = tls.name_for(server.ip())?;
        match tls.connector.connect(name, socket).await {
            Ok(s) => Ok(DataStream::new(Transport::ClientTls(Box::new(s)))),
            Err(e) => Err(Error::Tls(crate::tls::TlsError::Handshake {
                addr: server,
                detail: e.to_string(),
            })),
        }
    }

    /// The plain TCP stream inside, if it is not TLS (so it can be split without a lock).
    pub(crate) fn into_plain(self) -> Result<TcpStream, Self> {
        match self.inner {
            Transport::Plain(s) => Ok(s),
            other => Err(DataStream::from_parts(other)),
        }
    }

    /// The certificate the server presented, on a client TLS link.
    pub(crate) fn server_certificate(&self) -> Option<std::sync::Arc<crate::tls::PeerCertificate>> {
        match &self.inner {
            Transport::ClientTls(s) => {
                crate::tls::PeerCertificate::first_of(s.get_ref().1.peer_certificates())
            }
            _ => None,
        }
    }

    /// This end's address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        match &self.inner {
            Transport::Plain(s) => s.local_addr(),
            Transport::ServerTls(s) => s.get_ref().0.local_addr(),
            Transport::ClientTls(s) => s.get_ref().0.local_addr(),
        }
    }

    /// Whether the stream is encrypted.
    pub fn is_tls(&self) -> bool {
        !matches!(self.inner, Transport::Plain(_))
    }
}

impl AsyncRead for DataStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let res = each!(self, s => Pin::new(s).poll_read(cx, buf));
        match res {
            // rustls reports a socket closed without close_notify as UnexpectedEof.
            Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::UnexpectedEof && self.is_tls() => {
                tracing::debug!("stream: the TLS peer closed without close_notify; end of stream");
                self.no_close_notify = true;
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl AsyncWrite for DataStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let step = each!(self, s => Pin::new(s).poll_write(cx, buf));
        self.timed(cx, step)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let step = each!(self, s => Pin::new(s).poll_flush(cx));
        self.timed(cx, step)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        each!(self, s => Pin::new(s).poll_shutdown(cx))
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let step = each!(self, s => Pin::new(s).poll_write_vectored(cx, bufs));
        self.timed(cx, step)
    }

    fn is_write_vectored(&self) -> bool {
        match &self.inner {
            Transport::Plain(s) => s.is_write_vectored(),
            Transport::ServerTls(s) => s.is_write_vectored(),
            Transport::ClientTls(s) => s.is_write_vectored(),
        }
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
    tls: Option<ServerTls>,
}

impl PendingStream {
    pub(crate) async fn open(
        local_ip: IpAddr,
        client_ip: IpAddr,
        timeout: Duration,
        tls: Option<ServerTls>,
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
            tls,
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
                    reason: crate::CloseReason::Failed(
                        format!("stream port {} failed: {e}", self.tunid).into(),
                    ),
                })?;
            if peer.ip() == self.client_ip {
                let Some(tls) = &self.tls else {
                    return Ok(DataStream::new(Transport::Plain(socket)));
                };
                let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                return match tokio::time::timeout(left, tls.acceptor.accept(socket)).await {
                    Ok(Ok(s)) => Ok(DataStream::new(Transport::ServerTls(Box::new(s)))),
                    Ok(Err(e)) => Err(Error::Tls(crate::tls::TlsError::Handshake {
                        addr: peer,
                        detail: e.to_string(),
                    })),
                    Err(_) => Err(timed_out()),
                };
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
    tls: Option<&ClientTls>,
) -> Result<DataStream, Error> {
    let addr = SocketAddr::new(server.ip(), tunid);
    let deadline = tokio::time::Instant::now() + timeout;
    let socket = tokio::time::timeout_at(deadline, TcpStream::connect(addr))
        .await
        .map_err(|_| Error::ConnectTimeout { addr, timeout })?
        .map_err(|source| Error::Unreachable { addr, source })?;
    tokio::time::timeout_at(deadline, DataStream::connect_link(socket, addr, tls))
        .await
        .map_err(|_| Error::ConnectTimeout { addr, timeout })?
}
