//! The real peers as clients of `tether serve`: Python vsoa 1.0.4 and npm vsoa 1.5.1.
//! Each scenario is a script in interop/ that checks what it receives and prints OK.

use crate::common::*;

macro_rules! scenarios {
    ($runner:ident: $($name:ident),*) => {$(
        #[tokio::test]
        async fn $name() {
            let server = tether_serve(&["--password", "pw"]).await;
            $runner(server.port, stringify!($name)).await;
        }
    )*};
}

mod python {
    use super::*;
    scenarios!(python_client: login, rpc, in_flight, matrix, order, datagram, binary_publish, quick, stream);
}

mod npm {
    use super::*;
    scenarios!(npm_client: login, rpc, in_flight, matrix, order, datagram, quick);
}

#[tokio::test]
async fn python_robot_survives_a_tether_restart() {
    let server = tether_serve(&["--password", "pw"]).await;
    let port = server.port;
    let mut cmd = tokio::process::Command::new(python_path());
    cmd.current_dir(workspace().join("interop/py"))
        .arg("robot.py")
        .arg(port.to_string());
    let mut robot = Lines::spawn(cmd);
    robot.expect("CONNECTED 1").await;
    server.stop().await;
    robot.expect("DISCONNECTED").await;
    let _again = tether_serve_at(port, &["--password", "pw"]).await;
    robot.expect("CONNECTED 2").await;
    robot.expect("OK").await;
}

#[tokio::test]
async fn python_lookup_resolves_from_our_position_service() {
    let dir = std::env::temp_dir().join(format!("tether-hosts-{}", std::process::id()));
    std::fs::write(&dir, "# test fleet\nmyserv 127.0.0.1 43022\n").unwrap();
    let pos = tether_position(&["--hosts", dir.to_str().unwrap()]).await;
    let mut cmd = tokio::process::Command::new(python_path());
    cmd.current_dir(workspace().join("interop/py"))
        .arg("position_client.py")
        .args([
            pos.port.to_string(),
            "myserv".into(),
            "127.0.0.1".into(),
            "43022".into(),
        ]);
    run_peer(cmd, "Python vsoa.lookup").await;
    let _ = std::fs::remove_file(dir);
}

#[tokio::test]
async fn python_and_npm_logins_work_beside_challenge_logins() {
    let server = tether_serve(&["--password", "pw", "--secret", "s3cret"]).await;
    python_client(server.port, "login").await;
    npm_client(server.port, "login").await;
}

#[tokio::test]
async fn python_and_npm_clients_publish_with_datagrams_through_the_relay() {
    let server = tether_serve(&["--password", "pw", "--relay", "/r/"]).await;
    // A Rust subscriber beside the scripts' own: it sees both peers' publishes too.
    let c = tether::Client::connect(&format!("vsoa://127.0.0.1:{}", server.port))
        .password("pw")
        .await
        .unwrap();
    let mut sub = c.subscribe(["/r/"]).await.unwrap();
    python_client(server.port, "relay").await;
    npm_client(server.port, "relay").await;
    let mut got = std::collections::BTreeMap::<String, Vec<u64>>::new();
    for _ in 0..2 * (1000 + 20) {
        let m = tokio::time::timeout(WAIT, sub.next())
            .await
            .expect("every relayed publish")
            .unwrap();
        let v = m.payload.param_value().unwrap();
        got.entry(m.url).or_default().push(v["i"].as_u64().unwrap());
    }
    for (url, n) in [
        ("/r/py", 1000),
        ("/r/pyq", 20),
        ("/r/js", 1000),
        ("/r/jsq", 20),
    ] {
        assert_eq!(got[url], (0..n).collect::<Vec<u64>>(), "{url}");
    }
    // A pattern that is not a URL is a usage error that says what a pattern is.
    let bad = tether_cmd(&["serve", "--relay", "no-slash"])
        .output()
        .await
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(
        err.contains("a pattern is a URL such as /sensors/"),
        "{err}"
    );
}
