//! Faults a network inflicts, tried on real processes. A peer that vanishes without a
//! reset is made inside a network namespace this test creates (`unshare -rn`, loopback
//! only): once the client is subscribed and idle, the namespace's loopback goes down, so
//! nothing more is delivered either way and no reset ever comes.

use crate::common::*;

/// Inside the namespace: `tether serve`, an idle `tether sub`, then loopback down; prints
/// `sub exit CODE` when the subscriber gives up, then both processes' output.
const VANISH: &str = r#"
ip link set lo up || exit 97
T="$1"; cd "$2"
"$T" serve --listen 127.0.0.1:3005 --no-gateway > serve.out 2>&1 &
SERVE=$!
for i in $(seq 400); do grep -q "VSOA server on" serve.out && break; sleep 0.05; done
"$T" sub vsoa://127.0.0.1:3005/x > sub.out 2> sub.err &
SUB=$!
for i in $(seq 400); do grep -q subscribed sub.err && break; sleep 0.05; done
ip link set lo down
wait $SUB
echo "sub exit $?"
kill $SERVE
cat sub.err serve.out
"#;

#[tokio::test]
async fn an_idle_client_notices_a_server_that_vanished_without_a_reset() {
    let dir = temp_dir("vanish");
    let out = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new("unshare")
            .args(["-rn", "sh", "-c", VANISH, "vanish"])
            .arg(env!("CARGO_BIN_EXE_tether"))
            .arg(&dir)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("without keepalive the idle subscriber would wait forever")
    .expect("unshare runs (user and network namespaces)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("sub exit 3")
            && text.contains(
                "tether: connection to vsoa://127.0.0.1:3005 ended after 0 messages: read failed"
            ),
        "keepalive gave up on the silent link, and the subscriber said so:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}

/// A small deterministic generator for garbage (xorshift64*).
struct Garbage(u64);

impl Garbage {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

/// The port a contract line ends with.
fn port_of(line: &str) -> u16 {
    let digits: String = line
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .chars()
        .rev()
        .take_while(char::is_ascii_digit)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect();
    digits
        .parse()
        .unwrap_or_else(|_| panic!("no port in {line:?}"))
}

/// Makes dropping `s` send a reset instead of a FIN.
fn socket_linger_zero(s: &tokio::net::TcpStream) -> std::io::Result<()> {
    #[allow(deprecated)] // newer tokio points to socket2 for the same call
    s.set_linger(Some(std::time::Duration::ZERO))
}

/// Open file descriptors of a process.
fn fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

/// Sends `bytes` on a fresh connection to `addr` and closes it; a refusal or reset is fine.
async fn throw(addr: std::net::SocketAddr, bytes: Vec<u8>) {
    use tokio::io::AsyncWriteExt;
    if let Ok(mut s) = tokio::net::TcpStream::connect(addr).await {
        let _ = s.write_all(&bytes).await;
        let _ = s.shutdown().await;
    }
}

#[tokio::test]
async fn every_listener_takes_bad_input_while_good_clients_get_every_reply_and_publish() {
    use std::net::SocketAddr;
    use tokio::io::AsyncWriteExt;
    let dir = temp_dir("faults");
    let mut cmd = tether_cmd(&[]);
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--gateway",
        "127.0.0.1:0",
        "--clever-show",
        "127.0.0.1:0",
        "--socket-protocol",
        "127.0.0.1:0",
        "--password",
        "good",
        "--files-root",
    ])
    .arg(dir.join("files"));
    let mut serve = Lines::spawn(cmd);
    let at = |line: String| SocketAddr::from(([127, 0, 0, 1], port_of(&line)));
    let vsoa = at(serve.expect_prefix("tether: VSOA server on").await);
    let gateway = at(serve.expect_prefix("tether: gateway on").await);
    let clever = at(serve.expect_prefix("tether: clever-show on").await);
    let sp = at(serve.expect_prefix("tether: socket_protocol on").await);
    let pid = serve.child.id().expect("running");
    let url = format!("vsoa://{vsoa}");
    let good = || tether::Client::connect(&url).password("good");

    // The good clients: a numbered publisher (through /publish), a subscriber that checks
    // every number arrives once and in order, and a caller that checks every echo.
    let subscriber = good().await.unwrap();
    let mut sub = subscriber.subscribe(["/n/"]).await.unwrap();
    // A subscriber that logs in, subscribes and never reads again: cut off, counted, and
    // nobody else waits for it (64 KiB publishes fill its socket and queue quickly).
    let mut stalled = tokio::net::TcpStream::connect(vsoa).await.unwrap();
    {
        use tether_wire::vsoa::{Packet, PacketType};
        let login = Packet::new(PacketType::ServInfo).with_param(&b"{\"passwd\":\"good\"}"[..]);
        let subscribe = Packet::new(PacketType::Subscribe)
            .with_url("/n/")
            .with_seqno(1);
        for p in [login, subscribe] {
            stalled.write_all(&p.to_bytes().unwrap()).await.unwrap();
        }
        // Read the two replies, then never again.
        let mut got = bytes::BytesMut::new();
        let mut dec = tether_wire::vsoa::Decoder::default();
        let mut replies = 0;
        while replies < 2 {
            tokio::io::AsyncReadExt::read_buf(&mut stalled, &mut got)
                .await
                .unwrap();
            while dec.decode(&mut got).unwrap().is_some() {
                replies += 1;
            }
        }
    }
    const N: u64 = 1500;
    // The real peers as good clients too: Python vsoa and hat-juggler subscribers of /p/
    // and callers, a clever-show caller framed as the original and a socket_protocol
    // caller framed from the spec (the script checks every reply and every publish, once
    // and in order).
    let mut peers = Lines::spawn({
        let mut c = tether_testkit::python();
        c.arg("good_clients.py");
        for port in [vsoa.port(), gateway.port(), clever.port(), sp.port()] {
            c.arg(port.to_string());
        }
        c.args(["good", &N.to_string()]);
        c
    });
    peers.expect("READY").await;
    let baseline = fds(pid);
    let publisher = tokio::spawn({
        let c = good().await.unwrap();
        async move {
            use base64::Engine as _;
            let data = base64::engine::general_purpose::STANDARD.encode(vec![7u8; 64 << 10]);
            let mut cut_off = 0;
            for i in 0..N {
                let p = serde_json::json!({"url": "/n/x", "param": i, "data": data});
                let r = c.call("/publish").set().json(&p).unwrap().await.unwrap();
                assert_eq!(r.status.0, 0, "publish {i}");
                let report = r.payload.param_value().unwrap();
                assert!(
                    report["delivered"].as_u64().unwrap() >= 1,
                    "publish {i}: {report}"
                );
                cut_off += report["cut_off"].as_u64().unwrap();
                let p = serde_json::json!({"url": "/p/x", "param": i});
                let r = c.call("/publish").set().json(&p).unwrap().await.unwrap();
                let report = r.payload.param_value().unwrap();
                assert_eq!(report["delivered"], 2, "publish /p/x {i}: {report}");
                // A cut-off no earlier report saw (the writer cut the connection between
                // publishes) is counted in the next publish's report, whatever its URL.
                cut_off += report["cut_off"].as_u64().unwrap();
            }
            cut_off
        }
    });
    let caller = tokio::spawn({
        let c = good().await.unwrap();
        async move {
            for i in 0..N {
                let r = c.call("/echo").json(&i).unwrap().await.unwrap();
                assert_eq!(r.payload.param_value(), Some(serde_json::json!(i)));
            }
        }
    });
    let received = tokio::spawn(async move {
        for want in 0..N {
            let m = tokio::time::timeout(WAIT, sub.next())
                .await
                .expect("a publish in time")
                .expect("subscription open");
            assert_eq!(m.payload.param_value(), Some(serde_json::json!(want)));
        }
        sub
    });

    // A transfer through the storm: `tether put` then `tether get` of 8 MiB, each checked.
    let transfer = tokio::spawn({
        let (dir, vsoa) = (dir.clone(), vsoa);
        async move {
            let data: Vec<u8> = (0..8u32 << 20)
                .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
                .collect();
            let src = dir.join("storm.bin");
            std::fs::write(&src, &data).unwrap();
            let url = format!("vsoa://{vsoa}/files/storm.bin");
            let put = tether(&[
                "put",
                src.to_str().unwrap(),
                &url,
                "-q",
                "--password",
                "good",
            ])
            .await;
            assert_eq!(put.code, 0, "{}", put.stderr);
            let out = dir.join("storm.out");
            let get = tether(&[
                "get",
                &url,
                "-o",
                out.to_str().unwrap(),
                "-q",
                "--password",
                "good",
            ])
            .await;
            assert_eq!(get.code, 0, "{}", get.stderr);
            assert_eq!(std::fs::read(dir.join("files/storm.bin")).unwrap(), data);
            assert_eq!(std::fs::read(&out).unwrap(), data);
            let sha = |r: &Run| {
                serde_json::from_str::<serde_json::Value>(r.stdout.trim()).unwrap()["sha256"]
                    .clone()
            };
            assert_eq!(sha(&put), sha(&get));
        }
    });

    // The faults, all at once, each bounded.
    let mut g = Garbage(0x5eed);
    let mut faults = tokio::task::JoinSet::new();
    for i in 0..200 {
        let target = [vsoa, gateway, clever, sp][i % 4];
        let n = 1 + (g.next() % 4096) as usize;
        let bytes = g.bytes(n);
        faults.spawn(throw(target, bytes));
    }
    // Absurd declared lengths, truncated packets, packets before login.
    for target in [vsoa, clever, sp] {
        for bytes in [
            b"SP\xff\xff\xff\xff".to_vec(),
            vec![0xff, 0xff],
            vec![0x92, 0, 0, 0, 0xff, 0xff, 0xff, 0xff],
            g.bytes(3),
        ] {
            faults.spawn(throw(target, bytes));
        }
    }
    // Wrong passwords.
    for _ in 0..20 {
        let url = url.clone();
        faults.spawn(async move {
            let e = tether::Client::connect(&url)
                .password("bad")
                .await
                .unwrap_err();
            assert!(matches!(e, tether::Error::WrongPassword { .. }), "{e}");
        });
    }
    // Slowloris: a byte every 50 ms for 2 s, on every listener.
    for target in [vsoa, gateway, clever, sp] {
        for _ in 0..10 {
            faults.spawn(async move {
                if let Ok(mut s) = tokio::net::TcpStream::connect(target).await {
                    for b in b"GET / HTTP/1.1\r\nHost: x\r\nX: ".iter().cycle().take(40) {
                        if s.write_all(&[*b]).await.is_err() {
                            break;
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    }
                }
            });
        }
    }
    // Random datagrams to the quick port.
    {
        let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        for _ in 0..500 {
            let n = 1 + (g.next() % 1400) as usize;
            let d = g.bytes(n);
            let _ = udp.send_to(&d, vsoa).await;
        }
    }
    // Half HTTP requests, and WebSocket upgrades followed by frames that are not juggler.
    for _ in 0..30 {
        faults.spawn(throw(
            gateway,
            b"GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgr".to_vec(),
        ));
    }
    for frame in [
        tokio_tungstenite::tungstenite::Message::Binary(vec![1, 2, 3].into()),
        tokio_tungstenite::tungstenite::Message::Text("{not json".into()),
        tokio_tungstenite::tungstenite::Message::Text("0[1,2]".into()),
        tokio_tungstenite::tungstenite::Message::Text("9{}".into()),
    ] {
        faults.spawn(async move {
            use futures_util::{SinkExt, StreamExt};
            let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{gateway}/ws"))
                .await
                .unwrap();
            let _ = ws.send(frame).await;
            // The gateway closes it; read until it does.
            while let Ok(Some(Ok(_))) = tokio::time::timeout(WAIT, ws.next()).await {}
        });
    }
    // Connections opened and dropped with a reset, by the thousand.
    for _ in 0..2000 {
        faults.spawn(async move {
            if let Ok(s) = tokio::net::TcpStream::connect(vsoa).await {
                let _ = socket_linger_zero(&s);
            }
        });
    }
    let mut thrown = 0;
    while let Some(r) = faults.join_next().await {
        r.expect("a fault task ran to its end");
        thrown += 1;
    }
    assert!(thrown > 2300, "{thrown}");

    let cut_off = tokio::time::timeout(WAIT, publisher)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        cut_off, 1,
        "the stalled subscriber is cut off once, and counted"
    );
    // ... and the dashboard shows it (its state, as a browser page receives it).
    let page = tether_gateway::client::JugglerClient::builder(&format!("ws://{gateway}/ws"))
        .connect()
        .await
        .unwrap();
    let mut changes = page.state_changes();
    let state = tokio::time::timeout(WAIT, changes.wait_for(|s| s["totals"]["cut_off"] == 1))
        .await
        .expect("the dashboard shows the cut-off")
        .unwrap()
        .clone();
    assert_eq!(
        state["relay"],
        serde_json::Value::Null,
        "no --relay: {state}"
    );
    drop(page);
    drop(stalled);
    tokio::time::timeout(WAIT, caller).await.unwrap().unwrap();
    tokio::time::timeout(WAIT, transfer).await.unwrap().unwrap();
    let mut sub = tokio::time::timeout(WAIT, received).await.unwrap().unwrap();
    // Exactly once: nothing more is in the subscription.
    assert!(
        tokio::time::timeout(std::time::Duration::from_millis(200), sub.next())
            .await
            .is_err(),
        "no duplicate"
    );
    peers.expect("DONE").await;
    drop(peers);
    // Every bad connection is gone again: descriptors back to where they were.
    tokio::time::timeout(WAIT, async {
        while fds(pid) > baseline + 2 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("descriptors {} vs {baseline} before", fds(pid)));
    // And the server still serves a newcomer on every transport.
    let c = good().await.unwrap();
    let r = c.call("/echo").json(&"after").unwrap().await.unwrap();
    assert_eq!(r.payload.param_value(), Some(serde_json::json!("after")));
    let peer = tether::sp::Endpoint::new().connect(sp).await.unwrap();
    peer.send(tether::sp::sid::READ_REQUEST, 1, serde_json::json!("after"))
        .await
        .unwrap();
    let m = peer
        .receive(tether::sp::sid::READ_RESPONSE, 1, WAIT)
        .await
        .unwrap();
    assert_eq!(m.data, serde_json::json!("after"));
    let drone = tether::clevershow::Node::new()
        .connect(clever)
        .await
        .unwrap();
    let kwargs = serde_json::json!({"k": 1}).as_object().cloned().unwrap();
    let echo = drone.request("echo").kwargs(kwargs).send().await.unwrap();
    assert_eq!(echo, serde_json::json!({"args": [], "kwargs": {"k": 1}}));
    let _ = std::fs::remove_dir_all(dir);
}

#[tokio::test]
async fn robots_come_back_by_themselves_after_the_server_is_killed_and_restarted() {
    const ROBOTS: usize = 200;
    let first = tether_serve(&["--no-gateway"]).await;
    let port = first.port;
    let url = format!("vsoa://127.0.0.1:{port}");
    let mut robots = Vec::new();
    for _ in 0..ROBOTS {
        let robot = tether::Robot::builder(&url).start().unwrap();
        let sub = robot.subscribe(["/r/"]).await.unwrap();
        robots.push((robot, sub));
    }
    let publish = |k: u64| {
        let url = url.clone();
        async move {
            let c = tether::Client::connect(&url).await?;
            let p = serde_json::json!({"url": "/r/x", "param": k});
            let r = c.call("/publish").set().json(&p)?.await?;
            c.close().await;
            Ok::<_, tether::Error>(r.payload.param_value().unwrap_or_default())
        }
    };
    // Publishes until one reaches every robot (each reaches the robots connected and
    // subscribed by then); the number of that one.
    let until_all = |from: u64| {
        let publish = &publish;
        async move {
            let mut k = from;
            loop {
                let report = publish(k).await.unwrap();
                if report["delivered"] == ROBOTS {
                    return k;
                }
                k += 1;
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
    };
    // Each robot got the publishes it was there for once, in order, up to `k` (the last).
    async fn drained(robots: &mut [(tether::Robot, tether::client::RobotSubscription)], k: u64) {
        for (robot, sub) in robots.iter_mut() {
            assert!(robot.is_connected());
            let mut last = None;
            while last != Some(k) {
                let m = tokio::time::timeout(WAIT, sub.next())
                    .await
                    .unwrap()
                    .unwrap();
                let v = m.payload.param_value().unwrap().as_u64().unwrap();
                assert!(
                    last < Some(v) && v <= k,
                    "in order, once each: {last:?} then {v}"
                );
                last = Some(v);
            }
        }
    }
    let k = tokio::time::timeout(WAIT, until_all(0))
        .await
        .expect("all robots up");
    drained(&mut robots, k).await;

    // kill -9, and a new server on the same port.
    let mut first = first;
    first.child.start_kill().unwrap();
    let _ = first.child.wait().await;
    let killed = std::time::Instant::now();
    let _second = tether_serve_at(port, &["--no-gateway"]).await;

    // Every robot reconnects and re-subscribes by itself; at most once across the restart,
    // so what counts is that they are all back.
    let k = tokio::time::timeout(WAIT, until_all(k + 1))
        .await
        .expect("every robot reconnects and re-subscribes by itself");
    eprintln!(
        "all {ROBOTS} robots back and re-subscribed {:?} after the kill",
        killed.elapsed()
    );
    drained(&mut robots, k).await;
}

#[tokio::test]
async fn a_put_killed_mid_upload_is_resumed_by_the_next_and_no_partial_file_is_ever_seen() {
    let dir = temp_dir("killed-put");
    let root = dir.join("root");
    let s = tether_serve(&["--no-gateway", "--files-root", root.to_str().unwrap()]).await;
    let size = 200usize << 20;
    let data: Vec<u8> = (0..size)
        .map(|i| (i % 251) as u8 ^ (i >> 20) as u8)
        .collect();
    let src = dir.join("big.bin");
    std::fs::write(&src, &data).unwrap();
    let url = format!("vsoa://127.0.0.1:{}/files/big.bin", s.port);
    let final_path = root.join("big.bin");
    let parts = root.join(".tether-parts");
    // Watches the final name the whole time: it is absent or the whole file.
    let watching = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let watcher = {
        let (watching, final_path) = (watching.clone(), final_path.clone());
        tokio::spawn(async move {
            while watching.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok(m) = std::fs::metadata(&final_path) {
                    assert_eq!(m.len(), size as u64, "a partial file under the final name");
                }
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        })
    };
    let part_len = || {
        std::fs::read_dir(&parts)
            .map(|d| {
                d.filter_map(|e| e.ok()?.metadata().ok())
                    .map(|m| m.len())
                    .sum::<u64>()
            })
            .unwrap_or(0)
    };
    let mut put = tether_cmd(&["put", src.to_str().unwrap(), &url, "--quiet"])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // kill -9 once some of it has arrived.
    tokio::time::timeout(WAIT, async {
        while part_len() < 16 << 20 {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    })
    .await
    .expect("the upload starts");
    put.start_kill().unwrap();
    let _ = put.wait().await;
    assert!(!final_path.exists(), "killed before the end");
    // Run again at once: it resumes what the killed one sent.
    let out = tokio::time::timeout(
        WAIT,
        tether_cmd(&["put", src.to_str().unwrap(), &url, "--quiet"]).output(),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(line["resumed_from"].as_u64().unwrap() >= 16 << 20, "{line}");
    assert_eq!(line["size"], size);
    watching.store(false, std::sync::atomic::Ordering::Relaxed);
    watcher.await.unwrap();
    assert!(
        std::fs::read(&final_path).unwrap() == data,
        "the whole file, byte for byte"
    );
    let _ = std::fs::remove_dir_all(dir);
}
