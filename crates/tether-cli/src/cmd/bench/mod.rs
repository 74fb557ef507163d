//! `tether bench SCENARIO`: measures one thing on loopback and prints one JSON object.
//!
//! Server and load generator run in this process on the same runtime, so every scenario
//! and its raw-socket floor (`floor-tcp`) pay the same scheduling costs. Every scenario is
//! bounded by `--count` and by `--max-secs`, and stops by itself.

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use tether::{Client, Mode, Payload, Reply, Request, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::Failure;

mod conns;
#[cfg(feature = "nats")]
mod nats;
mod procs;
mod transfer;
mod ws;

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Runtime worker threads; 1 runs both ends on one thread (no cross-thread wake-ups).
    #[arg(long, default_value_t = 2, global = true)]
    pub threads: usize,
    /// A label recorded in the result's params as `tag` (bench/compare.sh marks with it
    /// which server a `--url` run measured).
    #[arg(long, global = true)]
    tag: Option<String>,
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
    /// Resident memory of a `tether serve` process per idle, logged-in connection.
    Connections(conns::Connections),
    /// Raw WebSocket echo of juggler-sized text frames, no JSON: the floor under ws-rpc.
    FloorWs(ws::FloorWs),
    /// Juggler requests through the WebSocket gateway (or any juggler server, --url).
    WsRpc(ws::WsRpc),
    /// State sync from the gateway to many WebSocket clients: update latency.
    WsFanout(ws::WsFanout),
    /// Fan-out across processes: S subscribers here, the server in its own process
    /// (`tether serve --relay /bench/`, or nats-server), the publisher in a child.
    Fanout(procs::Fanout),
    /// The publishing child of `fanout`.
    #[command(hide = true)]
    FanoutPublisher(procs::FanoutPublisher),
    /// NATS request-reply through a nats-server (built with --features nats).
    #[cfg(feature = "nats")]
    NatsRpc(nats::NatsRpc),
    /// NATS pub/sub through a nats-server (built with --features nats).
    #[cfg(feature = "nats")]
    NatsPub(nats::NatsPub),
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
    /// Measure this server (any VSOA server with an `/echo` route) instead of one of our
    /// own in this process (rpc-latency only).
    #[arg(long, value_name = "vsoa://HOST:PORT")]
    url: Option<String>,
    /// The route to call (with --url): another than `/echo`, e.g. one that another node
    /// of a federation serves. Only the status is checked then.
    #[arg(long, default_value = "/echo", requires = "url")]
    path: String,
}

#[derive(clap::Args)]
struct Throughput {
    /// Calls to make.
    #[arg(long, default_value_t = 200_000)]
    count: u64,
    /// Calls in flight at once, spread over the connections.
    #[arg(long, default_value_t = 256)]
    in_flight: u64,
    /// Client connections.
    #[arg(long, default_value_t = 1)]
    connections: u64,
    /// Measure this server (any VSOA server with an `/echo` route) instead of one of our
    /// own in this process.
    #[arg(long, value_name = "vsoa://HOST:PORT")]
    url: Option<String>,
    /// The route to call (with --url): another than `/echo`, e.g. one that another node
    /// of a federation serves. Only the status is checked then.
    #[arg(long, default_value = "/echo", requires = "url")]
    path: String,
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
    /// Measure this server instead of one of our own: it is asked to publish with
    /// SET `/publish` `{"url": "/bench/x", "count": N}` (the Python interop server and
    /// `tether serve` both answer that; the message size is then the server's).
    #[arg(long, value_name = "vsoa://HOST:PORT")]
    url: Option<String>,
}

pub(crate) async fn run(args: Args) -> Result<(), Failure> {
    // A spawned task, as application code usually is: tokio polls a `block_on` future that
    // another task woke only after a zero-timeout epoll_wait, a syscall per wake-up that
    // would be counted against every round trip (the floors run the same way).
    let mut result = tokio::spawn(scenario(args.scenario))
        .await
        .map_err(|e| Failure {
            message: format!("the benchmark task failed: {e}"),
            code: crate::cmd::exit::OTHER,
        })??;
    result["params"]["threads"] = json!(args.threads);
    if let Some(tag) = args.tag {
        result["params"]["tag"] = json!(tag);
    }
    crate::output::print_line(&result.to_string());
    Ok(())
}

async fn scenario(scenario: Scenario) -> Result<serde_json::Value, Failure> {
    match scenario {
        Scenario::FloorTcp(a) => floor_tcp(a).await,
        Scenario::RpcLatency(a) => rpc_latency(a).await,
        Scenario::RpcThroughput(a) => rpc_throughput(a).await,
        Scenario::PubThroughput(a) => pub_throughput(a).await,
        Scenario::Fanout(a) => procs::fanout(a).await,
        Scenario::FanoutPublisher(a) => procs::publisher(a).await,
        Scenario::FloorUdp(a) => transfer::floor_udp(a).await,
        Scenario::QuickRate(a) => transfer::quick_rate(a).await,
        Scenario::FloorTcpCopy(a) => transfer::floor_tcp_copy(a).await,
        Scenario::Stream(a) => transfer::stream(a).await,
        Scenario::Reconnect(a) => transfer::reconnect(a).await,
        Scenario::Connections(a) => conns::connections(a).await,
        Scenario::FloorWs(a) => ws::floor_ws(a).await,
        Scenario::WsRpc(a) => ws::ws_rpc(a).await,
        Scenario::WsFanout(a) => ws::ws_fanout(a).await,
        #[cfg(feature = "nats")]
        Scenario::NatsRpc(a) => nats::rpc(a).await,
        #[cfg(feature = "nats")]
        Scenario::NatsPub(a) => nats::publish(a).await,
    }
}

pub(super) fn io_failure(what: &str) -> impl Fn(std::io::Error) -> Failure + '_ {
    move |e| Failure {
        message: format!("{what}: {e}"),
        code: crate::cmd::exit::OTHER,
    }
}

/// Latency samples in an HDR histogram: 1 ns to 100 s, 3 significant digits, so memory
/// stays fixed however many samples a run takes.
#[derive(Clone)]
pub(super) struct Latencies(hdrhistogram::Histogram<u64>);

impl Latencies {
    pub(super) fn new() -> Self {
        Latencies(
            hdrhistogram::Histogram::new_with_bounds(1, 100_000_000_000, 3)
                .expect("constant, valid bounds"),
        )
    }

    pub(super) fn record(&mut self, d: Duration) {
        self.0
            .saturating_record(d.as_nanos().min(u64::MAX as u128) as u64);
    }

    pub(super) fn add(&mut self, other: &Latencies) {
        // Same bounds on both sides, so this cannot fail.
        let _ = self.0.add(&other.0);
    }

    pub(super) fn len(&self) -> u64 {
        self.0.len()
    }

    /// p50, p90, p99, p99.9 and max, in microseconds.
    pub(super) fn json(&self) -> serde_json::Value {
        let us = |ns: u64| ns as f64 / 1000.0;
        let q = |q: f64| us(self.0.value_at_quantile(q));
        json!({
            "p50": q(0.50), "p90": q(0.90), "p99": q(0.99), "p99.9": q(0.999),
            "max": us(self.0.max()),
        })
    }
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

/// Runs `workers` tasks at once, each making up to `per_worker` calls of `call(worker)`
/// one after another until `deadline`: the latencies of all calls, and the time from the
/// first call's start to the last call's end. One clock reading per call (a call's end is
/// the next one's start) and one shared histogram (hundreds of per-task ones made the
/// recording itself a cache-miss hot spot) keep the load generator's own cost small.
pub(super) async fn in_flight<F, Fut>(
    workers: u64,
    per_worker: u64,
    deadline: Instant,
    call: F,
) -> Result<(Latencies, Duration), Failure>
where
    F: Fn(u64) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), Failure>> + Send + 'static,
{
    let all = Arc::new(std::sync::Mutex::new(Latencies::new()));
    let start = Instant::now();
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (call, all) = (call.clone(), all.clone());
            tokio::spawn(async move {
                let mut t = Instant::now();
                for _ in 0..per_worker {
                    if t >= deadline {
                        break;
                    }
                    call(w).await?;
                    let now = Instant::now();
                    all.lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .record(now - t);
                    t = now;
                }
                Ok::<_, Failure>(t)
            })
        })
        .collect();
    let mut end = start;
    for t in tasks {
        let finished = t.await.map_err(|e| Failure {
            message: e.to_string(),
            code: crate::cmd::exit::OTHER,
        })??;
        end = end.max(finished);
    }
    let all = std::mem::replace(
        &mut *all.lock().unwrap_or_else(|e| e.into_inner()),
        Latencies::new(),
    );
    Ok((all, end - start))
}

/// Times `count` sequential round trips of `trip`, after a 10% warm-up. Each trip takes
/// the state (sockets, buffers) and gives it back, so the futures own what they use.
async fn time_round_trips<S, F, Fut>(
    count: u64,
    max: Duration,
    mut state: S,
    mut trip: F,
) -> Result<(Latencies, Duration), Failure>
where
    F: FnMut(S) -> Fut,
    Fut: std::future::Future<Output = Result<S, Failure>>,
{
    for _ in 0..count / 10 {
        state = trip(state).await?;
    }
    let mut samples = Latencies::new();
    let start = Instant::now();
    for _ in 0..count {
        let t = Instant::now();
        state = trip(state).await?;
        samples.record(t.elapsed());
        if start.elapsed() > max {
            break;
        }
    }
    Ok((samples, start.elapsed()))
}

async fn floor_tcp(a: Latency) -> Result<serde_json::Value, Failure> {
    if a.url.is_some() {
        return Err(Failure::usage(
            "floor-tcp measures raw sockets; --url does not apply",
        ));
    }
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
    let c = TcpStream::connect(addr)
        .await
        .map_err(io_failure("connect"))?;
    c.set_nodelay(true).map_err(io_failure("nodelay"))?;
    let state = (c, vec![7u8; size], vec![0u8; size]);
    let trip = |(mut c, msg, mut back): (TcpStream, Vec<u8>, Vec<u8>)| async move {
        c.write_all(&msg).await.map_err(io_failure("write"))?;
        c.read_exact(&mut back).await.map_err(io_failure("read"))?;
        Ok((c, msg, back))
    };
    let (samples, elapsed) =
        time_round_trips(a.count, Duration::from_secs(a.max_secs), state, trip).await?;
    let _ = echo.await;
    Ok(latency_report(
        "floor-tcp",
        json!({"size": a.size}),
        &samples,
        elapsed,
    ))
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

/// The server to measure: `--url` (any VSOA server with `/echo`), or our own in-process.
async fn echo_target(
    url: &Option<String>,
) -> Result<(String, Option<(Server, tether::Listening)>), Failure> {
    match url {
        Some(u) => Ok((u.clone(), None)),
        None => {
            let (server, l) = echo_server().await?;
            Ok((format!("vsoa://{}", l.local_addr()), Some((server, l))))
        }
    }
}

/// A scenario's report with its latency distribution.
fn latency_report(
    scenario: &str,
    params: serde_json::Value,
    samples: &Latencies,
    elapsed: Duration,
) -> serde_json::Value {
    let mut out = report(scenario, params, samples.len(), elapsed);
    out["latency_us"] = samples.json();
    out
}

async fn rpc_latency(a: Latency) -> Result<serde_json::Value, Failure> {
    let (url, _own) = echo_target(&a.url).await?;
    let client = Client::connect(&url).await?;
    let param = bytes::Bytes::from(vec![b'x'; a.size]);
    let path: std::sync::Arc<str> = a.path.as_str().into();
    let echo = a.path == "/echo";
    let trip = move |(client, param): (Client, bytes::Bytes)| {
        let path = path.clone();
        async move {
            let r = client.call(&path).param(param.clone()).await?;
            if !r.status.is_success() || (echo && r.payload.param.len() != param.len()) {
                return Err(Failure {
                    message: format!("{path} came back wrong (status {})", r.status),
                    code: crate::cmd::exit::OTHER,
                });
            }
            Ok((client, param))
        }
    };
    let state = (client, param);
    let (samples, elapsed) =
        time_round_trips(a.count, Duration::from_secs(a.max_secs), state, trip).await?;
    let target = if a.url.is_some() {
        "external"
    } else {
        "tether"
    };
    Ok(latency_report(
        "rpc-latency",
        json!({"size": a.size, "server": target, "path": a.path}),
        &samples,
        elapsed,
    ))
}

async fn rpc_throughput(a: Throughput) -> Result<serde_json::Value, Failure> {
    let (url, _own) = echo_target(&a.url).await?;
    let mut clients = Vec::new();
    for _ in 0..a.connections.max(1) {
        clients.push(Client::connect(&url).await?);
    }
    let param = bytes::Bytes::from(vec![b'x'; a.size]);
    let workers = a.in_flight.max(1);
    let per_worker = a.count / workers;
    let deadline = Instant::now() + Duration::from_secs(a.max_secs);
    let path: std::sync::Arc<str> = a.path.as_str().into();
    let (samples, elapsed) = in_flight(workers, per_worker, deadline, move |w| {
        let client = clients[(w % clients.len() as u64) as usize].clone();
        let (param, path) = (param.clone(), path.clone());
        async move {
            let r = client.call(&path).param(param).await?;
            if !r.status.is_success() {
                return Err(Failure {
                    message: format!("{path} answered status {}", r.status),
                    code: crate::cmd::exit::OTHER,
                });
            }
            Ok(())
        }
    })
    .await?;
    let target = if a.url.is_some() {
        "external"
    } else {
        "tether"
    };
    Ok(latency_report(
        "rpc-throughput",
        json!({"size": a.size, "in_flight": workers, "connections": a.connections.max(1), "server": target, "path": a.path}),
        &samples,
        elapsed,
    ))
}

// Long on purpose: a benchmark is one measured sequence (set up, warm, time, report).
async fn pub_throughput(a: Publish) -> Result<serde_json::Value, Failure> {
    let server = Server::builder().build();
    let (url, _listening) = match &a.url {
        Some(u) => (u.clone(), None),
        None => {
            let l = server.bind("127.0.0.1:0").await?;
            (format!("vsoa://{}", l.local_addr()), Some(l))
        }
    };
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
            // One timer for the whole run, not one per message.
            let give_up = tokio::time::sleep(max + Duration::from_secs(5));
            tokio::pin!(give_up);
            while got + lost < want {
                tokio::select! {
                    m = sub.next() => match m {
                        Some(m) => {
                            got += 1;
                            lost += m.lost_before;
                        }
                        None => break,
                    },
                    _ = &mut give_up => break,
                }
            }
            (got, Instant::now())
        }));
    }
    let payload = Payload::empty().with_data(vec![0u8; a.size]);
    let start = Instant::now();
    let mut published = 0u64;
    let mut cut_off = 0usize;
    if a.url.is_some() {
        let trigger = Client::connect(&url).await?;
        let r = trigger
            .call("/publish")
            .set()
            .json(&json!({"url": "/bench/x", "count": a.count}))?
            .timeout(max + Duration::from_secs(5))
            .await?;
        if !r.status.is_success() {
            return Err(Failure {
                message: format!("{url}/publish answered status {}", r.status),
                code: crate::cmd::exit::OTHER,
            });
        }
        published = a.count;
    }
    // The clock is read every 1024 publishes (as in nats-pub).
    while a.url.is_none()
        && published < a.count
        && (!published.is_multiple_of(1024) || start.elapsed() < max)
    {
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
            code: crate::cmd::exit::OTHER,
        })?;
        delivered += got;
        last = last.max(at);
    }
    let elapsed = last - start;
    let expected = published * a.subscribers.max(1);
    let mut out = report(
        "pub-throughput",
        json!({
            "size": if a.url.is_some() { json!("server's") } else { json!(a.size) },
            "subscribers": a.subscribers.max(1),
            "server": if a.url.is_some() { "external" } else { "tether" },
        }),
        delivered,
        elapsed,
    );
    out["published"] = json!(published);
    out["publish_rate_per_s"] = json!(published as f64 / publish_elapsed.as_secs_f64());
    out["lost"] = json!(expected - delivered.min(expected));
    out["cut_off"] = json!(cut_off);
    Ok(out)
}
