//! Our client against the real Python vsoa 1.0.4 server (interop/py/server.py).

use std::time::Duration;

use crate::common::*;
use bytes::Bytes;
use serde_json::json;
use tether::{Client, Error, Payload, Status};

async fn connect(port: u16) -> Client {
    Client::connect(&format!("vsoa://127.0.0.1:{port}"))
        .password("pypw")
        .await
        .expect("connect to the Python server")
}

#[tokio::test]
async fn login_right_wrong_and_missing_password() {
    let py = python_server("pypw").await;
    let c = connect(py.port).await;
    assert_eq!(c.server_info(), &json!({"name": "pyserver"}));
    let url = format!("vsoa://127.0.0.1:{}", py.port);
    let e = Client::connect(&url).password("nope").await.unwrap_err();
    assert!(matches!(e, Error::WrongPassword { .. }), "{e}");
    assert_eq!(e.to_string(), format!("wrong password for {url}"));
    assert!(matches!(
        Client::connect(&url).await,
        Err(Error::WrongPassword { .. })
    ));
}

#[tokio::test]
async fn rpc_get_set_binary_raw_limits_and_ping() {
    let py = python_server("pypw").await;
    let c = connect(py.port).await;
    let r = c
        .call("/echo")
        .json(&json!({"hello": "world"}))
        .unwrap()
        .data(vec![0u8, 1, 255])
        .await
        .unwrap();
    assert_eq!(r.status, Status::SUCCESS);
    assert_eq!(r.payload.param_value(), Some(json!({"hello": "world"})));
    assert_eq!(&r.payload.data[..], &[0, 1, 255]);
    let r = c
        .call("/echo")
        .set()
        .json(&json!([1, 2]))
        .unwrap()
        .await
        .unwrap();
    assert_eq!(r.payload.param_value(), Some(json!([1, 2])));
    // Python keeps a non-JSON param as bytes and sends it back verbatim.
    let raw = Bytes::from_static(b"\x00not json\xff");
    assert_eq!(
        c.call("/echo")
            .param(raw.clone())
            .await
            .unwrap()
            .payload
            .param,
        raw
    );
    assert_eq!(c.call("/status/201").await.unwrap().status, Status(201));
    assert_eq!(c.call("/nosuch").await.unwrap().status, Status::INVALID_URL);
    let big: Vec<u8> = (0..tether_wire::vsoa::MAX_BODY_LEN - 5)
        .map(|i| (i % 253) as u8)
        .collect();
    let r = c.call("/echo").data(big.clone()).await.unwrap();
    assert_eq!(&r.payload.data[..], &big[..]);
    c.ping(Duration::from_secs(10)).await.unwrap();
}

#[tokio::test]
async fn hundreds_of_calls_in_flight() {
    let py = python_server("pypw").await;
    let c = connect(py.port).await;
    let mut tasks = Vec::new();
    for i in 0..500u32 {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            // An object: Python's packer silently drops bare-number params (docs/protocols/vsoa.md §16.6).
            let r = c
                .call("/echo")
                .json(&json!({"i": i}))
                .unwrap()
                .await
                .unwrap();
            assert_eq!(r.payload.param_value(), Some(json!({"i": i})));
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

use tether_wire::url::{matrix_row_urls, MATCH_MATRIX as MATRIX, MATCH_MATRIX_URLS as MATRIX_URLS};

#[tokio::test]
async fn subscription_matrix_list_form_and_unsubscribe() {
    let py = python_server("pypw").await;
    let publisher = connect(py.port).await;
    let publish = |url: &'static str| {
        let p = publisher.clone();
        async move {
            let r = p
                .call("/publish")
                .set()
                .json(&json!({"url": url}))
                .unwrap()
                .await
                .unwrap();
            assert_eq!(r.status, Status::SUCCESS);
        }
    };
    let mut subs = Vec::new();
    for (pattern, row) in MATRIX {
        let c = connect(py.port).await;
        let s = c.subscribe([pattern, "/zz-end"]).await.unwrap();
        subs.push((pattern, row, c, s));
    }
    for u in MATRIX_URLS {
        publish(u).await;
    }
    publish("/zz-end").await;
    for (pattern, row, _c, s) in &mut subs {
        let want = matrix_row_urls(row);
        let mut got = Vec::new();
        loop {
            let m = tokio::time::timeout(WAIT, s.next()).await.unwrap().unwrap();
            if m.url == "/zz-end" {
                break;
            }
            got.push(m.url);
        }
        assert_eq!(got, want, "subscription {pattern}");
    }
    // Unsubscribe one of two patterns on the Python server.
    let c = connect(py.port).await;
    let a = c.subscribe(["/a"]).await.unwrap();
    let mut b = c.subscribe(["/b"]).await.unwrap();
    a.unsubscribe().await.unwrap();
    publish("/a").await;
    publish("/b").await;
    assert_eq!(b.next().await.unwrap().url, "/b");
}

#[tokio::test]
async fn publishes_arrive_in_order_without_loss() {
    let py = python_server("pypw").await;
    let c = connect(py.port).await;
    let mut sub = c.subscribe(["/seq"]).await.unwrap();
    let n = 2000;
    let r = c
        .call("/publish")
        .set()
        .json(&json!({"url": "/seq", "count": n}))
        .unwrap()
        .await
        .unwrap();
    assert_eq!(r.status, Status::SUCCESS);
    for i in 0..n {
        let m = tokio::time::timeout(WAIT, sub.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(m.payload.param_value(), Some(json!({"i": i, "p": null})));
    }
}

#[tokio::test]
async fn datagrams_both_ways() {
    let py = python_server("pypw").await;
    let c = connect(py.port).await;
    let mut dgs = c.datagrams().unwrap();
    c.datagram(
        "/dg",
        Payload::json(&json!({"d": 1}))
            .unwrap()
            .with_data(b"abc".to_vec()),
    )
    .await
    .unwrap();
    let m = tokio::time::timeout(WAIT, dgs.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (m.url.as_str(), m.payload.param_value()),
        ("/dg", Some(json!({"d": 1})))
    );
    assert_eq!(&m.payload.data[..], b"abc");
}

#[tokio::test]
async fn quick_publish_and_quick_datagrams_with_the_python_server() {
    let py = python_server("pypw").await;
    let c = connect(py.port).await;
    let mut sub = c.subscribe(["/q/"]).await.unwrap();
    let r = c
        .call("/publish")
        .set()
        .json(&json!({"url": "/q/x", "param": "hi", "quick": true}))
        .unwrap()
        .await
        .unwrap();
    assert_eq!(r.status, Status::SUCCESS);
    let m = tokio::time::timeout(WAIT, sub.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!((m.url.as_str(), m.quick), ("/q/x", true));
    assert_eq!(m.payload.param_value(), Some(json!({"i": 0, "p": "hi"})));
    // Python identifies our quick datagram by the id in seqno and echoes it quick.
    let mut dgs = c.datagrams().unwrap();
    c.datagram_quick(
        "/dq",
        Payload::json(&json!({"d": 2}))
            .unwrap()
            .with_data(b"xy".to_vec()),
    )
    .await
    .unwrap();
    let m = tokio::time::timeout(WAIT, dgs.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (m.url.as_str(), m.quick, &m.payload.data[..]),
        ("/dq", true, &b"xy"[..])
    );
}

#[tokio::test]
async fn stream_opened_by_the_python_server() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let py = python_server("pypw").await;
    let c = connect(py.port).await;
    let r = c.call("/stream/echo").await.unwrap();
    assert_ne!(r.tunid, 0);
    let mut s = c.connect_stream(r.tunid).await.unwrap();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 256) as u8).collect();
    s.write_all(&data).await.unwrap();
    let mut back = vec![0u8; data.len()];
    tokio::time::timeout(WAIT, s.read_exact(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert!(back == data, "echo differs");
}

#[tokio::test]
async fn our_robot_survives_a_python_server_restart_and_resubscribes() {
    use tether::{Robot, RobotEvent};
    let py = python_server("pypw").await;
    let port = py.port;
    let robot = Robot::builder(&format!("vsoa://127.0.0.1:{port}"))
        .password("pypw")
        .backoff(Duration::from_millis(20), Duration::from_millis(200))
        .start()
        .unwrap();
    let mut events = robot.events();
    let connected = |events: &mut tokio::sync::broadcast::Receiver<RobotEvent>| {
        let mut events = events.resubscribe();
        async move {
            loop {
                let ev = tokio::time::timeout(WAIT, events.recv())
                    .await
                    .unwrap()
                    .unwrap();
                if matches!(ev, RobotEvent::Connected { .. }) {
                    return;
                }
            }
        }
    };
    let first = connected(&mut events);
    first.await;
    let mut sub = robot.subscribe(["/seq"]).await.unwrap();
    let publish = |robot: tether::Robot| async move {
        let r = robot
            .call("/publish")
            .set()
            .json(&json!({"url": "/seq"}))
            .unwrap()
            .timeout(WAIT)
            .await
            .unwrap();
        assert_eq!(r.status, Status::SUCCESS);
    };
    publish(robot.clone()).await;
    assert_eq!(
        tokio::time::timeout(WAIT, sub.next())
            .await
            .unwrap()
            .unwrap()
            .url,
        "/seq"
    );
    let again = connected(&mut events);
    py.stop().await;
    let _py2 = python_server_at("pypw", port).await;
    again.await; // announced only after re-subscribing on the new server
    publish(robot.clone()).await;
    assert_eq!(
        tokio::time::timeout(WAIT, sub.next())
            .await
            .unwrap()
            .unwrap()
            .url,
        "/seq"
    );
}

#[tokio::test]
async fn our_lookup_resolves_from_a_python_position_server() {
    use tether::position;
    let py = python_position_server().await;
    let pos: std::net::SocketAddr = format!("127.0.0.1:{}", py.port).parse().unwrap();
    let e = position::lookup_with("pyname", &[pos], Duration::from_secs(2))
        .await
        .unwrap();
    assert_eq!(e.socket_addr(), "127.0.0.1:4242".parse().unwrap());
    let miss = position::lookup_with("other", &[pos], Duration::from_secs(2))
        .await
        .unwrap_err();
    assert!(miss.to_string().ends_with("does not know it"), "{miss}");
}
