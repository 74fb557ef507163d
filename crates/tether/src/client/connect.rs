//! Connecting: open the link, drive the login state machine of `login.rs` under one
//! deadline, then hand the link to the connection's tasks.

use std::collections::HashMap;
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU8};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tether_wire::vsoa::{Decoder, Packet};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::login::{LoggedIn, Login, Step};
use super::options::{connect_options, ConnectOptions};
use super::{connection, quick, subscription, Client, Inner, Link};
use crate::outbound::Outbound;
use crate::{Error, VsoaUrl};

/// A connection being set up; `.await` it to connect. Its builder methods are those of
/// [`ConnectOptions`].
///
/// ```no_run
/// # async fn f() -> Result<(), tether::Error> {
/// let client = tether::Client::connect("vsoa://127.0.0.1:3005")
///     .password("secret")
///     .timeout(std::time::Duration::from_secs(3))
///     .await?;
/// # Ok(()) }
/// ```
#[must_use = "a Connect does nothing until awaited"]
#[derive(Debug, Clone)]
pub struct Connect {
    url: String,
    options: ConnectOptions,
}

impl Connect {
    pub(super) fn new(url: &str) -> Self {
        Connect {
            url: url.to_string(),
            options: ConnectOptions::default(),
        }
    }

    fn options_mut(&mut self) -> &mut ConnectOptions {
        &mut self.options
    }

    connect_options!();

    /// The same as [`connect_timeout`](Self::connect_timeout).
    pub fn timeout(self, t: Duration) -> Self {
        self.connect_timeout(t)
    }

    async fn run(self) -> Result<Client, Error> {
        let origin = Connect {
            url: self.url.clone(),
            options: self.options.clone(),
        };
        let options = self.options;
        let url: VsoaUrl = self.url.parse()?;
        let entry = url.resolve(&options.position_servers).await?;
        let addr = entry.socket_addr();
        if entry.security && options.tls.is_none() {
            return Err(Error::Lookup(crate::position::LookupError {
                name: url.to_string(),
                tried: format!(
                    "it resolves to the TLS server {addr}: connect with TLS options (a trusted CA)"
                ),
            }));
        }
        let deadline = tokio::time::Instant::now() + options.connect_timeout;
        let timed_out = || Error::ConnectTimeout {
            addr,
            timeout: options.connect_timeout,
        };
        let (mut stream, udp) = tokio::time::timeout_at(deadline, open_link(addr, &options))
            .await
            .map_err(|_| timed_out())??;
        let tunid = match &udp {
            Some(u) => u.local_addr().map(|a| a.port()).unwrap_or(0),
            None => 0,
        };
        let (mut login, mut packet) = Login::start(
            addr,
            options.password.as_ref(),
            options.secret.as_ref(),
            tunid,
        )?;
        let mut handshake = Handshake {
            stream: &mut stream,
            buf: BytesMut::with_capacity(4096),
            decoder: Decoder::new(),
            addr,
        };
        let logged_in = loop {
            let reply = tokio::time::timeout_at(deadline, handshake.exchange(&packet))
                .await
                .map_err(|_| timed_out())??;
            match login.on_reply(&reply)? {
                Step::Send(next) => packet = next,
                Step::Done(logged_in) => break logged_in,
            }
        };
        let buf = handshake.buf;
        if let (Some(udp), Some(port)) = (&udp, logged_in.quick_port) {
            udp.connect(SocketAddr::new(addr.ip(), port))
                .await
                .map_err(|source| Error::Unreachable { addr, source })?;
        }
        Ok(start_tasks(
            addr, stream, buf, udp, logged_in, options, origin,
        ))
    }
}

impl IntoFuture for Connect {
    type Output = Result<Client, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

/// The TCP connection (with TLS if configured) and, unless TLS is used or the quick channel
/// is off, the UDP socket of the quick channel.
async fn open_link(
    addr: SocketAddr,
    options: &ConnectOptions,
) -> Result<(crate::DataStream, Option<tokio::net::UdpSocket>), Error> {
    let socket = TcpStream::connect(addr)
        .await
        .map_err(|source| Error::Unreachable { addr, source })?;
    crate::keepalive::prepare(&socket, options.keepalive);
    // Only a zero linger reaches the socket: a longer one would make close() block a
    // runtime thread; Client::close waits for the queue instead.
    if options.linger == Some(Duration::ZERO) {
        if let Err(e) = socket2::SockRef::from(&socket).set_linger(Some(Duration::ZERO)) {
            tracing::warn!(%addr, "cannot set SO_LINGER: {e}");
        }
    }
    let stream = crate::DataStream::connect_link(socket, addr, options.tls.as_ref()).await?;
    // No quick channel under TLS (docs/protocols/vsoa.md §5).
    let udp = if options.quick && options.tls.is_none() {
        let local = stream
            .local_addr()
            .map_err(|source| Error::Unreachable { addr, source })?;
        let udp = quick::open(local.ip(), addr)
            .await
            .map_err(|source| Error::Unreachable { addr, source })?;
        Some(udp)
    } else {
        None
    };
    Ok((stream, udp))
}

/// Hands a logged-in link to its writer and reader tasks.
fn start_tasks(
    addr: SocketAddr,
    stream: crate::DataStream,
    buf: BytesMut,
    udp: Option<tokio::net::UdpSocket>,
    logged_in: LoggedIn,
    options: ConnectOptions,
    origin: Connect,
) -> Client {
    let server_cert = stream.server_certificate();
    let (outbound, writer) = Outbound::new(options.queue_bytes, options.send_timeout);
    let writer = writer.abortive(options.linger == Some(Duration::ZERO));
    let shared = Arc::new(Link {
        addr,
        outbound,
        pending: Mutex::new(HashMap::new()),
        subs: Mutex::new(subscription::Table::default()),
        datagrams: Mutex::new(None),
        buffer: options.buffer,
        stall_timeout: options.stall_timeout,
        next_seqno: AtomicU32::new(1),
        priority: AtomicU8::new(0),
        quick: udp.map(Arc::new),
        tls: options.tls,
        linger: options.linger,
    });
    // Bytes after the handshake reply are kept: Python loses them (docs/protocols/vsoa.md §16.4).
    match stream.into_plain() {
        Ok(tcp) => {
            let (rd, wr) = tcp.into_split();
            if options.linger == Some(Duration::ZERO) {
                // Dropping a write half shuts it down (a FIN); this one leaves the socket to
                // close with the read half, which resets it (SO_LINGER 0).
                tokio::spawn(writer.run(NoShutdown(Some(wr))));
            } else {
                tokio::spawn(writer.run(wr));
            }
            tokio::spawn(connection::read_loop(shared.clone(), rd, buf));
        }
        Err(tls) => {
            let (rd, wr) = tokio::io::split(tls);
            tokio::spawn(writer.run(wr));
            tokio::spawn(connection::read_loop(shared.clone(), rd, buf));
        }
    }
    if let Some(udp) = &shared.quick {
        tokio::spawn(quick::read_loop(shared.clone(), udp.clone()));
    }
    let id = logged_in.id;
    tracing::debug!(%addr, id, "connected");
    Client {
        inner: Arc::new(Inner {
            shared,
            info: logged_in.info,
            id,
            datagrams_taken: Default::default(),
            server_cert,
            origin,
        }),
    }
}

/// The handshake's request/reply exchanges, before the connection's tasks exist.
struct Handshake<'a> {
    stream: &'a mut crate::DataStream,
    /// Bytes read past a reply are kept here and handed to the reader task.
    buf: BytesMut,
    decoder: Decoder,
    addr: SocketAddr,
}

impl Handshake<'_> {
    /// Sends `packet` in one write and reads exactly one packet back.
    async fn exchange(&mut self, packet: &Packet) -> Result<Packet, Error> {
        let addr = self.addr;
        // rustls reports a failed TLS exchange (e.g. a refused client certificate, which TLS
        // 1.3 signals after the client thinks it is done) as InvalidData.
        let io = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::InvalidData => Error::Tls(crate::tls::TlsError::Handshake {
                addr,
                detail: e.to_string(),
            }),
            _ => Error::Unreachable { addr, source: e },
        };
        self.stream
            .write_all(&packet.to_bytes()?)
            .await
            .map_err(io)?;
        loop {
            match self.decoder.decode(&mut self.buf) {
                Ok(Some(p)) => return Ok(p),
                Ok(None) => {}
                Err(e) => {
                    return Err(Error::Malformed {
                        addr,
                        detail: e.to_string(),
                    })
                }
            }
            if self.stream.read_buf(&mut self.buf).await.map_err(io)? == 0 {
                return Err(Error::Malformed {
                    addr,
                    detail: "the server closed the connection during the handshake".into(),
                });
            }
        }
    }
}

/// A write half that, dropped, does not shut the connection down.
struct NoShutdown(Option<tokio::net::tcp::OwnedWriteHalf>);

impl NoShutdown {
    fn half(&mut self) -> std::pin::Pin<&mut tokio::net::tcp::OwnedWriteHalf> {
        std::pin::Pin::new(self.0.as_mut().expect("kept until dropped"))
    }
}

impl tokio::io::AsyncWrite for NoShutdown {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.half().poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.half().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.half().poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

impl Drop for NoShutdown {
    fn drop(&mut self) {
        if let Some(half) = self.0.take() {
            half.forget();
        }
    }
}
