//! Our juggler client against the real Python hat-juggler 0.7.6 server
//! (interop/py/juggler_server.py), and against our own gateway.

use std::process::Stdio;
use std::time::Duration;

use crate::common::*;

use serde_json::json;
use tether_gateway::client::{JugglerClient, JugglerError};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Starts the Python server; returns it (stdin open: it serves until dropped) and its port.
async fn python_server() -> (tokio::process::Child, u16) {
    let mut child = python()
        .arg("juggler_server.py")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let line = tokio::time::timeout(WAIT, lines.next_line())
        .await
        .expect("the Python server started in time")
        .unwrap()
        .expect("READY line");
    let port = line
        .strip_prefix("READY ")
        .expect("READY <port>")
        .parse()
        .unwrap();
    (child, port)
}

#[tokio::test]
async fn our_client_against_the_python_server() {
    let (_py, port) = python_server().await;
    let c = JugglerClient::builder(&format!("ws://127.0.0.1:{port}/ws"))
        .max_segment(1000)
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
    // hat-juggler echoes an empty name; a big one crosses segmentation both ways.
    let big = json!("žx".repeat(50_000));
    assert_eq!(t(c.send("", big.clone())).await, Ok(big));
    assert_eq!(t(c.send("notify_me", json!(7))).await, Ok(json!(null)));
    assert_eq!(
        t(c.next_notify()).await,
        Some(("hello".to_string(), json!({"x": 7})))
    );
    // State: the server's per-connection Storage, mirrored.
    let mut changes = c.state_changes();
    assert_eq!(
        t(c.send("set_state", json!({"path": ["a"], "value": {"b": [1, 2]}}))).await,
        Ok(json!(null))
    );
    t(changes.wait_for(|s| **s == json!({"a": {"b": [1, 2]}})))
        .await
        .unwrap();
    t(c.send("set_state", json!({"path": ["a", "b"], "value": [1]})))
        .await
        .unwrap();
    t(changes.wait_for(|s| **s == json!({"a": {"b": [1]}})))
        .await
        .unwrap();
    c.close().await;
    assert!(c.closed().is_some());
    let e = c.send("add", json!({"a": 1, "b": 1})).await.unwrap_err();
    assert!(matches!(e, JugglerError::Closed(_)), "{e}");
}

#[tokio::test]
async fn our_client_against_our_gateway_with_keepalive() {
    let server = tether::Server::builder().build();
    server.route("/echo", |req: tether::Request| async move {
        tether::Reply::ok(req.payload)
    });
    let state = tether_gateway::State::new(json!({"n": 0}));
    let gw = tether_gateway::Gateway::builder(server.clone())
        .shared_state(state.clone())
        .autoflush(tether_gateway::Autoflush::Each)
        .build();
    let l = gw.bind("127.0.0.1:0").await.unwrap();
    let c = JugglerClient::builder(&format!("ws://{}/ws", l.local_addr()))
        .ping(Some(Duration::from_millis(50)), Duration::from_millis(500))
        .connect()
        .await
        .unwrap();
    let mut changes = c.state_changes();
    changes.wait_for(|s| **s == json!({"n": 0})).await.unwrap();
    state.set("/n", json!(1));
    changes.wait_for(|s| **s == json!({"n": 1})).await.unwrap();
    assert_eq!(c.send("/echo", json!([1, 2])).await, Ok(json!([1, 2])));
    c.send("subscribe", json!(["/t"])).await.unwrap();
    server
        .publish("/t", tether::Payload::json(&json!("hi")).unwrap())
        .await
        .unwrap();
    assert_eq!(c.next_notify().await, Some(("/t".into(), json!("hi"))));
    // Pings every 50 ms keep the link up across a quiet second.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(c.closed(), None);
    assert_eq!(c.send("/echo", json!(1)).await, Ok(json!(1)));
    let e = c.send("/missing", json!(1)).await.unwrap_err();
    assert!(e.to_string().contains("status 3"), "{e}");
}

#[tokio::test]
async fn our_client_over_wss_trusts_only_the_configured_ca() {
    let (l, pki) = tls_echo_gateway().await;
    let ca = pki.file("ca.pem");
    let other_ca = pki.file("other-ca.pem");
    let url = format!("wss://{}/ws", l.local_addr());
    let trusted = tether::tls::ClientTls::from_pem_files(&ca, None).unwrap();
    let c = JugglerClient::builder(&url)
        .tls(trusted)
        .connect()
        .await
        .unwrap();
    assert_eq!(c.send("/echo", json!("tls")).await, Ok(json!("tls")));
    let wrong = tether::tls::ClientTls::from_pem_files(&other_ca, None).unwrap();
    let e = JugglerClient::builder(&url)
        .tls(wrong)
        .connect()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("invalid peer certificate"), "{e}");
    let e = JugglerClient::builder(&url).connect().await.unwrap_err();
    assert!(e.to_string().contains("needs a TLS setup"), "{e}");
}
