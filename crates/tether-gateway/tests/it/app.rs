//! The application API of hat-juggler's server, in Rust: a request handler that gets the
//! connection (`request_cb`), per-connection state, `notify`, `flush` for one connection,
//! an application-side close, and `shutdown` closing every WebSocket connection.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use serde_json::{json, Value};
use tether::Server;
use tether_gateway::client::JugglerClient;
use tether_gateway::{Autoflush, Connection, ConnectionClosed, Gateway, Wire};
use tokio_tungstenite::tungstenite::Message as Ws;

use crate::common::*;

/// A gateway whose application answers `add`, `fail`, `set_mine`, `notify_me`, `bye` and
/// `whoami`, with per-connection state flushed by hand.
async fn app_gateway() -> tether_gateway::Listening {
    Gateway::builder(Server::builder().build())
        .autoflush(Autoflush::Manual)
        .on_request(|conn: Connection, name: String, data: Value| async move {
            match name.as_str() {
                "add" => Ok(json!(
                    data["a"].as_i64().unwrap_or(0) + data["b"].as_i64().unwrap_or(0)
                )),
                "fail" => Err("boom".to_string()),
                "set_mine" => {
                    conn.state().set("/mine", data);
                    conn.flush().await.map_err(|e| e.to_string())?;
                    Ok(Value::Null)
                }
                "notify_me" => {
                    conn.notify("hello", data).await;
                    Ok(Value::Null)
                }
                "bye" => {
                    conn.close("bye");
                    Ok(Value::Null)
                }
                "whoami" => Ok(json!({
                    "remote": conn.remote(),
                    "peer": conn.peer().to_string(),
                    "local": conn.local_addr().to_string(),
                    "wire": conn.wire().name(),
                })),
                other => Err(format!("no request {other}")),
            }
        })
        .build()
        .bind("127.0.0.1:0")
        .await
        .unwrap()
}

/// The real Python clients (hat-juggler 0.7.6 on /ws, 0.6.26 on /ws06) against it.
#[tokio::test]
async fn the_request_handler_serves_real_clients_of_both_versions() {
    let l = app_gateway().await;
    let port = l.local_addr().port().to_string();
    let mut cmd = python();
    cmd.args(["juggler_client.py", &port, "app"]);
    run_script(cmd, "hat-juggler 0.7.6 client app", || async {}).await;
    let mut cmd = python06();
    cmd.env("JUGGLER_WS_PATH", "/ws06")
        .args(["juggler_client.py", &port, "app"]);
    run_script(cmd, "hat-juggler 0.6.26 client app", || async {}).await;
}

#[tokio::test]
async fn the_handler_sees_both_addresses_and_the_wire() {
    let l = app_gateway().await;
    for (path, wire) in [("/ws", Wire::V0_7), ("/ws06", Wire::V0_6)] {
        let c = JugglerClient::builder(&format!("ws://{}{path}", l.local_addr()))
            .wire(wire)
            .connect()
            .await
            .unwrap();
        let me = t(c.send("whoami", Value::Null)).await.unwrap();
        assert_eq!(me["remote"], "127.0.0.1");
        assert_eq!(me["local"], l.local_addr().to_string());
        assert_eq!(me["wire"], wire.name());
        assert_ne!(me["peer"], me["local"]);
        // Route names still go to the route table (none here: status 3), not the handler.
        let e = t(c.send("/nothing", Value::Null)).await.unwrap_err();
        assert!(e.to_string().contains("status 3"), "{e}");
    }
}

/// `Connection::flush` sends that connection's diff only, returns once it is written,
/// and fails once the connection is closed.
#[tokio::test]
async fn flush_is_per_connection_and_fails_once_closed() {
    let state = tether_gateway::State::new(json!({}));
    let conns: Arc<Mutex<Vec<Connection>>> = Arc::default();
    let seen = conns.clone();
    let l = Gateway::builder(Server::builder().build())
        .shared_state(state.clone())
        .autoflush(Autoflush::Manual)
        .on_connection(move |c| seen.lock().unwrap().push(c))
        .build()
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let url = format!("ws://{}/ws", l.local_addr());
    let a = JugglerClient::builder(&url).connect().await.unwrap();
    // Manual: not even the first state goes out before a flush.
    let b = JugglerClient::builder(&url).connect().await.unwrap();
    t(async {
        while conns.lock().unwrap().len() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await;
    let (ca, cb) = {
        let c = conns.lock().unwrap();
        (c[0].clone(), c[1].clone())
    };
    state.set("/x", json!(1));
    t(ca.flush()).await.unwrap();
    t(a.state_changes().wait_for(|s| **s == json!({"x": 1})))
        .await
        .unwrap();
    // B was not flushed: a request answered after the flush finds its state untouched.
    let _ = b.send("", Value::Null).await;
    assert_eq!(*b.state(), Value::Null, "B got A's flush");
    t(cb.flush()).await.unwrap();
    t(b.state_changes().wait_for(|s| **s == json!({"x": 1})))
        .await
        .unwrap();
    a.close().await;
    let failed = t(async {
        loop {
            match ca.flush().await {
                Err(e) => return e,
                Ok(()) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        }
    })
    .await;
    assert_eq!(failed, ConnectionClosed);
}

/// `Listening::shutdown` closes every WebSocket connection of that listener (1001),
/// also one whose peer never answers, and is not held up by idle HTTP keep-alive
/// connections; afterwards the port is closed.
#[tokio::test]
async fn shutdown_closes_every_websocket_connection_within_the_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let l = Gateway::builder(Server::builder().build())
        .shutdown_timeout(Duration::from_millis(200))
        .build()
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let addr = l.local_addr();
    let c07 = JugglerClient::builder(&format!("ws://{addr}/ws"))
        .connect()
        .await
        .unwrap();
    let c06 = JugglerClient::builder(&format!("ws://{addr}/ws06"))
        .wire(Wire::V0_6)
        .connect()
        .await
        .unwrap();
    let (mut silent, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws"))
        .await
        .unwrap();
    let mut http = tokio::net::TcpStream::connect(addr).await.unwrap();
    http.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 256];
    let n = t(http.read(&mut buf)).await.unwrap();
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "an idle keep-alive connection"
    );
    assert_eq!(t(c07.send("", json!(1))).await, Ok(json!(1)));

    t(l.shutdown()).await;
    for c in [&c07, &c06] {
        let why = t(async {
            loop {
                if let Some(why) = c.closed() {
                    return why;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        assert!(why.contains("1001") || why.contains("Away"), "{why}");
    }
    // The silent peer got the close frame, then the socket went away.
    match t(silent.next()).await {
        Some(Ok(Ws::Close(Some(f)))) => assert_eq!(u16::from(f.code), 1001),
        other => panic!("expected a close frame, got {other:?}"),
    }
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "port closed"
    );
}
