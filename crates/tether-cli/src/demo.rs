//! The demo services `tether serve` runs (the CLI contract in README):
//! * `/echo` (any method): replies with the request's param and data unchanged;
//! * `/stream/echo`: opens a stream that sends back everything written to it;
//! * `/stream/blob` (param `{"size": N}`, N <= 1 GiB): opens a stream that sends N bytes,
//!   byte i being `i % 251`, then closes;
//! * `/publish` (SET): publishes `{"url", "param"?, "data"? (base64), "quick"?, "count"?}`;
//! * every datagram is sent back to its sender on the same URL, channel (TCP or quick UDP)
//!   and payload;
//! * clever-show (`--clever-show`): the request `echo` answers
//!   `{"args": [...], "kwargs": {...}}`, `time` the Unix time as a float;
//! * socket_protocol (`--socket-protocol`): read, write and execute requests (sids 10, 20,
//!   30, any did) answer their data with status 0; the bridge (sids 100-112) reaches the
//!   VSOA routes and publishes.

use base64::Engine;
use bytes::Bytes;
use tether::{Datagram, Method, Mode, Payload, Reply, Request, Server, ServerBuilder, Status};
use tokio::io::AsyncWriteExt;

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishArgs {
    url: String,
    #[serde(default)]
    param: Option<serde_json::Value>,
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    quick: bool,
    /// Publish the message this many times (default 1; benchmarks use it).
    #[serde(default)]
    count: Option<u64>,
    /// Add `"n": i` (0, 1, ...) to each publish's param, which must then be an object or
    /// absent (tests of order and loss use it).
    #[serde(default)]
    numbered: bool,
}

/// The clever-show demo requests (see the module docs).
pub(crate) fn install_clever_show(node: &tether::clevershow::Node) -> &tether::clevershow::Node {
    node.request("echo", |_p, args, kwargs| async move {
        Ok(serde_json::json!({ "args": args, "kwargs": kwargs }))
    });
    node.request("time", |_p, _a, _k| async move {
        Ok(serde_json::Value::from(crate::dashboard::unix_now()))
    })
}

/// The socket_protocol demo services (see the module docs), bridged to `server`.
pub(crate) fn install_sp(endpoint: &tether::sp::Endpoint, server: &Server) {
    use tether::sp::{sid, status};
    for req in [sid::READ_REQUEST, sid::WRITE_REQUEST, sid::EXECUTE_REQUEST] {
        endpoint.register_callback(req, None, |_, m: tether::sp::Message| async move {
            Some((status::OKAY, m.data))
        });
    }
    endpoint
        .bridge(server)
        .expect("a fresh endpoint has none of the bridge's sids");
}

pub(crate) fn install(server: &Server) {
    server.route_with("/echo", Mode::Inline, |req: Request| async move {
        Reply::ok(req.payload)
    });
    server.route("/stream/echo", |req: Request| async move {
        req.with_stream(Reply::empty(), |stream| async move {
            let (mut rd, mut wr) = tokio::io::split(stream);
            if let Err(e) = tokio::io::copy(&mut rd, &mut wr).await {
                tracing::debug!("stream echo ended: {e}");
            }
            let _ = wr.shutdown().await;
        })
        .await
    });
    server.route("/stream/blob", |req: Request| async move {
        #[derive(serde::Deserialize)]
        struct Blob {
            size: u64,
        }
        let size = match req.payload.param_json::<Blob>() {
            Ok(b) if b.size <= MAX_BLOB => b.size,
            Ok(_) => {
                return Reply::error(
                    Status::ARGUMENTS,
                    format!("size is limited to {MAX_BLOB} bytes"),
                )
            }
            Err(e) => {
                return Reply::error(
                    Status::ARGUMENTS,
                    format!("param must be {{\"size\": N}}: {e}"),
                )
            }
        };
        req.with_stream(Reply::empty(), move |mut stream| async move {
            if let Err(e) = write_blob(&mut stream, size).await {
                tracing::debug!("blob stream ended early: {e}");
            }
        })
        .await
    });
    // Inline: pipelined /publish calls of one client publish in the order they were sent.
    let publisher = server.clone();
    server.route_with("/publish", Mode::Inline, move |req: Request| {
        let server = publisher.clone();
        async move { publish(&server, req).await }
    });
}

async fn publish(server: &Server, req: Request) -> Reply {
    if req.method != Method::Set {
        return Reply::error(Status::ARGUMENTS, "/publish takes method SET");
    }
    let args: PublishArgs = match req.payload.param_json() {
        Ok(a) => a,
        Err(e) => {
            return Reply::error(
                Status::ARGUMENTS,
                format!("param must be {{\"url\": \"/x\", \"param\": any, \"data\": base64, \"quick\": false, \"count\": 1, \"numbered\": false}}: {e}"),
            )
        }
    };
    let param = match &args.param {
        Some(v) => match serde_json::to_vec(v) {
            Ok(b) => Bytes::from(b),
            Err(e) => return Reply::error(Status::ARGUMENTS, e.to_string()),
        },
        None => Bytes::new(),
    };
    let data = match &args.data {
        Some(b64) => match base64::engine::general_purpose::STANDARD.decode(b64) {
            Ok(d) => Bytes::from(d),
            Err(e) => return Reply::error(Status::ARGUMENTS, format!("data is not base64: {e}")),
        },
        None => Bytes::new(),
    };
    if args.numbered && !matches!(args.param, None | Some(serde_json::Value::Object(_))) {
        return Reply::error(Status::ARGUMENTS, "numbered publishes need an object param");
    }
    let payload = Payload { param, data };
    // The i-th payload: the same each time, or numbered.
    let nth = |i: u64| -> Payload {
        if !args.numbered {
            return payload.clone();
        }
        let mut param = args.param.clone().unwrap_or_else(|| serde_json::json!({}));
        param["n"] = i.into();
        Payload {
            param: serde_json::to_vec(&param).unwrap_or_default().into(),
            data: payload.data.clone(),
        }
    };
    let count = args.count.unwrap_or(1);
    if count > MAX_PUBLISH_COUNT {
        return Reply::error(
            Status::ARGUMENTS,
            format!("count is limited to {MAX_PUBLISH_COUNT}"),
        );
    }
    // On a federated server: how many went on to the other nodes, and how many could not.
    let (mut forwarded, mut not_forwarded) = (0, 0);
    let reply = if args.quick {
        let (mut sent, mut dropped) = (0, 0);
        let mut res = Ok(());
        for i in 0..count {
            match server.publish_quick(&args.url, nth(i)) {
                Ok(r) => {
                    (sent, dropped) = (sent + r.sent, dropped + r.dropped);
                    (forwarded, not_forwarded) =
                        (forwarded + r.forwarded, not_forwarded + r.not_forwarded);
                }
                Err(e) => {
                    res = Err(e);
                    break;
                }
            }
        }
        res.map(|()| serde_json::json!({ "quick": true, "sent": sent, "dropped": dropped }))
    } else {
        let mut total = tether::PublishReport::default();
        let mut res = Ok(());
        for i in 0..count {
            match server.publish(&args.url, nth(i)).await {
                Ok(r) => {
                    total.delivered += r.delivered;
                    total.cut_off += r.cut_off;
                    // Of what a cut client's queue threw away, at most one copy per earlier
                    // publish of this call was counted here (the rest, by earlier calls).
                    let here = usize::try_from(i).unwrap_or(usize::MAX);
                    total.discarded += r.discarded.min(here.saturating_mul(r.cut_off));
                    (forwarded, not_forwarded) =
                        (forwarded + r.forwarded, not_forwarded + r.not_forwarded);
                }
                Err(e) => {
                    res = Err(e);
                    break;
                }
            }
        }
        // What reached live queues: a cut-off throws away what its queue held.
        let delivered = total.delivered.saturating_sub(total.discarded);
        res.map(|()| serde_json::json!({ "delivered": delivered, "cut_off": total.cut_off }))
    };
    let reply = reply.map(|mut report| {
        if forwarded + not_forwarded > 0 {
            report["forwarded"] = forwarded.into();
            report["not_forwarded"] = not_forwarded.into();
        }
        report
    });
    match reply {
        Ok(report) => Reply::json(&report).unwrap_or_default(),
        Err(e) => Reply::error(Status::ARGUMENTS, e.to_string()),
    }
}

/// Most messages one `/publish` call sends.
const MAX_PUBLISH_COUNT: u64 = 10_000_000;

/// Largest `/stream/blob` download.
pub(crate) const MAX_BLOB: u64 = 1 << 30;

/// Byte `i` of every blob: a pattern a reader can verify without a copy.
pub(crate) fn blob_byte(i: u64) -> u8 {
    (i % 251) as u8
}

pub(crate) async fn write_blob(stream: &mut tether::DataStream, size: u64) -> std::io::Result<()> {
    let chunk: Vec<u8> = (0..251 * 256).map(blob_byte).collect();
    let mut left = size;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        stream.write_all(&chunk[..n]).await?;
        left -= n as u64;
    }
    stream.shutdown().await
}

pub(crate) fn datagram_echo(builder: ServerBuilder) -> ServerBuilder {
    builder.on_datagram(|dg: Datagram| async move {
        if let Err(e) = dg.reply(&dg.url, dg.payload.clone()).await {
            tracing::debug!("datagram echo to client {} failed: {e}", dg.client.id());
        }
    })
}
