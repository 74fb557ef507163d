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
            && text.contains("tether: connection to vsoa://127.0.0.1:3005 ended"),
        "keepalive gave up on the silent link, and the subscriber said so:\n{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _ = std::fs::remove_dir_all(dir);
}
