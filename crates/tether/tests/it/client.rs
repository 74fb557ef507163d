//! The Rust client against our server (and against deliberately broken fake servers).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::common::*;
use bytes::Bytes;
use serde_json::json;
use tether::{
    Client, ClientEvent, Error, Mode, Payload, Reply, Request, Server, Status, WorkQueue,
};
use tether_wire::vsoa::{Decoder, Flags, Packet, PacketType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::test]
async fn call_get_set_json_raw_and_data() {
    let (_s, l) = start(Server::builder()).await;
    let c = Client::connect(&url(&l)).await.unwrap();
    assert_eq!(c.server_info(), &json!({"name": "tether"}));
    let r = c
        .call("/echo")
        .json(&json!({"a": [1, 2]}))
        .unwrap()
        .data(vec![0u8, 255])
        .await
        .unwrap();
    assert_eq!(r.status, Status::SUCCESS);
    assert_eq!(r.payload.param_value(), Some(json!({"a": [1, 2]})));
    assert_eq!(&r.payload.data[..], &[0, 255]);
    // A param that is not JSON passes byte for byte.
    let raw = Bytes::from_static(b"\x00not json\xff");
    let r = c.call("/echo").set().param(raw.clone()).await.unwrap();
    assert_eq!(r.payload.param, raw);
    let r = c.call("/status/201").await.unwrap();
    assert_eq!(r.status, Status(201));
    assert!(r.clone().into_ok().is_err());
    assert_eq!(c.call("/nosuch").await.unwrap().status, Status::INVALID_URL);
    assert!(matches!(c.call("bad").await, Err(Error::Url(_))));
    assert!(c.ping(WAIT).await.is_ok());
}

#[tokio::test]
async fn method_reaches_the_handler() {
    let (server, l) = start(Server::builder()).await;
    server.route("/method", |req: Request| async move {
        Reply::json(&format!("{:?}", req.method)).unwrap()
    });
    let c = Client::connect(&url(&l)).await.unwrap();
    let get = c.call("/method").await.unwrap().payload.param_value();
    let set = c.call("/method").set().await.unwrap().payload.param_value();
    assert_eq!((get, set), (Some(json!("Get")), Some(json!("Set"))));
}

#[tokio::test]
async fn hundreds_of_calls_in_flight() {
    let (server, l) = start(Server::builder()).await;
    server.route("/slow-echo", |req: Request| async move {
        tokio::task::yield_now().await;
        Reply::ok(req.payload)
    });
    let c = Client::connect(&url(&l)).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..500u32 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let r = c.call("/slow-echo").json(&i).unwrap().await.unwrap();
            assert_eq!(r.payload.param_value(), Some(json!(i)));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[tokio::test]
async fn connect_errors_are_distinct() {
    // Nothing listening.
    let free = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = free.local_addr().unwrap();
    drop(free);
    let e = Client::connect(&format!("vsoa://{addr}"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Unreachable { .. }), "{e}");
    assert!(e
        .to_string()
        .starts_with(&format!("cannot reach vsoa://{addr}")));

    // Wrong and missing password.
    let (_s, l) = start(Server::builder().password("pw")).await;
    let e = Client::connect(&url(&l)).password("no").await.unwrap_err();
    assert_eq!(e.to_string(), format!("wrong password for {}", url(&l)));
    assert!(matches!(
        Client::connect(&url(&l)).await,
        Err(Error::WrongPassword { .. })
    ));
    assert!(Client::connect(&url(&l)).password("pw").await.is_ok());

    // A server that accepts and never answers.
    let mute = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mute_addr = mute.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let (s, _) = mute.accept().await.unwrap();
        tokio::time::sleep(WAIT).await;
        drop(s);
    });
    let e = Client::connect(&format!("vsoa://{mute_addr}"))
        .timeout(Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::ConnectTimeout { .. }), "{e}");
    hold.abort();

    // A server that answers something else.
    let http = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_addr = http.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = http.accept().await.unwrap();
        let mut buf = [0u8; 64];
        let _ = s.read(&mut buf).await;
        let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n").await;
    });
    let e = Client::connect(&format!("vsoa://{http_addr}"))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Malformed { .. }), "{e}");
    assert!(matches!(
        Client::connect("vsoa://bad host:1").await,
        Err(Error::Address(_))
    ));
}

#[tokio::test]
async fn packets_coalesced_with_the_handshake_reply_are_kept() {
    // Python drops them (docs/protocols/vsoa.md §16.4); we must not.
    let fake = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = fake.local_addr().unwrap();
    tokio::spawn(async move {
        let (mut s, _) = fake.accept().await.unwrap();
        let mut buf = bytes::BytesMut::new();
        let mut dec = Decoder::new();
        let mut replies = bytes::BytesMut::new();
        loop {
            while let Some(p) = dec.decode(&mut buf).unwrap() {
                match p.ptype {
                    PacketType::ServInfo => {
                        // Reply, with a 6-byte id (quick port form), and a QOSSETUP in the same write.
                        Packet::reply_to(&p, Status::SUCCESS)
                            .with_param(Bytes::from_static(b"\"fake\""))
                            .with_data(Bytes::from_static(&[0, 0, 0, 77, 0x12, 0x34]))
                            .encode(&mut replies)
                            .unwrap();
                        let mut qos = Packet::new(PacketType::QosSetup);
                        qos.flags = Flags::REPLY;
                        qos.status = Status(3);
                        qos.encode(&mut replies).unwrap();
                    }
                    _ => Packet::reply_to(&p, Status::SUCCESS)
                        .encode(&mut replies)
                        .unwrap(),
                }
                s.write_all(&replies.split()).await.unwrap();
            }
            if s.read_buf(&mut buf).await.unwrap() == 0 {
                return;
            }
        }
    });
    let c = Client::connect(&format!("vsoa://{addr}")).await.unwrap();
    assert_eq!((c.id(), c.server_info()), (77, &json!("fake")));
    c.ping(WAIT).await.unwrap();
    assert_eq!(c.priority(), 3);
}

#[tokio::test]
async fn call_timeout_is_an_error_and_late_replies_are_ignored() {
    let (server, l) = start(Server::builder()).await;
    server.route("/late", |_req: Request| async move {
        tokio::time::sleep(Duration::from_millis(400)).await;
        Reply::empty()
    });
    let c = Client::connect(&url(&l)).await.unwrap();
    let e = c
        .call("/late")
        .timeout(Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }));
    assert!(e.to_string().contains("RPC /late"), "{e}");
    // The late reply arrives while this call is pending and must not be mistaken for it.
    let r = c.call("/echo").json(&"after").unwrap().await.unwrap();
    assert_eq!(r.payload.param_value(), Some(json!("after")));
    let r = c.call("/late").await.unwrap();
    assert_eq!(r.status, Status::SUCCESS);
}

#[tokio::test]
async fn a_dropped_connection_fails_pending_calls_at_once_and_ends_streams() {
    let (server, l) = start(Server::builder()).await;
    server.route("/never", |_req: Request| async move {
        std::future::pending::<()>().await;
        Reply::empty()
    });
    let c = Client::connect(&url(&l)).await.unwrap();
    let mut sub = c.subscribe(["/x"]).await.unwrap();
    let pending = {
        let c = c.clone();
        tokio::spawn(async move { c.call("/never").timeout(Duration::from_secs(3600)).await })
    };
    // Wait until the call is on the server, then cut the client from the server side.
    let handle = loop {
        if let Some(info) = server.clients().first() {
            if let Some(h) = server.client(info.id) {
                break h;
            }
        }
        tokio::task::yield_now().await;
    };
    c.ping(WAIT).await.unwrap(); // the call was sent before this ping
    handle.close();
    let res = tokio::time::timeout(WAIT, pending).await.unwrap().unwrap();
    assert!(matches!(res, Err(Error::Closed { .. })), "{res:?}");
    assert!(tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap()
        .is_none());
    assert!(c.is_closed());
    assert!(matches!(c.call("/echo").await, Err(Error::Closed { .. })));
}

use tether_wire::url::{matrix_row_urls, MATCH_MATRIX as MATRIX, MATCH_MATRIX_URLS as MATRIX_URLS};

#[tokio::test]
async fn subscription_matrix_end_to_end() {
    let (server, l) = start(Server::builder()).await;
    let mut subs = Vec::new();
    for (pattern, _) in MATRIX {
        let c = Client::connect(&url(&l)).await.unwrap();
        // Two subscriptions on one connection: the pattern and an end marker.
        let s = c.subscribe([pattern]).await.unwrap();
        let end = c.subscribe(["/zz-end"]).await.unwrap();
        subs.push((c, s, end));
    }
    for u in MATRIX_URLS {
        server
            .publish(u, Payload::raw(u.to_string()))
            .await
            .unwrap();
    }
    for (_c, s, end) in &mut subs {
        // Publish order is preserved per client, so after the marker everything is in.
        server.publish("/zz-end", Payload::empty()).await.unwrap();
        end.next().await.unwrap();
        let _ = s;
    }
    for ((pattern, row), (_c, s, _)) in MATRIX.iter().zip(subs.iter_mut()) {
        let want = matrix_row_urls(row);
        let mut got = Vec::new();
        while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(1), s.next()).await {
            got.push(m.url);
        }
        // '/' also matches the end marker; drop it from that row.
        got.retain(|u| u != "/zz-end");
        assert_eq!(got, want, "subscription {pattern}");
    }
}

#[tokio::test]
async fn publishes_arrive_in_order_without_loss_and_unsubscribe_stops_them() {
    let (server, l) = start(Server::builder()).await;
    let c = Client::connect(&url(&l)).await.unwrap();
    let mut sub = c.subscribe(["/seq"]).await.unwrap();
    let mut marker = c.subscribe(["/marker"]).await.unwrap();
    let n = 10_000u32;
    let publisher = {
        let server = server.clone();
        tokio::spawn(async move {
            for i in 0..n {
                let r = server
                    .publish("/seq", Payload::json(&i).unwrap())
                    .await
                    .unwrap();
                assert_eq!(r.delivered, 1);
            }
        })
    };
    for i in 0..n {
        let m = tokio::time::timeout(WAIT, sub.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.payload.param_value(), Some(json!(i)));
    }
    publisher.await.unwrap();
    sub.unsubscribe().await.unwrap();
    assert!(!server.is_subscribed("/seq"));
    assert_eq!(
        server
            .publish("/seq", Payload::empty())
            .await
            .unwrap()
            .delivered,
        0
    );
    server.publish("/marker", Payload::empty()).await.unwrap();
    assert_eq!(marker.next().await.unwrap().url, "/marker");
}

#[tokio::test]
async fn overlapping_subscriptions_share_patterns_safely() {
    let (server, l) = start(Server::builder()).await;
    let c = Client::connect(&url(&l)).await.unwrap();
    let a = c.subscribe(["/p/"]).await.unwrap();
    let mut b = c.subscribe(["/p/", "/q"]).await.unwrap();
    drop(a); // "/p/" is still used by b: it must stay subscribed on the server
    c.ping(WAIT).await.unwrap();
    assert!(server.is_subscribed("/p/x"));
    server.publish("/p/x", Payload::empty()).await.unwrap();
    assert_eq!(b.next().await.unwrap().url, "/p/x");
}

#[tokio::test]
async fn datagrams_both_ways() {
    let (_s, l) = start(Server::builder()).await;
    let c = Client::connect(&url(&l)).await.unwrap();
    let mut dgs = c.datagrams().unwrap();
    assert!(c.datagrams().is_none(), "taken once");
    c.datagram("/dg", Payload::raw("\"hi\"").with_data(vec![1, 2, 3]))
        .await
        .unwrap();
    let m = tokio::time::timeout(WAIT, dgs.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(m.url, "/dg");
    assert_eq!(&m.payload.param[..], b"\"hi\"");
    assert_eq!(&m.payload.data[..], &[1, 2, 3]);
    assert!(!m.quick);
}

#[tokio::test]
async fn hooks_see_clients_and_subscriptions() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let tx2 = tx.clone();
    let (_s, l) = start(
        Server::builder()
            .on_client(move |ev| {
                let _ = tx.send(match ev {
                    ClientEvent::Connected(c) => format!("connected {}", c.id()),
                    ClientEvent::Disconnected(c, _) => format!("disconnected {}", c.id()),
                });
            })
            .on_subscription(move |c, urls, on| {
                let mut urls = urls.to_vec();
                urls.sort();
                let _ = tx2.send(format!(
                    "{} {} {urls:?}",
                    c.id(),
                    if on { "sub" } else { "unsub" }
                ));
            }),
    )
    .await;
    let c = Client::connect(&url(&l)).await.unwrap();
    let id = c.id();
    let s = c.subscribe(["/a", "/b/"]).await.unwrap();
    s.unsubscribe().await.unwrap();
    c.close().await;
    for want in [
        format!("connected {id}"),
        format!("{id} sub [\"/a\", \"/b/\"]"),
        format!("{id} unsub [\"/a\", \"/b/\"]"),
        format!("disconnected {id}"),
    ] {
        let got = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, want);
    }
}

#[tokio::test]
async fn execution_modes() {
    let (server, l) = start(Server::builder()).await;
    // Work queue: never two at once, across routes and clients.
    let q = WorkQueue::new("serial");
    let running = Arc::new(AtomicUsize::new(0));
    let max_seen = Arc::new(AtomicUsize::new(0));
    for route in ["/q/one", "/q/two"] {
        let (running, max_seen) = (running.clone(), max_seen.clone());
        server.route_with(route, Mode::Queue(q.clone()), move |_req: Request| {
            let (running, max_seen) = (running.clone(), max_seen.clone());
            async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                max_seen.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(2)).await;
                running.fetch_sub(1, Ordering::SeqCst);
                Reply::empty()
            }
        });
    }
    // Concurrent (default): a slow call does not hold up a fast one on the same connection.
    let gate = Arc::new(tokio::sync::Notify::new());
    let g = gate.clone();
    server.route("/blocked", move |_req: Request| {
        let g = g.clone();
        async move {
            g.notified().await;
            Reply::empty()
        }
    });
    let c1 = Client::connect(&url(&l)).await.unwrap();
    let c2 = Client::connect(&url(&l)).await.unwrap();
    let slow = {
        let c1 = c1.clone();
        tokio::spawn(async move { c1.call("/blocked").await })
    };
    c1.call("/echo").await.unwrap(); // returns while /blocked is still waiting
    gate.notify_one();
    slow.await.unwrap().unwrap();

    let mut calls = Vec::new();
    for i in 0..40 {
        let c = if i % 2 == 0 { c1.clone() } else { c2.clone() };
        let route = if i % 3 == 0 { "/q/one" } else { "/q/two" };
        calls.push(tokio::spawn(
            async move { c.call(route).await.unwrap().status },
        ));
    }
    for t in calls {
        assert_eq!(t.await.unwrap(), Status::SUCCESS);
    }
    assert_eq!(
        max_seen.load(Ordering::SeqCst),
        1,
        "work queue ran jobs in parallel"
    );
}

#[tokio::test]
async fn handler_panic_and_oversize_reply_get_statuses() {
    let (server, l) = start(Server::builder()).await;
    server.route("/panic", |_req: Request| async move { panic!("boom") });
    server.route("/huge", |_req: Request| async move {
        Reply::ok(Payload::empty().with_data(vec![0u8; 300 * 1024]))
    });
    let c = Client::connect(&url(&l)).await.unwrap();
    let r = c.call("/panic").await.unwrap();
    assert_eq!(r.status, Status::NO_RESPONDING);
    assert_eq!(c.call("/huge").await.unwrap().status, Status::NO_MEMORY);
    assert_eq!(
        c.call("/echo").await.unwrap().status,
        Status::SUCCESS,
        "connection survives"
    );
}

#[tokio::test]
async fn an_unread_subscription_delays_calls_at_most_one_stall_and_reports_losses() {
    let (server, l) = start(Server::builder()).await;
    let c = Client::connect(&url(&l))
        .buffer(4)
        .stall_timeout(Duration::from_millis(50))
        .await
        .unwrap();
    let mut sub = c.subscribe(["/burst"]).await.unwrap();
    for i in 0..10u32 {
        server
            .publish("/burst", Payload::json(&i).unwrap())
            .await
            .unwrap();
    }
    // The reply travels behind the ten publishes: it waits for one stall, not for the reader.
    let r = c
        .call("/echo")
        .json(&"through")
        .unwrap()
        .timeout(WAIT)
        .await
        .unwrap();
    assert_eq!(r.payload.param_value(), Some(json!("through")));
    for i in 0..4u32 {
        let m = sub.next().await.unwrap();
        assert_eq!(
            (m.payload.param_value(), m.lost_before),
            (Some(json!(i)), 0)
        );
    }
    assert_eq!(sub.lost(), 6);
    server
        .publish("/burst", Payload::json(&10).unwrap())
        .await
        .unwrap();
    let m = sub.next().await.unwrap();
    assert_eq!(
        (m.payload.param_value(), m.lost_before),
        (Some(json!(10)), 6),
        "the gap is reported in-band"
    );
}

#[tokio::test]
async fn a_slower_consumer_gets_backpressure_not_loss() {
    let (server, l) = start(Server::builder()).await;
    let c = Client::connect(&url(&l)).buffer(8).await.unwrap();
    let mut sub = c.subscribe(["/fast"]).await.unwrap();
    let n = 20_000u32;
    let publisher = {
        let server = server.clone();
        tokio::spawn(async move {
            for i in 0..n {
                let r = server
                    .publish("/fast", Payload::json(&i).unwrap())
                    .await
                    .unwrap();
                assert_eq!(r.cut_off, 0);
            }
        })
    };
    for i in 0..n {
        let m = tokio::time::timeout(WAIT, sub.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            (m.payload.param_value(), m.lost_before),
            (Some(json!(i)), 0)
        );
        if i % 64 == 0 {
            tokio::task::yield_now().await; // slower than the reader, but alive
        }
    }
    publisher.await.unwrap();
    assert_eq!(sub.lost(), 0);
}

#[tokio::test]
async fn streams_taken_after_the_connection_died_end_at_once() {
    let (server, l) = start(Server::builder()).await;
    let c = Client::connect(&url(&l)).await.unwrap();
    server.client(c.id()).unwrap().close();
    let e = loop {
        match c.ping(WAIT).await {
            Err(e) => break e,
            Ok(_) => tokio::task::yield_now().await,
        }
    };
    assert!(matches!(e, Error::Closed { .. }), "{e}");
    let mut dgs = c.datagrams().unwrap();
    assert!(tokio::time::timeout(WAIT, dgs.next())
        .await
        .unwrap()
        .is_none());
    assert!(matches!(
        c.subscribe(["/x"]).await,
        Err(Error::Closed { .. })
    ));
}

#[tokio::test]
async fn publish_checks_size_even_without_subscribers() {
    let (server, _l) = start(Server::builder()).await;
    let huge = Payload::empty().with_data(vec![0u8; tether_wire::vsoa::MAX_BODY_LEN]);
    assert!(matches!(
        server.publish("/x", huge).await,
        Err(Error::Encode(_))
    ));
}

#[tokio::test]
async fn local_subscribers_get_publishes_and_a_slow_one_is_cut_off() {
    let server = tether::Server::builder().build();
    let fast = server.local_subscriber(100);
    assert!(fast.subscribe("/a/").unwrap());
    assert!(!fast.subscribe("/a/").unwrap(), "already there");
    assert!(fast.subscribe("no slash").is_err());
    let r = server
        .publish("/a/b", tether::Payload::json(&1).unwrap())
        .await
        .unwrap();
    assert_eq!((r.delivered, r.cut_off), (1, 0));
    let m = fast.next().await.unwrap();
    assert_eq!((&*m.url, m.quick), ("/a/b", false));
    assert_eq!(m.payload.param_value(), Some(serde_json::json!(1)));
    // Not matching: nothing.
    let r = server
        .publish("/b", tether::Payload::empty())
        .await
        .unwrap();
    assert_eq!(r.delivered, 0);
    // A subscriber that does not read: its queue of 2 fills, the third publish cuts it off.
    let slow = server.local_subscriber(2);
    slow.subscribe("/s").unwrap();
    for _ in 0..2 {
        assert_eq!(
            server
                .publish("/s", tether::Payload::empty())
                .await
                .unwrap()
                .delivered,
            1
        );
    }
    let r = server
        .publish("/s", tether::Payload::empty())
        .await
        .unwrap();
    assert_eq!((r.delivered, r.cut_off), (0, 1));
    assert!(slow.is_cut_off());
    assert!(slow.next().await.is_some());
    assert!(slow.next().await.is_some());
    assert!(
        slow.next().await.is_none(),
        "the stream ends after what was queued"
    );
    assert!(slow.subscribe("/t").is_err());
    // Quick publishes to a full queue are skipped and counted, without a cut-off.
    let q = server.local_subscriber(1);
    q.subscribe("/q").unwrap();
    let r1 = server
        .publish_quick("/q", tether::Payload::empty())
        .unwrap();
    let r2 = server
        .publish_quick("/q", tether::Payload::empty())
        .unwrap();
    assert_eq!((r1.sent, r2.sent, r2.dropped), (1, 0, 1));
    assert!(!q.is_cut_off());
    assert!(q.next().await.unwrap().quick);
    // An observer is not counted, and skips instead of being cut off.
    let tap = server.observer(1);
    tap.subscribe("/").unwrap();
    tap.subscribe("/o/").unwrap();
    for _ in 0..3 {
        let r = server
            .publish("/o/x", tether::Payload::empty())
            .await
            .unwrap();
        assert_eq!((r.delivered, r.cut_off), (0, 0));
    }
    assert_eq!(tap.skipped(), 2);
    assert!(!tap.is_cut_off());
    assert_eq!(&*tap.next().await.unwrap().url, "/o/x");
    // Unsubscribe and drop.
    assert!(fast.unsubscribe("/a/"));
    assert_eq!(
        server
            .publish("/a/b", tether::Payload::empty())
            .await
            .unwrap()
            .delivered,
        0
    );
    drop((fast, q));
}

#[tokio::test]
async fn the_server_counts_its_traffic() {
    let server = tether::Server::builder().build();
    server.route("/echo", |req: tether::Request| async move {
        tether::Reply::ok(req.payload)
    });
    let l = server.bind("127.0.0.1:0").await.unwrap();
    assert_eq!(server.traffic(), tether::Traffic::default());
    let c = tether::Client::connect(&format!("vsoa://{}", l.local_addr()))
        .await
        .unwrap();
    for _ in 0..10 {
        c.call("/echo").param(vec![b'x'; 100]).await.unwrap();
    }
    let t = server.traffic();
    // The handshake plus 10 calls in, and their replies out.
    assert!(t.packets_in >= 11 && t.packets_out >= 11, "{t:?}");
    assert!(t.bytes_in >= 10 * 100 && t.bytes_out >= 10 * 100, "{t:?}");
}

/// A server that logs clients in, answers the first SUBSCRIBE and then nothing; reports on
/// `ended` how the connection ended (`Err` for a reset).
async fn mute_after_one_subscribe() -> (
    std::net::SocketAddr,
    tokio::sync::oneshot::Receiver<std::io::Result<usize>>,
) {
    let fake = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = fake.local_addr().unwrap();
    let (tx, ended) = tokio::sync::oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = fake.accept().await.unwrap();
        let mut buf = bytes::BytesMut::new();
        let mut dec = Decoder::new();
        let mut subscribes = 0;
        loop {
            while let Some(p) = dec.decode(&mut buf).unwrap() {
                let reply = match p.ptype {
                    PacketType::ServInfo => Packet::reply_to(&p, Status::SUCCESS)
                        .with_param(Bytes::from_static(b"\"mute\""))
                        .with_data(Bytes::from_static(&[0, 0, 0, 9])),
                    PacketType::Subscribe if subscribes == 0 => {
                        subscribes += 1;
                        Packet::reply_to(&p, Status::SUCCESS)
                    }
                    _ => continue,
                };
                s.write_all(&reply.to_bytes().unwrap()).await.unwrap();
            }
            match s.read_buf(&mut buf).await {
                Ok(0) => return drop(tx.send(Ok(0))),
                Ok(_) => {}
                Err(e) => return drop(tx.send(Err(e))),
            }
        }
    });
    (addr, ended)
}

/// VSOA's `subscribe(..., timeout)` and `unsubscribe(..., timeout)`: a server that does not
/// answer makes them fail with `Error::Timeout` after the time asked, not the default.
#[tokio::test]
async fn subscribe_and_unsubscribe_give_up_after_their_timeout() {
    let (addr, _ended) = mute_after_one_subscribe().await;
    let c = Client::connect(&format!("vsoa://{addr}")).await.unwrap();
    let sub = c
        .subscribe_with_timeout(["/a"], Duration::from_millis(200))
        .await
        .expect("the first subscribe is answered");
    let e = c
        .subscribe_with_timeout(["/b"], Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
    assert!(e.to_string().contains("subscribe"), "{e}");
    let e = sub
        .unsubscribe_with_timeout(Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
}

/// VSOA's `cli.linger`: with a zero linger, closing resets the connection (the peer sees
/// a reset, nothing waits in TIME_WAIT); by default, and with a linger time, it is an
/// orderly close.
#[tokio::test]
async fn linger_zero_resets_on_close_and_otherwise_the_close_is_orderly() {
    let cases = [
        (Some(Duration::ZERO), true),
        (None, false),
        (Some(Duration::from_millis(300)), false),
    ];
    for (linger, resets) in cases {
        let (addr, ended) = mute_after_one_subscribe().await;
        let c = Client::connect(&format!("vsoa://{addr}"))
            .linger(linger)
            .await
            .unwrap();
        c.close().await;
        drop(c);
        let how = tokio::time::timeout(WAIT, ended).await.unwrap().unwrap();
        match how {
            Err(e) => assert!(resets, "reset without linger: {e}"),
            Ok(0) => assert!(!resets, "an orderly close with linger 0"),
            Ok(n) => panic!("read {n}"),
        }
    }
}

/// A publish log records every publish in place: the newest few (newest first) and a count
/// per URL since the previous take, bounded in URLs; publish reports do not count it.
#[tokio::test]
async fn a_publish_log_keeps_the_newest_and_counts_per_url() {
    let server = Server::builder().build();
    let log = server.publish_log(2);
    for (url, n) in [("/a", 3), ("/b", 1), ("/a/x", 2)] {
        for i in 0..n {
            let r = server
                .publish(url, tether::Payload::json(&i).unwrap())
                .await
                .unwrap();
            assert_eq!(r.delivered, 0, "the log is not a subscriber");
        }
    }
    let seen = log.take();
    assert_eq!(seen.total, 6);
    let recent: Vec<(&str, Option<serde_json::Value>)> = seen
        .recent
        .iter()
        .map(|(p, _)| (&*p.url, p.payload.param_value()))
        .collect();
    assert_eq!(recent, [("/a/x", Some(json!(1))), ("/a/x", Some(json!(0)))]);
    let mut per_url: Vec<(String, u64)> = seen
        .per_url
        .iter()
        .map(|(u, n)| (u.to_string(), *n))
        .collect();
    per_url.sort();
    assert_eq!(
        per_url,
        [("/a".into(), 3), ("/a/x".into(), 2), ("/b".into(), 1)]
    );
    // Counts start again; the newest stay.
    let again = log.take();
    assert_eq!(
        (again.total, again.per_url.len(), again.recent.len()),
        (0, 0, 2)
    );
    // A publisher inventing URLs: the first 1 000 are counted one by one, the rest together.
    for i in 0..1005 {
        server
            .publish(&format!("/u/{i}"), tether::Payload::empty())
            .await
            .unwrap();
    }
    let many = log.take();
    assert_eq!(
        (many.per_url.len(), many.other_urls, many.total),
        (1000, 5, 1005)
    );
    drop(log);
    server
        .publish("/a", tether::Payload::empty())
        .await
        .unwrap();
}

/// A plain client reconnects with the same URL and options (VSOA's `connect` again after a
/// disconnect), here through a server restart on the same port, password included.
#[tokio::test]
async fn a_client_reconnects_with_its_url_and_options() {
    let server = Server::builder().password("pw").build();
    install_routes(&server);
    let l = server.bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr();
    let c = Client::connect(&format!("vsoa://{addr}"))
        .password("pw")
        .await
        .unwrap();
    l.shutdown().await;
    for client in server.clients() {
        server.client(client.id).unwrap().close();
    }
    tokio::time::timeout(WAIT, async {
        while !c.is_closed() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the client sees its server go");
    assert!(c.reconnect().await.is_err(), "nobody listens yet");
    let again = Server::builder().password("pw").build();
    install_routes(&again);
    let _l = again.bind(addr).await.unwrap();
    let c2 = c.reconnect().await.unwrap();
    let r = c2.call("/echo").json(&"back").unwrap().await.unwrap();
    assert_eq!(r.payload.param_value(), Some(json!("back")));
    assert_ne!(c2.id(), 0);
}
