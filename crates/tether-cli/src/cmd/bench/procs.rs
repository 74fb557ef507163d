//! Fan-out the way users run it: the server in its own process (`tether serve`, or a
//! nats-server), S subscribers in this process, and the publisher in a third, a child this
//! scenario starts once the subscriptions are in place (`tether bench fanout-publisher`).
//!
//! Each message carries its sequence number and the publisher's send time (wall clock, one
//! machine), so subscribers measure delivery latency and count what never arrived. With
//! `--server-pid` the server's CPU time over the run is read from `/proc` and reported per
//! delivery.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde_json::json;
use tether::{Client, Payload};

use super::{report, Failure, Latencies};

/// What carries the messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum Via {
    /// Tether: the publisher sends one datagram per message (`tether serve --relay /bench/`).
    Relay,
    /// Tether: the publisher calls `SET /publish` per message (64 calls in flight).
    Publish,
    /// NATS: the publisher publishes on `bench.x` (built with `--features nats`).
    Nats,
}

impl Via {
    fn name(self) -> &'static str {
        match self {
            Via::Relay => "relay",
            Via::Publish => "publish",
            Via::Nats => "nats",
        }
    }
}

#[derive(clap::Args, Clone)]
pub(super) struct Fanout {
    /// The server: vsoa://HOST:PORT (`tether serve --relay /bench/` for --via relay), or
    /// nats://HOST:PORT with --via nats.
    #[arg(long)]
    url: String,
    /// Subscribers connect here instead (another node of a federation, or another
    /// nats-server of a cluster): publishes then cross nodes. The run waits 0.5 s after
    /// subscribing, for the interest to reach the publisher's server.
    #[arg(long, value_name = "URL")]
    sub_url: Option<String>,
    /// How messages reach the server.
    #[arg(long, value_enum, default_value = "relay")]
    via: Via,
    /// Messages to publish.
    #[arg(long, default_value_t = 200_000)]
    count: u64,
    /// Subscribers, each on its own connection (in this process).
    #[arg(long, default_value_t = 1)]
    subscribers: u64,
    /// Bytes per message (at least 16: sequence number and send time).
    #[arg(long, default_value_t = 32)]
    size: usize,
    /// The publisher stops after this many seconds even if count is not reached.
    #[arg(long, default_value_t = 30)]
    max_secs: u64,
    /// Messages per second the publisher sends (0: as fast as the channel takes them, which
    /// measures throughput, and latency that is mostly queueing; a rate well under the
    /// throughput measures latency).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// The server's process id: its CPU time over the run is reported.
    #[arg(long)]
    server_pid: Option<u32>,
}

/// The publisher side, run as a child process by `fanout`.
#[derive(clap::Args)]
pub(super) struct FanoutPublisher {
    #[command(flatten)]
    a: Fanout,
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn failure(message: String) -> Failure {
    Failure {
        message,
        code: crate::cmd::exit::OTHER,
    }
}

fn message(seq: u64, size: usize) -> Vec<u8> {
    let mut m = vec![0u8; size.max(16)];
    m[..8].copy_from_slice(&seq.to_le_bytes());
    m[8..16].copy_from_slice(&now_ns().to_le_bytes());
    m
}

/// One subscriber's view of the run.
struct Tally {
    got: u64,
    out_of_order: u64,
    next: u64,
    first_sent_ns: u64,
    last_arrival_ns: u64,
    latencies: Latencies,
}

impl Tally {
    fn new() -> Self {
        Tally {
            got: 0,
            out_of_order: 0,
            next: 0,
            first_sent_ns: u64::MAX,
            last_arrival_ns: 0,
            latencies: Latencies::new(),
        }
    }

    fn record(&mut self, data: &[u8]) {
        let now = now_ns();
        let (Some(seq), Some(sent)) = (data.get(..8), data.get(8..16)) else {
            return;
        };
        let seq = u64::from_le_bytes(seq.try_into().unwrap_or_default());
        let sent = u64::from_le_bytes(sent.try_into().unwrap_or_default());
        self.got += 1;
        if seq < self.next {
            self.out_of_order += 1;
        }
        self.next = self.next.max(seq + 1);
        self.first_sent_ns = self.first_sent_ns.min(sent);
        self.last_arrival_ns = now;
        self.latencies
            .record(Duration::from_nanos(now.saturating_sub(sent)));
    }
}

/// Receives until `want` arrived, or nothing came for `idle` (after the first message;
/// before it, for `first`).
async fn receive(
    messages: impl futures_util::Stream<Item = Bytes>,
    want: u64,
    first: Duration,
    idle: Duration,
) -> Tally {
    use futures_util::StreamExt;
    let mut messages = std::pin::pin!(messages);
    let mut t = Tally::new();
    while t.got < want {
        let wait = if t.got == 0 { first } else { idle };
        match tokio::time::timeout(wait, messages.next()).await {
            Ok(Some(data)) => t.record(&data),
            Ok(None) | Err(_) => break,
        }
    }
    t
}

/// utime + stime of `pid`, from /proc/PID/stat (clock ticks of 10 ms on Linux).
fn cpu_time(pid: u32) -> Result<Duration, Failure> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map_err(|e| failure(format!("server process {pid}: {e}")))?;
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Fields 14 and 15 of stat(5); `after` starts at field 3.
    Ok(Duration::from_millis((ticks(11) + ticks(12)) * 10))
}

// Long on purpose: a benchmark is one measured sequence (set up, start, wait, report).
pub(super) async fn fanout(a: Fanout) -> Result<serde_json::Value, Failure> {
    let first = Duration::from_secs(a.max_secs + 10);
    let idle = Duration::from_secs(2);
    let mut subs = Vec::new();
    for _ in 0..a.subscribers.max(1) {
        subs.push(match a.via {
            Via::Relay | Via::Publish => {
                let c = Client::connect(a.sub_url.as_ref().unwrap_or(&a.url)).await?;
                let sub = c.subscribe(["/bench/"]).await?;
                let messages = futures_util::stream::unfold(sub, |mut sub| async move {
                    sub.next().await.map(|m| (m.payload.data, sub))
                });
                let want = a.count;
                tokio::spawn(async move {
                    let _keep = c;
                    receive(messages, want, first, idle).await
                })
            }
            Via::Nats => nats_subscriber(&a, first, idle).await?,
        });
    }
    if a.sub_url.is_some() {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let cpu_before = a.server_pid.map(cpu_time).transpose()?;
    let exe = std::env::current_exe().map_err(|e| failure(format!("own executable: {e}")))?;
    let mut publisher = tokio::process::Command::new(exe);
    publisher
        .args([
            "bench",
            "fanout-publisher",
            "--url",
            &a.url,
            "--via",
            a.via.name(),
        ])
        .args([
            "--count",
            &a.count.to_string(),
            "--size",
            &a.size.to_string(),
        ])
        .args([
            "--max-secs",
            &a.max_secs.to_string(),
            "--rate",
            &a.rate.to_string(),
        ])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = publisher
        .output()
        .await
        .map_err(|e| failure(format!("cannot start the publisher: {e}")))?;
    if !out.status.success() {
        return Err(failure(format!(
            "the publisher failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let published: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| failure(format!("the publisher's report: {e}")))?;
    let published = published["published"].as_u64().unwrap_or(0);
    let mut all = Latencies::new();
    let (mut delivered, mut out_of_order) = (0u64, 0u64);
    let (mut start, mut end) = (u64::MAX, 0u64);
    for s in subs {
        let t = s.await.map_err(|e| failure(e.to_string()))?;
        delivered += t.got;
        out_of_order += t.out_of_order;
        start = start.min(t.first_sent_ns);
        end = end.max(t.last_arrival_ns);
        all.add(&t.latencies);
    }
    let cpu = match (a.server_pid, cpu_before) {
        (Some(pid), Some(before)) => Some(cpu_time(pid)? - before),
        _ => None,
    };
    let expected = published * a.subscribers.max(1);
    let elapsed = Duration::from_nanos(end.saturating_sub(start));
    let mut r = report(
        "fanout",
        json!({"via": a.via.name(), "subscribers": a.subscribers.max(1), "size": a.size.max(16),
               "server": if a.via == Via::Nats { "nats-server" } else { "tether serve" },
               "rate": a.rate, "processes": 3, "across_nodes": a.sub_url.is_some()}),
        delivered,
        elapsed,
    );
    r["published"] = json!(published);
    r["lost"] = json!(expected.saturating_sub(delivered));
    r["out_of_order"] = json!(out_of_order);
    r["latency_us"] = all.json();
    if let Some(cpu) = cpu {
        r["server_cpu_s"] = json!(cpu.as_secs_f64());
        r["server_cpu_ns_per_delivery"] = json!(cpu.as_nanos() as f64 / delivered.max(1) as f64);
    }
    Ok(r)
}

#[cfg(feature = "nats")]
async fn nats_subscriber(
    a: &Fanout,
    first: Duration,
    idle: Duration,
) -> Result<tokio::task::JoinHandle<Tally>, Failure> {
    use futures_util::StreamExt;
    let c = super::nats::connect(a.sub_url.as_ref().unwrap_or(&a.url)).await?;
    let sub = c
        .subscribe("bench.x")
        .await
        .map_err(|e| failure(format!("NATS subscribe: {e}")))?;
    c.flush()
        .await
        .map_err(|e| failure(format!("NATS flush: {e}")))?;
    let want = a.count;
    Ok(tokio::spawn(async move {
        let _keep = c;
        receive(sub.map(|m| m.payload), want, first, idle).await
    }))
}

#[cfg(not(feature = "nats"))]
async fn nats_subscriber(
    _: &Fanout,
    _: Duration,
    _: Duration,
) -> Result<tokio::task::JoinHandle<Tally>, Failure> {
    Err(no_nats())
}

#[cfg(not(feature = "nats"))]
fn no_nats() -> Failure {
    Failure::usage("--via nats needs a tether built with --features nats")
}

/// Holds a publisher to `rate` messages per second (checked every 64 messages, so the
/// clock is read rarely); rate 0: no pacing.
struct Pace {
    start: Instant,
    rate: u64,
}

impl Pace {
    fn new(rate: u64) -> Self {
        Pace {
            start: Instant::now(),
            rate,
        }
    }

    async fn wait(&self, sent: u64) {
        if self.rate == 0 || !sent.is_multiple_of(64) {
            return;
        }
        let due = self.start + Duration::from_secs_f64(sent as f64 / self.rate as f64);
        tokio::time::sleep_until(due.into()).await;
    }
}

/// The child: publishes `count` messages as fast as the channel takes them, then makes
/// sure the server has them all, and prints `{"published": N, "duration_s": S}`.
pub(super) async fn publisher(p: FanoutPublisher) -> Result<serde_json::Value, Failure> {
    let a = p.a;
    let deadline = Instant::now() + Duration::from_secs(a.max_secs);
    let start = Instant::now();
    let mut published = 0u64;
    let in_time = |n: u64| !n.is_multiple_of(1024) || Instant::now() < deadline;
    let pace = Pace::new(a.rate);
    match a.via {
        Via::Relay => {
            let c = Client::connect(&a.url).await?;
            while published < a.count && in_time(published) {
                pace.wait(published).await;
                let m = Payload::empty().with_data(message(published, a.size));
                c.datagram("/bench/x", m).await?;
                published += 1;
            }
            // Read after every datagram before it, on the same connection: all relayed.
            c.call("/echo").await?;
        }
        Via::Publish => {
            use base64::Engine as _;
            let c = Client::connect(&a.url).await?;
            let mut calls = tokio::task::JoinSet::new();
            while published < a.count && in_time(published) {
                pace.wait(published).await;
                if calls.len() >= 64 {
                    if let Some(r) = calls.join_next().await {
                        r.map_err(|e| failure(e.to_string()))??;
                    }
                }
                let data =
                    base64::engine::general_purpose::STANDARD.encode(message(published, a.size));
                let c = c.clone();
                calls.spawn(async move {
                    let param = json!({"url": "/bench/x", "data": data});
                    let r = c.call("/publish").set().json(&param)?.await?;
                    if !r.status.is_success() {
                        return Err(failure(format!("/publish answered {}", r.status)));
                    }
                    Ok::<_, Failure>(())
                });
                published += 1;
            }
            while let Some(r) = calls.join_next().await {
                r.map_err(|e| failure(e.to_string()))??;
            }
        }
        Via::Nats => published = nats_publish(&a, deadline, &pace).await?,
    }
    Ok(json!({"published": published, "duration_s": start.elapsed().as_secs_f64()}))
}

#[cfg(feature = "nats")]
async fn nats_publish(a: &Fanout, deadline: Instant, pace: &Pace) -> Result<u64, Failure> {
    let c = super::nats::connect(&a.url).await?;
    let mut published = 0u64;
    while published < a.count && (!published.is_multiple_of(1024) || Instant::now() < deadline) {
        pace.wait(published).await;
        c.publish("bench.x", Bytes::from(message(published, a.size)))
            .await
            .map_err(|e| failure(format!("NATS publish: {e}")))?;
        published += 1;
    }
    c.flush()
        .await
        .map_err(|e| failure(format!("NATS flush: {e}")))?;
    Ok(published)
}

#[cfg(not(feature = "nats"))]
async fn nats_publish(_: &Fanout, _: Instant, _: &Pace) -> Result<u64, Failure> {
    Err(no_nats())
}
