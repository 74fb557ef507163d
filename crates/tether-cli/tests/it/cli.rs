//! The command-line contract of README: output lines, exit codes, error sentences.

use std::process::Stdio;

use crate::common::*;
use tokio::io::{AsyncBufReadExt, BufReader};

#[tokio::test]
async fn call_prints_one_json_line_and_exits_0_for_any_status() {
    let s = tether_serve(&[]).await;
    let base = format!("vsoa://127.0.0.1:{}", s.port);
    let r = tether(&[
        "call",
        &format!("{base}/echo"),
        "--param",
        r#"{"a":[1,"x"]}"#,
        "--data-base64",
        "AAEC/w==",
    ])
    .await;
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (
            0,
            "{\"status\":0,\"param\":{\"a\":[1,\"x\"]},\"data\":\"AAEC/w==\",\"tunid\":0}\n"
        ),
        "{}",
        r.stderr
    );
    let r = tether(&["call", &format!("{base}/nosuch")]).await;
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (
            0,
            "{\"status\":3,\"param\":null,\"data\":null,\"tunid\":0}\n"
        )
    );
    // /publish wants SET; GET gets status 2 and a reason.
    let r = tether(&[
        "call",
        &format!("{base}/publish"),
        "--param",
        r#"{"url":"/x"}"#,
    ])
    .await;
    assert_eq!(r.code, 0);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["status"], 2);
    assert!(v["param"]["error"].as_str().unwrap().contains("SET"));
    let r = tether(&[
        "call",
        &format!("{base}/publish"),
        "--set",
        "--param",
        r#"{"url":"/x"}"#,
    ])
    .await;
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        (v["status"].as_u64(), v["param"]["delivered"].as_u64()),
        (Some(0), Some(0))
    );
}

#[tokio::test]
async fn call_shows_a_non_json_param_as_base64() {
    let server = tether::Server::builder().build();
    server.route("/raw", |_req: tether::Request| async move {
        tether::Reply::ok(tether::Payload::raw(&b"\xffnot json"[..]))
    });
    let l = server.bind("127.0.0.1:0").await.unwrap();
    let r = tether(&["call", &format!("vsoa://{}/raw", l.local_addr())]).await;
    assert_eq!(r.stdout, "{\"status\":0,\"param\":null,\"param_base64\":\"/25vdCBqc29u\",\"data\":null,\"tunid\":0}\n");
}

#[tokio::test]
async fn call_failures_exit_non_zero_with_one_sentence() {
    let s = tether_serve(&["--password", "pw"]).await;
    let base = format!("vsoa://127.0.0.1:{}", s.port);
    let r = tether(&["call", &format!("{base}/echo"), "--password", "bad"]).await;
    assert_eq!(r.code, 4);
    assert_eq!(r.stderr, format!("tether: wrong password for {base}\n"));
    assert!(r.stdout.is_empty());
    let r = tether(&["call", &format!("{base}/echo")]).await;
    assert_eq!((r.code, r.stderr.contains("wrong password")), (4, true));

    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let r = tether(&["call", &format!("vsoa://127.0.0.1:{port}/echo")]).await;
    assert_eq!(r.code, 3);
    assert!(
        r.stderr
            .starts_with(&format!("tether: cannot reach vsoa://127.0.0.1:{port}: ")),
        "{}",
        r.stderr
    );
    assert_eq!(r.stderr.lines().count(), 1);

    let mute = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let r = tether(&[
        "call",
        &format!("vsoa://{}/echo", mute.local_addr().unwrap()),
        "--timeout",
        "0.3",
    ])
    .await;
    assert_eq!(r.code, 5);
    assert!(
        r.stderr.contains("did not complete the handshake"),
        "{}",
        r.stderr
    );

    let r = tether(&["call", &format!("{base}/echo"), "--param", "{not json"]).await;
    assert_eq!(r.code, 2);
    assert!(r.stderr.contains("--param is not valid JSON"));
    let r = tether(&["call", "http://127.0.0.1:1/x"]).await;
    assert_eq!(r.code, 2, "clap rejects a bad URL: {}", r.stderr);
}

#[tokio::test]
async fn sub_prints_messages_and_exits_after_count() {
    let s = tether_serve(&[]).await;
    let base = format!("vsoa://127.0.0.1:{}", s.port);
    let mut sub = tether_cmd(&[])
        .args(["sub", &format!("{base}/a/"), "/b", "--count", "3"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Wait for the subscription to be in place before publishing.
    let mut err = BufReader::new(sub.stderr.take().unwrap()).lines();
    let ready = tokio::time::timeout(WAIT, err.next_line())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ready.as_deref(), Some("tether: subscribed"));
    for (url, extra) in [
        ("/a/x", r#","param":{"v":1},"data":"AQI=""#),
        ("/c", ""),
        ("/b", ""),
        ("/a", r#","param":"s""#),
    ] {
        let param = format!(r#"{{"url":"{url}"{extra}}}"#);
        let r = tether(&[
            "call",
            &format!("{base}/publish"),
            "--set",
            "--param",
            &param,
        ])
        .await;
        assert!(r.stdout.starts_with("{\"status\":0"), "{}", r.stdout);
    }
    let out = tokio::time::timeout(WAIT, sub.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        concat!(
            "{\"url\":\"/a/x\",\"param\":{\"v\":1},\"data\":\"AQI=\",\"quick\":false}\n",
            "{\"url\":\"/b\",\"param\":null,\"data\":null,\"quick\":false}\n",
            "{\"url\":\"/a\",\"param\":\"s\",\"data\":null,\"quick\":false}\n",
        )
    );
}

#[tokio::test]
async fn serve_demo_echoes_datagrams() {
    let s = tether_serve(&["--name", "demo-x"]).await;
    let c = tether::Client::connect(&format!("vsoa://127.0.0.1:{}", s.port))
        .await
        .unwrap();
    assert_eq!(c.server_info(), &serde_json::json!({"name": "demo-x"}));
    let mut dgs = c.datagrams().unwrap();
    c.datagram("/d", tether::Payload::raw("1").with_data(vec![5]))
        .await
        .unwrap();
    let m = tokio::time::timeout(WAIT, dgs.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (m.url.as_str(), &m.payload.param[..], &m.payload.data[..]),
        ("/d", &b"1"[..], &[5u8][..])
    );
}

#[tokio::test]
async fn bench_scenarios_run_in_a_tiny_configuration() {
    for (scenario, extra) in [
        ("floor-tcp", &["--count", "200"][..]),
        ("rpc-latency", &["--count", "200"]),
        ("rpc-throughput", &["--count", "2000", "--in-flight", "16"]),
        ("pub-throughput", &["--count", "5000", "--subscribers", "2"]),
        ("floor-udp", &["--count", "500"]),
        ("quick-rate", &["--count", "500"]),
        ("floor-tcp-copy", &["--bytes", "1000000"]),
        ("stream", &["--bytes", "1000000"]),
        ("reconnect", &["--count", "2"]),
        ("connections", &["--count", "50", "--hold-secs", "0"]),
        ("ws-rpc", &["--count", "200", "--in-flight", "4"]),
        (
            "ws-fanout",
            &["--clients", "5", "--rate", "10", "--secs", "1"],
        ),
    ] {
        let args: Vec<&str> = ["bench", scenario].iter().chain(extra).copied().collect();
        let r = tether(&args).await;
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
        let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("one JSON object");
        assert_eq!(v["scenario"], scenario);
        assert!(
            v["count"].as_u64().unwrap() > 0 && v["rate_per_s"].as_f64().unwrap() > 0.0,
            "{v}"
        );
        match scenario {
            "pub-throughput" => {
                assert_eq!(
                    (v["lost"].as_u64(), v["count"].as_u64()),
                    (Some(0), Some(10_000)),
                    "{v}"
                )
            }
            // UDP may lose on a busy machine; what matters is that loss is reported.
            "floor-udp" | "quick-rate" => assert!(v["lost"].as_u64().is_some(), "{v}"),
            "floor-tcp-copy" | "stream" => assert_eq!(v["count"].as_u64(), Some(1_000_000), "{v}"),
            "connections" => assert!(v["bytes_per_connection"].as_f64().is_some(), "{v}"),
            "ws-fanout" => assert_eq!(v["delivered"].as_u64(), Some(50), "{v}"),
            _ => assert!(v["latency_us"]["p50"].as_f64().unwrap() > 0.0, "{v}"),
        }
    }
    // The same load generator against another server (here a `tether serve`), over
    // several connections.
    let s = tether_serve(&[]).await;
    let url = format!("vsoa://127.0.0.1:{}", s.port);
    for args in [
        &["bench", "rpc-latency", "--count", "100", "--url", &url][..],
        &[
            "bench",
            "rpc-throughput",
            "--count",
            "400",
            "--in-flight",
            "8",
            "--connections",
            "2",
            "--url",
            &url,
        ],
        &[
            "bench",
            "pub-throughput",
            "--count",
            "3000",
            "--subscribers",
            "2",
            "--url",
            &url,
        ],
    ] {
        let r = tether(args).await;
        assert_eq!(r.code, 0, "{args:?}: {}", r.stderr);
        let v: serde_json::Value = serde_json::from_str(&r.stdout).expect("one JSON object");
        assert_eq!(v["params"]["server"], "external", "{v}");
        if args[1] == "pub-throughput" {
            assert_eq!(
                (v["lost"].as_u64(), v["count"].as_u64()),
                (Some(0), Some(6000)),
                "{v}"
            );
        } else {
            assert!(v["latency_us"]["p99"].as_f64().unwrap() > 0.0, "{v}");
        }
    }
    let r = tether(&["bench", "floor-tcp", "--url", &url]).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
}

#[tokio::test]
async fn dgram_sends_on_either_channel_and_prints_the_echo() {
    let s = tether_serve(&[]).await;
    let base = format!("vsoa://127.0.0.1:{}", s.port);
    let target = format!("{base}/dg");
    for (flag, quick) in [(None, false), (Some("--quick"), true)] {
        let mut args = vec![
            "dgram",
            &target,
            "--param",
            r#"{"d":1}"#,
            "--data-base64",
            "AQI=",
            "--wait",
            "10",
        ];
        args.extend(flag);
        let r = tether(&args).await;
        assert_eq!(r.code, 0, "{}", r.stderr);
        assert_eq!(
            r.stdout,
            format!(
                "{{\"url\":\"/dg\",\"param\":{{\"d\":1}},\"data\":\"AQI=\",\"quick\":{quick}}}\n"
            )
        );
    }
}

#[tokio::test]
async fn sub_marks_quick_publishes() {
    let s = tether_serve(&[]).await;
    let base = format!("vsoa://127.0.0.1:{}", s.port);
    let mut sub = tether_cmd(&[])
        .args(["sub", &format!("{base}/q"), "--count", "2"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut err = BufReader::new(sub.stderr.take().unwrap()).lines();
    let ready = tokio::time::timeout(WAIT, err.next_line())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ready.as_deref(), Some("tether: subscribed"));
    for param in [
        r#"{"url":"/q","param":1}"#,
        r#"{"url":"/q","param":2,"quick":true}"#,
    ] {
        let r = tether(&[
            "call",
            &format!("{base}/publish"),
            "--set",
            "--param",
            param,
        ])
        .await;
        assert!(r.stdout.starts_with("{\"status\":0"), "{}", r.stdout);
    }
    let out = tokio::time::timeout(WAIT, sub.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    // TCP and UDP are separate paths: compare without assuming their relative order.
    let mut lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            r#"{"url":"/q","param":1,"data":null,"quick":false}"#,
            r#"{"url":"/q","param":2,"data":null,"quick":true}"#,
        ]
    );
}

#[tokio::test]
async fn stream_copies_stdin_through_the_echo_and_downloads_blobs() {
    let s = tether_serve(&[]).await;
    let base = format!("vsoa://127.0.0.1:{}", s.port);
    let mut child = tether_cmd(&[])
        .args(["stream", &format!("{base}/stream/echo")])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let input: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
    let mut stdin = child.stdin.take().unwrap();
    let sent = input.clone();
    tokio::spawn(async move {
        use tokio::io::AsyncWriteExt;
        stdin.write_all(&sent).await.unwrap();
    }); // dropping stdin ends the upload
    let out = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout == input,
        "echo differs ({} bytes back)",
        out.stdout.len()
    );

    let r = tether(&[
        "stream",
        &format!("{base}/stream/blob"),
        "--param",
        r#"{"size":100000}"#,
    ])
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let blob = r.stdout_bytes;
    assert_eq!(blob.len(), 100_000);
    assert!(blob.iter().enumerate().all(|(i, b)| *b == (i % 251) as u8));

    let r = tether(&["stream", &format!("{base}/echo")]).await;
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stderr,
        "tether: /echo opened no stream (reply status 0 (success))\n"
    );
}

#[tokio::test]
async fn position_lookup_and_serve_register() {
    let pos = tether_position(&[]).await;
    let pos_addr = format!("127.0.0.1:{}", pos.port);
    let server = tether_serve(&["--register", &pos_addr, "--name", "reg-demo"]).await;
    let r = tether(&["lookup", "reg-demo", "--pos", &pos_addr]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(
        r.stdout,
        format!(
            "{{\"name\":\"reg-demo\",\"addr\":\"127.0.0.1\",\"port\":{},\"security\":false}}\n",
            server.port
        )
    );
    // A name in the URL resolves through the same service.
    let r = tether(&[
        "call",
        "vsoa://reg-demo/echo",
        "--pos",
        &pos_addr,
        "--param",
        "1",
    ])
    .await;
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "{\"status\":0,\"param\":1,\"data\":null,\"tunid\":0}\n"),
        "{}",
        r.stderr
    );
    let r = tether(&["lookup", "nobody", "--pos", &pos_addr]).await;
    assert_eq!(r.code, 1);
    assert_eq!(
        r.stderr,
        format!("tether: cannot resolve \"nobody\": {pos_addr} does not know it\n")
    );
    // A position server that never answers: a clear failure within the timeout.
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    let r = tether(&["lookup", "x", "--pos", &silent_addr, "--timeout", "0.2"]).await;
    assert_eq!(r.code, 1);
    assert!(
        r.stderr.contains("did not answer within 200ms"),
        "{}",
        r.stderr
    );
}

#[tokio::test]
async fn lookup_follows_vsoa_pos_server_in_order_with_ipv6_entries() {
    let hosts = std::env::temp_dir().join(format!("tether-v6-hosts-{}", std::process::id()));
    std::fs::write(&hosts, "v6name 127.0.0.1 4321\n").unwrap();
    let v6 = tether_position_on("[::1]:0", &["--hosts", hosts.to_str().unwrap()]).await;
    let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let env = format!("{},[::1]:{}", silent.local_addr().unwrap(), v6.port);
    let out = tokio::time::timeout(
        WAIT,
        tether_cmd(&[])
            .args(["lookup", "v6name", "--timeout", "0.2"])
            .env("VSOA_POS_SERVER", &env)
            .stdin(Stdio::null())
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let _ = std::fs::remove_file(&hosts);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        "{\"name\":\"v6name\",\"addr\":\"127.0.0.1\",\"port\":4321,\"security\":false}\n",
        "the silent first server was skipped and the IPv6 one answered"
    );
}

#[tokio::test]
async fn call_with_a_secret_and_a_server_that_requires_one() {
    let s = tether_serve(&["--password", "pw", "--secret", "s3cret", "--require-secret"]).await;
    let url = format!("vsoa://127.0.0.1:{}/echo", s.port);
    let r = tether(&["call", &url, "--secret", "s3cret", "--param", "1"]).await;
    assert_eq!(
        (r.code, r.stdout.as_str()),
        (0, "{\"status\":0,\"param\":1,\"data\":null,\"tunid\":0}\n"),
        "{}",
        r.stderr
    );
    let r = tether(&["call", &url, "--secret", "nope"]).await;
    assert_eq!(r.code, 4);
    assert!(r.stderr.contains("wrong secret"), "{}", r.stderr);
    let r = tether(&["call", &url, "--password", "pw"]).await;
    assert_eq!(
        r.code, 4,
        "plain logins are refused when the secret is required"
    );
}

#[tokio::test]
async fn serve_takes_its_limits_from_flags() {
    let s = tether_serve(&["--max-url-len", "8"]).await;
    let base = format!("vsoa://127.0.0.1:{}", s.port);
    let r = tether(&["call", &format!("{base}/echo/long")]).await;
    assert_eq!(
        r.stdout, "{\"status\":2,\"param\":null,\"data\":null,\"tunid\":0}\n",
        "9-byte URL over the limit"
    );
    let r = tether(&["call", &format!("{base}/echo"), "--param", "1"]).await;
    assert!(r.stdout.starts_with("{\"status\":0"), "{}", r.stdout);
}

#[tokio::test]
async fn serve_answers_clever_show_echo_and_time() {
    let mut cmd = tether_cmd(&[]);
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--clever-show",
        "127.0.0.1:0",
    ]);
    let cs = Proc::start(cmd, "clever-show on ").await;
    let drone = tether::clevershow::Node::new()
        .connect(format!("127.0.0.1:{}", cs.port).parse().unwrap())
        .await
        .unwrap();
    let kwargs = serde_json::json!({"x": 1}).as_object().cloned().unwrap();
    let echo = drone
        .request("echo")
        .args(vec![serde_json::json!("a")])
        .kwargs(kwargs)
        .send()
        .await
        .unwrap();
    assert_eq!(echo, serde_json::json!({"args": ["a"], "kwargs": {"x": 1}}));
    let t = drone
        .request("time")
        .send()
        .await
        .unwrap()
        .as_f64()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!((t - now).abs() < 5.0, "{t} vs {now}");
    // The VSOA demo routes answer clever-show requests named like URLs.
    let kwargs = serde_json::json!({"k": "v"}).as_object().cloned().unwrap();
    let echo = drone.request("/echo").kwargs(kwargs).send().await.unwrap();
    assert_eq!(echo, serde_json::json!({"k": "v"}));
}

#[tokio::test]
async fn put_and_get_move_files_checked_with_plain_progress_off_a_terminal() {
    let dir = temp_dir("put-get");
    let root = dir.join("root");
    let s = tether_serve(&["--files-root", root.to_str().unwrap()]).await;
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    let src = dir.join("src.bin");
    std::fs::write(&src, &data).unwrap();
    let url = format!("vsoa://127.0.0.1:{}/files/a/b.bin", s.port);

    let r = tether(&["put", src.to_str().unwrap(), &url]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let line: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(line["url"], url);
    assert_eq!(line["size"], 3_000_000);
    assert_eq!(line["resumed_from"], 0);
    assert_eq!(line["sha256"].as_str().unwrap().len(), 64);
    // Not a terminal: plain progress lines, ending at 100 %.
    assert!(r.stderr.contains("(100%)"), "{}", r.stderr);
    assert!(!r.stderr.contains('\r'), "{}", r.stderr);
    assert_eq!(std::fs::read(root.join("a/b.bin")).unwrap(), data);

    let out = dir.join("out.bin");
    let r = tether(&["get", &url, "-o", out.to_str().unwrap(), "--quiet"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(r.stderr, "");
    assert_eq!(std::fs::read(&out).unwrap(), data);
    let back: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(back["sha256"], line["sha256"]);

    // A partial copy left by a broken download (the first MiB, and the content it belongs
    // to) is resumed by the next run.
    let resumed = dir.join("resumed.bin");
    std::fs::write(dir.join("resumed.bin.tether-part"), &data[..1 << 20]).unwrap();
    std::fs::write(
        dir.join("resumed.bin.tether-part.sha256"),
        line["sha256"].as_str().unwrap(),
    )
    .unwrap();
    let r = tether(&["get", &url, "-o", resumed.to_str().unwrap(), "-q"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let again: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(again["resumed_from"], 1 << 20);
    assert_eq!(std::fs::read(&resumed).unwrap(), data);
    assert!(!dir.join("resumed.bin.tether-part").exists());

    // Refusals: a clear message and exit code 1, nothing written.
    let bad = format!("vsoa://127.0.0.1:{}/files/../escape", s.port);
    let r = tether(&["put", src.to_str().unwrap(), &bad]).await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("contains '..'"), "{}", r.stderr);
    let missing = format!("vsoa://127.0.0.1:{}/files/missing", s.port);
    let r = tether(&["get", &missing, "-o", dir.join("m").to_str().unwrap()]).await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("status 3"), "{}", r.stderr);
    assert!(!dir.join("m").exists());
    let r = tether(&["put", dir.join("nope").to_str().unwrap(), &url]).await;
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("cannot read"), "{}", r.stderr);
}

#[tokio::test]
async fn serve_moves_clever_show_files_inside_files_root_only() {
    let dir = temp_dir("cs-files");
    let root = dir.join("root");
    let mut cmd = tether_cmd(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--clever-show",
        "127.0.0.1:0",
        "--files-root",
        root.to_str().unwrap(),
    ]);
    cmd.arg("--name").arg("files");
    let cs = Proc::start(cmd, "clever-show on ").await;
    let drone = tether::clevershow::Node::new()
        .connect(format!("127.0.0.1:{}", cs.port).parse().unwrap())
        .await
        .unwrap();
    std::fs::write(dir.join("anim.csv"), b"1,2,3\n").unwrap();
    drone
        .push_file_verified(&dir.join("anim.csv"), "shows/anim.csv")
        .await
        .unwrap();
    assert_eq!(
        std::fs::read(root.join("shows/anim.csv")).unwrap(),
        b"1,2,3\n"
    );
    drone
        .pull_file("shows/anim.csv", &dir.join("back.csv"), WAIT)
        .await
        .unwrap();
    assert_eq!(std::fs::read(dir.join("back.csv")).unwrap(), b"1,2,3\n");
    let e = drone
        .pull_file("../anim.csv", &dir.join("x"), WAIT)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("contains '..'"), "{e}");
    drone
        .push_file(&dir.join("anim.csv"), "../escaped.csv")
        .await
        .unwrap();
    // The push is refused on the server (logged); the link goes on and nothing escaped.
    drone.request("time").send().await.unwrap();
    assert!(!dir.join("escaped.csv").exists());
}

#[tokio::test]
async fn serve_default_files_root_is_files_in_the_working_directory() {
    let dir = temp_dir("default-root");
    let mut cmd = tether_cmd(&["serve", "--listen", "127.0.0.1:0"]);
    cmd.current_dir(&dir);
    let s = Proc::start(cmd, "VSOA server on vsoa://").await;
    std::fs::write(dir.join("f"), b"x").unwrap();
    let url = format!("vsoa://127.0.0.1:{}/files/f", s.port);
    let r = tether(&["put", dir.join("f").to_str().unwrap(), &url, "-q"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(std::fs::read(dir.join("files/f")).unwrap(), b"x");
}

#[tokio::test]
async fn discover_hears_the_announcement_of_serve_on_loopback() {
    let beacon = free_udp().to_string();
    let cmd = tether_cmd(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--clever-show",
        "127.0.0.1:0",
        "--announce",
        &beacon,
        "--announce-every",
        "0.05",
    ]);
    let cs = Proc::start(cmd, "clever-show on ").await;
    let r = tether(&["discover", "--listen", &beacon, "--timeout", "5"]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    let a: serde_json::Value = serde_json::from_str(r.stdout.trim()).unwrap();
    assert_eq!(a["host"], "127.0.0.1");
    assert_eq!(a["port"], cs.port);
    // Nobody announcing: exit code 5 and a clear sentence.
    let r = tether(&[
        "discover",
        "--listen",
        &free_udp().to_string(),
        "--timeout",
        "0.2",
    ])
    .await;
    assert_eq!(r.code, 5);
    assert!(
        r.stderr.contains("no clever-show server announced"),
        "{}",
        r.stderr
    );
    // Announcing needs clever-show; broadcast needs to be allowed.
    let r = tether(&["serve", "--announce", &beacon]).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    let r = tether(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--clever-show",
        "127.0.0.1:0",
        "--announce",
        "255.255.255.255:8181",
    ])
    .await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("refused destination"), "{}", r.stderr);
}

#[tokio::test]
async fn the_younger_serve_stops_clever_show_when_an_older_one_announces() {
    let (a_hears, b_hears) = (free_udp().to_string(), free_udp().to_string());
    let older = tether_cmd(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--clever-show",
        "127.0.0.1:0",
        "--announce",
        &b_hears,
        "--announce-every",
        "0.05",
        "--yield-to-older",
        &a_hears,
    ]);
    let _older = Proc::start(older, "clever-show on ").await;
    let mut younger = Lines::spawn(tether_cmd(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--clever-show",
        "127.0.0.1:0",
        "--announce",
        &a_hears,
        "--announce-every",
        "0.05",
        "--yield-to-older",
        &b_hears,
    ]));
    let line = younger.expect_prefix("tether: clever-show on ").await;
    let show: std::net::SocketAddr = line
        .trim_start_matches("tether: clever-show on ")
        .parse()
        .unwrap_or_else(|_| panic!("no address in {line:?}"));
    younger
        .expect_prefix("tether: clever-show stopped: server ")
        .await;
    // Stopped means the port is closed, not merely announced.
    assert!(
        tokio::net::TcpStream::connect(show).await.is_err(),
        "the younger server still accepts clever-show peers on {show}"
    );
}

/// `tether serve` on free ports: the process, its `vsoa://` address and its gateway port
/// (the first two lines it prints).
async fn serve_with_gateway(extra: &[&str]) -> (Lines, String, u16) {
    let mut args = vec!["serve", "--listen", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let mut serve = Lines::spawn(tether_cmd(&args));
    let vsoa = serve.expect_prefix("tether: VSOA server on vsoa://").await;
    let vsoa = vsoa
        .trim_start_matches("tether: VSOA server on ")
        .to_string();
    let gw = serve.expect_prefix("tether: gateway on ws://").await;
    let port = gw
        .trim_start_matches("tether: gateway on ws://")
        .split('/')
        .next()
        .and_then(|hp| hp.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {gw:?}"));
    (serve, vsoa, port)
}

#[tokio::test]
async fn serve_starts_the_gateway_with_the_demo_routes_and_publishes() {
    let (_serve, vsoa, port) = serve_with_gateway(&[]).await;
    let mut py = Lines::spawn({
        let mut c =
            tokio::process::Command::new(workspace().join("target/interop-venv/bin/python"));
        c.current_dir(workspace().join("interop/py"))
            .arg("juggler_client.py")
            .arg(port.to_string())
            .arg("demo");
        c
    });
    py.expect("READY").await;
    let r = tether(&[
        "call",
        &format!("{vsoa}/publish"),
        "--set",
        "--param",
        r#"{"url": "/demo/x", "param": {"k": 1}}"#,
    ])
    .await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains(r#""delivered":1"#), "{}", r.stdout);
    py.expect("DONE").await;
    // Turned off, and a taken port is a clear error.
    let r = tether(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--gateway",
        &format!("127.0.0.1:{port}"),
    ])
    .await;
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("--no-gateway"), "{}", r.stderr);
}

/// An htpasswd file with alice/secret and a static site with its own index.html, in a
/// fresh directory named after `test`.
fn user_and_site(test: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let dir = temp_dir(test);
    let users = dir.join("users.htpasswd");
    let line = format!("alice:{}\n", tether_gateway::apr1("secret", "s4lt"));
    std::fs::write(&users, line).unwrap();
    let site = dir.join("site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(site.join("index.html"), "<p>their own page</p>").unwrap();
    (users, site)
}

/// The dashboard in Debian's headless Chromium, with the gateway's options as a user would
/// set them (Basic auth, a static site of their own, another WebSocket path, manual
/// autoflush, parallel requests): the page goes live behind the password, a VSOA client
/// that connects during the test shows up, its relayed datagram is counted, a call from
/// the form returns the echo. The screenshot is kept in target/artifacts/dashboard.png.
#[tokio::test]
async fn dashboard_in_a_real_browser() {
    let (users, site) = user_and_site("dashboard-browser");
    let (_serve, vsoa, port) = serve_with_gateway(&[
        "--relay",
        "/r/",
        "--htpasswd",
        users.to_str().unwrap(),
        "--static-dir",
        site.to_str().unwrap(),
        "--ws-path",
        "/juggler",
        "--autoflush",
        "manual",
        "--parallel-requests",
    ])
    .await;
    let artifacts = workspace().join("target/artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("dashboard.png");
    let _ = std::fs::remove_file(&shot);
    let mut browser = Lines::spawn({
        let mut c = tokio::process::Command::new("node");
        c.current_dir(workspace().join("interop"))
            .arg("js/dashboard.mjs")
            .arg(port.to_string())
            .arg(&shot)
            .args(["/dashboard.html", "alice:secret"]);
        c
    });
    browser.expect("READY").await;
    let client = tether::Client::connect(&vsoa).await.unwrap();
    let shown = browser.expect_prefix("CLIENT ").await;
    assert_eq!(shown, format!("CLIENT {}", client.id()));
    client
        .datagram("/r/x", tether::Payload::raw("1"))
        .await
        .unwrap();
    for i in 0..20 {
        let r = client.call("/echo").json(&i).unwrap().await.unwrap();
        assert_eq!(r.payload.param_value(), Some(serde_json::json!(i)));
    }
    browser.expect("DONE").await;
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "a real screenshot"
    );
}

/// A busy server's dashboard lists the counts of both transports and only the newest 100
/// VSOA clients: the state document stays small however many connections there are.
#[tokio::test]
async fn dashboard_shows_counts_and_the_newest_clients() {
    let (_serve, vsoa, port) = serve_with_gateway(&[]).await;
    let mut clients = Vec::new();
    for _ in 0..103 {
        clients.push(tether::Client::connect(&vsoa).await.unwrap());
    }
    let page = tether_gateway::client::JugglerClient::builder(&format!("ws://127.0.0.1:{port}/ws"))
        .connect()
        .await
        .unwrap();
    let mut changes = page.state_changes();
    let state = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        changes.wait_for(|s| s["client_counts"]["vsoa"] == 103),
    )
    .await
    .expect("the dashboard counted the clients")
    .unwrap()
    .clone();
    assert_eq!(state["client_counts"]["websocket"], 1, "{state}");
    let shown: Vec<u64> = state["clients"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["transport"] == "vsoa")
        .map(|c| c["id"].as_u64().unwrap())
        .collect();
    let newest: Vec<u64> = clients[3..].iter().map(|c| c.id() as u64).collect();
    assert_eq!(shown, newest);
}

#[tokio::test]
async fn serve_takes_its_settings_from_a_config_file_and_flags_override_it() {
    let dir = temp_dir("config");
    let file = dir.join("serve.toml");
    std::fs::write(
        &file,
        "# a ground station\nname = \"from-file\"\nmax-url-len = 16\nno-gateway = true\n",
    )
    .unwrap();
    let s = tether_serve(&["--config", file.to_str().unwrap(), "--name", "from-flag"]).await;
    let client = tether::Client::connect(&format!("vsoa://127.0.0.1:{}", s.port))
        .await
        .unwrap();
    assert_eq!(
        client.server_info()["name"],
        "from-flag",
        "the flag overrides the file"
    );
    let short = client.call("/echo").await.unwrap();
    assert_eq!(short.status, tether::Status::SUCCESS);
    let long = client.call("/a-url-longer-than-sixteen").await.unwrap();
    assert_eq!(
        long.status,
        tether::Status::ARGUMENTS,
        "the file's limit holds"
    );

    // A key that is no flag, and a value the flag refuses, are usage errors naming the key.
    std::fs::write(&file, "max_connections = 5\n").unwrap();
    let r = tether(&["serve", "--config", file.to_str().unwrap()]).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(
        r.stderr.contains("did you mean \"max-connections\""),
        "{}",
        r.stderr
    );
    std::fs::write(&file, "max-connections = \"many\"\n").unwrap();
    let r = tether(&["serve", "--config", file.to_str().unwrap()]).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--max-connections"), "{}", r.stderr);
}

#[tokio::test]
async fn a_url_without_a_path_names_no_route_and_is_a_usage_error() {
    let s = tether_serve(&[]).await;
    let bare = format!("vsoa://127.0.0.1:{}", s.port);
    let file = scratch_dir().join("no-path.txt");
    std::fs::write(&file, b"x").unwrap();
    let file = file.to_str().unwrap();
    for args in [
        vec!["call", bare.as_str()],
        vec!["put", file, bare.as_str()],
        vec!["get", bare.as_str()],
        vec!["sub", bare.as_str()],
        vec!["dgram", bare.as_str()],
        vec!["stream", bare.as_str()],
    ] {
        let r = tether(&args).await;
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(
            r.stderr.contains("names no route")
                && r.stderr.contains(&format!("{bare}/ for the route /")),
            "{args:?}: {}",
            r.stderr
        );
    }
    // The route `/` named as such is a call like any other (nothing serves it: status 3).
    let r = tether(&["call", &format!("{bare}/")]).await;
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.starts_with("{\"status\":3"), "{}", r.stdout);
}

#[tokio::test]
async fn serve_runs_on_the_threads_asked_for_and_refuses_zero() {
    let threads = |pid: u32| -> usize {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
        let line = status.lines().find(|l| l.starts_with("Threads:")).unwrap();
        line[8..].trim().parse().unwrap()
    };
    for (asked, want) in [(1, 1), (3, 4)] {
        let s = tether_serve(&["--no-gateway", "--threads", &asked.to_string()]).await;
        let url = format!("vsoa://127.0.0.1:{}/echo", s.port);
        let r = tether(&["call", &url, "--param", "1"]).await;
        assert_eq!(r.code, 0, "{}", r.stderr);
        // The workers, and the main thread that waits on them (one thread serves both
        // roles with --threads 1).
        assert_eq!(threads(s.child.id().unwrap()), want, "--threads {asked}");
    }
    let r = tether(&["serve", "--threads", "0"]).await;
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("0 is not in 1.."), "{}", r.stderr);
}

/// `GET path` on the gateway at `port` (with Basic credentials if given): the raw response.
async fn http_get(port: u16, path: &str, auth: Option<&str>) -> String {
    use base64::Engine as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let auth = auth.map_or(String::new(), |a| {
        let token = base64::engine::general_purpose::STANDARD.encode(a);
        format!("Authorization: Basic {token}\r\n")
    });
    let req = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(WAIT, s.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    out
}

/// The gateway's options on `tether serve`, as hat-juggler's `listen` has them: Basic auth
/// on every route, a static site, both WebSocket paths moved; each bad value a usage error.
#[tokio::test]
async fn serve_exposes_the_gateway_options_and_refuses_bad_ones() {
    use tether_gateway::client::JugglerClient;
    use tether_gateway::Wire;
    let (users, site) = user_and_site("serve-gateway-options");
    let (_serve, _vsoa, port) = serve_with_gateway(&[
        "--htpasswd",
        users.to_str().unwrap(),
        "--static-dir",
        site.to_str().unwrap(),
        "--ws-path",
        "/juggler",
        "--ws06-path",
        "/old",
    ])
    .await;
    let refused = http_get(port, "/index.html", None).await;
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    let wrong = http_get(port, "/index.html", Some("alice:wrong")).await;
    assert!(wrong.starts_with("HTTP/1.1 401"), "{wrong}");
    let theirs = http_get(port, "/index.html", Some("alice:secret")).await;
    assert!(theirs.ends_with("<p>their own page</p>"), "{theirs}");
    let dashboard = http_get(port, "/dashboard.html", Some("alice:secret")).await;
    assert!(
        dashboard.contains(r#"const WS_PATH = "/juggler";"#),
        "the dashboard connects to the moved path"
    );
    for (path, wire) in [("/juggler", Wire::V0_7), ("/old", Wire::V0_6)] {
        let url = format!("ws://127.0.0.1:{port}{path}");
        let c = JugglerClient::builder(&url)
            .wire(wire)
            .basic_auth("alice", "secret")
            .connect()
            .await
            .unwrap();
        let echo = c.send("/echo", serde_json::json!({"via": path})).await;
        assert_eq!(echo, Ok(serde_json::json!({"via": path})));
        let anonymous = JugglerClient::builder(&url).wire(wire).connect().await;
        assert!(anonymous.is_err(), "{path} without credentials");
    }
    for (bad, says) in [
        (&["--ws-path", "ws"][..], "not a URL path"),
        (&["--autoflush=-1"][..], "seconds from 0 to 3600"),
        (&["--autoflush", "soon"][..], "seconds from 0 to 3600"),
        (&["--htpasswd", "/nonexistent/users"][..], "--htpasswd"),
        (
            &["--static-dir", "/nonexistent/site"][..],
            "not a directory",
        ),
        (&["--ws06-path", "/ws"][..], "its own path"),
    ] {
        let mut args = vec![
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--gateway",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(bad);
        let r = tether(&args).await;
        assert_eq!(r.code, 2, "{bad:?}: {}", r.stderr);
        assert!(r.stderr.contains(says), "{bad:?}: {}", r.stderr);
    }
}
