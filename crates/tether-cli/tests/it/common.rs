//! Helpers for tests that run processes: `tether serve`, `tether position`, and the
//! pinned Python and npm peers (the generic harness is `tether_testkit`).

use std::path::PathBuf;
use std::process::Stdio;

pub(crate) use tether_testkit::*;
use tokio::process::Command;

/// The `tether` binary with `args`, run in a scratch directory (so `serve`'s default
/// `files` folder lands there, not in the source tree).
pub(crate) fn tether_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tether"));
    // Many servers run at once: their gateways take free ports.
    cmd.args(args)
        .current_dir(scratch_dir())
        .env("TETHER_GATEWAY", "127.0.0.1:0");
    cmd
}

/// A finished `tether` command.
pub(crate) struct Run {
    pub code: i32,
    pub stdout: String,
    pub stdout_bytes: Vec<u8>,
    pub stderr: String,
}

/// Runs `tether ARGS...` to the end (stdin closed).
pub(crate) async fn tether(args: &[&str]) -> Run {
    let out = tokio::time::timeout(
        WAIT,
        tether_cmd(&[])
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("tether finished in time")
    .expect("run tether");
    Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stdout_bytes: out.stdout.clone(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A directory for this test process's files, created once.
pub(crate) fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tether-cli-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// `tether serve --listen 127.0.0.1:0 ARGS...`, with the port it printed.
pub(crate) async fn tether_serve(args: &[&str]) -> Proc {
    tether_serve_at(0, args).await
}

/// `tether serve --listen 127.0.0.1:PORT ARGS...`.
pub(crate) async fn tether_serve_at(port: u16, args: &[&str]) -> Proc {
    let mut cmd = tether_cmd(&["serve", "--listen", &format!("127.0.0.1:{port}")]);
    cmd.args(args);
    Proc::start(cmd, "VSOA server on vsoa://").await
}

/// `tether position --listen 127.0.0.1:0 ARGS...`, with the port it printed.
pub(crate) async fn tether_position(args: &[&str]) -> Proc {
    tether_position_on("127.0.0.1:0", args).await
}

/// `tether position --listen LISTEN ARGS...`, with the port it printed.
pub(crate) async fn tether_position_on(listen: &str, args: &[&str]) -> Proc {
    let mut cmd = tether_cmd(&["position", "--listen", listen]);
    cmd.args(args);
    Proc::start(cmd, "position service on ").await
}

/// The Python vsoa.Position server of interop/py/position_server.py.
pub(crate) async fn python_position_server() -> Proc {
    let mut cmd = Command::new(python_path());
    cmd.arg(workspace().join("interop/py/position_server.py"));
    Proc::start(cmd, "READY ").await
}

/// The Python vsoa server of interop/py/server.py.
pub(crate) async fn python_server(password: &str) -> Proc {
    python_server_at(password, 0).await
}

/// The Python vsoa server on a given port (0: a free one).
pub(crate) async fn python_server_at(password: &str, port: u16) -> Proc {
    let mut cmd = Command::new(python_path());
    cmd.arg(workspace().join("interop/py/server.py"))
        .arg(password);
    if port != 0 {
        cmd.arg(port.to_string());
    }
    Proc::start(cmd, "READY ").await
}

/// Runs one scenario of interop/py/client_suite.py against `port`.
pub(crate) async fn python_client(port: u16, scenario: &str) {
    let mut cmd = python();
    cmd.arg("client_suite.py")
        .arg(port.to_string())
        .arg(scenario);
    run_peer(cmd, &format!("Python vsoa client scenario {scenario}")).await;
}

/// Runs one scenario of interop/js/client_suite.js against `port`.
pub(crate) async fn npm_client(port: u16, scenario: &str) {
    let mut cmd = node("vsoa");
    cmd.arg("js/client_suite.js")
        .arg(port.to_string())
        .arg(scenario);
    run_peer(cmd, &format!("npm vsoa client scenario {scenario}")).await;
}
