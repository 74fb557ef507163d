//! The WebSocket gateway under load: request throughput (`ws-rpc`, against our gateway or
//! any juggler server with `--url`), its floor (`floor-ws`: the same library echoing raw
//! frames) and state-sync fan-out to many clients (`ws-fanout`).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tether_gateway::client::JugglerClient;
use tokio::net::TcpListener;
use tokio_tungstenite::tungstenite::Message;

use super::{in_flight, io_failure, latency_report, Failure, Latencies};

#[derive(clap::Args)]
pub(super) struct WsRpc {
    /// Requests to make.
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Requests in flight at once, spread over the connections.
    #[arg(long, default_value_t = 64)]
    in_flight: u64,
    /// WebSocket connections.
    #[arg(long, default_value_t = 1)]
    connections: u64,
    /// Request name: "" is the juggler echo (every juggler server has it); "/echo" goes
    /// through the route table.
    #[arg(long, default_value = "")]
    name: String,
    /// Payload: a string of this many characters.
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Measure this juggler server (ws://HOST:PORT/ws) instead of our gateway in-process.
    #[arg(long)]
    url: Option<String>,
    /// The juggler wire: 0.7 (segments, pings) or 0.6 (one bare JSON message per frame; our
    /// gateway's /ws06).
    #[arg(long, default_value = "0.7", value_parser = parse_wire)]
    wire: tether_gateway::Wire,
    /// Stop after this many seconds even if count is not reached.
    #[arg(long, default_value_t = 30)]
    max_secs: u64,
}

#[derive(clap::Args)]
pub(super) struct FloorWs {
    /// Frames to echo.
    #[arg(long, default_value_t = 100_000)]
    count: u64,
    /// Frames sent and not yet echoed, at most.
    #[arg(long, default_value_t = 64)]
    in_flight: u64,
    /// Characters of payload inside each frame (framed like a juggler request).
    #[arg(long, default_value_t = 64)]
    size: usize,
    /// Stop after this many seconds even if count is not reached.
    #[arg(long, default_value_t = 30)]
    max_secs: u64,
}

#[derive(clap::Args)]
pub(super) struct WsFanout {
    /// WebSocket clients, each on its own connection.
    #[arg(long, default_value_t = 1000)]
    clients: u64,
    /// State updates per second.
    #[arg(long, default_value_t = 10)]
    rate: u64,
    /// Seconds of updates.
    #[arg(long, default_value_t = 10)]
    secs: u64,
}

fn parse_wire(s: &str) -> Result<tether_gateway::Wire, String> {
    match s {
        "0.7" => Ok(tether_gateway::Wire::V0_7),
        "0.6" => Ok(tether_gateway::Wire::V0_6),
        _ => Err(format!("{s:?}: the juggler wire is 0.7 or 0.6")),
    }
}

fn failure(e: impl std::fmt::Display) -> Failure {
    Failure {
        message: e.to_string(),
        code: crate::cmd::exit::OTHER,
    }
}

/// Our gateway on a free port, with `/echo`; keep the handle alive while measuring.
async fn own_gateway(
    state: Option<tether_gateway::State>,
) -> Result<(tether_gateway::Listening, String), Failure> {
    let server = tether::Server::builder().build();
    server.route_with(
        "/echo",
        tether::Mode::Inline,
        |req: tether::Request| async move { tether::Reply::ok(req.payload) },
    );
    let mut gw =
        tether_gateway::Gateway::builder(server).autoflush(tether_gateway::Autoflush::Each);
    if let Some(s) = state {
        gw = gw.shared_state(s);
    }
    let l = gw.build().bind("127.0.0.1:0").await.map_err(failure)?;
    let url = format!("ws://{}/ws", l.local_addr());
    Ok((l, url))
}

pub(super) async fn ws_rpc(a: WsRpc) -> Result<serde_json::Value, Failure> {
    let (_own, url) = match &a.url {
        Some(u) => (None, u.clone()),
        None => {
            let (l, u) = own_gateway(None).await?;
            let u = match a.wire {
                tether_gateway::Wire::V0_7 => u,
                tether_gateway::Wire::V0_6 => format!("{}06", u),
            };
            (Some(l), u)
        }
    };
    let mut clients = Vec::new();
    for _ in 0..a.connections.max(1) {
        clients.push(Arc::new(
            JugglerClient::builder(&url)
                .wire(a.wire)
                .connect()
                .await
                .map_err(failure)?,
        ));
    }
    let payload = json!("x".repeat(a.size));
    let workers = a.in_flight.max(1);
    let per_worker = a.count / workers;
    let deadline = Instant::now() + Duration::from_secs(a.max_secs);
    let name = a.name.clone();
    let (samples, elapsed) = in_flight(workers, per_worker, deadline, move |w| {
        let client = clients[(w % clients.len() as u64) as usize].clone();
        let (payload, name) = (payload.clone(), name.clone());
        async move {
            let got = client.send(&name, payload.clone()).await.map_err(failure)?;
            if got != payload {
                return Err(failure("the echo came back wrong"));
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
        "ws-rpc",
        json!({"size": a.size, "in_flight": workers, "connections": a.connections.max(1), "name": a.name, "server": target, "wire": a.wire.name()}),
        &samples,
        elapsed,
    ))
}

/// The most a WebSocket request can go at here: tokio-tungstenite (the library under our
/// gateway and client) echoing text frames as long as a juggler request, with no JSON on
/// either end. The server forwards what it reads and flushes when nothing more is ready;
/// the client keeps `in_flight` frames outstanding and flushes before it waits. Frames come
/// back in order, so each one's send time is the oldest still queued.
pub(super) async fn floor_ws(a: FloorWs) -> Result<serde_json::Value, Failure> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(io_failure("bind"))?;
    let addr = listener.local_addr().map_err(io_failure("bind"))?;
    let echo = tokio::spawn(async move {
        let (s, _) = listener.accept().await?;
        s.set_nodelay(true)?;
        let ws = tokio_tungstenite::accept_async(s)
            .await
            .map_err(std::io::Error::other)?;
        let (tx, rx) = ws.split();
        let _ = rx.forward(tx).await;
        Ok::<(), std::io::Error>(())
    });
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/"))
        .await
        .map_err(failure)?;
    let (mut tx, mut rx) = ws.split();
    let frame = format!(
        "0{{\"type\":\"request\",\"id\":1000000,\"name\":\"\",\"data\":\"{}\"}}",
        "x".repeat(a.size)
    );
    let sent: Arc<Mutex<VecDeque<Instant>>> = Default::default();
    let room = Arc::new(tokio::sync::Semaphore::new(a.in_flight.max(1) as usize));
    let deadline = Instant::now() + Duration::from_secs(a.max_secs);
    let start = Instant::now();
    let writer = {
        let (sent, room, frame) = (sent.clone(), room.clone(), frame.clone());
        let count = a.count;
        tokio::spawn(async move {
            let mut n = 0;
            while n < count && Instant::now() < deadline {
                match room.try_acquire() {
                    Ok(p) => p.forget(),
                    Err(_) => {
                        tx.flush().await?;
                        match room.acquire().await {
                            Ok(p) => p.forget(),
                            Err(_) => break, // closed: the reader is done
                        }
                    }
                }
                sent.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push_back(Instant::now());
                tx.feed(Message::text(frame.as_str())).await?;
                n += 1;
            }
            tx.flush().await?;
            Ok::<_, tokio_tungstenite::tungstenite::Error>(tx)
        })
    };
    let mut samples = Latencies::new();
    let mut got = 0u64;
    while got < a.count {
        let m = tokio::time::timeout_at(deadline.into(), rx.next()).await;
        let Ok(Some(m)) = m else { break };
        let m = m.map_err(failure)?;
        if m.to_text().map_err(failure)?.len() != frame.len() {
            return Err(failure("the echo came back wrong"));
        }
        if let Some(t) = sent.lock().unwrap_or_else(|e| e.into_inner()).pop_front() {
            samples.record(t.elapsed());
        }
        got += 1;
        room.add_permits(1);
    }
    let elapsed = start.elapsed();
    room.close();
    let mut tx = writer.await.map_err(failure)?.map_err(failure)?;
    let _ = tx.close().await;
    let _ = echo.await;
    Ok(latency_report(
        "floor-ws",
        json!({"size": a.size, "in_flight": a.in_flight.max(1)}),
        &samples,
        elapsed,
    ))
}

pub(super) async fn ws_fanout(a: WsFanout) -> Result<serde_json::Value, Failure> {
    let state = tether_gateway::State::new(json!({"t": 0}));
    let (_l, url) = own_gateway(Some(state.clone())).await?;
    let latencies = Arc::new(Mutex::new(Latencies::new()));
    let epoch = Instant::now();
    let mut watchers = Vec::new();
    let mut clients = Vec::new();
    for _ in 0..a.clients.max(1) {
        let c = JugglerClient::builder(&url)
            .connect()
            .await
            .map_err(failure)?;
        let mut changes = c.state_changes();
        let latencies = latencies.clone();
        watchers.push(tokio::spawn(async move {
            let mut seen = 0u64;
            let mut mine = Latencies::new();
            while changes.changed().await.is_ok() {
                let sent_ns = changes.borrow_and_update()["t"].as_u64().unwrap_or(0);
                if sent_ns == 0 {
                    continue;
                }
                let now = epoch.elapsed().as_nanos() as u64;
                mine.record(Duration::from_nanos(now.saturating_sub(sent_ns)));
                seen += 1;
            }
            latencies
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .add(&mine);
            seen
        }));
        clients.push(c);
    }
    // Let every client get the initial document first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let updates = a.rate.max(1) * a.secs.max(1);
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / a.rate.max(1) as f64));
    let start = Instant::now();
    for _ in 0..updates {
        tick.tick().await;
        state.set("/t", json!(epoch.elapsed().as_nanos() as u64));
    }
    // The last update has a second to arrive everywhere.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for c in &clients {
        c.close().await;
    }
    drop(clients);
    let mut delivered = 0;
    for w in watchers {
        delivered += w.await.map_err(failure)?;
    }
    let expected = updates * a.clients.max(1);
    let samples = latencies.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut out = latency_report(
        "ws-fanout",
        json!({"clients": a.clients, "updates_per_s": a.rate, "secs": a.secs}),
        &samples,
        start.elapsed(),
    );
    out["updates"] = json!(updates);
    out["delivered"] = json!(delivered);
    // A client's mirror may fold two updates that arrive together; none should be lost.
    out["missed"] = json!(expected.saturating_sub(delivered));
    Ok(out)
}
