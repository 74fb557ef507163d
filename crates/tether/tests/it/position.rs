//! The position service: lookups, the lookup order, registration, names in URLs, and what
//! is refused.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use crate::common::*;
use tether::position::{self, Entry, PositionServer, Registration};
use tether::{Client, Error, Server};
use tokio::net::UdpSocket;

fn entry(addr: &str) -> Entry {
    let sa: SocketAddr = addr.parse().unwrap();
    Entry {
        addr: sa.ip(),
        port: sa.port(),
        security: false,
    }
}

async fn position_with(hosts: &[(&str, &str)]) -> (PositionServer, tether::Listening) {
    let table: HashMap<String, Entry> = hosts
        .iter()
        .map(|(n, a)| (n.to_string(), entry(a)))
        .collect();
    let server = PositionServer::new(table);
    let l = server.bind("127.0.0.1:0").await.unwrap();
    (server, l)
}

const FAST: Duration = Duration::from_millis(300);

#[tokio::test]
async fn lookup_answers_known_names_case_insensitively() {
    let (server, l) = position_with(&[("myserv", "127.0.0.1:3005")]).await;
    let got = position::lookup_with("MyServ", &[l.local_addr()], FAST)
        .await
        .unwrap();
    assert_eq!(got, entry("127.0.0.1:3005"));
    let e = position::lookup_with("nobody", &[l.local_addr()], FAST)
        .await
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        format!(
            "cannot resolve \"nobody\": {} does not know it",
            l.local_addr()
        )
    );
    assert_eq!((server.stats().answered, server.stats().unknown), (1, 1));
}

#[tokio::test]
async fn silent_and_ignorant_servers_are_skipped_in_order() {
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap(); // never answers
    let (_a, ignorant) = position_with(&[]).await;
    let (_b, knows) = position_with(&[("cam", "127.0.0.7:1234")]).await;
    let servers = [
        silent.local_addr().unwrap(),
        ignorant.local_addr(),
        knows.local_addr(),
    ];
    assert_eq!(
        position::lookup_with("cam", &servers, FAST).await.unwrap(),
        entry("127.0.0.7:1234")
    );
    let e = position::lookup_with("other", &servers[..2], FAST)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!("{} did not answer within 300ms", servers[0])),
        "{e}"
    );
    assert!(
        e.contains(&format!("{} does not know it", servers[1])),
        "{e}"
    );
    let e = position::lookup_with("x", &[], FAST)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no position server configured"), "{e}");
}

#[tokio::test]
async fn bad_datagrams_are_refused_and_the_service_keeps_answering() {
    let (server, l) = position_with(&[("ok", "127.0.0.1:1")]).await;
    let s = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    s.connect(l.local_addr()).await.unwrap();
    s.send(b"not json").await.unwrap();
    s.send(&vec![b' '; 5000]).await.unwrap(); // over 4096 bytes
    s.send(br#"{"domain": 2}"#).await.unwrap(); // no name
    s.send(br#"{"register": {"name": "x"}}"#).await.unwrap(); // answered with an error
    let mut buf = [0u8; 4096];
    let n = tokio::time::timeout(WAIT, s.recv(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let answer: serde_json::Value = serde_json::from_slice(&buf[..n]).unwrap();
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .starts_with("bad registration"),
        "{answer}"
    );
    // Still answering, and the three silent refusals were counted before this reply.
    assert!(position::lookup_with("ok", &[l.local_addr()], FAST)
        .await
        .is_ok());
    assert_eq!(server.stats().refused, 4);
}

#[tokio::test]
async fn registration_follows_the_server_and_expires() {
    let (server, l) = position_with(&[("moving", "127.0.0.1:1")]).await;
    let reg = Registration::start(
        l.local_addr(),
        "moving",
        4242,
        false,
        Duration::from_secs(1),
    )
    .await
    .unwrap();
    // A live registration beats the fixed entry; its address is the registrant's own IP.
    assert_eq!(server.resolve("moving"), Some(entry("127.0.0.1:4242")));
    drop(reg); // no more renewals
    let deadline = tokio::time::Instant::now() + WAIT;
    while server.resolve("moving") != Some(entry("127.0.0.1:1")) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "registration never expired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn names_in_vsoa_urls_resolve_and_their_port_is_ignored() {
    let (_s, l) = start(Server::builder()).await;
    let (_p, pos) = position_with(&[("demo", &l.local_addr().to_string())]).await;
    for url in ["vsoa://demo/echo", "vsoa://demo:1/echo"] {
        let c = Client::connect(url)
            .position_servers(vec![pos.local_addr()])
            .await
            .unwrap();
        c.ping(WAIT).await.unwrap();
    }
    let e = Client::connect("vsoa://nobody/x")
        .position_servers(vec![pos.local_addr()])
        .await
        .unwrap_err();
    assert!(
        matches!(e, Error::Lookup(tether::position::LookupError { .. })),
        "{e}"
    );
}

#[test]
fn server_entries_in_every_form() {
    let p = |s| position::parse_server(s);
    assert_eq!(p("127.0.0.1:54"), Some("127.0.0.1:54".parse().unwrap()));
    assert_eq!(p("127.0.0.1"), Some("127.0.0.1:54".parse().unwrap()));
    assert_eq!(p("[::1]:99"), Some("[::1]:99".parse().unwrap()));
    assert_eq!(
        p("::1"),
        Some("[::1]:54".parse().unwrap()),
        "bare IPv6 works"
    );
    assert_eq!(p("[::1]"), Some("[::1]:54".parse().unwrap()));
    assert_eq!(
        p("127.0.0.1 1234"),
        Some("127.0.0.1:1234".parse().unwrap()),
        "/etc/vsoa.pos form"
    );
    assert_eq!(p("[::1] 1234"), Some("[::1]:1234".parse().unwrap()));
    assert_eq!(p("nonsense"), None);
    let hosts = position::parse_hosts("# fleet\na 127.0.0.1 1\nB ::1 2 tls # v6\n\n").unwrap();
    assert_eq!(
        hosts["b"],
        Entry {
            addr: "::1".parse().unwrap(),
            port: 2,
            security: true
        }
    );
    assert!(position::parse_hosts("a 1.2.3.4")
        .unwrap_err()
        .contains("line 1"));
}

/// The application answers each query itself (the seed's `Position(onquery)`), tested with
/// the real Python `vsoa.lookup`: its own answer, the table's, and a denial of a name the
/// table has; the callback sees the name, the family the client sent and the asker.
#[tokio::test]
async fn an_application_callback_answers_python_lookups() {
    use std::sync::{Arc, Mutex};
    use tether::position::{PositionQuery, QueryAnswer};
    let seen: Arc<Mutex<Vec<PositionQuery>>> = Arc::default();
    let log = seen.clone();
    let table: HashMap<String, Entry> = [
        ("tabled".to_string(), entry("127.0.0.1:4000")),
        ("hidden".to_string(), entry("127.0.0.1:4001")),
    ]
    .into();
    let server = PositionServer::new(table).on_query(move |q| {
        log.lock().unwrap().push(q.clone());
        match q.name.as_str() {
            "myserver" => QueryAnswer::Found(entry("127.0.0.1:3005")),
            "hidden" => QueryAnswer::NotFound,
            _ => QueryAnswer::FromTable,
        }
    });
    let l = server.bind("127.0.0.1:0").await.unwrap();
    let mut cmd = tether_testkit::python();
    cmd.arg("position_query.py")
        .arg(l.local_addr().port().to_string());
    tether_testkit::run_script(cmd, "Python vsoa.lookup", || async {}).await;
    let seen = seen.lock().unwrap();
    let names: Vec<&str> = seen.iter().map(|q| q.name.as_str()).collect();
    assert_eq!(names, ["myserver", "tabled", "hidden"]);
    for q in seen.iter() {
        assert_eq!(
            q.domain,
            Some(2),
            "Python sends the family it used (AF_INET)"
        );
        assert_eq!(q.from.ip().to_string(), "127.0.0.1");
    }
    assert_eq!((server.stats().answered, server.stats().unknown), (2, 1));
}

/// `lookup` with an address family (VSOA's `domain`): the query says which, and an answer
/// of the other family is passed over for the next server's.
#[tokio::test]
async fn a_lookup_for_one_family_says_so_and_passes_over_the_other() {
    use std::sync::{Arc, Mutex};
    use tether::position::{Domain, PositionQuery, QueryAnswer};
    let asked: Arc<Mutex<Vec<Option<i64>>>> = Arc::default();
    let log = asked.clone();
    let v4 = PositionServer::new(HashMap::from([("cam".to_string(), entry("127.0.0.9:1"))]))
        .on_query(move |q: &PositionQuery| {
            log.lock().unwrap().push(q.domain);
            QueryAnswer::FromTable
        });
    let v4 = v4.bind("127.0.0.1:0").await.unwrap();
    let v6_entry = Entry {
        addr: "::1".parse().unwrap(),
        port: 2,
        security: false,
    };
    let v6 = PositionServer::new(HashMap::from([("cam".to_string(), v6_entry)]));
    let v6 = v6.bind("127.0.0.1:0").await.unwrap();
    let both = [v4.local_addr(), v6.local_addr()];
    let got = position::lookup_with_domain("cam", &both, FAST, Domain::Ipv6)
        .await
        .unwrap();
    assert_eq!(got, v6_entry, "the IPv4 answer was passed over");
    let got = position::lookup_with_domain("cam", &both, FAST, Domain::Ipv4)
        .await
        .unwrap();
    assert_eq!(got, entry("127.0.0.9:1"));
    let e = position::lookup_with_domain("cam", &both[..1], FAST, Domain::Ipv6)
        .await
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("knows it only at 127.0.0.9 (Ipv6 was asked for)"),
        "{e}"
    );
    position::lookup_with("cam", &both, FAST).await.unwrap();
    assert_eq!(
        *asked.lock().unwrap(),
        [Some(10), Some(2), Some(10), Some(2)]
    );
}
