//! Harness for tests that run processes: `tether serve`, the pinned Python and npm peers.
//!
//! The peers are installed by `interop/setup.sh` (the README's test command runs it). If
//! they are missing, the tests fail with that instruction; they are never skipped.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

pub const WAIT: Duration = Duration::from_secs(60);

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

pub fn python() -> PathBuf {
    let p = std::env::var_os("TETHER_INTEROP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/interop-venv/bin/python"));
    assert!(
        p.exists(),
        "the Python vsoa peer is not installed ({} missing): run interop/setup.sh, or the README's test command",
        p.display()
    );
    p
}

pub fn node_modules() -> PathBuf {
    let p = workspace().join("interop/node_modules/vsoa");
    assert!(
        p.exists(),
        "the npm vsoa peer is not installed ({} missing): run interop/setup.sh, or the README's test command",
        p.display()
    );
    p
}

/// A child process killed (by its own pid) when dropped.
pub struct Proc {
    pub child: Child,
    pub port: u16,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Stops a process and waits until it is gone (its ports are free again).
pub async fn stop(mut proc: Proc) {
    let _ = proc.child.start_kill();
    let _ = tokio::time::timeout(WAIT, proc.child.wait()).await;
}

/// A child whose stdout lines are read one by one.
pub struct Lines {
    pub child: Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

impl Lines {
    pub fn spawn(mut cmd: Command) -> Lines {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn");
        let lines = BufReader::new(child.stdout.take().unwrap()).lines();
        Lines { child, lines }
    }

    /// Waits for a line equal to `want`; panics on EOF, a FAIL line, or timeout.
    pub async fn expect(&mut self, want: &str) {
        let got = tokio::time::timeout(WAIT, async {
            while let Some(line) = self.lines.next_line().await.expect("read") {
                assert!(!line.starts_with("FAIL"), "{line}");
                if line == want {
                    return;
                }
            }
            panic!("process ended before printing {want:?}");
        })
        .await;
        got.unwrap_or_else(|_| panic!("no {want:?} within {WAIT:?}"));
    }
}

impl Lines {
    /// Waits for a line starting with `prefix`.
    pub async fn expect_prefix(&mut self, prefix: &str) -> String {
        let got = tokio::time::timeout(WAIT, async {
            while let Some(line) = self.lines.next_line().await.expect("read") {
                if line.starts_with(prefix) {
                    return line;
                }
            }
            panic!("process ended before printing {prefix:?}...");
        })
        .await;
        got.unwrap_or_else(|_| panic!("no {prefix:?}... within {WAIT:?}"))
    }
}

/// Reads lines from the child's stdout until one contains `marker`, returns that line.
async fn wait_line(child: &mut Child, marker: &str) -> String {
    let stdout = child.stdout.take().expect("piped stdout");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            if line.contains(marker) {
                return line;
            }
        }
        panic!("process exited before printing {marker:?}");
    })
    .await
    .expect("process did not start in time");
    // Keep draining so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    line
}

/// Starts a long-running process and waits for the stdout line containing `banner`; the
/// port is the number that line ends with. Its stdin stays open (the Python servers serve
/// until it closes).
pub async fn start_cmd(cmd: Command, banner: &str) -> Proc {
    start(cmd, banner).await
}

async fn start(mut cmd: Command, banner: &str) -> Proc {
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start a process printing {banner:?}: {e}"));
    let line = wait_line(&mut child, banner).await;
    let digits = line
        .trim_end()
        .rsplit(|c: char| !c.is_ascii_digit())
        .next()
        .unwrap_or("");
    let port = digits
        .parse()
        .unwrap_or_else(|_| panic!("no port at the end of {line:?}"));
    Proc { child, port }
}

/// The `tether` binary with `args`, run in a scratch directory (so `serve`'s default
/// `files` folder lands there, not in the source tree).
pub fn tether_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tether"));
    // Many servers run at once: their gateways take free ports.
    cmd.args(args)
        .current_dir(scratch_dir())
        .env("TETHER_GATEWAY", "127.0.0.1:0");
    cmd
}

/// A directory for this test process's files, created once.
pub fn scratch_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tether-cli-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// `tether serve --listen 127.0.0.1:0 ARGS...`, with the port it printed.
pub async fn tether_serve(args: &[&str]) -> Proc {
    tether_serve_at(0, args).await
}

/// `tether serve --listen 127.0.0.1:PORT ARGS...`.
pub async fn tether_serve_at(port: u16, args: &[&str]) -> Proc {
    let mut cmd = tether_cmd(&["serve", "--listen", &format!("127.0.0.1:{port}")]);
    cmd.args(args);
    start(cmd, "VSOA server on vsoa://").await
}

/// `tether position --listen 127.0.0.1:0 ARGS...`, with the port it printed.
pub async fn tether_position(args: &[&str]) -> Proc {
    tether_position_on("127.0.0.1:0", args).await
}

/// `tether position --listen LISTEN ARGS...`, with the port it printed.
pub async fn tether_position_on(listen: &str, args: &[&str]) -> Proc {
    let mut cmd = tether_cmd(&["position", "--listen", listen]);
    cmd.args(args);
    start(cmd, "position service on ").await
}

/// The Python vsoa.Position server of interop/py/position_server.py.
pub async fn python_position_server() -> Proc {
    let mut cmd = Command::new(python());
    cmd.arg(workspace().join("interop/py/position_server.py"));
    start(cmd, "READY ").await
}

/// The Python vsoa server of interop/py/server.py.
pub async fn python_server(password: &str) -> Proc {
    python_server_at(password, 0).await
}

/// The Python vsoa server on a given port (0: a free one).
pub async fn python_server_at(password: &str, port: u16) -> Proc {
    let mut cmd = Command::new(python());
    cmd.arg(workspace().join("interop/py/server.py"))
        .arg(password);
    if port != 0 {
        cmd.arg(port.to_string());
    }
    start(cmd, "READY ").await
}

/// Runs a peer script to completion; panics with its output unless it printed OK.
pub async fn run_peer(mut cmd: Command, what: &str) {
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let out = tokio::time::timeout(WAIT, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("{what} did not finish within {WAIT:?}"))
        .unwrap_or_else(|e| panic!("cannot run {what}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.lines().last() == Some("OK"),
        "{what} failed ({}):\n--- stdout\n{stdout}--- stderr\n{stderr}",
        out.status
    );
}

pub async fn python_client(port: u16, scenario: &str) {
    let mut cmd = Command::new(python());
    cmd.current_dir(workspace().join("interop/py"))
        .arg("client_suite.py")
        .arg(port.to_string())
        .arg(scenario);
    run_peer(cmd, &format!("Python vsoa client scenario {scenario}")).await;
}

pub async fn npm_client(port: u16, scenario: &str) {
    node_modules();
    let mut cmd = Command::new("node");
    cmd.current_dir(workspace().join("interop"))
        .arg("js/client_suite.js")
        .arg(port.to_string())
        .arg(scenario);
    run_peer(cmd, &format!("npm vsoa client scenario {scenario}")).await;
}

/// Test certificates made at test time (no private key is ever committed), written as PEM
/// files into a temporary directory.
pub struct Pki {
    pub dir: PathBuf,
}

impl Pki {
    pub fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    /// A CA, a server certificate for `localhost`/127.0.0.1 signed by it, an expired one, a
    /// client certificate `CN=drone-7`, and an unrelated CA with its own server certificate.
    pub fn new() -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        };
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tether-pki-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let write = |name: &str, text: String| std::fs::write(dir.join(name), text).unwrap();
        let ca = |cn: &str| {
            let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(DnType::CommonName, cn);
            let key = KeyPair::generate().unwrap();
            let cert = p.self_signed(&key).unwrap();
            (cert, key)
        };
        let leaf = |names: Vec<String>,
                    cn: &str,
                    usage,
                    expired: bool,
                    issuer: &(rcgen::Certificate, KeyPair)| {
            let mut p = CertificateParams::new(names).unwrap();
            p.distinguished_name.push(DnType::CommonName, cn);
            p.extended_key_usages = vec![usage];
            if expired {
                p.not_before = rcgen::date_time_ymd(2020, 1, 1);
                p.not_after = rcgen::date_time_ymd(2021, 1, 1);
            }
            let key = KeyPair::generate().unwrap();
            let cert = p.signed_by(&key, &issuer.0, &issuer.1).unwrap();
            (cert.pem(), key.serialize_pem())
        };
        let names = || vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let root = ca("Tether Test CA");
        write("ca.pem", root.0.pem());
        let (c, k) = leaf(
            names(),
            "tether-test-server",
            ExtendedKeyUsagePurpose::ServerAuth,
            false,
            &root,
        );
        write("server.pem", c);
        write("server.key", k);
        let (c, k) = leaf(
            names(),
            "expired-server",
            ExtendedKeyUsagePurpose::ServerAuth,
            true,
            &root,
        );
        write("expired.pem", c);
        write("expired.key", k);
        let (c, k) = leaf(
            vec![],
            "drone-7",
            ExtendedKeyUsagePurpose::ClientAuth,
            false,
            &root,
        );
        write("client.pem", c);
        write("client.key", k);
        let other = ca("Someone Else's CA");
        write("other-ca.pem", other.0.pem());
        let (c, k) = leaf(
            vec![],
            "intruder",
            ExtendedKeyUsagePurpose::ClientAuth,
            false,
            &other,
        );
        write("other-client.pem", c);
        write("other-client.key", k);
        Pki { dir }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
