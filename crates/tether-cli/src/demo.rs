//! The demo services `tether serve` runs (the CLI contract in README):
//! * `/echo` (any method): replies with the request's param and data unchanged;
//! * `/publish` (SET): publishes `{"url", "param"?, "data"? (base64), "quick"?}`;
//! * every datagram is sent back to its sender on the same URL, channel (TCP or quick UDP)
//!   and payload.

use base64::Engine;
use bytes::Bytes;
use tether::{Datagram, Method, Mode, Payload, Reply, Request, Server, ServerBuilder, Status};

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
}

pub fn install(server: &Server) {
    server.route_with("/echo", Mode::Inline, |req: Request| async move {
        Reply::ok(req.payload)
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
                format!("param must be {{\"url\": \"/x\", \"param\": any, \"data\": base64, \"quick\": false}}: {e}"),
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
    let payload = Payload { param, data };
    let reply = if args.quick {
        server
            .publish_quick(&args.url, payload)
            .map(|r| serde_json::json!({ "quick": true, "sent": r.sent, "dropped": r.dropped }))
    } else {
        server
            .publish(&args.url, payload)
            .await
            .map(|r| serde_json::json!({ "delivered": r.delivered, "cut_off": r.cut_off }))
    };
    match reply {
        Ok(report) => Reply::json(&report).unwrap_or_default(),
        Err(e) => Reply::error(Status::ARGUMENTS, e.to_string()),
    }
}

pub fn datagram_echo(builder: ServerBuilder) -> ServerBuilder {
    builder.on_datagram(|dg: Datagram| async move {
        if let Err(e) = dg.reply(&dg.url, dg.payload.clone()).await {
            tracing::debug!("datagram echo to client {} failed: {e}", dg.client.id());
        }
    })
}
