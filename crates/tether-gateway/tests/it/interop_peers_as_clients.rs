//! The real clients against our gateway: Python hat-juggler 0.7.6 and the JS
//! @hat-open/juggler 0.7.0 (pinned in interop/, installed by interop/setup.sh).

use std::time::Duration;

use crate::common::*;

use serde_json::json;
use tether::{Client, Method, Payload, Reply, Request, Server, Status};

/// A server with the routes the scripts call, and its gateway on a free port.
pub(crate) async fn gateway() -> (Server, tether_gateway::Listening) {
    let server = Server::builder().build();
    server.route(
        "/echo",
        |req: Request| async move { Reply::ok(req.payload) },
    );
    server.route("/method", |req: Request| async move {
        Reply::json(if req.method == Method::Set {
            "set"
        } else {
            "get"
        })
        .unwrap()
    });
    server.route("/fail", |_req: Request| async move {
        Reply::error(Status::ARGUMENTS, "bad input")
    });
    let publisher = server.clone();
    server.route("/publish", move |req: Request| {
        let server = publisher.clone();
        async move {
            let r = server.publish("/news/a", req.payload).await;
            Reply::json(&r.map(|r| r.delivered).unwrap_or(0)).unwrap()
        }
    });
    let gw = tether_gateway::Gateway::builder(server.clone()).build();
    let l = gw.bind("127.0.0.1:0").await.unwrap();
    (server, l)
}

/// Runs a juggler_client.py scenario; `on_ready` runs when it prints READY.
async fn scenario<F, Fut>(port: u16, name: &str, on_ready: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    scenario_args(port, &[name], on_ready).await
}

async fn scenario_args<F, Fut>(port: u16, args: &[&str], on_ready: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut cmd = python();
    cmd.arg("juggler_client.py")
        .arg(port.to_string())
        .args(args);
    run_script(
        cmd,
        &format!("Python juggler client {}", args.join(" ")),
        on_ready,
    )
    .await
}

#[tokio::test]
async fn python_client_requests_failures_echo_and_big_messages() {
    let (_s, l) = gateway().await;
    scenario(l.local_addr().port(), "requests", || async {}).await;
}

#[tokio::test]
async fn python_client_gets_publishes_of_a_vsoa_client_as_notify() {
    let (_s, l) = gateway().await;
    // A VSOA client will publish through the /publish route once Python has subscribed.
    let vsoa = _s.bind("127.0.0.1:0").await.unwrap();
    let server_addr = vsoa.local_addr();
    scenario(l.local_addr().port(), "notify", || async move {
        let c = Client::connect(&format!("vsoa://{server_addr}"))
            .await
            .unwrap();
        let r = c
            .call("/publish")
            .set()
            .payload(Payload::json(&json!({"n": 1})).unwrap())
            .await
            .unwrap();
        assert_eq!(
            r.payload.param_value(),
            Some(json!(1)),
            "one subscriber got it"
        );
    })
    .await;
}

/// hat-juggler's three autoflush modes against the real client: the server sets a=1, b=2,
/// a=3 at once; the client must end at {"a": 3, "b": 2} after 3, 1 and 1 state messages.
#[tokio::test]
async fn python_client_mirrors_state_in_every_autoflush_mode() {
    use tether_gateway::{Autoflush, State};
    for (mode, messages) in [
        (Autoflush::Each, "3"),
        (Autoflush::Within(Duration::from_millis(200)), "1"),
        (Autoflush::Manual, "1"),
    ] {
        let server = Server::builder().build();
        let state = State::default();
        let gw = tether_gateway::Gateway::builder(server)
            .shared_state(state.clone())
            .autoflush(mode)
            .build();
        let l = gw.bind("127.0.0.1:0").await.unwrap();
        scenario_args(l.local_addr().port(), &["state", messages], || async move {
            state.set("/a", json!(1));
            state.set("/b", json!(2));
            state.set("/a", json!(3));
            if mode == Autoflush::Manual {
                tokio::time::sleep(Duration::from_millis(300)).await;
                state.flush();
            }
        })
        .await;
    }
}

#[tokio::test]
async fn js_client_requests_notify_state_and_keepalive() {
    let server = Server::builder().build();
    server.route(
        "/echo",
        |req: Request| async move { Reply::ok(req.payload) },
    );
    server.route("/fail", |_req: Request| async move {
        Reply::error(Status::ARGUMENTS, "bad input")
    });
    let state = tether_gateway::State::new(json!({"list": [1, 2]}));
    let l = tether_gateway::Gateway::builder(server.clone())
        .shared_state(state)
        .autoflush(tether_gateway::Autoflush::Each)
        .build()
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    let mut cmd = node("@hat-open/juggler");
    cmd.arg("js/juggler_client.mjs")
        .arg(l.local_addr().port().to_string());
    run_script(cmd, "@hat-open/juggler 0.7.0 client", || async move {
        let r = server
            .publish("/news/a", Payload::json(&json!({"n": 1})).unwrap())
            .await
            .unwrap();
        assert_eq!(r.delivered, 1);
    })
    .await;
}

#[tokio::test]
async fn python_client_with_basic_auth_right_and_wrong() {
    let server = Server::builder().build();
    server.route(
        "/echo",
        |req: Request| async move { Reply::ok(req.payload) },
    );
    let users =
        tether_gateway::Htpasswd::parse("alice:$apr1$xyzsalt1$mdDPSoZhouTDI1GHRla8E1\n", "t")
            .unwrap();
    let l = tether_gateway::Gateway::builder(server)
        .htpasswd(users)
        .build()
        .bind("127.0.0.1:0")
        .await
        .unwrap();
    scenario(l.local_addr().port(), "auth", || async {}).await;
}

#[tokio::test]
async fn python_client_over_wss() {
    let (l, pki) = tls_echo_gateway().await;
    let ca = pki.file("ca.pem");
    let ca = ca.to_string_lossy().into_owned();
    scenario_args(l.local_addr().port(), &["wss", &ca], || async {}).await;
}
