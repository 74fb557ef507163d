//! Federation over NATS with real processes: a three-server nats-server cluster (Debian's,
//! installed by interop/setup.sh) and three `tether serve --nats` nodes on loopback, with
//! the real Python vsoa client and hat-juggler client connected to different nodes.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{json, Value};
use tether_wire::url::subscription_matches;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};

use crate::common::*;

/// A loopback TCP port for a server to listen on, free now: below the kernel's ephemeral
/// range (32768 and up), so no connection or port-0 listener of another test takes it
/// before the server binds it, and never the same twice in this process.
fn free_tcp() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    let start = 20_000 + (std::process::id() % 1000) as u16 * 12;
    (0..12_000u16)
        .map(|i| 20_000 + (start - 20_000 + i * 7) % 12_000)
        .find(|&p| !given.contains(&p) && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok())
        .inspect(|&p| given.push(p))
        .expect("a free TCP port on loopback below 32000")
}

/// A nats-server cluster on loopback: each server routes to the others.
struct Nats {
    dir: std::path::PathBuf,
    ports: Vec<u16>,
    cluster_ports: Vec<u16>,
    servers: Vec<Option<Child>>,
}

impl Nats {
    async fn start(name: &str, n: usize) -> Nats {
        let dir = temp_dir(name);
        let ports: Vec<u16> = (0..n).map(|_| free_tcp()).collect();
        let cluster_ports: Vec<u16> = (0..n).map(|_| free_tcp()).collect();
        let mut nats = Nats {
            dir,
            ports,
            cluster_ports,
            servers: (0..n).map(|_| None).collect(),
        };
        for i in 0..n {
            nats.spawn(i);
        }
        for i in 0..n {
            nats.wait_ready(i, n - 1).await;
        }
        nats
    }

    fn log(&self, i: usize) -> std::path::PathBuf {
        self.dir.join(format!("n{i}.log"))
    }

    fn spawn(&mut self, i: usize) {
        let routes: Vec<String> = (0..self.ports.len())
            .filter(|&j| j != i)
            .map(|j| format!("nats-route://127.0.0.1:{}", self.cluster_ports[j]))
            .collect();
        let conf = format!(
            "server_name: n{i}\nlisten: 127.0.0.1:{}\nping_interval: \"5s\"\nping_max: 2\n\
             log_file: \"{}\"\ncluster {{\n  name: tether\n  listen: 127.0.0.1:{}\n  \
             no_advertise: true\n  routes: [{}]\n}}\n",
            self.ports[i],
            self.log(i).display(),
            self.cluster_ports[i],
            routes.join(", ")
        );
        let path = self.dir.join(format!("n{i}.conf"));
        std::fs::write(&path, conf).expect("write the nats-server config");
        let _ = std::fs::remove_file(self.log(i));
        let child = Command::new("nats-server")
            .arg("-c")
            .arg(&path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("nats-server is installed (interop/setup.sh installs Debian's)");
        self.servers[i] = Some(child);
    }

    /// Waits until server `i` is ready and has `routes` route connections.
    async fn wait_ready(&self, i: usize, routes: usize) {
        let log = self.log(i);
        tokio::time::timeout(WAIT, async {
            loop {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                if text.contains("Server is ready")
                    && text.matches("Route connection created").count() >= routes
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("nats-server n{i} not ready with {routes} routes"));
    }

    /// The client URLs, server `first` first.
    fn urls(&self, first: usize) -> String {
        let mut order: Vec<usize> = vec![first];
        order.extend((0..self.ports.len()).filter(|&j| j != first));
        order
            .iter()
            .map(|&j| format!("nats://127.0.0.1:{}", self.ports[j]))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Kills server `i` (SIGKILL: no goodbye to its clients or routes).
    async fn kill(&mut self, i: usize) {
        if let Some(mut c) = self.servers[i].take() {
            let _ = c.start_kill();
            let _ = c.wait().await;
        }
    }
}

/// One `tether serve --nats` node, with its gateway port.
struct Node {
    proc: Proc,
    gateway: u16,
}

impl Node {
    async fn start(nats: &str, name: &str, extra: &[&str]) -> Node {
        let gateway = free_tcp();
        let gw = format!("127.0.0.1:{gateway}");
        let mut args = vec!["--nats", nats, "--node", name, "--gateway", &gw];
        args.extend_from_slice(extra);
        let proc = tether_serve(&args).await;
        Node { proc, gateway }
    }

    /// `/metrics` of its gateway.
    async fn metrics(&self) -> String {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", self.gateway))
            .await
            .expect("connect to the gateway");
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    /// One sample of `/metrics` (`name` with its labels, as printed).
    async fn metric(&self, name: &str) -> u64 {
        let text = self.metrics().await;
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
    }

    /// Waits until `/metrics` sample `name` satisfies `ok`; `what` says what was awaited.
    async fn wait_metric(&self, name: &str, ok: impl Fn(u64) -> bool, what: &str) {
        tokio::time::timeout(WAIT, async {
            while !ok(self.metric(name).await) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .unwrap_or_else(|_| panic!("{what}: {name} never got there"));
    }

    /// Waits until the node knows `n` patterns that the other nodes subscribed to (it sends
    /// only what they want).
    async fn wait_remote_patterns(&self, n: u64) {
        let what = format!("the node learns {n} remote patterns");
        self.wait_metric("tether_federation_remote_patterns", |v| v == n, &what)
            .await;
    }

    /// Waits until the node holds `n` NATS subscriptions for its subscribers.
    async fn wait_subscriptions(&self, n: u64) {
        let what = format!("the node holds {n} NATS subscriptions");
        self.wait_metric("tether_federation_subscriptions", |v| v == n, &what)
            .await;
    }
}

/// Waits until `from` can reach each of `others` (each holding one NATS subscription and
/// serving its route) through the cluster and knows `patterns` of their subscriptions:
/// calls there are answered over the routes that carried their SUBs first (NATS keeps
/// order on a route), and publishes are sent once their announcements arrived.
async fn converged(from: &Node, others: &[(&Node, &str)], patterns: u64) {
    for (node, _) in others {
        node.wait_subscriptions(1).await;
    }
    for (_, route) in others {
        until_served(from, route).await;
    }
    from.wait_remote_patterns(patterns).await;
}

/// A peer script (interop/py/federation_peer.py) run under our control.
struct Peer {
    child: Child,
    stdin: ChildStdin,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Peer {
    async fn start(mode: &str, port: u16, arg: Value) -> Peer {
        let mut child = python()
            .args([
                "federation_peer.py",
                mode,
                &port.to_string(),
                &arg.to_string(),
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("start the Python peer");
        let stdin = child.stdin.take().unwrap();
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let mut p = Peer {
            child,
            stdin,
            lines,
        };
        if !matches!(mode, "call" | "blob") {
            p.expect("READY").await;
        }
        p
    }

    async fn line(&mut self) -> String {
        tokio::time::timeout(WAIT, self.lines.next_line())
            .await
            .expect("the peer answered in time")
            .expect("read the peer")
            .expect("the peer ended early")
    }

    async fn expect(&mut self, want: &str) -> String {
        loop {
            let l = self.line().await;
            assert!(!l.starts_with("FAIL"), "peer: {l}");
            if l.starts_with(want) {
                return l;
            }
        }
    }

    /// What each subscription received, in order: pattern -> [[url, param]], once `total`
    /// messages arrived (or the peer's timeout passed), and a moment more for extra ones.
    async fn dump(self, total: usize) -> BTreeMap<String, Vec<(String, Value)>> {
        self.dump_toggled(total).await.0
    }

    /// [`Peer::dump`] of a `toggle` peer, with how often it toggled.
    async fn dump_toggled(mut self, total: usize) -> (BTreeMap<String, Vec<(String, Value)>>, u64) {
        self.stdin
            .write_all(format!("DUMP {total}\n").as_bytes())
            .await
            .unwrap();
        let mut toggled = 0;
        let line = loop {
            let l = self.expect("").await;
            if let Some(n) = l.strip_prefix("TOGGLED ") {
                toggled = n.parse().expect("a count");
            }
            if l.starts_with("MSGS ") {
                break l;
            }
        };
        self.expect("DONE").await;
        let _ = self.child.wait().await;
        let v: BTreeMap<String, Vec<(String, Value)>> =
            serde_json::from_str(&line["MSGS ".len()..]).expect("MSGS is JSON");
        (v, toggled)
    }

    /// The replies of a `call` peer: [url, status, param] each.
    async fn replies(mut self) -> Vec<(String, u8, Value)> {
        let mut out = Vec::new();
        loop {
            let l = self.line().await;
            assert!(!l.starts_with("FAIL"), "peer: {l}");
            if let Some(r) = l.strip_prefix("REPLY ") {
                out.push(serde_json::from_str(r).expect("REPLY is JSON"));
            }
            if l == "DONE" {
                let _ = self.child.wait().await;
                return out;
            }
        }
    }
}

/// Calls `url` on `node` until a node answers status 0 (routes of a node that just started
/// take a moment to reach every NATS server); the reply's param.
async fn until_served(node: &Node, url: &str) -> Value {
    tokio::time::timeout(WAIT, async {
        loop {
            let r = calls(node.proc.port, &[(url, "get", json!(null))]).await;
            if r[0].1 == 0 {
                return r[0].2.clone();
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("{url} was never served"))
}

/// Calls (url, param) on a node with the Python client; the replies.
async fn calls(port: u16, todo: &[(&str, &str, Value)]) -> Vec<(String, u8, Value)> {
    let todo: Vec<Value> = todo.iter().map(|(u, m, p)| json!([u, m, p])).collect();
    Peer::start("call", port, Value::Array(todo))
        .await
        .replies()
        .await
}

/// Publishes every URL on a node through `/publish` with the Python client, param {"n": i}.
async fn publish_all(port: u16, urls: &[&str]) {
    let todo: Vec<(&str, &str, Value)> = urls
        .iter()
        .enumerate()
        .map(|(i, u)| ("/publish", "set", json!({"url": u, "param": {"n": i}})))
        .collect();
    for (url, status, reply) in calls(port, &todo).await {
        assert_eq!(status, 0, "{url}: {reply}");
        assert_eq!(reply["not_forwarded"], 0, "{reply}");
        assert_eq!(reply["forwarded"], 1, "{reply}");
    }
}

/// The URL matrix across nodes, overlapping patterns without duplicates, the gateway's
/// subscribers, and RPC to the owners of routes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishes_cross_nodes_exactly_once_and_calls_reach_the_route_owner() {
    let nats = Nats::start("fed-matrix", 3).await;
    let t1 = Node::start(
        &nats.urls(0),
        "t1",
        &["--echo-route", "/only/t1/", "--echo-route", "/tie/"],
    )
    .await;
    let t2 = Node::start(
        &nats.urls(1),
        "t2",
        &["--echo-route", "/only/t2/", "--echo-route", "/tie/x"],
    )
    .await;
    let t3 = Node::start(
        &nats.urls(2),
        "t3",
        &["--echo-route", "/only/t3/x", "--echo-route", "/tie/"],
    )
    .await;

    // t2: the five patterns of the verified matrix, one client each.
    let matrix: Vec<&str> = tether_wire::url::MATCH_MATRIX
        .iter()
        .map(|(p, _)| *p)
        .collect();
    let on_t2 = Peer::start("vsoa", t2.proc.port, json!(matrix)).await;
    // t3: URLs VSOA allows and NATS does not (dots, wildcards, spaces, %, UTF-8, empty
    // segments), and one client holding three overlapping patterns.
    // ('+' joins the patterns of one client.)
    let odd = [
        "/a.b/c",
        "/a*/>",
        "/ sp/x",
        "/é",
        "/a//b",
        "/%41/",
        "/a/",
        "/",
        "/+/a/+/a/b/",
    ];
    let on_t3 = Peer::start("vsoa", t3.proc.port, json!(odd)).await;
    // t1's gateway: a hat-juggler client on the publishing node, and t3's on another.
    let ws_t1 = Peer::start("juggler", t1.gateway, json!(["/a/b/"])).await;
    let ws_t3 = Peer::start("juggler", t3.gateway, json!(["/a/", "/x"])).await;

    // The covers: t2 {"/"}, t3 {"/"}, t1 holds only its local WebSocket's /a/b/.
    t1.wait_subscriptions(1).await;
    converged(&t1, &[(&t2, "/only/t2/"), (&t3, "/only/t3/x")], 2).await;

    let mut urls: Vec<&str> = tether_wire::url::MATCH_MATRIX_URLS.to_vec();
    urls.extend([
        "/a.b/c", "/a*/>", "/ sp/x", "/é", "/a//b", "/a//", "/%41", "/%41/z", "/A", "/x",
        "/a/b/c/d",
    ]);
    publish_all(t1.proc.port, &urls).await;

    // What each subscriber must get: the matching URLs, once each, in order.
    let want = |key: &str| -> Vec<(String, Value)> {
        urls.iter()
            .enumerate()
            .filter(|(_, u)| key.split('+').any(|p| subscription_matches(p, u)))
            .map(|(i, u)| (u.to_string(), json!({"n": i})))
            .collect()
    };
    let total = |keys: &[&str]| keys.iter().map(|k| want(k).len()).sum::<usize>();
    let dumps = [
        ("t2", on_t2.dump(total(&matrix)).await, matrix.len()),
        ("t3", on_t3.dump(total(&odd)).await, odd.len()),
        ("t1 WebSocket", ws_t1.dump(total(&["/a/b/"])).await, 1),
        ("t3 WebSocket", ws_t3.dump(total(&["/a/+/x"])).await, 1),
    ];
    for (node, got, clients) in dumps {
        assert_eq!(got.len(), clients, "{node}: {got:?}");
        for (key, msgs) in &got {
            assert_eq!(
                msgs,
                &want(key),
                "{node} subscriber {key:?}: the matching URLs, once each, in order"
            );
        }
    }

    // RPC: each node's routes answer from every node; exact beats a remote prefix, ties
    // stay local, an unknown URL is status 3.
    for node in [&t1, &t2, &t3] {
        let r = calls(
            node.proc.port,
            &[
                ("/only/t1/a", "get", json!({"k": 1})),
                ("/only/t2/", "set", json!("s")),
                ("/only/t3/x", "get", json!(null)),
                ("/tie/x", "get", json!(0)),
                ("/nope/deep/x", "get", json!(0)),
            ],
        )
        .await;
        let node_of = |i: usize| r[i].2["node"].as_str().unwrap_or("").to_string();
        assert_eq!((r[0].1, node_of(0).as_str()), (0, "t1"), "{r:?}");
        assert_eq!(r[0].2["param"], json!({"k": 1}));
        assert_eq!(r[0].2["url"], "/only/t1/a");
        assert_eq!((r[1].1, node_of(1).as_str()), (0, "t2"), "{r:?}");
        assert_eq!((r[2].1, node_of(2).as_str()), (0, "t3"), "{r:?}");
        assert_eq!(
            (r[3].1, node_of(3).as_str()),
            (0, "t2"),
            "exact beats prefix: {r:?}"
        );
        assert_eq!(r[4].1, 3, "{r:?}");
    }
    let r = calls(t3.proc.port, &[("/tie/y", "get", json!(0))]).await;
    assert_eq!(r[0].2["node"], "t3", "a tie stays local: {r:?}");
    let r = calls(t1.proc.port, &[("/tie/y", "get", json!(0))]).await;
    assert_eq!(r[0].2["node"], "t1", "a tie stays local: {r:?}");
    assert_eq!(
        t1.metric("tether_federation_dropped_total{reason=\"disconnected\"}")
            .await,
        0
    );

    // Every node hears the others' announcements (the dashboard's list of nodes).
    t1.wait_metric("tether_federation_peers", |n| n == 2, "t1 knows t2 and t3")
        .await;

    // Status, param and 200 000 bytes of data, byte-exact, from a route on another node.
    let mut big = Peer::start(
        "call",
        t1.proc.port,
        json!([["/only/t2/big", "set", {"k": "v"}, 200_000]]),
    )
    .await;
    let reply: (String, u8, Value) =
        serde_json::from_str(&big.expect("REPLY ").await["REPLY ".len()..]).unwrap();
    assert_eq!(
        (reply.1, &reply.2["node"], &reply.2["param"]),
        (0, &json!("t2"), &json!({"k": "v"}))
    );
    assert_eq!(
        big.expect("DATA ").await,
        r#"DATA ["/only/t2/big", 200000, true]"#
    );
    big.expect("DONE").await;

    // A stream opened by a route on t2, read by a Python client on t1 through t1's proxy:
    // 10 MB, every byte checked.
    let mut blob = Peer::start("blob", t1.proc.port, json!(["/only/t2/s", 10_000_000])).await;
    assert_eq!(blob.expect("NODE ").await, "NODE \"t2\"");
    blob.expect("OK ").await;
    blob.expect("DONE").await;

    // Quick publishes cross as quick publishes: t3 sends them to its subscriber over UDP.
    // (The subscribers above are gone: t3's only pattern is this one.)
    let quick = Peer::start("vsoa", t3.proc.port, json!(["/q/"])).await;
    t1.wait_remote_patterns(1).await;
    let udp_before = t3
        .metric("tether_quick_datagrams_total{result=\"sent\"}")
        .await;
    let r = calls(
        t1.proc.port,
        &[(
            "/publish",
            "set",
            json!({"url": "/q/x", "param": {}, "quick": true, "count": 20, "numbered": true}),
        )],
    )
    .await;
    assert_eq!((r[0].1, &r[0].2["forwarded"]), (0, &json!(20)), "{r:?}");
    let got = quick.dump(20).await;
    let n: Vec<u64> = got["/q/"]
        .iter()
        .map(|(_, p)| p["n"].as_u64().unwrap())
        .collect();
    assert_eq!(n, (0..20).collect::<Vec<_>>());
    let udp = t3
        .metric("tether_quick_datagrams_total{result=\"sent\"}")
        .await
        - udp_before;
    assert_eq!(udp, 20, "t3 delivered them over its quick channel");
    drop(nats);
}

/// Overlapping patterns on every node, one of them toggled on and off all the time (so the
/// node's NATS subscriptions keep moving between `/` and `/a/`): every subscriber still
/// gets every publish exactly once, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn moving_subscriptions_neither_duplicate_nor_lose_nor_reorder() {
    let nats = Nats::start("fed-toggle", 3).await;
    let t1 = Node::start(&nats.urls(0), "t1", &[]).await;
    let t2 = Node::start(&nats.urls(1), "t2", &["--echo-route", "/only/t2"]).await;
    let t3 = Node::start(&nats.urls(2), "t3", &["--echo-route", "/only/t3"]).await;
    let all = json!(["/+/a/+/a/b/"]);
    let steady = Peer::start("vsoa", t3.proc.port, all.clone()).await;
    let moving = Peer::start("toggle", t2.proc.port, all).await;
    let local = Peer::start("vsoa", t1.proc.port, json!(["/+/a/+/a/b/"])).await;
    // t2 then always holds one of its two covers (it subscribes the new before it drops
    // the old).
    converged(&t1, &[(&t2, "/only/t2"), (&t3, "/only/t3")], 2).await;
    const N: usize = 20_000;
    let r = calls(
        t1.proc.port,
        &[(
            "/publish",
            "set",
            json!({"url": "/a/b/x", "param": {}, "count": N, "numbered": true}),
        )],
    )
    .await;
    assert_eq!(r[0].1, 0, "{r:?}");
    assert_eq!(r[0].2["forwarded"], N, "{r:?}");
    let want: Vec<(String, Value)> = (0..N)
        .map(|i| ("/a/b/x".to_string(), json!({"n": i})))
        .collect();
    let (moved, toggled) = moving.dump_toggled(N).await;
    assert!(toggled >= 5, "the subscription moved only {toggled} times");
    for (node, got) in [
        ("t2 (moving)", moved),
        ("t3", steady.dump(N).await),
        ("t1 (local)", local.dump(N).await),
    ] {
        let got = &got["/+/a/+/a/b/"];
        assert!(
            got == &want,
            "{node}: {} messages, first differences: {:?}",
            got.len(),
            got.iter()
                .zip(&want)
                .filter(|(a, b)| a != b)
                .take(3)
                .collect::<Vec<_>>()
        );
    }
    let dups = t2.metric("tether_federation_duplicates_total").await;
    eprintln!("t2 toggled {toggled} times; {dups} duplicate copies dropped");
    drop(nats);
}

/// Waits until `node` made `n` NATS connections in all and is connected.
async fn wait_connects(node: &Node, n: u64) {
    let what = format!("the node reconnects to NATS ({n} connections)");
    node.wait_metric("tether_federation_connects_total", |v| v >= n, &what)
        .await;
    node.wait_metric("tether_federation_connected", |v| v == 1, &what)
        .await;
}

/// Publishes `batches` numbered batches of `per` on `url` from `node`, one call each.
async fn publish_batches(
    node: &Node,
    url: &str,
    batches: std::ops::Range<u64>,
    per: u64,
) -> Vec<Value> {
    let todo: Vec<(&str, &str, Value)> = batches
        .map(|b| {
            (
                "/publish",
                "set",
                json!({"url": url, "param": {"b": b}, "count": per, "numbered": true}),
            )
        })
        .collect();
    calls(node.proc.port, &todo)
        .await
        .into_iter()
        .map(|(_, status, r)| {
            assert_eq!(status, 0, "{r}");
            r
        })
        .collect()
}

/// The (batch, n) pairs a subscriber got, checked to be strictly increasing (no
/// duplicates, no reordering).
fn increasing(msgs: &[(String, Value)]) -> Vec<(u64, u64)> {
    let seq: Vec<(u64, u64)> = msgs
        .iter()
        .map(|(_, p)| (p["b"].as_u64().unwrap(), p["n"].as_u64().unwrap()))
        .collect();
    for w in seq.windows(2) {
        assert!(
            w[0] < w[1],
            "out of order or twice: {:?} then {:?}",
            w[0],
            w[1]
        );
    }
    seq
}

/// Kills with real processes: the NATS server under a subscriber's node, a Tether node,
/// then the whole NATS cluster; everything local keeps working, what cannot cross is
/// counted, and everything recovers by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_survive_the_loss_of_nats_servers_and_of_other_nodes() {
    let mut nats = Nats::start("fed-faults", 3).await;
    let t1 = Node::start(&nats.urls(0), "t1", &["--echo-route", "/only/t1"]).await;
    let t2 = Node::start(&nats.urls(1), "t2", &["--echo-route", "/only/t2"]).await;
    let t3 = Node::start(&nats.urls(2), "t3", &["--echo-route", "/only/t3"]).await;
    let on_t2 = Peer::start("vsoa", t2.proc.port, json!(["/k/"])).await;
    let on_t3 = Peer::start("vsoa", t3.proc.port, json!(["/k/"])).await;
    let on_t1 = Peer::start("vsoa", t1.proc.port, json!(["/k/"])).await;
    converged(&t1, &[(&t2, "/only/t2"), (&t3, "/only/t3")], 2).await;
    const PER: u64 = 200;
    publish_batches(&t1, "/k/x", 0..5, PER).await;

    // K1: t2's NATS server dies while t1 publishes. t2 moves to another one and
    // resubscribes by itself; what it missed meanwhile is one gap.
    let port = t1.proc.port;
    let publisher = tokio::spawn(async move {
        let todo: Vec<(&str, &str, Value)> = (5..40)
            .map(|b| {
                (
                    "/publish",
                    "set",
                    json!({"url": "/k/x", "param": {"b": b}, "count": PER, "numbered": true}),
                )
            })
            .collect();
        calls(port, &todo).await
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    nats.kill(1).await;
    let killed = std::time::Instant::now();
    wait_connects(&t2, 2).await;
    eprintln!(
        "K1: t2 connected to another NATS server {:?} after the kill",
        killed.elapsed()
    );
    let during = publisher.await.unwrap();
    assert!(
        during
            .iter()
            .all(|(_, st, r)| *st == 0 && r["not_forwarded"] == 0),
        "{during:?}"
    );
    wait_connects(&t2, 2).await;
    until_served(&t1, "/only/t2").await;
    const K1_END: u64 = 40;

    // K3: a Tether node dies: its routes answer status 3 elsewhere at once, the others
    // are unaffected.
    let t3_got = on_t3.dump((K1_END * PER) as usize).await;
    let seq = increasing(&t3_got["/k/"]);
    assert_eq!(
        seq.len(),
        (K1_END * PER) as usize,
        "t3 lost nothing: t2's server died, not its own"
    );
    t3.proc.stop().await;
    let r = calls(
        t1.proc.port,
        &[("/only/t3", "get", json!(0)), ("/only/t2", "get", json!(0))],
    )
    .await;
    assert_eq!(r[0].1, 3, "{r:?}");
    assert_eq!((r[1].1, r[1].2["node"].as_str()), (0, Some("t2")), "{r:?}");

    // K4: the whole NATS cluster goes. Local publishing goes on, uncrossed publishes are
    // counted, cross-node calls fail fast with status 7.
    nats.kill(0).await;
    nats.kill(2).await;
    t1.wait_metric(
        "tether_federation_connected",
        |v| v == 0,
        "t1 notices that NATS is gone",
    )
    .await;
    let out = publish_batches(&t1, "/k/x", K1_END..K1_END + 2, PER).await;
    assert!(
        out.iter()
            .all(|r| r["delivered"] == PER && r["not_forwarded"] == PER),
        "{out:?}"
    );
    assert!(
        t1.metric("tether_federation_dropped_total{reason=\"disconnected\"}")
            .await
            >= 2 * PER
    );
    let r = calls(
        t1.proc.port,
        &[("/only/t2", "get", json!(0)), ("/only/t1", "get", json!(0))],
    )
    .await;
    assert_eq!(r[0].1, 7, "cluster unreachable: {r:?}");
    assert_eq!(r[1].1, 0, "local routes still answer: {r:?}");
    // A subscription made during the outage.
    let late = Peer::start("vsoa", t2.proc.port, json!(["/late/"])).await;

    // NATS comes back: everything recovers without restarting a node.
    for i in 0..3 {
        nats.spawn(i);
    }
    for i in 0..3 {
        nats.wait_ready(i, 2).await;
    }
    wait_connects(&t1, 2).await;
    until_served(&t1, "/only/t2").await;
    // t1 sends /late/ once t2's announcement says it is wanted (until then a publish
    // there is nobody's, and its reply says neither forwarded nor not).
    tokio::time::timeout(WAIT, async {
        loop {
            let r = publish_batches(&t1, "/late/x", 0..1, 1).await;
            if r[0]["forwarded"] == 1 {
                return;
            }
            assert!(r[0].get("not_forwarded").is_none_or(|n| n == 0), "{r:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .expect("t1 learns that t2 subscribed /late/ during the outage");
    publish_batches(&t1, "/late/x", 1..2, 10).await;
    publish_batches(&t1, "/k/x", K1_END + 2..K1_END + 4, PER).await;
    // The probe that was forwarded may or may not have arrived (at most once, at the very
    // moment of recovery); everything after it does.
    let late_got = late.dump(11).await;
    let batch: Vec<u64> = late_got["/late/"]
        .iter()
        .filter(|(_, p)| p["b"] == 1)
        .map(|(_, p)| p["n"].as_u64().unwrap())
        .collect();
    assert_eq!(
        batch,
        (0..10).collect::<Vec<_>>(),
        "a subscription made during the outage works"
    );
    let late_n = late_got["/late/"].len() as u64;

    // t1's own subscriber got everything, in order. t2's never got a publish twice or out
    // of order, missed only one run while it had no NATS server (K1) and the outage (K4).
    let all = K1_END + 4;
    let local = increasing(&on_t1.dump((all * PER) as usize).await["/k/"]);
    assert_eq!(local.len(), (all * PER) as usize);
    // Every publish t2 took from NATS reached its subscriber (wait for exactly that many).
    let received = t2.metric("tether_federation_received_total").await - late_n;
    let remote = increasing(&on_t2.dump(received as usize).await["/k/"]);
    assert_eq!(remote.len() as u64, received);
    let got: std::collections::BTreeSet<(u64, u64)> = remote.iter().copied().collect();
    let sent: Vec<(u64, u64)> = (0..all)
        .flat_map(|b| (0..PER).map(move |n| (b, n)))
        .collect();
    let missing: Vec<usize> = (0..sent.len())
        .filter(|&i| !got.contains(&sent[i]))
        .collect();
    let outage = ((K1_END * PER) as usize, ((K1_END + 2) * PER) as usize);
    let k1: Vec<usize> = missing
        .iter()
        .copied()
        .filter(|&i| i < outage.0 || i >= outage.1)
        .collect();
    assert!(
        missing
            .iter()
            .filter(|&&i| i >= outage.0 && i < outage.1)
            .count()
            == outage.1 - outage.0,
        "everything published during the outage is missing on t2"
    );
    if let (Some(first), Some(last)) = (k1.first(), k1.last()) {
        assert_eq!(
            last - first + 1,
            k1.len(),
            "t2's K1 loss is one run: {:?}..{:?}",
            sent[*first],
            sent[*last]
        );
        assert!(
            sent[*first].0 >= 5 && sent[*last].0 < K1_END,
            "lost only during K1"
        );
    }
    eprintln!(
        "K1: t2 missed {} of {} publishes while it moved to another NATS server",
        k1.len(),
        (K1_END - 5) * PER
    );
    let dropped = t1
        .metric("tether_federation_dropped_total{reason=\"disconnected\"}")
        .await;
    assert!(
        dropped >= 2 * PER,
        "t1 counted the outage's publishes: {dropped}"
    );
    drop(nats);
}

/// A subscriber on one node stops reading while publishes from another node flood in: it
/// is cut off and counted, and the other subscribers, on its node and on a third, get every
/// publish in order (the node's NATS reader never waits for it: the publishes the stalled
/// client cannot take wait in a line of their own, and it is cut off when that is full).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_subscriber_is_cut_off_and_slows_nobody_on_any_node() {
    let nats = Nats::start("fed-slow", 3).await;
    let t1 = Node::start(&nats.urls(0), "t1", &[]).await;
    // A send timeout far longer than the test: were the node's NATS reader waiting for
    // the stalled client, the others would wait that long too.
    let t2 = Node::start(
        &nats.urls(1),
        "t2",
        &["--echo-route", "/only/t2", "--send-timeout", "60"],
    )
    .await;
    let t3 = Node::start(&nats.urls(2), "t3", &["--echo-route", "/only/t3"]).await;
    let stalled = Peer::start("stall", t2.proc.port, json!(["/s/"])).await;
    let beside = Peer::start("vsoa", t2.proc.port, json!(["/s/"])).await;
    let elsewhere = Peer::start("vsoa", t3.proc.port, json!(["/s/"])).await;
    converged(&t1, &[(&t2, "/only/t2"), (&t3, "/only/t3")], 2).await;
    // 20 000 publishes of 2 KiB: 40 MB, far past the stalled client's 4 MiB queue and
    // its socket buffers. In batches of 4 MB that t1 forwards before the next (its forward
    // queue holds 8 MiB; beyond, it would count publishes as not forwarded).
    const BATCHES: u64 = 10;
    const PER: u64 = 2000;
    let data = base64_of(&[7u8; 2048]);
    for b in 0..BATCHES {
        let todo = [(
            "/publish",
            "set",
            json!({"url": "/s/x", "param": {"b": b}, "data": data, "count": PER, "numbered": true}),
        )];
        for (_, status, r) in calls(t1.proc.port, &todo).await {
            assert_eq!((status, &r["forwarded"]), (0, &json!(PER)), "{r}");
        }
        let sent = (b + 1) * PER;
        t1.wait_metric(
            "tether_federation_forwarded_total",
            |v| v >= sent,
            "t1 forwards a batch",
        )
        .await;
    }
    let all = (BATCHES * PER) as usize;
    for (node, peer) in [("t2", beside), ("t3", elsewhere)] {
        let got = peer.dump(all).await;
        assert_eq!(
            increasing(&got["/s/"]).len(),
            all,
            "{node}'s other subscriber got everything"
        );
    }
    assert_eq!(
        t2.metric("tether_cut_off_total").await,
        1,
        "the stalled subscriber was cut off"
    );
    assert_eq!(
        t2.metric("tether_federation_dropped_total{reason=\"slow_consumer\"}")
            .await,
        0
    );
    assert_eq!(t3.metric("tether_cut_off_total").await, 0);
    drop(stalled);
    drop(nats);
}

fn base64_of(b: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(b)
}
