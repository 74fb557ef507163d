//! The gateway's HTTP side: index redirect, static files that no path escapes,
//! `Cache-Control: no-cache` everywhere, Basic auth on every route (WebSocket included),
//! and the client address from trusted proxy headers.

use std::time::Duration;

use base64::Engine;
use serde_json::json;
use tether::Server;
use tether_gateway::client::JugglerClient;
use tether_gateway::{Gateway, Htpasswd};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 GET with `headers`; (status, head, body).
async fn get(
    addr: std::net::SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, String) {
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let mut req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut raw))
        .await
        .unwrap()
        .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split(' ').nth(1).unwrap().parse().unwrap();
    (status, head.to_ascii_lowercase(), body.to_string())
}

fn site() -> std::path::PathBuf {
    let base = std::env::temp_dir().join(format!("tether-gw-site-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(base.join("site/sub")).unwrap();
    std::fs::write(base.join("site/index.html"), "<h1>hi</h1>").unwrap();
    std::fs::write(base.join("secret.txt"), "do not serve").unwrap();
    base
}

#[tokio::test]
async fn static_files_redirect_and_no_cache() {
    let base = site();
    let gw = Gateway::builder(Server::builder().build())
        .static_dir(base.join("site"))
        .build();
    let l = gw.bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr();
    let (status, head, _) = get(a, "/", &[]).await;
    assert_eq!(status, 302);
    assert!(
        head.contains("location: /index.html") && head.contains("cache-control: no-cache"),
        "{head}"
    );
    let (status, head, body) = get(a, "/index.html", &[]).await;
    assert_eq!((status, body.as_str()), (200, "<h1>hi</h1>"));
    assert!(
        head.contains("text/html") && head.contains("cache-control: no-cache"),
        "{head}"
    );
    for escape in [
        "/../secret.txt",
        "/%2e%2e/secret.txt",
        "/sub/../../secret.txt",
        "/..%2fsecret.txt",
    ] {
        let (status, _, body) = get(a, escape, &[]).await;
        assert!(
            status >= 400 && !body.contains("do not serve"),
            "{escape}: {status} {body}"
        );
    }
    let (status, head, _) = get(a, "/missing", &[]).await;
    assert_eq!(status, 404);
    assert!(head.contains("cache-control: no-cache"), "404s too: {head}");
    // A plain GET of the WebSocket path is refused.
    let (status, _, _) = get(a, "/ws", &[]).await;
    assert!(status >= 400, "{status}");
}

#[tokio::test]
async fn basic_auth_guards_every_route_and_the_websocket() {
    let base = site();
    let users = Htpasswd::parse("alice:$apr1$xyzsalt1$mdDPSoZhouTDI1GHRla8E1\n", "test").unwrap();
    let server = Server::builder().build();
    server.route("/echo", |req: tether::Request| async move {
        tether::Reply::ok(req.payload)
    });
    let gw = Gateway::builder(server)
        .static_dir(base.join("site"))
        .htpasswd(users)
        .build();
    let l = gw.bind("127.0.0.1:0").await.unwrap();
    let a = l.local_addr();
    let basic = |s: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(s)
        )
    };
    for (path, auth) in [
        ("/index.html", None),
        ("/", None),
        ("/ws", None),
        ("/index.html", Some(basic("alice:wrong"))),
        ("/index.html", Some(basic("mallory:secret"))),
        ("/index.html", Some("Basic !!!".to_string())),
        ("/index.html", Some("Bearer token".to_string())),
    ] {
        let h: Vec<(&str, &str)> = auth.iter().map(|v| ("Authorization", v.as_str())).collect();
        let (status, head, _) = get(a, path, &h).await;
        assert_eq!(status, 401, "{path} {auth:?}");
        assert!(
            head.contains("www-authenticate: basic") && head.contains("cache-control: no-cache"),
            "{head}"
        );
    }
    let (status, _, body) = get(
        a,
        "/index.html",
        &[("Authorization", &basic("alice:secret"))],
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "<h1>hi</h1>"));
    // The WebSocket: refused without credentials, served with them.
    let url = format!("ws://{a}/ws");
    let e = JugglerClient::builder(&url).connect().await.unwrap_err();
    assert!(e.to_string().contains("401"), "{e}");
    let e = JugglerClient::builder(&url)
        .basic_auth("alice", "nope")
        .connect()
        .await
        .unwrap_err();
    assert!(e.to_string().contains("401"), "{e}");
    let c = JugglerClient::builder(&url)
        .basic_auth("alice", "secret")
        .connect()
        .await
        .unwrap();
    assert_eq!(c.send("/echo", json!(1)).await, Ok(json!(1)));
}

#[tokio::test]
async fn the_remote_address_comes_from_proxy_headers_only_when_trusted() {
    for trust in [false, true] {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let gw = Gateway::builder(Server::builder().build())
            .trust_forwarded(trust)
            .on_connection(move |c| {
                let _ = tx.send(c.remote().to_string());
            })
            .build();
        let l = gw.bind("127.0.0.1:0").await.unwrap();
        let mut req =
            tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
                format!("ws://{}/ws", l.local_addr()),
            )
            .unwrap();
        req.headers_mut()
            .insert("x-forwarded-for", "10.0.0.1, 10.0.0.2".parse().unwrap());
        let (_ws, _) = tokio_tungstenite::connect_async(req).await.unwrap();
        let remote = rx.recv().await.unwrap();
        assert_eq!(remote, if trust { "10.0.0.2" } else { "127.0.0.1" });
    }
}

/// The kernel's timer on the server's end of the connection from `client` to `server`, as
/// `/proc/net/tcp` shows it ("tr": 0 none, 1 retransmit, 2 keepalive, 4 zero-window probe).
fn server_side_timer(server: std::net::SocketAddr, client: std::net::SocketAddr) -> u8 {
    let hex = |a: std::net::SocketAddr| format!(":{:04X}", a.port());
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    let row = table
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.len() > 5 && f[1].ends_with(&hex(server)) && f[2].ends_with(&hex(client)))
        .unwrap_or_else(|| panic!("no row for {server} <- {client} in\n{table}"));
    row[5].split(':').next().unwrap().parse().unwrap()
}

#[tokio::test]
async fn accepted_connections_get_keepalive_unless_it_is_turned_off() {
    for keepalive in [Some(tether::Keepalive::default()), None] {
        let gw = Gateway::builder(Server::builder().build())
            .keepalive(keepalive)
            .build();
        let l = gw.bind("127.0.0.1:0").await.unwrap();
        let tcp = tokio::net::TcpStream::connect(l.local_addr())
            .await
            .unwrap();
        let client = tcp.local_addr().unwrap();
        let (_ws, _) = tokio_tungstenite::client_async(format!("ws://{}/ws", l.local_addr()), tcp)
            .await
            .unwrap();
        // A retransmit timer (1) runs until the client's ACK of the 101 is in.
        let mut timer = server_side_timer(l.local_addr(), client);
        for _ in 0..100 {
            if timer != 1 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            timer = server_side_timer(l.local_addr(), client);
        }
        let want = if keepalive.is_some() { 2 } else { 0 };
        assert_eq!(timer, want, "keepalive {keepalive:?}");
    }
}

#[tokio::test]
async fn metrics_in_prometheus_format_for_both_sides() {
    let server = Server::builder()
        .relay(tether::server::Relay::new(["/r/"]))
        .build();
    server.route("/echo", |req: tether::Request| async move {
        tether::Reply::ok(req.payload)
    });
    let vsoa = server.bind("127.0.0.1:0").await.unwrap();
    let gw = Gateway::builder(server.clone()).build();
    let l = gw.bind("127.0.0.1:0").await.unwrap();
    // Traffic on both sides.
    let client = tether::Client::connect(&format!("vsoa://{}", vsoa.local_addr()))
        .await
        .unwrap();
    // A relayed datagram; the call after it is read after it is relayed (one connection).
    client
        .datagram("/r/x", tether::Payload::empty())
        .await
        .unwrap();
    client.call("/echo").param(&b"{}"[..]).await.unwrap();
    let ws = JugglerClient::builder(&format!("ws://{}/ws", l.local_addr()))
        .connect()
        .await
        .unwrap();
    ws.send("/echo", json!(1)).await.unwrap();
    let (status, head, body) = get(l.local_addr(), "/metrics", &[]).await;
    assert_eq!(status, 200);
    assert!(head.contains("text/plain"), "{head}");
    let value = |line_start: &str| -> f64 {
        body.lines()
            .find(|l| l.starts_with(line_start))
            .unwrap_or_else(|| panic!("no {line_start} in\n{body}"))
            .rsplit(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    assert_eq!(value("tether_vsoa_connections{state=\"all\"}"), 1.0);
    assert!(value("tether_vsoa_packets_total{direction=\"in\"}") >= 2.0);
    assert!(value("tether_vsoa_bytes_total{direction=\"out\"}") > 0.0);
    assert_eq!(
        value("tether_rpc_duration_seconds_count"),
        2.0,
        "one VSOA and one WebSocket call"
    );
    assert_eq!(
        value("tether_rpc_duration_seconds_bucket{le=\"+Inf\"}"),
        2.0
    );
    assert_eq!(value("tether_ws_connections "), 1.0);
    assert!(value("tether_ws_frames_total{direction=\"in\"}") >= 1.0);
    assert_eq!(value("tether_ws_request_duration_seconds_count"), 1.0);
    assert_eq!(value("tether_ws_queued_messages"), 0.0);
    assert_eq!(value("tether_cut_off_total"), 0.0);
    assert_eq!(
        value("tether_relay_datagrams_total{result=\"relayed\",channel=\"tcp\"}"),
        1.0
    );
    assert_eq!(
        value("tether_relay_datagrams_total{result=\"refused_rate\"}"),
        0.0
    );
    // Every sample line is `name{labels} value` or `name value`; every family has a TYPE.
    for line in body.lines().filter(|l| !l.starts_with('#')) {
        let (name, v) = line.rsplit_once(' ').unwrap();
        assert!(
            v.parse::<f64>().is_ok() && name.starts_with("tether_"),
            "{line}"
        );
    }
    assert_eq!(
        body.matches("# TYPE").count(),
        body.matches("# HELP").count()
    );
    // A protocol error is counted.
    let (mut raw, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", l.local_addr()))
        .await
        .unwrap();
    futures_util::SinkExt::send(
        &mut raw,
        tokio_tungstenite::tungstenite::Message::Text("9x".into()),
    )
    .await
    .unwrap();
    let _ = tokio::time::timeout(
        Duration::from_secs(5),
        futures_util::StreamExt::next(&mut raw),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (_, _, body) = get(l.local_addr(), "/metrics", &[]).await;
    assert!(body.contains("tether_ws_protocol_errors_total 1"), "{body}");
}
