//! The hat-juggler 0.6 wire (one bare JSON message per text frame, no juggler pings) on the
//! gateway's `/ws06` endpoint and in the Rust client, against the real 0.6 peers: the Python
//! hat-juggler 0.6.26 client and server (target/interop-venv06) and @hat-open/juggler
//! 0.6.18 under Node; and the frames a real 0.6.26 server sends, kept as test vectors in
//! `vectors/juggler06.json` (captured by interop/py/juggler06_capture.py).

use futures_util::SinkExt;
use serde_json::{json, Value};
use tether::{Payload, Reply, Request, Server, Status};
use tether_gateway::client::{JugglerClient, JugglerError};
use tether_gateway::{Autoflush, Gateway, State, Wire};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as Ws;

use crate::common::*;

const VECTORS: &str = include_str!("vectors/juggler06.json");

/// A server with /echo and /fail, and its gateway (shared `state`, autoflush on each change).
async fn gateway(state: State) -> (Server, tether_gateway::Listening) {
    let server = Server::builder().build();
    server.route(
        "/echo",
        |req: Request| async move { Reply::ok(req.payload) },
    );
    server.route("/fail", |_req: Request| async move {
        Reply::error(Status::ARGUMENTS, "bad input")
    });
    let l = Gateway::builder(server.clone())
        .shared_state(state)
        .autoflush(Autoflush::Each)
        .build()
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    (server, l)
}

async fn raw(l: &tether_gateway::Listening, path: &str) -> Socket {
    let url = format!("ws://{}{path}", l.local_addr());
    tokio_tungstenite::connect_async(url).await.unwrap().0
}

/// A hat-json path (a list of keys) as the pointer `State::set` takes.
fn pointer(path: &Value) -> String {
    path.as_array()
        .unwrap()
        .iter()
        .map(|k| format!("/{}", k.as_str().unwrap()))
        .collect()
}

/// Replays the captured client side of `vectors` against `/ws06` and checks that every frame
/// the gateway sends is the one hat-juggler 0.6.26 sent, byte for byte.
#[tokio::test]
async fn the_0_6_endpoint_sends_what_hat_juggler_0_6_26_sends() {
    let vectors: Value = serde_json::from_str(VECTORS).unwrap();
    let state = State::new(json!({"init": true}));
    let (server, l) = gateway(state.clone()).await;
    let mut ws = raw(&l, "/ws06").await;
    for step in vectors["steps"].as_array().unwrap() {
        if let Some(set) = step.get("set") {
            let path = pointer(&set["path"]);
            if path.is_empty() {
                state.update(|doc| *doc = set["value"].clone());
            } else {
                state.set(&path, set["value"].clone());
            }
        } else if step.get("notify").is_some() {
            let subscribe =
                r#"{"type": "request", "id": 99, "name": "subscribe", "data": ["/news/"]}"#;
            ws.send(Ws::Text(subscribe.into())).await.unwrap();
            let answer: Value = serde_json::from_str(&text(&mut ws).await).unwrap();
            assert_eq!(answer["success"], true, "{answer}");
            let r = server
                .publish("/news/a", Payload::json(&json!({"n": 1})).unwrap())
                .await
                .unwrap();
            assert_eq!(r.delivered, 1);
        } else if let Some(frame) = step["send"].as_str() {
            ws.send(Ws::Text(frame.into())).await.unwrap();
        }
        for want in step["receive"].as_array().unwrap() {
            assert_eq!(text(&mut ws).await, want.as_str().unwrap(), "step {step}");
        }
    }
}

/// The vectors are what the real server sends today: the capture, run again, agrees.
#[tokio::test]
async fn the_vectors_are_a_fresh_capture_of_hat_juggler_0_6_26() {
    let out = t(python06().arg("juggler06_capture.py").output())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let fresh: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(fresh, serde_json::from_str::<Value>(VECTORS).unwrap());
}

/// The Python 0.6.26 client, as it comes, against `/ws06`.
async fn python06_scenario<F, Fut>(port: u16, args: &[&str], on_ready: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut cmd = python06();
    cmd.env("JUGGLER_WS_PATH", "/ws06")
        .arg("juggler_client.py")
        .arg(port.to_string())
        .args(args);
    let name = format!("hat-juggler 0.6.26 client {}", args.join(" "));
    run_script(cmd, &name, on_ready).await
}

#[tokio::test]
async fn python_0_6_client_requests_failures_big_messages_and_many_in_flight() {
    let (_server, l) = crate::interop_peers_as_clients::gateway().await;
    let port = l.local_addr().port();
    python06_scenario(port, &["requests"], || async {}).await;
    python06_scenario(port, &["inflight"], || async {}).await;
}

#[tokio::test]
async fn python_0_6_client_gets_a_vsoa_publish_as_notify() {
    let (server, l) = crate::interop_peers_as_clients::gateway().await;
    python06_scenario(l.local_addr().port(), &["notify"], || async move {
        let r = server
            .publish("/news/a", Payload::json(&json!({"n": 1})).unwrap())
            .await
            .unwrap();
        assert_eq!(r.delivered, 1);
    })
    .await;
}

#[tokio::test]
async fn python_0_6_client_mirrors_state_in_every_autoflush_mode() {
    for (mode, messages) in [
        (Autoflush::Each, "3"),
        (
            Autoflush::Within(std::time::Duration::from_millis(200)),
            "1",
        ),
        (Autoflush::Manual, "1"),
    ] {
        let state = State::default();
        let l = Gateway::builder(Server::builder().build())
            .shared_state(state.clone())
            .autoflush(mode)
            .build()
            .bind("127.0.0.1:0")
            .await
            .unwrap();
        python06_scenario(l.local_addr().port(), &["state", messages], || async move {
            state.set("/a", json!(1));
            state.set("/b", json!(2));
            state.set("/a", json!(3));
            if mode == Autoflush::Manual {
                tokio::time::sleep(std::time::Duration::from_millis(300)).await;
                state.flush();
            }
        })
        .await;
    }
}

#[tokio::test]
async fn js_0_6_client_requests_ping_big_many_notify_and_state() {
    let state = State::new(Value::Null);
    let (server, l) = gateway(state.clone()).await;
    let mut cmd = node("hat-open-juggler-06");
    cmd.arg("js/juggler06_client.mjs")
        .arg(l.local_addr().port().to_string());
    run_script(cmd, "@hat-open/juggler 0.6.18 client", || async move {
        let r = server
            .publish("/news/a", Payload::json(&json!({"n": 1})).unwrap())
            .await
            .unwrap();
        assert_eq!(r.delivered, 1);
        state.set("/list", json!([1, 2]));
    })
    .await;
}

/// Starts interop/py/juggler_server.py under hat-juggler 0.6.26; returns it and its port.
async fn python06_server() -> (tokio::process::Child, u16) {
    use tokio::io::AsyncBufReadExt;
    let mut child = python06()
        .arg("juggler_server.py")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let line = t(lines.next_line()).await.unwrap().expect("READY line");
    let port = line.strip_prefix("READY ").unwrap().parse().unwrap();
    (child, port)
}

#[tokio::test]
async fn rust_client_speaks_0_6_to_a_real_hat_juggler_0_6_26_server() {
    let (_py, port) = python06_server().await;
    let c = JugglerClient::builder(&format!("ws://127.0.0.1:{port}/ws"))
        .wire(Wire::V0_6)
        .ping(Some(std::time::Duration::from_millis(100)), WAIT)
        .connect()
        .await
        .unwrap();
    assert_eq!(
        t(c.send("add", json!({"a": 1, "b": 2}))).await,
        Ok(json!(3))
    );
    assert_eq!(
        t(c.send("fail", json!(null))).await,
        Err(JugglerError::Failed(json!("boom")))
    );
    let big = json!("žx".repeat(50_000));
    assert_eq!(t(c.send("", big.clone())).await, Ok(big));
    // Idle well past the ping delay: 0.6 has no pings (the server would close on one).
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    assert_eq!(t(c.send("notify_me", json!(7))).await, Ok(json!(null)));
    assert_eq!(
        t(c.next_notify()).await,
        Some(("hello".to_string(), json!({"x": 7})))
    );
    let mut changes = c.state_changes();
    t(c.send("set_state", json!({"path": ["a"], "value": [1, 2]})))
        .await
        .unwrap();
    t(changes.wait_for(|s| **s == json!({"a": [1, 2]})))
        .await
        .unwrap();
    assert!(c.closed().is_none(), "{:?}", c.closed());
    c.close().await;
}

/// An application that never reads notifications stalls nothing: responses and state keep
/// coming, and what did not fit in the queue is counted.
#[tokio::test]
async fn unread_notifications_are_dropped_and_counted_never_stalling_responses() {
    let state = State::new(json!(0));
    let (server, l) = gateway(state.clone()).await;
    for wire in [Wire::V0_6, Wire::V0_7] {
        let path = if wire == Wire::V0_6 { "/ws06" } else { "/ws" };
        let c = JugglerClient::builder(&format!("ws://{}{path}", l.local_addr()))
            .wire(wire)
            .notify_queue(16)
            .connect()
            .await
            .unwrap();
        t(c.send("subscribe", json!(["/n/"]))).await.unwrap();
        for i in 0..200 {
            server
                .publish("/n/x", Payload::json(&i).unwrap())
                .await
                .unwrap();
        }
        state.set("", json!(200));
        assert_eq!(t(c.send("/echo", json!("after"))).await, Ok(json!("after")));
        t(c.state_changes().wait_for(|s| **s == json!(200)))
            .await
            .unwrap();
        // All 200 arrive (forwarded beside the answers, so maybe after the echo's): 16 kept.
        let deadline = std::time::Instant::now() + WAIT;
        while c.notifies_dropped() < 184 && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(c.notifies_dropped(), 184, "{wire:?}");
        for i in 0..16 {
            assert_eq!(t(c.next_notify()).await, Some(("/n/x".into(), json!(i))));
        }
        state.set("", json!(0));
    }
    // Queue 0: every notification ignored, and counted.
    let c = JugglerClient::builder(&format!("ws://{}/ws06", l.local_addr()))
        .wire(Wire::V0_6)
        .notify_queue(0)
        .connect()
        .await
        .unwrap();
    t(c.send("subscribe", json!(["/n/"]))).await.unwrap();
    server
        .publish("/n/x", Payload::json(&1).unwrap())
        .await
        .unwrap();
    assert_eq!(t(c.send("/echo", json!(1))).await, Ok(json!(1)));
    assert_eq!(c.notifies_dropped(), 1);
}

/// Bad input on `/ws06` closes that connection only, as hat-juggler 0.6 does; a 0.7 frame
/// there and a bare JSON frame on `/ws` are refused with a reason that names the wire.
#[tokio::test]
async fn bad_input_on_either_endpoint_closes_only_that_connection() {
    // A state other than null: every connection starts with one state message.
    let (_server, l) = gateway(State::new(json!({"x": 1}))).await;
    let mut bystander = raw(&l, "/ws06").await;
    let _first_state = text(&mut bystander).await;
    for (path, what, frame, reason) in [
        ("/ws06", "invalid JSON", Some("{not json"), "not valid JSON"),
        ("/ws06", "binary frame", None, "binary"),
        (
            "/ws06",
            "unknown type",
            Some(r#"{"type": "foo", "id": 1}"#),
            "unknown juggler message type",
        ),
        (
            "/ws06",
            "a response from a client",
            Some(r#"{"type": "response", "id": 1, "success": true, "data": null}"#),
            "unexpected message type",
        ),
        (
            "/ws06",
            "a 0.7 frame",
            Some(r#"0{"type": "request", "id": 1, "name": "/echo", "data": 1}"#),
            "a 0.7 frame on the 0.6 endpoint",
        ),
        ("/ws06", "a 0.7 ping", Some("2"), "must be a JSON object"),
        (
            "/ws",
            "a bare 0.6 message",
            Some(r#"{"type": "request", "id": 1, "name": "/echo", "data": 1}"#),
            "0.6",
        ),
    ] {
        let mut ws = raw(&l, path).await;
        let _first_state = text(&mut ws).await;
        let msg = match frame {
            Some(f) => Ws::Text(f.into()),
            None => Ws::Binary(b"{}".to_vec().into()),
        };
        ws.send(msg).await.unwrap();
        let (code, said) = closed(&mut ws).await;
        assert_eq!(code, CloseCode::Normal, "{what}");
        assert!(said.contains(reason), "{what}: closed with {said:?}");
        // The other connection on the 0.6 endpoint is still served.
        let echo = r#"{"type": "request", "id": 7, "name": "/echo", "data": "still here"}"#;
        bystander.send(Ws::Text(echo.into())).await.unwrap();
        assert_eq!(
            text(&mut bystander).await,
            r#"{"type": "response", "id": 7, "data": "still here", "success": true}"#,
            "after {what}"
        );
    }
}

/// Both endpoints serve the same routes and publishes; a 0.6 connection is told apart by
/// [`tether_gateway::Connection::wire`], and the 0.6 endpoint can be moved or turned off.
#[tokio::test]
async fn both_wires_share_routes_and_publishes_and_the_0_6_path_is_configurable() {
    let server = Server::builder().build();
    server.route(
        "/echo",
        |req: Request| async move { Reply::ok(req.payload) },
    );
    let wires = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = wires.clone();
    let l = Gateway::builder(server.clone())
        .ws06_path(Some("/old"))
        .on_connection(move |c| seen.lock().unwrap().push(c.wire()))
        .build()
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let new = JugglerClient::builder(&format!("ws://{}/ws", l.local_addr()))
        .connect()
        .await
        .unwrap();
    let old = JugglerClient::builder(&format!("ws://{}/old", l.local_addr()))
        .wire(Wire::V0_6)
        .connect()
        .await
        .unwrap();
    for c in [&new, &old] {
        assert_eq!(t(c.send("/echo", json!([1]))).await, Ok(json!([1])));
        t(c.send("subscribe", json!(["/a/"]))).await.unwrap();
    }
    let r = server
        .publish("/a/b", Payload::json(&json!({"k": 1})).unwrap())
        .await
        .unwrap();
    assert_eq!(r.delivered, 2);
    for c in [&new, &old] {
        assert_eq!(
            t(c.next_notify()).await,
            Some(("/a/b".to_string(), json!({"k": 1})))
        );
    }
    assert_eq!(*wires.lock().unwrap(), [Wire::V0_7, Wire::V0_6]);
    // /ws06 is not served when moved; with None there is no 0.6 endpoint at all.
    let refused = tokio_tungstenite::connect_async(format!("ws://{}/ws06", l.local_addr())).await;
    assert!(refused.is_err(), "/ws06 after moving it to /old");
    let l = Gateway::builder(server)
        .ws06_path(None)
        .build()
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let refused = tokio_tungstenite::connect_async(format!("ws://{}/ws06", l.local_addr())).await;
    assert!(refused.is_err(), "no 0.6 endpoint");
}
