//! clever-show messaging between our own nodes (no clever-show peer can run in CI: the
//! codec is checked against the vectors captured from the real module, in tether-wire).

use std::time::Duration;

use serde_json::{json, Map, Value};
use tether::clevershow::Node;
use tether::Error;
use tether_testkit::{free_udp, temp_dir, WAIT};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

fn kw(v: Value) -> Map<String, Value> {
    v.as_object().cloned().unwrap()
}

/// The two requests `tether serve --clever-show` offers (its demo lives in the CLI).
fn with_demo(node: &Node) -> &Node {
    node.request("echo", |_p, args, kwargs| async move {
        Ok(json!({ "args": args, "kwargs": kwargs }))
    });
    node.request("time", |_p, _a, _k| async move {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        Ok(Value::from(now))
    })
}

async fn demo_server() -> (Node, tether::Listening) {
    let node = Node::new();
    with_demo(&node);
    let l = node.bind("127.0.0.1:0").await.unwrap();
    (node, l)
}

#[tokio::test]
async fn requests_get_responses_and_actions_arrive_in_order() {
    let (server, l) = demo_server().await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    server.action("takeoff", move |_peer, args, kwargs| {
        let tx = tx.clone();
        async move {
            let _ = tx.send((args, kwargs));
        }
    });
    let drone = Node::new().connect(l.local_addr()).await.unwrap();
    let echo = drone
        .request("echo")
        .args(vec![json!(1), json!("two")])
        .kwargs(kw(json!({"z": 1.5})))
        .send()
        .await
        .unwrap();
    assert_eq!(echo, json!({"args": [1, "two"], "kwargs": {"z": 1.5}}));
    for i in 0..20 {
        drone
            .action("takeoff", vec![json!(i)], kw(json!({"z": "1"})))
            .await
            .unwrap();
    }
    for i in 0..20 {
        let (args, kwargs) = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!((args, kwargs), (vec![json!(i)], kw(json!({"z": "1"}))));
    }
}

#[tokio::test]
async fn unhandled_and_failing_requests_get_error_responses() {
    let (server, l) = demo_server().await;
    server.request("fail", |_p, _a, _k| async move {
        Err("the battery is low".to_string())
    });
    let drone = Node::new().connect(l.local_addr()).await.unwrap();
    let e = drone.request("nope").send().await.unwrap_err();
    assert_eq!(
        e.to_string(),
        "request nope failed on the peer: no handler for request \"nope\""
    );
    let e = drone.request("fail").send().await.unwrap_err();
    assert!(
        matches!(&e, Error::Remote { reason, .. } if reason == "the battery is low"),
        "{e}"
    );
}

#[tokio::test]
async fn requests_time_out_and_the_link_survives() {
    let (server, l) = demo_server().await;
    server.request("slow", |_p, _a, _k| async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        Ok(json!("late"))
    });
    let drone = Node::new().connect(l.local_addr()).await.unwrap();
    let e = drone
        .request("slow")
        .timeout(Duration::from_millis(30))
        .send()
        .await
        .unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
    // The late response is dropped as unexpected; the link keeps working.
    assert_eq!(drone.request("slow").send().await.unwrap(), json!("late"));
}

#[tokio::test]
async fn the_server_identifies_drones_by_the_id_they_answer() {
    let server = Node::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    server.on_peer(move |peer| {
        let tx = tx.clone();
        tokio::spawn(async move {
            let id = peer.request("id").send().await;
            let _ = tx.send(id.map(|v| v.as_str().unwrap_or_default().to_string()));
        });
    });
    let l = server.bind("127.0.0.1:0").await.unwrap();
    // Two drones from the same IP with their own ids.
    let mut drones = Vec::new();
    for name in ["copter0001", "copter0002"] {
        let node = Node::new();
        node.request("id", move |_p, _a, _k| async move { Ok(json!(name)) });
        drones.push(node.connect(l.local_addr()).await.unwrap());
    }
    let mut ids = vec![
        tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap(),
        tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .unwrap()
            .unwrap(),
    ];
    ids.sort();
    assert_eq!(ids, ["copter0001", "copter0002"]);
}

#[tokio::test]
async fn clock_offset_corrects_for_the_round_trip() {
    let (_s, l) = demo_server().await;
    let drone = Node::new().connect(l.local_addr()).await.unwrap();
    let est = drone.clock_offset().await.unwrap();
    // Same machine, same clock: the estimate is within half a round trip (plus rounding).
    assert!(
        est.offset.abs() <= est.rtt.as_secs_f64() / 2.0 + 0.01,
        "{est:?}"
    );
}

#[tokio::test]
async fn a_garbage_frame_ends_the_link_and_pending_requests_fail() {
    let server = Node::new();
    server.request("hold", |_p, _a, _k| async move {
        std::future::pending::<()>().await;
        Ok(Value::Null)
    });
    let l = server.bind("127.0.0.1:0").await.unwrap();
    // A raw "drone" that sends a request, then garbage: the server closes the link.
    let mut raw = tokio::net::TcpStream::connect(l.local_addr())
        .await
        .unwrap();
    raw.write_all(&[0, 8]).await.unwrap();
    raw.write_all(b"not json").await.unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(WAIT, tokio::io::AsyncReadExt::read(&mut raw, &mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(n, 0, "closed");
    // A real link whose peer goes away: its pending request fails at once.
    let drone = Node::new().connect(l.local_addr()).await.unwrap();
    let pending = {
        let d = drone.clone();
        tokio::spawn(async move {
            d.request("hold")
                .timeout(Duration::from_secs(3600))
                .send()
                .await
        })
    };
    l.shutdown().await;
    drone.close();
    let res = tokio::time::timeout(WAIT, pending).await.unwrap().unwrap();
    assert!(matches!(res, Err(Error::Closed { .. })), "{res:?}");
}

// ---------------------------------------------------------------- files

/// Deterministic bytes that differ at every offset of a 251-cycle.
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8).collect()
}

async fn file_server(root: &std::path::Path) -> (Node, tether::Listening) {
    let node = Node::new();
    with_demo(&node).files(tether::files::FileRoot::new(root).unwrap());
    let l = node.bind("127.0.0.1:0").await.unwrap();
    (node, l)
}

#[tokio::test]
async fn files_push_and_pull_inside_the_root_including_50_mb() {
    let base = temp_dir("push-pull");
    let (_s, l) = file_server(&base.join("root")).await;
    let drone = Node::new().connect(l.local_addr()).await.unwrap();
    let big = pattern(50 * 1024 * 1024);
    std::fs::write(base.join("big.bin"), &big).unwrap();
    std::fs::write(base.join("small.txt"), b"hello\n").unwrap();

    // Wire-compatible push (no answer on the wire), then checked with filestat.
    let stat = drone
        .push_file_verified(&base.join("big.bin"), "shows/big.bin")
        .await
        .unwrap();
    assert_eq!(stat.size, big.len() as u64);
    assert_eq!(std::fs::read(base.join("root/shows/big.bin")).unwrap(), big);
    assert_eq!(
        drone
            .push_file(&base.join("small.txt"), "small.txt")
            .await
            .unwrap(),
        6
    );

    // Pull back, 50 MB included.
    let n = drone
        .pull_file("shows/big.bin", &base.join("back.bin"), WAIT)
        .await
        .unwrap();
    assert_eq!(n, big.len() as u64);
    assert_eq!(std::fs::read(base.join("back.bin")).unwrap(), big);
    drone
        .pull_file("small.txt", &base.join("small.back"), WAIT)
        .await
        .unwrap();
    assert_eq!(std::fs::read(base.join("small.back")).unwrap(), b"hello\n");
    let _ = std::fs::remove_dir_all(base);
}

#[tokio::test]
async fn paths_out_of_the_root_are_refused_and_the_link_survives() {
    let base = temp_dir("escape");
    let (_s, l) = file_server(&base.join("root")).await;
    std::fs::create_dir_all(base.join("outside")).unwrap();
    std::fs::write(base.join("outside/secret"), b"secret").unwrap();
    std::os::unix::fs::symlink(base.join("outside"), base.join("root/out")).unwrap();
    std::fs::write(base.join("payload"), b"evil").unwrap();
    let drone = Node::new().connect(l.local_addr()).await.unwrap();

    // Pushes: nothing is written outside, and a later filestat says why not there.
    let escape_abs = base.join("outside/abs").display().to_string();
    for bad in ["../outside/new", escape_abs.as_str(), "out/new"] {
        drone.push_file(&base.join("payload"), bad).await.unwrap();
    }
    // Pulls and stats: error responses naming the reason.
    for (bad, why) in [
        ("../outside/secret", "contains '..'"),
        ("/etc/passwd", "is absolute"),
        ("out/secret", "leads outside the files root"),
        ("missing", "No such file"),
    ] {
        let e = drone
            .pull_file(bad, &base.join("got"), WAIT)
            .await
            .unwrap_err();
        assert!(e.to_string().contains(why), "{bad}: {e}");
        let mut kw = Map::new();
        kw.insert("filepath".into(), bad.into());
        let e = drone
            .request("filestat")
            .kwargs(kw)
            .send()
            .await
            .unwrap_err();
        assert!(e.to_string().contains(why), "{bad}: {e}");
    }
    // A pull without a filepath.
    let e = drone.request("filetransfer").send().await.unwrap_err();
    assert!(e.to_string().contains("kwargs.filepath"), "{e}");
    assert!(!base.join("outside/new").exists());
    assert!(!base.join("outside/abs").exists());
    assert!(!base.join("got").exists());
    // The link still works.
    assert_eq!(
        drone.request("echo").send().await.unwrap(),
        json!({"args": [], "kwargs": {}})
    );
    let _ = std::fs::remove_dir_all(base);
}

/// Frames as the original `messaging.py` sends and reads them: requests without Tether's
/// `error-responses` header key.
struct OriginalPeer {
    stream: tokio::net::TcpStream,
    buf: bytes::BytesMut,
}

impl OriginalPeer {
    async fn request(&mut self, name: &str, id: &str, kwargs: Value) {
        let frame = tether_wire::clevershow::Frame::request(name, id, vec![], kw(kwargs));
        assert!(!frame.accepts_error_responses());
        self.stream
            .write_all(&frame.to_bytes().unwrap())
            .await
            .unwrap();
    }

    /// The next frame within `wait`, or `None`.
    async fn next(&mut self, wait: Duration) -> Option<tether_wire::clevershow::Frame> {
        let mut dec = tether_wire::clevershow::Decoder::default();
        let read = async {
            loop {
                if let Some(f) = dec.decode(&mut self.buf).unwrap() {
                    return Some(f);
                }
                let n = tokio::io::AsyncReadExt::read_buf(&mut self.stream, &mut self.buf)
                    .await
                    .unwrap();
                if n == 0 {
                    return None;
                }
            }
        };
        tokio::time::timeout(wait, read).await.ok().flatten()
    }
}

#[tokio::test]
async fn an_original_peer_never_gets_an_error_response_but_a_tether_peer_does() {
    // The original writes a response to its file pull into the local file (emptying it for
    // an error response) and then fails on the content: it must get what its own server
    // sends for a failed request, nothing.
    let base = temp_dir("original-errors");
    let (_s, l) = file_server(&base.join("root")).await;
    let mut original = OriginalPeer {
        stream: tokio::net::TcpStream::connect(l.local_addr())
            .await
            .unwrap(),
        buf: bytes::BytesMut::new(),
    };
    original
        .request(
            "filetransfer",
            "0001",
            json!({"filepath": "../outside/secret"}),
        )
        .await;
    original.request("no-such-request", "0002", json!({})).await;
    original.request("echo", "0003", json!({"k": 1})).await;
    let first = original.next(WAIT).await.expect("the echo answer");
    assert_eq!(first.extra_str("request_id"), Some("0003"), "{first:?}");
    assert_eq!(
        first.content,
        tether_wire::clevershow::Content::Json(json!({"value": {"args": [], "kwargs": {"k": 1}}}))
    );
    assert_eq!(
        original.next(Duration::from_millis(300)).await,
        None,
        "nothing for the two failed requests"
    );

    // A Tether peer says it understands error responses, and gets the reason.
    let drone = Node::new().connect(l.local_addr()).await.unwrap();
    let e = drone
        .pull_file("../outside/secret", &base.join("got"), WAIT)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("contains '..'"), "{e}");
    let e = drone.request("no-such-request").send().await.unwrap_err();
    assert!(matches!(e, Error::Remote { .. }), "{e}");
    let _ = std::fs::remove_dir_all(base);
}

#[tokio::test]
async fn without_a_files_root_transfers_are_refused() {
    let base = temp_dir("no-root");
    let (_s, l) = demo_server().await;
    std::fs::write(base.join("f"), b"x").unwrap();
    let drone = Node::new().connect(l.local_addr()).await.unwrap();
    let e = drone
        .push_file_verified(&base.join("f"), "f")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no files root"), "{e}");
    let e = drone
        .pull_file("f", &base.join("g"), WAIT)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("no files root"), "{e}");
    let _ = std::fs::remove_dir_all(base);
}

#[tokio::test]
async fn a_file_over_the_message_limit_is_refused_on_both_sides() {
    let base = temp_dir("limit");
    let server = Node::new();
    server
        .files(tether::files::FileRoot::new(base.join("root")).unwrap())
        .max_message(1000);
    let l = server.bind("127.0.0.1:0").await.unwrap();
    std::fs::write(base.join("root/big"), pattern(2000)).unwrap();
    std::fs::write(base.join("big"), pattern(2000)).unwrap();
    let drone = Node::new();
    drone.max_message(1000);
    let drone = drone.connect(l.local_addr()).await.unwrap();
    let e = drone
        .push_file(&base.join("big"), "copy")
        .await
        .unwrap_err();
    assert!(e.to_string().contains("over the clever-show limit"), "{e}");
    let e = drone
        .pull_file("big", &base.join("got"), WAIT)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("over the clever-show limit"), "{e}");
    let _ = std::fs::remove_dir_all(base);
}

// ---------------------------------------------------------------- reconnect

/// A TCP relay to `upstream`; the first connection through it is cut (both ways) once
/// `cut_after` bytes went from the client to the server.
async fn cutting_proxy(upstream: std::net::SocketAddr, cut_after: usize) -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((mut down, _)) = l.accept().await {
            let Ok(mut up) = tokio::net::TcpStream::connect(upstream).await else {
                continue;
            };
            let limit = std::mem::replace(&mut first, false).then_some(cut_after);
            tokio::spawn(async move {
                let Some(limit) = limit else {
                    let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    return;
                };
                let (mut dr, mut dw) = down.split();
                let (mut ur, mut uw) = up.split();
                let upward = async {
                    let mut left = limit;
                    let mut buf = vec![0u8; 64 * 1024];
                    while left > 0 {
                        let n = tokio::io::AsyncReadExt::read(&mut dr, &mut buf[..left.min(65536)])
                            .await
                            .unwrap_or(0);
                        if n == 0 {
                            break;
                        }
                        if uw.write_all(&buf[..n]).await.is_err() {
                            break;
                        }
                        left -= n;
                    }
                };
                let downward = tokio::io::copy(&mut ur, &mut dw);
                tokio::select! {
                    _ = upward => {}
                    _ = downward => {}
                }
                // Dropping both sockets cuts the link mid-frame.
            });
        }
    });
    addr
}

#[tokio::test]
async fn a_push_cut_mid_frame_is_sent_again_whole_on_the_next_link() {
    let base = temp_dir("cut");
    let (_s, l) = file_server(&base.join("root")).await;
    let proxy = cutting_proxy(l.local_addr(), 1_000_000).await;
    let data = pattern(5 * 1024 * 1024);
    std::fs::write(base.join("anim.bin"), &data).unwrap();
    let drone = Node::new()
        .dial(proxy)
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
        .start();
    drone.wait_link(WAIT).await.unwrap();
    let stat = drone
        .push_file_verified(&base.join("anim.bin"), "anim.bin")
        .await
        .unwrap();
    assert_eq!(stat.size, data.len() as u64);
    assert_eq!(std::fs::read(base.join("root/anim.bin")).unwrap(), data);
    assert!(drone.links() >= 2, "the first link was cut");
    drone.close();
    let _ = std::fs::remove_dir_all(base);
}

/// A server whose request `flaky` records its args and, for its first `drops` calls,
/// closes the link instead of answering.
async fn flaky_server(
    drops: usize,
) -> (
    tether::Listening,
    mpsc::UnboundedReceiver<(Vec<Value>, Map<String, Value>)>,
) {
    let node = Node::new();
    let (tx, rx) = mpsc::unbounded_channel();
    let calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    node.request("flaky", move |peer, args, kwargs| {
        let tx = tx.clone();
        let n = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move {
            let _ = tx.send((args.clone(), kwargs.clone()));
            if n < drops {
                peer.close();
                std::future::pending::<()>().await;
            }
            Ok(json!({"args": args, "kwargs": kwargs}))
        }
    });
    let l = node.bind("127.0.0.1:0").await.unwrap();
    (l, rx)
}

#[tokio::test]
async fn an_unanswered_request_is_resent_once_with_its_own_arguments() {
    let (l, mut calls) = flaky_server(1).await;
    let drone = Node::new()
        .dial(l.local_addr())
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
        .start();
    let answer = drone
        .request("flaky")
        .args(vec![json!(7)])
        .kwargs(kw(json!({"z": "1.5"})))
        .send()
        .await
        .unwrap();
    assert_eq!(answer, json!({"args": [7], "kwargs": {"z": "1.5"}}));
    // Served twice, both times with the original arguments (the original re-sends null).
    for _ in 0..2 {
        let (args, kwargs) = calls.recv().await.unwrap();
        assert_eq!((args, kwargs), (vec![json!(7)], kw(json!({"z": "1.5"}))));
    }
    assert!(calls.try_recv().is_err());
    assert_eq!(drone.links(), 2);
    drone.close();
}

#[tokio::test]
async fn a_request_lost_twice_is_reported_not_delivered() {
    let (l, mut calls) = flaky_server(usize::MAX).await;
    let drone = Node::new()
        .dial(l.local_addr())
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
        .start();
    let e = drone
        .request("flaky")
        .timeout(Duration::from_secs(30))
        .send()
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::CleverShow(tether::clevershow::ShowError::NotDelivered { .. })
        ),
        "{e}"
    );
    assert!(e.to_string().contains("re-sent"), "{e}");
    assert!(calls.recv().await.is_some());
    assert!(calls.recv().await.is_some());
    // Not a third time, and the peer goes on working.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(calls.try_recv().is_err());
    drone.wait_link(WAIT).await.unwrap();
    drone.close();
}

#[tokio::test]
async fn actions_sent_while_the_server_is_down_arrive_in_order_after_it_returns() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let server = |tx: mpsc::UnboundedSender<Value>| {
        let node = Node::new();
        node.action("led", move |_p, args, _k| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(args[0].clone());
            }
        });
        let peers = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = peers.clone();
        node.on_peer(move |p| keep.lock().unwrap().push(p));
        (node, peers)
    };
    let (node, peers) = server(tx.clone());
    let l = node.bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr();
    let drone = Node::new()
        .dial(addr)
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
        .start();
    drone.wait_link(WAIT).await.unwrap();
    drone
        .action("led", vec![json!(0)], Map::new())
        .await
        .unwrap();
    assert_eq!(rx.recv().await.unwrap(), json!(0));

    // The server goes away entirely.
    l.shutdown().await;
    for p in peers.lock().unwrap().drain(..) {
        p.close();
    }
    unlinked(&drone).await;
    for i in 1..=100 {
        drone
            .action("led", vec![json!(i)], Map::new())
            .await
            .unwrap();
    }
    // It comes back on the same port.
    let (node2, _peers2) = server(tx);
    let _l2 = node2.bind(addr).await.unwrap();
    for i in 1..=100 {
        let got = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, json!(i));
    }
    drone.close();
}

#[tokio::test]
async fn holding_more_than_the_limit_while_down_fails_loudly() {
    // Nothing listens on this port: a listener bound and dropped.
    let addr = {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        l.local_addr().unwrap()
    };
    let drone = Node::new()
        .dial(addr)
        .hold_limit(1000)
        .backoff(Duration::from_millis(10), Duration::from_millis(50))
        .start();
    let one = Map::new();
    let mut sent = 0;
    let e = loop {
        match drone
            .action("x", vec![json!("y".repeat(100))], one.clone())
            .await
        {
            Ok(()) => sent += 1,
            Err(e) => break e,
        }
        assert!(sent < 100, "never refused");
    };
    assert!(
        matches!(
            e,
            Error::CleverShow(tether::clevershow::ShowError::NotDelivered { .. })
        ),
        "{e}"
    );
    assert!(e.to_string().contains("limit 1000"), "{e}");
    drone.close();
    let e = drone.action("x", vec![], one).await.unwrap_err();
    assert!(matches!(e, Error::Closed { .. }), "{e}");
}

// ---------------------------------------------------------------- discovery

#[tokio::test]
async fn a_drone_finds_the_server_by_its_announcement_on_loopback() {
    use tether::clevershow::discovery::{discover, Announce};
    let (_s, l) = demo_server().await;
    let beacon = free_udp();
    // Garbage first: it is skipped, not taken.
    let junk = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let _announcer = Announce::new(beacon, "127.0.0.1", l.local_addr().port())
        .every(Duration::from_millis(50))
        .start()
        .await
        .unwrap();
    let listen = tokio::spawn(discover(beacon, WAIT));
    for _ in 0..5 {
        junk.send_to(b"not a frame", beacon).unwrap();
    }
    let found = listen.await.unwrap().unwrap();
    assert_eq!(found.addr().unwrap(), l.local_addr());
    assert_eq!(found.id.len(), 4);

    // A dialing drone with a wrong address finds the server through discovery.
    let dead = free_udp(); // a TCP port nobody listens on (same number, TCP side)
    let bound = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = bound.clone();
    let drone = Node::new()
        .dial(dead)
        .backoff(Duration::from_millis(10), Duration::from_millis(20))
        .discover(beacon, WAIT, 2)
        .on_broadcast_bind(move |a| seen.lock().unwrap().push(a.addr().unwrap()))
        .start();
    drone.wait_link(WAIT).await.unwrap();
    assert_eq!(drone.addr(), l.local_addr());
    assert_eq!(
        *bound.lock().unwrap(),
        [l.local_addr()],
        "on_broadcast_bind, once"
    );
    assert!(drone.request("time").send().await.unwrap().is_f64());
    drone.close();
}

#[tokio::test]
async fn discovery_times_out_with_a_clear_error() {
    let beacon = free_udp();
    let e = tether::clevershow::discovery::discover(beacon, Duration::from_millis(100))
        .await
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::CleverShow(tether::clevershow::ShowError::NoAnnouncement { .. })
        ),
        "{e}"
    );
    assert!(
        e.to_string().contains("no clever-show server announced"),
        "{e}"
    );
}

#[tokio::test]
async fn the_younger_server_yields_to_the_older_one() {
    use tether::clevershow::discovery::Announce;
    let older_hears = free_udp();
    let younger_hears = free_udp();
    // Each announces to where the other listens.
    let older = Announce::new(younger_hears, "127.0.0.1", 25001)
        .id("0001")
        .start_time(1000.0)
        .every(Duration::from_millis(20))
        .yield_to_older(older_hears)
        .start()
        .await
        .unwrap();
    let younger = Announce::new(older_hears, "127.0.0.1", 25002)
        .id("0002")
        .start_time(2000.0)
        .every(Duration::from_millis(20))
        .yield_to_older(younger_hears)
        .start()
        .await
        .unwrap();
    let winner = tokio::time::timeout(WAIT, younger.yielded()).await.unwrap();
    assert_eq!((winner.id.as_str(), winner.port), ("0001", 25001));
    // The older one never yields: the younger stopped announcing.
    assert!(
        tokio::time::timeout(Duration::from_millis(300), older.yielded())
            .await
            .is_err()
    );
}

#[tokio::test]
async fn stray_frames_are_ignored_and_nothing_else_is_disturbed() {
    use tether_wire::clevershow::{Content, Decoder, Frame};
    let (_s, l) = demo_server().await;
    let mut raw = tokio::net::TcpStream::connect(l.local_addr())
        .await
        .unwrap();
    let frame = |t: &str, extra: Value, content: Content| {
        let mut f = Frame::action("x", vec![], Map::new());
        f.message_type = t.into();
        f.extra = extra.as_object().cloned().unwrap();
        f.content = content;
        f.to_bytes().unwrap()
    };
    let strays = [
        // A response nobody asked for.
        frame(
            "response",
            json!({"requested_value": "id", "request_id": "9999"}),
            Content::Json(json!({"value": 1})),
        ),
        // An unknown message type.
        frame("gossip", json!({}), Content::Json(json!({}))),
        // A request and an action whose content is not an object.
        frame("request", json!({}), Content::Json(Value::Null)),
        frame(
            "message",
            json!({"action": "start"}),
            Content::Json(json!([1])),
        ),
        // An action nobody handles.
        frame(
            "message",
            json!({"action": "nobody"}),
            Content::Json(json!({})),
        ),
    ];
    for s in &strays {
        raw.write_all(s).await.unwrap();
    }
    let echo = Frame::request("echo", "0001", vec![json!(1)], Map::new());
    raw.write_all(&echo.to_bytes().unwrap()).await.unwrap();
    // Exactly one frame comes back: the echo's response.
    let mut buf = bytes::BytesMut::new();
    let mut dec = Decoder::default();
    let got = tokio::time::timeout(WAIT, async {
        loop {
            if let Some(f) = dec.decode(&mut buf).unwrap() {
                return f;
            }
            tokio::io::AsyncReadExt::read_buf(&mut raw, &mut buf)
                .await
                .unwrap();
        }
    })
    .await
    .unwrap();
    assert_eq!(got.message_type, "response");
    assert_eq!(got.extra_str("request_id"), Some("0001"));
    assert_eq!(
        got.content,
        Content::Json(json!({"value": {"args": [1], "kwargs": {}}}))
    );
    assert!(buf.is_empty());
}

#[tokio::test]
async fn requests_named_like_urls_reach_the_vsoa_route_table() {
    use tether::{Method, Payload, Reply, Request, Status};
    let server = tether::Server::builder().build();
    server.route(
        "/echo",
        |req: Request| async move { Reply::ok(req.payload) },
    );
    server.route("/method", |req: Request| async move {
        Reply::json(&json!(req.method == Method::Set)).unwrap()
    });
    server.route("/fail", |_req: Request| async move {
        Reply::error(Status::ARGUMENTS, "bad input")
    });
    server.route("/binary", |_req: Request| async move {
        Reply::ok(Payload {
            param: Default::default(),
            data: bytes::Bytes::from_static(b"\x00\x01"),
        })
    });
    server.route("/dgram", |req: Request| async move {
        let sent = req.client.datagram("/x", Payload::default()).await;
        Reply::json(&json!(sent.is_err())).unwrap()
    });
    let node = Node::new();
    node.routes(&server);
    let l = node.bind("127.0.0.1:0").await.unwrap();
    let drone = Node::new().connect(l.local_addr()).await.unwrap();
    let ask = |name: &str, args: Vec<Value>, kwargs: Value| {
        drone
            .request(name)
            .args(args)
            .kwargs(kwargs.as_object().cloned().unwrap())
            .send()
    };
    assert_eq!(
        ask("/echo", vec![], json!({"a": 1})).await.unwrap(),
        json!({"a": 1})
    );
    assert_eq!(
        ask("/echo", vec![json!(2)], json!({"a": 1})).await.unwrap(),
        json!({"args": [2], "kwargs": {"a": 1}})
    );
    assert_eq!(ask("/echo", vec![], json!({})).await.unwrap(), Value::Null);
    assert_eq!(
        ask("/method", vec![], json!({})).await.unwrap(),
        json!(false)
    );
    assert_eq!(
        ask("SET /method", vec![], json!({})).await.unwrap(),
        json!(true)
    );
    // A datagram to a caller without a VSOA connection fails; it is not dropped silently.
    assert_eq!(ask("/dgram", vec![], json!({})).await.unwrap(), json!(true));
    let too_long = format!("/{}", "a".repeat(5000));
    for (name, why) in [
        (too_long.as_str(), "status 2"),
        ("/fail", "/fail: status 2 (invalid arguments): bad input"),
        ("/binary", "binary data"),
        ("/missing", "status 3"),
        ("plain", "no handler for request \"plain\""),
    ] {
        let e = ask(name, vec![], json!({})).await.unwrap_err();
        assert!(e.to_string().contains(why), "{name}: {e}");
    }
}

/// The drone's id as its configuration names it: `/default` is drawn once and kept,
/// `/hostname` and given strings are themselves; `answer_id` answers the server's `id`
/// request on every link, reconnects included.
#[tokio::test]
async fn a_drone_keeps_its_default_id_and_answers_it_on_every_link() {
    use tether::clevershow::drone::DroneId;
    let dir = temp_dir("drone-id");
    let store = dir.join("id");
    let id = DroneId::from_setting("/default", store.clone())
        .resolve()
        .unwrap();
    assert!(
        id.len() == 10 && id.starts_with("copter") && id[6..].bytes().all(|b| b.is_ascii_digit()),
        "{id}"
    );
    assert_eq!(std::fs::read_to_string(&store).unwrap().trim(), id, "kept");
    assert_eq!(
        DroneId::Default {
            store: store.clone()
        }
        .resolve()
        .unwrap(),
        id,
        "the same after a restart"
    );
    std::fs::write(&store, "not an id").unwrap();
    let fresh = DroneId::Default {
        store: store.clone(),
    }
    .resolve()
    .unwrap();
    assert!(
        fresh.starts_with("copter"),
        "a broken store gets a new id: {fresh}"
    );
    assert!(!DroneId::Hostname.resolve().unwrap().is_empty());
    assert_eq!(
        DroneId::from_setting("drone-7", store).resolve().unwrap(),
        "drone-7"
    );

    let server = Node::new();
    let mut rx = ids_of(&server);
    let l = server.bind("127.0.0.1:0").await.unwrap();
    let drone = Node::new();
    drone.answer_id(&fresh);
    for _ in 0..2 {
        let link = drone.connect(l.local_addr()).await.unwrap();
        let answered = tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(answered, json!(fresh));
        link.close();
    }
}

/// An SNTP responder on loopback whose clock is 100 s ahead and whose answers take 100 ms
/// to arrive and 100 ms to come back; `mangle` spoils the reply.
async fn sntp_responder(mangle: fn(&mut [u8]) -> usize) -> std::net::SocketAddr {
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    tokio::spawn(async move {
        let mut q = [0u8; 48];
        while let Ok((n, from)) = socket.recv_from(&mut q).await {
            assert_eq!(n, 48, "a 48-byte query");
            tokio::time::sleep(Duration::from_millis(100)).await;
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                + Duration::from_secs(100);
            let ts = ((now.as_secs() + 2_208_988_800) << 32)
                | ((u64::from(now.subsec_nanos()) << 32) / 1_000_000_000);
            let mut r = [0u8; 48];
            r[0] = 0x24; // version 4, mode 4 (server)
            r[1] = 2; // stratum
            r[24..32].copy_from_slice(&q[40..48]); // origin = the query's transmit time
            r[32..40].copy_from_slice(&ts.to_be_bytes());
            r[40..48].copy_from_slice(&ts.to_be_bytes());
            let len = mangle(&mut r);
            tokio::time::sleep(Duration::from_millis(100)).await;
            let _ = socket.send_to(&r[..len], from).await;
        }
    });
    addr
}

/// `get_ntp_time` corrects for the round trip (the original returns the server's transmit
/// time, here 100 ms late), and refuses replies that are not answers to its query.
#[tokio::test]
async fn sntp_time_is_corrected_for_the_round_trip_and_bad_replies_are_refused() {
    use tether::clevershow::drone::{get_ntp_time, NtpError, TimeSource};
    let good = sntp_responder(|_| 48).await;
    let source = TimeSource::Ntp {
        host: "127.0.0.1".into(),
        port: good.port(),
        timeout: WAIT,
    };
    let got = source.now().await.unwrap();
    let truth = std::time::SystemTime::now() + Duration::from_secs(100);
    let off = match truth.duration_since(got) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    };
    assert!(off.abs() < 0.05, "{off} s off the server's clock");
    type Mangle = fn(&mut [u8]) -> usize;
    let cases: [(Mangle, &str); 4] = [
        (|_| 40, "shorter than 48"),
        (
            |r| {
                r[0] = 0x23;
                48
            },
            "mode 4",
        ),
        (
            |r| {
                r[1] = 0;
                48
            },
            "kiss-o'-death",
        ),
        (
            |r| {
                r[24] ^= 1;
                48
            },
            "origin timestamp",
        ),
    ];
    for (mangle, says) in cases {
        let bad = sntp_responder(mangle).await;
        let e = get_ntp_time("127.0.0.1", bad.port(), WAIT)
            .await
            .unwrap_err();
        assert!(
            matches!(e, NtpError::BadReply { .. }) && e.to_string().contains(says),
            "{e}"
        );
    }
    let silent = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let e = get_ntp_time("127.0.0.1", port, Duration::from_millis(200))
        .await
        .unwrap_err();
    assert!(matches!(e, NtpError::Timeout { .. }), "{e}");
    assert!(TimeSource::System.now().await.is_ok());
}

/// The drone's configuration file: loaded with its defaults, refused with a clear reason
/// for an unknown key or a bad address, re-read when loaded again, and a drone made from
/// it links to its server and answers its id.
#[tokio::test]
async fn a_drone_runs_from_its_configuration_file_and_reloads_it() {
    use tether::clevershow::drone::{DroneConfig, DroneId, TimeSource};
    let dir = temp_dir("drone-config");
    let path = dir.join("drone.toml");
    std::fs::write(&path, "").unwrap();
    let cfg = DroneConfig::load(&path).unwrap();
    assert_eq!(
        cfg.server_addr().unwrap(),
        "127.0.0.1:25000".parse().unwrap()
    );
    assert_eq!(cfg.time_source(), TimeSource::System);
    assert_eq!(
        cfg.drone_id(),
        DroneId::Default {
            store: dir.join("drone.toml.id")
        }
    );
    assert!(cfg.broadcast.is_none(), "discovery off unless configured");

    for (text, says) in [
        ("colour = 1\n", "colour"),
        (
            "[server]\nhost = \"example\"\nport = 1\n",
            "not an IP address",
        ),
        ("[ntp]\ntimeout_secs = -1\n", "ntp.timeout_secs"),
    ] {
        std::fs::write(&path, text).unwrap();
        let e = DroneConfig::load(&path).unwrap_err().to_string();
        assert!(
            e.contains(says) && e.contains("drone.toml"),
            "{text:?}: {e}"
        );
    }

    let server = Node::new();
    let mut rx = ids_of(&server);
    let l = server.bind("127.0.0.1:0").await.unwrap();
    let text = format!(
        "id = \"drone-9\"\n[server]\nhost = \"127.0.0.1\"\nport = {}\n[ntp]\nuse = true\nport = 9\n",
        l.local_addr().port()
    );
    std::fs::write(&path, text).unwrap();
    let cfg = DroneConfig::load(&path).unwrap();
    assert_eq!(
        cfg.time_source(),
        TimeSource::Ntp {
            host: "127.0.0.1".into(),
            port: 9,
            timeout: Duration::from_secs(2)
        }
    );
    let drone = cfg.dial(&Node::new()).unwrap().start();
    drone.wait_link(WAIT).await.unwrap();
    assert_eq!(
        tokio::time::timeout(WAIT, rx.recv())
            .await
            .unwrap()
            .unwrap(),
        json!("drone-9")
    );
    drone.close();
}

/// A push the server refuses is reported to a Tether sender (`Peer::refused_pushes`), while
/// an original sender, which has no answer for a push on its wire, gets nothing back.
#[tokio::test]
async fn a_refused_push_is_reported_to_a_tether_sender_and_to_nobody_else() {
    let base = temp_dir("refused-push");
    let (_s, l) = file_server(&base.join("root")).await;
    std::fs::write(base.join("f"), b"payload").unwrap();
    let mut original = OriginalPeer {
        stream: tokio::net::TcpStream::connect(l.local_addr())
            .await
            .unwrap(),
        buf: bytes::BytesMut::new(),
    };
    let push = tether_wire::clevershow::Frame::file_push(
        "../outside/f",
        bytes::Bytes::from_static(b"payload"),
    );
    assert!(!push.accepts_error_responses());
    original
        .stream
        .write_all(&push.to_bytes().unwrap())
        .await
        .unwrap();
    assert_eq!(
        original.next(Duration::from_millis(300)).await,
        None,
        "an original sender is told nothing"
    );

    let drone = Node::new().connect(l.local_addr()).await.unwrap();
    drone
        .push_file(&base.join("f"), "../outside/f")
        .await
        .unwrap();
    let refused = tokio::time::timeout(WAIT, async {
        loop {
            let r = drone.refused_pushes();
            if !r.is_empty() {
                return r;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the refusal is reported");
    assert_eq!(refused.len(), 1, "{refused:?}");
    assert_eq!(refused[0].filepath, "../outside/f");
    assert!(refused[0].reason.contains("'..'"), "{refused:?}");
    // An accepted push is not reported.
    drone.push_file(&base.join("f"), "inside/f").await.unwrap();
    assert!(drone.request("echo").send().await.is_ok());
    assert!(drone.refused_pushes().is_empty());
    assert_eq!(
        std::fs::read(base.join("root/inside/f")).unwrap(),
        b"payload"
    );
    let _ = std::fs::remove_dir_all(base);
}

/// The id each peer of `server` answers when asked on its link.
fn ids_of(server: &Node) -> mpsc::UnboundedReceiver<Value> {
    let (tx, rx) = mpsc::unbounded_channel();
    server.on_peer(move |peer| {
        let tx = tx.clone();
        tokio::spawn(async move {
            let _ = tx.send(peer.request("id").send().await.unwrap());
        });
    });
    rx
}

/// Waits (at most [`WAIT`]) until `peer` has no link.
async fn unlinked(peer: &tether::clevershow::Peer) {
    tokio::time::timeout(WAIT, async {
        while peer.is_linked() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
    .expect("the link went down");
}

/// Every peer `server` gets, as its links come up.
fn peers_of(server: &Node) -> mpsc::UnboundedReceiver<tether::clevershow::Peer> {
    let (tx, rx) = mpsc::unbounded_channel();
    server.on_peer(move |p| {
        let _ = tx.send(p);
    });
    rx
}

/// A TCP relay between a drone and its server whose current connection the test can cut
/// (both ends see it end, as when a drone's Wi-Fi drops and it reconnects).
struct Cuttable {
    addr: std::net::SocketAddr,
    current: std::sync::Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>>,
    /// While set, connections are dropped as they come (the network is down).
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Cuttable {
    async fn to(server: std::net::SocketAddr) -> Cuttable {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let current: std::sync::Arc<std::sync::Mutex<Option<tokio::task::JoinHandle<()>>>> =
            Default::default();
        let slot = current.clone();
        let down = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let is_down = down.clone();
        tokio::spawn(async move {
            while let Ok((mut a, _)) = listener.accept().await {
                if is_down.load(std::sync::atomic::Ordering::SeqCst) {
                    continue;
                }
                let Ok(mut b) = tokio::net::TcpStream::connect(server).await else {
                    continue;
                };
                let pipe = tokio::spawn(async move {
                    let _ = tokio::io::copy_bidirectional(&mut a, &mut b).await;
                });
                *slot.lock().unwrap() = Some(pipe);
            }
        });
        Cuttable {
            addr,
            current,
            down,
        }
    }

    /// The network goes down: the connection ends, new ones are dropped.
    fn cut(&self) {
        self.down.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(p) = self.current.lock().unwrap().take() {
            p.abort();
        }
    }

    fn restore(&self) {
        self.down.store(false, std::sync::atomic::Ordering::SeqCst);
    }
}

/// Server side resume (the original server's one client per address): a drone that comes
/// back gets what was queued for it meanwhile, and the requests it had not answered are
/// sent again and answered; with the switches off, both fail or drop instead; a drone that
/// does not come back within the grace is closed and what waited fails.
#[tokio::test]
async fn a_drone_that_reconnects_resumes_its_server_side_peer() {
    use tether::clevershow::Resume;
    for resume in [
        Resume::default(),
        Resume {
            queue: false,
            requests: false,
        },
    ] {
        let server = Node::new();
        server.resume_drones(Duration::from_secs(30), resume);
        let mut peers = peers_of(&server);
        let l = server.bind("127.0.0.1:0").await.unwrap();
        let relay = Cuttable::to(l.local_addr()).await;

        let drone = Node::new();
        let (notes_tx, mut notes) = mpsc::unbounded_channel();
        drone.action("note", move |_p, args, _k| {
            let notes_tx = notes_tx.clone();
            async move {
                let _ = notes_tx.send(args);
            }
        });
        drone.request("ping", |_p, _a, _k| async { Ok(json!("pong")) });
        drone.request("slow", |_p, _a, _k| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok(json!("done"))
        });
        let d = drone
            .dial(relay.addr)
            .backoff(Duration::from_millis(20), Duration::from_millis(50))
            .start();
        d.wait_link(WAIT).await.unwrap();
        let p = tokio::time::timeout(WAIT, peers.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(p.request("ping").send().await.unwrap(), json!("pong"));

        // A request in flight when the link breaks; the server talks to the drone meanwhile.
        let asked = tokio::spawn({
            let p = p.clone();
            async move { p.request("slow").timeout(WAIT).send().await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        relay.cut();
        unlinked(&p).await;
        let queued = p
            .action("note", vec![json!("while away")], Map::new())
            .await;
        // The drone redials; its peer on the server resumes (the hook runs again).
        relay.restore();
        let again = tokio::time::timeout(WAIT, peers.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(again.links(), 2, "the same peer took the new link");
        assert_eq!(p.links(), 2);
        let answer = tokio::time::timeout(WAIT, asked).await.unwrap().unwrap();
        if resume.requests {
            assert!(queued.is_ok());
            assert_eq!(
                answer.unwrap(),
                json!("done"),
                "the request was re-sent and answered"
            );
            let note = tokio::time::timeout(WAIT, notes.recv())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(note, vec![json!("while away")]);
        } else {
            let e = answer.unwrap_err().to_string();
            assert!(e.contains("resend_requests is off"), "{e}");
            let e = queued.unwrap_err().to_string();
            assert!(e.contains("resume_queue is off"), "{e}");
        }
        assert_eq!(
            p.request("ping").send().await.unwrap(),
            json!("pong"),
            "linked again"
        );
        d.close();
    }

    // The drone's own switches: with resume_queue off, nothing is kept while it is away
    // (here the server is gone: its port closed, its peer closed).
    let server = Node::new();
    let mut peers = peers_of(&server);
    let l = server.bind("127.0.0.1:0").await.unwrap();
    let d = Node::new()
        .dial(l.local_addr())
        .backoff(Duration::from_millis(20), Duration::from_millis(50))
        .resume_queue(false)
        .resend_requests(false)
        .start();
    d.wait_link(WAIT).await.unwrap();
    let on_server = tokio::time::timeout(WAIT, peers.recv())
        .await
        .unwrap()
        .unwrap();
    l.shutdown().await;
    on_server.close();
    unlinked(&d).await;
    let e = d.action("note", vec![], Map::new()).await.unwrap_err();
    assert!(e.to_string().contains("resume_queue is off"), "{e}");
    d.close();

    // No return within the grace: the peer closes, what waited fails.
    let server = Node::new();
    server.resume_drones(Duration::from_millis(200), Resume::default());
    let mut peers = peers_of(&server);
    let l = server.bind("127.0.0.1:0").await.unwrap();
    let d = Node::new().connect(l.local_addr()).await.unwrap();
    let p = tokio::time::timeout(WAIT, peers.recv())
        .await
        .unwrap()
        .unwrap();
    let asked = tokio::spawn({
        let p = p.clone();
        async move { p.request("never").timeout(WAIT).send().await }
    });
    d.close();
    let e = tokio::time::timeout(WAIT, asked)
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert!(matches!(e, Error::Closed { .. }), "{e}");
    assert!(p.is_closed());
}
