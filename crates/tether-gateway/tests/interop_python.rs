//! The real Python hat-juggler 0.7.6 client (interop/requirements.txt, installed by
//! interop/setup.sh) against our gateway.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::json;
use tether::{Client, Method, Payload, Reply, Request, Server, Status};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

const WAIT: Duration = Duration::from_secs(20);

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> PathBuf {
    let p = workspace().join("target/interop-venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run interop/setup.sh (./test.sh does)",
        p.display()
    );
    p
}

/// A server with the routes the scripts call, and its gateway on a free port.
async fn gateway() -> (Server, tether_gateway::Listening) {
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
    let mut child = Command::new(python())
        .current_dir(workspace().join("interop/py"))
        .arg("juggler_client.py")
        .arg(port.to_string())
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .expect("start python");
    let name = args.join(" ");
    let name = name.as_str();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut on_ready = Some(on_ready);
    let mut oks = 0;
    let run = async {
        while let Some(line) = lines.next_line().await.unwrap() {
            assert!(!line.starts_with("FAIL"), "{name}: {line}");
            if line == "READY" {
                if let Some(f) = on_ready.take() {
                    f().await;
                }
            }
            if line.starts_with("OK ") {
                oks += 1;
            }
            if line == "DONE" {
                return;
            }
        }
        panic!("{name}: the script ended without DONE");
    };
    tokio::time::timeout(WAIT, run)
        .await
        .unwrap_or_else(|_| panic!("{name}: no DONE within {WAIT:?}"));
    assert!(oks > 0, "{name}: no checks ran");
    let status = child.wait().await.unwrap();
    assert!(status.success(), "{name}: exit {status}");
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
