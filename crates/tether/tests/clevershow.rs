//! clever-show messaging between our own nodes (no clever-show peer can run in CI: the
//! codec is checked against the vectors captured from the real module, in tether-wire).

use std::time::Duration;

use serde_json::{json, Map, Value};
use tether::clevershow::Node;
use tether::Error;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(10);

fn kw(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

async fn demo_server() -> (Node, tether::clevershow::ShowListener) {
    let node = Node::new();
    node.with_demo();
    let l = node.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    (node, l)
}

#[tokio::test]
async fn requests_get_responses_and_actions_arrive_in_order() {
    let (server, l) = demo_server().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    server.action("takeoff", move |_peer, args, kwargs| {
        let tx = tx.clone();
        async move {
            let _ = tx.send((args, kwargs));
        }
    });
    let drone = Node::new().connect(l.local_addr()).await.unwrap();
    let echo = drone
        .request("echo")
        .args(vec![json!(1), json!("two")])
        .kwargs(kw(json!({"z": 1.5})))
        .send()
        .await
        .unwrap();
    assert_eq!(echo, json!({"args": [1, "two"], "kwargs": {"z": 1.5}}));
    for i in 0..20 {
        drone
            .action("takeoff", vec![json!(i)], kw(json!({"z": "1"})))
            .await
            .unwrap();
    }
    for i in 0..20 {
        let (args, kwargs) = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((args, kwargs), (vec![json!(i)], kw(json!({"z": "1"}))));
    }
}

#[tokio::test]
async fn unhandled_and_failing_requests_get_error_responses() {
    let (server, l) = demo_server().await;
    server.request("fail", |_p, _a, _k| async move {
        Err("the battery is low".to_string())
    });
    let drone = Node::new().connect(l.local_addr()).await.unwrap();
    let e = drone.request("nope").send().await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "request nope failed on the peer: no handler for request \"nope\""
    );
    let e = drone.request("fail").send().await.unwrap_err();
    assert!(
        matches!(&e, Error::Remote { reason, .. } if reason == "the battery is low"),
        "{e}"
    );
}

#[tokio::test]
async fn requests_time_out_and_the_link_survives() {
    let (server, l) = demo_server().await;
    server.request("slow", |_p, _a, _k| async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(json!("late"))
    });
    let drone = Node::new().connect(l.local_addr()).await.unwrap();
    let e = drone
        .request("slow")
        .timeout(Duration::from_millis(30))
        .send()
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
    // The late response is dropped as unexpected; the link keeps working.
    assert_eq!(drone.request("slow").send().await.unwrap(), json!("late"));
}

#[tokio::test]
async fn the_server_identifies_drones_by_the_id_they_answer() {
    let server = Node::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    server.on_peer(move |peer| {
        let tx = tx.clone();
        tokio::spawn(async move {
            let id = peer.request("id").send().await;
            let _ = tx.send(id.map(|v| v.as_str().unwrap_or_default().to_string()));
        });
    });
    let l = server.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    // Two drones from the same IP with their own ids.
    let mut drones = Vec::new();
    for name in ["copter0001", "copter0002"] {
        let node = Node::new();
        node.request("id", move |_p, _a, _k| async move { Ok(json!(name)) });
        drones.push(node.connect(l.local_addr()).await.unwrap());
    }
    let mut ids = vec![
        tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap(),
        tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap(),
    ];
    ids.sort();
    assert_eq!(ids, ["copter0001", "copter0002"]);
}

#[tokio::test]
async fn clock_offset_corrects_for_the_round_trip() {
    let (_s, l) = demo_server().await;
    let drone = Node::new().connect(l.local_addr()).await.unwrap();
    let est = drone.clock_offset().await.unwrap();
    // Same machine, same clock: the estimate is within half a round trip (plus rounding).
    assert!(
        est.offset.abs() <= est.rtt.as_secs_f64() / 2.0 + 0.01,
        "{est:?}"
    );
}

#[tokio::test]
async fn a_garbage_frame_ends_the_link_and_pending_requests_fail() {
    let server = Node::new();
    server.request("hold", |_p, _a, _k| async move {
        std::future::pending::<()>().await;
        Ok(Value::Null)
    });
    let l = server.bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
    // A raw "drone" that sends a request, then garbage: the server closes the link.
    let mut raw = tokio::net::TcpStream::connect(l.local_addr())
        .await
        .unwrap();
    raw.write_all(&[0, 8]).await.unwrap();
    raw.write_all(b"not json").await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut raw, &mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "closed");
    // A real link whose peer goes away: its pending request fails at once.
    let drone = Node::new().connect(l.local_addr()).await.unwrap();
    let pending = {
        let d = drone.clone();
        tokio::spawn(async move {
            d.request("hold")
                .timeout(Duration::from_secs(3600))
                .send()
                .await
        })
    };
    drop(l);
    drone.close();
    let res = tokio::time::timeout(WAIT, pending).await.unwrap().unwrap();
    assert!(matches!(res, Err(Error::Closed { .. })), "{res:?}");
}
