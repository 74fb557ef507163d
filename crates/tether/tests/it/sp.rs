//! socket_protocol (docs/protocols/socket-protocol.md): services, the callback priority
//! table, authentication, channel names, the statuses answered to bad or unknown input,
//! and what happens to peers that send garbage or stop reading. Over TCP, TLS and an
//! in-memory duplex; the raw-frame tests speak the wire with `tether_wire::sp` directly.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use tether::sp::{did, sid, status, AuthState, Endpoint, Message, Peer, Role, SpError};
use tether::tls::{ClientTls, ServerTls};
use tether::Error;
use tether_testkit::{Pki, WAIT};
use tether_wire::sp::{Decoder, Item};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SHORT: Duration = Duration::from_millis(300);

/// An endpoint whose read, write and execute services echo their data.
fn echo_server() -> Endpoint {
    let e = Endpoint::new();
    for req in [sid::READ_REQUEST, sid::WRITE_REQUEST, sid::EXECUTE_REQUEST] {
        e.register_callback(req, None, |_, m: Message| async move {
            Some((status::OKAY, m.data))
        });
    }
    e
}

/// The server-side peers of a bound endpoint, as they connect.
fn capture(e: &Endpoint) -> Arc<Mutex<Vec<Peer>>> {
    let peers = Arc::new(Mutex::new(Vec::new()));
    let p = peers.clone();
    e.on_connect(move |peer| p.lock().unwrap().push(peer));
    peers
}

async fn answer(peer: &Peer, req: u32, resp: u32, did: u32, data: Value) -> Message {
    peer.send(req, did, data).await.expect("sent");
    peer.receive(resp, did, WAIT).await.expect("an answer")
}

async fn echo_round_trips(client: &Peer) {
    let big = "x".repeat(300_000);
    for (i, data) in [json!(null), json!({"a": [1, 2.5, "é"]}), json!(big)]
        .into_iter()
        .enumerate()
    {
        let got = answer(
            client,
            sid::READ_REQUEST,
            sid::READ_RESPONSE,
            i as u32,
            data.clone(),
        )
        .await;
        assert_eq!(
            (got.status, got.data_id, got.data),
            (status::OKAY, i as u32, data)
        );
    }
    // Many in flight at once, matched by did.
    for d in 100..150 {
        client
            .send(sid::EXECUTE_REQUEST, d, json!(d))
            .await
            .unwrap();
    }
    for d in (100..150).rev() {
        let got = client
            .receive(sid::EXECUTE_RESPONSE, d, WAIT)
            .await
            .expect("answer");
        assert_eq!(got.data, json!(d));
    }
}

#[tokio::test]
async fn services_answer_on_their_response_sid_over_memory_tcp_and_tls() {
    // In memory, and the server side sends to the client as well: the peer is symmetric.
    let (a, b) = tokio::io::duplex(1 << 16);
    let server_end = echo_server().over(a, Role::Server);
    let client_end = Endpoint::new();
    client_end.register_callback(sid::WRITE_REQUEST, 7, |_, m: Message| async move {
        Some((status::OKAY, json!({"client saw": m.data})))
    });
    let client = client_end.over(b, Role::Client);
    echo_round_trips(&client).await;
    let got = answer(
        &server_end,
        sid::WRITE_REQUEST,
        sid::WRITE_RESPONSE,
        7,
        json!(1),
    )
    .await;
    assert_eq!(got.data, json!({"client saw": 1}));

    // TCP.
    let l = echo_server().bind("127.0.0.1:0").await.unwrap();
    let client = Endpoint::new().connect(l.local_addr()).await.unwrap();
    echo_round_trips(&client).await;

    // TLS.
    let pki = Pki::new();
    let tls =
        ServerTls::from_pem_files(&pki.file("server.pem"), &pki.file("server.key"), None).unwrap();
    let l = echo_server().tls(tls).bind("127.0.0.1:0").await.unwrap();
    let ctls = ClientTls::from_pem_files(&pki.file("ca.pem"), None).unwrap();
    let client = Endpoint::new()
        .client_tls(ctls)
        .connect(l.local_addr())
        .await
        .unwrap();
    echo_round_trips(&client).await;
}

#[tokio::test]
async fn the_callback_priority_table_over_the_wire() {
    let server = Endpoint::new();
    server
        .add_service(50, 51, Some("motor request"), Some("motor response"))
        .unwrap();
    server.add_service(60, 61, None, None).unwrap();
    let tag = |t: &'static str| move |_, _| async move { Some((status::OKAY, json!(t))) };
    server.register_callback(None, None, tag("neither"));
    server.register_callback(None, 1, tag("did only"));
    server.register_callback(50, None, tag("sid only"));
    server.register_callback(50, 1, tag("sid and did"));
    let l = server.bind("127.0.0.1:0").await.unwrap();
    let client_end = Endpoint::new();
    client_end.add_service(50, 51, None, None).unwrap();
    client_end.add_service(60, 61, None, None).unwrap();
    let client = client_end.connect(l.local_addr()).await.unwrap();
    for (req, resp, d, want) in [
        (50, 51, 1, "sid and did"),
        (50, 51, 2, "sid only"),
        (60, 61, 1, "did only"),
        (60, 61, 2, "neither"),
    ] {
        let got = answer(&client, req, resp, d, json!(null)).await;
        assert_eq!(got.data, json!(want), "sid {req} did {d}");
    }
    // Registering the same service twice is a typed error.
    let e = server.add_service(50, 52, None, None).unwrap_err();
    assert!(matches!(e, SpError::RequestSidExists(50)), "{e}");
    let e = server.add_service(70, 61, None, None).unwrap_err();
    assert!(matches!(e, SpError::ResponseSidExists(61)), "{e}");
}

/// A server with a secret whose callbacks count how often they ran.
fn guarded(secret: &str) -> (Endpoint, Arc<AtomicU32>) {
    let e = Endpoint::new().secret(secret);
    let ran = Arc::new(AtomicU32::new(0));
    let r = ran.clone();
    e.register_callback(None, None, move |_, m: Message| {
        r.fetch_add(1, Ordering::SeqCst);
        async move { Some((status::OKAY, m.data)) }
    });
    e.add_msg_to_auth_whitelist(sid::READ_REQUEST, 9);
    (e, ran)
}

#[tokio::test]
async fn auto_auth_with_the_right_secret_trusts_both_sides() {
    let (server, ran) = guarded("s3cret");
    let peers = capture(&server);
    let l = server.bind("127.0.0.1:0").await.unwrap();
    let client = Endpoint::new()
        .secret("s3cret")
        .auto_auth(true)
        .connect(l.local_addr())
        .await
        .unwrap();
    // send waits for trust by itself.
    let got = answer(
        &client,
        sid::READ_REQUEST,
        sid::READ_RESPONSE,
        1,
        json!("hi"),
    )
    .await;
    assert_eq!((got.status, got.data), (status::OKAY, json!("hi")));
    assert_eq!(client.auth_state(), AuthState::Trusted);
    assert!(client.connection_established());
    let server_side = peers.lock().unwrap()[0].clone();
    assert_eq!(server_side.auth_state(), AuthState::Trusted);
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn before_trust_only_the_whitelist_gets_through_and_the_rest_is_status_3() {
    let (server, ran) = guarded("s3cret");
    let l = server.bind("127.0.0.1:0").await.unwrap();
    // A client without a secret cannot authenticate at all.
    let plain = Endpoint::new().connect(l.local_addr()).await.unwrap();
    let got = answer(&plain, sid::READ_REQUEST, sid::READ_RESPONSE, 1, json!("x")).await;
    assert_eq!((got.status, got.data), (status::AUTH_REQUIRED, Value::Null));
    assert_eq!(ran.load(Ordering::SeqCst), 0, "never reached a callback");
    let got = answer(&plain, sid::READ_REQUEST, sid::READ_RESPONSE, 9, json!("w")).await;
    assert_eq!(
        (got.status, got.data),
        (status::OKAY, json!("w")),
        "whitelisted"
    );
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    let e = plain.authenticate(WAIT).await.unwrap_err();
    assert!(e.to_string().contains("this side has no secret"), "{e}");

    // A client with the secret but no auto_auth: its own sends wait for trust.
    let manual = Endpoint::new()
        .secret("s3cret")
        .connect(l.local_addr())
        .await
        .unwrap();
    assert_eq!(manual.auth_state(), AuthState::Untrusted);
    let e = manual
        .send(sid::READ_REQUEST, 1, json!(1))
        .timeout(SHORT)
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Sp(SpError::NotTrusted { .. })), "{e}");
    manual.authenticate(WAIT).await.expect("trusted");
    assert_eq!(manual.auth_state(), AuthState::Trusted);
    let got = answer(&manual, sid::READ_REQUEST, sid::READ_RESPONSE, 1, json!(2)).await;
    assert_eq!(got.data, json!(2));
}

#[tokio::test]
async fn a_wrong_secret_is_refused_and_its_messages_answered_status_3() {
    let (server, ran) = guarded("s3cret");
    let peers = capture(&server);
    let l = server.bind("127.0.0.1:0").await.unwrap();
    let client = Endpoint::new()
        .secret("guess")
        .connect(l.local_addr())
        .await
        .unwrap();
    let e = client.authenticate(WAIT).await.unwrap_err();
    assert!(
        matches!(e, Error::Sp(SpError::AuthFailed(why)) if why.contains("wrong secret")),
        "{e}"
    );
    assert_eq!(client.auth_state(), AuthState::Untrusted);
    assert_eq!(peers.lock().unwrap()[0].auth_state(), AuthState::Untrusted);
    assert_eq!(peers.lock().unwrap()[0].stats().auth_failures, 1);
    assert_eq!(ran.load(Ordering::SeqCst), 0);

    // A server without a secret says so (status 6).
    let l = echo_server().bind("127.0.0.1:0").await.unwrap();
    let client = Endpoint::new()
        .secret("s")
        .connect(l.local_addr())
        .await
        .unwrap();
    let e = client.authenticate(WAIT).await.unwrap_err();
    assert!(e.to_string().contains("status 6"), "{e}");
}

type HmacSha256 = Hmac<sha2::Sha256>;

fn key_for(secret: &str, seed_hex: &str) -> String {
    let seed: Vec<u8> = (0..seed_hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&seed_hex[i..i + 2], 16).unwrap())
        .collect();
    let mut mac = HmacSha256::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(&seed);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A peer written with nothing but the codec.
struct Raw {
    stream: TcpStream,
    buf: BytesMut,
}

impl Raw {
    async fn connect(addr: SocketAddr) -> Raw {
        Raw {
            stream: TcpStream::connect(addr).await.unwrap(),
            buf: BytesMut::new(),
        }
    }

    async fn send(&mut self, m: Message) {
        self.stream.write_all(&m.to_bytes().unwrap()).await.unwrap();
    }

    /// The next item, or `None` once the server closed the connection.
    async fn next(&mut self) -> Option<Item> {
        let mut dec = Decoder::default();
        loop {
            if let Some(item) = dec.decode(&mut self.buf).unwrap() {
                return Some(item);
            }
            let n = tokio::time::timeout(WAIT, self.stream.read_buf(&mut self.buf))
                .await
                .expect("something within the wait");
            if n.map_or(true, |n| n == 0) {
                return None;
            }
        }
    }

    async fn message(&mut self) -> Message {
        match self.next().await {
            Some(Item::Message(m)) => m,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// Skips the server's answers until one on `sid`.
    async fn message_on(&mut self, service_id: u32) -> Message {
        loop {
            let m = self.message().await;
            if m.service_id == service_id {
                return m;
            }
        }
    }

    async fn seed(&mut self) -> String {
        self.send(Message::new(sid::AUTH_REQUEST, did::AUTH_SEED, Value::Null))
            .await;
        let m = self.message_on(sid::AUTH_RESPONSE).await;
        assert_eq!(m.data_id, did::AUTH_SEED);
        m.data.as_str().expect("a seed").to_string()
    }

    async fn key(&mut self, key: &str) -> Value {
        self.send(Message::new(sid::AUTH_REQUEST, did::AUTH_KEY, key.into()))
            .await;
        let m = self.message_on(sid::AUTH_RESPONSE).await;
        assert_eq!(m.data_id, did::AUTH_KEY);
        m.data
    }
}

#[tokio::test]
async fn a_replayed_key_is_refused_and_three_refusals_close_the_connection() {
    let (server, _) = guarded("s3cret");
    let l = server.bind("127.0.0.1:0").await.unwrap();
    let mut a = Raw::connect(l.local_addr()).await;
    let seed_a = a.seed().await;
    assert_eq!(seed_a.len(), 64);
    let key_a = key_for("s3cret", &seed_a);
    assert_eq!(a.key(&key_a).await, json!(true));
    a.send(Message::new(sid::READ_REQUEST, 1, json!("in")))
        .await;
    assert_eq!(a.message_on(sid::READ_RESPONSE).await.data, json!("in"));

    let mut b = Raw::connect(l.local_addr()).await;
    let seed_b = b.seed().await;
    assert_ne!(seed_a, seed_b, "a fresh seed per exchange");
    assert_eq!(
        b.key(&key_a).await,
        json!(false),
        "a key recorded elsewhere"
    );
    assert_eq!(
        b.key(&key_for("s3cret", &seed_b)).await,
        json!(false),
        "no seed pending any more"
    );
    b.send(Message::new(sid::READ_REQUEST, 1, json!("in")))
        .await;
    assert_eq!(
        b.message_on(sid::READ_RESPONSE).await.status,
        status::AUTH_REQUIRED
    );
    b.seed().await;
    assert_eq!(b.key("00").await, json!(false));
    assert_eq!(b.next().await, None, "closed after the third refusal");
}

#[tokio::test]
async fn unknown_sids_and_dids_are_status_4_and_declared_data_is_buffered() {
    let server = Endpoint::new();
    server.add_data(sid::WRITE_REQUEST, 1, "setpoint");
    let peers = capture(&server);
    let l = server.bind("127.0.0.1:0").await.unwrap();
    let mut raw = Raw::connect(l.local_addr()).await;
    raw.send(Message::new(99, 3, json!(1))).await;
    let m = raw.message().await;
    assert_eq!(
        (m.status, m.service_id, m.data_id),
        (status::SERVICE_OR_DATA_UNKNOWN, 99, 3)
    );
    raw.send(Message::new(sid::READ_REQUEST, 7, json!(1))).await;
    let m = raw.message().await;
    assert_eq!(
        (m.status, m.service_id, m.data_id),
        (status::SERVICE_OR_DATA_UNKNOWN, sid::READ_RESPONSE, 7)
    );
    // An error answer is never answered (no ping-pong between two peers).
    raw.send(Message::new(99, 3, json!(1)).with_status(status::SERVICE_OR_DATA_UNKNOWN))
        .await;
    raw.send(Message::new(sid::WRITE_REQUEST, 1, json!(42.5)))
        .await;
    let m = raw.message().await;
    assert_eq!(
        (m.status, m.service_id, m.data_id),
        (status::BUFFERING_UNHANDLED_REQUEST, sid::WRITE_RESPONSE, 1),
        "the next answer is the one to the buffered request"
    );
    let server_side = peers.lock().unwrap()[0].clone();
    let got = server_side
        .receive(sid::WRITE_REQUEST, 1, WAIT)
        .await
        .expect("buffered");
    assert_eq!(got.data, json!(42.5));
    assert_eq!(
        server_side.receive(sid::WRITE_REQUEST, 1, SHORT).await,
        None
    );
    assert_eq!(server_side.stats().unknown, 2);
}

#[tokio::test]
async fn a_failing_callback_is_status_2() {
    let server = Endpoint::new();
    server.register_callback(sid::EXECUTE_REQUEST, 1, |_, _| async { None });
    server.register_callback(sid::EXECUTE_REQUEST, 2, |_, _| async {
        panic!("a broken callback");
        #[allow(unreachable_code)]
        None
    });
    let l = server.bind("127.0.0.1:0").await.unwrap();
    let client = Endpoint::new().connect(l.local_addr()).await.unwrap();
    for d in [1, 2] {
        let got = answer(
            &client,
            sid::EXECUTE_REQUEST,
            sid::EXECUTE_RESPONSE,
            d,
            json!(null),
        )
        .await;
        assert_eq!(got.status, status::CALLBACK_ERROR, "did {d}");
    }
    // The connection survived both.
    assert!(client.is_connected());
}

fn damaged(m: &Message) -> Vec<u8> {
    let mut wire = m.to_bytes().unwrap().to_vec();
    let n = wire.len();
    wire[n - 1] ^= 0x55;
    wire
}

#[tokio::test]
async fn checksum_errors_are_status_5_and_garbage_closes_only_its_connection() {
    let l = echo_server().bind("127.0.0.1:0").await.unwrap();
    let good = Endpoint::new().connect(l.local_addr()).await.unwrap();
    let mut raw = Raw::connect(l.local_addr()).await;
    raw.stream
        .write_all(&damaged(&Message::new(sid::READ_REQUEST, 3, json!("a"))))
        .await
        .unwrap();
    let m = raw.message().await;
    assert_eq!(
        (m.status, m.service_id, m.data_id),
        (status::CHECKSUM_ERROR, sid::READ_RESPONSE, 3)
    );
    raw.send(Message::new(sid::READ_REQUEST, 4, json!("b")))
        .await;
    assert_eq!(
        raw.message().await.data,
        json!("b"),
        "in step after the damaged frame"
    );

    // A run of damaged frames closes the connection.
    for _ in 0..9 {
        raw.stream
            .write_all(&damaged(&Message::new(sid::READ_REQUEST, 3, json!("a"))))
            .await
            .unwrap();
    }
    let mut answers = 0;
    while let Some(item) = raw.next().await {
        assert!(matches!(item, Item::Message(m) if m.status == status::CHECKSUM_ERROR));
        answers += 1;
    }
    assert_eq!(answers, 8, "closed at the ninth");

    // Not socket_protocol at all, an absurd length, an intact but malformed body.
    let mut malformed = b"SP\0\0\0\x02[]".to_vec();
    malformed.extend_from_slice(&tether_wire::sp::crc32(b"[]").to_be_bytes());
    for bytes in [
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        b"SP\x7f\xff\xff\xff".to_vec(),
        malformed,
    ] {
        let mut raw = Raw::connect(l.local_addr()).await;
        raw.stream.write_all(&bytes).await.unwrap();
        assert_eq!(
            raw.next().await,
            None,
            "closed: {:?}",
            String::from_utf8_lossy(&bytes)
        );
    }
    let got = answer(
        &good,
        sid::READ_REQUEST,
        sid::READ_RESPONSE,
        1,
        json!("still"),
    )
    .await;
    assert_eq!(got.data, json!("still"), "the good client never noticed");
}

#[tokio::test]
async fn a_peer_that_stops_reading_is_cut_off_and_slows_nobody_else() {
    let server = echo_server().write_timeout(SHORT);
    let peers = capture(&server);
    let l = server.bind("127.0.0.1:0").await.unwrap();
    let good = Endpoint::new().connect(l.local_addr()).await.unwrap();
    answer(
        &good,
        sid::READ_REQUEST,
        sid::READ_RESPONSE,
        1,
        json!("first"),
    )
    .await;
    let mut stuck = TcpStream::connect(l.local_addr()).await.unwrap();
    let big = Message::new(sid::READ_REQUEST, 1, json!("y".repeat(64 << 10)))
        .to_bytes()
        .unwrap();
    // Requests whose answers it never reads: the server's writes stall, then it cuts.
    let flood = tokio::spawn(async move {
        for _ in 0..2000 {
            if stuck.write_all(&big).await.is_err() {
                break;
            }
        }
        stuck
    });
    let stuck_peer = loop {
        if let Some(p) = peers.lock().unwrap().get(1) {
            break p.clone();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let reason = tokio::time::timeout(WAIT, stuck_peer.closed())
        .await
        .unwrap();
    assert!(reason.is_slow_consumer(), "{reason}");
    let got = answer(
        &good,
        sid::READ_REQUEST,
        sid::READ_RESPONSE,
        2,
        json!("fine"),
    )
    .await;
    assert_eq!(got.data, json!("fine"));
    drop(flood.await);
}

#[tokio::test]
async fn channel_names_the_clients_wins() {
    let server = echo_server().channel_name("tower");
    let peers = capture(&server);
    let l = server.bind("127.0.0.1:0").await.unwrap();
    let ground = Endpoint::new()
        .channel_name("ground")
        .connect(l.local_addr())
        .await
        .unwrap();
    answer(&ground, sid::READ_REQUEST, sid::READ_RESPONSE, 1, json!(1)).await;
    let anonymous = Endpoint::new().connect(l.local_addr()).await.unwrap();
    answer(
        &anonymous,
        sid::READ_REQUEST,
        sid::READ_RESPONSE,
        1,
        json!(1),
    )
    .await;
    let names: Vec<_> = peers
        .lock()
        .unwrap()
        .iter()
        .map(Peer::channel_name)
        .collect();
    assert_eq!(names, [Some("ground".into()), Some("tower".into())]);
    assert_eq!(ground.channel_name().as_deref(), Some("ground"));
    assert_eq!(
        anonymous.channel_name().as_deref(),
        Some("tower"),
        "takes the server's"
    );
}

#[tokio::test]
async fn a_client_reconnects_and_authenticates_again() {
    let (server, _) = guarded("k");
    let l = server.bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr();
    let client = Endpoint::new()
        .secret("k")
        .auto_auth(true)
        .connect(addr)
        .await
        .unwrap();
    answer(&client, sid::READ_REQUEST, sid::READ_RESPONSE, 1, json!(1)).await;
    l.shutdown().await;
    tokio::time::timeout(WAIT, async {
        while client.is_connected() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the client notices the server is gone");
    let e = client
        .send(sid::READ_REQUEST, 2, json!(2))
        .timeout(SHORT)
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::Sp(SpError::NotConnected { .. } | SpError::NotTrusted { .. })
        ),
        "{e}"
    );
    assert_eq!(client.receive(sid::READ_RESPONSE, 2, SHORT).await, None);
    let (server, _) = guarded("k");
    let _l = server.bind(addr).await.unwrap();
    let got = tokio::time::timeout(WAIT, async {
        client
            .send(sid::READ_REQUEST, 3, json!(3))
            .timeout(WAIT)
            .await
            .unwrap();
        client.receive(sid::READ_RESPONSE, 3, WAIT).await
    })
    .await
    .unwrap()
    .expect("answered after the reconnect");
    assert_eq!(got.data, json!(3));
    assert!(client.is_trusted());
    client.close();
    assert_eq!(client.closed().await, tether::CloseReason::Closed);
    let e = client
        .send(sid::READ_REQUEST, 4, json!(4))
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Sp(SpError::Closed)), "{e}");
}

#[tokio::test]
async fn a_full_receive_buffer_drops_the_oldest_and_counts_it() {
    let server = Endpoint::new().receive_buffer(3);
    server.add_data(sid::WRITE_REQUEST, 1, "sample");
    let peers = capture(&server);
    let l = server.bind("127.0.0.1:0").await.unwrap();
    let client = Endpoint::new().connect(l.local_addr()).await.unwrap();
    for i in 0..5 {
        client.send(sid::WRITE_REQUEST, 1, json!(i)).await.unwrap();
        client
            .receive(sid::WRITE_RESPONSE, 1, WAIT)
            .await
            .expect("status 1");
    }
    let server_side = peers.lock().unwrap()[0].clone();
    assert_eq!(server_side.stats().dropped, 2);
    for want in 2..5 {
        let got = server_side
            .receive(sid::WRITE_REQUEST, 1, WAIT)
            .await
            .unwrap();
        assert_eq!(got.data, json!(want));
    }
}

#[tokio::test]
async fn the_bridge_reaches_vsoa_routes_and_publishes() {
    use tether::sp::tether_sid::*;
    let server = tether::Server::builder().build();
    server.route("/echo", |req: tether::Request| async move {
        tether::Reply::ok(req.payload)
    });
    server.route("/whoami", |req: tether::Request| async move {
        tether::Reply::ok(
            tether::Payload::json(&json!({"from": req.client.addr().ip().to_string()})).unwrap(),
        )
    });
    let sp_end = echo_server();
    sp_end.bridge(&server).unwrap();
    assert!(matches!(
        sp_end.bridge(&server),
        Err(SpError::RequestSidExists(ROUTE_REQUEST))
    ));
    let l = sp_end.bind("127.0.0.1:0").await.unwrap();
    let client_end = Endpoint::new();
    client_end
        .bridge(&tether::Server::builder().build())
        .unwrap();
    let client = client_end.connect(l.local_addr()).await.unwrap();

    let call = |d: u32, data: Value| {
        let client = client.clone();
        async move { answer(&client, ROUTE_REQUEST, ROUTE_RESPONSE, d, data).await }
    };
    let got = call(1, json!({"route": "/echo", "param": {"a": [1, "é"]}})).await;
    assert_eq!(
        (got.status, got.data),
        (status::OKAY, json!({"a": [1, "é"]}))
    );
    let got = call(2, json!("SET /echo")).await;
    assert_eq!((got.status, got.data), (status::OKAY, Value::Null));
    let got = call(3, json!("/whoami")).await;
    assert_eq!(got.data, json!({"from": "127.0.0.1"}));
    let got = call(4, json!({"route": "/nobody"})).await;
    assert_eq!(got.status, status::SERVICE_OR_DATA_UNKNOWN);
    assert_eq!(got.data["vsoa_status"], json!(3));
    let got = call(5, json!({"route": "echo"})).await;
    assert_eq!(got.status, status::SERVICE_OR_DATA_UNKNOWN);
    let got = call(6, json!(17)).await;
    assert_eq!(got.status, status::CALLBACK_ERROR);

    let sub = answer(
        &client,
        SUBSCRIBE_REQUEST,
        SUBSCRIBE_RESPONSE,
        0,
        json!(["/a/", "/a/x"]),
    )
    .await;
    assert_eq!(sub.status, status::OKAY);
    for i in 0..100 {
        let url = if i % 2 == 0 { "/a/x" } else { "/a" };
        let report = server
            .publish(url, tether::Payload::json(&i).unwrap())
            .await
            .unwrap();
        assert_eq!(report.delivered, 1);
    }
    server
        .publish("/ab", tether::Payload::json(&"no").unwrap())
        .await
        .unwrap();
    for i in 0..100 {
        let m = client.receive(PUBLISH, 0, WAIT).await.expect("a publish");
        let url = if i % 2 == 0 { "/a/x" } else { "/a" };
        assert_eq!(
            m.data,
            json!({"url": url, "param": i, "quick": false}),
            "once each, in order"
        );
    }
    let unsub = answer(
        &client,
        SUBSCRIBE_REQUEST,
        SUBSCRIBE_RESPONSE,
        1,
        json!(["/a/", "/a/x"]),
    )
    .await;
    assert_eq!(unsub.status, status::OKAY);
    let report = server
        .publish("/a/x", tether::Payload::json(&1).unwrap())
        .await
        .unwrap();
    assert_eq!(report.delivered, 0);
    assert_eq!(client.receive(PUBLISH, 0, SHORT).await, None);
}
