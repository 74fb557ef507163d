//! One set of connection options for every way of connecting: a robot and a one-shot fetch
//! get the challenge secret, TLS and position servers exactly as a client does.

use std::collections::HashMap;

use crate::common::*;
use tether::client::ConnectOptions;
use tether::position::{Entry, PositionServer};
use tether::tls::{ClientTls, ServerTls};
use tether::{fetch, Error, Robot, Server};
use tether_testkit::Pki;

fn tls_pair(pki: &Pki) -> (ServerTls, ClientTls) {
    let server = ServerTls::from_pem_files(&pki.file("server.pem"), &pki.file("server.key"), None)
        .expect("server TLS");
    let client = ClientTls::from_pem_files(&pki.file("ca.pem"), None).expect("client TLS");
    (server, client)
}

#[tokio::test]
async fn a_robot_and_a_fetch_log_in_with_a_challenge_secret() {
    let (_s, l) = start(Server::builder().secret("s3cret")).await;
    let options = ConnectOptions::default().secret("s3cret");
    let robot = Robot::builder(&url(&l))
        .options(options.clone())
        .start()
        .unwrap();
    let reply = robot.call("/echo").json(&1).unwrap().await.unwrap();
    assert_eq!(reply.payload.param_value(), Some(serde_json::json!(1)));
    robot.close().await;

    let echo = format!("{}/echo", url(&l));
    let reply = fetch(&echo)
        .options(options)
        .json(&2)
        .unwrap()
        .await
        .unwrap();
    assert_eq!(reply.payload.param_value(), Some(serde_json::json!(2)));
    let e = fetch(&echo).secret("wrong").await.unwrap_err();
    assert!(matches!(e, Error::WrongSecret { .. }), "{e}");
}

#[tokio::test]
async fn a_robot_and_a_fetch_connect_over_tls() {
    let pki = Pki::new();
    let (server_tls, client_tls) = tls_pair(&pki);
    let (_s, l) = start(Server::builder().tls(server_tls)).await;
    let robot = Robot::builder(&url(&l))
        .tls(client_tls.clone())
        .start()
        .unwrap();
    let reply = robot.call("/echo").json(&"tls").unwrap().await.unwrap();
    assert_eq!(reply.payload.param_value(), Some(serde_json::json!("tls")));
    robot.close().await;

    let echo = format!("{}/echo", url(&l));
    let reply = fetch(&echo).tls(client_tls).json(&3).unwrap().await;
    assert_eq!(
        reply.unwrap().payload.param_value(),
        Some(serde_json::json!(3))
    );
    // Without TLS options the same fetch cannot log in to a TLS server.
    assert!(fetch(&echo).connect_timeout(WAIT).await.is_err());
}

#[tokio::test]
async fn a_name_that_resolves_to_a_tls_server_connects_with_tls_options_and_says_so_without() {
    let pki = Pki::new();
    let (server_tls, client_tls) = tls_pair(&pki);
    let (_s, l) = start(Server::builder().tls(server_tls)).await;
    let table = HashMap::from([(
        "secure".to_string(),
        Entry {
            addr: l.local_addr().ip(),
            port: l.local_addr().port(),
            security: true,
        },
    )]);
    let position = PositionServer::new(table);
    let pos = position.bind("127.0.0.1:0").await.unwrap();
    let options = ConnectOptions::default().position_servers(vec![pos.local_addr()]);

    let e = tether::Client::connect("vsoa://secure/")
        .options(options.clone())
        .await
        .unwrap_err();
    assert!(
        e.to_string().contains("connect with TLS options"),
        "the error says what to do: {e}"
    );
    let client = tether::Client::connect("vsoa://secure/")
        .options(options.tls(client_tls))
        .await
        .unwrap();
    client.ping(WAIT).await.unwrap();
    assert!(client.peer_certificate().is_some());
}
