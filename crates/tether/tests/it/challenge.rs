//! Challenge login end to end: our client and server, raw peers for the bad cases.

use crate::common::*;
use tether::{Client, Error, Server, Status};
use tether_wire::vsoa::{Packet, PacketType};

fn servinfo(param: serde_json::Value) -> Packet {
    Packet::new(PacketType::ServInfo).with_param(serde_json::to_vec(&param).unwrap())
}

/// Asks for a challenge on a raw connection and returns the seed.
async fn challenge(c: &mut Raw) -> Vec<u8> {
    c.send(&servinfo(serde_json::json!({"challenge": "hmac-sha256"})))
        .await;
    let reply = c.expect().await;
    assert_eq!(
        (reply.status, reply.data.len()),
        (Status::SUCCESS, 0),
        "a seed, no id yet"
    );
    let v: serde_json::Value = serde_json::from_slice(&reply.param).unwrap();
    let hex = v["seed"].as_str().unwrap();
    assert_eq!(hex.len(), 64);
    (0..64)
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect()
}

fn answer(secret: &str, seed: &[u8]) -> Packet {
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(seed);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    servinfo(serde_json::json!({ "response": hex }))
}

#[tokio::test]
async fn our_client_logs_in_with_a_secret_that_never_crosses_the_wire() {
    let (_s, l) = start(Server::builder().secret("s3cret")).await;
    let c = Client::connect(&url(&l)).secret("s3cret").await.unwrap();
    c.ping(WAIT).await.unwrap();
    let e = Client::connect(&url(&l)).secret("wrong").await.unwrap_err();
    assert!(matches!(e, Error::WrongSecret { .. }), "{e}");
    // A secret-only server takes no plain login, with or without a password.
    assert!(matches!(
        Client::connect(&url(&l)).await,
        Err(Error::WrongPassword { .. })
    ));
    assert!(matches!(
        Client::connect(&url(&l)).password("s3cret").await,
        Err(Error::WrongPassword { .. })
    ));
    // A server without a secret refuses the challenge.
    let (_p, plain) = start(Server::builder().password("pw")).await;
    let e = Client::connect(&url(&plain))
        .secret("pw")
        .await
        .unwrap_err();
    assert!(matches!(e, Error::WrongSecret { .. }), "{e}");
}

#[tokio::test]
async fn passwords_and_challenges_side_by_side_or_challenge_required() {
    let (_s, l) = start(Server::builder().password("pw").secret("sec")).await;
    Client::connect(&url(&l)).password("pw").await.unwrap();
    Client::connect(&url(&l)).secret("sec").await.unwrap();
    let (_r, strict) = start(
        Server::builder()
            .password("pw")
            .secret("sec")
            .require_secret(true),
    )
    .await;
    assert!(matches!(
        Client::connect(&url(&strict)).password("pw").await,
        Err(Error::WrongPassword { .. })
    ));
    Client::connect(&url(&strict)).secret("sec").await.unwrap();
}

#[tokio::test]
async fn a_replayed_answer_fails_on_a_new_connection() {
    let (_s, l) = start(Server::builder().secret("k")).await;
    let mut first = Raw::connect(l.local_addr()).await;
    let seed = challenge(&mut first).await;
    let recorded = answer("k", &seed);
    first.send(&recorded).await;
    assert_eq!(
        first.expect().await.data.len(),
        4,
        "logged in: the reply carries the id"
    );
    // An eavesdropper replays the recorded answer on its own connection.
    let mut replay = Raw::connect(l.local_addr()).await;
    let other_seed = challenge(&mut replay).await;
    assert_ne!(seed, other_seed, "every connection gets a fresh seed");
    replay.send(&recorded).await;
    let got = replay.expect_close().await;
    assert_eq!(got.len(), 1);
    assert_eq!(
        (got[0].ptype, got[0].status),
        (PacketType::ServInfo, Status::PASSWORD)
    );
}

#[tokio::test]
async fn wrong_answers_and_answers_out_of_turn_close_the_connection() {
    let (_s, l) = start(Server::builder().secret("k")).await;
    // Wrong answer.
    let mut c = Raw::connect(l.local_addr()).await;
    let seed = challenge(&mut c).await;
    c.send(&answer("not-k", &seed)).await;
    assert_eq!(c.expect_close().await[0].status, Status::PASSWORD);
    // An answer without a challenge.
    let mut c = Raw::connect(l.local_addr()).await;
    c.send(&answer("k", &[0; 32])).await;
    assert_eq!(c.expect_close().await[0].status, Status::PASSWORD);
    // An RPC while the challenge is open.
    let mut c = Raw::connect(l.local_addr()).await;
    challenge(&mut c).await;
    c.send(&rpc("/echo", 3)).await;
    let got = c.expect_close().await;
    assert_eq!(
        (got[0].ptype, got[0].seqno, got[0].status),
        (PacketType::Rpc, 3, Status::PASSWORD)
    );
}

#[tokio::test]
async fn the_right_answer_sent_twice_gains_nothing() {
    let (_s, l) = start(Server::builder().secret("k")).await;
    let mut c = Raw::connect(l.local_addr()).await;
    let seed = challenge(&mut c).await;
    let good = answer("k", &seed);
    let mut twice = good.to_bytes().unwrap().to_vec();
    twice.extend_from_slice(&good.to_bytes().unwrap());
    c.send_bytes(&twice).await;
    let first = c.expect().await;
    let second = c.expect().await;
    // Logged in once; the repeat is an ordinary repeated SERVINFO (same id, no new login).
    assert_eq!(first.data.len(), 4);
    assert_eq!(second.data, first.data);
    c.ping_barrier(9).await;
}

#[test]
fn secrets_never_show_in_debug_output() {
    let server = Server::builder()
        .password("hunter2")
        .secret("topsecret")
        .build();
    let shown = format!("{server:?}");
    assert!(
        !shown.contains("hunter2") && !shown.contains("topsecret"),
        "{shown}"
    );
    let connect = Client::connect("vsoa://127.0.0.1:1")
        .password("hunter2")
        .secret("topsecret");
    let shown = format!("{connect:?}");
    assert!(
        !shown.contains("hunter2") && !shown.contains("topsecret"),
        "{shown}"
    );
}
