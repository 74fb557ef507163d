//! Helpers for the gateway's tests: everything generic comes from `tether_testkit`.

pub(crate) use tether_testkit::*;

use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message as Ws;

/// A raw WebSocket client, for sending exactly the frames under test.
pub(crate) type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// `f`, which must finish within [`WAIT`].
pub(crate) async fn t<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(WAIT, f).await.expect("in time")
}

/// The next text frame (WebSocket-level pings skipped).
pub(crate) async fn text(ws: &mut Socket) -> String {
    loop {
        match t(ws.next()).await {
            Some(Ok(Ws::Text(s))) => return s.to_string(),
            Some(Ok(Ws::Ping(_) | Ws::Pong(_))) => continue,
            other => panic!("expected a text frame, got {other:?}"),
        }
    }
}

/// The server's close frame: code and reason.
pub(crate) async fn closed(ws: &mut Socket) -> (CloseCode, String) {
    loop {
        match t(ws.next()).await {
            Some(Ok(Ws::Close(Some(f)))) => return (f.code, f.reason.to_string()),
            Some(Ok(Ws::Text(s))) => panic!("expected a close, got {s}"),
            Some(Ok(_)) => continue,
            other => panic!("expected a close frame, got {other:?}"),
        }
    }
}

/// A gateway over TLS (the test PKI's server certificate) with an `/echo` route, and the
/// PKI (its `ca.pem` is the CA to trust).
pub(crate) async fn tls_echo_gateway() -> (tether::Listening, Pki) {
    let pki = Pki::new();
    let server = tether::Server::builder().build();
    server.route("/echo", |req: tether::Request| async move {
        tether::Reply::ok(req.payload)
    });
    let tls = tether::tls::ServerTls::from_pem_files(
        &pki.file("server.pem"),
        &pki.file("server.key"),
        None,
    )
    .expect("server TLS");
    let listening = tether_gateway::Gateway::builder(server)
        .tls(tls)
        .build()
        .bind("127.0.0.1:0")
        .await
        .expect("bind");
    (listening, pki)
}
