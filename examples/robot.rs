//! A robot (an auto-reconnecting client) that survives a server restart: its subscription
//! is made again on the new connection, and calls wait for the link.
//!
//! `cargo run -p tether-examples --example robot`

use std::time::Duration;

use tether::{Payload, Reply, Request, Robot, RobotEvent, Server};

async fn start_server(addr: &str) -> Result<(Server, tether::Listening), tether::Error> {
    let server = Server::builder().build();
    server.route(
        "/echo",
        |req: Request| async move { Reply::ok(req.payload) },
    );
    let listening = server.bind(addr).await?;
    Ok((server, listening))
}

#[tokio::main]
async fn main() -> Result<(), tether::Error> {
    let (_server, listening) = start_server("127.0.0.1:0").await?;
    let addr = listening.local_addr();
    let robot = Robot::builder(&format!("vsoa://{addr}"))
        .backoff(Duration::from_millis(50), Duration::from_millis(500))
        .start()?;
    let mut events = robot.events();
    let mut sub = robot.subscribe(["/status"]).await?;
    let reply = robot.call("/echo").json(&"first")?.await?;
    println!(
        "before the restart: {}",
        reply.payload.param_value().unwrap_or_default()
    );

    // The server goes away and comes back on the same address.
    listening.shutdown().await;
    println!("server stopped");
    let (server, listening) = start_server(&addr.to_string()).await?;
    println!("server restarted on {addr}");

    // Wait until the robot has noticed the loss and reconnected (and re-subscribed): the
    // events may still hold the first connection's `Connected`, so look for a
    // `Connected` after a `Disconnected`.
    let mut lost = false;
    loop {
        match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
            Ok(Ok(RobotEvent::Disconnected { reason })) => {
                println!("robot: link down: {reason}");
                lost = true;
            }
            Ok(Ok(RobotEvent::Connected { id, .. })) if lost => {
                println!("robot reconnected as client {id}");
                break;
            }
            Ok(Ok(RobotEvent::Connected { .. })) => {}
            other => panic!("no reconnect within 10 s: {other:?}"),
        }
    }
    let reply = robot.call("/echo").json(&"second")?.await?;
    println!(
        "after the restart: {}",
        reply.payload.param_value().unwrap_or_default()
    );
    server.publish("/status", Payload::json(&"ok")?).await?;
    let msg = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("a publish within 10 s")
        .expect("the subscription survived");
    println!(
        "the subscription survived: {} {}",
        msg.url,
        msg.payload.param_value().unwrap_or_default()
    );

    robot.close().await;
    listening.shutdown().await;
    println!("robot: done");
    Ok(())
}
