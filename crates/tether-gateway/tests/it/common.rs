//! Helpers for the gateway's tests: everything generic comes from `tether_testkit`.

pub(crate) use tether_testkit::*;

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
