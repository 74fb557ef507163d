//! `connections`: resident memory a `tether serve` process spends per idle, logged-in
//! connection. The server runs as a child process so that only its memory is measured;
//! the clients here are bare sockets that log in and then stay silent.

use std::time::{Duration, Instant};

use bytes::BytesMut;
use serde_json::json;
use tether_wire::vsoa::{Decoder, Packet, PacketType};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use super::{io_failure, report, Failure};

#[derive(clap::Args)]
pub(super) struct Connections {
    /// Connections to hold (this process holds one socket for each).
    #[arg(long, default_value_t = 10_000)]
    count: u64,
    /// Seconds to hold them before reading the server's memory.
    #[arg(long, default_value_t = 2)]
    hold_secs: u64,
}

/// VmRSS of process `pid`, in KiB.
fn rss_kib(pid: u32) -> Result<u64, Failure> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(io_failure("read the server's /proc status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| Failure {
            message: "no VmRSS in /proc status".into(),
            code: crate::cmd::exit::OTHER,
        })
}

/// Connects and logs in (no password); returns the open socket.
async fn logged_in(addr: std::net::SocketAddr) -> Result<TcpStream, Failure> {
    let mut s = TcpStream::connect(addr)
        .await
        .map_err(io_failure("connect"))?;
    let hello = Packet::new(PacketType::ServInfo)
        .to_bytes()
        .map_err(|e| Failure {
            message: e.to_string(),
            code: crate::cmd::exit::OTHER,
        })?;
    s.write_all(&hello).await.map_err(io_failure("login"))?;
    let mut buf = BytesMut::new();
    let mut dec = Decoder::new();
    loop {
        if let Some(p) = dec.decode(&mut buf).map_err(|e| Failure {
            message: format!("login reply: {e}"),
            code: crate::cmd::exit::OTHER,
        })? {
            if !p.status.is_success() {
                return Err(Failure {
                    message: format!("login refused: status {}", p.status),
                    code: crate::cmd::exit::OTHER,
                });
            }
            return Ok(s);
        }
        if s.read_buf(&mut buf).await.map_err(io_failure("login"))? == 0 {
            return Err(Failure {
                message: "the server closed the connection during login".into(),
                code: crate::cmd::exit::OTHER,
            });
        }
    }
}

// Long on purpose: a benchmark is one measured sequence (set up, warm, time, report).
pub(super) async fn connections(a: Connections) -> Result<serde_json::Value, Failure> {
    let exe = std::env::current_exe().map_err(io_failure("find the tether binary"))?;
    let scratch = std::env::temp_dir().join(format!("tether-bench-conns-{}", std::process::id()));
    let max = (a.count + 64).to_string();
    let mut child = tokio::process::Command::new(exe)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--max-connections",
            &max,
        ])
        .arg("--files-root")
        .arg(&scratch)
        .env("RUST_LOG", "warn")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(io_failure("start tether serve"))?;
    let pid = child.id().ok_or_else(|| Failure {
        message: "tether serve exited at once".into(),
        code: crate::cmd::exit::OTHER,
    })?;
    let stdout = child.stdout.take().ok_or_else(|| Failure {
        message: "no stdout from tether serve".into(),
        code: crate::cmd::exit::OTHER,
    })?;
    let mut first = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        BufReader::new(stdout).read_line(&mut first),
    )
    .await
    .map_err(|_| Failure {
        message: "tether serve did not start within 10 s".into(),
        code: crate::cmd::exit::OTHER,
    })?
    .map_err(io_failure("read tether serve's banner"))?;
    let addr: std::net::SocketAddr = first
        .trim()
        .rsplit("vsoa://")
        .next()
        .and_then(|a| a.parse().ok())
        .ok_or_else(|| Failure {
            message: format!("unexpected banner {first:?}"),
            code: crate::cmd::exit::OTHER,
        })?;

    // A few connections first, so one-time allocations are not counted per connection.
    let mut held = Vec::with_capacity(a.count as usize);
    for _ in 0..8 {
        held.push(logged_in(addr).await?);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = rss_kib(pid)?;
    let start = Instant::now();
    let batch = 200usize;
    while (held.len() as u64) < a.count + 8 {
        let n = batch.min((a.count + 8) as usize - held.len());
        let opened = open_many(n, addr).await?;
        held.extend(opened);
    }
    let connect_time = start.elapsed();
    tokio::time::sleep(Duration::from_secs(a.hold_secs)).await;
    let after = rss_kib(pid)?;
    drop(held);
    let _ = child.start_kill();
    let _ = child.wait().await;
    let _ = std::fs::remove_dir_all(&scratch);
    let mut out = report(
        "connections",
        json!({"count": a.count, "hold_secs": a.hold_secs}),
        a.count,
        connect_time,
    );
    out["rss_before_kib"] = json!(before);
    out["rss_after_kib"] = json!(after);
    out["bytes_per_connection"] =
        json!((after.saturating_sub(before) * 1024) as f64 / a.count.max(1) as f64);
    Ok(out)
}

/// Opens `n` logged-in connections at once.
async fn open_many(n: usize, addr: std::net::SocketAddr) -> Result<Vec<TcpStream>, Failure> {
    let tasks: Vec<_> = (0..n).map(|_| tokio::spawn(logged_in(addr))).collect();
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        out.push(t.await.map_err(|e| Failure {
            message: e.to_string(),
            code: crate::cmd::exit::OTHER,
        })??);
    }
    Ok(out)
}
