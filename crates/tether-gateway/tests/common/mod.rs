#![allow(dead_code)] // each test binary uses part of it
//! Helpers for the interop tests: where the pinned peers are, and a runner for their
//! scripts' `OK`/`READY`/`FAIL`/`DONE` lines.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

pub const WAIT: Duration = Duration::from_secs(20);

pub fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The venv Python of interop/setup.sh.
pub fn python() -> Command {
    let p = workspace().join("target/interop-venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run interop/setup.sh (./test.sh does)",
        p.display()
    );
    let mut c = Command::new(p);
    c.current_dir(workspace().join("interop/py"));
    c
}

/// Node in interop/, with the global WebSocket Node 20 keeps behind a flag.
pub fn node() -> Command {
    assert!(
        workspace()
            .join("interop/node_modules/@hat-open/juggler")
            .exists(),
        "interop/node_modules is missing: run interop/setup.sh (./test.sh does)"
    );
    let mut c = Command::new("node");
    c.current_dir(workspace().join("interop"))
        .arg("--experimental-websocket")
        .arg("--no-warnings");
    c
}

/// Runs a peer script until it prints DONE; `on_ready` runs when it prints READY. Any
/// FAIL line, a missing DONE, no OK line or a non-zero exit fails the test.
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
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut on_ready = Some(on_ready);
    let mut oks = 0;
    let run = async {
        while let Some(line) = lines.next_line().await.unwrap() {
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
    let status = child.wait().await.unwrap();
    assert!(status.success(), "{name}: exit {status}");
}

/// A test CA and a server certificate for 127.0.0.1 signed by it, as PEM files in a fresh
/// directory: (dir, ca.pem, cert.pem, key.pem).
pub fn pki() -> (PathBuf, PathBuf, PathBuf, PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "tether-gw-pki-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "Tether Gateway Test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca.self_signed(&ca_key).unwrap();
    let mut leaf =
        CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "tether gateway");
    let key = KeyPair::generate().unwrap();
    let cert = leaf.signed_by(&key, &ca, &ca_key).unwrap();
    let paths = (
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    );
    std::fs::write(&paths.0, ca.pem()).unwrap();
    std::fs::write(&paths.1, cert.pem()).unwrap();
    std::fs::write(&paths.2, key.serialize_pem()).unwrap();
    (dir, paths.0, paths.1, paths.2)
}
