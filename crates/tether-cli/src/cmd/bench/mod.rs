//! `tether bench SCENARIO`: measures one thing on loopback and prints one JSON object.
//!
//! Server and load generator run in this process on the same runtime, so every scenario
//! and its raw-socket floor (`floor-tcp`) pay the same scheduling costs. Every scenario is
//! bounded by `--count` and by `--max-secs`, and stops by itself.

use std::time::{Duration, Instant};

use serde_json::json;
use tether::{Client, Mode, Payload, Reply, Request, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::Failure;

mod transfer;

#[derive(clap::Args)]
pub struct Args {
    /// Runtime worker threads; 1 runs both ends on one thread (no cross-thread wake-ups).
    #[arg(long, default_value_t = 2, global = true)]
    pub threads: usize,
    #[command(subcommand)]
    scenario: Scenario,
}

#[derive(clap::Subcommand)]
enum Scenario {
    /// Raw TCP ping-pong round trip: the floor under rpc-latency.
    FloorTcp(Latency),
    /// Sequential RPC echo round trips on one connection.
    RpcLatency(Latency),
    /// RPC echo calls with many in flight on one connection.
    RpcThroughput(Throughput),
    /// One publisher, S subscribers: delivered messages per second, and loss.
    PubThroughput(Publish),
    /// Raw UDP send loop between two sockets: the floor under quick-rate.
    FloorUdp(transfer::Datagrams),
    /// Quick (UDP) datagrams client -> server: delivered rate and counted loss.
    QuickRate(transfer::Datagrams),
    /// Raw TCP one-way copy: the floor under stream.
    FloorTcpCopy(transfer::Bulk),
    /// Download over a VSOA stream.
    Stream(transfer::Bulk),
    /// Time for a robot to be back after its server restarts.
    Reconnect(transfer::Reconnect),
}

#[derive(clap::Args)]
struct Latency {
    /// Round trips to time (after 10% warm-up).
    #[arg(long, default_value_t = 20_000)]
    count: u64,
    /// Payload bytes per message.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Stop after this many seconds even if count is not reached.
    #[arg(long, default_value_t = 30)]
    max_secs: u64,
}

#[derive(clap::Args)]
struct Throughput {
    /// Calls to make.
    #[arg(long, default_value_t = 200_000)]
    count: u64,
    /// Calls in flight at once.
    #[arg(long, default_value_t = 256)]
    in_flight: u64,
    /// Param bytes per call.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Stop after this many seconds even if count is not reached.
    #[arg(long, default_value_t = 30)]
    max_secs: u64,
}

#[derive(clap::Args)]
struct Publish {
    /// Messages to publish.
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    /// Subscribers, each on its own connection.
    #[arg(long, default_value_t = 1)]
    subscribers: u64,
    /// Data bytes per message.
    #[arg(long, default_value_t = 32)]
    size: usize,
    /// Stop after this many seconds even if count is not reached.
    #[arg(long, default_value_t = 30)]
    max_secs: u64,
}

pub async fn run(args: Args) -> Result<(), Failure> {
    let result = match args.scenario {
        Scenario::FloorTcp(a) => floor_tcp(a).await,
        Scenario::RpcLatency(a) => rpc_latency(a).await,
        Scenario::RpcThroughput(a) => rpc_throughput(a).await,
        Scenario::PubThroughput(a) => pub_throughput(a).await,
        Scenario::FloorUdp(a) => transfer::floor_udp(a).await,
        Scenario::QuickRate(a) => transfer::quick_rate(a).await,
        Scenario::FloorTcpCopy(a) => transfer::floor_tcp_copy(a).await,
        Scenario::Stream(a) => transfer::stream(a).await,
        Scenario::Reconnect(a) => transfer::reconnect(a).await,
    }?;
    let mut result = result;
    result["params"]["threads"] = json!(args.threads);
    crate::output::print_line(&result.to_string());
    Ok(())
}

pub(super) fn io_failure(what: &str) -> impl Fn(std::io::Error) -> Failure + '_ {
    move |e| Failure {
        message: format!("{what}: {e}"),
        code: 1,
    }
}

/// Latency summary in microseconds from samples in nanoseconds.
pub(super) fn latency_json(mut ns: Vec<u64>) -> serde_json::Value {
    ns.sort_unstable();
    let pick = |q: f64| {
        if ns.is_empty() {
            return 0.0;
        }
        let i = ((ns.len() as f64 * q).ceil() as usize).clamp(1, ns.len()) - 1;
        ns[i] as f64 / 1000.0
    };
    json!({
        "p50": pick(0.50), "p90": pick(0.90), "p99": pick(0.99), "p99.9": pick(0.999),
        "max": ns.last().map_or(0.0, |&m| m as f64 / 1000.0),
    })
}

pub(super) fn report(
    scenario: &str,
    params: serde_json::Value,
    count: u64,
    elapsed: Duration,
) -> serde_json::Value {
    let secs = elapsed.as_secs_f64();
    json!({
        "scenario": scenario,
        "params": params,
        "count": count,
        "duration_s": secs,
        "rate_per_s": if secs > 0.0 { count as f64 / secs } else { 0.0 },
    })
}

/// Times `count` sequential round trips of `trip`, after a 10% warm-up.
async fn time_round_trips(
    count: u64,
    max: Duration,
    mut trip: impl AsyncFnMut() -> Result<(), Failure>,
) -> Result<(Vec<u64>, Duration), Failure> {
    for _ in 0..count / 10 {
        trip().await?;
    }
    let mut samples = Vec::with_capacity(count as usize);
    let start = Instant::now();
    for _ in 0..count {
        let t = Instant::now();
        trip().await?;
        samples.push(t.elapsed().as_nanos() as u64);
        if start.elapsed() > max {
            break;
        }
    }
    Ok((samples, start.elapsed()))
}

async fn floor_tcp(a: Latency) -> Result<serde_json::Value, Failure> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(io_failure("bind"))?;
    let addr = listener.local_addr().map_err(io_failure("bind"))?;
    let size = a.size.max(1);
    let echo = tokio::spawn(async move {
        let (mut s, _) = listener.accept().await?;
        s.set_nodelay(true)?;
        let mut buf = vec![0u8; size];
        loop {
            if s.read_exact(&mut buf).await.is_err() {
                return Ok::<(), std::io::Error>(());
            }
            s.write_all(&buf).await?;
        }
    });
    let mut c = TcpStream::connect(addr)
        .await
        .map_err(io_failure("connect"))?;
    c.set_nodelay(true).map_err(io_failure("nodelay"))?;
    let msg = vec![7u8; size];
    let mut back = vec![0u8; size];
    let trip = async || -> Result<(), Failure> {
        c.write_all(&msg).await.map_err(io_failure("write"))?;
        c.read_exact(&mut back).await.map_err(io_failure("read"))?;
        Ok(())
    };
    let (samples, elapsed) =
        time_round_trips(a.count, Duration::from_secs(a.max_secs), trip).await?;
    drop(c);
    let _ = echo.await;
    let mut out = report(
        "floor-tcp",
        json!({"size": a.size}),
        samples.len() as u64,
        elapsed,
    );
    out["latency_us"] = latency_json(samples);
    Ok(out)
}

/// A server with an inline `/echo`, on a free loopback port.
async fn echo_server() -> Result<(Server, tether::Listening), Failure> {
    let server = Server::builder().build();
    server.route_with("/echo", Mode::Inline, |req: Request| async move {
        Reply::ok(req.payload)
    });
    let listening = server.bind("127.0.0.1:0").await?;
    Ok((server, listening))
}

async fn rpc_latency(a: Latency) -> Result<serde_json::Value, Failure> {
    let (_server, l) = echo_server().await?;
    let client = Client::connect(&format!("vsoa://{}", l.local_addr())).await?;
    let param = bytes::Bytes::from(vec![b'x'; a.size]);
    let client = &client;
    let param = &param;
    let trip = || async move {
        let r = client.call("/echo").param(param.clone()).await?;
        if r.payload.param.len() != param.len() {
            return Err(Failure {
                message: "echo came back wrong".into(),
                code: 1,
            });
        }
        Ok(())
    };
    let (samples, elapsed) =
        time_round_trips(a.count, Duration::from_secs(a.max_secs), trip).await?;
    let mut out = report(
        "rpc-latency",
        json!({"size": a.size}),
        samples.len() as u64,
        elapsed,
    );
    out["latency_us"] = latency_json(samples);
    Ok(out)
}

async fn rpc_throughput(a: Throughput) -> Result<serde_json::Value, Failure> {
    let (_server, l) = echo_server().await?;
    let client = Client::connect(&format!("vsoa://{}", l.local_addr())).await?;
    let param = bytes::Bytes::from(vec![b'x'; a.size]);
    let workers = a.in_flight.max(1);
    let per_worker = a.count / workers;
    let deadline = Instant::now() + Duration::from_secs(a.max_secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (client, param) = (client.clone(), param.clone());
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            let mut lat = Vec::with_capacity(per_worker as usize);
            while done < per_worker && Instant::now() < deadline {
                let t = Instant::now();
                client.call("/echo").param(param.clone()).await?;
                lat.push(t.elapsed().as_nanos() as u64);
                done += 1;
            }
            Ok::<_, tether::Error>(lat)
        }));
    }
    let mut samples = Vec::new();
    for t in tasks {
        let lat = t.await.map_err(|e| Failure {
            message: e.to_string(),
            code: 1,
        })??;
        samples.extend(lat);
    }
    let elapsed = start.elapsed();
    let mut out = report(
        "rpc-throughput",
        json!({"size": a.size, "in_flight": workers, "connections": 1}),
        samples.len() as u64,
        elapsed,
    );
    out["latency_us"] = latency_json(samples);
    Ok(out)
}

async fn pub_throughput(a: Publish) -> Result<serde_json::Value, Failure> {
    let server = Server::builder().build();
    let l = server.bind("127.0.0.1:0").await?;
    let url = format!("vsoa://{}", l.local_addr());
    let max = Duration::from_secs(a.max_secs);
    let mut receivers = Vec::new();
    for _ in 0..a.subscribers.max(1) {
        let c = Client::connect(&url).await?;
        let mut sub = c.subscribe(["/bench/"]).await?;
        let want = a.count;
        receivers.push(tokio::spawn(async move {
            let _keep = c;
            let mut got = 0u64;
            let mut lost = 0u64;
            let deadline = tokio::time::Instant::now() + max + Duration::from_secs(5);
            while got + lost < want {
                match tokio::time::timeout_at(deadline, sub.next()).await {
                    Ok(Some(m)) => {
                        got += 1;
                        lost += m.lost_before;
                    }
                    _ => break,
                }
            }
            (got, Instant::now())
        }));
    }
    let payload = Payload::empty().with_data(vec![0u8; a.size]);
    let start = Instant::now();
    let mut published = 0u64;
    let mut cut_off = 0usize;
    while published < a.count && start.elapsed() < max {
        let r = server.publish("/bench/x", payload.clone()).await?;
        cut_off += r.cut_off;
        published += 1;
    }
    let publish_elapsed = start.elapsed();
    let mut delivered = 0u64;
    let mut last = start;
    for r in receivers {
        let (got, at) = r.await.map_err(|e| Failure {
            message: e.to_string(),
            code: 1,
        })?;
        delivered += got;
        last = last.max(at);
    }
    let elapsed = last - start;
    let expected = published * a.subscribers.max(1);
    let mut out = report(
        "pub-throughput",
        json!({"size": a.size, "subscribers": a.subscribers.max(1)}),
        delivered,
        elapsed,
    );
    out["published"] = json!(published);
    out["publish_rate_per_s"] = json!(published as f64 / publish_elapsed.as_secs_f64());
    out["lost"] = json!(expected - delivered.min(expected));
    out["cut_off"] = json!(cut_off);
    Ok(out)
}
