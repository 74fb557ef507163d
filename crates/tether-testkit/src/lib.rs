//! What Tether's integration tests share, in one place: the one bound on waiting for an
//! event, where the pinned real peers are (installed by `interop/setup.sh`, which the
//! README's test command runs; a missing peer fails the test with that instruction, it is
//! never skipped), child processes and their output lines, temporary directories, free
//! ports and test certificates.
//!
//! Nothing here depends on Tether itself, so every crate's tests can use it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};

/// How long any single expected event may take before a test fails. Generous, because a
/// 2-core CI machine runs many tests and peer processes at once; a passing test never
/// waits for it.
pub const WAIT: Duration = Duration::from_secs(60);

/// The workspace's root directory.
pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("the workspace root exists")
}

fn installed(path: PathBuf, what: &str) -> PathBuf {
    assert!(
        path.exists(),
        "{what} is not installed ({} is missing): run interop/setup.sh, or the README's test command",
        path.display()
    );
    path
}

/// The Python of the interop venv (`TETHER_INTEROP_PYTHON` overrides it), in which the
/// pinned `vsoa` and `hat-juggler` packages are installed.
pub fn python_path() -> PathBuf {
    let p = std::env::var_os("TETHER_INTEROP_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/interop-venv/bin/python"));
    installed(p, "the Python interop venv")
}

/// That Python, run in `interop/py` (where the peer scripts are).
pub fn python() -> Command {
    let mut c = Command::new(python_path());
    c.current_dir(workspace().join("interop/py"));
    c
}

/// The Python of the hat-juggler 0.6 venv (`target/interop-venv06`, `TETHER_INTEROP_PYTHON06`
/// overrides it), run in `interop/py`: one venv cannot hold both juggler versions.
pub fn python06() -> Command {
    let p = std::env::var_os("TETHER_INTEROP_PYTHON06")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target/interop-venv06/bin/python"));
    let mut c = Command::new(installed(p, "the hat-juggler 0.6 venv"));
    c.current_dir(workspace().join("interop/py"));
    c
}

/// Node, run in `interop/` with the npm `package` the script needs installed there, and the
/// global `WebSocket` that Node 20 keeps behind a flag.
pub fn node(package: &str) -> Command {
    installed(
        workspace().join("interop/node_modules").join(package),
        &format!("the npm package {package}"),
    );
    let mut c = Command::new("node");
    c.current_dir(workspace().join("interop"))
        .arg("--experimental-websocket")
        .arg("--no-warnings");
    c
}

/// A fresh, empty directory for one test, unique to this test process.
pub fn temp_dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("tether-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("create a temporary directory");
    d
}

/// A UDP address on loopback that was free a moment ago.
pub fn free_udp() -> SocketAddr {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .and_then(|s| s.local_addr())
        .expect("a free UDP port on loopback")
}

/// A child process, killed (by its own pid) when dropped, with the port it announced.
pub struct Proc {
    /// The process.
    pub child: Child,
    /// The number its banner line ended with.
    pub port: u16,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

impl Proc {
    /// Starts a long-running process and waits for the stdout line containing `banner`;
    /// the port is the number that line ends with. Its stdin stays open (the Python servers
    /// serve until it closes); its stdout keeps being drained.
    pub async fn start(mut cmd: Command, banner: &str) -> Proc {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start a process printing {banner:?}: {e}"));
        let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
        let line = tokio::time::timeout(WAIT, async {
            while let Some(line) = lines.next_line().await.expect("read stdout") {
                if line.contains(banner) {
                    return line;
                }
            }
            panic!("process exited before printing {banner:?}");
        })
        .await
        .unwrap_or_else(|_| panic!("no {banner:?} within {WAIT:?}"));
        // Keep draining so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
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

    /// Stops the process and waits until it is gone (its ports are free again).
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(WAIT, self.child.wait()).await;
    }
}

/// A child whose stdout lines are read one by one.
pub struct Lines {
    /// The process.
    pub child: Child,
    lines: tokio::io::Lines<BufReader<ChildStdout>>,
}

impl Lines {
    /// Spawns `cmd` with stdout piped.
    pub fn spawn(mut cmd: Command) -> Lines {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn");
        let lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
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

    /// Waits for a line starting with `prefix`, and returns it.
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

/// Runs a peer script to completion; panics with its output unless it exited 0 and its last
/// line was `OK`.
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

/// Runs a peer script until it prints `DONE`; `on_ready` runs when it prints `READY`. Any
/// `FAIL` line, a missing `DONE`, no `OK ...` line or a non-zero exit fails the test.
pub async fn run_script<F, Fut>(mut cmd: Command, name: &str, on_ready: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| panic!("{name}: cannot start: {e}"));
    let mut lines = BufReader::new(child.stdout.take().expect("piped stdout")).lines();
    let mut on_ready = Some(on_ready);
    let mut oks = 0;
    let run = async {
        while let Some(line) = lines.next_line().await.expect("read stdout") {
            assert!(!line.starts_with("FAIL"), "{name}: {line}");
            if line == "READY" {
                if let Some(f) = on_ready.take() {
                    f().await;
                }
            }
            if line.starts_with("OK ") {
                oks += 1;
            }
            if line == "DONE" {
                return;
            }
        }
        panic!("{name}: the script ended without DONE");
    };
    tokio::time::timeout(WAIT, run)
        .await
        .unwrap_or_else(|_| panic!("{name}: no DONE within {WAIT:?}"));
    assert!(oks > 0, "{name}: no checks ran");
    let status = child.wait().await.expect("wait for the script");
    assert!(status.success(), "{name}: exit {status}");
}

/// Test certificates made at test time (no private key is ever committed), written as PEM
/// files into a temporary directory that is removed on drop:
///
/// * `ca.pem`: a CA; `server.pem` / `server.key`: a server certificate for `localhost` and
///   127.0.0.1 signed by it; `expired.pem` / `expired.key`: the same, expired;
/// * `client.pem` / `client.key`: a client certificate `CN=drone-7` signed by it;
/// * `a.test.pem` / `a.test.key`, `b.test.pem` / `b.test.key`: server certificates for
///   those names only, signed by it (for SNI);
/// * `other-ca.pem`, `other-client.pem` / `other-client.key`: an unrelated CA and a client
///   certificate it signed.
pub struct Pki {
    /// Where the files are.
    pub dir: PathBuf,
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}

impl Pki {
    /// The path of one of the files, as a string (for command lines).
    pub fn path(&self, name: &str) -> String {
        self.file(name).to_string_lossy().into_owned()
    }

    /// The path of one of the files.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Makes a fresh set.
    pub fn new() -> Pki {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
        };
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "tether-pki-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("create the PKI directory");
        let write = |name: &str, text: String| {
            std::fs::write(dir.join(name), text).expect("write a PEM file");
        };
        let ca = |cn: &str| {
            let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
            p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            p.distinguished_name.push(DnType::CommonName, cn);
            let key = KeyPair::generate().expect("CA key");
            let cert = p.self_signed(&key).expect("CA certificate");
            (cert, key)
        };
        let leaf = |names: Vec<String>,
                    cn: &str,
                    usage,
                    expired: bool,
                    issuer: &(rcgen::Certificate, KeyPair)| {
            let mut p = CertificateParams::new(names).expect("leaf params");
            p.distinguished_name.push(DnType::CommonName, cn);
            p.extended_key_usages = vec![usage];
            if expired {
                p.not_before = rcgen::date_time_ymd(2020, 1, 1);
                p.not_after = rcgen::date_time_ymd(2021, 1, 1);
            }
            let key = KeyPair::generate().expect("leaf key");
            let cert = p
                .signed_by(&key, &issuer.0, &issuer.1)
                .expect("leaf certificate");
            (cert.pem(), key.serialize_pem())
        };
        let names = || vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let root = ca("Tether Test CA");
        write("ca.pem", root.0.pem());
        let server = ExtendedKeyUsagePurpose::ServerAuth;
        let client = ExtendedKeyUsagePurpose::ClientAuth;
        let (c, k) = leaf(names(), "tether-test-server", server.clone(), false, &root);
        write("server.pem", c);
        write("server.key", k);
        // Two more server certificates, for choosing by SNI.
        for name in ["a.test", "b.test"] {
            let (c, k) = leaf(vec![name.to_string()], name, server.clone(), false, &root);
            write(&format!("{name}.pem"), c);
            write(&format!("{name}.key"), k);
        }
        let (c, k) = leaf(names(), "expired-server", server, true, &root);
        write("expired.pem", c);
        write("expired.key", k);
        let (c, k) = leaf(vec![], "drone-7", client.clone(), false, &root);
        write("client.pem", c);
        write("client.key", k);
        let other = ca("Someone Else's CA");
        write("other-ca.pem", other.0.pem());
        let (c, k) = leaf(vec![], "intruder", client, false, &other);
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
