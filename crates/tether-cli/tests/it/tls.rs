//! TLS and mutual TLS: our server and client, streams, bad certificates, wrong protocols.

use std::path::Path;
use std::time::Duration;

use crate::common::*;
use tether::tls::{ClientTls, ServerTls};
use tether::{Client, Error, Mode, Reply, Request, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn server_tls(pki: &Pki, cert: &str, mutual: bool) -> ServerTls {
    let ca = pki.path("ca.pem");
    ServerTls::from_pem_files(
        Path::new(&pki.path(&format!("{cert}.pem"))),
        Path::new(&pki.path(&format!("{cert}.key"))),
        mutual.then_some(Path::new(&ca)),
    )
    .unwrap()
}

fn client_tls(pki: &Pki, ca: &str, cert: Option<&str>) -> ClientTls {
    let (c, k) = cert
        .map(|c| (pki.path(&format!("{c}.pem")), pki.path(&format!("{c}.key"))))
        .unzip();
    ClientTls::from_pem_files(
        Path::new(&pki.path(ca)),
        c.as_deref().map(Path::new).zip(k.as_deref().map(Path::new)),
    )
    .unwrap()
}

/// A TLS server with `/echo`, `/whoami` (the client certificate's subject) and a stream echo.
async fn tls_server(pki: &Pki, cert: &str, mutual: bool) -> (Server, tether::Listening) {
    let server = Server::builder().tls(server_tls(pki, cert, mutual)).build();
    server.route_with("/echo", Mode::Inline, |r: Request| async move {
        Reply::ok(r.payload)
    });
    server.route("/whoami", |r: Request| async move {
        let subject = r.client.peer_certificate().map(|c| c.subject.clone());
        Reply::json(&subject).unwrap()
    });
    server.route("/stream/echo", |r: Request| async move {
        r.with_stream(Reply::empty(), |s| async move {
            let (mut rd, mut wr) = tokio::io::split(s);
            let _ = tokio::io::copy(&mut rd, &mut wr).await;
            let _ = wr.shutdown().await;
        })
        .await
    });
    let l = server.bind("127.0.0.1:0").await.unwrap();
    (server, l)
}

fn url(l: &tether::Listening) -> String {
    format!("vsoa://{}", l.local_addr())
}

#[tokio::test]
async fn one_way_tls_rpc_streams_and_no_quick_channel() {
    let pki = Pki::new();
    let (_s, l) = tls_server(&pki, "server", false).await;
    let c = Client::connect(&url(&l))
        .tls(client_tls(&pki, "ca.pem", None))
        .await
        .unwrap();
    let cert = c.peer_certificate().expect("the server's certificate");
    assert!(
        cert.subject.contains("tether-test-server") && cert.issuer.contains("Tether Test CA"),
        "{cert:?}"
    );
    assert!(cert.not_before < std::time::SystemTime::now() && !cert.der.is_empty());
    // The fields Python's getpeercert() gives, as Python's ssl decodes the same file.
    let decode = "import json, ssl, sys; d = ssl._ssl._test_decode_cert(sys.argv[1]); \
                  print(json.dumps([d['version'], d['serialNumber'], d.get('subjectAltName')]))";
    let out = python()
        .args(["-c", decode])
        .arg(pki.dir.join("server.pem"))
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let py: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let sans: Vec<serde_json::Value> = cert
        .subject_alt_names
        .iter()
        .map(|n| match n {
            tether::tls::SubjectAltName::Dns(d) => serde_json::json!(["DNS", d]),
            tether::tls::SubjectAltName::Ip(ip) => {
                serde_json::json!(["IP Address", ip.to_string()])
            }
            other => serde_json::json!(["?", format!("{other:?}")]),
        })
        .collect();
    assert_eq!(
        serde_json::json!([cert.version, cert.serial_number, sans]),
        py,
        "the same fields as Python reads"
    );
    let r = c.call("/echo").json(&"over tls").unwrap().await.unwrap();
    assert_eq!(r.payload.param_value(), Some(serde_json::json!("over tls")));
    assert_eq!(
        c.call("/whoami").await.unwrap().payload.param_value(),
        Some(serde_json::Value::Null)
    );
    assert!(matches!(
        c.datagram_quick("/d", tether::Payload::empty()).await,
        Err(Error::NoQuickChannel)
    ));
    tokio::net::UdpSocket::bind(l.local_addr())
        .await
        .expect("no UDP socket under TLS");
    // Streams are TLS too.
    let r = c.call("/stream/echo").await.unwrap();
    let mut s = c.connect_stream(r.tunid).await.unwrap();
    assert!(s.is_tls());
    s.write_all(b"secret bytes").await.unwrap();
    s.shutdown().await.unwrap();
    let mut back = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut back))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back, b"secret bytes");
}

#[tokio::test]
async fn mutual_tls_needs_a_client_certificate_from_the_ca() {
    let pki = Pki::new();
    let (_s, l) = tls_server(&pki, "server", true).await;
    let c = Client::connect(&url(&l))
        .tls(client_tls(&pki, "ca.pem", Some("client")))
        .await
        .unwrap();
    let who = c
        .call("/whoami")
        .await
        .unwrap()
        .payload
        .param_value()
        .unwrap();
    assert!(
        who.as_str().unwrap().contains("drone-7"),
        "handlers see the client certificate: {who}"
    );
    for cert in [None, Some("other-client")] {
        let e = Client::connect(&url(&l))
            .tls(client_tls(&pki, "ca.pem", cert))
            .timeout(Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(e, Error::Tls(tether::tls::TlsError::Handshake { .. })),
            "{cert:?}: {e}"
        );
    }
}

#[tokio::test]
async fn bad_server_certificates_fail_with_clear_errors() {
    let pki = Pki::new();
    let (_s, good) = tls_server(&pki, "server", false).await;
    let (_e, expired) = tls_server(&pki, "expired", false).await;
    let cases = [
        (
            &good,
            client_tls(&pki, "other-ca.pem", None),
            "UnknownIssuer",
        ),
        (
            &expired,
            client_tls(&pki, "ca.pem", None),
            "certificate expired",
        ),
        (
            &good,
            client_tls(&pki, "ca.pem", None).server_name("other.example"),
            "not valid for name",
        ),
    ];
    for (l, tls, want) in cases {
        let e = Client::connect(&url(l)).tls(tls).await.unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("TLS handshake with") && text.contains(want),
            "{text}"
        );
    }
}

#[tokio::test]
async fn wrong_protocols_and_stalled_handshakes_are_closed() {
    let pki = Pki::new();
    let server = Server::builder()
        .tls(server_tls(&pki, "server", false))
        .handshake_timeout(Duration::from_millis(200))
        .build();
    let l = server.bind("127.0.0.1:0").await.unwrap();
    // Plain VSOA to the TLS port.
    let plain = Client::connect(&url(&l))
        .timeout(Duration::from_secs(5))
        .await
        .unwrap_err();
    assert!(matches!(plain, Error::Malformed { .. }), "{plain}");
    // A TCP connection that never starts its handshake.
    let mut idle = tokio::net::TcpStream::connect(l.local_addr())
        .await
        .unwrap();
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(WAIT, idle.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "closed after the handshake timeout");
    // TLS to a plain port.
    let plain_server = Server::builder().build();
    let pl = plain_server.bind("127.0.0.1:0").await.unwrap();
    let e = Client::connect(&url(&pl))
        .tls(client_tls(&pki, "ca.pem", None))
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Tls(tether::tls::TlsError::Handshake { .. })),
        "{e}"
    );
}

async fn python_tls_client(port: u16, pki: &Pki, cert: Option<&str>, expect_fail: bool) {
    let mut cmd = tokio::process::Command::new(python_path());
    cmd.current_dir(workspace().join("interop/py"))
        .arg("tls_client.py")
        .arg(port.to_string())
        .arg(pki.path("ca.pem"));
    if let Some(c) = cert {
        cmd.arg(pki.path(&format!("{c}.pem")))
            .arg(pki.path(&format!("{c}.key")));
    }
    if expect_fail {
        cmd.env("EXPECT_FAIL", "1");
    }
    run_peer(cmd, "Python vsoa TLS client").await;
}

#[tokio::test]
async fn python_client_over_tls_one_way_and_mutual() {
    let pki = Pki::new();
    let one_way = tether_serve(&[
        "--tls-cert",
        &pki.path("server.pem"),
        "--tls-key",
        &pki.path("server.key"),
    ])
    .await;
    python_tls_client(one_way.port, &pki, None, false).await;
    let mutual = tether_serve(&[
        "--tls-cert",
        &pki.path("server.pem"),
        "--tls-key",
        &pki.path("server.key"),
        "--tls-client-ca",
        &pki.path("ca.pem"),
    ])
    .await;
    python_tls_client(mutual.port, &pki, Some("client"), false).await;
    python_tls_client(mutual.port, &pki, Some("other-client"), true).await;
    python_tls_client(mutual.port, &pki, None, true).await;
    let optional = tether_serve(&[
        "--tls-cert",
        &pki.path("server.pem"),
        "--tls-key",
        &pki.path("server.key"),
        "--tls-client-ca",
        &pki.path("ca.pem"),
        "--tls-client-optional",
    ])
    .await;
    python_tls_client(optional.port, &pki, None, false).await;
    python_tls_client(optional.port, &pki, Some("client"), false).await;
    python_tls_client(optional.port, &pki, Some("other-client"), true).await;
    // Not tested here: an expired or untrusted *server* certificate. Python 1.0.4's client
    // then hangs in connect() forever, ignoring its timeout (verified; docs/vsoa.md). Our
    // client's refusals are in `bad_server_certificates_fail_with_clear_errors`.
}

#[tokio::test]
async fn our_client_over_tls_to_a_python_server_and_the_cli() {
    let pki = Pki::new();
    let mut cmd = tokio::process::Command::new(python_path());
    cmd.arg(workspace().join("interop/py/server.py"))
        .args(["", "0"])
        .env("PY_TLS_CERT", pki.path("server.pem"))
        .env("PY_TLS_KEY", pki.path("server.key"));
    let py = Proc::start(cmd, "READY ").await;
    let c = Client::connect(&format!("vsoa://127.0.0.1:{}", py.port))
        .tls(client_tls(&pki, "ca.pem", None).server_name("localhost"))
        .await
        .unwrap();
    let r = c.call("/echo").json(&"to python").unwrap().await.unwrap();
    assert_eq!(
        r.payload.param_value(),
        Some(serde_json::json!("to python"))
    );
    let e = Client::connect(&format!("vsoa://127.0.0.1:{}", py.port))
        .tls(client_tls(&pki, "other-ca.pem", None))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("UnknownIssuer"), "{e}");
    // A stream from the Python server, which closes it without TLS close_notify: every
    // byte arrives and the end of the stream is an end, not an error.
    let sent: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let mut stream = tether_cmd(&[])
        .args([
            "stream",
            &format!("vsoa://127.0.0.1:{}/stream/echo", py.port),
            "--tls-ca",
            &pki.path("ca.pem"),
            "--tls-name",
            "localhost",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stdin = stream.stdin.take().unwrap();
    let to_send = sent.clone();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        stdin.write_all(&to_send).await.unwrap();
        // Closing stdin shuts our write half down; the Python side then closes the
        // stream, without close_notify.
        drop(stdin);
    });
    let out = tokio::time::timeout(WAIT, stream.wait_with_output())
        .await
        .expect("the stream ends")
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(out.stdout.len(), sent.len());
    assert!(out.stdout == sent, "every byte, in order");
    // The CLI's TLS flags against our own TLS server.
    let ours = tether_serve(&[
        "--tls-cert",
        &pki.path("server.pem"),
        "--tls-key",
        &pki.path("server.key"),
    ])
    .await;
    let out = tether_cmd(&[])
        .args([
            "call",
            &format!("vsoa://127.0.0.1:{}/echo", ours.port),
            "--tls-ca",
            &pki.path("ca.pem"),
            "--param",
            "7",
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "{\"status\":0,\"param\":7,\"data\":null,\"tunid\":0}\n"
    );
    let out = tether_cmd(&[])
        .args([
            "call",
            &format!("vsoa://127.0.0.1:{}/echo", ours.port),
            "--tls-ca",
            &pki.path("other-ca.pem"),
        ])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("UnknownIssuer"));
}

/// A server at `tls` with `/echo` and `/whoami`, as [`tls_server`] builds it.
async fn tls_server_with(tls: ServerTls) -> (Server, tether::Listening) {
    let server = Server::builder().tls(tls).build();
    server.route_with("/echo", Mode::Inline, |r: Request| async move {
        Reply::ok(r.payload)
    });
    server.route("/whoami", |r: Request| async move {
        let subject = r.client.peer_certificate().map(|c| c.subject.clone());
        Reply::json(&subject).unwrap()
    });
    let l = server.bind("127.0.0.1:0").await.unwrap();
    (server, l)
}

fn pem(pki: &Pki, name: &str) -> Vec<u8> {
    std::fs::read(pki.file(name)).unwrap()
}

/// Python's `CERT_OPTIONAL`: clients with and without a certificate get in (the real
/// Python client, both ways), a certificate from another CA does not, and handlers see who
/// presented one.
#[tokio::test]
async fn optional_client_certificates() {
    use tether::tls::ClientAuth;
    let pki = Pki::new();
    let ca = pem(&pki, "ca.pem");
    let tls = ServerTls::with_client_auth(
        &pem(&pki, "server.pem"),
        &pem(&pki, "server.key"),
        ClientAuth::Optional(&ca),
    )
    .unwrap();
    let (_s, l) = tls_server_with(tls).await;
    python_tls_client(l.local_addr().port(), &pki, None, false).await;
    python_tls_client(l.local_addr().port(), &pki, Some("client"), false).await;
    python_tls_client(l.local_addr().port(), &pki, Some("other-client"), true).await;
    let whoami = |c: Client| async move { c.call("/whoami").await.unwrap().payload.param_value() };
    let anonymous = Client::connect(&url(&l))
        .tls(client_tls(&pki, "ca.pem", None))
        .await
        .unwrap();
    assert_eq!(whoami(anonymous).await, Some(serde_json::Value::Null));
    let drone = Client::connect(&url(&l))
        .tls(client_tls(&pki, "ca.pem", Some("client")))
        .await
        .unwrap();
    let who = whoami(drone).await.unwrap();
    assert!(who.as_str().unwrap().contains("drone-7"), "{who}");
}

/// A certificate chosen by the name the client asks for (SNI), the first one when it asks
/// for none (a connection to an IP address).
#[tokio::test]
async fn the_server_certificate_is_chosen_by_sni() {
    use tether::tls::{ClientAuth, NamedCert, SubjectAltName};
    let pki = Pki::new();
    let files: Vec<(String, Vec<u8>, Vec<u8>)> = ["server", "a.test", "b.test"]
        .iter()
        .map(|n| {
            let name = if *n == "server" { "localhost" } else { n };
            (
                name.to_string(),
                pem(&pki, &format!("{n}.pem")),
                pem(&pki, &format!("{n}.key")),
            )
        })
        .collect();
    let named: Vec<NamedCert> = files
        .iter()
        .map(|(name, chain, key)| NamedCert {
            name,
            chain,
            private_key: key,
        })
        .collect();
    let (_s, l) = tls_server_with(ServerTls::by_name(&named, ClientAuth::None).unwrap()).await;
    for (asked, want) in [
        (Some("a.test"), "a.test"),
        (Some("B.TEST"), "b.test"),
        (None, "localhost"),
    ] {
        let mut tls = client_tls(&pki, "ca.pem", None);
        if let Some(name) = asked {
            tls = tls.server_name(name.to_lowercase());
        }
        let c = Client::connect(&url(&l)).tls(tls).await.unwrap();
        let sans = &c.peer_certificate().unwrap().subject_alt_names;
        assert!(
            sans.contains(&SubjectAltName::Dns(want.into())),
            "asked {asked:?}: {sans:?}"
        );
    }
    assert!(ServerTls::by_name(&[], ClientAuth::None).is_err());
}

/// The loudly named no-verification mode (test benches only): an expired certificate of a
/// CA nobody trusts is accepted; the normal mode refuses it.
#[tokio::test]
async fn accepting_any_server_certificate_is_explicit() {
    let pki = Pki::new();
    let (_s, l) = tls_server(&pki, "expired", false).await;
    let refused = Client::connect(&url(&l))
        .tls(client_tls(&pki, "other-ca.pem", None))
        .await;
    assert!(matches!(refused, Err(Error::Tls(_))), "{refused:?}");
    let any = tether::tls::ClientTls::danger_accept_any_server_certificate(None).unwrap();
    let c = Client::connect(&url(&l)).tls(any).await.unwrap();
    let r = c.call("/echo").json(&"anyway").unwrap().await.unwrap();
    assert_eq!(r.payload.param_value(), Some(serde_json::json!("anyway")));
}

/// Python's `load_default_certs`: `tether call --tls-system-roots` trusts the system's CA
/// bundle, here pointed at the test CA with SSL_CERT_FILE (in the child process only); a
/// bundle without it refuses the server; --tls-name alone is a usage error.
#[tokio::test]
async fn system_roots_are_trusted_when_asked_for() {
    let pki = Pki::new();
    let (_s, l) = tls_server(&pki, "server", false).await;
    let call = |bundle: String| {
        let url = format!("vsoa://{}/echo", l.local_addr());
        async move {
            let out = tether_cmd(&[])
                .args(["call", &url, "--param", "\"sys\"", "--tls-system-roots"])
                .args(["--tls-name", "localhost"])
                .env("SSL_CERT_FILE", bundle)
                .env_remove("SSL_CERT_DIR")
                .output()
                .await
                .unwrap();
            (
                out.status.code(),
                String::from_utf8_lossy(&out.stderr).into_owned(),
            )
        }
    };
    let (code, err) = call(pki.path("ca.pem")).await;
    assert_eq!(code, Some(0), "{err}");
    let (code, err) = call(pki.path("other-ca.pem")).await;
    assert_ne!(code, Some(0));
    assert!(
        err.contains("UnknownIssuer") || err.contains("certificate"),
        "{err}"
    );
    let r = tether(&["call", "vsoa://127.0.0.1:1/echo", "--tls-name", "x"]).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--tls-system-roots"), "{}", r.stderr);
}

/// `key` (a plain PKCS#8 PEM) encrypted with `password` (PBES2: PBKDF2-SHA256, AES-256-CBC),
/// as `openssl pkey -aes256` writes it.
fn encrypted(key: &[u8], password: &str) -> String {
    use pkcs8::der::pem::LineEnding;
    let (_, doc) = pkcs8::der::SecretDocument::from_pem(std::str::from_utf8(key).unwrap()).unwrap();
    let info = pkcs8::PrivateKeyInfo::try_from(doc.as_bytes()).unwrap();
    let params =
        pkcs8::pkcs5::pbes2::Parameters::pbkdf2_sha256_aes256cbc(2048, &[7; 16], &[9; 16]).unwrap();
    let enc = info.encrypt_with_params(params, password).unwrap();
    enc.to_pem("ENCRYPTED PRIVATE KEY", LineEnding::LF)
        .unwrap()
        .to_string()
}

/// Python's `passwd` for an encrypted private key: `tether serve --tls-key-password`
/// serves the real Python client with it; without it, or with a wrong one, serve refuses
/// to start and says why.
#[tokio::test]
async fn an_encrypted_private_key_needs_its_password() {
    let pki = Pki::new();
    let enc = pki.dir.join("server-encrypted.key");
    std::fs::write(&enc, encrypted(&pem(&pki, "server.key"), "s3cret")).unwrap();
    let plain = tether::tls::decrypt_private_key(&std::fs::read(&enc).unwrap(), "s3cret").unwrap();
    tether::tls::ServerTls::from_pem(&pem(&pki, "server.pem"), &plain, None).unwrap();
    let e = tether::tls::decrypt_private_key(&std::fs::read(&enc).unwrap(), "wrong").unwrap_err();
    assert!(e.to_string().contains("wrong password"), "{e}");
    let key_args = |extra: &[&str]| {
        let mut v = vec![
            "serve".to_string(),
            "--listen".into(),
            "127.0.0.1:0".into(),
            "--no-gateway".into(),
            "--tls-cert".into(),
            pki.path("server.pem"),
            "--tls-key".into(),
            enc.to_string_lossy().into_owned(),
        ];
        v.extend(extra.iter().map(|s| s.to_string()));
        v
    };
    for (extra, says) in [
        (&[][..], "is encrypted"),
        (&["--tls-key-password", "wrong"][..], "wrong password"),
    ] {
        let args = key_args(extra);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let r = tether(&args).await;
        assert_ne!(r.code, 0);
        assert!(r.stderr.contains(says), "{extra:?}: {}", r.stderr);
    }
    let served = tether_serve(&[
        "--tls-cert",
        &pki.path("server.pem"),
        "--tls-key",
        enc.to_str().unwrap(),
        "--tls-key-password",
        "s3cret",
    ])
    .await;
    python_tls_client(served.port, &pki, None, false).await;
}
