//! A gateway app with state: VSOA routes and publishes served to juggler (WebSocket)
//! clients, and a JSON document synced into every connected client as JSON-Patch diffs,
//! as a browser page built on `@hat-open/juggler` would see it.
//!
//! `cargo run -p tether-examples --example gateway_state`

use std::time::Duration;

use serde_json::json;
use tether::{Payload, Reply, Request, Server};
use tether_gateway::client::JugglerClient;
use tether_gateway::{Gateway, State};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::builder().build();
    server.route(
        "/echo",
        |req: Request| async move { Reply::ok(req.payload) },
    );
    let state = State::new(json!({"mission": "survey", "drones": 0}));
    let gateway = Gateway::builder(server.clone())
        .shared_state(state.clone())
        .build();
    let listening = gateway.bind("127.0.0.1:0").await?;
    let url = format!("ws://{}/ws", listening.local_addr());
    println!("juggler gateway on {url}");

    let client = JugglerClient::builder(&url).connect().await?;
    // A request named like a route calls it.
    let echo = client.send("/echo", json!({"ping": 1})).await?;
    println!("/echo -> {echo}");

    // The application changes its state; the client's mirror follows.
    let mut changes = client.state_changes();
    state.set("/drones", json!(3));
    let mirrored = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let now = changes.borrow_and_update().clone();
            if now["drones"] == json!(3) {
                return now;
            }
            changes.changed().await.expect("the client is connected");
        }
    })
    .await?;
    println!("the client's state: {mirrored}");

    // Publishes reach juggler clients that subscribed, as `notify` messages.
    client.send("subscribe", json!(["/alerts/"])).await?;
    server
        .publish(
            "/alerts/battery",
            Payload::json(&json!({"drone": 2, "level": 0.18}))?,
        )
        .await?;
    let (name, data) = tokio::time::timeout(Duration::from_secs(10), client.next_notify())
        .await?
        .expect("a notify");
    println!("notify {name}: {data}");

    client.close().await;
    listening.shutdown().await;
    println!("gateway_state: done");
    Ok(())
}
