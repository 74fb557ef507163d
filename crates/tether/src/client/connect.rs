//! Connecting: the options, the SERVINFO handshake, and starting the connection's tasks.

use std::collections::HashMap;
use std::future::{Future, IntoFuture};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, AtomicU8};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tether_wire::vsoa::{Decoder, Packet, PacketType, Status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{
    connection, quick, subscription, Client, Inner, Shared, DEFAULT_BUFFER,
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_STALL_TIMEOUT,
};
use crate::outbound::Outbound;
use crate::server::Secret;
use crate::{Error, VsoaUrl};

/// Connection options; `.await` it to connect.
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
pub struct Connect {
    url: String,
    password: Option<Secret>,
    secret: Option<Secret>,
    timeout: Duration,
    send_timeout: Duration,
    queue_bytes: usize,
    buffer: usize,
    stall_timeout: Duration,
    quick: bool,
    position_servers: Vec<SocketAddr>,
    tls: Option<crate::tls::ClientTls>,
}

impl std::fmt::Debug for Connect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connect")
            .field("url", &self.url)
            .field("password", &self.password)
            .field("secret", &self.secret)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl Connect {
    pub(super) fn new(url: &str) -> Self {
        Connect {
            url: url.to_string(),
            password: None,
            secret: None,
            timeout: DEFAULT_CONNECT_TIMEOUT,
            send_timeout: Duration::from_secs(5),
            queue_bytes: 4 << 20,
            buffer: DEFAULT_BUFFER,
            stall_timeout: DEFAULT_STALL_TIMEOUT,
            quick: true,
            position_servers: Vec::new(),
            tls: None,
        }
    }

    /// Log in with this password.
    pub fn password(mut self, password: impl Into<String>) -> Self {
        self.password = Some(Secret::new(password));
        self
    }

    /// Log in with challenge login and this shared secret: the secret never crosses the
    /// wire (docs/protocol-extensions.md). Takes precedence over a password.
    pub fn secret(mut self, secret: impl Into<String>) -> Self {
        self.secret = Some(Secret::new(secret));
        self
    }

    /// Time for TCP connect plus handshake (default 10 s).
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// How long a send may wait for the outbound queue before the connection is given up
    /// (default 5 s).
    pub fn send_timeout(mut self, t: Duration) -> Self {
        self.send_timeout = t;
        self
    }

    /// Messages buffered per subscription and for the datagram stream (default 65 536, as
    /// async-nats).
    pub fn buffer(mut self, messages: usize) -> Self {
        self.buffer = messages.max(1);
        self
    }

    /// How long the connection waits for a full stream buffer to make room before that
    /// stream starts dropping (and counting) messages until it catches up (default 1 s).
    /// While it waits, nothing else on the connection, RPC replies included, is read.
    pub fn stall_timeout(mut self, t: Duration) -> Self {
        self.stall_timeout = t;
        self
    }

    /// Connect over TLS with this setup (and open streams over TLS). Turns the quick channel
    /// off, as VSOA does.
    pub fn tls(mut self, tls: crate::tls::ClientTls) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Position servers that resolve a server *name* in the URL (default: VSOA's
    /// `VSOA_POS_SERVER`, then `/etc/vsoa.pos`).
    pub fn position_servers(mut self, servers: Vec<SocketAddr>) -> Self {
        self.position_servers = servers;
        self
    }

    /// Whether to open the quick (UDP) channel (default true): advertise a UDP port so the
    /// server can send quick publishes and datagrams, and allow [`Client::datagram_quick`].
    pub fn quick(mut self, on: bool) -> Self {
        self.quick = on;
        self
    }

    async fn run(self) -> Result<Client, Error> {
        let url: VsoaUrl = self.url.parse()?;
        let entry = url.resolve(&self.position_servers).await?;
        if entry.security {
            return Err(Error::Lookup {
                name: url.to_string(),
                tried: format!(
                    "it resolves to the TLS server {}, and this client does not speak TLS yet",
                    entry.socket_addr()
                ),
            });
        }
        let addr = entry.socket_addr();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let timed_out = || Error::ConnectTimeout {
            addr,
            timeout: self.timeout,
        };
        let socket = tokio::time::timeout_at(deadline, TcpStream::connect(addr))
            .await
            .map_err(|_| timed_out())?
            .map_err(|source| Error::Unreachable { addr, source })?;
        let mut stream = tokio::time::timeout_at(
            deadline,
            crate::DataStream::connect_link(socket, addr, self.tls.as_ref()),
        )
        .await
        .map_err(|_| timed_out())??;
        let server_cert = stream.server_certificate();

        // No quick channel under TLS (docs/protocols/vsoa.md §5).
        let udp = if self.quick && self.tls.is_none() {
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
        let tunid = match &udp {
            Some(u) => u.local_addr().map(|a| a.port()).unwrap_or(0),
            None => 0,
        };
        let hello_param = match (&self.secret, &self.password) {
            (Some(_), _) => serde_json::json!({ "challenge": crate::auth::ALGORITHM }),
            (None, Some(pw)) => serde_json::json!({ "passwd": pw.expose() }),
            (None, None) => serde_json::Value::Null,
        };
        let mut hello = Packet::new(PacketType::ServInfo).with_tunid(tunid);
        if !hello_param.is_null() {
            hello.param = serde_json::to_vec(&hello_param)?.into();
        }
        let mut handshake = Handshake {
            stream: &mut stream,
            buf: BytesMut::with_capacity(4096),
            decoder: Decoder::new(),
            addr,
        };
        let mut reply = tokio::time::timeout_at(deadline, handshake.exchange(&hello))
            .await
            .map_err(|_| timed_out())??;
        if let Some(secret) = &self.secret {
            // The server sent a seed (or refused); answer HMAC(secret, seed).
            let seed = seed_of(&reply).ok_or(Error::WrongSecret { addr })?;
            let answer = crate::auth::answer(secret.expose().as_bytes(), &seed);
            let response = Packet::new(PacketType::ServInfo)
                .with_tunid(tunid)
                .with_param(serde_json::to_vec(
                    &serde_json::json!({ "response": crate::auth::to_hex(&answer) }),
                )?);
            reply = tokio::time::timeout_at(deadline, handshake.exchange(&response))
                .await
                .map_err(|_| timed_out())??;
            if reply.status == Status::PASSWORD {
                return Err(Error::WrongSecret { addr });
            }
        }
        let buf = handshake.buf;

        if reply.ptype != PacketType::ServInfo || !reply.is_reply() {
            return Err(Error::Malformed {
                addr,
                detail: format!("expected a SERVINFO reply, got {:?}", reply.ptype),
            });
        }
        if reply.status == Status::PASSWORD {
            return Err(Error::WrongPassword { addr });
        }
        if !reply.status.is_success() {
            return Err(Error::Refused {
                what: "the login".into(),
                status: reply.status,
            });
        }
        let id = match reply.data.first_chunk::<4>() {
            Some(b) if reply.data.len() == 4 || reply.data.len() == 6 => u32::from_be_bytes(*b),
            _ => {
                return Err(Error::Malformed {
                    addr,
                    detail: format!(
                        "handshake data of {} bytes, expected 4 or 6",
                        reply.data.len()
                    ),
                })
            }
        };
        // The 6-byte form names the server's quick port when it differs from the TCP port.
        if let (Some(udp), Some(port)) = (&udp, reply.data.get(4..6)) {
            let port = u16::from_be_bytes([port[0], port[1]]);
            udp.connect(SocketAddr::new(addr.ip(), port))
                .await
                .map_err(|source| Error::Unreachable { addr, source })?;
        }
        let info = if reply.param.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&reply.param).unwrap_or_else(|_| {
                serde_json::Value::String(String::from_utf8_lossy(&reply.param).into_owned())
            })
        };

        let (outbound, writer) = Outbound::new(self.queue_bytes, self.send_timeout);
        let shared = Arc::new(Shared {
            addr,
            outbound,
            pending: Mutex::new(HashMap::new()),
            subs: Mutex::new(subscription::Table::default()),
            datagrams: Mutex::new(None),
            buffer: self.buffer,
            stall_timeout: self.stall_timeout,
            next_seqno: AtomicU32::new(1),
            priority: AtomicU8::new(0),
            quick: udp.map(Arc::new),
            tls: self.tls.clone(),
        });
        // Bytes after the handshake reply are kept: Python loses them (docs/protocols/vsoa.md §16.4).
        match stream.into_plain() {
            Ok(tcp) => {
                let (rd, wr) = tcp.into_split();
                tokio::spawn(writer.run(wr));
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
        tracing::debug!(%addr, id, "connected");
        Ok(Client {
            inner: Arc::new(Inner {
                shared,
                info,
                id,
                datagrams_taken: Default::default(),
                server_cert,
            }),
        })
    }
}

impl IntoFuture for Connect {
    type Output = Result<Client, Error>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send>>;
    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
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
            std::io::ErrorKind::InvalidData => Error::TlsHandshake {
                addr,
                detail: e.to_string(),
            },
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

/// The challenge seed of a successful SERVINFO reply that carries no client id yet.
fn seed_of(reply: &Packet) -> Option<Vec<u8>> {
    if reply.ptype != PacketType::ServInfo || !reply.status.is_success() || !reply.data.is_empty() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(&reply.param).ok()?;
    crate::auth::from_hex(v.get("seed")?.as_str()?)
}
