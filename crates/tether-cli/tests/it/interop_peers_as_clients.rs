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
