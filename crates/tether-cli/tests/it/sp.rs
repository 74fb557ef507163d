//! `tether serve --socket-protocol` and `tether sp`: the demo services, the bridge to the
//! VSOA routes and publishes, authentication, and the exit codes of the CLI contract.

use serde_json::{json, Value};
use tether::sp::{status, tether_sid, Endpoint};

use crate::common::*;

async fn sp_server(extra: &[&str]) -> Proc {
    let mut cmd = tether_cmd(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--socket-protocol",
        "127.0.0.1:0",
    ]);
    cmd.args(extra);
    Proc::start(cmd, "socket_protocol on ").await
}

fn line(r: &Run) -> Value {
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stdout.lines().count(), 1, "{}", r.stdout);
    serde_json::from_str(r.stdout.trim()).expect("one JSON line")
}

#[tokio::test]
async fn sp_sends_one_request_and_prints_the_response() {
    let s = sp_server(&[]).await;
    let addr = format!("127.0.0.1:{}", s.port);
    let r = tether(&[
        "sp",
        &addr,
        "--sid",
        "10",
        "--did",
        "3",
        "--data",
        r#"{"a":[1,"é"]}"#,
    ])
    .await;
    assert_eq!(
        line(&r),
        json!({"status": 0, "service_id": 11, "data_id": 3, "data": {"a": [1, "é"]}})
    );
    for req in [20, 30] {
        let r = tether(&["sp", &addr, "--sid", &req.to_string(), "--data", "7"]).await;
        assert_eq!(line(&r)["service_id"], json!(req + 1));
    }
    // A VSOA route through the bridge, and a status other than 0 still exits 0.
    let r = tether(&["sp", &addr, "--route", "/echo", "--param", r#"{"k":"v"}"#]).await;
    assert_eq!(
        line(&r),
        json!({"status": 0, "service_id": 101, "data_id": 0, "data": {"k": "v"}})
    );
    let r = tether(&["sp", &addr, "--route", "/nobody"]).await;
    assert_eq!(line(&r)["status"], json!(status::SERVICE_OR_DATA_UNKNOWN));
    // A sid of no service: status 4, on the sid named for the response.
    let r = tether(&["sp", &addr, "--sid", "77", "--response-sid", "77"]).await;
    assert_eq!(line(&r)["status"], json!(status::SERVICE_OR_DATA_UNKNOWN));
}

#[tokio::test]
async fn sp_usage_errors_and_exit_codes() {
    let r = tether(&["sp", "127.0.0.1:9", "--sid", "77"]).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--response-sid"), "{}", r.stderr);
    let r = tether(&["sp", "127.0.0.1:9", "--sid", "10", "--data", "{nope"]).await;
    assert_eq!(
        (r.code, r.stderr.contains("--data is not valid JSON")),
        (2, true),
        "{}",
        r.stderr
    );
    let r = tether(&["sp", "127.0.0.1:1", "--sid", "10"]).await;
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr
            .contains("cannot reach the socket_protocol peer 127.0.0.1:1"),
        "{}",
        r.stderr
    );
    assert_eq!(r.stderr.lines().count(), 1, "one sentence: {}", r.stderr);

    let s = sp_server(&["--sp-secret", "s3cret"]).await;
    let addr = format!("127.0.0.1:{}", s.port);
    let r = tether(&["sp", &addr, "--sid", "10", "--secret", "wrong"]).await;
    assert_eq!(r.code, 4, "{}", r.stderr);
    assert!(r.stderr.contains("wrong secret"), "{}", r.stderr);
    let r = tether(&[
        "sp", &addr, "--sid", "10", "--data", "1", "--secret", "s3cret",
    ])
    .await;
    assert_eq!(line(&r)["data"], json!(1));
    // Without the secret the server answers status 3 and no service runs.
    let r = tether(&[
        "sp",
        &addr,
        "--route",
        "SET /publish",
        "--param",
        r#"{"url":"/x"}"#,
    ])
    .await;
    assert_eq!(line(&r)["status"], json!(status::AUTH_REQUIRED));
}

#[tokio::test]
async fn a_socket_protocol_peer_and_a_vsoa_client_see_each_others_publishes() {
    let vsoa_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut cmd = tether_cmd(&["serve", "--listen", &format!("127.0.0.1:{vsoa_port}")]);
    cmd.args(["--socket-protocol", "127.0.0.1:0"]);
    let s = Proc::start(cmd, "socket_protocol on ").await;
    let vsoa = tether::Client::connect(&format!("vsoa://127.0.0.1:{vsoa_port}"))
        .await
        .unwrap();
    let mut vsoa_sub = vsoa.subscribe(["/sensors/"]).await.unwrap();

    let peer = Endpoint::new();
    peer.bridge(&tether::Server::builder().build()).unwrap();
    let peer = peer
        .connect(std::net::SocketAddr::from(([127, 0, 0, 1], s.port)))
        .await
        .unwrap();
    peer.send(tether_sid::SUBSCRIBE_REQUEST, 0, json!(["/sensors/"]))
        .await
        .unwrap();
    let ok = peer
        .receive(tether_sid::SUBSCRIBE_RESPONSE, 0, WAIT)
        .await
        .unwrap();
    assert_eq!(ok.status, status::OKAY);

    // The socket_protocol peer publishes through the bridge's /publish route.
    let publish =
        json!({"route": "SET /publish", "param": {"url": "/sensors/t", "param": 21.5, "count": 3}});
    peer.send(tether_sid::ROUTE_REQUEST, 9, publish)
        .await
        .unwrap();
    let reply = peer
        .receive(tether_sid::ROUTE_RESPONSE, 9, WAIT)
        .await
        .unwrap();
    assert_eq!(
        reply.data,
        json!({"delivered": 6, "cut_off": 0}),
        "3 to each"
    );
    // A VSOA client publishes too.
    let from_vsoa = json!({"url": "/sensors/h", "param": "wet"});
    vsoa.call("/publish")
        .set()
        .json(&from_vsoa)
        .unwrap()
        .await
        .unwrap();
    for want in [json!(21.5), json!(21.5), json!(21.5), json!("wet")] {
        let m = peer.receive(tether_sid::PUBLISH, 0, WAIT).await.unwrap();
        assert_eq!(m.data["param"], want);
        let v = tokio::time::timeout(WAIT, vsoa_sub.next())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(v.payload.param_value(), Some(want));
    }
}
