//! The quick (UDP) channel: publishes and datagrams both ways, and what is refused.

use std::time::Duration;

use crate::common::*;
use bytes::Bytes;
use tether::{Client, Error, Payload, Server};
use tether_wire::vsoa::{Decoder, Packet, PacketType};
use tokio::net::UdpSocket;

#[tokio::test]
async fn quick_publish_reaches_quick_clients_only() {
    let (server, l) = start(Server::builder()).await;
    let quick = Client::connect(&url(&l)).await.unwrap();
    let tcp_only = Client::connect(&url(&l)).quick(false).await.unwrap();
    let mut qs = quick.subscribe(["/q/"]).await.unwrap();
    let _ts = tcp_only.subscribe(["/q/"]).await.unwrap();
    let report = server
        .publish_quick("/q/x", Payload::raw("[1,2]").with_data(vec![7]))
        .unwrap();
    assert_eq!((report.sent, report.dropped), (1, 0));
    let m = tokio::time::timeout(WAIT, qs.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            m.url.as_str(),
            &m.payload.param[..],
            &m.payload.data[..],
            m.quick
        ),
        ("/q/x", &b"[1,2]"[..], &[7u8][..], true)
    );
    assert_eq!(server.quick_stats().sent, 1);
    // Too big for one UDP datagram: refused before anything is sent.
    let big = Payload::empty().with_data(vec![0u8; 65_500]);
    assert!(matches!(
        server.publish_quick("/q/x", big.clone()),
        Err(Error::Encode(_))
    ));
    assert!(matches!(
        quick.datagram_quick("/d", big).await,
        Err(Error::Encode(_))
    ));
    assert!(matches!(
        tcp_only.datagram_quick("/d", Payload::empty()).await,
        Err(Error::NoQuickChannel)
    ));
}

#[tokio::test]
async fn quick_datagrams_both_ways() {
    let (server, l) = start(Server::builder()).await;
    let c = Client::connect(&url(&l)).await.unwrap();
    let mut dgs = c.datagrams().unwrap();
    c.datagram_quick("/dq", Payload::raw("{\"d\":2}").with_data(b"xy".to_vec()))
        .await
        .unwrap();
    let m = tokio::time::timeout(WAIT, dgs.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (
            m.url.as_str(),
            &m.payload.param[..],
            &m.payload.data[..],
            m.quick
        ),
        ("/dq", &b"{\"d\":2}"[..], &b"xy"[..], true)
    );
    let stats = server.quick_stats();
    assert_eq!((stats.received, stats.sent, stats.rejected), (1, 1, 0));
}

/// A raw client whose advertised UDP socket the test controls.
async fn raw_quick_client(l: &tether::Listening) -> (Raw, UdpSocket, u32) {
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    udp.connect(l.local_addr()).await.unwrap();
    let mut raw = Raw::connect(l.local_addr()).await;
    raw.send(&Packet::new(PacketType::ServInfo).with_tunid(udp.local_addr().unwrap().port()))
        .await;
    let reply = raw.expect().await;
    assert_eq!(
        reply.data.len(),
        4,
        "same port for TCP and UDP: the 4-byte form"
    );
    let id = u32::from_be_bytes(reply.data[..4].try_into().unwrap());
    (raw, udp, id)
}

async fn recv_packet(udp: &UdpSocket) -> Packet {
    let mut buf = vec![0u8; 65_536];
    let n = tokio::time::timeout(WAIT, udp.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    Decoder::new()
        .decode_datagram(Bytes::copy_from_slice(&buf[..n]))
        .unwrap()
}

#[tokio::test]
async fn quick_datagrams_need_the_right_id_and_the_advertised_address() {
    let (server, l) = start(Server::builder()).await;
    let (_raw, udp, id) = raw_quick_client(&l).await;
    let dgram = |seqno: u32| {
        Packet::new(PacketType::Datagram)
            .with_url("/dq")
            .with_seqno(seqno)
            .to_bytes()
            .unwrap()
    };
    // Wrong id from the right socket.
    udp.send(&dgram(id + 1000)).await.unwrap();
    // Right id from a foreign port (the Python server would accept this one).
    let foreign = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    foreign.send_to(&dgram(id), l.local_addr()).await.unwrap();
    // Truncated, garbage, oversize, and a type that is not accepted on the quick channel.
    let good = dgram(id);
    udp.send(&good[..good.len() - 4]).await.unwrap();
    udp.send(b"not vsoa at all").await.unwrap();
    // Oversize: the header declares 300 000 data bytes, beyond any VSOA packet.
    let mut oversize = dgram(id).to_vec();
    oversize[16..20].copy_from_slice(&300_000u32.to_be_bytes());
    udp.send(&oversize).await.unwrap();
    udp.send(
        &Packet::new(PacketType::Rpc)
            .with_url("/echo")
            .with_seqno(id)
            .to_bytes()
            .unwrap(),
    )
    .await
    .unwrap();
    // The one good datagram comes back (the test server echoes on the same channel); the
    // receive loop is sequential, so everything sent before it has been judged by then.
    udp.send(&good).await.unwrap();
    let echo = recv_packet(&udp).await;
    assert_eq!(
        (echo.ptype, &echo.url[..], echo.seqno),
        (PacketType::Datagram, &b"/dq"[..], 0)
    );
    let stats = server.quick_stats();
    assert_eq!((stats.received, stats.rejected), (1, 6), "{stats:?}");
}

#[tokio::test]
async fn no_quick_packets_to_a_client_that_advertised_no_port() {
    let (server, l) = start(Server::builder()).await;
    let mut raw = Raw::connect(l.local_addr()).await;
    raw.login(None).await; // no TUNNEL flag
    raw.send(
        &Packet::new(PacketType::Subscribe)
            .with_url("/q")
            .with_seqno(1),
    )
    .await;
    raw.expect().await;
    assert_eq!(
        server.publish_quick("/q", Payload::empty()).unwrap().sent,
        0
    );
    assert!(matches!(
        server
            .client(server.clients()[0].id)
            .unwrap()
            .datagram_quick("/d", Payload::empty()),
        Err(Error::NoQuickChannel)
    ));
}

#[tokio::test]
async fn a_server_without_quick_channel_binds_tcp_only() {
    let server = Server::builder().quick(false).build();
    let l = server.bind("127.0.0.1:0").await.unwrap();
    // The UDP port is free, proving nothing was bound there.
    UdpSocket::bind(l.local_addr()).await.unwrap();
    let c = Client::connect(&url(&l)).await.unwrap();
    c.ping(Duration::from_secs(5)).await.unwrap();
}
