//! A clever-show ground station and a drone: the station asks every drone that links for
//! its id, sends it an action, and the drone reconnects by itself when the link breaks.
//! Wire-compatible with the original `messaging.py` peers.
//!
//! `cargo run -p tether-examples --example ground_station`

use std::time::Duration;

use serde_json::{json, Map, Value};
use tether::clevershow::Node;
use tokio::sync::mpsc;

#[tokio::main]
async fn main() -> Result<(), tether::Error> {
    // The ground station: asks each new drone for its id.
    let (ids_tx, mut ids) = mpsc::unbounded_channel();
    let station = Node::new();
    station.on_peer(move |drone| {
        let ids_tx = ids_tx.clone();
        tokio::spawn(async move {
            match drone.request("id").send().await {
                Ok(id) => {
                    let _ = ids_tx.send((drone, id));
                }
                Err(e) => eprintln!("no id from {}: {e}", drone.addr()),
            }
        });
    });
    let listening = station.bind("127.0.0.1:0").await?;
    println!("ground station on {}", listening.local_addr());

    // A drone: answers `id`, obeys `led`.
    let (led_tx, mut leds) = mpsc::unbounded_channel();
    let drone_node = Node::new();
    drone_node.request("id", |_peer, _args, _kwargs| async move {
        Ok(json!("copter0042"))
    });
    drone_node.action("led", move |_peer, _args, kwargs| {
        let led_tx = led_tx.clone();
        async move {
            let _ = led_tx.send(kwargs);
        }
    });
    let drone = drone_node.dial(listening.local_addr()).start();
    drone.wait_link(Duration::from_secs(10)).await?;

    let (link, id) = tokio::time::timeout(Duration::from_secs(10), ids.recv())
        .await
        .expect("the drone answers within 10 s")
        .expect("the station is running");
    println!("drone at {} says its id is {id}", link.addr());
    let mut kwargs = Map::new();
    kwargs.insert("color".into(), Value::from("green"));
    link.action("led", vec![], kwargs).await?;
    let got = tokio::time::timeout(Duration::from_secs(10), leds.recv())
        .await
        .expect("the action arrives within 10 s")
        .expect("the drone is running");
    println!("the drone set its LEDs: {}", Value::Object(got));

    drone.close();
    listening.shutdown().await;
    println!("ground_station: done");
    Ok(())
}
