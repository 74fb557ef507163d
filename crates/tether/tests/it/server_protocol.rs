//! The server's wire behaviour, checked byte for byte with a raw peer.

use std::time::Duration;

use crate::common::*;
use bytes::Bytes;
use tether::{Server, Status};
use tether_wire::vsoa::{Flags, Packet, PacketType};
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn handshake_reply_carries_info_and_a_four_byte_id() {
    let (_s, l) = start(Server::builder().info(serde_json::json!({"name": "t"}))).await;
    let mut a = Raw::connect(l.local_addr()).await;
    let mut b = Raw::connect(l.local_addr()).await;
    let ra = a.login(None).await;
    let rb = b.login(None).await;
    assert_eq!(ra.ptype, PacketType::ServInfo);
    assert_eq!(ra.flags, Flags::REPLY);
    assert_eq!(ra.status, Status::SUCCESS);
    assert_eq!(&ra.param[..], br#"{"name":"t"}"#);
    assert_eq!(ra.data.len(), 4);
    assert_ne!(ra.data, rb.data, "ids differ");
    // A second SERVINFO is answered again with the same id.
    let again = a.login(None).await;
    assert_eq!(again.data, ra.data);
}

#[tokio::test]
async fn password_is_checked_on_the_first_packet_of_any_type() {
    let (_s, l) = start(Server::builder().password("pw")).await;
    // Right password: login works, extra keys are ignored.
    let mut ok = Raw::connect(l.local_addr()).await;
    let mut hello = Packet::new(PacketType::ServInfo);
    hello.param = Bytes::from_static(br#"{"passwd":"pw","pingInterval":1000}"#);
    ok.send(&hello).await;
    assert_eq!(ok.expect().await.status, Status::SUCCESS);

    // Wrong password: SERVINFO reply with status 1, then close.
    let mut wrong = Raw::connect(l.local_addr()).await;
    let got = {
        wrong.login(Some("nope")).await;
        wrong.expect_close().await
    };
    assert!(got.is_empty());
    // Missing password on an RPC sent first: an RPC reply with status 1, same seqno, close.
    let mut early = Raw::connect(l.local_addr()).await;
    early.send(&rpc("/echo", 42)).await;
    let got = early.expect_close().await;
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].ptype, got[0].status, got[0].seqno, got[0].is_reply()),
        (PacketType::Rpc, Status::PASSWORD, 42, true)
    );
    // The wrong-password reply is exactly the captured vector (docs/protocols/vsoa.md §14, `v14_3`).
    let mut w2 = Raw::connect(l.local_addr()).await;
    w2.send(&Packet::new(PacketType::ServInfo)).await;
    let reply = w2.expect().await;
    assert_eq!(
        &reply.to_bytes().unwrap()[..],
        &[0x29, 0, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    );
    // The good client was never disturbed.
    ok.ping_barrier(1).await;
}

#[tokio::test]
async fn no_login_within_the_handshake_timeout_closes() {
    let (_s, l) = start(Server::builder().handshake_timeout(Duration::from_millis(200))).await;
    let mut idle = Raw::connect(l.local_addr()).await;
    // Served before login on a password-less server (as VSOA), but closed at the deadline.
    idle.ping_barrier(7).await;
    assert!(idle.expect_close().await.is_empty());
    let mut good = Raw::connect(l.local_addr()).await;
    good.login(None).await;
    good.ping_barrier(8).await;
}

#[tokio::test]
async fn byte_by_byte_handshake_works() {
    let (_s, l) = start(Server::builder().password("secret")).await;
    let mut c = Raw::connect(l.local_addr()).await;
    let mut hello = Packet::new(PacketType::ServInfo).with_tunid(0);
    hello.param = Bytes::from_static(br#"{"passwd":"secret"}"#);
    let bytes = hello.to_bytes().unwrap();
    for b in bytes.iter() {
        c.send_bytes(&[*b]).await;
        tokio::task::yield_now().await;
    }
    assert_eq!(c.expect().await.status, Status::SUCCESS);
}

#[tokio::test]
async fn rpc_routing_statuses_and_payloads() {
    let (_s, l) = start(Server::builder()).await;
    let mut c = Raw::connect(l.local_addr()).await;
    c.login(None).await;
    // Echo with JSON param and binary data; reply mirrors seqno, has REPLY, no SET, no URL.
    let mut set = rpc("/echo", 0xdead_beef)
        .with_param(Bytes::from_static(b"{\"hello\":\"world\"}"))
        .with_data(Bytes::from_static(&[0, 1, 2, 255]));
    set.flags = Flags::SET;
    c.send(&set).await;
    let r = c.expect().await;
    assert_eq!(
        (r.seqno, r.flags, r.status),
        (0xdead_beef, Flags::REPLY, Status::SUCCESS)
    );
    assert!(r.url.is_empty());
    assert_eq!(r.param, set.param);
    assert_eq!(r.data, set.data);
    // Application-defined status passes through; unknown URL is 3; bad URLs are 2.
    for (url, want) in [
        (&b"/status/200"[..], 200),
        (b"/nosuch", 3),
        (b"echo", 2),
        (b"", 2),
        (b"/\xff\xfe", 2),
    ] {
        c.send(
            &Packet::new(PacketType::Rpc)
                .with_url(Bytes::copy_from_slice(url))
                .with_seqno(5),
        )
        .await;
        let r = c.expect().await;
        assert_eq!(
            (r.ptype, r.seqno, r.status),
            (PacketType::Rpc, 5, Status(want)),
            "url {url:?}"
        );
    }
}

#[tokio::test]
async fn replies_and_unknown_types_are_ignored() {
    let (_s, l) = start(Server::builder()).await;
    let mut c = Raw::connect(l.local_addr()).await;
    c.login(None).await;
    let mut replied = rpc("/echo", 1);
    replied.flags = Flags::REPLY;
    c.send(&replied).await;
    c.send(&Packet::new(PacketType::Unknown(0x42)).with_seqno(2))
        .await;
    c.send(&Packet::new(PacketType::Noop)).await;
    c.send(&Packet::new(PacketType::Publish).with_url("/x"))
        .await;
    let mut qos = Packet::new(PacketType::QosSetup);
    qos.status = Status(5);
    c.send(&qos).await;
    // Nothing came back for any of them: the next packet is the barrier's echo.
    c.ping_barrier(3).await;
}

#[tokio::test]
async fn bad_magic_closes_that_connection_only() {
    let (_s, l) = start(Server::builder()).await;
    let mut good = Raw::connect(l.local_addr()).await;
    good.login(None).await;
    let mut bad = Raw::connect(l.local_addr()).await;
    bad.login(None).await;
    bad.send_bytes(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!(bad.expect_close().await.is_empty());
    good.ping_barrier(1).await;
}

#[tokio::test]
async fn oversize_declared_length_closes() {
    let (_s, l) = start(Server::builder()).await;
    let mut c = Raw::connect(l.local_addr()).await;
    c.login(None).await;
    // RPC header declaring 262125 data bytes: one over the limit.
    c.send_bytes(&[
        0x29, 1, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 3, 0xff, 0xed,
    ])
    .await;
    assert!(c.expect_close().await.is_empty());
}

#[tokio::test]
async fn truncated_packet_then_close_leaves_the_server_serving() {
    let (_s, l) = start(Server::builder()).await;
    let mut c = Raw::connect(l.local_addr()).await;
    c.login(None).await;
    let bytes = rpc("/echo", 1)
        .with_data(vec![9u8; 1000])
        .to_bytes()
        .unwrap();
    c.send_bytes(&bytes[..500]).await;
    c.stream.shutdown().await.unwrap();
    assert!(c.expect_close().await.is_empty());
    let mut other = Raw::connect(l.local_addr()).await;
    other.login(None).await;
    other.ping_barrier(2).await;
}

#[tokio::test]
async fn pipelined_requests_in_one_write_all_answered() {
    let (_s, l) = start(Server::builder()).await;
    let mut c = Raw::connect(l.local_addr()).await;
    c.login(None).await;
    let mut wire = bytes::BytesMut::new();
    for i in 0..1000u32 {
        rpc("/echo", i)
            .with_param(Bytes::from(format!("{{\"i\":{i}}}")))
            .encode(&mut wire)
            .unwrap();
    }
    c.send_bytes(&wire).await;
    for i in 0..1000u32 {
        let r = c.expect().await;
        // /echo is an inline route: replies come back in request order.
        assert_eq!(r.seqno, i);
        assert_eq!(r.param, Bytes::from(format!("{{\"i\":{i}}}")));
    }
}

#[tokio::test]
async fn packet_at_the_256_kib_limit_echoes() {
    let (_s, l) = start(Server::builder()).await;
    let mut c = Raw::connect(l.local_addr()).await;
    c.login(None).await;
    let data: Vec<u8> = (0..tether_wire::vsoa::MAX_BODY_LEN - 5)
        .map(|i| i as u8)
        .collect();
    let req = rpc("/echo", 9).with_data(data.clone());
    assert_eq!(req.encoded_len(), tether_wire::vsoa::MAX_PACKET_LEN);
    c.send(&req).await;
    let r = c.expect().await;
    assert_eq!((r.seqno, r.status), (9, Status::SUCCESS));
    assert_eq!(&r.data[..], &data[..]);
}

#[tokio::test]
async fn subscribe_forms_and_their_statuses() {
    let (server, l) = start(Server::builder()).await;
    let mut c = Raw::connect(l.local_addr()).await;
    let id = u32::from_be_bytes(c.login(None).await.data[..4].try_into().unwrap());
    let sub = |seq: u32| Packet::new(PacketType::Subscribe).with_seqno(seq);
    let unsub = |seq: u32| Packet::new(PacketType::Unsubscribe).with_seqno(seq);
    let cases: Vec<(Packet, u8)> = vec![
        (sub(1).with_url("/a/"), 0),
        (sub(2).with_param(Bytes::from_static(br#"["/x","/y/"]"#)), 0),
        (sub(3).with_url("nope"), 2),
        (sub(4).with_param(Bytes::from_static(br#"["/ok", 5]"#)), 2),
        (
            sub(5).with_param(Bytes::from_static(br#"["/ok", "bad"]"#)),
            2,
        ),
        (sub(6).with_param(Bytes::from_static(b"not json")), 2),
        (sub(7), 2),
        (unsub(8).with_url("/never"), 0),
    ];
    for (p, want) in cases {
        let seq = p.seqno;
        c.send(&p).await;
        let r = c.expect().await;
        assert_eq!(
            (r.ptype, r.seqno, r.status.0, r.is_reply()),
            (p.ptype, seq, want, true)
        );
    }
    let mut subs = server.clients()[0].subscriptions.clone();
    subs.sort();
    assert_eq!(subs, ["/a/", "/x", "/y/"], "refused lists changed nothing");
    assert!(server.client_is_subscribed(id, "/a/b"));
    // UNSUBSCRIBE with neither URL nor list removes everything (the npm/C behaviour).
    c.send(&unsub(9)).await;
    assert_eq!(c.expect().await.status, Status::SUCCESS);
    assert!(server.clients()[0].subscriptions.is_empty());
    assert!(!server.is_subscribed("/a/b"));
}

#[tokio::test]
async fn ten_thousand_urls_in_one_list() {
    let (server, l) = start(Server::builder()).await;
    let mut c = Raw::connect(l.local_addr()).await;
    c.login(None).await;
    let urls: Vec<String> = (0..10_000).map(|i| format!("/many/{i}")).collect();
    let p = Packet::new(PacketType::Subscribe)
        .with_seqno(1)
        .with_param(serde_json::to_vec(&urls).unwrap());
    c.send(&p).await;
    assert_eq!(c.expect().await.status, Status::SUCCESS);
    assert_eq!(server.clients()[0].subscriptions.len(), 10_000);
    assert!(server.is_subscribed("/many/9999"));
    assert!(!server.is_subscribed("/many/10000"));
}

#[tokio::test]
async fn subscription_limit_gives_status_6() {
    let (server, l) = start(Server::builder().max_subscriptions_per_client(3)).await;
    let mut c = Raw::connect(l.local_addr()).await;
    c.login(None).await;
    let p = Packet::new(PacketType::Subscribe)
        .with_seqno(1)
        .with_param(Bytes::from_static(br#"["/a","/b","/c","/d"]"#));
    c.send(&p).await;
    assert_eq!(c.expect().await.status, Status::NO_MEMORY);
    assert!(server.clients()[0].subscriptions.is_empty());
    c.send(
        &p.clone()
            .with_param(Bytes::from_static(br#"["/a","/b","/c"]"#)),
    )
    .await;
    assert_eq!(c.expect().await.status, Status::SUCCESS);
}

#[tokio::test]
async fn publish_reaches_only_logged_in_authed_matching_clients() {
    let (server, l) = start(Server::builder()).await;
    let mut a = Raw::connect(l.local_addr()).await;
    a.login(None).await;
    let mut b = Raw::connect(l.local_addr()).await;
    let b_id = u32::from_be_bytes(b.login(None).await.data[..4].try_into().unwrap());
    // Subscribed but never logged in: gets nothing.
    let mut anon = Raw::connect(l.local_addr()).await;
    for c in [&mut a, &mut b, &mut anon] {
        c.send(
            &Packet::new(PacketType::Subscribe)
                .with_url("/t/")
                .with_seqno(1),
        )
        .await;
        assert_eq!(c.expect().await.status, Status::SUCCESS);
    }
    assert!(server.set_authed(b_id, false).is_ok());
    let report = server
        .publish(
            "/t/x",
            tether::Payload::raw(&b"{\"v\":1}"[..]).with_data(vec![9, 8]),
        )
        .await
        .unwrap();
    assert_eq!(
        report,
        tether::PublishReport {
            delivered: 1,
            ..Default::default()
        }
    );
    let p = a.expect().await;
    assert_eq!(p.ptype, PacketType::Publish);
    assert_eq!(
        (&p.url[..], &p.param[..], &p.data[..]),
        (&b"/t/x"[..], &b"{\"v\":1}"[..], &[9u8, 8][..])
    );
    assert_eq!((p.seqno, p.flags), (0, Flags::NONE));
    b.ping_barrier(2).await;
    anon.ping_barrier(3).await;
    // Publishing to a URL without a leading slash is an error, not a silent no-op.
    assert!(server
        .publish("nope", tether::Payload::empty())
        .await
        .is_err());
}

#[tokio::test]
async fn priority_orders_publishes_and_is_announced() {
    let (server, l) = start(Server::builder()).await;
    let mut low = Raw::connect(l.local_addr()).await;
    low.login(None).await;
    let mut high = Raw::connect(l.local_addr()).await;
    let high_id = u32::from_be_bytes(high.login(None).await.data[..4].try_into().unwrap());
    assert!(server.set_priority(high_id, 3).await.is_ok());
    let qos = high.expect().await;
    assert_eq!(
        (qos.ptype, qos.flags, qos.status),
        (PacketType::QosSetup, Flags::REPLY, Status(3))
    );
    assert_eq!(
        server
            .clients()
            .iter()
            .find(|c| c.id == high_id)
            .unwrap()
            .priority,
        3
    );
    assert_eq!(
        server.set_priority(999_999, 1).await,
        Err(tether::server::NoSuchClient(999_999))
    );
}

#[tokio::test]
async fn datagrams_reach_the_handler_and_come_back() {
    let (_s, l) = start(Server::builder()).await;
    let mut c = Raw::connect(l.local_addr()).await;
    c.login(None).await;
    let dg = Packet::new(PacketType::Datagram)
        .with_url("/dg")
        .with_param(Bytes::from_static(b"{\"d\":1}"))
        .with_data(Bytes::from_static(b"abc"));
    c.send(&dg).await;
    let back = c.expect().await;
    assert_eq!(
        back, dg,
        "echoed as a server datagram: same url, param, data, seqno 0"
    );
}

/// A raw client logged in and subscribed to `url` that never reads again.
async fn stalled_subscriber(l: &tether::Listening, url: &str) -> Raw {
    let mut stalled = Raw::connect(l.local_addr()).await;
    stalled.login(None).await;
    stalled
        .send(
            &Packet::new(PacketType::Subscribe)
                .with_url(url.to_string())
                .with_seqno(1),
        )
        .await;
    assert_eq!(stalled.expect().await.status, Status::SUCCESS);
    stalled
}

/// Reads `n` publishes whose params are 0, 1, 2, ... in order, no gaps; how many came.
fn numbered(mut sub: tether::Subscription, n: u32) -> tokio::task::JoinHandle<u32> {
    tokio::spawn(async move {
        let mut seen = 0u32;
        while let Some(m) = sub.next().await {
            assert_eq!(
                &m.payload.param[..],
                seen.to_string().as_bytes(),
                "in order, no gaps"
            );
            seen += 1;
            if seen == n {
                break;
            }
        }
        seen
    })
}

#[tokio::test]
async fn a_client_that_never_reads_is_cut_off_and_others_get_everything() {
    let (server, l) = start(
        Server::builder()
            .send_timeout(Duration::from_millis(300))
            .outbound_queue_bytes(64 * 1024),
    )
    .await;
    let stalled = stalled_subscriber(&l, "/flood").await;
    let reader = tether::Client::connect(&url(&l)).await.unwrap();
    let sub = reader.subscribe(["/flood"]).await.unwrap();

    let n = 4000u32;
    let payload = vec![7u8; 4096];
    let consumer = numbered(sub, n);
    let mut cut = 0;
    for i in 0..n {
        let p = tether::Payload::raw(i.to_string()).with_data(payload.clone());
        cut += server.publish("/flood", p).await.unwrap().cut_off;
    }
    assert_eq!(cut, 1, "the stalled client is cut off exactly once");
    assert_eq!(server.traffic().cut_off, 1, "and counted in the metrics");
    assert_eq!(
        tokio::time::timeout(WAIT, consumer).await.unwrap().unwrap(),
        n
    );
    assert_eq!(server.clients().len(), 1, "only the reader remains");
    // The stalled client finds its connection closed once it finally reads.
    drop(stalled);
}

#[tokio::test]
async fn a_cut_made_by_the_writer_is_counted_once_and_what_it_threw_away_is_not_delivered() {
    // A queue so large that publishes never wait: the writer, finding the socket stuck,
    // is what cuts the client (the case `SET /publish` with a large count hit).
    let (server, l) = start(
        Server::builder()
            .send_timeout(Duration::from_millis(200))
            .outbound_queue_bytes(256 << 20),
    )
    .await;
    let stalled = stalled_subscriber(&l, "/flood").await;
    let reader = tether::Client::connect(&url(&l)).await.unwrap();
    let sub = reader.subscribe(["/flood"]).await.unwrap();
    let n = 3000u32;
    let consumer = numbered(sub, n);
    let mut total = tether::PublishReport::default();
    let mut add = |r: tether::PublishReport| {
        total.delivered += r.delivered;
        total.cut_off += r.cut_off;
        total.discarded += r.discarded;
    };
    let payload = vec![7u8; 16 << 10];
    for i in 0..n - 1 {
        let p = tether::Payload::raw(i.to_string()).with_data(payload.clone());
        add(server.publish("/flood", p).await.unwrap());
    }
    // Until the writer has cut it (and the connection is gone from the registry).
    tokio::time::timeout(WAIT, async {
        while server.clients().len() > 1 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the stalled client is cut");
    let last = tether::Payload::raw((n - 1).to_string()).with_data(payload.clone());
    add(server.publish("/flood", last).await.unwrap());
    assert_eq!(total.cut_off, 1, "{total:?}");
    assert_eq!(server.traffic().cut_off, 1);
    assert!(total.discarded > 0, "{total:?}");
    let live = total.delivered - total.discarded;
    // Every publish reached the reader; of the stalled client's, only what its socket took.
    let written_to_stalled = live - n as usize;
    assert!(
        written_to_stalled < (n as usize) / 2,
        "{total:?}: most of the stalled client's queue was thrown away, not delivered"
    );
    assert_eq!(
        tokio::time::timeout(WAIT, consumer).await.unwrap().unwrap(),
        n
    );
    drop(stalled);
}

#[tokio::test]
async fn shutdown_closes_connections_and_stops_accepting() {
    let (_s, l) = start(Server::builder()).await;
    let addr = l.local_addr();
    let mut c = Raw::connect(addr).await;
    c.login(None).await;
    let shut = tokio::spawn(l.shutdown());
    assert!(c.expect_close().await.is_empty());
    tokio::time::timeout(WAIT, shut).await.unwrap().unwrap();
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn dropping_the_listening_handle_leaves_the_server_running() {
    let (_s, l) = start(Server::builder()).await;
    let addr = l.local_addr();
    let mut before = Raw::connect(addr).await;
    before.login(None).await;
    drop(l);
    before.ping_barrier(1).await;
    let mut after = Raw::connect(addr).await;
    after.login(None).await;
    after.ping_barrier(2).await;
}

// On two worker threads, where the task waiting in shutdown can run while a connection's
// task is still dropping its handles.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_address_can_be_bound_again_as_soon_as_shutdown_returns() {
    let server = Server::builder().build();
    let mut l = server.bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr();
    for _ in 0..20 {
        let c = tether::Client::connect(&url(&l)).await.unwrap();
        let kept = server.client(c.id()).unwrap(); // a handle outliving the listener
        l.shutdown().await;
        l = server
            .bind(addr)
            .await
            .expect("TCP and UDP ports are free again");
        drop(kept);
    }
}

/// The send timeout changes at run time, per client (`cli.sendtimeout`) or for the server
/// and, on request, every connected client (`server.sendtimeout(t, sync_to_clis)`).
#[tokio::test]
async fn the_send_timeout_changes_at_run_time_per_client_and_for_all() {
    let (server, l) = start(
        Server::builder()
            .send_timeout(Duration::from_secs(3600))
            .outbound_queue_bytes(64 * 1024),
    )
    .await;
    assert_eq!(server.send_timeout(), Duration::from_secs(3600));
    let stalled = stalled_subscriber(&l, "/flood").await;
    let id = server.clients()[0].id;
    let handle = server.client(id).unwrap();
    assert_eq!(handle.send_timeout(), Duration::from_secs(3600));
    // With an hour to wait, a flood just waits: fill the queue, then one publish blocks.
    let p = || tether::Payload::raw("x").with_data(vec![0u8; 16 << 10]);
    let blocked = loop {
        let publish = server.publish("/flood", p());
        match tokio::time::timeout(Duration::from_millis(300), publish).await {
            Ok(r) => assert_eq!(r.unwrap().cut_off, 0),
            Err(_) => break true,
        }
    };
    assert!(blocked, "a full queue makes the publisher wait");
    assert!(
        server.client(id).is_some(),
        "not cut off with an hour to wait"
    );
    // This client only: 50 ms from now on. The next full-queue wait cuts it off.
    handle.set_send_timeout(Duration::from_millis(50));
    assert_eq!(handle.send_timeout(), Duration::from_millis(50));
    let r = tokio::time::timeout(WAIT, server.publish("/flood", p()))
        .await
        .expect("the wait ends with the new timeout")
        .unwrap();
    assert_eq!((r.delivered, r.cut_off), (0, 1), "{r:?}");
    drop(stalled);
    // The server's: new connections get it; with sync, connected ones too.
    let a = tether::Client::connect(&url(&l)).await.unwrap();
    server.set_send_timeout(Duration::from_millis(700), false);
    let b = tether::Client::connect(&url(&l)).await.unwrap();
    let timeout_of = |c: &tether::Client| server.client(c.id()).unwrap().send_timeout();
    assert_eq!(timeout_of(&a), Duration::from_secs(3600));
    assert_eq!(timeout_of(&b), Duration::from_millis(700));
    server.set_send_timeout(Duration::from_millis(900), true);
    assert_eq!(timeout_of(&a), Duration::from_millis(900));
    assert_eq!(timeout_of(&b), Duration::from_millis(900));
}

/// The password changes at run time (`server.passwd`), tested with the real Python vsoa
/// client: the one logged in before stays, new logins need the new password.
#[tokio::test]
async fn the_password_changes_at_run_time_for_new_logins() {
    let server = Server::builder().password("pw").build();
    install_routes(&server);
    let l = server.bind("127.0.0.1:0").await.unwrap();
    assert!(server.requires_password());
    let mut cmd = tether_testkit::python();
    cmd.arg("client_suite.py")
        .arg(l.local_addr().port().to_string())
        .arg("repassword");
    let s = server.clone();
    tether_testkit::run_script(cmd, "Python vsoa client repassword", || async move {
        s.set_password(Some("new"));
    })
    .await;
    // And off: anyone gets in.
    server.set_password(None);
    assert!(!server.requires_password());
    tether::Client::connect(&url(&l)).await.unwrap();
}
