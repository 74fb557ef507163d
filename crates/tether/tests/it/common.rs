//! Test helpers: a demo server on 127.0.0.1:0 and a raw VSOA peer that sends exactly the
//! bytes a test wants. Waits are bounded by timeouts; nothing sleeps to synchronise.

use std::net::SocketAddr;

use bytes::{Bytes, BytesMut};
use tether::{Datagram, Listening, Mode, Reply, Request, Server, ServerBuilder};
use tether_wire::vsoa::{Decoder, Packet, PacketType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub(crate) use tether_testkit::WAIT;

/// Routes every test server has: `/echo` (inline), `/status/<n>` replies status n.
pub(crate) fn install_routes(server: &Server) {
    server.route_with("/echo", Mode::Inline, |req: Request| async move {
        Reply::ok(req.payload)
    });
    server.route("/status/", |req: Request| async move {
        let n: u8 = req
            .url()
            .rsplit('/')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        Reply::status(tether::Status(n))
    });
}

pub(crate) fn with_datagram_echo(b: ServerBuilder) -> ServerBuilder {
    b.on_datagram(|dg: Datagram| async move {
        let _ = dg.reply(&dg.url, dg.payload.clone()).await;
    })
}

pub(crate) async fn start(builder: ServerBuilder) -> (Server, Listening) {
    let server = with_datagram_echo(builder).build();
    install_routes(&server);
    let listening = server.bind("127.0.0.1:0").await.expect("bind");
    (server, listening)
}

pub(crate) fn url(l: &Listening) -> String {
    format!("vsoa://{}", l.local_addr())
}

/// A VSOA peer that speaks raw packets.
pub(crate) struct Raw {
    pub stream: TcpStream,
    buf: BytesMut,
    dec: Decoder,
}

impl Raw {
    pub(crate) async fn connect(addr: SocketAddr) -> Raw {
        let stream = TcpStream::connect(addr).await.expect("connect");
        stream.set_nodelay(true).unwrap();
        Raw {
            stream,
            buf: BytesMut::new(),
            dec: Decoder::new(),
        }
    }

    pub(crate) async fn send(&mut self, p: &Packet) {
        self.send_bytes(&p.to_bytes().unwrap()).await;
    }

    pub(crate) async fn send_bytes(&mut self, b: &[u8]) {
        self.stream.write_all(b).await.expect("write");
    }

    /// The next packet; `None` when the server closed the connection.
    pub(crate) async fn recv(&mut self) -> Option<Packet> {
        tokio::time::timeout(WAIT, async {
            loop {
                if let Some(p) = self.dec.decode(&mut self.buf).expect("server sent garbage") {
                    return Some(p);
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
        .expect("no packet and no close within the wait")
    }

    pub(crate) async fn expect(&mut self) -> Packet {
        self.recv().await.expect("server closed the connection")
    }

    /// Asserts the server closes the connection (any packets before that are returned).
    pub(crate) async fn expect_close(&mut self) -> Vec<Packet> {
        let mut got = Vec::new();
        while let Some(p) = self.recv().await {
            got.push(p);
        }
        got
    }

    /// SERVINFO with an optional password; returns the reply.
    pub(crate) async fn login(&mut self, password: Option<&str>) -> Packet {
        let mut p = Packet::new(PacketType::ServInfo);
        if let Some(pw) = password {
            p.param = Bytes::from(format!("{{\"passwd\":\"{pw}\"}}"));
        }
        self.send(&p).await;
        self.expect().await
    }

    /// Sends a ping with `seqno` and returns the next packet, which must be its echo:
    /// proves everything sent before it was processed (and ignored, if nothing came back).
    pub(crate) async fn ping_barrier(&mut self, seqno: u32) {
        self.send(&Packet::new(PacketType::PingEcho).with_seqno(seqno))
            .await;
        let p = self.expect().await;
        assert_eq!(
            (p.ptype, p.seqno, p.is_reply()),
            (PacketType::PingEcho, seqno, true),
            "{p:?}"
        );
    }
}

pub(crate) fn rpc(url: &str, seqno: u32) -> Packet {
    Packet::new(PacketType::Rpc)
        .with_url(url.to_string())
        .with_seqno(seqno)
}
