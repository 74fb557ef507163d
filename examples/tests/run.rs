//! Runs every example and checks that it did what it says: exit status 0 and its closing
//! `NAME: done` line (each example asserts its own results before printing it). The
//! binaries are the ones `cargo test` builds beside this test.

use std::path::PathBuf;
use std::process::Stdio;

use tether_testkit::WAIT;

const EXAMPLES: [&str; 7] = [
    "rpc_service",
    "pubsub",
    "robot",
    "stream_transfer",
    "gateway_state",
    "ground_station",
    "sp_service",
];

fn example(name: &str) -> PathBuf {
    let deps = std::env::current_exe().expect("the test's own path");
    let path = deps
        .parent()
        .and_then(|d| d.parent())
        .expect("target/PROFILE/deps")
        .join("examples")
        .join(name);
    assert!(
        path.exists(),
        "{} is missing: `cargo test` builds the examples before running this test",
        path.display()
    );
    path
}

#[tokio::test]
async fn every_example_runs_to_its_end() {
    for name in EXAMPLES {
        let run = tokio::process::Command::new(example(name))
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output();
        let out = tokio::time::timeout(WAIT, run)
            .await
            .unwrap_or_else(|_| panic!("{name} did not finish within {WAIT:?}"))
            .unwrap_or_else(|e| panic!("cannot run {name}: {e}"));
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.lines().last() == Some(&format!("{name}: done")),
            "{name} failed ({}):\n--- stdout\n{stdout}--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
