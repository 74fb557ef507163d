//! Bulk and lossy transfer scenarios and their floors: quick datagrams against a raw UDP
//! loop, stream download against a raw TCP copy, and robot reconnect time.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tether::{Client, Datagram, Payload, Reply, Request, Robot, RobotEvent, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use super::{io_failure, latency_report, report, Failure, Latencies};

/// How long a receiver may see nothing before the rest is counted as lost.
const IDLE: Duration = Duration::from_millis(500);

#[derive(clap::Args)]
pub(super) struct Datagrams {
    /// Datagrams to send.
    #[arg(long, default_value_t = 200_000)]
    count: u64,
    /// Data bytes per datagram.
    #[arg(long, default_value_t = 64)]
    size: usize,
}

#[derive(clap::Args)]
pub(super) struct Bulk {
    /// Bytes to transfer.
    #[arg(long, default_value_t = 1 << 30)]
    bytes: u64,
}

#[derive(clap::Args)]
pub(super) struct Reconnect {
    /// Server restarts to time.
    #[arg(long, default_value_t = 20)]
    count: u64,
}

/// Waits until `received` reaches `want` or stops moving for [`IDLE`]; returns the count
/// and when the last one arrived.
async fn settle(received: &AtomicU64, want: u64, start: Instant) -> (u64, Duration) {
    let mut last = received.load(Ordering::Relaxed);
    let mut last_at = start.elapsed();
    let mut idle_since = Instant::now();
    loop {
        let now = received.load(Ordering::Relaxed);
        if now >= want {
            return (now, start.elapsed());
        }
        if now != last {
            last = now;
            last_at = start.elapsed();
            idle_since = Instant::now();
        } else if idle_since.elapsed() > IDLE {
            return (now, last_at);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

fn loss_report(
    scenario: &str,
    a: &Datagrams,
    sent: u64,
    send_time: Duration,
    got: u64,
    elapsed: Duration,
) -> serde_json::Value {
    let mut out = report(scenario, json!({"size": a.size}), got, elapsed);
    out["sent"] = json!(sent);
    out["send_rate_per_s"] = json!(sent as f64 / send_time.as_secs_f64());
    out["lost"] = json!(sent - got.min(sent));
    out
}

pub(super) async fn floor_udp(a: Datagrams) -> Result<serde_json::Value, Failure> {
    let rx = UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(io_failure("bind"))?;
    let tx = UdpSocket::bind("127.0.0.1:0")
        .await
        .map_err(io_failure("bind"))?;
    tx.connect(rx.local_addr().map_err(io_failure("bind"))?)
        .await
        .map_err(io_failure("connect"))?;
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let reader = tokio::spawn(async move {
        let mut buf = vec![0u8; 65_536];
        while rx.recv(&mut buf).await.is_ok() {
            counter.fetch_add(1, Ordering::Relaxed);
        }
    });
    // The same bytes a quick datagram of this size occupies.
    let msg = vec![0u8; 20 + "/bench".len() + a.size];
    let start = Instant::now();
    for _ in 0..a.count {
        tx.send(&msg).await.map_err(io_failure("send"))?;
    }
    let send_time = start.elapsed();
    let (got, elapsed) = settle(&received, a.count, start).await;
    reader.abort();
    Ok(loss_report(
        "floor-udp",
        &a,
        a.count,
        send_time,
        got,
        elapsed,
    ))
}

pub(super) async fn quick_rate(a: Datagrams) -> Result<serde_json::Value, Failure> {
    let received = Arc::new(AtomicU64::new(0));
    let counter = received.clone();
    let server = Server::builder()
        .on_datagram(move |_d: Datagram| {
            counter.fetch_add(1, Ordering::Relaxed);
            std::future::ready(())
        })
        .build();
    let l = server.bind("127.0.0.1:0").await?;
    let client = Client::connect(&format!("vsoa://{}", l.local_addr())).await?;
    let payload = Payload::empty().with_data(vec![0u8; a.size]);
    let start = Instant::now();
    for _ in 0..a.count {
        client.datagram_quick("/bench", payload.clone()).await?;
    }
    let send_time = start.elapsed();
    let (got, elapsed) = settle(&received, a.count, start).await;
    let mut out = loss_report("quick-rate", &a, a.count, send_time, got, elapsed);
    out["server_rejected"] = json!(server.quick_stats().rejected);
    Ok(out)
}

const CHUNK: usize = 64 * 1024;

async fn write_bytes<W: AsyncWriteExt + Unpin>(w: &mut W, n: u64) -> std::io::Result<()> {
    let chunk = vec![7u8; CHUNK];
    let mut left = n;
    while left > 0 {
        let k = left.min(CHUNK as u64) as usize;
        w.write_all(&chunk[..k]).await?;
        left -= k as u64;
    }
    w.shutdown().await
}

async fn read_all<R: AsyncReadExt + Unpin>(r: &mut R) -> std::io::Result<u64> {
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
    }
}

fn bulk_report(scenario: &str, bytes: u64, elapsed: Duration) -> serde_json::Value {
    let mut out = report(scenario, json!({"chunk": CHUNK}), bytes, elapsed);
    out["mib_per_s"] = json!(bytes as f64 / (1 << 20) as f64 / elapsed.as_secs_f64());
    out
}

pub(super) async fn floor_tcp_copy(a: Bulk) -> Result<serde_json::Value, Failure> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(io_failure("bind"))?;
    let addr = listener.local_addr().map_err(io_failure("bind"))?;
    let n = a.bytes;
    let sender = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        s.set_nodelay(true)?;
        write_bytes(&mut s, n).await
    });
    let start = Instant::now();
    let mut c = TcpStream::connect(addr)
        .await
        .map_err(io_failure("connect"))?;
    let got = read_all(&mut c).await.map_err(io_failure("read"))?;
    let elapsed = start.elapsed();
    sender
        .await
        .map_err(|e| Failure {
            message: e.to_string(),
            code: crate::cmd::exit::OTHER,
        })?
        .map_err(io_failure("write"))?;
    Ok(bulk_report("floor-tcp-copy", got, elapsed))
}

pub(super) async fn stream(a: Bulk) -> Result<serde_json::Value, Failure> {
    let server = Server::builder().build();
    let n = a.bytes;
    server.route("/bench/blob", move |req: Request| async move {
        req.with_stream(Reply::empty(), move |mut s| async move {
            let _ = write_bytes(&mut s, n).await;
        })
        .await
    });
    let l = server.bind("127.0.0.1:0").await?;
    let client = Client::connect(&format!("vsoa://{}", l.local_addr())).await?;
    let start = Instant::now();
    let reply = client.call("/bench/blob").await?;
    let mut s = client.connect_stream(reply.tunid).await?;
    let got = read_all(&mut s).await.map_err(io_failure("read"))?;
    Ok(bulk_report("stream", got, start.elapsed()))
}

pub(super) async fn reconnect(a: Reconnect) -> Result<serde_json::Value, Failure> {
    let server = Server::builder().build();
    let mut listening = server.bind("127.0.0.1:0").await?;
    let addr = listening.local_addr();
    let robot = Robot::builder(&format!("vsoa://{addr}"))
        .backoff(Duration::from_millis(10), Duration::from_millis(100))
        .start()?;
    let mut events = robot.events();
    let connected =
        async |events: &mut tokio::sync::broadcast::Receiver<RobotEvent>| -> Result<(), Failure> {
            loop {
                match tokio::time::timeout(Duration::from_secs(10), events.recv()).await {
                    Ok(Ok(RobotEvent::Connected { .. })) => return Ok(()),
                    Ok(Ok(_)) => {}
                    _ => {
                        return Err(Failure {
                            message: "the robot did not reconnect within 10 s".into(),
                            code: crate::cmd::exit::OTHER,
                        })
                    }
                }
            }
        };
    connected(&mut events).await?;
    let mut samples = Latencies::new();
    let start = Instant::now();
    for _ in 0..a.count {
        listening.shutdown().await;
        listening = server.bind(addr).await?;
        let t = Instant::now();
        connected(&mut events).await?;
        samples.record(t.elapsed());
    }
    Ok(latency_report(
        "reconnect",
        json!({"backoff_initial_ms": 10}),
        &samples,
        start.elapsed(),
    ))
}
