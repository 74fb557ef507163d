//! The robot: reconnects, re-subscribes, pings, turbo; and the one-shot fetch.

use std::time::Duration;

use crate::common::*;
use bytes::BytesMut;
use serde_json::json;
use tether::{ClientEvent, Error, Payload, Reply, Request, Robot, RobotEvent, Server, Status};
use tether_wire::vsoa::{Decoder, Packet, PacketType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::{broadcast, mpsc};

async fn next_event(events: &mut broadcast::Receiver<RobotEvent>) -> RobotEvent {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("robot event in time")
        .unwrap()
}

async fn until_connected(events: &mut broadcast::Receiver<RobotEvent>) {
    loop {
        if let RobotEvent::Connected { .. } = next_event(events).await {
            return;
        }
    }
}

fn fast_robot(url: &str) -> Robot {
    Robot::builder(url)
        .backoff(Duration::from_millis(10), Duration::from_millis(100))
        .ping_interval(Duration::from_millis(500))
        .start()
        .unwrap()
}

#[tokio::test]
async fn survives_a_server_restart_and_resubscribes() {
    let (server, l) = start(Server::builder()).await;
    let addr = l.local_addr();
    let robot = fast_robot(&url(&l));
    let mut events = robot.events();
    until_connected(&mut events).await;
    let mut sub = robot.subscribe(["/a/"]).await.unwrap();
    server.publish("/a/1", Payload::raw("1")).await.unwrap();
    assert_eq!(sub.next().await.unwrap().url, "/a/1");

    l.shutdown().await;
    assert!(matches!(
        next_event(&mut events).await,
        RobotEvent::Disconnected { .. }
    ));
    // A brand-new server on the same address: nothing carries over but the robot's state.
    let server2 = with_datagram_echo(Server::builder()).build();
    install_routes(&server2);
    let _l2 = server2.bind(addr).await.unwrap();
    until_connected(&mut events).await;
    assert!(
        server2.is_subscribed("/a/2"),
        "re-subscribed before announcing the link"
    );
    server2.publish("/a/2", Payload::raw("2")).await.unwrap();
    assert_eq!(
        tokio::time::timeout(WAIT, sub.next())
            .await
            .unwrap()
            .unwrap()
            .url,
        "/a/2"
    );
    drop(server);
}

#[tokio::test]
async fn calls_fail_at_disconnect_and_wait_for_the_link_when_down() {
    let (server, l) = start(Server::builder()).await;
    server.route("/never", |_r: Request| async move {
        std::future::pending::<()>().await;
        Reply::empty()
    });
    let addr = l.local_addr();
    let robot = fast_robot(&url(&l));
    let mut events = robot.events();
    until_connected(&mut events).await;
    let pending = {
        let robot = robot.clone();
        tokio::spawn(async move {
            robot
                .call("/never")
                .timeout(Duration::from_secs(3600))
                .await
        })
    };
    robot.call("/echo").await.unwrap(); // /never was sent before this
    l.shutdown().await;
    let res = tokio::time::timeout(WAIT, pending).await.unwrap().unwrap();
    assert!(matches!(res, Err(Error::Closed { .. })), "{res:?}");
    assert!(matches!(
        next_event(&mut events).await,
        RobotEvent::Disconnected { .. }
    ));

    // While down: a short call gives up with NoLink, a patient one waits for the link.
    let e = robot
        .call("/echo")
        .timeout(Duration::from_millis(50))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::NoLink { .. }), "{e}");
    let patient = {
        let robot = robot.clone();
        tokio::spawn(async move {
            robot
                .call("/echo")
                .json(&"back")
                .unwrap()
                .timeout(WAIT)
                .await
        })
    };
    let server2 = Server::builder().build();
    install_routes(&server2);
    let _l2 = server2.bind(addr).await.unwrap();
    let r = tokio::time::timeout(WAIT, patient)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(r.payload.param_value(), Some(json!("back")));
}

/// A server that completes the handshake and then answers nothing; reports NOOPs seen.
async fn deaf_server() -> (std::net::SocketAddr, mpsc::UnboundedReceiver<PacketType>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut buf = BytesMut::new();
                let mut dec = Decoder::new();
                loop {
                    while let Ok(Some(p)) = dec.decode(&mut buf) {
                        if p.ptype == PacketType::ServInfo {
                            let reply = Packet::reply_to(&p, Status::SUCCESS)
                                .with_data(vec![0u8, 0, 0, 9])
                                .to_bytes()
                                .unwrap();
                            let _ = s.write_all(&reply).await;
                        } else {
                            let _ = tx.send(p.ptype);
                        }
                    }
                    match s.read_buf(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                }
            });
        }
    });
    (addr, rx)
}

#[tokio::test]
async fn unanswered_pings_drop_the_link_and_it_comes_back() {
    let (addr, _seen) = deaf_server().await;
    let robot = Robot::builder(&format!("vsoa://{addr}"))
        .ping_interval(Duration::from_millis(30))
        .ping_lost(2)
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
        .start()
        .unwrap();
    let mut events = robot.events();
    until_connected(&mut events).await;
    match next_event(&mut events).await {
        RobotEvent::Disconnected { reason } => assert!(
            reason.contains("3 consecutive pings unanswered"),
            "{reason}"
        ),
        other => panic!("expected a disconnect, got {other:?}"),
    }
    until_connected(&mut events).await;
}

#[tokio::test]
async fn turbo_sends_noops_while_calls_are_pending() {
    let (addr, mut seen) = deaf_server().await;
    let robot = Robot::builder(&format!("vsoa://{addr}"))
        .ping_interval(Duration::from_secs(3600))
        .turbo(Duration::from_millis(20))
        .start()
        .unwrap();
    let mut events = robot.events();
    until_connected(&mut events).await;
    let _call = {
        let robot = robot.clone();
        tokio::spawn(async move { robot.call("/x").timeout(WAIT).await })
    };
    let mut noops = 0;
    while noops < 3 {
        match tokio::time::timeout(WAIT, seen.recv())
            .await
            .unwrap()
            .unwrap()
        {
            PacketType::Noop => noops += 1,
            PacketType::Rpc => {}
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn dropping_the_robot_closes_its_connection() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (_s, l) = start(Server::builder().on_client(move |ev| {
        let _ = tx.send(matches!(ev, ClientEvent::Connected(_)));
    }))
    .await;
    let robot = fast_robot(&url(&l));
    assert!(
        tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .unwrap(),
        "connected"
    );
    drop(robot);
    assert!(
        !tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .unwrap(),
        "disconnected"
    );
}

#[tokio::test]
async fn fetch_is_a_one_shot_call() {
    let (_s, l) = start(Server::builder().password("pw")).await;
    let r = tether::fetch(&format!("{}/echo", url(&l)))
        .password("pw")
        .json(&json!({"one": "shot"}))
        .unwrap()
        .await
        .unwrap();
    assert_eq!(r.payload.param_value(), Some(json!({"one": "shot"})));
    let e = tether::fetch(&format!("{}/echo", url(&l)))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::WrongPassword { .. }));
}
