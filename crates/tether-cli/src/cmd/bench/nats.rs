//! NATS as a peer in the same run (`--features nats`): request-reply and pub/sub through a
//! `nats-server`, driven by async-nats with the same counts, sizes and histograms as the
//! Tether scenarios. The responder and subscribers run in this process, like ours do.

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::json;

use super::{in_flight, latency_report, report, Failure};

#[derive(clap::Args)]
pub(super) struct NatsRpc {
    /// The nats-server to use.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    url: String,
    /// The responder connects here instead (another server of the cluster): requests
    /// then cross a route.
    #[arg(long, value_name = "URL")]
    responder_url: Option<String>,
    /// Requests to make.
    #[arg(long, default_value_t = 200_000)]
    count: u64,
    /// Requests in flight at once (1: sequential round trips).
    #[arg(long, default_value_t = 256)]
    in_flight: u64,
    /// Payload bytes.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Stop after this many seconds even if count is not reached.
    #[arg(long, default_value_t = 30)]
    max_secs: u64,
}

#[derive(clap::Args)]
pub(super) struct NatsPub {
    /// The nats-server to use.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    url: String,
    /// Messages to publish.
    #[arg(long, default_value_t = 1_000_000)]
    count: u64,
    /// Subscribers, each on its own connection.
    #[arg(long, default_value_t = 1)]
    subscribers: u64,
    /// Payload bytes.
    #[arg(long, default_value_t = 32)]
    size: usize,
    /// Stop after this many seconds even if count is not reached.
    #[arg(long, default_value_t = 30)]
    max_secs: u64,
}

fn nats_failure(what: &str) -> impl Fn(Box<dyn std::error::Error + Send + Sync>) -> Failure + '_ {
    move |e| Failure {
        message: format!("NATS {what}: {e}"),
        code: crate::cmd::exit::UNREACHABLE,
    }
}

pub(super) async fn connect(url: &str) -> Result<async_nats::Client, Failure> {
    async_nats::ConnectOptions::new()
        .subscription_capacity(1 << 16)
        .request_timeout(Some(Duration::from_secs(10)))
        .connect(url)
        .await
        .map_err(|e| nats_failure("connect")(e.into()))
}

/// Request-reply against an echo responder on its own connection.
pub(super) async fn rpc(a: NatsRpc) -> Result<serde_json::Value, Failure> {
    let responder = connect(a.responder_url.as_ref().unwrap_or(&a.url)).await?;
    let mut requests = responder
        .subscribe("bench.echo")
        .await
        .map_err(|e| nats_failure("subscribe")(e.into()))?;
    // The server must have the subscription before the first request, or it answers
    // "no responders" (the client's own flush says nothing about this connection).
    responder
        .flush()
        .await
        .map_err(|e| nats_failure("flush")(e.into()))?;
    let echo = tokio::spawn(async move {
        while let Some(m) = requests.next().await {
            if let Some(reply) = m.reply {
                if responder.publish(reply, m.payload).await.is_err() {
                    return;
                }
            }
        }
    });
    let client = connect(&a.url).await?;
    client
        .flush()
        .await
        .map_err(|e| nats_failure("flush")(e.into()))?;
    let payload = Bytes::from(vec![b'x'; a.size]);
    let workers = a.in_flight.max(1);
    let per_worker = a.count / workers;
    let deadline = Instant::now() + Duration::from_secs(a.max_secs);
    // Across a route the responder's subscription reaches the requester's server a moment
    // later: until then NATS answers "no responders".
    let ready = Instant::now() + Duration::from_secs(5);
    while client.request("bench.echo", payload.clone()).await.is_err() && Instant::now() < ready {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Warm-up, as the Tether scenarios do.
    for _ in 0..(a.count / 10).min(1000) {
        client
            .request("bench.echo", payload.clone())
            .await
            .map_err(|e| nats_failure("request")(e.into()))?;
    }
    let (samples, elapsed) = in_flight(workers, per_worker, deadline, move |_| {
        let (client, payload) = (client.clone(), payload.clone());
        async move {
            let m = client
                .request("bench.echo", payload.clone())
                .await
                .map_err(|e| nats_failure("request")(e.into()))?;
            if m.payload.len() != payload.len() {
                return Err(Failure {
                    message: "NATS echo came back wrong".into(),
                    code: crate::cmd::exit::OTHER,
                });
            }
            Ok(())
        }
    })
    .await?;
    echo.abort();
    Ok(latency_report(
        if workers == 1 {
            "nats-rpc-latency"
        } else {
            "nats-rpc-throughput"
        },
        json!({"size": a.size, "in_flight": workers, "connections": 1, "server": "nats-server",
               "across_route": a.responder_url.is_some()}),
        &samples,
        elapsed,
    ))
}

/// One publisher, S subscribers, each on its own connection; loss is counted.
// Long on purpose: a benchmark is one measured sequence (set up, warm, time, report).
pub(super) async fn publish(a: NatsPub) -> Result<serde_json::Value, Failure> {
    let max = Duration::from_secs(a.max_secs);
    let mut receivers = Vec::new();
    for _ in 0..a.subscribers.max(1) {
        let c = connect(&a.url).await?;
        let mut sub = c
            .subscribe("bench.x")
            .await
            .map_err(|e| nats_failure("subscribe")(e.into()))?;
        c.flush()
            .await
            .map_err(|e| nats_failure("flush")(e.into()))?;
        let want = a.count;
        receivers.push(tokio::spawn(async move {
            let _keep = c;
            let mut got = 0u64;
            let mut last = Instant::now();
            // Stop at the count, or when nothing more arrives for about a second (the rest
            // was dropped). The timer is re-armed at the first message and every 256th, not
            // for each one.
            let idle = tokio::time::sleep(Duration::from_millis(1000));
            tokio::pin!(idle);
            let mut idled = false;
            while got < want {
                tokio::select! {
                    m = sub.next() => match m {
                        Some(_) => {
                            got += 1;
                            if got == 1 || got.is_multiple_of(256) {
                                last = Instant::now();
                                idle.as_mut().reset((last + Duration::from_millis(1000)).into());
                            }
                        }
                        None => break,
                    },
                    _ = &mut idle => {
                        idled = true;
                        break;
                    }
                }
            }
            // After an idle second the last arrival is the last one timed (at most 255
            // messages earlier); otherwise it is now.
            (got, if idled { last } else { Instant::now() })
        }));
    }
    let publisher = connect(&a.url).await?;
    let payload = Bytes::from(vec![0u8; a.size]);
    let start = Instant::now();
    let mut published = 0u64;
    while published < a.count && (!published.is_multiple_of(1024) || start.elapsed() < max) {
        publisher
            .publish("bench.x", payload.clone())
            .await
            .map_err(|e| nats_failure("publish")(e.into()))?;
        published += 1;
    }
    publisher
        .flush()
        .await
        .map_err(|e| nats_failure("flush")(e.into()))?;
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
    let expected = published * a.subscribers.max(1);
    let mut out = report(
        "nats-pub-throughput",
        json!({"size": a.size, "subscribers": a.subscribers.max(1), "server": "nats-server"}),
        delivered,
        last - start,
    );
    out["published"] = json!(published);
    out["publish_rate_per_s"] = json!(published as f64 / publish_elapsed.as_secs_f64());
    out["lost"] = json!(expected - delivered.min(expected));
    Ok(out)
}
