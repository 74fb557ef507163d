//! The gateway's reactions to good and bad input, with a raw WebSocket client that sends
//! exactly the frames under test (docs/protocols/juggler.md §8.2, §8.3).

use std::time::Duration;

use crate::common::{closed, text, Socket, WAIT};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tether::{Reply, Request, Server};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as Ws;

async fn gateway(
    cfg: impl FnOnce(tether_gateway::GatewayBuilder) -> tether_gateway::GatewayBuilder,
) -> tether_gateway::Listening {
    let server = Server::builder().build();
    server.route(
        "/echo",
        |req: Request| async move { Reply::ok(req.payload) },
    );
    server.route("/slow", |req: Request| async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Reply::ok(req.payload)
    });
    cfg(tether_gateway::Gateway::builder(server))
        .build()
        .bind("127.0.0.1:0")
        .await
        .unwrap()
}

async fn connect(l: &tether_gateway::Listening) -> Socket {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", l.local_addr()))
        .await
        .unwrap();
    ws
}

async fn send(ws: &mut Socket, frame: &str) {
    ws.send(Ws::Text(frame.into())).await.unwrap();
}

fn response(frame: &str) -> Value {
    assert!(frame.starts_with('0'), "{frame}");
    serde_json::from_str(&frame[1..]).unwrap()
}

#[tokio::test]
async fn requests_echo_and_pings_answered_at_once_during_a_slow_request() {
    let l = gateway(|g| g).await;
    let mut ws = connect(&l).await;
    send(
        &mut ws,
        r#"0{"type": "request", "id": 1, "name": "/echo", "data": {"a": 1}}"#,
    )
    .await;
    assert_eq!(
        text(&mut ws).await,
        r#"0{"type": "response", "id": 1, "data": {"a": 1}, "success": true}"#
    );
    // Empty and null names echo; a request without data fails; an unknown name fails.
    send(
        &mut ws,
        r#"0{"type":"request","id":5,"name":null,"data":[1]}"#,
    )
    .await;
    assert_eq!(
        text(&mut ws).await,
        r#"0{"type": "response", "id": 5, "data": [1], "success": true}"#
    );
    send(&mut ws, r#"0{"type":"request","id":6,"name":"/echo"}"#).await;
    let r = response(&text(&mut ws).await);
    assert_eq!(
        (r["id"].clone(), r["success"].clone()),
        (json!(6), json!(false))
    );
    assert!(r["data"].as_str().unwrap().contains("no \"data\""), "{r}");
    // Segmented request with a ping in the middle (§8.2): the pong comes at once.
    send(&mut ws, "1{\"type\": \"request\", \"id\": 7, ").await;
    send(&mut ws, "1\"name\": \"/echo\", ").await;
    send(&mut ws, "2mid").await;
    assert_eq!(text(&mut ws).await, "3mid");
    send(&mut ws, "0\"data\": \"č😀\"}").await;
    assert_eq!(
        text(&mut ws).await,
        r#"0{"type": "response", "id": 7, "data": "\u010d\ud83d\ude00", "success": true}"#
    );
    // A slow request does not hold up pings (hat-juggler's does, §1.4).
    send(
        &mut ws,
        r#"0{"type":"request","id":8,"name":"/slow","data":1}"#,
    )
    .await;
    send(&mut ws, "2abc").await;
    assert_eq!(text(&mut ws).await, "3abc");
    send(&mut ws, "3ignored").await;
    assert_eq!(response(&text(&mut ws).await)["id"], 8);
}

#[tokio::test]
async fn bad_frames_close_the_connection_and_the_gateway_stays_up() {
    let l = gateway(|g| g.max_message(1000)).await;
    let big_segment = format!("1{}", "x".repeat(600));
    for (what, frames, code) in [
        ("binary frame", vec![None], CloseCode::Normal),
        ("empty frame", vec![Some(String::new())], CloseCode::Normal),
        (
            "unknown header",
            vec![Some("9hello".to_string())],
            CloseCode::Normal,
        ),
        (
            "0.6-style bare JSON",
            vec![Some(
                r#"{"type":"request","id":1,"name":"x","data":1}"#.to_string(),
            )],
            CloseCode::Normal,
        ),
        (
            "invalid JSON",
            vec![Some("0{not json".to_string())],
            CloseCode::Normal,
        ),
        (
            "request without id",
            vec![Some(
                r#"0{"type":"request","name":"x","data":1}"#.to_string(),
            )],
            CloseCode::Normal,
        ),
        (
            "unknown type",
            vec![Some(r#"0{"type":"foo","id":1}"#.to_string())],
            CloseCode::Normal,
        ),
        (
            "a response from a client",
            vec![Some(
                r#"0{"type":"response","id":1,"success":true,"data":null}"#.to_string(),
            )],
            CloseCode::Normal,
        ),
        (
            "a message that never ends",
            vec![Some(big_segment.clone()), Some(big_segment)],
            CloseCode::Size,
        ),
        (
            "one WebSocket frame over the limit",
            vec![Some(format!("0\"{}\"", "x".repeat(2000)))],
            CloseCode::Size,
        ),
    ] {
        let mut ws = connect(&l).await;
        for f in frames {
            let msg = match f {
                Some(t) => Ws::Text(t.into()),
                None => Ws::Binary(b"0{}".to_vec().into()),
            };
            ws.send(msg).await.unwrap();
        }
        assert_eq!(closed(&mut ws).await.0, code, "{what}");
        // The gateway serves the next connection.
        let mut ok = connect(&l).await;
        send(
            &mut ok,
            r#"0{"type":"request","id":1,"name":"/echo","data":1}"#,
        )
        .await;
        assert_eq!(
            response(&text(&mut ok).await)["success"],
            true,
            "after {what}"
        );
    }
}

#[tokio::test]
async fn a_peer_that_never_answers_pings_is_closed() {
    let l = gateway(|g| g.ping(Some(Duration::from_millis(200)), Duration::from_millis(200))).await;
    let mut ws = connect(&l).await;
    assert_eq!(text(&mut ws).await, "2");
    assert_eq!(closed(&mut ws).await.0, CloseCode::Normal);
    // Any traffic keeps a connection alive: answer, and the next ping comes later.
    let mut ws = connect(&l).await;
    for _ in 0..3 {
        assert_eq!(text(&mut ws).await, "2");
        send(&mut ws, "3").await;
    }
}

#[tokio::test]
async fn large_responses_are_segmented_and_parallel_requests_may_overtake() {
    let l = gateway(|g| g.max_segment(10).parallel_requests(true)).await;
    let mut ws = connect(&l).await;
    send(
        &mut ws,
        r#"0{"type":"request","id":1,"name":"/slow","data":1}"#,
    )
    .await;
    send(
        &mut ws,
        &format!(
            r#"0{{"type":"request","id":2,"name":"/echo","data":"{}"}}"#,
            "x".repeat(25)
        ),
    )
    .await;
    let mut frames = Vec::new();
    loop {
        let f = text(&mut ws).await;
        let last = f.starts_with('0');
        frames.push(f);
        if last {
            break;
        }
    }
    // Segments of 10 characters, the request that came second answered first.
    assert!(
        frames.len() > 5 && frames.iter().all(|f| f.chars().count() <= 11),
        "{frames:?}"
    );
    let joined: String = frames.iter().map(|f| &f[1..]).collect();
    let r: Value = serde_json::from_str(&joined).unwrap();
    assert_eq!(r["id"], 2);
}

/// docs/protocols/juggler.md §8.1: shared state `{"init": true}`, then a=1, b=2, a=3 at once.
#[tokio::test]
async fn state_sync_follows_each_autoflush_mode() {
    use tether_gateway::{Autoflush, State};
    let window = Autoflush::Within(Duration::from_millis(200));
    for mode in [Autoflush::Each, window, Autoflush::Manual] {
        let state = State::new(json!({"init": true}));
        let l = gateway(|g| g.shared_state(state.clone()).autoflush(mode)).await;
        let mut ws = connect(&l).await;
        if mode != Autoflush::Manual {
            // The whole document first, at once or within the window.
            assert_eq!(
                text(&mut ws).await,
                r#"0{"type": "state", "diff": [{"op": "replace", "path": "", "value": {"init": true}}]}"#
            );
        }
        state.set("/a", json!(1));
        state.set("/b", json!(2));
        state.set("/a", json!(3));
        let want: &[&str] = match mode {
            Autoflush::Each => &[
                r#"0{"type": "state", "diff": [{"op": "add", "path": "/a", "value": 1}]}"#,
                r#"0{"type": "state", "diff": [{"op": "add", "path": "/b", "value": 2}]}"#,
                r#"0{"type": "state", "diff": [{"op": "replace", "path": "/a", "value": 3}]}"#,
            ],
            Autoflush::Within(_) => &[
                r#"0{"type": "state", "diff": [{"op": "add", "path": "/a", "value": 3}, {"op": "add", "path": "/b", "value": 2}]}"#,
            ],
            Autoflush::Manual => {
                // Nothing goes out until flush.
                send(&mut ws, "2x").await;
                assert_eq!(text(&mut ws).await, "3x");
                tokio::time::sleep(Duration::from_millis(300)).await;
                send(&mut ws, "2y").await;
                assert_eq!(text(&mut ws).await, "3y");
                state.flush();
                &[
                    r#"0{"type": "state", "diff": [{"op": "replace", "path": "", "value": {"init": true, "a": 3, "b": 2}}]}"#,
                ]
            }
        };
        for w in want {
            assert_eq!(text(&mut ws).await, *w, "{mode:?}");
        }
        // Setting a value equal to the current one sends nothing; a flush with nothing
        // pending neither.
        state.set("/a", json!(3));
        state.flush();
        send(&mut ws, "2z").await;
        assert_eq!(text(&mut ws).await, "3z", "{mode:?}: nothing but the pong");
    }
}

#[tokio::test]
async fn each_connection_has_its_own_state_unless_shared() {
    let l = gateway(|g| {
        g.autoflush(tether_gateway::Autoflush::Each)
            .on_connection(|c| c.state().set("/peer", json!(c.peer().port())))
    })
    .await;
    let mut a = connect(&l).await;
    let mut b = connect(&l).await;
    let sa: Value = serde_json::from_str(&text(&mut a).await[1..]).unwrap();
    let sb: Value = serde_json::from_str(&text(&mut b).await[1..]).unwrap();
    assert_ne!(sa["diff"][0]["value"], sb["diff"][0]["value"]);
}

#[test]
fn state_paths_fill_in_parents_and_pad_arrays() {
    let s = tether_gateway::State::default();
    s.set("/l", json!(["a", "b"]));
    s.set("/l/5", json!("x"));
    assert_eq!(*s.get(), json!({"l": ["a", "b", null, null, null, "x"]}));
    s.set("/n/k~1~0", json!(1));
    assert_eq!(s.get()["n"], json!({"k/~": 1}));
    s.remove("/l/0");
    s.remove("/missing/deep");
    assert_eq!(s.get()["l"], json!(["b", null, null, null, "x"]));
    s.remove("");
    assert_eq!(*s.get(), Value::Null);
    s.set("", json!([1]));
    assert_eq!(*s.get(), json!([1]));
}

#[tokio::test]
async fn routes_see_the_peer_as_caller_and_the_gateways_own_address_as_local() {
    let server = Server::builder().build();
    server.route("/where", |req: Request| async move {
        let addrs = json!({
            "from": req.client.addr().to_string(),
            "local": req.client.local_addr().to_string(),
        });
        Reply::ok(tether::Payload::json(&addrs).unwrap())
    });
    let l = tether_gateway::Gateway::builder(server)
        .build()
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    // From another loopback address, so the two ends differ.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let tcp = socket.connect(l.local_addr()).await.unwrap();
    let me = tcp.local_addr().unwrap();
    let (mut ws, _) = tokio_tungstenite::client_async(format!("ws://{}/ws", l.local_addr()), tcp)
        .await
        .unwrap();
    ws.send(Ws::Text(
        r#"0{"type": "request", "id": 1, "name": "/where", "data": null}"#.into(),
    ))
    .await
    .unwrap();
    let reply = loop {
        match tokio::time::timeout(WAIT, ws.next()).await.unwrap() {
            Some(Ok(Ws::Text(t))) if t.starts_with('0') => break response(&t),
            Some(Ok(_)) => continue,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(
        reply["data"],
        json!({"from": me.to_string(), "local": l.local_addr().to_string()}),
        "{reply}"
    );
}
